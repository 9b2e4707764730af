//! Azure access: which cloud, which credential, and the HTTPS client both use.
//!
//! azure_identity 1.x has no DefaultAzureCredential, so the credential is chosen by a flag or
//! detected from the environment the way AKS workload identity, managed identity, service principals
//! and workstations present themselves.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::azure::arm::ArmClient;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

/// Public-cloud ARM endpoint. China: `https://management.chinacloudapi.cn`; US Gov:
/// `https://management.usgovcloudapi.net`.
pub const PUBLIC_ARM_ENDPOINT: &str = "https://management.azure.com";

/// Which credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialKind {
    /// Detect from the environment: workload identity, then client secret, then Azure CLI outside a
    /// cluster, then managed identity.
    Auto,
    /// AKS workload identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`).
    WorkloadIdentity,
    /// The node's or a user-assigned managed identity (`AZURE_CLIENT_ID` selects a user-assigned one).
    ManagedIdentity,
    /// A service principal's secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`).
    ClientSecret,
    /// The signed-in Azure CLI, for running from a workstation.
    AzureCli,
}

/// Where and how to reach Azure.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// ARM endpoint; the token scope is `<endpoint>/.default`.
    pub arm_endpoint: String,
    /// Entra ID authority host; `AZURE_AUTHORITY_HOST` or the public cloud when `None`.
    pub authority_host: Option<String>,
    /// Extra PEM CA bundle to trust, besides the platform's roots (Azure Stack, proxies, tests).
    pub ca_bundle: Option<PathBuf>,
    /// Which credential to use.
    pub credential: CredentialKind,
    /// Bound on each ARM or token request.
    pub request_timeout: Duration,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            arm_endpoint: PUBLIC_ARM_ENDPOINT.into(),
            authority_host: None,
            ca_bundle: None,
            credential: CredentialKind::Auto,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A configuration problem, named so the user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum AzureConfigError {
    /// The CA bundle could not be read or parsed.
    #[error("--azure-ca-bundle {path}: {reason}")]
    CaBundle { path: String, reason: String },
    /// The HTTPS client could not be built.
    #[error("building the HTTPS client: {0}")]
    Http(String),
    /// The credential could not be created (usually a missing environment variable).
    #[error("{kind:?} credential: {reason}")]
    Credential {
        kind: CredentialKind,
        reason: String,
    },
    /// The ARM endpoint is not an https URL.
    #[error("--arm-endpoint {0}: must be an https:// URL such as {PUBLIC_ARM_ENDPOINT}")]
    Endpoint(String),
}

impl AzureConfig {
    /// The OAuth2 scope for ARM tokens.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.arm_endpoint.trim_end_matches('/'))
    }

    /// The HTTPS client for ARM and for the credential, trusting the extra CA bundle when given.
    pub fn http_client(&self) -> Result<reqwest::Client, AzureConfigError> {
        if !self.arm_endpoint.starts_with("https://") {
            return Err(AzureConfigError::Endpoint(self.arm_endpoint.clone()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(path) = &self.ca_bundle {
            let ca_error = |reason: String| AzureConfigError::CaBundle {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in the file".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        builder
            .build()
            .map_err(|e| AzureConfigError::Http(e.to_string()))
    }

    /// The credential to use, with `http` as its transport; renewable (see [`Credential`]).
    pub fn credential(&self, http: &reqwest::Client) -> Result<Credential, AzureConfigError> {
        let config = self.clone();
        let http = http.clone();
        Credential::renewable(move || config.build_credential(&http))
    }

    /// One instance of the credential to use, with `http` as its transport.
    fn build_credential(
        &self,
        http: &reqwest::Client,
    ) -> Result<Arc<dyn TokenCredential>, AzureConfigError> {
        let kind = match self.credential {
            CredentialKind::Auto => detect(|name| std::env::var(name).ok()),
            kind => kind,
        };
        let credential_error = |e: azure_core::Error| AzureConfigError::Credential {
            kind,
            reason: e.to_string(),
        };
        let client_options = self.client_options(http);
        let env = |name: &str| {
            std::env::var(name).map_err(|_| AzureConfigError::Credential {
                kind,
                reason: format!("environment variable {name} is not set"),
            })
        };
        Ok(match kind {
            CredentialKind::WorkloadIdentity => {
                let options = WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options },
                    ..Default::default()
                };
                WorkloadIdentityCredential::new(Some(options)).map_err(credential_error)?
            }
            CredentialKind::ClientSecret => self.client_secret_credential(
                http,
                &env("AZURE_TENANT_ID")?,
                &env("AZURE_CLIENT_ID")?,
                env("AZURE_CLIENT_SECRET")?,
            )?,
            CredentialKind::ManagedIdentity => {
                let user_assigned_id = std::env::var("AZURE_CLIENT_ID")
                    .ok()
                    .map(azure_identity::UserAssignedId::ClientId);
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    client_options,
                };
                ManagedIdentityCredential::new(Some(options)).map_err(credential_error)?
            }
            CredentialKind::AzureCli => AzureCliCredential::new(None).map_err(credential_error)?,
            CredentialKind::Auto => unreachable!("detect never answers Auto"),
        })
    }

    /// An ARM client for this cloud that authenticates as a service principal with a secret given
    /// directly (not from the environment): the sandbox and the benchmarks use it against the
    /// simulated Azure.
    pub fn client_secret_arm_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        secret: String,
    ) -> Result<ArmClient, AzureConfigError> {
        let http = self.http_client()?;
        let (config, transport) = (self.clone(), http.clone());
        let (tenant_id, client_id) = (tenant_id.to_string(), client_id.to_string());
        let credential = Credential::renewable(move || {
            config.client_secret_credential(&transport, &tenant_id, &client_id, secret.clone())
        })?;
        Ok(ArmClient::new(
            http,
            &self.arm_endpoint,
            self.scope(),
            credential,
        ))
    }

    /// A service principal's client-secret credential, with `http` as its transport.
    pub fn client_secret_credential(
        &self,
        http: &reqwest::Client,
        tenant_id: &str,
        client_id: &str,
        secret: String,
    ) -> Result<Arc<dyn TokenCredential>, AzureConfigError> {
        let options = ClientSecretCredentialOptions {
            client_options: self.client_options(http),
        };
        let credential: Arc<dyn TokenCredential> = ClientSecretCredential::new(
            tenant_id,
            client_id.to_string(),
            Secret::new(secret),
            Some(options),
        )
        .map_err(|e| AzureConfigError::Credential {
            kind: CredentialKind::ClientSecret,
            reason: e.to_string(),
        })?;
        Ok(credential)
    }

    fn client_options(&self, http: &reqwest::Client) -> ClientOptions {
        let mut options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            ..Default::default()
        };
        if let Some(host) = &self.authority_host {
            let mut cloud = CustomConfiguration::default();
            cloud.authority_host = host.clone();
            options.cloud = Some(Arc::new(CloudConfiguration::from(cloud)));
        }
        options
    }
}

/// Builds a fresh instance of a credential.
type MakeCredential =
    Box<dyn Fn() -> Result<Arc<dyn TokenCredential>, AzureConfigError> + Send + Sync>;

/// The credential the ARM client gets its tokens from, which can be started afresh.
///
/// azure_identity's credentials cache a token until 5 minutes before the expiry the token endpoint
/// announced, and cannot be told to drop it. When ARM refuses a cached token anyway (401: expired
/// early, revoked, its signing key rolled over), the only way to a new token is a new credential:
/// [`Credential::renew`] makes one.
pub struct Credential {
    make: Option<MakeCredential>,
    /// The credential in use, and how many times it was renewed.
    current: RwLock<(u64, Arc<dyn TokenCredential>)>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("renewable", &self.make.is_some())
            .field("generation", &self.current().0)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential that `make` builds now, and again on each renewal.
    pub fn renewable(
        make: impl Fn() -> Result<Arc<dyn TokenCredential>, AzureConfigError> + Send + Sync + 'static,
    ) -> Result<Self, AzureConfigError> {
        let first = make()?;
        Ok(Self {
            make: Some(Box::new(make)),
            current: RwLock::new((0, first)),
        })
    }

    /// The credential in use, and its generation (to hand to [`Credential::renew`]).
    pub fn current(&self) -> (u64, Arc<dyn TokenCredential>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// Replaces the credential of generation `refused`, whose token ARM refused, with a new one (and
    /// so a new token on the next request). Callers that saw the same refusal renew it once between
    /// them. A credential that cannot be built now is kept, and the next refusal tries again. Returns
    /// whether the credential was renewed (by this call or another since `refused`).
    pub fn renew(&self, refused: u64) -> bool {
        let Some(make) = &self.make else {
            return false;
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != refused {
            return true;
        }
        match make() {
            Ok(fresh) => {
                *current = (refused + 1, fresh);
                tracing::info!(
                    generation = refused + 1,
                    "renewed the Azure credential to get a new access token"
                );
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not renew the Azure credential; keeping the old one");
                false
            }
        }
    }
}

/// A credential given as it is: it cannot be renewed.
impl From<Arc<dyn TokenCredential>> for Credential {
    fn from(credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            make: None,
            current: RwLock::new((0, credential)),
        }
    }
}

/// The credential the environment points at.
pub fn detect(env: impl Fn(&str) -> Option<String>) -> CredentialKind {
    if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        CredentialKind::WorkloadIdentity
    } else if env("AZURE_CLIENT_SECRET").is_some() {
        CredentialKind::ClientSecret
    } else if env("KUBERNETES_SERVICE_HOST").is_none() {
        CredentialKind::AzureCli
    } else {
        CredentialKind::ManagedIdentity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn detection_prefers_workload_identity_then_secret_then_cli_then_managed_identity() {
        let wi = [
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("KUBERNETES_SERVICE_HOST", "h"),
        ];
        assert_eq!(detect(env(&wi)), CredentialKind::WorkloadIdentity);
        assert_eq!(detect(env(&wi[1..])), CredentialKind::ClientSecret);
        assert_eq!(detect(env(&wi[2..])), CredentialKind::ManagedIdentity);
        assert_eq!(detect(env(&[])), CredentialKind::AzureCli);
    }

    #[test]
    fn the_scope_follows_the_endpoint() {
        let china = AzureConfig {
            arm_endpoint: "https://management.chinacloudapi.cn/".into(),
            ..Default::default()
        };
        assert_eq!(
            china.scope(),
            "https://management.chinacloudapi.cn/.default"
        );
        assert_eq!(
            AzureConfig::default().scope(),
            "https://management.azure.com/.default"
        );
    }

    #[test]
    fn a_plain_http_endpoint_is_refused() {
        let config = AzureConfig {
            arm_endpoint: "http://management.azure.com".into(),
            ..Default::default()
        };
        assert!(matches!(
            config.http_client(),
            Err(AzureConfigError::Endpoint(_))
        ));
    }

    #[test]
    fn a_missing_secret_variable_is_named() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = AzureConfig {
            credential: CredentialKind::ClientSecret,
            ..Default::default()
        };
        let http = config.http_client().unwrap();
        // The test process has no AZURE_TENANT_ID.
        if std::env::var("AZURE_TENANT_ID").is_err() {
            let err = config.credential(&http).err().unwrap();
            assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
        }
    }
}
