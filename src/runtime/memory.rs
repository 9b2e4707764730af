//! Keeps the operator's RSS close to what its caches hold, under glibc's malloc.
//!
//! - glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after the
//!   first list response the large transient buffers of every later one come from the heap, and
//!   the small cache entries allocated between them pin its pages. [`tune`] fixes the threshold at
//!   its initial 128 KiB, which turns the adjustment off (mallopt(3), `M_MMAP_THRESHOLD`).
//! - glibc keeps the pages of freed chunks inside its heaps, so after a burst (a relist, a
//!   namespace of Services created and deleted) RSS stays at its peak although the caches shrank
//!   again. `malloc_trim(0)` returns every whole free page of every arena (malloc_trim(3)); the
//!   operator calls it every [`TRIM_EVERY`], which costs a walk of the free lists.

use std::time::Duration;

/// How often freed memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Gives freed memory back every [`TRIM_EVERY`], for as long as the process runs.
pub async fn give_back_periodically() {
    let mut ticks = tokio::time::interval(TRIM_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        give_back();
    }
}

/// Large blocks (at least 128 KiB: list responses, their decoded pages) are mapped and unmapped on
/// their own instead of coming from the heap. Called once, at start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    // SAFETY: mallopt takes two integers and only sets a malloc parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Other allocators have no such threshold to fix.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Returns the whole free pages of every malloc arena to the operating system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn give_back() {
    // SAFETY: malloc_trim takes no pointers and only rearranges glibc's own free lists, under the
    // arenas' locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, macOS's) return memory themselves; nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() {}
