//! Config layer: the [`Model`] the user asked for (validated, persisted in the db) and
//! the [`Snapshot`] the workers read.
//!
//! The control thread owns the model. Each accepted change builds a new immutable
//! snapshot and publishes it with one atomic pointer swap (arc-swap, RCU style);
//! workers load it once per batch and never lock.

pub mod alloc;
pub mod db;
pub mod model;
pub mod snapshot;

pub use model::{
    BridgeConf, ConfigError, DhcpRange, HostConf, Lease, MasqConf, Model, PortConf, PublishConf,
    RouteConf, VxlanConf,
};
pub use snapshot::{
    router_mac, BridgeRt, NameMap, NatRt, PortEntry, PublishRt, RouterIf, Snapshot, VlanMode,
};
