//! Robustness: floods (bounded in count and time) with legitimate traffic beside them,
//! malformed frames, crash safety of the db, and the control socket under abuse.

use anyhow::{ensure, Context, Result};
use std::io::{Read, Write};
use std::time::Duration;
use vswitch_integration::{run, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "mac_flood_stays_at_cap_and_pings_go_on",
            mac_flood_stays_at_cap_and_pings_go_on,
        ),
        (
            "punt_flood_does_not_stop_forwarding",
            punt_flood_does_not_stop_forwarding,
        ),
        (
            "malformed_frames_are_counted_not_fatal",
            malformed_frames_are_counted_not_fatal,
        ),
        (
            "kill9_during_churn_never_corrupts_the_db",
            kill9_during_churn_never_corrupts_the_db,
        ),
        ("control_socket_abuse", control_socket_abuse),
        (
            "dhcp_starvation_exhausts_the_pool_not_the_leases",
            dhcp_starvation_exhausts_the_pool_not_the_leases,
        ),
        (
            "conntrack_flood_stays_at_cap_and_nat_goes_on",
            conntrack_flood_stays_at_cap_and_nat_goes_on,
        ),
        (
            "neighbour_flood_toward_many_addresses",
            neighbour_flood_toward_many_addresses,
        ),
    ])
}

const FLOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/flood.py");

fn rss_kb(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// br0 (gateway 10.0.0.254) with c1, c2 (legitimate traffic) and c3 (the flooder) at
/// 10.0.0.1-3.
fn lab3(extra: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", extra)?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.254",
    ])?;
    for i in 1..=3 {
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

/// Received frames of port `port` and the bridge's FDB evictions, from the counters.
fn rx_and_evictions(lab: &Lab, port: &str) -> Result<(u64, u64)> {
    let s = lab.ctl_json(&["stats", port])?;
    let rx = s[0]["rx_packets"].as_u64().context("no rx_packets")?;
    let show = lab.ctl_json(&["show"])?;
    let ev = show["bridges"][0]["fdb_evictions"]
        .as_u64()
        .context("no fdb_evictions")?;
    Ok((rx, ev))
}

/// A flood of new source MACs (far more than the FDB holds) from c3, with pings
/// between c1 and c2 while it runs: every ping is answered, the flood demonstrably
/// reached the switch during the pings (its port's receive counter and the FDB's
/// evictions grew), the table stays at its cap and the heap does not grow.
fn mac_flood_stays_at_cap_and_pings_go_on() -> Result<()> {
    let mut lab = lab3(&["--fdb-max", "1024"])?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let pid = lab.switch_pid().context("no pid")?;
    let before = rss_kb(pid)?;
    let (rx0, ev0) = rx_and_evictions(&lab, "v3")?;
    // More frames than it can send in the time given: it is still flooding when the
    // pings end, and is stopped then.
    let flood = lab.spawn(
        "c3",
        "python3",
        &[FLOOD, "eth0", "macs", "10000000", "60"],
        "flood.log",
    )?;
    let arriving = wait_until(Duration::from_secs(20), || {
        rx_and_evictions(&lab, "v3").is_ok_and(|(rx, _)| rx >= rx0 + 5_000)
    });
    ensure!(
        arriving,
        "the flood did not reach the switch: {:?}; flood log: {}",
        rx_and_evictions(&lab, "v3")?,
        lab.read_log("flood.log")
    );
    let (rx1, _) = rx_and_evictions(&lab, "v3")?;
    lab.assert_pings("c1", "10.0.0.2", 10)?;
    let (rx2, _) = rx_and_evictions(&lab, "v3")?;
    let still = lab.is_running(flood);
    lab.stop_spawned(flood);
    let (rx3, ev3) = rx_and_evictions(&lab, "v3")?;
    ensure!(
        still && rx2 >= rx1 + 1_000,
        "the flood was not running while the pings ran: v3 received {} frames during \
         them (flood still running at the end: {still}; log: {})",
        rx2 - rx1,
        lab.read_log("flood.log")
    );
    let (flooded, evicted) = (rx3 - rx0, ev3 - ev0);
    // Each frame brings a new source MAC; beyond the 1024 the table holds, learning
    // one evicts one.
    ensure!(
        flooded >= 10_000 && evicted * 2 >= flooded,
        "{flooded} flood frames received, {evicted} FDB evictions"
    );
    lab.assert_ping("c1", "10.0.0.2")?;
    let show = lab.ctl_json(&["show"])?;
    let b = &show["bridges"][0];
    let (n, cap) = (
        b["fdb_entries"].as_u64().unwrap_or(0),
        b["fdb_capacity"].as_u64().unwrap_or(0),
    );
    ensure!(cap == 1024 && n <= cap, "fdb {n} entries, capacity {cap}");
    let after = rss_kb(pid)?;
    // Bounded memory: the table is preallocated, so the flood must not grow the heap.
    ensure!(
        after < before + 20_000,
        "RSS grew from {before} kB to {after} kB"
    );
    println!(
        "mac flood: {flooded} frames received ({} during 10 pings), fdb {n}/{cap}, {evicted} evictions, RSS {before} -> {after} kB",
        rx2 - rx1
    );
    Ok(())
}

fn punt_flood_does_not_stop_forwarding() -> Result<()> {
    let lab = lab3(&[])?;
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.sh("c3", &format!("python3 {FLOOD} eth0 arp 50000 30"))?;
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.assert_ping("c1", "10.0.0.254")?;
    Ok(())
}

fn malformed_frames_are_counted_not_fatal() -> Result<()> {
    let lab = lab3(&[])?;
    // Aim the junk at the router, which parses deeper than L2.
    lab.assert_ping("c3", "10.0.0.254")?;
    let neigh: serde_json::Value =
        serde_json::from_str(&lab.sh("c3", "ip -j neigh show 10.0.0.254")?)?;
    let router = neigh[0]["lladdr"]
        .as_str()
        .context("router MAC unknown")?
        .to_string();
    lab.sh("c3", &format!("python3 {FLOOD} eth0 junk 6000 20 {router}"))?;
    lab.sh("c3", &format!("python3 {FLOOD} eth0 junk 6000 20"))?;
    lab.assert_ping("c1", "10.0.0.2")?;
    let s = lab.ctl_json(&["stats", "v3"])?;
    ensure!(s[0]["drops"]["malformed"].as_u64().unwrap_or(0) > 0, "{s}");
    ensure!(lab.ctl(&["version"])?.code == 0, "vswitchd died");
    Ok(())
}

fn kill9_during_churn_never_corrupts_the_db() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&["add-br", "br0", "--subnet", "10.0.0.0/24"])?;
    for round in 0..5u64 {
        // A burst of configuration changes from another process, killed mid-way.
        let script = format!(
            "for i in $(seq 1 200); do {ctl} add-host br0 h{round}x$i 10.0.0.$(( (i % 250) + 1 )) >/dev/null 2>&1; {ctl} del-host br0 h{round}x$i >/dev/null 2>&1; done",
            ctl = format!("{} --socket {}", vswitch_integration::bin("vswitchctl")?.display(), lab.socket().display())
        );
        let mut churn = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()?;
        std::thread::sleep(Duration::from_millis(150 + 97 * round));
        lab.kill_switch()?;
        let _ = churn.kill();
        let _ = churn.wait();
        let text = std::fs::read_to_string(lab.db())?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("db corrupt after kill -9 (round {round})"))?;
        ensure!(v["bridges"][0]["name"] == "br0");
        lab.start_switch("sw")?;
        ensure!(lab.ctl_ok(&["list-br"])? == "br0\n");
    }
    Ok(())
}

fn control_socket_abuse() -> Result<()> {
    let lab = lab3(&[])?;
    // A non-root user: permission denied, one line.
    let o = run(std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(vswitch_integration::bin("vswitchctl")?)
        .arg("--socket")
        .arg(lab.socket())
        .arg("list-br"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.lines().count() == 1 && err.contains("permission denied"),
        "{err}"
    );
    // An endless request is cut off; another client is served meanwhile.
    let mut s = std::os::unix::net::UnixStream::connect(lab.socket())?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let chunk = vec![b'x'; 64 * 1024];
    let mut wrote = 0usize;
    while wrote < 3 << 20 {
        match s.write(&chunk) {
            Ok(n) => wrote += n,
            Err(_) => break,
        }
        if wrote == 1 << 20 {
            ensure!(
                lab.ctl(&["list-br"])?.code == 0,
                "daemon blocked by a slow client"
            );
        }
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    ensure!(
        reply.contains("longer than"),
        "no error for an oversized request: {reply:?}"
    );
    // Many clients at once: all succeed.
    let ctl = vswitch_integration::bin("vswitchctl")?;
    let children: Vec<std::process::Child> = (0..40)
        .map(|i| {
            std::process::Command::new(&ctl)
                .arg("--socket")
                .arg(lab.socket())
                .args([
                    "add-host",
                    "br0",
                    &format!("n{i}"),
                    &format!("10.0.0.{}", 100 + i),
                ])
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for mut c in children {
        ensure!(c.wait()?.success(), "a concurrent vswitchctl failed");
    }
    let hosts = lab.ctl_json(&["list-hosts", "br0"])?;
    ensure!(hosts.as_array().map(Vec::len) == Some(40), "{hosts}");
    ensure!(wait_until(Duration::from_secs(2), || lab
        .ctl(&["version"])
        .is_ok_and(|o| o.code == 0)));
    Ok(())
}

/// A real DHCP exchange (busybox udhcpc) from `ns`, leaving the interface as it is:
/// the server records the lease.
fn udhcpc(lab: &Lab, ns: &str) -> Result<()> {
    lab.sh(
        ns,
        "busybox udhcpc -i eth0 -n -q -t 5 -T 1 -s /bin/true >/dev/null 2>&1",
    )?;
    Ok(())
}

/// 3000 DHCP REQUESTs and DISCOVERs from random MACs against a 21-address pool: the pool runs dry
/// and that is counted; the lease a real client held is untouched and still routes.
fn dhcp_starvation_exhausts_the_pool_not_the_leases() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.254",
        "--dhcp",
        "10.0.0.100-10.0.0.120",
    ])?;
    for i in 1..=3 {
        lab.container(
            "sw",
            &format!("c{i}"),
            &format!("v{i}"),
            &format!("10.0.0.{i}/24"),
            None,
        )?;
        lab.ctl_ok(&["add-port", "br0", &format!("v{i}")])?;
    }
    // c2 gets a real lease first (and keeps its static 10.0.0.2 for the pings).
    udhcpc(&lab, "c2")?;
    let leases = lab.ctl_json(&["dhcp-leases", "br0"])?;
    let mac2 = lab.mac("c2", "eth0")?;
    let held = leases
        .as_array()
        .and_then(|a| a.iter().find(|l| l["mac"] == mac2.as_str()))
        .cloned()
        .context(format!("c2 got no lease: {leases}"))?;
    let sent = lab.sh("c3", &format!("python3 {FLOOD} eth0 dhcp 3000 30"))?;
    // The flood is sent in well under a second; the service thread answers it from its
    // queue afterwards (each new lease is written to disk with fsync), so wait, bounded,
    // for the exhaustion counter before looking at the leases.
    let exhausted = || -> u64 {
        lab.ctl_json(&["list-br"])
            .ok()
            .and_then(|br| br[0]["dhcp_exhausted"].as_u64())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(20), || exhausted() > 0);
    let leases = lab.ctl_json(&["dhcp-leases", "br0"])?;
    let n = leases.as_array().map(Vec::len).unwrap_or(0);
    ensure!(n <= 21, "{n} leases from a 21-address pool");
    let still = leases
        .as_array()
        .and_then(|a| a.iter().find(|l| l["mac"] == mac2.as_str()))
        .cloned();
    ensure!(
        still.as_ref().map(|l| &l["ip"]) == Some(&held["ip"]),
        "c2's lease changed: {held} -> {still:?}"
    );
    let br = lab.ctl_json(&["list-br"])?;
    let exhausted = br[0]["dhcp_exhausted"].as_u64().unwrap_or(0);
    ensure!(
        exhausted > 0,
        "pool exhaustion not counted after 20 s: {br}"
    );
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.assert_ping("c2", "10.0.0.254")?;
    println!(
        "dhcp starvation: {} DHCP messages, {n} leases, pool exhausted {exhausted} times",
        sent.trim()
    );
    Ok(())
}

/// 20 000 new UDP flows through masquerade with --ct-max 1024: the table stays at its
/// cap, evictions are counted, memory stays bounded, and NAT keeps working for others.
fn conntrack_flood_stays_at_cap_and_nat_goes_on() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--ct-max", "1024"])?;
    lab.masquerade_lab("sw")?;
    lab.container("sw", "c2", "v2", "10.0.0.6/24", Some("10.0.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "v2"])?;
    lab.assert_ping("c2", "198.51.100.1")?;
    lab.assert_ping("c1", "198.51.100.1")?;
    let pid = lab.switch_pid().context("no pid")?;
    let before = rss_kb(pid)?;
    let neigh: serde_json::Value =
        serde_json::from_str(&lab.sh("c1", "ip -j neigh show 10.0.0.1")?)?;
    let router = neigh[0]["lladdr"]
        .as_str()
        .context("router MAC")?
        .to_string();
    let sent = lab.sh(
        "c1",
        &format!("FLOOD_SRC=10.0.0.5 FLOOD_DST=198.51.100.1 python3 {FLOOD} eth0 flows 20000 30 {router}"),
    )?;
    let show = lab.ctl_json(&["show"])?;
    let (n, cap, ev) = (
        show["ct_entries"].as_u64().unwrap_or(0),
        show["ct_capacity"].as_u64().unwrap_or(0),
        show["ct_evictions"].as_u64().unwrap_or(0),
    );
    ensure!(cap > 0 && n <= cap, "{n} entries over capacity {cap}");
    ensure!(
        ev > 0,
        "no evictions counted after {} flows: {show}",
        sent.trim()
    );
    // Others' NAT still works: new flows get entries, replies come back.
    lab.assert_ping("c2", "198.51.100.1")?;
    lab.iperf_server("out", "198.51.100.1")?;
    ensure!(
        lab.iperf_bytes("c2", "198.51.100.1")? > 0,
        "TCP through NAT failed"
    );
    let after = rss_kb(pid)?;
    ensure!(
        after < before + 64 * 1024,
        "RSS grew {before} -> {after} kB"
    );
    println!(
        "conntrack flood: {} flows, {n}/{cap} entries, {ev} evictions, RSS {before} -> {after} kB",
        sent.trim()
    );
    Ok(())
}

/// 30 000 datagrams routed toward random addresses of a /16 with almost no hosts: the
/// router must try to resolve each (ARP, rate-limited, bounded neighbour cache). The
/// hosts that exist stay reachable across the router, and memory stays bounded.
fn neighbour_flood_toward_many_addresses() -> Result<()> {
    let mut lab = lab3(&[])?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/16",
        "--gateway",
        "10.1.0.1",
    ])?;
    lab.container("sw", "far", "vf", "10.1.0.5/16", Some("10.1.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "vf"])?;
    lab.sh("c1", "ip route add 10.1.0.0/16 via 10.0.0.254")?;
    lab.assert_ping("c1", "10.1.0.5")?;
    let pid = lab.switch_pid().context("no pid")?;
    let before = rss_kb(pid)?;
    lab.assert_ping("c3", "10.0.0.254")?;
    let neigh: serde_json::Value =
        serde_json::from_str(&lab.sh("c3", "ip -j neigh show 10.0.0.254")?)?;
    let router = neigh[0]["lladdr"]
        .as_str()
        .context("router MAC unknown")?
        .to_string();
    let sent = lab.sh(
        "c3",
        &format!("FLOOD_SRC=10.0.0.3 python3 {FLOOD} eth0 scan 30000 30 {router}"),
    )?;
    lab.assert_ping("c1", "10.1.0.5")?;
    lab.assert_ping("c1", "10.0.0.2")?;
    ensure!(
        lab.ctl(&["version"])?.code == 0,
        "vswitchd stopped answering"
    );
    let after = rss_kb(pid)?;
    ensure!(
        after < before + 64 * 1024,
        "RSS grew {before} -> {after} kB"
    );
    println!(
        "neighbour flood: {} datagrams to random 10.1.0.0/16 addresses, RSS {before} -> {after} kB",
        sent.trim()
    );
    Ok(())
}
