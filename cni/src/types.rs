//! CNI versions and the ADD result (spec 1.1.0 section 5 "ADD Success"), written in
//! the shape of the configuration's version: 1.x as the spec shows it, 0.3.0-0.4.0
//! with the `version` field on each IP and without the 1.1.0 interface `mtu`.
//!
//! The same types read a `prevResult` and a delegated IPAM plugin's result (every
//! field optional, unknown fields ignored).

use crate::error::{fail, CniResult, INCOMPATIBLE_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The versions this plugin speaks, oldest first (VERSION prints them). 0.1.0 and
/// 0.2.0 had another result format and are not among them.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest spec version, used when the input names none that we could echo.
pub const CURRENT: &str = "1.1.0";

/// `a.b.c` as numbers, if it is one.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Whether version `v` is at least `min` (unparseable versions are not).
pub fn at_least(v: &str, min: &str) -> bool {
    match (parse_version(v), parse_version(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// Fail with code 1 unless we speak `v`.
pub fn check_supported(v: &str) -> CniResult<()> {
    if SUPPORTED.contains(&v) {
        return Ok(());
    }
    Err(
        crate::error::CniError::new(INCOMPATIBLE_VERSION, "incompatible CNI versions")
            .with_details(format!(
                "config is {v:?}, plugin supports [{}]",
                SUPPORTED.join(", ")
            )),
    )
}

/// Fail with code 1 unless `v` has operation `op` (CHECK came with 0.4.0, STATUS and
/// GC with 1.1.0).
pub fn check_allows(v: &str, op: &str, min: &str) -> CniResult<()> {
    if at_least(v, min) {
        Ok(())
    } else {
        fail(
            INCOMPATIBLE_VERSION,
            format!("config version {v} does not allow {op} (needs {min} or newer)"),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpConfig {
    /// CIDR, e.g. `10.0.0.5/24`.
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    /// Add what `other` has and `self` lacks (its nameservers after ours).
    pub fn merge(&mut self, other: &Dns) {
        for n in &other.nameservers {
            if !self.nameservers.contains(n) {
                self.nameservers.push(n.clone());
            }
        }
        if self.domain.is_none() {
            self.domain.clone_from(&other.domain);
        }
        for (mine, theirs) in [
            (&mut self.search, &other.search),
            (&mut self.options, &other.options),
        ] {
            for s in theirs {
                if !mine.contains(s) {
                    mine.push(s.clone());
                }
            }
        }
    }
}

/// An ADD result (also a `prevResult`, also an IPAM plugin's abbreviated result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl AddResult {
    /// Read a result of any supported version (0.3.x/0.4.0 `version` fields ignored).
    pub fn from_value(v: &Value) -> Result<AddResult, serde_json::Error> {
        serde_json::from_value(v.clone())
    }

    /// `prev` (a previous plugin's result) followed by `self`: interfaces appended,
    /// our IPs' interface indices shifted past `prev`'s, routes appended, DNS merged.
    pub fn after(self, prev: AddResult) -> AddResult {
        let shift = prev.interfaces.len();
        let mut out = prev;
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + shift);
            ip
        }));
        out.routes.extend(self.routes);
        let mut dns = self.dns;
        dns.merge(&out.dns);
        out.dns = dns;
        out
    }

    /// The result as version `version` shapes it.
    pub fn to_json(&self, version: &str) -> Value {
        let v1 = at_least(version, "1.0.0");
        let with_mtu = at_least(version, "1.1.0");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if !with_mtu {
                    i.mtu = None;
                }
                serde_json::to_value(i).unwrap_or(Value::Null)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = serde_json::to_value(ip).unwrap_or(Value::Null);
                if !v1 {
                    let fam = if ip.address.contains(':') { "6" } else { "4" };
                    v["version"] = json!(fam);
                }
                v
            })
            .collect();
        let mut out = json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
        });
        if !self.routes.is_empty() {
            out["routes"] = json!(self.routes);
        }
        if !self.dns.is_empty() {
            out["dns"] = json!(self.dns);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cni1234abcd".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/c1".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.0.0.5/24".into(),
                gateway: Some("10.0.0.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn versions() {
        assert!(check_supported("1.1.0").is_ok());
        assert!(check_supported("0.4.0").is_ok());
        assert_eq!(check_supported("0.2.0").unwrap_err().code, 1);
        assert_eq!(check_supported("banana").unwrap_err().code, 1);
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("1.x.0", "0.4.0"));
        assert_eq!(check_allows("1.0.0", "GC", "1.1.0").unwrap_err().code, 1);
    }

    #[test]
    fn shapes_by_version() {
        let r = sample();
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert!(v11["ips"][0].get("version").is_none());
        let v10 = r.to_json("1.0.0");
        assert!(v10["interfaces"][1].get("mtu").is_none());
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["cniVersion"], "0.4.0");
        // What we print, we read back (as a prevResult).
        assert_eq!(AddResult::from_value(&v11).unwrap(), r);
        let mut no_mtu = r.clone();
        no_mtu.interfaces[1].mtu = None;
        assert_eq!(AddResult::from_value(&v04).unwrap(), no_mtu);
    }

    #[test]
    fn chaining_after_a_previous_result() {
        let prev = AddResult {
            interfaces: vec![Interface {
                name: "lo0".into(),
                ..Default::default()
            }],
            dns: Dns {
                nameservers: vec!["192.0.2.53".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let r = sample().after(prev);
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.dns.nameservers, ["10.0.0.1", "192.0.2.53"]);
    }
}
