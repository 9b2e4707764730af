//! Errors of the simulator's own API (not the HTTP errors it serves; those live with their endpoints).

use crate::store::SiteId;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("generating the test certificates failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("configuring TLS failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("binding the listener failed: {0}")]
    Bind(#[from] std::io::Error),
    #[error("invalid options: {0}")]
    Options(String),
    #[error("no such site: {0}")]
    UnknownSite(SiteId),
}
