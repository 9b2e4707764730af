//! Crash points for the fault suite: with the `crash-points` feature (on by default, off in the
//! production image), `APPSERVICELINK_CRASH_AT=<point>` makes the process abort — as a SIGKILL or an
//! OOM kill would end it — the first time it reaches `<point>`, between two writes. Without the
//! feature, [`reached`] compiles to nothing.

/// The points between two writes, in the order a first sync reaches them.
pub const POINTS: &[&str] = &[
    // App Service duty: the restore record is written, the ARM write is not.
    "app-service-after-record",
    // App Service duty: the ARM write is done, the link's status does not say so yet.
    "app-service-after-write",
    // Cleanup: the App Services are restored, the Services and the DNS Service are not.
    "cleanup-after-app-services",
    // Service duty: a Service is converted, the status does not say so yet.
    "service-after-apply",
];

/// Aborts the process when `point` is the one `APPSERVICELINK_CRASH_AT` names.
#[cfg(feature = "crash-points")]
pub fn reached(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    if std::env::var("APPSERVICELINK_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("crash point {point} reached: aborting");
        std::process::abort();
    }
}

/// Crash points are compiled out of this build.
#[cfg(not(feature = "crash-points"))]
pub fn reached(_point: &'static str) {}
