//! Azure access: the small typed ARM client for the App Service endpoints the operator calls
//! ([`arm`]), and the choice and configuration of its credential ([`credentials`]). Nothing here
//! knows about Kubernetes.

pub mod arm;
pub mod credentials;
