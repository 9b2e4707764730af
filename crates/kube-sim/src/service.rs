//! Service semantics of the apiserver: decode-time defaults, ClusterIP/NodePort allocation, the clean-up it
//! does itself on type transitions (`dropTypeDependentFields`), and `ValidateService` for the rules we rely on.

use crate::error::Cause;
use crate::occupancy::Occupancy;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

const CLUSTER_IP_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
const CLUSTER_IP_RANGE: u32 = 1 << 16;
/// The apiserver's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORTS: std::ops::RangeInclusive<u64> = 30000..=32767;
/// Marks the cause of an allocation from a full range: the apiserver answers it with a 500
/// InternalError, not a 422 (pkg/registry/core/service/storage/alloc.go: `NewInternalError(
/// "failed to allocate a nodePort: range is full")`).
pub const ALLOCATION_FAILED: &str = "AllocationFailed";

fn spec(svc: &Value) -> &Value {
    &svc["spec"]
}

fn spec_mut(svc: &mut Value) -> &mut Map<String, Value> {
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    svc["spec"].as_object_mut().expect("just ensured")
}

fn svc_type(svc: &Value) -> &str {
    spec(svc)["type"].as_str().unwrap_or("ClusterIP")
}

fn ports(svc: &Value) -> &[Value] {
    spec(svc)["ports"].as_array().map_or(&[], Vec::as_slice)
}

fn node_port(port: &Value) -> u64 {
    port["nodePort"].as_u64().unwrap_or(0)
}

fn externally_accessible(svc: &Value) -> bool {
    matches!(svc_type(svc), "LoadBalancer" | "NodePort")
        || (svc_type(svc) == "ClusterIP"
            && spec(svc)["externalIPs"]
                .as_array()
                .is_some_and(|a| !a.is_empty()))
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

fn needs_node_port(svc: &Value) -> bool {
    match svc_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => spec(svc)["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

fn needs_health_check_node_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && spec(svc)["externalTrafficPolicy"].as_str() == Some("Local")
}

/// `SetDefaults_Service`: runs when a request is decoded, so the writer owns these fields.
pub fn apply_defaults(svc: &mut Value) {
    let accessible = externally_accessible(svc);
    let spec = spec_mut(svc);
    spec.entry("type").or_insert(json!("ClusterIP"));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.entry("protocol").or_insert(json!("TCP"));
            let missing_target = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if missing_target {
                if let Some(p) = port.get("port").cloned() {
                    port.insert("targetPort".into(), p);
                }
            }
        }
    }
    if accessible
        && spec
            .get("externalTrafficPolicy")
            .is_none_or(|v| v.is_null() || v == "")
    {
        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        spec.entry("allocateLoadBalancerNodePorts")
            .or_insert(json!(true));
    }
}

/// A Service's ClusterIP as an offset in the range, when it holds one there.
fn cluster_ip_offset(ip: &str) -> Option<u32> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    u32::from(ip)
        .checked_sub(u32::from(CLUSTER_IP_BASE))
        .filter(|off| *off < CLUSTER_IP_RANGE)
}

/// What one Service holds: its ClusterIP (as an offset in the range) and its node ports (health
/// check node port included), each as often as the Service names it.
fn held(svc: &Value) -> (Option<u32>, Vec<u32>) {
    let ip = spec(svc)["clusterIP"].as_str().and_then(cluster_ip_offset);
    let mut node_ports: Vec<u32> = ports(svc)
        .iter()
        .map(node_port)
        .chain(spec(svc)["healthCheckNodePort"].as_u64())
        .filter(|p| *p != 0)
        .filter_map(|p| u32::try_from(p).ok())
        .collect();
    node_ports.sort_unstable();
    (ip, node_ports)
}

/// What every stored Service holds, kept up to date as Services are stored and removed, so that
/// allocating never looks at the other Services.
#[derive(Debug)]
pub struct Holdings {
    cluster_ips: Occupancy,
    node_ports: Occupancy,
}

impl Default for Holdings {
    fn default() -> Self {
        Holdings {
            cluster_ips: Occupancy::new(CLUSTER_IP_RANGE),
            node_ports: Occupancy::new(1 << 16),
        }
    }
}

impl Holdings {
    pub fn add(&mut self, svc: &Value) {
        let (ip, node_ports) = held(svc);
        if let Some(ip) = ip {
            self.cluster_ips.insert(ip);
        }
        for port in node_ports {
            self.node_ports.insert(port);
        }
    }

    pub fn remove(&mut self, svc: &Value) {
        let (ip, node_ports) = held(svc);
        if let Some(ip) = ip {
            self.cluster_ips.remove(ip);
        }
        for port in node_ports {
            self.node_ports.remove(port);
        }
    }

    /// The view one write of a Service has: `live` is its stored version, whose holdings are its own
    /// and not "another Service's".
    pub fn for_write<'a>(
        &'a self,
        live: Option<&Value>,
        node_port_range: std::ops::RangeInclusive<u64>,
    ) -> Allocated<'a> {
        let (own_ip, own_node_ports) = live.map(held).unwrap_or_default();
        Allocated {
            holdings: self,
            own_ip,
            own_node_ports,
            taken_ips: Vec::new(),
            taken_node_ports: Vec::new(),
            node_port_range,
        }
    }
}

/// What other Services hold, for "already allocated" checks, and what is free, for allocation.
#[derive(Debug)]
pub struct Allocated<'a> {
    holdings: &'a Holdings,
    own_ip: Option<u32>,
    own_node_ports: Vec<u32>,
    /// Taken by this write: what its spec names and what was allocated for it.
    taken_ips: Vec<u32>,
    taken_node_ports: Vec<u32>,
    /// `--service-node-port-range`.
    pub node_port_range: std::ops::RangeInclusive<u64>,
}

impl Allocated<'_> {
    fn cluster_ip_held_by_others(&self, ip: &str) -> bool {
        cluster_ip_offset(ip).is_some_and(|off| {
            self.holdings.cluster_ips.count(off) > u32::from(self.own_ip == Some(off))
        })
    }

    fn node_port_held_by_others(&self, port: u64) -> bool {
        u32::try_from(port).is_ok_and(|port| {
            let own = self.own_node_ports.iter().filter(|p| **p == port).count();
            self.holdings.node_ports.count(port) as usize > own
        })
    }

    /// The lowest free number in `from..=to`: held by no stored Service (this one's stored version
    /// included, as the apiserver releases what an update gives up only after it), nor taken by this
    /// write.
    fn lowest_free(space: &Occupancy, taken: &[u32], from: u32, to: u32) -> Option<u32> {
        let mut from = from;
        loop {
            let n = space.first_free(from, to)?;
            if !taken.contains(&n) {
                return Some(n);
            }
            from = n.checked_add(1)?;
        }
    }

    fn next_cluster_ip(&mut self) -> Option<String> {
        // .0 is the network, .1 is the `kubernetes` Service on a real cluster.
        let off = Self::lowest_free(
            &self.holdings.cluster_ips,
            &self.taken_ips,
            10,
            CLUSTER_IP_RANGE - 2,
        )?;
        self.taken_ips.push(off);
        Some(Ipv4Addr::from(u32::from(CLUSTER_IP_BASE) + off).to_string())
    }

    fn next_node_port(&mut self) -> Option<u64> {
        let (start, end) = (
            u32::try_from(*self.node_port_range.start()).ok()?,
            u32::try_from(*self.node_port_range.end()).unwrap_or(u32::MAX),
        );
        let port = Self::lowest_free(
            &self.holdings.node_ports,
            &self.taken_node_ports,
            start,
            end,
        )?;
        self.taken_node_ports.push(port);
        Some(u64::from(port))
    }
}

/// Storage-time behaviour on create/update: carries allocated values over, clears fields the new type does not
/// use (only when the request left them as they were), validates, then allocates what is missing.
pub fn prepare(
    svc: &mut Value,
    old: Option<&Value>,
    mut allocated: Allocated<'_>,
) -> Result<(), Vec<Cause>> {
    if let Some(old) = old {
        patch_allocated_values(svc, old);
        drop_type_dependent_fields(svc, old);
    }
    let causes = validate(svc, old, &allocated);
    if !causes.is_empty() {
        return Err(causes);
    }
    allocate(svc, &mut allocated)?;
    if !svc["status"].is_object() {
        svc["status"] = json!({});
    }
    // The load-balancer status only means something for a LoadBalancer; de-provisioning is not shown to users.
    if svc_type(svc) != "LoadBalancer" || !svc["status"]["loadBalancer"].is_object() {
        svc["status"]["loadBalancer"] = json!({});
    }
    Ok(())
}

/// A request that omits allocated values (e.g. a PUT built from a manifest) keeps the old ones.
fn patch_allocated_values(svc: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(svc) {
        let old_spec = spec(old).clone();
        let spec = spec_mut(svc);
        if spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            if let Some(ip) = old_spec.get("clusterIP") {
                spec.insert("clusterIP".into(), ip.clone());
            }
        }
        if spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            if let Some(ips) = old_spec.get("clusterIPs") {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    }
    if needs_node_port(old) && needs_node_port(svc) {
        let used: HashSet<u64> = ports(svc)
            .iter()
            .map(node_port)
            .filter(|p| *p != 0)
            .collect();
        let by_name: Vec<(String, u64)> = ports(old)
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    node_port(p),
                )
            })
            .collect();
        if let Some(new_ports) = spec_mut(svc).get_mut("ports").and_then(Value::as_array_mut) {
            for port in new_ports.iter_mut().filter(|p| node_port(p) == 0) {
                let name = port["name"].as_str().unwrap_or_default();
                if let Some((_, np)) = by_name
                    .iter()
                    .find(|(n, np)| n == name && *np != 0 && !used.contains(np))
                {
                    port["nodePort"] = json!(np);
                }
            }
        }
    }
    if needs_health_check_node_port(old) && needs_health_check_node_port(svc) {
        let old_hc = spec(old)["healthCheckNodePort"].clone();
        let spec = spec_mut(svc);
        if spec
            .get("healthCheckNodePort")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            == 0
            && !old_hc.is_null()
        {
            spec.insert("healthCheckNodePort".into(), old_hc);
        }
    }
}

/// `dropTypeDependentFields`: wipe what the old type needed, only where the user did not change it.
fn drop_type_dependent_fields(svc: &mut Value, old: &Value) {
    let same = |field: &str, svc: &Value| spec(svc).get(field) == spec(old).get(field);
    if needs_cluster_ip(old) && !needs_cluster_ip(svc) {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if same(field, svc) {
                spec_mut(svc).remove(field);
            }
        }
    }
    if needs_node_port(old) && !needs_node_port(svc) {
        let old_ports: HashSet<u64> = ports(old)
            .iter()
            .map(node_port)
            .filter(|p| *p != 0)
            .collect();
        // Users may remove or keep node ports, as long as they add no new ones.
        if ports(svc)
            .iter()
            .map(node_port)
            .filter(|p| *p != 0)
            .all(|p| old_ports.contains(&p))
        {
            if let Some(ports) = spec_mut(svc).get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    port.remove("nodePort");
                }
            }
        }
    }
    if needs_health_check_node_port(old)
        && !needs_health_check_node_port(svc)
        && same("healthCheckNodePort", svc)
    {
        spec_mut(svc).remove("healthCheckNodePort");
    }
    if svc_type(old) == "LoadBalancer" && svc_type(svc) != "LoadBalancer" {
        let (new_v, old_v) = (
            &spec(svc)["allocateLoadBalancerNodePorts"],
            &spec(old)["allocateLoadBalancerNodePorts"],
        );
        if !new_v.is_null() && new_v == old_v {
            spec_mut(svc).remove("allocateLoadBalancerNodePorts");
        }
        if same("loadBalancerClass", svc) {
            spec_mut(svc).remove("loadBalancerClass");
        }
    }
    if externally_accessible(old)
        && !externally_accessible(svc)
        && same("externalTrafficPolicy", svc)
    {
        spec_mut(svc).remove("externalTrafficPolicy");
    }
}

fn validate(svc: &Value, old: Option<&Value>, allocated: &Allocated) -> Vec<Cause> {
    let mut causes = Vec::new();
    let ty = svc_type(svc);
    let s = spec(svc);
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        let supported: Vec<Value> = TYPES.iter().map(|t| json!(t)).collect();
        causes.push(Cause::not_supported("spec.type", &json!(ty), &supported));
        return causes;
    }
    let cluster_ip = s["clusterIP"].as_str().unwrap_or("");
    if ty == "ExternalName" {
        if s["externalName"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required("spec.externalName", ""));
        }
    } else if s["ports"].as_array().is_none_or(Vec::is_empty) && cluster_ip != "None" {
        causes.push(Cause::required("spec.ports", ""));
    }
    if cluster_ip == "None" && matches!(ty, "LoadBalancer" | "NodePort") {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &json!("None"),
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if let Some(old) = old.filter(|o| needs_cluster_ip(o) && needs_cluster_ip(svc)) {
        let old_ip = spec(old)["clusterIP"].as_str().unwrap_or("");
        if !old_ip.is_empty() && cluster_ip != old_ip {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                &json!(cluster_ip),
                "may not change once set",
            ));
        }
    } else if !cluster_ip.is_empty() && cluster_ip != "None" && ty != "ExternalName" {
        match cluster_ip.parse::<Ipv4Addr>() {
            Ok(ip) if u32::from(ip).checked_sub(u32::from(CLUSTER_IP_BASE)).is_some_and(|off| off < CLUSTER_IP_RANGE) => {
                if allocated.cluster_ip_held_by_others(cluster_ip) {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        &json!([cluster_ip]),
                        format!("failed to allocate IP {cluster_ip}: provided IP is already allocated"),
                    ));
                }
            }
            _ => causes.push(Cause::invalid(
                "spec.clusterIPs",
                &json!([cluster_ip]),
                format!("failed to allocate IP {cluster_ip}: the provided IP ({cluster_ip}) is not in the valid range. The range of valid IPs is 10.0.0.0/16"),
            )),
        }
    }
    if ty != "LoadBalancer" {
        if s["loadBalancerSourceRanges"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            causes.push(Cause::forbidden(
                "spec.loadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        if !s["allocateLoadBalancerNodePorts"].is_null() {
            causes.push(Cause::forbidden(
                "spec.allocateLoadBalancerNodePorts",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    if !externally_accessible(svc) {
        if let Some(etp) = s["externalTrafficPolicy"]
            .as_str()
            .filter(|e| !e.is_empty())
        {
            causes.push(Cause::invalid(
                "spec.externalTrafficPolicy",
                &json!(etp),
                "may only be set for externally-accessible services",
            ));
        }
    }
    if let Some(hc) = s["healthCheckNodePort"].as_u64().filter(|hc| *hc != 0) {
        if !needs_health_check_node_port(svc) {
            causes.push(Cause::invalid(
                "spec.healthCheckNodePort",
                &json!(hc),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    }
    validate_ports(svc, old, allocated, &mut causes);
    causes
}

fn validate_ports(
    svc: &Value,
    old: Option<&Value>,
    allocated: &Allocated,
    causes: &mut Vec<Cause>,
) {
    let ty = svc_type(svc);
    let list = ports(svc);
    let old_node_ports: HashSet<u64> = old
        .map(|o| ports(o).iter().map(node_port).collect())
        .unwrap_or_default();
    let mut seen_names = HashSet::new();
    let mut seen_ports = HashSet::new();
    for (i, port) in list.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = port["name"].as_str().unwrap_or("");
        if list.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("{path}.name"), ""));
        } else if !name.is_empty() && !seen_names.insert(name) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                format!("{path}.name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        let number = port["port"].as_u64().unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push(Cause::invalid(
                format!("{path}.port"),
                &port["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = port["protocol"].as_str().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            let supported = [json!("SCTP"), json!("TCP"), json!("UDP")];
            causes.push(Cause::not_supported(
                format!("{path}.protocol"),
                &json!(protocol),
                &supported,
            ));
        }
        if !seen_ports.insert((number, protocol)) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                path.clone(),
                format!(
                    "Duplicate value: core.ServicePort{{Port:{number}, Protocol:{protocol:?}}}"
                ),
            ));
        }
        let np = node_port(port);
        if np == 0 {
            continue;
        }
        if matches!(ty, "ClusterIP" | "ExternalName") {
            causes.push(Cause::forbidden(
                format!("{path}.nodePort"),
                &format!("may not be used when `type` is '{ty}'"),
            ));
        } else if !allocated.node_port_range.contains(&np) {
            causes.push(Cause::invalid(
                format!("{path}.nodePort"),
                &json!(np),
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    allocated.node_port_range.start(),
                    allocated.node_port_range.end()
                ),
            ));
        } else if allocated.node_port_held_by_others(np) && !old_node_ports.contains(&np) {
            causes.push(Cause::invalid(
                format!("{path}.nodePort"),
                &json!(np),
                "provided port is already allocated",
            ));
        }
    }
}

fn allocate(svc: &mut Value, allocated: &mut Allocated) -> Result<(), Vec<Cause>> {
    let exhausted = |what: &str| {
        vec![Cause::new(
            ALLOCATION_FAILED,
            "spec",
            format!("failed to allocate a {what}: range is full"),
        )]
    };
    if needs_cluster_ip(svc) {
        let requested = spec(svc)["clusterIP"].as_str().unwrap_or("").to_string();
        let ip = if requested.is_empty() {
            allocated
                .next_cluster_ip()
                .ok_or_else(|| exhausted("serviceIP"))?
        } else {
            requested
        };
        let spec = spec_mut(svc);
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    }
    // What the Service names itself is not free for its other ports.
    allocated.taken_node_ports.extend(held(svc).1);
    if needs_node_port(svc) {
        let count = ports(svc).len();
        for i in 0..count {
            if node_port(&ports(svc)[i]) == 0 {
                let np = allocated
                    .next_node_port()
                    .ok_or_else(|| exhausted("nodePort"))?;
                spec_mut(svc)["ports"][i]["nodePort"] = json!(np);
            }
        }
    }
    if needs_health_check_node_port(svc)
        && spec(svc)["healthCheckNodePort"].as_u64().unwrap_or(0) == 0
    {
        let np = allocated
            .next_node_port()
            .ok_or_else(|| exhausted("nodePort"))?;
        spec_mut(svc).insert("healthCheckNodePort".into(), json!(np));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Allocated<'static> {
        static EMPTY: std::sync::LazyLock<Holdings> = std::sync::LazyLock::new(Holdings::default);
        EMPTY.for_write(None, DEFAULT_NODE_PORTS)
    }

    fn created(spec: Value) -> Value {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": spec});
        apply_defaults(&mut svc);
        prepare(&mut svc, None, none()).unwrap();
        svc
    }

    #[test]
    fn cluster_ip_service_gets_defaults_and_an_ip() {
        let svc = created(json!({"ports": [{"port": 80}]}));
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["clusterIP"], "10.0.0.10");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.0.0.10"]));
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn load_balancer_to_cluster_ip_clears_what_the_server_filled_in() {
        let old = created(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        assert_eq!(old["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(old["spec"]["externalTrafficPolicy"], "Cluster");
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        apply_defaults(&mut new);
        let mut holdings = Holdings::default();
        holdings.add(&old);
        prepare(
            &mut new,
            Some(&old),
            holdings.for_write(Some(&old), DEFAULT_NODE_PORTS),
        )
        .unwrap();
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert!(new["spec"].get("externalTrafficPolicy").is_none());
        assert!(new["spec"].get("allocateLoadBalancerNodePorts").is_none());
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
    }

    #[test]
    fn leftover_source_ranges_and_headless_load_balancer_are_rejected() {
        let old = created(
            json!({"type": "LoadBalancer", "ports": [{"port": 80}], "loadBalancerSourceRanges": ["1.2.3.0/24"]}),
        );
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        let causes = prepare(&mut new, Some(&old), none()).unwrap_err();
        assert_eq!(
            causes[0].to_line(),
            "spec.loadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"
        );
        let mut headless =
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]}});
        apply_defaults(&mut headless);
        let causes = prepare(&mut headless, None, none()).unwrap_err();
        assert!(causes[0]
            .to_line()
            .contains("may not be set to 'None' for LoadBalancer services"));
    }
}
