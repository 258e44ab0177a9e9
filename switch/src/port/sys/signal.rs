//! Waiting for a blocked signal with a timeout (sigtimedwait), for the daemon's main
//! thread. Lives here because it is the crate's only other syscall without a safe
//! wrapper in nix.

use nix::sys::signal::{SigSet, Signal};
use std::time::Duration;

/// Wait up to `timeout` for one of `sigs` (which must be blocked in every thread).
pub fn wait(sigs: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    let set: &libc::sigset_t = sigs.as_ref();
    // SAFETY: sigtimedwait with a valid set and timespec; no siginfo requested.
    let rc = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    if rc > 0 {
        Signal::try_from(rc).ok()
    } else {
        None
    }
}
