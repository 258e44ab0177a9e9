//! The sequence lock guarding one bucket of the [`super::Fdb`] and the
//! [`super::Conntrack`]: even = free, odd = a writer is inside.
//!
//! # Thread safety
//! Writers take it with one CAS (`try_lock`, never waiting on the data path) and
//! release it with a Release store. Readers never write: `read_begin` → read the
//! bucket's atomics → `read_valid`; a changed sequence means a writer interfered and
//! the read is retried (a bounded number of times by the caller).

use std::sync::atomic::{fence, AtomicU32, Ordering};

#[derive(Default)]
pub struct SeqLock(AtomicU32);

impl SeqLock {
    /// Take the lock for writing; `None` if another writer holds it.
    #[inline]
    pub fn try_lock(&self) -> Option<u32> {
        let s = self.0.load(Ordering::Relaxed);
        if s & 1 == 1 {
            return None;
        }
        self.0
            .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(s)
    }

    /// Take the lock, spinning (control thread only: flushes, listings).
    pub fn lock(&self) -> u32 {
        loop {
            if let Some(s) = self.try_lock() {
                return s;
            }
            std::hint::spin_loop();
        }
    }

    /// Release a lock taken as `s`.
    #[inline]
    pub fn unlock(&self, s: u32) {
        self.0.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Start a read: the sequence, or `None` while a writer is inside.
    #[inline]
    pub fn read_begin(&self) -> Option<u32> {
        let s = self.0.load(Ordering::Acquire);
        (s & 1 == 0).then_some(s)
    }

    /// Whether what was read since `read_begin` returned `s` is consistent.
    #[inline]
    pub fn read_valid(&self, s: u32) -> bool {
        fence(Ordering::Acquire);
        self.0.load(Ordering::Relaxed) == s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_excludes_writer_and_invalidates_readers() {
        let l = SeqLock::default();
        let r = l.read_begin().unwrap();
        let w = l.try_lock().unwrap();
        assert!(l.try_lock().is_none());
        assert!(l.read_begin().is_none());
        l.unlock(w);
        assert!(!l.read_valid(r), "a write happened since the read began");
        let r = l.read_begin().unwrap();
        assert!(l.read_valid(r));
    }
}
