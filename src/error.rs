//! The error every layer shares: a Kubernetes API call that failed, with what the operator was
//! doing. Each duty wraps it in its own error type ([`crate::duties`]), which says which condition
//! the failure belongs to; the pipeline's error ([`crate::reconcile::Error`]) wraps those.

/// A Kubernetes API call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct KubeError {
    /// What the operator was doing, naming the object.
    pub action: String,
    /// The API error.
    #[source]
    pub source: Box<kube::Error>,
}

impl KubeError {
    /// Wraps a kube error with what the operator was doing.
    pub fn new(action: impl Into<String>, source: kube::Error) -> Self {
        Self {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// Short category for metrics: refused for lack of permission, lost to a concurrent write,
    /// refused otherwise by the apiserver, or not answered.
    pub fn category(&self) -> &'static str {
        match self.source.as_ref() {
            kube::Error::Api(status) if status.code == 403 => "KubeForbidden",
            kube::Error::Api(status) if status.code == 409 => "KubeConflict",
            kube::Error::Api(_) => "KubeApi",
            _ => "KubeClient",
        }
    }
}

impl KubeError {
    /// True when retrying alone will not help: the apiserver refused the request itself (RBAC, an
    /// admission policy such as Azure Policy, Gatekeeper or Kyverno, a validation rule, a size or
    /// quota limit), as opposed to a conflict, an outage or a timeout.
    pub fn needs_human(&self) -> bool {
        matches!(self.source.as_ref(), kube::Error::Api(s) if matches!(s.code, 400 | 403 | 413 | 422))
    }

    /// What to do about it, for a condition message.
    pub fn advice(&self) -> &'static str {
        match self.source.as_ref() {
            kube::Error::Api(s) if s.code == 403 => {
                "the apiserver forbade it: an admission policy (Azure Policy, Gatekeeper, Kyverno, a ValidatingAdmissionPolicy) refused the object, or the operator's RBAC lacks the permission; fix that, the operator retries with backoff"
            }
            _ if self.needs_human() => {
                "the apiserver refused the object; fix what its message names, the operator retries with backoff"
            }
            _ => "retrying with backoff",
        }
    }
}

/// True for a 404 from the apiserver.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
