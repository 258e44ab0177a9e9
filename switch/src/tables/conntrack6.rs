//! Connection tracking for IPv6 NAT (`publish` on an IPv6 address, `masquerade6`): the
//! IPv6 twin of [`super::conntrack`], a separate table over the same
//! [`super::seqtable::SeqTable`] (sized from the same cap, never grows, keyed hashing,
//! lookups never lock), so IPv4 connections keep their compact 2-word keys.
//!
//! Each connection is two entries, one per direction, each mapping the 5-tuple a
//! packet arrives with to the one it must leave with. ICMPv6 echo uses its identifier
//! as the port: a request is `(id, 0)`, a reply `(0, id)`. States and timeouts are
//! IPv4's ([`CtState`], [`timeout`]: ICMPv6, as every protocol but TCP and UDP,
//! takes the ICMP timeout).
//!
//! # Thread safety
//! As [`super::conntrack`]: writers are workers (new connections, refresh, undo) and the
//! control thread (flush); readers never write. Ordering: the `seqtable` module doc.

use super::conntrack::{timeout, CtState};
use super::seqtable::{Lookup, SeqTable, WAYS};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};

const KEY_VALID: u64 = 1 << 63;

/// A direction-specific IPv6 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple6 {
    pub proto: u8,
    pub src: Ipv6Addr,
    pub sport: u16,
    pub dst: Ipv6Addr,
    pub dport: u16,
}

fn halves(a: Ipv6Addr) -> [u64; 2] {
    let v = u128::from(a);
    [(v >> 64) as u64, v as u64]
}

fn join(hi: u64, lo: u64) -> Ipv6Addr {
    Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo))
}

impl Tuple6 {
    /// The tuple of the answer to a packet with this tuple.
    pub fn reversed(&self) -> Tuple6 {
        Tuple6 {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }

    fn key(&self) -> [u64; 5] {
        let s = halves(self.src);
        let d = halves(self.dst);
        [
            KEY_VALID
                | (u64::from(self.proto) << 32)
                | (u64::from(self.sport) << 16)
                | u64::from(self.dport),
            s[0],
            s[1],
            d[0],
            d[1],
        ]
    }

    fn from_key(k: &[u64; 5]) -> Tuple6 {
        Tuple6 {
            proto: (k[0] >> 32) as u8,
            sport: (k[0] >> 16) as u16,
            dport: k[0] as u16,
            src: join(k[1], k[2]),
            dst: join(k[3], k[4]),
        }
    }
}

/// One direction of an IPv6 connection: what matching packets become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry6 {
    pub xlate: Tuple6,
    pub state: CtState,
    /// This is the direction of the connection's first packet.
    pub original: bool,
    pub last_seen: u32,
}

impl CtEntry6 {
    /// Value words: xlate src (2), xlate dst (2); sport (16) | dport (16) | last_seen
    /// (32); state (8) | original (8).
    fn encode(&self) -> [u64; 6] {
        let x = &self.xlate;
        let s = halves(x.src);
        let d = halves(x.dst);
        [
            s[0],
            s[1],
            d[0],
            d[1],
            (u64::from(x.sport) << 48) | (u64::from(x.dport) << 32) | u64::from(self.last_seen),
            ((self.state as u64) << 8) | u64::from(self.original),
        ]
    }

    fn decode(v: [u64; 6], proto: u8) -> CtEntry6 {
        CtEntry6 {
            xlate: Tuple6 {
                proto,
                src: join(v[0], v[1]),
                dst: join(v[2], v[3]),
                sport: (v[4] >> 48) as u16,
                dport: (v[4] >> 32) as u16,
            },
            last_seen: v[4] as u32,
            state: match (v[5] >> 8) as u8 {
                1 => CtState::Established,
                2 => CtState::Closing,
                _ => CtState::New,
            },
            original: v[5] & 1 == 1,
        }
    }
}

fn key_proto(k: &[u64; 5]) -> u8 {
    (k[0] >> 32) as u8
}

/// Outcome of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted6 {
    Ok,
    /// A live entry with that key exists (e.g. the port is taken); nothing written.
    Exists(CtEntry6),
    /// Written by evicting the oldest live entry of the bucket.
    Evicted,
    /// Another writer held the bucket; nothing written.
    Busy,
}

pub struct Conntrack6 {
    table: SeqTable<5, 6>,
    /// Relaxed: a statistic, read by the control thread.
    evictions: AtomicU64,
}

/// Attempts of [`Conntrack6::remove`] on a busy bucket before it gives up.
const REMOVE_TRIES: usize = 64;

impl Conntrack6 {
    /// A table for at least `cap` directional entries (two per connection).
    pub fn new(cap: usize) -> Conntrack6 {
        Conntrack6 {
            table: SeqTable::new(cap),
            evictions: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn live(e: &CtEntry6, proto: u8, now: u32) -> bool {
        now.wrapping_sub(e.last_seen) < timeout(proto, e.state)
    }

    /// The live entry for packets with tuple `t`. Never blocks; `Busy` is "unknown",
    /// never to be taken for `Absent`.
    #[inline]
    pub fn lookup(&self, t: &Tuple6, now: u32) -> Lookup<CtEntry6> {
        match self.table.lookup(&t.key()) {
            Lookup::Found(v) => {
                let e = CtEntry6::decode(v, t.proto);
                if Self::live(&e, t.proto, now) {
                    Lookup::Found(e)
                } else {
                    Lookup::Absent
                }
            }
            Lookup::Absent => Lookup::Absent,
            Lookup::Busy => Lookup::Busy,
        }
    }

    /// Insert `e` for `t` unless a live entry exists; a full bucket evicts its oldest
    /// live entry, never the one of `keep` (the partner half being committed).
    pub fn insert_keeping(
        &self,
        t: &Tuple6,
        e: CtEntry6,
        now: u32,
        keep: Option<&Tuple6>,
    ) -> Inserted6 {
        let key = t.key();
        let keep = keep.map(Tuple6::key);
        let r = self.table.write(&key, |b| {
            let mut free = None;
            let mut oldest: Option<(u32, usize)> = None;
            for w in 0..WAYS {
                let k = b.key(w);
                let cur = CtEntry6::decode(b.val(w), key_proto(&k));
                let live = k[0] != 0 && Self::live(&cur, key_proto(&k), now);
                if k == key && live {
                    return Inserted6::Exists(cur);
                }
                if !live {
                    // A dead entry with this key is reused first (keys stay unique
                    // within a bucket).
                    if k == key || free.is_none() {
                        free = Some(w);
                    }
                } else if keep != Some(k) {
                    let age = now.wrapping_sub(cur.last_seen);
                    if oldest.is_none_or(|(a, _)| age > a) {
                        oldest = Some((age, w));
                    }
                }
            }
            match free {
                Some(w) => {
                    b.set(w, &key, &e.encode());
                    Inserted6::Ok
                }
                None => {
                    b.set(oldest.map_or(0, |(_, w)| w), &key, &e.encode());
                    Inserted6::Evicted
                }
            }
        });
        match r {
            Some(Inserted6::Evicted) => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                Inserted6::Evicted
            }
            Some(r) => r,
            None => Inserted6::Busy,
        }
    }

    pub fn insert(&self, t: &Tuple6, e: CtEntry6, now: u32) -> Inserted6 {
        self.insert_keeping(t, e, now, None)
    }

    /// Remove the entry of `t` if it still translates to `xlate` (undo of a half
    /// inserted connection). Bounded retries; false if it gave up (it then expires).
    pub fn remove(&self, t: &Tuple6, xlate: &Tuple6) -> bool {
        let key = t.key();
        for _ in 0..REMOVE_TRIES {
            let r = self.table.write(&key, |b| {
                if let Some(w) = b.find(&key) {
                    if CtEntry6::decode(b.val(w), t.proto).xlate == *xlate {
                        b.clear(w);
                    }
                }
            });
            if r.is_some() {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Refresh the entry of `t` (at most once per second) and move it to `state`.
    /// False if there is no such entry.
    #[inline]
    pub fn touch(&self, t: &Tuple6, state: CtState, now: u32) -> bool {
        let key = t.key();
        let cur = match self.table.lookup(&key) {
            Lookup::Found(v) => CtEntry6::decode(v, t.proto),
            Lookup::Absent => return false,
            // Someone is writing this bucket: the refresh waits for the next packet.
            Lookup::Busy => return true,
        };
        if cur.last_seen == now && cur.state == state {
            return true;
        }
        let r = self.table.write(&key, |b| match b.find(&key) {
            Some(w) => {
                let mut e = CtEntry6::decode(b.val(w), t.proto);
                e.last_seen = now;
                e.state = state;
                b.set_val(w, &e.encode());
                true
            }
            None => false,
        });
        r.unwrap_or(true)
    }

    /// Every live entry with its tuple (control thread).
    pub fn entries(&self, now: u32) -> Vec<(Tuple6, CtEntry6)> {
        let mut out = Vec::new();
        self.table.for_each_bucket(|b| {
            for w in 0..WAYS {
                let k = b.key(w);
                if k[0] == 0 {
                    continue;
                }
                let t = Tuple6::from_key(&k);
                let e = CtEntry6::decode(b.val(w), t.proto);
                if Self::live(&e, t.proto, now) {
                    out.push((t, e));
                }
            }
        });
        out
    }

    /// Remove every entry (e.g. after NAT rules changed).
    pub fn flush(&self) {
        self.table.for_each_bucket(|b| {
            for w in 0..WAYS {
                b.clear(w);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sport: u16) -> Tuple6 {
        Tuple6 {
            proto: 6,
            src: "fd00:1::5".parse().unwrap(),
            sport,
            dst: "2001:db8::10".parse().unwrap(),
            dport: 80,
        }
    }

    fn e(x: Tuple6, original: bool, now: u32) -> CtEntry6 {
        CtEntry6 {
            xlate: x,
            state: CtState::New,
            original,
            last_seen: now,
        }
    }

    #[test]
    fn round_trip_lookup_expire() {
        let ct = Conntrack6::new(64);
        let mut x = t(40000);
        x.src = "2001:db8::2".parse().unwrap();
        x.sport = 61000;
        assert_eq!(ct.insert(&t(40000), e(x, true, 10), 10), Inserted6::Ok);
        assert_eq!(
            ct.insert(&x.reversed(), e(t(40000).reversed(), false, 10), 10),
            Inserted6::Ok
        );
        let got = ct.lookup(&t(40000), 10).found().unwrap();
        assert_eq!(got.xlate, x);
        assert!(got.original);
        assert_eq!(
            ct.lookup(&x.reversed(), 10).found().unwrap().xlate,
            t(40000).reversed()
        );
        assert!(matches!(
            ct.insert(&x.reversed(), e(t(1).reversed(), false, 10), 10),
            Inserted6::Exists(_)
        ));
        assert_eq!(ct.lookup(&t(40000), 130), Lookup::Absent);
        assert!(ct.touch(&t(40000), CtState::Established, 20));
        assert!(ct.lookup(&t(40000), 1000).found().is_some());
        let all = ct.entries(20);
        assert_eq!(all.len(), 2);
        assert!(all.iter().any(|(k, _)| *k == t(40000)));
        ct.flush();
        assert!(ct.entries(20).is_empty());
    }

    #[test]
    fn icmpv6_uses_the_icmp_timeout() {
        let mut k = t(7);
        k.proto = 58;
        let ct = Conntrack6::new(64);
        ct.insert(&k, e(k, true, 10), 10);
        assert!(ct.lookup(&k, 39).found().is_some());
        assert_eq!(ct.lookup(&k, 40), Lookup::Absent);
    }

    #[test]
    fn cap_holds_under_a_flood() {
        let ct = Conntrack6::new(256);
        for i in 0..10_000u16 {
            ct.insert(&t(i), e(t(i), true, 10), 10);
        }
        assert!(ct.entries(10).len() <= ct.capacity());
        assert!(ct.evictions() >= 10_000 - ct.capacity() as u64);
    }
}
