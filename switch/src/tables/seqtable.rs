//! One concurrent table for the [`super::Fdb`] and the [`super::Conntrack`]: a fixed-size,
//! set-associative hash table of `buckets × WAYS` slots whose lookups take no lock.
//!
//! A slot is `KW` key words and `VW` value words (`AtomicU64`). A key's first word is
//! never 0 for a used slot (callers set a "valid" bit), so 0 marks a free slot. The table
//! knows nothing about ages or timeouts: readers get the raw value words and judge
//! liveness themselves; writers get the whole bucket through a [`BucketWriter`] and pick
//! the slot (update, free, expired, oldest) by their own policy.
//!
//! Sized once from the cap, so a flood of keys cannot grow memory. Hashing is keyed with
//! a per-table random seed, so an attacker cannot aim many keys at one bucket.
//!
//! # Thread safety
//! Every bucket carries a [`SeqLock`]. Any thread may write (workers learning or adding
//! connections, the control thread flushing); a writer takes the bucket with one CAS and
//! never waits on the data path ([`SeqTable::write`] gives `None` when the bucket is
//! busy; [`SeqTable::write_spin`] spins, control thread only). Readers never write: they
//! read the sequence, the slots and the sequence again, and retry a bounded number of
//! times; a lookup that could not get a consistent read says [`Lookup::Busy`], never
//! "absent", so no caller creates state because of a contended bucket.
//!
//! Orderings (the argument is the one of crossbeam-utils' `SeqLock`, and of Boehm,
//! "Can seqlocks get along with programming language memory models?", 2012):
//! - writer: CAS even→odd (Acquire), then `fence(Release)`, then the data stores
//!   (Relaxed), then the store of the next even value (Release);
//! - reader: load sequence (Acquire), data loads (Relaxed), `fence(Acquire)`, load
//!   sequence (Relaxed) and compare.
//!
//! If a reader's data load sees a store made after a writer's `fence(Release)`, the
//! reader's `fence(Acquire)` synchronises with that fence, so the reader's second
//! sequence load sees the odd value (or later) and the read is discarded. Without the
//! writer's fence, nothing orders the odd sequence before the data stores: on a weakly
//! ordered CPU (aarch64) a reader could see the new key with the old value and both
//! sequence loads even and equal. If the first sequence load (Acquire) sees the even
//! value of an unlock (Release), every data store of that write is visible. The loom
//! test at the bottom checks both halves.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use std::hash::BuildHasher;

/// Slots per bucket.
pub const WAYS: usize = 4;
/// Consistent-read attempts before a lookup reports [`Lookup::Busy`].
const READ_RETRIES: usize = 8;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    Absent,
    /// Writers kept the bucket busy for every attempt: the answer is unknown.
    Busy,
}

impl<T> Lookup<T> {
    /// The value if found; `Absent` and `Busy` alike as `None` (for callers whose
    /// "not found" is harmless, e.g. an FDB miss floods).
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(v) => Some(v),
            _ => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(v) => Lookup::Found(f(v)),
            Lookup::Absent => Lookup::Absent,
            Lookup::Busy => Lookup::Busy,
        }
    }
}

/// The bucket's sequence: even = free, odd = a writer is inside.
struct SeqLock(AtomicU32);

impl SeqLock {
    fn new() -> SeqLock {
        SeqLock(AtomicU32::new(0))
    }

    #[inline]
    fn try_lock(&self) -> Option<u32> {
        let s = self.0.load(Ordering::Relaxed);
        if s & 1 == 1 {
            return None;
        }
        // Acquire: this writer sees every store of the previous writer (which released
        // with the even value we read).
        self.0
            .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // Release fence: orders the odd sequence before this writer's data stores, so a
        // reader that sees any of them also sees the sequence changed (module doc).
        fence(Ordering::Release);
        Some(s)
    }

    #[inline]
    fn unlock(&self, s: u32) {
        // Release: the data stores happen before the next even value.
        self.0.store(s.wrapping_add(2), Ordering::Release);
    }

    #[inline]
    fn read_begin(&self) -> Option<u32> {
        // Acquire: pairs with `unlock`'s Release (all data of that write visible).
        let s = self.0.load(Ordering::Acquire);
        (s & 1 == 0).then_some(s)
    }

    #[inline]
    fn read_valid(&self, s: u32) -> bool {
        // Acquire fence: pairs with `try_lock`'s Release fence (module doc).
        fence(Ordering::Acquire);
        self.0.load(Ordering::Relaxed) == s
    }
}

#[repr(align(64))]
struct Bucket<const KW: usize, const VW: usize> {
    seq: SeqLock,
    keys: [[AtomicU64; KW]; WAYS],
    vals: [[AtomicU64; VW]; WAYS],
}

impl<const KW: usize, const VW: usize> Bucket<KW, VW> {
    fn new() -> Self {
        Bucket {
            seq: SeqLock::new(),
            keys: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            vals: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// A writer's view of one bucket, held under the bucket's lock.
pub struct BucketWriter<'a, const KW: usize, const VW: usize> {
    b: &'a Bucket<KW, VW>,
}

impl<const KW: usize, const VW: usize> BucketWriter<'_, KW, VW> {
    /// Key words of slot `w` (first word 0: free).
    #[inline]
    pub fn key(&self, w: usize) -> [u64; KW] {
        // Relaxed: we hold the lock; the lock's Acquire made earlier writes visible.
        std::array::from_fn(|i| self.b.keys[w][i].load(Ordering::Relaxed))
    }

    #[inline]
    pub fn val(&self, w: usize) -> [u64; VW] {
        std::array::from_fn(|i| self.b.vals[w][i].load(Ordering::Relaxed))
    }

    /// The slot holding `key`, if any.
    #[inline]
    pub fn find(&self, key: &[u64; KW]) -> Option<usize> {
        (0..WAYS).find(|&w| self.key(w) == *key)
    }

    #[inline]
    pub fn set(&self, w: usize, key: &[u64; KW], val: &[u64; VW]) {
        // Relaxed: ordered after the odd sequence by the lock's Release fence and
        // before the even one by the unlock's Release store.
        for (a, v) in self.b.keys[w].iter().zip(key) {
            a.store(*v, Ordering::Relaxed);
        }
        self.set_val(w, val);
    }

    #[inline]
    pub fn set_val(&self, w: usize, val: &[u64; VW]) {
        for (a, v) in self.b.vals[w].iter().zip(val) {
            a.store(*v, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn clear(&self, w: usize) {
        self.set(w, &[0; KW], &[0; VW]);
    }
}

/// The table. `KW` key words, `VW` value words per slot.
pub struct SeqTable<const KW: usize, const VW: usize> {
    buckets: Box<[Bucket<KW, VW>]>,
    mask: usize,
    seed: u64,
}

impl<const KW: usize, const VW: usize> SeqTable<KW, VW> {
    /// A table of at least `cap` slots (buckets rounded up to a power of two).
    pub fn new(cap: usize) -> Self {
        let nb = cap.div_ceil(WAYS).max(1).next_power_of_two();
        SeqTable {
            buckets: (0..nb).map(|_| Bucket::new()).collect(),
            mask: nb - 1,
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5157_u64),
        }
    }

    /// Number of slots (the cap).
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    #[inline]
    fn bucket(&self, key: &[u64; KW]) -> &Bucket<KW, VW> {
        let mut x = self.seed;
        for k in key {
            x = (x ^ k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
        }
        let h = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        &self.buckets[((h >> 32) as usize) & self.mask]
    }

    /// The value words stored under `key`. Never blocks.
    #[inline]
    pub fn lookup(&self, key: &[u64; KW]) -> Lookup<[u64; VW]> {
        let b = self.bucket(key);
        for _ in 0..READ_RETRIES {
            let Some(s) = b.seq.read_begin() else {
                std::hint::spin_loop();
                continue;
            };
            let mut found = None;
            for w in 0..WAYS {
                // Relaxed: validated by `read_valid` (module doc).
                if (0..KW).all(|i| b.keys[w][i].load(Ordering::Relaxed) == key[i]) {
                    found = Some(std::array::from_fn(|i| {
                        b.vals[w][i].load(Ordering::Relaxed)
                    }));
                    break;
                }
            }
            if !b.seq.read_valid(s) {
                continue;
            }
            return match found {
                Some(v) => Lookup::Found(v),
                None => Lookup::Absent,
            };
        }
        Lookup::Busy
    }

    /// Run `f` on `key`'s bucket under its write lock; `None` (and `f` not run) if
    /// another writer holds it. Never waits.
    #[inline]
    pub fn write<R>(
        &self,
        key: &[u64; KW],
        f: impl FnOnce(&BucketWriter<'_, KW, VW>) -> R,
    ) -> Option<R> {
        let b = self.bucket(key);
        let s = b.seq.try_lock()?;
        let r = f(&BucketWriter { b });
        b.seq.unlock(s);
        Some(r)
    }

    /// Like [`SeqTable::write`], spinning until the bucket is free. Control thread only
    /// (flushes, listings): never on the data path.
    pub fn write_spin<R>(
        &self,
        key: &[u64; KW],
        mut f: impl FnMut(&BucketWriter<'_, KW, VW>) -> R,
    ) -> R {
        loop {
            if let Some(r) = self.write(key, &mut f) {
                return r;
            }
            std::hint::spin_loop();
        }
    }

    /// Hold `key`'s bucket as a writer until the guard drops (tests of the callers'
    /// handling of busy buckets).
    #[cfg(test)]
    pub(crate) fn hold(&self, key: &[u64; KW]) -> Held<'_> {
        let b = self.bucket(key);
        let s = b.seq.try_lock().expect("bucket free");
        Held { seq: &b.seq, s }
    }

    /// Run `f` on every bucket under its write lock, spinning until each is free
    /// (control thread only).
    pub fn for_each_bucket(&self, mut f: impl FnMut(&BucketWriter<'_, KW, VW>)) {
        for b in self.buckets.iter() {
            let s = loop {
                if let Some(s) = b.seq.try_lock() {
                    break s;
                }
                std::hint::spin_loop();
            };
            f(&BucketWriter { b });
            b.seq.unlock(s);
        }
    }
}

/// A bucket held by [`SeqTable::hold`].
#[cfg(test)]
pub(crate) struct Held<'a> {
    seq: &'a SeqLock,
    s: u32,
}

#[cfg(test)]
impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.seq.unlock(self.s);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    const VALID: u64 = 1 << 63;

    #[test]
    fn write_then_lookup_and_busy() {
        let t: SeqTable<2, 3> = SeqTable::new(16);
        let k = [VALID | 1, 2];
        assert_eq!(t.lookup(&k), Lookup::Absent);
        t.write(&k, |b| b.set(0, &k, &[7, 8, 9]));
        assert_eq!(t.lookup(&k), Lookup::Found([7, 8, 9]));
        // A writer inside the bucket: other writers are refused, readers say Busy.
        let b = t.bucket(&k);
        let s = b.seq.try_lock().unwrap();
        assert!(t.write(&k, |_| ()).is_none());
        assert_eq!(t.lookup(&k), Lookup::Busy);
        b.seq.unlock(s);
        assert_eq!(t.lookup(&k), Lookup::Found([7, 8, 9]));
    }

    /// Stress: writers keep rewriting a few keys with values whose words are all
    /// derived from one counter; a reader must never accept a mix of two writes (a
    /// torn read) nor a value written for another key.
    #[test]
    fn no_torn_reads_under_concurrent_writers() {
        let t: Arc<SeqTable<2, 3>> = Arc::new(SeqTable::new(8));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keys: Vec<[u64; 2]> = (0..16u64).map(|i| [VALID | i, i * 31]).collect();
        let mut hs = Vec::new();
        for wid in 0..2u64 {
            let (t, keys, stop) = (t.clone(), keys.clone(), stop.clone());
            hs.push(std::thread::spawn(move || {
                let mut n = wid << 40;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for k in &keys {
                        n += 1;
                        let v = [n, n ^ k[0], n.wrapping_mul(3) ^ k[1]];
                        t.write(k, |b| {
                            let w = b.find(k).unwrap_or((n % WAYS as u64) as usize);
                            b.set(w, k, &v);
                        });
                    }
                }
            }));
        }
        let mut found = 0u64;
        let mut busy = 0u64;
        for _ in 0..200_000 {
            for k in &keys {
                match t.lookup(k) {
                    Lookup::Found(v) => {
                        found += 1;
                        assert_eq!(v[1], v[0] ^ k[0], "torn or foreign value {v:?} for {k:?}");
                        assert_eq!(v[2], v[0].wrapping_mul(3) ^ k[1], "torn value {v:?}");
                    }
                    Lookup::Busy => busy += 1,
                    Lookup::Absent => {}
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        assert!(found > 0, "no lookup ever succeeded (busy {busy})");
    }
}

/// Model check of the ordering argument (`RUSTFLAGS="--cfg loom" cargo test -p vswitch
/// --release --lib seqtable`): a writer replaces one slot's key and value while a reader
/// looks the new key up; the reader must either see the whole new value or report
/// absent/busy, in every interleaving and every visibility the memory model allows.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn reader_never_accepts_new_key_with_old_value() {
        loom::model(|| {
            let t: Arc<SeqTable<1, 1>> = Arc::new(SeqTable::new(1));
            let old = [1u64 << 63];
            let new = [(1u64 << 63) | 1];
            t.write(&old, |b| b.set(0, &old, &[10]));
            let w = {
                let t = t.clone();
                loom::thread::spawn(move || {
                    t.write(&new, |b| b.set(0, &new, &[20]));
                })
            };
            match t.lookup(&new) {
                Lookup::Found(v) => assert_eq!(v, [20], "new key read with the old value"),
                Lookup::Absent | Lookup::Busy => {}
            }
            w.join().unwrap();
        });
    }
}
