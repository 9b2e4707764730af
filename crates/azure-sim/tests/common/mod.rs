//! Helpers shared by the integration tests: a sim, an HTTPS client trusting its CA, and thin ARM
//! request wrappers that return status, headers and JSON body.

#![allow(dead_code)] // each test binary uses a different subset

use azure_sim::{AzureSim, AzureSimOptions, SiteId, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;

pub const API_VERSION: &str = "2024-04-01";

/// reqwest is built with `rustls-no-provider`, as in the operator: one provider per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn start() -> AzureSim {
    install_crypto_provider();
    AzureSim::start(AzureSimOptions::default())
        .await
        .expect("sim starts")
}

/// A client trusting only the sim's CA, with verification fully on.
pub fn http_client(sim: &AzureSim) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client builds")
}

pub fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn post_token(http: &reqwest::Client, url: &str, body: String) -> Reply {
    let rsp = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request sent");
    reply(rsp).await
}

async fn reply(rsp: reqwest::Response) -> Reply {
    let status = rsp.status();
    let headers = rsp.headers().clone();
    let text = rsp.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// An authenticated ARM caller.
pub struct Arm {
    pub sim: AzureSim,
    pub http: reqwest::Client,
    pub token: String,
}

impl Arm {
    pub async fn new(sim: &AzureSim) -> Arm {
        Self::for_client(sim, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET).await
    }

    /// A caller authenticated as another registered client (another service principal).
    pub async fn for_client(sim: &AzureSim, client_id: &str, secret: &str) -> Arm {
        let http = http_client(sim);
        let scope = format!("{}/.default", sim.arm_endpoint());
        let rsp = post_token(
            &http,
            &sim.token_endpoint(),
            form(&[
                ("client_id", client_id),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
                ("scope", &scope),
            ]),
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text);
        Arm {
            sim: sim.clone(),
            http,
            token: rsp.body["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Sends `method` to `path` (which may carry its own query) with the bearer token.
    pub async fn send(&self, method: Method, path_and_query: &str, body: Option<Value>) -> Reply {
        let url = format!("{}{path_and_query}", self.sim.arm_endpoint());
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        reply(req.send().await.expect("ARM request sent")).await
    }

    pub async fn list_settings(&self, site: &SiteId) -> Reply {
        let path = format!(
            "{}/config/appsettings/list?api-version={API_VERSION}",
            site.resource_id()
        );
        self.send(Method::POST, &path, None).await
    }

    pub async fn put_settings(&self, site: &SiteId, body: Value) -> Reply {
        let path = format!(
            "{}/config/appsettings?api-version={API_VERSION}",
            site.resource_id()
        );
        self.send(Method::PUT, &path, Some(body)).await
    }

    pub async fn get_site(&self, site: &SiteId) -> Reply {
        let path = format!("{}?api-version={API_VERSION}", site.resource_id());
        self.send(Method::GET, &path, None).await
    }

    pub async fn patch_site(&self, site: &SiteId, body: Value) -> Reply {
        let path = format!("{}?api-version={API_VERSION}", site.resource_id());
        self.send(Method::PATCH, &path, Some(body)).await
    }
}

/// The ARM error code in `{"error": {"code"}}`.
pub fn arm_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

pub fn arm_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}
