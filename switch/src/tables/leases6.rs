//! DHCPv6 leases of one bridge (RFC 8415 IA_NA addresses), keyed by the client's DUID:
//! the bounded pool `service::dhcp6` answers from. It lives beside the DHCPv4 pools in
//! the [`LeaseStore`](super::LeaseStore) (same lock, same generation, same db batches).
//!
//! As for DHCPv4 (`tables::leases`), an address carries one claim with an expiry:
//! - a **lease** (a Request, Renew, Rebind or Rapid-Commit Solicit was answered with
//!   the address): persisted, listed by `dhcp-leases`;
//! - an **offer** (a Solicit was answered with an Advertise): kept [`OFFER_SECS`],
//!   soft (a Request for it from another client gets it), never persisted;
//! - a **quarantine** (the holder declined the address: duplicate address detection
//!   found it in use): not handed out for [`QUARANTINE_SECS`].
//!
//! One address per client DUID (the client's first IA_NA; its IAID is recorded).
//!
//! A lease may carry a host name (the client's FQDN option, RFC 4704, or the name
//! its MAC's DHCPv4 lease registered): the pool keeps a name → address map of its
//! leases for the bridge's DNS (AAAA and ip6.arpa PTR), first come first served, the
//! name gone with the lease. A client MAC (the Ethernet source of its messages) with a
//! reservation (`dhcp-reserve BR MAC IPV6`) gets that address and no other, in the
//! range or not; nobody else gets it. Leases that begin and end are journaled for
//! `monitor` like DHCPv4's ([`LeaseChange::Granted6`], [`LeaseChange::Ended6`]).
//!
//! Bounds, per bridge: leases ≤ the range size, at most [`LEASES_MAX`]; offers ≤
//! [`OFFERS_MAX`] (the oldest goes); quarantined addresses ≤ a quarter of the range, at
//! most [`QUARANTINE_MAX`]; a DUID is 2..=[`DUID_MAX`] bytes. A flood of Solicits with
//! random DUIDs therefore recycles the offer slots and never grows the pool; a flood
//! of Requests fills the range (or the cap) and is then refused (counted in
//! [`Pool6Stats::exhausted`] / [`Pool6Stats::capped`]).
//!
//! The lowest free address is found with the DHCPv4 pool's bitmap over the first
//! addresses of the range (a /64's default range has 2^64 addresses: the window is
//! large enough to always hold a free one while the cap is not reached).

use super::leases::{Bitmap, NoOffer, Refused, LEASES_MAX, OFFERS_MAX, OFFER_SECS};
use super::leases::{LeaseChange, CHANGES_MAX, QUARANTINE_MAX, QUARANTINE_SECS};
use crate::wire::MacAddr;
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::Arc;

/// Lease host names and their addresses (the shape of the snapshot's `Names6`).
pub type LeaseNames6 = HashMap<String, Ipv6Addr>;

/// Why a DHCPv6 lease ended (`monitor`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End6 {
    /// The client sent a Release.
    Released,
    /// Its valid lifetime ran out.
    Expired,
    /// The client declined it (duplicate address detection found it in use).
    Declined,
    /// Renewed, moved to another address, or dropped by a configuration change.
    Replaced,
}

impl End6 {
    pub fn as_str(self) -> &'static str {
        match self {
            End6::Released => "released",
            End6::Expired => "expired",
            End6::Declined => "declined",
            End6::Replaced => "replaced",
        }
    }
}

/// Who asks for a lease, beside its DUID: the Ethernet source of its message (for
/// reservations and the record) and the host name to register, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client6 {
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
}

/// Valid (and preferred) lifetime handed out, seconds; T1 and T2 are 1/2 and 4/5 of it.
pub const LEASE6_SECS: u32 = 3600;
/// Longest DUID accepted (RFC 8415 §11.1: 128 octets plus the 2-octet type).
pub const DUID_MAX: usize = 130;

/// A DHCP Unique Identifier (RFC 8415 §11), shown and stored as colon hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duid(pub Vec<u8>);

impl Duid {
    /// A DUID as a client may use it: 2..=DUID_MAX bytes.
    pub fn valid(b: &[u8]) -> Option<Duid> {
        (2..=DUID_MAX).contains(&b.len()).then(|| Duid(b.to_vec()))
    }

    /// DUID-LL (type 3, Ethernet) of `mac`: the server identifier of a bridge.
    pub fn ll(mac: MacAddr) -> Duid {
        let mut v = vec![0, 3, 0, 1];
        v.extend_from_slice(&mac.0);
        Duid(v)
    }

    /// The Ethernet address inside a DUID-LLT (type 1) or DUID-LL (type 3).
    pub fn mac(&self) -> Option<MacAddr> {
        match self.0.as_slice() {
            [0, 1, 0, 1, _, _, _, _, m @ ..] | [0, 3, 0, 1, m @ ..] if m.len() == 6 => {
                MacAddr::from_slice(m)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Duid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Duid {
    type Err = String;
    fn from_str(s: &str) -> Result<Duid, String> {
        let b: Result<Vec<u8>, _> = s.split(':').map(|h| u8::from_str_radix(h, 16)).collect();
        b.ok()
            .and_then(|b| Duid::valid(&b))
            .ok_or_else(|| format!("bad DUID {s:?}"))
    }
}

impl Serialize for Duid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A DHCPv6 lease, as the db stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub duid: Duid,
    pub iaid: u32,
    pub ip: Ipv6Addr,
    /// Seconds since the Unix epoch.
    pub expires: u64,
    /// The Ethernet source of the client's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The DNS name registered for the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// What a bridge's DHCPv6 server hands out, built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool6Conf {
    pub bridge: String,
    /// The range, inclusive.
    pub first: Ipv6Addr,
    pub last: Ipv6Addr,
    pub subnet: Ipv6Net,
    /// The IPv6 gateway: the DNS server handed out.
    pub server: Ipv6Addr,
    /// The server identifier (DUID-LL of the router's MAC on the bridge).
    pub duid: Duid,
    /// Never handed out (except to their reserved client): the gateway, add-host
    /// addresses, pipework's static addresses, reserved addresses.
    pub reserved: HashSet<Ipv6Addr>,
    /// Reserved clients (by MAC): each gets its address and no other.
    pub reservations: HashMap<MacAddr, Ipv6Addr>,
}

impl Pool6Conf {
    /// Addresses in the range.
    pub fn size(&self) -> u128 {
        let (a, b) = (u128::from(self.first), u128::from(self.last));
        if b < a {
            0
        } else {
            (b - a).saturating_add(1)
        }
    }

    pub fn in_range(&self, ip: Ipv6Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// Leases at most.
    pub fn lease_cap(&self) -> usize {
        self.size().min(LEASES_MAX as u128) as usize
    }

    pub fn quarantine_cap(&self) -> usize {
        ((self.size() / 4).min(QUARANTINE_MAX as u128) as usize).max(1)
    }
}

/// Counters (since vswitchd started) and gauges of one DHCPv6 pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pool6Stats {
    pub leases: u64,
    pub lease_cap: u64,
    pub offers: u64,
    pub quarantined: u64,
    /// Solicits and Requests that found no free address.
    pub exhausted: u64,
    /// Refused because the lease cap was reached with addresses left in the range.
    pub capped: u64,
    pub declined: u64,
    /// Declines and Releases ignored: not from the holder of that address.
    pub declines_ignored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hold {
    Lease {
        duid: Duid,
        iaid: u32,
        mac: Option<MacAddr>,
        hostname: Option<String>,
    },
    Offer(Duid),
    Quarantine,
}

struct Slot {
    hold: Hold,
    expires: u64,
}

/// The DHCPv6 state of one bridge. See the module documentation.
pub struct Pool6 {
    conf: Pool6Conf,
    window: Bitmap,
    slots: HashMap<Ipv6Addr, Slot>,
    lease_of: HashMap<Duid, Ipv6Addr>,
    offer_of: HashMap<Duid, Ipv6Addr>,
    expiry: BTreeSet<(u64, Ipv6Addr)>,
    offer_age: BTreeSet<(u64, Ipv6Addr)>,
    quarantine_age: BTreeSet<(u64, Ipv6Addr)>,
    stats: Pool6Stats,
    /// Lease host names (copy-on-write: the DNS service holds a clone).
    names: Arc<LeaseNames6>,
    /// A lease without a name, by client MAC (for [`Pool6::inherit_name`]).
    unnamed: HashMap<MacAddr, Ipv6Addr>,
    /// Leases changed since the store last looked (the db needs writing).
    pub(super) dirty: bool,
    /// Leases granted and ended since the daemon last drained them (bounded).
    changes: Vec<LeaseChange>,
    changes_lost: u64,
}

impl Pool6 {
    pub fn new(conf: Pool6Conf) -> Pool6 {
        let window = conf
            .size()
            .min((LEASES_MAX + OFFERS_MAX + QUARANTINE_MAX + conf.reserved.len()) as u128)
            as usize;
        let mut p = Pool6 {
            window: Bitmap::new(window),
            conf,
            slots: HashMap::new(),
            lease_of: HashMap::new(),
            offer_of: HashMap::new(),
            expiry: BTreeSet::new(),
            offer_age: BTreeSet::new(),
            quarantine_age: BTreeSet::new(),
            stats: Pool6Stats::default(),
            names: Arc::default(),
            unnamed: HashMap::new(),
            dirty: false,
            changes: Vec::new(),
            changes_lost: 0,
        };
        let reserved: Vec<Ipv6Addr> = p.conf.reserved.iter().copied().collect();
        for ip in reserved {
            p.mark(ip, true);
        }
        p
    }

    pub fn conf(&self) -> &Pool6Conf {
        &self.conf
    }

    pub fn stats(&self) -> Pool6Stats {
        Pool6Stats {
            leases: self.lease_of.len() as u64,
            lease_cap: self.conf.lease_cap() as u64,
            offers: self.offer_of.len() as u64,
            quarantined: self.quarantine_age.len() as u64,
            ..self.stats
        }
    }

    /// The leases, by address.
    pub fn leases(&self) -> Vec<Lease6> {
        let mut v: Vec<Lease6> = self
            .slots
            .iter()
            .filter_map(|(ip, s)| match &s.hold {
                Hold::Lease {
                    duid,
                    iaid,
                    mac,
                    hostname,
                } => Some(Lease6 {
                    duid: duid.clone(),
                    iaid: *iaid,
                    ip: *ip,
                    expires: s.expires,
                    mac: *mac,
                    hostname: hostname.clone(),
                }),
                _ => None,
            })
            .collect();
        v.sort_by_key(|l| l.ip);
        v
    }

    /// The address `duid` holds, if any.
    pub fn lease_of(&self, duid: &Duid) -> Option<Ipv6Addr> {
        self.lease_of.get(duid).copied()
    }

    /// Lease host names and their addresses.
    pub fn names(&self) -> Arc<LeaseNames6> {
        self.names.clone()
    }

    /// The lease changes since the last call (renewals left out), and how many were
    /// lost because more than [`CHANGES_MAX`] happened in between.
    pub fn drain_changes(&mut self) -> (Vec<LeaseChange>, u64) {
        let lost = std::mem::take(&mut self.changes_lost);
        (
            super::leases::coalesce(std::mem::take(&mut self.changes)),
            lost,
        )
    }

    fn journal(&mut self, c: LeaseChange) {
        if self.changes.len() < CHANGES_MAX {
            self.changes.push(c);
        } else {
            self.changes_lost += 1;
        }
    }

    /// Give the leases of `mac` that have no host name `name` (its DHCPv4 lease
    /// registered it), unless another lease holds that name. Whether one got it.
    pub fn inherit_name(&mut self, mac: MacAddr, name: &str) -> bool {
        if self.names.contains_key(name) {
            return false;
        }
        let Some(&ip) = self.unnamed.get(&mac) else {
            return false;
        };
        let Some(expires) = self.slots.get(&ip).map(|s| s.expires) else {
            return false;
        };
        let Some(Slot {
            hold: Hold::Lease { duid, iaid, .. },
            ..
        }) = self.take(ip, End6::Replaced)
        else {
            return false;
        };
        let hold = Hold::Lease {
            duid,
            iaid,
            mac: Some(mac),
            hostname: Some(name.to_string()),
        };
        self.put(ip, hold, expires);
        true
    }

    fn index(&self, ip: Ipv6Addr) -> Option<usize> {
        if !self.conf.in_range(ip) {
            return None;
        }
        let i = u128::from(ip) - u128::from(self.conf.first);
        (i < self.window.len as u128).then_some(i as usize)
    }

    fn addr(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.conf.first).wrapping_add(i as u128))
    }

    fn mark(&mut self, ip: Ipv6Addr, taken: bool) {
        if let Some(i) = self.index(ip) {
            self.window.set(i, taken);
        }
    }

    fn take(&mut self, ip: Ipv6Addr, why: End6) -> Option<Slot> {
        let s = self.slots.remove(&ip)?;
        self.expiry.remove(&(s.expires, ip));
        match &s.hold {
            Hold::Lease {
                duid,
                iaid,
                mac,
                hostname,
            } => {
                self.lease_of.remove(duid);
                if let Some(h) = hostname {
                    if self.names.get(h) == Some(&ip) {
                        Arc::make_mut(&mut self.names).remove(h);
                    }
                } else if let Some(m) = mac {
                    if self.unnamed.get(m) == Some(&ip) {
                        self.unnamed.remove(m);
                    }
                }
                self.dirty = true;
                let ended = Lease6 {
                    duid: duid.clone(),
                    iaid: *iaid,
                    ip,
                    expires: s.expires,
                    mac: *mac,
                    hostname: hostname.clone(),
                };
                self.journal(LeaseChange::Ended6(ended, why));
            }
            Hold::Offer(duid) => {
                self.offer_of.remove(duid);
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

    fn put(&mut self, ip: Ipv6Addr, hold: Hold, expires: u64) {
        if let Some(old) = self.take(ip, End6::Replaced) {
            tracing::error!(%ip, hold = ?old.hold, "DHCPv6 pool: an address claimed twice");
        }
        self.expiry.insert((expires, ip));
        match &hold {
            Hold::Lease {
                duid,
                iaid,
                mac,
                hostname,
            } => {
                self.lease_of.insert(duid.clone(), ip);
                if let Some(h) = hostname {
                    Arc::make_mut(&mut self.names).insert(h.clone(), ip);
                } else if let Some(m) = mac {
                    self.unnamed.insert(*m, ip);
                }
                self.dirty = true;
                let granted = Lease6 {
                    duid: duid.clone(),
                    iaid: *iaid,
                    ip,
                    expires,
                    mac: *mac,
                    hostname: hostname.clone(),
                };
                self.journal(LeaseChange::Granted6(granted));
            }
            Hold::Offer(duid) => {
                self.offer_of.insert(duid.clone(), ip);
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
            if self.take(ip, End6::Expired).is_none() {
                self.expiry.remove(&(exp, ip));
            }
        }
    }

    fn reservation(&self, mac: Option<MacAddr>) -> Option<Ipv6Addr> {
        mac.and_then(|m| self.conf.reservations.get(&m).copied())
    }

    /// Whether `duid` (from `mac`) may hold `ip`: its reservation; else in the range,
    /// not reserved, not quarantined, not another client's lease.
    fn allowed(&self, duid: &Duid, mac: Option<MacAddr>, ip: Ipv6Addr) -> bool {
        if let Some(r) = self.reservation(mac) {
            return r == ip;
        }
        self.conf.in_range(ip)
            && !self.conf.reserved.contains(&ip)
            && match self.slots.get(&ip).map(|s| &s.hold) {
                None | Some(Hold::Offer(_)) => true,
                Some(Hold::Lease { duid: d, .. }) => d == duid,
                Some(Hold::Quarantine) => false,
            }
    }

    fn capped(&self, duid: &Duid, mac: Option<MacAddr>) -> bool {
        self.reservation(mac).is_none()
            && !self.lease_of.contains_key(duid)
            && self.lease_of.len() >= self.conf.lease_cap()
    }

    fn count_capped(&mut self) -> NoOffer {
        if self.conf.lease_cap() as u128 == self.conf.size() {
            self.count_exhausted();
            return NoOffer::Exhausted;
        }
        self.stats.capped += 1;
        if self.stats.capped % 1000 == 1 {
            tracing::warn!(bridge = %self.conf.bridge, times = self.stats.capped, "DHCPv6 lease cap reached: client refused");
        }
        NoOffer::Capped
    }

    fn count_exhausted(&mut self) {
        self.stats.exhausted += 1;
        if self.stats.exhausted % 100 == 1 {
            tracing::warn!(bridge = %self.conf.bridge, times = self.stats.exhausted, "DHCPv6 pool exhausted: no address");
        }
    }

    /// The address to advertise to `duid` from `mac` (a Solicit, hinting `wanted`):
    /// its reservation, its lease, its earlier offer, `wanted` if untaken, the lowest
    /// untaken address, or the oldest offer made to another client.
    pub fn offer(
        &mut self,
        duid: &Duid,
        mac: Option<MacAddr>,
        wanted: Option<Ipv6Addr>,
        now: u64,
    ) -> Result<Ipv6Addr, NoOffer> {
        self.prune(now);
        if let Some(r) = self.reservation(mac) {
            return Ok(r);
        }
        if let Some(&ip) = self.lease_of.get(duid) {
            if self.allowed(duid, mac, ip) {
                return Ok(ip);
            }
        }
        if self.capped(duid, mac) {
            return Err(self.count_capped());
        }
        if let Some(&ip) = self.offer_of.get(duid) {
            self.take(ip, End6::Replaced);
            if self.allowed(duid, mac, ip) {
                self.put(ip, Hold::Offer(duid.clone()), now + OFFER_SECS);
                return Ok(ip);
            }
        }
        let untaken = |ip: &Ipv6Addr| self.allowed(duid, mac, *ip) && !self.slots.contains_key(ip);
        let ip = wanted
            .filter(untaken)
            .or_else(|| self.window.first_clear().map(|i| self.addr(i)))
            .or_else(|| self.offer_age.first().map(|&(_, ip)| ip));
        let Some(ip) = ip else {
            self.count_exhausted();
            return Err(NoOffer::Exhausted);
        };
        self.take(ip, End6::Replaced);
        while self.offer_of.len() >= OFFERS_MAX {
            let Some(&(_, old)) = self.offer_age.first() else {
                break;
            };
            self.take(old, End6::Replaced);
        }
        self.put(ip, Hold::Offer(duid.clone()), now + OFFER_SECS);
        Ok(ip)
    }

    /// Lease an address to `duid` (a Request or Rapid-Commit Solicit): its lease
    /// (renewed), else `wanted` if it may have it, else what [`Pool6::offer`] picks.
    pub fn bind(
        &mut self,
        duid: &Duid,
        iaid: u32,
        client: &Client6,
        wanted: Option<Ipv6Addr>,
        now: u64,
    ) -> Result<Ipv6Addr, NoOffer> {
        self.prune(now);
        let mac = client.mac;
        let ip = match self.lease_of.get(duid) {
            Some(&ip) if self.allowed(duid, mac, ip) => ip,
            _ => match wanted.filter(|w| self.allowed(duid, mac, *w)) {
                Some(w) if !self.capped(duid, mac) => w,
                _ => self.offer(duid, mac, None, now)?,
            },
        };
        self.lease(duid, iaid, client, ip, now);
        Ok(ip)
    }

    /// The host name of `duid`'s lease, if it has one.
    pub fn lease_name(&self, duid: &Duid) -> Option<String> {
        self.lease_of
            .get(duid)
            .and_then(|ip| match self.slots.get(ip) {
                Some(Slot {
                    hold: Hold::Lease { hostname, .. },
                    ..
                }) => hostname.clone(),
                _ => None,
            })
    }

    /// The host name `duid` registers now: the one it asks for (unless another lease
    /// holds it), else the one its lease has.
    fn name_for(&self, duid: &Duid, client: &Client6) -> Option<String> {
        let held = self.lease_name(duid);
        match &client.hostname {
            Some(h) if held.as_ref() == Some(h) || !self.names.contains_key(h) => Some(h.clone()),
            _ => held,
        }
    }

    fn lease(&mut self, duid: &Duid, iaid: u32, client: &Client6, ip: Ipv6Addr, now: u64) {
        let hostname = self.name_for(duid, client);
        if let Some(&old) = self.lease_of.get(duid) {
            self.take(old, End6::Replaced);
        }
        if let Some(&o) = self.offer_of.get(duid) {
            self.take(o, End6::Replaced);
        }
        self.take(ip, End6::Replaced);
        let hold = Hold::Lease {
            duid: duid.clone(),
            iaid,
            mac: client.mac,
            hostname,
        };
        self.put(ip, hold, now + u64::from(LEASE6_SECS));
    }

    /// Extend `duid`'s lease on `ip` (a Renew or Rebind), or bind `ip` to it when it
    /// is free (the server lost the binding: RFC 8415 §18.3.4 lets it create one).
    pub fn renew(
        &mut self,
        duid: &Duid,
        iaid: u32,
        client: &Client6,
        ip: Ipv6Addr,
        now: u64,
    ) -> Result<(), Refused> {
        self.prune(now);
        if !self.allowed(duid, client.mac, ip) {
            return Err(Refused::NotFree);
        }
        if self.capped(duid, client.mac) {
            self.count_capped();
            return Err(Refused::Capped);
        }
        self.lease(duid, iaid, client, ip, now);
        Ok(())
    }

    /// A Release from `duid` for `ip`: only its own lease goes. Whether one went.
    pub fn release(&mut self, duid: &Duid, ip: Ipv6Addr, now: u64) -> bool {
        self.prune(now);
        if self.lease_of.get(duid) == Some(&ip) {
            return self.take(ip, End6::Released).is_some();
        }
        self.ignore_decline();
        false
    }

    /// A Decline from `duid` for `ip`: accepted only from the holder of the lease on
    /// `ip`; the lease goes and the address is quarantined.
    pub fn decline(&mut self, duid: &Duid, ip: Ipv6Addr, now: u64) -> bool {
        self.prune(now);
        if self.lease_of.get(duid) != Some(&ip) {
            self.ignore_decline();
            return false;
        }
        self.take(ip, End6::Declined);
        self.stats.declined += 1;
        // A reserved address goes to its client only: nothing to keep others from.
        if self.conf.reservations.values().any(|r| *r == ip) {
            return true;
        }
        while self.quarantine_age.len() >= self.conf.quarantine_cap() {
            let Some(&(_, old)) = self.quarantine_age.first() else {
                break;
            };
            self.take(old, End6::Replaced);
        }
        self.put(ip, Hold::Quarantine, now + QUARANTINE_SECS);
        true
    }

    pub fn ignore_decline(&mut self) {
        self.stats.declines_ignored += 1;
        if self.stats.declines_ignored % 1000 == 1 {
            tracing::warn!(bridge = %self.conf.bridge, times = self.stats.declines_ignored, "DHCPv6 Decline/Release ignored: not from the holder of that address");
        }
    }

    /// A port left the bridge (`del-port`): the leases of `gone` (a guest whose veth
    /// was deleted with the port) end, and the leases of `macs` (addresses seen on the
    /// port) lose their host name, as for DHCPv4.
    pub fn forget_port(&mut self, gone: Option<MacAddr>, macs: &[MacAddr], now: u64) {
        self.prune(now);
        let mine: Vec<(Ipv6Addr, bool)> = self
            .slots
            .iter()
            .filter_map(|(ip, s)| match &s.hold {
                Hold::Lease { mac: Some(m), .. } if Some(*m) == gone => Some((*ip, true)),
                Hold::Lease {
                    mac: Some(m),
                    hostname: Some(_),
                    ..
                } if macs.contains(m) => Some((*ip, false)),
                _ => None,
            })
            .collect();
        for (ip, end) in mine {
            let Some(s) = self.take(ip, End6::Released) else {
                continue;
            };
            if end {
                continue;
            }
            if let Hold::Lease {
                duid, iaid, mac, ..
            } = s.hold
            {
                let hold = Hold::Lease {
                    duid,
                    iaid,
                    mac,
                    hostname: None,
                };
                self.put(ip, hold, s.expires);
            }
        }
    }

    /// Take a lease back (from the db, or the pool this one replaces) if it is live and
    /// fits.
    pub(super) fn restore(&mut self, l: Lease6, now: u64) -> bool {
        if l.expires <= now
            || self.lease_of.contains_key(&l.duid)
            || self.slots.contains_key(&l.ip)
            || !self.allowed(&l.duid, l.mac, l.ip)
            || self.capped(&l.duid, l.mac)
        {
            return false;
        }
        let expires = l.expires.min(now + u64::from(LEASE6_SECS));
        let hostname = l.hostname.filter(|h| !self.names.contains_key(h));
        let hold = Hold::Lease {
            duid: l.duid,
            iaid: l.iaid,
            mac: l.mac,
            hostname,
        };
        self.put(l.ip, hold, expires);
        true
    }

    /// Take over `old`'s leases that still fit, its counters and its journal: leases
    /// carried over did not change; those that no longer fit ended.
    pub(super) fn adopt(&mut self, mut old: Pool6, now: u64) {
        self.stats = old.stats;
        let mut changes = std::mem::take(&mut old.changes);
        for l in old.leases() {
            if !self.restore(l.clone(), now) {
                changes.push(LeaseChange::Ended6(l, End6::Replaced));
            }
        }
        self.changes = changes;
        self.changes_lost = old.changes_lost;
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    pub(crate) fn conf(first: &str, last: &str) -> Pool6Conf {
        Pool6Conf {
            bridge: "br1".into(),
            first: first.parse().unwrap(),
            last: last.parse().unwrap(),
            subnet: "fd00:1::/64".parse().unwrap(),
            server: "fd00:1::1".parse().unwrap(),
            duid: Duid::ll(MacAddr([2, 0x76, 0, 0, 0, 1])),
            reserved: ["fd00:1::1".parse().unwrap()].into_iter().collect(),
            reservations: HashMap::new(),
        }
    }

    fn duid(n: u64) -> Duid {
        let mut v = vec![0, 4];
        v.extend_from_slice(&n.to_be_bytes());
        Duid(v)
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_first_offers_soft_and_leases_sticky() {
        let mut p = Pool6::new(conf("fd00:1::", "fd00:1::ffff:ffff:ffff:ffff"));
        assert_eq!(p.offer(&duid(1), None, None, NOW), Ok(ip("fd00:1::")));
        assert_eq!(
            p.offer(&duid(2), None, None, NOW),
            Ok(ip("fd00:1::2")),
            "gateway skipped"
        );
        assert_eq!(p.stats().leases, 0);
        assert_eq!(
            p.bind(&duid(2), 7, &Client6::default(), Some(ip("fd00:1::")), NOW),
            Ok(ip("fd00:1::"))
        );
        assert_eq!(p.stats().offers, 0, "both offers went");
        // The client keeps its address whatever it hints.
        assert_eq!(
            p.bind(&duid(2), 7, &Client6::default(), Some(ip("fd00:1::9")), NOW),
            Ok(ip("fd00:1::"))
        );
        assert_eq!(p.leases()[0].iaid, 7);
        assert_eq!(p.stats().lease_cap, LEASES_MAX as u64);
        p.prune(NOW + u64::from(LEASE6_SECS));
        assert!(p.leases().is_empty());
    }

    #[test]
    fn random_duid_floods_stay_bounded() {
        let mut p = Pool6::new(conf("fd00:1::100", "fd00:1::1ff"));
        for n in 0..10_000 {
            let _ = p.offer(&duid(n), None, None, NOW);
        }
        assert!(p.stats().offers <= OFFERS_MAX as u64);
        for n in 0..10_000 {
            let _ = p.bind(&duid(n), 1, &Client6::default(), None, NOW);
        }
        let s = p.stats();
        assert_eq!(s.leases, 256, "the whole range and no more");
        assert_eq!(s.exhausted, 10_000 - 256);
        assert!(p.slots.len() <= 256 + OFFERS_MAX);
        // Exhausted: an existing client still renews.
        assert_eq!(
            p.renew(
                &duid(3),
                1,
                &Client6::default(),
                p.lease_of(&duid(3)).unwrap(),
                NOW + 5
            ),
            Ok(())
        );
    }

    #[test]
    fn release_and_decline_only_from_the_holder() {
        let mut p = Pool6::new(conf("fd00:1::10", "fd00:1::1f"));
        let a = p.bind(&duid(1), 1, &Client6::default(), None, NOW).unwrap();
        assert!(!p.release(&duid(2), a, NOW));
        assert!(!p.decline(&duid(2), a, NOW));
        assert!(!p.decline(&duid(1), ip("fd00:1::11"), NOW));
        assert_eq!(p.stats().declines_ignored, 3);
        assert_eq!(p.lease_of(&duid(1)), Some(a));
        // Someone else's address cannot be renewed into.
        assert_eq!(
            p.renew(&duid(2), 1, &Client6::default(), a, NOW),
            Err(Refused::NotFree)
        );
        assert!(p.decline(&duid(1), a, NOW));
        assert_eq!(p.stats().quarantined, 1);
        // The declined address is skipped; the holder gets another one.
        let b = p.bind(&duid(1), 1, &Client6::default(), None, NOW).unwrap();
        assert_ne!(a, b);
        assert!(p.release(&duid(1), b, NOW));
        assert!(p.leases().is_empty());
    }

    #[test]
    fn restore_drops_expired_and_foreign() {
        let mut p = Pool6::new(conf("fd00:1::10", "fd00:1::1f"));
        let l = |n, a: &str, exp| Lease6 {
            duid: duid(n),
            iaid: 1,
            ip: ip(a),
            expires: exp,
            mac: None,
            hostname: None,
        };
        assert!(p.restore(l(1, "fd00:1::10", NOW + 100), NOW));
        assert!(!p.restore(l(2, "fd00:1::11", NOW), NOW), "expired");
        assert!(!p.restore(l(3, "fd00:1::10", NOW + 100), NOW), "taken");
        assert!(!p.restore(l(4, "fd00:2::10", NOW + 100), NOW), "outside");
        assert_eq!(p.leases().len(), 1);
    }

    #[test]
    fn duid_text_round_trip() {
        let d = Duid::ll(MacAddr([2, 0, 0, 0, 0, 5]));
        assert_eq!(d.to_string(), "00:03:00:01:02:00:00:00:00:05");
        assert_eq!(d.to_string().parse::<Duid>(), Ok(d.clone()));
        assert_eq!(d.mac(), Some(MacAddr([2, 0, 0, 0, 0, 5])));
        assert!("00".parse::<Duid>().is_err());
        assert!(Duid::valid(&[0; DUID_MAX + 1]).is_none());
    }
}
