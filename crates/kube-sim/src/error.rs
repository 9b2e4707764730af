//! API errors, rendered as `meta/v1 Status` objects exactly like the apiserver does.

use serde_json::{json, Value};

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldManagerConflict`, ...
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// `field.Invalid`: `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        let message = format!("Invalid value: {}: {}", go_value(value), detail.as_ref());
        Cause::new("FieldValueInvalid", field, message)
    }

    /// `field.Required`: `Required value` (+ detail).
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause::new("FieldValueRequired", field, message)
    }

    /// `field.Forbidden`: `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }

    /// `field.NotSupported`: `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[Value]) -> Self {
        let list: Vec<String> = supported.iter().map(go_value).collect();
        let message = format!(
            "Unsupported value: {}: supported values: {}",
            go_value(value),
            list.join(", ")
        );
        Cause::new("FieldValueNotSupported", field, message)
    }

    /// `field.TooLong`.
    pub fn too_long(field: impl Into<String>, max: u64) -> Self {
        Cause::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        )
    }

    /// `field.TooMany`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: u64) -> Self {
        Cause::new(
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {max} items"),
        )
    }

    /// How the apiserver prints one field error: `<field>: <message>`.
    pub fn to_line(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Formats a value the way Go's field errors print it (`%q` for strings, plain for numbers).
pub fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Every error the simulated apiserver can answer with.
#[derive(Debug, Clone)]
pub enum ApiError {
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    /// A URL that names no known resource.
    NoSuchResource,
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    /// Optimistic-concurrency failure (stale `resourceVersion` or precondition).
    Conflict {
        group: String,
        resource: String,
        name: String,
        detail: String,
    },
    /// Server-side apply conflicts with other field managers.
    ApplyConflict {
        message: String,
        causes: Vec<Cause>,
    },
    Invalid {
        kind: String,
        group: String,
        name: String,
        causes: Vec<Cause>,
    },
    BadRequest(String),
    /// A 422 without field causes (e.g. a JSON patch operation that failed).
    Unprocessable(String),
    Forbidden(String),
    MethodNotAllowed(String),
    UnsupportedMediaType(String),
    Expired(String),
    Internal(String),
    /// Refused by validating admission: `<resource> "<name>" is forbidden: <message>`, with the code and
    /// reason the policy chose (403 Forbidden, 422 Invalid, ...) and the message as the only cause.
    Admission {
        group: String,
        resource: String,
        name: String,
        reason: &'static str,
        code: u16,
        message: String,
    },
    /// A request body over the apiserver's limit (413).
    TooLarge(String),
    /// 503: the apiserver cannot serve the request now; `details.retryAfterSeconds` (and the
    /// `Retry-After` header) when it says when to come back.
    ServiceUnavailable {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// 504 from the request timeout filter: `Timeout: <message>`.
    Timeout(String),
    /// An error from storage that the apiserver passes on as it is: 500 without a reason
    /// (e.g. `etcdserver: request is too large`).
    Storage(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for ApiError {}

fn summarize(causes: &[Cause]) -> String {
    match causes {
        [one] => one.to_line(),
        many => format!(
            "[{}]",
            many.iter()
                .map(Cause::to_line)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `resource.group`, or just `resource` for the core group (how the apiserver names a GroupResource).
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }

    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        ApiError::Conflict {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
            detail: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        }
    }

    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        ApiError::Invalid {
            kind: kind.into(),
            group: group.into(),
            name: name.into(),
            causes,
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchResource => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Expired(_) => 410,
            ApiError::Internal(_) | ApiError::Storage(_) => 500,
            ApiError::Admission { code, .. } => *code,
            ApiError::TooLarge(_) => 413,
            ApiError::ServiceUnavailable { .. } => 503,
            ApiError::Timeout(_) => 504,
        }
    }

    /// The `Status` reason; empty for errors the apiserver does not classify (the field is then left out).
    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchResource => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Expired(_) => "Expired",
            ApiError::Internal(_) => "InternalError",
            ApiError::Admission { reason, .. } => reason,
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::Storage(_) => "",
            ApiError::ServiceUnavailable { .. } => "ServiceUnavailable",
            ApiError::Timeout(_) => "Timeout",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            } => {
                format!("{} {name:?} not found", qualified(resource, group))
            }
            ApiError::AlreadyExists {
                group,
                resource,
                name,
            } => {
                format!("{} {name:?} already exists", qualified(resource, group))
            }
            ApiError::Conflict {
                group,
                resource,
                name,
                detail,
            } => {
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: {detail}",
                    qualified(resource, group)
                )
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                format!(
                    "{} {name:?} is invalid: {}",
                    qualified(kind, group),
                    summarize(causes)
                )
            }
            ApiError::NoSuchResource => "the server could not find the requested resource".into(),
            ApiError::Admission {
                group,
                resource,
                name,
                message,
                ..
            } => format!(
                "{} {name:?} is forbidden: {message}",
                qualified(resource, group)
            ),
            ApiError::ApplyConflict { message, .. }
            | ApiError::ServiceUnavailable { message, .. } => message.clone(),
            ApiError::Timeout(m) => format!("Timeout: {m}"),
            ApiError::BadRequest(m)
            | ApiError::Unprocessable(m)
            | ApiError::Forbidden(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Expired(m)
            | ApiError::Internal(m)
            | ApiError::TooLarge(m)
            | ApiError::Storage(m) => m.clone(),
        }
    }

    fn details(&self) -> Option<Value> {
        let causes = |causes: &[Cause]| -> Value {
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect()
        };
        let with_group = |mut d: Value, group: &str| {
            if !group.is_empty() {
                d["group"] = json!(group);
            }
            d
        };
        match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Conflict {
                group,
                resource,
                name,
                ..
            } => Some(with_group(json!({"name": name, "kind": resource}), group)),
            ApiError::Invalid {
                kind,
                group,
                name,
                causes: c,
            } => Some(with_group(
                json!({"name": name, "kind": kind, "causes": causes(c)}),
                group,
            )),
            ApiError::ApplyConflict { causes: c, .. } => Some(json!({"causes": causes(c)})),
            ApiError::Admission {
                group,
                resource,
                name,
                message,
                ..
            } => Some(with_group(
                json!({"name": name, "kind": resource, "causes": [{"message": message}]}),
                group,
            )),
            ApiError::NoSuchResource | ApiError::Timeout(_) => Some(json!({})),
            ApiError::ServiceUnavailable {
                retry_after_secs: Some(secs),
                ..
            } if *secs > 0 => Some(json!({"retryAfterSeconds": secs})),
            _ => None,
        }
    }

    /// The `Status` body the apiserver would send.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "code": self.code(),
        });
        if !self.reason().is_empty() {
            status["reason"] = json!(self.reason());
        }
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

impl ApiError {
    /// The `Retry-After` the apiserver sends with this error (from `details.retryAfterSeconds`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::ServiceUnavailable {
                retry_after_secs: Some(secs),
                ..
            } if *secs > 0 => Some(*secs),
            _ => None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_matches_apiserver_format() {
        let err = ApiError::invalid(
            "AppServiceLink",
            "appservicelink.io",
            "x",
            vec![Cause::invalid(
                "spec.dns.zone",
                &json!("string"),
                "must be a DNS name",
            )],
        );
        assert_eq!(
            err.to_status()["message"],
            r#"AppServiceLink.appservicelink.io "x" is invalid: spec.dns.zone: Invalid value: "string": must be a DNS name"#
        );
        assert_eq!(err.code(), 422);
    }

    #[test]
    fn not_found_names_the_group_resource() {
        let err = ApiError::not_found("apps", "deployments", "web");
        let status = err.to_status();
        assert_eq!(status["message"], r#"deployments.apps "web" not found"#);
        assert_eq!(status["details"]["group"], "apps");
        assert_eq!(status["reason"], "NotFound");
    }
}
