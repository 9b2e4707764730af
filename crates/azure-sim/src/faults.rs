//! Injected failures for ARM requests.

use std::time::Duration;

/// What an injected fault does to a matching ARM request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 with `Retry-After: retry_after_secs` and ARM's `SubscriptionRequestsThrottled` body.
    TooManyRequests { retry_after_secs: u64 },
    /// 500 `InternalServerError`.
    ServerError,
    /// 403 `AuthorizationFailed`, naming the action the request needed, as ARM's RBAC check does.
    Forbidden,
    /// Waits this long, then answers normally.
    Delay(Duration),
    /// Processes the request normally (a write is applied) but answers 202 with an empty body.
    Accepted,
}

/// A fault armed for the next `times` authenticated ARM requests that match `method` (any method
/// when `None`; compared case-insensitively) and whose path contains `path_contains` (ASCII
/// case-insensitively, since ARM paths are case-insensitive; `""` matches every path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// A fault for any method, firing once.
    pub fn new(path_contains: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            method: None,
            path_contains: path_contains.into(),
            kind,
            times: 1,
        }
    }

    /// Restricts the fault to one HTTP method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Fires for this many matching requests instead of once.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path
                .to_ascii_lowercase()
                .contains(&self.path_contains.to_ascii_lowercase())
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
    pub fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let idx = self.armed.iter().position(|f| f.matches(method, path))?;
        let fault = &mut self.armed[idx];
        fault.times -= 1;
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
    fn faults_fire_in_order_for_their_count() {
        let mut faults = Faults::default();
        faults.inject(
            Fault::new("/config/AppSettings", FaultKind::ServerError)
                .method("put")
                .times(2),
        );
        faults.inject(Fault::new("", FaultKind::Forbidden));
        assert_eq!(
            faults.take("GET", "/subscriptions/x/sites/a"),
            Some(FaultKind::Forbidden)
        );
        assert_eq!(faults.take("GET", "/subscriptions/x/sites/a"), None);
        let path = "/subscriptions/x/providers/microsoft.web/sites/a/config/appsettings";
        assert_eq!(faults.take("POST", path), None);
        assert_eq!(faults.take("PUT", path), Some(FaultKind::ServerError));
        assert_eq!(faults.take("PUT", path), Some(FaultKind::ServerError));
        assert_eq!(faults.take("PUT", path), None);
    }

    #[test]
    fn zero_times_is_never_armed() {
        let mut faults = Faults::default();
        faults.inject(Fault::new("", FaultKind::ServerError).times(0));
        assert_eq!(faults.take("GET", "/"), None);
    }
}
