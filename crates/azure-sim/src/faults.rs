//! Injected failures for ARM requests and for the token endpoint.

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

/// What an injected fault does to a request to the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFaultKind {
    /// 503 `temporarily_unavailable` (AADSTS90033, "A transient error has occurred. Please try
    /// again."), as Entra ID answers during an outage; `Retry-After` when given.
    Unavailable { retry_after_secs: Option<u64> },
    /// 500 `server_error` (AADSTS50000, "There was an error issuing a token or an issue with our
    /// sign-in service.").
    ServerError,
    /// Waits this long, then answers normally.
    Delay(Duration),
}

/// A fault armed for the next `times` token requests, whatever they ask (an outage is not selective).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFault {
    pub kind: TokenFaultKind,
    /// How many requests it answers; `usize::MAX` until [`crate::AzureSim::clear_token_faults`].
    pub times: usize,
}

impl TokenFault {
    /// A fault firing once.
    pub fn new(kind: TokenFaultKind) -> Self {
        Self { kind, times: 1 }
    }

    /// Fires for this many token requests instead of once.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Fires for every token request until the token faults are cleared.
    pub fn until_cleared(self) -> Self {
        self.times(usize::MAX)
    }
}

/// Armed token-endpoint faults, consulted in the order they were injected.
#[derive(Debug, Default)]
pub(crate) struct TokenFaults {
    armed: Vec<TokenFault>,
}

impl TokenFaults {
    pub fn inject(&mut self, fault: TokenFault) {
        if fault.times > 0 {
            self.armed.push(fault);
        }
    }

    /// Consumes one use of the first armed fault, if any.
    pub fn take(&mut self) -> Option<TokenFaultKind> {
        let fault = self.armed.first_mut()?;
        if fault.times != usize::MAX {
            fault.times -= 1;
        }
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.armed.remove(0);
        }
        Some(kind)
    }

    pub fn clear(&mut self) {
        self.armed.clear();
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
    fn token_faults_fire_in_order_and_until_cleared() {
        let mut faults = TokenFaults::default();
        faults.inject(TokenFault::new(TokenFaultKind::ServerError).times(2));
        faults.inject(
            TokenFault::new(TokenFaultKind::Unavailable {
                retry_after_secs: None,
            })
            .until_cleared(),
        );
        assert_eq!(faults.take(), Some(TokenFaultKind::ServerError));
        assert_eq!(faults.take(), Some(TokenFaultKind::ServerError));
        for _ in 0..100 {
            assert!(matches!(
                faults.take(),
                Some(TokenFaultKind::Unavailable { .. })
            ));
        }
        faults.clear();
        assert_eq!(faults.take(), None);
    }

    #[test]
    fn zero_times_is_never_armed() {
        let mut faults = Faults::default();
        faults.inject(Fault::new("", FaultKind::ServerError).times(0));
        assert_eq!(faults.take("GET", "/"), None);
    }
}
