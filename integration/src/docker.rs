//! A private Docker engine for tests: `dockerd` started by the test, in the test's own
//! network namespace, with its own data root, exec root and socket, no bridge and no
//! iptables rules (`--bridge=none --iptables=false`). Images cannot be pulled here, so
//! the one image is imported from a root holding the host's static busybox.
//! Everything it made is removed on drop: containers, the engine (by the PID of the
//! child we spawned), its directories.

use crate::{run, run_ok, wait_until};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The image every test container runs: busybox, plus `/lib`, `/lib64` pointing into
/// `/usr` so that a host binary works when the host's `/usr` is mounted.
pub const IMAGE: &str = "vswitch-busybox:test";

pub struct Docker {
    dir: PathBuf,
    engine: Option<Child>,
    containers: Vec<String>,
}

fn find_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("busybox not found (apt-get install busybox-static)")
}

impl Docker {
    /// Start an engine under `dir` and import the test image.
    pub fn start(dir: &Path) -> Result<Docker> {
        if run(Command::new("dockerd").arg("--version")).is_err() {
            bail!("dockerd not found (apt-get install docker.io)");
        }
        let dir = dir.join("docker");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let engine = Command::new("dockerd")
            .arg("--bridge=none")
            .arg("--iptables=false")
            .arg("--ip6tables=false")
            .arg("--ip-forward=false")
            .arg("--ip-masq=false")
            .arg("--storage-driver=vfs")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start dockerd")?;
        let d = Docker {
            dir,
            engine: Some(engine),
            containers: Vec::new(),
        };
        let up = wait_until(Duration::from_secs(30), || {
            d.cmd()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !up {
            bail!("private dockerd did not come up: {}", d.log_tail());
        }
        d.import_image()?;
        Ok(d)
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// `DOCKER_HOST` for this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// A `docker` command talking to this engine.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.host()).stdin(Stdio::null());
        c
    }

    fn import_image(&self) -> Result<()> {
        let root = self.dir.join("rootfs");
        for d in ["bin", "usr", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy(find_busybox()?, root.join("bin/busybox"))?;
        for a in [
            "sh", "sleep", "ip", "ping", "nslookup", "cat", "echo", "ifconfig", "udhcpc", "true",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
        }
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64"))?;
        let tar = self.dir.join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        run_ok(self.cmd().arg("import").arg(&tar).arg(IMAGE))?;
        Ok(())
    }

    /// `docker run -d --net=none --name NAME [extra...] IMAGE cmd...`; removed on drop.
    pub fn run_container(&mut self, name: &str, extra: &[&str], cmd: &[&str]) -> Result<()> {
        run_ok(
            self.cmd()
                .args(["run", "-d", "--net=none", "--name", name])
                .args(extra)
                .arg(IMAGE)
                .args(cmd),
        )?;
        self.containers.push(name.to_string());
        Ok(())
    }

    /// `docker exec NAME args...`: (success, stdout + stderr).
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<(bool, String)> {
        let o = run(self.cmd().arg("exec").arg(name).args(args))?;
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        Ok((o.status.success(), s))
    }

    /// Any docker subcommand; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        run_ok(self.cmd().args(args))
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.containers) {
            let _ = self.cmd().args(["rm", "-f", &c]).output();
        }
        if let Some(mut e) = self.engine.take() {
            crate::terminate(&mut e, Duration::from_secs(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
