//! IPv6 NAT in the model: `masquerade6 BR --out BR_OUT` and `publish` on an IPv6
//! address (`publish tcp [2001:db8::2]:8080 [fd00:1::5]:80`). Kept beside, not inside,
//! the IPv4 `masquerade`/`published` lists: the IPv4 rules and their db records are
//! unchanged, and NAT66 stays opt-in (without these, IPv6 is routed as it is).
//!
//! An IPv6 address in `[IP]:PORT` is always bracketed (RFC 3986 §3.2.2), so `:` stays
//! the port separator. A `publish` is of one family: both addresses IPv4, or both
//! IPv6; an IPv6 target needs an IPv6 listening address (there is no "every outside
//! IPv6 address": name the uplink's IPv6 gateway).

use super::model::{parse_ports, parse_proto, proto_name, ConfigError, MasqConf, Model};
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

/// A port published on an IPv6 address: destination NAT to a container's IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish6Conf {
    /// IP protocol number: 6 (tcp) or 17 (udp).
    pub proto: u8,
    pub ip: Ipv6Addr,
    pub port: u16,
    pub target_ip: Ipv6Addr,
    pub target_port: u16,
    /// Last port of a range, as in IPv4's `PublishConf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_end: Option<u16>,
}

impl Publish6Conf {
    /// How many ports after the first the mapping covers.
    pub fn extra(&self) -> u16 {
        self.port_end.map_or(0, |e| e - self.port)
    }

    /// The listening port(s): `8080` or `8000-8010`.
    pub fn ports(&self) -> String {
        match self.port_end {
            Some(e) => format!("{}-{e}", self.port),
            None => self.port.to_string(),
        }
    }

    /// The target port(s): `80` or `9000-9010`.
    pub fn target_ports(&self) -> String {
        match self.extra() {
            0 => self.target_port.to_string(),
            n => format!(
                "{}-{}",
                self.target_port,
                u32::from(self.target_port) + u32::from(n)
            ),
        }
    }

    fn overlaps(&self, port: u16, extra: u16) -> bool {
        let (a, b) = (
            u32::from(self.port),
            u32::from(self.port) + u32::from(self.extra()),
        );
        let (c, d) = (u32::from(port), u32::from(port) + u32::from(extra));
        a <= d && c <= b
    }
}

/// The address family a `publish` endpoint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `PORT`: no address.
    None,
    V4,
    V6,
}

/// Which family `[IP:]PORT` or `IP:PORT` is written in: `[…]` is IPv6, an address
/// without brackets is IPv4 (an unbracketed IPv6 address cannot be told from its port
/// and is refused).
pub fn family(s: &str) -> Result<Family, ConfigError> {
    let s = s.trim();
    if s.starts_with('[') {
        return Ok(Family::V6);
    }
    match s.matches(':').count() {
        0 => Ok(Family::None),
        1 => Ok(Family::V4),
        _ => Err(ConfigError::Nat6(format!(
            "bad address {s:?}: write an IPv6 address in brackets, [IP]:PORT"
        ))),
    }
}

/// `[IP]:PORT[-LAST]`.
fn parse_bracketed(s: &str) -> Result<(Ipv6Addr, u16, Option<u16>), ConfigError> {
    let bad = || ConfigError::Nat6(format!("bad address {s:?}: expected [IPV6]:PORT"));
    let rest = s.trim().strip_prefix('[').ok_or_else(bad)?;
    let (ip, ports) = rest.split_once("]:").ok_or_else(bad)?;
    let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
    let (p, e) = parse_ports(ports)?;
    Ok((ip, p, e))
}

impl Model {
    /// Validate a `masquerade6` request: BR has an IPv6 subnet, BR_OUT an IPv6 gateway.
    pub fn check_masquerade6(&self, bridge: &str, out: &str) -> Result<MasqConf, ConfigError> {
        let b = self.bridge(bridge)?;
        let o = self.bridge(out)?;
        if b.name == o.name {
            return Err(ConfigError::MasqSelf(b.name.clone()));
        }
        if b.subnet6.is_none() {
            return Err(ConfigError::Nat6(format!(
                "bridge {} has no IPv6 --subnet to masquerade6",
                b.name
            )));
        }
        if o.gateway6.is_none() {
            return Err(ConfigError::Nat6(format!(
                "bridge {} has no IPv6 gateway address to masquerade6 behind (add-br ... --subnet IPV6/LEN --gateway IPV6)",
                o.name
            )));
        }
        if self.masquerade6.iter().any(|m| m.bridge == bridge) {
            return Err(ConfigError::Nat6(format!(
                "bridge {bridge} is already masqueraded (IPv6)"
            )));
        }
        Ok(MasqConf {
            bridge: bridge.to_string(),
            out: out.to_string(),
        })
    }

    /// Remove the `masquerade6` of `bridge`.
    pub fn remove_masquerade6(&mut self, bridge: &str) -> Result<(), ConfigError> {
        self.bridge(bridge)?;
        let before = self.masquerade6.len();
        self.masquerade6.retain(|x| x.bridge != bridge);
        if self.masquerade6.len() == before {
            return Err(ConfigError::Nat6(format!(
                "bridge {bridge} is not masqueraded (IPv6)"
            )));
        }
        Ok(())
    }

    /// Whether `publish PROTO LISTEN TARGET` is an IPv6 one; the one-line error for
    /// endpoints of two families.
    pub fn publish_is_v6(listen: &str, target: &str) -> Result<bool, ConfigError> {
        let (l, t) = (family(listen)?, family(target)?);
        match (l, t) {
            (Family::V6, Family::V6) => Ok(true),
            (Family::V6, _) => Err(ConfigError::Nat6(format!(
                "listening address {listen} is IPv6 but target {target} is not: publish an IPv6 address to an IPv6 target, [IP]:PORT"
            ))),
            (Family::V4, Family::V6) => Err(ConfigError::Nat6(format!(
                "listening address {listen} is IPv4 but target {target} is IPv6: both must be of one family"
            ))),
            (Family::None, Family::V6) => Err(ConfigError::Nat6(format!(
                "target {target} is IPv6: it needs an IPv6 listening address, [IP]:PORT (the uplink's IPv6 gateway)"
            ))),
            _ => Ok(false),
        }
    }

    /// Validate a `publish` on an IPv6 address.
    pub fn check_publish6(
        &self,
        proto: &str,
        listen: &str,
        target: &str,
    ) -> Result<Publish6Conf, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port, port_end) = parse_bracketed(listen)?;
        if !self.bridges.iter().any(|b| b.gateway6 == Some(ip)) {
            return Err(ConfigError::NotRouterAddress(ip.to_string()));
        }
        let (target_ip, target_port, target_end) = parse_bracketed(target)?;
        let extra = port_end.map_or(0, |e| e - port);
        let target_extra = target_end.map_or(0, |e| e - target_port);
        if extra != target_extra {
            return Err(ConfigError::RangeMismatch {
                listen: listen.to_string(),
                target: target.to_string(),
            });
        }
        if !self
            .bridges
            .iter()
            .any(|b| b.subnet6.is_some_and(|s| s.contains(&target_ip)))
        {
            return Err(ConfigError::TargetOutside(target_ip.to_string()));
        }
        if let Some(p) = self
            .published6
            .iter()
            .find(|p| p.proto == proto_n && p.ip == ip && p.overlaps(port, extra))
        {
            return Err(ConfigError::AlreadyPublished {
                proto: proto_name(proto_n).to_string(),
                listen: match p.extra() {
                    0 => listen.to_string(),
                    _ => format!("{listen} (range {})", p.ports()),
                },
                target: format!("[{}]:{}", p.target_ip, p.target_ports()),
            });
        }
        Ok(Publish6Conf {
            proto: proto_n,
            ip,
            port,
            target_ip,
            target_port,
            port_end,
        })
    }

    /// `--may-exist publish` on IPv6: the mapping, if it has the same target.
    pub fn existing_publish6(
        &self,
        proto: &str,
        listen: &str,
        target: &str,
    ) -> Result<Option<&Publish6Conf>, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port, port_end) = parse_bracketed(listen)?;
        let Some(p) = self
            .published6
            .iter()
            .find(|p| p.proto == proto_n && p.ip == ip && p.port == port && p.port_end == port_end)
        else {
            return Ok(None);
        };
        let (tip, tport, tend) = parse_bracketed(target)?;
        let want_end = port_end.map(|e| u32::from(tport) + u32::from(e - port));
        if p.target_ip == tip && p.target_port == tport && tend.map(u32::from) == want_end {
            return Ok(Some(p));
        }
        Err(ConfigError::AlreadyPublished {
            proto: proto_name(proto_n).to_string(),
            listen: listen.to_string(),
            target: format!("[{}]:{}", p.target_ip, p.target_ports()),
        })
    }

    /// `unpublish PROTO [IP]:PORT[-LAST]`.
    pub fn remove_published6(
        &mut self,
        proto: &str,
        listen: &str,
    ) -> Result<Publish6Conf, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port, port_end) = parse_bracketed(listen)?;
        if let Some(i) = self.published6.iter().position(|p| {
            p.proto == proto_n && p.ip == ip && p.port == port && p.port_end == port_end
        }) {
            return Ok(self.published6.remove(i));
        }
        let extra = port_end.map_or(0, |e| e - port);
        if let Some(p) = self
            .published6
            .iter()
            .find(|p| p.proto == proto_n && p.ip == ip && p.overlaps(port, extra))
        {
            return Err(ConfigError::InsideRange {
                proto: proto_name(proto_n).to_string(),
                port,
                range: format!("[{}]:{}", p.ip, p.ports()),
            });
        }
        Err(ConfigError::NotPublished {
            proto: proto_name(proto_n).to_string(),
            listen: listen.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeConf;

    fn model() -> Model {
        let br = |name: &str, s6: &str, g6: &str| {
            let mut b: BridgeConf =
                serde_json::from_value(serde_json::json!({"name": name, "mtu": 1500})).unwrap();
            b.subnet6 = Some(s6.parse().unwrap());
            b.gateway6 = Some(g6.parse().unwrap());
            b
        };
        Model {
            bridges: vec![
                br("br1", "fd00:1::/64", "fd00:1::1"),
                br("wan", "2001:db8::/64", "2001:db8::2"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn families_must_match() {
        let e = |l: &str, t: &str| Model::publish_is_v6(l, t).unwrap_err().to_string();
        assert!(Model::publish_is_v6("[2001:db8::2]:8080", "[fd00:1::5]:80").unwrap());
        assert!(!Model::publish_is_v6("8080", "10.0.0.5:80").unwrap());
        assert!(!Model::publish_is_v6("198.51.100.2:8080", "10.0.0.5:80").unwrap());
        assert_eq!(
            e("198.51.100.2:8080", "[fd00:1::5]:80"),
            "listening address 198.51.100.2:8080 is IPv4 but target [fd00:1::5]:80 is IPv6: both must be of one family"
        );
        assert!(e("[2001:db8::2]:8080", "10.0.0.5:80").contains("is IPv6 but target"));
        assert!(e("8080", "[fd00:1::5]:80").contains("needs an IPv6 listening address"));
        assert!(e("8080", "fd00:1::5:80").contains("in brackets"));
    }

    #[test]
    fn publish6_checks() {
        let mut m = model();
        let p = m
            .check_publish6("tcp", "[2001:db8::2]:8080", "[fd00:1::5]:80")
            .unwrap();
        assert_eq!(p.target_ip, "fd00:1::5".parse::<Ipv6Addr>().unwrap());
        m.published6.push(p);
        let err = |l: &str, t: &str| m.check_publish6("tcp", l, t).unwrap_err().to_string();
        assert_eq!(
            err("[2001:db8::2]:8080", "[fd00:1::6]:80"),
            "tcp port [2001:db8::2]:8080 is already published (to [fd00:1::5]:80)"
        );
        assert_eq!(
            err("[2001:db8::9]:8081", "[fd00:1::6]:80"),
            "2001:db8::9 is not a gateway address of any bridge"
        );
        assert_eq!(
            err("[2001:db8::2]:8081", "[fd00:9::6]:80"),
            "target fd00:9::6 is outside every bridge's subnet"
        );
        assert!(err("[2001:db8::2]:x", "[fd00:1::6]:80").starts_with("bad port"));
        assert!(err("[2001:db8::2:8081", "[fd00:1::6]:80").starts_with("bad address"));
        assert!(m
            .existing_publish6("tcp", "[2001:db8::2]:8080", "[fd00:1::5]:80")
            .unwrap()
            .is_some());
        assert!(m.remove_published6("tcp", "[2001:db8::2]:8081").is_err());
        assert!(m.remove_published6("tcp", "[2001:db8::2]:8080").is_ok());
        assert!(m.published6.is_empty());
    }

    #[test]
    fn masquerade6_checks() {
        let mut m = model();
        assert!(m
            .check_masquerade6("wan", "br1")
            .is_ok_and(|x| x.out == "br1"));
        m.masquerade6
            .push(m.check_masquerade6("br1", "wan").unwrap());
        assert_eq!(
            m.check_masquerade6("br1", "wan").unwrap_err().to_string(),
            "bridge br1 is already masqueraded (IPv6)"
        );
        m.bridges[1].gateway6 = None;
        m.bridges.push(m.bridges[1].clone());
        m.bridges[2].name = "wan2".into();
        assert!(m
            .check_masquerade6("wan", "wan2")
            .unwrap_err()
            .to_string()
            .contains("has no IPv6 gateway"));
        assert!(m.remove_masquerade6("br1").is_ok());
        assert!(m.remove_masquerade6("br1").is_err());
    }
}
