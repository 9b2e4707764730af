//! A simulated Azure cloud-controller-manager: gives every `type: LoadBalancer` Service an ingress IP,
//! written to the status subresource as field manager `cloud-controller-manager`, and records core v1
//! Events on the Service as the service controller does (`EnsuringLoadBalancer`, `EnsuredLoadBalancer`,
//! `SyncLoadBalancerFailed`, `DeletingLoadBalancer`, `DeletedLoadBalancer`).
//!
//! Like cloud-provider-azure it provisions one Service at a time (concurrent service syncs are
//! hard-limited to 1), in the order the Services last changed, each taking the configured provisioning
//! delay. It refuses what Azure refuses for the setups the operator creates: an internal subnet that does
//! not exist, and a static IP whose frontend another Service already uses on the same port and protocol.
//! Services that share a static IP on different ports share the frontend, as Azure allows.
//!
//! The IPs already in Service status are the allocation table, so an IP stays stable while the
//! Service's settings allow it. Like the real controller it follows the Services through their change
//! feed (an informer), looking at everything again only when the feed no longer reaches back (410):
//! between passes it keeps which addresses are taken and which Services are open (waiting for a load
//! balancer, failing, or to be released), so a pass looks only at those, never at settled ones. A pass
//! plans the open Services from one look at the store, then carries the plan out in order; a Service
//! that changed meanwhile is planned again.

use crate::apiserver::{ApiServer, Target, Write, WriteOptions};
use crate::object;
use crate::occupancy::Occupancy;
use crate::patch::PatchType;
use crate::store::{Changed, Follower, ObjectKey, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const INTERNAL_ANNOTATION: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
pub const IPV4_ANNOTATION: &str = "service.beta.kubernetes.io/azure-load-balancer-ipv4";
pub const SUBNET_ANNOTATION: &str =
    "service.beta.kubernetes.io/azure-load-balancer-internal-subnet";
pub const FIELD_MANAGER: &str = "cloud-controller-manager";
/// The component the service controller reports Events as.
const EVENT_SOURCE: &str = "service-controller";
/// The subnet internal load balancers use when a Service names none (the cluster's node subnet).
pub const DEFAULT_SUBNET: &str = "aks-subnet";
/// Where the simulated cluster's load balancers live, for messages that name Azure resources.
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
const NODE_RESOURCE_GROUP: &str = "mc_kube-sim_kube-sim_eastus";
const VNET: &str = "aks-vnet-12345678";

/// How the simulated cloud-controller-manager behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long provisioning (or releasing) one Service's load balancer takes.
    pub provisioning_delay: Duration,
    /// Subnets of the cluster's virtual network that internal load balancers may name.
    pub subnets: Vec<String>,
    /// Where internal frontends take their IPs from.
    pub internal: InternalRange,
}

/// The address range internal load balancers get their IPs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalRange {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// Static IPs outside the range are refused, as Azure refuses a private IP outside the subnet.
    /// Off for the default range, whose tests name static IPs anywhere.
    pub static_ips_in_range: bool,
}

impl InternalRange {
    /// The cluster subnet of an AKS cluster: 10.240.0.0/16.
    pub const AZURE: InternalRange = InternalRange {
        network: Ipv4Addr::new(10, 240, 0, 0),
        prefix: 16,
        static_ips_in_range: false,
    };

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network) & mask
    }

    /// The address `host` places after the network address, e.g. `.53`.
    pub fn host(&self, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(host))
    }
}

/// Where a simulated cluster's internal load balancers take their IPs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InternalLbs {
    /// 10.240.0.0/16, as on AKS. Nothing listens on these addresses.
    #[default]
    Azure,
    /// A /24 of loopback addresses of its own (127.0.0.0/8 is all routed to `lo` on Linux), claimed
    /// for the cluster's lifetime so that parallel clusters, in this process or another, never share
    /// one; the simulated CoreDNS really listens on the DNS Service's IP there. Binding port 53 needs
    /// root (or CAP_NET_BIND_SERVICE).
    Loopback,
}

/// A loopback range held for one cluster: its `.1` (the gateway address Azure never hands out) is
/// bound on UDP port 53 until the claim is dropped, so another cluster's claim of it fails.
#[derive(Debug)]
pub struct LoopbackClaim {
    pub range: InternalRange,
    _socket: std::net::UdpSocket,
}

/// Claims a free 127.X.Y.0/24 (X from 100 to 254).
pub fn claim_loopback_range() -> anyhow::Result<LoopbackClaim> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const RANGES: u32 = 155 * 256;
    // Processes start their search at different places, so they rarely try the same ranges.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % RANGES,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2_000 {
        let i = NEXT.fetch_add(1, Ordering::SeqCst) % RANGES;
        let network = Ipv4Addr::new(127, 100 + (i / 256) as u8, (i % 256) as u8, 0);
        let range = InternalRange {
            network,
            prefix: 24,
            static_ips_in_range: true,
        };
        match std::net::UdpSocket::bind((range.host(1), 53)) {
            Ok(socket) => {
                return Ok(LoopbackClaim {
                    range,
                    _socket: socket,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => anyhow::bail!(
                "claiming {range} for loopback load balancers needs port 53 on {} (run as root or with CAP_NET_BIND_SERVICE): {e}",
                range.host(1)
            ),
        }
    }
    anyhow::bail!("no free 127.X.Y.0/24 range for loopback load balancers")
}

impl std::fmt::Display for InternalRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A frontend IP pool: internal LBs take addresses from the cluster subnet, public ones from a test range.
struct Pool {
    network: Ipv4Addr,
    prefix: u8,
    /// Azure reserves the first addresses of a subnet.
    first_host: u32,
    /// The cloud-provider-azure load balancer the frontends live on.
    load_balancer: &'static str,
}

const INTERNAL: Pool = Pool {
    network: InternalRange::AZURE.network,
    prefix: InternalRange::AZURE.prefix,
    first_host: 4,
    load_balancer: "kubernetes-internal",
};
const PUBLIC: Pool = Pool {
    network: Ipv4Addr::new(20, 50, 0, 0),
    prefix: 16,
    first_host: 4,
    load_balancer: "kubernetes",
};

impl Pool {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        self.contains(ip)
            .then(|| u32::from(ip) - u32::from(self.network))
    }

    /// The lowest free address (the network's last, its broadcast, is never handed out).
    fn next_free(&self, used: &Occupancy) -> Option<Ipv4Addr> {
        let offset = used.first_free(self.first_host, self.size().checked_sub(2)?)?;
        Some(Ipv4Addr::from(u32::from(self.network) + offset))
    }
}

pub async fn run(api: Arc<ApiServer>, opts: Options, mut shutdown: watch::Receiver<bool>) {
    let mut changes = api.subscribe();
    // The failure last reported for each Service (by uid), so an unchanged failure is reported once.
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut known = Known::new(&opts);
    loop {
        changes.borrow_and_update();
        for work in plan(&api, &opts, &mut known, &mut reported) {
            if let Some(event) = work.starting_event() {
                record_event(&api, &work, "Normal", event.0, event.1);
            }
            if !opts.provisioning_delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(opts.provisioning_delay) => {}
                    _ = shutdown.changed() => return,
                }
            }
            // Planned from a Service that has changed since: plan again from what is there now.
            if !carry_out(&api, &work, &mut reported) {
                break;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

fn current_ip(svc: &Value) -> Option<Ipv4Addr> {
    svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()?
        .parse()
        .ok()
}

fn static_ip(svc: &Value) -> Option<Ipv4Addr> {
    object::annotation(svc, IPV4_ANNOTATION)?.parse().ok()
}

fn wants_load_balancer(svc: &Value) -> bool {
    svc["spec"]["type"] == "LoadBalancer"
        && svc["spec"]["loadBalancerClass"].is_null()
        && !object::is_deleting(svc)
}

fn is_internal(svc: &Value) -> bool {
    object::annotation(svc, INTERNAL_ANNOTATION) == Some("true")
}

fn pool<'a>(svc: &Value, internal: &'a Pool) -> &'a Pool {
    if is_internal(svc) {
        internal
    } else {
        &PUBLIC
    }
}

/// The internal pool for these options.
fn internal_pool(opts: &Options) -> Pool {
    Pool {
        network: opts.internal.network,
        prefix: opts.internal.prefix,
        ..INTERNAL
    }
}

/// Azure refuses a static private frontend IP outside the subnet (ARM `PrivateIPAddressNotInSubnet`).
fn static_ip_error(svc: &Value, opts: &Options) -> Option<String> {
    let ip = static_ip(svc)?;
    if !is_internal(svc) || !opts.internal.static_ips_in_range || opts.internal.contains(ip) {
        return None;
    }
    Some(format!(
        "Error syncing load balancer: failed to ensure load balancer: ensure({}): lb({}) - PrivateIPAddressNotInSubnet: private static IP address {ip} does not belong to the range of subnet prefix {}",
        service_name(svc),
        INTERNAL.load_balancer,
        opts.internal
    ))
}

/// The subnet an internal Service names, if any.
fn subnet(svc: &Value) -> Option<&str> {
    object::annotation(svc, SUBNET_ANNOTATION)
        .filter(|s| !s.is_empty())
        .filter(|_| is_internal(svc))
}

fn resource_version(svc: &Value) -> u64 {
    object::resource_version(svc)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn uid(svc: &Value) -> &str {
    object::meta_str(svc, "uid").unwrap_or_default()
}

fn service_name(svc: &Value) -> String {
    format!(
        "{}/{}",
        object::namespace(svc).unwrap_or_default(),
        object::name(svc)
    )
}

/// `(name, port, protocol)` of each Service port.
fn ports(svc: &Value) -> Vec<(String, i64, String)> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["port"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
            )
        })
        .collect()
}

/// `cloudprovider.DefaultLoadBalancerName`: "a" and the uid without dashes, at most 32 characters;
/// cloud-provider-azure names a Service's frontend and rules after it.
fn rule_prefix(svc: &Value) -> String {
    let mut prefix = format!("a{}", uid(svc)).replace('-', "");
    prefix.truncate(32);
    prefix
}

/// `ensure(...): lb(...) - failed to get subnet` (reconcileFrontendIPConfigs), as the Event shows it.
fn subnet_error(svc: &Value, subnets: &[String]) -> Option<String> {
    let subnet = subnet(svc)?;
    if subnet == DEFAULT_SUBNET || subnets.iter().any(|s| s == subnet) {
        return None;
    }
    Some(format!(
        "Error syncing load balancer: failed to ensure load balancer: ensure({}): lb({}) - failed to get subnet: {VNET}/{subnet}",
        service_name(svc),
        INTERNAL.load_balancer
    ))
}

/// checkLoadBalancerResourcesConflicts: a Service sharing `holder`'s frontend may not use a port and
/// protocol that one of `holder`'s load-balancing rules already uses.
fn port_conflict(svc: &Value, holder: &Value) -> Option<String> {
    let theirs = ports(holder);
    let (port_name, port, protocol) = ports(svc).into_iter().find(|(_, port, protocol)| {
        theirs
            .iter()
            .any(|(_, p, proto)| p == port && proto.eq_ignore_ascii_case(protocol))
    })?;
    let prefix = rule_prefix(holder);
    let (rule, frontend) = match subnet(holder) {
        Some(subnet) => (
            format!("{prefix}-{subnet}-{protocol}-{port}"),
            format!("{prefix}-{subnet}"),
        ),
        None => (format!("{prefix}-{protocol}-{port}"), prefix),
    };
    // network.TransportProtocol spelling: Tcp, Udp, Sctp.
    let transport = {
        let lower = protocol.to_ascii_lowercase();
        let mut chars = lower.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    };
    Some(format!(
        "Error syncing load balancer: failed to ensure load balancer: checkLoadBalancerResourcesConflicts: service port {port_name} is trying to consume the port {port} which is being referenced by an existing loadBalancing rule {rule} with the same protocol {transport} and frontend IP config with ID /subscriptions/{SUBSCRIPTION}/resourceGroups/{NODE_RESOURCE_GROUP}/providers/Microsoft.Network/loadBalancers/{}/frontendIPConfigurations/{frontend}",
        pool(holder, &INTERNAL).load_balancer
    ))
}

/// One step of a pass, for one Service.
struct Work {
    namespace: String,
    name: String,
    uid: String,
    /// The Service's resourceVersion when it was planned.
    planned_at: String,
    action: Action,
}

enum Action {
    /// Provision (or move) the frontend and report this IP in status.
    Ensure(Ipv4Addr),
    /// Provisioning fails with this message.
    Fail(String),
    /// The Service no longer wants a load balancer: release it and clear the status.
    Release,
}

impl Work {
    fn starting_event(&self) -> Option<(&'static str, &'static str)> {
        match self.action {
            Action::Ensure(_) | Action::Fail(_) => {
                Some(("EnsuringLoadBalancer", "Ensuring load balancer"))
            }
            Action::Release => Some(("DeletingLoadBalancer", "Deleting load balancer")),
        }
    }
}

/// What the allocator keeps of one Service between passes.
struct Seen {
    rv: u64,
    uid: String,
    /// The address it keeps while its settings allow it (LoadBalancer Services only).
    kept: Option<Ipv4Addr>,
    /// Addresses dynamic allocation must not hand out: its kept and static IPs.
    reserved: Vec<Ipv4Addr>,
    /// Whether a pass must look at it: it waits for a load balancer, fails, or is to be released.
    open: bool,
    balanced: bool,
}

/// What the allocator knows of the Services, kept up to date from their change feed.
struct Known {
    feed: Follower,
    services: HashMap<ObjectKey, Seen>,
    /// The open Services, in the order they last changed.
    open: BTreeMap<u64, ObjectKey>,
    /// The Services keeping each address, in the order they last changed.
    holders: HashMap<Ipv4Addr, BTreeMap<u64, ObjectKey>>,
    internal: Pool,
    internal_used: Occupancy,
    public_used: Occupancy,
}

impl Known {
    fn new(opts: &Options) -> Self {
        let internal = internal_pool(opts);
        Known {
            feed: Follower::new("services"),
            services: HashMap::new(),
            open: BTreeMap::new(),
            holders: HashMap::new(),
            internal_used: Occupancy::new(internal.size()),
            public_used: Occupancy::new(PUBLIC.size()),
            internal,
        }
    }

    /// The pool an address is in, with what is taken there.
    fn used_at(&mut self, ip: Ipv4Addr) -> Option<(&mut Occupancy, u32)> {
        if let Some(offset) = self.internal.offset(ip) {
            return Some((&mut self.internal_used, offset));
        }
        PUBLIC
            .offset(ip)
            .map(|offset| (&mut self.public_used, offset))
    }

    fn reserve(&mut self, ip: Ipv4Addr) {
        if let Some((used, offset)) = self.used_at(ip) {
            used.insert(offset);
        }
    }

    fn unreserve(&mut self, ip: Ipv4Addr) {
        if let Some((used, offset)) = self.used_at(ip) {
            used.remove(offset);
        }
    }

    /// Catches up with the store; forgets reported failures that are over.
    fn sync(&mut self, store: &Store, opts: &Options, reported: &mut HashMap<String, String>) {
        match self.feed.poll(store) {
            Changed::Everything => {
                let keys: Vec<ObjectKey> = self.services.keys().cloned().collect();
                for key in keys {
                    self.forget(&key);
                }
                for svc in store.list("services", None) {
                    self.learn(svc, opts);
                }
                let waiting: HashSet<&str> = self
                    .services
                    .values()
                    .filter(|s| s.balanced && s.open)
                    .map(|s| s.uid.as_str())
                    .collect();
                reported.retain(|uid, _| waiting.contains(uid.as_str()));
            }
            Changed::Only(keys) => {
                for key in keys {
                    let before = self.forget(&key);
                    let after = store
                        .get("services", &key.0, &key.1)
                        .map(|svc| self.learn(svc, opts));
                    if let Some(before) = before {
                        if after.is_none_or(|(uid, balanced, open)| {
                            uid != before.uid || !(balanced && open)
                        }) {
                            reported.remove(&before.uid);
                        }
                    }
                }
            }
        }
    }

    fn forget(&mut self, key: &ObjectKey) -> Option<Seen> {
        let seen = self.services.remove(key)?;
        if seen.open {
            self.open.remove(&seen.rv);
        }
        if let Some(ip) = seen.kept {
            if let Some(holders) = self.holders.get_mut(&ip) {
                holders.remove(&seen.rv);
                if holders.is_empty() {
                    self.holders.remove(&ip);
                }
            }
        }
        for ip in &seen.reserved {
            self.unreserve(*ip);
        }
        Some(seen)
    }

    /// Records a stored Service; returns its uid, whether it wants a load balancer and whether it
    /// is open.
    fn learn(&mut self, svc: &Value, opts: &Options) -> (String, bool, bool) {
        let key = (
            object::namespace(svc).unwrap_or_default().to_string(),
            object::name(svc).to_string(),
        );
        let rv = resource_version(svc);
        let balanced = wants_load_balancer(svc);
        let (kept, open) = if balanced {
            // The IP that stays: its current one while its settings allow it. Static IPs are never
            // handed out dynamically.
            let kept = current_ip(svc)
                .filter(|ip| pool(svc, &self.internal).contains(*ip))
                .filter(|ip| static_ip(svc).is_none_or(|wanted| wanted == *ip));
            let settled = kept.is_some()
                && svc["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .map(Vec::len)
                    == Some(1)
                && subnet_error(svc, &opts.subnets).is_none()
                && static_ip_error(svc, opts).is_none();
            (kept, !settled)
        } else {
            (None, !svc["status"]["loadBalancer"]["ingress"].is_null())
        };
        let mut reserved: Vec<Ipv4Addr> = kept.into_iter().collect();
        if let Some(ip) = static_ip(svc).filter(|ip| balanced && kept != Some(*ip)) {
            reserved.push(ip);
        }
        for ip in &reserved {
            self.reserve(*ip);
        }
        if let Some(ip) = kept {
            self.holders.entry(ip).or_default().insert(rv, key.clone());
        }
        if open {
            self.open.insert(rv, key.clone());
        }
        let uid = uid(svc).to_string();
        self.services.insert(
            key,
            Seen {
                rv,
                uid: uid.clone(),
                kept,
                reserved,
                open,
                balanced,
            },
        );
        (uid, balanced, open)
    }
}

/// Decides, from one look at the store, what every open Service needs, in the order the Services
/// last changed. Forgets reported failures that are over.
fn plan(
    api: &ApiServer,
    opts: &Options,
    known: &mut Known,
    reported: &mut HashMap<String, String>,
) -> Vec<Work> {
    let state = api.lock();
    known.sync(&state.store, opts, reported);
    let service = |key: &ObjectKey| state.store.get("services", &key.0, &key.1);
    // Addresses handed out in this pass, and Services that joined a static IP's frontend.
    let mut handed_out: Vec<Ipv4Addr> = Vec::new();
    let mut joined: HashMap<Ipv4Addr, Vec<ObjectKey>> = HashMap::new();
    let mut work = Vec::new();
    let open: Vec<ObjectKey> = known.open.values().cloned().collect();
    for key in &open {
        let Some(svc) = service(key) else { continue };
        if !wants_load_balancer(svc) {
            work.push(work_for(svc, Action::Release));
            continue;
        }
        let kept = known.services.get(key).and_then(|s| s.kept);
        let outcome = if let Some(message) = subnet_error(svc, &opts.subnets) {
            Err(message)
        } else if let Some(message) = static_ip_error(svc, opts) {
            Err(message)
        } else if let Some(ip) = kept {
            Ok(ip)
        } else if let Some(ip) = static_ip(svc) {
            let sharing = known
                .holders
                .get(&ip)
                .into_iter()
                .flat_map(|holders| holders.values())
                .chain(joined.get(&ip).into_iter().flatten())
                .filter(|holder| *holder != key);
            match sharing
                .filter_map(&service)
                .find_map(|holder| port_conflict(svc, holder))
            {
                Some(message) => Err(message),
                None => {
                    joined.entry(ip).or_default().push(key.clone());
                    Ok(ip)
                }
            }
        } else {
            let pool = if is_internal(svc) {
                &known.internal
            } else {
                &PUBLIC
            };
            let used = if is_internal(svc) {
                &known.internal_used
            } else {
                &known.public_used
            };
            let Some(ip) = pool.next_free(used) else {
                continue;
            };
            known.reserve(ip);
            handed_out.push(ip);
            joined.entry(ip).or_default().push(key.clone());
            Ok(ip)
        };
        let action = match outcome {
            Ok(ip) => {
                let settled = current_ip(svc) == Some(ip)
                    && svc["status"]["loadBalancer"]["ingress"]
                        .as_array()
                        .map(Vec::len)
                        == Some(1);
                if settled {
                    reported.remove(uid(svc));
                    continue;
                }
                Action::Ensure(ip)
            }
            Err(message) => {
                if reported.get(uid(svc)) == Some(&message) {
                    continue;
                }
                Action::Fail(message)
            }
        };
        work.push(work_for(svc, action));
    }
    // What this pass handed out is taken once the Services' status says so.
    for ip in handed_out {
        known.unreserve(ip);
    }
    work
}

fn work_for(svc: &Value, action: Action) -> Work {
    Work {
        namespace: object::namespace(svc).unwrap_or_default().to_string(),
        name: object::name(svc).to_string(),
        uid: uid(svc).to_string(),
        planned_at: object::resource_version(svc)
            .unwrap_or_default()
            .to_string(),
        action,
    }
}

fn service_target(api: &ApiServer, work: &Work, status: bool) -> Option<Target> {
    let target = api
        .lock()
        .target("v1", "Service", Some(&work.namespace), Some(&work.name))?;
    Some(Target { status, ..target })
}

/// Finishes one step; false when the Service changed since it was planned (nothing was done).
fn carry_out(api: &ApiServer, work: &Work, reported: &mut HashMap<String, String>) -> bool {
    let Some(target) = service_target(api, work, true) else {
        return false;
    };
    let fresh = api
        .get(&target)
        .ok()
        .is_some_and(|svc| object::resource_version(&svc) == Some(work.planned_at.as_str()));
    if !fresh {
        return false;
    }
    let ingress = match &work.action {
        Action::Fail(message) => {
            record_event(api, work, "Warning", "SyncLoadBalancerFailed", message);
            reported.insert(work.uid.clone(), message.clone());
            return true;
        }
        Action::Ensure(ip) => {
            record_event(
                api,
                work,
                "Normal",
                "EnsuredLoadBalancer",
                "Ensured load balancer",
            );
            reported.remove(&work.uid);
            json!([{"ip": ip.to_string()}])
        }
        Action::Release => {
            record_event(
                api,
                work,
                "Normal",
                "DeletedLoadBalancer",
                "Deleted load balancer",
            );
            Value::Null
        }
    };
    // The resourceVersion makes this a precondition: a Service changed meanwhile is planned again.
    let patch = json!({
        "metadata": {"resourceVersion": work.planned_at},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    let opts = WriteOptions {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    if let Err(e) = api.write(&target, Write::Patch(PatchType::Merge, patch), &opts) {
        tracing::debug!(service = %work.name, error = %e, "load-balancer status update skipped");
        return false;
    }
    true
}

/// Records a core v1 Event on the Service as client-go's recorder does: a repeat of the same event
/// (same Service, type, reason and message) bumps `count` and `lastTimestamp` of the existing one.
fn record_event(api: &ApiServer, work: &Work, type_: &str, reason: &str, message: &str) {
    let Some(svc) = service_target(api, work, false).and_then(|t| api.get(&t).ok()) else {
        return;
    };
    let Some(events) = api
        .lock()
        .target("v1", "Event", Some(&work.namespace), None)
    else {
        return;
    };
    let now = object::now_rfc3339();
    let opts = WriteOptions {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    let repeat = api
        .lock()
        .store
        .events_regarding(&work.uid)
        .filter(|e| object::namespace(e) == Some(work.namespace.as_str()))
        .find(|e| {
            e["type"] == type_
                && e["reason"] == reason
                && e["message"] == message
                && e["source"]["component"] == EVENT_SOURCE
        })
        .map(|e| {
            (
                object::name(e).to_string(),
                e["count"].as_i64().unwrap_or(1),
            )
        });
    let result = match repeat {
        Some((name, count)) => api.write(
            &Target {
                name: Some(name),
                ..events
            },
            Write::Patch(
                PatchType::Merge,
                json!({"count": count + 1, "lastTimestamp": now}),
            ),
            &opts,
        ),
        None => {
            let nanos = jiff::Timestamp::now().as_nanosecond();
            let event = json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": format!("{}.{nanos:x}", work.name), "namespace": work.namespace},
                "involvedObject": {
                    "kind": "Service",
                    "namespace": work.namespace,
                    "name": work.name,
                    "uid": work.uid,
                    "apiVersion": "v1",
                    "resourceVersion": object::resource_version(&svc),
                },
                "reason": reason,
                "message": message,
                "source": {"component": EVENT_SOURCE},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": type_,
                "reportingComponent": EVENT_SOURCE,
                "reportingInstance": "",
            });
            api.write(&events, Write::Create(event), &opts)
        }
    };
    if let Err(e) = result {
        tracing::debug!(service = %work.name, reason, error = %e, "load-balancer event not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools() {
        assert!(INTERNAL.contains(Ipv4Addr::new(10, 240, 3, 9)));
        assert!(!INTERNAL.contains(Ipv4Addr::new(10, 241, 0, 1)));
        let mut used = Occupancy::new(INTERNAL.size());
        used.insert(4);
        assert_eq!(
            INTERNAL.next_free(&used),
            Some(Ipv4Addr::new(10, 240, 0, 5))
        );
        used.insert(5);
        assert_eq!(
            INTERNAL.next_free(&used),
            Some(Ipv4Addr::new(10, 240, 0, 6))
        );
        assert_eq!(
            PUBLIC.next_free(&Occupancy::new(PUBLIC.size())),
            Some(Ipv4Addr::new(20, 50, 0, 4))
        );
        // A /24: .4 to .254; the broadcast address is never handed out.
        let small = Pool {
            network: Ipv4Addr::new(127, 100, 0, 0),
            prefix: 24,
            ..INTERNAL
        };
        let mut used = Occupancy::new(small.size());
        for host in 4..254 {
            used.insert(host);
        }
        assert_eq!(
            small.next_free(&used),
            Some(Ipv4Addr::new(127, 100, 0, 254))
        );
        used.insert(254);
        assert_eq!(small.next_free(&used), None);
    }

    #[test]
    fn port_conflicts_name_the_holders_rule() {
        let svc = |uid: &str, ports: Value| {
            json!({"metadata": {"uid": uid, "namespace": "kube-system", "name": "x",
                "annotations": {INTERNAL_ANNOTATION: "true", SUBNET_ANNOTATION: "ilb-subnet"}},
                "spec": {"ports": ports}})
        };
        let holder = svc(
            "0a1b2c3d-0000-4000-a000-000000000001",
            json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
        );
        let web = svc("b", json!([{"name": "http", "port": 80}]));
        assert_eq!(port_conflict(&web, &holder), None);
        let dns = svc(
            "c",
            json!([{"name": "dns-tcp", "port": 53, "protocol": "TCP"}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
        );
        let message = port_conflict(&dns, &holder).unwrap();
        assert!(
            message.contains("service port dns-udp is trying to consume the port 53 which is being referenced by an existing loadBalancing rule a0a1b2c3d00004000a00000000000000-ilb-subnet-UDP-53 with the same protocol Udp"),
            "{message}"
        );
        assert!(
            message.ends_with("/loadBalancers/kubernetes-internal/frontendIPConfigurations/a0a1b2c3d00004000a00000000000000-ilb-subnet"),
            "{message}"
        );
    }
}
