use super::*;

fn values(pairs: &[(&str, Option<&str>)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

#[test]
fn app_settings_mode_uses_the_right_setting_names() {
    let wanted = desired(
        AppServiceDnsMode::AppSettings,
        "10.240.0.53",
        Some("168.63.129.16"),
    );
    assert_eq!(
        wanted,
        values(&[
            ("WEBSITE_DNS_SERVER", Some("10.240.0.53")),
            ("WEBSITE_DNS_ALT_SERVER", Some("168.63.129.16"))
        ])
    );
    assert!(
        !desired(AppServiceDnsMode::AppSettings, "10.240.0.53", None)
            .contains_key("WEBSITE_DNS_ALT_SERVER")
    );
}

#[test]
fn only_differing_values_are_written() {
    let wanted = desired(AppServiceDnsMode::AppSettings, "10.240.0.53", None);
    assert!(changes(
        &values(&[("WEBSITE_DNS_SERVER", Some("10.240.0.53"))]),
        &wanted
    )
    .is_empty());
    assert_eq!(
        changes(
            &values(&[("WEBSITE_DNS_SERVER", Some("10.0.0.10"))]),
            &wanted
        ),
        wanted
    );
    assert_eq!(changes(&values(&[]), &wanted), wanted);
}

#[test]
fn the_merge_keeps_every_other_setting_exactly() {
    let settings: BTreeMap<String, String> = [
        ("DB", "Server=x;Password=\"p ä\""),
        ("WEBSITE_DNS_SERVER", "10.0.0.10"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let merged = merged_settings(
        &settings,
        &values(&[
            ("WEBSITE_DNS_SERVER", Some("10.240.0.53")),
            ("WEBSITE_DNS_ALT_SERVER", None),
        ]),
    );
    assert_eq!(merged["DB"], settings["DB"]);
    assert_eq!(merged["EMPTY"], "");
    assert_eq!(merged["WEBSITE_DNS_SERVER"], "10.240.0.53");
    assert_eq!(merged.len(), 3);
}

#[test]
fn previous_values_are_recorded_once_and_restored() {
    let mut previous = BTreeMap::new();
    let current = values(&[
        ("WEBSITE_DNS_SERVER", Some("10.0.0.10")),
        ("WEBSITE_DNS_ALT_SERVER", None),
    ]);
    let changing = desired(
        AppServiceDnsMode::AppSettings,
        "10.240.0.53",
        Some("168.63.129.16"),
    );
    assert!(record_previous(&mut previous, &current, &changing));
    // A later write (a new IP) does not overwrite the original record.
    let later = values(&[("WEBSITE_DNS_SERVER", Some("10.240.0.53"))]);
    assert!(!record_previous(
        &mut previous,
        &later,
        &desired(AppServiceDnsMode::AppSettings, "10.240.0.99", None)
    ));
    assert_eq!(
        restoring(AppServiceDnsMode::AppSettings, &previous),
        values(&[
            ("WEBSITE_DNS_SERVER", Some("10.0.0.10")),
            ("WEBSITE_DNS_ALT_SERVER", None)
        ])
    );
}

#[test]
fn only_the_operators_own_settings_are_restored_from_a_record() {
    let previous: BTreeMap<String, String> = [
        ("WEBSITE_DNS_SERVER", ""),
        ("WEBSITE_RUN_FROM_PACKAGE", "https://evil.example/app.zip"),
        ("dnsConfiguration.dnsAltServer", "168.63.129.16"),
        ("dnsConfiguration.dnsRetryAttemptCount", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        restoring(AppServiceDnsMode::AppSettings, &previous),
        values(&[("WEBSITE_DNS_SERVER", None)])
    );
    assert_eq!(
        restoring(AppServiceDnsMode::SiteDnsConfiguration, &previous),
        values(&[(SITE_DNS_ALT_SERVER, Some("168.63.129.16"))])
    );
    let foreign_only = BTreeMap::from([("dnsConfiguration.other".to_string(), "x".to_string())]);
    assert_eq!(mode_of_keys(&foreign_only), AppServiceDnsMode::AppSettings);
    for mode in [
        AppServiceDnsMode::AppSettings,
        AppServiceDnsMode::SiteDnsConfiguration,
    ] {
        assert!(restoring(mode, &foreign_only).is_empty());
    }
}

#[test]
fn site_dns_configuration_patches_only_the_changed_fields() {
    let fields = dns_configuration_patch(&desired(
        AppServiceDnsMode::SiteDnsConfiguration,
        "10.240.0.53",
        None,
    ));
    assert_eq!(
        Value::Object(fields),
        json!({"dnsServers": ["10.240.0.53"]})
    );
    let restore = dns_configuration_patch(&values(&[
        (SITE_DNS_SERVERS, None),
        (SITE_DNS_ALT_SERVER, None),
    ]));
    assert_eq!(
        Value::Object(restore),
        json!({"dnsServers": [], "dnsAltServer": null})
    );
}

#[test]
fn resource_ids_round_trip() {
    for slot in [None, Some("staging".to_string())] {
        let site = SiteRef {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            name: "web".into(),
            slot,
        };
        assert_eq!(site_of(&site.resource_id()), Some(site));
    }
    assert_eq!(site_of("/subscriptions/s/resourceGroups/rg"), None);
}

#[test]
fn one_site_spelled_two_ways_is_one_target() {
    let target = |rg: &str, name: &str, slot: Option<&str>| AppServiceTarget {
        subscription_id: "6f1c2b3a-0000-4000-8000-00000000000A".into(),
        resource_group: rg.into(),
        name: name.into(),
        slot: slot.map(str::to_string),
    };
    let targets = [
        target("RG-Web", "Contoso-Web", None),
        target("rg-web", "contoso-web", None),
        target("rg-web", "contoso-web", Some("Staging")),
        target("RG-WEB", "CONTOSO-WEB", Some("staging")),
        target("rg-web", "contoso-api", None),
    ];
    let kept: Vec<&AppServiceTarget> = dedup(&targets);
    assert_eq!(kept, vec![&targets[0], &targets[2], &targets[4]]);
    let id = |t: &AppServiceTarget| site_ref(t).resource_id();
    assert!(same_site(&id(&targets[0]), &id(&targets[1])));
    assert!(!same_site(&id(&targets[0]), &id(&targets[2])));
    let mut lowered = targets[3].clone();
    lowered.subscription_id = lowered.subscription_id.to_lowercase();
    assert_eq!(site_key(&id(&targets[3])), site_key(&id(&lowered)));
}

#[test]
fn a_site_dns_configuration_is_reported_as_overriding_the_app_setting() {
    let mut entry = AppServiceStatus {
        resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/web".into(),
        in_sync: true,
        ..Default::default()
    };
    let unset = SiteDns {
        dns_servers: vec![],
        dns_alt_server: Some("168.63.129.16".into()),
    };
    assert!(!overridden_by_site(&mut entry, &unset));
    assert!(entry.in_sync && entry.message.is_none());
    let set = SiteDns {
        dns_servers: vec!["10.9.9.9".into(), "10.9.9.10".into()],
        dns_alt_server: None,
    };
    assert!(overridden_by_site(&mut entry, &set));
    assert!(!entry.in_sync);
    assert_eq!(entry.dns_server.as_deref(), Some("10.9.9.9,10.9.9.10"));
    let message = entry.message.unwrap();
    assert!(
        message.contains("dnsConfiguration.dnsServers (10.9.9.9,10.9.9.10)")
            && message.contains("SiteDnsConfiguration"),
        "{message}"
    );
}
