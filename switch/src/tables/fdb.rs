//! The forwarding database: (VLAN, MAC) → port, learned from source addresses.
//!
//! A fixed-size, set-associative hash table: `buckets × WAYS` slots, sized once from the
//! cap, so a MAC flood cannot grow memory. When a key's bucket is full, the entry seen
//! longest ago in that bucket is evicted and counted (hardware switches do the same).
//! Entries older than the aging time are invisible to lookups and reused first.
//!
//! # Thread safety
//! The table is a [`super::seqtable::SeqTable`] (its module doc has the ordering
//! argument). Writers: any worker learning, the control thread flushing; a writer that
//! finds the bucket taken skips the update (learning is best effort; the next frame
//! retries). Readers never write and never wait; a lookup of a bucket kept busy by
//! writers is a miss, and the caller floods.
//!
//! An entry's age is refreshed at most once per second per entry, and only when the
//! stored value differs, so steady traffic does not write shared cache lines per frame.

use super::seqtable::{Lookup, SeqTable, WAYS};
use crate::wire::MacAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies a port for the lifetime of the daemon: slot in the snapshot (low 16 bits)
/// and a generation (high 16 bits), so entries pointing at a deleted port never match a
/// new port that reuses its slot.
pub type PortId = u32;

const KEY_VALID: u64 = 1 << 63;

#[inline]
fn key_of(vlan: u16, mac: MacAddr) -> [u64; 1] {
    [KEY_VALID | (u64::from(vlan & 0x0fff) << 48) | mac.to_u64()]
}

#[inline]
fn val_of(port: PortId, now: u32) -> [u64; 1] {
    [(u64::from(port) << 32) | u64::from(now)]
}

#[inline]
fn val_port(v: [u64; 1]) -> PortId {
    (v[0] >> 32) as u32
}

#[inline]
fn val_time(v: [u64; 1]) -> u32 {
    v[0] as u32
}

/// One live entry, for `fdb-show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbRecord {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: PortId,
    pub last_seen: u32,
}

/// Result of [`Fdb::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Entry already current; nothing written.
    Unchanged,
    /// New entry written (the key was not in the table).
    Written,
    /// The entry's time refreshed; same port.
    Refreshed,
    /// The entry now names another port than before (also when the old entry had
    /// aged out but was still in the table): the MAC moved.
    Moved,
    /// Written by evicting the oldest entry of the bucket.
    Evicted,
    /// Bucket busy with another writer; skipped.
    Busy,
}

/// A per-bridge MAC table.
pub struct Fdb {
    table: SeqTable<1, 1>,
    aging: u32,
    /// Relaxed: a statistic, read by the control thread.
    evictions: AtomicU64,
}

impl Fdb {
    /// A table holding at least `cap` entries (rounded up to a power of two), whose
    /// entries expire `aging` seconds after they were last seen.
    pub fn new(cap: usize, aging: u32) -> Fdb {
        Fdb {
            table: SeqTable::new(cap),
            aging: aging.max(1),
            evictions: AtomicU64::new(0),
        }
    }

    /// Number of slots (the cap).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn aging(&self) -> u32 {
        self.aging
    }

    /// Entries evicted to make room since the table was created.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    #[inline]
    fn live(&self, val: [u64; 1], now: u32) -> bool {
        now.wrapping_sub(val_time(val)) < self.aging
    }

    /// The port `mac` was last seen on in `vlan`, if that was less than the aging time
    /// ago. Never blocks; a bucket kept busy by writers reads as a miss (the caller
    /// floods, which is always safe for L2).
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: MacAddr, now: u32) -> Option<PortId> {
        match self.table.lookup(&key_of(vlan, mac)) {
            Lookup::Found(v) if self.live(v, now) => Some(val_port(v)),
            _ => None,
        }
    }

    /// Record that `mac` in `vlan` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&self, vlan: u16, mac: MacAddr, port: PortId, now: u32) -> Learned {
        let key = key_of(vlan, mac);
        let val = val_of(port, now);
        // Steady traffic: the entry is already current, write no shared cache line.
        if self.table.lookup(&key) == Lookup::Found(val) {
            return Learned::Unchanged;
        }
        let r = self.table.write(&key, |b| {
            let mut free = None;
            // (age, way) of the entry seen longest ago.
            let mut oldest: Option<(u32, usize)> = None;
            if let Some(w) = b.find(&key) {
                let was = val_port(b.val(w));
                b.set_val(w, &val);
                return if was == port {
                    Learned::Refreshed
                } else {
                    Learned::Moved
                };
            }
            for w in 0..WAYS {
                let v = b.val(w);
                if b.key(w)[0] == 0 || !self.live(v, now) {
                    free.get_or_insert(w);
                } else {
                    let age = now.wrapping_sub(val_time(v));
                    if oldest.is_none_or(|(a, _)| age > a) {
                        oldest = Some((age, w));
                    }
                }
            }
            match free {
                Some(w) => {
                    b.set(w, &key, &val);
                    Learned::Written
                }
                None => {
                    b.set(oldest.map_or(0, |(_, w)| w), &key, &val);
                    Learned::Evicted
                }
            }
        });
        match r {
            Some(Learned::Evicted) => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                Learned::Evicted
            }
            Some(r) => r,
            None => Learned::Busy,
        }
    }

    /// Refresh the time of `mac` in `vlan` only if it is still on `port` (the kernel
    /// fast path forwarded frames from it): never creates or moves an entry, so it
    /// cannot undo a move the pipeline just learned. True if the entry was current.
    pub fn refresh(&self, vlan: u16, mac: MacAddr, port: PortId, now: u32) -> bool {
        let key = key_of(vlan, mac);
        let val = val_of(port, now);
        if self.table.lookup(&key) == Lookup::Found(val) {
            return true;
        }
        self.table
            .write(&key, |b| match b.find(&key) {
                Some(w) if val_port(b.val(w)) == port && self.live(b.val(w), now) => {
                    b.set_val(w, &val);
                    true
                }
                _ => false,
            })
            .unwrap_or(false)
    }

    /// Remove every entry; returns how many live entries were removed.
    pub fn flush(&self, now: u32) -> u64 {
        self.remove_where(now, |_| true)
    }

    /// Remove every entry pointing at `port`.
    pub fn flush_port(&self, port: PortId, now: u32) -> u64 {
        self.remove_where(now, |p| p == port)
    }

    fn remove_where(&self, now: u32, pred: impl Fn(PortId) -> bool) -> u64 {
        let mut n = 0;
        self.table.for_each_bucket(|b| {
            for w in 0..WAYS {
                let v = b.val(w);
                if b.key(w)[0] != 0 && pred(val_port(v)) {
                    if self.live(v, now) {
                        n += 1;
                    }
                    b.clear(w);
                }
            }
        });
        n
    }

    /// Every live entry, in no particular order.
    pub fn entries(&self, now: u32) -> Vec<FdbRecord> {
        let mut out = Vec::new();
        self.table.for_each_bucket(|b| {
            for w in 0..WAYS {
                let [k] = b.key(w);
                let v = b.val(w);
                if k != 0 && self.live(v, now) {
                    out.push(FdbRecord {
                        vlan: ((k >> 48) & 0x0fff) as u16,
                        mac: MacAddr::from_u64(k & 0xffff_ffff_ffff),
                        port: val_port(v),
                        last_seen: val_time(v),
                    });
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u64) -> MacAddr {
        MacAddr::from_u64(0x0200_0000_0000 | i)
    }

    #[test]
    fn learn_then_lookup() {
        let t = Fdb::new(64, 300);
        assert_eq!(t.lookup(0, mac(1), 10), None);
        assert_eq!(t.learn(0, mac(1), 7, 10), Learned::Written);
        assert_eq!(t.lookup(0, mac(1), 10), Some(7));
        // Other VLAN: separate entry.
        assert_eq!(t.lookup(10, mac(1), 10), None);
        // Same second, same port: no write.
        assert_eq!(t.learn(0, mac(1), 7, 10), Learned::Unchanged);
        // Next second, same port: refreshed.
        assert_eq!(t.learn(0, mac(1), 7, 11), Learned::Refreshed);
        // MAC move.
        assert_eq!(t.learn(0, mac(1), 8, 11), Learned::Moved);
        // A refresh for the old port does not move it back.
        assert!(!t.refresh(0, mac(1), 7, 12));
        assert!(t.refresh(0, mac(1), 8, 12));
        assert_eq!(t.lookup(0, mac(1), 12), Some(8));
        assert_eq!(t.entries(12).len(), 1);
        // Aged out, then heard on another port: still a move.
        assert_eq!(t.lookup(0, mac(1), 12 + 300), None);
        assert_eq!(t.learn(0, mac(1), 9, 12 + 300), Learned::Moved);
        assert_eq!(t.lookup(0, mac(1), 12 + 300), Some(9));
    }

    #[test]
    fn entries_age_out() {
        let t = Fdb::new(64, 300);
        t.learn(0, mac(1), 7, 10);
        assert_eq!(t.lookup(0, mac(1), 309), Some(7));
        assert_eq!(t.lookup(0, mac(1), 310), None);
        assert!(t.entries(310).is_empty());
    }

    #[test]
    fn flood_stays_at_cap_and_counts_evictions() {
        let t = Fdb::new(1024, 300);
        for i in 0..100_000 {
            t.learn(0, mac(i), 1, 10 + (i / 1000) as u32);
        }
        let n = t.entries(110).len();
        assert!(n <= t.capacity(), "{n} > {}", t.capacity());
        assert!(n > t.capacity() / 2, "table mostly empty: {n}");
        assert!(t.evictions() >= 100_000 - t.capacity() as u64);
        // The newest entry survives: eviction takes the oldest.
        assert_eq!(t.lookup(0, mac(99_999), 110), Some(1));
    }

    #[test]
    fn flush_port_removes_only_that_port() {
        let t = Fdb::new(64, 300);
        t.learn(0, mac(1), 1, 10);
        t.learn(0, mac(2), 2, 10);
        assert_eq!(t.flush_port(1, 10), 1);
        assert_eq!(t.lookup(0, mac(1), 10), None);
        assert_eq!(t.lookup(0, mac(2), 10), Some(2));
        assert_eq!(t.flush(10), 1);
        assert!(t.entries(10).is_empty());
    }

    #[test]
    fn concurrent_learners_and_readers_agree() {
        let t = std::sync::Arc::new(Fdb::new(4096, 300));
        let mut hs = Vec::new();
        for w in 0..4u32 {
            let t = t.clone();
            hs.push(std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let m = mac(i % 512);
                    t.learn(0, m, w + 1, 10);
                    if let Some(p) = t.lookup(0, m, 10) {
                        assert!((1..=4).contains(&p), "torn value {p}");
                    }
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
    }
}
