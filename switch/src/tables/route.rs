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
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where traffic for a prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index of the egress bridge in the snapshot.
    pub bridge: usize,
    /// Next hop; `None` for a connected subnet (deliver to the destination itself).
    pub via: Option<Ipv4Addr>,
}

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// (prefix length, network → route), longest first.
    by_len: Vec<(u8, HashMap<u32, Route>)>,
}

#[inline]
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl RouteTable {
    /// Insert or replace the route for `net`.
    pub fn insert(&mut self, net: Ipv4Net, route: Route) {
        let len = net.prefix_len();
        let key = u32::from(net.network()) & mask(len);
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

    /// The most specific route covering `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<Route> {
        let d = u32::from(dst);
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
        self.len() == 0
    }
}

/// Where traffic for an IPv6 prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route6 {
    pub bridge: usize,
    pub via: Option<Ipv6Addr>,
}

/// [`RouteTable`] for IPv6: one hash map per prefix length in use, longest first.
#[derive(Debug, Default, Clone)]
pub struct Route6Table {
    by_len: Vec<(u8, HashMap<u128, Route6>)>,
}

#[inline]
fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl Route6Table {
    /// Insert or replace the route for `net`.
    pub fn insert(&mut self, net: Ipv6Net, route: Route6) {
        let len = net.prefix_len();
        let key = u128::from(net.network()) & mask6(len);
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

    /// The most specific route covering `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv6Addr) -> Option<Route6> {
        let d = u128::from(dst);
        for (len, m) in &self.by_len {
            if let Some(r) = m.get(&(d & mask6(*len))) {
                return Some(*r);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.iter().all(|(_, m)| m.is_empty())
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
