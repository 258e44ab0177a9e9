//! vswitchd's network namespace: where the host ends of veth pairs are made, wherever
//! the client itself runs.

use crate::netns::NetNs;
use anyhow::{Context, Result};
use std::os::unix::net::UnixStream;
use std::path::Path;
use vswitch_proto::{Client, Command, VersionInfo};

/// vswitchd's PID as this process sees it: SO_PEERCRED on a connection to its socket
/// (translated into our PID namespace by the kernel).
pub fn peer_pid(path: &Path) -> Option<u32> {
    let s = UnixStream::connect(path).ok()?;
    let c = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    u32::try_from(c.pid()).ok().filter(|p| *p > 0)
}

/// Connect to vswitchd at `path` and open its network namespace.
pub fn connect(path: &Path) -> Result<(Client, NetNs)> {
    let mut client = Client::connect(path)?;
    let v: VersionInfo = client.call(Command::Version)?;
    let pid = peer_pid(path).unwrap_or(v.pid);
    let ns = NetNs::open(Path::new(&format!("/proc/{pid}/ns/net")))
        .with_context(|| format!("find vswitchd's network namespace (PID {pid})"))?;
    Ok((client, ns))
}
