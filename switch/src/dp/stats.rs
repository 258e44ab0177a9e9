//! Per-port counters, one cache-line-padded slot per worker, summed on read.
//!
//! # Thread safety
//! Worker `w` is the only writer of slot `w` (relaxed load + store, no read-modify-write
//! across cores); readers (the control thread) sum all slots with relaxed loads. A
//! reader may see a total that is a few frames old; it never sees a torn value.

use crate::port::TxResult;
use crossbeam_utils::CachePadded;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was dropped. Every drop has one, and `vswitchctl stats` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than its Ethernet/802.1Q header, or larger than a receive buffer.
    Malformed = 0,
    /// Tagged frame on an access port, or VLAN not in a trunk's list.
    VlanFiltered,
    /// Destination learned on the ingress port itself (no reflection).
    SameSegment,
    /// Received on a port that is no longer configured.
    NoPort,
    /// The kernel refused the transmission (too big, link down).
    TxError,
    /// Source MAC is multicast or zero: never a valid sender.
    BadSource,
    /// Sent to the router but not routable (multicast, not IPv4, bad source).
    NotRoutable,
    /// Between an `--isolated` bridge and another bridge.
    Isolated,
    /// Larger than the egress MTU without DF (vswitchd does not fragment).
    TooBig,
    /// The slow path's queue was full (a flood of ARP/ICMP/DHCP/DNS).
    PuntQueueFull,
    /// Dropped by a service: unanswerable request, ARP resolution failed, rate limit.
    Service,
    /// Port security: a source MAC (or ARP sender MAC) other than the port's lock.
    SpoofedMac,
    /// Port security: a source address (IPv4, ARP sender, IPv6, a Neighbor
    /// Advertisement's target) the port is not locked to, or a frame of a family or
    /// protocol the port's lock does not let through.
    SpoofedIp,
    /// A NAT connection whose conntrack bucket stayed busy (lookup or insert): the
    /// packet is dropped rather than taken for a new connection (TCP retransmits).
    CtBusy,
    /// Masquerade found no free source port for a new connection.
    NatExhausted,
    /// The egress device's queue (or socket buffer) was full; the rest of the batch
    /// was dropped without trying each frame.
    TxQueueFull,
    /// Link impairment (`set-port`): the link is down, the frame was lost or
    /// exceeded the rate limit's backlog.
    Impaired,
    /// Received on a mirror's output port, which takes no part in forwarding.
    MirrorOutput,
    /// Port security: a Router Advertisement or Redirect from a port locked to IPv6
    /// addresses (a guest must not act as a router, RFC 6105's RA guard).
    RogueRouter,
}

impl DropReason {
    pub const COUNT: usize = 19;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::VlanFiltered,
        DropReason::SameSegment,
        DropReason::NoPort,
        DropReason::TxError,
        DropReason::BadSource,
        DropReason::NotRoutable,
        DropReason::Isolated,
        DropReason::TooBig,
        DropReason::PuntQueueFull,
        DropReason::Service,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::CtBusy,
        DropReason::NatExhausted,
        DropReason::TxQueueFull,
        DropReason::Impaired,
        DropReason::MirrorOutput,
        DropReason::RogueRouter,
    ];

    /// Stable name used in `stats` output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::VlanFiltered => "vlan_filtered",
            DropReason::SameSegment => "same_segment",
            DropReason::NoPort => "no_port",
            DropReason::TxError => "tx_error",
            DropReason::BadSource => "bad_source",
            DropReason::NotRoutable => "not_routable",
            DropReason::Isolated => "isolated",
            DropReason::TooBig => "too_big",
            DropReason::PuntQueueFull => "punt_queue_full",
            DropReason::Service => "service",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::CtBusy => "conntrack_busy",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::Impaired => "impaired",
            DropReason::MirrorOutput => "mirror_output",
            DropReason::RogueRouter => "rogue_router",
        }
    }
}

#[derive(Default)]
struct Slot {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer per slot: a plain load/store pair, no locked instruction.
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counters of one port.
pub struct PortCounters {
    slots: Box<[CachePadded<Slot>]>,
}

/// Summed counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl PortCounters {
    /// Counters for `workers` writers (the control thread uses the last slot).
    pub fn new(workers: usize) -> PortCounters {
        PortCounters {
            slots: (0..workers + 1)
                .map(|_| CachePadded::new(Slot::default()))
                .collect(),
        }
    }

    #[inline]
    fn slot(&self, w: usize) -> &Slot {
        let i = w.min(self.slots.len() - 1);
        &self.slots[i]
    }

    #[inline]
    pub fn rx(&self, w: usize, packets: u64, bytes: u64) {
        let s = self.slot(w);
        bump(&s.rx_packets, packets);
        bump(&s.rx_bytes, bytes);
    }

    #[inline]
    pub fn tx(&self, w: usize, packets: u64, bytes: u64) {
        let s = self.slot(w);
        bump(&s.tx_packets, packets);
        bump(&s.tx_bytes, bytes);
    }

    /// Count what one `Port::send` did: frames sent, and frames dropped because the
    /// kernel refused them (`tx_error`) or the queue was full (`tx_queue_full`).
    #[inline]
    pub fn sent(&self, w: usize, r: &TxResult) {
        self.tx(w, r.sent as u64, r.bytes as u64);
        if r.failed > 0 {
            self.dropped(w, DropReason::TxError, r.failed as u64);
        }
        if r.full > 0 {
            self.dropped(w, DropReason::TxQueueFull, r.full as u64);
        }
    }

    #[inline]
    pub fn dropped(&self, w: usize, reason: DropReason, n: u64) {
        bump(&self.slot(w).drops[reason as usize], n);
    }

    /// Received frames, summed over workers (cheaper than `totals`).
    pub fn rx_packets(&self) -> u64 {
        self.slots.iter().map(|s| s.rx_packets.load(Relaxed)).sum()
    }

    pub fn totals(&self) -> CounterTotals {
        let mut t = CounterTotals::default();
        for s in self.slots.iter() {
            t.rx_packets += s.rx_packets.load(Relaxed);
            t.rx_bytes += s.rx_bytes.load(Relaxed);
            t.tx_packets += s.tx_packets.load(Relaxed);
            t.tx_bytes += s.tx_bytes.load(Relaxed);
        }
        for r in DropReason::ALL {
            let n: u64 = self
                .slots
                .iter()
                .map(|s| s.drops[r as usize].load(Relaxed))
                .sum();
            if n > 0 {
                t.drops.insert(r.as_str(), n);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_workers() {
        let c = PortCounters::new(2);
        c.rx(0, 1, 100);
        c.rx(1, 2, 200);
        c.tx(5, 1, 60); // out-of-range worker lands in the last slot
        c.dropped(0, DropReason::VlanFiltered, 3);
        let t = c.totals();
        assert_eq!(
            (t.rx_packets, t.rx_bytes, t.tx_packets, t.tx_bytes),
            (3, 300, 1, 60)
        );
        assert_eq!(t.drops.get("vlan_filtered"), Some(&3));
        assert_eq!(t.drops.len(), 1);
    }

    #[test]
    fn a_send_result_counts_each_frame_once() {
        let c = PortCounters::new(1);
        c.sent(
            0,
            &TxResult {
                sent: 3,
                bytes: 180,
                failed: 1,
                full: 28,
            },
        );
        let t = c.totals();
        assert_eq!((t.tx_packets, t.tx_bytes), (3, 180));
        assert_eq!(t.drops.get("tx_error"), Some(&1));
        assert_eq!(t.drops.get("tx_queue_full"), Some(&28));
    }
}
