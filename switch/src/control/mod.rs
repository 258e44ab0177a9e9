//! Control layer: the Unix-socket server and the handlers that validate requests,
//! change the model, attach/detach ports, persist the db and publish snapshots.
//!
//! All mutations run under one mutex on the control plane ([`State`]); the data path
//! never takes it.

mod fastpath;
pub mod handlers;
pub mod server;

pub use handlers::State;
