//! Tables layer: state the pipeline reads and updates per frame.

pub mod conntrack;
pub mod fdb;
pub mod neigh;
pub mod route;
pub mod seqtable;

pub use conntrack::Conntrack;
pub use fdb::{Fdb, FdbRecord, PortId};
pub use neigh::NeighCache;
pub use route::{Route, RouteTable};
pub use seqtable::Lookup;
