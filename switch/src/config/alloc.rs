//! Address holds (`alloc-address`, `release-address`, `list-allocations`): one
//! allocator per bridge, shared by everything that hands out addresses, so that DHCP
//! clients, pipework guests and Docker containers (vswitch-docker's IPAM) never get
//! the same address.
//!
//! An address is in use when it is the bridge's gateway, a DNS name's, recorded on a
//! port (`external_ids.ip`), reserved or leased (unexpired) by DHCP, or held here.
//! A hold names its owner (free text such as `docker-ep:ID`) and lasts until the
//! owner releases it or the bridge is deleted; the DHCP server skips held addresses
//! (`BridgeConf::addresses_in_use`). DHCP leases live in the lease store at run time
//! (`tables::leases`): the caller passes the bridge's current ones.

use super::model::{parse_net, BridgeConf, ConfigError, Lease, Model};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use vswitch_proto::AllocAddress;

/// Longest owner string.
const OWNER_MAX: usize = 128;

/// One held address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub owner: String,
}

/// Who uses `ip` on `b` (for "already in use" messages), if anyone.
fn user_of(b: &BridgeConf, leases: &[Lease], ip: Ipv4Addr, now: u64) -> Option<String> {
    if b.gateway == Some(ip) {
        return Some("the bridge's gateway".into());
    }
    if let Some(net) = b.subnet {
        if net.prefix_len() < 31 && ip == net.network() {
            return Some("the subnet's network address".into());
        }
        if net.prefix_len() < 31 && ip == net.broadcast() {
            return Some("the subnet's broadcast address".into());
        }
    }
    if let Some(a) = b.allocations.iter().find(|a| a.ip == ip) {
        return Some(format!("held by {}", a.owner));
    }
    let ip_s = ip.to_string();
    if let Some(p) = b.ports.iter().find(|p| {
        p.external_ids
            .get("ip")
            .is_some_and(|v| v.split('/').next() == Some(ip_s.as_str()))
    }) {
        return Some(format!("port {}", p.name));
    }
    if let Some(h) = b.hosts.iter().find(|h| h.ip == ip) {
        return Some(format!("DNS name {}", h.name));
    }
    if let Some(r) = b.reservations.iter().find(|r| r.ip == ip) {
        return Some(format!("DHCP reservation of {}", r.mac));
    }
    leases
        .iter()
        .find(|l| l.ip == ip && l.expires > now)
        .map(|l| format!("DHCP lease of {}", l.mac))
}

/// Every address of `b` in use now.
fn used(b: &BridgeConf, leases: &[Lease], now: u64) -> HashSet<Ipv4Addr> {
    let mut u = b.addresses_in_use();
    u.extend(leases.iter().filter(|l| l.expires > now).map(|l| l.ip));
    u
}

/// The host addresses of `range` (inside `net`), without `net`'s network and
/// broadcast addresses.
fn hosts(net: Ipv4Net, range: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let skip_ends = net.prefix_len() < 31;
    (u32::from(range.network())..=u32::from(range.broadcast()))
        .map(Ipv4Addr::from)
        .filter(move |ip| !skip_ends || (*ip != net.network() && *ip != net.broadcast()))
}

impl Model {
    /// Validate and apply an `alloc-address` request; `leases` are the bridge's DHCP
    /// leases, `now` in Unix seconds (for their expiry).
    pub fn alloc_address(
        &mut self,
        req: &AllocAddress,
        leases: &[Lease],
        now: u64,
    ) -> Result<Allocation, ConfigError> {
        let owner = req.owner.trim();
        if owner.is_empty() || owner.len() > OWNER_MAX || owner.chars().any(char::is_control) {
            return Err(ConfigError::BadOwner(req.owner.clone()));
        }
        let b = self
            .bridges
            .iter_mut()
            .find(|b| b.name == req.bridge)
            .ok_or_else(|| ConfigError::NoSuchBridge(req.bridge.clone()))?;
        let net = b
            .subnet
            .ok_or_else(|| ConfigError::AllocNoSubnet(b.name.clone()))?;
        let ip = match &req.ip {
            Some(s) => {
                let ip: Ipv4Addr = s
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::BadIp(s.clone()))?;
                if !net.contains(&ip) {
                    return Err(ConfigError::AddressOutside {
                        ip: ip.to_string(),
                        subnet: net.to_string(),
                        bridge: b.name.clone(),
                    });
                }
                let taken_over = req.take_over.as_deref().and_then(|from| {
                    b.allocations
                        .iter()
                        .position(|a| a.ip == ip && a.owner == from)
                });
                if let Some(i) = taken_over {
                    b.allocations[i].owner = owner.to_string();
                    return Ok(b.allocations[i].clone());
                }
                if let Some(by) = user_of(b, leases, ip, now) {
                    return Err(ConfigError::AddressInUse {
                        ip: ip.to_string(),
                        bridge: b.name.clone(),
                        by,
                    });
                }
                ip
            }
            None => {
                let range = match &req.range {
                    None => net,
                    Some(r) => {
                        let r = parse_net(r)?;
                        if !net.contains(&r.network()) || !net.contains(&r.broadcast()) {
                            return Err(ConfigError::AddressOutside {
                                ip: r.to_string(),
                                subnet: net.to_string(),
                                bridge: b.name.clone(),
                            });
                        }
                        r
                    }
                };
                let used = used(b, leases, now);
                let in_dhcp =
                    |ip: &Ipv4Addr| b.dhcp.is_some_and(|d| d.first <= *ip && *ip <= d.last);
                // Outside the DHCP range first, so that DHCP keeps its pool.
                hosts(net, range)
                    .find(|ip| !used.contains(ip) && !in_dhcp(ip))
                    .or_else(|| hosts(net, range).find(|ip| !used.contains(ip)))
                    .ok_or_else(|| ConfigError::NoFreeAddress {
                        range: range.to_string(),
                        bridge: b.name.clone(),
                    })?
            }
        };
        let a = Allocation {
            ip,
            owner: owner.to_string(),
        };
        b.allocations.push(a.clone());
        Ok(a)
    }

    /// Apply a `release-address` request: the number of addresses released.
    pub fn release_address(
        &mut self,
        bridge: &str,
        owner: &str,
        ip: Option<&str>,
    ) -> Result<u64, ConfigError> {
        let ip: Option<Ipv4Addr> = match ip {
            None => None,
            Some(s) => Some(s.trim().parse().map_err(|_| ConfigError::BadIp(s.into()))?),
        };
        let b = self
            .bridges
            .iter_mut()
            .find(|b| b.name == bridge)
            .ok_or_else(|| ConfigError::NoSuchBridge(bridge.to_string()))?;
        let before = b.allocations.len();
        b.allocations
            .retain(|a| !(a.owner == owner.trim() && ip.is_none_or(|ip| a.ip == ip)));
        Ok((before - b.allocations.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::{AddBr, AddHost};

    fn model(dhcp: Option<&str>) -> Model {
        let mut m = Model::default();
        let b = m
            .check_add_bridge(&AddBr {
                name: "br0".into(),
                subnet: Some("10.0.0.0/29".into()),
                gateway: Some("10.0.0.1".into()),
                dhcp: dhcp.map(Into::into),
                ..Default::default()
            })
            .unwrap();
        m.insert_bridge(b);
        m
    }

    /// The test keeps its DHCP leases in the model's db-only field.
    fn m_leases(m: &Model) -> Vec<Lease> {
        m.bridges[0].leases.clone()
    }

    fn alloc(m: &mut Model, ip: Option<&str>, owner: &str) -> Result<String, String> {
        m.alloc_address(
            &AllocAddress {
                bridge: "br0".into(),
                ip: ip.map(Into::into),
                owner: owner.into(),
                ..Default::default()
            },
            &m_leases(m),
            100,
        )
        .map(|a| a.ip.to_string())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn picks_free_addresses_and_refuses_used_ones() {
        let mut m = model(None);
        let h = m
            .check_add_host(&AddHost {
                bridge: "br0".into(),
                name: "db".into(),
                ip: "10.0.0.3".into(),
                source: None,
                ..Default::default()
            })
            .unwrap();
        m.insert_host("br0", h).unwrap();
        assert_eq!(alloc(&mut m, None, "a").unwrap(), "10.0.0.2");
        assert_eq!(alloc(&mut m, None, "b").unwrap(), "10.0.0.4");
        let e = alloc(&mut m, Some("10.0.0.2"), "c").unwrap_err();
        assert_eq!(
            e,
            "address 10.0.0.2 is already in use on bridge br0 (held by a)"
        );
        let e = alloc(&mut m, Some("10.0.0.3"), "c").unwrap_err();
        assert!(e.contains("(DNS name db)"), "{e}");
        let e = alloc(&mut m, Some("10.0.0.1"), "c").unwrap_err();
        assert!(e.contains("gateway"), "{e}");
        let e = alloc(&mut m, Some("10.0.0.7"), "c").unwrap_err();
        assert!(e.contains("broadcast"), "{e}");
        let e = alloc(&mut m, Some("10.0.1.7"), "c").unwrap_err();
        assert!(e.contains("outside subnet 10.0.0.0/29"), "{e}");
        assert_eq!(alloc(&mut m, Some("10.0.0.6"), "c").unwrap(), "10.0.0.6");
        assert_eq!(alloc(&mut m, None, "d").unwrap(), "10.0.0.5");
        let e = alloc(&mut m, None, "e").unwrap_err();
        assert_eq!(e, "no free address in 10.0.0.0/29 on bridge br0");
        // Releasing by owner (and address) frees exactly those.
        assert_eq!(m.release_address("br0", "a", Some("10.0.0.4")).unwrap(), 0);
        assert_eq!(m.release_address("br0", "a", None).unwrap(), 1);
        assert_eq!(alloc(&mut m, None, "e").unwrap(), "10.0.0.2");
    }

    #[test]
    fn take_over_and_ranges_and_dhcp() {
        let mut m = model(Some("10.0.0.2-10.0.0.4"));
        m.bridges[0].leases.push(Lease {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ip: "10.0.0.5".parse().unwrap(),
            hostname: None,
            expires: 200,
        });
        // Outside the DHCP range first, skipping the live lease.
        assert_eq!(alloc(&mut m, None, "ipam").unwrap(), "10.0.0.6");
        assert_eq!(alloc(&mut m, None, "ipam").unwrap(), "10.0.0.2");
        let e = alloc(&mut m, Some("10.0.0.5"), "x").unwrap_err();
        assert!(e.contains("DHCP lease of 02:00:00:00:00:01"), "{e}");
        // The holder named in take_over hands its address over.
        let a = m
            .alloc_address(
                &AllocAddress {
                    bridge: "br0".into(),
                    ip: Some("10.0.0.6".into()),
                    owner: "ep:1".into(),
                    take_over: Some("ipam".into()),
                    ..Default::default()
                },
                &m_leases(&m),
                100,
            )
            .unwrap();
        assert_eq!(a.owner, "ep:1");
        assert_eq!(m.release_address("br0", "ipam", None).unwrap(), 1);
        // DHCP never offers a held address.
        assert!(m.bridges[0].addresses_in_use().contains(&a.ip));
        // A range inside the subnet.
        let r = m.alloc_address(
            &AllocAddress {
                bridge: "br0".into(),
                range: Some("10.0.0.4/30".into()),
                owner: "x".into(),
                ..Default::default()
            },
            &m_leases(&m),
            300,
        );
        assert_eq!(r.unwrap().ip.to_string(), "10.0.0.5"); // the lease expired at 200
        assert!(alloc(&mut m, None, "").unwrap_err().contains("bad owner"));
    }
}
