//! What a runtime hands the plugin: the `CNI_*` environment and one plugin
//! configuration object on stdin (CNI spec 1.1.0 sections 2 and 3), checked once.
//!
//! Errors follow the spec's codes: a missing or malformed variable is 4, stdin that
//! is not the JSON described is 6 (wrong types included), a value that decodes but
//! makes no sense (a bad CIDR, VLAN 5000, no `bridge`) is 7, an unknown `cniVersion`
//! is 1.

use crate::error::{fail, CniError, CniResult, DECODING_FAILURE, INVALID_CONFIG, INVALID_ENV};
use crate::types::{check_supported, AddResult, Dns, CURRENT};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The CNI commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Cmd {
    pub fn parse(s: &str) -> CniResult<Cmd> {
        Ok(match s {
            "ADD" => Cmd::Add,
            "DEL" => Cmd::Del,
            "CHECK" => Cmd::Check,
            "STATUS" => Cmd::Status,
            "GC" => Cmd::Gc,
            "VERSION" => Cmd::Version,
            "" => return fail(INVALID_ENV, "required env variables [CNI_COMMAND] missing"),
            other => return fail(INVALID_ENV, format!("unknown CNI_COMMAND: {other}")),
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
}

/// Names allowed for container ids and networks: alphanumeric first, then
/// alphanumerics, `_`, `.`, `-` (the spec's rule).
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

impl Env {
    /// Read and check the variables `cmd` requires (the spec's lists; `CNI_PATH` is
    /// only needed when an IPAM plugin is delegated to, and checked then).
    pub fn read(cmd: Cmd, get: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
        let var = |k: &str| get(k).unwrap_or_default();
        let (need_id, need_ns, need_if) = match cmd {
            Cmd::Add | Cmd::Check => (true, true, true),
            Cmd::Del => (true, false, true),
            Cmd::Status | Cmd::Gc | Cmd::Version => (false, false, false),
        };
        let env = Env {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: parse_args(&var("CNI_ARGS"))?,
            path: std::env::split_paths(&var("CNI_PATH"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        };
        let missing: Vec<&str> = [
            (need_id, "CNI_CONTAINERID", &env.container_id),
            (need_ns, "CNI_NETNS", &env.netns),
            (need_if, "CNI_IFNAME", &env.ifname),
        ]
        .into_iter()
        .filter(|(need, _, v)| *need && v.is_empty())
        .map(|(_, k, _)| k)
        .collect();
        if !missing.is_empty() {
            return fail(
                INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            );
        }
        if need_id && !valid_name(&env.container_id) {
            return Err(
                CniError::new(INVALID_ENV, "invalid characters in CNI_CONTAINERID")
                    .with_details(env.container_id.clone()),
            );
        }
        if need_if {
            if let Err(e) = vswitch_hostnet::netlink::check_ifname(&env.ifname) {
                return fail(INVALID_ENV, format!("CNI_IFNAME: {e}"));
            }
        }
        Ok(env)
    }

    /// The value of `CNI_ARGS` key `k`.
    pub fn arg(&self, k: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// `K=V;K2=V2` (empty parts skipped).
fn parse_args(s: &str) -> CniResult<Vec<(String, String)>> {
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => fail(
                INVALID_ENV,
                format!("CNI_ARGS: {p:?} is not KEY=VALUE (pairs separated by ';')"),
            ),
        })
        .collect()
}

/// One `portMappings` entry (CONVENTIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// `aliases`: a list (CONVENTIONS.md), or Podman's map from network name to list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Aliases {
    List(Vec<String>),
    ByNetwork(BTreeMap<String, Vec<String>>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRuntime {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    aliases: Option<Aliases>,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    vlan: Option<u16>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    runtime_config: Option<RawRuntime>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// Where addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipam {
    /// vswitchd's allocator (no `ipam`, or `"type": "vswitch"`), optionally inside
    /// `range` (like `--ip-range`).
    Vswitch { range: Option<Ipv4Net> },
    /// Another IPAM plugin, run as the spec's delegation says.
    Delegate { plugin: String },
}

/// What the runtime asked for this attachment (`runtimeConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    pub port_mappings: Vec<PortMapping>,
    pub mac: Option<[u8; 6]>,
    /// Requested addresses (`ips`, else `args.cni.ips`, else `CNI_ARGS` `IP`).
    pub ips: Vec<Ipv4Addr>,
    pub aliases: Vec<String>,
}

/// The plugin configuration, checked.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub vlan: Option<u16>,
    pub mtu: Option<u32>,
    pub socket: PathBuf,
    pub ipam: Ipam,
    pub dns: Dns,
    pub runtime: Runtime,
    pub prev_result: Option<AddResult>,
    /// GC: the attachments still valid, `(containerID, ifname)`.
    pub valid_attachments: Option<Vec<(String, String)>>,
    /// The configuration as received (delegated plugins get it whole).
    pub raw: Value,
}

/// The `cniVersion` of `stdin`, if it has a readable one (for error results).
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| CURRENT.to_string())
}

fn bad(what: impl Into<String>) -> CniError {
    CniError::new(INVALID_CONFIG, what)
}

fn parse_mac(s: &str, from: &str) -> CniResult<[u8; 6]> {
    let m = vswitch_hostnet::netlink::parse_mac(s)
        .ok_or_else(|| bad(format!("{from}: bad MAC address {s:?}")))?;
    if m[0] & 1 == 1 || m == [0; 6] {
        return Err(bad(format!("{from}: {s} is not a unicast MAC address")));
    }
    Ok(m)
}

fn parse_ip_list(list: &[String], from: &str) -> CniResult<Vec<Ipv4Addr>> {
    list.iter()
        .map(|s| {
            let a = s.split('/').next().unwrap_or_default();
            a.parse::<Ipv4Addr>().map_err(|_| {
                if a.parse::<std::net::Ipv6Addr>().is_ok() {
                    bad(format!(
                        "{from}: {s}: IPv6 is not supported by vswitch-cni yet"
                    ))
                } else {
                    bad(format!("{from}: bad address {s:?}"))
                }
            })
        })
        .collect()
}

impl NetConf {
    /// Decode and check `stdin` for `cmd` (not VERSION), with `env` for the
    /// `CNI_ARGS` fallbacks.
    pub fn parse(stdin: &[u8], env: &Env) -> CniResult<NetConf> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("error decoding network config: {e}"),
            )
        })?;
        if !raw.is_object() {
            return fail(
                DECODING_FAILURE,
                "error decoding network config: not a JSON object",
            );
        }
        let c: RawConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("error decoding network config: {e}"),
            )
        })?;
        // A configuration without cniVersion is 0.1.0 (libcni reads it so).
        let cni_version = c.cni_version.unwrap_or_else(|| "0.1.0".into());
        check_supported(&cni_version)?;
        let name = c.name.unwrap_or_default();
        if name.is_empty() {
            return Err(bad("missing network name"));
        }
        if !valid_name(&name) {
            return Err(bad("invalid characters found in network name").with_details(name));
        }
        let bridge = c.bridge.unwrap_or_default();
        if bridge.is_empty() {
            return Err(bad(
                "missing \"bridge\": the vswitchd bridge to attach containers to",
            ));
        }
        let subnet = match c.subnet {
            None => None,
            Some(s) => Some(
                s.parse::<Ipv4Net>()
                    .map_err(|_| bad(format!("subnet: {s:?} is not an IPv4 CIDR")))?
                    .trunc(),
            ),
        };
        let gateway = match c.gateway {
            None => None,
            Some(g) => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| bad(format!("gateway: {g:?} is not an IPv4 address")))?;
                match subnet {
                    Some(n) if !n.contains(&ip) => {
                        return Err(bad(format!("gateway {ip} is outside subnet {n}")))
                    }
                    _ => {}
                }
                Some(ip)
            }
        };
        if gateway.is_some() && subnet.is_none() {
            return Err(bad("gateway needs subnet"));
        }
        if let Some(v) = c.vlan {
            if !(1..=4094).contains(&v) {
                return Err(bad(format!("vlan {v} is not in 1..4094")));
            }
        }
        if let Some(m) = c.mtu {
            if !(68..=65535).contains(&m) {
                return Err(bad(format!("mtu {m} is not in 68..65535")));
            }
        }
        let ipam = Self::ipam(c.ipam.as_ref())?;
        let socket = vswitch_proto::socket_path(c.socket.as_deref().map(std::path::Path::new));
        let rt = c.runtime_config.unwrap_or_default();
        let mac = match (&rt.mac, env.arg("MAC")) {
            (Some(m), _) => Some(parse_mac(m, "runtimeConfig.mac")?),
            (None, Some(m)) => {
                Some(parse_mac(m, "CNI_ARGS MAC").map_err(|e| CniError::new(INVALID_ENV, e.msg))?)
            }
            (None, None) => None,
        };
        let args_ips: Vec<String> = c
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/ips"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let ips = if !rt.ips.is_empty() {
            parse_ip_list(&rt.ips, "runtimeConfig.ips")?
        } else if !args_ips.is_empty() {
            parse_ip_list(&args_ips, "args.cni.ips")?
        } else if let Some(ip) = env.arg("IP") {
            let list: Vec<String> = ip.split(',').map(str::to_string).collect();
            parse_ip_list(&list, "CNI_ARGS IP").map_err(|e| CniError::new(INVALID_ENV, e.msg))?
        } else {
            Vec::new()
        };
        for p in &rt.port_mappings {
            if p.host_port == 0 || p.container_port == 0 {
                return Err(bad(format!(
                    "portMappings: port 0 in {}:{}",
                    p.host_port, p.container_port
                )));
            }
            if !matches!(p.protocol.to_ascii_lowercase().as_str(), "tcp" | "udp") {
                return Err(bad(format!(
                    "portMappings: protocol {:?} cannot be published (tcp and udp can)",
                    p.protocol
                )));
            }
        }
        if c.vlan.is_some() && !rt.port_mappings.is_empty() {
            return Err(bad(
                "portMappings need the router, which serves untagged ports only: drop \"vlan\" or the port mappings",
            ));
        }
        let aliases = match rt.aliases {
            None => Vec::new(),
            Some(Aliases::List(l)) => l,
            Some(Aliases::ByNetwork(m)) => m.get(&name).cloned().unwrap_or_default(),
        };
        let prev_result = match c.prev_result {
            None | Some(Value::Null) => None,
            Some(v) => Some(AddResult::from_value(&v).map_err(|e| {
                CniError::new(DECODING_FAILURE, format!("error decoding prevResult: {e}"))
            })?),
        };
        Ok(NetConf {
            cni_version,
            name,
            bridge,
            subnet,
            gateway,
            vlan: c.vlan,
            mtu: c.mtu,
            socket,
            ipam,
            dns: c.dns.unwrap_or_default(),
            runtime: Runtime {
                port_mappings: rt.port_mappings,
                mac,
                ips,
                aliases,
            },
            prev_result,
            valid_attachments: c
                .valid_attachments
                .map(|v| v.into_iter().map(|a| (a.container_id, a.ifname)).collect()),
            raw,
        })
    }

    fn ipam(v: Option<&Value>) -> CniResult<Ipam> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Ipam::Vswitch { range: None });
        };
        let o = v
            .as_object()
            .ok_or_else(|| CniError::new(DECODING_FAILURE, "ipam: not a JSON object"))?;
        let kind = match o.get("type") {
            None => "vswitch",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return fail(DECODING_FAILURE, "ipam.type: not a string"),
        };
        if kind == "vswitch" || kind.is_empty() {
            let range = match o.get("range") {
                None => None,
                Some(Value::String(r)) => Some(
                    r.parse::<Ipv4Net>()
                        .map_err(|_| bad(format!("ipam.range: {r:?} is not an IPv4 CIDR")))?
                        .trunc(),
                ),
                Some(_) => return fail(DECODING_FAILURE, "ipam.range: not a string"),
            };
            return Ok(Ipam::Vswitch { range });
        }
        if kind.contains('/') || kind.contains('\\') || kind == "." || kind == ".." {
            return Err(bad(format!("ipam.type {kind:?} is not a plugin name")));
        }
        Ok(Ipam::Delegate {
            plugin: kind.to_string(),
        })
    }

    /// The owner of this attachment's addresses in vswitchd, also the source of its
    /// DNS names: `cni:NETWORK/CONTAINER/IFNAME` (vswitchd takes up to 128 bytes;
    /// longer ones are shortened to a hash that keeps the network visible).
    pub fn owner(&self, container_id: &str, ifname: &str) -> String {
        owner(&self.name, container_id, ifname)
    }
}

/// See [`NetConf::owner`].
pub fn owner(network: &str, container_id: &str, ifname: &str) -> String {
    let full = format!("cni:{network}/{container_id}/{ifname}");
    if full.len() <= 128 {
        return full;
    }
    let h = crate::attach::fnv64(&full);
    let net: String = network.chars().take(96).collect();
    format!("cni:{net}/#{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Env {
        Env {
            container_id: "c1".into(),
            netns: "/run/netns/c1".into(),
            ifname: "eth0".into(),
            ..Default::default()
        }
    }

    fn parse(v: Value) -> CniResult<NetConf> {
        NetConf::parse(v.to_string().as_bytes(), &env())
    }

    #[test]
    fn a_full_configuration() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "net1", "type": "vswitch", "bridge": "br0",
            "subnet": "10.1.0.7/24", "gateway": "10.1.0.1", "mtu": 1400,
            "socket": "/tmp/x.sock", "dns": {"search": ["lab"]},
            "runtimeConfig": {
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                "mac": "02:00:00:00:00:05", "ips": ["10.1.0.5/24"],
                "aliases": {"net1": ["web"], "other": ["x"]}
            }
        }))
        .unwrap();
        assert_eq!(c.subnet.unwrap().to_string(), "10.1.0.0/24");
        assert_eq!(c.runtime.ips, [Ipv4Addr::new(10, 1, 0, 5)]);
        assert_eq!(c.runtime.aliases, ["web"]);
        assert_eq!(c.runtime.mac, Some([2, 0, 0, 0, 0, 5]));
        assert_eq!(c.ipam, Ipam::Vswitch { range: None });
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn error_codes() {
        let code = |v: Value| parse(v).unwrap_err().code;
        let base = json!({"cniVersion": "1.0.0", "name": "n", "bridge": "br0"});
        let with = |k: &str, x: Value| {
            let mut b = base.clone();
            b[k] = x;
            b
        };
        assert!(parse(base.clone()).is_ok());
        assert_eq!(
            NetConf::parse(b"{not json", &env()).unwrap_err().code,
            DECODING_FAILURE
        );
        assert_eq!(code(with("vlan", json!("ten"))), DECODING_FAILURE);
        assert_eq!(code(with("vlan", json!(5000))), INVALID_CONFIG);
        assert_eq!(code(with("subnet", json!("10.0.0.0/33"))), INVALID_CONFIG);
        assert_eq!(code(with("bridge", json!(""))), INVALID_CONFIG);
        assert_eq!(code(with("name", json!("-bad"))), INVALID_CONFIG);
        assert_eq!(code(with("cniVersion", json!("0.2.0"))), 1);
        assert_eq!(code(json!({"name": "n", "bridge": "b"})), 1);
        assert_eq!(
            code(with("runtimeConfig", json!({"mac": "ff:ff:ff:ff:ff:ff"}))),
            INVALID_CONFIG
        );
        assert_eq!(
            code(with("runtimeConfig", json!({"ips": ["fd00::5/64"]}))),
            INVALID_CONFIG
        );
        let mut v = with("vlan", json!(10));
        v["runtimeConfig"] = json!({"portMappings": [{"hostPort": 80, "containerPort": 80}]});
        assert_eq!(code(v), INVALID_CONFIG);
        let mut g = with("subnet", json!("10.0.0.0/24"));
        g["gateway"] = json!("10.9.0.1");
        assert_eq!(code(g), INVALID_CONFIG);
        assert_eq!(
            code(with("ipam", json!({"type": "../evil"}))),
            INVALID_CONFIG
        );
        assert_eq!(
            parse(with("ipam", json!({"type": "host-local", "subnet": "x"})))
                .unwrap()
                .ipam,
            Ipam::Delegate {
                plugin: "host-local".into()
            }
        );
    }

    #[test]
    fn environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = Env::read(
            Cmd::Add,
            vars(&[
                ("CNI_CONTAINERID", "abc"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
                ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            ]),
        )
        .unwrap();
        assert_eq!(e.arg("K8S_POD_NAME"), Some("web"));
        assert_eq!(e.path.len(), 2);
        let err = Env::read(Cmd::Add, vars(&[("CNI_CONTAINERID", "abc")])).unwrap_err();
        assert_eq!(err.code, INVALID_ENV);
        assert!(err.msg.contains("CNI_NETNS,CNI_IFNAME"), "{}", err.msg);
        // DEL does not need the namespace.
        assert!(Env::read(
            Cmd::Del,
            vars(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")])
        )
        .is_ok());
        let long = Env::read(
            Cmd::Add,
            vars(&[
                ("CNI_CONTAINERID", "abc"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "a-very-long-ifname"),
            ]),
        );
        assert_eq!(long.unwrap_err().code, INVALID_ENV);
        let bad_id = Env::read(
            Cmd::Del,
            vars(&[("CNI_CONTAINERID", "a/b"), ("CNI_IFNAME", "eth0")]),
        );
        assert_eq!(bad_id.unwrap_err().code, INVALID_ENV);
        assert_eq!(Cmd::parse("FROB").unwrap_err().code, INVALID_ENV);
    }

    #[test]
    fn owners_fit_vswitchd() {
        assert_eq!(owner("net1", "abc", "eth0"), "cni:net1/abc/eth0");
        let long = owner("n", &"a".repeat(200), "eth0");
        assert!(long.len() <= 128 && long.starts_with("cni:n/#"), "{long}");
    }
}
