//! Injected faults: an apiserver on a bad day. Requests answered with 5xx, 429 or 410 Gone, requests that
//! time out or hang, watch streams cut mid-stream (`SimCluster::drop_watches`) and history compacted
//! under the watchers (`SimCluster::compact`), each as a real apiserver does it.

use std::time::Duration;

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 `InternalError`, as the apiserver answers when etcd fails a request:
    /// `Internal error occurred: etcdserver: request timed out`. Nothing is written.
    InternalError,
    /// 503 `ServiceUnavailable`, as an apiserver that is starting, shutting down or behind an unhealthy
    /// load balancer answers; with `Retry-After` (and `details.retryAfterSeconds`) when given. Nothing is
    /// written.
    ServiceUnavailable { retry_after_secs: Option<u64> },
    /// 429 `TooManyRequests` with `Retry-After`, as max-in-flight or API Priority and Fairness rejects a
    /// request. Nothing is written.
    TooManyRequests { retry_after_secs: u64 },
    /// The request takes `after`, then is answered 504 `Timeout` (`Timeout: request did not complete
    /// within the allotted timeout`), as the apiserver's `--request-timeout` filter does (60 s by
    /// default). As there, the handler keeps running behind the timeout: a write is applied, only its
    /// answer is lost.
    Timeout { after: Duration },
    /// The request is never answered: the connection stays open until the client gives up (a dead peer,
    /// a stuck proxy). It is recorded at once with status 0.
    Hang,
    /// 500 with etcd's `etcdserver: request is too large` and no reason, as a write is answered when
    /// the object it would store is over etcd's `--max-request-bytes` (1.5 MiB): what a status grown
    /// too big gets. Nothing is written. (kube-sim refuses such objects by their size too; this
    /// refuses a small one, so a test need not build 1.5 MiB.)
    EtcdTooLarge,
    /// 410 `Expired` at once, as a request from a compacted resourceVersion is answered when it does not
    /// go through the watch cache: `too old resource version: <requested> (<current>)`. (A watch the
    /// watch cache serves gets 200 and an `ERROR` event instead: see `SimCluster::compact`.)
    Expired,
}

impl FaultKind {
    /// Whether the request behind the fault is still carried out (only a [`FaultKind::Timeout`]'s).
    pub(crate) fn runs_request(&self) -> bool {
        matches!(self, FaultKind::Timeout { .. })
    }
}

/// A fault armed for the next `times` requests that match: one of `verbs` (the apiserver's verbs: `get`,
/// `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; any when empty), a path
/// containing `path_contains` (`""` matches every path), and a user agent not starting with
/// `except_user_agent` (so a test can fault the operator's requests and not its own kubectl's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub verbs: Vec<String>,
    pub path_contains: String,
    pub except_user_agent: Option<String>,
    pub kind: FaultKind,
    /// How many matching requests it answers; `usize::MAX` until [`crate::SimCluster::clear_faults`].
    pub times: usize,
}

/// The verbs that change state.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl Fault {
    /// A fault for any verb and user agent, firing once.
    pub fn new(path_contains: impl Into<String>, kind: FaultKind) -> Self {
        Fault {
            verbs: Vec::new(),
            path_contains: path_contains.into(),
            except_user_agent: None,
            kind,
            times: 1,
        }
    }

    /// Restricts the fault to these verbs.
    pub fn verbs(mut self, verbs: &[&str]) -> Self {
        self.verbs = verbs.iter().map(|v| v.to_string()).collect();
        self
    }

    /// Restricts the fault to writes (create, update, patch, delete, deletecollection).
    pub fn writes(self) -> Self {
        self.verbs(&WRITE_VERBS)
    }

    /// Leaves requests whose user agent starts with `prefix` alone (e.g. `"kubectl"`).
    pub fn except_user_agent(mut self, prefix: impl Into<String>) -> Self {
        self.except_user_agent = Some(prefix.into());
        self
    }

    /// Fires for this many matching requests instead of once.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Fires for every matching request until the faults are cleared.
    pub fn until_cleared(self) -> Self {
        self.times(usize::MAX)
    }

    fn matches(&self, verb: &str, path: &str, user_agent: &str) -> bool {
        (self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb))
            && path.contains(&self.path_contains)
            && self
                .except_user_agent
                .as_deref()
                .is_none_or(|prefix| !user_agent.starts_with(prefix))
    }
}

/// Armed faults, consulted in the order they were injected.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Fault>,
}

impl Faults {
    pub fn inject(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.armed.push(fault);
        }
    }

    /// Consumes one use of the first fault matching the request, if any.
    pub fn take(&mut self, verb: &str, path: &str, user_agent: &str) -> Option<FaultKind> {
        let idx = self
            .armed
            .iter()
            .position(|f| f.matches(verb, path, user_agent))?;
        let fault = &mut self.armed[idx];
        if fault.times != usize::MAX {
            fault.times -= 1;
        }
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.armed.remove(idx);
        }
        Some(kind)
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_verbs_paths_and_user_agents_in_order() {
        let mut faults = Faults::default();
        faults.inject(
            Fault::new("/services", FaultKind::InternalError)
                .verbs(&["list", "watch"])
                .except_user_agent("kubectl")
                .times(2),
        );
        faults.inject(Fault::new("", FaultKind::Expired).writes());
        assert_eq!(
            faults.take("list", "/api/v1/services", "kubectl/v1.32"),
            None
        );
        assert_eq!(
            faults.take("get", "/api/v1/namespaces/a/services/b", ""),
            None
        );
        assert_eq!(
            faults.take("watch", "/api/v1/services", ""),
            Some(FaultKind::InternalError)
        );
        assert_eq!(
            faults.take("patch", "/api/v1/namespaces/a/services/b", ""),
            Some(FaultKind::Expired)
        );
        assert_eq!(
            faults.take("patch", "/api/v1/namespaces/a/services/b", ""),
            None
        );
        assert_eq!(
            faults.take("list", "/api/v1/services", ""),
            Some(FaultKind::InternalError)
        );
        assert_eq!(faults.take("list", "/api/v1/services", ""), None);
    }

    #[test]
    fn until_cleared_never_runs_out() {
        let mut faults = Faults::default();
        faults.inject(Fault::new("", FaultKind::Hang).until_cleared());
        for _ in 0..1000 {
            assert_eq!(faults.take("get", "/", ""), Some(FaultKind::Hang));
        }
        faults.clear();
        assert_eq!(faults.take("get", "/", ""), None);
        faults.inject(Fault::new("", FaultKind::Hang).times(0));
        assert_eq!(faults.take("get", "/", ""), None);
    }
}
