//! Datapath layer: worker threads, the [`Batch`] they process, per-worker counters, and
//! the [`Snapshot`] of the configuration they read.
//!
//! A worker owns the ports assigned to it (it alone calls `recv` on them), polls them
//! with mio, and runs each received batch to completion through the pipeline, which
//! queues output per transmit port and flushes once per batch.

pub mod balance;
mod batch;
pub mod clock;
pub mod snapshot;
pub mod stats;
pub mod worker;

pub use batch::{Batch, BATCH_SIZE, FRAME_CAP, HEADROOM};
pub use snapshot::{
    router_mac, slot_of, BridgeRt, NameMap, Names6, NatRt, PortEntry, PortLock, PublishRt,
    RouterIf, Snapshot, Upstream, VlanMode,
};
pub use stats::{DropReason, PortCounters};
pub use worker::{WorkerHandle, WorkerPool};
