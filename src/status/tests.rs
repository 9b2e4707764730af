use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn duties(dns_ready: bool) -> Vec<DutyStatus> {
    vec![
        DutyStatus::ready(types::SERVICES, "ServicesLinked", "2 Services linked"),
        if dns_ready {
            DutyStatus::ready(
                types::DNS_SERVICE,
                "LoadBalancerReady",
                "DNS server 10.240.0.53",
            )
        } else {
            DutyStatus::waiting(
                types::DNS_SERVICE,
                "WaitingForLoadBalancerIP",
                "waiting for load balancer IP",
            )
        },
    ]
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[test]
fn ready_summarises_the_duties() {
    let done = conditions(&duties(true), Some(3), &[], t(0));
    assert_eq!(find(&done, types::READY).unwrap().status, "True");
    assert!(find(&done, types::RECONCILING).is_none());
    assert!(find(&done, types::STALLED).is_none());
    let waiting = conditions(&duties(false), Some(3), &[], t(0));
    let ready = find(&waiting, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "WaitingForLoadBalancerIP")
    );
    assert_eq!(
        ready.message,
        "DnsServiceReady: waiting for load balancer IP"
    );
    assert_eq!(find(&waiting, types::RECONCILING).unwrap().status, "True");
    assert_eq!(
        find(&waiting, types::READY).unwrap().observed_generation,
        Some(3)
    );
}

#[test]
fn a_conflict_stalls() {
    let mut d = duties(true);
    d.push(DutyStatus::blocked(
        types::COREDNS_OVERRIDE,
        "ForeignK8sExternal",
        "key x.override already uses k8s_external",
    ));
    let c = conditions(&d, Some(1), &[], t(0));
    assert_eq!(
        find(&c, types::STALLED).unwrap().reason,
        "ForeignK8sExternal"
    );
    assert!(find(&c, types::RECONCILING).is_none());
}

#[test]
fn a_quiet_recompute_is_identical_and_timestamps_move_only_on_a_flip() {
    let first = conditions(&duties(false), Some(1), &[], t(0));
    let again = conditions(&duties(false), Some(1), &first, t(60));
    assert_eq!(first, again, "nothing changed, so nothing to write");
    let flipped = conditions(&duties(true), Some(1), &again, t(120));
    assert_eq!(
        find(&flipped, types::READY).unwrap().last_transition_time,
        Time(t(120))
    );
    assert_eq!(
        find(&flipped, types::SERVICES)
            .unwrap()
            .last_transition_time,
        Time(t(0))
    );
}

#[test]
fn problems_are_reported_once_when_they_appear() {
    let svc = |state| LinkedServiceStatus {
        namespace: "shop".into(),
        name: "web".into(),
        state,
        fqdn: "web.shop.z".into(),
        message: Some("public".into()),
        ..Default::default()
    };
    let observed = |state| Observed {
        services: vec![svc(state)],
        ..Default::default()
    };
    let old = build(
        &duties(true),
        observed(LinkedServiceState::Linked),
        Some(1),
        None,
        t(0),
    );
    let new = build(
        &duties(true),
        observed(LinkedServiceState::Skipped),
        Some(1),
        Some(&old),
        t(1),
    );
    assert_eq!(
        new_problems(Some(&old), &new),
        vec![(
            "ServiceSkipped".to_string(),
            "Service shop/web: public".to_string()
        )]
    );
    assert!(new_problems(Some(&new), &new).is_empty());
}

#[test]
fn names_that_stop_resolving_are_reported_once() {
    let names = |ok: bool| {
        let mut d = duties(true);
        d.push(if ok {
            DutyStatus::ready(types::NAMES, "NamesResolve", "2 name(s) resolve")
        } else {
            DutyStatus::waiting(types::NAMES, "NamesDoNotResolve", "api.shop.z: NXDOMAIN")
        });
        d
    };
    // Not yet resolving on the way to Ready is no news.
    let first = build(&names(false), Observed::default(), Some(1), None, t(0));
    assert!(new_problems(None, &first).is_empty());
    let ok = build(
        &names(true),
        Observed::default(),
        Some(1),
        Some(&first),
        t(1),
    );
    let broken = build(&names(false), Observed::default(), Some(1), Some(&ok), t(2));
    assert_eq!(
        new_problems(Some(&ok), &broken),
        vec![(
            "NamesDoNotResolve".to_string(),
            "api.shop.z: NXDOMAIN".to_string()
        )]
    );
    assert!(new_problems(Some(&broken), &broken).is_empty());
}

#[test]
fn a_thousand_services_list_the_problems_first_and_count_them_all() {
    let entry = |i: usize, state| LinkedServiceStatus {
        namespace: "shop".into(),
        name: format!("svc-{i:04}"),
        state,
        internal_ip: Some(format!("10.240.{}.{}", i / 250, i % 250 + 1)),
        fqdn: format!("svc-{i:04}.shop.mydomain.local"),
        ..Default::default()
    };
    let mut services: Vec<LinkedServiceStatus> = (0..1000)
        .map(|i| entry(i, LinkedServiceState::Linked))
        .collect();
    services[500].state = LinkedServiceState::Failed;
    services[500].message = Some("admission webhook denied the request".into());
    services[700].state = LinkedServiceState::Pending;
    services[900].reverts = 2;
    let (listed, counts) = bounded(services);
    assert_eq!(listed.len(), MAX_SERVICE_ENTRIES);
    assert_eq!(
        counts,
        ServiceCounts {
            linked: 998,
            pending: 1,
            skipped: 0,
            conflict: 0,
            failed: 1,
            omitted: 800,
        }
    );
    let names: Vec<&str> = listed.iter().take(4).map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["svc-0500", "svc-0700", "svc-0900", "svc-0000"]);
    // Far under etcd's 1.5 MiB, whatever the link selects.
    let size = serde_json::to_vec(&listed).unwrap().len();
    assert!(size < 100 * 1024, "{size} bytes");
}
