//! State shared by the HTTP handlers and the in-process API.

use crate::{
    faults::{Faults, TokenFaults},
    record::Recorder,
    second_writer::SecondWriters,
    store::Store,
    throttle::Limiter,
    token::Tokens,
};
use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

/// A registered application (service principal) that may request tokens.
#[derive(Debug)]
pub(crate) struct ClientApp {
    pub secret: String,
    /// The service principal's object id, which ARM quotes in authorization errors.
    pub object_id: String,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub tenant_id: String,
    pub location: String,
    /// `https://localhost:port`, no trailing slash.
    pub arm_endpoint: String,
    /// Token audiences ARM accepts: its endpoint under each name in the certificate, without a
    /// trailing slash (a trailing slash is accepted too).
    pub arm_audiences: Vec<String>,
    /// `https://localhost:port/` (a different port from ARM), with the trailing slash
    /// AZURE_AUTHORITY_HOST conventionally has.
    pub authority_host: String,
    pub clients: BTreeMap<String, ClientApp>,
    pub store: Mutex<Store>,
    pub tokens: Mutex<Tokens>,
    pub faults: Mutex<Faults>,
    pub token_faults: Mutex<TokenFaults>,
    /// ARM's token buckets.
    pub limiter: Mutex<Limiter>,
    /// Lock order: `store` before `second_writers` before `log`.
    pub second_writers: Mutex<SecondWriters>,
    pub log: Mutex<Recorder>,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves its data consistent, and a
/// panicking test thread must not take the simulator down for the others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
