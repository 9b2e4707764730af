//! The chart's RBAC against what the operator really asks of the apiserver.
//!
//! The real operator binary runs, configured as the chart's Deployment configures it, against the
//! simulated apiserver through a scenario that makes it do everything it can do to Kubernetes. Every
//! request it made is mapped to the attributes the apiserver authorizes (API group, resource,
//! subresource, verb, namespace, name), and compared with the rules the chart renders:
//!
//! - every request must be allowed by a rule bound to the operator's ServiceAccount;
//! - every rule (verb × resource × resourceName, in its namespace) must have been used, except the
//!   ones listed in [`UNEXERCISED`] with the reason.
//!
//! `every_e2e_request_is_allowed_by_the_chart` does the first check on the requests of the whole
//! end-to-end suite, recorded with `APPSERVICELINK_RECORD_REQUESTS` (run by `.ci/run`).

#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;

#[path = "support/chart.rs"]
mod chart;

use std::collections::{BTreeMap, BTreeSet};

use harness::{Harness, LINKS};
use serde_json::{json, Value};

/// Rules the scenario cannot exercise, as (namespace or "*", API group, resource, verb, why).
const UNEXERCISED: &[(&str, &str, &str, &str, &str)] = &[(
    "*",
    "",
    "services",
    "get",
    "service_link::exists reads a Service back only after a server-side apply carrying the cached uid \
     answered 409, i.e. the Service was deleted and re-created under the operator between its watch \
     event and the apply; that race cannot be staged deterministically",
)];

/// What the apiserver authorizes one request as (k8s.io/apiserver RequestInfo).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Attributes {
    group: String,
    /// `resource` or `resource/subresource`, as RBAC rules name them.
    resource: String,
    verb: String,
    namespace: Option<String>,
    name: Option<String>,
}

impl std::fmt::Display for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}{} in {} name {}",
            self.verb,
            if self.group.is_empty() {
                String::new()
            } else {
                format!("{}/", self.group)
            },
            self.resource,
            self.namespace.as_deref().unwrap_or("(cluster)"),
            self.name.as_deref().unwrap_or("(any)")
        )
    }
}

/// One request as recorded by kube-sim (or read back from the e2e log).
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    verb: String,
    status: u16,
}

impl Request {
    fn describe(&self) -> String {
        format!(
            "{} {}?{} ({})",
            self.method, self.path, self.query, self.status
        )
    }

    /// The authorization checks this request needs; `None` for non-resource URLs (discovery,
    /// /version), which every authenticated user may GET (ClusterRole system:discovery).
    fn attributes(&self) -> Option<Vec<Attributes>> {
        let parts: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, rest) = match parts.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        if rest.is_empty() {
            return None;
        }
        // namespaces/{ns}/{resource}/... unless it is a Namespace's own subresource.
        let (namespace, rest) = match rest {
            ["namespaces", ns, more @ ..]
                if !more.is_empty() && !["status", "finalize"].contains(&more[0]) =>
            {
                (Some(ns.to_string()), more)
            }
            other => (None, other),
        };
        let resource = match rest {
            [resource, _name, sub, ..] => format!("{resource}/{sub}"),
            [resource, ..] => resource.to_string(),
            [] => return None,
        };
        let mut name = rest.get(1).map(|n| n.to_string());
        // A list or watch with fieldSelector=metadata.name=X is authorized with name X.
        if name.is_none() && (self.verb == "list" || self.verb == "watch") {
            name = field_selector_name(&self.query);
        }
        let mut checks = vec![Attributes {
            group: group.to_string(),
            resource: resource.clone(),
            verb: self.verb.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        }];
        // A server-side apply that creates the object is authorized as create too, with its name
        // (apiserver handlers/patch.go); a merge or JSON patch of a missing object is a 404.
        if self.verb == "patch" && self.status == 201 {
            checks.push(Attributes {
                verb: "create".into(),
                ..checks[0].clone()
            });
        }
        Some(checks)
    }
}

fn field_selector_name(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("fieldSelector=")?;
        let value = percent_decode(value);
        let terms: Vec<&str> = value.split(',').collect();
        match terms.as_slice() {
            [only] => only
                .strip_prefix("metadata.name=")
                .or_else(|| only.strip_prefix("metadata.name=="))
                .map(str::to_string),
            _ => None,
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One PolicyRule, where it applies, and where it came from.
#[derive(Debug)]
struct Rule {
    /// `None`: every namespace and cluster-scoped resources (a ClusterRole through a
    /// ClusterRoleBinding); `Some(ns)`: that namespace only.
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
    source: String,
}

impl Rule {
    fn allows(&self, a: &Attributes) -> bool {
        (self.namespace.is_none() || self.namespace == a.namespace)
            && self.groups.contains(&a.group)
            && self.resources.contains(&a.resource)
            && self.verbs.contains(&a.verb)
            && (self.names.is_empty() || a.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The dedicated CoreDNS's ServiceAccount (`dns.mode: dedicated`), not the operator's.
const COREDNS_SA: &str = "appservicelink-coredns";

/// Whether a binding binds only the dedicated CoreDNS.
fn binds_coredns(binding: &Value) -> bool {
    binding["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["kind"] == "ServiceAccount" && s["name"] == COREDNS_SA)
}

/// The rules bound to the chart's ServiceAccount, failing on wildcards and on Secrets.
fn bound_rules(objects: &[Value]) -> Vec<Rule> {
    let sa = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] != COREDNS_SA)
        .expect("the operator's ServiceAccount");
    let (sa_name, sa_ns) = (
        sa["metadata"]["name"].as_str().unwrap(),
        sa["metadata"]["namespace"].as_str().unwrap(),
    );
    let mut rules = Vec::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .filter(|o| !binds_coredns(o))
    {
        let binds_us = binding["subjects"].as_array().unwrap().iter().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == sa_name && s["namespace"] == sa_ns
        });
        assert!(
            binds_us,
            "{} binds someone else: {binding}",
            binding["metadata"]["name"]
        );
        let role_ref = &binding["roleRef"];
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == role_ref["kind"]
                    && o["metadata"]["name"] == role_ref["name"]
                    && o["metadata"]["namespace"].as_str() == binding_ns
            })
            .unwrap_or_else(|| panic!("{binding} refers to a role the chart does not render"));
        let namespace = binding_ns.map(str::to_string);
        for rule in role["rules"].as_array().unwrap() {
            let rule = Rule {
                namespace: namespace.clone(),
                groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
                names: strings(&rule["resourceNames"]),
                source: format!(
                    "{} {}",
                    role["kind"].as_str().unwrap(),
                    role["metadata"]["name"].as_str().unwrap()
                ),
            };
            for field in [&rule.groups, &rule.resources, &rule.verbs, &rule.names] {
                assert!(
                    !field.iter().any(|s| s.contains('*')),
                    "wildcard in {rule:?}"
                );
            }
            assert!(
                !rule.resources.iter().any(|r| r.starts_with("secrets")),
                "the operator must not read Secrets: {rule:?}"
            );
            assert!(!rule.verbs.is_empty() && !rule.resources.is_empty());
            rules.push(rule);
        }
    }
    rules
}

/// Requests no bound rule allows.
fn denied(requests: &[Request], rules: &[Rule]) -> Vec<String> {
    let mut denied = BTreeSet::new();
    for r in requests {
        match r.attributes() {
            None => assert_eq!(r.method, "GET", "non-resource request {}", r.describe()),
            Some(checks) => {
                for a in checks {
                    if !rules.iter().any(|rule| rule.allows(&a)) {
                        denied.insert(format!("{a}   <- {}", r.describe()));
                    }
                }
            }
        }
    }
    denied.into_iter().collect()
}

/// Rule grants (namespace, group, resource, verb, name) that no request used.
fn unused(requests: &[Request], rules: &[Rule]) -> Vec<String> {
    let used: Vec<Attributes> = requests
        .iter()
        .filter_map(Request::attributes)
        .flatten()
        .collect();
    let mut unused = Vec::new();
    for rule in rules {
        let names: Vec<Option<&String>> = if rule.names.is_empty() {
            vec![None]
        } else {
            rule.names.iter().map(Some).collect()
        };
        for group in &rule.groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    for name in &names {
                        let hit = used.iter().any(|a| {
                            &a.group == group
                                && &a.resource == resource
                                && &a.verb == verb
                                && (rule.namespace.is_none() || rule.namespace == a.namespace)
                                && (name.is_none() || a.name.as_ref() == *name)
                        });
                        let scope = rule.namespace.as_deref().unwrap_or("*");
                        let excused = UNEXERCISED.iter().any(|(ns, g, res, v, _)| {
                            *ns == scope && g == group && res == resource && v == verb
                        });
                        if !hit && !excused {
                            unused.push(format!(
                                "{verb} {group}/{resource} name {} in {scope} ({})",
                                name.map(String::as_str).unwrap_or("(any)"),
                                rule.source
                            ));
                        }
                    }
                }
            }
        }
    }
    unused
}

fn link(name: &str, expose: &str, zone: &str, static_ip: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: {name}
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "{expose}"}}
    allowPublicLoadBalancerConversion: true
  dns:
    zone: {zone}
    service:
      name: appservicelink-dns
      staticIP: {static_ip}
"#
    )
}

/// What serves the zones: the override key of coredns-custom, or the dedicated CoreDNS's Corefile.
fn override_text(h: &Harness, dedicated: bool) -> String {
    let (namespace, name, key) = if dedicated {
        (chart::NAMESPACE, COREDNS_SA, "Corefile")
    } else {
        ("kube-system", "coredns-custom", "appservicelink.override")
    };
    h.sim
        .get("v1", "ConfigMap", Some(namespace), name)
        .and_then(|c| c["data"][key].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Runs the operator as the chart's Deployment runs it, through every kind of change it makes to
/// Kubernetes, and returns its requests. `leader_election` tells whether this binary elects one.
async fn exercise(objects: &[Value]) -> (Vec<Request>, bool) {
    // Loopback load balancers: the chart runs the name check, and it gets real answers.
    let mut h = Harness::cluster_with_dns().await;
    let dns_ip = h.sim.internal_range().host(53).to_string();
    // The harness creates the chart's namespace (harness::OPERATOR_NAMESPACE) like every cluster here.
    assert_eq!(chart::NAMESPACE, harness::OPERATOR_NAMESPACE);
    let dedicated = chart::args(objects)
        .iter()
        .any(|a| a == "--dns-mode=dedicated");
    // The operator creates coredns-custom itself when it is missing (k3s, fresh clusters).
    h.kubectl_ok(&["-n", "kube-system", "delete", "configmap", "coredns-custom"]);
    let dns_namespace = if dedicated {
        // Checked here against the chart rendered for dedicated mode, not against the defaults.
        h.outside_chart_defaults("dedicated DNS mode: chart value dns.mode=dedicated");
        chart::NAMESPACE
    } else {
        "kube-system"
    };

    // The Deployment's args, as the container runs them.
    let mut args = Vec::new();
    for arg in chart::args(objects).into_iter().skip(1) {
        let flag = arg.split('=').next().unwrap().to_string();
        let arg = match flag.as_str() {
            // Several tests run operators at once.
            "--http-port" => "--http-port=0".to_string(),
            _ => arg.replace("$(POD_NAMESPACE)", chart::NAMESPACE),
        };
        // As separate words, the way the harness looks for the flags it sets itself.
        args.extend(arg.splitn(2, '=').map(str::to_string));
    }
    let leader_election = args.iter().any(|a| a == "--leader-elect");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.operator_args(&args);
    h.operator_env("POD_NAME", "asl-appservicelink-0");
    h.operator_env("POD_NAMESPACE", chart::NAMESPACE);
    h.start_operator();

    // Services converted, the DNS Service and coredns-custom created by apply, CoreDNS rolled.
    h.apply(include_str!("e2e/fixtures/shop.yaml"));
    h.apply(&link("web", "true", "mydomain.local", &dns_ip));
    h.wait_ready("web").await;
    // A second link: the override is patched, the shared DNS Service kept.
    h.apply(&link("partners", "public", "partners.local", &dns_ip));
    h.wait_ready("partners").await;
    // The same link changes zone: the same Events again, which the recorder patches as a series.
    h.apply(&link("web", "true", "shop.local", &dns_ip));
    h.eventually("the override to follow the new zone", |h| {
        override_text(h, dedicated)
            .contains("shop.local")
            .then_some(())
    })
    .await;
    h.eventually("web to be Ready for its new generation", |h| {
        let l = h.link("web")?;
        (l["status"]["observedGeneration"] == l["metadata"]["generation"]
            && h.condition("web", "Ready")?.0 == "True")
            .then_some(())
    })
    .await;
    // A Service leaves a link: restored by merge patch.
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "orders",
        "appservicelink.io/expose-",
    ]);
    h.eventually("orders to be restored", |h| {
        (h.service("shop", "orders")?["spec"]["type"] == "ClusterIP").then_some(())
    })
    .await;
    // Links deleted: override emptied, DNS Service deleted, finalizers released.
    h.kubectl_ok(&["delete", "asl", "partners", "web", "--timeout=30s"]);
    h.eventually("the DNS Service to be deleted", |h| {
        h.service(dns_namespace, "appservicelink-dns")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(h.get(LINKS, None, "web").is_none());
    if leader_election {
        assert!(
            h.get(
                ("coordination.k8s.io/v1", "Lease"),
                Some(chart::NAMESPACE),
                "appservicelink-leader"
            )
            .is_some(),
            "the operator took the Lease the chart's RBAC names"
        );
    }
    h.kill_operator();
    let requests = h
        .operator_requests()
        .into_iter()
        .map(|r| Request {
            method: r.method,
            path: r.path,
            query: r.query,
            verb: r.verb,
            status: r.status,
        })
        .collect();
    (requests, leader_election)
}

fn summary(requests: &[Request]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for mut a in requests.iter().filter_map(Request::attributes).flatten() {
        if a.resource == "events" {
            a.name = None; // each Event has its own generated name
        }
        *counts.entry(a.to_string()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(a, n)| format!("  {n:>4} × {a}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_allows_exactly_what_the_operator_does() {
    let objects = chart::render(json!({}));
    let mut rules = bound_rules(&objects);
    assert!(rules.len() >= 8, "the chart binds too few rules: {rules:?}");
    let (requests, leader_election) = exercise(&objects).await;
    eprintln!("what the operator asked for:\n{}", summary(&requests));
    assert!(
        requests.len() > 50,
        "the scenario made only {} requests",
        requests.len()
    );

    let denied = denied(&requests, &rules);
    assert!(
        denied.is_empty(),
        "the chart's RBAC denies requests the operator makes:\n{}",
        denied.join("\n")
    );
    if !leader_election {
        // Until the binary elects a leader (being added in parallel), its Lease rules go unused.
        eprintln!("NOTE: this binary has no --leader-elect; the Lease rules are not exercised");
        rules.retain(|r| !r.resources.iter().any(|res| res == "leases"));
    }
    let unused = unused(&requests, &rules);
    assert!(
        unused.is_empty(),
        "the chart grants what the operator never used (remove it, or exercise it in this test, or list it in UNEXERCISED with the reason):\n{}",
        unused.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dedicated_dns_mode_the_chart_rbac_allows_exactly_what_the_operator_does_and_nothing_in_kube_system(
) {
    let objects = chart::render(json!({"dns": {"mode": "dedicated"}}));
    let mut rules = bound_rules(&objects);
    assert!(
        rules
            .iter()
            .all(|r| r.namespace.as_deref() != Some("kube-system")),
        "dedicated mode grants nothing in kube-system: {rules:?}"
    );
    let (requests, leader_election) = exercise(&objects).await;
    eprintln!("what the operator asked for:\n{}", summary(&requests));
    let in_kube_system: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path.contains("/namespaces/kube-system/"))
        .collect();
    assert!(
        in_kube_system.is_empty(),
        "requests in kube-system: {in_kube_system:?}"
    );
    let denied = denied(&requests, &rules);
    assert!(denied.is_empty(), "denied:\n{}", denied.join("\n"));
    if !leader_election {
        rules.retain(|r| !r.resources.iter().any(|res| res == "leases"));
    }
    let unused = unused(&requests, &rules);
    assert!(unused.is_empty(), "unused:\n{}", unused.join("\n"));

    // The dedicated CoreDNS's own identity reads what its kubernetes plugin watches, nothing else.
    let reader: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" && binds_coredns(o))
        .collect();
    assert_eq!(reader.len(), 1);
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "ClusterRole" && o["metadata"]["name"] == reader[0]["roleRef"]["name"]
        })
        .unwrap();
    let mut granted: Vec<String> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let verbs = strings(&r["verbs"]).join(",");
            strings(&r["resources"])
                .into_iter()
                .map(move |res| format!("{res}:{verbs}"))
        })
        .collect();
    granted.sort();
    assert_eq!(
        granted,
        [
            "endpointslices:list,watch",
            "namespaces:list,watch",
            "services:list,watch"
        ]
    );
}

/// The whole end-to-end suite's requests (recorded with APPSERVICELINK_RECORD_REQUESTS) are allowed
/// too. `.ci/run` runs it after the suite.
#[test]
#[ignore = "needs APPSERVICELINK_E2E_REQUEST_LOG from an e2e run with APPSERVICELINK_RECORD_REQUESTS; .ci/run runs it"]
fn every_e2e_request_is_allowed_by_the_chart() {
    let path = std::env::var("APPSERVICELINK_E2E_REQUEST_LOG")
        .expect("APPSERVICELINK_E2E_REQUEST_LOG names the file the e2e suite recorded");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let requests: Vec<Request> = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            Request {
                method: s("method"),
                path: s("path"),
                query: s("query"),
                verb: s("verb"),
                status: v["status"].as_u64().unwrap() as u16,
            }
        })
        .collect();
    assert!(
        requests.len() > 100,
        "{path} holds only {} requests; did the e2e suite run with APPSERVICELINK_RECORD_REQUESTS?",
        requests.len()
    );
    let rules = bound_rules(&chart::render(json!({})));
    let denied = denied(&requests, &rules);
    assert!(
        denied.is_empty(),
        "the chart's RBAC denies requests the operator made in the e2e suite:\n{}",
        denied.join("\n")
    );
    eprintln!(
        "{} e2e requests, all allowed; by kind:\n{}",
        requests.len(),
        summary(&requests)
    );
}

#[test]
fn request_attributes_follow_the_apiserver() {
    let req = |method: &str, path: &str, query: &str, verb: &str, status: u16| Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        verb: verb.into(),
        status,
    };
    let one = |r: Request| r.attributes().unwrap().remove(0).to_string();
    assert_eq!(
        one(req(
            "GET",
            "/api/v1/namespaces/kube-system/configmaps",
            "fieldSelector=metadata.name%3Dcoredns-custom&watch=true",
            "watch",
            200
        )),
        "watch configmaps in kube-system name coredns-custom"
    );
    assert_eq!(
        one(req("GET", "/api/v1/namespaces", "", "list", 200)),
        "list namespaces in (cluster) name (any)"
    );
    assert_eq!(
        one(req(
            "PATCH",
            "/apis/appservicelink.io/v1alpha1/appservicelinks/web/status",
            "",
            "patch",
            200
        )),
        "patch appservicelink.io/appservicelinks/status in (cluster) name web"
    );
    let create = req(
        "PATCH",
        "/api/v1/namespaces/kube-system/services/appservicelink-dns",
        "fieldManager=x",
        "patch",
        201,
    )
    .attributes()
    .unwrap();
    assert_eq!(create.len(), 2, "an apply that creates is also a create");
    assert_eq!(
        create[1].to_string(),
        "create services in kube-system name appservicelink-dns"
    );
    assert!(req("GET", "/apis/apps/v1", "", "get", 200)
        .attributes()
        .is_none());
    assert!(req("GET", "/version", "", "get", 200)
        .attributes()
        .is_none());
}
