//! A small typed client for exactly the Azure Resource Manager calls the App Service duty needs.
//!
//! It knows HTTP, ARM and tokens, and nothing about Kubernetes. Reads that meet throttling (429) or
//! server errors are retried with backoff, honouring `Retry-After`; writes are sent once, because
//! their body comes from a read and a retry must read again. A request ARM refuses for its token (401)
//! is sent once more, reads and writes alike, with a token from a renewed credential: ARM
//! authenticates before anything else, so the refused request did nothing. Every request is bounded
//! by a timeout, and every attempt, retries included, first takes a token from the client's own
//! buckets for its subscription ([`crate::azure::limiter`]). Callers that read, modify and write a
//! site take its turn first ([`ArmClient::site_turn`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::azure::credentials::Credential;
use crate::azure::limiter::{RateLimiter, RateLimits, RequestKind};
use crate::azure::sites::{SiteGates, SiteTurn};

/// The one ARM api-version for Microsoft.Web used everywhere.
pub const API_VERSION: &str = "2024-11-01";

/// One App Service, or one of its slots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteRef {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Site name.
    pub name: String,
    /// Deployment slot, when not production.
    pub slot: Option<String>,
}

impl SiteRef {
    /// The ARM resource id.
    pub fn resource_id(&self) -> String {
        let site = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}",
            self.subscription_id, self.resource_group, self.name
        );
        match &self.slot {
            Some(slot) => format!("{site}/slots/{slot}"),
            None => site,
        }
    }
}

/// The DNS part of a site's `properties.dnsConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteDns {
    /// `dnsServers`, empty when unset.
    pub dns_servers: Vec<String>,
    /// `dnsAltServer`.
    pub dns_alt_server: Option<String>,
}

/// The calls the client makes, for errors, metrics and the permissions a 403 is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST .../config/appsettings/list`
    ListAppSettings,
    /// `PUT .../config/appsettings`
    UpdateAppSettings,
    /// `GET .../sites/{name}`
    GetSite,
    /// `PATCH .../sites/{name}`
    PatchSite,
}

impl Operation {
    /// Short name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::ListAppSettings => "list_app_settings",
            Self::UpdateAppSettings => "update_app_settings",
            Self::GetSite => "get_site",
            Self::PatchSite => "patch_site",
        }
    }

    /// The Azure RBAC action the call needs.
    pub fn permission(self) -> &'static str {
        match self {
            Self::ListAppSettings => "Microsoft.Web/sites/config/list/Action",
            Self::UpdateAppSettings => "Microsoft.Web/sites/config/Write",
            Self::GetSite => "Microsoft.Web/sites/Read",
            Self::PatchSite => "Microsoft.Web/sites/Write",
        }
    }
}

/// Why an ARM call failed, in words a user can act on. Never contains a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    /// 429 after every retry.
    #[error("ARM throttled {} (429) after {attempts} attempts", .operation.name())]
    Throttled {
        operation: Operation,
        attempts: u32,
        retry_after: Option<Duration>,
    },
    /// 403: the identity lacks a role.
    #[error("the operator's Azure identity may not {} (403; it needs {} on the App Service, or the 'Website Contributor' role): {message}", .operation.name(), .operation.permission())]
    Forbidden {
        operation: Operation,
        message: String,
    },
    /// 404: the site or slot does not exist.
    #[error("{resource} not found (404): {message}")]
    NotFound { resource: String, message: String },
    /// Any other error status, after retries for 5xx.
    #[error("ARM answered {status} to {}: {message}", .operation.name())]
    Status {
        operation: Operation,
        status: u16,
        message: String,
    },
    /// The request did not complete (connection, TLS, timeout), after retries.
    #[error("request to ARM for {} failed: {message}", .operation.name())]
    Transport {
        operation: Operation,
        message: String,
    },
    /// No access token could be obtained.
    #[error("could not get an Azure access token: {0}")]
    Credential(String),
    /// ARM answered something this client does not understand.
    #[error("unexpected ARM response to {}: {message}", .operation.name())]
    Decode {
        operation: Operation,
        message: String,
    },
}

impl ArmError {
    /// Short category for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "Throttled",
            Self::Forbidden { .. } => "Forbidden",
            Self::NotFound { .. } => "NotFound",
            Self::Status { .. } => "ArmError",
            Self::Transport { .. } => "Unreachable",
            Self::Credential(_) => "CredentialUnavailable",
            Self::Decode { .. } => "BadResponse",
        }
    }

    /// True for failures that pass by themselves: throttling, a server error, no answer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// When to try again: ARM's `Retry-After` when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How hard to retry throttling, server errors and transport failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First backoff when ARM gives no `Retry-After`; doubles each attempt.
    pub base_delay: Duration,
    /// Longest wait inside one call. A longer `Retry-After` ends the call with
    /// [`ArmError::Throttled`], and the link is requeued after it instead.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Receives the outcome of every ARM request (operation, HTTP status or 0 when none).
pub type RequestObserver = Arc<dyn Fn(Operation, u16) + Send + Sync>;

/// Told how long a request of a kind waited for the client's own rate limit, when it waited.
pub type WaitObserver = Arc<dyn Fn(RequestKind, Duration) + Send + Sync>;

/// The ARM client.
#[derive(Clone)]
pub struct ArmClient {
    http: reqwest::Client,
    endpoint: String,
    scope: String,
    credential: Arc<Credential>,
    retry: RetryPolicy,
    observer: Option<RequestObserver>,
    wait_observer: Option<WaitObserver>,
    limiter: Arc<RateLimiter>,
    sites: Arc<SiteGates>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ArmClient {
    /// A client for `endpoint` (e.g. `https://management.azure.com`) authenticating with
    /// `credential` for `scope` (a [`Credential`], or any `Arc<dyn TokenCredential>`, which is then
    /// not renewed when ARM refuses its token).
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        scope: String,
        credential: impl Into<Credential>,
    ) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            scope,
            credential: Arc::new(credential.into()),
            retry: RetryPolicy::default(),
            observer: None,
            wait_observer: None,
            limiter: Arc::new(RateLimiter::new(RateLimits::DEFAULT)),
            sites: Arc::default(),
        }
    }

    /// Replaces the client's own rate limits (by default a little under ARM's buckets).
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.limiter = Arc::new(RateLimiter::new(limits));
        self
    }

    /// The client's own rate limits.
    pub fn rate_limits(&self) -> RateLimits {
        self.limiter.limits()
    }

    /// Waits for the turn on `site`, shared by every clone of this client: whoever holds it alone
    /// reads, modifies and writes the site. With an `owner`, a later turn asked by the same owner
    /// supersedes this one while it waits (see [`crate::azure::sites`]).
    pub async fn site_turn(&self, site: &SiteRef, owner: Option<&str>) -> SiteTurn {
        self.sites.turn(&site.resource_id(), owner).await
    }

    /// The retry policy: reads are retried inside a call, writes by the caller (after a fresh read).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reports every request's outcome to `observer` (metrics).
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Reports every wait for the client's own rate limit to `observer` (metrics).
    pub fn with_wait_observer(mut self, observer: WaitObserver) -> Self {
        self.wait_observer = Some(observer);
        self
    }

    /// All app settings of the site or slot.
    pub async fn list_app_settings(
        &self,
        site: &SiteRef,
    ) -> Result<BTreeMap<String, String>, ArmError> {
        let op = Operation::ListAppSettings;
        let body = self
            .send(
                op,
                Method::POST,
                site,
                &format!("{}/config/appsettings/list", site.resource_id()),
                None,
            )
            .await?;
        parse_settings(op, &body)
    }

    /// Replaces the whole set of app settings. ARM has no ETag and no merge here: callers must
    /// read, change only their keys, and write everything back.
    pub async fn replace_app_settings(
        &self,
        site: &SiteRef,
        settings: &BTreeMap<String, String>,
    ) -> Result<(), ArmError> {
        let body = json!({"properties": settings});
        self.send(
            Operation::UpdateAppSettings,
            Method::PUT,
            site,
            &format!("{}/config/appsettings", site.resource_id()),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// The site's DNS configuration.
    pub async fn get_site_dns(&self, site: &SiteRef) -> Result<SiteDns, ArmError> {
        let body = self
            .send(
                Operation::GetSite,
                Method::GET,
                site,
                &site.resource_id(),
                None,
            )
            .await?;
        let config = &body["properties"]["dnsConfiguration"];
        Ok(SiteDns {
            dns_servers: config["dnsServers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            dns_alt_server: config["dnsAltServer"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    /// Sets these fields of `properties.dnsConfiguration` (`dnsServers`, `dnsAltServer`), leaving the
    /// rest of the site as it is.
    pub async fn patch_site_dns(
        &self,
        site: &SiteRef,
        fields: serde_json::Map<String, Value>,
    ) -> Result<(), ArmError> {
        let body = json!({"properties": {"dnsConfiguration": fields}});
        self.send(
            Operation::PatchSite,
            Method::PATCH,
            site,
            &site.resource_id(),
            Some(body),
        )
        .await
        .map(drop)
    }

    async fn send(
        &self,
        op: Operation,
        method: Method,
        site: &SiteRef,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ArmError> {
        let url = format!("{}{path}?api-version={API_VERSION}", self.endpoint);
        let kind = RequestKind::of(&method);
        // A write is sent once: its body was built from a read, and a retry must read and merge again
        // (the caller does), or it would overwrite what another writer changed meanwhile.
        let max_attempts = match op {
            Operation::UpdateAppSettings | Operation::PatchSite => 1,
            Operation::ListAppSettings | Operation::GetSite => self.retry.max_attempts,
        };
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            let waited = self.limiter.acquire(&site.subscription_id, kind).await;
            if !waited.is_zero() {
                if let Some(observer) = &self.wait_observer {
                    observer(kind, waited);
                }
                tracing::debug!(
                    operation = op.name(),
                    kind = kind.name(),
                    waited_ms = waited.as_millis() as u64,
                    "waited for the client's ARM rate limit"
                );
            }
            let (generation, credential) = self.credential.current();
            let token = credential
                .get_token(&[&self.scope], None)
                .await
                .map_err(|e| ArmError::Credential(e.to_string()))?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.token.secret());
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(body).expect("JSON values serialize"));
            }
            let outcome = request.send().await;
            let retry = match outcome {
                Err(err) => {
                    self.observe(op, 0);
                    let error = ArmError::Transport {
                        operation: op,
                        message: transport_message(&err),
                    };
                    tracing::debug!(operation = op.name(), attempt, error = %error, "ARM request failed");
                    (error, None)
                }
                Ok(response) => {
                    let status = response.status();
                    self.observe(op, status.as_u16());
                    if status == StatusCode::UNAUTHORIZED
                        && !renewed
                        && self.credential.renew(generation)
                    {
                        // The token is not one ARM takes any more (expired before the credential's
                        // cache thought, revoked). ARM authenticated first, so nothing was done:
                        // send it again, once, with a token from the renewed credential.
                        tracing::info!(
                            operation = op.name(),
                            "ARM refused the access token (401); retrying with a new one"
                        );
                        renewed = true;
                        attempt -= 1;
                        continue;
                    }
                    let retry_after = retry_after(response.headers());
                    let bytes = response.bytes().await.unwrap_or_default();
                    tracing::debug!(
                        operation = op.name(),
                        attempt,
                        status = status.as_u16(),
                        "ARM request"
                    );
                    match classify(op, status, &bytes, &url) {
                        Ok(value) => return Ok(value),
                        Err((error, retryable)) if retryable => (error, retry_after),
                        Err((error, _)) => return Err(error),
                    }
                }
            };
            let (error, retry_after) = retry;
            let delay =
                retry_after.unwrap_or(self.retry.base_delay * 2u32.saturating_pow(attempt - 1));
            if matches!(error, ArmError::Throttled { .. }) {
                // ARM's bucket of this kind is empty for the whole subscription and principal: no
                // request of that kind goes before it asked, from this call or any other.
                self.limiter.hold_off(&site.subscription_id, kind, delay);
            }
            if attempt >= max_attempts || delay > self.retry.max_delay {
                return Err(match error {
                    ArmError::Throttled { .. } => ArmError::Throttled {
                        operation: op,
                        attempts: attempt,
                        retry_after,
                    },
                    other => other,
                });
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn observe(&self, op: Operation, status: u16) {
        if let Some(observer) = &self.observer {
            observer(op, status);
        }
    }
}

/// Sorts a response into a value, a retryable error, or a final error.
fn classify(
    op: Operation,
    status: StatusCode,
    bytes: &[u8],
    url: &str,
) -> Result<Value, (ArmError, bool)> {
    let message = || error_message(bytes);
    match status.as_u16() {
        // 202: ARM accepted the write and applies it shortly; the next read confirms it.
        200..=299 if bytes.is_empty() => Ok(Value::Null),
        200..=299 => serde_json::from_slice(bytes).map_err(|e| {
            (
                ArmError::Decode {
                    operation: op,
                    message: e.to_string(),
                },
                false,
            )
        }),
        429 => Err((
            ArmError::Throttled {
                operation: op,
                attempts: 0,
                retry_after: None,
            },
            true,
        )),
        403 => Err((
            ArmError::Forbidden {
                operation: op,
                message: message(),
            },
            false,
        )),
        404 => Err((
            ArmError::NotFound {
                resource: resource_of(url),
                message: message(),
            },
            false,
        )),
        code @ 500..=599 => Err((
            ArmError::Status {
                operation: op,
                status: code,
                message: message(),
            },
            true,
        )),
        code => Err((
            ArmError::Status {
                operation: op,
                status: code,
                message: message(),
            },
            false,
        )),
    }
}

/// The ARM error body's message (`{"error": {"code", "message"}}`), or a short excerpt.
fn error_message(bytes: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(error) => format!(
            "{}: {}",
            error["code"].as_str().unwrap_or("Error"),
            error["message"].as_str().unwrap_or_default()
        ),
        None => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
    }
}

fn resource_of(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.split("/subscriptions/")
        .nth(1)
        .map(|rest| format!("/subscriptions/{rest}"))
        .unwrap_or_else(|| path.to_string())
}

/// `Retry-After` in seconds (ARM sends delta-seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn transport_message(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = if err.is_timeout() {
        "timed out".to_string()
    } else {
        err.to_string()
    };
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn parse_settings(op: Operation, body: &Value) -> Result<BTreeMap<String, String>, ArmError> {
    let properties = body["properties"]
        .as_object()
        .ok_or_else(|| ArmError::Decode {
            operation: op,
            message: "no properties object in the app settings".into(),
        })?;
    Ok(properties
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_cover_sites_and_slots() {
        let mut site = SiteRef {
            subscription_id: "00000000-0000-0000-0000-000000000000".into(),
            resource_group: "rg-web".into(),
            name: "contoso-web".into(),
            slot: None,
        };
        assert_eq!(
            site.resource_id(),
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-web/providers/Microsoft.Web/sites/contoso-web"
        );
        site.slot = Some("staging".into());
        assert!(site
            .resource_id()
            .ends_with("/sites/contoso-web/slots/staging"));
    }

    #[test]
    fn responses_are_classified_for_retry() {
        let op = Operation::UpdateAppSettings;
        assert!(matches!(
            classify(op, StatusCode::ACCEPTED, b"", "u"),
            Ok(Value::Null)
        ));
        assert!(matches!(
            classify(op, StatusCode::TOO_MANY_REQUESTS, b"", "u"),
            Err((ArmError::Throttled { .. }, true))
        ));
        assert!(matches!(
            classify(op, StatusCode::BAD_GATEWAY, b"", "u"),
            Err((ArmError::Status { status: 502, .. }, true))
        ));
        let forbidden = br#"{"error":{"code":"AuthorizationFailed","message":"no access"}}"#;
        let Err((error, false)) = classify(op, StatusCode::FORBIDDEN, forbidden, "u") else {
            panic!()
        };
        let text = error.to_string();
        assert!(
            text.contains("Microsoft.Web/sites/config/Write")
                && text.contains("AuthorizationFailed: no access"),
            "{text}"
        );
    }

    /// The simulated Azure, a site in it, and a client-secret ARM client trusting its CA.
    async fn sim_and_client(
        dir: &std::path::Path,
    ) -> (azure_sim::AzureSim, SiteRef, ArmClient, super::Credential) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = azure_sim::AzureSim::start(Default::default())
            .await
            .unwrap();
        let ca = dir.join("ca.pem");
        sim.write_ca(&ca).unwrap();
        let site = SiteRef {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            name: "web".into(),
            slot: None,
        };
        sim.add_site(
            azure_sim::SiteId::new("sub", "rg", "web"),
            [("A".to_string(), "1".to_string())].into(),
        );
        let config = crate::azure::credentials::AzureConfig {
            arm_endpoint: sim.arm_endpoint(),
            authority_host: Some(sim.authority_host()),
            ca_bundle: Some(ca),
            ..Default::default()
        };
        let client = config
            .client_secret_arm_client(
                sim.tenant_id(),
                azure_sim::DEFAULT_CLIENT_ID,
                azure_sim::DEFAULT_CLIENT_SECRET.into(),
            )
            .unwrap();
        let http = config.http_client().unwrap();
        let fixed: Arc<dyn azure_core::credentials::TokenCredential> = config
            .client_secret_credential(
                &http,
                sim.tenant_id(),
                azure_sim::DEFAULT_CLIENT_ID,
                azure_sim::DEFAULT_CLIENT_SECRET.into(),
            )
            .unwrap();
        (sim, site, client, fixed.into())
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once_and_the_request_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let (sim, site, client, _) = sim_and_client(dir.path()).await;
        client.list_app_settings(&site).await.unwrap();
        sim.expire_tokens();
        // A write too: ARM refused it before doing anything, so sending it again is safe.
        let mut settings = client.list_app_settings(&site).await.unwrap();
        settings.insert("B".into(), "2".into());
        client.replace_app_settings(&site, &settings).await.unwrap();
        let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 401, 200, 200]);
        assert_eq!(sim.token_requests().len(), 2, "one new token");
        sim.expire_tokens();
        client.list_app_settings(&site).await.unwrap();
        assert_eq!(
            sim.token_requests().len(),
            3,
            "renewed again when refused again"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_token_refused_again_after_renewal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (sim, site, _, _) = sim_and_client(dir.path()).await;
        let config = crate::azure::credentials::AzureConfig {
            arm_endpoint: sim.arm_endpoint(),
            authority_host: Some(sim.authority_host()),
            ca_bundle: Some(dir.path().join("ca.pem")),
            ..Default::default()
        };
        let http = config.http_client().unwrap();
        let (make_config, transport, tenant) =
            (config.clone(), http.clone(), sim.tenant_id().to_string());
        let credential = super::Credential::renewable(move || {
            make_config.client_secret_credential(
                &transport,
                &tenant,
                azure_sim::DEFAULT_CLIENT_ID,
                azure_sim::DEFAULT_CLIENT_SECRET.into(),
            )
        })
        .unwrap();
        // Tokens for another resource: every one is refused (InvalidAuthenticationTokenAudience).
        let wrong_scope = "https://vault.azure.net/.default".to_string();
        let client = ArmClient::new(http, &sim.arm_endpoint(), wrong_scope, credential);
        let err = client.list_app_settings(&site).await.unwrap_err();
        assert!(matches!(err, ArmError::Status { status: 401, .. }), "{err}");
        assert_eq!(sim.token_requests().len(), 2, "renewed once, not forever");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_fixed_credential_is_not_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let (sim, site, _, fixed) = sim_and_client(dir.path()).await;
        let config = crate::azure::credentials::AzureConfig {
            arm_endpoint: sim.arm_endpoint(),
            ca_bundle: Some(dir.path().join("ca.pem")),
            ..Default::default()
        };
        let scope = config.scope();
        let client = ArmClient::new(
            config.http_client().unwrap(),
            &sim.arm_endpoint(),
            scope,
            fixed,
        );
        client.list_app_settings(&site).await.unwrap();
        sim.expire_tokens();
        let err = client.list_app_settings(&site).await.unwrap_err();
        assert!(matches!(err, ArmError::Status { status: 401, .. }), "{err}");
        assert!(!err.to_string().contains(azure_sim::TOKEN_PREFIX), "{err}");
        assert_eq!(sim.token_requests().len(), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn every_attempt_takes_a_token_of_its_kind_for_its_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let (sim, site, client, _) = sim_and_client(dir.path()).await;
        // Buckets that, in a test's time, never refill.
        let still = crate::azure::limiter::Rate::new(10, 1e-6);
        let client = client
            .with_rate_limits(RateLimits {
                reads: still,
                writes: still,
                deletes: still,
            })
            .with_retry(RetryPolicy {
                base_delay: Duration::from_millis(10),
                ..RetryPolicy::default()
            });
        sim.inject(azure_sim::Fault {
            method: Some("POST".into()),
            path_contains: "/config/appsettings/list".into(),
            kind: azure_sim::FaultKind::ServerError,
            times: 2,
        });
        // Three attempts of the list (two retries), a POST: three write tokens.
        client.list_app_settings(&site).await.unwrap();
        client.get_site_dns(&site).await.unwrap();
        let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [500, 500, 200, 200]);
        let left = |kind| client.limiter.available("SUB", kind);
        assert_eq!(left(RequestKind::Write), 7.0);
        assert_eq!(left(RequestKind::Read), 9.0);
        assert_eq!(left(RequestKind::Delete), 10.0);
        // Another subscription's buckets are untouched, and clones share the buckets.
        assert_eq!(
            client
                .clone()
                .limiter
                .available("other", RequestKind::Write),
            10.0
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_wait_for_the_clients_rate_limit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (sim, site, client, _) = sim_and_client(dir.path()).await;
        // One token, the next due 20 ms later.
        let one = crate::azure::limiter::Rate::new(1, 50.0);
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = client
            .with_rate_limits(RateLimits {
                reads: one,
                writes: one,
                deletes: one,
            })
            .with_wait_observer({
                let waits = waits.clone();
                Arc::new(move |kind, waited| waits.lock().unwrap().push((kind, waited)))
            });
        client.list_app_settings(&site).await.unwrap();
        assert!(waits.lock().unwrap().is_empty(), "the first took the token");
        client.list_app_settings(&site).await.unwrap();
        let waits = waits.lock().unwrap().clone();
        assert_eq!(waits.len(), 1, "{waits:?}");
        assert_eq!(waits[0].0, RequestKind::Write);
        assert!(!waits[0].1.is_zero());
        sim.shutdown().await;
    }

    #[test]
    fn settings_values_are_kept_as_strings() {
        let body = json!({"properties": {"A": "1", "WEBSITE_DNS_SERVER": "10.0.0.1"}});
        let settings = parse_settings(Operation::ListAppSettings, &body).unwrap();
        assert_eq!(settings["A"], "1");
        assert!(parse_settings(Operation::ListAppSettings, &json!({})).is_err());
    }
}
