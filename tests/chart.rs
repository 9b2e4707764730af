//! The Helm chart, rendered with a real Helm engine (see tests/support/chart.rs): what a platform
//! team relies on when it installs the operator. The RBAC rules are checked in tests/rbac.rs.

#[path = "support/chart.rs"]
mod chart;

use std::collections::BTreeSet;
use std::process::Command;

use chart::{all, args, container, env, notes, one, render, render_error};
use serde_json::{json, Value};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const TENANT_ID: &str = "66666666-7777-8888-9999-000000000000";

fn pod_spec(objects: &[Value]) -> Value {
    one(objects, "Deployment")["spec"]["template"]["spec"].clone()
}

fn pod_labels(objects: &[Value]) -> Value {
    one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].clone()
}

fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v)
}

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_string))
}

#[test]
fn the_chart_ships_the_crd_byte_for_byte() {
    let top = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/appservicelink.io_appservicelinks.yaml"
    ))
    .unwrap();
    let in_chart = std::fs::read(format!(
        "{}/crds/appservicelink.io_appservicelinks.yaml",
        chart::CHART_DIR
    ))
    .expect("the chart has crds/appservicelink.io_appservicelinks.yaml");
    assert!(
        top == in_chart,
        "charts/appservicelink/crds/ differs from crds/; copy it: cp crds/appservicelink.io_appservicelinks.yaml charts/appservicelink/crds/"
    );
    let files: Vec<_> = std::fs::read_dir(format!("{}/crds", chart::CHART_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "only the one CRD in the chart: {files:?}");
}

#[test]
fn by_default_two_replicas_elect_a_leader_spread_out_and_survive_a_drain() {
    let objects = render(json!({}));
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["namespace"], chart::NAMESPACE);
    let labels = pod_labels(&objects);
    assert!(selector_matches(
        &deployment["spec"]["selector"]["matchLabels"],
        &labels
    ));

    let args = args(&objects);
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert_eq!(
        arg_value(&args, "--leader-election-lease-name").as_deref(),
        Some("appservicelink-leader")
    );
    assert_eq!(
        arg_value(&args, "--leader-election-namespace").as_deref(),
        Some("$(POD_NAMESPACE)")
    );
    assert_eq!(
        arg_value(&args, "--leader-election-lease-seconds").as_deref(),
        Some("15")
    );
    let c = container(&objects);
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env(&c, name).unwrap_or_else(|| panic!("{name} is set"));
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field, "{name}");
    }

    let pdb = one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selector_matches(
        &pdb["spec"]["selector"]["matchLabels"],
        &labels
    ));

    let spread = pod_spec(&objects)["topologySpreadConstraints"].clone();
    let spread = spread.as_array().expect("topologySpreadConstraints");
    let keys: BTreeSet<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
    );
    for c in spread {
        assert!(selector_matches(
            &c["labelSelector"]["matchLabels"],
            &labels
        ));
        assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway");
        assert_eq!(c["maxSkew"], 1);
    }
}

#[test]
fn one_replica_without_leader_election_renders_no_lease_flags_or_rules() {
    let objects = render(json!({"replicaCount": 1, "leaderElection": {"enabled": false}}));
    assert_eq!(one(&objects, "Deployment")["spec"]["replicas"], 1);
    let args = args(&objects);
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect")),
        "{args:?}"
    );
    let roles = serde_json::to_string(&all(&objects, "Role")).unwrap();
    assert!(!roles.contains("leases"), "no Lease rules: {roles}");
}

#[test]
fn the_pod_meets_the_restricted_pod_security_standard() {
    let objects = render(json!({}));
    let pod = pod_spec(&objects);
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{psc}");
    assert!(psc["runAsGroup"].as_u64().is_some_and(|g| g > 0), "{psc}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");

    let c = container(&objects);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert!(sc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{sc}");
    assert!(sc["runAsGroup"].as_u64().is_some_and(|g| g > 0), "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc["privileged"].is_null() || sc["privileged"] == false);
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[field].is_null() || pod[field] == false, "{field}");
    }
}

#[test]
fn only_the_operator_pod_mounts_the_service_account_token_and_nothing_else() {
    let objects = render(json!({}));
    let sa = one(&objects, "ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let pod = pod_spec(&objects);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert!(pod["volumes"].is_null(), "no volumes: {}", pod["volumes"]);
    assert!(container(&objects)["volumeMounts"].is_null());
    assert_eq!(pod["enableServiceLinks"], false);
}

#[test]
fn probes_and_the_http_port_agree_with_the_operator_flag() {
    for port in [8080, 9090] {
        let objects = render(json!({"httpPort": port}));
        let c = container(&objects);
        let ports = c["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0]["name"], "http");
        assert_eq!(ports[0]["containerPort"], port);
        assert_eq!(
            arg_value(&args(&objects), "--http-port"),
            Some(port.to_string())
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
            assert!(c[probe]["periodSeconds"].as_u64().is_some(), "{probe}");
        }
    }
}

#[test]
fn the_container_has_requests_and_limits() {
    let c = container(&render(json!({})));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}: {}",
                c["resources"]
            );
        }
    }
}

#[test]
fn workload_identity_annotates_the_service_account_and_labels_the_pod() {
    let objects = render(json!({"azure": {"credential": "workload-identity",
        "workloadIdentity": {"clientId": CLIENT_ID, "tenantId": TENANT_ID}}}));
    let sa = one(&objects, "ServiceAccount");
    let annotations = &sa["metadata"]["annotations"];
    assert_eq!(annotations["azure.workload.identity/client-id"], CLIENT_ID);
    assert_eq!(annotations["azure.workload.identity/tenant-id"], TENANT_ID);
    assert_eq!(pod_labels(&objects)["azure.workload.identity/use"], "true");
    assert_eq!(
        arg_value(&args(&objects), "--azure-credential").as_deref(),
        Some("workload-identity")
    );
    // The webhook injects AZURE_CLIENT_ID and friends; the chart sets none of them itself.
    let c = container(&objects);
    for name in ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"] {
        assert!(env(&c, name).is_none(), "{name}");
    }

    // The tenant annotation is optional.
    let objects = render(json!({"azure": {"workloadIdentity": {"clientId": CLIENT_ID}}}));
    let annotations = &one(&objects, "ServiceAccount")["metadata"]["annotations"];
    assert_eq!(annotations["azure.workload.identity/client-id"], CLIENT_ID);
    assert!(annotations["azure.workload.identity/tenant-id"].is_null());
}

#[test]
fn a_missing_workload_identity_client_id_is_pointed_out_after_install() {
    let text = notes(json!({}));
    assert!(
        text.contains("WARNING") && text.contains("azure.workloadIdentity.clientId"),
        "{text}"
    );
    let text = notes(json!({"azure": {"workloadIdentity": {"clientId": CLIENT_ID}}}));
    assert!(!text.contains("WARNING"), "{text}");
}

#[test]
fn a_client_secret_comes_from_an_existing_secret_through_the_pod_environment() {
    let objects = render(
        json!({"azure": {"credential": "client-secret", "clientSecret": {
        "existingSecret": "asl-sp", "key": "password", "clientId": CLIENT_ID, "tenantId": TENANT_ID}}}),
    );
    let c = container(&objects);
    let secret = env(&c, "AZURE_CLIENT_SECRET").expect("AZURE_CLIENT_SECRET");
    assert!(secret["value"].is_null(), "never a literal secret");
    assert_eq!(secret["valueFrom"]["secretKeyRef"]["name"], "asl-sp");
    assert_eq!(secret["valueFrom"]["secretKeyRef"]["key"], "password");
    assert_eq!(env(&c, "AZURE_CLIENT_ID").unwrap()["value"], CLIENT_ID);
    assert_eq!(env(&c, "AZURE_TENANT_ID").unwrap()["value"], TENANT_ID);
    assert_eq!(
        arg_value(&args(&objects), "--azure-credential").as_deref(),
        Some("client-secret")
    );
    assert!(pod_labels(&objects)["azure.workload.identity/use"].is_null());
    assert!(one(&objects, "ServiceAccount")["metadata"]["annotations"].is_null());

    let missing = render_error(json!({"azure": {"credential": "client-secret"}}));
    assert!(
        missing.contains("azure.clientSecret.existingSecret"),
        "{missing}"
    );
    // There is no place for the secret itself.
    let refused = render_error(json!({"azure": {"clientSecret": {"value": "hunter2"}}}));
    assert!(
        refused.contains("additional properties 'value'"),
        "{refused}"
    );
}

#[test]
fn a_user_assigned_managed_identity_is_selected_by_client_id() {
    let objects = render(json!({"azure": {"credential": "managed-identity",
        "managedIdentity": {"clientId": CLIENT_ID}}}));
    let c = container(&objects);
    assert_eq!(env(&c, "AZURE_CLIENT_ID").unwrap()["value"], CLIENT_ID);
    assert!(env(&c, "AZURE_CLIENT_SECRET").is_none());
    assert_eq!(
        arg_value(&args(&objects), "--azure-credential").as_deref(),
        Some("managed-identity")
    );
    assert!(pod_labels(&objects)["azure.workload.identity/use"].is_null());
    // The system-assigned identity needs no id at all.
    let objects = render(json!({"azure": {"credential": "managed-identity"}}));
    assert!(env(&container(&objects), "AZURE_CLIENT_ID").is_none());
}

#[test]
fn no_values_combination_renders_a_secret_or_a_literal_credential() {
    let scenarios = [
        json!({}),
        json!({"azure": {"credential": "workload-identity", "workloadIdentity": {"clientId": CLIENT_ID}}}),
        json!({"azure": {"credential": "managed-identity", "managedIdentity": {"clientId": CLIENT_ID}}}),
        json!({"azure": {"credential": "client-secret", "clientSecret": {"existingSecret": "sp",
            "clientId": CLIENT_ID, "tenantId": TENANT_ID}}}),
        json!({"metricsService": {"enabled": true}, "serviceMonitor": {"enabled": true},
            "networkPolicy": {"enabled": true}, "dryRun": true}),
    ];
    for values in scenarios {
        let objects = render(values.clone());
        assert!(all(&objects, "Secret").is_empty(), "{values}");
        let c = container(&objects);
        for var in c["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            if ["SECRET", "PASSWORD", "TOKEN", "KEY"]
                .iter()
                .any(|w| name.contains(w))
            {
                assert!(var["value"].is_null(), "{name} is a literal in {values}");
            }
        }
    }
}

#[test]
fn every_controller_setting_reaches_its_flag() {
    let objects = render(json!({
        "controller": {"corednsDeployment": "coredns-custom-dns", "restartCoredns": false, "clusterDomain": "corp.internal", "checkNames": false, "resyncSeconds": 60, "kubeReadTimeoutSeconds": 600, "revertWindowSeconds": 120, "appServiceWriteWindowSeconds": 5},
        "logging": {"format": "text", "level": "info,appservicelink=debug"},
        "azure": {"armEndpoint": "https://management.chinacloudapi.cn",
                  "authorityHost": "https://login.chinacloudapi.cn/", "armTimeoutSeconds": 10,
                  "caBundle": {"configMapName": "corp-ca", "key": "bundle.pem"},
                  "credential": "auto"},
        "dryRun": true,
    }));
    let args = args(&objects);
    let expect = [
        ("--coredns-deployment", "coredns-custom-dns"),
        ("--restart-coredns", "false"),
        ("--cluster-domain", "corp.internal"),
        ("--check-names", "false"),
        ("--resync-seconds", "60"),
        ("--kube-read-timeout-seconds", "600"),
        ("--revert-window-seconds", "120"),
        ("--app-service-write-window-seconds", "5"),
        ("--log-format", "text"),
        ("--arm-endpoint", "https://management.chinacloudapi.cn"),
        ("--azure-authority-host", "https://login.chinacloudapi.cn/"),
        ("--arm-timeout-seconds", "10"),
        ("--azure-credential", "auto"),
        (
            "--azure-ca-bundle",
            "/etc/appservicelink/azure-ca/bundle.pem",
        ),
    ];
    for (flag, value) in expect {
        assert_eq!(arg_value(&args, flag).as_deref(), Some(value), "{flag}");
    }
    assert!(args.contains(&"--dry-run".to_string()), "{args:?}");
    let c = container(&objects);
    assert_eq!(
        env(&c, "RUST_LOG").unwrap()["value"],
        "info,appservicelink=debug"
    );
    // The CA bundle is mounted read-only where the flag points.
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/etc/appservicelink/azure-ca");
    assert_eq!(mount["readOnly"], true);
    let volume = &pod_spec(&objects)["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(volume["configMap"]["name"], "corp-ca");
    // The RBAC follows the CoreDNS Deployment's name.
    let roles = serde_json::to_string(&all(&objects, "Role")).unwrap();
    assert!(roles.contains("\"coredns-custom-dns\""), "{roles}");

    let defaults = self::args(&render(json!({})));
    assert!(!defaults.contains(&"--dry-run".to_string()));
    assert!(arg_value(&defaults, "--azure-ca-bundle").is_none());
    assert!(arg_value(&defaults, "--azure-authority-host").is_none());
    assert_eq!(
        arg_value(&defaults, "--dns-mode").as_deref(),
        Some("cluster")
    );
    assert!(arg_value(&defaults, "--coredns-image").is_none());

    let dedicated = self::args(&render(json!({
        "dns": {"mode": "dedicated", "dedicated": {"image": "mcr.microsoft.com/oss/kubernetes/coredns:v1.12.1"}},
    })));
    for (flag, value) in [
        ("--dns-mode", "dedicated"),
        ("--dedicated-dns-namespace", "$(POD_NAMESPACE)"),
        (
            "--coredns-image",
            "mcr.microsoft.com/oss/kubernetes/coredns:v1.12.1",
        ),
    ] {
        assert_eq!(
            arg_value(&dedicated, flag).as_deref(),
            Some(value),
            "{flag}"
        );
    }
}

/// Every `--flag` the chart can pass, and every APPSERVICELINK_* variable it sets, is one the
/// binary's `run` accepts.
#[test]
fn the_binary_accepts_every_flag_the_chart_passes() {
    let help = Command::new(env!("CARGO_BIN_EXE_appservicelink"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let known: BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_string()
        })
        .collect();
    let objects = render(
        json!({"azure": {"authorityHost": "https://login.example.test/",
        "caBundle": {"configMapName": "ca"}}, "dryRun": true}),
    );
    for arg in args(&objects).iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            known.contains(flag),
            "the chart passes {flag}, which `appservicelink run` does not accept:\n{help}"
        );
    }
}

#[test]
fn typos_and_wrong_types_in_values_fail_at_install() {
    for (values, expected) in [
        (
            json!({"replicaCont": 3}),
            "additional properties 'replicaCont'",
        ),
        (
            json!({"controller": {"resyncSecond": 60}}),
            "additional properties 'resyncSecond'",
        ),
        (
            json!({"azure": {"workloadIdentity": {"clientID": CLIENT_ID}}}),
            "additional properties 'clientID'",
        ),
        (json!({"replicaCount": "2"}), "/replicaCount"),
        (
            json!({"azure": {"credential": "password"}}),
            "/azure/credential",
        ),
        (json!({"logging": {"format": "yaml"}}), "/logging/format"),
        (
            json!({"azure": {"workloadIdentity": {"clientId": "not-a-guid"}}}),
            "/azure/workloadIdentity/clientId",
        ),
        (
            json!({"azure": {"armEndpoint": "http://management.azure.com"}}),
            "/azure/armEndpoint",
        ),
    ] {
        let error = render_error(values.clone());
        assert!(error.contains(expected), "{values}: {error}");
    }
}

#[test]
fn monitoring_and_network_policy_are_off_by_default() {
    let objects = render(json!({}));
    for kind in ["ServiceMonitor", "NetworkPolicy", "Service"] {
        assert!(all(&objects, kind).is_empty(), "{kind}");
    }
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let objects = render(json!({"metricsService": {"enabled": true},
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}}));
    let service = one(&objects, "Service");
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert!(selector_matches(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([chart::NAMESPACE])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert!(selector_matches(
        &service["spec"]["selector"],
        &pod_labels(&objects)
    ));

    let error = render_error(json!({"serviceMonitor": {"enabled": true}}));
    assert!(error.contains("metricsService.enabled"), "{error}");
}

#[test]
fn the_network_policy_allows_only_dns_the_api_server_azure_and_the_metrics_port() {
    let objects = render(json!({"networkPolicy": {"enabled": true,
        "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [443]},
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}}));
    let policy = one(&objects, "NetworkPolicy");
    let spec = &policy["spec"];
    assert!(selector_matches(
        &spec["podSelector"]["matchLabels"],
        &pod_labels(&objects)
    ));
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));

    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    let egress = spec["egress"].as_array().unwrap();
    let mut ports = BTreeSet::new();
    for rule in egress {
        assert!(
            rule["ports"].as_array().is_some_and(|p| !p.is_empty()),
            "every egress rule names its ports: {rule}"
        );
        for p in rule["ports"].as_array().unwrap() {
            ports.insert((
                p["port"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        ports,
        BTreeSet::from([
            (53, "UDP".to_string()),
            (53, "TCP".to_string()),
            (443, "TCP".to_string())
        ])
    );
    let dns = &egress[0]["to"][0];
    assert_eq!(
        dns["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "kube-system"
    );
    assert_eq!(dns["podSelector"]["matchLabels"]["k8s-app"], "kube-dns");
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
}

#[test]
fn the_notes_say_how_to_check_the_operator_works() {
    let text = notes(json!({}));
    for needle in [
        "get pods",
        "logs deployment/asl-appservicelink",
        "kubectl get asl",
        "/readyz",
        "get lease appservicelink-leader",
    ] {
        assert!(text.contains(needle), "NOTES.txt lacks {needle:?}:\n{text}");
    }
    assert!(notes(json!({"dryRun": true})).contains("dryRun is on"));
}

/// Every leaf of values.yaml is documented in the chart README's table.
#[test]
fn the_readme_documents_every_value() {
    let values: Value = serde_norway::from_str(
        &std::fs::read_to_string(format!("{}/values.yaml", chart::CHART_DIR)).unwrap(),
    )
    .unwrap();
    let readme = std::fs::read_to_string(format!("{}/README.md", chart::CHART_DIR)).unwrap();
    let mut missing = Vec::new();
    let mut stack = vec![(String::new(), values)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::Object(map) if !map.is_empty() && !is_free_form(&path) => {
                for (k, v) in map {
                    let child = if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((child, v));
                }
            }
            _ => {
                if !readme.contains(&format!("`{path}`")) {
                    missing.push(path);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "values missing from charts/appservicelink/README.md: {missing:?}"
    );
}

/// Values that are Kubernetes objects passed through as they are, documented as a whole.
fn is_free_form(path: &str) -> bool {
    [
        "resources",
        "podSecurityContext",
        "securityContext",
        "networkPolicy.dns.podLabels",
    ]
    .contains(&path)
}
