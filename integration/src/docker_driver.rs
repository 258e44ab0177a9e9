//! A lab for `vswitch-docker`: vswitchd in its own namespace, a private dockerd
//! (whose `/run/docker/plugins` is the lab's `plugins/` directory, see
//! [`Docker::start_with_plugins`]) and the driver beside it, in the test's own network
//! namespace, as it runs beside dockerd on a host.
//!
//! Drop order matters: containers and networks are removed while the driver still
//! answers (dockerd would otherwise wait for the plugin), then the driver stops, then
//! the engine, then the lab.

use crate::docker::{Docker, IMAGE};
use crate::{bin, run, run_ok, terminate, wait_until, Lab};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Redis image: busybox plus Debian's redis-server and redis-cli with the
/// libraries they link (as `ldd` lists them).
pub const REDIS_IMAGE: &str = "vswitch-redis:test";

pub struct DriverLab {
    pub docker: Docker,
    pub lab: Lab,
    driver: Option<Child>,
    uplink: Option<String>,
    networks: Vec<String>,
}

impl DriverLab {
    /// vswitchd (namespace `sw`), dockerd, and vswitch-docker (with `--uplink`).
    pub fn start(
        uplink: Option<&str>,
        setup: impl FnOnce(&mut Lab) -> Result<()>,
    ) -> Result<DriverLab> {
        let mut lab = Lab::new()?;
        lab.start_switch("sw")?;
        setup(&mut lab)?;
        let plugins = lab.dir().join("plugins");
        std::fs::create_dir_all(&plugins)?;
        let docker = Docker::start_with_plugins(lab.dir(), &plugins)?;
        let mut d = DriverLab {
            docker,
            lab,
            driver: None,
            uplink: uplink.map(str::to_string),
            networks: Vec::new(),
        };
        d.start_driver()?;
        Ok(d)
    }

    fn plugins(&self) -> PathBuf {
        self.lab.dir().join("plugins")
    }

    /// Start vswitch-docker and wait until its socket answers.
    pub fn start_driver(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.lab.dir().join("driver.log"))?;
        let mut c = Command::new(bin("vswitch-docker")?);
        c.env("DOCKER_HOST", self.docker.host())
            .env("RUST_LOG", "debug")
            .arg("--socket")
            .arg(self.lab.socket())
            .arg("--plugin-dir")
            .arg(self.plugins())
            .args(["--log-level", "debug"]);
        if let Some(u) = &self.uplink {
            c.args(["--uplink", u]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start vswitch-docker")?;
        self.driver = Some(child);
        let sock = self.plugins().join("vswitch.sock");
        let up = wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        ensure!(up, "vswitch-docker did not listen: {}", self.driver_log());
        Ok(())
    }

    /// SIGTERM vswitch-docker; its exit code.
    pub fn stop_driver(&mut self) -> Result<i32> {
        let Some(mut c) = self.driver.take() else {
            bail!("vswitch-docker is not running");
        };
        terminate(&mut c, Duration::from_secs(10))
            .context("vswitch-docker did not exit within 10 s of SIGTERM")
    }

    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.lab.dir().join("driver.log")).unwrap_or_default()
    }

    /// `docker ARGS...`: (success, stdout + stderr).
    pub fn docker(&self, args: &[&str]) -> Result<(bool, String)> {
        let o = run(self.docker.cmd().args(args))?;
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        Ok((o.status.success(), s))
    }

    /// `docker ARGS...`, which must succeed; its output.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out) = self.docker(args)?;
        ensure!(ok, "docker {}: {}", args.join(" "), out.trim());
        Ok(out)
    }

    /// `docker network create -d vswitch ARGS... NAME`; removed on drop.
    pub fn network(&mut self, name: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["network", "create", "-d", "vswitch"];
        a.extend_from_slice(args);
        a.push(name);
        self.networks.push(name.to_string());
        self.docker_ok(&a)
    }

    /// `docker run -d --name NAME ARGS... IMAGE sleep 600`.
    pub fn sleeper(&mut self, name: &str, args: &[&str]) -> Result<()> {
        self.docker
            .run_detached(name, args, IMAGE, &["sleep", "600"])
    }

    /// Whether container `c` gets an answer from `ip`: one ping a second, up to 10
    /// (a loaded machine loses the odd one; a wrong network never answers).
    pub fn ping(&self, c: &str, ip: &str) -> Result<bool> {
        Ok(wait_until(Duration::from_secs(10), || {
            self.docker
                .exec(c, &["ping", "-c", "1", "-W", "1", ip])
                .is_ok_and(|(ok, _)| ok)
        }))
    }

    /// Whether container `c` gets an answer from `ip` to any of 3 pings.
    pub fn ping_quick(&self, c: &str, ip: &str) -> Result<bool> {
        Ok(self
            .docker
            .exec(c, &["ping", "-c", "3", "-i", "0.3", "-W", "1", ip])?
            .0)
    }

    /// The address of `name` per the DNS server at `server`, asked from container `c`.
    pub fn lookup(&self, c: &str, name: &str, server: &str) -> Result<Option<String>> {
        let (_, out) = self.docker.exec(c, &["nslookup", name, server])?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Address:"))
            .map(|a| a.trim().to_string())
            .find(|a| !a.starts_with(&format!("{server}:")) && a != server))
    }

    /// The bridge made for Docker network `net`, as `vswitchctl list-br --json` shows it.
    pub fn bridge_of(&self, net: &str) -> Result<Option<serde_json::Value>> {
        let id = self.docker_ok(&["network", "inspect", "-f", "{{.Id}}", net])?;
        let id = id.trim();
        let v = self.lab.ctl_json(&["list-br"])?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|b| b["external_ids"]["docker_network"] == id)
            .cloned())
    }

    /// Wait (bounded) for the bridge of `net`; its name.
    pub fn wait_bridge(&self, net: &str) -> Result<String> {
        let mut name = None;
        let ok = wait_until(Duration::from_secs(10), || {
            name = self
                .bridge_of(net)
                .ok()
                .flatten()
                .and_then(|b| b["name"].as_str().map(str::to_string));
            name.is_some()
        });
        ensure!(
            ok,
            "no bridge for network {net}; driver log:\n{}",
            self.driver_log()
        );
        name.context("bridge name")
    }

    /// Interfaces of the driver's (dockerd's) namespace and of vswitchd's made by the
    /// driver (`vc…`/`vd…`).
    pub fn driver_links(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let here = run_ok(Command::new("ip").args(["-o", "link", "show"]))?;
        let there = self.lab.sh("sw", "ip -o link show")?;
        for l in here.lines().chain(there.lines()) {
            if let Some(n) = l.split(": ").nth(1) {
                let n = n.split('@').next().unwrap_or(n);
                if n.starts_with("vc") || n.starts_with("vd") {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Build [`REDIS_IMAGE`].
    pub fn import_redis(&self) -> Result<()> {
        let root = self.docker.dir().join("redis-root");
        for d in [
            "bin",
            "usr/lib",
            "usr/lib64",
            "etc",
            "tmp",
            "proc",
            "sys",
            "dev",
            "data",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64"))?;
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("busybox not found")?;
        std::fs::copy(busybox, root.join("bin/busybox"))?;
        for a in ["sh", "sleep", "ping", "cat", "nslookup"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
        }
        for exe in ["/usr/bin/redis-server", "/usr/bin/redis-cli"] {
            ensure!(
                Path::new(exe).exists(),
                "{exe} not found (apt-get install redis-server redis-tools)"
            );
            let name = Path::new(exe).file_name().context("name")?;
            std::fs::copy(exe, root.join("bin").join(name))?;
            let ldd = run_ok(Command::new("ldd").arg(exe))?;
            for l in ldd.lines() {
                // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
                // "/lib64/ld-linux-x86-64.so.2 (0x…)".
                let path = match l.split_once("=>") {
                    Some((_, r)) => r.split_whitespace().next(),
                    None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
                };
                let Some(path) = path.map(Path::new) else {
                    continue;
                };
                let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
                    continue;
                };
                let dir = std::fs::canonicalize(dir)?;
                let dest = root.join(dir.strip_prefix("/")?);
                std::fs::create_dir_all(&dest)?;
                std::fs::copy(path, dest.join(file))?;
            }
        }
        self.docker.import_rootfs(&root, REDIS_IMAGE)
    }
}

impl Drop for DriverLab {
    fn drop(&mut self) {
        let ps = run(self.docker.cmd().args(["ps", "-aq"]));
        if let Ok(o) = ps {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = run(self.docker.cmd().args(["rm", "-f"]).args(&ids));
            }
        }
        for n in std::mem::take(&mut self.networks) {
            let _ = run(self.docker.cmd().args(["network", "rm", &n]));
        }
        if let Some(mut c) = self.driver.take() {
            terminate(&mut c, Duration::from_secs(5));
        }
        // Debugging aid: keep the driver's log.
        if let Some(dir) = std::env::var_os("VSWITCH_KEEP_DRIVER_LOG") {
            let name = self
                .lab
                .dir()
                .file_name()
                .unwrap_or_default()
                .to_os_string();
            let _ = std::fs::copy(
                self.lab.dir().join("driver.log"),
                Path::new(&dir).join(name).with_extension("log"),
            );
        }
    }
}
