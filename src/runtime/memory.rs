//! Gives the memory the caches freed back to the operating system.
//!
//! glibc's malloc keeps the pages of freed chunks inside its heaps, so after a burst (a relist, a
//! namespace of Services created and deleted) the process's RSS stays at its peak although the
//! caches shrank again. `malloc_trim(0)` returns every whole free page of every arena
//! (madvise `MADV_DONTNEED`; glibc manual, "Memory allocation tunables" and malloc_trim(3)); the
//! operator calls it every [`TRIM_EVERY`], which costs a walk of the free lists.

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
