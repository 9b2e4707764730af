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

/// True for a 404 from the apiserver.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
