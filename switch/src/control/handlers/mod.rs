//! Request handlers: one function per command, grouped by what they act on.
//!
//! A mutation is validate → [`State::mutate`] (change a copy of the model, save the db,
//! commit, install a snapshot) → done; ports also open their device before the commit
//! and undo that if the commit fails, so a refused request leaves configuration,
//! devices and db as they were. Queries only read.

mod alloc;
mod bridge;
mod dhcp;
mod flow;
mod host;
mod nat;
mod nat6;
mod port;
mod route;
mod trace;

pub use super::state::{Limits, State};
use crate::config::{db, ConfigError};
use serde_json::Value;
use std::io;
use vswitch_proto::Command;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no such device: {0}")]
    NoDevice(String),
    #[error("device already exists: {0}")]
    DeviceExists(String),
    #[error("cannot add {name} as a port: {why}")]
    NotAPort { name: String, why: String },
    #[error("cannot attach {name}: {source}")]
    Attach { name: String, source: io::Error },
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("no such port: {0}")]
    NoSuchPort(String),
    #[error("too many ports (65535)")]
    TooManyPorts,
    #[error("cannot encode result: {0}")]
    Encode(String),
    /// A bad argument of a lab tool (flow, filter, impairment), named in the message.
    #[error("{0}")]
    Invalid(String),
    /// A cluster-wide change the agent or etcd refused (the message says which).
    #[error("{0}")]
    Cluster(String),
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, HandlerError> {
    serde_json::to_value(v).map_err(|e| HandlerError::Encode(e.to_string()))
}

/// `--if-exists`: a refusal because the object is missing becomes success.
fn unless_missing(r: Result<Value, HandlerError>, if_exists: bool) -> Result<Value, HandlerError> {
    use ConfigError as C;
    match r {
        Err(HandlerError::Config(
            C::NoSuchBridge(_)
            | C::NoSuchPort { .. }
            | C::NoSuchHost { .. }
            | C::NoSuchRoute(_)
            | C::NoSuchReservation { .. }
            | C::NoSuchMasq(_)
            | C::NotPublished { .. },
        )) if if_exists => Ok(Value::Null),
        r => r,
    }
}

impl State {
    /// Execute one command.
    pub fn handle(&mut self, cmd: Command) -> Result<Value, HandlerError> {
        match cmd {
            Command::Version => self.version(),
            Command::AddBr(req) => self.add_br(req),
            Command::DelBr { name, if_exists } => self.del_br(&name, if_exists),
            Command::ListBr => self.list_br(),
            Command::Show => self.show(),
            Command::AddPort(req) => self.add_port(req),
            Command::DelPort {
                bridge,
                port,
                if_exists,
            } => self.del_port(&bridge, &port, if_exists),
            Command::ListPorts { bridge } => self.list_ports(&bridge),
            Command::FdbShow { bridge } => self.fdb_show(&bridge),
            Command::FdbFlush { bridge } => self.fdb_flush(&bridge),
            Command::Stats { port } => self.stats(port),
            Command::AddHost(req) => self.add_host(req),
            Command::DelHost {
                bridge,
                name,
                if_exists,
            } => self.del_host(&bridge, &name, if_exists),
            Command::ListHosts { bridge } => self.list_hosts(&bridge),
            Command::AddRoute {
                cidr,
                via,
                may_exist,
            } => self.add_route(&cidr, &via, may_exist),
            Command::DelRoute { cidr, if_exists } => self.del_route(&cidr, if_exists),
            Command::ListRoutes => self.list_routes(),
            Command::DhcpLeases { bridge } => self.dhcp_leases(&bridge),
            Command::DhcpReserve {
                bridge,
                mac,
                ip,
                name,
                may_exist,
            } => self.dhcp_reserve(&bridge, &mac, &ip, name, may_exist),
            Command::DhcpUnreserve {
                bridge,
                mac,
                if_exists,
            } => self.dhcp_unreserve(&bridge, &mac, if_exists),
            Command::Masquerade { bridge, out } => self.masquerade(&bridge, &out),
            Command::DelMasquerade { bridge, if_exists } => self.del_masquerade(&bridge, if_exists),
            Command::Masquerade6 { bridge, out } => self.masquerade6(&bridge, &out),
            Command::DelMasquerade6 { bridge, if_exists } => {
                self.del_masquerade6(&bridge, if_exists)
            }
            Command::Publish(req) => self.publish_any(req),
            Command::Unpublish {
                proto,
                listen,
                if_exists,
            } => self.unpublish_any(&proto, &listen, if_exists),
            Command::ListPublished => self.list_published_any(),
            Command::CtShow => self.ct_show_any(),
            Command::Trace(req) => self.trace(req),
            // The server streams captures itself (it owns the connection).
            Command::Capture(_) => Err(HandlerError::Invalid(
                "capture needs its own connection".into(),
            )),
            Command::AllocAddress(req) => self.alloc_address(req),
            Command::ReleaseAddress { bridge, owner, ip } => {
                self.release_address(&bridge, &owner, ip.as_deref())
            }
            Command::ListAllocations { bridge } => self.list_allocations(&bridge),
            Command::SetPort { port, set } => self.set_port(&port, &set),
            Command::ClearPort { port } => self.clear_port(&port),
            Command::AddMirror(req) => self.add_mirror(req),
            Command::DelMirror {
                bridge,
                name,
                if_exists,
            } => self.del_mirror(&bridge, &name, if_exists),
            Command::FastpathShow { bridge } => self.fastpath_show(bridge.as_deref()),
            // Overlay bridges, the agent's link, cluster-show (`control::cluster`).
            other => super::cluster::handle(self, other),
        }
    }
}
