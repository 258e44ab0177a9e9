//! ADD and DEL: a container's leg on a vswitchd bridge.
//!
//! ADD checks everything it can first (the namespace exists, `CNI_IFNAME` does not,
//! vswitchd answers, the bridge is there or can be made), then changes things in an
//! order a rollback can undo: addresses (vswitchd's allocator, or the delegated
//! IPAM plugin plus a hold in vswitchd) → veth pair (made in vswitchd's namespace,
//! its peer born in the container as `CNI_IFNAME`) → `add-port` (owned: vswitchd
//! deletes the pair with the port; marked as CNI's) → the container's addresses,
//! link and routes → DNS names → published ports. A failure part-way undoes what was
//! done, in reverse, and reports teardown failures too.
//!
//! DEL is best effort and idempotent: whatever of the attachment is left goes, and
//! nothing left is success.

use crate::config::{Env, Ipam, NetConf};
use crate::delegate::Delegate;
use crate::error::{
    CniError, CniResult, ALREADY_EXISTS, INTERNAL, INVALID_CONFIG, UNKNOWN_CONTAINER,
};
use crate::types::{AddResult, Dns, Interface, IpConfig, Route};
use crate::vs::{self, Published, Vs};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use vswitch_hostnet::netlink::{errno, mac_string, Rtnl};
use vswitch_hostnet::netns::NetNs;
use vswitch_proto::{AddHost, AddPort, AllocAddress, BridgeInfo, Command, PortKind, Publish};

/// FNV-1a, 64 bits: host interface names and over-long owners.
pub fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Host-side name candidate `salt` for attachment `owner`: `cni` + 8 hex digits.
fn host_name(owner: &str, salt: u32) -> String {
    format!("cni{:08x}", fnv64(&format!("{owner}\0{salt}")) as u32)
}

fn internal(e: anyhow::Error) -> CniError {
    crate::error::classify(e, INTERNAL)
}

/// Open the container's namespace; a path that is not there is "unknown container".
pub fn open_netns(path: &str) -> CniResult<NetNs> {
    NetNs::open(std::path::Path::new(path)).map_err(|e| {
        CniError::new(
            UNKNOWN_CONTAINER,
            format!("container network namespace {path} does not exist"),
        )
        .with_details(format!("{e:#}"))
    })
}

/// One address of the attachment.
#[derive(Debug, Clone, Copy)]
struct Addr {
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
}

/// What ADD changed so far, to undo on failure.
#[derive(Default)]
struct Undo {
    ipam: bool,
    held: Option<String>,
    veth: Option<u32>,
    port: Option<String>,
    names: bool,
    published: Vec<Published>,
    ip: Option<String>,
}

impl Undo {
    fn run(
        self,
        vs: &mut Vs,
        hrt: &mut Rtnl,
        conf: &NetConf,
        env: &Env,
        owner: &str,
    ) -> Vec<String> {
        let mut errs = Vec::new();
        let bridge = conf.bridge.as_str();
        if self.held.is_some() || self.names || !self.published.is_empty() {
            vs::release(
                vs,
                bridge,
                owner,
                self.ip.as_deref(),
                &self.published,
                &mut errs,
            );
        }
        let mut veth_gone = false;
        if let Some(port) = self.port {
            match vs.run(
                Command::DelPort {
                    bridge: bridge.to_string(),
                    port: port.clone(),
                    if_exists: false,
                },
                &format!("del-port {bridge} {port}"),
            ) {
                Ok(()) => veth_gone = true,
                Err(e) => errs.push(e.msg),
            }
        }
        if let (Some(index), false) = (self.veth, veth_gone) {
            if let Err(e) = hrt.del_link(index) {
                if errno(&e) != Some(nix::libc::ENODEV) {
                    errs.push(format!("{e:#}"));
                }
            }
        }
        if self.ipam {
            if let Ipam::Delegate { plugin } = &conf.ipam {
                if let Err(e) = Delegate::new(plugin, env, conf).del() {
                    errs.push(e.msg);
                }
            }
        }
        errs
    }
}

/// ADD: attach the container, return the result (JSON in the configuration's version).
pub fn add(env: &Env, conf: &NetConf) -> CniResult<serde_json::Value> {
    let ns = open_netns(&env.netns)?;
    let mut grt = Rtnl::open_in(&ns).map_err(internal)?;
    if grt.link(&env.ifname).map_err(internal)?.is_some() {
        return Err(CniError::new(
            ALREADY_EXISTS,
            format!("interface {} already exists in {}", env.ifname, env.netns),
        ));
    }
    let (mut vs, vsns) = Vs::connect_with_ns(&conf.socket)?;
    let br = vs.ensure_bridge(conf)?;
    let owner = conf.owner(&env.container_id, &env.ifname);
    let bridges = vs.bridges()?;
    if let Some((b, p)) = vs::find_port(&bridges, &conf.name, &owner) {
        return Err(CniError::new(
            ALREADY_EXISTS,
            format!(
                "container {} {} is already attached to network {} (port {} on bridge {})",
                env.container_id, env.ifname, conf.name, p.name, b.name
            ),
        ));
    }
    let mut hrt = Rtnl::open_in(&vsns).map_err(internal)?;
    let mut undo = Undo::default();
    match build(
        env, conf, &br, &bridges, &owner, &mut vs, &ns, &mut hrt, &mut grt, &mut undo,
    ) {
        Ok(r) => Ok(r.to_json(&conf.cni_version)),
        Err(e) => {
            let errs = undo.run(&mut vs, &mut hrt, conf, env, &owner);
            if errs.is_empty() {
                Err(e)
            } else {
                let d = format!("rollback also failed: {}", errs.join("; "));
                Err(if e.details.is_empty() {
                    e.with_details(d)
                } else {
                    let joined = format!("{}; {d}", e.details);
                    e.with_details(joined)
                })
            }
        }
    }
}

/// The addresses, routes and DNS of the attachment, held in vswitchd.
fn addresses(
    env: &Env,
    conf: &NetConf,
    br: &BridgeInfo,
    owner: &str,
    vs: &mut Vs,
    undo: &mut Undo,
) -> CniResult<(Vec<Addr>, Vec<Route>, Dns)> {
    let subnet: Option<Ipv4Net> = br.subnet.as_deref().and_then(|s| s.parse().ok());
    // vswitchd's router (gateway, DNS) serves untagged ports only: a VLAN's
    // containers reach their VLAN, no gateway.
    let gateway: Option<Ipv4Addr> = br
        .gateway
        .as_deref()
        .and_then(|s| s.parse().ok())
        .filter(|_| conf.vlan.is_none());
    let hold = |vs: &mut Vs, ip: Option<Ipv4Addr>, range: Option<Ipv4Net>| {
        vs.call::<vswitch_proto::AllocEntry>(
            Command::AllocAddress(AllocAddress {
                bridge: br.name.clone(),
                ip: ip.map(|i| i.to_string()),
                range: range.map(|r| r.to_string()),
                owner: owner.to_string(),
                take_over: None,
            }),
            &format!("alloc-address {}", br.name),
        )
    };
    match &conf.ipam {
        Ipam::Vswitch { range } => {
            let Some(net) = subnet else {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!(
                        "bridge {} has no subnet to allocate addresses from (add-br {} --subnet CIDR, or an \"ipam\" plugin)",
                        br.name, br.name
                    ),
                ));
            };
            let mut out = Vec::new();
            let wanted: Vec<Option<Ipv4Addr>> = if conf.runtime.ips.is_empty() {
                vec![None]
            } else {
                conf.runtime.ips.iter().copied().map(Some).collect()
            };
            for ip in wanted {
                let a = hold(vs, ip, *range)?;
                undo.held = Some(owner.to_string());
                let ip: Ipv4Addr = a.ip.parse().map_err(|_| {
                    CniError::new(INTERNAL, format!("vswitchd handed out {:?}", a.ip))
                })?;
                out.push(Addr {
                    ip,
                    prefix: net.prefix_len(),
                    gateway,
                });
            }
            let routes = gateway
                .map(|g| Route {
                    dst: "0.0.0.0/0".into(),
                    gw: Some(g.to_string()),
                })
                .into_iter()
                .collect();
            Ok((out, routes, Dns::default()))
        }
        Ipam::Delegate { plugin } => {
            let res = Delegate::new(plugin, env, conf).add()?;
            undo.ipam = true;
            let mut out = Vec::new();
            for ip in &res.ips {
                let net: ipnet::IpNet = ip.address.parse().map_err(|_| {
                    CniError::new(
                        INTERNAL,
                        format!("IPAM plugin {plugin} gave a bad address {:?}", ip.address),
                    )
                })?;
                let ipnet::IpNet::V4(n) = net else {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!(
                            "IPAM plugin {plugin} gave {net}: IPv6 is not supported by vswitch-cni yet"
                        ),
                    ));
                };
                let gw = match &ip.gateway {
                    None => None,
                    Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                        CniError::new(
                            INTERNAL,
                            format!("IPAM plugin {plugin} gave a bad gateway {g:?}"),
                        )
                    })?),
                };
                // One allocator: vswitchd never hands out what the plugin gave.
                if subnet.is_some_and(|s| s.contains(&n.addr())) {
                    hold(vs, Some(n.addr()), None)?;
                    undo.held = Some(owner.to_string());
                }
                out.push(Addr {
                    ip: n.addr(),
                    prefix: n.prefix_len(),
                    gateway: gw,
                });
            }
            if out.is_empty() {
                return Err(CniError::new(
                    INTERNAL,
                    format!("IPAM plugin {plugin} gave no address"),
                ));
            }
            Ok((out, res.routes, res.dns))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    env: &Env,
    conf: &NetConf,
    br: &BridgeInfo,
    bridges: &[BridgeInfo],
    owner: &str,
    vs: &mut Vs,
    ns: &NetNs,
    hrt: &mut Rtnl,
    grt: &mut Rtnl,
    undo: &mut Undo,
) -> CniResult<AddResult> {
    let (addrs, routes, ipam_dns) = addresses(env, conf, br, owner, vs, undo)?;
    let first = addrs[0];
    undo.ip = Some(first.ip.to_string());

    // The veth pair: host end in vswitchd's namespace, peer born in the container.
    let mtu = conf.mtu.unwrap_or(br.mtu);
    let is_port = |n: &str| bridges.iter().any(|b| b.ports.iter().any(|p| p.name == n));
    let mut host = None;
    for salt in 0..64u32 {
        let cand = host_name(owner, salt);
        if is_port(&cand) || hrt.link(&cand).map_err(internal)?.is_some() {
            continue;
        }
        match hrt.add_veth(&cand, &env.ifname, ns, mtu, conf.runtime.mac) {
            Ok(()) => {
                host = Some(cand);
                break;
            }
            Err(e) if errno(&e) == Some(nix::libc::EEXIST) => {
                if grt.link(&env.ifname).map_err(internal)?.is_some() {
                    return Err(CniError::new(
                        ALREADY_EXISTS,
                        format!("interface {} already exists in {}", env.ifname, env.netns),
                    ));
                }
                // Another ADD took this name meanwhile: try the next one.
            }
            Err(e) => return Err(internal(e)),
        }
    }
    let host = host.ok_or_else(|| {
        CniError::new(
            INTERNAL,
            "cannot find a free host interface name in vswitchd's namespace",
        )
    })?;
    let h = hrt
        .link(&host)
        .map_err(internal)?
        .ok_or_else(|| CniError::new(INTERNAL, format!("veth end {host} vanished")))?;
    undo.veth = Some(h.index);
    hrt.set_up(h.index).map_err(internal)?;
    let gl = grt.link(&env.ifname).map_err(internal)?.ok_or_else(|| {
        CniError::new(
            INTERNAL,
            format!("{} did not appear in {}", env.ifname, env.netns),
        )
    })?;
    let mac = gl
        .mac
        .ok_or_else(|| CniError::new(INTERNAL, format!("{} has no MAC address", env.ifname)))?;

    // The port, marked as this attachment's.
    let mut published = Vec::new();
    for p in &conf.runtime.port_mappings {
        let listen = match p.host_ip.as_str() {
            "" | "0.0.0.0" => p.host_port.to_string(),
            a if a.parse::<Ipv4Addr>().is_ok() => format!("{a}:{}", p.host_port),
            a => {
                eprintln!(
                    "vswitch-cni: warning: portMappings hostIP {a} is not IPv4; mapping {} skipped",
                    p.host_port
                );
                continue;
            }
        };
        published.push(Published {
            proto: p.protocol.to_ascii_lowercase(),
            listen,
            container_port: p.container_port,
        });
    }
    let mut ids = BTreeMap::new();
    for (k, v) in [
        (vs::MARK, "1".to_string()),
        (vs::NETWORK, conf.name.clone()),
        (vs::CONTAINER, env.container_id.clone()),
        (vs::IFNAME, env.ifname.clone()),
        (vs::NETNS, env.netns.clone()),
        (vs::OWNER, owner.to_string()),
        ("ip", format!("{}/{}", first.ip, first.prefix)),
        ("mac", mac_string(&mac)),
    ] {
        ids.insert(k.to_string(), v);
    }
    if !published.is_empty() {
        ids.insert(vs::PORTS.to_string(), Published::record(&published));
    }
    if let Ipam::Delegate { plugin } = &conf.ipam {
        ids.insert(vs::IPAM.to_string(), plugin.clone());
    }
    vs.run(
        Command::AddPort(AddPort {
            bridge: br.name.clone(),
            port: host.clone(),
            kind: PortKind::System,
            tag: conf.vlan,
            owned: true,
            external_ids: ids,
            ..Default::default()
        }),
        &format!("add-port {} {host}", br.name),
    )?;
    undo.port = Some(host.clone());

    // The container side: addresses, link up, routes.
    for a in &addrs {
        grt.add_addr(gl.index, a.ip, a.prefix).map_err(internal)?;
    }
    grt.set_up(gl.index).map_err(internal)?;
    let mut installed = Vec::new();
    for r in routes {
        let dst: Ipv4Net = match r.dst.parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(n)) => n.trunc(),
            Ok(ipnet::IpNet::V6(_)) => {
                eprintln!("vswitch-cni: warning: IPv6 route {} skipped", r.dst);
                continue;
            }
            Err(_) => {
                return Err(CniError::new(
                    INTERNAL,
                    format!("bad route destination {:?}", r.dst),
                ))
            }
        };
        let gw = match &r.gw {
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| CniError::new(INTERNAL, format!("bad route gateway {g:?}")))?,
            ),
            None => first.gateway,
        };
        match grt.add_route4(dst.network(), dst.prefix_len(), gw, Some(gl.index)) {
            Ok(()) => installed.push(r),
            // Another network of this container has that route (its default route):
            // keep it, and do not claim it in the result.
            Err(e) if errno(&e) == Some(nix::libc::EEXIST) => {
                eprintln!(
                    "vswitch-cni: warning: {} already has a route to {dst}; left as it is",
                    env.netns
                );
            }
            Err(e) => return Err(internal(e)),
        }
    }

    // DNS names at the bridge's gateway (best effort: a name someone else holds stays
    // theirs).
    // Names and the resolver live at the gateway, which untagged ports only reach.
    let in_subnet = conf.vlan.is_none()
        && br
            .subnet
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Net>().ok())
            .is_some_and(|n| n.contains(&first.ip));
    if in_subnet {
        let mut names: Vec<String> = Vec::new();
        let wanted = env
            .arg("K8S_POD_NAME")
            .map(str::to_string)
            .into_iter()
            .chain(conf.runtime.aliases.iter().cloned());
        for n in wanted {
            match vswitch_hostnet::dns_name(&n) {
                Some(d) if !names.contains(&d) => names.push(d),
                Some(_) => {}
                None => eprintln!("vswitch-cni: warning: {n:?} is not a DNS name; not registered"),
            }
        }
        for n in names {
            match vs.run(
                Command::AddHost(AddHost {
                    bridge: br.name.clone(),
                    name: n.clone(),
                    ip: first.ip.to_string(),
                    source: Some(owner.to_string()),
                    ..Default::default()
                }),
                &format!("add-host {} {n}", br.name),
            ) {
                Ok(()) => undo.names = true,
                Err(e) if e.code == ALREADY_EXISTS => {
                    eprintln!(
                        "vswitch-cni: warning: {}; not registered for this container",
                        e.msg
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    // Published ports (the `portmap` plugin's iptables rules never see this datapath).
    for p in &published {
        vs.run(
            Command::Publish(Publish {
                proto: p.proto.clone(),
                listen: p.listen.clone(),
                target: format!("{}:{}", first.ip, p.container_port),
                may_exist: false,
            }),
            &format!("publish {} {}", p.proto, p.listen),
        )?;
        undo.published.push(p.clone());
    }

    let mut dns = Dns::default();
    if let Some(g) = br.gateway.as_ref().filter(|_| in_subnet) {
        dns.nameservers.push(g.clone());
    }
    dns.merge(&conf.dns);
    dns.merge(&ipam_dns);
    let result = AddResult {
        interfaces: vec![
            Interface {
                name: host,
                mac: h.mac.as_ref().map(mac_string),
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: Some(mac_string(&mac)),
                mtu: Some(mtu),
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: addrs
            .iter()
            .map(|a| IpConfig {
                address: format!("{}/{}", a.ip, a.prefix),
                gateway: a.gateway.map(|g| g.to_string()),
                interface: Some(1),
            })
            .collect(),
        routes: installed,
        dns,
    };
    Ok(match &conf.prev_result {
        Some(prev) => result.after(prev.clone()),
        None => result,
    })
}

/// DEL: remove whatever is left of the attachment. Success when nothing is.
pub fn del(env: &Env, conf: &NetConf) -> CniResult<()> {
    let mut errs: Vec<String> = Vec::new();
    let mut code = INTERNAL;
    if let Ipam::Delegate { plugin } = &conf.ipam {
        if let Err(e) = Delegate::new(plugin, env, conf).del() {
            code = e.code;
            errs.push(e.msg);
        }
    }
    let owner = conf.owner(&env.container_id, &env.ifname);
    let mut vs = Vs::connect(&conf.socket)?;
    let bridges = vs.bridges()?;
    let mut done = Vec::new();
    if let Some((b, p)) = vs::find_port(&bridges, &conf.name, &owner) {
        vs::teardown_port(&mut vs, &b, &p, &mut errs);
        done.push(b.name.clone());
    }
    // Names and addresses left without a port (an ADD that died half-way).
    if bridges.iter().any(|b| b.name == conf.bridge) && !done.contains(&conf.bridge) {
        vs::release(&mut vs, &conf.bridge, &owner, None, &[], &mut errs);
    }
    // The container's interface, if it is still there (the bridge plugin does the
    // same); a namespace already gone is fine.
    if !env.netns.is_empty() {
        if let Ok(ns) = NetNs::open(std::path::Path::new(&env.netns)) {
            let gone = (|| -> anyhow::Result<()> {
                let mut grt = Rtnl::open_in(&ns)?;
                if let Some(l) = grt.link(&env.ifname)? {
                    if let Err(e) = grt.del_link(l.index) {
                        if errno(&e) != Some(nix::libc::ENODEV) {
                            return Err(e);
                        }
                    }
                }
                Ok(())
            })();
            if let Err(e) = gone {
                errs.push(format!("{e:#}"));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code, errs.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_and_differ() {
        let a = host_name("cni:net/abc/eth0", 0);
        let b = host_name("cni:net/abc/eth1", 0);
        assert!(a.len() <= 15 && a.starts_with("cni"), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, host_name("cni:net/abc/eth0", 1));
    }
}
