//! Control layer: the Unix-socket server and the handlers that validate requests,
//! change the model, attach/detach ports, persist the db and install snapshots.
//!
//! - `state`: [`State`] (model, live-port registry, tables, workers) and
//!   [`State::mutate`], the one path by which configuration changes;
//! - `ports`: the live-port registry (open devices, ids, hand them to workers);
//! - [`snapshot`]: the pure `fn build(model, live ports, tables) -> Snapshot`;
//! - `views`: the protocol's read-only shapes (`show`, `list-*`, `stats`);
//! - [`handlers`]: one function per command;
//! - [`server`]: the socket.
//!
//! All mutations run under one mutex on the control plane ([`State`]); the data path
//! never takes it.

mod capture;
pub mod cluster;
pub mod events;
mod fastpath;
pub mod handlers;
pub mod metrics;
mod ports;
pub mod server;
pub mod snapshot;
mod state;
pub mod tools;
mod views;

pub use handlers::{HandlerError, Limits};
pub use state::{Live, State};
