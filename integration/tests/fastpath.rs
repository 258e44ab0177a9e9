//! The kernel fast path (`vswitchd --fastpath`): frames of learned unicast flows are
//! forwarded by the tc program without reaching vswitchd, each frame is delivered
//! once (the socket filter and the tc program act on one lookup), every change that
//! could alter a decision makes the cached entries miss, ports with port security stay
//! in userspace, and nothing is left attached in the kernel after vswitchd exits or is
//! killed.

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{wait_until, Lab, PingSummary};

fn main() -> std::process::ExitCode {
    // The fast path's periodic walk of the cache also deletes entries the Fdb no longer
    // backs; with it an hour apart, every invalidation tested here must happen when the
    // change is made. Set before any thread exists; inherited by every vswitchd.
    std::env::set_var("VSWITCH_FASTPATH_RECONCILE_MS", "3600000");
    vswitch_integration::runner::main(&[
        ("ping_goes_through_the_kernel", ping_goes_through_the_kernel),
        (
            "frames_counted_once_while_the_cache_churns",
            frames_counted_once_while_the_cache_churns,
        ),
        ("tcp_goes_through_the_kernel", tcp_goes_through_the_kernel),
        ("mac_move_is_followed_at_once", mac_move_is_followed_at_once),
        (
            "del_port_stops_traffic_at_once",
            del_port_stops_traffic_at_once,
        ),
        (
            "fdb_flush_invalidates_the_cache",
            fdb_flush_invalidates_the_cache,
        ),
        (
            "locked_ports_stay_in_userspace",
            locked_ports_stay_in_userspace,
        ),
        ("access_vlan_flows_are_cached", access_vlan_flows_are_cached),
        (
            "fastpath_off_is_pure_userspace",
            fastpath_off_is_pure_userspace,
        ),
        (
            "nothing_left_attached_after_exit_or_kill",
            nothing_left_attached_after_exit_or_kill,
        ),
    ])
}

/// Start a switch (`--fastpath on` plus `flags`) with bridge br0.
fn switch(flags: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    let mut f = vec!["--fastpath", "on"];
    f.extend_from_slice(flags);
    lab.start_switch_with("sw", &f)?;
    lab.ctl_ok(&["add-br", "br0"])?;
    Ok(lab)
}

/// Container cI at 10.0.0.I/24 on port vI of br0, with extra `add-port` arguments.
fn add(lab: &mut Lab, i: usize, port_args: &[&str]) -> Result<()> {
    let port = format!("v{i}");
    lab.container(
        "sw",
        &format!("c{i}"),
        &port,
        &format!("10.0.0.{i}/24"),
        None,
    )?;
    let mut a = vec!["add-port", "br0", port.as_str()];
    a.extend_from_slice(port_args);
    lab.ctl_ok(&a)?;
    Ok(())
}

/// A switch with containers c1..cN.
fn lab_with(n: usize, flags: &[&str]) -> Result<Lab> {
    let mut lab = switch(flags)?;
    for i in 1..=n {
        add(&mut lab, i, &[])?;
    }
    Ok(lab)
}

/// The first ping of a test (ARP, learning, the first install); on failure, what the
/// switch and the hosts saw.
fn first_ping(lab: &Lab, from: &str, dst: &str) -> Result<()> {
    let Err(e) = lab.assert_ping(from, dst) else {
        return Ok(());
    };
    let diag = |what: &str, r: Result<String>| {
        format!("--- {what}\n{}\n", r.unwrap_or_else(|e| e.to_string()))
    };
    let mut d = String::new();
    d += &diag("stats", lab.ctl_ok(&["--json", "stats"]));
    d += &diag("fastpath-show", lab.ctl_ok(&["--json", "fastpath-show"]));
    d += &diag("fdb-show", lab.ctl_ok(&["--json", "fdb-show", "br0"]));
    d += &diag("switch links", lab.sh("sw", "ip -s link"));
    d += &diag("vswitchd log", Ok(lab.log_tail(60)));
    Err(e.context(d))
}

/// `stats PORT --json` of one port.
fn stats(lab: &Lab, port: &str) -> Result<serde_json::Value> {
    let v = lab.ctl_json(&["stats", port])?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .with_context(|| format!("no stats for {port}"))
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// (tx, rx) packets of `eth0` in namespace `ns`, as the kernel counts them.
fn eth0_packets(lab: &Lab, ns: &str) -> Result<(u64, u64)> {
    let out = lab.sh(ns, "ip -j -s link show eth0")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = &v[0]["stats64"];
    Ok((
        s["tx"]["packets"].as_u64().context("tx")?,
        s["rx"]["packets"].as_u64().context("rx")?,
    ))
}

/// The cache entries of br0 (`fastpath-show br0 --json`).
fn entries(lab: &Lab) -> Result<Vec<serde_json::Value>> {
    let v = lab.ctl_json(&["fastpath-show", "br0"])?;
    Ok(v["entries"].as_array().cloned().unwrap_or_default())
}

/// Wait until an entry from `in_port` to `out_port` is cached.
fn wait_entry(lab: &Lab, in_port: &str, out_port: &str) -> Result<()> {
    let ok = wait_until(Duration::from_secs(5), || {
        entries(lab).is_ok_and(|e| {
            e.iter()
                .any(|x| x["in_port"] == in_port && x["out_port"] == out_port)
        })
    });
    ensure!(
        ok,
        "no cache entry {in_port} → {out_port}: {:?}",
        entries(lab)
    );
    Ok(())
}

/// One tcx link vswitchd holds: (link id, program id, device name).
type TcxLink = (u64, u64, String);

/// The tcx links the running vswitchd holds, read from its file descriptors
/// (`/proc/PID/fdinfo`: bpftool here predates tcx in `net show`), with the device
/// each is attached to.
fn tcx_links(lab: &Lab) -> Result<Vec<TcxLink>> {
    let pid = lab.switch_pid().context("vswitchd not running")?;
    let names: serde_json::Value = serde_json::from_str(&lab.sh("sw", "ip -j link show")?)?;
    let name_of = |ifindex: u64| {
        names
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["ifindex"].as_u64() == Some(ifindex))
            .and_then(|l| l["ifname"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut links = Vec::new();
    for f in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(f?.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("link_type:").as_deref() != Some("tcx") {
            continue;
        }
        let num = |k: &str| field(k).and_then(|v| v.split(' ').next()?.parse::<u64>().ok());
        if let (Some(link), Some(prog), Some(ifx)) =
            (num("link_id:"), num("prog_id:"), num("ifindex:"))
        {
            links.push((link, prog, name_of(ifx)));
        }
    }
    links.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(links)
}

/// The devices vswitchd has a tcx link on.
fn attached_devices(lab: &Lab) -> Result<Vec<String>> {
    Ok(tcx_links(lab)?.into_iter().map(|l| l.2).collect())
}

/// Which of `links` (and, with `progs`, their programs) still exist in the kernel.
fn any_left(lab: &Lab, links: &[TcxLink], progs: bool) -> Result<Vec<String>> {
    let all: serde_json::Value = serde_json::from_str(&lab.sh("sw", "bpftool -j link show")?)?;
    let mut left = Vec::new();
    for (link, prog, dev) in links {
        if all
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["id"].as_u64() == Some(*link))
        {
            left.push(format!("link {link} on {dev}"));
        }
        if !progs {
            continue;
        }
        let p = lab.sh_out("sw", &format!("bpftool prog show id {prog}"))?;
        if p.status.success() {
            left.push(format!("program {prog}"));
        }
    }
    Ok(left)
}

fn ping_goes_through_the_kernel() -> Result<()> {
    let lab = lab_with(2, &[])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    wait_entry(&lab, "v1", "v2")?;
    wait_entry(&lab, "v2", "v1")?;
    let before = (stats(&lab, "v1")?, eth0_packets(&lab, "c1")?);
    lab.assert_pings("c1", "10.0.0.2", 20)?;
    let after = (stats(&lab, "v1")?, eth0_packets(&lab, "c1")?);
    let fast = n(&after.0, "fastpath_rx_packets") - n(&before.0, "fastpath_rx_packets");
    let total = n(&after.0, "rx_packets") - n(&before.0, "rx_packets");
    let sent = after.1 .0 - before.1 .0;
    // Every frame c1 sent reached v1 once: counted by vswitchd or by the program,
    // never both; the 20 echo requests went through the kernel.
    ensure!(total == sent, "v1 counted {total} frames, c1 sent {sent}");
    ensure!(
        fast >= 20,
        "only {fast} of {sent} frames took the fast path"
    );
    let e = entries(&lab)?;
    ensure!(
        e.iter().all(|x| n(x, "packets") > 0 && x["vlan"] == 0),
        "{e:?}"
    );
    let show = lab.ctl_ok(&["show"])?;
    ensure!(show.contains("fastpath on"), "{show}");
    Ok(())
}

/// A ping flood while the cache is invalidated over and over (each `fdb-flush` sends
/// the flow back to userspace until it is cached again): not one reply lost or
/// duplicated, and each side's counters equal what the peers sent and received.
fn frames_counted_once_while_the_cache_churns() -> Result<()> {
    let mut lab = switch(&[])?;
    // The switch namespace's own kernel would send IPv6 (MLD, router solicitations)
    // on v2 too: silence it, so c2 receives only what the switch forwards.
    lab.sh(
        "sw",
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
    )?;
    for i in 1..=2 {
        add(&mut lab, i, &[])?;
    }
    first_ping(&lab, "c1", "10.0.0.2")?;
    let c1_before = eth0_packets(&lab, "c1")?;
    let c2_before = eth0_packets(&lab, "c2")?;
    let v1_before = stats(&lab, "v1")?;
    let v2_before = stats(&lab, "v2")?;
    let sock = lab.socket();
    let ctl = vswitch_integration::bin("vswitchctl")?;
    // Flush the FDB every 20 ms while 3000 pings go out 1 ms apart.
    let churn = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(4);
        let mut flushes = 0;
        while std::time::Instant::now() < end {
            let _ = std::process::Command::new(&ctl)
                .arg("--socket")
                .arg(&sock)
                .args(["fdb-flush", "br0"])
                .output();
            flushes += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        flushes
    });
    let out = lab.sh_out("c1", "ping -c 3000 -i 0.001 -W 2 -q 10.0.0.2")?;
    let flushes = churn.join().map_err(|_| anyhow::anyhow!("churn thread"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(
        s.transmitted == 3000 && s.received == 3000 && s.duplicates == 0,
        "{flushes} flushes: {text}"
    );
    // Quiet again: compare what the hosts' kernels counted with the switch's counters.
    let c1 = eth0_packets(&lab, "c1")?;
    let c2 = eth0_packets(&lab, "c2")?;
    let v1 = stats(&lab, "v1")?;
    let v2 = stats(&lab, "v2")?;
    let d = |a: &serde_json::Value, b: &serde_json::Value, f: &str| n(a, f) - n(b, f);
    ensure!(
        d(&v1, &v1_before, "rx_packets") == c1.0 - c1_before.0,
        "v1 rx {} vs c1 tx {}",
        d(&v1, &v1_before, "rx_packets"),
        c1.0 - c1_before.0
    );
    ensure!(
        d(&v2, &v2_before, "tx_packets") == c2.1 - c2_before.1,
        "v2 tx {} vs c2 rx {}",
        d(&v2, &v2_before, "tx_packets"),
        c2.1 - c2_before.1
    );
    ensure!(
        d(&v1, &v1_before, "fastpath_rx_packets") > 0
            && d(&v1, &v1_before, "fastpath_rx_packets") < d(&v1, &v1_before, "rx_packets"),
        "the flood should mix both paths: {v1}"
    );
    println!(
        "{flushes} flushes; v1 rx {} of which fast path {}",
        d(&v1, &v1_before, "rx_packets"),
        d(&v1, &v1_before, "fastpath_rx_packets")
    );
    Ok(())
}

fn tcp_goes_through_the_kernel() -> Result<()> {
    let mut lab = lab_with(2, &[])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    wait_entry(&lab, "v1", "v2")?;
    let before = stats(&lab, "v1")?;
    lab.iperf_server("c2", "10.0.0.2")?;
    let bytes = lab.iperf_bytes("c1", "10.0.0.2")?;
    ensure!(bytes > 0, "iperf3 moved nothing");
    let after = stats(&lab, "v1")?;
    let fast = n(&after, "fastpath_rx_bytes") - n(&before, "fastpath_rx_bytes");
    let total = n(&after, "rx_bytes") - n(&before, "rx_bytes");
    // The handshake's first frames go through vswitchd (a new MAC pair would; here the
    // pair is cached already), the stream itself through the kernel.
    ensure!(
        fast * 10 >= total * 9,
        "only {fast} of {total} bytes took the fast path"
    );
    ensure!(fast >= bytes, "fast path {fast} bytes < {bytes} delivered");
    Ok(())
}

fn mac_move_is_followed_at_once() -> Result<()> {
    let lab = lab_with(3, &[])?;
    first_ping(&lab, "c2", "10.0.0.1")?;
    wait_entry(&lab, "v2", "v1")?;
    let mac = lab.mac("c1", "eth0")?;
    // The host moves from behind v1 to behind v3 (same MAC and address). Its first
    // frame from v3 reaches vswitchd (no entry has v3 as ingress for it), which learns
    // the move; c2's replies to the MAC (cached: → v1) must follow at once.
    lab.sh("c1", "ip link set eth0 down")?;
    lab.sh("c3", &format!("ip link set eth0 down && ip link set eth0 address {mac} && ip addr flush dev eth0 && ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up"))?;
    let out = lab.sh_out("c3", "ping -c 5 -i 0.2 -W 1 10.0.0.2")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(
        s.received == 5 && s.duplicates == 0,
        "after the move: {text}\n{}",
        lab.log_tail(20)
    );
    let e = entries(&lab)?;
    ensure!(
        !e.iter()
            .any(|x| x["dst"] == mac.as_str() && x["out_port"] == "v1"),
        "stale entry to the old port: {e:?}"
    );
    // And c2, which still has the MAC in its ARP cache, reaches it at v3.
    lab.assert_pings("c2", "10.0.0.1", 5)?;
    wait_entry(&lab, "v2", "v3")?;
    Ok(())
}

fn del_port_stops_traffic_at_once() -> Result<()> {
    let lab = lab_with(2, &[])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    wait_entry(&lab, "v1", "v2")?;
    let links = tcx_links(&lab)?;
    ensure!(
        attached_devices(&lab)? == ["v1", "v2"],
        "want the program on v1 and v2: {links:?}"
    );
    lab.ctl_ok(&["del-port", "br0", "v2"])?;
    // Not one reply once del-port returned.
    let out = lab.sh_out("c1", "ping -c 5 -i 0.2 -W 1 10.0.0.2")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(s.received == 0, "traffic after del-port: {text}");
    ensure!(attached_devices(&lab)? == ["v1"], "{:?}", tcx_links(&lab)?);
    let v2: Vec<TcxLink> = links.into_iter().filter(|l| l.2 == "v2").collect();
    let left = any_left(&lab, &v2, false)?;
    ensure!(left.is_empty(), "left after del-port: {left:?}");
    ensure!(entries(&lab)?.is_empty(), "{:?}", entries(&lab)?);
    Ok(())
}

fn fdb_flush_invalidates_the_cache() -> Result<()> {
    let lab = lab_with(2, &[])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    wait_entry(&lab, "v1", "v2")?;
    lab.ctl_ok(&["fdb-flush", "br0"])?;
    ensure!(
        entries(&lab)?.is_empty(),
        "entries survive fdb-flush: {:?}",
        entries(&lab)?
    );
    lab.assert_pings("c1", "10.0.0.2", 5)?;
    wait_entry(&lab, "v1", "v2")?;
    Ok(())
}

fn locked_ports_stay_in_userspace() -> Result<()> {
    let mut lab = switch(&[])?;
    add(&mut lab, 1, &[])?;
    lab.container("sw", "c2", "v2", "10.0.0.2/24", None)?;
    let mac = lab.mac("c2", "eth0")?;
    lab.ctl_ok(&[
        "add-port",
        "br0",
        "v2",
        "--lock-mac",
        &mac,
        "--lock-ip",
        "10.0.0.2",
    ])?;
    lab.assert_pings("c1", "10.0.0.2", 10)?;
    // Frames to the locked port may be cached; frames from it never.
    let e = entries(&lab)?;
    ensure!(!e.iter().any(|x| x["in_port"] == "v2"), "{e:?}");
    ensure!(n(&stats(&lab, "v2")?, "fastpath_rx_packets") == 0);
    // Spoofed frames from the locked port are still dropped by vswitchd.
    lab.sh("c2", "ip addr add 10.0.0.9/24 dev eth0")?;
    let before = n(&stats(&lab, "v2")?["drops"], "spoofed_ip");
    let _ = lab.sh_out("c2", "ping -c 3 -i 0.2 -W 1 -I 10.0.0.9 10.0.0.1")?;
    let after = n(&stats(&lab, "v2")?["drops"], "spoofed_ip");
    ensure!(after >= before + 3, "spoofed_ip {before} → {after}");
    Ok(())
}

fn access_vlan_flows_are_cached() -> Result<()> {
    let mut lab = switch(&[])?;
    add(&mut lab, 1, &["--tag", "10"])?;
    add(&mut lab, 2, &["--tag", "10"])?;
    add(&mut lab, 3, &["--tag", "20"])?;
    lab.assert_pings("c1", "10.0.0.2", 5)?;
    wait_entry(&lab, "v1", "v2")?;
    let e = entries(&lab)?;
    ensure!(e.iter().all(|x| x["vlan"] == 10), "{e:?}");
    lab.assert_no_ping("c3", "10.0.0.1")?;
    // Moving v2 to VLAN 20 is a configuration change: the cached v1 → v2 entry dies
    // with it, and c1 no longer reaches c2.
    lab.ctl_ok(&["del-port", "br0", "v2"])?;
    lab.ctl_ok(&["add-port", "br0", "v2", "--tag", "20"])?;
    lab.assert_no_ping("c1", "10.0.0.2")?;
    lab.assert_ping("c3", "10.0.0.2")?;
    Ok(())
}

fn fastpath_off_is_pure_userspace() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", "off"])?;
    lab.ctl_ok(&["add-br", "br0"])?;
    for i in 1..=2 {
        add(&mut lab, i, &[])?;
    }
    lab.assert_pings("c1", "10.0.0.2", 10)?;
    let fp = lab.ctl_json(&["fastpath-show"])?;
    ensure!(fp["mode"] == "off", "{fp}");
    ensure!(n(&stats(&lab, "v1")?, "fastpath_rx_packets") == 0);
    ensure!(tcx_links(&lab)?.is_empty(), "{:?}", tcx_links(&lab)?);
    let bytes = {
        lab.iperf_server("c2", "10.0.0.2")?;
        lab.iperf_bytes("c1", "10.0.0.2")?
    };
    ensure!(bytes > 0);
    ensure!(lab.ctl_ok(&["show"])?.contains("fastpath off"));
    Ok(())
}

fn nothing_left_attached_after_exit_or_kill() -> Result<()> {
    let mut lab = lab_with(2, &[])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    let links = tcx_links(&lab)?;
    ensure!(attached_devices(&lab)? == ["v1", "v2"], "{links:?}");
    // SIGTERM: detached on the way out.
    let code = lab.stop_switch()?;
    ensure!(code == 0, "vswitchd exited {code}");
    let left = any_left(&lab, &links, true)?;
    ensure!(left.is_empty(), "after SIGTERM: {left:?}");
    // SIGKILL: the tcx links die with the process's file descriptors.
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    let links = tcx_links(&lab)?;
    ensure!(
        attached_devices(&lab)? == ["v1", "v2"],
        "after restart: {links:?}"
    );
    lab.kill_switch()?;
    if !wait_until(Duration::from_secs(5), || {
        any_left(&lab, &links, true).is_ok_and(|l| l.is_empty())
    }) {
        bail!("after SIGKILL: {:?}", any_left(&lab, &links, true)?);
    }
    // Restarted after the kill: one program per port, and traffic cached again.
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    ensure!(
        attached_devices(&lab)? == ["v1", "v2"],
        "after kill + restart: {:?}",
        tcx_links(&lab)?
    );
    wait_entry(&lab, "v1", "v2")?;
    Ok(())
}
