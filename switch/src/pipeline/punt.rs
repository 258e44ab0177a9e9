//! Punting: handing a frame from a worker to the service thread (the slow path) over a
//! bounded channel. A full channel drops the frame and counts it, checked before the
//! frame is copied ([`offer`]); the data path never waits for the slow path.

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

/// Offer a copy of `frame` to the service thread. The queue's room is checked before
/// the copy (up to 64 KB for a GSO frame), so a flood that keeps the queue full costs
/// one check per frame, not an allocation and a copy that is then thrown away.
/// False when the frame was dropped (queue full, or the service thread gone); the
/// caller counts it as `punt_queue_full`.
pub fn offer(tx: &PuntTx, in_port: PortId, kind: PuntKind, vnet: VnetHdr, frame: &[u8]) -> bool {
    offer_with(tx, || Punt {
        in_port,
        kind,
        vnet,
        frame: frame.to_vec(),
    })
}

/// [`offer`] with the punt built by `make`, which is called only when the queue has
/// room. Another worker may fill the last place between the check and the send: then
/// that one copy is wasted and the frame still dropped and counted.
fn offer_with(tx: &PuntTx, make: impl FnOnce() -> Punt) -> bool {
    if tx.is_full() {
        return false;
    }
    tx.try_send(make()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn punt(n: usize) -> Punt {
        Punt {
            in_port: 1,
            kind: PuntKind::Local,
            vnet: VnetHdr::default(),
            frame: vec![0; n],
        }
    }

    #[test]
    fn a_full_queue_drops_without_copying() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let made = Cell::new(0);
        let offer = || {
            offer_with(&tx, || {
                made.set(made.get() + 1);
                punt(65_535)
            })
        };
        assert!(offer());
        assert!(offer());
        for _ in 0..100 {
            assert!(!offer(), "a full queue took a frame");
        }
        assert_eq!(made.get(), 2, "frames were copied for a full queue");
        // Room again: the next frame goes.
        rx.recv().expect("a punted frame");
        assert!(offer());
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn offer_copies_the_frame() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        assert!(offer(
            &tx,
            4,
            PuntKind::Resolve,
            VnetHdr::default(),
            &[1, 2, 3]
        ));
        assert!(!offer(&tx, 4, PuntKind::Resolve, VnetHdr::default(), &[4]));
        let p = rx.try_recv().expect("a punted frame");
        assert_eq!(
            (p.in_port, p.kind, p.frame),
            (4, PuntKind::Resolve, vec![1, 2, 3])
        );
        drop(rx);
        assert!(!offer(&tx, 4, PuntKind::Local, VnetHdr::default(), &[1]));
    }
}
