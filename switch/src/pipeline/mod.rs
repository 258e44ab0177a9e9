//! Pipeline layer: the stages a batch runs through, run to completion on one worker.
//!
//! parse → ingress VLAN → L2 learn + lookup → per-port output queues → flush.
//! Stages take the whole batch and a [`Ctx`] (worker index, `now`, snapshot) read once
//! per batch; they allocate nothing, take no lock, and count every drop by reason.

pub mod l2;

pub use l2::{flush, process, Ctx, OutQueues};
