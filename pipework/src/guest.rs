//! Finding a guest's network namespace: `pid:N`, a named namespace (`ip netns`), or a
//! Docker container through the Docker Engine API (`$DOCKER_HOST` or the default
//! socket).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// A guest's network namespace.
#[derive(Debug, Clone)]
pub struct Guest {
    /// `/proc/PID/ns/net` or `/run/netns/NAME`.
    pub netns: PathBuf,
    /// What `ip link set DEV netns X` takes: a PID or a namespace name.
    pub ip_target: String,
    /// Name registered in DNS (container or namespace name).
    pub dns_name: Option<String>,
}

fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// GET `path` from the Docker Engine; `None` if there is no engine to ask.
fn docker_get(path: &str) -> Result<Option<(u16, String)>> {
    let sock = docker_socket();
    let mut s = match UnixStream::connect(&sock) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .context("read from the Docker engine")?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Some((code, body.to_string())))
}

/// Resolve GUEST.
pub fn find(guest: &str) -> Result<Guest> {
    if let Some(pid) = guest.strip_prefix("pid:") {
        let n: u32 = pid
            .parse()
            .map_err(|_| anyhow::anyhow!("bad guest {guest:?}: pid:N"))?;
        let netns = PathBuf::from(format!("/proc/{n}/ns/net"));
        if !netns.exists() {
            bail!("no such process: {n}");
        }
        return Ok(Guest {
            netns,
            ip_target: n.to_string(),
            dns_name: None,
        });
    }
    if !guest.is_empty() && !guest.contains('/') {
        let named = PathBuf::from("/run/netns").join(guest);
        if named.exists() {
            return Ok(Guest {
                netns: named,
                ip_target: guest.to_string(),
                dns_name: Some(guest.to_string()),
            });
        }
    }
    let safe: String = guest
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
        .collect();
    if safe != guest || guest.is_empty() {
        bail!("no such container or network namespace: {guest}");
    }
    match docker_get(&format!("/containers/{guest}/json"))? {
        None => bail!("no such container or network namespace: {guest} (no network namespace of that name, and no Docker engine at {})", docker_socket().display()),
        Some((404, _)) => bail!("no such container or network namespace: {guest}"),
        Some((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).context("Docker engine reply")?;
            let pid = v["State"]["Pid"].as_u64().unwrap_or(0);
            if pid == 0 {
                bail!("container {guest} is not running");
            }
            let name = v["Name"].as_str().map(|n| n.trim_start_matches('/').to_string());
            Ok(Guest { netns: PathBuf::from(format!("/proc/{pid}/ns/net")), ip_target: pid.to_string(), dns_name: name })
        }
        Some((code, body)) => bail!("Docker engine answered {code}: {}", body.trim()),
    }
}
