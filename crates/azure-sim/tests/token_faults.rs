//! Token-endpoint faults and token lifetimes: an Entra ID outage (503s, 500s, slow answers), tokens
//! that live a short time, and tokens ARM stops accepting while the client still has them cached; with
//! azure_identity 1.0's ClientSecretCredential going through them as the operator's does.

mod common;

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::TokenCredential,
    http::{ClientOptions, Transport},
};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_sim::{
    AzureSim, AzureSimOptions, SiteId, TokenFault, TokenFaultKind, DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
};
use common::*;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn secret_form(sim: &AzureSim) -> String {
    form(&[
        ("client_id", DEFAULT_CLIENT_ID),
        ("client_secret", DEFAULT_CLIENT_SECRET),
        ("grant_type", "client_credentials"),
        ("scope", &format!("{}/.default", sim.arm_endpoint())),
    ])
}

fn credential(sim: &AzureSim) -> Arc<ClientSecretCredential> {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = sim.authority_host();
    let client_options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        ..Default::default()
    };
    ClientSecretCredential::new(
        sim.tenant_id(),
        DEFAULT_CLIENT_ID.to_owned(),
        DEFAULT_CLIENT_SECRET.to_owned().into(),
        Some(ClientSecretCredentialOptions { client_options }),
    )
    .unwrap()
}

fn scope(sim: &AzureSim) -> String {
    format!("{}/.default", sim.arm_endpoint())
}

fn statuses(sim: &AzureSim) -> Vec<u16> {
    sim.token_requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn an_outage_answers_in_aads_shape_until_it_is_cleared() {
    let sim = start().await;
    let http = http_client(&sim);
    sim.inject_token_fault(
        TokenFault::new(TokenFaultKind::Unavailable {
            retry_after_secs: Some(2),
        })
        .until_cleared(),
    );
    for _ in 0..3 {
        let rsp = post_token(&http, &sim.token_endpoint(), secret_form(&sim)).await;
        assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.body["error"], "temporarily_unavailable");
        assert_eq!(rsp.body["error_codes"][0], 90033);
        assert!(rsp.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90033: A transient error has occurred."));
        assert_eq!(rsp.headers["retry-after"], "2");
    }
    sim.clear_token_faults();
    sim.inject_token_fault(TokenFault::new(TokenFaultKind::ServerError));
    let rsp = post_token(&http, &sim.token_endpoint(), secret_form(&sim)).await;
    assert_eq!(rsp.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(rsp.body["error"], "server_error");
    assert_eq!(rsp.body["error_codes"][0], 50000);
    let rsp = post_token(&http, &sim.token_endpoint(), secret_form(&sim)).await;
    assert_eq!(rsp.status, StatusCode::OK, "the endpoint is back");
    assert_eq!(statuses(&sim), [503, 503, 503, 500, 200]);
    assert_eq!(
        sim.issued_tokens().len(),
        1,
        "a refused request issues nothing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_slow_endpoint_answers_late() {
    let sim = start().await;
    sim.inject_token_fault(TokenFault::new(TokenFaultKind::Delay(
        Duration::from_millis(300),
    )));
    let started = Instant::now();
    let rsp = post_token(&http_client(&sim), &sim.token_endpoint(), secret_form(&sim)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(rsp.status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn azure_identity_retries_a_short_outage_itself() {
    let sim = start().await;
    sim.inject_token_fault(TokenFault::new(TokenFaultKind::ServerError).times(2));
    let token = credential(&sim)
        .get_token(&[&scope(&sim)], None)
        .await
        .expect("the credential's pipeline retries 5xx");
    assert_eq!(statuses(&sim), [500, 500, 200]);
    assert_eq!(sim.issued_tokens(), [token.token.secret().to_owned()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_token_lives_as_long_as_the_sim_says_and_arm_enforces_it() {
    install_crypto_provider();
    let sim = AzureSim::start(AzureSimOptions {
        token_lifetime: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let site = SiteId::new("sub", "rg", "app");
    sim.add_site(site.clone(), settings(&[("A", "1")]));
    let rsp = post_token(&http_client(&sim), &sim.token_endpoint(), secret_form(&sim)).await;
    assert_eq!(rsp.body["expires_in"], 1);
    assert_eq!(rsp.body["ext_expires_in"], 1);
    let arm = Arm::new(&sim).await;
    assert_eq!(arm.list_settings(&site).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rsp = arm.list_settings(&site).await;
    assert_eq!(rsp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(arm_code(&rsp.body), "ExpiredAuthenticationToken");

    sim.set_token_lifetime(Duration::from_secs(600));
    let rsp = post_token(&http_client(&sim), &sim.token_endpoint(), secret_form(&sim)).await;
    assert_eq!(rsp.body["expires_in"], 600);
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_are_refused_while_new_ones_work() {
    let sim = start().await;
    let site = SiteId::new("sub", "rg", "app");
    sim.add_site(site.clone(), settings(&[("A", "1")]));
    let cached = Arm::new(&sim).await;
    assert_eq!(cached.list_settings(&site).await.status, StatusCode::OK);
    sim.expire_tokens();
    let rsp = cached.list_settings(&site).await;
    assert_eq!(rsp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(arm_code(&rsp.body), "ExpiredAuthenticationToken");
    let challenge = rsp.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let fresh = Arm::new(&sim).await;
    assert_eq!(fresh.list_settings(&site).await.status, StatusCode::OK);
    sim.shutdown().await;
}

/// What the e2e fault suite relies on: azure_identity keeps a token until 5 minutes before it
/// expires, so a token that lives 5 minutes and 2 seconds is used for 2 seconds, then replaced; and
/// it does not notice a token ARM refused.
#[tokio::test]
async fn azure_identity_refreshes_five_minutes_before_expiry_and_not_on_a_refusal() {
    let sim = start().await;
    sim.set_token_lifetime(Duration::from_secs(302));
    let credential = credential(&sim);
    let first = credential.get_token(&[&scope(&sim)], None).await.unwrap();
    let again = credential.get_token(&[&scope(&sim)], None).await.unwrap();
    assert_eq!(first.token.secret(), again.token.secret(), "cached");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let renewed = credential.get_token(&[&scope(&sim)], None).await.unwrap();
    assert_ne!(first.token.secret(), renewed.token.secret(), "refreshed");
    assert_eq!(sim.token_requests().len(), 2);

    sim.set_token_lifetime(Duration::from_secs(3599));
    let long = {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        credential.get_token(&[&scope(&sim)], None).await.unwrap()
    };
    sim.expire_tokens();
    let still = credential.get_token(&[&scope(&sim)], None).await.unwrap();
    assert_eq!(
        long.token.secret(),
        still.token.secret(),
        "the cache hands out the token ARM now refuses"
    );
    sim.shutdown().await;
}
