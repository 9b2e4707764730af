//! The Microsoft Entra ID (AAD) v2.0 token endpoint, client-credentials grant only.
//!
//! azure_identity 1.0's ClientSecretCredential and WorkloadIdentityCredential both send
//! `POST {authority_host}/{tenant}/oauth2/v2.0/token` as `application/x-www-form-urlencoded` with
//! `grant_type=client_credentials`, `client_id`, `scope` and either `client_secret` or
//! `client_assertion` + `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
//! They do no instance or metadata discovery first, and parse `access_token` and `expires_in` from
//! the answer (on failure: `error_codes` and `error_description`).

use crate::{
    faults::TokenFaultKind,
    ids,
    record::{CredentialKind, TokenRequest},
    state::{lock, Shared},
};
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// Lifetime of an issued token, as AAD usually reports it.
pub const TOKEN_LIFETIME_SECS: u64 = 3599;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What the simulator remembers about a token it issued.
#[derive(Clone, Debug)]
pub(crate) struct IssuedToken {
    pub client_id: String,
    /// The scope without `/.default`, i.e. the token's audience.
    pub resource: String,
    pub expires_at: Instant,
}

#[derive(Debug)]
pub(crate) struct Tokens {
    by_value: HashMap<String, IssuedToken>,
    /// Every token in issue order, for [`crate::AzureSim::issued_tokens`].
    order: Vec<String>,
    /// How long tokens issued from now on live (`expires_in`, and when ARM stops accepting them).
    lifetime: Duration,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::with_lifetime(Duration::from_secs(TOKEN_LIFETIME_SECS))
    }
}

impl Tokens {
    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self {
            by_value: HashMap::new(),
            order: Vec::new(),
            lifetime,
        }
    }

    /// Issues a token; returns it and its lifetime in whole seconds (what `expires_in` says).
    fn issue(&mut self, client_id: &str, resource: &str) -> (String, u64) {
        let token = ids::access_token();
        let secs = self.lifetime.as_secs();
        self.by_value.insert(
            token.clone(),
            IssuedToken {
                client_id: client_id.to_owned(),
                resource: resource.to_owned(),
                expires_at: Instant::now() + Duration::from_secs(secs),
            },
        );
        self.order.push(token.clone());
        (token, secs)
    }

    pub fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    /// Every token issued so far expires now.
    pub fn expire_all(&mut self) {
        let now = Instant::now();
        for issued in self.by_value.values_mut() {
            issued.expires_at = issued.expires_at.min(now);
        }
    }

    pub fn get(&self, token: &str) -> Option<&IssuedToken> {
        self.by_value.get(token)
    }

    pub fn all(&self) -> Vec<String> {
        self.order.clone()
    }
}

/// An error in AAD's OAuth2 shape. `code` is the AADSTS number.
#[derive(Debug)]
struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl AadError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: String) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    fn into_response(self, authority_host: &str) -> Response {
        let (trace_id, correlation_id, timestamp) =
            (ids::guid(), ids::guid(), ids::aad_timestamp());
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("{authority_host}error?code={}", self.code),
        });
        (self.status, no_store(), Json(body)).into_response()
    }
}

fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache"),
        ),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    method: Method,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> =
        form_urlencoded::parse(&body)
            .into_owned()
            .fold(HashMap::new(), |mut acc, (k, v)| {
                acc.entry(k).or_insert(v);
                acc
            });
    let credential = match (
        form.contains_key("client_secret"),
        form.contains_key("client_assertion"),
    ) {
        (true, false) => CredentialKind::Secret,
        (false, true) => CredentialKind::Assertion,
        (false, false) => CredentialKind::None,
        // Rejected below; record it as what it most resembles.
        (true, true) => CredentialKind::Secret,
    };

    let fault = lock(&shared.token_faults).take();
    if let Some(TokenFaultKind::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let (result, retry_after) = match fault {
        Some(TokenFaultKind::Unavailable { retry_after_secs }) => (
            Err(AadError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.".to_owned(),
            )),
            retry_after_secs,
        ),
        Some(TokenFaultKind::ServerError) => (
            Err(AadError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                50000,
                "There was an error issuing a token or an issue with our sign-in service."
                    .to_owned(),
            )),
            None,
        ),
        Some(TokenFaultKind::Delay(_)) | None => (issue(&shared, &tenant, &method, &form), None),
    };
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    tracing::debug!(%tenant, client_id = ?form.get("client_id"), status = status.as_u16(), "token request");
    lock(&shared.log).token.push(TokenRequest {
        tenant,
        grant_type: form.get("grant_type").cloned(),
        client_id: form.get("client_id").cloned(),
        scope: form.get("scope").cloned(),
        credential,
        status: status.as_u16(),
    });

    match result {
        Ok((token, lifetime)) => (
            StatusCode::OK,
            no_store(),
            Json(json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            })),
        )
            .into_response(),
        Err(e) => {
            let mut response = e.into_response(&shared.authority_host);
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

/// Validates a client-credentials request and issues a token, checking in roughly AAD's order.
fn issue(
    shared: &Shared,
    tenant: &str,
    method: &Method,
    form: &HashMap<String, String>,
) -> Result<(String, u64), AadError> {
    if method != Method::POST {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        ));
    }
    if !tenant.eq_ignore_ascii_case(&shared.tenant_id) {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are \
                 signing into the correct cloud. Check with your subscription administrator, this may \
                 happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| AadError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'. (azure-sim implements only client_credentials.)"),
        ));
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| AadError::missing("client_id"))?;
    let scope = form
        .get("scope")
        .ok_or_else(|| AadError::missing("scope"))?;
    let resource = resource_of(scope)?;
    let Some(app) = shared.clients.get(client_id) else {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. \
                 This can happen if the application has not been installed by the administrator of the \
                 tenant or consented to by any user in the tenant. You may have sent your \
                 authentication request to the wrong tenant."
            ),
        ));
    };

    match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => {
            if *secret != app.secret {
                return Err(AadError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is \
                         the client secret value, not the client secret ID, for a secret added to app \
                         '{client_id}'."
                    ),
                ));
            }
        }
        (None, Some(assertion)) => {
            match form.get("client_assertion_type") {
                None => return Err(AadError::missing("client_assertion_type")),
                Some(t) if t != JWT_BEARER => {
                    return Err(AadError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        50027,
                        format!("Invalid client_assertion_type '{t}'; expected '{JWT_BEARER}'."),
                    ))
                }
                Some(_) => {}
            }
            // Real AAD verifies the federated token's signature, issuer, subject and audience
            // against the app's federated identity credentials. The simulator cannot, so it only
            // insists on a JWT's shape.
            if !looks_like_jwt(assertion) {
                return Err(AadError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    50027,
                    "JWT token is invalid or malformed.".to_owned(),
                ));
            }
        }
        (Some(_), Some(_)) => return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002313,
            "Invalid request. Request is malformed or invalid: only one of 'client_secret' and \
                 'client_assertion' may be sent."
                .to_owned(),
        )),
        (None, None) => {
            return Err(AadError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'."
                    .to_owned(),
            ))
        }
    }

    Ok(lock(&shared.tokens).issue(client_id, resource))
}

/// The resource a client-credentials `scope` names: exactly one `<resource>/.default`, optionally
/// beside the OIDC scopes AAD tolerates.
fn resource_of(scope: &str) -> Result<&str, AadError> {
    let resources: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !matches!(*s, "openid" | "profile" | "offline_access"))
        .collect();
    match resources.as_slice() {
        [one] => match one.strip_suffix("/.default") {
            Some(resource) if !resource.is_empty() => Ok(resource),
            _ => Err(AadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {one} is not valid. Client credential flows must have \
                     a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            )),
        },
        _ => Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the \
                 input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )),
    }
}

/// Three non-empty base64url segments separated by dots (a JWS in compact serialization).
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| ids::is_base64url(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            resource_of("https://localhost:1/.default").unwrap(),
            "https://localhost:1"
        );
        assert_eq!(
            resource_of("https://localhost:1//.default openid").unwrap(),
            "https://localhost:1/"
        );
        assert_eq!(
            resource_of("https://x/user.read").unwrap_err().code,
            1002012
        );
        assert_eq!(
            resource_of("a/.default b/.default").unwrap_err().code,
            70011
        );
        assert_eq!(resource_of("").unwrap_err().code, 70011);
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0."));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c\n"));
        assert!(!looks_like_jwt("a.b+.c"));
    }
}
