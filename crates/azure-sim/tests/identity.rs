//! azure_identity 1.0's real credentials against the sim, configured in code: the authority host
//! through `ClientOptions::cloud` and the CA through a custom reqwest client as the transport.
//! (tests/env_config.rs covers the environment-variable route: AZURE_AUTHORITY_HOST + SSL_CERT_FILE.)

mod common;

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::TokenCredential,
    http::{ClientOptions, RetryOptions, Transport},
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_sim::{AzureSim, CredentialKind, SiteId, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use common::*;
use reqwest::{Method, StatusCode};
use std::sync::Arc;

/// A fake projected service account token: header.payload.signature, each base64url.
const FAKE_SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNpbSJ9.eyJhdWQiOlsiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UiXSwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmFwcHNlcnZpY2VsaW5rOm9wZXJhdG9yIn0.c2lnbmF0dXJl";

/// How the operator should build credential options: the sim as a custom cloud, and a reqwest
/// client that trusts the test CA *in addition to* the platform roots (platform verifier + extra
/// root), which is what an "extra CA bundle" option means.
fn client_options(sim: &AzureSim) -> ClientOptions {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    // CustomConfiguration is #[non_exhaustive]: build it from Default and set the field.
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = sim.authority_host();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        ..Default::default()
    }
}

fn scope(sim: &AzureSim) -> String {
    format!("{}/.default", sim.arm_endpoint())
}

/// The token really opens ARM.
async fn assert_token_opens_arm(sim: &AzureSim, token: &str) {
    let site = SiteId::new("sub", "rg", "app");
    sim.add_site(site.clone(), settings(&[("A", "1")]));
    let arm = Arm {
        sim: sim.clone(),
        http: http_client(sim),
        token: token.to_owned(),
    };
    let path = format!(
        "{}/config/appsettings/list?api-version={API_VERSION}",
        site.resource_id()
    );
    let rsp = arm.send(Method::POST, &path, None).await;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
}

#[tokio::test]
async fn client_secret_credential_gets_a_token() {
    let sim = start().await;
    let credential = ClientSecretCredential::new(
        sim.tenant_id(),
        DEFAULT_CLIENT_ID.to_owned(),
        DEFAULT_CLIENT_SECRET.to_owned().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&sim),
        }),
    )
    .unwrap();

    let token = credential.get_token(&[&scope(&sim)], None).await.unwrap();
    let token = token.token.secret().to_owned();
    assert_eq!(sim.issued_tokens(), vec![token.clone()]);

    // The credential caches: a second call sends nothing.
    credential.get_token(&[&scope(&sim)], None).await.unwrap();
    let requests = sim.token_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].credential, CredentialKind::Secret);
    assert_eq!(
        requests[0].grant_type.as_deref(),
        Some("client_credentials")
    );
    assert_eq!(requests[0].client_id.as_deref(), Some(DEFAULT_CLIENT_ID));
    assert_eq!(requests[0].scope.as_deref(), Some(scope(&sim).as_str()));
    assert_eq!(requests[0].tenant, sim.tenant_id());

    assert_token_opens_arm(&sim, &token).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn client_secret_credential_surfaces_aad_errors() {
    let sim = start().await;
    let credential = ClientSecretCredential::new(
        sim.tenant_id(),
        DEFAULT_CLIENT_ID.to_owned(),
        "wrong".to_owned().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(&sim),
        }),
    )
    .unwrap();
    let err = credential
        .get_token(&[&scope(&sim)], None)
        .await
        .unwrap_err();
    let msg = format!("{err:?}");
    assert!(msg.contains("7000215"), "{msg}");
    assert!(sim.issued_tokens().is_empty());
    assert_eq!(sim.token_requests()[0].status, 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn workload_identity_credential_gets_a_token() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, FAKE_SA_TOKEN).unwrap();

    let credential = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(&sim),
        },
        client_id: Some(DEFAULT_CLIENT_ID.to_owned()),
        tenant_id: Some(sim.tenant_id().to_owned()),
        token_file_path: Some(token_file),
    }))
    .unwrap();
    let token = credential.get_token(&[&scope(&sim)], None).await.unwrap();
    let token = token.token.secret().to_owned();
    assert_eq!(sim.issued_tokens(), vec![token.clone()]);
    let requests = sim.token_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].credential, CredentialKind::Assertion);
    assert_eq!(requests[0].status, 200);

    assert_token_opens_arm(&sim, &token).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn workload_identity_credential_with_a_malformed_token_file_fails() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "this is not a JWT").unwrap();
    let credential = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(&sim),
        },
        client_id: Some(DEFAULT_CLIENT_ID.to_owned()),
        tenant_id: Some(sim.tenant_id().to_owned()),
        token_file_path: Some(token_file),
    }))
    .unwrap();
    let err = credential
        .get_token(&[&scope(&sim)], None)
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("50027"), "{err:?}");
    assert!(sim.issued_tokens().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_ca_is_refused() {
    // Without the CA the handshake fails: nothing in the sim weakens TLS verification.
    let sim = start().await;
    let other = start().await;
    let mut options = client_options(&other);
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = sim.authority_host();
    options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
    // azure_core retries connection errors with backoff (over a minute in total); fail at once.
    options.retry = RetryOptions::none();
    let credential = ClientSecretCredential::new(
        sim.tenant_id(),
        DEFAULT_CLIENT_ID.to_owned(),
        DEFAULT_CLIENT_SECRET.to_owned().into(),
        Some(ClientSecretCredentialOptions {
            client_options: options,
        }),
    )
    .unwrap();
    assert!(credential.get_token(&[&scope(&sim)], None).await.is_err());
    assert!(sim.token_requests().is_empty());
    sim.shutdown().await;
    other.shutdown().await;
}
