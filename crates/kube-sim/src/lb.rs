//! A simulated Azure cloud-controller-manager: gives every `type: LoadBalancer` Service an ingress IP,
//! written to the status subresource as field manager `cloud-controller-manager`, like the real one.
//!
//! It is event-driven (it wakes on every committed change), stateless (the IPs already in Service
//! status are the allocation table, so an IP stays stable while the Service's settings allow it), and
//! writes only when a Service's status differs from what it should be.

use crate::apiserver::{ApiServer, Filter, Target, Write, WriteOptions};
use crate::object;
use crate::patch::PatchType;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::sync::watch;

pub const INTERNAL_ANNOTATION: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
pub const IPV4_ANNOTATION: &str = "service.beta.kubernetes.io/azure-load-balancer-ipv4";
pub const FIELD_MANAGER: &str = "cloud-controller-manager";

/// A frontend IP pool: internal LBs take addresses from the cluster subnet, public ones from a test range.
struct Pool {
    network: Ipv4Addr,
    prefix: u8,
    /// Azure reserves the first addresses of a subnet.
    first_host: u32,
}

const INTERNAL: Pool = Pool {
    network: Ipv4Addr::new(10, 240, 0, 0),
    prefix: 16,
    first_host: 4,
};
const PUBLIC: Pool = Pool {
    network: Ipv4Addr::new(20, 50, 0, 0),
    prefix: 16,
    first_host: 4,
};

impl Pool {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }

    fn next_free(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (self.first_host..size - 1)
            .map(|i| Ipv4Addr::from(u32::from(self.network) + i))
            .find(|ip| !used.contains(ip))
    }
}

pub async fn run(api: Arc<ApiServer>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = api.subscribe();
    loop {
        reconcile(&api);
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

fn pool(svc: &Value) -> &'static Pool {
    if object::annotation(svc, INTERNAL_ANNOTATION) == Some("true") {
        &INTERNAL
    } else {
        &PUBLIC
    }
}

/// Works out each Service's frontend IP and writes the statuses that differ.
fn reconcile(api: &ApiServer) {
    let Some(target) = api.lock().target("v1", "Service", None, None) else {
        return;
    };
    let (services, _) = api.list(&target.resource, &Filter::default());
    let balanced: Vec<&Value> = services.iter().filter(|s| wants_load_balancer(s)).collect();

    // First the IPs that stay: static ones, then current ones still valid for their Service's settings.
    let mut used: HashSet<Ipv4Addr> = balanced.iter().filter_map(|s| static_ip(s)).collect();
    let mut desired: Vec<Option<Ipv4Addr>> = balanced
        .iter()
        .map(|s| {
            static_ip(s).or_else(|| {
                let ip = current_ip(s).filter(|ip| pool(s).contains(*ip) && !used.contains(ip))?;
                used.insert(ip);
                Some(ip)
            })
        })
        .collect();
    for (svc, ip) in balanced.iter().zip(desired.iter_mut()) {
        if ip.is_none() {
            *ip = pool(svc).next_free(&used);
            used.extend(*ip);
        }
    }

    for (svc, ip) in balanced.iter().zip(desired) {
        let Some(ip) = ip else { continue };
        if current_ip(svc) != Some(ip)
            || svc["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(Vec::len)
                != Some(1)
        {
            write_ingress(api, &target, svc, json!([{"ip": ip.to_string()}]));
        }
    }
    for svc in services
        .iter()
        .filter(|s| !wants_load_balancer(s) && !s["status"]["loadBalancer"]["ingress"].is_null())
    {
        write_ingress(api, &target, svc, Value::Null);
    }
}

fn write_ingress(api: &ApiServer, target: &Target, svc: &Value, ingress: Value) {
    let target = Target {
        namespace: object::namespace(svc).map(String::from),
        name: Some(object::name(svc).to_string()),
        status: true,
        ..target.clone()
    };
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    let opts = WriteOptions {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    // The Service may have changed or gone since the list; the next change triggers another pass.
    if let Err(e) = api.write(&target, Write::Patch(PatchType::Merge, patch), &opts) {
        tracing::debug!(service = object::name(svc), error = %e, "load-balancer status update skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools() {
        assert!(INTERNAL.contains(Ipv4Addr::new(10, 240, 3, 9)));
        assert!(!INTERNAL.contains(Ipv4Addr::new(10, 241, 0, 1)));
        let used = HashSet::from([Ipv4Addr::new(10, 240, 0, 4)]);
        assert_eq!(
            INTERNAL.next_free(&used),
            Some(Ipv4Addr::new(10, 240, 0, 5))
        );
        assert_eq!(
            PUBLIC.next_free(&HashSet::new()),
            Some(Ipv4Addr::new(20, 50, 0, 4))
        );
    }
}
