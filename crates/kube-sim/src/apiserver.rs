//! The apiserver's request semantics, independent of HTTP: the write pipeline (decode defaults, field
//! ownership, storage behaviour, validation, no-op detection, commit), deletion with finalizers and cascades,
//! reads, and the change feed that watches and the load-balancer allocator follow.

use crate::admission;
use crate::error::{ApiError, ApiResult, Cause};
use crate::fieldpath::FieldSet;
use crate::limits;
use crate::object::{self, meta_mut};
use crate::patch::{self, PatchType};
use crate::registry::{Registry, ResourceType};
use crate::schema::Schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::service;
use crate::ssa::{self, Comparison, Operation, Scope, Writer};
use crate::store::{ObjectKey, Store, StoredEvent, TooOld};
use crate::validation;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

const NAMESPACES: &str = "namespaces";
const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `/status` subresource.
    pub status: bool,
}

impl Target {
    fn namespace_key(&self) -> String {
        if self.resource.namespaced {
            self.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// The body of a write.
#[derive(Debug, Clone)]
pub enum Write {
    Create(Value),
    Replace(Value),
    Patch(PatchType, Value),
    Apply { config: Value, force: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub field_manager: String,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

#[derive(Debug)]
pub enum Deleted {
    /// Finalizers (or contents, for namespaces and CRDs) keep the object around with a deletionTimestamp.
    Pending(Value),
    Gone(Value),
}

/// What a write proposes before the server's own steps run.
struct Draft {
    object: Value,
    live: Option<Value>,
    operation: Operation,
    /// For server-side apply: the fields the configuration sets.
    applied: Option<FieldSet>,
    force: bool,
}

/// Namespace plus label and field selectors, as lists and watches take them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object::namespace(obj) == Some(ns))
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

pub struct ApiServer {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

pub struct State {
    pub registry: Registry,
    pub store: Store,
    /// `--service-node-port-range`.
    pub node_ports: std::ops::RangeInclusive<u64>,
}

impl ApiServer {
    pub fn new(history_limit: usize, node_ports: std::ops::RangeInclusive<u64>) -> Arc<Self> {
        let mut state = State {
            registry: Registry::with_builtins(),
            store: Store::new(history_limit),
            node_ports,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let target = state
                .target("v1", "Namespace", None, Some(ns))
                .expect("built-in");
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let opts = WriteOptions {
                field_manager: "kube-apiserver".into(),
                ..Default::default()
            };
            state
                .write(&target, Write::Create(body), &opts)
                .expect("seed namespaces");
        }
        let (changes, _) = watch::channel(state.store.current_rv());
        Arc::new(ApiServer {
            state: Mutex::new(state),
            changes,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in the sim; keep serving so the test reports it clearly.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves to the latest resourceVersion whenever something is committed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn publish(&self, state: &State) {
        self.changes.send_if_modified(|rv| {
            let current = state.store.current_rv();
            let changed = *rv != current;
            *rv = current;
            changed
        });
    }

    pub fn write(&self, target: &Target, write: Write, opts: &WriteOptions) -> ApiResult<Written> {
        let mut state = self.lock();
        let result = state.write(target, write, opts);
        if let Ok(written) = &result {
            if !opts.dry_run {
                state.mirror_event(&written.object);
            }
        }
        self.publish(&state);
        result
    }

    pub fn delete(&self, target: &Target, opts: &DeleteOptions) -> ApiResult<Deleted> {
        let mut state = self.lock();
        let result = state.delete(target, opts);
        self.publish(&state);
        result
    }

    pub fn get(&self, target: &Target) -> ApiResult<Value> {
        self.lock().get(target)
    }

    /// Matching objects and the resourceVersion of the snapshot.
    pub fn list(&self, resource: &ResourceType, filter: &Filter) -> (Vec<Value>, u64) {
        let state = self.lock();
        let items = state
            .store
            .list(&resource.storage_key(), filter.namespace.as_deref())
            .filter(|o| filter.matches(o))
            .map(|o| present(resource, o.clone()))
            .collect();
        (items, state.store.current_rv())
    }

    /// One page of a paginated list (`limit`, `continue`): at most `limit` matching objects, read at
    /// the first page's resourceVersion, and the token for the rest. The token is opaque to clients,
    /// as the apiserver's is; one whose resourceVersion the history no longer reaches is 410 Expired.
    pub fn list_page(
        &self,
        resource: &ResourceType,
        filter: &Filter,
        limit: usize,
        from: Option<&str>,
    ) -> ApiResult<ListPage> {
        let state = self.lock();
        let (rv, after) = match from {
            Some(token) => {
                let (rv, after) = decode_continue(token)?;
                (rv, Some(after))
            }
            None => (state.store.current_rv(), None),
        };
        let objects = state
            .store
            .list_at(
                &resource.storage_key(),
                filter.namespace.as_deref(),
                rv,
                after.as_ref(),
            )
            .map_err(|_| {
                // The apiserver's words (storage/errors.go, NewResourceExpired for a continue token).
                ApiError::Expired(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                        .into(),
                )
            })?;
        let mut matching = objects.into_iter().filter(|o| filter.matches(o));
        let items: Vec<Value> = matching
            .by_ref()
            .take(limit)
            .map(|o| present(resource, o.clone()))
            .collect();
        let remaining = matching.count();
        let next = (remaining > 0)
            .then(|| {
                items
                    .last()
                    .map(|last| encode_continue(rv, &object_key_of(last)))
            })
            .flatten();
        // remainingItemCount is left out when a selector filters the list (apimachinery ListMeta).
        let selected = !filter.labels.is_empty() || !filter.fields.is_empty();
        Ok(ListPage {
            items,
            rv,
            next,
            remaining: (remaining > 0 && !selected).then_some(remaining),
        })
    }

    pub fn events_since(
        &self,
        resource: &ResourceType,
        rv: u64,
    ) -> Result<Vec<Arc<StoredEvent>>, TooOld> {
        self.lock().store.events_since(&resource.storage_key(), rv)
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().store.current_rv()
    }

    /// Compacts the watch history at the current resourceVersion (see [`Store::compact`]).
    pub fn compact(&self) -> u64 {
        self.lock().store.compact()
    }
}

/// A page of a list.
pub struct ListPage {
    pub items: Vec<Value>,
    /// The resourceVersion every page of this list is read at.
    pub rv: u64,
    /// The `continue` token for the next page, when there is one.
    pub next: Option<String>,
    /// How many matching objects the later pages hold, when no selector filters the list.
    pub remaining: Option<usize>,
}

fn object_key_of(obj: &Value) -> ObjectKey {
    (
        object::namespace(obj).unwrap_or_default().to_string(),
        object::name(obj).to_string(),
    )
}

fn encode_continue(rv: u64, after: &ObjectKey) -> String {
    use base64::Engine as _;
    let token = json!({"rv": rv, "start": [after.0, after.1]});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, ObjectKey)> {
    use base64::Engine as _;
    let invalid = || ApiError::BadRequest(format!("continue key is not valid: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let token: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = token["rv"].as_u64().ok_or_else(invalid)?;
    let part = |i: usize| token["start"][i].as_str().map(str::to_string);
    Ok((
        rv,
        (part(0).ok_or_else(invalid)?, part(1).ok_or_else(invalid)?),
    ))
}

/// Objects are stored once per resource; reading through another served version only relabels them
/// (CRD conversion strategy `None`).
pub fn present(resource: &ResourceType, mut obj: Value) -> Value {
    obj["apiVersion"] = json!(resource.api_version());
    obj
}

fn now() -> String {
    object::now_rfc3339()
}

impl State {
    pub fn target(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Option<Target> {
        let resource = self.registry.by_kind(api_version, kind)?;
        Some(Target {
            namespace: namespace.filter(|_| resource.namespaced).map(String::from),
            name: name.map(String::from),
            resource,
            status: false,
        })
    }

    pub fn get(&self, target: &Target) -> ApiResult<Value> {
        let rt = &target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        self.store
            .get(&rt.storage_key(), &target.namespace_key(), name)
            .map(|o| present(rt, o.clone()))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// A real apiserver serves `events.k8s.io/v1` and core `v1` Events from one storage, so an Event
    /// recorded through either API shows in `kubectl get events` and `kubectl describe`. Here the
    /// newer API's Events are copied into the core collection, converted field by field.
    fn mirror_event(&mut self, event: &Value) {
        if event["apiVersion"] != "events.k8s.io/v1" || event["kind"] != "Event" {
            return;
        }
        let namespace = object::namespace(event).unwrap_or("default").to_string();
        let name = object::name(event).to_string();
        // Core Event timestamps are whole seconds; eventTime is a MicroTime.
        let seconds = |t: &Value| {
            t.as_str()
                .map(|t| format!("{}Z", t.split(['.', 'Z']).next().unwrap_or(t)))
        };
        let event_time = &event["eventTime"];
        let last = event["series"]["lastObservedTime"].clone();
        let last = if last.is_null() {
            event_time.clone()
        } else {
            last
        };
        let core = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": event["regarding"],
            "related": event["related"],
            "reason": event["reason"],
            "message": event["note"],
            "type": event["type"],
            "action": event["action"],
            "eventTime": event_time,
            "firstTimestamp": seconds(event_time),
            "lastTimestamp": seconds(&last),
            "count": event["series"]["count"].as_i64().unwrap_or(1),
            "source": {"component": event["reportingController"]},
            "reportingComponent": event["reportingController"],
            "reportingInstance": event["reportingInstance"],
        });
        let core = strip_nulls(core);
        let Some(target) = self.target("v1", "Event", Some(&namespace), Some(&name)) else {
            return;
        };
        let opts = WriteOptions {
            field_manager: "events-storage".into(),
            ..Default::default()
        };
        if let Err(err) = self.write(
            &target,
            Write::Apply {
                config: core,
                force: true,
            },
            &opts,
        ) {
            tracing::warn!(%name, %namespace, error = %err, "could not mirror an events.k8s.io Event");
        }
    }

    fn check_namespace_accepts_content(&self, target: &Target) -> ApiResult<()> {
        if !target.resource.namespaced {
            return Ok(());
        }
        let ns = target.namespace_key();
        match self.store.get(NAMESPACES, "", &ns) {
            None => Err(ApiError::not_found("", NAMESPACES, &ns)),
            Some(n) if object::is_deleting(n) => Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The write pipeline, in the apiserver's order.
    pub fn write(
        &mut self,
        target: &Target,
        write: Write,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let rt = target.resource.clone();
        let schema = Schema::root(rt.schema());
        let now = now();
        let Draft {
            object,
            live,
            operation,
            applied,
            force,
        } = self.draft(target, write, opts)?;
        let name = object::name(&object).to_string();

        // Identity and system metadata come from the server; each endpoint changes only its own part.
        let mut candidate = scope_to_endpoint(target, object, live.as_ref(), &now)?;

        // Decode-time defaults (owned by the writer) and pruning of unknown custom resource fields.
        apply_decode_defaults(&rt, &mut candidate);
        let mut warnings = prune_unknown_fields(&rt, &mut candidate, opts.field_validation)?;

        // Ownership reflects what the writer asked for, before the storage layer's own changes.
        let before = live
            .clone()
            .unwrap_or_else(|| creation_baseline(&rt, &candidate));
        let scope = scope_of(&rt, target);
        let raw = ssa::compare(&before, &candidate, schema);
        let changes = Comparison {
            added: scope.filter(raw.added),
            modified: scope.filter(raw.modified),
            removed: scope.filter(raw.removed),
        };
        let api_version = rt.api_version();
        let writer = Writer {
            manager: &opts.field_manager,
            operation,
            subresource: target.status.then_some("status"),
            api_version: &api_version,
        };
        let entries = ssa::parse_entries(&before);
        let mut entries = match applied {
            Some(applied) => {
                ssa::apply_ownership(entries, &writer, applied, &changes, force, &now)?
            }
            None => ssa::update_ownership(entries, &writer, &changes, &now),
        };

        // Storage-time behaviour (not attributed to any manager), validation, generation.
        self.admit(target, &mut candidate, live.as_ref(), &name, &now)?;

        // Nobody owns fields that are gone.
        let removed = Scope::Whole.filter(ssa::compare(&before, &candidate, schema).removed);
        ssa::forget_removed(&mut entries, &removed);
        let managed = ssa::render_entries(entries);
        if managed.as_array().is_some_and(|m| m.is_empty()) {
            meta_mut(&mut candidate).remove("managedFields");
        } else {
            meta_mut(&mut candidate).insert("managedFields".into(), managed);
        }

        // Validating admission, then etcd's size limit (only writes that reach storage).
        warnings.extend(self.admission(target, Some(&candidate), live.as_ref(), opts.dry_run)?);
        if !opts.dry_run && live.as_ref() != Some(&candidate) {
            limits::check_etcd_request(&rt, &target.namespace_key(), &candidate)?;
        }

        let object = self.commit(target, candidate, live.as_ref(), opts.dry_run);
        Ok(Written {
            object: present(&rt, object),
            created: live.is_none(),
            warnings,
        })
    }

    /// Runs the ValidatingAdmissionPolicies that match a write (`object`) or a deletion (no `object`).
    fn admission(
        &self,
        target: &Target,
        object: Option<&Value>,
        live: Option<&Value>,
        dry_run: bool,
    ) -> ApiResult<Vec<String>> {
        let name = object.or(live).map(object::name).unwrap_or_default();
        let operation = match (object, live) {
            (None, _) => admission::Operation::Delete,
            (Some(_), None) => admission::Operation::Create,
            (Some(_), Some(_)) => admission::Operation::Update,
        };
        let namespace = target.namespace_key();
        admission::validate(
            &self.store,
            &admission::Request {
                resource: &target.resource,
                subresource: target.status.then_some("status"),
                operation,
                namespace: Some(namespace.as_str()).filter(|ns| !ns.is_empty()),
                name,
                object,
                old_object: live,
                dry_run,
            },
        )
    }

    /// The object a write proposes, from its body and the live object.
    fn draft(&self, target: &Target, write: Write, opts: &WriteOptions) -> ApiResult<Draft> {
        let rt = &target.resource;
        let live_of = |name: &str| {
            self.store
                .get(&rt.storage_key(), &target.namespace_key(), name)
                .cloned()
        };
        let existing = |name: &str| {
            live_of(name).ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
        };
        let update = |object: Value, live: Value| Draft {
            object,
            live: Some(live),
            operation: Operation::Update,
            applied: None,
            force: false,
        };
        match write {
            Write::Create(body) => {
                if target.status {
                    return Err(ApiError::MethodNotAllowed(
                        "create is not supported on the status subresource".into(),
                    ));
                }
                let mut body = expect_object(body)?;
                check_kind(rt, &body)?;
                self.check_namespace_accepts_content(target)?;
                let name = self.name_for_create(rt, &target.namespace_key(), &body)?;
                if live_of(&name).is_some() {
                    return Err(ApiError::AlreadyExists {
                        group: rt.group.clone(),
                        resource: rt.plural.clone(),
                        name,
                    });
                }
                meta_mut(&mut body).insert("name".into(), json!(name));
                Ok(Draft {
                    object: body,
                    live: None,
                    operation: Operation::Update,
                    applied: None,
                    force: false,
                })
            }
            Write::Replace(body) => {
                let body = expect_object(body)?;
                check_kind(rt, &body)?;
                let name = url_name(target)?;
                check_body_name(&body, name)?;
                let live = existing(name)?;
                check_precondition(rt, name, &body, &live)?;
                Ok(update(body, live))
            }
            Write::Patch(kind, patch_body) => {
                let name = url_name(target)?;
                let live = existing(name)?;
                if kind == PatchType::Strategic && rt.crd.is_some() {
                    return Err(ApiError::UnsupportedMediaType(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
                    ));
                }
                let patched = patch::apply(
                    kind,
                    &present(rt, live.clone()),
                    &patch_body,
                    Schema::root(rt.schema()),
                )?;
                check_kind(rt, &patched)?;
                check_body_name(&patched, name)?;
                check_precondition(rt, name, &patched, &live)?;
                Ok(update(patched, live))
            }
            Write::Apply { config, force } => {
                let name = url_name(target)?;
                let live = live_of(name);
                self.draft_apply(target, name, config, live, force, &opts.field_manager)
            }
        }
    }

    /// Server-side apply: merge the configuration into the live object, then drop what this manager applied
    /// last time, no longer applies, and nobody else owns.
    fn draft_apply(
        &self,
        target: &Target,
        name: &str,
        config: Value,
        live: Option<Value>,
        force: bool,
        manager: &str,
    ) -> ApiResult<Draft> {
        let rt = &target.resource;
        if manager.is_empty() {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![Cause::required(
                    "fieldManager",
                    "is required for apply patch",
                )],
            ));
        }
        let config = expect_object(config)?;
        check_kind(rt, &config)?;
        if config.get("apiVersion").is_none() || config.get("kind").is_none() {
            return Err(ApiError::BadRequest(
                "apiVersion and kind must be set in an applied configuration".into(),
            ));
        }
        check_body_name(&config, name)?;
        match &live {
            Some(live) => check_precondition(rt, name, &config, live)?,
            None if target.status => return Err(ApiError::not_found(&rt.group, &rt.plural, name)),
            None => self.check_namespace_accepts_content(target)?,
        }
        let schema = Schema::root(rt.schema());
        let scope = scope_of(rt, target);
        let config = scoped_config(config, scope);
        let applied = scope.filter(ssa::field_set(&config, schema));
        let base = live.clone().unwrap_or_else(|| json!({}));
        let subresource = target.status.then_some("status");
        let mut previous = Default::default();
        let mut owned = applied.clone();
        for e in ssa::parse_entries(&base) {
            if e.manager == manager
                && e.operation == Operation::Apply
                && e.subresource.as_deref() == subresource
            {
                previous = e.fields;
            } else {
                owned = owned.union(&e.fields);
            }
        }
        let mut merged = ssa::merge(&base, &config, schema);
        ssa::prune(&mut merged, &previous.difference(&applied), &owned, schema);
        let mut merged = expect_object(merged)?;
        meta_mut(&mut merged).insert("name".into(), json!(name));
        Ok(Draft {
            object: merged,
            live,
            operation: Operation::Apply,
            applied: Some(applied),
            force,
        })
    }

    /// Storage-layer behaviour and validation; sets `metadata.generation`.
    fn admit(
        &self,
        target: &Target,
        candidate: &mut Value,
        live: Option<&Value>,
        name: &str,
        now: &str,
    ) -> ApiResult<()> {
        let rt = &target.resource;
        let mut causes = validate_name(rt, name);
        causes.extend(limits::validate(rt, candidate));
        causes.extend(self.storage_semantics(rt, target, candidate, live, now));
        if let Some(cr) = rt.crd.as_ref().filter(|_| causes.is_empty()) {
            causes.extend(validation::validate_custom_resource(
                candidate, live, &cr.schema,
            ));
        }
        if let Some(live) = live.filter(|l| object::is_deleting(l)) {
            let before = object::finalizers(live);
            if object::finalizers(candidate)
                .iter()
                .any(|f| !before.contains(f))
            {
                causes.push(Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if let Some(full) = causes
            .iter()
            .find(|c| c.reason == service::ALLOCATION_FAILED)
        {
            return Err(ApiError::Internal(format!(
                "Internal error occurred: {}",
                full.message
            )));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, name, causes));
        }
        if rt.tracks_generation {
            let generation = match live {
                None => 1,
                Some(l) => {
                    let previous = object::meta(l)
                        .and_then(|m| m["generation"].as_i64())
                        .unwrap_or(1);
                    previous + i64::from(content_changed(l, candidate, rt.status_subresource))
                }
            };
            meta_mut(candidate).insert("generation".into(), json!(generation));
        }
        Ok(())
    }

    /// Stores the candidate, unless it changes nothing (no new resourceVersion, no watch event) or this is
    /// a dry run. Dropping the last finalizer of a deleted object completes its deletion.
    fn commit(
        &mut self,
        target: &Target,
        candidate: Value,
        live: Option<&Value>,
        dry_run: bool,
    ) -> Value {
        if live == Some(&candidate) || dry_run {
            return candidate;
        }
        let storage_key = target.resource.storage_key();
        let key: ObjectKey = (target.namespace_key(), object::name(&candidate).to_string());
        if object::is_deleting(&candidate)
            && object::finalizers(&candidate).is_empty()
            && !self.has_contents(&storage_key, &candidate)
        {
            let gone = self
                .store
                .remove_as(&storage_key, &key, candidate)
                .expect("a deleting object is live");
            self.after_removal(&storage_key, &gone);
            return gone;
        }
        let stored = self.store.put(&storage_key, key, candidate);
        if storage_key == CRDS && !object::is_deleting(&stored) {
            self.registry.register_crd(&stored);
        }
        stored
    }

    fn name_for_create(&self, rt: &ResourceType, ns: &str, body: &Value) -> ApiResult<String> {
        if let Some(name) = object::meta_str(body, "name").filter(|n| !n.is_empty()) {
            return Ok(name.to_string());
        }
        let Some(prefix) = object::meta_str(body, "generateName").filter(|g| !g.is_empty()) else {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                "",
                vec![Cause::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        };
        loop {
            let candidate = format!("{prefix}{}", object::generate_name_suffix());
            if self.store.get(&rt.storage_key(), ns, &candidate).is_none() {
                return Ok(candidate);
            }
        }
    }

    /// Kind-specific behaviour of the storage layer; returns validation failures.
    fn storage_semantics(
        &self,
        rt: &ResourceType,
        target: &Target,
        obj: &mut Value,
        live: Option<&Value>,
        now: &str,
    ) -> Vec<Cause> {
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Service") if !target.status => {
                let allocated = self
                    .store
                    .service_holdings()
                    .for_write(live, self.node_ports.clone());
                service::prepare(obj, live, allocated)
                    .err()
                    .unwrap_or_default()
            }
            ("", "Namespace") => {
                if obj["spec"]["finalizers"].is_null() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                let phase = if object::is_deleting(obj) {
                    "Terminating"
                } else {
                    "Active"
                };
                obj["status"]["phase"] = json!(phase);
                Vec::new()
            }
            (admission::GROUP, kind) => admission::validate_config(kind, obj),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let causes = validation::validate_crd(obj);
                if causes.is_empty() {
                    obj["status"] = crd_status(obj, live, now);
                }
                causes
            }
            _ => Vec::new(),
        }
    }

    pub fn delete(&mut self, target: &Target, opts: &DeleteOptions) -> ApiResult<Deleted> {
        let rt = &target.resource;
        let name = url_name(target)?;
        let key: ObjectKey = (target.namespace_key(), name.to_string());
        let storage_key = rt.storage_key();
        let live = self
            .store
            .get(&storage_key, &key.0, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let mismatch = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_some_and(|w| Some(w) != have)
        };
        if mismatch(&opts.precondition_uid, object::meta_str(&live, "uid"))
            || mismatch(&opts.precondition_rv, object::resource_version(&live))
        {
            return Err(ApiError::Conflict {
                group: rt.group.clone(),
                resource: rt.plural.clone(),
                name: name.to_string(),
                detail: "the UID or ResourceVersion in the precondition does not match".into(),
            });
        }
        self.admission(target, None, Some(&live), opts.dry_run)?;
        if opts.dry_run || object::is_deleting(&live) {
            return Ok(
                if object::is_deleting(&live) || !object::finalizers(&live).is_empty() {
                    Deleted::Pending(present(rt, live))
                } else {
                    Deleted::Gone(present(rt, live))
                },
            );
        }
        Ok(match self.delete_object(&storage_key, &key) {
            Some(Deleted::Pending(o)) => Deleted::Pending(present(rt, o)),
            Some(Deleted::Gone(o)) => Deleted::Gone(present(rt, o)),
            None => Deleted::Gone(present(rt, live)),
        })
    }

    /// Deletes one object: marks it when finalizers or contents hold it, removes it otherwise.
    fn delete_object(&mut self, storage_key: &str, key: &ObjectKey) -> Option<Deleted> {
        let live = self.store.get(storage_key, &key.0, &key.1)?.clone();
        if object::is_deleting(&live) {
            return Some(Deleted::Pending(live));
        }
        let is_container = storage_key == NAMESPACES || storage_key == CRDS;
        if object::finalizers(&live).is_empty() && !is_container {
            let gone = self.store.remove(storage_key, key)?;
            self.after_removal(storage_key, &gone);
            return Some(Deleted::Gone(gone));
        }
        let mut marked = live;
        let meta = meta_mut(&mut marked);
        meta.insert("deletionTimestamp".into(), json!(now()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        if storage_key == NAMESPACES {
            marked["status"]["phase"] = json!("Terminating");
        }
        let marked = self.store.put(storage_key, key.clone(), marked);
        if is_container {
            for (content_key, content) in self.contents(storage_key, &marked) {
                self.delete_object(
                    &content_key,
                    &(
                        object::namespace(&content).unwrap_or_default().to_string(),
                        object::name(&content).to_string(),
                    ),
                );
            }
            if self.try_finish(storage_key, key) {
                let gone = marked;
                return Some(Deleted::Gone(gone));
            }
        }
        Some(Deleted::Pending(
            self.store
                .get(storage_key, &key.0, &key.1)
                .cloned()
                .unwrap_or(marked),
        ))
    }

    /// Objects whose lifetime a namespace or CRD bounds.
    fn contents(&self, storage_key: &str, container: &Value) -> Vec<(String, Value)> {
        self.contents_iter(storage_key, container)
            .map(|(k, o)| (k.to_string(), o.clone()))
            .collect()
    }

    fn contents_iter<'a>(
        &'a self,
        storage_key: &str,
        container: &'a Value,
    ) -> Box<dyn Iterator<Item = (String, &'a Value)> + 'a> {
        match storage_key {
            NAMESPACES => Box::new(
                self.store
                    .namespace_contents(object::name(container))
                    .map(|(k, o)| (k.to_string(), o)),
            ),
            CRDS => {
                let plural = container["spec"]["names"]["plural"]
                    .as_str()
                    .unwrap_or_default();
                let group = container["spec"]["group"].as_str().unwrap_or_default();
                let key = format!("{plural}.{group}");
                let objects = self.store.list(&key, None);
                Box::new(objects.map(move |o| (key.clone(), o)))
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    fn has_contents(&self, storage_key: &str, obj: &Value) -> bool {
        self.contents_iter(storage_key, obj).next().is_some()
    }

    /// Removes a deleting object once nothing holds it any more; returns whether it went.
    fn try_finish(&mut self, storage_key: &str, key: &ObjectKey) -> bool {
        let Some(obj) = self.store.get(storage_key, &key.0, &key.1) else {
            return false;
        };
        if !object::is_deleting(obj)
            || !object::finalizers(obj).is_empty()
            || self.has_contents(storage_key, obj)
        {
            return false;
        }
        if let Some(gone) = self.store.remove(storage_key, key) {
            self.after_removal(storage_key, &gone);
        }
        true
    }

    /// Cascades after an object is gone: terminating namespaces and CRDs that were waiting on it finish,
    /// CRDs stop being served, and dependents whose owners are all gone are garbage-collected.
    fn after_removal(&mut self, storage_key: &str, gone: &Value) {
        if storage_key == CRDS {
            let spec = &gone["spec"];
            self.registry.unregister_crd(
                spec["group"].as_str().unwrap_or_default(),
                spec["names"]["plural"].as_str().unwrap_or_default(),
            );
        }
        if let Some(ns) = object::namespace(gone) {
            self.try_finish(NAMESPACES, &(String::new(), ns.to_string()));
        }
        let crd_name = storage_key.to_string();
        if storage_key.contains('.') && self.store.get(CRDS, "", &crd_name).is_some() {
            self.try_finish(CRDS, &(String::new(), crd_name));
        }
        self.collect_garbage(object::meta_str(gone, "uid").unwrap_or_default());
    }

    fn collect_garbage(&mut self, owner_uid: &str) {
        if owner_uid.is_empty() {
            return;
        }
        let orphans: Vec<(String, ObjectKey)> = self
            .store
            .dependents(owner_uid)
            .into_iter()
            .filter(|(storage_key, key)| {
                self.store
                    .get(storage_key, &key.0, &key.1)
                    .is_some_and(|o| owner_uids(o).iter().all(|u| !self.store.has_uid(u)))
            })
            .collect();
        for (storage_key, key) in orphans {
            self.delete_object(&storage_key, &key);
        }
    }
}

fn owner_uids(obj: &Value) -> Vec<String> {
    object::meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn expect_object(value: Value) -> ApiResult<Value> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ))
    }
}

fn url_name(target: &Target) -> ApiResult<&str> {
    target
        .name
        .as_deref()
        .ok_or_else(|| ApiError::MethodNotAllowed("a resource name is required".into()))
}

/// The body's apiVersion and kind, when given, must be the endpoint's.
fn check_kind(rt: &ResourceType, body: &Value) -> ApiResult<()> {
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
        let same_group = av == rt.api_version()
            || av.split('/').next() == Some(rt.group.as_str()) && !rt.group.is_empty();
        if !same_group {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != rt.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    Ok(())
}

fn check_body_name(body: &Value, url_name: &str) -> ApiResult<()> {
    match object::meta_str(body, "name") {
        Some(n) if !n.is_empty() && n != url_name => Err(ApiError::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({url_name})"
        ))),
        _ => Ok(()),
    }
}

/// A resourceVersion in the body is an optimistic-concurrency precondition.
fn check_precondition(rt: &ResourceType, name: &str, body: &Value, live: &Value) -> ApiResult<()> {
    match object::resource_version(body) {
        Some(rv) if Some(rv) != object::resource_version(live) => {
            Err(ApiError::conflict(&rt.group, &rt.plural, name))
        }
        _ => Ok(()),
    }
}

/// Sets identity and system metadata from the live object (or fresh ones on create), then keeps only the part
/// of the object the endpoint may change: `/status` changes only `status`, the main resource everything else.
fn scope_to_endpoint(
    target: &Target,
    mut candidate: Value,
    live: Option<&Value>,
    now: &str,
) -> ApiResult<Value> {
    let rt = &target.resource;
    normalize_metadata(&mut candidate, rt, &target.namespace_key(), live, now);
    if target.status {
        let name = object::name(&candidate);
        let mut scoped = live
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?
            .clone();
        match candidate.get("status") {
            Some(status) => scoped["status"] = status.clone(),
            None => _ = object::remove_at(&mut scoped, &["status"]),
        }
        return Ok(scoped);
    }
    if rt.status_subresource {
        match live.and_then(|l| l.get("status")) {
            Some(status) => candidate["status"] = status.clone(),
            None => _ = object::remove_at(&mut candidate, &["status"]),
        }
    }
    Ok(candidate)
}

/// Custom resources lose fields their schema does not declare; `fieldValidation` decides whether that is
/// an error (Strict), a warning (Warn) or silent (Ignore).
fn prune_unknown_fields(
    rt: &ResourceType,
    candidate: &mut Value,
    mode: FieldValidation,
) -> ApiResult<Vec<String>> {
    let Some(cr) = &rt.crd else {
        return Ok(Vec::new());
    };
    let unknown = validation::prune_and_default(candidate, &cr.schema);
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match mode {
        FieldValidation::Strict if !messages.is_empty() => Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
        FieldValidation::Warn => Ok(messages),
        _ => Ok(Vec::new()),
    }
}

fn scope_of(rt: &ResourceType, target: &Target) -> Scope {
    match (rt.status_subresource, target.status) {
        (false, _) => Scope::Whole,
        (true, false) => Scope::MainResource,
        (true, true) => Scope::Status,
    }
}

/// An applied configuration only contributes the part of the object its endpoint may change.
fn scoped_config(mut config: Value, scope: Scope) -> Value {
    match scope {
        Scope::Whole => config,
        Scope::MainResource => {
            object::remove_at(&mut config, &["status"]);
            config
        }
        Scope::Status => {
            let mut kept = json!({});
            for key in ["apiVersion", "kind", "status"] {
                if let Some(v) = config.get(key) {
                    kept[key] = v.clone();
                }
            }
            kept
        }
    }
}

fn normalize_metadata(
    obj: &mut Value,
    rt: &ResourceType,
    ns: &str,
    live: Option<&Value>,
    now: &str,
) {
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    let meta = meta_mut(obj);
    if rt.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    const SYSTEM: [&str; 8] = [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "managedFields",
        "selfLink",
    ];
    for field in SYSTEM {
        meta.remove(field);
        if let Some(v) = live.and_then(object::meta).and_then(|m| m.get(field)) {
            meta.insert(field.into(), v.clone());
        }
    }
    if live.is_none() {
        meta.insert("uid".into(), json!(object::new_uid()));
        meta.insert("creationTimestamp".into(), json!(now));
    }
    // ObjectMeta is a Go struct with `omitempty`: empty collections are not stored.
    for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let empty = match meta.get(field) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(field);
        }
    }
}

/// What a create is compared against for ownership. The apiserver compares with an empty object of the
/// kind: for built-in (typed) kinds that already has `metadata` and the struct fields `spec`/`status` (maps
/// such as ConfigMap `data` are omitted when empty), so those never show up as owned members (`.`)
/// themselves; for custom resources only `metadata` exists.
fn creation_baseline(rt: &ResourceType, candidate: &Value) -> Value {
    let mut baseline = json!({"metadata": {}});
    if rt.crd.is_none() {
        for key in ["spec", "status"] {
            if candidate.get(key).is_some_and(Value::is_object) {
                baseline[key] = json!({});
            }
        }
    }
    baseline
}

/// Defaults the apiserver applies while decoding a request, so they belong to the writer.
fn apply_decode_defaults(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Service") => service::apply_defaults(obj),
        ("", "Namespace") => {
            let name = object::name(obj).to_string();
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        ("apps", "Deployment") => {
            let spec = &mut obj["spec"];
            for (field, default) in [
                ("replicas", json!(1)),
                ("revisionHistoryLimit", json!(10)),
                ("progressDeadlineSeconds", json!(600)),
                (
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                ),
            ] {
                if spec.get(field).is_none_or(Value::is_null) {
                    spec[field] = default;
                }
            }
        }
        ("", "Secret") => {
            use base64::Engine as _;
            if let Some(Value::Object(string_data)) = object::remove_at(obj, &["stringData"]) {
                for (k, v) in string_data {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or_default());
                    obj["data"][k] = json!(encoded);
                }
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        (admission::GROUP, kind) => admission::apply_defaults(kind, obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let names = &mut obj["spec"]["names"];
            if let Some(kind) = names["kind"].as_str().map(String::from) {
                if names.get("singular").is_none() {
                    names["singular"] = json!(kind.to_lowercase());
                }
                if names.get("listKind").is_none() {
                    names["listKind"] = json!(format!("{kind}List"));
                }
            }
            if obj["spec"].get("conversion").is_none() {
                obj["spec"]["conversion"] = json!({"strategy": "None"});
            }
        }
        _ => {}
    }
}

/// The CRD controllers' verdict, set synchronously: names accepted and the resource established.
fn crd_status(crd: &Value, live: Option<&Value>, now: &str) -> Value {
    let previous = live.map(|l| &l["status"]);
    let transition_time = |ty: &str| {
        previous
            .and_then(|s| s["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == "True"))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_string()
    };
    let mut stored: Vec<Value> = previous
        .and_then(|s| s["storedVersions"].as_array())
        .cloned()
        .unwrap_or_default();
    for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
        if v["storage"].as_bool() == Some(true) && !stored.contains(&v["name"]) {
            stored.push(v["name"].clone());
        }
    }
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": transition_time("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": transition_time("Established")},
        ],
        "storedVersions": stored,
    })
}

/// Whether anything beyond metadata (and status, when it is a subresource) changed: that bumps generation.
fn content_changed(old: &Value, new: &Value, status_is_subresource: bool) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if status_is_subresource {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Object names: DNS-1035 labels for Services, RFC 1123 labels for Namespaces, subdomains otherwise.
fn validate_name(rt: &ResourceType, name: &str) -> Vec<Cause> {
    let (ok, msg) = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Service") => (
            is_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
            DNS1035_MSG,
        ),
        ("", "Namespace") => (is_label(name), LABEL_MSG),
        _ => (
            name.len() <= 253 && name.split('.').all(is_label),
            SUBDOMAIN_MSG,
        ),
    };
    if ok {
        Vec::new()
    } else {
        vec![Cause::invalid("metadata.name", &json!(name), msg)]
    }
}

/// Drops null-valued fields, recursively (a converted Event leaves out what the source lacked).
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}
