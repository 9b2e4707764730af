//! The zero-code route an operator pod takes: the AKS workload identity webhook's environment
//! (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST) plus
//! SSL_CERT_FILE pointing at the test CA. azure_identity reads the authority host from the
//! environment when `ClientOptions::cloud` is `None`, and azure_core's default reqwest client
//! verifies with rustls-platform-verifier, which loads roots from SSL_CERT_FILE (instead of the
//! system store) when it is set.
//!
//! The environment is process-wide, so this file holds exactly one test (its own process).

mod common;

use azure_core::credentials::TokenCredential;
use azure_identity::{ClientSecretCredential, WorkloadIdentityCredential};
use azure_sim::{SiteId, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn environment_only_configuration_reaches_token_endpoint_and_arm() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sim.write_ca(&ca).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcCJ9.c2ln").unwrap();
    // Set before any client is built: the platform verifier reads SSL_CERT_FILE at construction.
    std::env::set_var("SSL_CERT_FILE", &ca);
    std::env::set_var("AZURE_AUTHORITY_HOST", sim.authority_host());
    std::env::set_var("AZURE_TENANT_ID", sim.tenant_id());
    std::env::set_var("AZURE_CLIENT_ID", DEFAULT_CLIENT_ID);
    std::env::set_var("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    let scope = format!("{}/.default", sim.arm_endpoint());

    let workload = WorkloadIdentityCredential::new(None).unwrap();
    let token = workload.get_token(&[&scope], None).await.unwrap();
    let token = token.token.secret().to_owned();

    let secret = ClientSecretCredential::new(
        sim.tenant_id(),
        DEFAULT_CLIENT_ID.to_owned(),
        DEFAULT_CLIENT_SECRET.to_owned().into(),
        None,
    )
    .unwrap();
    secret.get_token(&[&scope], None).await.unwrap();

    // A plain reqwest client (platform verifier) trusts the sim through SSL_CERT_FILE too.
    let site = SiteId::new("sub", "rg", "app");
    sim.add_site(site.clone(), settings(&[("A", "1")]));
    let url = format!(
        "{}{}/config/appsettings/list?api-version={API_VERSION}",
        sim.arm_endpoint(),
        site.resource_id()
    );
    let rsp = reqwest::Client::new()
        .post(url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);

    let kinds: Vec<_> = sim.token_requests().iter().map(|r| r.credential).collect();
    assert_eq!(
        kinds,
        vec![
            azure_sim::CredentialKind::Assertion,
            azure_sim::CredentialKind::Secret
        ]
    );
    sim.shutdown().await;
}
