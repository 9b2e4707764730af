//! The request log tests assert on. It never holds secrets, assertions or access tokens: those are
//! exactly what tests check the operator does not leak.

use serde::Serialize;
use serde_json::Value;

/// One ARM request as the simulator answered it (faulted and rejected requests included).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmRequest {
    pub method: String,
    /// The path exactly as sent, without the query string.
    pub path: String,
    pub api_version: Option<String>,
    pub status: u16,
    /// The JSON request body, when there was one and it parsed.
    pub body: Option<Value>,
    /// The client the bearer token was issued to, when the token was valid.
    pub client_id: Option<String>,
    /// The `Retry-After` (seconds) the answer carried: on every 429, from a bucket or a fault.
    pub retry_after: Option<u64>,
    /// When the request arrived, so tests can check a client waited as `Retry-After` asked.
    #[serde(skip)]
    pub at: std::time::Instant,
}

impl ArmRequest {
    /// PUT, PATCH and DELETE: the requests that change something.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "PATCH" | "DELETE")
    }
}

/// How a token request authenticated the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CredentialKind {
    /// `client_secret` (ClientSecretCredential).
    Secret,
    /// `client_assertion` (WorkloadIdentityCredential, ClientAssertionCredential, certificates).
    Assertion,
    /// Neither was sent.
    None,
}

/// One request to the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRequest {
    pub tenant: String,
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub credential: CredentialKind,
    pub status: u16,
}

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub arm: Vec<ArmRequest>,
    pub token: Vec<TokenRequest>,
    pub edits: Vec<crate::SecondWriterEdit>,
}
