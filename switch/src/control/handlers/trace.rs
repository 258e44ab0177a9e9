//! `trace`: run a frame through the real pipeline in a dry run and report each stage's
//! decision (`pipeline::trace`), like `ovs-appctl ofproto/trace`. Nothing is learned,
//! recorded, counted or sent.

use super::super::ports::live_names;
use super::flow::{self, Spec};
use super::{to_value, HandlerError, State};
use crate::config::ConfigError;
use crate::dp::{clock, Batch};
use crate::pipeline::trace::{punt_name, stage_of, End, Tracer};
use crate::pipeline::{self, Ctx, OutQueues};
use crate::tables::neigh::NeighMap;
use crate::wire::MacAddr;
use serde_json::Value;
use std::net::Ipv4Addr;
use vswitch_proto::{TraceOutput, TraceReq, TraceResult, TraceStage};

impl State {
    pub(super) fn trace(&mut self, req: TraceReq) -> Result<Value, HandlerError> {
        let b = self.model.bridge(&req.bridge)?;
        let spec = flow::parse(&req.flow).map_err(HandlerError::Invalid)?;
        // IN_PORT, or the flow's in_port (they must agree when both are given).
        let in_port = match (&spec, req.in_port.as_str()) {
            (Spec::Flow(f), "") => f.in_port.clone().unwrap_or_default(),
            (Spec::Flow(f), p) => match &f.in_port {
                Some(q) if q != p => {
                    return Err(HandlerError::Invalid(format!(
                        "in_port={q} in the flow, but the trace is for port {p}"
                    )))
                }
                _ => p.to_string(),
            },
            (Spec::Frame(_), p) => p.to_string(),
        };
        if in_port.is_empty() {
            return Err(HandlerError::Invalid(
                "which port does the frame arrive on? (IN_PORT)".into(),
            ));
        }
        let base = in_port.split('@').next().unwrap_or(&in_port);
        let Some(pc) = b.ports.iter().find(|p| p.name == base) else {
            return Err(ConfigError::NoSuchPort {
                bridge: b.name.clone(),
                port: in_port.clone(),
            }
            .into());
        };
        let names = live_names(pc);
        let live_name = if base == in_port {
            names.first().cloned().unwrap_or_default()
        } else if names.contains(&in_port) {
            in_port.clone()
        } else {
            return Err(ConfigError::NoSuchPort {
                bridge: b.name.clone(),
                port: in_port.clone(),
            }
            .into());
        };
        let Some(live) = self.live.get(&live_name) else {
            let why = self
                .failed
                .get(&pc.name)
                .cloned()
                .unwrap_or_else(|| "down".into());
            return Err(HandlerError::Invalid(format!(
                "port {in_port} is not attached ({why}): nothing to trace"
            )));
        };
        let now = clock::now_secs();
        let neigh = match &self.tools.neigh {
            Some(n) => (**n.load()).clone(),
            None => NeighMap::default(),
        };
        let mut stages = vec![TraceStage {
            stage: "input".into(),
            text: format!("frame arrives on port {live_name} of bridge {}", b.name),
        }];
        let frame = match spec {
            Spec::Frame(f) => f,
            Spec::Flow(mut f) => {
                let mut assumed = Vec::new();
                if f.dl_src.is_none() {
                    let learned = self.fdbs.get(&b.name).and_then(|fdb| {
                        fdb.entries(now)
                            .into_iter()
                            .find(|r| r.port == live.id)
                            .map(|r| r.mac)
                    });
                    let (mac, why) = match (pc.lock.as_ref().map(|l| l.mac), learned) {
                        (Some(m), _) => (m, "the port's locked MAC"),
                        (None, Some(m)) => (m, "a MAC learned on the port"),
                        (None, None) => {
                            (MacAddr([2, 0, 0, 0, 0, 1]), "nothing learned on the port")
                        }
                    };
                    f.dl_src = Some(mac);
                    assumed.push(format!("dl_src={mac} ({why})"));
                }
                let ipv4 = f.dl_type.is_none_or(|t| t == 0x0800);
                if ipv4 && f.nw_src.is_none() {
                    let src = f.dl_src.unwrap_or_default();
                    let by_mac = neigh.iter().find_map(|(ip, n)| match ip {
                        std::net::IpAddr::V4(v4) if n.mac == src => Some(*v4),
                        _ => None,
                    });
                    let lock = pc.lock.as_ref().and_then(|l| {
                        l.ips.iter().find_map(|ip| match ip {
                            std::net::IpAddr::V4(v4) => Some(*v4),
                            std::net::IpAddr::V6(_) => None,
                        })
                    });
                    if let Some(ip) = lock.or(by_mac) {
                        f.nw_src = Some(ip);
                        assumed.push(format!("nw_src={ip}"));
                    }
                }
                if f.dl_dst.is_none() {
                    let (mac, why) = default_dst(b, &f, &neigh, now);
                    f.dl_dst = Some(mac);
                    assumed.push(format!("dl_dst={mac} ({why})"));
                }
                if !assumed.is_empty() {
                    stages.push(TraceStage {
                        stage: "input".into(),
                        text: format!("not given, assumed: {}", assumed.join(", ")),
                    });
                }
                f.build().map_err(HandlerError::Invalid)?
            }
        };
        let mut batch = Batch::new();
        if !batch.push_copy(&frame) {
            return Err(HandlerError::Invalid(format!(
                "frame of {} bytes is larger than a receive buffer",
                frame.len()
            )));
        }
        let snap = self.snap.load();
        let tracer = Tracer::new();
        let ctx = Ctx {
            // The control thread's counter slot; a trace counts nothing anyway.
            worker: usize::MAX,
            now,
            snap: &snap,
            neigh: &neigh,
            punt: None,
            trace: Some(&tracer),
        };
        let mut out = OutQueues::default();
        pipeline::process(&ctx, live.id, &mut batch, &mut out);
        stages.extend(tracer.steps().into_iter().map(|s| TraceStage {
            stage: s.stage.into(),
            text: s.text,
        }));
        let queued = out.queued_ports();
        out.discard();
        let mut outputs = Vec::new();
        for &(slot, _, tag) in &queued {
            let Some(Some(op)) = snap.ports.get(slot) else {
                continue;
            };
            outputs.push(TraceOutput {
                port: op.name.clone(),
                vlan: tag,
            });
            let conf = self
                .model
                .bridges
                .iter()
                .flat_map(|b| b.ports.iter())
                .find(|p| Some(p.name.as_str()) == op.name.split('@').next());
            let tagged = tag.map_or(String::new(), |t| format!(", tagged vlan {t}"));
            stages.push(TraceStage {
                stage: "output".into(),
                text: format!("port {}{tagged}", op.name),
            });
            if let Some(i) = &op.impair {
                stages.push(TraceStage {
                    stage: "impair".into(),
                    text: format!("link impairment on {}: {}", op.name, i.conf.describe()),
                });
            }
            for &m in &op.mirror_to {
                if let Some(Some(mp)) = snap.ports.get(usize::from(m)) {
                    stages.push(TraceStage {
                        stage: "mirror".into(),
                        text: format!("a copy leaves by mirror output {}", mp.name),
                    });
                }
            }
            if let Some(v) = conf.and_then(|c| c.vxlan.as_ref()) {
                let remote = op.name.split('@').nth(1).unwrap_or("?");
                stages.push(TraceStage {
                    stage: "tunnel".into(),
                    text: format!(
                        "VXLAN VNI {} to {remote}:{} (UDP, outer source port from the inner flow's hash)",
                        v.vni, v.dst_port
                    ),
                });
            }
        }
        if let (Some(fp), [_]) = (&self.fastpath, queued.as_slice()) {
            stages.push(TraceStage {
                stage: "fastpath".into(),
                text: offload_text(&fp.entries(), live.id, &frame),
            });
        }
        let flooded = tracer.flooded();
        let (verdict, drop_reason, punt) = match tracer.end() {
            Some(End::Drop(r)) => {
                stages.push(TraceStage {
                    stage: stage_of(r).into(),
                    text: format!("drop: {}", r.as_str()),
                });
                ("drop", Some(r.as_str().to_string()), None)
            }
            Some(End::Punt(k)) if outputs.is_empty() && !flooded => {
                ("router", None, Some(punt_name(k).to_string()))
            }
            end => {
                let punt = match end {
                    Some(End::Punt(k)) => Some(punt_name(k).to_string()),
                    _ => None,
                };
                (if flooded { "flood" } else { "output" }, None, punt)
            }
        };
        let out_flow = queued
            .first()
            .map(|&(_, i, _)| flow::describe(batch.frame(i)));
        to_value(TraceResult {
            bridge: b.name.clone(),
            in_port: live_name,
            flow: flow::describe(&frame),
            frame: frame.iter().map(|x| format!("{x:02x}")).collect(),
            stages,
            verdict: verdict.into(),
            outputs,
            drop_reason,
            punt,
            out_flow,
        })
    }
}

/// Whether the kernel fast path carries the traced frame now: an entry for its input
/// port and MACs (and, for a routed entry, its IPv4 or IPv6 destination).
fn offload_text(
    entries: &[crate::fastpath::Entry],
    in_id: crate::tables::PortId,
    frame: &[u8],
) -> String {
    let mac = |o: usize| {
        frame
            .get(o..o + 6)
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
    };
    let (Some(dst), Some(src)) = (mac(0), mac(6)) else {
        return "not offloaded: the frame is too short".into();
    };
    // The IPv4 destination of an untagged IPv4 frame.
    let ip_dst = (frame.get(12..14) == Some(&[0x08, 0x00][..]))
        .then(|| frame.get(30..34))
        .flatten()
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|a| std::net::IpAddr::from(std::net::Ipv4Addr::from(a)))
        .or_else(|| {
            // The IPv6 destination of an untagged IPv6 frame.
            (frame.get(12..14) == Some(&[0x86, 0xdd][..]))
                .then(|| frame.get(38..54))
                .flatten()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(|a| std::net::IpAddr::from(std::net::Ipv6Addr::from(a)))
        });
    let hit = entries.iter().find(|e| {
        e.in_id == in_id
            && e.src.0 == src
            && e.dst.0 == dst
            && e.route.is_none_or(|(ip, _)| Some(ip) == ip_dst)
    });
    match hit {
        Some(e) => format!(
            "offloaded: the kernel fast path carries this flow ({} packets, {} bytes so far)",
            e.packets, e.bytes
        ),
        None => "not offloaded: the next frame takes the userspace path (and may be installed in the kernel fast path)".into(),
    }
}

/// The destination MAC a guest would use for the flow `f` on bridge `b`: the router's
/// for an address off the bridge's subnet (or the gateway itself), the neighbour's
/// when the router knows it, else broadcast.
fn default_dst(
    b: &crate::config::BridgeConf,
    f: &flow::Flow,
    neigh: &NeighMap,
    now: u32,
) -> (MacAddr, &'static str) {
    if f.dl_type.is_some_and(|t| t != 0x0800) {
        return (MacAddr::BROADCAST, "broadcast");
    }
    let dst = f.nw_dst.unwrap_or(Ipv4Addr::UNSPECIFIED);
    if let (Some(net), Some(gw)) = (b.subnet, b.gateway) {
        if dst == gw || (!net.contains(&dst) && !dst.is_broadcast()) {
            return (
                crate::dp::router_mac(&b.name),
                "the router's MAC: nw_dst is reached through the gateway",
            );
        }
    }
    match crate::tables::NeighCache::lookup(neigh, dst, now) {
        Some(m) => (m, "nw_dst's MAC from the neighbour cache"),
        None => (MacAddr::BROADCAST, "nw_dst's MAC is not known: broadcast"),
    }
}
