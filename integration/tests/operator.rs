//! Operator basics: devices that cannot be ports, daemon start-up (--detach, --wait),
//! idempotent commands (--may-exist / --if-exists), names that leave with their port,
//! published port ranges, and the README's tour run as pasted.

use anyhow::{bail, ensure, Context, Result};
use std::process::{Command, Stdio};
use std::time::Duration;
use vswitch_integration::{bin, bin_dir, run, run_ok, terminate, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "devices_that_cannot_be_ports_are_refused",
            devices_that_cannot_be_ports_are_refused,
        ),
        (
            "detach_returns_when_the_socket_answers",
            detach_returns_when_the_socket_answers,
        ),
        (
            "wait_retries_while_vswitchd_starts",
            wait_retries_while_vswitchd_starts,
        ),
        ("may_exist_and_if_exists", may_exist_and_if_exists),
        ("names_leave_with_their_port", names_leave_with_their_port),
        (
            "pipework_points_a_netns_resolver_at_the_gateway",
            pipework_points_a_netns_resolver_at_the_gateway,
        ),
        ("published_port_ranges", published_port_ranges),
        ("readme_tour_runs_twice", readme_tour_runs_twice),
    ])
}

/// `vswitchctl` must fail with exactly one line naming `want`, and change nothing.
fn refused(lab: &Lab, args: &[&str], want: &str) -> Result<()> {
    let before = lab.config_snapshot()?;
    let o = lab.ctl(args)?;
    ensure!(o.code == 1, "{args:?}: exit {} ({})", o.code, o.stderr);
    let line = o.stderr.trim_end();
    ensure!(
        !line.contains('\n') && line.starts_with("error: ") && line.contains(want),
        "{args:?}: want one line with {want:?}, got {:?}",
        o.stderr
    );
    ensure!(
        lab.config_snapshot()? == before,
        "{args:?} changed the configuration"
    );
    Ok(())
}

fn devices_that_cannot_be_ports_are_refused() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&["add-br", "br0"])?;
    lab.ctl_ok(&["add-br", "br1"])?;
    lab.sh(
        "sw",
        "ip link add kbr0 type bridge && ip link add vk0 type veth peer name vk1 \
         && ip link set vk0 master kbr0 && ip tuntap add tun9 mode tun",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "lo"],
        "cannot add lo as a port: it is the loopback device",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "tun9"],
        "cannot add tun9 as a port: not an Ethernet device",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "kbr0"],
        "cannot add kbr0 as a port: it is a kernel bridge",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "vk0"],
        "cannot add vk0 as a port: it is already enslaved to kbr0",
    )?;
    // vswitchd's own internal port cannot join a second bridge.
    lab.ctl_ok(&["add-port", "br0", "int0", "--type", "internal"])?;
    refused(
        &lab,
        &["add-port", "br1", "int0"],
        "port already exists: int0 (on bridge br0)",
    )?;
    // Its free peer is an Ethernet device like any other.
    lab.ctl_ok(&["add-port", "br1", "vk1"])?;
    Ok(())
}

/// `vswitchd --detach` in namespace `sw` of `lab` with `extra` flags: (exit code, stderr).
fn detach(lab: &Lab, extra: &[&str]) -> Result<(i32, String)> {
    let o = run(lab
        .cmd("sw", bin("vswitchd")?.to_str().context("path")?)
        .arg("--detach")
        .args(extra))?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

fn detach_returns_when_the_socket_answers() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_ns("sw")?;
    let sock = lab.dir().join("d.sock");
    let pidfile = lab.dir().join("d.pid");
    let s = sock.to_str().context("path")?;
    let (code, err) = detach(
        &lab,
        &[
            "--socket",
            s,
            "--db",
            lab.dir().join("d.db").to_str().context("path")?,
            "--pidfile",
            pidfile.to_str().context("path")?,
        ],
    )?;
    ensure!(code == 0, "--detach exited {code}: {err}");
    // No retry: it answers the moment --detach returned.
    let v = run(Command::new(bin("vswitchctl")?).args(["--socket", s, "version"]))?;
    let pid: i32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
    // The daemon this test started, by the PID it wrote.
    let stop = || {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    };
    let out = String::from_utf8_lossy(&v.stdout).into_owned();
    if !v.status.success() {
        stop();
        bail!(
            "vswitchd does not answer after --detach: {}",
            String::from_utf8_lossy(&v.stderr)
        );
    }
    if !out.contains(&format!("pid {pid}")) {
        stop();
        bail!("the pidfile does not hold the daemon's PID {pid}: {out}");
    }
    // A second one on the same socket: refused, one line, non-zero.
    let (code, err) = detach(&lab, &["--socket", s, "--db", "/nonexistent/x.db"])?;
    stop();
    ensure!(
        code == 1 && err.lines().count() == 1 && err.contains("already listening"),
        "second daemon: {code} {err:?}"
    );
    ensure!(
        wait_until(Duration::from_secs(10), || !pidfile.exists()),
        "pidfile left behind after SIGTERM"
    );
    // A database that cannot be read: the reason, on one line, exit 1.
    let bad = lab.dir().join("bad.db");
    std::fs::write(&bad, "not a database")?;
    let (code, err) = detach(
        &lab,
        &[
            "--socket",
            lab.dir().join("e.sock").to_str().context("path")?,
            "--db",
            bad.to_str().context("path")?,
        ],
    )?;
    ensure!(
        code == 1
            && err.lines().count() == 1
            && err.starts_with("error: database ")
            && err.contains("is corrupt"),
        "bad --db: exit {code}, stderr {err:?}"
    );
    Ok(())
}

fn wait_retries_while_vswitchd_starts() -> Result<()> {
    let mut lab = Lab::new()?;
    // Without --wait: fails at once, naming the socket asked for and how to start it.
    let o = lab.ctl(&["version"])?;
    let want = format!(
        "start it with `vswitchd --socket {} --detach`",
        lab.socket().display()
    );
    ensure!(
        o.code == 1 && o.stderr.lines().count() == 1 && o.stderr.contains(&want),
        "{:?}",
        o.stderr
    );
    // With --wait: the same command started before the daemon succeeds once it is up.
    let mut early = Command::new(bin("vswitchctl")?)
        .arg("--socket")
        .arg(lab.socket())
        .args(["--wait", "30", "add-br", "early"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let waiting = wait_until(Duration::from_millis(500), || {
        matches!(early.try_wait(), Ok(Some(_)))
    });
    if waiting {
        bail!("vswitchctl --wait 30 returned before vswitchd was started");
    }
    lab.start_switch("sw")?;
    let code = match wait_until(Duration::from_secs(30), || {
        matches!(early.try_wait(), Ok(Some(_)))
    }) {
        true => early.wait()?.code(),
        false => terminate(&mut early, Duration::from_secs(1)),
    };
    ensure!(code == Some(0), "vswitchctl --wait exited {code:?}");
    ensure!(lab.ctl_ok(&["list-br"])?.contains("early"));
    Ok(())
}

fn may_exist_and_if_exists() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", None)?;
    let br = [
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ];
    lab.ctl_ok(&br)?;
    lab.ctl_ok(&["add-br", "br1"])?;
    lab.ctl_ok(&["add-port", "br0", "v1", "--tag", "10"])?;
    lab.ctl_ok(&["add-route", "203.0.113.0/24", "--via", "10.0.0.254"])?;
    lab.ctl_ok(&["add-host", "br0", "web", "10.0.0.5"])?;
    let before = lab.config_snapshot()?;
    // Identical: success, nothing changes.
    for args in [
        &[&br[..], &["--may-exist"]].concat()[..],
        &["add-port", "br0", "v1", "--tag", "10", "--may-exist"],
        &[
            "add-route",
            "203.0.113.0/24",
            "--via",
            "10.0.0.254",
            "--may-exist",
        ],
        &["add-host", "br0", "WEB", "10.0.0.5", "--may-exist"],
    ] {
        lab.ctl_ok(args)?;
    }
    ensure!(
        lab.config_snapshot()? == before,
        "--may-exist changed something"
    );
    // Without the flag they still refuse.
    refused(&lab, &br, "bridge already exists: br0")?;
    // Conflicting: refused, one line naming the difference.
    refused(
        &lab,
        &["add-br", "br0", "--subnet", "10.0.0.0/24", "--may-exist"],
        "bridge br0 already exists with other settings (gateway 10.0.0.1, not none)",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "v1", "--tag", "20", "--may-exist"],
        "(tag 10, not 20)",
    )?;
    refused(
        &lab,
        &["add-port", "br1", "v1", "--may-exist"],
        "port v1 already exists on bridge br0, not br1",
    )?;
    refused(
        &lab,
        &[
            "add-route",
            "203.0.113.0/24",
            "--via",
            "10.0.0.253",
            "--may-exist",
        ],
        "route 203.0.113.0/24 already exists via 10.0.0.254, not via 10.0.0.253",
    )?;
    refused(
        &lab,
        &["add-host", "br0", "web", "10.0.0.6", "--may-exist"],
        "host already exists: web (10.0.0.5)",
    )?;
    // --if-exists: missing is success; a port on another bridge is still an error.
    for args in [
        &["del-br", "nope", "--if-exists"][..],
        &["del-port", "br0", "nope", "--if-exists"],
        &["del-port", "nope", "v9", "--if-exists"],
        &["del-route", "198.18.0.0/15", "--if-exists"],
        &["del-host", "br0", "nope", "--if-exists"],
        &["unpublish", "tcp", "9999", "--if-exists"],
    ] {
        lab.ctl_ok(args)?;
    }
    ensure!(
        lab.config_snapshot()? == before,
        "--if-exists changed something"
    );
    refused(&lab, &["del-br", "nope"], "no such bridge: nope")?;
    refused(
        &lab,
        &["del-port", "br1", "v1", "--if-exists"],
        "port v1 is on bridge br0, not br1",
    )?;
    // And they delete what exists.
    lab.ctl_ok(&["del-host", "br0", "web", "--if-exists"])?;
    lab.ctl_ok(&["del-port", "br0", "v1", "--if-exists"])?;
    ensure!(!lab.ctl_ok(&["list-ports", "br0"])?.contains("v1"));
    Ok(())
}

/// `dig +short @server name` from namespace `ns` (one try, 3 s).
fn dig(lab: &Lab, ns: &str, server: &str, name: &str) -> Result<String> {
    run_ok(
        lab.cmd(ns, "dig")
            .args(["+short", "+tries=1", "+time=3", &format!("@{server}"), name]),
    )
    .map(|s| s.trim().to_string())
}

fn pipework(lab: &Lab, args: &[&str]) -> Result<String> {
    run_ok(
        Command::new(bin("pipework")?)
            .arg("--socket")
            .arg(lab.socket())
            .args(args),
    )
}

fn names_leave_with_their_port() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "--dhcp",
    ])?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ])?;
    let asker = lab.add_ns("asker")?;
    pipework(&lab, &["br0", &asker, "10.0.0.2/24"])?;
    let web = lab.add_ns("web")?;
    let db = lab.add_ns("db")?;
    lab.add_ns("dh")?;
    let other = lab.add_ns("other")?;
    pipework(&lab, &["br0", &web, "10.0.0.5/24@10.0.0.1"])?;
    pipework(&lab, &["br0", &db, "--name", "db", "dhcp"])?;
    pipework(&lab, &["br1", &other, "--name", "other", "10.1.0.5/24"])?;
    // A plain DHCP client on a plain port, with a hostname.
    lab.veth("sw", "vdh", "dh", "eth0")?;
    lab.ctl_ok(&["add-port", "br0", "vdh"])?;
    lab.sh(
        "dh",
        "ip link set eth0 up && busybox udhcpc -i eth0 -n -q -t 5 -T 1 -x hostname:laptop -s /bin/true >/dev/null 2>&1",
    )?;
    let hosts = lab.ctl_ok(&["list-hosts", "br0"])?;
    for n in [web.as_str(), "db", "laptop"] {
        ensure!(hosts.contains(n), "{n} missing from list-hosts:\n{hosts}");
    }
    ensure!(dig(&lab, "asker", "10.0.0.1", &web)? == "10.0.0.5");
    ensure!(dig(&lab, "asker", "10.0.0.1", "laptop")?.starts_with("10.0.0."));
    let ports: serde_json::Value = lab.ctl_json(&["list-ports", "br0"])?;
    let port_of = |guest: &str| -> Result<String> {
        ports
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|p| p["external_ids"]["guest"] == guest)
                    .and_then(|p| p["name"].as_str())
            })
            .map(str::to_string)
            .with_context(|| format!("no port of {guest}"))
    };
    // del-port (not pipework --remove) of the pipework ports and the DHCP client's.
    lab.ctl_ok(&["del-port", "br0", &port_of(&web)?])?;
    lab.ctl_ok(&["del-port", "br0", &port_of(&db)?])?;
    lab.ctl_ok(&["del-port", "br0", "vdh"])?;
    let hosts = lab.ctl_ok(&["list-hosts", "br0"])?;
    for n in [web.as_str(), "db", "laptop"] {
        ensure!(!hosts.contains(n), "{n} still in list-hosts:\n{hosts}");
        let a = dig(&lab, "asker", "10.0.0.1", n)?;
        ensure!(a.is_empty(), "{n} still answers {a}");
    }
    // del-br of a bridge with a pipework port: its names go with it.
    ensure!(lab.ctl_ok(&["list-hosts", "br1"])?.contains("other"));
    lab.ctl_ok(&["del-br", "br1"])?;
    lab.ctl_ok(&["add-br", "br1"])?;
    ensure!(
        !lab.ctl_ok(&["list-hosts", "br1"])?.contains("other"),
        "a name outlived its bridge"
    );
    Ok(())
}

fn pipework_points_a_netns_resolver_at_the_gateway() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ])?;
    let web = lab.add_ns("web")?;
    let db = lab.add_ns("db")?;
    let conf = std::path::PathBuf::from("/etc/netns")
        .join(&web)
        .join("resolv.conf");
    let own = std::fs::read_to_string(&conf)?;
    pipework(&lab, &["br0", &web, "10.0.0.5/24@10.0.0.1"])?;
    pipework(&lab, &["br0", &db, "10.0.0.6/24"])?;
    let text = std::fs::read_to_string(&conf)?;
    ensure!(
        text.lines().any(|l| l == "nameserver 10.0.0.1"),
        "resolv.conf of {web}: {text}"
    );
    // The guest resolves its neighbour by name through the gateway.
    run_ok(lab.cmd("web", "ping").args(["-c", "1", "-W", "2", &db]))
        .with_context(|| format!("{web} cannot ping {db} by name"))?;
    // No gateway given: db's resolver is left alone.
    let db_conf = std::path::PathBuf::from("/etc/netns")
        .join(&db)
        .join("resolv.conf");
    ensure!(!std::fs::read_to_string(&db_conf)?.contains("10.0.0.1"));
    pipework(&lab, &["--remove", "br0", &web])?;
    ensure!(
        std::fs::read_to_string(&conf)? == own,
        "the namespace's own resolv.conf is not back after --remove"
    );
    Ok(())
}

fn published_port_ranges() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.masquerade_lab("sw")?;
    lab.ctl_ok(&["publish", "tcp", "8000-8002", "10.0.0.5:9000-9002"])?;
    ensure!(
        lab.ctl_ok(&["list-published"])?
            == "PROTO  LISTEN       TARGET\ntcp    *:8000-8002  10.0.0.5:9000-9002\n"
    );
    // One server per target port, answering with its own port number.
    let server = "import socket,sys\nls=[]\nfor p in (9000,9001,9002):\n s=socket.socket()\n s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n s.bind(('10.0.0.5',p)); s.listen(8); ls.append(s)\nimport selectors\nsel=selectors.DefaultSelector()\nfor s in ls: sel.register(s, selectors.EVENT_READ)\nwhile True:\n for k,_ in sel.select():\n  c,_=k.fileobj.accept(); c.sendall(str(k.fileobj.getsockname()[1]).encode()); c.close()\n";
    lab.spawn("c1", "python3", &["-c", server], "ranges.log")?;
    ensure!(
        lab.wait_listening("c1", vswitch_integration::Proto::Tcp, 9002),
        "servers did not start"
    );
    for (asked, want) in [(8000, "9000"), (8001, "9001"), (8002, "9002")] {
        let got = lab.sh(
            "out",
            &format!("timeout 5 python3 -c \"import socket;s=socket.create_connection(('198.51.100.2',{asked}),timeout=3);print(s.recv(10).decode())\""),
        )?;
        ensure!(
            got.trim() == want,
            "port {asked} reached {got:?}, want {want}"
        );
    }
    let o = lab.sh_out(
        "out",
        "timeout 5 python3 -c \"import socket;socket.create_connection(('198.51.100.2',8003),timeout=2)\"",
    )?;
    ensure!(
        !o.status.success(),
        "port 8003 (outside the range) connected"
    );
    refused(
        &lab,
        &["unpublish", "tcp", "8001"],
        "tcp port 8001 is part of the published range 8000-8002: unpublish tcp 8000-8002",
    )?;
    lab.ctl_ok(&[
        "publish",
        "tcp",
        "8000-8002",
        "10.0.0.5:9000-9002",
        "--may-exist",
    ])?;
    lab.ctl_ok(&["unpublish", "tcp", "8000-8002"])?;
    ensure!(lab.ctl_ok(&["list-published"])? == "PROTO  LISTEN  TARGET\n");
    Ok(())
}

/// The README's tour: the ```sh block after `<!-- tour -->`.
fn readme_tour() -> Result<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let (_, after) = readme
        .split_once("<!-- tour -->")
        .context("README.md has no <!-- tour --> marker")?;
    let (_, block) = after
        .split_once("```sh\n")
        .context("no ```sh block after the marker")?;
    let (tour, _) = block.split_once("```").context("unterminated block")?;
    Ok(tour.to_string())
}

/// The tour, pasted as one block into `bash -e`, twice in a row, as root in a fresh
/// network namespace (the runner's) with private /run/netns, /etc/netns and /tmp (the
/// tour's names and paths are fixed; nothing may leak into the machine's).
fn readme_tour_runs_twice() -> Result<()> {
    let tour = readme_tour()?;
    ensure!(tour.contains("--detach") || tour.contains("--wait"));
    let cleanup =
        "ip netns del sw 2>/dev/null; ip netns del c1 2>/dev/null; ip netns del c2 2>/dev/null; \
                   [ -e /tmp/vs.pid ] && kill $(cat /tmp/vs.pid) 2>/dev/null; true";
    let wrapper = format!(
        "set -e\nmkdir -p /run/netns /etc/netns\n\
         mount -t tmpfs tour /run/netns && mount -t tmpfs tour /etc/netns && mount -t tmpfs tour /tmp\n\
         trap '{cleanup}' EXIT\n\
         for run in 1 2; do echo \"=== run $run\"; bash -e -c \"$TOUR\" || {{ echo \"tour failed in run $run\"; exit 1; }}; done\n"
    );
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "bash",
            "-c",
            &wrapper,
        ])
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("TOUR", &tour)
        .env_remove("VSWITCH_SOCK")
        .env_remove("VSWITCH_DB")
        .stdin(Stdio::null())
        .output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(o.status.success(), "the README tour failed:\n{out}\n{err}");
    ensure!(out.matches("=== run").count() == 2);
    Ok(())
}
