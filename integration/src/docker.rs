//! A private Docker engine for tests: `dockerd` started by the test, in the test's own
//! network namespace, with its own data root, exec root and socket, no bridge and no
//! iptables rules (`--bridge=none --iptables=false`). Images cannot be pulled here, so
//! the one image is imported from a root holding the host's static busybox.
//! Everything it made is removed on drop: containers, the engine (by the PID of the
//! child we spawned), its directories.
//!
//! With a plugin directory ([`Docker::start_with_plugins`]) the engine runs in a
//! private mount namespace where that directory is bind-mounted over
//! `/run/docker/plugins` (over a private tmpfs `/run` when the machine has no
//! `/run/docker/plugins`), so it finds the test's network drivers and the machine's
//! plugin directory is never touched.

use crate::{run, run_ok, wait_until};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The image every test container runs: busybox, plus `/lib`, `/lib64` pointing into
/// `/usr` so that a host binary works when the host's `/usr` is mounted.
pub const IMAGE: &str = "vswitch-busybox:test";

/// Run in a private mount namespace: `$1` over /run/docker/plugins, then exec the rest.
const PRIVATE_PLUGINS: &str = r#"set -e
p="$1"; shift
if [ ! -d /run/docker/plugins ]; then
  mount -t tmpfs -o mode=0755 vswitch-test /run
  mkdir -p /run/docker/plugins
fi
mount --bind "$p" /run/docker/plugins
exec "$@""#;

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
        Docker::start_with(dir, None)
    }

    /// As [`Docker::start`], with `plugins` as the engine's `/run/docker/plugins`.
    pub fn start_with_plugins(dir: &Path, plugins: &Path) -> Result<Docker> {
        Docker::start_with(dir, Some(plugins))
    }

    fn start_with(dir: &Path, plugins: Option<&Path>) -> Result<Docker> {
        if run(Command::new("dockerd").arg("--version")).is_err() {
            bail!("dockerd not found (apt-get install docker.io)");
        }
        let dir = dir.join("docker");
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let mut engine = match plugins {
            None => Command::new("dockerd"),
            Some(p) => {
                // `unshare` and `sh` exec, so the child's PID is dockerd's.
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(PRIVATE_PLUGINS)
                    .arg("sh")
                    .arg(p)
                    .arg("dockerd");
                c
            }
        };
        let engine = engine
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

    /// This engine's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `docker` command talking to this engine: the CLI of dockerd's own version
    /// (docker.io's /usr/bin/docker) when there is one, else the first on PATH.
    pub fn cmd(&self) -> Command {
        let cli = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut c = Command::new(cli);
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
        self.import_rootfs(&root, IMAGE)
    }

    /// `docker import` the directory `root` as `image`.
    pub fn import_rootfs(&self, root: &Path, image: &str) -> Result<()> {
        let tar = self
            .dir
            .join(format!("{}.tar", image.replace([':', '/'], "-")));
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        run_ok(self.cmd().arg("import").arg(&tar).arg(image))?;
        Ok(())
    }

    /// `docker run -d --net=none --name NAME [extra...] IMAGE cmd...`; removed on drop.
    pub fn run_container(&mut self, name: &str, extra: &[&str], cmd: &[&str]) -> Result<()> {
        let mut args = vec!["--net=none"];
        args.extend_from_slice(extra);
        self.run_detached(name, &args, IMAGE, cmd)
    }

    /// `docker run -d --name NAME [args...] IMAGE cmd...`; removed on drop.
    pub fn run_detached(
        &mut self,
        name: &str,
        args: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> Result<()> {
        self.track(name);
        run_ok(
            self.cmd()
                .args(["run", "-d", "--name", name])
                .args(args)
                .arg(image)
                .args(cmd),
        )?;
        Ok(())
    }

    /// Remove container `name` on drop (if it still exists then).
    pub fn track(&mut self, name: &str) {
        if !self.containers.iter().any(|c| c == name) {
            self.containers.push(name.to_string());
        }
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
