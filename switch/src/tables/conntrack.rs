//! Connection tracking for NAT: each connection is two entries, one per direction,
//! each mapping the 5-tuple a packet arrives with to the 5-tuple it must leave with.
//!
//! Same structure as the [`super::Fdb`]: a fixed-size set-associative table sized from
//! the cap (no growth under a flood of new flows), a seqlock per bucket so lookups
//! never lock, keyed hashing, evictions counted. Inserting a reply-direction key is
//! "insert if absent", which is how two workers racing for the same masquerade port
//! cannot both win.
//!
//! ICMP echo uses its identifier as the port: a request is `(id, 0)`, a reply `(0, id)`.
//!
//! Timeouts (seconds, in the spirit of Linux's nf_conntrack defaults, scaled down for
//! a lab tool and documented in docs/cli.md): TCP new 120, established 86400,
//! closing 120; UDP 60 (180 once both directions were seen); ICMP 30.
//!
//! # Thread safety
//! Writers: workers (new connections, state changes, once-per-second refresh) and the
//! control thread (`ct-show` reads, flushes). Readers never write; see `Fdb`.

use super::seqlock::SeqLock;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const WAYS: usize = 4;
const KEY_VALID: u64 = 1 << 63;
const READ_RETRIES: usize = 8;

/// A direction-specific 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl Tuple {
    /// The tuple of the answer to a packet with this tuple.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }

    fn key(&self) -> (u64, u64) {
        (
            KEY_VALID
                | (u64::from(self.proto) << 32)
                | (u64::from(self.sport) << 16)
                | u64::from(self.dport),
            (u64::from(u32::from(self.src)) << 32) | u64::from(u32::from(self.dst)),
        )
    }

    fn from_key(k0: u64, k1: u64) -> Tuple {
        Tuple {
            proto: (k0 >> 32) as u8,
            sport: (k0 >> 16) as u16,
            dport: k0 as u16,
            src: Ipv4Addr::from((k1 >> 32) as u32),
            dst: Ipv4Addr::from(k1 as u32),
        }
    }
}

/// Connection state, which picks the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CtState {
    /// First packet seen, no answer yet.
    New = 0,
    /// Both directions seen.
    Established = 1,
    /// TCP FIN or RST seen.
    Closing = 2,
}

impl CtState {
    fn from_u8(v: u8) -> CtState {
        match v {
            1 => CtState::Established,
            2 => CtState::Closing,
            _ => CtState::New,
        }
    }
}

/// Configurable timeouts, seconds: tcp_new, tcp_established, tcp_closing, udp,
/// udp_stream, icmp. Set once at start (`vswitchd --ct-timeouts`), read per packet.
static TIMEOUTS: [AtomicU32; 6] = [
    AtomicU32::new(120),
    AtomicU32::new(86_400),
    AtomicU32::new(120),
    AtomicU32::new(60),
    AtomicU32::new(180),
    AtomicU32::new(30),
];
/// Names of the timeouts, in [`TIMEOUTS`] order.
pub const TIMEOUT_NAMES: [&str; 6] = [
    "tcp_new",
    "tcp_established",
    "tcp_closing",
    "udp",
    "udp_stream",
    "icmp",
];

/// Parse and apply `name=secs,...` (any subset of [`TIMEOUT_NAMES`]).
pub fn set_timeouts(spec: &str) -> Result<(), String> {
    let mut parsed = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("bad timeout {part:?}: expected NAME=SECONDS"))?;
        let i = TIMEOUT_NAMES
            .iter()
            .position(|n| *n == k.trim())
            .ok_or_else(|| {
                format!(
                    "unknown timeout {k:?} (one of {})",
                    TIMEOUT_NAMES.join(", ")
                )
            })?;
        let secs: u32 = v
            .trim()
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| format!("bad timeout value {v:?}: expected seconds > 0"))?;
        parsed.push((i, secs));
    }
    for (i, secs) in parsed {
        TIMEOUTS[i].store(secs, Ordering::Relaxed);
    }
    Ok(())
}

/// Timeout of a connection of `proto` in `state`, seconds.
#[inline]
pub fn timeout(proto: u8, state: CtState) -> u32 {
    let i = match (proto, state) {
        (6, CtState::New) => 0,
        (6, CtState::Established) => 1,
        (6, CtState::Closing) => 2,
        (17, CtState::Established) => 4,
        (17, _) => 3,
        _ => 5,
    };
    TIMEOUTS[i].load(Ordering::Relaxed)
}

/// One direction of a connection: what matching packets become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    pub xlate: Tuple,
    pub state: CtState,
    /// This is the direction of the connection's first packet.
    pub original: bool,
    pub last_seen: u32,
}

#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    seq: SeqLock,
    k0: [AtomicU64; WAYS],
    k1: [AtomicU64; WAYS],
    /// xlate src ip (32) | sport (16) | dport (16)
    v0: [AtomicU64; WAYS],
    /// xlate dst ip (32) | last_seen (32)
    v1: [AtomicU64; WAYS],
    /// state (8) | original (8)
    v2: [AtomicU64; WAYS],
}

impl Bucket {
    fn read(&self, w: usize, proto: u8) -> CtEntry {
        let v0 = self.v0[w].load(Ordering::Relaxed);
        let v1 = self.v1[w].load(Ordering::Relaxed);
        let v2 = self.v2[w].load(Ordering::Relaxed);
        CtEntry {
            xlate: Tuple {
                proto,
                src: Ipv4Addr::from((v0 >> 32) as u32),
                sport: (v0 >> 16) as u16,
                dport: v0 as u16,
                dst: Ipv4Addr::from((v1 >> 32) as u32),
            },
            last_seen: v1 as u32,
            state: CtState::from_u8((v2 >> 8) as u8),
            original: v2 & 1 == 1,
        }
    }

    fn write(&self, w: usize, key: (u64, u64), e: &CtEntry) {
        let x = &e.xlate;
        self.k0[w].store(key.0, Ordering::Relaxed);
        self.k1[w].store(key.1, Ordering::Relaxed);
        self.v0[w].store(
            (u64::from(u32::from(x.src)) << 32) | (u64::from(x.sport) << 16) | u64::from(x.dport),
            Ordering::Relaxed,
        );
        self.v1[w].store(
            (u64::from(u32::from(x.dst)) << 32) | u64::from(e.last_seen),
            Ordering::Relaxed,
        );
        self.v2[w].store(
            ((e.state as u64) << 8) | u64::from(e.original),
            Ordering::Relaxed,
        );
    }
}

/// Outcome of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Ok,
    /// A live entry with that key exists (e.g. the port is taken).
    Exists,
    /// Written by evicting the oldest live entry of the bucket.
    Evicted,
    /// Another writer held the bucket.
    Busy,
}

pub struct Conntrack {
    buckets: Box<[Bucket]>,
    mask: usize,
    seed: u64,
    evictions: AtomicU64,
}

impl Conntrack {
    /// A table for at least `cap` directional entries (two per connection).
    pub fn new(cap: usize) -> Conntrack {
        let nb = cap.div_ceil(WAYS).max(1).next_power_of_two();
        Conntrack {
            buckets: (0..nb).map(|_| Bucket::default()).collect(),
            mask: nb - 1,
            seed: std::collections::hash_map::RandomState::new().hash_one(0xc7_u64),
            evictions: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn bucket(&self, k: (u64, u64)) -> &Bucket {
        let x = (k.0 ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k.1;
        let h = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        &self.buckets[((h >> 29) as usize) & self.mask]
    }

    fn live(e: &CtEntry, proto: u8, now: u32) -> bool {
        now.wrapping_sub(e.last_seen) < timeout(proto, e.state)
    }

    /// The live entry for packets with tuple `t`. Never blocks.
    #[inline]
    pub fn lookup(&self, t: &Tuple, now: u32) -> Option<CtEntry> {
        let key = t.key();
        let b = self.bucket(key);
        for _ in 0..READ_RETRIES {
            let Some(s1) = b.seq.read_begin() else {
                std::hint::spin_loop();
                continue;
            };
            let mut found = None;
            for w in 0..WAYS {
                if b.k0[w].load(Ordering::Relaxed) == key.0
                    && b.k1[w].load(Ordering::Relaxed) == key.1
                {
                    found = Some(b.read(w, t.proto));
                    break;
                }
            }
            if !b.seq.read_valid(s1) {
                continue;
            }
            return found.filter(|e| Self::live(e, t.proto, now));
        }
        None
    }

    /// Insert `e` for tuple `t` unless a live entry exists.
    pub fn insert(&self, t: &Tuple, e: CtEntry, now: u32) -> Inserted {
        let key = t.key();
        let b = self.bucket(key);
        let Some(s) = b.seq.try_lock() else {
            return Inserted::Busy;
        };
        let mut free = None;
        let mut oldest: Option<(u32, usize)> = None;
        for w in 0..WAYS {
            let k0 = b.k0[w].load(Ordering::Relaxed);
            let k1 = b.k1[w].load(Ordering::Relaxed);
            let cur = b.read(w, (k0 >> 32) as u8);
            let live = k0 != 0 && Self::live(&cur, (k0 >> 32) as u8, now);
            if k0 == key.0 && k1 == key.1 && live {
                b.seq.unlock(s);
                return Inserted::Exists;
            }
            if !live {
                free.get_or_insert(w);
            } else {
                let age = now.wrapping_sub(cur.last_seen);
                if oldest.is_none_or(|(a, _)| age > a) {
                    oldest = Some((age, w));
                }
            }
        }
        let (w, r) = match free {
            Some(w) => (w, Inserted::Ok),
            None => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                (oldest.map_or(0, |(_, w)| w), Inserted::Evicted)
            }
        };
        b.write(w, key, &e);
        b.seq.unlock(s);
        r
    }

    /// Refresh the entry of `t` (at most once per second) and move it to `state`.
    /// Returns false if there is no such entry.
    #[inline]
    pub fn touch(&self, t: &Tuple, state: CtState, now: u32) -> bool {
        let key = t.key();
        let b = self.bucket(key);
        for w in 0..WAYS {
            if b.k0[w].load(Ordering::Relaxed) == key.0 && b.k1[w].load(Ordering::Relaxed) == key.1
            {
                let cur = b.read(w, t.proto);
                if cur.last_seen == now && cur.state == state {
                    return true;
                }
                let Some(s) = b.seq.try_lock() else {
                    return true;
                };
                if b.k0[w].load(Ordering::Relaxed) == key.0
                    && b.k1[w].load(Ordering::Relaxed) == key.1
                {
                    let mut e = b.read(w, t.proto);
                    e.last_seen = now;
                    e.state = state;
                    b.write(w, key, &e);
                }
                b.seq.unlock(s);
                return true;
            }
        }
        false
    }

    /// Every live entry with its tuple (control thread).
    pub fn entries(&self, now: u32) -> Vec<(Tuple, CtEntry)> {
        let mut out = Vec::new();
        for b in self.buckets.iter() {
            let s = b.seq.lock();
            for w in 0..WAYS {
                let k0 = b.k0[w].load(Ordering::Relaxed);
                if k0 == 0 {
                    continue;
                }
                let t = Tuple::from_key(k0, b.k1[w].load(Ordering::Relaxed));
                let e = b.read(w, t.proto);
                if Self::live(&e, t.proto, now) {
                    out.push((t, e));
                }
            }
            b.seq.unlock(s);
        }
        out
    }

    /// Remove every entry (e.g. after NAT rules changed).
    pub fn flush(&self) {
        for b in self.buckets.iter() {
            let s = b.seq.lock();
            for w in 0..WAYS {
                b.k0[w].store(0, Ordering::Relaxed);
                b.k1[w].store(0, Ordering::Relaxed);
            }
            b.seq.unlock(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sport: u16) -> Tuple {
        Tuple {
            proto: 6,
            src: Ipv4Addr::new(10, 0, 0, 5),
            sport,
            dst: Ipv4Addr::new(203, 0, 113, 10),
            dport: 80,
        }
    }

    fn e(x: Tuple, original: bool, now: u32) -> CtEntry {
        CtEntry {
            xlate: x,
            state: CtState::New,
            original,
            last_seen: now,
        }
    }

    #[test]
    fn insert_lookup_expire() {
        let ct = Conntrack::new(64);
        let mut x = t(40000);
        x.src = Ipv4Addr::new(198, 51, 100, 2);
        assert_eq!(ct.insert(&t(40000), e(x, true, 10), 10), Inserted::Ok);
        assert_eq!(
            ct.insert(&x.reversed(), e(t(40000).reversed(), false, 10), 10),
            Inserted::Ok
        );
        assert_eq!(ct.lookup(&t(40000), 10).unwrap().xlate, x);
        assert_eq!(
            ct.lookup(&x.reversed(), 10).unwrap().xlate,
            t(40000).reversed()
        );
        // Taken port: insert-if-absent refuses.
        assert_eq!(
            ct.insert(&x.reversed(), e(t(1).reversed(), false, 10), 10),
            Inserted::Exists
        );
        // New TCP expires after 120 s; established lives on.
        assert!(ct.lookup(&t(40000), 130).is_none());
        ct.touch(&t(40000), CtState::Established, 20);
        assert!(ct.lookup(&t(40000), 1000).is_some());
        assert_eq!(ct.entries(20).len(), 2);
    }

    #[test]
    fn timeouts_parse() {
        assert!(set_timeouts("udp=61").is_ok());
        assert_eq!(timeout(17, CtState::New), 61);
        assert!(set_timeouts("udp=60").is_ok());
        assert!(set_timeouts("bogus=1")
            .unwrap_err()
            .starts_with("unknown timeout"));
        assert!(set_timeouts("udp=0").is_err());
        assert!(set_timeouts("udp").is_err());
    }

    #[test]
    fn cap_holds_under_a_flood() {
        let ct = Conntrack::new(256);
        for i in 0..10_000u16 {
            ct.insert(&t(i), e(t(i), true, 10), 10);
        }
        assert!(ct.entries(10).len() <= ct.capacity());
        assert!(ct.evictions() >= 10_000 - ct.capacity() as u64);
    }
}
