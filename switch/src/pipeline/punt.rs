//! Punting: handing a frame from a worker to the service thread (the slow path) over a
//! bounded channel. A full channel drops the frame and counts it; the data path never
//! waits for the slow path.

use crate::tables::PortId;
use crate::wire::VnetHdr;

/// Why a frame goes to the service thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PuntKind {
    /// For the router itself: ARP, ICMP to a gateway, DHCP, DNS.
    Local,
    /// To be routed, but the next hop's MAC is unknown: queue it and ARP.
    Resolve,
    /// TTL would reach zero: answer ICMP time exceeded.
    TtlExceeded,
    /// No route: answer ICMP network unreachable.
    NoRoute,
    /// Too big for the egress MTU with DF set: answer ICMP fragmentation needed.
    FragNeeded { mtu: u16 },
}

/// A frame on its way to the service thread.
#[derive(Debug, Clone)]
pub struct Punt {
    pub in_port: PortId,
    pub kind: PuntKind,
    pub vnet: VnetHdr,
    pub frame: Vec<u8>,
}

/// Queue depth of the punt channel.
pub const PUNT_QUEUE: usize = 4096;

pub type PuntTx = crossbeam_channel::Sender<Punt>;
pub type PuntRx = crossbeam_channel::Receiver<Punt>;
