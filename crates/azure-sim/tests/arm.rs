//! ARM behaviour over real HTTPS: app settings, slots, site dnsConfiguration, errors, faults and the
//! request log.

mod common;

use azure_sim::{Fault, FaultKind, SiteId};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn site() -> SiteId {
    SiteId::new(
        "0b1f6471-1bf0-4dda-aec3-111122223333",
        "rg-web",
        "contoso-web",
    )
}

/// Values a portal user might plausibly have typed; all must survive a read-merge-write untouched.
fn foreign() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "APPINSIGHTS_CONNECTION_STRING",
            "InstrumentationKey=0000;IngestionEndpoint=https://x/;",
        ),
        ("EMPTY", ""),
        ("SPACES", "  leading and trailing  "),
        ("UNICODE", "grüße 日本 🚀"),
        ("QUOTES_AND_ESCAPES", "a \"quoted\" \\ back\\slash\ttab"),
        ("MULTILINE", "line1\nline2\r\n"),
        ("JSONISH", "{\"k\": [1, 2]}"),
        ("lowercase_key", "Mixed=Case&x=%20"),
    ]
}

#[tokio::test]
async fn app_settings_round_trip_preserves_foreign_settings_byte_for_byte() {
    let sim = start().await;
    sim.add_site(site(), settings(&foreign()));
    let arm = Arm::new(&sim).await;

    let listed = arm.list_settings(&site()).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(
        listed.body["id"],
        format!("{}/config/appsettings", site().resource_id())
    );
    assert_eq!(listed.body["name"], "appsettings");
    assert_eq!(listed.body["type"], "Microsoft.Web/sites/config");
    assert_eq!(listed.body["location"], "West Europe");
    for (k, v) in foreign() {
        assert_eq!(listed.body["properties"][k], v, "{k}");
    }

    // Read, merge our keys, write back: exactly what the operator does.
    let mut props = listed.body["properties"].as_object().unwrap().clone();
    props.insert("WEBSITE_DNS_SERVER".into(), json!("10.240.0.53"));
    props.insert("WEBSITE_DNS_ALT_SERVER".into(), json!("168.63.129.16"));
    let put = arm
        .put_settings(&site(), json!({"kind": "app", "properties": props}))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.body["properties"]["WEBSITE_DNS_SERVER"], "10.240.0.53");

    let mut want = settings(&foreign());
    want.insert("WEBSITE_DNS_SERVER".into(), "10.240.0.53".into());
    want.insert("WEBSITE_DNS_ALT_SERVER".into(), "168.63.129.16".into());
    assert_eq!(sim.app_settings(&site()).unwrap(), want);

    let log = sim.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].method.as_str(), log[0].status, log[0].body.as_ref()),
        ("POST", 200, None)
    );
    assert_eq!(log[0].api_version.as_deref(), Some(API_VERSION));
    assert_eq!(
        log[0].path,
        format!("{}/config/appsettings/list", site().resource_id())
    );
    assert_eq!((log[1].method.as_str(), log[1].status), ("PUT", 200));
    assert_eq!(
        log[1].body.as_ref().unwrap()["properties"],
        Value::Object(props)
    );
    assert_eq!(
        log[1].client_id.as_deref(),
        Some(azure_sim::DEFAULT_CLIENT_ID)
    );
    assert_eq!(sim.writes(), vec![log[1].clone()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn put_replaces_the_whole_set_and_portal_edits_show_up() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("A", "1"), ("B", "2")]));
    let arm = Arm::new(&sim).await;

    let put = arm
        .put_settings(&site(), json!({"properties": {"C": "3"}}))
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.body["properties"], json!({"C": "3"}));
    assert_eq!(sim.app_settings(&site()).unwrap(), settings(&[("C", "3")]));

    // Drift made in the portal is what the next list returns; it is not an ARM request.
    sim.set_app_settings(&site(), settings(&[("C", "changed")]))
        .unwrap();
    let listed = arm.list_settings(&site()).await;
    assert_eq!(listed.body["properties"], json!({"C": "changed"}));
    assert_eq!(sim.requests().len(), 2);
    assert!(sim
        .set_app_settings(&SiteId::new("x", "y", "z"), settings(&[]))
        .is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_app_settings_bodies_are_rejected_without_writing() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("KEEP", "me")]));
    let arm = Arm::new(&sim).await;

    let non_string = arm
        .put_settings(&site(), json!({"properties": {"N": 1}}))
        .await;
    assert_eq!(non_string.status, StatusCode::BAD_REQUEST);
    assert_eq!(non_string.body["Code"], "BadRequest", "RP error shape");
    let no_props = arm.put_settings(&site(), json!({"kind": "app"})).await;
    assert_eq!(no_props.status, StatusCode::BAD_REQUEST);

    let path = format!(
        "{}/config/appsettings?api-version={API_VERSION}",
        site().resource_id()
    );
    let url = format!("{}{path}", sim.arm_endpoint());
    let not_json = arm
        .http
        .put(&url)
        .bearer_auth(&arm.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let text_plain = arm
        .http
        .put(&url)
        .bearer_auth(&arm.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(text_plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(
        sim.app_settings(&site()).unwrap(),
        settings(&[("KEEP", "me")])
    );
    let statuses: Vec<u16> = sim.writes().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![400, 400, 400, 415]);
    sim.shutdown().await;
}

#[tokio::test]
async fn slots_have_their_own_settings_and_site_resource() {
    let sim = start().await;
    let prod = site();
    let staging = prod.with_slot("staging");
    sim.add_site(prod.clone(), settings(&[("WHERE", "prod")]));
    sim.add_site(staging.clone(), settings(&[("WHERE", "staging")]));
    let arm = Arm::new(&sim).await;

    let listed = arm.list_settings(&staging).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["properties"], json!({"WHERE": "staging"}));
    assert_eq!(listed.body["type"], "Microsoft.Web/sites/slots/config");
    assert_eq!(
        listed.body["id"],
        format!("{}/slots/staging/config/appsettings", prod.resource_id())
    );

    let put = arm
        .put_settings(
            &staging,
            json!({"properties": {"WHERE": "staging", "X": "1"}}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        sim.app_settings(&prod).unwrap(),
        settings(&[("WHERE", "prod")])
    );
    assert_eq!(
        sim.app_settings(&staging).unwrap(),
        settings(&[("WHERE", "staging"), ("X", "1")])
    );

    let got = arm.get_site(&staging).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["type"], "Microsoft.Web/sites/slots");
    assert_eq!(got.body["name"], "contoso-web/staging");
    assert_eq!(
        got.body["properties"]["defaultHostName"],
        "contoso-web-staging.azurewebsites.net"
    );

    let patched = arm
        .patch_site(
            &staging,
            json!({"properties": {"dnsConfiguration": {"dnsServers": ["10.0.0.10"]}}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(
        sim.dns_configuration(&staging).unwrap(),
        json!({"dnsServers": ["10.0.0.10"]})
    );
    assert_eq!(sim.dns_configuration(&prod).unwrap(), json!({}));

    let missing = arm.list_settings(&prod.with_slot("nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(arm_code(&missing.body), "ResourceNotFound");
    assert!(
        arm_message(&missing.body)
            .starts_with("The Resource 'Microsoft.Web/sites/contoso-web/slots/nope' under resource group 'rg-web' was not found."),
        "{}",
        missing.text
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn site_get_and_patch_dns_configuration() {
    let sim = start().await;
    sim.add_site(site(), settings(&[]));
    let arm = Arm::new(&sim).await;

    let got = arm.get_site(&site()).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["id"], site().resource_id());
    assert_eq!(got.body["name"], "contoso-web");
    assert_eq!(got.body["type"], "Microsoft.Web/sites");
    assert_eq!(got.body["kind"], "app,linux");
    assert_eq!(got.body["properties"]["state"], "Running");
    assert_eq!(got.body["properties"]["dnsConfiguration"], json!({}));
    assert!(got.body["properties"]["siteConfig"].is_object());

    let patched = arm
        .patch_site(
            &site(),
            json!({"properties": {"dnsConfiguration": {
                "dnsServers": ["10.240.0.53", "10.240.0.54"],
                "dnsRetryAttemptCount": 3
            }}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(
        patched.body["properties"]["dnsConfiguration"],
        json!({"dnsServers": ["10.240.0.53", "10.240.0.54"], "dnsRetryAttemptCount": 3})
    );

    // A later patch merges; null removes a field.
    let patched = arm
        .patch_site(
            &site(),
            json!({"properties": {"dnsConfiguration": {"dnsAltServer": "168.63.129.16", "dnsRetryAttemptCount": null}}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(
        arm.get_site(&site()).await.body["properties"]["dnsConfiguration"],
        json!({"dnsServers": ["10.240.0.53", "10.240.0.54"], "dnsAltServer": "168.63.129.16"})
    );

    // More than five servers is refused and changes nothing.
    let too_many = arm
        .patch_site(
            &site(),
            json!({"properties": {"dnsConfiguration": {"dnsServers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]}}}),
        )
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert!(too_many.body["Message"]
        .as_str()
        .unwrap()
        .contains("dnsServers"));
    assert_eq!(
        sim.dns_configuration(&site()).unwrap()["dnsServers"],
        json!(["10.240.0.53", "10.240.0.54"])
    );

    // A portal edit is visible to the next GET.
    sim.set_dns_configuration(&site(), json!({"dnsServers": ["1.1.1.1"]}))
        .unwrap();
    assert_eq!(
        arm.get_site(&site()).await.body["properties"]["dnsConfiguration"],
        json!({"dnsServers": ["1.1.1.1"]})
    );
    let writes: Vec<(String, u16)> = sim
        .writes()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("PATCH".into(), 200),
            ("PATCH".into(), 200),
            ("PATCH".into(), 400)
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_scopes_and_case_insensitive_paths() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("A", "1")]));
    let arm = Arm::new(&sim).await;
    let sub = &site().subscription_id;

    let path = format!(
        "/SUBSCRIPTIONS/{}/resourcegroups/RG-WEB/PROVIDERS/microsoft.web/sites/Contoso-Web/config/appsettings/list?api-version={API_VERSION}",
        sub.to_uppercase()
    );
    let ok = arm.send(Method::POST, &path, None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(
        ok.body["id"],
        format!("{}/config/appsettings", site().resource_id()),
        "ids keep the casing the site was created with"
    );

    let no_site = arm.get_site(&SiteId::new(sub, "rg-web", "other")).await;
    assert_eq!(no_site.status, StatusCode::NOT_FOUND);
    assert_eq!(arm_code(&no_site.body), "ResourceNotFound");
    assert!(arm_message(&no_site.body).starts_with(
        "The Resource 'Microsoft.Web/sites/other' under resource group 'rg-web' was not found."
    ));

    let no_rg = arm
        .list_settings(&SiteId::new(sub, "rg-gone", "contoso-web"))
        .await;
    assert_eq!(no_rg.status, StatusCode::NOT_FOUND);
    assert_eq!(arm_code(&no_rg.body), "ResourceGroupNotFound");
    assert_eq!(
        arm_message(&no_rg.body),
        "Resource group 'rg-gone' could not be found."
    );

    let no_sub = arm
        .get_site(&SiteId::new("other-sub", "rg-web", "contoso-web"))
        .await;
    assert_eq!(no_sub.status, StatusCode::NOT_FOUND);
    assert_eq!(arm_code(&no_sub.body), "SubscriptionNotFound");

    let unknown = arm
        .send(
            Method::GET,
            &format!("/subscriptions/{sub}/resourceGroups/rg-web?api-version={API_VERSION}"),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let wrong_method = arm
        .send(
            Method::GET,
            &format!(
                "{}/config/appsettings?api-version={API_VERSION}",
                site().resource_id()
            ),
            None,
        )
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    sim.shutdown().await;
}

#[tokio::test]
async fn api_version_is_required_and_must_exist() {
    let sim = start().await;
    sim.add_site(site(), settings(&[]));
    let arm = Arm::new(&sim).await;
    let id = site().resource_id();

    let missing = arm.send(Method::GET, &id, None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(arm_code(&missing.body), "MissingApiVersionParameter");

    let unknown = arm
        .send(Method::GET, &format!("{id}?api-version=2099-01-01"), None)
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(arm_code(&unknown.body), "NoRegisteredProviderFound");

    let garbage = arm
        .send(Method::GET, &format!("{id}?api-version=latest"), None)
        .await;
    assert_eq!(arm_code(&garbage.body), "InvalidApiVersionParameter");

    for v in ["2024-04-01", "2024-11-01", "2025-05-01"] {
        let ok = arm
            .send(Method::GET, &format!("{id}?api-version={v}"), None)
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{v}");
    }
    let versions: Vec<Option<String>> = sim.requests().into_iter().map(|r| r.api_version).collect();
    assert_eq!(versions[0], None);
    assert_eq!(versions[1].as_deref(), Some("2099-01-01"));
    sim.shutdown().await;
}

#[tokio::test]
async fn every_arm_call_needs_a_token_issued_for_arm() {
    let sim = start().await;
    sim.add_site(site(), settings(&[]));
    let http = http_client(&sim);
    let url = format!(
        "{}{}?api-version={API_VERSION}",
        sim.arm_endpoint(),
        site().resource_id()
    );

    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer authorization_uri="),
        "{challenge}"
    );
    assert!(challenge.contains(sim.tenant_id()));
    let body: Value = serde_json::from_str(&anonymous.text().await.unwrap()).unwrap();
    assert_eq!(arm_code(&body), "AuthenticationFailed");

    let forged = http
        .get(&url)
        .bearer_auth("eyJhbGciOi.forged.token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_str(&forged.text().await.unwrap()).unwrap();
    assert_eq!(arm_code(&body), "InvalidAuthenticationToken");

    // A perfectly valid token for another resource (Microsoft Graph) is refused by ARM.
    let graph = post_token(
        &http,
        &sim.token_endpoint(),
        form(&[
            ("client_id", azure_sim::DEFAULT_CLIENT_ID),
            ("client_secret", azure_sim::DEFAULT_CLIENT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", "https://graph.microsoft.com/.default"),
        ]),
    )
    .await;
    assert_eq!(graph.status, StatusCode::OK);
    let graph_token = graph.body["access_token"].as_str().unwrap();
    let wrong_audience = http
        .get(&url)
        .bearer_auth(graph_token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_audience.status(), StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_str(&wrong_audience.text().await.unwrap()).unwrap();
    assert_eq!(arm_code(&body), "InvalidAuthenticationTokenAudience");

    // The trailing-slash audience form is accepted, as by ARM.
    let slash = post_token(
        &http,
        &sim.token_endpoint(),
        form(&[
            ("client_id", azure_sim::DEFAULT_CLIENT_ID),
            ("client_secret", azure_sim::DEFAULT_CLIENT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", &format!("{}//.default", sim.arm_endpoint())),
        ]),
    )
    .await;
    let ok = http
        .get(&url)
        .bearer_auth(slash.body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // ARM and the authority are different hosts: a scope built from the authority host is wrong.
    let authority_scope = format!("{}.default", sim.authority_host());
    let confused = token_for(&http, &sim, &authority_scope).await;
    let rsp = http.get(&url).bearer_auth(&confused).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);

    // Addressing ARM as 127.0.0.1 (also in the certificate) works with the matching scope.
    let by_ip = format!("https://127.0.0.1:{}", sim.arm_addr().port());
    let ip_token = token_for(&http, &sim, &format!("{by_ip}/.default")).await;
    let rsp = http
        .get(format!(
            "{by_ip}{}?api-version={API_VERSION}",
            site().resource_id()
        ))
        .bearer_auth(&ip_token)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);

    // Neither server answers the other's API.
    let token_on_arm = post_token(
        &http,
        &format!(
            "{}/{}/oauth2/v2.0/token",
            sim.arm_endpoint(),
            sim.tenant_id()
        ),
        form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(
        token_on_arm.status,
        StatusCode::UNAUTHORIZED,
        "ARM wants a bearer token"
    );
    let arm_on_login = http
        .get(format!(
            "{}{}",
            sim.authority_host(),
            &url[sim.arm_endpoint().len() + 1..]
        ))
        .bearer_auth(&ip_token)
        .send()
        .await
        .unwrap();
    assert_eq!(arm_on_login.status(), StatusCode::NOT_FOUND);

    let log = sim.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 401, 401, 200, 401, 200, 401]);
    assert_eq!(log[0].client_id, None);
    sim.shutdown().await;
}

async fn token_for(http: &reqwest::Client, sim: &azure_sim::AzureSim, scope: &str) -> String {
    let rsp = post_token(
        http,
        &sim.token_endpoint(),
        form(&[
            ("client_id", azure_sim::DEFAULT_CLIENT_ID),
            ("client_secret", azure_sim::DEFAULT_CLIENT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ]),
    )
    .await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
    rsp.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn throttling_fault_answers_429_with_retry_after() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("A", "1")]));
    let arm = Arm::new(&sim).await;
    sim.inject(
        Fault::new(
            "/config/appsettings",
            FaultKind::TooManyRequests {
                retry_after_secs: 7,
            },
        )
        .method("PUT")
        .times(2),
    );

    // Reads are not matched by a PUT fault.
    assert_eq!(arm.list_settings(&site()).await.status, StatusCode::OK);
    for _ in 0..2 {
        let throttled = arm
            .put_settings(&site(), json!({"properties": {"B": "2"}}))
            .await;
        assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers["retry-after"], "7");
        assert_eq!(arm_code(&throttled.body), "SubscriptionRequestsThrottled");
        assert!(arm_message(&throttled.body).contains("'7' seconds"));
    }
    assert_eq!(sim.app_settings(&site()).unwrap(), settings(&[("A", "1")]));
    let ok = arm
        .put_settings(&site(), json!({"properties": {"B": "2"}}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let statuses: Vec<u16> = sim.writes().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200]);
    sim.shutdown().await;
}

#[tokio::test]
async fn server_error_and_forbidden_faults() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("A", "1")]));
    let arm = Arm::new(&sim).await;

    sim.inject(Fault::new("appsettings/list", FaultKind::ServerError));
    let failed = arm.list_settings(&site()).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(arm_code(&failed.body), "InternalServerError");

    sim.inject(Fault::new("APPSETTINGS/LIST", FaultKind::Forbidden));
    let denied = arm.list_settings(&site()).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(arm_code(&denied.body), "AuthorizationFailed");
    let msg = arm_message(&denied.body);
    assert!(
        msg.starts_with(&format!(
            "The client '{}' with object id '",
            azure_sim::DEFAULT_CLIENT_ID
        )),
        "{msg}"
    );
    assert!(msg.contains(
        "does not have authorization to perform action 'Microsoft.Web/sites/config/list/Action' over scope '/subscriptions/"
    ));
    assert!(msg.contains(
        "or the scope is invalid. If access was recently granted, please refresh your credentials."
    ));

    sim.inject(Fault::new("/slots/", FaultKind::Forbidden).method("PATCH"));
    sim.add_site(site().with_slot("stg"), settings(&[]));
    let denied = arm
        .patch_site(&site().with_slot("stg"), json!({"properties": {}}))
        .await;
    assert!(arm_message(&denied.body).contains("'Microsoft.Web/sites/slots/write'"));

    assert_eq!(
        arm.list_settings(&site()).await.status,
        StatusCode::OK,
        "faults are used up"
    );
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 403, 403, 200]);
    sim.shutdown().await;
}

#[tokio::test]
async fn accepted_fault_applies_the_write_and_answers_202() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("A", "1")]));
    let arm = Arm::new(&sim).await;
    sim.inject(Fault::new("", FaultKind::Accepted).method("PUT"));

    let accepted = arm
        .put_settings(&site(), json!({"properties": {"A": "1", "B": "2"}}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert_eq!(accepted.text, "");
    assert_eq!(
        sim.app_settings(&site()).unwrap(),
        settings(&[("A", "1"), ("B", "2")])
    );
    assert_eq!(sim.writes()[0].status, 202);
    sim.shutdown().await;
}

#[tokio::test]
async fn delay_fault_still_answers() {
    let sim = start().await;
    sim.add_site(site(), settings(&[("A", "1")]));
    let arm = Arm::new(&sim).await;
    sim.inject(Fault::new("", FaultKind::Delay(Duration::from_millis(300))));

    // Only what happened is asserted, never how long it took.
    let delayed = arm.list_settings(&site()).await;
    assert_eq!(delayed.status, StatusCode::OK);
    assert_eq!(delayed.body["properties"], json!({"A": "1"}));
    assert_eq!(sim.requests().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_errors_look_like_aad() {
    let sim = start().await;
    let http = http_client(&sim);
    let scope = format!("{}/.default", sim.arm_endpoint());
    let secret_form = |client_id: &str, secret: &str, scope: &str| {
        form(&[
            ("client_id", client_id),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ])
    };

    let ok = post_token(
        &http,
        &sim.token_endpoint(),
        secret_form(
            azure_sim::DEFAULT_CLIENT_ID,
            azure_sim::DEFAULT_CLIENT_SECRET,
            &scope,
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3599);
    assert_eq!(ok.body["ext_expires_in"], 3599);
    let token = ok.body["access_token"].as_str().unwrap();
    assert!(token.starts_with(azure_sim::TOKEN_PREFIX));
    assert_eq!(sim.issued_tokens(), vec![token.to_owned()]);

    let wrong_secret = post_token(
        &http,
        &sim.token_endpoint(),
        secret_form(azure_sim::DEFAULT_CLIENT_ID, "nope", &scope),
    )
    .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.body["error"], "invalid_client");
    assert_eq!(wrong_secret.body["error_codes"], json!([7000215]));
    assert!(wrong_secret.body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215: "));

    let other_tenant = format!("{}other-tenant/oauth2/v2.0/token", sim.authority_host());
    let no_tenant = post_token(
        &http,
        &other_tenant,
        secret_form(
            azure_sim::DEFAULT_CLIENT_ID,
            azure_sim::DEFAULT_CLIENT_SECRET,
            &scope,
        ),
    )
    .await;
    assert_eq!(no_tenant.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_tenant.body["error_codes"], json!([90002]));

    let unknown_client = post_token(
        &http,
        &sim.token_endpoint(),
        secret_form("who", "x", &scope),
    )
    .await;
    assert_eq!(unknown_client.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_client.body["error"], "unauthorized_client");

    let bad_scope = post_token(
        &http,
        &sim.token_endpoint(),
        secret_form(
            azure_sim::DEFAULT_CLIENT_ID,
            azure_sim::DEFAULT_CLIENT_SECRET,
            "https://management.azure.com/user_impersonation",
        ),
    )
    .await;
    assert_eq!(bad_scope.body["error"], "invalid_scope");

    let malformed_assertion = post_token(
        &http,
        &sim.token_endpoint(),
        form(&[
            ("client_assertion", "not-a-jwt"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_id", azure_sim::DEFAULT_CLIENT_ID),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ]),
    )
    .await;
    assert_eq!(malformed_assertion.status, StatusCode::UNAUTHORIZED);
    assert_eq!(malformed_assertion.body["error"], "invalid_client");

    let no_credential = post_token(
        &http,
        &sim.token_endpoint(),
        form(&[
            ("client_id", azure_sim::DEFAULT_CLIENT_ID),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ]),
    )
    .await;
    assert_eq!(no_credential.status, StatusCode::UNAUTHORIZED);

    let get = http.get(sim.token_endpoint()).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::BAD_REQUEST);

    let log = sim.token_requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 401, 400, 400, 400, 401, 401, 400]);
    assert_eq!(log[0].credential, azure_sim::CredentialKind::Secret);
    assert_eq!(log[5].credential, azure_sim::CredentialKind::Assertion);
    assert_eq!(log[6].credential, azure_sim::CredentialKind::None);
    assert_eq!(log[0].scope.as_deref(), Some(scope.as_str()));
    assert_eq!(log[2].tenant, "other-tenant");
    // The log never holds secrets or assertions.
    let dump = serde_json::to_string(&log).unwrap();
    assert!(!dump.contains(azure_sim::DEFAULT_CLIENT_SECRET) && !dump.contains("not-a-jwt"));
    assert!(
        sim.requests().is_empty(),
        "token requests are not ARM requests"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start().await;
    let http = http_client(&sim);
    let endpoint = sim.token_endpoint();
    let clone = sim.clone();
    sim.shutdown().await;
    assert!(http.post(&endpoint).send().await.is_err());
    clone.shutdown().await; // idempotent
}
