//! L2 switching through vswitchd with real kernel interfaces and real ping.

use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use vswitch_integration::{wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "two_namespaces_ping_and_fdb_lists_both",
            two_namespaces_ping_and_fdb_lists_both,
        ),
        ("three_namespaces_all_ping", three_namespaces_all_ping),
        ("tap_ports_ping", tap_ports_ping),
        ("mac_move_follows_the_host", mac_move_follows_the_host),
        (
            "vlan_access_ports_are_separate",
            vlan_access_ports_are_separate,
        ),
        ("trunk_carries_tagged_vlan", trunk_carries_tagged_vlan),
        ("del_port_cuts_traffic", del_port_cuts_traffic),
        (
            "restart_keeps_bridges_ports_and_traffic",
            restart_keeps_bridges_ports_and_traffic,
        ),
        (
            "internal_port_gives_host_a_leg",
            internal_port_gives_host_a_leg,
        ),
        ("stats_count_traffic", stats_count_traffic),
        (
            "errors_are_one_line_and_change_nothing",
            errors_are_one_line_and_change_nothing,
        ),
        (
            "malformed_json_gets_error_and_daemon_keeps_serving",
            malformed_json_gets_error_and_daemon_keeps_serving,
        ),
        (
            "no_daemon_says_how_to_start_it",
            no_daemon_says_how_to_start_it,
        ),
        (
            "sigterm_removes_taps_keeps_db",
            sigterm_removes_taps_keeps_db,
        ),
        (
            "tcp_crosses_with_default_offloads",
            tcp_crosses_with_default_offloads,
        ),
        (
            "ports_gather_when_idle_and_spread_under_load",
            ports_gather_when_idle_and_spread_under_load,
        ),
        ("no_balance_keeps_ports_put", no_balance_keeps_ports_put),
        (
            "busy_poll_spins_only_while_traffic_flows",
            busy_poll_spins_only_while_traffic_flows,
        ),
    ])
}

/// A switch with bridge br0 and containers c1..cN at 10.0.0.i/24 on ports vI.
fn lab_with(n: usize) -> Result<Lab> {
    lab_with_flags(n, &[])
}

/// As [`lab_with`], with extra vswitchd flags.
fn lab_with_flags(n: usize, flags: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", flags)?;
    lab.ctl_ok(&["add-br", "br0"])?;
    for i in 1..=n {
        lab.container(
            "sw",
            &format!("c{i}"),
            &format!("v{i}"),
            &format!("10.0.0.{i}/24"),
            None,
        )?;
        lab.ctl_ok(&["add-port", "br0", &format!("v{i}")])?;
    }
    Ok(lab)
}

fn two_namespaces_ping_and_fdb_lists_both() -> Result<()> {
    let lab = lab_with(2)?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let fdb = lab.ctl_json(&["fdb-show", "br0"])?;
    for (c, port) in [("c1", "v1"), ("c2", "v2")] {
        let mac = lab.mac(c, "eth0")?;
        let e = fdb
            .as_array()
            .and_then(|a| a.iter().find(|e| e["mac"] == mac.as_str()))
            .with_context(|| format!("{mac} of {c} not in fdb-show: {fdb}"))?;
        ensure!(
            e["port"] == port,
            "{mac} learned on {} instead of {port}",
            e["port"]
        );
        ensure!(e["vlan"] == 0);
        ensure!(
            e["age"].as_u64().is_some_and(|a| a < 30),
            "age {}",
            e["age"]
        );
    }
    let human = lab.ctl_ok(&["fdb-show", "br0"])?;
    ensure!(human.starts_with("PORT  VLAN  MAC"), "{human}");
    Ok(())
}

fn three_namespaces_all_ping() -> Result<()> {
    let lab = lab_with(3)?;
    for (a, b) in [
        ("c1", "10.0.0.2"),
        ("c1", "10.0.0.3"),
        ("c2", "10.0.0.3"),
        ("c3", "10.0.0.1"),
    ] {
        lab.assert_ping(a, b)?;
    }
    Ok(())
}

fn tap_ports_ping() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&["add-br", "br0"])?;
    for (i, c) in ["c1", "c2"].iter().enumerate() {
        let tap = format!("tap{i}");
        lab.add_ns(c)?;
        lab.ctl_ok(&["add-port", "br0", &tap, "--type", "tap"])?;
        lab.sh("sw", &format!("ip link set {tap} netns {}", lab.ns(c)))?;
        lab.sh(
            c,
            &format!(
                "ip addr add 10.0.0.{}/24 dev {tap} && ip link set {tap} up",
                i + 1
            ),
        )?;
    }
    lab.assert_ping("c1", "10.0.0.2")?;
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    ensure!(
        ports[0]["type"] == "tap" && ports[0]["state"] == "up",
        "{ports}"
    );
    Ok(())
}

fn mac_move_follows_the_host() -> Result<()> {
    let lab = lab_with(3)?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let mac = lab.mac("c1", "eth0")?;
    // The host "moves" from behind v1 to behind v3: same MAC and address.
    lab.sh("c1", "ip link set eth0 down")?;
    lab.sh("c3", &format!("ip link set eth0 down && ip link set eth0 address {mac} && ip addr flush dev eth0 && ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up"))?;
    lab.assert_ping("c3", "10.0.0.2")?;
    let fdb = lab.ctl_json(&["fdb-show", "br0"])?;
    let e = fdb
        .as_array()
        .and_then(|a| a.iter().find(|e| e["mac"] == mac.as_str()))
        .context("moved MAC missing")?;
    ensure!(e["port"] == "v3", "MAC still on {}", e["port"]);
    Ok(())
}

fn vlan_access_ports_are_separate() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&["add-br", "br0"])?;
    for (i, tag) in [(1, "10"), (2, "10"), (3, "20")] {
        lab.container(
            "sw",
            &format!("c{i}"),
            &format!("v{i}"),
            &format!("10.0.0.{i}/24"),
            None,
        )?;
        lab.ctl_ok(&["add-port", "br0", &format!("v{i}"), "--tag", tag])?;
    }
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.assert_no_ping("c3", "10.0.0.1")?;
    lab.assert_no_ping("c1", "10.0.0.3")?;
    let fdb = lab.ctl_json(&["fdb-show", "br0"])?;
    ensure!(
        fdb.as_array()
            .is_some_and(|a| a.iter().any(|e| e["vlan"] == 10)),
        "{fdb}"
    );
    Ok(())
}

fn trunk_carries_tagged_vlan() -> Result<()> {
    // This kernel may lack 8021q, so the VLAN-aware host on the trunk is a small
    // AF_PACKET script that sends a tagged ARP request and reads the tagged reply.
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&["add-br", "br0"])?;
    lab.container("sw", "c1", "v1", "10.0.0.1/24", None)?;
    lab.ctl_ok(&["add-port", "br0", "v1", "--tag", "10"])?;
    lab.container("sw", "c2", "v2", "10.9.0.2/24", None)?;
    lab.ctl_ok(&["add-port", "br0", "v2", "--trunks", "10,20"])?;
    lab.container("sw", "c3", "v3", "10.0.0.3/24", None)?;
    lab.ctl_ok(&["add-port", "br0", "v3", "--tag", "30"])?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vlan_arp.py");
    let out = lab.sh("c2", &format!("python3 {script} eth0 10 10.0.0.2 10.0.0.1"))?;
    ensure!(
        out.trim() == "10",
        "reply to the trunk carried VLAN {:?}, want 10",
        out.trim()
    );
    // VLAN 30 exists on an access port but is not carried by the trunk.
    let o = lab.sh_out("c2", &format!("python3 {script} eth0 30 10.0.0.2 10.0.0.3"))?;
    ensure!(
        !o.status.success(),
        "VLAN 30 crossed a trunk limited to 10,20"
    );
    let stats = lab.ctl_json(&["stats", "v2"])?;
    ensure!(
        stats[0]["drops"]["vlan_filtered"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    Ok(())
}

fn del_port_cuts_traffic() -> Result<()> {
    let lab = lab_with(2)?;
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.ctl_ok(&["del-port", "br0", "v2"])?;
    lab.assert_no_ping("c1", "10.0.0.2")?;
    let ports = lab.ctl_ok(&["list-ports", "br0"])?;
    ensure!(ports == "v1\n", "{ports}");
    Ok(())
}

fn restart_keeps_bridges_ports_and_traffic() -> Result<()> {
    let mut lab = lab_with(2)?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ])?;
    lab.ctl_ok(&["add-port", "br1", "t1", "--type", "internal"])?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let before = lab.ctl_ok(&["show"])?;
    lab.restart_switch()?;
    let after = lab.ctl_ok(&["show"])?;
    ensure!(
        before == after,
        "show differs after restart:\n{before}\n---\n{after}"
    );
    lab.assert_ping("c1", "10.0.0.2")?;
    Ok(())
}

fn internal_port_gives_host_a_leg() -> Result<()> {
    let lab = lab_with(1)?;
    lab.ctl_ok(&["add-port", "br0", "vsint0", "--type", "internal"])?;
    lab.sh("sw", "ip addr add 10.0.0.254/24 dev vsint0")?;
    lab.assert_ping("sw", "10.0.0.1")?;
    lab.assert_ping("c1", "10.0.0.254")?;
    Ok(())
}

fn stats_count_traffic() -> Result<()> {
    let lab = lab_with(2)?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let s = lab.ctl_json(&["stats", "v1"])?;
    ensure!(s.as_array().map(Vec::len) == Some(1), "{s}");
    ensure!(s[0]["rx_packets"].as_u64().unwrap_or(0) >= 4, "{s}");
    ensure!(s[0]["tx_packets"].as_u64().unwrap_or(0) >= 4, "{s}");
    ensure!(s[0]["rx_bytes"].as_u64().unwrap_or(0) > 300, "{s}");
    let e = lab.ctl(&["stats", "nope"])?;
    ensure!(
        e.code != 0 && e.stderr.trim() == "error: no such port: nope",
        "{e:?}"
    );
    Ok(())
}

fn errors_are_one_line_and_change_nothing() -> Result<()> {
    let mut lab = lab_with(1)?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ])?;
    lab.add_ns("cx")?;
    lab.veth("sw", "vx", "cx", "eth0")?;
    lab.ctl_ok(&["add-port", "br1", "vx"])?;
    let before = lab.config_snapshot()?;
    let cases: &[(&[&str], &str)] = &[
        (&["add-port", "br9", "v1"], "error: no such bridge: br9"),
        (&["add-br", "br0"], "error: bridge already exists: br0"),
        (
            &["add-port", "br0", "v1"],
            "error: port already exists: v1 (on bridge br0)",
        ),
        (
            &["add-port", "br0", "vx"],
            "error: port already exists: vx (on bridge br1)",
        ),
        (
            &["add-port", "br0", "nosuchdev"],
            "error: no such device: nosuchdev",
        ),
        (
            &["add-port", "br0", "v9", "--tag", "5000"],
            "error: bad VLAN id 5000: must be 1..4094",
        ),
        (
            &["add-br", "br2", "--subnet", "10.2.0.0/33"],
            "error: bad CIDR \"10.2.0.0/33\": expected an IPv4 network such as 10.0.0.0/24",
        ),
        (
            &[
                "add-br",
                "br2",
                "--subnet",
                "10.2.0.0/24",
                "--gateway",
                "10.3.0.1",
            ],
            "error: gateway 10.3.0.1 is outside subnet 10.2.0.0/24",
        ),
        (
            &["add-br", "br2", "--subnet", "10.1.0.0/16"],
            "error: subnet 10.1.0.0/16 overlaps 10.1.0.0/24 of bridge br1",
        ),
        (
            &["del-port", "br0", "vx"],
            "error: no such port: vx (on bridge br0)",
        ),
        (&["del-br", "nope"], "error: no such bridge: nope"),
        (
            &["frobnicate"],
            "error: unrecognized subcommand 'frobnicate'",
        ),
    ];
    for (args, want) in cases {
        let o = lab.ctl(args)?;
        ensure!(o.code != 0, "{args:?} succeeded");
        ensure!(
            o.stderr.lines().count() == 1,
            "{args:?}: not one line: {:?}",
            o.stderr
        );
        ensure!(
            o.stderr.trim() == *want,
            "{args:?}: got {:?}, want {want:?}",
            o.stderr.trim()
        );
    }
    let j = lab.ctl(&["--json", "del-br", "nope"])?;
    let v: serde_json::Value = serde_json::from_str(&j.stdout)?;
    ensure!(v["error"] == "no such bridge: nope", "{v}");
    let after = lab.config_snapshot()?;
    ensure!(before == after, "configuration changed by refused requests");
    Ok(())
}

fn malformed_json_gets_error_and_daemon_keeps_serving() -> Result<()> {
    let lab = lab_with(0)?;
    let s = std::os::unix::net::UnixStream::connect(lab.socket())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    for bad in [
        "this is not json",
        r#"{"version":99,"cmd":"list-br"}"#,
        r#"{"version":1,"cmd":"nope"}"#,
    ] {
        w.write_all(format!("{bad}\n").as_bytes())?;
        line.clear();
        r.read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        ensure!(v["ok"] == false && v["error"].is_string(), "{bad} → {line}");
    }
    w.write_all(b"{\"version\":1,\"cmd\":\"list-br\"}\n")?;
    line.clear();
    r.read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(v["ok"] == true && v["result"][0]["name"] == "br0", "{line}");
    // Root-only socket.
    let mode = std::fs::metadata(lab.socket())?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "socket mode {mode:o}");
    Ok(())
}

fn no_daemon_says_how_to_start_it() -> Result<()> {
    let lab = Lab::new()?;
    let o = lab.ctl(&["list-br"])?;
    ensure!(o.code != 0);
    ensure!(o.stderr.lines().count() == 1, "{:?}", o.stderr);
    ensure!(
        o.stderr.starts_with("error: vswitchd is not running")
            && o.stderr.contains("start it with `vswitchd"),
        "{:?}",
        o.stderr
    );
    Ok(())
}

fn sigterm_removes_taps_keeps_db() -> Result<()> {
    let mut lab = lab_with(0)?;
    lab.ctl_ok(&["add-port", "br0", "tap7", "--type", "tap"])?;
    lab.ctl_ok(&["add-port", "br0", "int7", "--type", "internal"])?;
    ensure!(lab.sh_out("sw", "ip link show tap7")?.status.success());
    let code = lab.stop_switch()?;
    ensure!(code == 0, "vswitchd exited {code}");
    for dev in ["tap7", "int7"] {
        if lab
            .sh_out("sw", &format!("ip link show {dev}"))?
            .status
            .success()
        {
            bail!("{dev} still exists after SIGTERM");
        }
    }
    let db = std::fs::read_to_string(lab.db())?;
    ensure!(db.contains("\"tap7\"") && db.contains("\"br0\""), "{db}");
    ensure!(!lab.socket().exists(), "socket left behind");
    Ok(())
}

fn tcp_crosses_with_default_offloads() -> Result<()> {
    let mut lab = lab_with(2)?;
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.iperf_server("c2", "10.0.0.2")?;
    let bytes = lab.iperf_bytes("c1", "10.0.0.2")?;
    // Not a speed assertion: TCP with GSO and partial checksums must get through at all.
    ensure!(bytes > 1_000_000, "TCP moved only {bytes} bytes");
    Ok(())
}

/// Two workers, br0 with c1 and c2 on ports v1 and v2.
fn two_worker_lab(extra: &[&str]) -> Result<Lab> {
    // These tests watch the userspace workers carry the traffic: the kernel fast path
    // would take it from them.
    let mut flags = vec!["--workers", "2", "--fastpath", "off"];
    flags.extend_from_slice(extra);
    lab_with_flags(2, &flags)
}

/// The worker of each port of br0, from `show --json`.
fn port_workers(lab: &Lab) -> Vec<u64> {
    lab.ctl_json(&["show"])
        .ok()
        .and_then(|s| {
            s["bridges"][0]["ports"]
                .as_array()
                .map(|ports| ports.iter().filter_map(|p| p["worker"].as_u64()).collect())
        })
        .unwrap_or_default()
}

fn distinct(w: &[u64]) -> usize {
    let mut v = w.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Auto-balance: the two ports start on different workers, gather on one while idle
/// (a ping is then forwarded without waking a second thread), spread again while a TCP
/// stream keeps a worker busy, and gather once it ends. Traffic flows throughout.
fn ports_gather_when_idle_and_spread_under_load() -> Result<()> {
    let mut lab = two_worker_lab(&[])?;
    lab.assert_ping("c1", "10.0.0.2")?;
    ensure!(
        wait_until(Duration::from_secs(10), || {
            let w = port_workers(&lab);
            w.len() == 2 && distinct(&w) == 1
        }),
        "idle ports were not gathered on one worker: {:?}",
        port_workers(&lab)
    );
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.iperf_server("c2", "10.0.0.2")?;
    lab.spawn(
        "c1",
        "timeout",
        &["30", "iperf3", "-c", "10.0.0.2", "-t", "8", "-J"],
        "iperf-client.json",
    )?;
    let spread = wait_until(Duration::from_secs(8), || {
        distinct(&port_workers(&lab)) == 2
    });
    ensure!(
        spread,
        "ports stayed on one worker under a TCP stream: {:?}; log:\n{}",
        port_workers(&lab),
        lab.log_tail(20)
    );
    ensure!(
        wait_until(Duration::from_secs(25), || {
            serde_json::from_str::<serde_json::Value>(&lab.read_log("iperf-client.json")).is_ok()
        }),
        "iperf3 client did not finish"
    );
    let v: serde_json::Value = serde_json::from_str(&lab.read_log("iperf-client.json"))?;
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    ensure!(
        bytes > 10_000_000,
        "the stream delivered {bytes} bytes while ports moved"
    );
    ensure!(
        wait_until(Duration::from_secs(10), || distinct(&port_workers(&lab))
            == 1),
        "ports were not gathered again after the stream: {:?}",
        port_workers(&lab)
    );
    lab.assert_ping("c2", "10.0.0.1")?;
    Ok(())
}

/// `--no-balance`: ports stay on the workers they were given, idle or not. Witnessed by
/// a second switch with auto-balance beside it: once that one has gathered its idle
/// ports (what the balancer does first), the `--no-balance` one has had as long, and
/// its ports must still be where they were put.
fn no_balance_keeps_ports_put() -> Result<()> {
    let lab = two_worker_lab(&["--no-balance"])?;
    let witness = two_worker_lab(&[])?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let before = port_workers(&lab);
    ensure!(
        distinct(&before) == 2,
        "ports not spread at first: {before:?}"
    );
    witness.assert_ping("c1", "10.0.0.2")?;
    ensure!(
        wait_until(Duration::from_secs(10), || {
            let w = port_workers(&witness);
            w.len() == 2 && distinct(&w) == 1
        }),
        "the balancing witness never gathered its idle ports: {:?}",
        port_workers(&witness)
    );
    let after = port_workers(&lab);
    ensure!(before == after, "ports moved: {before:?} -> {after:?}");
    lab.assert_ping("c2", "10.0.0.1")?;
    Ok(())
}

/// How many times each worker thread of vswitchd went to sleep so far (the kernel's
/// `voluntary_ctxt_switches`: a worker blocks only in `epoll_wait`; spinning with
/// `sched_yield` stays runnable and is not counted), by thread name.
fn worker_sleeps(lab: &Lab) -> Result<Vec<(String, u64)>> {
    let pid = lab.switch_pid().context("vswitchd is not running")?;
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = t?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with("vsw-worker-") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no voluntary_ctxt_switches")?;
        out.push((comm.trim().to_string(), n));
    }
    out.sort();
    ensure!(!out.is_empty(), "no worker threads found");
    Ok(out)
}

/// `--busy-poll-us`: with a 10 ms window, pings 2 ms apart keep the workers polling
/// (they do not go to sleep between frames), and once the pings stop every worker
/// sleeps again; with 0, a worker sleeps after every frame. Counted by the kernel's
/// per-thread count of sleeps, not by CPU time.
fn busy_poll_spins_only_while_traffic_flows() -> Result<()> {
    const PINGS: u64 = 500;
    for (window, spinning) in [("10000", true), ("0", false)] {
        let lab = two_worker_lab(&["--busy-poll-us", window])?;
        lab.assert_ping("c1", "10.0.0.2")?;
        let a = worker_sleeps(&lab)?;
        let out = lab.sh("c1", &format!("ping -q -i 0.002 -W 1 -c {PINGS} 10.0.0.2"))?;
        let b = worker_sleeps(&lab)?;
        let ping = vswitch_integration::PingSummary::parse(&out).context("no ping summary")?;
        ensure!(
            ping.received as u64 == PINGS,
            "--busy-poll-us {window}: pings lost: {out}"
        );
        let slept: u64 = b.iter().zip(&a).map(|(b, a)| b.1 - a.1).sum();
        if spinning {
            // An idle worker still wakes every 500 ms, and a late ping may let one
            // sleep: a few, not one per ping.
            ensure!(
                slept <= PINGS / 10,
                "--busy-poll-us {window}: the workers slept {slept} times during \
                 {PINGS} pings 2 ms apart; a polling worker should not sleep between them"
            );
        } else {
            // Nothing to do for 2 ms after each exchange: at least one sleep a ping.
            ensure!(
                slept >= PINGS / 2,
                "--busy-poll-us {window}: the workers slept only {slept} times during \
                 {PINGS} pings 2 ms apart"
            );
        }
        // Once the traffic stops, every worker sleeps again (a worker that kept
        // spinning would never block).
        let quiet = wait_until(Duration::from_secs(10), || {
            worker_sleeps(&lab)
                .is_ok_and(|c| c.len() == b.len() && c.iter().zip(&b).all(|(c, b)| c.1 >= b.1 + 2))
        });
        ensure!(
            quiet,
            "--busy-poll-us {window}: a worker did not sleep after the traffic stopped: \
             {b:?} -> {:?}",
            worker_sleeps(&lab)?
        );
        println!("--busy-poll-us {window}: {slept} sleeps during {PINGS} pings");
    }
    Ok(())
}
