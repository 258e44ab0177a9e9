//! The control plane's side of the kernel fast path: attach and detach it with ports,
//! add its counters to `stats`, and answer `fastpath-show`. The hooks in state.rs,
//! ports.rs, views.rs and handlers/ are one line each; the fast path itself is `crate::fastpath`.

use super::handlers::{HandlerError, State};
use crate::config::ConfigError;
use crate::port::vxlan::VxlanShared;
use crate::port::Port;
use crate::tables::PortId;
use serde_json::Value;
use vswitch_proto::{FastpathEntry, FastpathInfo, FastpathNat, FastpathRoute, PortStats};

impl State {
    /// Attach the fast path to a port just opened. A port it cannot serve stays on the
    /// userspace path: logged, never an error for `add-port`.
    pub(super) fn fastpath_attach(&self, id: PortId, dev: &dyn Port) {
        if let Some(fp) = &self.fastpath {
            if let Err(e) = fp.attach_port(id, dev) {
                tracing::warn!(port = dev.name(), error = %e, "fast path not attached: userspace only for this port");
            }
        }
    }

    /// Open the shared side of vxlan port `p`: with the fast path, the kernel's
    /// external VXLAN device owns the UDP port (docs/architecture.md, "Kernel fast
    /// path", VXLAN); if that device cannot be made, the port stays in userspace with
    /// its own socket, as without the fast path.
    pub(super) fn open_vxlan(
        &self,
        p: &crate::config::PortConf,
        v: &crate::config::VxlanConf,
    ) -> Result<std::sync::Arc<VxlanShared>, HandlerError> {
        let attach_err = |e| HandlerError::Attach {
            name: p.name.clone(),
            source: e,
        };
        if self.fastpath.is_some() {
            match VxlanShared::open_with(v.remotes.clone(), v.vni, v.local, v.dst_port, true) {
                Ok(s) => return Ok(s),
                Err(e) => tracing::warn!(
                    port = %p.name,
                    error = %e,
                    "no kernel VXLAN device for the fast path: this vxlan port stays in userspace"
                ),
            }
        }
        VxlanShared::open(v.remotes.clone(), v.vni, v.local, v.dst_port).map_err(attach_err)
    }

    /// Attach the fast path to the remote VTEP ports `ids` (in remote order) of a
    /// vxlan port whose kernel device owns its UDP port. Failing is an error for
    /// `add-port`: without the decap program the device would swallow every frame.
    pub(super) fn fastpath_attach_vxlan(
        &self,
        shared: &VxlanShared,
        ids: &[(String, PortId)],
    ) -> Result<(), HandlerError> {
        let (Some(fp), Some(k)) = (&self.fastpath, shared.kernel()) else {
            return Ok(());
        };
        for ((name, id), remote) in ids.iter().zip(shared.remotes.iter()) {
            let r = fp.attach_vxlan(
                *id,
                *remote,
                shared.vni,
                shared.local,
                &k.dev,
                k.dev_ifindex,
                k.tap_ifindex,
            );
            if let Err(e) = r {
                for (_, id) in ids {
                    fp.detach_port(*id);
                }
                return Err(HandlerError::Attach {
                    name: name.clone(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        }
        Ok(())
    }

    /// Detach the fast path from a port leaving (already out of the snapshot).
    pub(super) fn fastpath_detach(&self, id: PortId) {
        if let Some(fp) = &self.fastpath {
            fp.detach_port(id);
        }
    }

    /// Add what the fast path forwarded for port `id` to its counters.
    pub(super) fn fastpath_stats(&self, id: PortId, s: &mut PortStats) {
        let Some(fp) = &self.fastpath else { return };
        let t = fp.port_stats(id);
        s.fastpath_rx_packets = t.rx_packets;
        s.fastpath_rx_bytes = t.rx_bytes;
        s.fastpath_tx_packets = t.tx_packets;
        s.fastpath_tx_bytes = t.tx_bytes;
        s.rx_packets += t.rx_packets;
        s.rx_bytes += t.rx_bytes;
        s.tx_packets += t.tx_packets;
        s.tx_bytes += t.tx_bytes;
    }

    /// "on" or "off", for `show`.
    pub(super) fn fastpath_mode(&self) -> String {
        if self.fastpath.is_some() { "on" } else { "off" }.to_string()
    }

    /// `fastpath-show [BR]`: the live cache entries (L2 and routed; BR selects by the
    /// ingress bridge), sorted by bridge, ports, MACs and IPv4 destination.
    pub(super) fn fastpath_show(&self, bridge: Option<&str>) -> Result<Value, HandlerError> {
        let snap = self.snap.load();
        if let Some(b) = bridge {
            if !snap.bridges.iter().any(|x| x.name == b) {
                return Err(ConfigError::NoSuchBridge(b.to_string()).into());
            }
        }
        let mut info = FastpathInfo {
            mode: self.fastpath_mode(),
            ..Default::default()
        };
        let Some(fp) = &self.fastpath else {
            return serde_json::to_value(info).map_err(|e| HandlerError::Encode(e.to_string()));
        };
        let s = fp.summary();
        info.generation = s.generation;
        info.installs = s.installs;
        info.rejected = s.rejected;
        info.queue_full = s.queue_full;
        info.invalidations = s.bumps;
        info.removed = s.removed;
        for e in fp.entries() {
            let (Some(inp), Some(out)) = (snap.port(e.in_id), snap.port(e.out_id)) else {
                continue;
            };
            let Some(b) = snap.bridges.get(inp.bridge) else {
                continue;
            };
            if bridge.is_some_and(|x| x != b.name) {
                continue;
            }
            info.entries.push(FastpathEntry {
                bridge: b.name.clone(),
                in_port: inp.name.clone(),
                out_port: out.name.clone(),
                vlan: e.bvlan,
                src: e.src.to_string(),
                dst: e.dst.to_string(),
                tag: e.tag,
                packets: e.packets,
                bytes: e.bytes,
                idle_ms: e.idle_ms,
                route: e.route.and_then(|(ip, nh)| {
                    Some(FastpathRoute {
                        ip_dst: ip.to_string(),
                        out_bridge: snap.bridges.get(out.bridge)?.name.clone(),
                        next_hop: nh.to_string(),
                    })
                }),
                nat: e
                    .nat
                    .map(|(t, x)| nat_view(&t, &x, e.expires_ms.unwrap_or(0))),
                peer: e.peer,
            });
        }
        let ip = |e: &FastpathEntry| {
            e.route
                .as_ref()
                .and_then(|r| r.ip_dst.parse::<std::net::IpAddr>().ok())
        };
        info.entries.sort_by(|a, b| {
            (
                &a.bridge,
                &a.in_port,
                &a.out_port,
                a.vlan,
                &a.src,
                &a.dst,
                ip(a),
            )
                .cmp(&(
                    &b.bridge,
                    &b.in_port,
                    &b.out_port,
                    b.vlan,
                    &b.src,
                    &b.dst,
                    ip(b),
                ))
                .then_with(|| {
                    let n =
                        |e: &FastpathEntry| e.nat.as_ref().map(|n| (n.src.clone(), n.dst.clone()));
                    n(a).cmp(&n(b))
                })
        });
        serde_json::to_value(info).map_err(|e| HandlerError::Encode(e.to_string()))
    }
}

/// A NAT entry's tuples as `ct-show` writes them (ICMP echo: the id, request or reply).
fn nat_view(
    t: &crate::tables::conntrack::Tuple,
    x: &crate::tables::conntrack::Tuple,
    expires_ms: u64,
) -> FastpathNat {
    let ep = |ip: std::net::Ipv4Addr, p: u16| format!("{ip}:{p}");
    let (sp, dp, xsp, xdp) = if t.proto == 1 {
        let (id, xid) = (t.sport | t.dport, x.sport | x.dport);
        (id, id, xid, xid)
    } else {
        (t.sport, t.dport, x.sport, x.dport)
    };
    FastpathNat {
        proto: match t.proto {
            6 => "tcp",
            17 => "udp",
            _ => "icmp",
        }
        .to_string(),
        src: ep(t.src, sp),
        dst: ep(t.dst, dp),
        nat_src: ep(x.src, xsp),
        nat_dst: ep(x.dst, xdp),
        expires_ms,
    }
}
