//! Port layer: everything frames enter and leave by.
//!
//! A [`Port`] sends [`TxFrame`]s; any worker may call `send` at once (the kernel
//! serialises writes on one fd), so it takes `&self`, and the port is shared as an
//! `Arc<dyn Port>` (the Snapshot, the control thread, every worker).
//!
//! # Receive ownership
//! Receiving goes through the port's [`PortRx`], its receive side (OVS: an rxq), of
//! which exactly one exists: the port hands it out once ([`Port::take_rx`]), and it is
//! `Send` but neither `Sync` nor `Clone`. Whoever holds it is the one thread that may
//! receive; giving the port to another worker means moving the `PortRx` there
//! (`dp::worker`: the old worker deregisters the port and sends its `PortRx` to the
//! new one itself). So two workers can never read one receive ring, whatever the
//! timing: the type system, not a timeout, keeps the ring's single-reader contract.
//!
//! Kinds: [`afpacket::AfPacketPort`] (`system`: an existing netdev through AF_PACKET),
//! [`tap::TapPort`] (`tap` and `internal`: a TAP device vswitchd creates), and
//! [`mem::MemPort`] (in-memory, for pipeline tests). All `unsafe` lives in [`sys`].

pub mod afpacket;
pub mod mem;
pub mod sys;
pub mod tap;
pub mod vxlan;

use crate::dp::Batch;
use crate::wire::VnetHdr;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// One frame to transmit, rebuilt from its parts without copying:
/// `head` (destination and source MAC), an optional 802.1Q `tag`, then `rest`
/// (from the EtherType on). This is how egress pushes and pops VLAN tags.
#[derive(Debug, Clone, Copy)]
pub struct TxFrame<'a> {
    /// Offload state to hand to the device with the frame.
    pub vnet: VnetHdr,
    pub head: &'a [u8],
    pub tag: Option<[u8; 4]>,
    pub rest: &'a [u8],
}

impl TxFrame<'_> {
    pub fn len(&self) -> usize {
        self.head.len() + if self.tag.is_some() { 4 } else { 0 } + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one contiguous buffer (tests and slow paths only).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(self.head);
        if let Some(t) = self.tag {
            v.extend_from_slice(&t);
        }
        v.extend_from_slice(self.rest);
        v
    }
}

/// Outcome of a receive call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxResult {
    /// Frames appended to the batch.
    pub received: usize,
    /// Frames read but discarded by the port (truncated, outgoing echoes).
    pub dropped: usize,
    /// True when the port has no more frames right now (the worker waits for the
    /// next readiness event instead of polling again).
    pub drained: bool,
}

/// Outcome of a send call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxResult {
    pub sent: usize,
    pub bytes: usize,
    /// Frames the kernel refused (too big, device down).
    pub failed: usize,
    /// Frames not sent because the device's queue (or the socket's send buffer) was
    /// full: a send stops at the first `EAGAIN`/`ENOBUFS` and counts the rest here,
    /// instead of knocking on the full queue once per remaining frame (as OVS does).
    pub full: usize,
}

/// The receive side of a port. One per port, owned by the worker that polls it (see
/// the module docs); not `Sync`, so `recv` can take `&mut self` and keep cursor state
/// without atomics.
pub trait PortRx: Send {
    /// Receive frames into the free slots of `batch`.
    fn recv(&mut self, batch: &mut Batch) -> io::Result<RxResult>;
}

/// Where a port keeps its receive side until a worker takes it. Touched by the control
/// thread when a port is first polled, never per frame; the mutex only makes the port
/// `Sync` without making the receive side `Sync`.
pub struct RxSlot<R>(parking_lot::Mutex<Option<R>>);

impl<R: PortRx + 'static> RxSlot<R> {
    pub fn new(rx: R) -> RxSlot<R> {
        RxSlot(parking_lot::Mutex::new(Some(rx)))
    }

    /// A slot with nothing to take (a port that never receives).
    pub fn empty() -> RxSlot<R> {
        RxSlot(parking_lot::Mutex::new(None))
    }

    /// The receive side, the first time; `None` after.
    pub fn take(&self) -> Option<Box<dyn PortRx>> {
        self.0.lock().take().map(|r| Box::new(r) as Box<dyn PortRx>)
    }
}

/// A switch port.
pub trait Port: Send + Sync {
    /// Kernel name of the device ("" for in-memory ports).
    fn name(&self) -> &str;
    /// File descriptor to poll for readability; `None` for ports without one.
    fn fd(&self) -> Option<RawFd>;
    /// Kernel ifindex, when the port is a netdev.
    fn ifindex(&self) -> Option<u32>;
    /// Hand out the port's receive side: `Some` the first time, `None` after (and for
    /// ports that never receive). The worker pool takes it when the port is first
    /// polled; from then on it moves from worker to worker.
    fn take_rx(&self) -> Option<Box<dyn PortRx>>;
    /// Send frames; never blocks. Each frame (each datagram, for a tunnel) is counted
    /// in one of the result's `sent`, `failed` or `full`.
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult;
    /// Frames the kernel dropped before we could read them (socket buffer full), since
    /// the port was opened. Control thread only.
    fn kernel_rx_drops(&self) -> u64 {
        0
    }
    /// The AF_PACKET socket frames are received on, for the kernel fast path's socket
    /// filter (`fastpath`); `None` for ports that do not receive through one.
    fn packet_socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// The ifindex of the TAP netdev of an `internal` port, which vswitchd created in
    /// its own namespace for the host (frames the host sends leave through that
    /// netdev's egress; frames for the host enter its ingress), for the kernel fast
    /// path's egress program (`fastpath`). `None` for every other port, `tap` ports
    /// included: their netdev belongs to a guest and usually lives in another
    /// namespace, where a redirect cannot reach it.
    fn tap_ifindex(&self) -> Option<u32> {
        None
    }
}
