//! A whole data path in memory, for fuzzing and corpus replay: two routed bridges
//! (`br0` 10.0.0.0/24 with gateway 10.0.0.1 and ports 0 and 1; `wan`
//! 198.51.100.0/24 with gateway 198.51.100.2 and port 2), `br0` masqueraded behind
//! `wan`, TCP 8080 published to 10.0.0.5:80, known neighbours on both sides, and
//! in-memory ports. Frames go through the real L2, L3 and NAT stages and out of the
//! in-memory ports; nothing is punted (the slow path has its own fuzz targets).

use crate::dp::snapshot::{
    router_mac, BridgeRt, NatRt, PortEntry, PublishRt, RouterIf, Snapshot, VlanMode,
};
use crate::dp::{Batch, PortCounters};
use crate::pipeline::l2::{flush, process, Ctx, OutQueues};
use crate::port::mem::MemPort;
use crate::port::Port as _;
use crate::tables::conntrack::Conntrack;
use crate::tables::neigh::{Neigh, NeighMap};
use crate::tables::route::{Route, RouteTable};
use crate::tables::Fdb;
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The data path under test.
pub struct Rig {
    snap: Snapshot,
    mems: Vec<Arc<MemPort>>,
    neigh: NeighMap,
    out: OutQueues,
    now: u32,
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

impl Rig {
    pub fn new() -> Rig {
        let mut ports = Vec::new();
        let mut mems = Vec::new();
        let modes = [
            (0, VlanMode::from_conf(None, &[])),
            (0, VlanMode::from_conf(Some(5), &[])),
            (1, VlanMode::from_conf(None, &[])),
        ];
        for (i, (bridge, vlan)) in modes.into_iter().enumerate() {
            let m = Arc::new(MemPort::new(&format!("p{i}")));
            mems.push(m.clone());
            ports.push(Some(PortEntry {
                id: i as u32,
                name: format!("p{i}"),
                bridge,
                vlan,
                dev: m,
                counters: Arc::new(PortCounters::new(1)),
                group: 0,
                lock: None,
            }));
        }
        let net = |s: &str| s.parse().unwrap_or_default();
        let mut br0 = BridgeRt::plain("br0", Arc::new(Fdb::new(256, 300)), vec![0, 1]);
        br0.router = Some(RouterIf {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            net: net("10.0.0.0/24"),
            mac: router_mac("br0"),
        });
        let mut wan = BridgeRt::plain("wan", Arc::new(Fdb::new(256, 300)), vec![2]);
        wan.router = Some(RouterIf {
            ip: Ipv4Addr::new(198, 51, 100, 2),
            net: net("198.51.100.0/24"),
            mac: router_mac("wan"),
        });
        let mut routes = RouteTable::default();
        routes.insert(
            net("10.0.0.0/24"),
            Route {
                bridge: 0,
                via: None,
            },
        );
        routes.insert(
            net("198.51.100.0/24"),
            Route {
                bridge: 1,
                via: None,
            },
        );
        routes.insert(
            net("0.0.0.0/0"),
            Route {
                bridge: 1,
                via: Some(Ipv4Addr::new(198, 51, 100, 1)),
            },
        );
        let mut router_ips = HashMap::new();
        router_ips.insert(Ipv4Addr::new(10, 0, 0, 1), 0);
        router_ips.insert(Ipv4Addr::new(198, 51, 100, 2), 1);
        let mut publish = HashMap::new();
        publish.insert(
            (6u8, 8080u16),
            vec![PublishRt {
                ip: None,
                target_ip: Ipv4Addr::new(10, 0, 0, 5),
                target_port: 80,
            }],
        );
        let nat = NatRt {
            masq: vec![Some(1), None],
            publish,
            outside_ips: vec![Ipv4Addr::new(198, 51, 100, 2)],
        };
        let mut neigh = NeighMap::new();
        for (ip, last) in [([10, 0, 0, 5], 5u8), ([198, 51, 100, 1], 1)] {
            neigh.insert(
                Ipv4Addr::from(ip),
                Neigh {
                    mac: MacAddr([2, 0, 0, 0, 0, last]),
                    learned: 1,
                },
            );
        }
        let snap = Snapshot {
            generation: 1,
            ports,
            bridges: vec![br0, wan],
            routes,
            router_ips,
            nat,
            conntrack: Arc::new(Conntrack::new(256)),
        };
        let mut out = OutQueues::default();
        out.fit(&snap);
        Rig {
            snap,
            mems,
            neigh,
            out,
            now: 10,
        }
    }

    /// Receive `frames` on port `port` (0..=2), run them through the pipeline, send
    /// what comes out; returns how many frames left by any port.
    pub fn feed(&mut self, port: usize, frames: &[&[u8]]) -> usize {
        let port = port % self.mems.len();
        let mut b = Batch::new();
        for f in frames {
            self.mems[port].inject(f);
        }
        // A receive error is a malformed input the port refused: nothing to switch.
        if self.mems[port].recv(&mut b).is_err() {
            return 0;
        }
        let ctx = Ctx {
            worker: 0,
            now: self.now,
            snap: &self.snap,
            neigh: &self.neigh,
            punt: None,
        };
        process(&ctx, port as u32, &mut b, &mut self.out);
        flush(&ctx, &b, &mut self.out);
        self.now = self.now.wrapping_add(1);
        self.mems.iter().map(|m| m.take_sent().len()).sum()
    }
}

/// Fuzz entry point: `data` is a sequence of records `[port, len_hi, len_lo,
/// frame...]` (a short last record takes what is left); each batch of up to 16
/// frames for one port goes through the pipeline. Must never panic.
pub fn fuzz_pipeline(data: &[u8]) {
    let mut rig = Rig::new();
    let mut rest = data;
    let mut batch: Vec<&[u8]> = Vec::new();
    let mut batch_port = None;
    while let [port, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (frame, next) = tail.split_at(len);
        let port = usize::from(*port) % 3;
        if batch_port.is_some_and(|p| p != port) || batch.len() == 16 {
            rig.feed(batch_port.unwrap_or(0), &batch);
            batch.clear();
        }
        batch_port = Some(port);
        batch.push(frame);
        rest = next;
    }
    if let Some(p) = batch_port {
        rig.feed(p, &batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP SYN from 10.0.0.5 to the outside, addressed to br0's router.
    fn syn_out() -> Vec<u8> {
        let mut f = router_mac("br0").0.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 5, 0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 5, 198, 51, 100, 1,
        ];
        let c = crate::wire::ipv4::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f
    }

    #[test]
    fn routes_and_masquerades() {
        let mut r = Rig::new();
        assert_eq!(r.feed(0, &[&syn_out()]), 1);
        assert_eq!(
            r.snap.conntrack.entries(r.now).len(),
            2,
            "both directions tracked"
        );
    }

    #[test]
    fn fuzz_input_shapes_do_not_panic() {
        fuzz_pipeline(&[]);
        fuzz_pipeline(&[0]);
        fuzz_pipeline(&[1, 0xff, 0xff, 1, 2, 3]);
        let mut d = vec![0, 0, 54];
        d.extend_from_slice(&syn_out());
        d.extend_from_slice(&[2, 0, 3, 0xff, 0xff, 0xff]);
        fuzz_pipeline(&d);
    }
}
