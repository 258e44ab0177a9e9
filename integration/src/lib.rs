//! The netns lab harness: uniquely named network namespaces, veth links, a vswitchd
//! per lab, real tools (ping, iperf3, udhcpc, dig, curl) run inside namespaces, and
//! cleanup in `Drop` — also when a test panics.
//!
//! Safety: every entry point ([`runner::main`], `vswitch-lab`) re-executes itself under
//! `unshare --net` unconditionally, so even the namespace the harness itself runs in is
//! a private, empty one; nothing is ever configured in the machine's namespace.
//! Container addresses come from 10.0.0.0/8 (never 10.255.0.0/16), outside networks
//! from 198.51.100.0/24 and 203.0.113.0/24, and every namespace gets its own
//! /etc/netns/NAME/resolv.conf so no lookup leaves the lab.

pub mod cluster;
pub mod docker;
pub mod docker_driver;
pub mod labfile;
pub mod labrun;
pub mod runner;

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Directory holding vswitchd, vswitchctl and pipework: `$VSWITCH_BIN_DIR`, else the
/// cargo target directory of the running test or tool (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VSWITCH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// Path of one of the project's binaries; an error tells how to build it.
pub fn bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if p.exists() {
        Ok(p)
    } else {
        bail!(
            "{} not found: run `cargo build --workspace` first (or set VSWITCH_BIN_DIR)",
            p.display()
        )
    }
}

/// Run a command, capturing its output; a failure to start is an error.
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))
}

/// Run a command that must succeed; its stderr is in the error.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(args))
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The result of a vswitchctl call.
#[derive(Debug)]
pub struct CtlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One lab: namespaces, links, one vswitchd.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    daemon: Option<Child>,
    switch_ns: Option<String>,
    children: Vec<Child>,
}

impl Lab {
    /// A new, empty lab. Fails unless running as root inside the runner's private
    /// network namespace.
    pub fn new() -> Result<Lab> {
        if std::env::var_os(runner::INNER_ENV).is_none() {
            bail!("refusing to build a lab outside a private network namespace: use vswitch_integration::runner");
        }
        let n = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("v{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("vswitch-lab-{prefix}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Lab {
            prefix,
            dir,
            namespaces: Vec::new(),
            daemon: None,
            switch_ns: None,
            children: Vec::new(),
        })
    }

    /// The lab's private directory (sockets, db, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Full name of the lab namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Create namespace `short` (lo up, private resolv.conf); returns its full name.
    pub fn add_ns(&mut self, short: &str) -> Result<String> {
        let name = self.ns(short);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        let etc = PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n")?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A command to run inside namespace `short`.
    pub fn cmd(&self, short: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(short), program]);
        c
    }

    /// Run `sh -c script` inside namespace `short`; must succeed.
    pub fn sh(&self, short: &str, script: &str) -> Result<String> {
        run_ok(self.cmd(short, "sh").args(["-c", script]))
    }

    /// Run `sh -c script` inside namespace `short`; returns the output whatever happened.
    pub fn sh_out(&self, short: &str, script: &str) -> Result<Output> {
        run(self.cmd(short, "sh").args(["-c", script]))
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in namespace `b`.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        ip(&[
            "link",
            "add",
            "name",
            a_if,
            "netns",
            &self.ns(a),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            &self.ns(b),
        ])
        .map(|_| ())
    }

    /// Start vswitchd in namespace `sw` (created if needed) with the lab's socket and
    /// db, and wait until it answers.
    pub fn start_switch(&mut self, sw: &str) -> Result<()> {
        self.start_switch_with(sw, &[])
    }

    /// As [`Lab::start_switch`], with extra vswitchd flags.
    pub fn start_switch_with(&mut self, sw: &str, extra: &[&str]) -> Result<()> {
        if !self.namespaces.contains(&self.ns(sw)) {
            self.add_ns(sw)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vswitchd.log"))?;
        let vswitchd = bin("vswitchd")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(sw)])
            .arg(&vswitchd)
            .arg("--socket")
            .arg(self.socket())
            .arg("--db")
            .arg(self.db())
            .args(["--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start vswitchd")?;
        self.daemon = Some(child);
        self.switch_ns = Some(sw.to_string());
        let ok = wait_until(Duration::from_secs(10), || {
            self.ctl(&["version"]).map(|o| o.code == 0).unwrap_or(false)
        });
        if !ok {
            bail!(
                "vswitchd did not answer within 10 s; log:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// SIGTERM vswitchd and wait (bounded) for it; returns its exit code.
    pub fn stop_switch(&mut self) -> Result<i32> {
        let Some(mut child) = self.daemon.take() else {
            bail!("vswitchd is not running");
        };
        // `ip netns exec` execs vswitchd, so the child's PID is vswitchd's.
        match terminate(&mut child, Duration::from_secs(10)) {
            Some(code) => Ok(code),
            None => bail!("vswitchd did not exit within 10 s of SIGTERM"),
        }
    }

    /// SIGKILL vswitchd (a crash) and reap it.
    pub fn kill_switch(&mut self) -> Result<()> {
        let Some(mut child) = self.daemon.take() else {
            bail!("vswitchd is not running");
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) vswitchd: while it is frozen, what reaches its
    /// sockets queues up, and it reads it all at once when thawed.
    pub fn pause_switch(&self, paused: bool) -> Result<()> {
        let Some(child) = self.daemon.as_ref() else {
            bail!("vswitchd is not running");
        };
        let sig = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        send_signal(child.id(), sig);
        Ok(())
    }

    /// PID of the running vswitchd (the child we spawned).
    pub fn switch_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Stop and start vswitchd again with the same db.
    pub fn restart_switch(&mut self) -> Result<()> {
        let sw = self.switch_ns.clone().ok_or_else(|| anyhow!("no switch"))?;
        let code = self.stop_switch()?;
        if code != 0 {
            bail!("vswitchd exited {code} on SIGTERM");
        }
        self.start_switch(&sw)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("vswitchd.sock")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("conf.db")
    }

    /// The last `n` lines of vswitchd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("vswitchd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Run vswitchctl (from the runner's namespace: the socket is a file, reachable
    /// from anywhere).
    pub fn ctl(&self, args: &[&str]) -> Result<CtlOutput> {
        let out = run(Command::new(bin("vswitchctl")?)
            .arg("--socket")
            .arg(self.socket())
            .args(args))?;
        Ok(CtlOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run vswitchctl inside the switch namespace (for commands that touch netdevs
    /// relative to vswitchd — none today — or to mirror what a user types there).
    pub fn ctl_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.ctl(args)?;
        if o.code != 0 {
            bail!("vswitchctl {} failed: {}", args.join(" "), o.stderr.trim());
        }
        Ok(o.stdout)
    }

    /// Run vswitchctl with `--json` and parse its output.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(&a)?;
        serde_json::from_str(&out).with_context(|| format!("parse JSON of {}", args.join(" ")))
    }

    /// `show --json` without the counters that traffic changes (learned MACs), to
    /// compare configuration before and after a refused request.
    pub fn config_snapshot(&self) -> Result<serde_json::Value> {
        let mut v = self.ctl_json(&["show"])?;
        if let Some(o) = v.as_object_mut() {
            o.remove("ct_entries");
            o.remove("ct_evictions");
        }
        if let Some(bs) = v["bridges"].as_array_mut() {
            for b in bs {
                if let Some(o) = b.as_object_mut() {
                    // Counters, not configuration.
                    o.remove("fdb_entries");
                    o.remove("fdb_evictions");
                    o.remove("dhcp_exhausted");
                }
            }
        }
        Ok(v)
    }

    /// A container: namespace `name` with `eth0` (address `cidr`, optional default
    /// route via `gw`) linked to port `port` in the switch namespace `sw`.
    pub fn container(
        &mut self,
        sw: &str,
        name: &str,
        port: &str,
        cidr: &str,
        gw: Option<&str>,
    ) -> Result<()> {
        self.add_ns(name)?;
        if !self.namespaces.contains(&self.ns(sw)) {
            self.add_ns(sw)?;
        }
        self.veth(sw, port, name, "eth0")?;
        let ns = self.ns(name);
        ip(&["-n", &ns, "addr", "add", cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        if let Some(g) = gw {
            ip(&["-n", &ns, "route", "add", "default", "via", g])?;
        }
        Ok(())
    }

    /// The NAT topology of DESIGN.md §5 on switch `sw` (started): `br1` 10.0.0.0/24
    /// (gateway .1) with container `c1` (10.0.0.5, port v1), `wan` 198.51.100.0/24
    /// (gateway .2) with the outside host `out` (198.51.100.1, port vo), and `br1`
    /// masqueraded behind `wan`.
    pub fn masquerade_lab(&mut self, sw: &str) -> Result<()> {
        self.ctl_ok(&[
            "add-br",
            "br1",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
        ])?;
        self.container(sw, "c1", "v1", "10.0.0.5/24", Some("10.0.0.1"))?;
        self.ctl_ok(&["add-port", "br1", "v1"])?;
        self.wan(sw)?;
        self.ctl_ok(&["masquerade", "br1", "--out", "wan"])?;
        Ok(())
    }

    /// The uplink of DESIGN.md §5 on switch `sw` (started): bridge `wan`
    /// 198.51.100.0/24 (router .2) with the outside host `out` (198.51.100.1, port vo).
    pub fn wan(&mut self, sw: &str) -> Result<()> {
        self.ctl_ok(&[
            "add-br",
            "wan",
            "--subnet",
            "198.51.100.0/24",
            "--gateway",
            "198.51.100.2",
        ])?;
        self.container(sw, "out", "vo", "198.51.100.1/24", None)?;
        self.ctl_ok(&["add-port", "wan", "vo"])?;
        Ok(())
    }

    /// The MAC address of `ifname` in namespace `short`.
    pub fn mac(&self, short: &str, ifname: &str) -> Result<String> {
        let out = ip(&["-n", &self.ns(short), "-j", "link", "show", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no address for {ifname}"))
    }

    /// Whether one ping from `from` to `dst` gets an answer.
    pub fn ping_once(&self, from: &str, dst: &str) -> bool {
        run(self.cmd(from, "ping").args(["-c", "1", "-W", "1", dst]))
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Every port's non-zero drop counters (for failure messages), or why not.
    pub fn drops(&self) -> String {
        let Ok(v) = self.ctl_json(&["stats"]) else {
            return "(stats failed)".into();
        };
        let mut out = Vec::new();
        for p in v.as_array().into_iter().flatten() {
            for (k, n) in p["drops"].as_object().into_iter().flatten() {
                out.push(format!("{}:{k}={n}", p["port"].as_str().unwrap_or("?")));
            }
        }
        out.join(" ")
    }

    /// Ping from `from` to `dst` until it answers (10 s deadline), then three more
    /// that must all be answered (see [`Lab::assert_pings`]).
    pub fn assert_ping(&self, from: &str, dst: &str) -> Result<()> {
        self.assert_pings(from, dst, 3)
    }

    /// Ping from `from` to `dst` until one is answered (10 s deadline: ARP, learning,
    /// a port still being attached), then send `n` more, 0.2 s apart, and require every
    /// one of them answered, once: `ping` itself exits 0 when any reply came back, so
    /// its summary line is read instead.
    pub fn assert_pings(&self, from: &str, dst: &str, n: usize) -> Result<()> {
        if !wait_until(Duration::from_secs(10), || self.ping_once(from, dst)) {
            bail!(
                "{from} cannot ping {dst}; vswitchd log:\n{}",
                self.log_tail(20)
            );
        }
        let count = n.to_string();
        let out = run(self
            .cmd(from, "ping")
            .args(["-c", &count, "-i", "0.2", "-W", "1", dst]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let s = PingSummary::parse(&text)
            .with_context(|| format!("{from} → {dst}: no ping summary in {text:?}"))?;
        if s.transmitted != n || s.received != n || s.duplicates != 0 || s.errors != 0 {
            bail!(
                "{from} → {dst}: {} of {n} pings answered ({} sent, {} duplicates, {} errors):\n{}\ndrops: {}\nvswitchd log:\n{}",
                s.received,
                s.transmitted,
                s.duplicates,
                s.errors,
                text.trim(),
                self.drops(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// Assert that `dst` does not answer `from` (three tries).
    pub fn assert_no_ping(&self, from: &str, dst: &str) -> Result<()> {
        let out = run(self
            .cmd(from, "ping")
            .args(["-c", "3", "-i", "0.3", "-W", "1", dst]))?;
        if out.status.success() {
            bail!("{from} can ping {dst}, but must not");
        }
        Ok(())
    }

    /// Start a background process inside namespace `short`; the lab kills it on drop.
    pub fn spawn(&mut self, short: &str, program: &str, args: &[&str], log: &str) -> Result<u32> {
        let f = std::fs::File::create(self.dir.join(log))?;
        let child = self
            .cmd(short, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("spawn {program} in {short}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Whether a process started with [`Lab::spawn`] (by the PID `spawn` returned)
    /// is still running.
    pub fn is_running(&mut self, pid: u32) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stop a process started with [`Lab::spawn`], by the PID `spawn` returned
    /// (SIGTERM, SIGKILL after 5 s; reaped). Its exit code if it exited (by itself or
    /// on SIGTERM); `None` if it had to be killed or no such child was spawned.
    pub fn stop_spawned(&mut self, pid: u32) -> Option<i32> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let mut child = self.children.swap_remove(i);
        terminate(&mut child, Duration::from_secs(5))
    }

    /// Wait (up to 5 s) until a socket in namespace `ns` listens on `port` (TCP) or is
    /// bound to it (UDP), as `ss` shows it. False if none did in time.
    pub fn wait_listening(&self, ns: &str, proto: Proto, port: u16) -> bool {
        let flags = match proto {
            Proto::Tcp => "-ltn",
            Proto::Udp => "-lun",
        };
        let cmd = format!("ss {flags} | grep -q ':{port}'");
        wait_until(Duration::from_secs(5), || {
            self.sh_out(ns, &cmd)
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    /// Start a one-shot `iperf3 -s -1` on `ip` in namespace `ns` and wait (bounded)
    /// until it listens.
    pub fn iperf_server(&mut self, ns: &str, ip: &str) -> Result<()> {
        self.spawn(
            ns,
            "iperf3",
            &["-s", "-1", "-B", ip],
            &format!("iperf-{ns}.log"),
        )?;
        if !self.wait_listening(ns, Proto::Tcp, 5201) {
            bail!("iperf3 server in {ns} did not start");
        }
        Ok(())
    }

    /// Bytes one second of iperf3 TCP from namespace `from` to `server_ip` delivered
    /// (a functional check that TCP gets through, not a speed measurement).
    pub fn iperf_bytes(&self, from: &str, server_ip: &str) -> Result<u64> {
        let out = self.sh(from, &format!("timeout 20 iperf3 -c {server_ip} -t 1 -J"))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v["end"]["sum_received"]["bytes"]
            .as_u64()
            .context("no iperf3 result")
    }

    /// Contents of a log file written by [`Lab::spawn`].
    pub fn read_log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }
}

/// SIGTERM a child we spawned (thawed first, should it be stopped), wait up to `grace`
/// for it, then SIGKILL; reaps it. Whether it exited by itself, and its exit code.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<i32> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st.code().unwrap_or(-1));
    }
    send_signal(child.id(), Signal::SIGTERM);
    send_signal(child.id(), Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Wait up to `limit` for a child we spawned to exit by itself (then SIGKILL it);
/// its exit code, or `None` if it had to be killed.
pub fn terminate_after(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Signal a child we spawned and have not reaped (so `pid` cannot name another
/// process). A child that already exited gives ESRCH, which is fine.
fn send_signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Teardown goes on after failures.
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.daemon.is_some() {
            if let Err(e) = self.stop_switch() {
                eprintln!("lab teardown: {e}");
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The counts in `ping`'s summary line (iputils: `5 packets transmitted, 4 received,
/// +1 duplicates, +1 errors, 20% packet loss, time 803ms`; busybox: `… 4 packets
/// received …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PingSummary {
    pub transmitted: usize,
    pub received: usize,
    pub duplicates: usize,
    pub errors: usize,
}

impl PingSummary {
    /// The summary of `ping` output, if it has one.
    pub fn parse(out: &str) -> Option<PingSummary> {
        let line = out.lines().find(|l| l.contains("packets transmitted"))?;
        let mut s = PingSummary::default();
        let mut seen = (false, false);
        for part in line.split(',') {
            let mut words = part.split_whitespace();
            let (Some(num), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let what = if what == "packets" {
                words.next().unwrap_or("")
            } else {
                what
            };
            let Ok(v) = num.trim_start_matches('+').parse::<usize>() else {
                continue;
            };
            match what {
                "transmitted" => {
                    s.transmitted = v;
                    seen.0 = true;
                }
                "received" => {
                    s.received = v;
                    seen.1 = true;
                }
                "duplicates" => s.duplicates = v,
                "errors" => s.errors = v,
                _ => {}
            }
        }
        (seen.0 && seen.1).then_some(s)
    }
}

/// A transport protocol, for [`Lab::wait_listening`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Send `len` random bytes over TCP from namespace `from` of lab `a` to a listener on
/// `to_ip:7000` in namespace `to` of lab `b` (the same lab or another host's), and check
/// every byte arrived intact and in order (iperf3 counts bytes; this checks them,
/// through any segmentation and coalescing in between).
pub fn assert_transfer(
    a: &Lab,
    from: &str,
    b: &mut Lab,
    to: &str,
    to_ip: &str,
    len: usize,
) -> Result<()> {
    let src = b.dir.join(format!("xfer-{from}-{to}.src"));
    let dst = b.dir.join(format!("xfer-{from}-{to}.dst"));
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&src, &data)?;
    // A second transfer between the same names must not see the first one's files.
    let done = dst.with_extension("dst.done");
    let _ = std::fs::remove_file(&dst);
    let _ = std::fs::remove_file(&done);
    // IPv4 or IPv6, by the address's form.
    let family = if to_ip.contains(':') {
        "socket.AF_INET6"
    } else {
        "socket.AF_INET"
    };
    let server = format!(
            "import socket\ns=socket.socket({family})\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{to_ip}',7000))\ns.listen(1)\nc,_=s.accept()\nf=open('{}','wb')\nwhile True:\n  b=c.recv(65536)\n  if not b: break\n  f.write(b)\nf.close()\nopen('{}.done','w').close()\n",
            dst.display(),
            dst.display()
        );
    b.spawn(to, "python3", &["-c", &server], &format!("xfer-{to}.log"))?;
    ensure!(
        b.wait_listening(to, Proto::Tcp, 7000),
        "transfer listener in {to} did not start"
    );
    let client = format!(
            "import socket\ns=socket.create_connection(('{to_ip}',7000),timeout=20)\ns.sendall(open('{}','rb').read())\ns.close()\n",
            src.display()
        );
    run_ok(
        a.cmd(from, "timeout")
            .args(["30", "python3", "-c", &client]),
    )?;
    let finished = wait_until(Duration::from_secs(20), || done.exists());
    ensure!(finished, "transfer {from} -> {to}: receiver did not finish");
    let got = std::fs::read(&dst)?;
    ensure!(
        got.len() == data.len(),
        "transfer {from} -> {to}: {} of {} bytes arrived",
        got.len(),
        data.len()
    );
    let first_bad = got.iter().zip(&data).position(|(a, b)| a != b);
    ensure!(
        first_bad.is_none(),
        "transfer {from} -> {to}: bytes differ from offset {first_bad:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PingSummary;

    #[test]
    fn ping_summaries() {
        let all = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.1 ms\n\n--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\nrtt min/avg/max/mdev = 0.1/0.1/0.1/0.0 ms\n";
        assert_eq!(
            PingSummary::parse(all),
            Some(PingSummary {
                transmitted: 3,
                received: 3,
                ..Default::default()
            })
        );
        let lossy = "5 packets transmitted, 4 received, +1 duplicates, +2 errors, 20% packet loss, time 803ms";
        assert_eq!(
            PingSummary::parse(lossy),
            Some(PingSummary {
                transmitted: 5,
                received: 4,
                duplicates: 1,
                errors: 2,
            })
        );
        let busybox = "3 packets transmitted, 1 packets received, 66% packet loss";
        assert_eq!(PingSummary::parse(busybox).map(|s| s.received), Some(1));
        assert_eq!(PingSummary::parse("connect: Network is unreachable"), None);
    }
}
