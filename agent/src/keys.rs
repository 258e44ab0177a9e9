//! The etcd key layout and the values stored under it (docs/cluster.md "Keys").
//!
//! ```text
//! PREFIX/nodes/NODE                     node (name, VTEP, agent version)    node lease
//! PREFIX/networks/NET                   overlay network (VNI, subnet, ...)  permanent
//! PREFIX/index/vni/VNI                  NET: one network per VNI            permanent
//! PREFIX/index/subnet/A.B.C.D_N         NET: one network per subnet         permanent
//!                      (also IPV6_N for an IPv6 subnet, e.g. fd00:10::_64)
//! PREFIX/index/udp/PORT                 NET: one network per UDP port       permanent
//! PREFIX/endpoints/NET/NODE/MAC         endpoint (MAC, IP, name, VTEP)      node lease
//! PREFIX/blocks/NET/HEXIP               DHCP address block of a node        node lease
//! PREFIX/blocks6/NET/HEXIP6             DHCPv6 address block of a node      node lease
//! PREFIX/ips/NET/HEXIP                  static address claimed by a node    node lease
//! ```
//! Every value is a JSON object with `"v": 1`: a value with a higher version (a newer
//! agent's) or one that is not ours is skipped and logged, never a crash. Addresses in
//! keys are 8 hex digits (IPv4) or 32 (IPv6), so keys sort in address order. IPv6
//! (dual stack) came as optional fields (`subnet6`, `gateway6`, `ip6`, `dhcp6`): values
//! written before them parse as they are, still version 1. DHCPv6 blocks have a key space
//! of their own (`blocks6`), which agents from before it do not read.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Version of the values this agent writes and understands.
pub const VERSION: u32 = 1;

/// Keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// An address as it appears in keys: 8 hex digits for IPv4, 32 for IPv6.
pub fn hex(ip: impl Into<IpAddr>) -> String {
    match ip.into() {
        IpAddr::V4(a) => format!("{:08x}", u32::from(a)),
        IpAddr::V6(a) => format!("{:032x}", u128::from(a)),
    }
}

/// The address in a key (see [`hex`]).
pub fn unhex(s: &str) -> Option<IpAddr> {
    match s.len() {
        8 => u32::from_str_radix(s, 16)
            .ok()
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        32 => u128::from_str_radix(s, 16)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
}

impl Keys {
    /// `prefix` as given (`/vswitch`); a trailing slash is ignored.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Every key of the cluster starts with this.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }
    pub fn network(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.prefix)
    }
    pub fn vni(&self, vni: u32) -> String {
        format!("{}/index/vni/{vni}", self.prefix)
    }
    pub fn subnet(&self, subnet: &str) -> String {
        format!("{}/index/subnet/{}", self.prefix, subnet.replace('/', "_"))
    }
    pub fn udp(&self, port: u16) -> String {
        format!("{}/index/udp/{port}", self.prefix)
    }
    pub fn endpoint(&self, net: &str, node: &str, mac: &str) -> String {
        format!("{}/endpoints/{net}/{node}/{mac}", self.prefix)
    }
    /// Everything of network `net` that goes with it.
    pub fn of_network(&self, kind: &str, net: &str) -> String {
        format!("{}/{kind}/{net}/", self.prefix)
    }
    pub fn block(&self, net: &str, first: Ipv4Addr) -> String {
        format!("{}/blocks/{net}/{}", self.prefix, hex(first))
    }
    pub fn block6(&self, net: &str, first: Ipv6Addr) -> String {
        format!("{}/blocks6/{net}/{}", self.prefix, hex(first))
    }
    pub fn ip(&self, net: &str, ip: impl Into<IpAddr>) -> String {
        format!("{}/ips/{net}/{}", self.prefix, hex(ip))
    }
}

/// A node: `PREFIX/nodes/NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVal {
    pub v: u32,
    pub name: String,
    pub vtep: Ipv4Addr,
    /// Version of the agent that registered it.
    pub agent: String,
    /// Which agent instance holds the name (network namespace and vswitchd PID): an
    /// agent restarted beside the same vswitchd takes its node over at once; any other
    /// waits for the old lease to expire, or is refused.
    pub identity: String,
    /// The etcd lease the node's keys live under.
    pub lease: i64,
    pub ttl: i64,
}

/// An overlay network: `PREFIX/networks/NET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetVal {
    pub v: u32,
    pub name: String,
    pub vni: u32,
    pub udp_port: u16,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    /// IPv6 subnet and gateway (dual stack); absent in values written before IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// DHCP: `None` off, else the cluster-wide range `FIRST-LAST` that nodes take
    /// blocks of.
    pub dhcp: Option<String>,
    /// DHCPv6: the same for the IPv6 range (`blocks6`); absent in values written before
    /// it (an older agent ignores it: its hosts serve no DHCPv6 there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<String>,
    pub isolated: bool,
    pub mtu: u32,
}

/// An endpoint: `PREFIX/endpoints/NET/NODE/MAC`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpVal {
    pub v: u32,
    pub node: String,
    pub vtep: Ipv4Addr,
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address (dual stack); absent in values written before IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub name: Option<String>,
    /// The local port on its node.
    pub port: String,
}

/// A DHCP address block: `PREFIX/blocks/NET/HEXIP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockVal {
    pub v: u32,
    pub node: String,
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

/// A DHCPv6 address block: `PREFIX/blocks6/NET/HEXIP6`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block6Val {
    pub v: u32,
    pub node: String,
    pub first: Ipv6Addr,
    pub last: Ipv6Addr,
}

/// A static address (IPv4 or IPv6): `PREFIX/ips/NET/HEXIP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpVal {
    pub v: u32,
    pub node: String,
    pub mac: Option<String>,
    pub port: String,
}

/// One parsed key/value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Node(NodeVal),
    Network(NetVal),
    Endpoint {
        net: String,
        val: EpVal,
    },
    Block {
        net: String,
        val: BlockVal,
    },
    Block6 {
        net: String,
        val: Block6Val,
    },
    Ip {
        net: String,
        ip: IpAddr,
        val: IpVal,
    },
    /// Uniqueness index entries (`index/...`): nothing to read in them.
    Index,
}

#[derive(Deserialize)]
struct Versioned {
    v: u32,
}

fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    let ver: Versioned =
        serde_json::from_slice(value).map_err(|e| format!("not a vswitch value: {e}"))?;
    if ver.v > VERSION {
        return Err(format!(
            "written by a newer agent (value version {}, this agent understands {VERSION})",
            ver.v
        ));
    }
    serde_json::from_slice(value).map_err(|e| format!("bad value: {e}"))
}

impl Keys {
    /// Parse one key/value under the prefix. `Ok(None)`: a key this agent does not use;
    /// `Err`: a value to skip (with the reason to log).
    pub fn parse(&self, key: &str, value: &[u8]) -> Result<Option<Entry>, String> {
        let Some(rest) = key.strip_prefix(&self.all()) else {
            return Ok(None);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        Ok(Some(match parts[..] {
            ["nodes", name] => {
                let n: NodeVal = decode(value)?;
                if n.name != name {
                    return Err(format!("node value names {}", n.name));
                }
                Entry::Node(n)
            }
            ["networks", name] => {
                let n: NetVal = decode(value)?;
                if n.name != name {
                    return Err(format!("network value names {}", n.name));
                }
                Entry::Network(n)
            }
            ["endpoints", net, node, _mac] => {
                let val: EpVal = decode(value)?;
                if val.node != node {
                    return Err(format!("endpoint value names node {}", val.node));
                }
                Entry::Endpoint {
                    net: net.to_string(),
                    val,
                }
            }
            ["blocks", net, _first] => Entry::Block {
                net: net.to_string(),
                val: decode(value)?,
            },
            ["blocks6", net, _first] => Entry::Block6 {
                net: net.to_string(),
                val: decode(value)?,
            },
            ["ips", net, ip] => Entry::Ip {
                net: net.to_string(),
                ip: unhex(ip).ok_or("bad address in key")?,
                val: decode(value)?,
            },
            ["index", ..] => Entry::Index,
            _ => return Ok(None),
        }))
    }
}

/// A value as stored (JSON).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = Keys::new("/vswitch/");
        assert_eq!(k.node("h1"), "/vswitch/nodes/h1");
        assert_eq!(k.subnet("10.0.0.0/24"), "/vswitch/index/subnet/10.0.0.0_24");
        let ip: Ipv4Addr = "10.0.0.5".parse().unwrap();
        assert_eq!(k.ip("ov", ip), "/vswitch/ips/ov/0a000005");
        let n = NodeVal {
            v: 1,
            name: "h1".into(),
            vtep: "192.0.2.1".parse().unwrap(),
            agent: "0.1.0".into(),
            identity: "x".into(),
            lease: 7,
            ttl: 10,
        };
        assert_eq!(
            k.parse(&k.node("h1"), &encode(&n)),
            Ok(Some(Entry::Node(n.clone())))
        );
        assert_eq!(
            k.parse(
                &k.ip("ov", ip),
                br#"{"v":1,"node":"h1","mac":null,"port":"p"}"#
            )
            .unwrap()
            .map(|e| matches!(e, Entry::Ip { ip: i, .. } if i == ip)),
            Some(true)
        );
        let ip6: Ipv6Addr = "fd00:10::5".parse().unwrap();
        assert_eq!(
            k.ip("ov", ip6),
            "/vswitch/ips/ov/fd000010000000000000000000000005"
        );
        assert_eq!(
            unhex("fd000010000000000000000000000005"),
            Some(IpAddr::V6(ip6))
        );
        assert_eq!(unhex("0a00000"), None);
    }

    /// Values written before IPv6 (no `subnet6`, `gateway6`, `ip6`) still parse, and
    /// an IPv4-only value is written as it was.
    #[test]
    fn values_without_ipv6_still_parse() {
        let k = Keys::new("/vswitch");
        let old = br#"{"v":1,"name":"ov","vni":1,"udp_port":4789,"subnet":"10.1.0.0/24",
            "gateway":"10.1.0.1","dhcp":null,"isolated":false,"mtu":1450}"#;
        let Ok(Some(Entry::Network(n))) = k.parse("/vswitch/networks/ov", old) else {
            panic!("old network value refused");
        };
        assert_eq!((n.subnet6, n.gateway6, n.dhcp6), (None, None, None));
        let ep = br#"{"v":1,"node":"h1","vtep":"192.0.2.1","mac":"02:00:00:00:00:01",
            "ip":"10.1.0.5","name":"web","port":"p"}"#;
        let Ok(Some(Entry::Endpoint { val, .. })) =
            k.parse("/vswitch/endpoints/ov/h1/02:00:00:00:00:01", ep)
        else {
            panic!("old endpoint value refused");
        };
        assert_eq!(val.ip6, None);
        assert!(!String::from_utf8(encode(&val)).unwrap().contains("ip6"));
    }

    #[test]
    fn foreign_and_newer_values_are_refused_not_fatal() {
        let k = Keys::new("/vswitch");
        assert!(k.parse("/vswitch/nodes/h1", b"hello").is_err());
        let newer = br#"{"v":2,"name":"h1","vtep":"192.0.2.1","agent":"9","identity":"","lease":1,"ttl":1}"#;
        let e = k.parse("/vswitch/nodes/h1", newer).unwrap_err();
        assert!(e.contains("newer agent"), "{e}");
        assert_eq!(k.parse("/vswitch/other/x", b"{}"), Ok(None));
        assert_eq!(k.parse("/elsewhere/nodes/x", b"{}"), Ok(None));
        // A node value under another node's key is not believed.
        let n = br#"{"v":1,"name":"h2","vtep":"192.0.2.1","agent":"9","identity":"","lease":1,"ttl":1}"#;
        assert!(k.parse("/vswitch/nodes/h1", n).is_err());
    }
}
