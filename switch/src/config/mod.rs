//! Config layer: the [`Model`] the user asked for (validated, persisted in the db).
//!
//! The control thread owns the model. Each accepted change builds a new immutable
//! [`crate::dp::Snapshot`] from it (`control::snapshot::build`) and installs it with one
//! atomic pointer swap (arc-swap, RCU style); workers load it once per batch and never
//! lock. Nothing here depends on the data path.

pub mod alloc;
pub mod db;
pub mod model;
pub mod nat6;

pub use model::{
    BridgeConf, ConfigError, DhcpRange, HostConf, Lease, MasqConf, Model, OverlayConf, PortConf,
    PublishConf, RouteConf, VxlanConf,
};
