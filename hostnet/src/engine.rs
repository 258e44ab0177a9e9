//! GET requests to the Docker Engine API over its Unix socket (`$DOCKER_HOST` if it is
//! `unix://…`, else `/var/run/docker.sock`). Plain HTTP/1.0, so the reply is never
//! chunked and ends when the engine closes the connection.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest reply read (an inspect document is a few KB).
const MAX_REPLY: u64 = 4 << 20;

/// The Docker Engine socket: `$DOCKER_HOST` (`unix://` only) or the default.
pub fn docker_socket() -> Result<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.is_empty() => Ok(PathBuf::from("/var/run/docker.sock")),
        Ok(h) => match h.strip_prefix("unix://") {
            Some(p) => Ok(PathBuf::from(p)),
            None => bail!("DOCKER_HOST={h}: only unix:// Docker engines are supported"),
        },
        Err(_) => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// GET `path` from the Docker Engine at `sock`: the status code and body, or
/// `Ok(None)` if no engine listens there.
pub fn docker_get(sock: &Path, path: &str) -> Result<Option<(u16, String)>> {
    let mut s = match UnixStream::connect(sock) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
        .with_context(|| format!("ask the Docker engine at {}", sock.display()))?;
    let mut resp = Vec::new();
    s.take(MAX_REPLY)
        .read_to_end(&mut resp)
        .with_context(|| format!("read from the Docker engine at {}", sock.display()))?;
    let resp = String::from_utf8_lossy(&resp);
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        bail!("the Docker engine at {} sent no HTTP reply", sock.display());
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Some((code, body.to_string())))
}

/// The `message` of an Engine error body, or the body itself.
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}
