//! Pipeline layer: the stages a batch runs through, run to completion on one worker.
//!
//! parse → ingress VLAN → L2 learn + lookup → (to the router: L3 route, TTL, ARP)
//! → per-port output queues → flush. Frames for the router's services are punted.
//! Stages take the whole batch and a [`Ctx`] (worker index, `now`, snapshot) read once
//! per batch; they allocate nothing, take no lock, and count every drop by reason.

pub mod l2;
pub mod l3;
pub mod nat;
pub mod punt;
pub mod rig;

pub use l2::{flush, process, Ctx, OutQueues};
