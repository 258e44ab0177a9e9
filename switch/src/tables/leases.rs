//! DHCP leases of every bridge: a bounded store the service thread answers DHCP from,
//! and the control plane configures, lists and persists.
//!
//! Per bridge, a [`Pool`] holds three kinds of claim on an address, each with an expiry:
//! - a **lease** (a client's DHCPREQUEST was acknowledged): persisted in the db, listed
//!   by `dhcp-leases`, its hostname answered by DNS;
//! - an **offer** (a DHCPDISCOVER was answered): kept [`OFFER_SECS`] so that two new
//!   clients are not offered one address, never persisted, never a lease. Offers are
//!   soft (RFC 2131 §3.1 step 2: servers need not reserve offered addresses): a
//!   DHCPREQUEST for an address offered to another client gets it, and when every free
//!   address is offered, the oldest offer is offered again;
//! - a **quarantine** (the lease holder declined the address, RFC 2131 §4.3.3: someone
//!   else answers on it): not handed out for [`QUARANTINE_SECS`].
//!
//! Bounds, per bridge: leases of clients without a reservation ≤ [`PoolConf::pool_cap`]
//! (the pool size, at most [`LEASES_MAX`]), plus one lease per reserved client; offers ≤
//! [`OFFERS_MAX`]; quarantined addresses ≤ [`PoolConf::quarantine_cap`] (the oldest
//! goes first). Expired claims are pruned before every operation. An all-zero or
//! multicast MAC never holds anything.
//!
//! A DHCPDECLINE counts only from the client holding the lease, for that lease's
//! address, inside the subnet; anything else is ignored and counted
//! ([`PoolStats::declines_ignored`]), so no client can take or poison another's address.
//!
//! Picking the lowest free address reads a bitmap over the first addresses of the range
//! (with one "full" bit per 64-bit word): O(window / 4096) word reads, whatever the
//! number of leases. The window is large enough that it always has a free bit while
//! the lease cap is not reached (see [`Pool::new`]); requested addresses outside it are
//! checked one by one.
//!
//! # Thread safety
//! One [`LeaseStore`] holds every pool behind one `parking_lot::Mutex`. Who takes it:
//! the service thread, once per DHCP message (decode and answer, no I/O) and once per
//! DNS query (to clone the lease names' `Arc`); the control thread to sync pools with
//! the configuration on every snapshot publication (a comparison, a rebuild only when a
//! bridge's DHCP settings changed), to list leases, and to copy them for the db
//! (the file is written after the lock is released). Nobody does I/O or takes another
//! lock while holding it, so the slow path never waits longer than one such copy — and
//! never for the control mutex.

use super::leases6::{End6, Lease6, LeaseNames6, Pool6, Pool6Conf, Pool6Stats};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Lease time handed out, seconds.
pub const LEASE_SECS: u32 = 3600;
/// How long an offer keeps its address from other new clients, seconds.
pub const OFFER_SECS: u64 = 30;
/// Offers outstanding per bridge; the oldest goes when a new one needs room.
pub const OFFERS_MAX: usize = 256;
/// How long a declined address is not handed out, seconds (dnsmasq's DECLINE_BACKOFF).
pub const QUARANTINE_SECS: u64 = 600;
/// Quarantined addresses per bridge, at most (and at most a quarter of the pool).
pub const QUARANTINE_MAX: usize = 64;
/// Leases of clients without a reservation per bridge, at most, whatever the pool size.
pub const LEASES_MAX: usize = 65_536;
/// Lease changes a pool keeps for `monitor` until the daemon drains them (every
/// 250 ms); past that they are counted as lost.
pub const CHANGES_MAX: usize = 1024;

/// A lease that began or ended, in the order it happened (`monitor`'s lease events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    Granted(Lease),
    Ended(Lease),
    /// A DHCPv6 lease began.
    Granted6(Lease6),
    /// A DHCPv6 lease ended, and why.
    Ended6(Lease6, End6),
}

/// The same lease (a renewal keeps these and changes only the expiry).
fn same_lease(a: &Lease, b: &Lease) -> bool {
    (a.mac, a.ip, &a.hostname) == (b.mac, b.ip, &b.hostname)
}

/// The same DHCPv6 lease (a renewal changes only the expiry).
fn same_lease6(a: &Lease6, b: &Lease6) -> bool {
    (&a.duid, a.ip, &a.hostname, a.mac) == (&b.duid, b.ip, &b.hostname, b.mac)
}

/// Drop renewals from `changes`: a lease that ended and began again unchanged.
/// A lease granted and ended between two drains stays (both events are real).
pub(super) fn coalesce(changes: Vec<LeaseChange>) -> Vec<LeaseChange> {
    let mut out: Vec<LeaseChange> = Vec::with_capacity(changes.len());
    for c in changes {
        let renewal = match (out.last(), &c) {
            (Some(LeaseChange::Ended(a)), LeaseChange::Granted(b)) => same_lease(a, b),
            (Some(LeaseChange::Ended6(a, End6::Replaced)), LeaseChange::Granted6(b)) => {
                same_lease6(a, b)
            }
            _ => false,
        };
        if renewal {
            out.pop();
            continue;
        }
        out.push(c);
    }
    out
}

/// A DNS name's address and expiry (Unix seconds; 0: never): the shape of the
/// snapshot's `config::NameMap`.
pub type NameMap = HashMap<String, (Ipv4Addr, u64)>;

/// A DHCP lease, as the db stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

/// What a bridge's DHCP server hands out, built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConf {
    /// The bridge (for logs; its lower-case form is the DNS domain handed out).
    pub bridge: String,
    /// The range, inclusive.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// The gateway: server identifier, router and DNS server of every reply.
    pub server: Ipv4Addr,
    pub mtu: u32,
    /// Never handed out to a client without a reservation for it: the gateway, add-host
    /// names, port addresses, reserved addresses.
    pub reserved: HashSet<Ipv4Addr>,
    /// Reserved clients: each gets its address and no other, in the range or not.
    pub reservations: HashMap<MacAddr, Ipv4Addr>,
}

impl PoolConf {
    /// Addresses in the range.
    pub fn size(&self) -> usize {
        let (a, b) = (u32::from(self.first), u32::from(self.last));
        if b < a {
            0
        } else {
            (b - a) as usize + 1
        }
    }

    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// Leases of clients without a reservation, at most.
    pub fn pool_cap(&self) -> usize {
        self.size().min(LEASES_MAX)
    }

    /// Leases, at most: the pool's plus one per reserved client.
    pub fn lease_cap(&self) -> usize {
        self.pool_cap() + self.reservations.len()
    }

    /// Quarantined addresses, at most: a quarter of the pool, 1 to [`QUARANTINE_MAX`].
    pub fn quarantine_cap(&self) -> usize {
        (self.size() / 4).clamp(1, QUARANTINE_MAX)
    }
}

/// Counters and gauges of one pool. Counters count since vswitchd started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Leases now, and at most.
    pub leases: u64,
    pub lease_cap: u64,
    /// Offers outstanding now.
    pub offers: u64,
    /// Addresses quarantined now.
    pub quarantined: u64,
    /// DHCPDISCOVERs that found no free address.
    pub exhausted: u64,
    /// DHCPDISCOVERs and DHCPREQUESTs refused because the lease cap was reached while
    /// the range had addresses left (ranges larger than [`LEASES_MAX`]); a range whose
    /// every address is leased counts as exhausted.
    pub capped: u64,
    /// DHCPDECLINEs accepted (the holder declined its lease).
    pub declined: u64,
    /// DHCPDECLINEs ignored: not from the holder, not its address, outside the subnet.
    pub declines_ignored: u64,
}

/// Why no address was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoOffer {
    /// Every address is leased, reserved or quarantined.
    Exhausted,
    /// The lease cap ([`LEASES_MAX`]) is reached with addresses left in the range.
    Capped,
    /// Not a client that can hold an address (zero or multicast MAC).
    BadClient,
}

/// Why a DHCPREQUEST is refused (the answer is a DHCPNAK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Outside the range, reserved, quarantined, or another client's lease.
    NotFree,
    /// The lease cap is reached.
    Capped,
    /// Not a client that can hold an address (zero or multicast MAC).
    BadClient,
}

/// One bit per address of a window; a set bit is taken. `full` has one bit per word of
/// `words`, set when that word is all ones, so the first clear bit costs
/// O(len / 4096) word reads.
pub(crate) struct Bitmap {
    words: Vec<u64>,
    full: Vec<u64>,
    pub(crate) len: usize,
    /// Words read by [`Bitmap::first_clear`] (tests check the cost of picking).
    #[cfg(test)]
    reads: std::cell::Cell<usize>,
}

impl Bitmap {
    pub(crate) fn new(len: usize) -> Bitmap {
        let nw = len.div_ceil(64);
        let mut b = Bitmap {
            words: vec![0; nw],
            full: vec![0; nw.div_ceil(64)],
            len,
            #[cfg(test)]
            reads: std::cell::Cell::new(0),
        };
        // Bits past the end, and summary bits past the last word, read as taken.
        if !len.is_multiple_of(64) {
            if let Some(w) = b.words.last_mut() {
                *w = !0u64 << (len % 64);
            }
        }
        for w in nw..b.full.len() * 64 {
            b.full[w / 64] |= 1 << (w % 64);
        }
        b
    }

    pub(crate) fn set(&mut self, i: usize, taken: bool) {
        if i >= self.len {
            return;
        }
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if taken {
            self.words[w] |= bit;
        } else {
            self.words[w] &= !bit;
        }
        let f = 1u64 << (w % 64);
        if self.words[w] == !0 {
            self.full[w / 64] |= f;
        } else {
            self.full[w / 64] &= !f;
        }
    }

    pub(crate) fn first_clear(&self) -> Option<usize> {
        for (si, s) in self.full.iter().enumerate() {
            #[cfg(test)]
            self.reads.set(self.reads.get() + 1);
            if *s != !0 {
                let w = si * 64 + s.trailing_ones() as usize;
                #[cfg(test)]
                self.reads.set(self.reads.get() + 1);
                let i = w * 64 + self.words.get(w)?.trailing_ones() as usize;
                return (i < self.len).then_some(i);
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hold {
    Lease {
        mac: MacAddr,
        hostname: Option<String>,
    },
    Offer(MacAddr),
    Quarantine,
}

struct Slot {
    hold: Hold,
    expires: u64,
}

/// The DHCP state of one bridge. See the module documentation.
pub struct Pool {
    conf: PoolConf,
    /// Taken addresses (reserved or with a claim) among the first of the range.
    window: Bitmap,
    /// Every claim, by address.
    slots: HashMap<Ipv4Addr, Slot>,
    lease_of: HashMap<MacAddr, Ipv4Addr>,
    offer_of: HashMap<MacAddr, Ipv4Addr>,
    /// Every claim by expiry, for pruning.
    expiry: BTreeSet<(u64, Ipv4Addr)>,
    /// Offers and quarantined addresses by expiry, i.e. by age: the oldest goes first.
    offer_age: BTreeSet<(u64, Ipv4Addr)>,
    quarantine_age: BTreeSet<(u64, Ipv4Addr)>,
    /// Leases of clients without a reservation.
    free_leases: usize,
    /// Lease hostnames (first come, first served). Copy-on-write: the DNS service
    /// holds a clone while it answers, so updates are in place almost always.
    names: Arc<NameMap>,
    stats: PoolStats,
    /// Leases changed since the store last looked (the db needs writing).
    dirty: bool,
    /// Leases granted and ended since the daemon last drained them (bounded).
    changes: Vec<LeaseChange>,
    changes_lost: u64,
}

impl Pool {
    /// An empty pool. Its bitmap window covers the whole range, or (for huge ranges)
    /// enough of its first addresses that a free bit exists while the cap is not
    /// reached: taken bits ≤ reserved + offers + quarantined + leases
    /// < reserved + OFFERS_MAX + QUARANTINE_MAX + LEASES_MAX.
    pub fn new(conf: PoolConf) -> Pool {
        let window = conf
            .size()
            .min(LEASES_MAX + OFFERS_MAX + QUARANTINE_MAX + conf.reserved.len());
        let mut p = Pool {
            window: Bitmap::new(window),
            conf,
            slots: HashMap::new(),
            lease_of: HashMap::new(),
            offer_of: HashMap::new(),
            expiry: BTreeSet::new(),
            offer_age: BTreeSet::new(),
            quarantine_age: BTreeSet::new(),
            free_leases: 0,
            names: Arc::default(),
            stats: PoolStats::default(),
            dirty: false,
            changes: Vec::new(),
            changes_lost: 0,
        };
        let reserved: Vec<Ipv4Addr> = p.conf.reserved.iter().copied().collect();
        for ip in reserved {
            p.mark(ip, true);
        }
        p
    }

    pub fn conf(&self) -> &PoolConf {
        &self.conf
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            leases: self.lease_of.len() as u64,
            lease_cap: self.conf.lease_cap() as u64,
            offers: self.offer_of.len() as u64,
            quarantined: self.quarantine_age.len() as u64,
            ..self.stats
        }
    }

    /// Lease hostnames and their addresses.
    pub fn names(&self) -> Arc<NameMap> {
        self.names.clone()
    }

    /// The host name of `mac`'s live lease, if it registered one.
    pub fn hostname_of(&self, mac: MacAddr, now: u64) -> Option<String> {
        let ip = self.lease_of.get(&mac)?;
        match self.slots.get(ip) {
            Some(Slot {
                hold: Hold::Lease { hostname, .. },
                expires,
            }) if *expires > now => hostname.clone(),
            _ => None,
        }
    }

    /// The leases, by address.
    pub fn leases(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self
            .slots
            .iter()
            .filter_map(|(ip, s)| match &s.hold {
                Hold::Lease { mac, hostname } => Some(Lease {
                    mac: *mac,
                    ip: *ip,
                    hostname: hostname.clone(),
                    expires: s.expires,
                }),
                _ => None,
            })
            .collect();
        v.sort_by_key(|l| l.ip);
        v
    }

    fn index(&self, ip: Ipv4Addr) -> Option<usize> {
        if !self.conf.in_range(ip) {
            return None;
        }
        let i = (u32::from(ip) - u32::from(self.conf.first)) as usize;
        (i < self.window.len).then_some(i)
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.conf.first).wrapping_add(i as u32))
    }

    fn mark(&mut self, ip: Ipv4Addr, taken: bool) {
        if let Some(i) = self.index(ip) {
            self.window.set(i, taken);
        }
    }

    fn journal(&mut self, c: LeaseChange) {
        if self.changes.len() < CHANGES_MAX {
            self.changes.push(c);
        } else {
            self.changes_lost += 1;
        }
    }

    fn reserved_client(&self, mac: MacAddr) -> bool {
        self.conf.reservations.contains_key(&mac)
    }

    /// Remove the claim on `ip`, with everything that indexes it.
    fn take(&mut self, ip: Ipv4Addr) -> Option<Slot> {
        let s = self.slots.remove(&ip)?;
        self.expiry.remove(&(s.expires, ip));
        match &s.hold {
            Hold::Lease { mac, hostname } => {
                self.lease_of.remove(mac);
                if !self.reserved_client(*mac) {
                    self.free_leases = self.free_leases.saturating_sub(1);
                }
                if let Some(h) = hostname {
                    if self.names.get(h).is_some_and(|(a, _)| *a == ip) {
                        Arc::make_mut(&mut self.names).remove(h);
                    }
                }
                self.dirty = true;
                let ended = Lease {
                    mac: *mac,
                    ip,
                    hostname: hostname.clone(),
                    expires: s.expires,
                };
                self.journal(LeaseChange::Ended(ended));
            }
            Hold::Offer(mac) => {
                self.offer_of.remove(mac);
                self.offer_age.remove(&(s.expires, ip));
            }
            Hold::Quarantine => {
                self.quarantine_age.remove(&(s.expires, ip));
            }
        }
        let reserved = self.conf.reserved.contains(&ip);
        self.mark(ip, reserved);
        Some(s)
    }

    /// Put a claim on `ip`, which has none.
    fn put(&mut self, ip: Ipv4Addr, hold: Hold, expires: u64) {
        if let Some(old) = self.take(ip) {
            tracing::error!(%ip, hold = ?old.hold, "DHCP pool: an address claimed twice");
        }
        self.expiry.insert((expires, ip));
        match &hold {
            Hold::Lease { mac, hostname } => {
                self.lease_of.insert(*mac, ip);
                if !self.reserved_client(*mac) {
                    self.free_leases += 1;
                }
                if let Some(h) = hostname {
                    Arc::make_mut(&mut self.names).insert(h.clone(), (ip, expires));
                }
                self.dirty = true;
                let granted = Lease {
                    mac: *mac,
                    ip,
                    hostname: hostname.clone(),
                    expires,
                };
                self.journal(LeaseChange::Granted(granted));
            }
            Hold::Offer(mac) => {
                self.offer_of.insert(*mac, ip);
                self.offer_age.insert((expires, ip));
            }
            Hold::Quarantine => {
                self.quarantine_age.insert((expires, ip));
            }
        }
        self.mark(ip, true);
        self.slots.insert(ip, Slot { hold, expires });
    }

    /// Drop every claim that expired by `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some(&(exp, ip)) = self.expiry.first() {
            if exp > now {
                break;
            }
            if self.take(ip).is_none() {
                self.expiry.remove(&(exp, ip));
            }
        }
    }

    /// Whether `mac` may hold `ip`: its reservation, else an address of the range that
    /// is not reserved, not quarantined, and not another client's lease.
    fn allowed(&self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        if let Some(r) = self.conf.reservations.get(&mac) {
            return *r == ip;
        }
        self.conf.in_range(ip)
            && !self.conf.reserved.contains(&ip)
            && match self.slots.get(&ip).map(|s| &s.hold) {
                None | Some(Hold::Offer(_)) => true,
                Some(Hold::Lease { mac: m, .. }) => *m == mac,
                Some(Hold::Quarantine) => false,
            }
    }

    /// A new lease for `mac` would pass the cap.
    fn capped(&self, mac: MacAddr) -> bool {
        !self.reserved_client(mac)
            && !self.lease_of.contains_key(&mac)
            && self.free_leases >= self.conf.pool_cap()
    }

    /// Count a client refused by the cap: the pool is exhausted when the cap is its
    /// size (every address leased), else the cap bit ([`LEASES_MAX`]).
    fn count_capped(&mut self) -> NoOffer {
        if self.conf.pool_cap() == self.conf.size() {
            self.count_exhausted();
            return NoOffer::Exhausted;
        }
        self.stats.capped += 1;
        if self.stats.capped % 1000 == 1 {
            tracing::warn!(bridge = %self.conf.bridge, times = self.stats.capped, cap = self.conf.lease_cap(), "DHCP lease cap reached: client refused");
        }
        NoOffer::Capped
    }

    fn count_exhausted(&mut self) {
        self.stats.exhausted += 1;
        // Logged once per 100 so a starvation attack does not flood the log.
        if self.stats.exhausted % 100 == 1 {
            tracing::warn!(bridge = %self.conf.bridge, times = self.stats.exhausted, "DHCP pool exhausted: no offer");
        }
    }

    /// The address to offer `mac` (a DHCPDISCOVER, asking for `wanted`): its
    /// reservation, its lease, its earlier offer, `wanted` if untaken, the lowest
    /// untaken address, or the oldest offer made to another client.
    pub fn offer(
        &mut self,
        mac: MacAddr,
        wanted: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Ipv4Addr, NoOffer> {
        if mac.is_zero() || mac.is_multicast() {
            return Err(NoOffer::BadClient);
        }
        self.prune(now);
        if let Some(r) = self.conf.reservations.get(&mac) {
            return Ok(*r);
        }
        if let Some(&ip) = self.lease_of.get(&mac) {
            if self.allowed(mac, ip) {
                return Ok(ip);
            }
        }
        if self.capped(mac) {
            return Err(self.count_capped());
        }
        if let Some(&ip) = self.offer_of.get(&mac) {
            self.take(ip);
            if self.allowed(mac, ip) {
                self.put(ip, Hold::Offer(mac), now + OFFER_SECS);
                return Ok(ip);
            }
        }
        let untaken = |ip: &Ipv4Addr| self.allowed(mac, *ip) && !self.slots.contains_key(ip);
        let ip = wanted
            .filter(untaken)
            .or_else(|| self.window.first_clear().map(|i| self.addr(i)))
            .or_else(|| self.offer_age.first().map(|&(_, ip)| ip));
        let Some(ip) = ip else {
            self.count_exhausted();
            return Err(NoOffer::Exhausted);
        };
        // A stolen offer, if it was one.
        self.take(ip);
        while self.offer_of.len() >= OFFERS_MAX {
            let Some(&(_, old)) = self.offer_age.first() else {
                break;
            };
            self.take(old);
        }
        self.put(ip, Hold::Offer(mac), now + OFFER_SECS);
        Ok(ip)
    }

    /// The client chose another server: forget its offer.
    pub fn forget_offer(&mut self, mac: MacAddr) {
        if let Some(&ip) = self.offer_of.get(&mac) {
            self.take(ip);
        }
    }

    /// Lease `ip` to `mac` (a DHCPREQUEST), or renew its lease. `hostname` (valid,
    /// lower-case) is registered unless another lease holds that name.
    pub fn request(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        hostname: Option<String>,
        now: u64,
    ) -> Result<(), Refused> {
        if mac.is_zero() || mac.is_multicast() {
            return Err(Refused::BadClient);
        }
        self.prune(now);
        if !self.allowed(mac, ip) {
            return Err(Refused::NotFree);
        }
        if self.capped(mac) {
            self.count_capped();
            return Err(Refused::Capped);
        }
        // One lease and no offer per client; whatever else held the address (an offer,
        // or a lease that a reservation overrides) goes.
        if let Some(&old) = self.lease_of.get(&mac) {
            self.take(old);
        }
        if let Some(&o) = self.offer_of.get(&mac) {
            self.take(o);
        }
        self.take(ip);
        let hostname = hostname.filter(|h| !self.names.contains_key(h));
        self.put(
            ip,
            Hold::Lease { mac, hostname },
            now + u64::from(LEASE_SECS),
        );
        Ok(())
    }

    /// A DHCPRELEASE from `mac` (for `ciaddr`, if given). Whether a lease went.
    pub fn release(&mut self, mac: MacAddr, ciaddr: Ipv4Addr, now: u64) -> bool {
        self.prune(now);
        match self.lease_of.get(&mac) {
            Some(&ip) if ciaddr.is_unspecified() || ciaddr == ip => self.take(ip).is_some(),
            _ => false,
        }
    }

    /// A port left the bridge (`del-port`): the lease of `gone` (a guest whose veth was
    /// deleted with the port) goes, and the leases of `macs` (addresses seen on the
    /// port) lose their hostname, so no name outlives the port it was registered for.
    pub fn forget_port(&mut self, gone: Option<MacAddr>, macs: &[MacAddr], now: u64) {
        self.prune(now);
        if let Some(&ip) = gone.and_then(|m| self.lease_of.get(&m)) {
            self.take(ip);
        }
        for mac in macs {
            let Some(&ip) = self.lease_of.get(mac) else {
                continue;
            };
            let Some(slot) = self.slots.get(&ip) else {
                continue;
            };
            if let Hold::Lease {
                mac,
                hostname: Some(_),
            } = slot.hold
            {
                let expires = slot.expires;
                self.take(ip);
                self.put(
                    ip,
                    Hold::Lease {
                        mac,
                        hostname: None,
                    },
                    expires,
                );
            }
        }
    }

    /// A DHCPDECLINE from `mac` for `ip`: accepted only from the client holding the
    /// lease on `ip`, inside the subnet. The lease goes and the address is quarantined
    /// (the oldest quarantine makes room). Whether it was accepted; an ignored one is
    /// counted.
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        self.prune(now);
        if self.lease_of.get(&mac) != Some(&ip) || !self.conf.subnet.contains(&ip) {
            self.ignore_decline();
            return false;
        }
        self.take(ip);
        self.stats.declined += 1;
        // A reserved address goes to its client only: nothing to keep others from.
        if self.conf.in_range(ip) && !self.conf.reserved.contains(&ip) {
            while self.quarantine_age.len() >= self.conf.quarantine_cap() {
                let Some(&(_, old)) = self.quarantine_age.first() else {
                    break;
                };
                self.take(old);
            }
            self.put(ip, Hold::Quarantine, now + QUARANTINE_SECS);
        }
        true
    }

    /// Count a DHCPDECLINE that is ignored before it reaches the pool (another
    /// server's, no address, a frame from another MAC than the client's).
    /// The lease changes since the last call (renewals left out), and how many were
    /// lost because more than [`CHANGES_MAX`] happened in between.
    pub fn drain_changes(&mut self) -> (Vec<LeaseChange>, u64) {
        let lost = std::mem::take(&mut self.changes_lost);
        (coalesce(std::mem::take(&mut self.changes)), lost)
    }

    pub fn ignore_decline(&mut self) {
        self.stats.declines_ignored += 1;
        if self.stats.declines_ignored % 1000 == 1 {
            tracing::warn!(bridge = %self.conf.bridge, times = self.stats.declines_ignored, "DHCPDECLINE ignored: not from the lease holder, for its address, in the subnet");
        }
    }

    /// Take a lease back (from the db, or from the pool this one replaces) if it is
    /// still live and fits: a unicast MAC, an address it may hold, within the cap.
    fn restore(&mut self, l: Lease, now: u64) -> bool {
        if l.expires <= now
            || l.mac.is_zero()
            || l.mac.is_multicast()
            || self.lease_of.contains_key(&l.mac)
            || self.slots.contains_key(&l.ip)
            || !self.allowed(l.mac, l.ip)
            || self.capped(l.mac)
        {
            return false;
        }
        let hostname = l.hostname.filter(|h| !self.names.contains_key(h));
        let expires = l.expires.min(now + u64::from(LEASE_SECS));
        self.put(
            l.ip,
            Hold::Lease {
                mac: l.mac,
                hostname,
            },
            expires,
        );
        true
    }

    /// Take over the state of `old` (same bridge, changed settings): the leases and
    /// quarantined addresses that still fit, and the counters.
    fn adopt(&mut self, mut old: Pool, now: u64) {
        self.stats = old.stats;
        // Leases carried over did not change; those that no longer fit ended.
        let mut changes = std::mem::take(&mut old.changes);
        for l in old.leases() {
            if !self.restore(l.clone(), now) {
                changes.push(LeaseChange::Ended(l));
            }
        }
        self.changes = changes;
        self.changes_lost = old.changes_lost;
        for &(exp, ip) in &old.quarantine_age {
            if exp > now
                && self.conf.in_range(ip)
                && !self.conf.reserved.contains(&ip)
                && !self.slots.contains_key(&ip)
                && self.quarantine_age.len() < self.conf.quarantine_cap()
            {
                self.put(ip, Hold::Quarantine, exp);
            }
        }
        self.dirty = true;
    }
}

#[derive(Default)]
struct Inner {
    pools: HashMap<String, Pool>,
    /// DHCPv6 pools (`tables::leases6`), by bridge.
    pools6: HashMap<String, Pool6>,
    /// Bumped on every change to the leases (what the db holds).
    generation: u64,
    /// Lease changes of every pool (DHCPv4 and DHCPv6), and of pools that went (their
    /// bridge, or its DHCP), in the order they were made, not yet drained: each
    /// operation on a pool moves its changes here (at most [`CHANGES_MAX`] wait).
    orphaned: Vec<(String, LeaseChange)>,
    /// Changes lost to the bound since the last drain.
    lost: u64,
}

impl Inner {
    fn settle(&mut self, bridge: &str) {
        let mut changes = Vec::new();
        if let Some(p) = self.pools.get_mut(bridge) {
            if std::mem::take(&mut p.dirty) {
                self.generation += 1;
            }
            let (c, l) = p.drain_changes();
            changes.extend(c);
            self.lost += l;
        }
        if let Some(p) = self.pools6.get_mut(bridge) {
            if std::mem::take(&mut p.dirty) {
                self.generation += 1;
            }
            let (c, l) = p.drain_changes();
            changes.extend(c);
            self.lost += l;
        }
        self.journal(bridge, changes);
    }

    /// Keep `changes` of `bridge` for the next drain, within the bound.
    fn journal(&mut self, bridge: &str, changes: Vec<LeaseChange>) {
        let room = CHANGES_MAX.saturating_sub(self.orphaned.len());
        self.lost += changes.len().saturating_sub(room) as u64;
        self.orphaned.extend(
            changes
                .into_iter()
                .take(room)
                .map(|c| (bridge.to_string(), c)),
        );
    }
}

/// The pools of every bridge with DHCP. See the module documentation.
#[derive(Default)]
pub struct LeaseStore {
    inner: Mutex<Inner>,
}

impl LeaseStore {
    pub fn new() -> LeaseStore {
        LeaseStore::default()
    }

    /// Make the pools match the configuration: `confs` names every bridge with DHCP.
    /// Other bridges' pools go (with their leases); a pool whose settings changed is
    /// rebuilt, keeping what still fits.
    pub fn sync(&self, confs: Vec<PoolConf>, now: u64) {
        let mut g = self.inner.lock();
        let gone: Vec<String> = g
            .pools
            .keys()
            .filter(|name| !confs.iter().any(|c| &c.bridge == *name))
            .cloned()
            .collect();
        for name in gone {
            let Some(mut p) = g.pools.remove(&name) else {
                continue;
            };
            g.generation += 1;
            let (mut changes, _) = p.drain_changes();
            changes.extend(p.leases().into_iter().map(LeaseChange::Ended));
            g.journal(&name, changes);
        }
        for conf in confs {
            let name = conf.bridge.clone();
            match g.pools.get_mut(&name) {
                Some(p) if p.conf == conf => {}
                Some(p) => {
                    let old = std::mem::replace(p, Pool::new(conf));
                    p.adopt(old, now);
                }
                None => {
                    g.pools.insert(name.clone(), Pool::new(conf));
                }
            }
            g.settle(&name);
        }
    }

    /// Take back `bridge`'s leases from the db (after [`LeaseStore::sync`]); those
    /// expired or no longer fitting are dropped. How many were kept.
    pub fn restore(&self, bridge: &str, leases: Vec<Lease>, now: u64) -> usize {
        let mut g = self.inner.lock();
        let Some(p) = g.pools.get_mut(bridge) else {
            return 0;
        };
        let kept = leases
            .into_iter()
            .filter(|l| p.restore(l.clone(), now))
            .count();
        g.settle(bridge);
        kept
    }

    /// Run `f` on `bridge`'s pool (none: the bridge has no DHCP).
    pub fn with_pool<R>(&self, bridge: &str, f: impl FnOnce(&mut Pool) -> R) -> Option<R> {
        let mut g = self.inner.lock();
        let r = f(g.pools.get_mut(bridge)?);
        g.settle(bridge);
        Some(r)
    }

    /// `bridge`'s live leases, by address.
    pub fn leases(&self, bridge: &str, now: u64) -> Option<Vec<Lease>> {
        self.with_pool(bridge, |p| {
            p.prune(now);
            p.leases()
        })
    }

    /// Every bridge's leases, and the generation they are of (for the db).
    pub fn all_leases(&self) -> (u64, HashMap<String, Vec<Lease>>) {
        let g = self.inner.lock();
        let all = g
            .pools
            .iter()
            .map(|(n, p)| (n.clone(), p.leases()))
            .collect();
        (g.generation, all)
    }

    /// Every pool's lease changes since the last call (DHCPv4 and DHCPv6, in the order
    /// they were made; renewals left out), and how many were lost to the bound.
    pub fn drain_changes(&self) -> (Vec<(String, LeaseChange)>, u64) {
        // Every pool operation settles its changes into the journal, in order.
        let mut g = self.inner.lock();
        let out = std::mem::take(&mut g.orphaned);
        (out, std::mem::take(&mut g.lost))
    }

    /// Changes so far to the leases; the db compares it with what it wrote.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Make the DHCPv6 pools match the configuration, as [`LeaseStore::sync`].
    pub fn sync6(&self, confs: Vec<Pool6Conf>, now: u64) {
        let mut g = self.inner.lock();
        let gone: Vec<String> = g
            .pools6
            .keys()
            .filter(|name| !confs.iter().any(|c| &c.bridge == *name))
            .cloned()
            .collect();
        for name in gone {
            let Some(mut p) = g.pools6.remove(&name) else {
                continue;
            };
            g.generation += 1;
            let (mut changes, _) = p.drain_changes();
            changes.extend(
                p.leases()
                    .into_iter()
                    .map(|l| LeaseChange::Ended6(l, End6::Replaced)),
            );
            g.journal(&name, changes);
        }
        for conf in confs {
            let name = conf.bridge.clone();
            match g.pools6.get_mut(&name) {
                Some(p) if *p.conf() == conf => {}
                Some(p) => {
                    let old = std::mem::replace(p, Pool6::new(conf));
                    p.adopt(old, now);
                }
                None => {
                    g.pools6.insert(name.clone(), Pool6::new(conf));
                }
            }
            g.settle(&name);
        }
    }

    /// Take back `bridge`'s DHCPv6 leases from the db. How many were kept.
    pub fn restore6(&self, bridge: &str, leases: Vec<Lease6>, now: u64) -> usize {
        let mut g = self.inner.lock();
        let Some(p) = g.pools6.get_mut(bridge) else {
            return 0;
        };
        let kept = leases
            .into_iter()
            .filter(|l| p.restore(l.clone(), now))
            .count();
        g.settle(bridge);
        kept
    }

    /// Run `f` on `bridge`'s DHCPv6 pool (none: the bridge has no DHCPv6).
    pub fn with_pool6<R>(&self, bridge: &str, f: impl FnOnce(&mut Pool6) -> R) -> Option<R> {
        let mut g = self.inner.lock();
        let r = f(g.pools6.get_mut(bridge)?);
        g.settle(bridge);
        Some(r)
    }

    /// `bridge`'s DHCPv6 lease host names (expired leases pruned first).
    pub fn names6(&self, bridge: &str, now: u64) -> Option<Arc<LeaseNames6>> {
        self.with_pool6(bridge, |p| {
            p.prune(now);
            p.names()
        })
    }

    /// The host name `mac`'s DHCPv4 lease on `bridge` registered, if any.
    pub fn hostname_of(&self, bridge: &str, mac: MacAddr, now: u64) -> Option<String> {
        self.inner.lock().pools.get(bridge)?.hostname_of(mac, now)
    }

    /// `bridge`'s live DHCPv6 leases, by address.
    pub fn leases6(&self, bridge: &str, now: u64) -> Option<Vec<Lease6>> {
        self.with_pool6(bridge, |p| {
            p.prune(now);
            p.leases()
        })
    }

    /// Every bridge's DHCPv4 and DHCPv6 leases, and the generation they are of.
    #[allow(clippy::type_complexity)]
    pub fn all_leases_both(
        &self,
    ) -> (
        u64,
        HashMap<String, Vec<Lease>>,
        HashMap<String, Vec<Lease6>>,
    ) {
        let g = self.inner.lock();
        let v4 = g
            .pools
            .iter()
            .map(|(n, p)| (n.clone(), p.leases()))
            .collect();
        let v6 = g
            .pools6
            .iter()
            .map(|(n, p)| (n.clone(), p.leases()))
            .collect();
        (g.generation, v4, v6)
    }

    pub fn stats6(&self, bridge: &str) -> Option<Pool6Stats> {
        self.inner.lock().pools6.get(bridge).map(Pool6::stats)
    }

    /// `bridge`'s lease hostnames.
    pub fn names(&self, bridge: &str) -> Option<Arc<NameMap>> {
        self.inner.lock().pools.get(bridge).map(Pool::names)
    }

    pub fn stats(&self, bridge: &str) -> Option<PoolStats> {
        self.inner.lock().pools.get(bridge).map(Pool::stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn conf(first: &str, last: &str) -> PoolConf {
        PoolConf {
            bridge: "br1".into(),
            first: first.parse().unwrap(),
            last: last.parse().unwrap(),
            subnet: "10.0.0.0/16".parse().unwrap(),
            server: Ipv4Addr::new(10, 0, 0, 1),
            mtu: 1500,
            reserved: [Ipv4Addr::new(10, 0, 0, 1)].into_iter().collect(),
            reservations: HashMap::new(),
        }
    }

    fn mac(n: u64) -> MacAddr {
        MacAddr::from_u64(0x02_00_00_00_00_00 | n)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// DISCOVER + REQUEST: the address `m` ends up leasing.
    fn dora(p: &mut Pool, m: MacAddr, now: u64) -> Ipv4Addr {
        let a = p.offer(m, None, now).unwrap();
        p.request(m, a, None, now).unwrap();
        a
    }

    /// xorshift: reproducible "random" MACs.
    fn macs(seed: u64) -> impl Iterator<Item = MacAddr> {
        let mut x = seed | 1;
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(MacAddr::from_u64(x & 0xffff_ffff_ffff))
        })
    }

    #[test]
    fn lowest_first_and_offers_are_not_leases() {
        let mut p = Pool::new(conf("10.0.0.1", "10.0.0.10"));
        // The gateway (reserved) is skipped.
        assert_eq!(p.offer(mac(1), None, NOW), Ok(ip("10.0.0.2")));
        // A second new client is offered another address; the first one again its own.
        assert_eq!(p.offer(mac(2), None, NOW), Ok(ip("10.0.0.3")));
        assert_eq!(p.offer(mac(1), None, NOW), Ok(ip("10.0.0.2")));
        assert_eq!(p.stats().leases, 0);
        assert_eq!(p.stats().offers, 2);
        // Offers are soft: client 2 may take the address offered to client 1.
        p.request(mac(2), ip("10.0.0.2"), None, NOW).unwrap();
        assert_eq!(p.stats().offers, 0, "both offers went");
        assert_eq!(p.offer(mac(1), None, NOW), Ok(ip("10.0.0.3")));
        // Offers expire by themselves.
        assert_eq!(p.stats().offers, 1);
        p.prune(NOW + OFFER_SECS);
        assert_eq!(p.stats().offers, 0);
        assert_eq!(p.leases().len(), 1);
    }

    #[test]
    fn decline_from_a_non_holder_is_ignored() {
        let mut p = Pool::new(conf("10.0.0.100", "10.0.0.109"));
        let a = dora(&mut p, mac(1), NOW);
        dora(&mut p, mac(2), NOW);
        // Another client, a client without a lease, an address it does not hold.
        assert!(!p.decline(mac(2), a, NOW));
        assert!(!p.decline(mac(3), a, NOW));
        assert!(!p.decline(mac(1), ip("10.0.0.105"), NOW));
        assert!(!p.decline(MacAddr::default(), a, NOW));
        assert_eq!(p.stats().declines_ignored, 4);
        assert_eq!(p.stats().declined, 0);
        let held: Vec<(MacAddr, Ipv4Addr)> = p.leases().iter().map(|l| (l.mac, l.ip)).collect();
        assert!(held.contains(&(mac(1), a)), "{held:?}");
        assert_eq!(held.len(), 2);
        // The holder renews as before.
        assert_eq!(p.request(mac(1), a, None, NOW + 10), Ok(()));
    }

    #[test]
    fn decline_outside_the_subnet_is_ignored() {
        let mut c = conf("10.0.0.100", "10.0.0.109");
        c.subnet = "10.0.0.0/24".parse().unwrap();
        // A reserved client whose address lies outside the subnet (the configuration
        // allows no such thing; the pool must not trust that).
        c.reservations.insert(mac(9), ip("192.168.1.9"));
        let mut p = Pool::new(c);
        p.request(mac(9), ip("192.168.1.9"), None, NOW).unwrap();
        for far in ["192.168.1.9", "10.0.1.100", "0.0.0.0", "255.255.255.255"] {
            assert!(!p.decline(mac(9), ip(far), NOW), "{far}");
        }
        assert_eq!(p.stats().declines_ignored, 4);
        assert_eq!(p.stats().quarantined, 0);
        assert_eq!(p.leases().len(), 1);
    }

    #[test]
    fn decline_from_the_holder_quarantines_until_it_expires() {
        let mut p = Pool::new(conf("10.0.0.100", "10.0.0.101"));
        let a = dora(&mut p, mac(1), NOW);
        assert_eq!(a, ip("10.0.0.100"));
        assert!(p.decline(mac(1), a, NOW));
        assert_eq!((p.stats().declined, p.stats().quarantined), (1, 1));
        assert!(p.leases().is_empty());
        // Nobody gets it while quarantined: not offered, not granted on request.
        assert_eq!(p.offer(mac(1), None, NOW + 1), Ok(ip("10.0.0.101")));
        assert_eq!(p.request(mac(2), a, None, NOW + 1), Err(Refused::NotFree));
        // Asked for by a new client, it offers the only other address instead (the one
        // offered to client 1 a moment ago: offers are soft).
        assert_eq!(p.offer(mac(2), Some(a), NOW + 1), Ok(ip("10.0.0.101")));
        // After the quarantine it is free again.
        p.prune(NOW + QUARANTINE_SECS);
        assert_eq!(p.stats().quarantined, 0);
        assert_eq!(p.request(mac(2), a, None, NOW + QUARANTINE_SECS), Ok(()));
    }

    #[test]
    fn quarantine_is_capped_oldest_first() {
        let mut p = Pool::new(conf("10.0.0.100", "10.0.0.199"));
        let cap = p.conf().quarantine_cap();
        assert_eq!(cap, 25);
        for n in 0..(cap as u64 + 5) {
            let a = dora(&mut p, mac(n), NOW + n);
            assert!(p.decline(mac(n), a, NOW + n));
        }
        assert_eq!(p.stats().quarantined, cap as u64);
        assert_eq!(p.stats().declined, cap as u64 + 5);
    }

    #[test]
    fn cap_holds_under_20000_random_mac_discovers_and_requests() {
        let mut p = Pool::new(conf("10.0.0.100", "10.0.0.109"));
        let real = dora(&mut p, mac(1), NOW);
        let mut acks = 0;
        for (i, m) in macs(16).take(20_000).enumerate() {
            let now = NOW + i as u64 / 1000;
            match p.offer(m, Some(real), now) {
                Ok(a) => {
                    assert_ne!(a, real, "the real client's address offered to {m}");
                    if i % 2 == 0 && p.request(m, a, Some(format!("h{i}")), now).is_ok() {
                        acks += 1;
                    }
                }
                Err(e) => assert!(
                    matches!(e, NoOffer::Exhausted | NoOffer::BadClient),
                    "{e:?}"
                ),
            }
            // A flood of DECLINEs for the real lease from everyone else.
            assert!(!p.decline(m, real, now));
            let s = p.stats();
            assert!(s.leases <= s.lease_cap && s.lease_cap == 10, "{s:?}");
            assert!(s.offers as usize <= OFFERS_MAX);
        }
        assert_eq!(acks, 9, "the nine free addresses, then the cap");
        let leases = p.leases();
        assert_eq!(leases.len(), 10);
        assert!(leases.iter().any(|l| l.mac == mac(1) && l.ip == real));
        assert!(leases
            .iter()
            .all(|l| !l.mac.is_zero() && ip("10.0.0.100") <= l.ip && l.ip <= ip("10.0.0.109")));
        // The cap is the pool size here: a full pool, counted as exhausted.
        assert!(p.stats().exhausted > 0 && p.stats().capped == 0);
        assert!(p.stats().declines_ignored >= 20_000);
        assert!(p.names().len() <= 10);
    }

    #[test]
    fn offers_stay_bounded_in_a_big_pool() {
        let mut p = Pool::new(conf("10.0.1.0", "10.0.255.255"));
        let mut seen = HashSet::new();
        for m in macs(7).take(20_000) {
            if let Ok(a) = p.offer(m, None, NOW) {
                seen.insert(a);
            }
            assert!(p.stats().offers as usize <= OFFERS_MAX);
        }
        // The oldest offers made room: their addresses were offered again.
        assert!(seen.len() <= 20_000 && p.stats().offers as usize == OFFERS_MAX);
        assert_eq!(p.stats().leases, 0);
    }

    #[test]
    fn picking_stays_fast_in_a_full_big_pool() {
        // 10.0.0.0/16 minus the gateway: 65 534 addresses, 65 000 leased.
        let mut p = Pool::new(conf("10.0.0.1", "10.0.255.254"));
        for n in 0..65_000u64 {
            dora(&mut p, mac(n + 10), NOW);
        }
        assert_eq!(p.stats().leases, 65_000);
        p.window.reads.set(0);
        let a = p.offer(mac(1), None, NOW).unwrap();
        assert_eq!(a, Ipv4Addr::from(u32::from(ip("10.0.0.1")) + 65_001));
        // The summary words of the window, and one word: not one probe per lease.
        let words = p.window.full.len() + 1;
        assert!(
            p.window.reads.get() <= words,
            "{} word reads, expected at most {words}",
            p.window.reads.get()
        );
        assert!(words <= 18);
    }

    #[test]
    fn lease_cap_bites_in_a_range_larger_than_it() {
        // A /15 range: 131 069 addresses, 65 536 leases at most.
        let mut c = conf("10.0.0.2", "10.1.255.254");
        c.subnet = "10.0.0.0/15".parse().unwrap();
        let mut p = Pool::new(c);
        for n in 0..LEASES_MAX as u64 {
            dora(&mut p, mac(n + 10), NOW);
        }
        assert_eq!(p.offer(mac(1), None, NOW), Err(NoOffer::Capped));
        assert_eq!(
            p.request(mac(1), ip("10.1.200.1"), None, NOW),
            Err(Refused::Capped)
        );
        let s = p.stats();
        assert_eq!((s.leases, s.capped, s.exhausted), (LEASES_MAX as u64, 2, 0));
        // A client holding a lease still renews it.
        assert_eq!(p.request(mac(10), ip("10.0.0.2"), None, NOW + 1), Ok(()));
    }

    #[test]
    fn window_of_a_huge_pool_is_bounded_and_still_finds_addresses() {
        // A /8 range: the bitmap covers its first addresses only.
        let mut c = conf("10.0.0.2", "10.255.255.254");
        c.subnet = "10.0.0.0/8".parse().unwrap();
        let p = Pool::new(c.clone());
        assert!(p.window.len <= LEASES_MAX + OFFERS_MAX + QUARANTINE_MAX + 1);
        assert!(p.window.words.len() * 8 <= 9 * 1024);
        // Requested addresses beyond the window are leased all the same.
        let mut p = Pool::new(c);
        assert_eq!(p.request(mac(1), ip("10.200.0.1"), None, NOW), Ok(()));
        assert_eq!(p.offer(mac(1), None, NOW), Ok(ip("10.200.0.1")));
    }

    #[test]
    fn zero_and_multicast_macs_hold_nothing() {
        let mut p = Pool::new(conf("10.0.0.100", "10.0.0.109"));
        let zero = MacAddr::default();
        let bcast = MacAddr::BROADCAST;
        assert_eq!(p.offer(zero, None, NOW), Err(NoOffer::BadClient));
        assert_eq!(p.offer(bcast, None, NOW), Err(NoOffer::BadClient));
        assert_eq!(
            p.request(zero, ip("10.0.0.100"), None, NOW),
            Err(Refused::BadClient)
        );
        assert!(!p.restore(
            Lease {
                mac: zero,
                ip: ip("10.0.0.101"),
                hostname: None,
                expires: NOW + 100
            },
            NOW
        ));
        assert!(p.leases().is_empty() && p.stats().offers == 0);
    }

    #[test]
    fn reservations_win_and_bypass_the_cap() {
        let mut c = conf("10.0.0.100", "10.0.0.101");
        c.reservations.insert(mac(7), ip("10.0.0.50"));
        c.reserved.insert(ip("10.0.0.50"));
        let mut p = Pool::new(c);
        dora(&mut p, mac(1), NOW);
        dora(&mut p, mac(2), NOW);
        assert_eq!(p.offer(mac(3), None, NOW), Err(NoOffer::Exhausted));
        assert_eq!(p.offer(mac(7), None, NOW), Ok(ip("10.0.0.50")));
        assert_eq!(p.request(mac(7), ip("10.0.0.50"), None, NOW), Ok(()));
        assert_eq!(
            p.request(mac(7), ip("10.0.0.100"), None, NOW),
            Err(Refused::NotFree)
        );
        assert_eq!(
            p.request(mac(8), ip("10.0.0.50"), None, NOW),
            Err(Refused::NotFree)
        );
        assert_eq!(p.stats().leases, 3);
        assert_eq!(p.stats().lease_cap, 3);
    }

    #[test]
    fn hostnames_first_come_first_served_and_leave_with_the_lease() {
        let mut p = Pool::new(conf("10.0.0.100", "10.0.0.109"));
        p.request(mac(1), ip("10.0.0.100"), Some("web".into()), NOW)
            .unwrap();
        p.request(mac(2), ip("10.0.0.101"), Some("web".into()), NOW)
            .unwrap();
        assert_eq!(
            p.names().get("web"),
            Some(&(ip("10.0.0.100"), NOW + u64::from(LEASE_SECS)))
        );
        // Renewal keeps the name and moves its expiry.
        p.request(mac(1), ip("10.0.0.100"), Some("web".into()), NOW + 5)
            .unwrap();
        assert_eq!(
            p.names().get("web").map(|n| n.1),
            Some(NOW + 5 + u64::from(LEASE_SECS))
        );
        assert!(p.release(mac(1), Ipv4Addr::UNSPECIFIED, NOW + 6));
        assert!(p.names().is_empty());
        // Expired leases are pruned, names with them.
        p.request(mac(3), ip("10.0.0.102"), Some("db".into()), NOW)
            .unwrap();
        p.prune(NOW + u64::from(LEASE_SECS));
        assert!(p.leases().is_empty() && p.names().is_empty());
    }

    #[test]
    fn store_sync_restore_and_generation() {
        let s = LeaseStore::new();
        let c = conf("10.0.0.100", "10.0.0.109");
        s.sync(vec![c.clone()], NOW);
        assert_eq!(s.generation(), 0);
        let good = Lease {
            mac: mac(1),
            ip: ip("10.0.0.100"),
            hostname: Some("a".into()),
            expires: NOW + 100,
        };
        let junk = vec![
            good.clone(),
            // Zero MAC, outside the range, expired, the same address twice.
            Lease {
                mac: MacAddr::default(),
                ..good.clone()
            },
            Lease {
                mac: mac(2),
                ip: ip("10.1.2.3"),
                ..good.clone()
            },
            Lease {
                mac: mac(3),
                ip: ip("10.0.0.101"),
                expires: NOW - 1,
                ..good.clone()
            },
            Lease {
                mac: mac(4),
                ..good.clone()
            },
        ];
        assert_eq!(s.restore("br1", junk, NOW), 1);
        let g = s.generation();
        assert!(g > 0);
        assert_eq!(s.leases("br1", NOW), Some(vec![good.clone()]));
        assert_eq!(
            s.names("br1").and_then(|n| n.get("a").copied()),
            Some((good.ip, good.expires))
        );
        // Same settings: nothing changes. Other settings: rebuilt, leases kept.
        s.sync(vec![c.clone()], NOW);
        assert_eq!(s.generation(), g);
        let mut c2 = c.clone();
        c2.reserved.insert(ip("10.0.0.105"));
        s.sync(vec![c2], NOW);
        assert_eq!(s.leases("br1", NOW), Some(vec![good]));
        // The bridge (or its DHCP) gone: its leases go.
        s.sync(vec![], NOW);
        assert_eq!(s.leases("br1", NOW), None);
        assert!(s.generation() > g);
    }

    #[test]
    fn bitmap_edges() {
        for len in [0, 1, 63, 64, 65, 4096, 4097] {
            let mut b = Bitmap::new(len);
            for i in 0..len {
                assert_eq!(b.first_clear(), Some(i), "len {len}");
                b.set(i, true);
            }
            assert_eq!(b.first_clear(), None, "len {len}");
            if len > 0 {
                b.set(len / 2, false);
                assert_eq!(b.first_clear(), Some(len / 2));
            }
        }
    }

    #[test]
    fn changes_are_a_journal_without_renewals() {
        let store = LeaseStore::new();
        store.sync(vec![conf("10.0.0.10", "10.0.0.20")], NOW);
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 10);
        let kinds = |v: &[(String, LeaseChange)]| {
            v.iter()
                .map(|(_, c)| match c {
                    LeaseChange::Granted(l) => format!("+{}", l.ip),
                    LeaseChange::Ended(l) => format!("-{}", l.ip),
                    _ => "v6".to_string(),
                })
                .collect::<Vec<_>>()
        };
        // Granted and released between two drains: both are reported, in order.
        store.with_pool("br1", |p| {
            p.request(mac, ip, Some("alpha".into()), NOW).unwrap();
            assert!(p.release(mac, Ipv4Addr::UNSPECIFIED, NOW));
        });
        assert_eq!(
            kinds(&store.drain_changes().0),
            ["+10.0.0.10", "-10.0.0.10"]
        );
        assert!(store.drain_changes().0.is_empty());
        // A renewal is no change.
        store.with_pool("br1", |p| p.request(mac, ip, None, NOW).unwrap());
        assert_eq!(kinds(&store.drain_changes().0), ["+10.0.0.10"]);
        store.with_pool("br1", |p| p.request(mac, ip, None, NOW + 10).unwrap());
        assert!(store.drain_changes().0.is_empty());
        // Settings changed: the lease is carried over, not reported again.
        store.sync(vec![conf("10.0.0.10", "10.0.0.30")], NOW);
        assert!(store.drain_changes().0.is_empty());
        // The bridge's DHCP goes: its lease ended.
        store.sync(vec![], NOW);
        let (v, lost) = store.drain_changes();
        assert_eq!(kinds(&v), ["-10.0.0.10"]);
        assert_eq!((v[0].0.as_str(), lost), ("br1", 0));
        // Bounded: past CHANGES_MAX the changes are counted, not kept.
        store.sync(vec![conf("10.0.0.10", "10.0.255.250")], NOW);
        store.with_pool("br1", |p| {
            for i in 0..CHANGES_MAX as u32 + 5 {
                let m: MacAddr = format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)
                    .parse()
                    .unwrap();
                let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 10)) + i);
                p.request(m, a, None, NOW).unwrap();
            }
        });
        let (v, lost) = store.drain_changes();
        assert_eq!((v.len(), lost), (CHANGES_MAX, 5));
    }

    #[test]
    fn changes_of_both_families_in_order() {
        use crate::tables::leases6::{Client6, Duid, Pool6Conf};
        let store = LeaseStore::new();
        store.sync(vec![conf("10.0.0.10", "10.0.0.20")], NOW);
        store.sync6(
            vec![Pool6Conf {
                bridge: "br1".into(),
                first: "fd00:1::10".parse().unwrap(),
                last: "fd00:1::20".parse().unwrap(),
                subnet: "fd00:1::/64".parse().unwrap(),
                server: "fd00:1::1".parse().unwrap(),
                duid: Duid::ll(mac(1)),
                reserved: HashSet::new(),
                reservations: HashMap::new(),
            }],
            NOW,
        );
        let d = Duid(vec![0, 4, 1, 2]);
        let c = Client6::default();
        let a6 = store
            .with_pool6("br1", |p| p.bind(&d, 1, &c, None, NOW).unwrap())
            .unwrap();
        store.with_pool("br1", |p| {
            p.request(mac(2), ip("10.0.0.10"), None, NOW).unwrap()
        });
        store.with_pool6("br1", |p| p.release(&d, a6, NOW));
        store.with_pool("br1", |p| p.release(mac(2), Ipv4Addr::UNSPECIFIED, NOW));
        let kinds: Vec<&str> = store
            .drain_changes()
            .0
            .iter()
            .map(|(_, c)| match c {
                LeaseChange::Granted(_) => "+4",
                LeaseChange::Ended(_) => "-4",
                LeaseChange::Granted6(_) => "+6",
                LeaseChange::Ended6(..) => "-6",
            })
            .collect();
        assert_eq!(kinds, ["+6", "+4", "-6", "-4"]);
    }
}
