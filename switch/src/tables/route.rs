//! The router's route table: longest-prefix match over connected subnets and static
//! routes.
//!
//! One hash map per prefix length in use, probed from the longest length down: a lookup
//! costs one hash probe per distinct prefix length (a handful in practice), whatever
//! the number of routes.
//!
//! # Thread safety
//! Immutable once built; part of the [`crate::dp::Snapshot`].

use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::BitAnd;

/// Where traffic for a prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index of the egress bridge in the snapshot.
    pub bridge: usize,
    /// Next hop; `None` for a connected subnet (deliver to the destination itself).
    pub via: Option<Ipv4Addr>,
}

/// An address as the bits the table masks and hashes (u32 for IPv4, u128 for IPv6).
pub trait Bits: Copy + Eq + Hash + BitAnd<Output = Self> {
    const WIDTH: u32;
    const ZERO: Self;
    const ONES: Self;
    fn shl(self, n: u32) -> Self;
}

impl Bits for u32 {
    const WIDTH: u32 = 32;
    const ZERO: u32 = 0;
    const ONES: u32 = u32::MAX;
    fn shl(self, n: u32) -> u32 {
        self << n
    }
}

impl Bits for u128 {
    const WIDTH: u32 = 128;
    const ZERO: u128 = 0;
    const ONES: u128 = u128::MAX;
    fn shl(self, n: u32) -> u128 {
        self << n
    }
}

#[inline]
fn mask<B: Bits>(len: u8) -> B {
    let len = u32::from(len).min(B::WIDTH);
    if len == 0 {
        B::ZERO
    } else {
        B::ONES.shl(B::WIDTH - len)
    }
}

/// Longest-prefix match of `B`-bit addresses to routes `R`: one hash map per prefix
/// length in use, longest first.
#[derive(Debug, Clone)]
pub struct Lpm<B, R> {
    by_len: Vec<(u8, HashMap<B, R>)>,
}

impl<B, R> Default for Lpm<B, R> {
    fn default() -> Self {
        Lpm { by_len: Vec::new() }
    }
}

impl<B: Bits, R: Copy> Lpm<B, R> {
    /// Insert or replace the route for `net`/`len`.
    fn insert_bits(&mut self, net: B, len: u8, route: R) {
        let key = net & mask(len);
        match self.by_len.iter_mut().find(|(l, _)| *l == len) {
            Some((_, m)) => {
                m.insert(key, route);
            }
            None => {
                let mut m = HashMap::new();
                m.insert(key, route);
                self.by_len.push((len, m));
                self.by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
            }
        }
    }

    /// The most specific route covering `d`.
    #[inline]
    fn lookup_bits(&self, d: B) -> Option<R> {
        for (len, m) in &self.by_len {
            if let Some(r) = m.get(&(d & mask(*len))) {
                return Some(*r);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.iter().all(|(_, m)| m.is_empty())
    }
}

/// The IPv4 route table.
pub type RouteTable = Lpm<u32, Route>;

impl Lpm<u32, Route> {
    /// Insert or replace the route for `net`.
    pub fn insert(&mut self, net: Ipv4Net, route: Route) {
        self.insert_bits(u32::from(net.network()), net.prefix_len(), route);
    }

    /// The most specific route covering `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<Route> {
        self.lookup_bits(u32::from(dst))
    }
}

/// Where traffic for an IPv6 prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route6 {
    pub bridge: usize,
    pub via: Option<Ipv6Addr>,
}

/// The IPv6 route table.
pub type Route6Table = Lpm<u128, Route6>;

impl Lpm<u128, Route6> {
    /// Insert or replace the route for `net`.
    pub fn insert(&mut self, net: Ipv6Net, route: Route6) {
        self.insert_bits(u128::from(net.network()), net.prefix_len(), route);
    }

    /// The most specific route covering `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv6Addr) -> Option<Route6> {
        self.lookup_bits(u128::from(dst))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn longest_prefix_wins_v6() {
        use super::{Route6, Route6Table};
        let mut t = Route6Table::default();
        let r = |b, via: Option<&str>| Route6 {
            bridge: b,
            via: via.map(|v| v.parse().unwrap()),
        };
        t.insert("::/0".parse().unwrap(), r(9, Some("fd00:ff::1")));
        t.insert("fd00:10::/64".parse().unwrap(), r(0, None));
        t.insert(
            "fd00:10:0:0:8000::/65".parse().unwrap(),
            r(1, Some("fd00:10::2")),
        );
        assert_eq!(t.lookup("fd00:10::5".parse().unwrap()), Some(r(0, None)));
        assert_eq!(
            t.lookup("fd00:10::9000:0:0:1".parse().unwrap()),
            Some(r(1, Some("fd00:10::2")))
        );
        assert_eq!(
            t.lookup("2001:db8::1".parse().unwrap()),
            Some(r(9, Some("fd00:ff::1")))
        );
        let mut t2 = Route6Table::default();
        t2.insert("fd00:10::/64".parse().unwrap(), r(0, None));
        assert_eq!(t2.lookup("fd00:11::1".parse().unwrap()), None);
    }

    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::default();
        let r = |b, via: Option<&str>| Route {
            bridge: b,
            via: via.map(|v| v.parse().unwrap()),
        };
        t.insert("0.0.0.0/0".parse().unwrap(), r(9, Some("198.51.100.1")));
        t.insert("10.0.0.0/24".parse().unwrap(), r(0, None));
        t.insert("10.0.0.128/25".parse().unwrap(), r(1, Some("10.0.0.2")));
        assert_eq!(t.lookup("10.0.0.5".parse().unwrap()), Some(r(0, None)));
        assert_eq!(
            t.lookup("10.0.0.200".parse().unwrap()),
            Some(r(1, Some("10.0.0.2")))
        );
        assert_eq!(
            t.lookup("8.8.8.8".parse().unwrap()),
            Some(r(9, Some("198.51.100.1")))
        );
        assert_eq!(t.len(), 3);
        let mut t2 = RouteTable::default();
        t2.insert("10.0.0.0/24".parse().unwrap(), r(0, None));
        assert_eq!(t2.lookup("10.0.1.1".parse().unwrap()), None);
    }
}
