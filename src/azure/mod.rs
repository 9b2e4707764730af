//! Azure access: the small typed ARM client for the App Service endpoints the operator calls
//! ([`arm`]), with its own rate limits per subscription ([`limiter`]) and one caller at a time per
//! site ([`sites`]), and the choice and configuration of its credential ([`credentials`]). Nothing
//! here knows about Kubernetes.

pub mod arm;
pub mod credentials;
pub mod limiter;
pub mod sites;
