//! ARM error responses.
//!
//! Errors raised by ARM itself (authentication, throttling, RBAC, missing scopes, api-version) use
//! ARM's envelope `{"error": {"code", "message"}}`. Validation errors raised by the App Service
//! resource provider use the RP's own envelope `{"Code", "Message", "Target", "Details",
//! "Innererror"}`, which is what Microsoft.Web really returns for them; clients must cope with both.

use crate::ids;
use axum::{
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

/// A complete ARM answer: status, extra headers and an optional JSON body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Value>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    /// ARM's envelope.
    pub fn arm(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(json!({"error": {"code": code, "message": message.into()}})),
        }
    }

    /// The App Service resource provider's envelope, for its validation errors.
    pub fn rp_bad_request(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            headers: Vec::new(),
            body: Some(json!({
                "Code": "BadRequest",
                "Message": message,
                "Target": null,
                "Details": [
                    {"Message": message},
                    {"Code": "BadRequest"},
                    {"ErrorEntity": {"ExtendedCode": "51021", "MessageTemplate": "{0}", "Parameters": [message], "Code": "BadRequest", "Message": message}}
                ],
                "Innererror": null
            })),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        // ARM stamps every response with request and correlation ids.
        for name in ["x-ms-request-id", "x-ms-correlation-request-id"] {
            if let Ok(v) = HeaderValue::from_str(&ids::guid()) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        match self.body {
            Some(body) => (self.status, headers, Json(body)).into_response(),
            None => (self.status, headers).into_response(),
        }
    }
}
