//! The simulated CoreDNS: answers DNS on the IP of every DNS Service (a LoadBalancer Service in
//! `kube-system` that selects the CoreDNS pods, port 53, or one fronting another CoreDNS Deployment
//! that mounts its own Corefile, such as the operator's dedicated one), the way CoreDNS would: with
//! the AKS Corefile and `kube-system/coredns-custom` imported into it, or with that Corefile.
//!
//! It serves the `k8s_external` zones as CoreDNS's k8s_external plugin does: `<svc>.<ns>.<zone>`
//! answers the Service's load-balancer ingress IPs (A, AAAA), NXDOMAIN with the zone's SOA for a
//! Service or namespace that does not exist or a Service without ingress IPs, NODATA for other
//! types, SOA and NS at the apex, `ns1.<apex>.<zone>` for the name server. When the Corefile would
//! stop CoreDNS from starting it answers SERVFAIL to everything. It only listens on loopback
//! addresses of the cluster's internal load-balancer range, so it never takes an address it does not
//! own; it forwards nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde_json::Value;
use tokio::sync::watch;

use crate::apiserver::{ApiServer, State};
use crate::corefile::{self, Corefile, Refusal};
use crate::lb::InternalRange;
use crate::object;
use crate::store::{Changed, Follower, ObjectKey};

const NAMESPACE: &str = "kube-system";
const COREFILE_CONFIGMAP: &str = "coredns-custom";
/// SOA timers of the k8s_external plugin (plugin/k8s_external apex.go).
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;

/// What a query gets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    /// The zone's SOA, in the authority section.
    pub soa: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// What the responder reads of the cluster.
pub trait Cluster {
    /// Whether the namespace exists.
    fn namespace_exists(&self, namespace: &str) -> bool;
    /// The load-balancer ingress IPs of a Service, `None` when there is no such Service.
    fn ingress_ips(&self, namespace: &str, name: &str) -> Option<Vec<IpAddr>>;
    /// The SOA serial (CoreDNS uses the time the kubernetes plugin last saw a change).
    fn serial(&self) -> u32;
}

impl Cluster for State {
    fn namespace_exists(&self, namespace: &str) -> bool {
        self.store.get("namespaces", "", namespace).is_some()
    }

    fn ingress_ips(&self, namespace: &str, name: &str) -> Option<Vec<IpAddr>> {
        let svc = self.store.get("services", namespace, name)?;
        Some(
            svc["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str()?.parse().ok())
                .collect(),
        )
    }

    fn serial(&self) -> u32 {
        self.store.current_rv() as u32
    }
}

/// Where a simulated CoreDNS reads its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The cluster's CoreDNS: the AKS Corefile with `kube-system/coredns-custom` imported.
    Cluster,
    /// Another CoreDNS Deployment (the operator's dedicated one): the `Corefile` key of the
    /// ConfigMap its pods mount.
    ConfigMap { namespace: String, name: String },
}

impl Source {
    fn load(&self, state: &State) -> Result<Corefile, corefile::Refusal> {
        match self {
            Self::Cluster => corefile::load(&custom_data(state)),
            Self::ConfigMap { namespace, name } => {
                let text = state
                    .store
                    .get("configmaps", namespace, name)
                    .and_then(|cm| cm["data"]["Corefile"].as_str().map(str::to_string));
                match text {
                    Some(text) => corefile::load_corefile(&text),
                    // CoreDNS does not start without its Corefile.
                    None => Err(corefile::Refusal(format!(
                        "ConfigMap {namespace}/{name} has no key Corefile"
                    ))),
                }
            }
        }
    }
}

/// The `data` of `kube-system/coredns-custom` (empty when it does not exist).
fn custom_data(state: &State) -> BTreeMap<String, String> {
    state
        .store
        .get("configmaps", NAMESPACE, COREFILE_CONFIGMAP)
        .and_then(|cm| cm["data"].as_object())
        .map(|data| {
            data.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(text).ok()
}

/// Whether `name` is `zone` or below it (both lower case, fully qualified).
fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || name == zone || name.ends_with(&format!(".{zone}"))
}

/// The labels of `name` before `zone`, left to right.
fn labels_before<'a>(name: &'a str, zone: &str) -> Vec<&'a str> {
    let base = if zone == "." {
        name.trim_end_matches('.')
    } else {
        name.strip_suffix(zone)
            .unwrap_or_default()
            .trim_end_matches('.')
    };
    base.split('.').filter(|l| !l.is_empty()).collect()
}

/// Answers one query for `qname` (lower case, fully qualified) sent to `server_ip`, as CoreDNS with
/// `config` would.
pub fn reply(
    config: &Result<Corefile, Refusal>,
    cluster: &dyn Cluster,
    qname: &str,
    qtype: RecordType,
    server_ip: Ipv4Addr,
) -> Reply {
    let Ok(config) = config else {
        return Reply {
            rcode: ResponseCode::ServFail,
            ..Default::default()
        };
    };
    // The most specific server block on port 53 handles the query; none: REFUSED.
    let server = config
        .servers
        .iter()
        .flat_map(|s| s.keys.iter().map(move |k| (s, k)))
        .filter(|(_, (zone, port))| *port == 53 && in_zone(qname, zone))
        .max_by_key(|(_, (zone, _))| zone.len())
        .map(|(s, _)| s);
    let Some(server) = server else {
        return Reply {
            rcode: ResponseCode::Refused,
            ..Default::default()
        };
    };
    if let Some(hosts) = &server.hosts {
        if let Some(answer) = from_hosts(hosts, qname, qtype) {
            return answer;
        }
    }
    let external = server.k8s_external.as_ref().and_then(|k| {
        k.zones
            .iter()
            .filter(|z| in_zone(qname, z))
            .max_by_key(|z| z.len())
            .map(|z| (k, z.clone()))
    });
    // Outside the k8s_external zones CoreDNS would ask the kubernetes plugin or forward; the
    // simulation does neither.
    let Some((k8s, zone)) = external else {
        return Reply {
            rcode: ResponseCode::ServFail,
            ..Default::default()
        };
    };
    let ttl = k8s.ttl;
    let join = |prefix: &str| format!("{prefix}.{}.{zone}", k8s.apex);
    let soa = || -> Vec<Record> {
        let (Some(owner), Some(mname), Some(rname)) =
            (name(&zone), name(&join("ns1")), name(&join("hostmaster")))
        else {
            return Vec::new();
        };
        let rdata = SOA::new(
            mname,
            rname,
            cluster.serial(),
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            ttl,
        );
        vec![Record::from_rdata(owner, ttl, RData::SOA(rdata))]
    };
    let mut out = Reply {
        authoritative: true,
        ..Default::default()
    };
    let owner = name(qname);
    let a = |ip: Ipv4Addr| {
        owner
            .clone()
            .map(|n| Record::from_rdata(n, ttl, RData::A(A(ip))))
    };

    if qname == zone {
        match qtype {
            RecordType::SOA => out.answers = soa(),
            RecordType::NS => {
                if let (Some(owner), Some(ns)) = (name(&zone), name(&join("ns1"))) {
                    out.answers = vec![Record::from_rdata(owner, ttl, RData::NS(NS(ns.clone())))];
                    out.additionals = vec![Record::from_rdata(ns, ttl, RData::A(A(server_ip)))];
                }
            }
            _ => out.soa = soa(),
        }
        return out;
    }
    let apex = format!("{}.{zone}", k8s.apex);
    if in_zone(qname, &apex) {
        match labels_before(qname, &zone).as_slice() {
            [_] => out.soa = soa(),
            ["ns1", _] => {
                if qtype == RecordType::A {
                    out.answers = a(server_ip).into_iter().collect();
                } else {
                    out.soa = soa();
                }
            }
            _ => {
                out.rcode = ResponseCode::NXDomain;
                out.soa = soa();
            }
        }
        return out;
    }
    let labels = labels_before(qname, &zone);
    let (namespace, rest) = match labels.split_last() {
        Some((namespace, rest)) => (*namespace, rest),
        None => return out,
    };
    if !cluster.namespace_exists(namespace) {
        out.rcode = ResponseCode::NXDomain;
        out.soa = soa();
        return out;
    }
    let ips = match rest {
        // `<ns>.<zone>` exists as an empty non-terminal: NODATA.
        [] => Vec::new(),
        [service] => match cluster.ingress_ips(namespace, service) {
            Some(ips) if !ips.is_empty() => ips,
            _ => {
                out.rcode = ResponseCode::NXDomain;
                out.soa = soa();
                return out;
            }
        },
        // SRV names (`_port._proto.<svc>.<ns>`) are not simulated; nothing else exists.
        _ => {
            out.rcode = ResponseCode::NXDomain;
            out.soa = soa();
            return out;
        }
    };
    let mut seen = Vec::new();
    for ip in ips {
        if seen.contains(&ip) {
            continue;
        }
        seen.push(ip);
        let record = match (qtype, ip) {
            (RecordType::A, IpAddr::V4(v4)) => a(v4),
            (RecordType::AAAA, IpAddr::V6(v6)) => owner
                .clone()
                .map(|n| Record::from_rdata(n, ttl, RData::AAAA(AAAA(v6)))),
            _ => None,
        };
        out.answers.extend(record);
    }
    if out.answers.is_empty() {
        out.soa = soa();
    }
    out
}

/// What the `hosts` plugin answers, or `None` when the query goes on to the next plugin (a name
/// outside its zones, or one it has no entry for under `fallthrough`).
fn from_hosts(hosts: &corefile::Hosts, qname: &str, qtype: RecordType) -> Option<Reply> {
    if !hosts.zones.iter().any(|z| in_zone(qname, z)) {
        return None;
    }
    let ips: Vec<IpAddr> = hosts
        .entries
        .iter()
        .filter(|(name, _)| name == qname)
        .map(|(_, ip)| *ip)
        .collect();
    if ips.is_empty() {
        let falls = hosts
            .fallthrough
            .as_ref()
            .is_some_and(|zones| zones.is_empty() || zones.iter().any(|z| in_zone(qname, z)));
        // Without fallthrough it has no SOA for an NXDOMAIN, so it answers SERVFAIL (plugin/hosts).
        return (!falls).then(|| Reply {
            rcode: ResponseCode::ServFail,
            ..Default::default()
        });
    }
    let owner = name(qname)?;
    let answers = ips
        .into_iter()
        .filter_map(|ip| match (qtype, ip) {
            (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(v4))),
            (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(v6))),
            _ => None,
        })
        .map(|data| Record::from_rdata(owner.clone(), hosts.ttl, data))
        .collect();
    Some(Reply {
        authoritative: true,
        answers,
        ..Default::default()
    })
}

/// Answers queries sent to one DNS Service IP.
struct Responder {
    api: Arc<ApiServer>,
    ip: Ipv4Addr,
    source: Source,
}

#[async_trait::async_trait]
impl RequestHandler for Responder {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let reply = match request.request_info() {
            Ok(info) => {
                let qname = corefile::normalize(&info.query.name().to_string());
                let state = self.api.lock();
                let config = self.source.load(&state);
                if let Err(refusal) = &config {
                    tracing::debug!(%refusal, "simulated CoreDNS cannot start with this Corefile");
                }
                reply(&config, &*state, &qname, info.query.query_type(), self.ip)
            }
            Err(_) => Reply {
                rcode: ResponseCode::FormErr,
                ..Default::default()
            },
        };
        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            std::iter::empty(),
            reply.soa.iter(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "simulated CoreDNS could not send a response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Which protocols a DNS Service carries on port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Protocols {
    udp: bool,
    tcp: bool,
}

/// Whether a port of the Service reaches CoreDNS's port 53 (the Deployment names its ports `dns`
/// and `dns-tcp`).
fn reaches_coredns(port: &Value) -> bool {
    match &port["targetPort"] {
        Value::Null => port["port"] == 53,
        Value::Number(n) => n.as_i64() == Some(53),
        Value::String(name) => name == "53" || name == "dns" || name == "dns-tcp",
        _ => false,
    }
}

/// The CoreDNS whose running pods (a Deployment in `namespace` with replicas, a container whose
/// image is CoreDNS) this selector picks, if any: the cluster's in kube-system (`k8s-app:
/// kube-dns`), or one that mounts its Corefile from a ConfigMap.
fn coredns_behind(
    state: &State,
    namespace: &str,
    selector: &serde_json::Map<String, Value>,
) -> Option<Source> {
    if namespace == NAMESPACE && selector.get("k8s-app").and_then(Value::as_str) == Some("kube-dns")
    {
        let runs = state
            .store
            .list("deployments.apps", Some(NAMESPACE))
            .any(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                d["spec"]["replicas"].as_i64().unwrap_or(1) > 0
                    && selector.iter().all(|(k, v)| &labels[k] == v)
            });
        return runs.then_some(Source::Cluster);
    }
    state
        .store
        .list("deployments.apps", Some(namespace))
        .filter(|d| d["spec"]["replicas"].as_i64().unwrap_or(1) > 0)
        .filter(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
        })
        .filter(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["image"].as_str().is_some_and(|i| i.contains("coredns")))
        })
        .find_map(|d| {
            let name = d["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|v| v["configMap"]["name"].as_str())?;
            Some(Source::ConfigMap {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        })
}

/// What one Service adds to the endpoints: the protocols its port 53 carries, the CoreDNS behind
/// it, and its ingress IPs in `range` on loopback. None for a Service that is no DNS Service or has
/// no such IP.
fn contribution(
    state: &State,
    svc: &Value,
    range: &InternalRange,
) -> Option<(Protocols, Source, Vec<Ipv4Addr>)> {
    if svc["spec"]["type"] != "LoadBalancer" || object::is_deleting(svc) {
        return None;
    }
    let selector = svc["spec"]["selector"].as_object()?;
    let namespace = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let source = coredns_behind(state, namespace, selector)?;
    let mut protocols = Protocols::default();
    for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
        if port["port"] != 53 || !reaches_coredns(port) {
            continue;
        }
        match port["protocol"].as_str().unwrap_or("TCP") {
            "UDP" => protocols.udp = true,
            "TCP" => protocols.tcp = true,
            _ => {}
        }
    }
    let ips: Vec<Ipv4Addr> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress["ip"].as_str()?.parse::<Ipv4Addr>().ok())
        .filter(|ip| ip.is_loopback() && range.contains(*ip))
        .collect();
    (!ips.is_empty()).then_some((protocols, source, ips))
}

/// The DNS Services, kept up to date from the change feeds of Services and Deployments, so a write
/// to any other Service costs one look at that Service.
struct DnsServices {
    services: Follower,
    deployments: Follower,
    /// LoadBalancer Services with a selector: those a Deployment change may make DNS Services.
    candidates: BTreeSet<ObjectKey>,
    contributions: BTreeMap<ObjectKey, (Protocols, Source, Vec<Ipv4Addr>)>,
}

impl DnsServices {
    fn new() -> Self {
        DnsServices {
            services: Follower::new("services"),
            deployments: Follower::new("deployments.apps"),
            candidates: BTreeSet::new(),
            contributions: BTreeMap::new(),
        }
    }

    fn look_at(&mut self, state: &State, key: &ObjectKey, range: &InternalRange) {
        let svc = state.store.get("services", &key.0, &key.1);
        let candidate = svc.is_some_and(|svc| {
            svc["spec"]["type"] == "LoadBalancer" && svc["spec"]["selector"].is_object()
        });
        if candidate {
            self.candidates.insert(key.clone());
        } else {
            self.candidates.remove(key);
        }
        match svc.and_then(|svc| contribution(state, svc, range)) {
            Some(c) => self.contributions.insert(key.clone(), c),
            None => self.contributions.remove(key),
        };
    }

    fn sync(&mut self, state: &State, range: &InternalRange) {
        let services = self.services.poll(&state.store);
        let deployments = self.deployments.poll(&state.store);
        match services {
            Changed::Everything => {
                self.candidates.clear();
                self.contributions.clear();
                let keys: Vec<ObjectKey> = state
                    .store
                    .list("services", None)
                    .map(|svc| {
                        (
                            object::namespace(svc).unwrap_or_default().to_string(),
                            object::name(svc).to_string(),
                        )
                    })
                    .collect();
                for key in keys {
                    self.look_at(state, &key, range);
                }
                return;
            }
            Changed::Only(keys) => {
                for key in keys {
                    self.look_at(state, &key, range);
                }
            }
        }
        // Which CoreDNS runs behind a Service is the Deployments' doing.
        if deployments != Changed::Only(BTreeSet::new()) {
            let candidates: Vec<ObjectKey> = self.candidates.iter().cloned().collect();
            for key in candidates {
                self.look_at(state, &key, range);
            }
        }
    }

    /// The IPs to listen on: every DNS Service's ingress IP in the range on loopback, with the
    /// CoreDNS behind it (the first Service in storage order names it when several share an IP).
    fn endpoints(&self) -> HashMap<Ipv4Addr, (Protocols, Source)> {
        let mut out: HashMap<Ipv4Addr, (Protocols, Source)> = HashMap::new();
        for (protocols, source, ips) in self.contributions.values() {
            for ip in ips {
                let entry = out
                    .entry(*ip)
                    .or_insert((Protocols::default(), source.clone()));
                entry.0.udp |= protocols.udp;
                entry.0.tcp |= protocols.tcp;
            }
        }
        out
    }
}

struct Listening {
    wanted: (Protocols, Source),
    server: hickory_server::Server<Responder>,
}

/// Runs until shutdown: listens on each DNS Service IP while it exists.
pub async fn run(api: Arc<ApiServer>, range: InternalRange, mut shutdown: watch::Receiver<bool>) {
    let mut changes = api.subscribe();
    let mut listening: HashMap<Ipv4Addr, Listening> = HashMap::new();
    let mut dns_services = DnsServices::new();
    loop {
        changes.borrow_and_update();
        let wanted = {
            let state = api.lock();
            dns_services.sync(&state, &range);
            dns_services.endpoints()
        };
        let stale: Vec<Ipv4Addr> = listening
            .iter()
            .filter(|(ip, l)| wanted.get(ip) != Some(&l.wanted))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in stale {
            if let Some(mut l) = listening.remove(&ip) {
                let _ = l.server.shutdown_gracefully().await;
            }
        }
        for (ip, (protocols, source)) in wanted {
            if listening.contains_key(&ip) {
                continue;
            }
            match listen(&api, ip, protocols, source.clone()).await {
                Ok(server) => {
                    tracing::debug!(%ip, ?protocols, ?source, "simulated CoreDNS listening");
                    listening.insert(
                        ip,
                        Listening {
                            wanted: (protocols, source),
                            server,
                        },
                    );
                }
                Err(e) => tracing::warn!(%ip, error = %e, "simulated CoreDNS cannot listen"),
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, mut l) in listening {
        let _ = l.server.shutdown_gracefully().await;
    }
}

async fn listen(
    api: &Arc<ApiServer>,
    ip: Ipv4Addr,
    protocols: Protocols,
    source: Source,
) -> std::io::Result<hickory_server::Server<Responder>> {
    let mut server = hickory_server::Server::new(Responder {
        api: api.clone(),
        ip,
        source,
    });
    if protocols.udp {
        server.register_socket(tokio::net::UdpSocket::bind((ip, 53)).await?);
    }
    if protocols.tcp {
        let listener = tokio::net::TcpListener::bind((ip, 53)).await?;
        server.register_listener(listener, Duration::from_secs(5), 65_535);
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct World;

    impl Cluster for World {
        fn namespace_exists(&self, namespace: &str) -> bool {
            namespace == "shop"
        }
        fn ingress_ips(&self, namespace: &str, name: &str) -> Option<Vec<IpAddr>> {
            match (namespace, name) {
                ("shop", "api") => Some(vec!["127.9.0.5".parse().unwrap()]),
                ("shop", "internal") => Some(Vec::new()),
                _ => None,
            }
        }
        fn serial(&self) -> u32 {
            7
        }
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(127, 9, 0, 53);

    fn ask(custom: &[(&str, &str)], qname: &str, qtype: RecordType) -> Reply {
        let data = custom
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        reply(&corefile::load(&data), &World, qname, qtype, SERVER)
    }

    const OVERRIDE: (&str, &str) = ("appservicelink.override", "k8s_external contoso.internal\n");

    fn a_records(reply: &Reply) -> Vec<String> {
        reply
            .answers
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.ttl, r.data))
            .collect()
    }

    #[test]
    fn a_service_name_answers_its_load_balancer_ip() {
        let r = ask(&[OVERRIDE], "api.shop.contoso.internal.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(a_records(&r), ["api.shop.contoso.internal. 5 127.9.0.5"]);
        let aaaa = ask(&[OVERRIDE], "api.shop.contoso.internal.", RecordType::AAAA);
        assert_eq!(
            (aaaa.rcode, aaaa.answers.len(), aaaa.soa.len()),
            (ResponseCode::NoError, 0, 1)
        );
    }

    #[test]
    fn other_names_in_the_zone_are_nxdomain_with_the_soa() {
        for qname in [
            "web.shop.contoso.internal.",
            "internal.shop.contoso.internal.",
            "api.nowhere.contoso.internal.",
            "x.api.shop.contoso.internal.",
        ] {
            let r = ask(&[OVERRIDE], qname, RecordType::A);
            assert_eq!(r.rcode, ResponseCode::NXDomain, "{qname}");
            assert_eq!(r.soa.len(), 1, "{qname}");
            assert_eq!(r.soa[0].name.to_string(), "contoso.internal.");
        }
        let namespace = ask(&[OVERRIDE], "shop.contoso.internal.", RecordType::A);
        assert_eq!(
            (namespace.rcode, namespace.answers.len()),
            (ResponseCode::NoError, 0)
        );
    }

    #[test]
    fn the_apex_has_soa_and_ns() {
        let soa = ask(&[OVERRIDE], "contoso.internal.", RecordType::SOA);
        let text = soa.answers[0].data.to_string();
        assert!(
            text.starts_with(
                "ns1.dns.contoso.internal. hostmaster.dns.contoso.internal. 7 7200 1800 86400 5"
            ),
            "{text}"
        );
        let ns = ask(&[OVERRIDE], "contoso.internal.", RecordType::NS);
        assert_eq!(ns.answers[0].data.to_string(), "ns1.dns.contoso.internal.");
        assert_eq!(ns.additionals[0].data.to_string(), "127.9.0.53");
        let ns1 = ask(&[OVERRIDE], "ns1.dns.contoso.internal.", RecordType::A);
        assert_eq!(a_records(&ns1), ["ns1.dns.contoso.internal. 5 127.9.0.53"]);
    }

    #[test]
    fn a_broken_corefile_serves_nothing() {
        let r = ask(
            &[OVERRIDE, ("other.override", "k8s_external other.test\n")],
            "api.shop.contoso.internal.",
            RecordType::A,
        );
        assert_eq!((r.rcode, r.answers.len()), (ResponseCode::ServFail, 0));
    }

    #[test]
    fn a_hosts_entry_runs_before_k8s_external() {
        let hosts = (
            "shadow.override",
            "hosts {\n  10.9.9.9 api.shop.contoso.internal\n  fallthrough\n}\n",
        );
        let r = ask(
            &[OVERRIDE, hosts],
            "api.shop.contoso.internal.",
            RecordType::A,
        );
        assert_eq!(a_records(&r), ["api.shop.contoso.internal. 3600 10.9.9.9"]);
        // Names it has no entry for fall through to k8s_external.
        let other = ask(
            &[OVERRIDE, hosts],
            "web.shop.contoso.internal.",
            RecordType::A,
        );
        assert_eq!(other.rcode, ResponseCode::NXDomain);
        let strict = ("shadow.override", "hosts {\n  10.9.9.9 x.test\n}\n");
        let r = ask(
            &[OVERRIDE, strict],
            "api.shop.contoso.internal.",
            RecordType::A,
        );
        assert_eq!(r.rcode, ResponseCode::ServFail);
    }

    #[test]
    fn names_outside_the_zones_are_not_answered() {
        let r = ask(&[OVERRIDE], "example.com.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::ServFail);
        let none = ask(&[], "api.shop.contoso.internal.", RecordType::A);
        assert_eq!(none.rcode, ResponseCode::ServFail);
    }
}
