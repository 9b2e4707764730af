//! `azure-sim`: a simulated Azure Resource Manager (the App Service endpoints AppServiceLink uses)
//! and a Microsoft Entra ID (AAD) token endpoint, served over real HTTPS with a generated test CA.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use azure_sim::{AzureSim, AzureSimOptions, SiteId};
//! let sim = AzureSim::start(AzureSimOptions::default()).await?;
//! let site = SiteId::new("sub-1", "rg-web", "contoso-web");
//! sim.add_site(site.clone(), [("FOO".to_string(), "bar".to_string())].into());
//! sim.write_ca(std::path::Path::new("/tmp/azure-sim-ca.pem"))?;
//! // Point the operator at sim.arm_endpoint() and sim.authority_host(), trusting the CA.
//! assert_eq!(sim.app_settings(&site).unwrap()["FOO"], "bar");
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See the crate README for the HTTP behaviour and where it deviates from Azure.

mod arm;
mod ca;
mod error;
mod faults;
mod ids;
mod record;
mod second_writer;
mod server;
mod state;
mod store;
mod throttle;
mod token;

pub use error::SimError;
pub use faults::{Fault, FaultKind, TokenFault, TokenFaultKind};
pub use ids::TOKEN_PREFIX;
pub use record::{ArmRequest, CredentialKind, TokenRequest};
pub use second_writer::{ReadOp, SecondWriter, SecondWriterEdit, SiteEdit};
pub use store::SiteId;
pub use throttle::{Bucket, Throttling};
pub use token::TOKEN_LIFETIME_SECS;

use axum::{routing::any, Router};
use serde_json::Value;
use state::{lock, ClientApp, Shared};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Tenant id used when none is configured.
pub const DEFAULT_TENANT_ID: &str = "8c1f1e2a-5b7d-4e3a-9f60-5a1d0c3b7e21";
/// Client id of the application registered by default.
pub const DEFAULT_CLIENT_ID: &str = "5f4b3c2a-1d0e-4f9a-8b7c-6d5e4f3a2b1c";
/// Secret of the application registered by default.
pub const DEFAULT_CLIENT_SECRET: &str = "azure-sim-client-secret";

/// How to start the simulator.
#[derive(Clone, Debug)]
pub struct AzureSimOptions {
    /// Address to listen on. Default `127.0.0.1`. Loopback and wildcard binds are advertised as
    /// `localhost`; any other address is advertised (and put in the certificate) as itself.
    pub bind: IpAddr,
    /// Port of the ARM endpoint; `0` (the default) picks a free one.
    pub port: u16,
    /// Port of the token endpoint (authority host); `0` (the default) picks a free one.
    pub authority_port: u16,
    /// The only tenant the token endpoint knows.
    pub tenant_id: String,
    /// Registered applications as `(client_id, client_secret)`. Any of them may also authenticate
    /// with a client assertion (workload identity).
    pub clients: Vec<(String, String)>,
    /// Location reported on resources. Default `West Europe`.
    pub location: String,
    /// ARM's token-bucket throttling. The default is ARM's own limits ([`Throttling::ARM`]);
    /// there is no switch to turn it off, so no test is kinder than ARM.
    pub throttling: Throttling,
    /// How long issued access tokens live: the `expires_in` the token endpoint reports, after which
    /// ARM refuses them (401 `ExpiredAuthenticationToken`). Whole seconds; default
    /// [`TOKEN_LIFETIME_SECS`], as AAD usually issues them.
    pub token_lifetime: std::time::Duration,
}

impl Default for AzureSimOptions {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            authority_port: 0,
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            clients: vec![(
                DEFAULT_CLIENT_ID.to_owned(),
                DEFAULT_CLIENT_SECRET.to_owned(),
            )],
            location: "West Europe".to_owned(),
            throttling: Throttling::ARM,
            token_lifetime: std::time::Duration::from_secs(TOKEN_LIFETIME_SECS),
        }
    }
}

/// A running simulator (an ARM listener and a token-endpoint listener). Clones share both and all state.
#[derive(Clone)]
pub struct AzureSim {
    shared: Arc<Shared>,
    ca_pem: Arc<str>,
    arm_addr: SocketAddr,
    login_addr: SocketAddr,
    /// Drained by the first `shutdown`.
    servers: Arc<Mutex<Vec<ServerHandle>>>,
}

struct ServerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for AzureSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSim")
            .field("arm_endpoint", &self.shared.arm_endpoint)
            .field("authority_host", &self.shared.authority_host)
            .field("tenant_id", &self.shared.tenant_id)
            .finish_non_exhaustive()
    }
}

impl AzureSim {
    /// Generates the CA and server certificate, binds, and starts serving in the background.
    pub async fn start(opts: AzureSimOptions) -> anyhow::Result<AzureSim> {
        Ok(Self::try_start(opts).await?)
    }

    async fn try_start(opts: AzureSimOptions) -> Result<AzureSim, SimError> {
        if opts.tenant_id.is_empty()
            || !opts
                .tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            // azure_identity refuses such tenant ids before sending anything.
            return Err(SimError::Options(format!(
                "tenant id '{}' must be non-empty and contain only letters, digits, '.' and '-'",
                opts.tenant_id
            )));
        }
        opts.throttling.validate().map_err(SimError::Options)?;
        let loopback_or_any = opts.bind.is_loopback() || opts.bind.is_unspecified();
        // Names clients may use for the sim; all are in the certificate, and ARM accepts tokens
        // whose audience is its endpoint under any of them (as real ARM accepts both
        // management.azure.com and management.core.windows.net).
        let hosts: Vec<String> = if loopback_or_any {
            vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]
        } else {
            match opts.bind {
                IpAddr::V4(ip) => vec![ip.to_string()],
                IpAddr::V6(ip) => vec![format!("[{ip}]")],
            }
        };
        let pki = ca::generate((!loopback_or_any).then_some(opts.bind))?;
        // ARM and the authority get separate listeners, like management.azure.com and
        // login.microsoftonline.com: a client that mixes them up (say, builds its token scope
        // from the authority host) fails here as it would in Azure.
        let arm_listener = TcpListener::bind(SocketAddr::new(opts.bind, opts.port)).await?;
        let login_listener =
            TcpListener::bind(SocketAddr::new(opts.bind, opts.authority_port)).await?;
        let arm_addr = arm_listener.local_addr()?;
        let login_addr = login_listener.local_addr()?;
        let arm_audiences = hosts
            .iter()
            .map(|h| format!("https://{h}:{}", arm_addr.port()))
            .collect::<Vec<_>>();

        let clients = opts
            .clients
            .into_iter()
            .map(|(id, secret)| {
                let app = ClientApp {
                    secret,
                    object_id: ids::guid(),
                };
                (id, app)
            })
            .collect();
        let shared = Arc::new(Shared {
            tenant_id: opts.tenant_id,
            location: opts.location,
            arm_endpoint: arm_audiences[0].clone(),
            authority_host: format!("https://{}:{}/", hosts[0], login_addr.port()),
            arm_audiences,
            clients,
            store: Default::default(),
            tokens: Mutex::new(token::Tokens::with_lifetime(opts.token_lifetime)),
            faults: Default::default(),
            token_faults: Default::default(),
            limiter: Mutex::new(throttle::Limiter::new(opts.throttling)),
            second_writers: Default::default(),
            log: Default::default(),
        });

        let arm_router = Router::new()
            .fallback(arm::handle)
            .with_state(shared.clone());
        let login_router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", any(token::handle))
            .with_state(shared.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config);
        let mut servers = Vec::new();
        for (listener, router) in [(arm_listener, arm_router), (login_listener, login_router)] {
            let (stop, rx) = oneshot::channel();
            let task = tokio::spawn(server::serve(listener, acceptor.clone(), router, rx));
            servers.push(ServerHandle { stop, task });
        }
        tracing::info!(
            arm_endpoint = %shared.arm_endpoint,
            authority_host = %shared.authority_host,
            "azure-sim started"
        );

        Ok(AzureSim {
            shared,
            ca_pem: pki.ca_pem.into(),
            arm_addr,
            login_addr,
            servers: Arc::new(Mutex::new(servers)),
        })
    }

    /// The ARM endpoint, e.g. `https://localhost:43121` (no trailing slash). Tokens must be
    /// requested for scope `{arm_endpoint}/.default` (or with `127.0.0.1`/`[::1]` for `localhost`
    /// if the client uses that name instead).
    pub fn arm_endpoint(&self) -> String {
        self.shared.arm_endpoint.clone()
    }

    /// The authority host, e.g. `https://localhost:43122/` (its own port, not ARM's), for
    /// `AZURE_AUTHORITY_HOST` or azure_core's `CustomConfiguration::authority_host`.
    pub fn authority_host(&self) -> String {
        self.shared.authority_host.clone()
    }

    /// The full token endpoint, `{authority_host}{tenant_id}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self) -> String {
        format!(
            "{}{}/oauth2/v2.0/token",
            self.shared.authority_host, self.shared.tenant_id
        )
    }

    /// The address the ARM endpoint listens on.
    pub fn arm_addr(&self) -> SocketAddr {
        self.arm_addr
    }

    /// The address the token endpoint listens on.
    pub fn authority_addr(&self) -> SocketAddr {
        self.login_addr
    }

    pub fn tenant_id(&self) -> &str {
        &self.shared.tenant_id
    }

    /// The test CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes [`Self::ca_pem`] to `path`, e.g. for `SSL_CERT_FILE` or an extra-CA-bundle option.
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.ca_pem.as_bytes())
    }

    /// Creates (or recreates from scratch, clearing its DNS configuration) a site or slot with these
    /// app settings. A slot's production site is created, empty, if missing. The subscription and
    /// resource group exist as long as some site lives in them.
    pub fn add_site(&self, site: SiteId, app_settings: BTreeMap<String, String>) {
        lock(&self.shared.store).add(site, app_settings);
    }

    /// The site's current app settings.
    pub fn app_settings(&self, site: &SiteId) -> Option<BTreeMap<String, String>> {
        lock(&self.shared.store)
            .get(site)
            .map(|r| r.app_settings.clone())
    }

    /// Replaces the site's app settings behind the operator's back, like an edit in the portal.
    /// Not recorded as an ARM request.
    pub fn set_app_settings(
        &self,
        site: &SiteId,
        settings: BTreeMap<String, String>,
    ) -> Result<(), SimError> {
        let mut store = lock(&self.shared.store);
        let rec = store
            .get_mut(site)
            .ok_or_else(|| SimError::UnknownSite(site.clone()))?;
        rec.app_settings = settings;
        Ok(())
    }

    /// The site's `properties.dnsConfiguration` (an object holding only the fields that are set).
    pub fn dns_configuration(&self, site: &SiteId) -> Option<Value> {
        lock(&self.shared.store)
            .get(site)
            .map(|r| Value::Object(r.dns.clone()))
    }

    /// Replaces the site's `properties.dnsConfiguration` wholesale, like an edit in the portal.
    /// `cfg` must be a JSON object; it is stored as given, without validation.
    pub fn set_dns_configuration(&self, site: &SiteId, cfg: Value) -> Result<(), SimError> {
        let Value::Object(cfg) = cfg else {
            return Err(SimError::Options(
                "dnsConfiguration must be a JSON object".to_owned(),
            ));
        };
        let mut store = lock(&self.shared.store);
        let rec = store
            .get_mut(site)
            .ok_or_else(|| SimError::UnknownSite(site.clone()))?;
        rec.dns = cfg;
        Ok(())
    }

    /// Arms a fault for upcoming ARM requests. Faults apply after authentication and the
    /// api-version check (as ARM's throttling and RBAC do) and never to the token endpoint.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).inject(fault);
    }

    /// Disarms all faults that have not fired yet.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Arms a fault for upcoming requests to the token endpoint (an Entra ID outage). Each request,
    /// whatever it asks, uses up one firing of the first armed fault; it is recorded with the status
    /// it got.
    pub fn inject_token_fault(&self, fault: TokenFault) {
        lock(&self.shared.token_faults).inject(fault);
    }

    /// Disarms all token-endpoint faults that have not fired yet: the endpoint is back.
    pub fn clear_token_faults(&self) {
        lock(&self.shared.token_faults).clear();
    }

    /// Tokens issued from now on live this long (whole seconds; see
    /// [`AzureSimOptions::token_lifetime`]).
    pub fn set_token_lifetime(&self, lifetime: std::time::Duration) {
        lock(&self.shared.tokens).set_lifetime(lifetime);
    }

    /// Every token issued so far expires now: ARM refuses it with 401 `ExpiredAuthenticationToken`
    /// although the client was told it lives longer, so a client that trusts its token cache until
    /// `expires_in` runs out keeps sending a token ARM no longer takes. Tokens issued afterwards are
    /// unaffected.
    pub fn expire_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    /// The throttling limits in force.
    pub fn throttling(&self) -> Throttling {
        lock(&self.shared.limiter).config()
    }

    /// Replaces the throttling limits; every bucket starts full again.
    pub fn set_throttling(&self, throttling: Throttling) -> Result<(), SimError> {
        throttling.validate().map_err(SimError::Options)?;
        lock(&self.shared.limiter).reset(throttling);
        Ok(())
    }

    /// Arms a second writer: another client that edits the site right after a read of it (by
    /// default the app-settings list) is answered, so the reader's next write is based on a stale
    /// read. Its edits are not ARM requests; they are listed by [`Self::second_writer_edits`].
    pub fn add_second_writer(&self, writer: SecondWriter) {
        lock(&self.shared.second_writers).add(writer);
    }

    /// Disarms all second writers that have not used up their firings.
    pub fn clear_second_writers(&self) {
        lock(&self.shared.second_writers).clear();
    }

    /// Every edit second writers made so far, in order.
    pub fn second_writer_edits(&self) -> Vec<SecondWriterEdit> {
        lock(&self.shared.log).edits.clone()
    }

    /// Every ARM request so far, in arrival order (completion order for concurrent ones).
    pub fn requests(&self) -> Vec<ArmRequest> {
        lock(&self.shared.log).arm.clone()
    }

    /// How many ARM requests came so far: cheaper than [`Self::requests`] for a poll.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).arm.len()
    }

    /// The ARM requests after the first `from`, in arrival order.
    pub fn requests_since(&self, from: usize) -> Vec<ArmRequest> {
        lock(&self.shared.log)
            .arm
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// The ARM requests so far that were writes (PUT, PATCH, DELETE), whatever their status.
    pub fn writes(&self) -> Vec<ArmRequest> {
        lock(&self.shared.log)
            .arm
            .iter()
            .filter(|r| r.is_write())
            .cloned()
            .collect()
    }

    /// Every request to the token endpoint so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.log).token.clone()
    }

    /// Every access token handed out so far, so tests can assert none appears in logs or status.
    /// (All of them also start with [`TOKEN_PREFIX`].)
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).all()
    }

    /// Stops accepting connections and waits (at most a few seconds) for open ones to finish.
    /// Other clones stop working too.
    pub async fn shutdown(self) {
        let servers = std::mem::take(&mut *lock(&self.servers));
        // Signal every listener before waiting on any, so they close together.
        let mut tasks = Vec::new();
        for ServerHandle { stop, task } in servers {
            // An error means that server already ended; awaiting its task still applies.
            let _ = stop.send(());
            tasks.push(task);
        }
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "azure-sim server task failed");
            }
        }
    }
}
