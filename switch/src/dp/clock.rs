//! Coarse monotonic time for tables: whole seconds since the process started.
//!
//! Workers read it once per batch and pass `now` down (OVS `pmd_thread_ctx_time_update`).

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Seconds since the first call in this process (starts at 1, so 0 can mean "never").
#[inline]
pub fn now_secs() -> u32 {
    let e = EPOCH.get_or_init(Instant::now);
    (e.elapsed().as_secs() as u32).saturating_add(1)
}

/// How long until [`now_secs`] reaches `at` (zero if it has): the instant a table entry
/// that is live while `now_secs() < at` expires.
pub fn until(at: u32) -> std::time::Duration {
    let e = EPOCH.get_or_init(Instant::now);
    let when = *e + std::time::Duration::from_secs(u64::from(at.saturating_sub(1)));
    when.saturating_duration_since(Instant::now())
}
