//! Cluster labs: etcd members and hosts (each a namespace running vswitchd and
//! vswitch-agent) on one underlay, 192.0.2.0/24, inside a [`Lab`].
//!
//! Layout: namespace `ul` is the underlay's router (192.0.2.254); every member and host
//! has a link of its own to it (MTU 1600, so a 1500-byte frame fits with VXLAN's 50
//! bytes) with a /32 address, and reaches the others through the router. (On one shared
//! L2 segment every host would keep an ARP entry for every other, and the kernel's ARP
//! table is one for all namespaces, 1024 entries: full at 32 hosts.) Etcd member `eN` listens on
//! 192.0.2.(100+N), host `hN` (N < 100) on 192.0.2.N, with its vswitchd socket, db and logs
//! in the lab's directory. Every process is ended by its PID when the [`Cluster`] is
//! dropped (drop it before the `Lab`, which removes the namespaces: declare it after).

use crate::{bin, run, run_ok, terminate, wait_until, CtlOutput, Lab};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One etcd member.
struct Member {
    name: String,
    ip: String,
    data: PathBuf,
    child: Option<Child>,
}

/// One host: vswitchd and its agent.
struct Host {
    ip: String,
    vswitchd: Option<Child>,
    agent: Option<Child>,
}

/// etcd members and hosts of one cluster lab.
pub struct Cluster {
    dir: PathBuf,
    /// Full name of the underlay namespace.
    ul: String,
    members: Vec<Member>,
    hosts: BTreeMap<String, Host>,
    /// Extra agent flags (TLS).
    agent_flags: Vec<String>,
    /// `https` with TLS.
    scheme: &'static str,
    /// Extra etcd flags (TLS).
    etcd_flags: Vec<String>,
    /// Agents' TTL.
    pub ttl: u32,
}

/// The underlay router's address.
const ROUTER: &str = "192.0.2.254";

fn ip(args: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(args))
}

impl Cluster {
    /// The underlay and `members` etcd members (started, answering), no host yet.
    pub fn new(lab: &mut Lab, members: usize) -> Result<Cluster> {
        Self::with_tls(lab, members, None)
    }

    /// As [`Cluster::new`], with etcd over TLS and client certificates: `tls` is
    /// (etcd flags, agent flags) naming the certificate files.
    pub fn with_tls(
        lab: &mut Lab,
        members: usize,
        tls: Option<(Vec<String>, Vec<String>)>,
    ) -> Result<Cluster> {
        let ul = lab.add_ns("ul")?;
        ip(&[
            "-n",
            &ul,
            "addr",
            "add",
            &format!("{ROUTER}/32"),
            "dev",
            "lo",
        ])?;
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &ul,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        let (etcd_flags, agent_flags, scheme) = match tls {
            Some((e, a)) => (e, a, "https"),
            None => (Vec::new(), Vec::new(), "http"),
        };
        let mut c = Cluster {
            dir: lab.dir().to_path_buf(),
            ul,
            members: Vec::new(),
            hosts: BTreeMap::new(),
            agent_flags,
            scheme,
            etcd_flags,
            ttl: 3,
        };
        for i in 1..=members {
            let name = format!("e{i}");
            let ip_addr = format!("192.0.2.{}", 100 + i);
            c.underlay(lab, &name, &ip_addr)?;
            c.members.push(Member {
                name,
                ip: ip_addr,
                data: c.dir.join(format!("etcd-e{i}")),
                child: None,
            });
        }
        for i in 0..members {
            c.start_etcd(lab, i)?;
        }
        c.wait_etcd(lab)?;
        Ok(c)
    }

    /// Namespace `short` on the underlay at `addr`: its own link to the router, a /32
    /// on it, the rest of 192.0.2.0/24 through the router.
    fn underlay(&self, lab: &mut Lab, short: &str, addr: &str) -> Result<()> {
        let ns = lab.add_ns(short)?;
        let side = format!("u-{short}");
        ip(&[
            "link", "add", "name", &side, "netns", &self.ul, "type", "veth", "peer", "name", "ul0",
            "netns", &ns,
        ])?;
        ip(&["-n", &self.ul, "link", "set", &side, "mtu", "1600", "up"])?;
        ip(&[
            "-n",
            &self.ul,
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            &side,
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "ul0",
        ])?;
        ip(&["-n", &ns, "link", "set", "ul0", "mtu", "1600", "up"])?;
        ip(&["-n", &ns, "route", "add", ROUTER, "dev", "ul0"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            ROUTER,
            "dev",
            "ul0",
            "src",
            addr,
        ])?;
        Ok(())
    }

    /// The client URLs of every member, comma-separated.
    pub fn etcd_urls(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}://{}:2379", self.scheme, m.ip))
            .collect();
        urls.join(",")
    }

    /// Start member `i` (its data directory is kept across restarts).
    pub fn start_etcd(&mut self, lab: &Lab, i: usize) -> Result<()> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}://{}:2380", m.name, self.scheme, m.ip))
            .collect();
        let m = &self.members[i];
        let peer = format!("{}://{}:2380", self.scheme, m.ip);
        let client = format!("{}://{}:2379", self.scheme, m.ip);
        let state = if m.data.exists() { "existing" } else { "new" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("etcd-{}.log", m.name)))?;
        let child = lab
            .cmd(&m.name, "etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "vswitch-test"])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(&self.etcd_flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start etcd")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Wait until etcd answers (through etcdctl, from the first member's namespace).
    pub fn wait_etcd(&self, lab: &Lab) -> Result<()> {
        let ok = wait_until(Duration::from_secs(20), || {
            self.etcdctl(lab, &["endpoint", "health"]).is_ok()
        });
        ensure!(
            ok,
            "etcd did not become healthy: {}",
            self.log("etcd-e1.log")
        );
        Ok(())
    }

    /// Run etcdctl against the cluster (from an etcd member's namespace).
    pub fn etcdctl(&self, lab: &Lab, args: &[&str]) -> Result<String> {
        let live = self
            .members
            .iter()
            .find(|m| m.child.is_some())
            .context("no etcd member running")?;
        let mut c = lab.cmd(&live.name, "etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_urls()))
            .args(["--dial-timeout", "2s", "--command-timeout", "3s"]);
        // The agent's --cacert/--cert/--key flags are etcdctl's too.
        run_ok(c.args(&self.agent_flags).args(args))
    }

    /// SIGKILL etcd member `i`.
    pub fn kill_etcd(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Add host `hN` (namespace, underlay address 192.0.2.N), start its vswitchd and
    /// agent, and wait until the agent is registered.
    pub fn add_host(&mut self, lab: &mut Lab, n: u8) -> Result<String> {
        ensure!(
            (1..100).contains(&n),
            "host numbers are 1..99 (etcd members use .101..)"
        );
        let name = format!("h{n}");
        let addr = format!("192.0.2.{n}");
        self.underlay(lab, &name, &addr)?;
        self.hosts.insert(
            name.clone(),
            Host {
                ip: addr,
                vswitchd: None,
                agent: None,
            },
        );
        self.start_vswitchd(lab, &name)?;
        self.start_agent(lab, &name)?;
        self.wait_registered(&name, &name)?;
        Ok(name)
    }

    pub fn socket(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}.sock"))
    }

    fn host(&mut self, host: &str) -> Result<&mut Host> {
        self.hosts
            .get_mut(host)
            .with_context(|| format!("no host {host}"))
    }

    /// Start host's vswitchd (same db as before) and wait until it answers.
    pub fn start_vswitchd(&mut self, lab: &Lab, host: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{host}-vswitchd.log")))?;
        let child = lab
            .cmd(host, bin("vswitchd")?.to_str().unwrap_or("vswitchd"))
            .arg("--socket")
            .arg(self.socket(host))
            .arg("--db")
            .arg(self.dir.join(format!("{host}.db")))
            .args(["--workers", "1", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start vswitchd")?;
        self.host(host)?.vswitchd = Some(child);
        let ok = wait_until(Duration::from_secs(10), || {
            self.ctl(host, &["version"]).is_ok_and(|o| o.code == 0)
        });
        ensure!(ok, "{host}: vswitchd did not answer");
        Ok(())
    }

    /// Start host's agent (node name = host name) with `extra` flags.
    pub fn start_agent(&mut self, lab: &Lab, host: &str) -> Result<()> {
        let child = self.spawn_agent(lab, host, host, &[])?;
        self.host(host)?.agent = Some(child);
        Ok(())
    }

    /// An agent process for `host`'s vswitchd calling itself `node` (not recorded:
    /// the caller owns it; used for the duplicate-name case).
    pub fn spawn_agent(&self, lab: &Lab, host: &str, node: &str, extra: &[&str]) -> Result<Child> {
        let h = self.hosts.get(host).context("no such host")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{host}-agent.log")))?;
        lab.cmd(
            host,
            bin("vswitch-agent")?.to_str().unwrap_or("vswitch-agent"),
        )
        .args(["--etcd", &self.etcd_urls(), "--node", node, "--vtep", &h.ip])
        .arg("--socket")
        .arg(self.socket(host))
        .args(["--ttl", &self.ttl.to_string()])
        .args(["--log-level", "info,vswitch_agent=debug"])
        .args(&self.agent_flags)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start vswitch-agent")
    }

    /// SIGTERM host's agent; its exit code, or `None` if it did not exit within
    /// `grace`.
    pub fn stop_agent(&mut self, host: &str, grace: Duration) -> Result<Option<i32>> {
        let mut c = self.host(host)?.agent.take().context("agent not running")?;
        Ok(terminate(&mut c, grace))
    }

    /// SIGKILL host's agent.
    pub fn kill_agent(&mut self, host: &str) -> Result<()> {
        if let Some(mut c) = self.host(host)?.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGKILL host's vswitchd and agent (a crashed host).
    pub fn kill_host(&mut self, host: &str) -> Result<()> {
        self.kill_agent(host)?;
        if let Some(mut c) = self.host(host)?.vswitchd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// PIDs of host's vswitchd and agent (memory figures).
    pub fn pids(&self, host: &str) -> (Option<u32>, Option<u32>) {
        match self.hosts.get(host) {
            Some(h) => (
                h.vswitchd.as_ref().map(Child::id),
                h.agent.as_ref().map(Child::id),
            ),
            None => (None, None),
        }
    }

    /// Whether host's agent process is still running.
    pub fn agent_running(&mut self, host: &str) -> bool {
        self.hosts
            .get_mut(host)
            .and_then(|h| h.agent.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// vswitchctl against host's vswitchd.
    pub fn ctl(&self, host: &str, args: &[&str]) -> Result<CtlOutput> {
        let out = run(Command::new(bin("vswitchctl")?)
            .arg("--socket")
            .arg(self.socket(host))
            .args(args))?;
        Ok(CtlOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    pub fn ctl_ok(&self, host: &str, args: &[&str]) -> Result<String> {
        let o = self.ctl(host, args)?;
        if o.code != 0 {
            bail!(
                "{host}: vswitchctl {} failed: {}",
                args.join(" "),
                o.stderr.trim()
            );
        }
        Ok(o.stdout)
    }

    pub fn ctl_json(&self, host: &str, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(host, &a)?;
        serde_json::from_str(&out).with_context(|| format!("parse JSON of {}", args.join(" ")))
    }

    /// `cluster-show --json` on host, if it answers.
    pub fn show(&self, host: &str) -> Option<serde_json::Value> {
        self.ctl_json(host, &["cluster-show"]).ok()
    }

    /// Wait until host's cluster-show satisfies `f` (`what` names it in the error).
    pub fn wait_show(
        &self,
        host: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let ok = wait_until(timeout, || self.show(host).is_some_and(|v| f(&v)));
        if !ok {
            bail!(
                "{host}: {what}: not within {} s; cluster-show: {}\nagent log:\n{}",
                timeout.as_secs(),
                self.show(host).map(|v| v.to_string()).unwrap_or_default(),
                self.log_tail(&format!("{host}-agent.log"), 25)
            );
        }
        Ok(())
    }

    /// Wait until `host`'s agent lists `node` alive.
    pub fn wait_registered(&self, host: &str, node: &str) -> Result<()> {
        self.wait_show(
            host,
            &format!("{node} alive"),
            Duration::from_secs(20),
            |v| node_state(v, node).as_deref() == Some("alive"),
        )
    }

    /// Plumb container namespace `name` (created if needed) into `bridge` on `host`
    /// with pipework; `addr` is `IP/PREFIX[@GW]` or `dhcp`. The container's resolver
    /// is `resolver` (its gateway, for name tests).
    pub fn pipework(
        &self,
        lab: &mut Lab,
        host: &str,
        bridge: &str,
        name: &str,
        addr: &str,
    ) -> Result<std::process::Output> {
        if !std::path::Path::new("/run/netns")
            .join(lab.ns(name))
            .exists()
        {
            lab.add_ns(name)?;
            // No IPv6 chatter (router solicitations, MLD) on the overlay.
            lab.sh(
                name,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            )?;
        }
        run(Command::new(bin("pipework")?)
            .arg("--socket")
            .arg(self.socket(host))
            .args([bridge, "-i", "eth0", "--name", name, &lab.ns(name), addr]))
    }

    pub fn pipework_ok(
        &self,
        lab: &mut Lab,
        host: &str,
        bridge: &str,
        name: &str,
        addr: &str,
    ) -> Result<()> {
        let o = self.pipework(lab, host, bridge, name, addr)?;
        ensure!(
            o.status.success(),
            "{host}: pipework {bridge} {name} {addr}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// The last `n` lines of a log in the lab directory.
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let t = self.log(name);
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The state (`alive`/`gone`) of `node` in a cluster-show result.
pub fn node_state(show: &serde_json::Value, node: &str) -> Option<String> {
    show["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == node)
        .and_then(|n| n["state"].as_str().map(str::to_string))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first (they revoke their leases), then vswitchd, then etcd; each by
        // the PID we spawned. Teardown goes on whatever fails.
        for h in self.hosts.values_mut() {
            if let Some(mut c) = h.agent.take() {
                terminate(&mut c, Duration::from_secs(5));
            }
        }
        for h in self.hosts.values_mut() {
            if let Some(mut c) = h.vswitchd.take() {
                terminate(&mut c, Duration::from_secs(10));
            }
        }
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(&m.data);
        }
    }
}
