//! `capture`: frames of a port or bridge, as they enter it, leave it, or are dropped,
//! streamed from vswitchd as pcapng (`-w FILE`, `-w -` for `tcpdump -r -` or
//! Wireshark) or printed one line per frame.
//!
//! The filter is a tcpdump (pcap-filter) expression, compiled here to classic BPF by
//! `tcpdump -ddd` reading an empty capture file (so no interface is opened) and run by
//! vswitchd on each frame before copying it. Ctrl-C (SIGINT) or SIGTERM asks vswitchd
//! to stop; the stream then ends with the count of frames it lost, printed on stderr.

use super::Ctx;
use crate::error::Error;
use nix::sys::signal::{SigSet, Signal};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command as Process;
use vswitch_proto::pcapng::{self, Record};
use vswitch_proto::{CaptureReq, Client};

/// Capture frames of a port or bridge (pcapng, or one line per frame)
///
/// Stages: `ingress` (as the frame enters the switch from the port), `egress` (as it
/// leaves towards the port), `drop` (dropped by the switch; the reason is the frame's
/// pcapng comment and is printed). Default: ingress and egress. A frame the reader
/// is too slow for is lost, never waited for: the count of lost frames is printed at
/// the end. Stops after -c frames, or on Ctrl-C.
#[derive(clap::Args, Debug)]
pub struct Capture {
    /// A port (a vxlan port: all its remotes, or NAME@REMOTE), or a bridge (all its
    /// ports)
    #[arg(value_name = "PORT|BR")]
    pub target: String,
    /// Stage(s) to capture: ingress, egress, drop (repeat or separate by commas)
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    pub stage: Vec<String>,
    /// A tcpdump filter expression (e.g. "icmp and host 10.0.0.5", "vlan 10",
    /// "tcp port 80"), compiled with `tcpdump -ddd`
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after N frames
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// Write pcapng to FILE (`-`: standard output) instead of printing a line per frame
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Bytes kept of each frame (default: all of it)
    #[arg(short = 's', long = "snaplen", value_name = "BYTES")]
    pub snaplen: Option<u32>,
}

/// SIGINT and SIGTERM send `stop` on the connection once (vswitchd then ends the
/// stream with its statistics); a second one a second or more later exits at once. The signals are blocked in
/// this (the only) thread, so every thread started later inherits the mask, and a
/// waiter thread takes them with sigwait: no signal handler, no unsafe code.
fn install_stop(sock: UnixStream) -> Result<(), Error> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| Error::Failed(format!("cannot block signals: {e}")))?;
    std::thread::Builder::new()
        .name("stop".into())
        .spawn(move || {
            if set.wait().is_ok() {
                let _ = (&sock).write_all(b"stop\n");
            }
            // One interrupt can arrive twice: GNU `timeout -s INT` signals the child
            // and then its whole process group, and so does a shell passing on one
            // Ctrl-C. A second signal within a second is that same interrupt; only a
            // later one means "exit now" (without the statistics).
            let first = std::time::Instant::now();
            while set.wait().is_ok() {
                if first.elapsed() >= std::time::Duration::from_secs(1) {
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| Error::Failed(format!("cannot start a thread: {e}")))?;
    Ok(())
}

/// An empty pcap file (Ethernet, snap length 262144) for `tcpdump -r`.
const EMPTY_PCAP: [u8; 24] = [
    0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0,
];

/// Compile `expr` to classic BPF with `tcpdump -ddd` (offline, Ethernet).
pub fn compile_filter(expr: &str) -> Result<Vec<[u32; 4]>, Error> {
    let file = std::env::temp_dir().join(format!("vswitchctl-{}.pcap", std::process::id()));
    std::fs::write(&file, EMPTY_PCAP)
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", file.display())))?;
    let out = Process::new("tcpdump")
        .arg("-ddd")
        .arg("-r")
        .arg(&file)
        .arg("--")
        .arg(expr)
        .output();
    let _ = std::fs::remove_file(&file);
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Failed(
                "--filter needs tcpdump to compile the expression (apt install tcpdump)".into(),
            ))
        }
        Err(e) => return Err(Error::Failed(format!("cannot run tcpdump: {e}"))),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = err
            .lines()
            .rev()
            .find(|l| !l.starts_with("reading from"))
            .unwrap_or("tcpdump failed")
            .trim_start_matches("tcpdump: ");
        return Err(Error::Usage(format!("bad filter {expr:?}: {why}")));
    }
    parse_ddd(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| Error::Failed(format!("cannot read tcpdump -ddd output: {e}")))
}

/// `tcpdump -ddd` output: a count, then `code jt jf k` per line.
fn parse_ddd(text: &str) -> Result<Vec<[u32; 4]>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let n: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("no instruction count")?;
    let mut v = Vec::new();
    for l in lines {
        let f: Vec<u32> = l
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad instruction {l:?}"))?;
        let [code, jt, jf, k] = f[..] else {
            return Err(format!("bad instruction {l:?}"));
        };
        v.push([code, jt, jf, k]);
    }
    if v.len() != n {
        return Err(format!("{n} instructions announced, {} given", v.len()));
    }
    Ok(v)
}

impl Capture {
    pub fn request(&self) -> Result<CaptureReq, Error> {
        if self.count == Some(0) {
            return Err(Error::Usage("-c must be at least 1".into()));
        }
        if self.snaplen == Some(0) {
            return Err(Error::Usage("--snaplen must be at least 1".into()));
        }
        for s in &self.stage {
            if !matches!(s.as_str(), "ingress" | "egress" | "drop") {
                return Err(Error::Usage(format!(
                    "unknown stage {s:?} (ingress, egress, drop)"
                )));
            }
        }
        let program = match &self.filter {
            Some(f) => compile_filter(f)?,
            None => Vec::new(),
        };
        Ok(CaptureReq {
            target: self.target.clone(),
            stages: self.stage.clone(),
            filter: self.filter.clone(),
            program,
            count: self.count,
            snaplen: self.snaplen,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        let req = self.request()?;
        let mut c = Client::connect_wait(ctx.socket(), ctx.wait())?;
        let sock = c.socket_clone()?;
        let started = c.capture(req)?;
        // The file is created once vswitchd accepted the capture.
        let mut sink: Box<dyn Write> = match &self.write {
            Some(p) if p.as_os_str() == "-" => Box::new(io::stdout().lock()),
            Some(p) => Box::new(io::BufWriter::new(std::fs::File::create(p).map_err(
                |e| Error::Failed(format!("cannot create {}: {e}", p.display())),
            )?)),
            None => Box::new(io::stdout().lock()),
        };
        let raw = self.write.is_some();
        install_stop(sock.try_clone().map_err(|e| Error::Failed(e.to_string()))?)?;
        let mut err = io::stderr().lock();
        let _ = writeln!(
            err,
            "capturing on {} ({}), {}",
            started.target,
            if started.ports.is_empty() {
                "no port attached yet".to_string()
            } else {
                started.ports.join(", ")
            },
            started.stages.join(", ")
        );
        let res = self.copy(&mut c, &mut *sink, raw, ctx.json());
        let (written, stats) = match res {
            Ok(x) => x,
            Err(Error::Failed(m)) if m == BROKEN_PIPE => {
                // The reader went away (`| head`): ask vswitchd to stop, not an error.
                let _ = (&sock).write_all(b"stop\n");
                return Ok(String::new());
            }
            Err(e) => return Err(e),
        };
        let _ = sink.flush();
        let (received, lost) = stats.unwrap_or((written, 0));
        let why = if lost > 0 {
            " (the reader was too slow)"
        } else {
            ""
        };
        let _ = writeln!(err, "{received} frames captured, {lost} lost{why}");
        Ok(String::new())
    }

    /// Copy the stream to `sink` until vswitchd ends it: the frames written, and the
    /// closing statistics (captured, lost) if they came.
    fn copy(
        &self,
        c: &mut Client,
        sink: &mut dyn Write,
        raw: bool,
        json: bool,
    ) -> Result<(u64, Option<(u64, u64)>), Error> {
        let mut reader = pcapng::Reader::default();
        let mut written = 0u64;
        let mut stats = None;
        let out = |r: io::Result<()>| {
            r.map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    Error::Failed(BROKEN_PIPE.into())
                } else {
                    Error::Failed(format!("cannot write the capture: {e}"))
                }
            })
        };
        loop {
            let b = match pcapng::read_block(c.stream()) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => return Err(Error::Failed(format!("capture stream: {e}"))),
            };
            let rec = reader.record(&b).map_err(Error::Failed)?;
            if raw {
                out(sink.write_all(&b.raw))?;
            }
            match rec {
                Some(Record::Packet {
                    iface,
                    ts_ns,
                    orig_len,
                    data,
                    comment,
                    ..
                }) => {
                    written += 1;
                    if !raw {
                        let stage = comment.unwrap_or_default();
                        let line = if json {
                            serde_json::json!({
                                "ts_ns": ts_ns,
                                "port": iface,
                                "stage": stage.split(':').next().unwrap_or(""),
                                "reason": stage.strip_prefix("drop: "),
                                "len": orig_len,
                                "summary": summary(&data),
                            })
                            .to_string()
                        } else {
                            format!(
                                "{} {iface} {stage} {orig_len} {}",
                                clock(ts_ns),
                                summary(&data)
                            )
                        };
                        out(writeln!(sink, "{line}"))?;
                    }
                    out(sink.flush())?;
                }
                Some(Record::Stats { received, lost }) => {
                    stats = Some((received, lost));
                    out(sink.flush())?;
                }
                None => {}
            }
        }
        Ok((written, stats))
    }
}

const BROKEN_PIPE: &str = "broken pipe";

/// `HH:MM:SS.micros` (UTC) of a time in nanoseconds since the epoch.
fn clock(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    let us = (ns % 1_000_000_000) / 1000;
    let d = s % 86_400;
    format!("{:02}:{:02}:{:02}.{us:06}", d / 3600, d / 60 % 60, d % 60)
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

fn ip4(b: &[u8], o: usize) -> Option<std::net::Ipv4Addr> {
    let x: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
    Some(x.into())
}

fn mac(b: &[u8], o: usize) -> String {
    b.get(o..o + 6).map_or_else(
        || "?".into(),
        |m| {
            m.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        },
    )
}

/// A one-line description of a frame, in the spirit of tcpdump's.
pub fn summary(f: &[u8]) -> String {
    summarize(f).unwrap_or_else(|| format!("truncated frame of {} bytes", f.len()))
}

fn summarize(f: &[u8]) -> Option<String> {
    let mut s = format!("{} > {}", mac(f, 6), mac(f, 0));
    let mut off = 12;
    let mut ty = be16(f, off)?;
    while matches!(ty, 0x8100 | 0x88a8) {
        let _ = write!(s, ", vlan {}", be16(f, off + 2)? & 0x0fff);
        off += 4;
        ty = be16(f, off)?;
    }
    let p = off + 2;
    match ty {
        0x0806 => {
            let op = be16(f, p + 6)?;
            let (spa, tpa) = (ip4(f, p + 14)?, ip4(f, p + 24)?);
            match op {
                1 => write!(s, ", ARP, Request who-has {tpa} tell {spa}"),
                2 => write!(s, ", ARP, Reply {spa} is-at {}", mac(f, p + 8)),
                _ => write!(s, ", ARP, op {op}"),
            }
            .ok()?;
        }
        0x0800 => {
            let ihl = usize::from(f.get(p)? & 0x0f) * 4;
            let proto = *f.get(p + 9)?;
            let (src, dst) = (ip4(f, p + 12)?, ip4(f, p + 16)?);
            let l4 = p + ihl;
            match proto {
                1 => {
                    let (t, code) = (*f.get(l4)?, *f.get(l4 + 1)?);
                    let what = match t {
                        0 | 8 => format!(
                            "ICMP echo {}, id {}, seq {}",
                            if t == 8 { "request" } else { "reply" },
                            be16(f, l4 + 4)?,
                            be16(f, l4 + 6)?
                        ),
                        3 => format!("ICMP unreachable, code {code}"),
                        11 => "ICMP time exceeded".to_string(),
                        _ => format!("ICMP type {t}, code {code}"),
                    };
                    write!(s, ", {src} > {dst}: {what}").ok()?;
                }
                6 | 17 => {
                    let name = if proto == 6 { "TCP" } else { "UDP" };
                    let (sp, dp) = (be16(f, l4)?, be16(f, l4 + 2)?);
                    write!(s, ", {src}.{sp} > {dst}.{dp}: {name}").ok()?;
                    if proto == 6 {
                        let fl = *f.get(l4 + 13)?;
                        let names = [(2, 'S'), (16, '.'), (1, 'F'), (4, 'R'), (8, 'P')];
                        let flags: String = names
                            .iter()
                            .filter(|(b, _)| fl & b != 0)
                            .map(|(_, c)| *c)
                            .collect();
                        write!(s, " [{flags}]").ok()?;
                    }
                }
                _ => write!(s, ", {src} > {dst}: proto {proto}").ok()?,
            }
        }
        0x86dd => s.push_str(", IPv6"),
        t => write!(s, ", ethertype {t:#06x}").ok()?,
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Args, Cmd};
    use clap::Parser;

    #[test]
    fn arguments() {
        let a = Args::try_parse_from([
            "vswitchctl",
            "capture",
            "v1",
            "--stage",
            "ingress,drop",
            "-c",
            "5",
            "-w",
            "-",
        ])
        .unwrap();
        let Cmd::Capture(c) = a.command else {
            panic!("not capture")
        };
        let r = c.request().unwrap();
        assert_eq!(r.stages, vec!["ingress", "drop"]);
        assert_eq!(r.count, Some(5));
        assert!(r.program.is_empty());
        let bad =
            Args::try_parse_from(["vswitchctl", "capture", "v1", "--stage", "middle"]).unwrap();
        let Cmd::Capture(c) = bad.command else {
            panic!("not capture")
        };
        assert!(matches!(c.request(), Err(Error::Usage(_))));
    }

    #[test]
    fn ddd_and_summaries() {
        assert_eq!(
            parse_ddd("2\n40 0 0 12\n6 0 0 262144\n").unwrap(),
            vec![[40, 0, 0, 12], [6, 0, 0, 262144]]
        );
        assert!(parse_ddd("3\n6 0 0 1\n").is_err());
        assert!(parse_ddd("1\n6 0 x 1\n").is_err());
        // An ICMP echo request 10.0.0.5 > 10.0.0.6, id 7, seq 1.
        let mut f = vec![2, 0, 0, 0, 0, 6, 2, 0, 0, 0, 0, 5, 8, 0];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 5, 10, 0, 0, 6]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
        assert_eq!(
            summary(&f),
            "02:00:00:00:00:05 > 02:00:00:00:00:06, 10.0.0.5 > 10.0.0.6: ICMP echo request, id 7, seq 1"
        );
        for n in 0..f.len() {
            let _ = summary(&f[..n]);
        }
        assert_eq!(clock(3_723_000_004_000), "01:02:03.000004");
    }
}
