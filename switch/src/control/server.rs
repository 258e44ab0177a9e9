//! The control socket: a Unix stream socket (mode 0600) carrying one JSON request per
//! line and one JSON reply per line. A malformed line gets an error reply and the
//! connection stays open; an oversized line gets an error reply and is closed.

use super::State;
use parking_lot::Mutex;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vswitch_proto::{Reply, MAX_LINE};

/// Concurrent client connections served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 64;

/// Bind the control socket at `path`, replacing a stale socket file but refusing to
/// steal one a live daemon answers on.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another vswitchd is already listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    // Create it private from the first instant, then make sure of the mode.
    // SAFETY-free: umask is process-wide; we restore it right after bind.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.with_context(|| format!("bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

/// Serve clients forever on a thread of its own.
pub fn spawn(listener: UnixListener, state: Arc<Mutex<State>>) -> io::Result<PathBuf> {
    let path = listener
        .local_addr()?
        .as_pathname()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vswitch-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                while active.load(Ordering::Acquire) >= MAX_CLIENTS {
                    std::thread::sleep(Duration::from_millis(5));
                }
                active.fetch_add(1, Ordering::AcqRel);
                let state = state.clone();
                let active = active.clone();
                let spawned = std::thread::Builder::new()
                    .name("vswitch-client".into())
                    .spawn(move || {
                        if let Err(e) = serve(stream, &state) {
                            tracing::debug!(error = %e, "control client ended");
                        }
                        active.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    tracing::error!("cannot spawn control client thread");
                }
            }
        })?;
    Ok(path)
}

fn write_reply(w: &mut UnixStream, r: &Reply) -> io::Result<()> {
    let mut s = serde_json::to_string(r).unwrap_or_else(|_| {
        r#"{"version":1,"ok":false,"error":"cannot encode reply"}"#.to_string()
    });
    s.push('\n');
    w.write_all(s.as_bytes())
}

/// Answer one raw request line.
pub fn handle_line(line: &str, state: &Mutex<State>) -> Reply {
    let req = match vswitch_proto::decode_request(line) {
        Ok(r) => r,
        Err(e) => return Reply::err(e),
    };
    let verb = req.command.verb();
    if let Some(reply) = super::cluster::intercept(&req.command, state) {
        return reply;
    }
    match state.lock().handle(req.command) {
        Ok(v) => Reply::ok(v),
        Err(e) => {
            tracing::info!(cmd = verb, error = %e, "request refused");
            Reply::err(e.to_string())
        }
    }
}

fn serve(stream: UnixStream, state: &Mutex<State>) -> io::Result<()> {
    // A client that stops reading or writing mid-line cannot hold a thread forever.
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE {
            write_reply(
                &mut w,
                &Reply::err(format!("request longer than {MAX_LINE} bytes")),
            )?;
            return Ok(());
        }
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(end) = super::cluster::takeover(line.trim(), &mut w, &mut r) {
            return end;
        }
        if let Some(end) = super::capture::takeover(line.trim(), &mut w, &mut r, state) {
            return end;
        }
        let reply = handle_line(line.trim(), state);
        write_reply(&mut w, &reply)?;
    }
}
