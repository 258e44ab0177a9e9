//! Tables layer: state the pipeline reads and updates per frame, and the DHCP leases
//! the slow path keeps ([`leases`]).

pub mod conntrack;
pub mod conntrack6;
pub mod fdb;
pub mod leases;
pub mod leases6;
pub mod neigh;
pub mod route;
pub mod seqtable;

pub use conntrack::Conntrack;
pub use conntrack6::Conntrack6;
pub use fdb::{Fdb, FdbRecord, PortId};
pub use leases::LeaseStore;
pub use neigh::NeighCache;
pub use route::{Route, Route6, Route6Table, RouteTable};
pub use seqtable::Lookup;
