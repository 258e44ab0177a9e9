//! The plugin's HTTP server: tiny_http on a Unix socket, one request at a time (every
//! handler talks to vswitchd, which applies changes one at a time anyway).
//!
//! Docker POSTs JSON to `/Plugin.Activate`, `/NetworkDriver.*` and `/IpamDriver.*`.
//! An unknown path is 404 (Docker reads it as "not implemented"); a failed operation
//! is 200 with the message, which `docker` prints to its user: under `Err` for the
//! network driver and `Error` for the IPAM driver (libnetwork's two `Response`
//! types); the reply carries both, each side ignores the other's.

use crate::{endpoint, ipam, network, Driver};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Content type of every reply (what Docker's plugin client sends and accepts).
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
/// Longest request body read; Docker's are a few hundred bytes.
const MAX_BODY: u64 = 1 << 20;

/// What a handler answers: a JSON reply, or an error for `{"Err": …}`.
type Handler = fn(&Arc<Driver>, &[u8]) -> Result<Value>;

/// The handler of `path`, if there is one.
fn route(path: &str) -> Option<Handler> {
    let h: Handler = match path {
        "/Plugin.Activate" => |_, _| Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
        "/NetworkDriver.GetCapabilities" => {
            |_, _| Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
        }
        "/NetworkDriver.CreateNetwork" => network::create,
        "/NetworkDriver.DeleteNetwork" => network::delete,
        "/NetworkDriver.CreateEndpoint" => endpoint::create,
        "/NetworkDriver.DeleteEndpoint" => endpoint::delete,
        "/NetworkDriver.EndpointOperInfo" => endpoint::oper_info,
        "/NetworkDriver.Join" => endpoint::join,
        "/NetworkDriver.Leave" => endpoint::leave,
        "/NetworkDriver.ProgramExternalConnectivity" => endpoint::program_external,
        "/NetworkDriver.RevokeExternalConnectivity" => endpoint::revoke_external,
        // Discovery and gossip belong to swarm-scope drivers; a local driver has none.
        "/NetworkDriver.DiscoverNew" | "/NetworkDriver.DiscoverDelete" => |_, _| Ok(json!({})),
        "/IpamDriver.GetCapabilities" => {
            |_, _| Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
        }
        "/IpamDriver.GetDefaultAddressSpaces" => |_, _| {
            Ok(json!({
                "LocalDefaultAddressSpace": ipam::LOCAL_SPACE,
                "GlobalDefaultAddressSpace": ipam::GLOBAL_SPACE,
            }))
        },
        "/IpamDriver.RequestPool" => ipam::request_pool,
        "/IpamDriver.ReleasePool" => ipam::release_pool,
        "/IpamDriver.RequestAddress" => ipam::request_address,
        "/IpamDriver.ReleaseAddress" => ipam::release_address,
        _ => return None,
    };
    Some(h)
}

/// Decode a request body (an empty body is `{}`).
pub(crate) fn decode<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).context("malformed request from Docker")
}

/// Answer one request: (status, body).
pub(crate) fn answer(driver: &Arc<Driver>, path: &str, body: &[u8]) -> (u16, Value) {
    let Some(handler) = route(path) else {
        tracing::debug!(path, "unknown endpoint");
        return (404, json!({"Err": format!("{path} is not implemented")}));
    };
    match handler(driver, body) {
        Ok(v) => {
            tracing::debug!(path, reply = %v, "ok");
            (200, v)
        }
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            tracing::warn!(path, error = %msg, "refused");
            (200, json!({ "Err": msg, "Error": msg }))
        }
    }
}

/// Remove a socket left by an earlier run (nothing else: a regular file there is
/// somebody else's).
fn remove_stale(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display())),
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

pub(crate) fn run(driver: Arc<Driver>, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create plugin directory {}", dir.display()))?;
    }
    remove_stale(path)?;
    // Block the stop signals in every thread (the threads spawned later inherit the
    // mask), so that only the waiting thread below receives them.
    let mut stop = nix::sys::signal::SigSet::empty();
    stop.add(nix::sys::signal::Signal::SIGTERM);
    stop.add(nix::sys::signal::Signal::SIGINT);
    stop.thread_block().context("block SIGTERM/SIGINT")?;
    let server = Arc::new(
        tiny_http::Server::http_unix(path)
            .map_err(|e| anyhow::anyhow!("listen on {}: {e}", path.display()))?,
    );
    tracing::info!(socket = %path.display(), vswitchd = %driver.socket.display(),
        uplink = driver.uplink.as_deref().unwrap_or("-"), "serving");
    let stopper = Arc::clone(&server);
    std::thread::spawn(move || {
        if let Ok(sig) = stop.wait() {
            tracing::info!(signal = ?sig, "stopping");
        }
        stopper.unblock();
    });
    for mut req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let mut body = Vec::new();
        let (status, reply) = match req.as_reader().take(MAX_BODY).read_to_end(&mut body) {
            Ok(_) => answer(&driver, &path, &body),
            Err(e) => (400, json!({"Err": format!("read request: {e}")})),
        };
        let mut resp = tiny_http::Response::from_string(reply.to_string()).with_status_code(status);
        if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE) {
            resp.add_header(h);
        }
        if let Err(e) = req.respond(resp) {
            tracing::warn!(path, error = %e, "reply not sent");
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    fn driver() -> Arc<Driver> {
        Arc::new(Driver {
            socket: "/nonexistent/vswitchd.sock".into(),
            uplink: None,
            own_ns: vswitch_hostnet::netns::NetNs::open(Path::new("/proc/self/ns/net")).unwrap(),
            changes: Mutex::new(()),
            deleted: Mutex::new(HashSet::new()),
            pools: Mutex::new(HashSet::new()),
        })
    }

    #[test]
    fn routes_and_errors() {
        let d = driver();
        let (code, v) = answer(&d, "/Plugin.Activate", b"");
        assert_eq!(code, 200);
        assert_eq!(v, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
        let (_, v) = answer(&d, "/NetworkDriver.GetCapabilities", b"{}");
        assert_eq!(v["Scope"], "local");
        let (code, _) = answer(&d, "/NetworkDriver.AllocateNetwork", b"{}");
        assert_eq!(code, 404);
        // A failure is 200 with the message under both names.
        let (code, v) = answer(&d, "/NetworkDriver.CreateNetwork", b"{not json");
        assert_eq!(code, 200);
        assert!(v["Err"]
            .as_str()
            .unwrap()
            .starts_with("malformed request from Docker"));
        assert_eq!(v["Err"], v["Error"]);
        // vswitchd down: the client's message, with how to start it.
        let (_, v) = answer(
            &d,
            "/NetworkDriver.CreateNetwork",
            br#"{"NetworkID":"8c2f0a1b2c3d","IPv4Data":[{"Pool":"10.9.0.0/24","Gateway":"10.9.0.1/24"}]}"#,
        );
        let e = v["Err"].as_str().unwrap();
        assert!(e.starts_with("vswitchd is not running"), "{e}");
        let (_, v) = answer(&d, "/IpamDriver.RequestPool", br#"{"V6":true}"#);
        assert!(v["Error"].as_str().unwrap().contains("IPv4 pools only"));
    }
}
