//! `vswitch-docker`: a Docker network driver and IPAM driver backed by vswitchd.
//!
//! Docker finds the driver by its socket, `DIR/NAME.sock` (default
//! `/run/docker/plugins/vswitch.sock`), and speaks libnetwork's remote driver API to
//! it: HTTP POST with JSON bodies. Layers, top to bottom:
//!
//! - `server`: the HTTP server (tiny_http on the Unix socket), routing a path to a
//!   handler; unknown paths 404, failures `{"Err": "…"}`;
//! - `network`, `endpoint`, `ipam`: the handlers; `network` also turns a Docker
//!   network into a vswitchd bridge;
//! - `vs` (vswitchd through `vswitch-proto`, the only way this crate reaches the
//!   switch) and `engine` (the Docker Engine API, for the names Docker does not send);
//! - `api`: the plugin API's wire types.
//!
//! # State
//! The driver keeps nothing that it cannot rebuild: everything is in vswitchd (the
//! bridge carries `external_ids.docker_network`, a port `docker_endpoint`, an
//! address is held by `docker-ep:ID`, a DNS name is registered with source
//! `docker:ID`) or in Docker. Restarting vswitch-docker or vswitchd loses nothing;
//! the in-memory sets below only cover the milliseconds before vswitchd knows.

mod api;
mod endpoint;
mod engine;
mod ipam;
mod network;
mod resync;
mod server;
mod vs;

use anyhow::{Context, Result};
use clap::Parser;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use vswitch_hostnet::netns::NetNs;

/// A Docker network driver and IPAM driver backed by vswitchd (libnetwork remote API).
#[derive(Debug, Clone, Parser)]
#[command(name = "vswitch-docker", version)]
pub struct Args {
    /// vswitchd's control socket [default: $VSWITCH_SOCK, else /run/vswitch/vswitchd.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Driver name: `docker network create -d NAME`, `--ipam-driver NAME`
    #[arg(long, default_value = "vswitch")]
    pub name: String,
    /// Where Docker looks for plugin sockets
    #[arg(long, default_value = "/run/docker/plugins")]
    pub plugin_dir: PathBuf,
    /// The vswitchd bridge leading outside: `-p` is published on its gateway address
    /// and networks (unless --internal) are masqueraded behind it
    #[arg(long)]
    pub uplink: Option<String>,
    /// Log filter (tracing's env-filter syntax)
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// What every handler shares.
pub(crate) struct Driver {
    /// vswitchd's control socket.
    socket: PathBuf,
    uplink: Option<String>,
    /// dockerd's network namespace (this process's): where the container ends of
    /// veth pairs are made, for dockerd to move into the container.
    own_ns: NetNs,
    /// Serialises changes to vswitchd between the handlers and the background
    /// threads that name bridges and register DNS names.
    changes: Mutex<()>,
    /// Networks deleted while a background thread may still be creating their bridge.
    deleted: Mutex<HashSet<String>>,
    /// Pools the IPAM driver handed out whose bridge may not exist yet.
    pools: Mutex<HashSet<ipnet::Ipv4Net>>,
}

/// A poisoned lock only means another thread panicked while holding it; the data
/// (a unit or a set) is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Driver {
    fn changes(&self) -> MutexGuard<'_, ()> {
        lock(&self.changes)
    }
}

/// Serve until SIGTERM or SIGINT.
pub fn serve(args: Args) -> Result<()> {
    if args.name.is_empty() || args.name.contains('/') {
        anyhow::bail!("bad --name {:?}: a file name", args.name);
    }
    let socket = vswitch_proto::socket_path(args.socket.as_deref());
    let own_ns = NetNs::open(Path::new("/proc/self/ns/net"))
        .context("open this process's network namespace")?;
    let driver = Arc::new(Driver {
        socket,
        uplink: args.uplink.clone(),
        own_ns,
        changes: Mutex::new(()),
        deleted: Mutex::new(HashSet::new()),
        pools: Mutex::new(HashSet::new()),
    });
    // What changed in Docker while the driver was down.
    resync::resync(&driver);
    let path = args.plugin_dir.join(format!("{}.sock", args.name));
    server::run(driver, &path)
}
