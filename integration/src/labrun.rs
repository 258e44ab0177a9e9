//! `vswitch-lab up | down | status`: build a lab file's world out of network
//! namespaces, remember what was built in a state directory, and tear it down again —
//! also after a failed or interrupted `up`.
//!
//! Layout: namespace `vl-LAB-ul` holds the underlay (a kernel bridge joining every
//! host at 192.0.2.0/24, MTU 1600 so VXLAN fits 1500-byte frames); `vl-LAB-HOST` runs
//! that host's vswitchd; `vl-LAB-CTR` is a container, plumbed with `pipework` (`eth0`
//! on its bridge, `eth1`... on its extra networks; DNS names registered). Bridges with a `vni` get a vxlan port towards every
//! other host (UDP port 4789 for the first such bridge, 4790 for the next, ...).
//! With `[cluster]`: `vl-LAB-eN` runs etcd member N on the underlay, every host runs
//! vswitch-agent beside its vswitchd, and `overlay` bridges are declared once on the
//! first host; the agents do the rest (tunnels, addresses, names).

use crate::labfile::{LabFile, LinkRate, LiveRates};
use crate::{bin, run_ok, wait_until};
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What `up` created, written before each step so `down` can undo a partial `up`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub namespaces: Vec<String>,
    /// (pid, start time in clock ticks) of every process `up` started.
    pub pids: Vec<(u32, u64)>,
    /// What each of `pids` is (same order): program, namespace and log.
    #[serde(default)]
    pub roles: Vec<String>,
    pub complete: bool,
}

fn state_dir(lab: &LabFile) -> PathBuf {
    PathBuf::from("/run/vswitch-lab").join(lab.name())
}

fn ns_name(lab: &LabFile, part: &str) -> String {
    format!("vl-{}-{part}", lab.name())
}

fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = s.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn ip(args: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(args))
}

struct Builder {
    dir: PathBuf,
    state: State,
}

impl Builder {
    fn save(&self) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?)?;
        std::fs::rename(&tmp, self.dir.join("state.json"))?;
        Ok(())
    }

    fn add_ns(&mut self, name: &str, nameserver: &str) -> Result<()> {
        self.state.namespaces.push(name.to_string());
        self.save()?;
        ip(&["netns", "add", name])?;
        let etc = PathBuf::from("/etc/netns").join(name);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn spawn(
        &mut self,
        ns: &str,
        program: &[&str],
        log: &str,
        envs: &[(&str, String)],
    ) -> Result<u32> {
        let f = std::fs::File::create(self.dir.join(log))?;
        // A process group of its own, so `down` ends the command and its children.
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(program)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("start {} in {ns}", program[0]))?;
        let pid = child.id();
        // Not waited for: it outlives `up`; `down` ends it by this PID.
        std::mem::forget(child);
        self.state.pids.push((pid, start_time(pid).unwrap_or(0)));
        let prog = Path::new(program[0]).file_name().map_or_else(
            || program[0].to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        self.state.roles.push(format!(
            "{prog} in namespace {ns} (log {})",
            self.dir.join(log).display()
        ));
        self.save()?;
        Ok(pid)
    }

    fn ctl(&self, host: &str, args: &[&str]) -> Result<String> {
        let sock = self.dir.join(format!("{host}.sock"));
        let out = Command::new(bin("vswitchctl")?)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "{host}: vswitchctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Build the lab. On failure the partial state stays recorded for `down`.
pub fn up(lab: &LabFile) -> Result<()> {
    let dir = state_dir(lab);
    if dir.join("state.json").exists() {
        let st: State =
            serde_json::from_slice(&std::fs::read(dir.join("state.json"))?).unwrap_or_default();
        bail!(
            "lab {} is already up ({} namespaces: {}); run `vswitch-lab down` with the same file first",
            lab.name(),
            st.namespaces.len(),
            st.namespaces.join(" ")
        );
    }
    std::fs::create_dir_all(&dir)?;
    let mut b = Builder {
        dir: dir.clone(),
        state: State::default(),
    };
    b.save()?;
    let multi = lab.hosts.len() > 1 || lab.cluster.is_some();
    let ul = ns_name(lab, "ul");
    if multi {
        println!("underlay {ul} (192.0.2.0/24)");
        b.add_ns(&ul, "127.0.0.1")?;
        ip(&["-n", &ul, "link", "add", "name", "ulbr", "type", "bridge"])?;
        ip(&["-n", &ul, "link", "set", "ulbr", "up"])?;
    }
    let etcd_urls = match &lab.cluster {
        Some(c) => start_etcd(lab, &mut b, &ul, &c.etcd)?,
        None => String::new(),
    };
    let vswitchd = bin("vswitchd")?;
    for h in &lab.hosts {
        let ns = ns_name(lab, &h.name);
        println!(
            "host {} ({ns}){}",
            h.name,
            h.underlay
                .as_deref()
                .map(|u| format!(" underlay {u}"))
                .unwrap_or_default()
        );
        b.add_ns(&ns, "127.0.0.1")?;
        if let (true, Some(u)) = (multi, &h.underlay) {
            let side = format!("u-{}", h.name);
            ip(&[
                "link", "add", "name", &side, "netns", &ul, "type", "veth", "peer", "name", "ul0",
                "netns", &ns,
            ])?;
            ip(&[
                "-n", &ul, "link", "set", &side, "master", "ulbr", "mtu", "1600", "up",
            ])?;
            ip(&["-n", &ns, "addr", "add", u, "dev", "ul0"])?;
            ip(&["-n", &ns, "link", "set", "ul0", "mtu", "1600", "up"])?;
        }
        let sock = dir.join(format!("{}.sock", h.name));
        let db = dir.join(format!("{}.db", h.name));
        let vs = vswitchd.display().to_string();
        let (sock_s, db_s) = (sock.display().to_string(), db.display().to_string());
        b.spawn(
            &ns,
            &[&vs, "--socket", &sock_s, "--db", &db_s],
            &format!("{}.log", h.name),
            &[],
        )?;
        let ready = wait_until(Duration::from_secs(10), || {
            b.ctl(&h.name, &["version"]).is_ok()
        });
        if !ready {
            bail!(
                "vswitchd on host {} did not start; see {}",
                h.name,
                dir.join(format!("{}.log", h.name)).display()
            );
        }
        if let Some(c) = &lab.cluster {
            let agent = bin("vswitch-agent")?.display().to_string();
            let vtep = h
                .underlay
                .as_deref()
                .and_then(|u| u.split('/').next())
                .unwrap_or_default()
                .to_string();
            let ttl = c.ttl.unwrap_or(10).to_string();
            b.spawn(
                &ns,
                &[
                    &agent, "--etcd", &etcd_urls, "--socket", &sock_s, "--node", &h.name, "--vtep",
                    &vtep, "--ttl", &ttl,
                ],
                &format!("{}.agent.log", h.name),
                &[],
            )?;
            let joined = wait_until(Duration::from_secs(30), || {
                b.ctl(&h.name, &["--json", "cluster-show"])
                    .ok()
                    .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                    .is_some_and(|v| v["etcd"] == "connected")
            });
            if !joined {
                bail!(
                    "vswitch-agent on host {} did not join the cluster; see {}",
                    h.name,
                    dir.join(format!("{}.agent.log", h.name)).display()
                );
            }
        }
        let mut vx_port = 4789u16;
        for br in lab.bridges.iter().filter(|x| !x.overlay) {
            let mut a = vec!["add-br".to_string(), br.name.clone()];
            for (flag, v) in [("--subnet", &br.subnet), ("--gateway", &br.gateway)] {
                if let Some(v) = v {
                    a.push(flag.into());
                    a.push(v.clone());
                }
            }
            if br.dhcp {
                a.push("--dhcp".into());
            }
            if let Some(m) = br.mtu {
                a.push("--mtu".into());
                a.push(m.to_string());
            }
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            b.ctl(&h.name, &refs)?;
            if let (true, Some(vni)) = (multi, br.vni) {
                let remotes: Vec<String> = lab
                    .hosts
                    .iter()
                    .filter(|o| o.name != h.name)
                    .filter_map(|o| {
                        o.underlay
                            .as_deref()
                            .and_then(|u| u.split('/').next())
                            .map(str::to_string)
                    })
                    .collect();
                let local = h
                    .underlay
                    .as_deref()
                    .and_then(|u| u.split('/').next())
                    .unwrap_or_default();
                b.ctl(
                    &h.name,
                    &[
                        "add-port",
                        &br.name,
                        &format!("vx-{}", br.name)
                            .chars()
                            .take(15)
                            .collect::<String>(),
                        "--type",
                        "vxlan",
                        "--remote-ip",
                        &remotes.join(","),
                        "--vni",
                        &vni.to_string(),
                        "--local-ip",
                        local,
                        "--dst-port",
                        &vx_port.to_string(),
                    ],
                )?;
                vx_port += 1;
            }
        }
    }
    // Overlay networks: declared once, created by every host's agent.
    if let Some(first) = lab.hosts.first().filter(|_| lab.cluster.is_some()) {
        for br in lab.bridges.iter().filter(|x| x.overlay) {
            let mut a = vec![
                "add-br".to_string(),
                br.name.clone(),
                "--overlay".to_string(),
            ];
            for (flag, v) in [("--subnet", &br.subnet), ("--gateway", &br.gateway)] {
                if let Some(v) = v {
                    a.push(flag.into());
                    a.push(v.clone());
                }
            }
            if br.dhcp {
                a.push("--dhcp".into());
            }
            if let Some(v) = br.vni {
                a.push("--vni".into());
                a.push(v.to_string());
            }
            if let Some(m) = br.mtu {
                a.push("--mtu".into());
                a.push(m.to_string());
            }
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            b.ctl(&first.name, &refs)?;
            for h in &lab.hosts {
                // There, and serving DHCP (from the host's own block) if it should.
                let there = wait_until(Duration::from_secs(20), || {
                    b.ctl(&h.name, &["--json", "list-br"])
                        .ok()
                        .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                        .and_then(|v| {
                            let a = v.as_array()?.clone();
                            let x = a.iter().find(|x| x["name"] == br.name.as_str())?.clone();
                            Some(!br.dhcp || !x["dhcp"].is_null())
                        })
                        .unwrap_or(false)
                });
                if !there {
                    bail!("overlay network {} did not reach host {}", br.name, h.name);
                }
            }
        }
    }
    let pipework = bin("pipework")?;
    for c in &lab.containers {
        let br = lab
            .bridges
            .iter()
            .find(|x| x.name == c.bridge)
            .context("bridge")?;
        let dns = br.gateway.clone().unwrap_or_else(|| "127.0.0.1".into());
        b.add_ns(&ns_name(lab, &c.name), &dns)?;
    }
    // Plumbing: hosts in parallel (each has its own vswitchd; attaching a port costs a
    // kernel RCU grace period, ~10 ms), the containers of one host in file order.
    let plumb = |host: &str| -> Result<()> {
        let sock = dir.join(format!("{host}.sock"));
        for c in lab.containers.iter().filter(|c| c.host == host) {
            let ns = ns_name(lab, &c.name);
            for (ifname, bridge, addr, gw) in c.interfaces() {
                let addr = match gw {
                    Some(g) if addr != "dhcp" => format!("{addr}@{g}"),
                    _ => addr.to_string(),
                };
                let out = Command::new(&pipework)
                    .arg("--socket")
                    .arg(&sock)
                    .arg("--json")
                    .args(["-i", &ifname, "--name", &c.name, bridge, &ns, &addr])
                    .stdin(Stdio::null())
                    .output()
                    .context("run pipework")?;
                if !out.status.success() {
                    bail!(
                        "container {}: pipework {bridge} -i {ifname} {addr}: {}",
                        c.name,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                // A dhcp interface's gateway from the file wins over the lease's router.
                if let (Some(g), "dhcp") = (gw, addr.as_str()) {
                    ip(&["-n", &ns, "route", "replace", "default", "via", g])?;
                }
                if let Some(imp) = c.impair_of(&ifname) {
                    let plumbed: serde_json::Value =
                        serde_json::from_slice(&out.stdout).context("pipework --json output")?;
                    let port = plumbed["port"].as_str().context("pipework: no port")?;
                    let set = Command::new(bin("vswitchctl")?)
                        .arg("--socket")
                        .arg(&sock)
                        .args(["set-port", port])
                        .args(imp.args())
                        .stdin(Stdio::null())
                        .output()
                        .context("run vswitchctl set-port")?;
                    if !set.status.success() {
                        bail!(
                            "container {} {ifname}: impair: {}",
                            c.name,
                            String::from_utf8_lossy(&set.stderr).trim()
                        );
                    }
                }
            }
        }
        Ok(())
    };
    per_host(lab, plumb)?;
    for c in &lab.containers {
        if let Some(cmd) = &c.run {
            let envs = [
                ("VSWITCH_LAB_DIR", dir.display().to_string()),
                ("VSWITCH_CONTAINER", c.name.clone()),
            ];
            b.spawn(
                &ns_name(lab, &c.name),
                &["sh", "-c", cmd],
                &format!("{}.run.log", c.name),
                &envs,
            )?;
        }
    }
    // Names across hosts: a bridge stretched by VXLAN is one network, so every host's
    // DNS on it knows the statically addressed containers of the other hosts too.
    if lab.hosts.len() > 1 {
        let b = &b;
        per_host(lab, |host: &str| -> Result<()> {
            for c in lab.containers.iter().filter(|c| c.host != host) {
                for (_, bridge, addr, _) in c.interfaces() {
                    // Overlay bridges share names through the cluster.
                    let stretched = lab
                        .bridges
                        .iter()
                        .any(|x| x.name == bridge && x.vni.is_some() && !x.overlay);
                    let Some((ip_only, _)) = addr.split_once('/') else {
                        continue;
                    };
                    if stretched {
                        b.ctl(host, &["add-host", bridge, &c.name, ip_only])?;
                    }
                }
            }
            Ok(())
        })?;
    }
    for m in &lab.masquerade {
        b.ctl(&m.host, &["masquerade", &m.bridge, "--out", &m.out])?;
    }
    for p in &lab.publish {
        b.ctl(&p.host, &["publish", &p.proto, &p.port, &p.target])?;
    }
    b.state.complete = true;
    b.save()?;
    print!("{}", status_table(lab)?);
    Ok(())
}

/// Start the etcd members of `[cluster]` on the underlay namespace `ul` and wait until
/// they answer; their client URLs, comma-separated.
fn start_etcd(lab: &LabFile, b: &mut Builder, ul: &str, members: &[String]) -> Result<String> {
    let ip_of = |m: &String| m.split('/').next().unwrap_or_default().to_string();
    let initial: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| format!("e{}=http://{}:2380", i + 1, ip_of(m)))
        .collect();
    let urls: Vec<String> = members
        .iter()
        .map(|m| format!("http://{}:2379", ip_of(m)))
        .collect();
    let etcd = "etcd".to_string();
    for (i, m) in members.iter().enumerate() {
        let name = format!("e{}", i + 1);
        let ns = ns_name(lab, &name);
        println!("etcd member {name} ({ns}) {m}");
        b.add_ns(&ns, "127.0.0.1")?;
        let side = format!("u-{name}");
        ip(&[
            "link", "add", "name", &side, "netns", ul, "type", "veth", "peer", "name", "ul0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n", ul, "link", "set", &side, "master", "ulbr", "mtu", "1600", "up",
        ])?;
        ip(&["-n", &ns, "addr", "add", m, "dev", "ul0"])?;
        ip(&["-n", &ns, "link", "set", "ul0", "mtu", "1600", "up"])?;
        let data = b.dir.join(format!("etcd-{name}")).display().to_string();
        let peer = format!("http://{}:2380", ip_of(m));
        let client = format!("http://{}:2379", ip_of(m));
        let cluster = initial.join(",");
        b.spawn(
            &ns,
            &[
                &etcd,
                "--name",
                &name,
                "--data-dir",
                &data,
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "vswitch-lab",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ],
            &format!("etcd-{name}.log"),
            &[],
        )?;
    }
    let first = ns_name(lab, "e1");
    let endpoints = format!("--endpoints={}", urls.join(","));
    let healthy = wait_until(Duration::from_secs(30), || {
        Command::new("ip")
            .args([
                "netns", "exec", &first, "etcdctl", &endpoints, "endpoint", "health",
            ])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !healthy {
        bail!(
            "etcd did not become healthy; see {}",
            b.dir.join("etcd-e1.log").display()
        );
    }
    Ok(urls.join(","))
}

/// Run `job` for every host of the lab at once, one thread each; the first error wins.
fn per_host(lab: &LabFile, job: impl Fn(&str) -> Result<()> + Sync) -> Result<()> {
    let job = &job;
    std::thread::scope(|s| {
        let running: Vec<_> = lab
            .hosts
            .iter()
            .map(|h| s.spawn(move || job(&h.name)))
            .collect();
        let mut first = Ok(());
        for r in running {
            let res = r
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a plumbing thread panicked")));
            if first.is_ok() {
                first = res;
            }
        }
        first
    })
}

/// The summary: one row per container.
pub fn status_table(lab: &LabFile) -> Result<String> {
    let mut rows = vec![(
        "CONTAINER".to_string(),
        "HOST".to_string(),
        "BRIDGE".to_string(),
        "ADDRESS".to_string(),
    )];
    for c in &lab.containers {
        let ns = ns_name(lab, &c.name);
        for (ifname, bridge, _, _) in c.interfaces() {
            let addr = ip(&["-n", &ns, "-j", "-4", "addr", "show", "dev", &ifname])
                .ok()
                .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
                .and_then(|v| {
                    let a = &v[0]["addr_info"][0];
                    Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"]))
                })
                .unwrap_or_else(|| "-".into());
            rows.push((c.name.clone(), c.host.clone(), bridge.to_string(), addr));
        }
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
    Ok(rows
        .iter()
        .map(|r| format!("{:<w0$}  {:<w1$}  {:<w2$}  {}\n", r.0, r.1, r.2, r.3))
        .collect())
}

/// Is the lab up? Prints hosts (vswitchd alive or not) and containers.
pub fn status(lab: &LabFile) -> Result<()> {
    let dir = state_dir(lab);
    let st: State = match std::fs::read(dir.join("state.json")) {
        Ok(b) => serde_json::from_slice(&b).context("state file")?,
        Err(_) => bail!("lab {} is not up", lab.name()),
    };
    println!(
        "lab {}: {}",
        lab.name(),
        if st.complete {
            "up"
        } else {
            "partially up (run down)"
        }
    );
    for (i, (pid, t)) in st.pids.iter().enumerate() {
        let alive = start_time(*pid) == Some(*t);
        let what = st.roles.get(i).map_or("process", String::as_str);
        println!(
            "  {what}, pid {pid}: {}",
            if alive { "running" } else { "gone" }
        );
    }
    print!("{}", status_table(lab)?);
    Ok(())
}

/// Remove everything `up` recorded, carrying on after failures and reporting them.
pub fn down(lab: &LabFile) -> Result<()> {
    let dir = state_dir(lab);
    let st: State = match std::fs::read(dir.join("state.json")) {
        Ok(b) => serde_json::from_slice(&b).context("state file")?,
        Err(_) => bail!(
            "lab {} is not up (no {})",
            lab.name(),
            dir.join("state.json").display()
        ),
    };
    let mut errors = Vec::new();
    for (pid, t) in &st.pids {
        // Only a process that is still the one we started (PIDs wrap).
        if *t != 0 && start_time(*pid) == Some(*t) {
            signal(*pid, Signal::SIGTERM);
            // The rest of its process group (a `run` command's children).
            signal_group(*pid, Signal::SIGTERM);
        }
    }
    for (pid, t) in &st.pids {
        if !wait_until(Duration::from_secs(5), || start_time(*pid) != Some(*t)) {
            signal(*pid, Signal::SIGKILL);
        }
        signal_group(*pid, Signal::SIGKILL);
    }
    for ns in st.namespaces.iter().rev() {
        if let Err(e) = ip(&["netns", "del", ns]) {
            if PathBuf::from("/run/netns").join(ns).exists() {
                errors.push(format!("{ns}: {e}"));
            }
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        errors.push(format!("{}: {e}", dir.display()));
    }
    if !errors.is_empty() {
        bail!("teardown incomplete: {}", errors.join("; "));
    }
    println!("lab {} is down", lab.name());
    Ok(())
}

/// Signal the process group `pgid` that `up` created (`process_group(0)`: its id is the
/// leader's PID). A group whose members all exited no longer exists; ESRCH is harmless.
fn signal_group(pgid: u32, sig: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        if pgid > 1 {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), sig);
        }
    }
}

/// The caller checked that `pid` is still the process it started (same start time).
fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// One host's switch as `vswitchctl --json CMD` answers through its socket.
fn host_json(lab: &LabFile, host: &str, args: &[&str]) -> Result<serde_json::Value> {
    let sock = state_dir(lab).join(format!("{host}.sock"));
    let out = Command::new(bin("vswitchctl")?)
        .arg("--socket")
        .arg(&sock)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run vswitchctl")?;
    if !out.status.success() {
        bail!(
            "host {host}: vswitchctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("vswitchctl --json output")
}

/// The rates of the lab's links and tunnels over `interval` seconds, measured the way
/// `vswitchctl top` does (two `stats` samples) on every host's switch at once; `None`
/// when the lab is not up. A host whose switch does not answer has no rates (its links
/// are drawn without).
pub fn live_rates(lab: &LabFile, interval: f64) -> Result<Option<LiveRates>> {
    let dir = state_dir(lab);
    let Ok(b) = std::fs::read(dir.join("state.json")) else {
        return Ok(None);
    };
    let st: State = serde_json::from_slice(&b).context("state file")?;
    if !st.complete {
        return Ok(None);
    }
    let secs = format!("{interval}");
    let sampled: Vec<(String, Result<(serde_json::Value, serde_json::Value)>)> =
        std::thread::scope(|s| {
            let jobs: Vec<_> = lab
                .hosts
                .iter()
                .map(|h| {
                    let secs = &secs;
                    s.spawn(move || {
                        let br = host_json(lab, &h.name, &["list-br"])?;
                        let top = host_json(lab, &h.name, &["top", "--once", "-i", secs])?;
                        Ok((br, top))
                    })
                })
                .collect();
            lab.hosts
                .iter()
                .zip(jobs)
                .map(|(h, j)| {
                    let r = j
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a sampling thread panicked")));
                    (h.name.clone(), r)
                })
                .collect()
        });
    let mut live = LiveRates {
        interval,
        at: chrono_utc_now(),
        ..Default::default()
    };
    let underlay_of = |host: &str| {
        lab.hosts
            .iter()
            .find(|h| h.name == host)
            .and_then(|h| h.underlay.as_deref())
            .and_then(|u| u.split('/').next())
            .map(str::to_string)
    };
    for (host, r) in sampled {
        let (brs, top) = match r {
            Ok(x) => x,
            Err(e) => {
                eprintln!("warning: no rates from host {host}: {e:#}");
                continue;
            }
        };
        let rate_of = |port: &str| {
            top.as_array()?
                .iter()
                .find(|r| r["port"] == port)
                .map(|r| LinkRate {
                    rx_bps: r["rx_bps"].as_f64().unwrap_or(0.0),
                    tx_bps: r["tx_bps"].as_f64().unwrap_or(0.0),
                    rx_pps: r["rx_pps"].as_f64().unwrap_or(0.0),
                    tx_pps: r["tx_pps"].as_f64().unwrap_or(0.0),
                })
        };
        for br in brs.as_array().into_iter().flatten() {
            let bname = br["name"].as_str().unwrap_or_default();
            for p in br["ports"].as_array().into_iter().flatten() {
                let pname = p["name"].as_str().unwrap_or_default();
                let ids = &p["external_ids"];
                // A container's port, as pipework recorded it.
                if let (Some(guest), Some(ifname)) = (ids["guest"].as_str(), ids["ifname"].as_str())
                {
                    let owner = lab
                        .containers
                        .iter()
                        .find(|c| c.host == host && ns_name(lab, &c.name) == guest);
                    if let (Some(c), Some(r)) = (owner, rate_of(pname)) {
                        live.links.insert((c.name.clone(), ifname.to_string()), r);
                    }
                    continue;
                }
                // A tunnel port: one rate per remote VTEP (`NAME@IP`).
                if p["type"] == "vxlan" {
                    for other in lab.hosts.iter().filter(|o| o.name != host) {
                        let Some(ip) = underlay_of(&other.name) else {
                            continue;
                        };
                        if let Some(r) = rate_of(&format!("{pname}@{ip}")) {
                            live.tunnels
                                .insert((host.clone(), bname.to_string(), other.name.clone()), r);
                        }
                    }
                }
            }
        }
    }
    Ok(Some(live))
}

/// `2026-12-05 15:40:01 UTC`, from the system clock (no time zone database needed).
fn chrono_utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_796_485_201), "2026-12-05 15:40:01 UTC");
    }
}
