//! Connection tracking for NAT: each connection is two entries, one per direction,
//! each mapping the 5-tuple a packet arrives with to the 5-tuple it must leave with.
//!
//! The same [`super::seqtable::SeqTable`] as the [`super::Fdb`]: sized from the cap (no
//! growth under a flood of new flows), lookups never lock, keyed hashing, evictions
//! counted. A lookup says found / absent / busy, and the NAT stage never creates a
//! connection on "busy". Inserting a reply-direction key is
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
//! Writers: workers (new connections, state changes, once-per-second refresh, undo of a
//! half-inserted connection) and the control thread (`ct-show` reads, flushes). Readers
//! never write. Ordering: see the `seqtable` module doc.

use super::seqtable::{Lookup, SeqTable, WAYS};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const KEY_VALID: u64 = 1 << 63;

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

    fn key(&self) -> [u64; 2] {
        [
            KEY_VALID
                | (u64::from(self.proto) << 32)
                | (u64::from(self.sport) << 16)
                | u64::from(self.dport),
            (u64::from(u32::from(self.src)) << 32) | u64::from(u32::from(self.dst)),
        ]
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

impl CtEntry {
    /// Value words: xlate src ip (32) | sport (16) | dport (16); xlate dst ip (32) |
    /// last_seen (32); state (8) | original (8).
    fn encode(&self) -> [u64; 3] {
        let x = &self.xlate;
        [
            (u64::from(u32::from(x.src)) << 32) | (u64::from(x.sport) << 16) | u64::from(x.dport),
            (u64::from(u32::from(x.dst)) << 32) | u64::from(self.last_seen),
            ((self.state as u64) << 8) | u64::from(self.original),
        ]
    }

    fn decode(v: [u64; 3], proto: u8) -> CtEntry {
        CtEntry {
            xlate: Tuple {
                proto,
                src: Ipv4Addr::from((v[0] >> 32) as u32),
                sport: (v[0] >> 16) as u16,
                dport: v[0] as u16,
                dst: Ipv4Addr::from((v[1] >> 32) as u32),
            },
            last_seen: v[1] as u32,
            state: CtState::from_u8((v[2] >> 8) as u8),
            original: v[2] & 1 == 1,
        }
    }
}

fn key_proto(k: &[u64; 2]) -> u8 {
    (k[0] >> 32) as u8
}

/// Outcome of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Ok,
    /// A live entry with that key exists (e.g. the port is taken); nothing written.
    Exists(CtEntry),
    /// Written by evicting the oldest live entry of the bucket.
    Evicted,
    /// Another writer held the bucket; nothing written.
    Busy,
}

pub struct Conntrack {
    table: SeqTable<2, 3>,
    /// Relaxed: a statistic, read by the control thread.
    evictions: AtomicU64,
}

/// Attempts of [`Conntrack::remove`] on a busy bucket before it gives up.
const REMOVE_TRIES: usize = 64;

impl Conntrack {
    /// A table for at least `cap` directional entries (two per connection).
    pub fn new(cap: usize) -> Conntrack {
        Conntrack {
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

    fn live(e: &CtEntry, proto: u8, now: u32) -> bool {
        now.wrapping_sub(e.last_seen) < timeout(proto, e.state)
    }

    /// The live entry for packets with tuple `t`. Never blocks. `Busy` means writers
    /// kept the bucket busy and the answer is unknown: a caller must not take it for
    /// `Absent` and create a connection.
    #[inline]
    pub fn lookup(&self, t: &Tuple, now: u32) -> Lookup<CtEntry> {
        match self.table.lookup(&t.key()) {
            Lookup::Found(v) => {
                let e = CtEntry::decode(v, t.proto);
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

    /// Insert `e` for tuple `t` unless a live entry exists.
    pub fn insert(&self, t: &Tuple, e: CtEntry, now: u32) -> Inserted {
        self.insert_keeping(t, e, now, None)
    }

    /// As [`Conntrack::insert`], but a full bucket never evicts the entry of `keep`:
    /// the second half of a connection must not push out the first, written the same
    /// second (every entry of a bucket filled by a flood has the same age, and the
    /// oldest-first choice would take the first way, which may be it).
    pub fn insert_keeping(
        &self,
        t: &Tuple,
        e: CtEntry,
        now: u32,
        keep: Option<&Tuple>,
    ) -> Inserted {
        let key = t.key();
        let keep = keep.map(Tuple::key);
        let r = self.table.write(&key, |b| {
            let mut free = None;
            let mut oldest: Option<(u32, usize)> = None;
            for w in 0..WAYS {
                let k = b.key(w);
                let cur = CtEntry::decode(b.val(w), key_proto(&k));
                let live = k[0] != 0 && Self::live(&cur, key_proto(&k), now);
                if k == key && live {
                    return Inserted::Exists(cur);
                }
                if !live {
                    // A dead entry with this key is reused first (it is the only slot
                    // that may hold the key: keys stay unique within a bucket).
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
                    Inserted::Ok
                }
                None => {
                    b.set(oldest.map_or(0, |(_, w)| w), &key, &e.encode());
                    Inserted::Evicted
                }
            }
        });
        match r {
            Some(Inserted::Evicted) => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                Inserted::Evicted
            }
            Some(r) => r,
            None => Inserted::Busy,
        }
    }

    /// Remove the entry of `t` if it still translates to `xlate` (undo of an insert
    /// whose partner could not be inserted). Retries a busy bucket a bounded number of
    /// times; false if it gave up (the entry then simply expires).
    pub fn remove(&self, t: &Tuple, xlate: &Tuple) -> bool {
        let key = t.key();
        for _ in 0..REMOVE_TRIES {
            let r = self.table.write(&key, |b| {
                if let Some(w) = b.find(&key) {
                    if CtEntry::decode(b.val(w), t.proto).xlate == *xlate {
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
    /// Returns false if there is no such entry.
    #[inline]
    pub fn touch(&self, t: &Tuple, state: CtState, now: u32) -> bool {
        let key = t.key();
        let cur = match self.table.lookup(&key) {
            Lookup::Found(v) => CtEntry::decode(v, t.proto),
            Lookup::Absent => return false,
            // Someone is writing this bucket: the refresh waits for the next packet.
            Lookup::Busy => return true,
        };
        if cur.last_seen == now && cur.state == state {
            return true;
        }
        let r = self.table.write(&key, |b| match b.find(&key) {
            Some(w) => {
                let mut e = CtEntry::decode(b.val(w), t.proto);
                e.last_seen = now;
                e.state = state;
                b.set_val(w, &e.encode());
                true
            }
            None => false,
        });
        r.unwrap_or(true)
    }

    /// Set the last-seen time of `t` to `now` if its entry is live, in `state` and
    /// still translates to `xlate` (the kernel fast path's hits: a state the pipeline
    /// set meanwhile is never undone, an expired entry never revived). False if not.
    pub fn refresh(&self, t: &Tuple, xlate: &Tuple, state: CtState, now: u32) -> bool {
        let key = t.key();
        let r = self.table.write(&key, |b| match b.find(&key) {
            Some(w) => {
                let mut e = CtEntry::decode(b.val(w), t.proto);
                if e.state != state || e.xlate != *xlate || !Self::live(&e, t.proto, now) {
                    return false;
                }
                e.last_seen = now;
                b.set_val(w, &e.encode());
                true
            }
            None => false,
        });
        r.unwrap_or(false)
    }

    /// Hold the bucket of `t` as a writer until the guard drops (tests).
    #[cfg(test)]
    pub(crate) fn hold(&self, t: &Tuple) -> super::seqtable::Held<'_> {
        self.table.hold(&t.key())
    }

    /// Every live entry with its tuple (control thread).
    pub fn entries(&self, now: u32) -> Vec<(Tuple, CtEntry)> {
        let mut out = Vec::new();
        self.table.for_each_bucket(|b| {
            for w in 0..WAYS {
                let k = b.key(w);
                if k[0] == 0 {
                    continue;
                }
                let t = Tuple::from_key(k[0], k[1]);
                let e = CtEntry::decode(b.val(w), t.proto);
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

    /// The fast path's refresh moves only a live entry still in the expected state
    /// with the expected translation: it never undoes Closing, never revives.
    #[test]
    fn refresh_keeps_state_and_never_revives() {
        let ct = Conntrack::new(64);
        let x = Tuple {
            src: Ipv4Addr::new(198, 51, 100, 2),
            ..t(40000)
        };
        let est = CtEntry {
            state: CtState::Established,
            ..e(x, true, 100)
        };
        assert_eq!(ct.insert(&t(40000), est, 100), Inserted::Ok);
        assert!(ct.refresh(&t(40000), &x, CtState::Established, 150));
        assert_eq!(
            ct.lookup(&t(40000), 150).found().map(|e| e.last_seen),
            Some(150)
        );
        // Another translation, another state: untouched.
        assert!(!ct.refresh(&t(40000), &t(1), CtState::Established, 160));
        assert!(ct.touch(&t(40000), CtState::Closing, 160));
        assert!(!ct.refresh(&t(40000), &x, CtState::Established, 170));
        let cur = ct.lookup(&t(40000), 170).found().unwrap();
        assert_eq!((cur.state, cur.last_seen), (CtState::Closing, 160));
        // Expired (closing timeout 120 s): not revived.
        assert!(!ct.refresh(&t(40000), &x, CtState::Closing, 160 + 121));
        assert!(ct.lookup(&t(40000), 160 + 121).found().is_none());
        assert!(
            !ct.refresh(&t(5), &x, CtState::Established, 170),
            "no entry"
        );
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
        assert_eq!(ct.lookup(&t(40000), 10).found().unwrap().xlate, x);
        assert_eq!(
            ct.lookup(&x.reversed(), 10).found().unwrap().xlate,
            t(40000).reversed()
        );
        // Taken port: insert-if-absent refuses.
        assert!(matches!(
            ct.insert(&x.reversed(), e(t(1).reversed(), false, 10), 10),
            Inserted::Exists(_)
        ));
        // New TCP expires after 120 s; established lives on.
        assert_eq!(ct.lookup(&t(40000), 130), Lookup::Absent);
        ct.touch(&t(40000), CtState::Established, 20);
        assert!(ct.lookup(&t(40000), 1000).found().is_some());
        assert_eq!(ct.entries(20).len(), 2);
    }

    #[test]
    fn a_full_bucket_never_evicts_the_partner_being_committed() {
        // One bucket (4 ways), full of live entries of the same age: a flood's.
        let ct = Conntrack::new(4);
        for p in 1..=4 {
            assert_eq!(ct.insert(&t(p), e(t(p), true, 10), 10), Inserted::Ok);
        }
        let mut x = t(40000);
        x.src = Ipv4Addr::new(198, 51, 100, 2);
        let reply = x.reversed();
        // The reply half first (as nat::commit does), then the original half.
        let r = ct.insert(&reply, e(t(40000).reversed(), false, 10), 10);
        assert_eq!(r, Inserted::Evicted);
        let r = ct.insert_keeping(&t(40000), e(x, true, 10), 10, Some(&reply));
        assert_eq!(r, Inserted::Evicted);
        assert!(ct.lookup(&t(40000), 10).found().is_some());
        assert!(
            ct.lookup(&reply, 10).found().is_some(),
            "the reply half was evicted by its own original half"
        );
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
