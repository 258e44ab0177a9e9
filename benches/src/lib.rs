//! Shared fixtures for the criterion benches: a bridge of ports whose transmit side
//! discards frames, so a bench measures the stage, not a device.

use std::os::fd::RawFd;
use std::sync::Arc;
use vswitch::dp::snapshot::{BridgeRt, PortEntry, Snapshot, VlanMode};
use vswitch::dp::PortCounters;
use vswitch::port::{Port, PortRx, TxFrame, TxResult};
use vswitch::tables::Fdb;

/// A port that receives nothing and accepts every frame.
pub struct NullPort;

impl Port for NullPort {
    fn name(&self) -> &str {
        "null"
    }
    fn fd(&self) -> Option<RawFd> {
        None
    }
    fn ifindex(&self) -> Option<u32> {
        None
    }
    fn take_rx(&self) -> Option<Box<dyn PortRx>> {
        None
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        TxResult {
            sent: frames.len(),
            bytes: frames.iter().map(TxFrame::len).sum(),
            failed: 0,
            full: 0,
        }
    }
}

/// One bridge with `n` trunk ports (ids 0..n) on null devices.
pub fn bridge(n: usize, fdb_cap: usize) -> Snapshot {
    let ports = (0..n)
        .map(|i| {
            Some(PortEntry {
                id: i as u32,
                name: format!("p{i}"),
                bridge: 0,
                vlan: VlanMode::from_conf(None, &[]),
                dev: Arc::new(NullPort),
                counters: Arc::new(PortCounters::new(1)),
                group: 0,
                lock: None,
                mirror_to: Vec::new(),
                mirror_out: false,
                impair: None,
            })
        })
        .collect();
    Snapshot {
        generation: 1,
        ports,
        bridges: vec![BridgeRt::plain(
            "br0",
            Arc::new(Fdb::new(fdb_cap, 300)),
            (0..n as u16).collect(),
        )],
        ..Default::default()
    }
}

/// A 64-byte IPv4/UDP-like frame from MAC `src` to MAC `dst` (low bytes).
pub fn frame(dst: u16, src: u16) -> Vec<u8> {
    let d = dst.to_be_bytes();
    let s = src.to_be_bytes();
    let mut f = vec![
        0x02, 0, 0, 0, d[0], d[1], 0x02, 0, 0, 1, s[0], s[1], 0x08, 0x00,
    ];
    f.resize(64, 0x45);
    f
}
