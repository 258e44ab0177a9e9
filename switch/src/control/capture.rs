//! `capture`: the request that takes over its connection. After the `ok` reply
//! ([`CaptureStarted`]) vswitchd writes a pcapng stream (`vswitch_proto::pcapng`) of
//! what the capture's tap ([`crate::dp::capture::Tap`]) queued, until the count is
//! reached, the client sends a line `stop` or goes away; it ends the stream with an
//! Interface Statistics block carrying the number of frames lost, and closes.
//!
//! The workers never wait for this thread: they queue into the tap's bounded queue or
//! count the frame as lost. This thread waits for the queue and for the socket (a
//! slow reader blocks only it).

use super::handlers::HandlerError;
use super::State;
use crate::dp::capture::{Captured, Stage, Tap, Taps, Target, DEFAULT_SNAPLEN};
use crate::wire::bpf::{Insn, Program};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use serde_json::Value;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vswitch_proto::pcapng::{self, Direction};
use vswitch_proto::{CaptureReq, CaptureStarted, Command, Reply};

/// How often the streaming thread looks at `stop` while no frame comes.
const TICK: Duration = Duration::from_millis(100);
/// A reader that takes nothing for this long is given up (the capture ends).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running capture: its tap (removed from `taps` on drop) and the reader's queue.
struct Running {
    taps: Arc<Taps>,
    tap: Arc<Tap>,
    rx: Receiver<Captured>,
    started: CaptureStarted,
    snaplen: u32,
    count: Option<u64>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.taps.remove(&self.tap);
    }
}

impl State {
    /// Check a capture request and start its tap.
    fn start_capture(&self, req: CaptureReq) -> Result<Running, HandlerError> {
        let bad = |m: String| HandlerError::Invalid(m);
        let name = req.target.as_str();
        let is_port = self
            .model
            .bridges
            .iter()
            .any(|b| b.ports.iter().any(|p| p.name == name))
            || self.live.contains_key(name);
        let (target, ports) = if is_port {
            // A vxlan port: all its remotes, or the one named `NAME@REMOTE`.
            let ports = self.live_names(|full, base| full == name || base == name);
            (Target::Port(name.to_string()), ports)
        } else if let Ok(b) = self.model.bridge(name) {
            let names: Vec<&str> = b.ports.iter().map(|p| p.name.as_str()).collect();
            let ports = self.live_names(|_, base| names.contains(&base));
            (Target::Bridge(name.to_string()), ports)
        } else {
            return Err(bad(format!("no such port or bridge: {name}")));
        };
        let mut stages = Vec::new();
        for s in &req.stages {
            let st = Stage::parse(s)
                .ok_or_else(|| bad(format!("unknown stage {s:?} (ingress, egress, drop)")))?;
            if !stages.contains(&st) {
                stages.push(st);
            }
        }
        if stages.is_empty() {
            stages = vec![Stage::Ingress, Stage::Egress];
        }
        let filter = if req.program.is_empty() {
            None
        } else {
            let mut insns = Vec::with_capacity(req.program.len());
            for (pc, &[code, jt, jf, k]) in req.program.iter().enumerate() {
                let (Ok(code), Ok(jt), Ok(jf)) =
                    (u16::try_from(code), u8::try_from(jt), u8::try_from(jf))
                else {
                    return Err(bad(format!("BPF instruction {pc}: out of range")));
                };
                insns.push(Insn { code, jt, jf, k });
            }
            let what = req.filter.as_deref().unwrap_or("the filter");
            Some(Program::new(insns).map_err(|e| bad(format!("{what}: {e}")))?)
        };
        let snaplen = req
            .snaplen
            .unwrap_or(DEFAULT_SNAPLEN)
            .clamp(1, DEFAULT_SNAPLEN);
        if req.count == Some(0) {
            return Err(bad("count must be at least 1".into()));
        }
        let (tap, rx) = Tap::new(target, &stages, filter, snaplen, req.count);
        let taps = self.tools.taps.clone();
        taps.add(tap.clone());
        // Flows the kernel fast path carries would never reach the tap: make its
        // entries miss (after the add: an installer that sees the new generation sees
        // the running capture too, and refuses to install; see fastpath::bump).
        if let Some(fp) = &self.fastpath {
            fp.bump();
        }
        let started = CaptureStarted {
            target: name.to_string(),
            ports,
            stages: stages.iter().map(|s| s.as_str().to_string()).collect(),
            format: "pcapng".into(),
        };
        Ok(Running {
            taps,
            tap,
            rx,
            started,
            snaplen,
            count: req.count,
        })
    }

    /// The live names (a vxlan port: `NAME@REMOTE` per remote) `want` selects by the
    /// live name and the configured port's name, sorted.
    fn live_names(&self, want: impl Fn(&str, &str) -> bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .live
            .keys()
            .filter(|n| want(n, n.split('@').next().unwrap_or(n)))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// Serve `line` if it is a `capture` request (to the end of the connection).
pub fn takeover(
    line: &str,
    w: &mut UnixStream,
    r: &mut BufReader<UnixStream>,
    state: &Mutex<State>,
) -> Option<io::Result<()>> {
    // Cheap test first: most requests are not captures.
    if !line.contains("\"capture\"") {
        return None;
    }
    let req = vswitch_proto::decode_request(line).ok()?;
    let Command::Capture(c) = req.command else {
        return None;
    };
    let started = state.lock().start_capture(c);
    Some(match started {
        Err(e) => {
            tracing::info!(cmd = "capture", error = %e, "request refused");
            write_reply(w, &Reply::err(e.to_string()))
        }
        Ok(run) => stream(run, w, r),
    })
}

fn write_reply(w: &mut UnixStream, r: &Reply) -> io::Result<()> {
    let mut s = serde_json::to_string(r).unwrap_or_else(|_| {
        r#"{"version":1,"ok":false,"error":"cannot encode reply"}"#.to_string()
    });
    s.push('\n');
    w.write_all(s.as_bytes())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn stream(run: Running, w: &mut UnixStream, r: &mut BufReader<UnixStream>) -> io::Result<()> {
    let v = serde_json::to_value(&run.started).unwrap_or(Value::Null);
    write_reply(w, &Reply::ok(v))?;
    w.set_write_timeout(Some(WRITE_TIMEOUT))?;
    tracing::info!(target = %run.started.target, stages = ?run.started.stages, "capture started");
    // The client's `stop` line, or its going away, ends the capture. Release pairs
    // with the loop's Acquire (only a flag: no data rides on it).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let conn = r.get_ref().try_clone()?;
        std::thread::Builder::new()
            .name("vswitch-capture".into())
            .spawn(move || {
                let mut lines = BufReader::new(conn);
                let mut line = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line.trim() == "stop" => break,
                        Ok(_) => {}
                    }
                }
                stop.store(true, Ordering::Release);
            })?
    };
    let first = run
        .started
        .ports
        .first()
        .cloned()
        .unwrap_or_else(|| run.started.target.clone());
    let mut out = pcapng::Writer::new(BufWriter::new(w.try_clone()?), run.snaplen, &first)?;
    let mut written = 0u64;
    let res = (|| -> io::Result<()> {
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            // Every frame the count let in was either queued (and written) or lost.
            if run.count.is_some_and(|n| written + run.tap.lost() >= n) {
                return Ok(());
            }
            match run.rx.recv_timeout(TICK) {
                Ok(c) => {
                    run.tap.taken(&c);
                    let (dir, comment) = match (c.stage, c.reason) {
                        (Stage::Egress, _) => (Direction::Outbound, "egress".to_string()),
                        (Stage::Drop, Some(r)) => {
                            (Direction::Inbound, format!("drop: {}", r.as_str()))
                        }
                        (Stage::Drop, None) => (Direction::Inbound, "drop".to_string()),
                        (Stage::Ingress, _) => (Direction::Inbound, "ingress".to_string()),
                    };
                    out.packet(&c.port, c.ts_ns, c.orig_len, &c.data, dir, &comment)?;
                    written += 1;
                    if run.rx.is_empty() {
                        out.flush()?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => out.flush()?,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    let lost = run.tap.lost();
    // Stop capturing before the last writes (they may wait for the reader).
    drop(run);
    let end = res.and_then(|()| {
        out.stats(now_ns(), written, lost)?;
        out.flush()
    });
    tracing::info!(written, lost, "capture ended");
    let _ = w.shutdown(Shutdown::Both);
    let _ = watcher.join();
    end
}
