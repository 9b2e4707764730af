//! The HTTP surface: routing of apiserver URLs, query parameters, content negotiation (JSON, Table,
//! PartialObjectMetadata), watch streaming, and the request log.

use crate::apiserver::{
    ApiServer, DeleteOptions, Deleted, FieldValidation, Filter, ListPage, Target, Write,
    WriteOptions,
};
use crate::error::{ApiError, ApiResult};
use crate::faults::{FaultKind, Faults};
use crate::patch::PatchType;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::table::{self, IncludeObject};
use crate::{discovery, object, openapi, protobuf, watch};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One HTTP request the server answered, in the order they were served.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub user_agent: String,
    /// The `fieldManager` query parameter, when sent.
    pub field_manager: Option<String>,
    pub status: u16,
    /// get | list | watch | create | update | patch | delete | deletecollection
    pub verb: String,
    /// The request body (JSON or YAML), when there was one.
    pub body: Option<Value>,
    /// When the request arrived (its headers and body read).
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// Whether the request asked to change state (whatever the outcome).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

pub struct App {
    pub api: Arc<ApiServer>,
    pub log: Arc<Mutex<Vec<RecordedRequest>>>,
    /// Faults armed for upcoming requests.
    pub faults: Arc<Mutex<Faults>>,
    /// The open watch streams.
    pub watches: Arc<watch::Watches>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub bookmark_interval: Duration,
    pub server_address: String,
}

pub fn router(app: Arc<App>) -> Router {
    // The apiserver's own limit (413 with a Status) applies, not axum's default of 2 MB.
    Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app)
}

enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3(String, String),
    Resource(Target),
    NotFound,
}

fn route(path: &str, api: &ApiServer) -> Route {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz"] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", version] => Route::OpenApiV3(String::new(), version.to_string()),
        ["openapi", "v3", "apis", group, version] => {
            Route::OpenApiV3(group.to_string(), version.to_string())
        }
        ["api", version, rest @ ..] => resource_route(api, "", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(api, group, version, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(api: &ApiServer, group: &str, version: &str, rest: &[&str]) -> Route {
    let state = api.lock();
    let lookup = |plural: &str| state.registry.lookup(group, version, plural);
    let target = |resource: Arc<ResourceType>, namespace: Option<&str>, tail: &[&str]| -> Route {
        let (name, sub) = match tail {
            [] => (None, None),
            [name] => (Some(*name), None),
            [name, sub] => (Some(*name), Some(*sub)),
            _ => return Route::NotFound,
        };
        match sub {
            None => {}
            Some("status") if resource.status_subresource => {}
            Some(_) => return Route::NotFound,
        }
        Route::Resource(Target {
            resource,
            namespace: namespace.map(String::from),
            name: name.map(String::from),
            status: sub.is_some(),
        })
    };
    match rest {
        [] if !state.registry.resources(group, version).is_empty() => {
            Route::ResourceList(group.to_string(), version.to_string())
        }
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some_and(|r| r.namespaced) => {
            target(lookup(plural).expect("checked"), Some(ns), tail)
        }
        [plural, tail @ ..] => match lookup(plural) {
            Some(rt) if rt.namespaced && !tail.is_empty() => Route::NotFound,
            Some(rt) => target(rt, None, tail),
            None => Route::NotFound,
        },
        [] => Route::NotFound,
    }
}

/// Query string parameters, percent-decoded.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("serializable");
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .expect("valid response")
}

fn error_response(err: &ApiError) -> Response {
    let mut response = json_response(err.code(), &err.to_status());
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// How the apiserver answers a request an injected fault hits (before, or for a timeout instead of,
/// the request's own answer).
fn fault_response(kind: &FaultKind, params: &HashMap<String, String>, api: &ApiServer) -> Response {
    match kind {
        FaultKind::InternalError => {
            let cause = "etcdserver: request timed out";
            json_response(
                500,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("Internal error occurred: {cause}"),
                    "reason": "InternalError",
                    "details": {"causes": [{"message": cause}]},
                    "code": 500,
                }),
            )
        }
        FaultKind::ServiceUnavailable { retry_after_secs } => {
            error_response(&ApiError::ServiceUnavailable {
                message: "the server is currently unable to handle the request".into(),
                retry_after_secs: *retry_after_secs,
            })
        }
        // The max-in-flight and priority-and-fairness filters answer before any API machinery runs:
        // plain text, with Retry-After.
        FaultKind::TooManyRequests { retry_after_secs } => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::RETRY_AFTER, retry_after_secs.to_string())
            .body(Body::from("Too many requests, please try again later.\n"))
            .expect("valid response"),
        FaultKind::Timeout { .. } => error_response(&ApiError::Timeout(
            "request did not complete within the allotted timeout".into(),
        )),
        FaultKind::Expired => {
            let requested = params
                .get("resourceVersion")
                .filter(|rv| !rv.is_empty())
                .map_or("0", String::as_str);
            error_response(&ApiError::Expired(format!(
                "too old resource version: {requested} ({})",
                api.current_rv()
            )))
        }
        FaultKind::EtcdTooLarge => error_response(&ApiError::Storage(
            "etcdserver: request is too large".into(),
        )),
        FaultKind::Hang => error_response(&ApiError::ServiceUnavailable {
            message: "the server is shutting down".into(),
            retry_after_secs: None,
        }),
    }
}

/// How the client wants objects rendered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Representation {
    Object,
    Table(IncludeObject),
    PartialMetadata,
}

fn representation(headers: &HeaderMap, params: &HashMap<String, String>) -> Representation {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if table::wants_table(accept) {
        Representation::Table(IncludeObject::parse(
            params.get("includeObject").map(String::as_str),
        ))
    } else if accept
        .split(',')
        .next()
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    {
        Representation::PartialMetadata
    } else {
        Representation::Object
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// The manager of a non-apply write: the `fieldManager` parameter, else the user agent's product name.
fn update_manager(params: &HashMap<String, String>, user_agent: &str) -> String {
    if let Some(m) = params.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let product = user_agent.split('/').next().unwrap_or("").trim();
    let product = if product.is_empty() {
        "unknown"
    } else {
        product
    };
    product.chars().take(128).collect()
}

fn verb_of(method: &Method, route: &Route, params: &HashMap<String, String>) -> String {
    let Route::Resource(target) = route else {
        return method.as_str().to_lowercase();
    };
    let has_name = target.name.is_some();
    match *method {
        Method::GET if has_name => "get",
        Method::GET if is_true(params.get("watch")) => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_lowercase(),
    }
    .to_string()
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v == "true" || v == "1")
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return protobuf::decode(body).map(Some);
    }
    if content_type.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the simulated apiserver does not speak {content_type}"
        )));
    }
    if content_type.contains("yaml") {
        return serde_norway::from_slice(body)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("error decoding JSON: {e}")))
}

async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let params = parse_query(&query);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let route = route(&path, &app.api);
    let verb = verb_of(&method, &route, &params);
    let parsed =
        crate::limits::check_request_body(body.len()).and_then(|()| parse_body(&headers, &body));
    let fault =
        app.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&verb, &path, &user_agent);
    let mut recorded = RecordedRequest {
        method: method.as_str().to_string(),
        path,
        query,
        user_agent,
        field_manager: params.get("fieldManager").cloned(),
        status: 0,
        verb,
        body: parsed.as_ref().ok().cloned().flatten(),
        at: std::time::Instant::now(),
    };
    let response = match (&parsed, &fault) {
        (Ok(value), None) => dispatch(
            &app,
            &method,
            route,
            &headers,
            &params,
            &recorded.user_agent,
            value.clone(),
        ),
        (Err(e), None) => error_response(e),
        // The faults come from the filters in front of the API machinery: they answer first.
        (_, Some(FaultKind::Hang)) => {
            // Recorded now: it may never end.
            app.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(recorded.clone());
            tracing::debug!(method = %recorded.method, path = %recorded.path, "kube-sim request hangs (injected)");
            let mut stop = app.shutdown.clone();
            let _ = stop.wait_for(|s| *s).await;
            return fault_response(&FaultKind::Hang, &params, &app.api);
        }
        (_, Some(kind @ FaultKind::Timeout { after })) => {
            // The handler runs behind the timeout (a write commits); a watch is long-running and would
            // not time out on a real apiserver, so here it is only answered late.
            if let (Ok(value), true) = (&parsed, kind.runs_request() && recorded.verb != "watch") {
                let _ = dispatch(
                    &app,
                    &method,
                    route,
                    &headers,
                    &params,
                    &recorded.user_agent,
                    value.clone(),
                );
            }
            tokio::time::sleep(*after).await;
            fault_response(kind, &params, &app.api)
        }
        (_, Some(kind)) => fault_response(kind, &params, &app.api),
    };
    recorded.status = response.status().as_u16();
    tracing::debug!(method = %recorded.method, path = %recorded.path, status = recorded.status, injected = fault.is_some(), "kube-sim request");
    app.log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(recorded);
    response
}

fn dispatch(
    app: &App,
    method: &Method,
    route: Route,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    user_agent: &str,
    body: Option<Value>,
) -> Response {
    let api = &app.api;
    let not_found = || error_response(&ApiError::NoSuchResource);
    match route {
        Route::Version => json_response(200, &discovery::version()),
        Route::Health => Response::new(Body::from("ok")),
        Route::CoreVersions => json_response(200, &discovery::core_versions(&app.server_address)),
        Route::Groups => json_response(200, &discovery::group_list(&api.lock().registry)),
        Route::Group(group) => {
            let list = discovery::group_list(&api.lock().registry);
            match list["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == group.as_str()))
            {
                Some(g) => {
                    let mut g = g.clone();
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    json_response(200, &g)
                }
                None => not_found(),
            }
        }
        Route::ResourceList(group, version) => {
            match discovery::resource_list(&api.lock().registry, &group, &version) {
                Some(list) => json_response(200, &list),
                None => not_found(),
            }
        }
        // Without a v2 document kubectl relies on v3 (server-side field validation) and its compiled-in types.
        Route::OpenApiV2 => not_found(),
        Route::OpenApiV3Root => json_response(200, &openapi::root(&api.lock().registry)),
        Route::OpenApiV3(group, version) => {
            match openapi::group_version(&api.lock().registry, &group, &version) {
                Some(doc) => json_response(200, &doc),
                None => not_found(),
            }
        }
        Route::NotFound => not_found(),
        Route::Resource(target) => {
            match resource(app, method, &target, headers, params, user_agent, body) {
                Ok(response) => response,
                Err(e) => error_response(&e),
            }
        }
    }
}

/// A list as the apiserver answers it. With `limit` and no resourceVersion it is paged, read at the
/// first page's revision (etcd3 store's GetList); with resourceVersion "0" the watch cache answers it
/// whole, `limit` ignored (cacher.go, shouldDelegateList); `continue` with a resourceVersion is refused.
fn list_request(
    api: &ApiServer,
    rt: &ResourceType,
    filter: &Filter,
    params: &HashMap<String, String>,
) -> ApiResult<ListPage> {
    let rv = params.get("resourceVersion").filter(|v| !v.is_empty());
    let from = params.get("continue").filter(|c| !c.is_empty());
    if from.is_some() && rv.is_some() {
        return Err(ApiError::BadRequest(
            "specifying resource version is not allowed when using continue".into(),
        ));
    }
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("limit: invalid value {l:?}")))?
            .max(0) as usize,
    };
    if (limit == 0 || rv.is_some()) && from.is_none() {
        let (items, rv) = api.list(rt, filter);
        return Ok(ListPage {
            items,
            rv,
            next: None,
            remaining: None,
        });
    }
    api.list_page(
        rt,
        filter,
        if limit == 0 { usize::MAX } else { limit },
        from.map(String::as_str),
    )
}

fn filter_from(target: &Target, params: &HashMap<String, String>) -> ApiResult<Filter> {
    let rt = &target.resource;
    let is_event = rt.kind == "Event";
    let allowed =
        |field: &str| field == "metadata.name" || field == "metadata.namespace" || is_event;
    Ok(Filter {
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(
            params.get("fieldSelector").map_or("", String::as_str),
            allowed,
        )?,
    })
}

fn resource(
    app: &App,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    user_agent: &str,
    body: Option<Value>,
) -> ApiResult<Response> {
    let api = &app.api;
    let rt = &target.resource;
    let repr = representation(headers, params);
    let render_one = |obj: &Value| -> Value {
        match repr {
            Representation::Object => obj.clone(),
            Representation::PartialMetadata => partial_metadata(obj),
            Representation::Table(include) => {
                table::table(rt, std::slice::from_ref(obj), None, include)
            }
        }
    };
    let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
    let collection = target.name.is_none();
    let namespaced_collection_without_ns = rt.namespaced && target.namespace.is_none();
    match (method.clone(), collection) {
        (Method::GET, false) => Ok(json_response(200, &render_one(&api.get(target)?))),
        (Method::GET, true) if is_true(params.get("watch")) => {
            Ok(watch_response(app, target, params, repr)?)
        }
        (Method::GET, true) => {
            let filter = filter_from(target, params)?;
            let page = list_request(api, rt, &filter, params)?;
            let (items, rv) = (page.items, page.rv);
            let list_meta = |rv: u64| {
                let mut meta = json!({"resourceVersion": rv.to_string()});
                if let Some(next) = &page.next {
                    meta["continue"] = json!(next);
                }
                if let Some(remaining) = page.remaining {
                    meta["remainingItemCount"] = json!(remaining);
                }
                meta
            };
            let body = match repr {
                Representation::Table(include) => table::table(rt, &items, Some(rv), include),
                Representation::PartialMetadata => json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta(rv),
                    "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
                }),
                Representation::Object => json!({
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version(),
                    "metadata": list_meta(rv),
                    "items": items,
                }),
            };
            Ok(json_response(200, &body))
        }
        (Method::POST, true) if !namespaced_collection_without_ns => {
            let body =
                body.ok_or_else(|| ApiError::BadRequest("the request body is empty".into()))?;
            let opts = write_options(params, user_agent, dry_run)?;
            let written = api.write(target, Write::Create(body), &opts)?;
            Ok(with_warnings(
                json_response(
                    if written.created { 201 } else { 200 },
                    &render_one(&written.object),
                ),
                &written.warnings,
            ))
        }
        (Method::PUT, false) => {
            let body =
                body.ok_or_else(|| ApiError::BadRequest("the request body is empty".into()))?;
            let opts = write_options(params, user_agent, dry_run)?;
            let written = api.write(target, Write::Replace(body), &opts)?;
            Ok(with_warnings(
                json_response(200, &render_one(&written.object)),
                &written.warnings,
            ))
        }
        (Method::PATCH, false) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchType::from_content_type(content_type).ok_or_else(|| {
                ApiError::UnsupportedMediaType(format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"))
            })?;
            let body =
                body.ok_or_else(|| ApiError::BadRequest("the request body is empty".into()))?;
            let (write, opts) = if kind == PatchType::Apply {
                let force = is_true(params.get("force"));
                let mut opts = write_options(params, user_agent, dry_run)?;
                opts.field_manager = params.get("fieldManager").cloned().unwrap_or_default();
                (
                    Write::Apply {
                        config: body,
                        force,
                    },
                    opts,
                )
            } else {
                (
                    Write::Patch(kind, body),
                    write_options(params, user_agent, dry_run)?,
                )
            };
            let written = api.write(target, write, &opts)?;
            let code = if written.created { 201 } else { 200 };
            Ok(with_warnings(
                json_response(code, &render_one(&written.object)),
                &written.warnings,
            ))
        }
        (Method::DELETE, false) => {
            let opts = delete_options(body.as_ref(), dry_run);
            Ok(match api.delete(target, &opts)? {
                Deleted::Pending(obj) => json_response(200, &render_one(&obj)),
                Deleted::Gone(obj) => json_response(200, &success_status(rt, &obj)),
            })
        }
        (Method::DELETE, true) => {
            let filter = filter_from(target, params)?;
            let (items, rv) = api.list(rt, &filter);
            let opts = delete_options(body.as_ref(), dry_run);
            let mut deleted = Vec::new();
            for item in items {
                let one = Target {
                    name: Some(object::name(&item).to_string()),
                    namespace: object::namespace(&item).map(String::from),
                    ..target.clone()
                };
                match api.delete(&one, &opts) {
                    Ok(Deleted::Pending(o) | Deleted::Gone(o)) => deleted.push(o),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let list = json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted});
            Ok(json_response(200, &list))
        }
        _ => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

fn write_options(
    params: &HashMap<String, String>,
    user_agent: &str,
    dry_run: bool,
) -> ApiResult<WriteOptions> {
    let field_validation = match params.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "fieldValidation parameter unsupported: {other:?}; supported values: Ignore, Warn, Strict"
            )))
        }
    };
    Ok(WriteOptions {
        field_manager: update_manager(params, user_agent),
        dry_run,
        field_validation,
    })
}

fn delete_options(body: Option<&Value>, dry_run: bool) -> DeleteOptions {
    let pre = body.map(|b| &b["preconditions"]);
    let body_dry_run = body
        .and_then(|b| b["dryRun"].as_array())
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    DeleteOptions {
        dry_run: dry_run || body_dry_run,
        precondition_uid: pre.and_then(|p| p["uid"].as_str()).map(String::from),
        precondition_rv: pre
            .and_then(|p| p["resourceVersion"].as_str())
            .map(String::from),
    }
}

fn success_status(rt: &ResourceType, obj: &Value) -> Value {
    let mut details =
        json!({"name": object::name(obj), "kind": rt.plural, "uid": object::meta_str(obj, "uid")});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let value = format!("299 - {w:?}");
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn watch_response(
    app: &App,
    target: &Target,
    params: &HashMap<String, String>,
    repr: Representation,
) -> ApiResult<Response> {
    let rt = target.resource.clone();
    let render: watch::Render = match repr {
        Representation::Object => Arc::new(|o| o),
        Representation::PartialMetadata => Arc::new(|o| partial_metadata(&o)),
        Representation::Table(include) => {
            let rt = rt.clone();
            Arc::new(move |o| table::table(&rt, std::slice::from_ref(&o), None, include))
        }
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let request = watch::WatchRequest {
        filter: filter_from(target, params)?,
        resource: rt,
        resource_version: params.get("resourceVersion").cloned(),
        send_initial_events: is_true(params.get("sendInitialEvents")),
        allow_bookmarks: is_true(params.get("allowWatchBookmarks")),
        timeout,
        bookmark_interval: app.bookmark_interval,
        render,
    };
    let rx = watch::start(
        app.api.clone(),
        request,
        app.watches.clone(),
        app.shutdown.clone(),
    );
    // An error item aborts the connection mid-response (no final chunk), as a dropped one ends.
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&x");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn default_manager_is_the_user_agent_product() {
        let none = HashMap::new();
        assert_eq!(
            update_manager(&none, "kubectl/v1.32.4 (linux/amd64) kubernetes/abc"),
            "kubectl"
        );
        assert_eq!(update_manager(&none, ""), "unknown");
    }
}
