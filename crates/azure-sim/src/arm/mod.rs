//! The ARM front door: authentication, api-version, throttling, injected faults, dispatch and recording.
//!
//! Checks run in ARM's order: the bearer token first (401), then the api-version (400), then
//! throttling (ARM's token buckets, then injected faults: 429, 403, 500), and only then the
//! resource provider (404 for missing scopes, 400 for invalid bodies). Every request that reached
//! the buckets carries the `x-ms-ratelimit-remaining-subscription-*` headers, throttled or not.

mod error;
mod path;
mod sites;

use crate::{
    faults::FaultKind,
    ids,
    record::ArmRequest,
    state::{lock, Shared},
    throttle::{OpKind, Verdict},
};
use axum::{
    body::to_bytes,
    extract::{Request, State},
    http::{header, HeaderName, StatusCode},
    response::{IntoResponse, Response},
};
use error::Reply;
use path::Target;
use serde_json::Value;
use std::{sync::Arc, time::Instant};

/// Request bodies larger than this are refused; real app settings payloads are a few KiB.
const MAX_BODY: usize = 4 << 20;

/// Microsoft.Web api-versions of the stable REST API. ARM refuses versions a provider does not
/// register, so an operator typo or a made-up version fails here as it would in Azure.
const API_VERSIONS: &[&str] = &[
    "2016-08-01",
    "2018-02-01",
    "2018-11-01",
    "2019-08-01",
    "2020-06-01",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-01-15",
    "2021-02-01",
    "2021-03-01",
    "2022-03-01",
    "2022-09-01",
    "2023-01-01",
    "2023-12-01",
    "2024-04-01",
    "2024-11-01",
    "2025-03-01",
    "2025-05-01",
];

/// Serves every request that is not for the token endpoint.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let arrived = std::time::Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let api_version = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
            .map(|(_, v)| v.into_owned())
    });
    let authorization = header_str(&req, header::AUTHORIZATION);
    let content_type = header_str(&req, header::CONTENT_TYPE);

    let (reply, body, client_id) = match to_bytes(req.into_body(), MAX_BODY).await {
        Err(_) => (
            Reply::arm(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request content exceeds the size limit.",
            ),
            None,
            None,
        ),
        Ok(bytes) => {
            let body = (!bytes.is_empty())
                .then(|| serde_json::from_slice::<Value>(&bytes))
                .transpose();
            let request = Incoming {
                method: &method,
                path: &path,
                api_version: api_version.as_deref(),
                authorization: authorization.as_deref(),
                content_type: content_type.as_deref(),
                body: &body,
            };
            let (reply, client_id) = process(&shared, &request).await;
            (reply, body.ok().flatten(), client_id)
        }
    };

    tracing::debug!(%method, %path, status = reply.status.as_u16(), "ARM request");
    let retry_after = reply
        .headers
        .iter()
        .find(|(name, _)| name == header::RETRY_AFTER)
        .and_then(|(_, v)| v.to_str().ok()?.parse().ok());
    lock(&shared.log).arm.push(ArmRequest {
        at: arrived,
        method,
        path,
        api_version,
        status: reply.status.as_u16(),
        body,
        client_id,
        retry_after,
    });
    reply.into_response()
}

fn header_str(req: &Request, name: HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

struct Incoming<'a> {
    method: &'a str,
    path: &'a str,
    api_version: Option<&'a str>,
    authorization: Option<&'a str>,
    content_type: Option<&'a str>,
    /// `None` when the body was empty.
    body: &'a Result<Option<Value>, serde_json::Error>,
}

/// Returns the answer and, once authenticated, the caller's client id.
async fn process(shared: &Shared, req: &Incoming<'_>) -> (Reply, Option<String>) {
    let client_id = match authenticate(shared, req.authorization) {
        Ok(c) => c,
        Err(reply) => return (reply, None),
    };
    if let Err(reply) = check_api_version(req.api_version, &shared.location) {
        return (reply, Some(client_id));
    }

    let principal = object_id(shared, &client_id);
    let principal = if principal.is_empty() {
        client_id.as_str()
    } else {
        principal
    };
    let verdict = subscription_of(req.path)
        .map(|sub| lock(&shared.limiter).take(sub, principal, req.method, Instant::now()));
    if let Some(
        v @ Verdict {
            retry_after: Some(secs),
            ..
        },
    ) = verdict
    {
        let reply = throttled(shared, req, &client_id, v.op, secs);
        return (rate_limit_headers(reply, &v), Some(client_id));
    }

    let fault = lock(&shared.faults).take(req.method, req.path);
    let reply = match fault {
        Some(FaultKind::TooManyRequests { retry_after_secs }) => throttled(
            shared,
            req,
            &client_id,
            OpKind::of(req.method),
            retry_after_secs,
        ),
        Some(FaultKind::ServerError) => Reply::arm(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            format!(
                "Encountered internal server error. Diagnostic information: tracking id '{}' (injected by azure-sim).",
                ids::guid()
            ),
        ),
        Some(FaultKind::Forbidden) => forbidden(shared, req, &client_id),
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            dispatch(shared, req, &client_id)
        }
        Some(FaultKind::Accepted) => match dispatch(shared, req, &client_id) {
            r if r.status == StatusCode::OK => Reply::empty(StatusCode::ACCEPTED),
            r => r,
        },
        None => dispatch(shared, req, &client_id),
    };
    let reply = match &verdict {
        Some(v) => rate_limit_headers(reply, v),
        None => reply,
    };
    (reply, Some(client_id))
}

/// The subscription a request is scoped to (`/subscriptions/{id}/...`); ARM throttles these per
/// subscription. Tenant-level paths (none of which the sim serves) are not throttled.
fn subscription_of(path: &str) -> Option<&str> {
    let mut segs = path.strip_prefix('/')?.split('/');
    let first = segs.next()?;
    let sub = segs.next()?;
    (first.eq_ignore_ascii_case("subscriptions") && !sub.is_empty()).then_some(sub)
}

/// The remaining-requests headers ARM adds for the principal's and the global bucket.
fn rate_limit_headers(reply: Reply, v: &Verdict) -> Reply {
    reply
        .header(
            HeaderName::from_static(v.op.header()),
            v.remaining.to_string(),
        )
        .header(
            HeaderName::from_static(v.op.global_header()),
            v.global_remaining.to_string(),
        )
}

fn authenticate(shared: &Shared, authorization: Option<&str>) -> Result<String, Reply> {
    let challenge = |code: &str, message: &str, description: &str| {
        Reply::arm(StatusCode::UNAUTHORIZED, code, message).header(
            header::WWW_AUTHENTICATE,
            format!(
                "Bearer authorization_uri=\"{}{}\", error=\"invalid_token\", error_description=\"{description}\"",
                shared.authority_host, shared.tenant_id
            ),
        )
    };
    let Some(authorization) = authorization else {
        return Err(challenge(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let token = match authorization.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty() =>
        {
            token.trim()
        }
        _ => return Err(challenge(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            "The authentication failed because of invalid 'Authorization' header format.",
        )),
    };
    let tokens = lock(&shared.tokens);
    let Some(issued) = tokens.get(token) else {
        return Err(challenge(
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            "The access token is invalid.",
        ));
    };
    if issued.expires_at <= Instant::now() {
        return Err(challenge(
            "ExpiredAuthenticationToken",
            "The access token has expired. Get a new access token and retry.",
            "The access token has expired.",
        ));
    }
    // The audience is the scope's resource; ARM accepts its endpoint with or without the slash.
    let audience = issued
        .resource
        .strip_suffix('/')
        .unwrap_or(&issued.resource);
    if !shared.arm_audiences.iter().any(|a| a == audience) {
        return Err(challenge(
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly \
                 match with one of the allowed audiences {}.",
                issued.resource,
                shared
                    .arm_audiences
                    .iter()
                    .map(|a| format!("'{a}/','{a}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "The access token has been obtained for wrong audience or resource.",
        ));
    }
    Ok(issued.client_id.clone())
}

fn check_api_version(api_version: Option<&str>, location: &str) -> Result<(), Reply> {
    let Some(version) = api_version else {
        return Err(Reply::arm(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if API_VERSIONS.contains(&version) {
        return Ok(());
    }
    let supported = API_VERSIONS
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let well_formed = version.len() >= 10
        && version.as_bytes()[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    Err(if well_formed {
        Reply::arm(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location '{location}' and API version \
                 '{version}' for type 'sites'. The supported api-versions are '{supported}'."
            ),
        )
    } else {
        Reply::arm(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{version}' is invalid. The supported versions are '{supported}'."
            ),
        )
    })
}

fn dispatch(shared: &Shared, req: &Incoming<'_>, client_id: &str) -> Reply {
    let Some(p) = path::parse(req.path) else {
        return Reply::arm(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for path '{}'. (azure-sim serves only \
                 Microsoft.Web sites, sites/slots and their config/appsettings[/list].)",
                req.path
            ),
        );
    };
    let result = match (p.target, req.method) {
        (Target::AppSettingsList, "POST") => sites::list_app_settings(shared, &p, client_id),
        (Target::AppSettings, "PUT") => {
            json_body(req).and_then(|body| sites::replace_app_settings(shared, &p, body))
        }
        (Target::Site, "GET") => sites::get_site(shared, &p, client_id),
        (Target::Site, "PATCH") => {
            json_body(req).and_then(|body| sites::patch_site(shared, &p, body))
        }
        (_, method) => Err(Reply::arm(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The requested resource does not support http method '{method}' (in azure-sim)."
            ),
        )),
    };
    result.map_or_else(|e| e, Reply::ok)
}

fn json_body<'a>(req: &'a Incoming<'_>) -> Result<&'a Value, Reply> {
    if !req
        .content_type
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(Reply::arm(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "The content media type '{}' is not supported. Only 'application/json' is supported.",
                req.content_type.unwrap_or_default()
            ),
        ));
    }
    match req.body {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(Reply::arm(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: the body is empty.",
        )),
        Err(e) => Err(Reply::arm(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )),
    }
}

/// ARM's 429, worded as real ARM words its token-bucket throttling.
fn throttled(
    shared: &Shared,
    req: &Incoming<'_>,
    client_id: &str,
    op: OpKind,
    retry_after: u64,
) -> Reply {
    let kind = op.word();
    let subscription = subscription_of(req.path).unwrap_or_default();
    Reply::arm(
        StatusCode::TOO_MANY_REQUESTS,
        "SubscriptionRequestsThrottled",
        format!(
            "Number of '{kind}' requests for subscription '{subscription}' actor '{}' exceeded. Please try \
             again after '{retry_after}' seconds after additional tokens are available. Refer to \
             https://aka.ms/arm-throttling for additional information.",
            object_id(shared, client_id)
        ),
    )
    .header(header::RETRY_AFTER, retry_after.to_string())
}

fn forbidden(shared: &Shared, req: &Incoming<'_>, client_id: &str) -> Reply {
    let action = path::parse(req.path).map_or_else(
        || "Microsoft.Web/sites/read".to_owned(),
        |p| p.action(req.method),
    );
    Reply::arm(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{client_id}' with object id '{}' does not have authorization to perform action \
             '{action}' over scope '{}' or the scope is invalid. If access was recently granted, please \
             refresh your credentials.",
            object_id(shared, client_id),
            req.path
        ),
    )
}

fn object_id<'s>(shared: &'s Shared, client_id: &str) -> &'s str {
    shared
        .clients
        .get(client_id)
        .map_or("", |c| c.object_id.as_str())
}
