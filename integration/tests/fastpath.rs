//! The kernel fast path (`vswitchd --fastpath`): frames of learned unicast flows are
//! forwarded by the tc program without reaching vswitchd, each frame is delivered
//! once (the socket filter and the tc program act on one lookup), every change that
//! could alter a decision makes the cached entries miss, ports with port security stay
//! in userspace, and nothing is left attached in the kernel after vswitchd exits or is
//! killed. Routed unicast between bridges is forwarded by the program too (MACs
//! rewritten, TTL decremented), while what needs the router (TTL 1, over the MTU, the
//! gateway itself, NAT) still reaches vswitchd, and route and neighbour changes
//! invalidate what was cached. Routed IPv6 likewise (MACs rewritten, hop limit
//! decremented; hop limit 1 and packets too big still reach vswitchd). An `internal`
//! port (the switch namespace's own host on the bridge) is offloaded too, both ways,
//! until its TAP leaves the namespace; `tap` ports stay in userspace.

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
        (
            "routed_ping_and_tcp_go_through_the_kernel",
            routed_ping_and_tcp_go_through_the_kernel,
        ),
        (
            "routed_ttl_1_and_mtu_still_get_icmp_from_the_gateway",
            routed_ttl_1_and_mtu_still_get_icmp_from_the_gateway,
        ),
        (
            "del_route_invalidates_routed_entries",
            del_route_invalidates_routed_entries,
        ),
        (
            "next_hop_mac_change_and_move_are_followed",
            next_hop_mac_change_and_move_are_followed,
        ),
        (
            "nat_and_gateway_flows_are_not_cached",
            nat_and_gateway_flows_are_not_cached,
        ),
        (
            "masquerade_added_takes_over_a_cached_routed_flow",
            masquerade_added_takes_over_a_cached_routed_flow,
        ),
        (
            "locked_ports_are_routed_in_userspace",
            locked_ports_are_routed_in_userspace,
        ),
        (
            "routed_fastpath_off_unchanged",
            routed_fastpath_off_unchanged,
        ),
        (
            "nat_idle_entry_expiring_stops_its_nat",
            nat_idle_entry_expiring_stops_its_nat,
        ),
        (
            "nat_del_masquerade_stops_offloaded_traffic_at_once",
            nat_del_masquerade_stops_offloaded_traffic_at_once,
        ),
        (
            "routed6_ping_and_tcp_go_through_the_kernel",
            routed6_ping_and_tcp_go_through_the_kernel,
        ),
        (
            "routed6_hop_limit_1_and_mtu_still_get_icmpv6_from_the_gateway",
            routed6_hop_limit_1_and_mtu_still_get_icmpv6_from_the_gateway,
        ),
        (
            "routed6_frames_counted_once_while_the_cache_churns",
            routed6_frames_counted_once_while_the_cache_churns,
        ),
        (
            "routed6_ndp_mac_change_is_followed",
            routed6_ndp_mac_change_is_followed,
        ),
        (
            "routed6_masquerade6_takes_over_a_cached_flow",
            routed6_masquerade6_takes_over_a_cached_flow,
        ),
        (
            "internal_port_ping_and_tcp_go_through_the_kernel",
            internal_port_ping_and_tcp_go_through_the_kernel,
        ),
        (
            "internal_port_routed_to_another_bridge",
            internal_port_routed_to_another_bridge,
        ),
        (
            "internal_port_del_port_stops_traffic_at_once",
            internal_port_del_port_stops_traffic_at_once,
        ),
        (
            "internal_port_moved_to_another_netns_goes_back_to_userspace",
            internal_port_moved_to_another_netns_goes_back_to_userspace,
        ),
        (
            "internal_port_nothing_left_after_exit_or_kill",
            internal_port_nothing_left_after_exit_or_kill,
        ),
        (
            "internal_port_fastpath_off_unchanged",
            internal_port_fastpath_off_unchanged,
        ),
        ("tap_ports_stay_in_userspace", tap_ports_stay_in_userspace),
        (
            "internal_port_frames_counted_once_while_the_cache_churns",
            internal_port_frames_counted_once_while_the_cache_churns,
        ),
        (
            "internal_port_moved_and_used_at_once",
            internal_port_moved_and_used_at_once,
        ),
        (
            "veth_peers_take_frames_directly_until_one_moves_home",
            veth_peers_take_frames_directly_until_one_moves_home,
        ),
        (
            "trunk_to_access_flows_are_cached_with_their_tags",
            trunk_to_access_flows_are_cached_with_their_tags,
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

/// Silence namespace `ns`'s own IPv6 (MLD, router solicitations, DAD), so that its
/// devices send, and the hosts behind the switch receive, only what a test makes them.
fn no_ipv6(lab: &Lab, ns: &str) -> Result<()> {
    lab.sh(
        ns,
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
    )?;
    Ok(())
}

/// The summary `ping` printed in `text`.
fn summary(text: &str) -> Result<PingSummary> {
    PingSummary::parse(text).with_context(|| format!("no summary: {text}"))
}

/// `ping ARGS` in namespace `ns`: its summary and its output.
fn ping(lab: &Lab, ns: &str, args: &str) -> Result<(PingSummary, String)> {
    let out = lab.sh_out(ns, &format!("ping {args}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((summary(&text)?, text))
}

/// `count` pings 20 ms apart from `from` to `dst`: every one answered, once.
fn pings_all_answered(lab: &Lab, from: &str, dst: &str, count: usize) -> Result<()> {
    let (s, text) = ping(lab, from, &format!("-c {count} -i 0.02 -W 1 -q {dst}"))?;
    ensure!(
        s.transmitted == count && s.received == count && s.duplicates == 0,
        "{from} → {dst}: {text}"
    );
    Ok(())
}

/// `field` of the stats `after` less the same field of `before`.
fn delta(after: &serde_json::Value, before: &serde_json::Value, field: &str) -> u64 {
    n(after, field) - n(before, field)
}

/// A port's counters (`stats`) and the (tx, rx) packets of the eth0 of the container
/// `ns` behind it, read together.
struct Counts {
    port: String,
    ns: String,
    stats: serde_json::Value,
    eth0: (u64, u64),
}

/// The reading of `port` and container `ns` (the container's kernel first, as the
/// tests always did).
fn counts(lab: &Lab, port: &str, ns: &str) -> Result<Counts> {
    let eth0 = eth0_packets(lab, ns)?;
    Ok(Counts {
        port: port.to_string(),
        ns: ns.to_string(),
        stats: stats(lab, port)?,
        eth0,
    })
}

/// Between the readings `before` and `after`, the port counted every frame of its
/// container once (by vswitchd or by a program, never both), in each of `dirs`: "rx"
/// against what the container sent, "tx" against what it received.
fn ensure_counted_once(before: &Counts, after: &Counts, dirs: &[&str]) -> Result<()> {
    let (port, ns) = (&after.port, &after.ns);
    for &dir in dirs {
        let (switch, host, host_dir) = if dir == "rx" {
            (
                delta(&after.stats, &before.stats, "rx_packets"),
                after.eth0.0 - before.eth0.0,
                "tx",
            )
        } else {
            (
                delta(&after.stats, &before.stats, "tx_packets"),
                after.eth0.1 - before.eth0.1,
                "rx",
            )
        };
        ensure!(
            switch == host,
            "{port} {dir} {switch} vs {ns} {host_dir} {host}"
        );
    }
    Ok(())
}

/// Between the stats `before` and `after`, port `port` received frames both through
/// vswitchd and through the kernel; returns (received, of them through the kernel).
fn ensure_mixed(
    port: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> Result<(u64, u64)> {
    let rx = delta(after, before, "rx_packets");
    let fast = delta(after, before, "fastpath_rx_packets");
    ensure!(
        fast > 0 && fast < rx,
        "the flood should mix both paths: {port} {after}"
    );
    Ok((rx, fast))
}

/// 3000 pings 1 ms apart from `from` to `dst` (with options such as `-6` before it)
/// while `bridge`'s FDB is flushed every 20 ms for 4 s (each flush sends the flow back
/// to userspace until it is cached again): not one reply lost or duplicated. Returns
/// how many flushes there were.
fn flood_while_flushing(lab: &Lab, bridge: &str, from: &str, dst: &str) -> Result<u32> {
    let sock = lab.socket();
    let ctl = vswitch_integration::bin("vswitchctl")?;
    let bridge = bridge.to_string();
    let churn = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(4);
        let mut flushes = 0;
        while std::time::Instant::now() < end {
            let _ = std::process::Command::new(&ctl)
                .arg("--socket")
                .arg(&sock)
                .args(["fdb-flush", &bridge])
                .output();
            flushes += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        flushes
    });
    let out = lab.sh_out(from, &format!("ping -c 3000 -i 0.001 -W 2 -q {dst}"))?;
    let flushes = churn.join().map_err(|_| anyhow::anyhow!("churn thread"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = summary(&text)?;
    ensure!(
        s.transmitted == 3000 && s.received == 3000 && s.duplicates == 0,
        "{flushes} flushes: {text}"
    );
    Ok(flushes)
}

/// vswitchd holds tcx links on the devices `want` (sorted) and on no other.
fn ensure_attached(lab: &Lab, want: &[&str], when: &str) -> Result<()> {
    let devices = attached_devices(lab)?;
    ensure!(
        devices == want,
        "{when}: links on {devices:?}, want {want:?}: {:?}",
        tcx_links(lab)?
    );
    Ok(())
}

/// `del-port br0 PORT`, whose one tcx link is among `links`: once the command returned,
/// `from` gets no answer from `dst`, the link and every entry are gone, and vswitchd
/// holds links on `rest` only.
fn del_port_stops_traffic(
    lab: &Lab,
    port: &str,
    links: Vec<TcxLink>,
    (from, dst): (&str, &str),
    rest: &[&str],
) -> Result<()> {
    lab.ctl_ok(&["del-port", "br0", port])?;
    let (s, text) = ping(lab, from, &format!("-c 5 -i 0.2 -W 1 {dst}"))?;
    ensure!(s.received == 0, "traffic after del-port: {text}");
    ensure_attached(lab, rest, "after del-port")?;
    let gone: Vec<TcxLink> = links.into_iter().filter(|l| l.2 == port).collect();
    ensure!(gone.len() == 1, "{gone:?}");
    let left = any_left(lab, &gone, false)?;
    ensure!(left.is_empty(), "left after del-port: {left:?}");
    ensure!(entries(lab)?.is_empty(), "{:?}", entries(lab)?);
    Ok(())
}

/// vswitchd stopped (SIGTERM), then restarted and killed (SIGKILL): every tcx link
/// (and program) it held goes with it each time. After each start, `restarted` runs,
/// then `from` pings `dst` and vswitchd holds links on `devices` again.
fn nothing_left_after_exit_or_kill(
    lab: &mut Lab,
    (from, dst): (&str, &str),
    devices: &[&str],
    restarted: impl Fn(&Lab) -> Result<()>,
) -> Result<()> {
    first_ping(lab, from, dst)?;
    let links = tcx_links(lab)?;
    ensure_attached(lab, devices, "before")?;
    // SIGTERM: detached on the way out.
    let code = lab.stop_switch()?;
    ensure!(code == 0, "vswitchd exited {code}");
    let left = any_left(lab, &links, true)?;
    ensure!(left.is_empty(), "after SIGTERM: {left:?}");
    // SIGKILL: the tcx links die with the process's file descriptors.
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    restarted(lab)?;
    first_ping(lab, from, dst)?;
    let links = tcx_links(lab)?;
    ensure_attached(lab, devices, "after restart")?;
    lab.kill_switch()?;
    if !wait_until(Duration::from_secs(5), || {
        any_left(lab, &links, true).is_ok_and(|l| l.is_empty())
    }) {
        bail!("after SIGKILL: {:?}", any_left(lab, &links, true)?);
    }
    // Restarted after the kill: one program per port again.
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    restarted(lab)?;
    first_ping(lab, from, dst)?;
    ensure_attached(lab, devices, "after kill + restart")
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
    let lab = quiet_pair()?;
    churned_counts_agree(&lab, "br0", "c1", "10.0.0.2")
}

/// A switch with c1 and c2, IPv6 off in all three namespaces (the switch
/// namespace's kernel would send on v2 too, and the containers' kernels send router
/// solicitations and MLD reports on their own schedule: a frame sent between the reads
/// of a container's and the switch's counters would make them differ by one), after
/// c1's first ping to c2.
fn quiet_pair() -> Result<Lab> {
    let mut lab = switch(&[])?;
    no_ipv6(&lab, "sw")?;
    for i in 1..=2 {
        add(&mut lab, i, &[])?;
        no_ipv6(&lab, &format!("c{i}"))?;
    }
    first_ping(&lab, "c1", "10.0.0.2")?;
    Ok(lab)
}

/// [`flood_while_flushing`] from c1 (behind v1) to `dst` (c2, behind v2); then, quiet
/// again, the switch's counters equal what the containers' kernels counted.
fn churned_counts_agree(lab: &Lab, bridge: &str, from: &str, dst: &str) -> Result<()> {
    let (p1_0, p2_0) = (counts(lab, "v1", "c1")?, counts(lab, "v2", "c2")?);
    let flushes = flood_while_flushing(lab, bridge, from, dst)?;
    let (p1, p2) = (counts(lab, "v1", "c1")?, counts(lab, "v2", "c2")?);
    ensure_counted_once(&p1_0, &p1, &["rx"])?;
    ensure_counted_once(&p2_0, &p2, &["tx"])?;
    let (rx, fast) = ensure_mixed("v1", &p1_0.stats, &p1.stats)?;
    println!("{flushes} flushes; v1 rx {rx} of which fast path {fast}");
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
    // Not one reply once del-port returned.
    del_port_stops_traffic(&lab, "v2", links, ("c1", "10.0.0.2"), &["v1"])
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
    nothing_left_after_exit_or_kill(&mut lab, ("c1", "10.0.0.2"), &["v1", "v2"], |_| Ok(()))?;
    // And traffic cached again.
    wait_entry(&lab, "v1", "v2")?;
    Ok(())
}

/// br1 10.0.0.0/24 (gateway .1) with c1 10.0.0.5 on v1, br2 10.1.0.0/24 (gateway .1,
/// `br2_args` added) with c2 10.1.0.5 on v2; vswitchd with `--fastpath MODE`.
fn two_nets(mode: &str, br2_args: &[&str]) -> Result<Lab> {
    let mut lab = routers(mode, br2_args)?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", Some("10.0.0.1"))?;
    lab.container("sw", "c2", "v2", "10.1.0.5/24", Some("10.1.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    Ok(lab)
}

/// vswitchd with `--fastpath MODE`, the switch namespace's IPv6 off (it would send on
/// the ports too), and the routed bridges br1 10.0.0.0/24 and br2 10.1.0.0/24
/// (`br2_args` added), each with gateway .1.
fn routers(mode: &str, br2_args: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", mode])?;
    no_ipv6(&lab, "sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ])?;
    let mut a = vec![
        "add-br",
        "br2",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ];
    a.extend_from_slice(br2_args);
    lab.ctl_ok(&a)?;
    Ok(lab)
}

/// Every live cache entry (all bridges).
fn all_entries(lab: &Lab) -> Result<Vec<serde_json::Value>> {
    let v = lab.ctl_json(&["fastpath-show"])?;
    Ok(v["entries"].as_array().cloned().unwrap_or_default())
}

/// The routed entries among `e` (NAT entries, which are routed too, left out).
fn routed(e: &[serde_json::Value]) -> Vec<serde_json::Value> {
    e.iter()
        .filter(|x| x["route"].is_object() && x["nat"].is_null())
        .cloned()
        .collect()
}

/// Wait until a routed entry from `in_port` for `ip_dst` is cached; returns it.
fn wait_routed(lab: &Lab, in_port: &str, ip_dst: &str) -> Result<serde_json::Value> {
    let find = || {
        all_entries(lab).ok().and_then(|e| {
            routed(&e)
                .into_iter()
                .find(|x| x["in_port"] == in_port && x["route"]["ip_dst"] == ip_dst)
        })
    };
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = find();
        found.is_some()
    });
    found.with_context(|| {
        format!(
            "no routed entry {in_port} → {ip_dst}: {:?}\n{}",
            all_entries(lab),
            lab.log_tail(20)
        )
    })
}

fn routed_ping_and_tcp_go_through_the_kernel() -> Result<()> {
    let mut lab = two_nets("on", &[])?;
    first_ping(&lab, "c1", "10.1.0.5")?;
    let e = wait_routed(&lab, "v1", "10.1.0.5")?;
    wait_routed(&lab, "v2", "10.0.0.5")?;
    // The entry as fastpath-show reports it: from c1 to br1's router MAC, out of v2
    // towards c2's MAC.
    let c1_mac = lab.mac("c1", "eth0")?;
    let c2_mac = lab.mac("c2", "eth0")?;
    ensure!(
        e["bridge"] == "br1"
            && e["src"] == c1_mac.as_str()
            && e["out_port"] == "v2"
            && e["route"]["out_bridge"] == "br2"
            && e["route"]["next_hop"] == c2_mac.as_str()
            && e["dst"].as_str().is_some_and(|d| d.starts_with("02:76:")),
        "{e}"
    );
    let before = (stats(&lab, "v1")?, eth0_packets(&lab, "c1")?);
    let v2_before = stats(&lab, "v2")?;
    let c2_before = eth0_packets(&lab, "c2")?;
    lab.assert_pings("c1", "10.1.0.5", 20)?;
    let after = (stats(&lab, "v1")?, eth0_packets(&lab, "c1")?);
    let v2_after = stats(&lab, "v2")?;
    let c2_after = eth0_packets(&lab, "c2")?;
    let fast = n(&after.0, "fastpath_rx_packets") - n(&before.0, "fastpath_rx_packets");
    let total = n(&after.0, "rx_packets") - n(&before.0, "rx_packets");
    let sent = after.1 .0 - before.1 .0;
    // Counted once (by vswitchd or by the program), and the echo requests were routed
    // by the kernel; what v2 sent is what c2 received.
    ensure!(total == sent, "v1 counted {total} frames, c1 sent {sent}");
    ensure!(
        fast >= 20,
        "only {fast} of {sent} frames took the fast path"
    );
    let v2_tx = n(&v2_after, "tx_packets") - n(&v2_before, "tx_packets");
    ensure!(
        v2_tx == c2_after.1 - c2_before.1,
        "v2 sent {v2_tx} frames, c2 received {}",
        c2_after.1 - c2_before.1
    );
    ensure!(
        n(&v2_after, "fastpath_tx_packets") - n(&v2_before, "fastpath_tx_packets") >= 20,
        "{v2_after}"
    );
    // TTL decremented once, by the program now: the reply arrives with 64 - 1.
    let out = lab.sh("c1", "ping -c 3 -i 0.2 -W 1 10.1.0.5")?;
    ensure!(out.matches("ttl=63").count() == 3, "{out}");
    // TCP: the stream through the kernel.
    let before = stats(&lab, "v1")?;
    lab.iperf_server("c2", "10.1.0.5")?;
    let bytes = lab.iperf_bytes("c1", "10.1.0.5")?;
    ensure!(bytes > 0, "iperf3 moved nothing");
    let after = stats(&lab, "v1")?;
    let fast = n(&after, "fastpath_rx_bytes") - n(&before, "fastpath_rx_bytes");
    let total = n(&after, "rx_bytes") - n(&before, "rx_bytes");
    ensure!(
        fast * 10 >= total * 9,
        "only {fast} of {total} bytes took the fast path"
    );
    ensure!(fast >= bytes, "fast path {fast} bytes < {bytes} delivered");
    println!("iperf3 routed: {bytes} bytes, v1 rx {total} bytes of which fast path {fast}");
    Ok(())
}

fn routed_ttl_1_and_mtu_still_get_icmp_from_the_gateway() -> Result<()> {
    let lab = two_nets("on", &["--mtu", "1400"])?;
    first_ping(&lab, "c1", "10.1.0.5")?;
    wait_routed(&lab, "v1", "10.1.0.5")?;
    // The flow is cached, yet TTL 1 reaches the router, which answers.
    let o = lab.sh_out("c1", "ping -c 1 -W 2 -t 1 10.1.0.5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        text.contains("From 10.0.0.1") && text.contains("Time to live exceeded"),
        "{text}"
    );
    // Over br2's MTU with DF: fragmentation needed, from the router.
    let o = lab.sh_out("c1", "ping -c 2 -W 1 -M do -s 1450 10.1.0.5")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(
        text.contains("mtu = 1400") || text.contains("mtu=1400"),
        "no fragmentation-needed: {text}"
    );
    // traceroute: the gateway, then c2 (its probes with TTL 2 take the fast path).
    let tr = lab.sh("c1", "busybox traceroute -n -w 1 -q 1 -m 5 10.1.0.5")?;
    let hops: Vec<&str> = tr
        .lines()
        .skip_while(|l| l.starts_with("traceroute"))
        .collect();
    ensure!(
        hops.len() == 2 && hops[0].contains("10.0.0.1") && hops[1].contains("10.1.0.5"),
        "{tr}"
    );
    // And the cached flow still works at full size within the MTU.
    lab.assert_pings("c1", "10.1.0.5", 3)?;
    let o = lab.sh_out("c1", "ping -c 3 -i 0.2 -W 1 -M do -s 1372 10.1.0.5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(s.received == 3, "{text}");
    Ok(())
}

fn del_route_invalidates_routed_entries() -> Result<()> {
    let mut lab = two_nets("on", &[])?;
    // A router namespace on br2 (10.1.0.254) leading to 10.2.0.0/24.
    lab.container("sw", "r", "vr", "10.1.0.254/24", None)?;
    lab.ctl_ok(&["add-port", "br2", "vr"])?;
    lab.add_ns("far")?;
    lab.veth("r", "eth1", "far", "eth0")?;
    lab.sh("r", "ip addr add 10.2.0.1/24 dev eth1 && ip link set eth1 up && sysctl -qw net.ipv4.ip_forward=1 && ip route add 10.0.0.0/24 via 10.1.0.1")?;
    lab.sh("far", "ip addr add 10.2.0.5/24 dev eth0 && ip link set eth0 up && ip route add default via 10.2.0.1")?;
    lab.ctl_ok(&["add-route", "10.2.0.0/24", "--via", "10.1.0.254"])?;
    first_ping(&lab, "c1", "10.2.0.5")?;
    let e = wait_routed(&lab, "v1", "10.2.0.5")?;
    let r_mac = lab.mac("r", "eth0")?;
    ensure!(
        e["out_port"] == "vr" && e["route"]["next_hop"] == r_mac.as_str(),
        "via the next hop router: {e}"
    );
    lab.assert_pings("c1", "10.2.0.5", 5)?;
    ensure!(
        n(&wait_routed(&lab, "v1", "10.2.0.5")?, "packets") >= 5,
        "the kernel routed the pings"
    );
    lab.ctl_ok(&["del-route", "10.2.0.0/24"])?;
    let left: Vec<_> = routed(&all_entries(&lab)?)
        .into_iter()
        .filter(|x| x["route"]["ip_dst"] == "10.2.0.5")
        .collect();
    ensure!(left.is_empty(), "entries survive del-route: {left:?}");
    // No route: the router answers net unreachable, nothing reaches far.
    let o = lab.sh_out("c1", "ping -c 2 -i 0.3 -W 1 10.2.0.5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(
        s.received == 0 && text.contains("From 10.0.0.1"),
        "after del-route: {text}"
    );
    Ok(())
}

fn next_hop_mac_change_and_move_are_followed() -> Result<()> {
    let mut lab = two_nets("on", &[])?;
    lab.container("sw", "c3", "v3", "10.1.0.99/24", Some("10.1.0.1"))?;
    lab.ctl_ok(&["add-port", "br2", "v3"])?;
    first_ping(&lab, "c1", "10.1.0.5")?;
    wait_routed(&lab, "v1", "10.1.0.5")?;
    // c2 takes another MAC; its next ARP tells the router (the routed entry to the old
    // MAC must die then, not at the next walk of the cache an hour away).
    let new_mac = "02:00:00:00:c2:02";
    lab.sh(
        "c2",
        &format!("ip link set eth0 address {new_mac} && ip neigh flush dev eth0"),
    )?;
    lab.assert_ping("c2", "10.1.0.1")?;
    let out = lab.sh_out("c1", "ping -c 5 -i 0.2 -W 1 10.1.0.5")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(
        s.received == 5 && s.duplicates == 0,
        "after the MAC change: {text}\n{:?}",
        all_entries(&lab)
    );
    let e = wait_routed(&lab, "v1", "10.1.0.5")?;
    ensure!(e["route"]["next_hop"] == new_mac, "{e}");
    // c2 (same MAC and address) moves from v2 to v3: the Fdb move invalidates the
    // entry out of v2 at once.
    lab.sh("c2", "ip link set eth0 down")?;
    lab.sh("c3", &format!("ip link set eth0 down && ip link set eth0 address {new_mac} && ip addr flush dev eth0 && ip addr add 10.1.0.5/24 dev eth0 && ip link set eth0 up && ip route add default via 10.1.0.1"))?;
    // Its first frame from v3 teaches the bridge.
    lab.assert_ping("c3", "10.1.0.1")?;
    let out = lab.sh_out("c1", "ping -c 5 -i 0.2 -W 1 10.1.0.5")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(
        s.received == 5 && s.duplicates == 0,
        "after the move: {text}\n{:?}",
        all_entries(&lab)
    );
    let e = wait_routed(&lab, "v1", "10.1.0.5")?;
    ensure!(e["out_port"] == "v3", "{e}");
    Ok(())
}

fn nat_and_gateway_flows_are_not_cached() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    lab.masquerade_lab("sw")?;
    // Masqueraded: c1 reaches the outside host as 198.51.100.2.
    lab.assert_pings("c1", "198.51.100.1", 5)?;
    lab.iperf_server("out", "198.51.100.1")?;
    ensure!(lab.iperf_bytes("c1", "198.51.100.1")? > 0);
    // The gateways themselves.
    lab.assert_pings("c1", "10.0.0.1", 3)?;
    lab.assert_pings("out", "198.51.100.2", 3)?;
    // NAT flows are cached only as NAT entries (translated: see the nat_* tests),
    // never as plain routed ones; the gateways' own traffic not at all.
    let r = routed(&all_entries(&lab)?);
    ensure!(r.is_empty(), "NAT or gateway flows cached as routed: {r:?}");
    let gw: Vec<_> = all_entries(&lab)?
        .into_iter()
        .filter(|e| {
            e["nat"].is_object()
                && ["10.0.0.1", "198.51.100.2"].iter().any(|g| {
                    e["nat"]["nat_dst"]
                        .as_str()
                        .is_some_and(|d| d.starts_with(&format!("{g}:")))
                })
        })
        .collect();
    ensure!(gw.is_empty(), "gateway flows cached: {gw:?}");
    // The outside host reaches c1's bridge only through NAT (it has no route there).
    let s = lab.ctl_json(&["ct-show"])?;
    ensure!(
        s.as_array().is_some_and(|a| !a.is_empty()),
        "conntrack: {s}"
    );
    Ok(())
}

/// A routed flow is cached; then br1 is masqueraded behind br2. The configuration
/// change must send the flow back to vswitchd at once, which translates it from then
/// on: c2 sees the router's address as the source, and nothing of it is cached again.
fn masquerade_added_takes_over_a_cached_routed_flow() -> Result<()> {
    let lab = two_nets("on", &[])?;
    first_ping(&lab, "c1", "10.1.0.5")?;
    wait_routed(&lab, "v1", "10.1.0.5")?;
    lab.ctl_ok(&["masquerade", "br1", "--out", "br2"])?;
    // c2 answers whoever pings it; capture the source of the echo requests it gets.
    let cap = lab.dir().join("c2.pcap.txt");
    let script = format!(
        "timeout 5 tcpdump -l -n -i eth0 -c 3 'icmp[icmptype] == icmp-echo' > {} 2>/dev/null & sleep 1; echo",
        cap.display()
    );
    lab.sh("c2", &script)?;
    lab.assert_pings("c1", "10.1.0.5", 3)?;
    let ok = wait_until(Duration::from_secs(6), || {
        std::fs::read_to_string(&cap).is_ok_and(|t| t.lines().count() >= 3)
    });
    let seen = std::fs::read_to_string(&cap).unwrap_or_default();
    ensure!(ok, "tcpdump in c2 saw: {seen:?}");
    ensure!(
        seen.lines().all(|l| l.contains("IP 10.1.0.1 > 10.1.0.5")),
        "not masqueraded: {seen}"
    );
    let r = routed(&all_entries(&lab)?);
    ensure!(
        !r.iter().any(|x| x["in_port"] == "v1"),
        "masqueraded flow cached: {r:?}"
    );
    Ok(())
}

fn locked_ports_are_routed_in_userspace() -> Result<()> {
    let mut lab = two_nets("on", &[])?;
    lab.container("sw", "c3", "v3", "10.0.0.6/24", Some("10.0.0.1"))?;
    let mac = lab.mac("c3", "eth0")?;
    lab.ctl_ok(&[
        "add-port",
        "br1",
        "v3",
        "--lock-mac",
        &mac,
        "--lock-ip",
        "10.0.0.6",
    ])?;
    lab.assert_pings("c3", "10.1.0.5", 10)?;
    // Routed frames to the locked port may be cached; routed frames from it never.
    wait_routed(&lab, "v2", "10.0.0.6")?;
    let e = all_entries(&lab)?;
    ensure!(!e.iter().any(|x| x["in_port"] == "v3"), "{e:?}");
    ensure!(n(&stats(&lab, "v3")?, "fastpath_rx_packets") == 0);
    // A spoofed source is still dropped by vswitchd before routing.
    lab.sh("c3", "ip addr add 10.0.0.9/24 dev eth0")?;
    let before = n(&stats(&lab, "v3")?["drops"], "spoofed_ip");
    let _ = lab.sh_out("c3", "ping -c 3 -i 0.2 -W 1 -I 10.0.0.9 10.1.0.5")?;
    let after = n(&stats(&lab, "v3")?["drops"], "spoofed_ip");
    ensure!(after >= before + 3, "spoofed_ip {before} → {after}");
    Ok(())
}

fn routed_fastpath_off_unchanged() -> Result<()> {
    let mut lab = two_nets("off", &[])?;
    lab.assert_pings("c1", "10.1.0.5", 5)?;
    let out = lab.sh("c1", "ping -c 1 -W 1 10.1.0.5")?;
    ensure!(out.contains("ttl=63"), "{out}");
    let o = lab.sh_out("c1", "ping -c 1 -W 2 -t 1 10.1.0.5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(text.contains("Time to live exceeded"), "{text}");
    lab.iperf_server("c2", "10.1.0.5")?;
    ensure!(lab.iperf_bytes("c1", "10.1.0.5")? > 0);
    ensure!(n(&stats(&lab, "v1")?, "fastpath_rx_packets") == 0);
    let fp = lab.ctl_json(&["fastpath-show"])?;
    ensure!(
        fp["mode"] == "off" && fp["entries"] == serde_json::json!([]),
        "{fp}"
    );
    Ok(())
}

/// The NAT entries (`fastpath-show --json`) of protocol `proto` whose translated
/// destination starts with `nat_dst`.
fn nat_entries(lab: &Lab, proto: &str, nat_dst: &str) -> Result<Vec<serde_json::Value>> {
    Ok(all_entries(lab)?
        .into_iter()
        .filter(|e| {
            e["nat"]["proto"] == proto
                && e["nat"]["nat_dst"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(nat_dst))
        })
        .collect())
}

/// A UDP peer on the outside host (198.51.100.1:7): waits for one datagram, answers
/// it `n` times every `gap` seconds, then after `idle` seconds sends "late" to the
/// same address. Started in the background; listening when this returns.
fn udp_talker(lab: &mut Lab, n: u32, gap: f32, idle: u32) -> Result<()> {
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.1',7))\nd,a=s.recvfrom(100)\nfor i in range({n}):\n s.sendto(b'r%d'%i,a)\n time.sleep({gap})\ntime.sleep({idle})\ns.sendto(b'late',a)\n"
    );
    lab.spawn("out", "python3", &["-c", &script], "talker.log")?;
    ensure!(
        lab.wait_listening("out", vswitch_integration::Proto::Udp, 7),
        "UDP talker did not start"
    );
    Ok(())
}

/// c1 sends one datagram from port 5555 to the talker and counts what comes back
/// within `secs` seconds: (answers, whether "late" came).
fn udp_listen(lab: &Lab, secs: u32) -> Result<(u32, bool)> {
    let script = format!(
        "timeout {t} python3 -c \"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.0.0.5',5555))\ns.sendto(b'hi',('198.51.100.1',7))\ns.settimeout(1)\nn=0\nlate=0\nend=time.time()+{secs}\nwhile time.time()<end:\n try:\n  d=s.recv(100)\n except socket.timeout:\n  continue\n if d==b'late':\n  late=1\n else:\n  n+=1\nprint(n,late)\"",
        t = secs + 5
    );
    let out = lab.sh("c1", &script)?;
    let mut w = out.split_whitespace();
    let n = w.next().and_then(|x| x.parse().ok()).context("no count")?;
    let late = w.next() == Some("1");
    Ok((n, late))
}

/// An established UDP connection through masquerade is answered by the outside host
/// through the kernel; then it idles past its conntrack timeout (3 s). The entry is
/// still in the map (the walk is an hour away, nothing bumped the generation), but its
/// deadline (3 s) has passed: the late datagram must go up to vswitchd, whose conntrack
/// has expired the connection, and never reach c1.
fn nat_idle_entry_expiring_stops_its_nat() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with(
        "sw",
        &["--fastpath", "on", "--ct-timeouts", "udp=3,udp_stream=3"],
    )?;
    lab.masquerade_lab("sw")?;
    first_ping(&lab, "c1", "198.51.100.1")?;
    // Five answers in half a second (well inside the timeout: with the walk an hour
    // away nothing refreshes the connection from the kernel's hits), then 6 s idle.
    udp_talker(&mut lab, 5, 0.1, 6)?;
    let (n, late) = udp_listen(&lab, 9)?;
    ensure!(n == 5, "{n} of 5 answers through masquerade");
    let e = nat_entries(&lab, "udp", "10.0.0.5:5555")?;
    ensure!(
        e.iter().any(|x| x["packets"].as_u64().unwrap_or(0) > 0),
        "the answers did not take the kernel's NAT entry: {e:?}\n{}",
        lab.ctl_ok(&["fastpath-show"])?
    );
    ensure!(
        !late,
        "a datagram after the connection expired was translated to c1: {e:?}"
    );
    Ok(())
}

/// A UDP connection through masquerade is translated by the kernel in both directions;
/// `del-masquerade` (a snapshot change: generation bump, conntrack flush) must stop
/// it at once: the same socket's next datagrams get no answer (br1 is no longer
/// translated and the outside host has no route back).
fn nat_del_masquerade_stops_offloaded_traffic_at_once() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    lab.masquerade_lab("sw")?;
    first_ping(&lab, "c1", "198.51.100.1")?;
    // An echo server outside.
    lab.spawn(
        "out",
        "python3",
        &["-c", "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.1',7))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)"],
        "echo.log",
    )?;
    ensure!(lab.wait_listening("out", vswitch_integration::Proto::Udp, 7));
    // Both directions cached while c1 keeps talking from port 5555: send until the
    // kernel answered both ways (bounded), then a fixed number of rounds.
    let rounds = |lab: &Lab, n: u32| -> Result<u32> {
        let script = format!(
            "timeout 20 python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.0.0.5',5555))\ns.settimeout(0.5)\nok=0\nfor i in range({n}):\n s.sendto(b'x',('198.51.100.1',7))\n try:\n  s.recv(100)\n  ok+=1\n except socket.timeout:\n  pass\nprint(ok)\""
        );
        Ok(lab.sh("c1", &script)?.trim().parse()?)
    };
    let both = wait_until(Duration::from_secs(10), || {
        rounds(&lab, 5).is_ok_and(|k| k == 5)
            && nat_entries(&lab, "udp", "10.0.0.5:5555")
                .is_ok_and(|e| e.iter().any(|x| x["packets"].as_u64().unwrap_or(0) > 0))
            && nat_entries(&lab, "udp", "198.51.100.1:7")
                .is_ok_and(|e| e.iter().any(|x| x["packets"].as_u64().unwrap_or(0) > 0))
    });
    ensure!(
        both,
        "not cached both ways: {}",
        lab.ctl_ok(&["fastpath-show"])?
    );
    lab.ctl_ok(&["del-masquerade", "br1"])?;
    let got = rounds(&lab, 5)?;
    ensure!(
        got == 0,
        "{got} of 5 answered after del-masquerade: {}",
        lab.ctl_ok(&["fastpath-show"])?
    );
    Ok(())
}

/// br1 fd00:1::/64 (gateway ::1) with c1 fd00:1::5 on v1, br2 fd00:2::/64 (gateway
/// ::1, `br2_args` added) with c2 fd00:2::5 on v2 (both dual-stack, IPv4 as in
/// [`two_nets`]: 10.0.0.0/24 and 10.1.0.0/24); vswitchd with `--fastpath on`.
fn two_nets6(br2_args: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    // The switch namespace's own kernel stays off the ports (MLD, solicitations).
    lab.sh(
        "sw",
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
    )?;
    for (br, n4, n6, extra) in [("br1", 0, 1, &[][..]), ("br2", 1, 2, br2_args)] {
        let (s4, g4) = (format!("10.{n4}.0.0/24"), format!("10.{n4}.0.1"));
        let (s6, g6) = (format!("fd00:{n6}::/64"), format!("fd00:{n6}::1"));
        let mut a = vec![
            "add-br",
            br,
            "--subnet",
            &s4,
            "--gateway",
            &g4,
            "--subnet",
            &s6,
            "--gateway",
            &g6,
        ];
        a.extend_from_slice(extra);
        lab.ctl_ok(&a)?;
    }
    for (c, port, n4, n6) in [("c1", "v1", 0, 1), ("c2", "v2", 1, 2)] {
        lab.container(
            "sw",
            c,
            port,
            &format!("10.{n4}.0.5/24"),
            Some(&format!("10.{n4}.0.1")),
        )?;
        lab.sh(
            c,
            &format!(
                "sysctl -qw net.ipv6.conf.eth0.accept_ra=0 && ip -6 addr add fd00:{n6}::5/64 dev eth0 nodad && ip -6 route add default via fd00:{n6}::1"
            ),
        )?;
    }
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    Ok(lab)
}

fn routed6_ping_and_tcp_go_through_the_kernel() -> Result<()> {
    let mut lab = two_nets6(&[])?;
    first_ping(&lab, "c1", "fd00:2::5")?;
    let e = wait_routed(&lab, "v1", "fd00:2::5")?;
    wait_routed(&lab, "v2", "fd00:1::5")?;
    let c1_mac = lab.mac("c1", "eth0")?;
    let c2_mac = lab.mac("c2", "eth0")?;
    ensure!(
        e["bridge"] == "br1"
            && e["src"] == c1_mac.as_str()
            && e["out_port"] == "v2"
            && e["route"]["out_bridge"] == "br2"
            && e["route"]["next_hop"] == c2_mac.as_str()
            && e["dst"].as_str().is_some_and(|d| d.starts_with("02:76:")),
        "{e}"
    );
    let before = (stats(&lab, "v1")?, eth0_packets(&lab, "c1")?);
    let v2_before = stats(&lab, "v2")?;
    let c2_before = eth0_packets(&lab, "c2")?;
    lab.assert_pings("c1", "fd00:2::5", 20)?;
    let after = (stats(&lab, "v1")?, eth0_packets(&lab, "c1")?);
    let v2_after = stats(&lab, "v2")?;
    let c2_after = eth0_packets(&lab, "c2")?;
    let fast = n(&after.0, "fastpath_rx_packets") - n(&before.0, "fastpath_rx_packets");
    let total = n(&after.0, "rx_packets") - n(&before.0, "rx_packets");
    let sent = after.1 .0 - before.1 .0;
    // Counted once (by vswitchd or by the program); what v2 sent is what c2 received.
    ensure!(total == sent, "v1 counted {total} frames, c1 sent {sent}");
    ensure!(
        fast >= 20,
        "only {fast} of {sent} frames took the fast path"
    );
    let v2_tx = n(&v2_after, "tx_packets") - n(&v2_before, "tx_packets");
    ensure!(
        v2_tx == c2_after.1 - c2_before.1,
        "v2 sent {v2_tx} frames, c2 received {}",
        c2_after.1 - c2_before.1
    );
    ensure!(
        n(&v2_after, "fastpath_tx_packets") - n(&v2_before, "fastpath_tx_packets") >= 20,
        "{v2_after}"
    );
    // fastpath-show: both directions with their hits.
    let r = routed(&all_entries(&lab)?);
    for (inp, dst) in [("v1", "fd00:2::5"), ("v2", "fd00:1::5")] {
        ensure!(
            r.iter().any(|x| x["in_port"] == inp
                && x["route"]["ip_dst"] == dst
                && x["packets"].as_u64().unwrap_or(0) >= 20),
            "no hits on {inp} → {dst}: {r:?}"
        );
    }
    let text = lab.ctl_ok(&["fastpath-show"])?;
    ensure!(
        text.contains("fd00:2::5") && text.contains("fd00:1::5"),
        "{text}"
    );
    println!("{text}");
    // Hop limit decremented once, by the program: the reply arrives with 64 - 1.
    let out = lab.sh("c1", "ping -6 -c 3 -i 0.2 -W 1 fd00:2::5")?;
    ensure!(out.matches("ttl=63").count() == 3, "{out}");
    // TCP over IPv6: the stream through the kernel.
    let before = stats(&lab, "v1")?;
    lab.iperf_server("c2", "fd00:2::5")?;
    let bytes = lab.iperf_bytes("c1", "fd00:2::5")?;
    ensure!(bytes > 0, "iperf3 -6 moved nothing");
    let after = stats(&lab, "v1")?;
    let fast = n(&after, "fastpath_rx_bytes") - n(&before, "fastpath_rx_bytes");
    let total = n(&after, "rx_bytes") - n(&before, "rx_bytes");
    ensure!(
        fast * 10 >= total * 9,
        "only {fast} of {total} bytes took the fast path"
    );
    ensure!(fast >= bytes, "fast path {fast} bytes < {bytes} delivered");
    println!("iperf3 -6 routed: {bytes} bytes, v1 rx {total} bytes of which fast path {fast}");
    Ok(())
}

fn routed6_hop_limit_1_and_mtu_still_get_icmpv6_from_the_gateway() -> Result<()> {
    let lab = two_nets6(&["--mtu", "1400"])?;
    first_ping(&lab, "c1", "fd00:2::5")?;
    wait_routed(&lab, "v1", "fd00:2::5")?;
    // The flow is cached, yet hop limit 1 reaches the router, which answers.
    let o = lab.sh_out("c1", "ping -6 -c 1 -W 2 -t 1 fd00:2::5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        text.contains("From fd00:1::1") && text.contains("Time exceeded"),
        "{text}"
    );
    // Over br2's MTU: packet too big, from the router.
    let o = lab.sh_out("c1", "ping -6 -c 1 -W 2 -M do -s 1450 fd00:2::5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        text.contains("From fd00:1::1") && text.contains("Packet too big: mtu=1400"),
        "{text}"
    );
    // tracepath -6: the gateway at hop 1, then c2 (hop limit 2 takes the fast path).
    lab.sh("c1", "ip -6 route flush cache")?;
    let tp = lab.sh("c1", "tracepath -6 -n -m 4 fd00:2::5")?;
    ensure!(
        tp.contains(" 1:  fd00:1::1") && tp.contains("reached") && tp.contains("pmtu 1400"),
        "{tp}"
    );
    // The cached flow still works at full size within the MTU.
    lab.assert_pings("c1", "fd00:2::5", 3)?;
    let o = lab.sh_out("c1", "ping -6 -c 3 -i 0.2 -W 1 -M do -s 1352 fd00:2::5")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(s.received == 3, "{text}");
    let e = wait_routed(&lab, "v1", "fd00:2::5")?;
    ensure!(e["packets"].as_u64().unwrap_or(0) >= 3, "{e}");
    Ok(())
}

fn routed6_ndp_mac_change_is_followed() -> Result<()> {
    let lab = two_nets6(&[])?;
    first_ping(&lab, "c1", "fd00:2::5")?;
    wait_routed(&lab, "v1", "fd00:2::5")?;
    // c2 takes another MAC; its next neighbour solicitation tells the router (the
    // routed entry to the old MAC must die then, not at the walk an hour away).
    let new_mac = "02:00:00:00:c2:06";
    lab.sh(
        "c2",
        &format!("ip link set eth0 address {new_mac} && ip -6 neigh flush dev eth0"),
    )?;
    lab.assert_ping("c2", "fd00:2::1")?;
    let out = lab.sh_out("c1", "ping -6 -c 5 -i 0.2 -W 1 fd00:2::5")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = PingSummary::parse(&text).with_context(|| format!("no summary: {text}"))?;
    ensure!(
        s.received == 5 && s.duplicates == 0,
        "after the MAC change: {text}\n{:?}",
        all_entries(&lab)
    );
    let e = wait_routed(&lab, "v1", "fd00:2::5")?;
    ensure!(e["route"]["next_hop"] == new_mac, "{e}");
    Ok(())
}

fn routed6_masquerade6_takes_over_a_cached_flow() -> Result<()> {
    let lab = two_nets6(&[])?;
    first_ping(&lab, "c1", "fd00:2::5")?;
    wait_routed(&lab, "v1", "fd00:2::5")?;
    // From now on c2 must see the router's address as the source: the cached entry
    // (which would deliver c1's own address) is dead once the command returns.
    lab.ctl_ok(&["masquerade6", "br1", "--out", "br2"])?;
    lab.sh("c2", "ip -6 route del default")?;
    lab.assert_pings("c1", "fd00:2::5", 10)?;
    let r: Vec<_> = routed(&all_entries(&lab)?)
        .into_iter()
        .filter(|e| {
            e["route"]["ip_dst"]
                .as_str()
                .is_some_and(|d| d.contains(':'))
        })
        .collect();
    ensure!(r.is_empty(), "NAT66 flows cached as routed: {r:?}");
    Ok(())
}

/// [`frames_counted_once_while_the_cache_churns`] for routed IPv6: a ping -6 flood from
/// c1 to c2 while `fdb-flush br1` invalidates the routed entries every 20 ms.
fn routed6_frames_counted_once_while_the_cache_churns() -> Result<()> {
    let lab = two_nets6(&[])?;
    first_ping(&lab, "c1", "fd00:2::5")?;
    wait_routed(&lab, "v1", "fd00:2::5")?;
    churned_counts_agree(&lab, "br1", "c1", "-6 fd00:2::5")
}

/// The switch namespace's host on br0 through the internal port vsint0 at 10.0.0.254,
/// with container c1 (10.0.0.1) on v1; vswitchd with `--fastpath MODE`. The host's
/// IPv6 is off, so it sends only what a test makes it send.
fn internal_lab(mode: &str) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", mode])?;
    no_ipv6(&lab, "sw")?;
    lab.ctl_ok(&["add-br", "br0"])?;
    add(&mut lab, 1, &[])?;
    internal_port(&lab)?;
    Ok(lab)
}

/// Add (or, after a restart, find again) the internal port vsint0 and give the host
/// 10.0.0.254 on it.
fn internal_port(lab: &Lab) -> Result<()> {
    lab.ctl_ok(&[
        "add-port",
        "br0",
        "vsint0",
        "--type",
        "internal",
        "--may-exist",
    ])?;
    lab.sh(
        "sw",
        "ip addr replace 10.0.0.254/24 dev vsint0 && ip link set vsint0 up",
    )?;
    // A TAP made anew has a new MAC: c1 forgets the old one.
    lab.sh("c1", "ip neigh flush all")?;
    Ok(())
}

/// c1 pings the host (ARP, learning), and both of their flows get cached.
fn host_flows_cached(lab: &Lab) -> Result<()> {
    first_ping(lab, "c1", "10.0.0.254")?;
    wait_entry(lab, "v1", "vsint0")?;
    wait_entry(lab, "vsint0", "v1")
}

/// The tcx attach direction ("ingress"/"egress") of each device vswitchd holds a link
/// on (`attach_type` in the link's fdinfo), sorted by device.
fn tcx_directions(lab: &Lab) -> Result<Vec<(String, String)>> {
    let pid = lab.switch_pid().context("vswitchd not running")?;
    let links = tcx_links(lab)?;
    let mut out = Vec::new();
    for f in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(f?.path()) else {
            continue;
        };
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        if field("link_type:") != Some("tcx") {
            continue;
        }
        let (Some(id), Some(at)) = (field("link_id:"), field("attach_type:")) else {
            continue;
        };
        let Some(dev) = links
            .iter()
            .find(|l| id.parse::<u64>().ok() == Some(l.0))
            .map(|l| l.2.clone())
        else {
            continue;
        };
        // "46"/"47", or with the name in brackets on newer kernels.
        let dir = if at.contains("egress") || at.starts_with("47") {
            "egress"
        } else {
            "ingress"
        };
        out.push((dev, dir.to_string()));
    }
    out.sort();
    Ok(out)
}

/// The entries of br0 naming port `port` (either way).
fn entries_naming(lab: &Lab, port: &str) -> Result<Vec<serde_json::Value>> {
    Ok(entries(lab)?
        .into_iter()
        .filter(|x| x["in_port"] == port || x["out_port"] == port)
        .collect())
}

/// The host (an internal port) and a container ping each other and run TCP both ways
/// through the kernel: the host's frames leave its TAP through `fp_tap_out` at tcx
/// egress and never reach vswitchd, frames for the host are redirected into the TAP's
/// ingress (`F_INGRESS`). Every ping answered once; the switch's counters equal what
/// the container's kernel counted and agree across the two ports.
fn internal_port_ping_and_tcp_go_through_the_kernel() -> Result<()> {
    let mut lab = internal_lab("on")?;
    host_flows_cached(&lab)?;
    let dirs = tcx_directions(&lab)?;
    ensure!(
        dirs == [
            ("v1".to_string(), "ingress".to_string()),
            ("vsint0".to_string(), "egress".to_string())
        ],
        "want fp_tc at v1's ingress and fp_tap_out at vsint0's egress: {dirs:?} {:?}",
        tcx_links(&lab)?
    );
    let (p1_0, int_0) = (counts(&lab, "v1", "c1")?, stats(&lab, "vsint0")?);
    lab.assert_pings("c1", "10.0.0.254", 20)?;
    lab.assert_pings("sw", "10.0.0.1", 20)?;
    let (p1, int) = (counts(&lab, "v1", "c1")?, stats(&lab, "vsint0")?);
    // Counted once, by vswitchd or by a program: v1 against c1's kernel, and the host
    // is the only other port, so what one port received the other sent.
    ensure_counted_once(&p1_0, &p1, &["rx", "tx"])?;
    let (v1, v1_0) = (&p1.stats, &p1_0.stats);
    ensure!(
        delta(&int, &int_0, "rx_packets") == delta(v1, v1_0, "tx_packets")
            && delta(&int, &int_0, "tx_packets") == delta(v1, v1_0, "rx_packets"),
        "vsint0 {int} vs v1 {v1}"
    );
    // 40 echo requests and 40 replies each way, through the kernel.
    for (port, s, s0) in [("v1", v1, v1_0), ("vsint0", &int, &int_0)] {
        for f in ["fastpath_rx_packets", "fastpath_tx_packets"] {
            ensure!(delta(s, s0, f) >= 40, "{port} {f}: {}", delta(s, s0, f));
        }
    }
    let e = entries_naming(&lab, "vsint0")?;
    ensure!(
        e.len() == 2 && e.iter().all(|x| n(x, "packets") >= 40),
        "{e:?}"
    );
    // TCP, container to host and host to container.
    for (server_ns, server_ip, client, port) in [
        ("sw", "10.0.0.254", "c1", "v1"),
        ("c1", "10.0.0.1", "sw", "vsint0"),
    ] {
        let before = stats(&lab, port)?;
        lab.iperf_server(server_ns, server_ip)?;
        let bytes = lab.iperf_bytes(client, server_ip)?;
        ensure!(bytes > 0, "iperf3 {client} → {server_ip} moved nothing");
        let after = stats(&lab, port)?;
        let fast = delta(&after, &before, "fastpath_rx_bytes");
        let total = delta(&after, &before, "rx_bytes");
        ensure!(
            fast * 10 >= total * 9,
            "{client} → {server_ip}: only {fast} of {total} bytes took the fast path"
        );
        ensure!(fast >= bytes, "fast path {fast} bytes < {bytes} delivered");
        println!("iperf3 {client} → {server_ip}: {bytes} bytes, {port} rx {total} bytes of which fast path {fast}");
    }
    let text = lab.ctl_ok(&["fastpath-show"])?;
    ensure!(text.contains("vsint0"), "{text}");
    println!("{text}");
    Ok(())
}

/// The host on br1 (internal port vsint0, 10.0.0.5) reaches c2 on br2 (10.1.0.5)
/// through the router in the kernel both ways: MACs rewritten, TTL decremented once.
fn internal_port_routed_to_another_bridge() -> Result<()> {
    let mut lab = routers("on", &[])?;
    lab.ctl_ok(&["add-port", "br1", "vsint0", "--type", "internal"])?;
    lab.sh(
        "sw",
        "ip addr add 10.0.0.5/24 dev vsint0 && ip link set vsint0 up && ip route add 10.1.0.0/24 via 10.0.0.1 dev vsint0",
    )?;
    lab.container("sw", "c2", "v2", "10.1.0.5/24", Some("10.1.0.1"))?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    first_ping(&lab, "sw", "10.1.0.5")?;
    let e = wait_routed(&lab, "vsint0", "10.1.0.5")?;
    wait_routed(&lab, "v2", "10.0.0.5")?;
    ensure!(
        e["out_port"] == "v2" && e["route"]["out_bridge"] == "br2",
        "{e}"
    );
    let (int_0, p2_0) = (stats(&lab, "vsint0")?, counts(&lab, "v2", "c2")?);
    lab.assert_pings("sw", "10.1.0.5", 20)?;
    let (int, p2) = (stats(&lab, "vsint0")?, counts(&lab, "v2", "c2")?);
    ensure_counted_once(&p2_0, &p2, &["tx", "rx"])?;
    ensure!(
        delta(&int, &int_0, "fastpath_rx_packets") >= 20
            && delta(&int, &int_0, "fastpath_tx_packets") >= 20,
        "{int}"
    );
    // The TTL is decremented once, by a program, both ways.
    let out = lab.sh("sw", "ping -c 3 -i 0.2 -W 1 10.1.0.5")?;
    ensure!(out.matches("ttl=63").count() == 3, "{out}");
    let out = lab.sh("c2", "ping -c 3 -i 0.2 -W 1 10.0.0.5")?;
    ensure!(out.matches("ttl=63").count() == 3, "{out}");
    Ok(())
}

/// `del-port` of the internal port: its program detached, every entry naming it gone
/// and no frame forwarded to it once the command returned.
fn internal_port_del_port_stops_traffic_at_once() -> Result<()> {
    let lab = internal_lab("on")?;
    host_flows_cached(&lab)?;
    let links = tcx_links(&lab)?;
    ensure_attached(
        &lab,
        &["v1", "vsint0"],
        "want the programs on v1 and vsint0",
    )?;
    del_port_stops_traffic(&lab, "vsint0", links, ("c1", "10.0.0.254"), &["v1"])?;
    // Added again: offloaded again.
    internal_port(&lab)?;
    first_ping(&lab, "c1", "10.0.0.254")?;
    wait_entry(&lab, "vsint0", "v1")?;
    Ok(())
}

/// The user moves the internal port's TAP into another namespace: within about two
/// seconds its program is detached and no entry names it any more (a redirect could
/// not reach it there); traffic between the namespace and c1 keeps working through
/// vswitchd's TAP fd and is never cached again.
fn internal_port_moved_to_another_netns_goes_back_to_userspace() -> Result<()> {
    let mut lab = internal_lab("on")?;
    host_flows_cached(&lab)?;
    let h = lab.add_ns("h")?;
    let moved = std::time::Instant::now();
    lab.sh("sw", &format!("ip link set vsint0 netns {h}"))?;
    let gone = wait_until(Duration::from_secs(3), || {
        entries_naming(&lab, "vsint0").is_ok_and(|e| e.is_empty())
            && attached_devices(&lab).is_ok_and(|d| d == ["v1"])
    });
    let took = moved.elapsed();
    ensure!(
        gone,
        "after the move: entries {:?}, links {:?}",
        entries_naming(&lab, "vsint0"),
        tcx_links(&lab)
    );
    ensure!(took <= Duration::from_millis(2500), "took {took:?}");
    println!("unmarked {took:?} after the move");
    ensure!(
        lab.log_tail(50).contains("left vswitchd's namespace"),
        "{}",
        lab.log_tail(20)
    );
    lab.sh(
        "h",
        "ip addr add 10.0.0.254/24 dev vsint0 && ip link set vsint0 up",
    )?;
    let before = stats(&lab, "vsint0")?;
    first_ping(&lab, "h", "10.0.0.1")?;
    lab.assert_pings("h", "10.0.0.1", 10)?;
    lab.assert_pings("c1", "10.0.0.254", 10)?;
    let after = stats(&lab, "vsint0")?;
    ensure!(
        n(&after, "rx_packets") >= n(&before, "rx_packets") + 20
            && n(&after, "fastpath_rx_packets") == n(&before, "fastpath_rx_packets")
            && n(&after, "fastpath_tx_packets") == n(&before, "fastpath_tx_packets"),
        "before {before}, after {after}"
    );
    let e = entries_naming(&lab, "vsint0")?;
    ensure!(e.is_empty(), "cached again: {e:?}");
    // The rest of the switch is still offloaded.
    add(&mut lab, 2, &[])?;
    first_ping(&lab, "c1", "10.0.0.2")?;
    wait_entry(&lab, "v1", "v2")?;
    Ok(())
}

/// [`nothing_left_attached_after_exit_or_kill`] with an internal port: its egress link
/// goes with vswitchd (SIGTERM and SIGKILL), and after a restart (the port recreated
/// from the database) there is one program per port again.
fn internal_port_nothing_left_after_exit_or_kill() -> Result<()> {
    let mut lab = internal_lab("on")?;
    nothing_left_after_exit_or_kill(
        &mut lab,
        ("c1", "10.0.0.254"),
        &["v1", "vsint0"],
        internal_port,
    )?;
    wait_entry(&lab, "vsint0", "v1")?;
    lab.assert_pings("sw", "10.0.0.1", 5)?;
    Ok(())
}

/// `--fastpath off` with an internal port: pure userspace, as before.
fn internal_port_fastpath_off_unchanged() -> Result<()> {
    let mut lab = internal_lab("off")?;
    lab.assert_pings("c1", "10.0.0.254", 10)?;
    lab.assert_pings("sw", "10.0.0.1", 10)?;
    ensure!(tcx_links(&lab)?.is_empty(), "{:?}", tcx_links(&lab)?);
    let s = stats(&lab, "vsint0")?;
    ensure!(
        n(&s, "fastpath_rx_packets") == 0 && n(&s, "rx_packets") >= 10,
        "{s}"
    );
    lab.iperf_server("c1", "10.0.0.1")?;
    ensure!(lab.iperf_bytes("sw", "10.0.0.1")? > 0);
    Ok(())
}

/// A `tap` port (its netdev handed to a guest, here moved into a namespace) stays in
/// userspace: no program on it, no entry naming it, while the rest is offloaded.
fn tap_ports_stay_in_userspace() -> Result<()> {
    let mut lab = switch(&[])?;
    add(&mut lab, 1, &[])?;
    lab.ctl_ok(&["add-port", "br0", "tap0", "--type", "tap"])?;
    let g = lab.add_ns("g")?;
    lab.sh("sw", &format!("ip link set tap0 netns {g}"))?;
    lab.sh(
        "g",
        "ip link set tap0 name eth0 && ip addr add 10.0.0.7/24 dev eth0 && ip link set eth0 up",
    )?;
    first_ping(&lab, "g", "10.0.0.1")?;
    lab.assert_pings("c1", "10.0.0.7", 10)?;
    ensure_attached(&lab, &["v1"], "a tap port")?;
    let e = entries_naming(&lab, "tap0")?;
    ensure!(e.is_empty(), "{e:?}");
    let s = stats(&lab, "tap0")?;
    ensure!(
        n(&s, "fastpath_rx_packets") == 0 && n(&s, "rx_packets") >= 10,
        "{s}"
    );
    Ok(())
}

/// [`frames_counted_once_while_the_cache_churns`] from the host through its internal
/// port: a ping flood from the host to c1 while `fdb-flush` invalidates the cache every
/// 20 ms. `fp_tap_out` decides alone at the TAP's egress (a hit never reaches the TAP
/// fd, a miss only there), so not one echo is lost or duplicated, and the switch's
/// counters agree with c1's kernel and across the two ports.
fn internal_port_frames_counted_once_while_the_cache_churns() -> Result<()> {
    let lab = internal_lab("on")?;
    first_ping(&lab, "sw", "10.0.0.1")?;
    wait_entry(&lab, "vsint0", "v1")?;
    let (p1_0, int_0) = (counts(&lab, "v1", "c1")?, stats(&lab, "vsint0")?);
    let flushes = flood_while_flushing(&lab, "br0", "sw", "10.0.0.1")?;
    let (p1, int) = (counts(&lab, "v1", "c1")?, stats(&lab, "vsint0")?);
    ensure_counted_once(&p1_0, &p1, &["tx", "rx"])?;
    ensure!(
        delta(&int, &int_0, "rx_packets") == delta(&p1.stats, &p1_0.stats, "tx_packets"),
        "vsint0 rx {} vs v1 tx {}",
        delta(&int, &int_0, "rx_packets"),
        delta(&p1.stats, &p1_0.stats, "tx_packets")
    );
    let (rx, fast) = ensure_mixed("vsint0", &int_0, &int)?;
    println!("{flushes} flushes; vsint0 rx {rx} of which fast path {fast}");
    Ok(())
}

/// The race of a move: the TAP's program stays attached in the new namespace, where
/// `bpf_redirect` resolves ifindexes as *that* namespace numbers them. Namespace x gets
/// a device d0 with v1's ifindex (and none with the TAP's, so the TAP keeps its number
/// and the cached vsint0 → v1 entry still matches there); the host in x brings the
/// moved TAP up and, in the same shell (about 15 ms; a permanent neighbour entry for
/// c1: no ARP first), sends c1 five UDP datagrams, then pings it. Nothing may be
/// redirected into d0: the datagrams' socket is of another namespace (fp_tap_out's
/// check) or the link watcher has already made every entry miss. The datagrams reach
/// c1 through vswitchd; the ping is answered (its first echo may race the watcher on a
/// loaded machine: c1's reply then hits the v1 → vsint0 entry, whose ifindex names
/// nothing here, and is lost — so 2 of 3).
fn internal_port_moved_and_used_at_once() -> Result<()> {
    let mut lab = internal_lab("on")?;
    first_ping(&lab, "sw", "10.0.0.1")?;
    wait_entry(&lab, "vsint0", "v1")?;
    wait_entry(&lab, "v1", "vsint0")?;
    let c1_mac = lab.mac("c1", "eth0")?;
    fn ifindex(lab: &Lab, ns: &str, dev: &str) -> Result<u64> {
        let v: serde_json::Value =
            serde_json::from_str(&lab.sh(ns, &format!("ip -j link show {dev}"))?)?;
        v[0]["ifindex"].as_u64().context("ifindex")
    }
    let (v1_if, tap_if) = (ifindex(&lab, "sw", "v1")?, ifindex(&lab, "sw", "vsint0")?);
    let x = lab.add_ns("x")?;
    let y = lab.add_ns("y")?;
    // x's own IPv6 housekeeping (DAD, MLD) would count as its devices' tx.
    for ns in ["x", "y"] {
        no_ipv6(&lab, ns)?;
    }
    // One device in x per veth pair (the peer in y), until one has v1's number.
    let mut d0 = None;
    for i in 0..4 {
        let d = format!("d{i}");
        lab.sh(
            "x",
            &format!("ip link add {d} type veth peer name {d}p netns {y} && ip link set {d} up"),
        )?;
        lab.sh("y", &format!("ip link set {d}p up"))?;
        if ifindex(&lab, "x", &d)? == v1_if {
            d0 = Some(d);
            break;
        }
    }
    let d0 = d0.with_context(|| format!("no device in x got ifindex {v1_if}"))?;
    let taken: serde_json::Value = serde_json::from_str(&lab.sh("x", "ip -j link show")?)?;
    ensure!(
        !taken
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["ifindex"].as_u64() == Some(tap_if)),
        "x already has ifindex {tap_if}: {taken}"
    );
    let into_d0 = |lab: &Lab| -> Result<u64> {
        let v: serde_json::Value =
            serde_json::from_str(&lab.sh("y", &format!("ip -j -s link show {d0}p"))?)?;
        v[0]["stats64"]["rx"]["packets"].as_u64().context("rx")
    };
    let (d0_before, c1_before) = (into_d0(&lab)?, eth0_packets(&lab, "c1")?);
    let out = lab.sh_out(
        "sw",
        &format!(
            "ip link set vsint0 netns {x} && ip netns exec {x} sh -c 'ip link set vsint0 up && ip addr add 10.0.0.254/24 dev vsint0 && ip neigh replace 10.0.0.1 lladdr {c1_mac} dev vsint0 nud permanent && python3 -c \"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(5):\n s.sendto(b\\\"x\\\",(\\\"10.0.0.1\\\",9))\n time.sleep(0.01)\" && ping -c 3 -i 0.2 -W 1 10.0.0.1'"
        ),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let misforwarded = into_d0(&lab)? - d0_before;
    let c1_rx = eth0_packets(&lab, "c1")?.1 - c1_before.1;
    ensure!(
        misforwarded == 0,
        "{misforwarded} frames redirected into x's {d0} (ifindex {v1_if}); c1 received {c1_rx}: {text}"
    );
    ensure!(c1_rx >= 5 + 3, "c1 received {c1_rx} frames: {text}");
    let s = summary(&text)?;
    ensure!(s.received >= 2 && s.duplicates == 0, "{text}");
    ensure!(entries_naming(&lab, "vsint0")?.is_empty());
    Ok(())
}

/// Entries out of a veth whose peer is in another namespace deliver with
/// `bpf_redirect_peer` (fastpath-show says `peer`), every frame once; when that peer
/// is moved into vswitchd's own namespace (where `bpf_redirect_peer` would drop), the
/// fast path notices within a second, the entries go and come back as plain
/// redirects, and the traffic keeps flowing.
fn veth_peers_take_frames_directly_until_one_moves_home() -> Result<()> {
    let lab = quiet_pair()?;
    wait_entry(&lab, "v1", "v2")?;
    wait_entry(&lab, "v2", "v1")?;
    let e = entries(&lab)?;
    ensure!(
        !e.is_empty() && e.iter().all(|x| x["peer"] == true),
        "entries between two containers' veths should use redirect_peer: {e:?}"
    );
    let p2_0 = counts(&lab, "v2", "c2")?;
    pings_all_answered(&lab, "c1", "10.0.0.2", 50)?;
    let p2 = counts(&lab, "v2", "c2")?;
    ensure_counted_once(&p2_0, &p2, &["tx"])?;
    let fast = delta(&p2.stats, &p2_0.stats, "fastpath_tx_packets");
    ensure!(fast >= 50, "v2 tx through the kernel: {fast} of 50 echoes");
    // c2's end of the veth comes home: into the switch's namespace, same MAC, same
    // address (the switch namespace's kernel answers the pings now).
    let sw = lab.ns("sw");
    lab.sh("c2", &format!("ip link set eth0 netns {sw}"))?;
    lab.sh(
        "sw",
        "ip link set eth0 name c2home && ip addr add 10.0.0.2/24 dev c2home && ip link set c2home up",
    )?;
    let gone = wait_until(Duration::from_secs(5), || {
        entries(&lab).is_ok_and(|e| !e.iter().any(|x| x["out_port"] == "v2" && x["peer"] == true))
    });
    ensure!(
        gone,
        "entries into v2 still use redirect_peer after its peer moved into vswitchd's namespace: {:?}",
        entries(&lab)
    );
    // The first pings after the move may find the peer not up yet: wait for one.
    ensure!(
        wait_until(Duration::from_secs(5), || lab.ping_once("c1", "10.0.0.2")),
        "c1 cannot ping 10.0.0.2 once c2's veth end is in the switch's namespace"
    );
    pings_all_answered(&lab, "c1", "10.0.0.2", 20)?;
    wait_entry(&lab, "v1", "v2")?;
    let e = entries(&lab)?;
    ensure!(
        e.iter()
            .any(|x| x["in_port"] == "v1" && x["out_port"] == "v2" && x["peer"].is_null()),
        "v1 → v2 should be cached again as a plain redirect: {e:?}"
    );
    Ok(())
}

/// `scripts/vlan_ping.py` in c1: `count` echo requests tagged `vid` from 10.0.0.9 (a
/// VLAN-aware host on the trunk; the kernel here has no 8021q module) to `dst` at
/// `dst_mac`. Ok(summary) when every one was answered once, tagged `vid`.
fn vlan_ping(lab: &Lab, vid: u16, dst: &str, dst_mac: &str, count: u32) -> Result<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vlan_ping.py");
    let out = lab.sh_out(
        "c1",
        &format!("python3 {script} eth0 {vid} 10.0.0.9 {dst} {dst_mac} {count} 0.01"),
    )?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        out.status.success(),
        "VLAN {vid} pings to {dst}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// A trunk port (VLANs 10, 20) and access ports in VLAN 10 and 20: tagged frames from
/// the trunk to the access port leave untagged, the answers get the tag pushed, both
/// through the kernel (entries with their VLAN and tag, fast-path counters, every
/// frame once at the access host); a VLAN the trunk does not carry, or one other than
/// the access port's, never reaches it, cached or not.
fn trunk_to_access_flows_are_cached_with_their_tags() -> Result<()> {
    let mut lab = switch(&[])?;
    no_ipv6(&lab, "sw")?;
    add(&mut lab, 1, &["--trunks", "10,20"])?;
    add(&mut lab, 2, &["--tag", "10"])?;
    add(&mut lab, 3, &["--tag", "20"])?;
    let mac2 = lab.mac("c2", "eth0")?;
    let mac3 = lab.mac("c3", "eth0")?;
    // First exchange: learning (both ends), ARP, the offers.
    vlan_ping(&lab, 10, "10.0.0.2", &mac2, 20)?;
    wait_entry(&lab, "v1", "v2")?;
    wait_entry(&lab, "v2", "v1")?;
    let e = entries(&lab)?;
    let find = |i: &str, o: &str| {
        e.iter()
            .find(|x| x["in_port"] == i && x["out_port"] == o)
            .cloned()
            .unwrap_or_default()
    };
    let (pop, push) = (find("v1", "v2"), find("v2", "v1"));
    ensure!(
        pop["vlan"] == 10 && pop["tag"].is_null() && push["vlan"] == 10 && push["tag"] == 10,
        "trunk → access should pop (no tag), access → trunk push 10: {e:?}"
    );
    let (v1_before, p2_0) = (stats(&lab, "v1")?, counts(&lab, "v2", "c2")?);
    let text = vlan_ping(&lab, 10, "10.0.0.2", &mac2, 200)?;
    let (v1, p2) = (stats(&lab, "v1")?, counts(&lab, "v2", "c2")?);
    let (pop_fast, push_fast) = (
        delta(&v1, &v1_before, "fastpath_rx_packets"),
        delta(&p2.stats, &p2_0.stats, "fastpath_rx_packets"),
    );
    ensure!(
        pop_fast >= 150 && push_fast >= 150,
        "{text}: trunk → access {pop_fast} and access → trunk {push_fast} frames through the kernel (want >= 150 of 200)"
    );
    ensure_counted_once(&p2_0, &p2, &["tx"])?;
    // VLAN 20 reaches c3 (access 20), never c2; VLAN 30 is not on the trunk.
    vlan_ping(&lab, 20, "10.0.0.3", &mac3, 20)?;
    let c2_before = eth0_packets(&lab, "c2")?;
    ensure!(
        vlan_ping(&lab, 20, "10.0.0.2", &mac2, 5).is_err(),
        "a frame tagged 20 reached c2 in VLAN 10"
    );
    ensure!(
        vlan_ping(&lab, 30, "10.0.0.2", &mac2, 5).is_err(),
        "a frame tagged 30 crossed a trunk of 10,20"
    );
    let c2 = eth0_packets(&lab, "c2")?;
    ensure!(
        c2.1 == c2_before.1,
        "c2 received {} frames of other VLANs",
        c2.1 - c2_before.1
    );
    println!("{text}");
    Ok(())
}
