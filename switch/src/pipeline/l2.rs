//! The L2 stage: VLAN ingress filtering, source checks, forwarding or flooding, and the
//! egress VLAN push/pop, with output queued per transmit port and flushed once per
//! batch. The driver that calls these in order is [`super::process`].

use super::punt::{PuntKind, PuntTx};
use super::trace::{self, note, Tracer};
use crate::dp::capture::Stage;
use crate::dp::snapshot::{slot_of, BridgeRt, PortEntry, Snapshot, VlanMode};
use crate::dp::{Batch, DropReason, BATCH_SIZE};
use crate::port::TxFrame;
use crate::tables::neigh::NeighMap;
use crate::tables::PortId;
use crate::wire::bpf::Frame;
use crate::wire::{field, ipv4, ipv6, vlan_tag, EthFrame, MacAddr, VnetHdr, VLAN_HLEN};

/// Per-batch context, read once per batch.
pub struct Ctx<'a> {
    pub worker: usize,
    pub now: u32,
    pub snap: &'a Snapshot,
    /// The neighbour cache as of this batch.
    pub neigh: &'a NeighMap,
    /// Where frames for the slow path go; `None` drops them (tests, benches).
    pub punt: Option<&'a PuntTx>,
    /// A dry run that records each stage's decision (`vswitchctl trace`); `None` on
    /// the data path. See [`super::trace`].
    pub trace: Option<&'a Tracer>,
}

#[derive(Debug, Clone, Copy)]
struct OutDesc {
    frame: u8,
    /// Where the EtherType starts in the received frame (12 untagged, 16 tagged).
    payload_ofs: u8,
    /// Tag to push on egress; `None` sends untagged.
    tag: Option<u16>,
}

/// Output queues of one worker, indexed by port slot. Grown only when the snapshot has
/// more slots than before; reused across batches.
#[derive(Default)]
pub struct OutQueues {
    queues: Vec<Vec<OutDesc>>,
    touched: Vec<u16>,
}

impl OutQueues {
    /// Make room for every slot of `snap` (allocates only when the port count grew).
    pub fn fit(&mut self, snap: &Snapshot) {
        while self.queues.len() < snap.ports.len() {
            self.queues.push(Vec::with_capacity(BATCH_SIZE));
        }
    }

    #[inline]
    fn push(&mut self, slot: usize, d: OutDesc) {
        let q = &mut self.queues[slot];
        if q.is_empty() {
            self.touched.push(slot as u16);
        }
        q.push(d);
    }

    /// Frames queued in total (tests).
    pub fn queued(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    /// What is queued, in order: (port slot, frame, egress tag). For the trace, which
    /// reads the output instead of flushing it.
    pub fn queued_ports(&self) -> Vec<(usize, usize, Option<u16>)> {
        let mut v = Vec::new();
        for &s in &self.touched {
            for d in &self.queues[usize::from(s)] {
                v.push((usize::from(s), usize::from(d.frame), d.tag));
            }
        }
        v
    }

    /// Forget what is queued without sending it (after a trace).
    pub fn discard(&mut self) {
        for &s in &self.touched {
            self.queues[usize::from(s)].clear();
        }
        self.touched.clear();
    }
}

/// Count a frame dropped on the data path (`inp`: the port charged, normally the
/// ingress port), or, in a trace, record why.
#[inline]
pub(super) fn dropped(ctx: &Ctx<'_>, inp: &PortEntry, f: &[u8], r: DropReason) {
    if let Some(t) = ctx.trace {
        t.dropped(r);
        return;
    }
    inp.counters.dropped(ctx.worker, r, 1);
    if ctx.snap.taps.active() {
        let taps = &ctx.snap.taps;
        taps.offer(ctx.snap, inp, Stage::Drop, Some(r), &Frame::whole(f));
    }
}

/// Hand a copy of frame `i` to the service thread.
pub(super) fn punt(
    ctx: &Ctx<'_>,
    inp: &PortEntry,
    in_id: PortId,
    batch: &Batch,
    i: usize,
    kind: PuntKind,
) {
    if let Some(t) = ctx.trace {
        t.punted(kind);
        t.push("router", trace::punt_text(kind));
        return;
    }
    let Some(tx) = ctx.punt else {
        inp.counters
            .dropped(ctx.worker, DropReason::PuntQueueFull, 1);
        return;
    };
    if !super::punt::offer(tx, in_id, kind, batch.vnet(i), batch.frame(i)) {
        inp.counters
            .dropped(ctx.worker, DropReason::PuntQueueFull, 1);
    }
}

/// Queue frame `frame` for `vlan` on bridge `b`: to the learned port of `dst` (returned,
/// for the kernel fast path's cache), or to every port carrying the VLAN except
/// `except_slot` (`None`).
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn output(
    ctx: &Ctx<'_>,
    out: &mut OutQueues,
    b: usize,
    vlan: u16,
    dst: MacAddr,
    except: Option<(usize, u32)>,
    frame: u8,
    payload_ofs: u8,
) -> Result<Option<PortId>, DropReason> {
    let bridge = &ctx.snap.bridges[b];
    // The ingress port, and every port of its split-horizon group, is excluded.
    let excluded =
        |slot: usize, group: u32| except.is_some_and(|(s, g)| s == slot || (g != 0 && g == group));
    if !dst.is_multicast() {
        // Overlay bridges: a remote endpoint's static entry wins over what was learned.
        let statics = bridge.overlay.as_ref().filter(|_| vlan == 0);
        let hit = statics.and_then(|o| o.statics.get(&dst).copied());
        if let Some(pid) = hit.or_else(|| bridge.fdb.lookup(vlan, dst, ctx.now)) {
            note(ctx, "l2", || {
                let name = ctx.snap.port(pid).map_or("(gone)", |p| p.name.as_str());
                let how = if hit.is_some() {
                    "is a remote endpoint"
                } else {
                    "was learned"
                };
                format!("fdb: {dst} on vlan {vlan} {how} on port {name}")
            });
            if except.is_some_and(|(s, _)| s == slot_of(pid)) {
                return Err(DropReason::SameSegment);
            }
            if let Some(op) = ctx.snap.port(pid) {
                if excluded(slot_of(pid), op.group) {
                    return Err(DropReason::SameSegment);
                }
                if op.bridge == b && op.vlan.carries(vlan) && !op.mirror_out {
                    out.push(
                        slot_of(pid),
                        OutDesc {
                            frame,
                            payload_ofs,
                            tag: op.vlan.egress_tag(vlan),
                        },
                    );
                    return Ok(Some(pid));
                }
            }
        }
    }
    // Broadcast, multicast, unknown unicast: every other port of the bridge that
    // carries the VLAN.
    if let Some(t) = ctx.trace {
        t.set_flooded();
    }
    note(ctx, "l2", || {
        let what = if dst == MacAddr::BROADCAST {
            "broadcast"
        } else if dst.is_multicast() {
            "multicast"
        } else {
            "unknown unicast"
        };
        format!(
            "fdb: {dst} on vlan {vlan}: {what}, flood on bridge {}",
            bridge.name
        )
    });
    for &s in &bridge.ports {
        let s = usize::from(s);
        if let Some(Some(op)) = ctx.snap.ports.get(s) {
            if op.vlan.carries(vlan) && !excluded(s, op.group) && !op.mirror_out {
                out.push(
                    s,
                    OutDesc {
                        frame,
                        payload_ofs,
                        tag: op.vlan.egress_tag(vlan),
                    },
                );
            }
        }
    }
    Ok(None)
}

/// Whether a broadcast/multicast frame is something the router's services want a copy
/// of (ARP, DHCP from a client, IPv6 Router and Neighbor Solicitations and unsolicited
/// Neighbor Advertisements), without taking it off the wire.
#[inline]
pub(super) fn wants_copy(f: &[u8], eth: &EthFrame, bridge: &BridgeRt) -> bool {
    let l3 = eth.payload_ofs + 2;
    match eth.ethertype {
        ipv4::ETHERTYPE_ARP => bridge.router.is_some(),
        ipv6::ETHERTYPE_IPV6 if bridge.router6.is_some() => {
            // ICMPv6 right after the fixed header (NDP never has extension headers);
            // DHCPv6 from a client: UDP to port 547.
            f.len() >= l3 + ipv6::HLEN + 4
                && match f[l3 + 6] {
                    ipv6::NEXT_ICMPV6 => matches!(
                        f[l3 + ipv6::HLEN],
                        ipv6::icmp::ROUTER_SOLICIT
                            | ipv6::icmp::NEIGHBOR_SOLICIT
                            | ipv6::icmp::NEIGHBOR_ADVERT
                    ),
                    ipv6::NEXT_UDP => {
                        bridge.dhcp6 && f[l3 + ipv6::HLEN + 2..l3 + ipv6::HLEN + 4] == [2, 0x23]
                    }
                    _ => false,
                }
        }
        ipv4::ETHERTYPE_IPV4 if bridge.dhcp.is_some() => {
            // UDP to port 67 with a 20-byte header (DHCP clients never send options).
            f.len() >= l3 + 24
                && f[l3] == 0x45
                && f[l3 + ipv4::field::PROTOCOL] == ipv4::PROTO_UDP
                && f[l3 + 22..l3 + 24] == [0, 67]
        }
        _ => false,
    }
}

/// Ingress VLAN processing: the frame's VLAN inside the bridge, or why it is refused.
#[inline]
pub(super) fn ingress_vlan(inp: &PortEntry, eth: &EthFrame) -> Result<u16, DropReason> {
    match inp.vlan {
        VlanMode::Access(t) => {
            if eth.tagged && eth.vid != 0 {
                return Err(DropReason::VlanFiltered);
            }
            Ok(t)
        }
        VlanMode::Trunk(_) => {
            let v = if eth.tagged { eth.vid } else { 0 };
            if !inp.vlan.carries(v) {
                return Err(DropReason::VlanFiltered);
            }
            Ok(v)
        }
    }
}

/// Source checks: never a multicast or zero sender; port security (a trace notes
/// what the lock refused).
#[inline]
pub(super) fn admit(
    ctx: &Ctx<'_>,
    inp: &PortEntry,
    eth: &EthFrame,
    f: &[u8],
) -> Result<(), DropReason> {
    if eth.src.is_multicast() || eth.src.is_zero() {
        return Err(DropReason::BadSource);
    }
    match &inp.lock {
        Some(lock) => lock.check(eth, f).inspect_err(|&r| {
            trace::note(ctx, "security", || trace::lock_refused(lock, eth, f, r));
        }),
        None => Ok(()),
    }
}

/// Transmit everything queued by [`super::process`], one send call per port.
pub fn flush(ctx: &Ctx<'_>, batch: &Batch, out: &mut OutQueues) {
    const EMPTY: TxFrame<'static> = TxFrame {
        vnet: VnetHdr {
            flags: 0,
            gso_type: 0,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 0,
            csum_offset: 0,
        },
        head: &[],
        tag: None,
        rest: &[],
    };
    let mut frames = [EMPTY; BATCH_SIZE];
    let tapping = ctx.snap.taps.active();
    for &s in &out.touched {
        let q = &mut out.queues[usize::from(s)];
        let Some(Some(op)) = ctx.snap.ports.get(usize::from(s)) else {
            q.clear();
            continue;
        };
        let n = q.len().min(BATCH_SIZE);
        for (slot, d) in frames.iter_mut().zip(q.iter()) {
            let i = usize::from(d.frame);
            let f = batch.frame(i);
            // Offsets in the virtio header move with the tag we push or pop.
            let was = i32::from(d.payload_ofs) - field::ETHERTYPE.start as i32;
            let now = if d.tag.is_some() { VLAN_HLEN as i32 } else { 0 };
            *slot = TxFrame {
                vnet: batch.vnet(i).shifted(now - was),
                head: &f[..field::ETHERTYPE.start],
                tag: d.tag.map(vlan_tag),
                rest: &f[usize::from(d.payload_ofs)..],
            };
        }
        crate::dp::impair::transmit(ctx.snap, ctx.worker, op, &frames[..n], tapping);
        q.clear();
    }
    out.touched.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::snapshot::{BridgeRt, PortEntry, VlanMode};
    use crate::dp::PortCounters;
    use crate::pipeline::process;
    use crate::port::mem::MemPort;
    use crate::tables::Fdb;
    use crate::wire::ETHERTYPE_VLAN;
    use std::sync::Arc;

    struct Rig {
        snap: Snapshot,
        mems: Vec<Arc<MemPort>>,
    }

    /// One bridge with ports of the given VLAN modes; port i has id i.
    fn rig(modes: Vec<VlanMode>) -> Rig {
        let mut ports = Vec::new();
        let mut mems = Vec::new();
        for (i, vlan) in modes.into_iter().enumerate() {
            let m = Arc::new(MemPort::new(&format!("p{i}")));
            mems.push(m.clone());
            ports.push(Some(PortEntry {
                id: i as u32,
                name: format!("p{i}"),
                bridge: 0,
                vlan,
                dev: m,
                counters: Arc::new(PortCounters::new(1)),
                group: 0,
                lock: None,
                mirror_to: Vec::new(),
                mirror_out: false,
                impair: None,
            }));
        }
        let n = ports.len();
        Rig {
            snap: Snapshot {
                generation: 1,
                ports,
                bridges: vec![BridgeRt::plain(
                    "br0",
                    Arc::new(Fdb::new(64, 300)),
                    (0..n as u16).collect(),
                )],
                ..Default::default()
            },
            mems,
        }
    }

    fn frame(dst: u8, src: u8, vlan: Option<u16>) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src];
        if dst == 0xff {
            f[..6].copy_from_slice(&[0xff; 6]);
        }
        if let Some(v) = vlan {
            f.extend_from_slice(&vlan_tag(v));
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45; 46]);
        f
    }

    impl Rig {
        fn send(&self, port: usize, frames: &[Vec<u8>]) {
            let mut b = Batch::new();
            for f in frames {
                self.mems[port].inject(f);
            }
            self.mems[port].recv(&mut b).unwrap();
            let neigh = NeighMap::default();
            let ctx = Ctx {
                worker: 0,
                now: 10,
                snap: &self.snap,
                neigh: &neigh,
                punt: None,
                trace: None,
            };
            let mut out = OutQueues::default();
            process(&ctx, port as u32, &mut b, &mut out);
            flush(&ctx, &b, &mut out);
        }
        fn sent(&self, port: usize) -> Vec<Vec<u8>> {
            self.mems[port].take_sent()
        }
        fn drops(&self, port: usize) -> std::collections::BTreeMap<&'static str, u64> {
            self.snap.ports[port]
                .as_ref()
                .unwrap()
                .counters
                .totals()
                .drops
        }
    }

    fn trunk() -> VlanMode {
        VlanMode::from_conf(None, &[])
    }

    #[test]
    fn floods_unknown_then_forwards_learned() {
        let r = rig(vec![trunk(), trunk(), trunk()]);
        let f = frame(2, 1, None);
        r.send(0, std::slice::from_ref(&f));
        assert_eq!(r.sent(0).len(), 0, "no reflection to the ingress port");
        assert_eq!(r.sent(1), vec![f.clone()]);
        assert_eq!(r.sent(2), vec![f.clone()]);
        // Reply from host 2 on port 1 goes only to port 0, where host 1 was learned.
        let back = frame(1, 2, None);
        r.send(1, std::slice::from_ref(&back));
        assert_eq!(r.sent(0), vec![back]);
        assert!(r.sent(2).is_empty());
        // Now host 2 is known on port 1: unicast, no flood.
        r.send(0, std::slice::from_ref(&f));
        assert_eq!(r.sent(1), vec![f]);
        assert!(r.sent(2).is_empty());
    }

    #[test]
    fn same_segment_is_dropped_and_counted() {
        let r = rig(vec![trunk(), trunk()]);
        r.send(0, &[frame(2, 1, None), frame(1, 2, None)]);
        // Host 2 sent from port 0 too: both hosts on port 0, the second frame stays.
        r.sent(1);
        r.send(0, &[frame(1, 2, None)]);
        assert!(r.sent(1).is_empty());
        // Once in the first batch (host 2 answering host 1 on the same port), once now.
        assert_eq!(r.drops(0).get("same_segment"), Some(&2));
    }

    #[test]
    fn access_ports_separate_vlans_and_trunks_tag() {
        let r = rig(vec![
            VlanMode::from_conf(Some(10), &[]),
            VlanMode::from_conf(Some(10), &[]),
            VlanMode::from_conf(Some(20), &[]),
            VlanMode::from_conf(None, &[10]),
        ]);
        let f = frame(0xff, 1, None);
        r.send(0, std::slice::from_ref(&f));
        assert_eq!(r.sent(1), vec![f.clone()], "same VLAN, untagged");
        assert!(r.sent(2).is_empty(), "VLAN 20 must not see VLAN 10");
        let tagged = r.sent(3);
        assert_eq!(
            tagged,
            vec![frame(0xff, 1, Some(10))],
            "trunk gets the tag pushed"
        );
        assert_eq!(
            u16::from_be_bytes([tagged[0][12], tagged[0][13]]),
            ETHERTYPE_VLAN
        );
        // Tagged frame from the trunk reaches the access ports untagged.
        r.send(3, &[frame(0xff, 9, Some(10))]);
        assert_eq!(r.sent(0), vec![frame(0xff, 9, None)]);
        assert_eq!(r.sent(1), vec![frame(0xff, 9, None)]);
        assert!(r.sent(2).is_empty());
        // VLAN 30 is not in the trunk's list; a tagged frame on an access port is not allowed.
        r.send(3, &[frame(0xff, 9, Some(30))]);
        r.send(0, &[frame(0xff, 1, Some(10))]);
        assert_eq!(r.drops(3).get("vlan_filtered"), Some(&1));
        assert_eq!(r.drops(0).get("vlan_filtered"), Some(&1));
        for p in 0..4 {
            assert!(r.sent(p).is_empty());
        }
    }

    #[test]
    fn malformed_and_bad_source_are_counted() {
        let r = rig(vec![trunk(), trunk()]);
        let mut bad_src = frame(2, 1, None);
        bad_src[6] = 0x01;
        r.send(
            0,
            &[vec![1, 2, 3], frame(2, 1, None)[..15].to_vec(), bad_src],
        );
        let d = r.drops(0);
        assert_eq!(d.get("malformed"), Some(&1));
        assert_eq!(d.get("bad_source"), Some(&1));
        // The 15-byte frame is a valid (tiny) header and is forwarded.
        assert_eq!(r.sent(1).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(frames in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 0..80), 1..16)) {
            let r = rig(vec![trunk(), VlanMode::from_conf(Some(5), &[]), VlanMode::from_conf(None, &[5, 7])]);
            r.send(0, &frames);
            r.send(2, &frames);
        }
    }
}
