//! The commands: plumb a guest into a bridge, remove it again, wait for an interface,
//! and run `ip route`/`ip rule` inside a guest.
//!
//! Plumbing validates everything it can first (bridge, guest, address, MAC, names),
//! then changes things in an order that a rollback can undo: veth pair (created in
//! vswitchd's namespace, its peer born inside the guest) → host end up → guest address
//! → `add-port` (owned: vswitchd deletes the pair with the port) → guest link up →
//! default route → gratuitous ARP → (dhcp) exchange + reservation → DNS name.
//! A failure part-way undoes what was done, in reverse, and reports every teardown
//! failure too.

use crate::args::{Addr, Args, Cmd, Plumb, USAGE};
use crate::guest::{self, Guest, Kind};
use crate::netlink::{mac_string, parse_mac, Rtnl};
use crate::netns::NetNs;
use crate::{arp, dhcp, dhcp6, resolv};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use vswitch_proto::{
    socket_path, AddHost, AddPort, AllocEntry, BridgeInfo, Client, Command as Req, HostEntry,
    LeaseEntry, PortInfo, PortKind,
};

/// The running daemon and the namespace its ports live in.
pub(crate) struct Daemon {
    pub(crate) client: Client,
    pub(crate) ns: NetNs,
}

pub(crate) fn connect(socket: Option<&Path>) -> Result<Daemon> {
    let (client, ns) = vswitch_hostnet::daemon::connect(&socket_path(socket))?;
    Ok(Daemon { client, ns })
}

/// What `pipework BRIDGE GUEST ...` did (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct Plumbed {
    pub guest: String,
    pub ifname: String,
    pub bridge: String,
    pub port: String,
    pub mac: String,
    /// `IP/PREFIX`.
    pub ip: String,
    pub gateway: Option<String>,
    /// `dhcp` on a bridge that serves DHCPv6 too: the leased `IPV6/PREFIX` and the
    /// IPv6 default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    pub vlan: Option<u16>,
    pub dhcp: bool,
    pub dns_name: Option<String>,
    /// `/etc/netns/NAME/resolv.conf`, when pipework pointed a named namespace's
    /// resolver at the gateway.
    pub resolv_conf: Option<String>,
}

/// What `pipework --remove` did (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct Removed {
    pub guest: String,
    pub ifname: String,
    pub bridge: String,
    pub port: String,
    pub dns_name: Option<String>,
    /// A dhcp port: whether the DHCP lease is gone.
    pub lease_released: Option<bool>,
    /// Whether pipework's `/etc/netns/NAME/resolv.conf` was removed.
    pub resolv_conf_removed: bool,
}

pub fn run(args: Args) -> Result<()> {
    let json = args.json;
    match args.cmd {
        Cmd::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Cmd::Wait { ifname, timeout } => wait(&ifname, timeout),
        Cmd::Watch => crate::watch::watch(args.socket.as_deref()),
        Cmd::Ip { what, guest, args } => ip_in_guest(what, &guest, &args),
        Cmd::Remove {
            bridge,
            ifname,
            guest,
        } => {
            let mut d = connect(args.socket.as_deref())?;
            remove(&mut d, &bridge, &ifname, &guest)?.print(json);
            Ok(())
        }
        Cmd::Plumb(p) => {
            let mut d = connect(args.socket.as_deref())?;
            plumb(&mut d, &p)?.print(json);
            Ok(())
        }
    }
}

/// A result: one human line, or (`--json`) its fields as a JSON object.
pub(crate) trait Report: Serialize {
    fn human(&self) -> String;
    fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(self).unwrap_or_else(|_| "null".into())
            );
        } else {
            println!("{}", self.human());
        }
    }
}

impl Report for Plumbed {
    fn human(&self) -> String {
        let mut s = format!(
            "plumbed {} {} {} mac {} into {} as port {}",
            self.guest, self.ifname, self.ip, self.mac, self.bridge, self.port
        );
        if let Some(g) = &self.gateway {
            s += &format!(", default route via {g}");
        }
        if let Some(a) = &self.ip6 {
            s += &format!(", {a}");
        }
        if let Some(g) = &self.gateway6 {
            s += &format!(", default route via {g}");
        }
        if let Some(v) = self.vlan {
            s += &format!(", vlan {v}");
        }
        if let Some(n) = &self.dns_name {
            s += &format!(", dns name {n}");
        }
        if let Some(r) = &self.resolv_conf {
            s += &format!(", resolver {r}");
        }
        s
    }
}

impl Report for Removed {
    fn human(&self) -> String {
        let mut s = format!(
            "removed {} {} from {} (port {} and its veth pair deleted",
            self.guest, self.ifname, self.bridge, self.port
        );
        if let Some(n) = &self.dns_name {
            s += &format!(", dns name {n} deleted");
        }
        match self.lease_released {
            Some(true) => s += ", DHCP lease released",
            Some(false) => s += ", DHCP lease left to expire",
            None => {}
        }
        if self.resolv_conf_removed {
            s += ", resolv.conf removed";
        }
        s + ")"
    }
}

fn id<'a>(p: &'a PortInfo, k: &str) -> Option<&'a str> {
    p.external_ids.get(k).map(String::as_str)
}

/// Is `p` the port of `guest`'s `ifname`?
fn is_port_of(p: &PortInfo, guest: &str, ifname: &str) -> bool {
    id(p, "pipework") == Some("1")
        && id(p, "guest") == Some(guest)
        && id(p, "ifname") == Some(ifname)
}

fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The host-side name: given (and checked), or `vp` + 8 hex digits of a hash of the
/// guest and interface names, re-salted until it names nothing in vswitchd's namespace
/// and no port.
fn host_name(
    rt: &mut Rtnl,
    bridges: &[BridgeInfo],
    given: Option<&str>,
    key: &str,
    ifname: &str,
) -> Result<String> {
    let port_of = |n: &str| {
        bridges
            .iter()
            .find(|b| b.ports.iter().any(|p| p.name == n))
            .map(|b| b.name.clone())
    };
    if let Some(h) = given {
        if let Some(b) = port_of(h) {
            bail!("port {h} already exists on bridge {b}");
        }
        if rt.link(h)?.is_some() {
            bail!("interface {h} already exists in vswitchd's network namespace");
        }
        return Ok(h.to_string());
    }
    for salt in 0..64u32 {
        let cand = format!("vp{:08x}", fnv32(&format!("{key}\0{ifname}\0{salt}")));
        if port_of(&cand).is_none() && rt.link(&cand)?.is_none() {
            return Ok(cand);
        }
    }
    bail!("cannot find a free host interface name for {key} {ifname}: use -l HOSTIFNAME")
}

/// Refuse an address that is not free on `br`.
fn check_static(
    br: &BridgeInfo,
    hosts: &[HostEntry],
    leases: &[LeaseEntry],
    ip: Ipv4Addr,
) -> Result<()> {
    if let Some(subnet) = &br.subnet {
        let net: ipnet::Ipv4Net = subnet
            .parse()
            .with_context(|| format!("bridge {}'s subnet {subnet}", br.name))?;
        if !net.contains(&ip) {
            bail!(
                "address {ip} is outside subnet {subnet} of bridge {}",
                br.name
            );
        }
        if net.prefix_len() < 31 && (ip == net.network() || ip == net.broadcast()) {
            bail!(
                "address {ip} is the network or broadcast address of subnet {subnet} of bridge {}",
                br.name
            );
        }
    }
    let ip_s = ip.to_string();
    let used_by = if br.gateway.as_deref() == Some(&ip_s) {
        Some("the bridge's gateway".to_string())
    } else if let Some(p) = br
        .ports
        .iter()
        .find(|p| id(p, "ip").and_then(|v| v.split('/').next()) == Some(&ip_s))
    {
        Some(format!(
            "port {}{}",
            p.name,
            id(p, "guest")
                .map(|g| format!(", guest {g}"))
                .unwrap_or_default()
        ))
    } else if let Some(h) = hosts.iter().find(|h| h.ip == ip_s) {
        Some(format!("DNS name {}", h.name))
    } else {
        leases
            .iter()
            .find(|l| l.ip == ip_s && (l.remaining > 0 || l.reserved))
            .map(|l| format!("DHCP lease of {}", l.mac))
    };
    if let Some(u) = used_by {
        bail!("address {ip} is already in use on bridge {} ({u})", br.name);
    }
    Ok(())
}

/// Refuse an address held in vswitchd's allocator (by vswitch-docker: a container's
/// address, an `--aux-address`).
fn check_held(d: &mut Daemon, bridge: &str, ip: Ipv4Addr) -> Result<()> {
    let held: Vec<AllocEntry> = d.client.call(Req::ListAllocations {
        bridge: bridge.to_string(),
    })?;
    let ip_s = ip.to_string();
    if let Some(a) = held.iter().find(|a| a.ip == ip_s) {
        bail!(
            "address {ip} is already in use on bridge {bridge} (held by {})",
            a.owner
        );
    }
    Ok(())
}

/// Whether to register `name` on `br`: `Some(name)` to register, `None` when this
/// guest already holds it there (through another interface); an error when someone
/// else does. Names that only come from DHCP leases give way.
fn check_name(
    br: &BridgeInfo,
    hosts: &[HostEntry],
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let Some(h) = hosts.iter().find(|h| h.name == name && h.source != "dhcp") else {
        return Ok(Some(name.to_string()));
    };
    let ours = br
        .ports
        .iter()
        .any(|p| id(p, "guest") == Some(key) && id(p, "dns") == Some(name));
    if ours {
        return Ok(None);
    }
    bail!(
        "DNS name {name} is already registered on bridge {} (for {}): use --name",
        br.name,
        h.ip
    )
}

/// What has been changed so far, to undo on failure.
#[derive(Default)]
struct Undo {
    veth: Option<u32>,
    port: Option<(String, String)>,
    reserved: Option<(String, String)>,
    host: Option<(String, String)>,
}

impl Undo {
    fn run(self, d: &mut Daemon, hrt: &mut Rtnl) -> Vec<String> {
        let mut errs = Vec::new();
        if let Some((bridge, name)) = self.host {
            if let Err(e) = d.client.call_value(Req::DelHost {
                bridge,
                name,
                if_exists: true,
            }) {
                errs.push(format!("del-host: {e}"));
            }
        }
        if let Some((bridge, mac)) = self.reserved {
            if let Err(e) = d.client.call_value(Req::DhcpUnreserve {
                bridge,
                mac,
                if_exists: true,
            }) {
                errs.push(format!("dhcp-unreserve: {e}"));
            }
        }
        let mut veth_gone = false;
        if let Some((bridge, port)) = self.port {
            match d.client.call_value(Req::DelPort {
                bridge,
                port,
                if_exists: false,
            }) {
                Ok(_) => veth_gone = true,
                Err(e) => errs.push(format!("del-port: {e}")),
            }
        }
        if let (Some(index), false) = (self.veth, veth_gone) {
            if let Err(e) = hrt.del_link(index) {
                let gone = e
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                    == Some(libc::ENODEV);
                if !gone {
                    errs.push(format!("{e:#}"));
                }
            }
        }
        errs
    }
}

pub(crate) fn plumb(d: &mut Daemon, p: &Plumb) -> Result<Plumbed> {
    // ---- Validate: nothing changes until every check has passed.
    let bridges: Vec<BridgeInfo> = d.client.call(Req::ListBr)?;
    let br = bridges
        .iter()
        .find(|b| b.name == p.bridge)
        .cloned()
        .ok_or_else(|| anyhow!("no such bridge: {}", p.bridge))?;
    let g = guest::find(&p.guest, p.name.as_deref())?;
    if p.name.is_some() && g.dns_name.is_none() {
        bail!(
            "bad --name {:?}: not a DNS name",
            p.name.as_deref().unwrap_or_default()
        );
    }
    for b in &bridges {
        if let Some(port) = b.ports.iter().find(|x| is_port_of(x, &g.key, &p.ifname)) {
            bail!(
                "already plumbed: {} {} is port {} on bridge {} (pipework --remove {} -i {} {} first)",
                g.key,
                p.ifname,
                port.name,
                b.name,
                b.name,
                p.ifname,
                p.guest
            );
        }
    }
    let hosts: Vec<HostEntry> = d.client.call(Req::ListHosts {
        bridge: br.name.clone(),
    })?;
    let leases: Vec<LeaseEntry> = if br.dhcp.is_some() {
        d.client.call(Req::DhcpLeases {
            bridge: br.name.clone(),
        })?
    } else {
        Vec::new()
    };
    match &p.addr {
        Addr::Static { ip, .. } => {
            check_static(&br, &hosts, &leases, *ip)?;
            check_held(d, &br.name, *ip)?;
        }
        Addr::Static6 { ip, .. } => {
            let want = ip.to_string();
            if let Some(x) = br
                .ports
                .iter()
                .find(|x| id(x, "ip").and_then(|c| c.split('/').next()) == Some(want.as_str()))
            {
                bail!(
                    "address {want} is already in use on bridge {} (port {})",
                    br.name,
                    x.name
                );
            }
        }
        Addr::Dhcp => {
            if br.dhcp.is_none() || br.gateway.is_none() {
                bail!(
                    "bridge {} has no DHCP server (vswitchctl add-br {} --subnet CIDR --gateway IP --dhcp)",
                    br.name,
                    br.name
                );
            }
            if p.vlan.is_some() {
                bail!(
                    "bridge {}'s DHCP server answers untagged ports only: drop @VLAN or give a static address",
                    br.name
                );
            }
        }
    }
    if let Some(mac) = p.mac {
        let m = mac_string(&mac);
        if let Some(x) = br.ports.iter().find(|x| id(x, "mac") == Some(&m)) {
            bail!(
                "MAC {m} is already used on bridge {} by port {}",
                br.name,
                x.name
            );
        }
    }
    let mut grt = Rtnl::open_in(&g.ns)?;
    if grt.link(&p.ifname)?.is_some() {
        bail!("interface {} already exists in {}", p.ifname, g.key);
    }
    let mut hrt = Rtnl::open_in(&d.ns)?;
    let host = host_name(
        &mut hrt,
        &bridges,
        p.host_ifname.as_deref(),
        &g.key,
        &p.ifname,
    )?;
    let register = match (&g.dns_name, &p.addr) {
        (_, Addr::Static6 { .. }) | (None, _) => None,
        (Some(n), _) => check_name(&br, &hosts, n, &g.key)?,
    };

    // ---- Change, undoing everything on failure.
    let mut undo = Undo::default();
    let result = build(
        d, &mut hrt, &mut grt, &g, p, &br, &host, register, &mut undo,
    );
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let errs = undo.run(d, &mut hrt);
            if errs.is_empty() {
                Err(e)
            } else {
                Err(e.context(format!("rollback also failed: {}", errs.join("; "))))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    d: &mut Daemon,
    hrt: &mut Rtnl,
    grt: &mut Rtnl,
    g: &Guest,
    p: &Plumb,
    br: &BridgeInfo,
    host: &str,
    register: Option<String>,
    undo: &mut Undo,
) -> Result<Plumbed> {
    hrt.add_veth(host, &p.ifname, &g.ns, br.mtu, p.mac)?;
    let h = hrt
        .link(host)?
        .ok_or_else(|| anyhow!("veth end {host} vanished"))?;
    undo.veth = Some(h.index);
    hrt.set_up(h.index)?;
    let gl = grt
        .link(&p.ifname)?
        .ok_or_else(|| anyhow!("{} did not appear in {}", p.ifname, g.key))?;
    let mac = gl
        .mac
        .ok_or_else(|| anyhow!("{} has no MAC address", p.ifname))?;
    if let Some(lo) = grt.link("lo")? {
        grt.set_up(lo.index)?;
    }
    // Address first, link up after: `pipework --wait` (up + address) then means the
    // guest is ready.
    match &p.addr {
        Addr::Static { ip, prefix, .. } => grt.add_addr(gl.index, *ip, *prefix)?,
        Addr::Static6 { ip, prefix, .. } => grt.add_addr6(gl.index, *ip, *prefix)?,
        Addr::Dhcp => {}
    }

    let mut ids = BTreeMap::new();
    ids.insert("pipework".to_string(), "1".to_string());
    ids.insert("guest".to_string(), g.key.clone());
    ids.insert("ifname".to_string(), p.ifname.clone());
    ids.insert("mac".to_string(), mac_string(&mac));
    match &p.addr {
        Addr::Static {
            ip,
            prefix,
            gateway,
        } => {
            ids.insert("ip".to_string(), format!("{ip}/{prefix}"));
            if let Some(gw) = gateway {
                ids.insert("gateway".to_string(), gw.to_string());
            }
        }
        Addr::Dhcp => {
            ids.insert("dhcp".to_string(), "1".to_string());
        }
        Addr::Static6 {
            ip,
            prefix,
            gateway,
        } => {
            ids.insert("ip".to_string(), format!("{ip}/{prefix}"));
            if let Some(gw) = gateway {
                ids.insert("gateway".to_string(), gw.to_string());
            }
        }
    }
    if let Some(n) = &register {
        ids.insert("dns".to_string(), n.clone());
    }
    if let Kind::Docker { id } = &g.kind {
        ids.insert("container_id".to_string(), id.clone());
    }
    if p.lock {
        ids.insert("lock".to_string(), "1".to_string());
    }
    let (lock_mac, lock_ip) = match (&p.addr, p.lock) {
        (_, false) => (None, Vec::new()),
        (Addr::Static { ip, .. }, true) => (Some(mac_string(&mac)), vec![ip.to_string()]),
        // The leased address is not known yet: lock the MAC only.
        (Addr::Dhcp, true) => (Some(mac_string(&mac)), Vec::new()),
        // The IPv6 address (with the MAC's EUI-64 link-local address, which the
        // lock allows too); IPv4 then only from 0.0.0.0 (DHCP), as vswitchd's
        // IPv6-only locks do.
        (Addr::Static6 { ip, .. }, true) => (Some(mac_string(&mac)), vec![ip.to_string()]),
    };
    d.client
        .call_value(Req::AddPort(AddPort {
            bridge: br.name.clone(),
            port: host.to_string(),
            kind: PortKind::System,
            tag: p.vlan,
            owned: true,
            external_ids: ids,
            lock_mac,
            lock_ip,
            ..Default::default()
        }))
        .with_context(|| format!("add-port {} {host}", br.name))?;
    undo.port = Some((br.name.clone(), host.to_string()));
    grt.set_up(gl.index)?;

    if let Addr::Static6 {
        ip,
        prefix,
        gateway,
    } = &p.addr
    {
        if let Some(gw) = gateway {
            grt.replace_default_route(IpAddr::V6(*gw))?;
        }
        // vswitchd's DNS answers A records only: no name for an IPv6 interface.
        return Ok(Plumbed {
            guest: g.key.clone(),
            ifname: p.ifname.clone(),
            bridge: br.name.clone(),
            port: host.to_string(),
            mac: mac_string(&mac),
            ip: format!("{ip}/{prefix}"),
            gateway: gateway.map(|g| g.to_string()),
            ip6: None,
            gateway6: None,
            vlan: p.vlan,
            dhcp: false,
            dns_name: None,
            resolv_conf: None,
        });
    }

    let (ip, prefix, gateway) = match &p.addr {
        Addr::Static {
            ip,
            prefix,
            gateway,
        } => {
            if let Some(gw) = gateway {
                grt.replace_default_route(IpAddr::V4(*gw))?;
            }
            (*ip, *prefix, *gateway)
        }
        Addr::Dhcp => {
            let lease = dhcp::obtain(&g.ns, &p.ifname, mac, g.dns_name.as_deref(), p.timeout)?;
            grt.add_addr(gl.index, lease.ip, lease.prefix)?;
            if let Some(r) = lease.router {
                grt.replace_default_route(IpAddr::V4(r))?;
            }
            // Pin the address to this MAC for as long as the port exists: pipework
            // does not stay behind to renew the lease.
            d.client
                .call_value(Req::DhcpReserve {
                    bridge: br.name.clone(),
                    mac: mac_string(&mac),
                    ip: lease.ip.to_string(),
                    name: register.clone(),
                    may_exist: false,
                })
                .context("dhcp-reserve the leased address")?;
            undo.reserved = Some((br.name.clone(), mac_string(&mac)));
            (lease.ip, lease.prefix, lease.router)
        }
        Addr::Static6 { .. } => bail!("internal error: IPv6 is plumbed above"),
    };
    // A bridge that serves DHCPv6 too: an IPv6 address the same way (dhcp asks for
    // both families), pinned to the MAC as well, with the IPv6 default route.
    let mut v6 = None;
    if let (Addr::Dhcp, Some(_), Some(gw6), Some(net6)) =
        (&p.addr, &br.dhcp6, &br.gateway6, &br.subnet6)
    {
        let gw6: std::net::Ipv6Addr = gw6
            .parse()
            .with_context(|| format!("bridge {}'s IPv6 gateway {gw6}", br.name))?;
        let net6: ipnet::Ipv6Net = net6
            .parse()
            .with_context(|| format!("bridge {}'s IPv6 subnet {net6}", br.name))?;
        let lease = dhcp6::obtain(&g.ns, &p.ifname, mac, g.dns_name.as_deref(), p.timeout)?;
        grt.add_addr6(gl.index, lease.ip, net6.prefix_len())?;
        grt.replace_default_route(IpAddr::V6(gw6))?;
        d.client
            .call_value(Req::DhcpReserve {
                bridge: br.name.clone(),
                mac: mac_string(&mac),
                ip: lease.ip.to_string(),
                name: register.clone(),
                may_exist: false,
            })
            .context("dhcp-reserve the leased IPv6 address")?;
        v6 = Some((
            format!("{}/{}", lease.ip, net6.prefix_len()),
            gw6.to_string(),
        ));
    }
    // Best effort: the switch learns the binding from the guest's first packet anyway.
    if let Err(e) = arp::announce(&g.ns, gl.index, mac, ip) {
        eprintln!("warning: gratuitous ARP for {ip} not sent: {e:#}");
    }
    if let (Some(name), Addr::Static { .. }) = (&register, &p.addr) {
        d.client
            .call_value(Req::AddHost(AddHost {
                bridge: br.name.clone(),
                name: name.clone(),
                ip: ip.to_string(),
                source: Some("pipework".into()),
                // The name leaves with the port, whoever deletes it.
                port: Some(host.to_string()),
                may_exist: false,
            }))
            .with_context(|| format!("add-host {} {name} {ip}", br.name))?;
        undo.host = Some((br.name.clone(), name.clone()));
    }
    // A named namespace's resolver points at the gateway: its DNS answers the
    // bridge's names and forwards the rest. Last, so nothing after it can fail.
    let resolv_conf = match (&g.kind, gateway) {
        (Kind::Netns, Some(gw)) => {
            match resolv::write(&resolv::netns_etc(), &g.key, &br.name, &p.ifname, gw) {
                Ok(p) => p.map(|p| p.display().to_string()),
                Err(e) => {
                    eprintln!("warning: resolver of {} not pointed at {gw}: {e:#}", g.key);
                    None
                }
            }
        }
        _ => None,
    };
    Ok(Plumbed {
        guest: g.key.clone(),
        ifname: p.ifname.clone(),
        bridge: br.name.clone(),
        port: host.to_string(),
        mac: mac_string(&mac),
        ip: format!("{ip}/{prefix}"),
        gateway: gateway.map(|g| g.to_string()),
        ip6: v6.as_ref().map(|v| v.0.clone()),
        gateway6: v6.map(|v| v.1),
        vlan: p.vlan,
        dhcp: p.addr == Addr::Dhcp,
        dns_name: register.or_else(|| g.dns_name.clone()),
        resolv_conf,
    })
}

pub(crate) fn remove(
    d: &mut Daemon,
    bridge: &str,
    ifname: &str,
    guest_arg: &str,
) -> Result<Removed> {
    let bridges: Vec<BridgeInfo> = d.client.call(Req::ListBr)?;
    let br = bridges
        .iter()
        .find(|b| b.name == bridge)
        .ok_or_else(|| anyhow!("no such bridge: {bridge}"))?;
    // The guest may be gone (a stopped container): then match what was recorded.
    let g = guest::find(guest_arg, None).ok();
    let key = g.as_ref().map_or(guest_arg, |g| g.key.as_str());
    let port = br
        .ports
        .iter()
        .find(|p| {
            id(p, "pipework") == Some("1")
                && id(p, "ifname") == Some(ifname)
                && (id(p, "guest") == Some(key)
                    || id(p, "guest") == Some(guest_arg)
                    || (guest_arg.len() >= 4
                        && id(p, "container_id").is_some_and(|c| c.starts_with(guest_arg))))
        })
        .cloned()
        .ok_or_else(|| anyhow!("{key} {ifname} is not plumbed into bridge {bridge}"))?;
    let guest_key = id(&port, "guest").unwrap_or(key).to_string();
    let mut errs: Vec<String> = Vec::new();
    let mut lease_released = None;
    if id(&port, "dhcp") == Some("1") {
        lease_released = Some(release_lease(d, br, &port, g.as_ref(), ifname, &mut errs));
    }
    let dns_name = id(&port, "dns").map(str::to_string);
    // A dhcp port's name went with its reservation and lease.
    if let (Some(name), None) = (&dns_name, lease_released) {
        if let Err(e) = d.client.call_value(Req::DelHost {
            bridge: bridge.to_string(),
            name: name.clone(),
            // vswitchd removes names registered for the port with it.
            if_exists: true,
        }) {
            errs.push(format!("del-host {bridge} {name}: {e}"));
        }
    }
    if let Err(e) = d.client.call_value(Req::DelPort {
        bridge: bridge.to_string(),
        port: port.name.clone(),
        if_exists: false,
    }) {
        errs.push(format!("del-port {bridge} {}: {e}", port.name));
    }
    let resolv_conf_removed = match resolv::remove(&resolv::netns_etc(), &guest_key, bridge, ifname)
    {
        Ok(r) => r,
        Err(e) => {
            errs.push(format!("{e:#}"));
            false
        }
    };
    if !errs.is_empty() {
        bail!(
            "removing {guest_key} {ifname} from {bridge}: {}",
            errs.join("; ")
        );
    }
    Ok(Removed {
        guest: guest_key,
        ifname: ifname.to_string(),
        bridge: bridge.to_string(),
        port: port.name,
        dns_name,
        lease_released,
        resolv_conf_removed,
    })
}

/// Send DHCPRELEASE from the guest (if it is still there), wait (bounded) for the
/// lease to go, and drop the reservation. Whether the lease is gone.
fn release_lease(
    d: &mut Daemon,
    br: &BridgeInfo,
    port: &PortInfo,
    g: Option<&Guest>,
    ifname: &str,
    errs: &mut Vec<String>,
) -> bool {
    let bridge = br.name.clone();
    let Some(mac) = id(port, "mac").and_then(parse_mac) else {
        errs.push(format!(
            "port {} has no usable mac in external_ids",
            port.name
        ));
        return false;
    };
    let mac_s = mac_string(&mac);
    let leases = |d: &mut Daemon| -> Result<Option<LeaseEntry>> {
        let v: Vec<LeaseEntry> = d.client.call(Req::DhcpLeases {
            bridge: bridge.clone(),
        })?;
        Ok(v.into_iter().find(|l| l.mac == mac_s && l.duid.is_none()))
    };
    let server = br
        .gateway
        .as_deref()
        .and_then(|s| s.parse::<Ipv4Addr>().ok());
    let mut gone = match leases(d) {
        Ok(l) => l.is_none(),
        Err(e) => {
            errs.push(format!("dhcp-leases {bridge}: {e:#}"));
            false
        }
    };
    if !gone {
        if let (Some(g), Some(server), Ok(Some(l))) = (g, server, leases(d)) {
            if let Ok(ip) = l.ip.parse::<Ipv4Addr>() {
                for _ in 0..3 {
                    if let Err(e) = dhcp::release(&g.ns, ifname, mac, ip, server) {
                        eprintln!("warning: DHCPRELEASE not sent: {e:#}");
                        break;
                    }
                    let deadline = std::time::Instant::now() + Duration::from_secs(1);
                    while std::time::Instant::now() < deadline {
                        if matches!(leases(d), Ok(None)) {
                            gone = true;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    if gone {
                        break;
                    }
                }
            }
        }
    }
    match d.client.call_value(Req::DhcpUnreserve {
        bridge: bridge.clone(),
        mac: mac_s.clone(),
        if_exists: false,
    }) {
        Ok(_) => {}
        Err(e) if e.to_string().contains("no reservation") => {}
        Err(e) => errs.push(format!("dhcp-unreserve {bridge} {mac_s}: {e}")),
    }
    if !gone {
        eprintln!(
            "warning: the DHCP lease of {mac_s} on {bridge} could not be released (guest gone?); it expires by itself"
        );
    }
    gone
}

/// `pipework --wait`: until IFNAME exists, is up with a carrier, and has an IPv4
/// address — in the namespace pipework runs in.
fn wait(ifname: &str, timeout: Duration) -> Result<()> {
    let mut rt = Rtnl::open()?;
    let mut seen = false;
    let ok = rt.wait_link(ifname, timeout, |rt, l| {
        seen = true;
        Ok(l.up && l.lower_up && !rt.addrs(l.index)?.is_empty())
    })?;
    if ok {
        return Ok(());
    }
    if seen {
        bail!(
            "interface {ifname} is not up with an address after {} s",
            timeout.as_secs()
        )
    }
    bail!(
        "interface {ifname} did not appear within {} s",
        timeout.as_secs()
    )
}

/// `pipework route|rule GUEST ARGS...`: the host's `ip` run inside the guest's
/// namespace (the child inherits the namespace of the thread that spawns it).
fn ip_in_guest(what: &str, guest_arg: &str, args: &[String]) -> Result<()> {
    let g = guest::find(guest_arg, None)?;
    let out = g.ns.run(|| {
        std::process::Command::new("ip")
            .arg(what)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .context("run ip (iproute2)")
    })?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().replace('\n', " ");
        bail!("ip {what} {} in {}: {err}", args.join(" "), g.key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> BridgeInfo {
        serde_json::from_value(serde_json::json!({
            "name": "br0", "subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "dhcp": null,
            "isolated": false, "mtu": 1500,
            "ports": [{"name": "vp1", "bridge": "br0", "type": "system", "tag": null,
                       "trunks": [], "state": "up", "ifindex": 3, "worker": 0,
                       "external_ids": {"pipework": "1", "guest": "web", "ifname": "eth1",
                                        "ip": "10.0.0.5/24", "dns": "web"}}]
        }))
        .unwrap()
    }

    #[test]
    fn static_address_checks() {
        let b = bridge();
        let hosts = vec![HostEntry {
            name: "db".into(),
            ip: "10.0.0.7".into(),
            source: "user".into(),
            port: None,
        }];
        let lease = LeaseEntry {
            mac: "02:00:00:00:00:01".into(),
            ip: "10.0.0.8".into(),
            hostname: None,
            expires: 1,
            remaining: 10,
            reserved: false,
            duid: None,
            iaid: None,
        };
        let chk = |ip: [u8; 4]| {
            check_static(&b, &hosts, std::slice::from_ref(&lease), Ipv4Addr::from(ip))
                .map_err(|e| e.to_string())
        };
        assert!(chk([10, 0, 0, 9]).is_ok());
        assert!(chk([10, 1, 0, 9]).unwrap_err().contains("outside subnet"));
        assert!(chk([10, 0, 0, 255]).unwrap_err().contains("broadcast"));
        assert!(chk([10, 0, 0, 1]).unwrap_err().contains("gateway"));
        assert!(chk([10, 0, 0, 5])
            .unwrap_err()
            .contains("port vp1, guest web"));
        assert!(chk([10, 0, 0, 7]).unwrap_err().contains("DNS name db"));
        assert!(chk([10, 0, 0, 8]).unwrap_err().contains("DHCP lease"));
    }

    #[test]
    fn dns_name_ownership() {
        let b = bridge();
        let hosts = vec![HostEntry {
            name: "web".into(),
            ip: "10.0.0.5".into(),
            source: "pipework".into(),
            port: None,
        }];
        assert_eq!(check_name(&b, &hosts, "web", "web").unwrap(), None);
        assert!(check_name(&b, &hosts, "web", "other").is_err());
        assert_eq!(
            check_name(&b, &hosts, "new", "other").unwrap().as_deref(),
            Some("new")
        );
    }

    #[test]
    fn derived_host_names_fit() {
        for k in ["a", "a-very-long-container-name-indeed", "pid:1234567"] {
            let n = format!("vp{:08x}", fnv32(k));
            assert!(n.len() <= 15);
        }
    }
}
