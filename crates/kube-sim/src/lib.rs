//! `kube-sim`: a simulated Kubernetes API server for AppServiceLink's tests and sandbox.
//!
//! It speaks the real HTTP/JSON API (discovery, CRUD, watch, server-side apply with managed fields, status
//! subresources, finalizers, CRDs with schema and CEL validation, Table output), so the operator (kube-rs)
//! and `kubectl` use it exactly as they would a real cluster. It refuses what a real cluster refuses:
//! ValidatingAdmissionPolicies, object size limits (etcd's included). A simulated Azure
//! cloud-controller-manager provisions load balancers one at a time, with the Events and refusals of
//! cloud-provider-azure. See README.md for where it deviates from a real apiserver.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = kube_sim::SimCluster::start(kube_sim::SimOptions::default()).await?;
//! sim.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! // ... run kubectl or the operator against it ...
//! let writes = sim.requests().iter().filter(|r| r.is_write()).count();
//! # let _ = writes;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
mod apiserver;
pub mod cel_check;
mod corefile;
mod discovery;
mod dns;
mod error;
mod faults;
mod fieldpath;
mod http;
mod lb;
mod limits;
mod object;
mod occupancy;
mod openapi;
mod patch;
mod protobuf;
mod registry;
mod schema;
mod selector;
mod service;
mod ssa;
mod store;
mod table;
mod validation;
mod watch;

pub use error::{ApiError, Cause};
pub use faults::{Fault, FaultKind, WRITE_VERBS};

/// What CRD admission says of a custom resource, without a running server: unknown fields pruned,
/// defaults applied, then the schema's OpenAPI checks and CEL rules, exactly as a create through the
/// API runs them. `schema` is a CRD version's `openAPIV3Schema`.
pub fn admit_custom_resource(obj: &Value, schema: &Value) -> Vec<Cause> {
    let mut candidate = obj.clone();
    validation::prune_and_default(&mut candidate, schema);
    validation::validate_custom_resource(&candidate, None, schema)
}

/// What the apiserver says of a CustomResourceDefinition when it is created: structural schema,
/// keyword placement, rules that do not type-check, and the CEL cost budget.
pub fn check_crd(crd: &Value) -> Vec<Cause> {
    validation::validate_crd(crd)
}
pub use http::RecordedRequest;
pub use lb::{
    InternalLbs, InternalRange, DEFAULT_SUBNET, FIELD_MANAGER as LB_FIELD_MANAGER,
    INTERNAL_ANNOTATION, IPV4_ANNOTATION, SUBNET_ANNOTATION,
};
pub use limits::{ETCD_MAX_REQUEST_BYTES, MAX_REQUEST_BODY_BYTES};

use anyhow::Context as _;
use apiserver::{ApiServer, Filter, Write, WriteOptions};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How to run the simulated cluster.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Run the simulated Azure cloud-controller-manager that assigns load-balancer IPs.
    pub lb_allocator: bool,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// How many change events the watch history keeps; watches from older resourceVersions get 410 Expired.
    pub watch_history: usize,
    /// How often watches that allow bookmarks receive one.
    pub bookmark_interval: Duration,
    /// How long the simulated cloud-controller-manager takes to provision (or release) one Service's
    /// load balancer. It works on one Service at a time, like cloud-provider-azure, so N Services take
    /// N times this. On AKS it is 5-20 s; the default 0 keeps tests fast.
    pub lb_provisioning_delay: Duration,
    /// The subnets of the cluster's virtual network. An internal Service naming another subnet in
    /// `service.beta.kubernetes.io/azure-load-balancer-internal-subnet` stays pending, with a Warning
    /// Event. The node subnet [`DEFAULT_SUBNET`] always exists.
    pub subnets: Vec<String>,
    /// Where internal load balancers take their IPs from. With [`InternalLbs::Loopback`] the cluster
    /// also runs the simulated CoreDNS on its DNS Services' IPs.
    pub internal_lbs: InternalLbs,
    /// The apiserver's `--service-node-port-range` (default 30000-32767). Every port of a
    /// LoadBalancer Service takes one; past the range the apiserver refuses with a 500.
    pub node_ports: std::ops::RangeInclusive<u64>,
}

/// The subnets [`SimOptions::subnets`] has by default: the node subnet, and those the repository's
/// examples and tests name.
pub fn default_subnets() -> Vec<String> {
    [DEFAULT_SUBNET, "ilb-subnet", "other-subnet"]
        .map(String::from)
        .to_vec()
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            lb_allocator: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(60),
            lb_provisioning_delay: Duration::ZERO,
            subnets: default_subnets(),
            internal_lbs: InternalLbs::Azure,
            node_ports: service::DEFAULT_NODE_PORTS,
        }
    }
}

/// A running simulated cluster. Dropping it without [`SimCluster::shutdown`] aborts its tasks.
pub struct SimCluster {
    addr: SocketAddr,
    api: Arc<ApiServer>,
    log: Arc<Mutex<Vec<RecordedRequest>>>,
    faults: Arc<Mutex<faults::Faults>>,
    watches: Arc<watch::Watches>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    allocator: Option<JoinHandle<()>>,
    internal_range: InternalRange,
    /// Holds the loopback range, with [`InternalLbs::Loopback`].
    _claim: Option<lb::LoopbackClaim>,
    dns: Option<JoinHandle<()>>,
}

impl SimCluster {
    /// Binds the listener and serves on a tokio task.
    pub async fn start(opts: SimOptions) -> anyhow::Result<SimCluster> {
        let listener = tokio::net::TcpListener::bind(opts.bind)
            .await
            .with_context(|| format!("binding {}", opts.bind))?;
        let addr = listener.local_addr()?;
        let api = ApiServer::new(opts.watch_history.max(1), opts.node_ports.clone());
        let log = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(faults::Faults::default()));
        let watches = Arc::new(watch::Watches::default());
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let app = Arc::new(http::App {
            api: api.clone(),
            log: log.clone(),
            faults: faults.clone(),
            watches: watches.clone(),
            shutdown: shutdown_rx.clone(),
            bookmark_interval: opts.bookmark_interval,
            server_address: addr.to_string(),
        });
        let mut stop = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, http::router(app)).with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "kube-sim server failed");
            }
        });
        let claim = match opts.internal_lbs {
            InternalLbs::Azure => None,
            InternalLbs::Loopback => Some(lb::claim_loopback_range()?),
        };
        let internal_range = claim.as_ref().map_or(InternalRange::AZURE, |c| c.range);
        let dns = claim
            .is_some()
            .then(|| tokio::spawn(dns::run(api.clone(), internal_range, shutdown_rx.clone())));
        let lb_options = lb::Options {
            provisioning_delay: opts.lb_provisioning_delay,
            subnets: opts.subnets.clone(),
            internal: internal_range,
        };
        let allocator = opts
            .lb_allocator
            .then(|| tokio::spawn(lb::run(api.clone(), lb_options, shutdown_rx)));
        Ok(SimCluster {
            addr,
            api,
            log,
            faults,
            watches,
            shutdown,
            server: Some(server),
            allocator,
            internal_range,
            _claim: claim,
            dns,
        })
    }

    /// Where internal load balancers take their IPs from: 10.240.0.0/16, or with
    /// [`InternalLbs::Loopback`] this cluster's own 127.X.Y.0/24.
    pub fn internal_range(&self) -> InternalRange {
        self.internal_range
    }

    /// Whether the simulated CoreDNS answers on the DNS Services' IPs ([`InternalLbs::Loopback`]).
    pub fn serves_dns(&self) -> bool {
        self.dns.is_some()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with cluster, user and context named `sim` (no credentials; plain HTTP).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\nusers:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\ncurrent-context: sim\npreferences: {{}}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// One object as stored (`api_version` like `v1` or `appservicelink.io/v1alpha1`).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.api.lock();
        let target = state.target(api_version, kind, namespace, Some(name))?;
        state.get(&target).ok()
    }

    /// Changes to the latest resourceVersion whenever a write commits: what a watcher of every
    /// object follows, for a harness that must see a change the moment it is made without polling.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.api.subscribe()
    }

    /// The size of the etcd request that would store the object as it is now (key and serialised
    /// object); writes whose result is over [`ETCD_MAX_REQUEST_BYTES`] are refused.
    pub fn stored_size(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<usize> {
        let state = self.api.lock();
        let target = state.target(api_version, kind, namespace, Some(name))?;
        let obj = state.get(&target).ok()?;
        Some(limits::etcd_request_size(
            &target.resource,
            target.namespace.as_deref().unwrap_or_default(),
            &obj,
        ))
    }

    /// All objects of a kind, across namespaces.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(target) = self.api.lock().target(api_version, kind, None, None) else {
            return Vec::new();
        };
        self.api.list(&target.resource, &Filter::default()).0
    }

    /// Server-side apply (with force) as `manager`, bypassing HTTP and the request log. A `status` in `obj`
    /// is applied through the status subresource as well, when the kind has one.
    pub fn apply_as(&self, manager: &str, obj: Value) -> anyhow::Result<Value> {
        let api_version = obj["apiVersion"]
            .as_str()
            .context("apiVersion is required")?
            .to_string();
        let kind = obj["kind"]
            .as_str()
            .context("kind is required")?
            .to_string();
        let name = object::meta_str(&obj, "name")
            .context("metadata.name is required")?
            .to_string();
        let namespace = object::namespace(&obj).map(String::from);
        let target = self
            .api
            .lock()
            .target(
                &api_version,
                &kind,
                namespace.as_deref().or(Some("default")),
                Some(&name),
            )
            .with_context(|| format!("the server does not serve {kind} in {api_version}"))?;
        let opts = WriteOptions {
            field_manager: manager.to_string(),
            ..Default::default()
        };
        let mut written = self
            .api
            .write(
                &target,
                Write::Apply {
                    config: obj.clone(),
                    force: true,
                },
                &opts,
            )?
            .object;
        if target.resource.status_subresource && obj.get("status").is_some() {
            let status_target = apiserver::Target {
                status: true,
                ..target
            };
            written = self
                .api
                .write(
                    &status_target,
                    Write::Apply {
                        config: obj,
                        force: true,
                    },
                    &opts,
                )?
                .object;
        }
        Ok(written)
    }

    /// Every HTTP request served so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many HTTP requests were served so far: cheaper than [`Self::requests`] for a poll.
    pub fn request_count(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The HTTP requests served after the first `from`, in order.
    pub fn requests_since(&self, from: usize) -> Vec<RecordedRequest> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Arms a fault for upcoming HTTP requests (see [`Fault`]). Faults are consulted in the order they
    /// were injected; each matching request uses up one firing of the first that matches.
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inject(fault);
    }

    /// Disarms every fault that has not fired yet (requests already hanging keep hanging).
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.watches.open()
    }

    /// Cuts every open watch stream mid-response (the connection closes without the final chunk), as
    /// when a load balancer drops its connections or an apiserver replica goes away. Returns how many
    /// were open. Clients resume from the last resourceVersion they saw.
    pub fn drop_watches(&self) -> usize {
        self.watches.cut_all()
    }

    /// Compacts the watch history at the current resourceVersion, as etcd's compaction and the watch
    /// cache's eviction do: from now on a watch from any older resourceVersion gets a 410 `Expired`
    /// ERROR event (`too old resource version: <rv> (<oldest>)`) and must list again. Returns the
    /// resourceVersion compacted at.
    pub fn compact(&self) -> u64 {
        self.api.compact()
    }

    /// Watches answered with a 410 `Expired` ERROR event so far.
    pub fn expired_watches(&self) -> usize {
        self.watches.expired()
    }

    /// Stops serving: ends open watches, then waits (briefly) for connections to close.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(allocator) = self.allocator.take() {
            let _ = allocator.await;
        }
        if let Some(dns) = self.dns.take() {
            let _ = dns.await;
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in [self.server.take(), self.allocator.take(), self.dns.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}
