use super::*;

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a numeric sample"))
}

#[test]
fn reconciles_are_counted_by_result_and_errors_by_reason() {
    let metrics = Metrics::new();
    metrics.reconciled(Duration::from_millis(20), None);
    metrics.reconciled(Duration::from_millis(30), None);
    metrics.reconciled(Duration::from_secs(3), Some("KubeApi"));
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_reconciles_total{result="success"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"appservicelink_reconciles_total{result="error"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_reconcile_errors_total{reason="KubeApi"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains("# TYPE appservicelink_reconcile_duration_seconds histogram"));
    assert_eq!(
        sample(&text, "appservicelink_reconcile_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_reconcile_duration_seconds_bucket{le="0.025"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_reconcile_duration_seconds_bucket{le="5.0"}"#
        ),
        Some(3.0)
    );
}

#[test]
fn arm_requests_are_counted_by_operation_and_status() {
    let metrics = Metrics::new();
    metrics.arm_request(Operation::ListAppSettings, 200);
    metrics.arm_request(Operation::ListAppSettings, 200);
    metrics.arm_request(Operation::UpdateAppSettings, 429);
    metrics.arm_request(Operation::GetSite, 0);
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_arm_requests_total{operation="list_app_settings",code="200"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_arm_requests_total{operation="update_app_settings",code="429"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_arm_requests_total{operation="get_site",code="none"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn leadership_is_a_zero_or_one_gauge() {
    let metrics = Metrics::new();
    assert_eq!(
        sample(&metrics.encode(), "appservicelink_leader"),
        Some(0.0)
    );
    metrics.set_leader(true);
    assert_eq!(
        sample(&metrics.encode(), "appservicelink_leader"),
        Some(1.0)
    );
    metrics.set_leader(false);
    assert_eq!(
        sample(&metrics.encode(), "appservicelink_leader"),
        Some(0.0)
    );
}

#[test]
fn app_services_report_their_age_since_in_sync_until_forgotten() {
    let metrics = Metrics::new();
    let id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/web";
    let series =
        format!(r#"appservicelink_app_service_seconds_since_in_sync{{resource_id="{id}"}}"#);
    assert!(metrics
        .encode()
        .contains("# TYPE appservicelink_app_service_seconds_since_in_sync gauge"));
    assert_eq!(sample(&metrics.encode(), &series), None);

    metrics.app_service_in_sync(id);
    std::thread::sleep(Duration::from_millis(20));
    let age = sample(&metrics.encode(), &series).expect("reported");
    assert!((0.02..60.0).contains(&age), "{age}");

    metrics.forget_app_service(id);
    assert_eq!(sample(&metrics.encode(), &series), None);
}

#[test]
fn the_exposition_is_complete_openmetrics() {
    let text = Metrics::new().encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("appservicelink_"), "{line}");
    }
}

#[test]
fn waits_for_the_arm_rate_limit_add_up_by_kind() {
    let metrics = Metrics::new();
    metrics.arm_rate_limit_wait("write", Duration::from_millis(1500));
    metrics.arm_rate_limit_wait("write", Duration::from_millis(500));
    metrics.arm_rate_limit_wait("read", Duration::from_millis(250));
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_arm_rate_limit_wait_seconds_total{kind="write"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"appservicelink_arm_rate_limit_wait_seconds_total{kind="read"}"#
        ),
        Some(0.25)
    );
}
