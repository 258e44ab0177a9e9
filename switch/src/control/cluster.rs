//! vswitchd's side of the cluster: the link to the local `vswitch-agent`, the requests
//! that go through it, and the overlay bridges it programs.
//!
//! vswitchd never talks to etcd. The agent connects twice: a `monitor` stream (it
//! learns of local ports, leases and names) and a `cluster-agent` connection that,
//! after its `ok`, carries calls from vswitchd to the agent ([`AgentCall`], one reply
//! line each). A user's `add-br --overlay`, `del-br` of an overlay bridge,
//! `cluster-show`, and a static address on an overlay bridge's port go to the agent
//! that way ([`intercept`], outside the control mutex, since the agent calls back);
//! with no agent connected they fail with one line saying so.
//!
//! The agent programs an overlay bridge with `overlay-set` (idempotent: the bridge,
//! its tunnel port `ovxVNI` towards the remote VTEPs, the remote endpoints). Remote
//! endpoints are not persisted: they live in [`REMOTES`] and reach the workers through
//! the snapshot ([`overlay_rt`]): static Fdb entries, ARP and Neighbor Solicitation
//! answers, and DNS names (A and AAAA).

use super::events::{self, EventKind};
use super::handlers::HandlerError;
use super::State;
use crate::config::model::DhcpRange6;
use crate::config::{BridgeConf, DhcpRange, OverlayConf};
use crate::dp::snapshot::{NameMap, Names6, OverlayRt};
use crate::tables::PortId;
use crate::wire::MacAddr;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use vswitch_proto::cluster::{AgentCall, AgentCallKind, OverlaySet};
use vswitch_proto::{AddPort, Command, PortKind, Reply, MAX_LINE};

/// How long a call waits for the agent's answer (the agent bounds its etcd calls well
/// below this).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The error of a cluster request while no agent is connected.
pub const NO_AGENT: &str = "no vswitch-agent is connected to this vswitchd: overlay bridges \
     and cluster-show need one (start `vswitch-agent --etcd URL` beside vswitchd)";

struct Pending {
    call: AgentCallKind,
    reply: Sender<Reply>,
}

struct Link {
    id: u64,
    node: String,
    calls: Sender<Pending>,
    /// The agent's connection, to tell whether it is still there.
    conn: UnixStream,
}

static AGENT: LazyLock<Mutex<Option<Link>>> = LazyLock::new(|| Mutex::new(None));
static NEXT_LINK: LazyLock<Mutex<u64>> = LazyLock::new(|| Mutex::new(0));

/// A remote endpoint as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    name: Option<String>,
    vtep: Ipv4Addr,
}

/// Remote endpoints of each overlay bridge, as the agent last set them.
static REMOTES: LazyLock<Mutex<HashMap<String, Vec<Remote>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The name of an overlay bridge's tunnel port.
pub fn tunnel_port(vni: u32) -> String {
    format!("ovx{vni}")
}

fn cluster_err(msg: impl Into<String>) -> HandlerError {
    HandlerError::Cluster(msg.into())
}

/// Whether the peer of `s` closed its end.
fn peer_closed(s: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut b = [0u8; 1];
    matches!(
        recv(
            s.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(0) | Err(nix::errno::Errno::ECONNRESET)
    )
}

fn write_line(w: &mut UnixStream, v: &impl serde::Serialize) -> io::Result<()> {
    let mut s = serde_json::to_string(v).map_err(io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes())
}

/// Requests that take over their connection (`monitor`, `cluster-agent`): serve it to
/// the end and return `Some`. Anything else: `None`, handled as usual.
pub fn takeover(
    line: &str,
    w: &mut UnixStream,
    r: &mut BufReader<UnixStream>,
) -> Option<io::Result<()>> {
    // Cheap test first: most requests are not these.
    if !line.contains("\"monitor\"") && !line.contains("\"cluster-agent\"") {
        return None;
    }
    let req = vswitch_proto::decode_request(line).ok()?;
    match req.command {
        Command::Monitor => {
            Some(write_line(w, &Reply::ok(Value::Null)).and_then(|()| events::stream(w)))
        }
        Command::ClusterAgent { node } => Some(agent_link(node, w, r)),
        _ => None,
    }
}

/// Serve the agent's `cluster-agent` connection: register it, then pass calls to it
/// one at a time until it goes away.
fn agent_link(node: String, w: &mut UnixStream, r: &mut BufReader<UnixStream>) -> io::Result<()> {
    let (tx, rx): (Sender<Pending>, Receiver<Pending>) = bounded(16);
    let id = {
        let mut n = NEXT_LINK.lock();
        *n += 1;
        *n
    };
    {
        let mut a = AGENT.lock();
        if let Some(l) = a.as_ref() {
            if !peer_closed(&l.conn) {
                let msg = format!(
                    "another vswitch-agent (node {}) is already connected to this vswitchd",
                    l.node
                );
                drop(a);
                return write_line(w, &Reply::err(msg));
            }
        }
        *a = Some(Link {
            id,
            node: node.clone(),
            calls: tx,
            conn: w.try_clone()?,
        });
    }
    tracing::info!(node = %node, "vswitch-agent connected");
    let res = serve_calls(&rx, w, r);
    {
        let mut a = AGENT.lock();
        if a.as_ref().is_some_and(|l| l.id == id) {
            *a = None;
        }
    }
    // Calls still queued get an answer.
    while let Ok(p) = rx.try_recv() {
        let _ = p.reply.send(Reply::err(NO_AGENT));
    }
    tracing::info!(node = %node, "vswitch-agent disconnected");
    res
}

fn serve_calls(
    rx: &Receiver<Pending>,
    w: &mut UnixStream,
    r: &mut BufReader<UnixStream>,
) -> io::Result<()> {
    write_line(w, &Reply::ok(Value::Null))?;
    r.get_ref().set_read_timeout(Some(CALL_TIMEOUT))?;
    let mut next_id = 0u64;
    loop {
        let p = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(p) => p,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if peer_closed(w) {
                    return Ok(());
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        next_id += 1;
        let call = AgentCall {
            id: next_id,
            call: p.call,
        };
        if let Err(e) = write_line(w, &call) {
            let _ = p.reply.send(Reply::err(NO_AGENT));
            return Err(e);
        }
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line);
        let reply = match n {
            Ok(0) => {
                let _ = p.reply.send(Reply::err(NO_AGENT));
                return Ok(());
            }
            Ok(_) => serde_json::from_slice::<Reply>(&line)
                .unwrap_or_else(|e| Reply::err(format!("vswitch-agent sent a bad reply: {e}"))),
            Err(e) => {
                let _ = p.reply.send(Reply::err(format!(
                    "vswitch-agent did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )));
                return Err(e);
            }
        };
        let _ = p.reply.send(reply);
    }
}

/// Pass `call` to the agent and wait for its reply.
pub fn call_agent(call: AgentCallKind) -> Reply {
    let Some(tx) = AGENT.lock().as_ref().map(|l| l.calls.clone()) else {
        return Reply::err(NO_AGENT);
    };
    let (rtx, rrx) = bounded(1);
    if tx
        .send_timeout(Pending { call, reply: rtx }, CALL_TIMEOUT)
        .is_err()
    {
        return Reply::err(NO_AGENT);
    }
    rrx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1))
        .unwrap_or_else(|_| Reply::err("vswitch-agent did not answer"))
}

/// The static addresses recorded on a port: `ip` (pipework's `A.B.C.D/N`, or an IPv6
/// `ADDR/N`) and `ip6` (the IPv6 address of a dual-stack port).
fn port_ips(p: &AddPort) -> Vec<IpAddr> {
    ["ip", "ip6"]
        .iter()
        .filter_map(|k| p.external_ids.get(*k))
        .filter_map(|ip| ip.split('/').next()?.parse().ok())
        .collect()
}

/// Requests that need the agent: answered here (outside the control mutex) and
/// returned as `Some`. `None`: handle as usual.
pub fn intercept(cmd: &Command, state: &Mutex<State>) -> Option<Reply> {
    match cmd {
        Command::AddBr(req) if req.overlay => {
            Some(call_agent(AgentCallKind::AddOverlay(req.clone())))
        }
        Command::ClusterShow => Some(call_agent(AgentCallKind::Show)),
        Command::DelBr { name, .. } => {
            let overlay = state
                .lock()
                .model()
                .bridge(name)
                .is_ok_and(|b| b.overlay.is_some());
            overlay.then(|| call_agent(AgentCallKind::DelOverlay { name: name.clone() }))
        }
        Command::AddPort(req) => {
            let overlay = state
                .lock()
                .model()
                .bridge(&req.bridge)
                .is_ok_and(|b| b.overlay.is_some());
            if !overlay {
                return None;
            }
            // Each address claimed (both of a dual-stack port); the first refusal is
            // the answer. Claimed: add the port as usual.
            port_ips(req).into_iter().find_map(|ip| {
                let r = call_agent(AgentCallKind::ClaimIp {
                    bridge: req.bridge.clone(),
                    ip: ip.to_string(),
                    mac: req.external_ids.get("mac").cloned(),
                    port: req.port.clone(),
                });
                (!r.ok).then_some(r)
            })
        }
        _ => None,
    }
}

/// Commands of the cluster that run under the control mutex (from `State::handle`).
pub fn handle(state: &mut State, cmd: Command) -> Result<Value, HandlerError> {
    match cmd {
        Command::OverlaySet(s) => overlay_set(state, s),
        Command::OverlayRemove { name } => overlay_remove(state, &name),
        other => Err(cluster_err(format!(
            "{} must be the first request on a connection of its own",
            other.verb()
        ))),
    }
}

fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr, HandlerError> {
    s.trim()
        .parse()
        .map_err(|_| cluster_err(format!("bad {what} {s:?}")))
}

fn parse_range(s: &str, b: &BridgeConf) -> Result<DhcpRange, HandlerError> {
    let (first, last) = span(s, b.subnet.filter(|_| b.gateway.is_some()), |n, a| {
        n.contains(a)
    })
    .ok_or_else(|| cluster_err(format!("bad DHCP range {s:?} for bridge {}", b.name)))?;
    Ok(DhcpRange { first, last })
}

fn parse_range6(s: &str, b: &BridgeConf) -> Result<DhcpRange6, HandlerError> {
    let (first, last) = span(s, b.subnet6.filter(|_| b.gateway6.is_some()), |n, a| {
        n.contains(a)
    })
    .ok_or_else(|| cluster_err(format!("bad DHCPv6 range {s:?} for bridge {}", b.name)))?;
    Ok(DhcpRange6 { first, last })
}

/// `FIRST-LAST` of either family with both addresses `inside` the subnet `net` (none:
/// the bridge has no subnet or no gateway of that family) and FIRST <= LAST.
fn span<N, A>(s: &str, net: Option<N>, inside: impl Fn(&N, &A) -> bool) -> Option<(A, A)>
where
    A: std::str::FromStr + PartialOrd,
{
    let (a, z) = s.split_once('-')?;
    let first: A = a.trim().parse().ok()?;
    let last: A = z.trim().parse().ok()?;
    let net = net?;
    (inside(&net, &first) && inside(&net, &last) && first <= last).then_some((first, last))
}

/// `overlay-set`: make the overlay bridge on this host what the cluster says.
fn overlay_set(state: &mut State, s: OverlaySet) -> Result<Value, HandlerError> {
    let oc = OverlayConf {
        vni: s.vni,
        udp_port: s.udp_port,
    };
    let local = parse_ip(&s.local_ip, "VTEP address")?;
    let mut remotes = Vec::new();
    for r in &s.remotes {
        let ip = parse_ip(r, "remote VTEP")?;
        if ip != local && !remotes.contains(&ip) {
            remotes.push(ip);
        }
    }
    remotes.sort();
    let mut installed = Vec::new();
    for e in &s.endpoints {
        let mac: MacAddr = e
            .mac
            .parse()
            .map_err(|_| cluster_err(format!("bad endpoint MAC {:?}", e.mac)))?;
        let ip = e.ip.as_deref().map(|i| parse_ip(i, "endpoint address"));
        let ip6 = e.ip6.as_deref().map(|i| {
            i.trim()
                .parse::<Ipv6Addr>()
                .map_err(|_| cluster_err(format!("bad endpoint IPv6 address {i:?}")))
        });
        installed.push(Remote {
            mac,
            ip: ip.transpose()?,
            ip6: ip6.transpose()?,
            name: e.name.as_ref().map(|n| n.to_ascii_lowercase()),
            vtep: parse_ip(&e.vtep, "endpoint VTEP")?,
        });
    }
    let mut created = false;
    match state.model().bridge(&s.name).ok().cloned() {
        Some(b) if b.overlay.is_none() => {
            return Err(cluster_err(format!(
                "bridge {} exists on this host and is not an overlay bridge: the overlay \
                 network {} (VNI {}) is not created here",
                s.name, s.name, s.vni
            )))
        }
        Some(b) => {
            let same_net = b.subnet.map(|x| x.to_string()) == s.subnet
                && b.gateway.map(|x| x.to_string()) == s.gateway
                && b.subnet6.map(|x| x.to_string()) == s.subnet6
                && b.gateway6.map(|x| x.to_string()) == s.gateway6;
            if !same_net {
                return Err(cluster_err(format!(
                    "overlay bridge {} on this host has another subnet or gateway than the \
                     cluster's network",
                    s.name
                )));
            }
            let dhcp = s.dhcp.as_deref().map(|r| parse_range(r, &b)).transpose()?;
            let dhcp6 = s
                .dhcp6
                .as_deref()
                .map(|r| parse_range6(r, &b))
                .transpose()?;
            if b.dhcp != dhcp
                || b.dhcp6 != dhcp6
                || b.isolated != s.isolated
                || b.mtu != s.mtu
                || b.overlay != Some(oc)
            {
                state.apply(|m| {
                    if let Some(x) = m.bridges.iter_mut().find(|x| x.name == s.name) {
                        x.dhcp = dhcp;
                        x.dhcp6 = dhcp6;
                        x.isolated = s.isolated;
                        x.mtu = s.mtu;
                        x.overlay = Some(oc);
                    }
                    Ok(())
                })?;
            }
        }
        None => {
            let req = vswitch_proto::AddBr {
                name: s.name.clone(),
                subnet: s.subnet.clone(),
                gateway: s.gateway.clone(),
                subnet6: s.subnet6.clone(),
                gateway6: s.gateway6.clone(),
                dhcp: None,
                isolated: s.isolated,
                mtu: Some(s.mtu),
                ..Default::default()
            };
            let mut b = state.model().check_add_bridge(&req)?;
            b.dhcp = s.dhcp.as_deref().map(|r| parse_range(r, &b)).transpose()?;
            b.dhcp6 = s
                .dhcp6
                .as_deref()
                .map(|r| parse_range6(r, &b))
                .transpose()?;
            b.overlay = Some(oc);
            state.apply(|m| {
                m.insert_bridge(b);
                Ok(())
            })?;
            tracing::info!(bridge = %s.name, vni = s.vni, "overlay bridge added");
            created = true;
            events::emit_port(EventKind::BridgeAdded, &s.name, None);
        }
    }
    set_tunnel(state, &s.name, oc, local, &remotes)?;
    let changed = {
        let mut t = REMOTES.lock();
        let old = t.insert(s.name.clone(), installed.clone());
        old.as_ref() != Some(&installed)
    };
    if changed {
        state.republish();
    }
    // The bridge's description when it was created (the reply to `add-br --overlay`);
    // the agent's routine updates need none.
    if !created {
        return Ok(Value::Null);
    }
    let info = state.handle(Command::ListBr)?;
    Ok(info
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == s.name.as_str()))
        .cloned()
        .unwrap_or(Value::Null))
}

/// Make the bridge's tunnel port point at exactly `remotes` (none: no port).
fn set_tunnel(
    state: &mut State,
    bridge: &str,
    oc: OverlayConf,
    local: Ipv4Addr,
    remotes: &[Ipv4Addr],
) -> Result<(), HandlerError> {
    let name = tunnel_port(oc.vni);
    let current = state
        .model()
        .bridge(bridge)?
        .ports
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.vxlan.clone());
    let wanted = (!remotes.is_empty()).then(|| crate::config::VxlanConf {
        remotes: remotes.to_vec(),
        vni: oc.vni,
        local: Some(local),
        dst_port: oc.udp_port,
    });
    let same = match (&current, &wanted) {
        (Some(c), Some(w)) => {
            let mut cr = c.remotes.clone();
            cr.sort();
            cr == w.remotes && c.vni == w.vni && c.local == w.local && c.dst_port == w.dst_port
        }
        (None, None) => true,
        _ => false,
    };
    if same {
        return Ok(());
    }
    // A port's remotes are fixed when it is opened: replace the port (frames in flight
    // on the old socket during the swap are lost, as on a link flap).
    if current.is_some() {
        state.handle(Command::DelPort {
            bridge: bridge.to_string(),
            port: name.clone(),
            if_exists: false,
        })?;
    }
    if let Some(w) = wanted {
        state.handle(Command::AddPort(AddPort {
            bridge: bridge.to_string(),
            port: name.clone(),
            kind: PortKind::Vxlan,
            remote_ip: w.remotes.iter().map(ToString::to_string).collect(),
            vni: Some(w.vni),
            local_ip: Some(local.to_string()),
            dst_port: Some(w.dst_port),
            ..Default::default()
        }))?;
        tracing::info!(bridge, remotes = ?w.remotes, "overlay tunnel set");
    }
    Ok(())
}

/// `overlay-remove`: the network is gone from the cluster.
fn overlay_remove(state: &mut State, name: &str) -> Result<Value, HandlerError> {
    REMOTES.lock().remove(name);
    match state.model().bridge(name) {
        Err(_) => return Ok(Value::Null),
        Ok(b) if b.overlay.is_none() => {
            return Err(cluster_err(format!(
                "bridge {name} on this host is not an overlay bridge: left as it is"
            )))
        }
        Ok(_) => {}
    }
    state.handle(Command::DelBr {
        name: name.to_string(),
        if_exists: false,
    })
}

/// The snapshot's view of overlay bridge `b` (`None` for other bridges): `id_of` maps
/// a live port name (`ovx42@192.0.2.3`) to its id.
pub fn overlay_rt(
    b: &BridgeConf,
    id_of: &dyn Fn(&str) -> Option<PortId>,
) -> Option<Arc<OverlayRt>> {
    let oc = b.overlay?;
    let port = tunnel_port(oc.vni);
    let mut rt = OverlayRt {
        gateway: b.gateway,
        gateway6: b.gateway6,
        dhcp: b.dhcp.is_some(),
        dhcp6: b.dhcp6.is_some() && b.gateway6.is_some(),
        ..Default::default()
    };
    if let Some(remotes) = REMOTES.lock().get(&b.name) {
        for r in remotes {
            if let Some(id) = id_of(&format!("{port}@{}", r.vtep)) {
                rt.statics.insert(r.mac, id);
            }
            if let Some(ip) = r.ip {
                rt.arp.insert(ip, r.mac);
            }
            if let Some(ip) = r.ip6 {
                rt.nd.insert(ip, r.mac);
            }
        }
    }
    Some(Arc::new(rt))
}

/// Add the names of bridge `bridge`'s remote endpoints to `names` (A) and `names6`
/// (AAAA); local names win.
pub fn add_names(bridge: &str, names: &mut NameMap, names6: &mut Names6) {
    if let Some(remotes) = REMOTES.lock().get(bridge) {
        for r in remotes {
            if let (Some(n), Some(ip)) = (&r.name, r.ip) {
                names.entry(n.clone()).or_insert((ip, 0));
            }
            if let (Some(n), Some(ip)) = (&r.name, r.ip6) {
                names6.entry(n.clone()).or_insert(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DHCP range of either family: both ends in the subnet, in order, and the
    /// subnet there; anything else is one error naming range and bridge.
    #[test]
    fn ranges_of_both_families() {
        let inside4 = |n: &ipnet::Ipv4Net, a: &Ipv4Addr| n.contains(a);
        let n4: ipnet::Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let (f, l): (Ipv4Addr, Ipv4Addr) =
            ("10.1.0.10".parse().unwrap(), "10.1.0.20".parse().unwrap());
        assert_eq!(
            span(" 10.1.0.10 - 10.1.0.20", Some(n4), inside4),
            Some((f, l))
        );
        assert_eq!(span("10.1.0.20-10.1.0.10", Some(n4), inside4), None);
        assert_eq!(span("10.1.0.10-10.2.0.20", Some(n4), inside4), None);
        assert_eq!(span("10.1.0.10-10.1.0.20", None, inside4), None);
        assert_eq!(span("10.1.0.10", Some(n4), inside4), None);
        let inside6 = |n: &ipnet::Ipv6Net, a: &Ipv6Addr| n.contains(a);
        let n6: ipnet::Ipv6Net = "fd00:10::/64".parse().unwrap();
        let (f, l): (Ipv6Addr, Ipv6Addr) = (
            "fd00:10::100".parse().unwrap(),
            "fd00:10::1ff".parse().unwrap(),
        );
        assert_eq!(
            span("fd00:10::100-fd00:10::1ff", Some(n6), inside6),
            Some((f, l))
        );
        assert_eq!(span("fd00:11::100-fd00:11::1ff", Some(n6), inside6), None);
    }

    #[test]
    fn overlay_rt_maps_remotes_to_tunnel_ports() {
        let mut b = crate::config::Model::default()
            .check_add_bridge(&vswitch_proto::AddBr {
                name: "ovt".into(),
                subnet: Some("10.9.0.0/24".into()),
                gateway: Some("10.9.0.1".into()),
                ..Default::default()
            })
            .unwrap();
        assert!(
            overlay_rt(&b, &|_| Some(1)).is_none(),
            "not an overlay bridge"
        );
        b.overlay = Some(OverlayConf {
            vni: 42,
            udp_port: 4789,
        });
        let mac: MacAddr = "02:00:00:00:00:09".parse().unwrap();
        REMOTES.lock().insert(
            "ovt".into(),
            vec![Remote {
                mac,
                ip: Some("10.9.0.9".parse().unwrap()),
                ip6: Some("fd00:9::9".parse().unwrap()),
                name: Some("web".into()),
                vtep: "192.0.2.3".parse().unwrap(),
            }],
        );
        let rt = overlay_rt(&b, &|n| (n == "ovx42@192.0.2.3").then_some(7)).unwrap();
        assert_eq!(rt.statics.get(&mac), Some(&7));
        assert_eq!(rt.arp.get(&"10.9.0.9".parse().unwrap()), Some(&mac));
        assert_eq!(rt.gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(rt.nd.get(&"fd00:9::9".parse().unwrap()), Some(&mac));
        let mut names = NameMap::new();
        let mut names6 = Names6::new();
        add_names("ovt", &mut names, &mut names6);
        assert_eq!(names.get("web"), Some(&("10.9.0.9".parse().unwrap(), 0)));
        assert_eq!(names6.get("web"), Some(&"fd00:9::9".parse().unwrap()));
        REMOTES.lock().remove("ovt");
    }

    /// ARP requests for remote endpoints and the gateway, and DHCP requests, stay on
    /// the host; other broadcasts (and unicast ARP) are flooded as usual.
    #[test]
    fn what_stays_local() {
        let remote: Ipv4Addr = "10.9.0.9".parse().unwrap();
        let rt = OverlayRt {
            arp: [(remote, MacAddr([2, 0, 0, 0, 0, 9]))].into(),
            gateway: Some("10.9.0.1".parse().unwrap()),
            dhcp: true,
            ..Default::default()
        };
        let me = MacAddr([2, 0, 0, 0, 0, 1]);
        let arp = |dst: MacAddr, tpa: &str| {
            let a = crate::wire::arp::Arp {
                op: crate::wire::arp::OP_REQUEST,
                sha: me,
                spa: "10.9.0.5".parse().unwrap(),
                tha: MacAddr::default(),
                tpa: tpa.parse().unwrap(),
            };
            a.to_frame(dst, me)
        };
        let keeps = |f: Vec<u8>| {
            let eth = crate::wire::EthFrame::parse(&f).unwrap();
            rt.keeps_local(&eth, &f)
        };
        assert!(keeps(arp(MacAddr::BROADCAST, "10.9.0.9")));
        assert!(keeps(arp(MacAddr::BROADCAST, "10.9.0.1")));
        assert!(
            !keeps(arp(MacAddr::BROADCAST, "10.9.0.77")),
            "unknown: flooded"
        );
        assert!(
            !keeps(arp(MacAddr([2, 0, 0, 0, 0, 9]), "10.9.0.9")),
            "unicast ARP"
        );
        // A DHCP DISCOVER: UDP 68 -> 67 from 0.0.0.0 to the broadcast address.
        let mut ip = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ];
        ip.extend_from_slice(&[0, 68, 0, 67, 0, 8, 0, 0]);
        let mut f = MacAddr::BROADCAST.0.to_vec();
        f.extend_from_slice(&me.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        assert!(keeps(f.clone()));
        let off = OverlayRt {
            dhcp: false,
            ..rt.clone()
        };
        let eth = crate::wire::EthFrame::parse(&f).unwrap();
        assert!(!off.keeps_local(&eth, &f), "no DHCP here: flooded");
        // IPv6: a multicast NS for a remote endpoint or the IPv6 gateway stays; one
        // for anything else is flooded.
        use crate::wire::ipv6;
        let v6 = OverlayRt {
            nd: [("fd00:9::9".parse().unwrap(), MacAddr([2, 0, 0, 0, 0, 9]))].into(),
            gateway6: Some("fd00:9::1".parse().unwrap()),
            ..rt.clone()
        };
        let ns = |target: &str| {
            let t: std::net::Ipv6Addr = target.parse().unwrap();
            let group = ipv6::solicited_node(&t);
            let src = "fd00:9::5".parse().unwrap();
            let pkt = ipv6::icmp_packet(src, group, 255, ipv6::neighbor_solicit(t, me));
            ipv6::ethernet(ipv6::multicast_mac(&group), me, &pkt)
        };
        let keeps6 = |f: Vec<u8>| {
            let eth = crate::wire::EthFrame::parse(&f).unwrap();
            v6.keeps_local(&eth, &f)
        };
        assert!(keeps6(ns("fd00:9::9")));
        assert!(keeps6(ns("fd00:9::1")));
        assert!(!keeps6(ns("fd00:9::77")), "unknown: flooded");
        // A DHCPv6 Solicit (UDP 546 -> 547 to ff02::1:2) stays where DHCPv6 is
        // served, else it is flooded.
        let solicit = {
            let src: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
            let dst: std::net::Ipv6Addr = "ff02::1:2".parse().unwrap();
            // UDP header (546 -> 547, length 12; the checksum is not looked at) and a
            // Solicit's first bytes.
            let udp = [2, 0x22, 2, 0x23, 0, 12, 0, 0, 1, 0, 0, 1];
            let pkt = ipv6::packet(src, dst, ipv6::NEXT_UDP, 1, &udp);
            ipv6::ethernet(ipv6::multicast_mac(&dst), me, &pkt)
        };
        assert!(!keeps6(solicit.clone()), "no DHCPv6 here: flooded");
        let on = OverlayRt {
            dhcp6: true,
            ..v6.clone()
        };
        let eth = crate::wire::EthFrame::parse(&solicit).unwrap();
        assert!(on.keeps_local(&eth, &solicit));
    }
}
