//! The neighbour cache: next-hop address → MAC address, learned from ARP (IPv4) and
//! Neighbor Discovery (IPv6); one cap for both families.
//!
//! Subnets of bridges never overlap (validated), so an address alone names a neighbour.
//!
//! # Thread safety
//! Single writer: the service thread, which learns from ARP and publishes a new
//! immutable map at most once per batch of punted frames (RCU, arc-swap). Workers read
//! with one atomic load per batch and never lock. The map is capped; when full, the
//! oldest entry is dropped and counted.

use crate::wire::MacAddr;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds after which an entry is re-resolved.
pub const NEIGH_TTL: u32 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    pub mac: MacAddr,
    /// When it was learned (clock seconds).
    pub learned: u32,
}

pub type NeighMap = HashMap<IpAddr, Neigh>;

pub struct NeighCache {
    map: ArcSwap<NeighMap>,
    cap: usize,
    evictions: AtomicU64,
}

impl NeighCache {
    pub fn new(cap: usize) -> NeighCache {
        NeighCache {
            map: ArcSwap::from_pointee(HashMap::new()),
            cap: cap.max(1),
            evictions: AtomicU64::new(0),
        }
    }

    /// A cheap handle on the current map (workers: once per batch).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<NeighMap>> {
        self.map.load()
    }

    /// The MAC of `ip` if known and fresh.
    #[inline]
    pub fn lookup(map: &NeighMap, ip: impl Into<IpAddr>, now: u32) -> Option<MacAddr> {
        map.get(&ip.into())
            .filter(|n| now.wrapping_sub(n.learned) < NEIGH_TTL)
            .map(|n| n.mac)
    }

    /// Apply learned entries (service thread only) and publish once. Returns whether
    /// a known address now has another MAC or an entry was evicted (a decision made
    /// with the old map, e.g. cached by the kernel fast path, may be wrong now); a new
    /// address or a refresh returns false.
    pub fn update(&self, learned: &[(IpAddr, MacAddr)], now: u32) -> bool {
        if learned.is_empty() {
            return false;
        }
        let cur = self.map.load();
        let mut changed = false;
        let mut replaced = false;
        for (ip, mac) in learned {
            match cur.get(ip) {
                Some(n) if n.mac == *mac && now.wrapping_sub(n.learned) < NEIGH_TTL / 2 => {}
                Some(n) if n.mac != *mac => {
                    changed = true;
                    replaced = true;
                }
                _ => changed = true,
            }
        }
        if !changed {
            return false;
        }
        let mut next: NeighMap = (**cur).clone();
        for (ip, mac) in learned {
            if !next.contains_key(ip) && next.len() >= self.cap {
                if let Some(old) = next.iter().min_by_key(|(_, n)| n.learned).map(|(k, _)| *k) {
                    next.remove(&old);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                    replaced = true;
                }
            }
            next.insert(
                *ip,
                Neigh {
                    mac: *mac,
                    learned: now,
                },
            );
        }
        self.map.store(Arc::new(next));
        replaced
    }

    /// Forget `ip`; true if it was known.
    pub fn remove(&self, ip: IpAddr) -> bool {
        let cur = self.map.load();
        if cur.contains_key(&ip) {
            let mut next: NeighMap = (**cur).clone();
            next.remove(&ip);
            self.map.store(Arc::new(next));
            return true;
        }
        false
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_lookup_expire_cap() {
        let c = NeighCache::new(2);
        let ip = |i| IpAddr::from(std::net::Ipv4Addr::new(10, 0, 0, i));
        let mac = |i| MacAddr([2, 0, 0, 0, 0, i]);
        assert!(!c.update(&[(ip(1), mac(1))], 10), "new: nothing replaced");
        assert_eq!(NeighCache::lookup(&c.load(), ip(1), 10), Some(mac(1)));
        assert!(!c.update(&[(ip(1), mac(1))], 10 + NEIGH_TTL / 2), "refresh");
        assert!(c.update(&[(ip(1), mac(9))], 11), "another MAC");
        assert!(c.update(&[(ip(1), mac(1))], 10), "and back");
        assert_eq!(NeighCache::lookup(&c.load(), ip(1), 10 + NEIGH_TTL), None);
        c.update(&[(ip(2), mac(2))], 11);
        assert!(c.update(&[(ip(3), mac(3))], 12), "eviction");
        assert_eq!(c.len(), 2);
        assert_eq!(c.evictions(), 1);
        assert_eq!(
            NeighCache::lookup(&c.load(), ip(1), 12),
            None,
            "oldest evicted"
        );
    }
}
