//! The L2 stage: VLAN ingress filtering, MAC learning, forwarding or flooding, and the
//! egress VLAN push/pop, with output queued per transmit port.

use crate::config::snapshot::slot_of;
use crate::config::Snapshot;
use crate::dp::{Batch, DropReason, BATCH_SIZE};
use crate::port::TxFrame;
use crate::tables::PortId;
use crate::wire::{field, vlan_tag, EthFrame};

/// Per-batch context, read once per batch.
pub struct Ctx<'a> {
    pub worker: usize,
    pub now: u32,
    pub snap: &'a Snapshot,
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
}

/// Run the L2 stage over `batch`, received on port `in_id`.
pub fn process(ctx: &Ctx<'_>, in_id: PortId, batch: &Batch, out: &mut OutQueues) {
    let w = ctx.worker;
    let Some(inp) = ctx.snap.port(in_id) else {
        return;
    };
    out.fit(ctx.snap);
    let in_slot = slot_of(in_id);
    let bridge = &ctx.snap.bridges[inp.bridge];
    let mut rx_bytes = 0u64;
    for i in 0..batch.len() {
        let f = batch.frame(i);
        rx_bytes += f.len() as u64;
        let Ok(eth) = EthFrame::parse(f) else {
            inp.counters.dropped(w, DropReason::Malformed, 1);
            continue;
        };
        let vlan = match inp.vlan {
            crate::config::VlanMode::Access(t) => {
                if eth.tagged && eth.vid != 0 {
                    inp.counters.dropped(w, DropReason::VlanFiltered, 1);
                    continue;
                }
                t
            }
            crate::config::VlanMode::Trunk(_) => {
                let v = if eth.tagged { eth.vid } else { 0 };
                if !inp.vlan.carries(v) {
                    inp.counters.dropped(w, DropReason::VlanFiltered, 1);
                    continue;
                }
                v
            }
        };
        if eth.src.is_multicast() || eth.src.is_zero() {
            inp.counters.dropped(w, DropReason::BadSource, 1);
            continue;
        }
        bridge.fdb.learn(vlan, eth.src, in_id, ctx.now);
        let frame = i as u8;
        let payload_ofs = eth.payload_ofs as u8;
        if !eth.dst.is_multicast() {
            if let Some(pid) = bridge.fdb.lookup(vlan, eth.dst, ctx.now) {
                if pid == in_id {
                    inp.counters.dropped(w, DropReason::SameSegment, 1);
                    continue;
                }
                if let Some(op) = ctx.snap.port(pid) {
                    if op.bridge == inp.bridge && op.vlan.carries(vlan) {
                        out.push(
                            slot_of(pid),
                            OutDesc {
                                frame,
                                payload_ofs,
                                tag: op.vlan.egress_tag(vlan),
                            },
                        );
                        continue;
                    }
                }
            }
        }
        // Broadcast, multicast, unknown unicast: every other port of the bridge that
        // carries the VLAN.
        for &s in &bridge.ports {
            let s = usize::from(s);
            if s == in_slot {
                continue;
            }
            if let Some(Some(op)) = ctx.snap.ports.get(s) {
                if op.vlan.carries(vlan) {
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
    }
    inp.counters.rx(w, batch.len() as u64, rx_bytes);
}

/// Transmit everything queued by [`process`], one send call per port.
pub fn flush(ctx: &Ctx<'_>, batch: &Batch, out: &mut OutQueues) {
    const EMPTY: TxFrame<'static> = TxFrame {
        head: &[],
        tag: None,
        rest: &[],
    };
    let mut frames = [EMPTY; BATCH_SIZE];
    for &s in &out.touched {
        let q = &mut out.queues[usize::from(s)];
        let Some(Some(op)) = ctx.snap.ports.get(usize::from(s)) else {
            q.clear();
            continue;
        };
        let n = q.len().min(BATCH_SIZE);
        for (slot, d) in frames.iter_mut().zip(q.iter()) {
            let f = batch.frame(usize::from(d.frame));
            *slot = TxFrame {
                head: &f[..field::ETHERTYPE.start],
                tag: d.tag.map(vlan_tag),
                rest: &f[usize::from(d.payload_ofs)..],
            };
        }
        let r = op.dev.send(&frames[..n]);
        op.counters.tx(ctx.worker, r.sent as u64, r.bytes as u64);
        if r.failed > 0 {
            op.counters
                .dropped(ctx.worker, DropReason::TxError, r.failed as u64);
        }
        q.clear();
    }
    out.touched.clear();
}
