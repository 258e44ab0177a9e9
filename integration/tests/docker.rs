//! pipework with real Docker containers (`--net=none`) from a private dockerd started
//! by the test inside its own network namespace.

use anyhow::{ensure, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vswitch_integration::docker::Docker;
use vswitch_integration::{bin, run, terminate, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "containers_ping_and_resolve_each_other_then_disconnect",
            containers_ping_and_resolve_each_other_then_disconnect,
        ),
        (
            "wait_inside_a_container_plumbed_later",
            wait_inside_a_container_plumbed_later,
        ),
        (
            "watch_replumbs_a_restarted_container",
            watch_replumbs_a_restarted_container,
        ),
    ])
}

fn pipework(lab: &Lab, docker: &Docker, args: &[&str]) -> Result<(bool, String)> {
    let o = run(Command::new(bin("pipework")?)
        .env("DOCKER_HOST", docker.host())
        .arg("--socket")
        .arg(lab.socket())
        .args(args))?;
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    Ok((o.status.success(), s))
}

fn pipework_ok(lab: &Lab, docker: &Docker, args: &[&str]) -> Result<String> {
    let (ok, out) = pipework(lab, docker, args)?;
    ensure!(ok, "pipework {}: {}", args.join(" "), out.trim());
    Ok(out)
}

/// A lab with vswitchd, br0 10.0.0.0/24 (gateway and DNS at 10.0.0.1) and an engine.
fn setup(extra: &[&str]) -> Result<(Lab, Docker)> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    let mut args = vec![
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ];
    args.extend_from_slice(extra);
    lab.ctl_ok(&args)?;
    let docker = Docker::start(lab.dir())?;
    Ok((lab, docker))
}

fn sleeper(docker: &mut Docker, name: &str) -> Result<()> {
    docker.run_container(name, &[], &["sleep", "600"])
}

/// `nslookup NAME 10.0.0.1` inside container `c`: the address it answered, if any.
fn lookup(docker: &Docker, c: &str, name: &str) -> Result<Option<String>> {
    let (_, out) = docker.exec(c, &["nslookup", name, "10.0.0.1"])?;
    // busybox prints the server first ("Address: 10.0.0.1:53"), then the answers.
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .find(|a| !a.starts_with("10.0.0.1:") && a != "10.0.0.1"))
}

fn ping(docker: &Docker, c: &str, ip: &str) -> Result<bool> {
    Ok(docker.exec(c, &["ping", "-c", "1", "-W", "2", ip])?.0)
}

fn containers_ping_and_resolve_each_other_then_disconnect() -> Result<()> {
    let (lab, mut docker) = setup(&[])?;
    sleeper(&mut docker, "web")?;
    sleeper(&mut docker, "db")?;
    let out = pipework_ok(&lab, &docker, &["br0", "web", "10.0.0.11/24@10.0.0.1"])?;
    ensure!(out.contains("dns name web"), "{out}");
    pipework_ok(&lab, &docker, &["br0", "db", "10.0.0.12/24@10.0.0.1"])?;

    ensure!(ping(&docker, "web", "10.0.0.12")?, "web cannot ping db");
    ensure!(ping(&docker, "db", "10.0.0.11")?, "db cannot ping web");
    ensure!(
        ping(&docker, "web", "10.0.0.1")?,
        "web cannot ping the gateway"
    );
    let db = lookup(&docker, "web", "db")?;
    ensure!(
        db.as_deref() == Some("10.0.0.12"),
        "web resolved db as {db:?}"
    );
    let web = lookup(&docker, "db", "web")?;
    ensure!(
        web.as_deref() == Some("10.0.0.11"),
        "db resolved web as {web:?}"
    );
    // The port records the container, the default route is the gateway.
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    let id = docker.ok(&["inspect", "-f", "{{.Id}}", "web"])?;
    ensure!(
        ports
            .as_array()
            .context("ports")?
            .iter()
            .any(|p| p["external_ids"]["container_id"] == id.trim()
                && p["external_ids"]["guest"] == "web"),
        "{ports}"
    );
    let (_, route) = docker.exec("web", &["ip", "route"])?;
    ensure!(route.contains("default via 10.0.0.1"), "{route}");

    // Same command again: "already plumbed", nothing changes.
    let (ok, out) = pipework(&lab, &docker, &["br0", "web", "10.0.0.11/24@10.0.0.1"])?;
    ensure!(!ok && out.contains("already plumbed"), "{out}");
    // A stopped container is a clear error.
    docker.run_container("stopped", &[], &["true"])?;
    ensure!(
        wait_until(Duration::from_secs(10), || docker
            .ok(&["inspect", "-f", "{{.State.Running}}", "stopped"])
            .is_ok_and(|s| s.trim() == "false")),
        "container 'stopped' still runs"
    );
    let (ok, out) = pipework(&lab, &docker, &["br0", "stopped", "10.0.0.13/24"])?;
    ensure!(
        !ok && out.trim() == "error: container stopped is not running",
        "{out}"
    );
    let (ok, out) = pipework(&lab, &docker, &["br0", "nosuch", "10.0.0.13/24"])?;
    ensure!(
        !ok && out.trim() == "error: no such container or network namespace: nosuch",
        "{out}"
    );

    // docker network disconnect: the interface, the name and the address go.
    pipework_ok(&lab, &docker, &["--remove", "br0", "db"])?;
    let (_, links) = docker.exec("db", &["ip", "link"])?;
    ensure!(!links.contains("eth1"), "eth1 still in db: {links}");
    ensure!(lookup(&docker, "web", "db")?.is_none(), "db still resolves");
    ensure!(
        !ping(&docker, "web", "10.0.0.12")?,
        "10.0.0.12 still answers"
    );
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    ensure!(ports.as_array().map(Vec::len) == Some(1), "{ports}");
    Ok(())
}

fn wait_inside_a_container_plumbed_later() -> Result<()> {
    let (lab, mut docker) = setup(&[])?;
    // The container runs `pipework --wait` from the host's build (glibc from the
    // host's /usr, mounted read-only) as its first command, like the original's
    // `pipework --wait` in an entrypoint.
    let pw = bin("pipework")?;
    let mount = format!("{}:/pipework:ro", pw.display());
    docker.run_container(
        "waiter",
        &["-v", &mount, "-v", "/usr:/usr:ro"],
        &[
            "sh",
            "-c",
            "/pipework --wait --timeout 30 && echo ready && ip -4 addr show eth1",
        ],
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let state = docker.ok(&["inspect", "-f", "{{.State.Running}}", "waiter"])?;
    ensure!(state.trim() == "true", "waiter is not waiting: {state}");
    pipework_ok(&lab, &docker, &["br0", "waiter", "10.0.0.21/24"])?;
    let code = run(docker.cmd().args(["wait", "waiter"]))?;
    let code = String::from_utf8_lossy(&code.stdout).trim().to_string();
    let logs = docker.ok(&["logs", "waiter"])?;
    ensure!(code == "0", "waiter exited {code}: {logs}");
    ensure!(
        logs.contains("ready") && logs.contains("10.0.0.21/24"),
        "{logs}"
    );

    // With nothing plumbed, --wait gives up after its bound with a clear error.
    docker.run_container(
        "loner",
        &["-v", &mount, "-v", "/usr:/usr:ro"],
        &["/pipework", "--wait", "--timeout", "1"],
    )?;
    let o = run(docker.cmd().args(["wait", "loner"]))?;
    let code = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let logs = docker.ok(&["logs", "loner"])?;
    let o = run(docker.cmd().args(["logs", "loner"]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        code == "1" && err.contains("interface eth1 did not appear within 1 s"),
        "loner exited {code}: {logs} {err}"
    );
    Ok(())
}

/// `pipework --watch` as a child we own; killed on drop.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(5));
    }
}

fn watch_replumbs_a_restarted_container() -> Result<()> {
    let (lab, mut docker) = setup(&["--dhcp", "10.0.0.100-10.0.0.150"])?;
    sleeper(&mut docker, "app")?;
    sleeper(&mut docker, "client")?;
    pipework_ok(
        &lab,
        &docker,
        &["br0", "app", "10.0.0.31/24@10.0.0.1", "U:app"],
    )?;
    pipework_ok(&lab, &docker, &["br0", "client", "dhcp"])?;
    ensure!(
        ping(&docker, "client", "10.0.0.31")?,
        "no ping before restart"
    );
    let (_, before) = docker.exec("client", &["ip", "-4", "addr", "show", "eth1"])?;

    let log = std::fs::File::create(lab.dir().join("watch.log"))?;
    let watcher = Watcher(
        Command::new(bin("pipework")?)
            .env("DOCKER_HOST", docker.host())
            .arg("--socket")
            .arg(lab.socket())
            .arg("--watch")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start pipework --watch")?,
    );
    let read_log = || std::fs::read_to_string(lab.dir().join("watch.log")).unwrap_or_default();
    ensure!(
        wait_until(Duration::from_secs(10), || read_log().contains("watching")),
        "watcher did not start: {}",
        read_log()
    );

    // Restart both: the static one and the dhcp one come back by themselves.
    docker.ok(&["restart", "-t", "0", "app"])?;
    docker.ok(&["restart", "-t", "0", "client"])?;
    let back = wait_until(Duration::from_secs(30), || {
        ping(&docker, "client", "10.0.0.31").unwrap_or(false)
    });
    ensure!(back, "no ping after restart; watcher log:\n{}", read_log());
    let (_, after) = docker.exec("client", &["ip", "-4", "addr", "show", "eth1"])?;
    let addr = |s: &str| {
        s.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .map(str::to_string)
    };
    ensure!(
        addr(&before).is_some() && addr(&before) == addr(&after),
        "dhcp address changed across restart: {before} -> {after}"
    );
    let app = lookup(&docker, "client", "app")?;
    ensure!(
        app.as_deref() == Some("10.0.0.31"),
        "app resolves as {app:?}"
    );
    let (_, route) = docker.exec("app", &["ip", "route"])?;
    ensure!(route.contains("default via 10.0.0.1"), "{route}");
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    ensure!(ports.as_array().map(Vec::len) == Some(2), "{ports}");
    drop(watcher);
    Ok(())
}
