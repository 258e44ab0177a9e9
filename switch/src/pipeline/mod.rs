//! Pipeline layer: the stages a batch runs through, run to completion on one worker.
//!
//! [`process`] is the whole path, top to bottom, for each frame of a batch:
//!
//! ```text
//! parse (Meta) → ingress VLAN → source checks → learn
//!   ├─ to another host on the bridge ─────────────────────────→ L2 output
//!   └─ to the router's MAC: IPv4 parsed once into Meta
//!        NAT pre (existing connection / published port: rewrite, mark translated)
//!        → L3 decide (local, route, isolation, TTL, MTU, neighbour)
//!        → NAT post (new masqueraded connection) → L3 rewrite (MACs, TTL)
//!        → L2 output on the egress bridge
//! ```
//!
//! and [`flush`] transmits what the batch queued, one send per port. Frames for the
//! router's services (ARP, ICMP to the router, DHCP, DNS, unresolved next hops) are
//! punted to the service thread. Stages take the [`Ctx`] (worker index, `now`,
//! snapshot) read once per batch; they allocate nothing, take no lock, and count every
//! drop by reason on the ingress port.

pub mod l2;
pub mod l3;
pub mod nat;
pub mod nat6;
pub mod parse;
pub mod punt;
pub mod rig;
pub mod trace;

pub use l2::{flush, Ctx, OutQueues};
pub use parse::Meta;

use crate::dp::capture::Stage;
use crate::dp::snapshot::{slot_of, PortEntry};
use crate::dp::{Batch, DropReason};
use crate::port;
use crate::tables::PortId;
use crate::wire::bpf::Frame;
use crate::wire::ipv4;
use crate::wire::ipv6::{self, Ipv6Meta};
use l2::dropped;
use l3::Verdict;
use punt::PuntKind;
use trace::note;

/// Run the pipeline over `batch`, received on port `in_id`; output is queued in `out`.
pub fn process(ctx: &Ctx<'_>, in_id: PortId, batch: &mut Batch, out: &mut OutQueues) {
    let w = ctx.worker;
    let Some(polled) = ctx.snap.port(in_id) else {
        return;
    };
    out.fit(ctx.snap);
    let bi = polled.bridge;
    let bridge = &ctx.snap.bridges[bi];
    let (mut rx_pkts, mut rx_bytes) = (0u64, 0u64);
    let polled_id = in_id;
    // Captures: one relaxed load per batch while none runs (a trace is not captured).
    let tapping = ctx.trace.is_none() && ctx.snap.taps.active();
    for i in 0..batch.len() {
        // A shared receive (vxlan) names each frame's port.
        let (in_id, inp) = match batch.origin(i) {
            Some(o) if o != polled_id => match ctx.snap.port(o) {
                Some(p) if p.bridge == bi => {
                    p.counters.rx(w, 1, batch.frame(i).len() as u64);
                    (o, p)
                }
                _ => {
                    dropped(ctx, polled, batch.frame(i), DropReason::NoPort);
                    continue;
                }
            },
            _ => {
                rx_pkts += 1;
                rx_bytes += batch.frame(i).len() as u64;
                (polled_id, polled)
            }
        };
        let f = batch.frame(i);
        if tapping {
            let taps = &ctx.snap.taps;
            taps.offer(ctx.snap, inp, Stage::Ingress, None, &Frame::whole(f));
        }
        if inp.mirror_out {
            dropped(ctx, inp, f, DropReason::MirrorOutput);
            continue;
        }
        if !inp.mirror_to.is_empty() && ctx.trace.is_none() {
            // Sent now, as received: later stages may rewrite the frame in place.
            crate::dp::impair::mirror(
                ctx.snap,
                w,
                inp,
                &[port::TxFrame {
                    vnet: batch.vnet(i),
                    head: f,
                    tag: None,
                    rest: &[],
                }],
            );
        }
        let admitted = Meta::parse(f).and_then(|mut m| {
            m.vlan = l2::ingress_vlan(inp, &m.eth)?;
            l2::admit(ctx, inp, &m.eth, f)?;
            Ok(m)
        });
        let meta = match admitted {
            Ok(m) => m,
            Err(r) => {
                dropped(ctx, inp, f, r);
                continue;
            }
        };
        if ctx.trace.is_none() {
            let learned = bridge.fdb.learn(meta.vlan, meta.eth.src, in_id, ctx.now);
            if let Some(fp) = &ctx.snap.fastpath {
                fp.learned(learned, meta.vlan, meta.eth.src);
            }
        } else {
            trace::admitted(ctx, inp, &meta, f);
        }
        if let Some(o) = bridge.overlay.as_ref().filter(|_| meta.vlan == 0) {
            // ARP for remote endpoints and DHCP are answered on the sender's host, never
            // flooded; such a request from a tunnel is another host's to answer.
            if o.keeps_local(&meta.eth, f) {
                if inp.group == 0 {
                    l2::punt(ctx, inp, in_id, batch, i, PuntKind::Local);
                } else {
                    dropped(ctx, inp, f, DropReason::Service);
                }
                continue;
            }
        }
        if let Some(rmac) = bridge.router_mac().filter(|_| meta.vlan == 0) {
            if meta.eth.dst == rmac {
                route(ctx, inp, in_id, batch, i, meta, out);
                continue;
            }
            if meta.eth.dst.is_multicast() && l2::wants_copy(f, &meta.eth, bridge) {
                l2::punt(ctx, inp, in_id, batch, i, PuntKind::Local);
            }
        }
        let except = Some((slot_of(in_id), inp.group));
        let r = l2::output(
            ctx,
            out,
            bi,
            meta.vlan,
            meta.eth.dst,
            except,
            i as u8,
            meta.eth.payload_ofs as u8,
        );
        match r {
            // Known unicast: the kernel fast path may take the rest of this flow.
            Ok(Some(out_id)) => {
                if let (Some(fp), None) = (&ctx.snap.fastpath, ctx.trace) {
                    fp.offer(w, ctx.now, inp, &meta, out_id);
                }
            }
            Ok(None) => {}
            Err(r) => dropped(ctx, inp, batch.frame(i), r),
        }
    }
    if ctx.trace.is_none() {
        polled.counters.rx(w, rx_pkts, rx_bytes);
    }
}

/// A frame addressed to the router's MAC: NAT, L3, NAT, rewrite, L2 output.
fn route(
    ctx: &Ctx<'_>,
    inp: &PortEntry,
    in_id: PortId,
    batch: &mut Batch,
    i: usize,
    mut meta: Meta,
    out: &mut OutQueues,
) {
    note(ctx, "l3", || {
        format!("to the router's MAC {}", meta.eth.dst)
    });
    if meta.eth.ethertype == ipv4::ETHERTYPE_ARP {
        l2::punt(ctx, inp, in_id, batch, i, PuntKind::Local);
        return;
    }
    if meta.eth.ethertype == ipv6::ETHERTYPE_IPV6 {
        route6(ctx, inp, in_id, batch, i, &meta, out);
        return;
    }
    // A bridge with an IPv6 gateway only: the router has no IPv4 leg on it.
    if ctx.snap.bridges[inp.bridge].router.is_none() {
        dropped(ctx, inp, batch.frame(i), DropReason::NotRoutable);
        return;
    }
    if let Err(r) = meta.parse_ipv4(batch.frame(i)) {
        dropped(ctx, inp, batch.frame(i), r);
        return;
    }
    let vnet = batch.vnet(i);
    // The connection tuple as received: the kernel fast path's key if NAT translates
    // this frame by an established connection (offered below).
    let nat_orig = match (&ctx.snap.fastpath, ctx.trace, meta.ip) {
        (Some(_), None, Some(m)) if !ctx.snap.nat.is_empty() => batch
            .frame(i)
            .get(meta.l3..)
            .and_then(|ip| nat::tuple_of(ip, &m)),
        _ => None,
    };
    if let nat::Pre::Drop(r) = nat::pre(ctx, batch.frame_mut(i), &mut meta, &vnet) {
        dropped(ctx, inp, batch.frame(i), r);
        return;
    }
    let verdict = l3::decide(ctx.snap, ctx.neigh, ctx.now, inp.bridge, &meta, &vnet);
    note(ctx, "l3", || {
        trace::l3_text(ctx, inp.bridge, &meta, &verdict)
    });
    match verdict {
        Verdict::Forward { bridge, mac } => {
            if !meta.translated {
                if let Err(r) = nat::post(ctx, inp.bridge, bridge, batch.frame_mut(i), &meta, &vnet)
                {
                    dropped(ctx, inp, batch.frame(i), r);
                    return;
                }
            }
            let Some(mac) = mac else {
                l2::punt(ctx, inp, in_id, batch, i, PuntKind::Resolve);
                return;
            };
            let Some(rif) = ctx.snap.bridges[bridge].router else {
                dropped(ctx, inp, batch.frame(i), DropReason::NotRoutable);
                return;
            };
            l3::rewrite(batch.frame_mut(i), meta.l3, mac, rif.mac);
            note(ctx, "rewrite", || {
                format!("source MAC {}, destination MAC {mac}, TTL - 1", rif.mac)
            });
            // Routed frames may leave by the port they came in (hairpin).
            let payload_ofs = meta.eth.payload_ofs as u8;
            match l2::output(ctx, out, bridge, 0, mac, None, i as u8, payload_ofs) {
                // To a learned next hop, untranslated (and not just masqueraded by
                // `nat::post`): the kernel fast path may route the rest of this flow
                // (it re-checks NAT rules, isolation, route, neighbour).
                Ok(Some(out_id))
                    if !meta.translated
                        && ctx
                            .snap
                            .nat
                            .masq
                            .get(inp.bridge)
                            .copied()
                            .flatten()
                            .is_none() =>
                {
                    if let Some(fp) = &ctx.snap.fastpath {
                        fp.offer_routed(ctx.worker, ctx.now, inp, &meta, out_id, mac);
                    }
                }
                // Translated by an existing connection: the fast path may translate and
                // route the rest of it (it installs only Established connections).
                Ok(Some(out_id)) if meta.translated => {
                    if let (Some(fp), Some(orig), Some(m)) = (&ctx.snap.fastpath, nat_orig, meta.ip)
                    {
                        let xlate = batch
                            .frame(i)
                            .get(meta.l3..)
                            .and_then(|ip| nat::tuple_of(ip, &m));
                        if let Some(xlate) = xlate {
                            fp.offer_nat(ctx.worker, ctx.now, inp, &meta, out_id, mac, orig, xlate);
                        }
                    }
                }
                Ok(_) => {}
                Err(r) => dropped(ctx, inp, batch.frame(i), r),
            }
        }
        Verdict::Punt(kind) => l2::punt(ctx, inp, in_id, batch, i, kind),
        Verdict::Drop(r) => dropped(ctx, inp, batch.frame(i), r),
    }
}

/// An IPv6 frame addressed to the router's MAC: NAT66 pre (only with `masquerade6` or
/// an IPv6 `publish`), L3, NAT66 post, rewrite, L2 output.
fn route6(
    ctx: &Ctx<'_>,
    inp: &PortEntry,
    in_id: PortId,
    batch: &mut Batch,
    i: usize,
    meta: &Meta,
    out: &mut OutQueues,
) {
    if ctx.snap.bridges[inp.bridge].router6.is_none() {
        dropped(ctx, inp, batch.frame(i), DropReason::NotRoutable);
        return;
    }
    let Some(mut m) = batch
        .frame(i)
        .get(meta.l3..)
        .and_then(|b| Ipv6Meta::parse(b).ok())
    else {
        dropped(ctx, inp, batch.frame(i), DropReason::Malformed);
        return;
    };
    let vnet = batch.vnet(i);
    let translated = match nat6::pre(ctx, batch.frame_mut(i), meta.l3, &mut m, &vnet) {
        nat6::Pre::Drop(r) => {
            dropped(ctx, inp, batch.frame(i), r);
            return;
        }
        nat6::Pre::Translated => true,
        nat6::Pre::Untouched => false,
    };
    let verdict = l3::decide6(
        ctx.snap, ctx.neigh, ctx.now, inp.bridge, &m, meta.l3, &vnet, translated,
    );
    match verdict {
        Verdict::Forward { bridge, mac } => {
            if !translated {
                let f = batch.frame_mut(i);
                if let Err(r) = nat6::post(ctx, inp.bridge, bridge, f, meta.l3, &m, &vnet) {
                    dropped(ctx, inp, batch.frame(i), r);
                    return;
                }
            }
            let Some(mac) = mac else {
                l2::punt(ctx, inp, in_id, batch, i, PuntKind::Resolve);
                return;
            };
            let Some(rif) = ctx.snap.bridges[bridge].router6 else {
                dropped(ctx, inp, batch.frame(i), DropReason::NotRoutable);
                return;
            };
            l3::rewrite(batch.frame_mut(i), meta.l3, mac, rif.mac);
            let payload_ofs = meta.eth.payload_ofs as u8;
            match l2::output(ctx, out, bridge, 0, mac, None, i as u8, payload_ofs) {
                // To a learned next hop, untouched by NAT66: the kernel fast path may
                // route the rest of this flow (it re-checks NAT66 rules, isolation,
                // route, neighbour).
                Ok(Some(out_id))
                    if !translated
                        && ctx
                            .snap
                            .nat6
                            .masq
                            .get(inp.bridge)
                            .copied()
                            .flatten()
                            .is_none() =>
                {
                    if let Some(fp) = &ctx.snap.fastpath {
                        fp.offer_routed6(ctx.worker, ctx.now, inp, meta, m.dst, out_id, mac);
                    }
                }
                Ok(_) => {}
                Err(r) => dropped(ctx, inp, batch.frame(i), r),
            }
        }
        Verdict::Punt(kind) => l2::punt(ctx, inp, in_id, batch, i, kind),
        Verdict::Drop(r) => dropped(ctx, inp, batch.frame(i), r),
    }
}
