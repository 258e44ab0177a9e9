//! Tables layer: state the pipeline reads and updates per frame.

pub mod fdb;
pub mod neigh;
pub mod route;

pub use fdb::{Fdb, FdbRecord, PortId};
pub use neigh::NeighCache;
pub use route::{Route, RouteTable};
