//! Tables layer: state the pipeline reads and updates per frame.

pub mod fdb;

pub use fdb::{Fdb, FdbRecord, PortId};
