//! The event stream (`vswitchctl monitor`) and the cluster: vswitch-agent beside each
//! host's vswitchd, a real etcd (members in namespaces of their own), overlay
//! networks across hosts (docs/cluster.md).

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
#[allow(unused_imports)]
use vswitch_integration::cluster as _cluster;
use vswitch_integration::cluster::{node_state, Cluster};
use vswitch_integration::{bin, run, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "monitor_streams_every_kind_in_order",
            monitor_streams_every_kind_in_order,
        ),
        ("overlay_network_across_hosts", overlay_network_across_hosts),
        (
            "dual_stack_overlay_across_hosts",
            dual_stack_overlay_across_hosts,
        ),
        (
            "membership_duplicate_names_and_sigterm",
            membership_duplicate_names_and_sigterm,
        ),
        (
            "dhcp_on_two_hosts_never_gives_one_address_twice",
            dhcp_on_two_hosts_never_gives_one_address_twice,
        ),
        (
            "a_dead_node_leaves_and_comes_back",
            a_dead_node_leaves_and_comes_back,
        ),
        (
            "etcd_member_loss_outage_and_agent_restart",
            etcd_member_loss_outage_and_agent_restart,
        ),
        (
            "etcd_over_tls_with_client_certificates",
            etcd_over_tls_with_client_certificates,
        ),
        ("cluster_lab_file", cluster_lab_file),
        (
            "dhcpv6_on_an_overlay_network_from_per_host_blocks",
            dhcpv6_on_an_overlay_network_from_per_host_blocks,
        ),
    ])
}

/// The overlay network `ov` (10.1.0.0/24, gateway 10.1.0.1), declared on `host`.
fn add_overlay(cl: &Cluster, host: &str, extra: &[&str]) -> Result<()> {
    let mut a = vec![
        "add-br",
        "ov",
        "--overlay",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ];
    a.extend_from_slice(extra);
    cl.ctl_ok(host, &a)?;
    Ok(())
}

/// Whether `host` has bridge `br`.
fn has_bridge(cl: &Cluster, host: &str, br: &str) -> bool {
    cl.ctl_json(host, &["list-br"])
        .ok()
        .and_then(|v| v.as_array().map(|a| a.iter().any(|b| b["name"] == br)))
        .unwrap_or(false)
}

/// Wait until `f` holds, or fail naming `what`.
fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) -> Result<()> {
    ensure!(
        wait_until(Duration::from_secs(secs), f),
        "{what}: not within {secs} s"
    );
    Ok(())
}

/// One ping from container `from` to `dst` (a name or an address).
fn ping(lab: &Lab, from: &str, dst: &str) -> bool {
    lab.ping_once(from, dst)
}

fn overlay_network_across_hosts() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 1)?;
    for n in 1..=3 {
        cl.add_host(&mut lab, n)?;
    }
    // Declared once on h1: it exists on every host.
    add_overlay(&cl, "h1", &[])?;
    for h in ["h1", "h2", "h3"] {
        wait_for(&format!("ov on {h}"), 10, || has_bridge(&cl, h, "ov"))?;
    }
    // One container per host, static addresses; names resolve at every gateway.
    for (h, c, ip) in [
        ("h1", "c1", "10.1.0.11"),
        ("h2", "c2", "10.1.0.12"),
        ("h3", "c3", "10.1.0.13"),
    ] {
        cl.pipework_ok(&mut lab, h, "ov", c, &format!("{ip}/24@10.1.0.1"))?;
        std::fs::write(
            format!("/etc/netns/{}/resolv.conf", lab.ns(c)),
            "nameserver 10.1.0.1\n",
        )?;
    }
    // Every host knows the other hosts' endpoints and has a tunnel to each.
    cl.wait_show("h1", "3 endpoints", Duration::from_secs(15), |v| {
        v["networks"][0]["endpoints"] == 3
    })?;
    for h in ["h1", "h2", "h3"] {
        wait_for(&format!("{h}: tunnels to the two others"), 15, || {
            cl.ctl_json(h, &["list-ports", "ov"])
                .ok()
                .and_then(|v| {
                    let a = v.as_array()?.clone();
                    let p = a.iter().find(|p| p["type"] == "vxlan")?;
                    Some(p["vxlan"]["remote_ip"].as_array()?.len() == 2)
                })
                .unwrap_or(false)
        })?;
    }
    // A first ping from c1 (h1) to c2 (h2) sends nothing to h3's VTEP: ARP is answered
    // on h1, the echo goes through the one tunnel to h2.
    let cap = lab.dir().join("h3-underlay.pcap");
    lab.spawn(
        "h3",
        "tcpdump",
        &[
            "-i",
            "ul0",
            "-n",
            "-U",
            "--immediate-mode",
            "-w",
            cap.to_str().unwrap_or("x"),
            "udp or icmp",
        ],
        "tcpdump.log",
    )?;
    wait_for("tcpdump on h3", 5, || {
        lab.read_log("tcpdump.log").contains("listening")
    })?;
    for c in ["c1", "c2"] {
        lab.sh(c, "ip neigh flush all")?;
    }
    ensure!(
        ping(&lab, "c1", "10.1.0.12"),
        "c1 cannot ping c2 across hosts"
    );
    lab.assert_ping("c1", "10.1.0.12")?;
    // Then a marker (an underlay ping from h1 to h3): everything before it in the
    // capture happened during the c1 -> c2 pings. No VXLAN datagram to h3 among them.
    lab.sh("h1", "ping -c 1 -W 1 192.0.2.3 >/dev/null")?;
    let capture = || -> Vec<String> {
        run(std::process::Command::new("tcpdump").args(["-n", "-r", cap.to_str().unwrap_or("x")]))
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let marker = |l: &String| l.contains("192.0.2.1 > 192.0.2.3: ICMP echo request");
    wait_for("the marker in h3's capture", 5, || {
        capture().iter().any(marker)
    })?;
    let lines = capture();
    let before: Vec<&String> = lines.iter().take_while(|l| !marker(l)).collect();
    ensure!(
        !before.iter().any(|l| l.contains("> 192.0.2.3.4789")),
        "frames reached h3's VTEP during c1 -> c2 pings: {before:?}"
    );
    // The capture does see what goes to h3.
    lab.assert_ping("c1", "10.1.0.13")?;
    wait_for("the capture to see c1 -> c3", 5, || {
        capture().iter().any(|l| l.contains("> 192.0.2.3.4789"))
    })?;
    // Names of other hosts' containers resolve at the local gateway.
    lab.assert_ping("c1", "c3")?;
    lab.assert_ping("c3", "c2")?;
    // A static address in use on another host is refused.
    let o = cl.pipework(&mut lab, "h3", "ov", "dup", "10.1.0.11/24")?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(
        !o.status.success() && err.contains("10.1.0.11") && err.contains("h1"),
        "a second 10.1.0.11 on h3: {err}"
    );
    // Conflicting networks are refused, naming what clashes.
    let o = cl.ctl(
        "h2",
        &["add-br", "ov2", "--overlay", "--subnet", "10.1.0.128/25"],
    )?;
    ensure!(o.code != 0 && o.stderr.contains("overlaps"), "{}", o.stderr);
    let vni = cl
        .show("h2")
        .and_then(|v| v["networks"][0]["vni"].as_u64())
        .context("vni")?;
    let o = cl.ctl(
        "h2",
        &["add-br", "ov2", "--overlay", "--vni", &vni.to_string()],
    )?;
    ensure!(
        o.code != 0 && o.stderr.contains("already used"),
        "{}",
        o.stderr
    );
    // A host that joins later gets the network and reaches the others.
    cl.add_host(&mut lab, 4)?;
    wait_for("ov on h4", 15, || has_bridge(&cl, "h4", "ov"))?;
    cl.pipework_ok(&mut lab, "h4", "ov", "c4", "10.1.0.14/24@10.1.0.1")?;
    lab.assert_ping("c4", "10.1.0.11")?;
    // del-br anywhere removes it everywhere.
    cl.ctl_ok("h2", &["del-br", "ov"])?;
    for h in ["h1", "h2", "h3", "h4"] {
        wait_for(&format!("ov gone from {h}"), 10, || {
            !has_bridge(&cl, h, "ov")
        })?;
    }
    Ok(())
}

/// Container `c` with IPv6 on (the cluster helper turns it off), Router Advertisements
/// ignored (static addresses only, so what the test sees is what the cluster did).
fn v6_container(lab: &mut Lab, c: &str) -> Result<()> {
    lab.add_ns(c)?;
    lab.sh(
        c,
        "sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0",
    )?;
    Ok(())
}

/// pipework of an IPv6 address (`ADDR/N[@GW]`) on `eth1` of container `c` on `host`.
fn pipework6(
    cl: &Cluster,
    lab: &Lab,
    host: &str,
    c: &str,
    addr: &str,
) -> Result<std::process::Output> {
    run(
        std::process::Command::new(vswitch_integration::bin("pipework")?)
            .arg("--socket")
            .arg(cl.socket(host))
            .args(["ov", "-i", "eth1", "-a", "inet6", &lab.ns(c), addr]),
    )
}

/// No address of container `c` is still tentative (duplicate address detection done).
fn dad_done(lab: &Lab, c: &str) -> bool {
    lab.sh(c, "ip -6 addr show tentative")
        .is_ok_and(|o| o.trim().is_empty())
}

/// Bridge `ov` as `list-br` on `host` shows it.
fn ov_bridge(cl: &Cluster, host: &str) -> Option<serde_json::Value> {
    let v = cl.ctl_json(host, &["list-br"]).ok()?;
    v.as_array()?.iter().find(|b| b["name"] == "ov").cloned()
}

/// pipework of the static IPv6 address `addr` on container `c` on `host` must fail
/// with one line naming every word of `want`; returns that line (stderr).
fn pipework6_refused(
    cl: &Cluster,
    lab: &Lab,
    host: &str,
    c: &str,
    addr: &str,
    want: &[&str],
) -> Result<String> {
    let o = pipework6(cl, lab, host, c, addr)?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(
        !o.status.success() && want.iter().all(|w| err.contains(w)),
        "{addr} on {host}: {err}"
    );
    ensure!(err.trim().lines().count() == 1, "not one line: {err}");
    Ok(err)
}

/// Each `vswitchctl ARGS` (words split at spaces) on `host` fails with one line
/// containing its `want`.
fn ctl_refused(cl: &Cluster, host: &str, cases: &[(&str, &str)]) -> Result<()> {
    for (args, want) in cases {
        let words: Vec<&str> = args.split_whitespace().collect();
        let o = cl.ctl(host, &words)?;
        ensure!(
            o.code != 0 && o.stderr.contains(want) && o.stderr.trim().lines().count() == 1,
            "vswitchctl {args}: {} {:?}",
            o.code,
            o.stderr
        );
    }
    Ok(())
}

/// Dual stack on an overlay network: the network carries its IPv6 subnet and gateway
/// to every host, endpoints carry their IPv6 addresses, ping -6 crosses the VXLAN
/// overlay, names resolve AAAA at every host's gateway, a static IPv6 address in use
/// on another host is refused, and bad IPv6 input is one line.
fn dual_stack_overlay_across_hosts() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 1)?;
    for n in 1..=3 {
        cl.add_host(&mut lab, n)?;
    }
    add_overlay(
        &cl,
        "h1",
        &["--subnet", "fd00:10::/64", "--gateway", "fd00:10::1"],
    )?;
    for h in ["h1", "h2", "h3"] {
        wait_for(&format!("ov with its IPv6 subnet on {h}"), 10, || {
            ov_bridge(&cl, h)
                .is_some_and(|b| b["subnet6"] == "fd00:10::/64" && b["gateway6"] == "fd00:10::1")
        })?;
    }
    let show = cl.show("h3").context("cluster-show on h3")?;
    ensure!(
        show["networks"][0]["subnet6"] == "fd00:10::/64"
            && show["networks"][0]["gateway6"] == "fd00:10::1",
        "cluster-show: {show}"
    );
    // One container per host: IPv4 on eth0, IPv6 on eth1; the IPv6 name registered on
    // its own host.
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        let c = format!("c{}", i + 1);
        v6_container(&mut lab, &c)?;
        cl.pipework_ok(
            &mut lab,
            h,
            "ov",
            &c,
            &format!("10.1.0.1{}/24@10.1.0.1", i + 1),
        )?;
        let o = pipework6(
            &cl,
            &lab,
            h,
            &c,
            &format!("fd00:10::1{}/64@fd00:10::1", i + 1),
        )?;
        ensure!(
            o.status.success(),
            "{h}: pipework {c} IPv6: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        cl.ctl_ok(h, &["add-host", "ov", &c, &format!("fd00:10::1{}", i + 1)])?;
    }
    cl.wait_show("h1", "6 endpoints", Duration::from_secs(15), |v| {
        v["networks"][0]["endpoints"] == 6
    })?;
    for c in ["c1", "c2", "c3"] {
        wait_for(&format!("DAD on {c}"), 10, || dad_done(&lab, c))?;
    }
    // ping -6 across hosts (c1 on h1 to c2 on h2 and c3 on h3, c3 to c2), and to the
    // gateway, which every host's router answers.
    for (from, to) in [
        ("c1", "fd00:10::12"),
        ("c1", "fd00:10::13"),
        ("c3", "fd00:10::12"),
        ("c2", "fd00:10::1"),
        ("c1", "10.1.0.12"),
    ] {
        lab.assert_ping(from, to)?;
    }
    // c1 learned c2's MAC from h1's answer to its Neighbor Solicitation.
    let neigh = lab.sh("c1", "ip -6 neigh show fd00:10::12")?;
    let c2_mac = lab.sh("c2", "cat /sys/class/net/eth1/address")?;
    ensure!(
        neigh.contains(c2_mac.trim()),
        "c1's neighbour entry for c2: {neigh:?}, c2's eth1 MAC {c2_mac:?}"
    );
    // AAAA of remote endpoints at each host's gateway (over IPv6 and over IPv4).
    for (c, name, want) in [
        ("c1", "c2", "fd00:10::12"),
        ("c1", "c3", "fd00:10::13"),
        ("c3", "c1", "fd00:10::11"),
    ] {
        let got = lab.sh(
            c,
            &format!("dig +short +time=2 +tries=2 AAAA {name} @fd00:10::1"),
        )?;
        ensure!(
            got.trim() == want,
            "{c}: dig AAAA {name}: {got:?}, want {want}"
        );
    }
    // What a user sees (docs/cluster.md shows it).
    println!(
        "$ vswitchctl cluster-show   # on h1\n{}",
        cl.ctl_ok("h1", &["cluster-show"])?
    );
    println!(
        "$ ping -6 -c 2 fd00:10::13   # in c1 on h1\n{}",
        lab.sh("c1", "ping -6 -c 2 fd00:10::13")?
    );
    println!(
        "$ dig +short AAAA c2 @fd00:10::1   # in c1 on h1\n{}",
        lab.sh("c1", "dig +short +time=2 +tries=2 AAAA c2 @fd00:10::1")?
    );
    let got = lab.sh("c2", "dig +short +time=2 +tries=2 AAAA c3 @10.1.0.1")?;
    ensure!(
        got.trim() == "fd00:10::13",
        "c2: dig AAAA c3 @10.1.0.1: {got:?}"
    );
    let got = lab.sh("c2", "dig +short +time=2 +tries=2 A c3 @fd00:10::1")?;
    ensure!(
        got.trim() == "10.1.0.13",
        "c2: dig A c3 @fd00:10::1: {got:?}"
    );
    // A static IPv6 address in use on another host is refused, naming that host.
    v6_container(&mut lab, "dup")?;
    let err = pipework6_refused(
        &cl,
        &lab,
        "h3",
        "dup",
        "fd00:10::11/64",
        &["fd00:10::11", "h1"],
    )?;
    println!("$ pipework ov -i eth1 -a inet6 dup fd00:10::11/64   # on h3\n{err}");
    // Bad IPv6 input: one line, non-zero exit.
    let bad = [
        (
            "add-br ov6 --overlay --subnet fd00:10:0:1::/56",
            "host bits set",
        ),
        ("add-br ov6 --overlay --subnet fd00:10::/48", "overlaps"),
        (
            "add-br ov6 --overlay --subnet fd00:20::/64 --gateway fd00:30::1",
            "not a host address",
        ),
        (
            "add-br ov6 --overlay --subnet fd00:20::/64 --dhcp fd00:20::10-fd00:20::20",
            "DHCPv6 needs an IPv6 gateway",
        ),
    ];
    ctl_refused(&cl, "h2", &bad)?;
    // An IPv6 address on an overlay network without an IPv6 subnet.
    cl.ctl_ok(
        "h2",
        &["add-br", "ov4", "--overlay", "--subnet", "10.4.0.0/24"],
    )?;
    v6_container(&mut lab, "x4")?;
    let o = run(
        std::process::Command::new(vswitch_integration::bin("pipework")?)
            .arg("--socket")
            .arg(cl.socket("h2"))
            .args([
                "ov4",
                "-i",
                "eth1",
                "-a",
                "inet6",
                &lab.ns("x4"),
                "fd00:40::5/64",
            ]),
    )?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(
        !o.status.success() && err.contains("no IPv6 subnet"),
        "IPv6 address on an IPv4-only overlay: {err}"
    );
    Ok(())
}

/// The events in a `monitor --json` log, parsed (every line must parse).
fn events(lab: &Lab, log: &str) -> Result<Vec<serde_json::Value>> {
    lab.read_log(log)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("event line {l:?} is not JSON")))
        .collect()
}

/// Wait until an event of `kind` matching `f` is in the log, after its first `skip`
/// events.
fn wait_event(
    lab: &Lab,
    log: &str,
    skip: usize,
    kind: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Result<()> {
    let ok = wait_until(Duration::from_secs(10), || {
        events(lab, log)
            .map(|v| v.iter().skip(skip).any(|e| e["event"] == kind && f(e)))
            .unwrap_or(false)
    });
    ensure!(
        ok,
        "no {kind} event; monitor log:\n{}\nvswitchd log:\n{}",
        lab.read_log(log),
        lab.log_tail(40)
    );
    Ok(())
}

fn monitor_streams_every_kind_in_order() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    let ctl = bin("vswitchctl")?.display().to_string();
    let sock = lab.socket().display().to_string();
    lab.spawn(
        "sw",
        &ctl,
        &["--socket", &sock, "--json", "monitor"],
        "mon.json",
    )?;
    lab.spawn("sw", &ctl, &["--socket", &sock, "monitor"], "mon.txt")?;
    // Both subscribed once a probe bridge shows in both.
    let ready = wait_until(Duration::from_secs(10), || {
        let _ = lab.ctl(&["add-br", "probe"]);
        let _ = lab.ctl(&["del-br", "probe"]);
        lab.read_log("mon.json").contains("probe") && lab.read_log("mon.txt").contains("probe")
    });
    ensure!(
        ready,
        "monitors did not subscribe: {}",
        lab.read_log("mon.txt")
    );

    let by = |k: &'static str, v: &'static str| move |e: &serde_json::Value| e[k] == v;
    let n = |lab: &Lab| lab.read_log("mon.json").lines().count();
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "--dhcp",
        "10.0.0.100-10.0.0.120",
    ])?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", None)?;
    lab.ctl_ok(&["add-port", "br0", "v1"])?;
    let mac1 = lab.mac("c1", "eth0")?;
    lab.assert_ping("c1", "10.0.0.1")?;
    wait_event(&lab, "mon.json", 0, "mac-learned", |e| {
        e["mac"] == mac1.as_str()
    })?;
    lab.ctl_ok(&["add-host", "br0", "web", "10.0.0.5"])?;
    lab.ctl_ok(&["del-host", "br0", "web"])?;
    // A DHCP client that releases its lease when it quits (-R).
    lab.add_ns("c2")?;
    lab.veth("sw", "v2", "c2", "eth0")?;
    lab.sh("sw", "ip link set v2 up")?;
    lab.sh("c2", "ip link set eth0 up")?;
    lab.ctl_ok(&["add-port", "br0", "v2"])?;
    let script = lab.dir().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add $ip/$mask dev $interface;; \
         deconfig) ip addr flush dev $interface;; esac\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let skip = n(&lab);
    // Bound, then released (SIGUSR2) once the gateway's MAC is known, so the
    // RELEASE leaves at once.
    let pid = lab.dir().join("udhcpc.pid");
    lab.sh(
        "c2",
        &format!(
            "busybox udhcpc -i eth0 -f -t 5 -T 1 -x hostname:alpha -s {s} -p {p} >{l} 2>&1 &
             for i in $(seq 100); do ip -4 addr show dev eth0 | grep -q inet && break; sleep 0.1; done
             ping -c 1 -W 1 10.0.0.1 >/dev/null; kill -USR2 $(cat {p})
             for i in $(seq 100); do ip -4 addr show dev eth0 | grep -q inet || break; sleep 0.1; done
             kill $(cat {p})",
            s = script.display(),
            p = pid.display(),
            l = lab.dir().join("udhcpc.log").display(),
        ),
    )?;
    wait_event(
        &lab,
        "mon.json",
        skip,
        "lease-released",
        by("bridge", "br0"),
    )
    .with_context(|| format!("udhcpc said:\n{}", lab.read_log("udhcpc.log")))?;
    // c1's MAC now speaks from v2: the address moved. c1 must stay quiet meanwhile: with
    // IPv6 on, it would defend its link-local address against c2's duplicate-address
    // check (c2's new link-local is c1's), from v1, moving the MAC back before the
    // watcher's next scan (it compares scans, 200 ms apart).
    lab.sh("c1", "sysctl -qw net.ipv6.conf.all.disable_ipv6=1")?;
    lab.sh(
        "c2",
        &format!("ip link set eth0 address {mac1} && ip addr add 10.0.0.6/24 dev eth0"),
    )?;
    let skip = n(&lab);
    let _ = lab.ping_once("c2", "10.0.0.1");
    wait_event(&lab, "mon.json", skip, "mac-moved", by("port", "v2"))?;
    // The guest takes its end down and up again: the port's carrier follows.
    let skip = n(&lab);
    lab.sh("c1", "ip link set eth0 down")?;
    wait_event(&lab, "mon.json", skip, "port-down", by("port", "v1"))?;
    let skip = n(&lab);
    lab.sh("c1", "ip link set eth0 up")?;
    wait_event(&lab, "mon.json", skip, "port-up", by("port", "v1"))?;
    lab.ctl_ok(&["del-port", "br0", "v2"])?;
    lab.ctl_ok(&["del-br", "br0"])?;
    wait_event(&lab, "mon.json", 0, "bridge-removed", by("bridge", "br0"))?;

    // Every kind, in the order the changes were made, each naming its subject.
    let want: &[(&str, &str, &str)] = &[
        ("bridge-added", "bridge", "br0"),
        ("port-added", "port", "v1"),
        ("mac-learned", "mac", &mac1),
        ("name-added", "name", "web"),
        ("name-removed", "name", "web"),
        ("port-added", "port", "v2"),
        ("lease-granted", "name", "alpha"),
        ("name-added", "name", "alpha"),
        ("lease-released", "name", "alpha"),
        ("mac-moved", "port", "v2"),
        ("port-down", "port", "v1"),
        ("port-up", "port", "v1"),
        ("port-removed", "port", "v2"),
        ("bridge-removed", "bridge", "br0"),
    ];
    let got = events(&lab, "mon.json")?;
    let mut it = got.iter();
    for (kind, k, v) in want {
        if !it.any(|e| e["event"] == *kind && e[*k] == *v) {
            bail!(
                "no {kind} {k}={v} after the events before it; monitor log:\n{}",
                lab.read_log("mon.json")
            );
        }
    }
    let seqs: Vec<u64> = got.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure!(
        seqs.len() == got.len() && seqs.windows(2).all(|w| w[1] > w[0]),
        "sequence numbers not increasing: {seqs:?}"
    );
    let moved = got
        .iter()
        .find(|e| e["event"] == "mac-moved")
        .context("mac-moved")?;
    ensure!(moved["old_port"] == "v1", "{moved}");
    // People get one readable line per event.
    let txt = lab.read_log("mon.txt");
    ensure!(
        txt.lines()
            .any(|l| l.starts_with("bridge-added") && l.contains("bridge=br0"))
            && txt
                .lines()
                .any(|l| l.starts_with("lease-granted") && l.contains("name=alpha")),
        "human monitor output:\n{txt}"
    );
    Ok(())
}

fn membership_duplicate_names_and_sigterm() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 1)?;
    cl.add_host(&mut lab, 1)?;
    cl.add_host(&mut lab, 2)?;
    cl.wait_registered("h1", "h2")?;
    let v = cl.show("h1").context("cluster-show")?;
    ensure!(v["node"] == "h1" && v["etcd"] == "connected", "{v}");
    let h2 = v["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "h2"))
        .context("h2 listed")?;
    ensure!(h2["vtep"] == "192.0.2.2" && h2["state"] == "alive", "{h2}");
    let human = cl.ctl_ok("h1", &["cluster-show"])?;
    ensure!(
        human
            .lines()
            .any(|l| l.starts_with("h1*") && l.contains("alive")),
        "{human}"
    );

    // Without its agent, vswitchd says so in one line.
    cl.kill_agent("h2")?;
    for args in [&["cluster-show"][..], &["add-br", "x", "--overlay"]] {
        let o = cl.ctl("h2", args)?;
        ensure!(
            o.code == 1
                && o.stderr.trim().lines().count() == 1
                && o.stderr.contains("no vswitch-agent is connected"),
            "{args:?}: {}",
            o.stderr
        );
    }
    // Restarted beside the same vswitchd, it takes its node over at once.
    cl.start_agent(&lab, "h2")?;
    cl.wait_registered("h2", "h2")?;

    // A second agent calling itself h2 (beside h1's vswitchd) is refused, loudly.
    let mut dup = cl.spawn_agent(&lab, "h1", "h2", &[])?;
    let code = vswitch_integration::terminate_after(&mut dup, Duration::from_secs(20));
    ensure!(
        code.is_some_and(|c| c != 0),
        "duplicate agent: exit {code:?}"
    );
    ensure!(
        cl.log_tail("h1-agent.log", 5)
            .contains("already registered by another live vswitch-agent"),
        "{}",
        cl.log_tail("h1-agent.log", 5)
    );
    cl.wait_registered("h1", "h2")?;

    // SIGTERM: exit 0, and the node leaves the cluster.
    let code = cl.stop_agent("h2", Duration::from_secs(10))?;
    ensure!(code == Some(0), "agent on SIGTERM: {code:?}");
    cl.wait_show("h1", "h2 gone", Duration::from_secs(10), |v| {
        node_state(v, "h2").as_deref() == Some("gone")
    })?;
    // Also with etcd unreachable.
    cl.kill_etcd(0);
    let code = cl.stop_agent("h1", Duration::from_secs(10))?;
    ensure!(code == Some(0), "agent on SIGTERM without etcd: {code:?}");
    Ok(())
}

/// Two hosts, 20 DHCP clients each, all at once: 40 different addresses (each host
/// serves from its own blocks), and the clients reach each other by their DHCP names.
fn dhcp_on_two_hosts_never_gives_one_address_twice() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 1)?;
    cl.add_host(&mut lab, 1)?;
    cl.add_host(&mut lab, 2)?;
    add_overlay(&cl, "h1", &["--dhcp"])?;
    wait_for("ov on h2", 10, || has_bridge(&cl, "h2", "ov"))?;
    let script = lab.dir().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev $interface; \
         ip addr add $ip/$mask dev $interface; ip route replace default via $router;; esac\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut clients = Vec::new();
    for (host, tag) in [("h1", "a"), ("h2", "b")] {
        for i in 1..=20 {
            let c = format!("{tag}{i}");
            lab.add_ns(&c)?;
            lab.sh(&c, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1")?;
            let port = format!("p{c}");
            lab.veth(host, &port, &c, "eth0")?;
            lab.sh(host, &format!("ip link set {port} up"))?;
            lab.sh(&c, "ip link set eth0 up")?;
            cl.ctl_ok(host, &["add-port", "ov", &port])?;
            std::fs::write(
                format!("/etc/netns/{}/resolv.conf", lab.ns(&c)),
                "nameserver 10.1.0.1\n",
            )?;
            clients.push(c);
        }
    }
    // Both hosts at once, each handing out its 20 in a row (one vswitchd's DHCP
    // server offers one address to simultaneous DISCOVERs and NAKs all but one
    // REQUEST, which only slows clients down; the race that matters here is between
    // the hosts).
    for (host, tag) in [("h1", "a"), ("h2", "b")] {
        let mut sh = String::new();
        for i in 1..=20 {
            let ns = lab.ns(&format!("{tag}{i}"));
            sh.push_str(&format!(
                "ip netns exec {ns} busybox udhcpc -i eth0 -n -q -t 20 -T 1 -x hostname:{tag}{i} -s {};\n",
                script.display()
            ));
        }
        lab.spawn(host, "sh", &["-c", &sh], &format!("udhcpc-{host}.log"))?;
    }
    let addr = |c: &str| -> Option<String> {
        let o = lab.sh(c, "ip -4 -o addr show dev eth0").ok()?;
        let w: Vec<&str> = o.split_whitespace().collect();
        let i = w.iter().position(|x| *x == "inet")?;
        w.get(i + 1)
            .map(|a| a.split('/').next().unwrap_or("").to_string())
    };
    wait_for("40 DHCP clients bound", 90, || {
        clients.iter().all(|c| addr(c).is_some())
    })?;
    let mut seen = std::collections::BTreeMap::new();
    for c in &clients {
        let a = addr(c).context("address")?;
        if let Some(other) = seen.insert(a.clone(), c.clone()) {
            bail!("{a} handed out to both {other} and {c}");
        }
    }
    ensure!(seen.len() == 40, "{seen:?}");
    // The servers agree: 20 leases each, none shared.
    let mut leased = std::collections::BTreeSet::new();
    for h in ["h1", "h2"] {
        let l = cl.ctl_json(h, &["dhcp-leases", "ov"])?;
        let l = l.as_array().context("leases")?;
        ensure!(l.len() == 20, "{h}: {} leases", l.len());
        for x in l {
            ensure!(leased.insert(x["ip"].to_string()), "{x} leased twice");
        }
    }
    // Each host served from its own blocks: 16 addresses each, so 20 leases took a
    // second, adjacent block.
    for h in ["h1", "h2"] {
        let show = cl.show(h).context("show")?;
        let blocks = show["networks"][0]["blocks"].clone();
        ensure!(
            blocks.as_array().is_some_and(|b| b.len() >= 2),
            "{h}: {show}"
        );
    }
    // Names from DHCP resolve on the other host.
    cl.wait_show("h1", "40 endpoints", Duration::from_secs(20), |v| {
        v["networks"][0]["endpoints"] == 40
    })?;
    lab.assert_ping("a1", "b7")?;
    lab.assert_ping("b3", "a20")?;
    Ok(())
}

/// Containers c1..cN on hosts h1..hN of overlay `ov`, static addresses 10.1.0.1N,
/// resolver at the gateway.
fn containers(cl: &Cluster, lab: &mut Lab, hosts: &[&str]) -> Result<()> {
    for (i, h) in hosts.iter().enumerate() {
        let c = format!("c{}", i + 1);
        cl.pipework_ok(lab, h, "ov", &c, &format!("10.1.0.1{}/24@10.1.0.1", i + 1))?;
        std::fs::write(
            format!("/etc/netns/{}/resolv.conf", lab.ns(&c)),
            "nameserver 10.1.0.1\n",
        )?;
    }
    Ok(())
}

/// The address `name` has at the gateway of container `c`, if it resolves.
fn resolve(lab: &Lab, c: &str, name: &str) -> Option<String> {
    let o = lab
        .sh(c, &format!("dig +short +time=1 +tries=1 @10.1.0.1 {name}"))
        .ok()?;
    o.lines()
        .next()
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// The remote VTEPs of `host`'s tunnel on `ov`.
fn tunnel_remotes(cl: &Cluster, host: &str) -> Vec<String> {
    cl.ctl_json(host, &["list-ports", "ov"])
        .ok()
        .and_then(|v| {
            let p = v.as_array()?.iter().find(|p| p["type"] == "vxlan")?.clone();
            Some(
                p["vxlan"]["remote_ip"]
                    .as_array()?
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// kill -9 of a host's vswitchd and agent: after its TTL, its endpoints, names and
/// tunnel disappear from the others; restarted, it is registered again (once) and
/// reachable again.
fn a_dead_node_leaves_and_comes_back() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 1)?;
    for n in 1..=3 {
        cl.add_host(&mut lab, n)?;
    }
    add_overlay(&cl, "h1", &[])?;
    for h in ["h2", "h3"] {
        wait_for(&format!("ov on {h}"), 10, || has_bridge(&cl, h, "ov"))?;
    }
    containers(&cl, &mut lab, &["h1", "h2", "h3"])?;
    lab.assert_ping("c1", "c3")?;
    ensure!(tunnel_remotes(&cl, "h1").len() == 2);

    cl.kill_host("h3")?;
    cl.wait_show(
        "h1",
        "h3 gone, its endpoint with it",
        Duration::from_secs(15),
        |v| node_state(v, "h3").as_deref() == Some("gone") && v["networks"][0]["endpoints"] == 2,
    )?;
    wait_for("h1's tunnel to h3 removed", 10, || {
        tunnel_remotes(&cl, "h1") == ["192.0.2.2"]
    })?;
    wait_for("c3's name gone from h1's gateway", 10, || {
        resolve(&lab, "c1", "c3").is_none()
    })?;
    lab.assert_ping("c1", "c2")?;

    // Back: same db, a new vswitchd and agent.
    cl.start_vswitchd(&lab, "h3")?;
    cl.start_agent(&lab, "h3")?;
    cl.wait_show("h1", "h3 alive again, once", Duration::from_secs(20), |v| {
        let names: Vec<&str> = v["nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["name"].as_str()).collect())
            .unwrap_or_default();
        node_state(v, "h3").as_deref() == Some("alive")
            && names.iter().filter(|n| **n == "h3").count() == 1
            && v["networks"][0]["endpoints"] == 3
    })?;
    wait_for("c3 resolves at h1 again", 10, || {
        resolve(&lab, "c1", "c3").as_deref() == Some("10.1.0.13")
    })?;
    lab.assert_ping("c1", "c3")?;
    let eps = cl.show("h2").context("show")?["networks"][0]["nodes"].clone();
    ensure!(eps["h3"] == 1, "endpoints per node on h2: {eps}");
    Ok(())
}

/// Three etcd members: one dies, nothing visible happens; an agent killed and
/// restarted does not disturb traffic; all of etcd gone: forwarding goes on, cluster
/// changes fail naming etcd; etcd back: the agents pick up what changed.
fn etcd_member_loss_outage_and_agent_restart() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 3)?;
    cl.add_host(&mut lab, 1)?;
    cl.add_host(&mut lab, 2)?;
    add_overlay(&cl, "h1", &[])?;
    wait_for("ov on h2", 10, || has_bridge(&cl, "h2", "ov"))?;
    containers(&cl, &mut lab, &["h1", "h2"])?;
    lab.assert_ping("c1", "c2")?;

    // One member of three dies: the cluster goes on as before.
    cl.kill_etcd(0);
    cl.ctl_ok(
        "h2",
        &["add-br", "ov2", "--overlay", "--subnet", "10.2.0.0/24"],
    )?;
    wait_for("ov2 on h1", 10, || has_bridge(&cl, "h1", "ov2"))?;
    cl.ctl_ok("h1", &["del-br", "ov2"])?;
    wait_for("ov2 gone from h2", 10, || !has_bridge(&cl, "h2", "ov2"))?;
    lab.assert_ping("c1", "c2")?;

    // The agent on h1 killed and restarted while c1 pings c2 every 50 ms: no loss.
    lab.spawn(
        "c1",
        "ping",
        &["-c", "80", "-i", "0.05", "-W", "1", "10.1.0.12"],
        "ping-restart.log",
    )?;
    wait_for("the ping to start", 5, || {
        lab.read_log("ping-restart.log").contains("bytes from")
    })?;
    cl.kill_agent("h1")?;
    cl.start_agent(&lab, "h1")?;
    cl.wait_registered("h1", "h1")?;
    wait_for("the ping to finish", 15, || {
        lab.read_log("ping-restart.log").contains("packet loss")
    })?;
    let out = lab.read_log("ping-restart.log");
    ensure!(
        out.contains(" 0% packet loss"),
        "pings lost across the agent restart:\n{out}"
    );
    cl.wait_show(
        "h2",
        "h1 still alive with its endpoint",
        Duration::from_secs(5),
        |v| node_state(v, "h1").as_deref() == Some("alive") && v["networks"][0]["endpoints"] == 2,
    )?;

    // etcd gone altogether: forwarding goes on; cluster changes fail naming etcd.
    cl.kill_etcd(1);
    cl.kill_etcd(2);
    lab.assert_ping("c1", "c2")?;
    let o = cl.ctl("h1", &["add-br", "ov3", "--overlay"])?;
    ensure!(
        o.code == 1 && o.stderr.trim().lines().count() == 1 && o.stderr.contains("etcd"),
        "add-br --overlay without etcd: {}",
        o.stderr
    );
    let o = cl.pipework(&mut lab, "h2", "ov", "c3", "10.1.0.13/24@10.1.0.1")?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(
        !o.status.success() && err.contains("etcd"),
        "pipework without etcd: {err}"
    );
    cl.wait_show(
        "h1",
        "etcd reported unreachable",
        Duration::from_secs(10),
        |v| {
            v["etcd"]
                .as_str()
                .is_some_and(|s| s.starts_with("unreachable"))
        },
    )?;
    lab.assert_ping("c1", "c2")?;
    // Longer than the TTL: the leases expire meanwhile.
    std::thread::sleep(Duration::from_secs(u64::from(cl.ttl) + 1));
    lab.assert_ping("c1", "c2")?;

    // etcd back: agents reconnect, re-register, publish again; a change made now
    // reaches the other host.
    for i in 0..3 {
        cl.start_etcd(&lab, i)?;
    }
    cl.wait_etcd(&lab)?;
    cl.wait_show(
        "h1",
        "etcd connected, both nodes alive",
        Duration::from_secs(30),
        |v| {
            v["etcd"] == "connected"
                && node_state(v, "h1").as_deref() == Some("alive")
                && node_state(v, "h2").as_deref() == Some("alive")
                && v["networks"][0]["endpoints"] == 2
        },
    )?;
    wait_for("pipework on h2 once etcd is back", 20, || {
        cl.pipework(&mut lab, "h2", "ov", "c3", "10.1.0.13/24@10.1.0.1")
            .is_ok_and(|o| o.status.success())
    })?;
    lab.assert_ping("c1", "10.1.0.13")?;
    lab.assert_ping("c1", "c2")?;
    Ok(())
}

/// A CA, a server certificate for the etcd members' addresses and a client
/// certificate for the agents, made with openssl in `dir`.
fn make_certs(dir: &std::path::Path) -> Result<()> {
    let script = format!(
        "set -e; cd {d}
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\
           -keyout ca.key -out ca.crt -subj /CN=vswitch-test-ca -days 2 2>/dev/null
         for who in server client; do
           openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\
             -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
         done
         printf 'subjectAltName=IP:192.0.2.101,IP:192.0.2.102,IP:192.0.2.103\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext
         printf 'extendedKeyUsage=clientAuth\\n' > client.ext
         for who in server client; do
           openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \\
             -out $who.crt -days 2 -extfile $who.ext 2>/dev/null
         done",
        d = dir.display()
    );
    vswitch_integration::run_ok(std::process::Command::new("sh").args(["-c", &script]))?;
    Ok(())
}

/// etcd requiring client certificates: agents with --cacert/--cert/--key work; a
/// client without a certificate is refused.
fn etcd_over_tls_with_client_certificates() -> Result<()> {
    let mut lab = Lab::new()?;
    let d = lab.dir().join("pki");
    std::fs::create_dir_all(&d)?;
    make_certs(&d)?;
    let f = |n: &str| d.join(n).display().to_string();
    let etcd_flags = vec![
        "--cert-file".into(),
        f("server.crt"),
        "--key-file".into(),
        f("server.key"),
        "--trusted-ca-file".into(),
        f("ca.crt"),
        "--client-cert-auth".into(),
        "--peer-cert-file".into(),
        f("server.crt"),
        "--peer-key-file".into(),
        f("server.key"),
        "--peer-trusted-ca-file".into(),
        f("ca.crt"),
        "--peer-client-cert-auth".into(),
    ];
    let agent_flags = vec![
        "--cacert".into(),
        f("ca.crt"),
        "--cert".into(),
        f("client.crt"),
        "--key".into(),
        f("client.key"),
    ];
    let mut cl = Cluster::with_tls(&mut lab, 1, Some((etcd_flags, agent_flags)))?;
    cl.add_host(&mut lab, 1)?;
    cl.add_host(&mut lab, 2)?;
    ensure!(cl.etcd_urls().starts_with("https://"), "{}", cl.etcd_urls());
    add_overlay(&cl, "h1", &[])?;
    wait_for("ov on h2", 10, || has_bridge(&cl, "h2", "ov"))?;
    containers(&cl, &mut lab, &["h1", "h2"])?;
    lab.assert_ping("c1", "c2")?;
    // Without a client certificate etcd does not serve.
    let o = run(lab.cmd("e1", "etcdctl").env("ETCDCTL_API", "3").args([
        "--endpoints=https://192.0.2.101:2379",
        "--cacert",
        &f("ca.crt"),
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "2s",
        "get",
        "/vswitch/",
        "--prefix",
    ]))?;
    ensure!(
        !o.status.success(),
        "etcd answered a client without a certificate"
    );
    Ok(())
}

/// docs/labs/cluster.toml with vswitch-lab: 3 etcd members, 4 hosts, DHCP containers
/// on every host reaching each other by name; down leaves nothing behind.
fn cluster_lab_file() -> Result<()> {
    let file =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/labs/cluster.toml");
    let lab_bin = bin("vswitch-lab")?;
    struct Down(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.0)
                .arg("down")
                .arg(&self.1)
                .output();
        }
    }
    let up = run(std::process::Command::new(&lab_bin).arg("up").arg(&file))?;
    let _down = Down(lab_bin.clone(), file.clone());
    ensure!(
        up.status.success(),
        "vswitch-lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let exec = |ns: &str, cmd: &str| {
        run(std::process::Command::new("ip").args(["netns", "exec", ns, "sh", "-c", cmd]))
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    for (from, to) in [("c1", "c4"), ("c4", "c2"), ("c3", "c1")] {
        let ok = wait_until(Duration::from_secs(20), || {
            exec(
                &format!("vl-clu-{from}"),
                &format!("ping -c 1 -W 1 {to} >/dev/null"),
            )
        });
        ensure!(ok, "{from} cannot ping {to} by name");
    }
    let show = run(std::process::Command::new(bin("vswitchctl")?).args([
        "--socket",
        "/run/vswitch-lab/clu/h2.sock",
        "--json",
        "cluster-show",
    ]))?;
    let v: serde_json::Value = serde_json::from_slice(&show.stdout)?;
    ensure!(
        v["nodes"].as_array().is_some_and(|a| a.len() == 4) && v["networks"][0]["endpoints"] == 4,
        "{v}"
    );
    let down = run(std::process::Command::new(&lab_bin).arg("down").arg(&file))?;
    ensure!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let left = std::fs::read_dir("/run/netns")?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("vl-clu-"))
        .count();
    ensure!(left == 0, "{left} namespaces left after down");
    Ok(())
}

/// dhclient-script stand-in for `dhclient -6 -sf`: puts the leased address on the
/// interface and logs it (never touches /etc/resolv.conf).
const DHCLIENT6_SCRIPT: &str = r#"#!/bin/sh
case "$reason" in
BOUND6|RENEW6|REBIND6|REBOOT6)
    ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad
    echo "reason=$reason addr=$new_ip6_address" >> "$LOG6";;
esac
exit 0
"#;

/// DHCPv6 on a dual-stack overlay network (issue 23): the network's IPv6 range is cut
/// into blocks of 256 addresses claimed per host in etcd; ISC `dhclient -6` in a
/// container on each host gets an address from its own host's block (distinct
/// addresses, distinct blocks), the leases become endpoints everywhere, the two
/// containers ping -6 each other across the overlay and their names (the FQDN they
/// send) answer AAAA at the other host's gateway; a static IPv6 address in another
/// host's block is refused in one line.
fn dhcpv6_on_an_overlay_network_from_per_host_blocks() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 1)?;
    cl.add_host(&mut lab, 1)?;
    cl.add_host(&mut lab, 2)?;
    add_overlay(
        &cl,
        "h1",
        &[
            "--subnet",
            "fd00:10::/64",
            "--gateway",
            "fd00:10::1",
            "--dhcp",
            "fd00:10::100-fd00:10::8ff",
        ],
    )?;
    // Each host claims its first block as soon as it has the network, and vswitchd
    // serves it.
    let dhcp6_of =
        |h: &str| -> Option<String> { ov_bridge(&cl, h)?["dhcp6"].as_str().map(str::to_string) };
    for h in ["h1", "h2"] {
        wait_for(&format!("a DHCPv6 range on {h}'s ov"), 15, || {
            dhcp6_of(h).is_some()
        })?;
    }
    let block = |h: &str| -> Result<(u128, u128)> {
        let r = dhcp6_of(h).with_context(|| format!("{h}: no DHCPv6 range"))?;
        let (a, z) = r.split_once('-').with_context(|| r.clone())?;
        let a: std::net::Ipv6Addr = a.parse()?;
        let z: std::net::Ipv6Addr = z.parse()?;
        Ok((u128::from(a), u128::from(z)))
    };
    let (b1, b2) = (block("h1")?, block("h2")?);
    println!(
        "h1 serves {}, h2 serves {}",
        dhcp6_of("h1").unwrap_or_default(),
        dhcp6_of("h2").unwrap_or_default()
    );
    ensure!(
        b1.1 < b2.0 || b2.1 < b1.0,
        "the hosts' DHCPv6 ranges overlap: h1 serves {}, h2 serves {}",
        dhcp6_of("h1").unwrap_or_default(),
        dhcp6_of("h2").unwrap_or_default()
    );
    // cluster-show lists the host's IPv6 block among its blocks.
    let show = cl.show("h2").context("cluster-show on h2")?;
    ensure!(
        show["networks"][0]["dhcp6"] == "fd00:10::100-fd00:10::8ff"
            && show["networks"][0]["blocks"].as_array().is_some_and(
                |b| b.len() == 1 && b[0] == dhcp6_of("h2").unwrap_or_default().as_str()
            ),
        "cluster-show on h2: {show}"
    );
    // One container per host on a port of ov, IPv6 on, Router Advertisements ignored:
    // its only global address is the one DHCPv6 leases.
    let dir = lab.dir().to_path_buf();
    let script = dir.join("dhclient6.sh");
    std::fs::write(&script, DHCLIENT6_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut addrs = Vec::new();
    for (h, c) in [("h1", "d1"), ("h2", "d2")] {
        v6_container(&mut lab, c)?;
        let port = format!("p{c}");
        lab.veth(h, &port, c, "eth0")?;
        lab.sh(h, &format!("ip link set {port} up"))?;
        lab.sh(c, "ip link set eth0 up")?;
        cl.ctl_ok(h, &["add-port", "ov", &port])?;
        wait_for(&format!("DAD on {c}"), 10, || {
            dad_done(&lab, c)
                && lab
                    .sh(c, "ip -6 addr show dev eth0 scope link")
                    .is_ok_and(|o| o.contains("inet6"))
        })?;
        let conf = dir.join(format!("{c}.conf"));
        std::fs::write(
            &conf,
            format!("send fqdn.fqdn \"{c}\";\nsend fqdn.server-update on;\n"),
        )?;
        let log = dir.join(format!("{c}.log6"));
        let out = lab.sh_out(
            c,
            &format!(
                "timeout 30 dhclient -6 -1 -cf {} -e LOG6={} -sf {} -lf {}/{c}.leases6 -pf {}/{c}.pid6 eth0 2>&1",
                conf.display(),
                log.display(),
                script.display(),
                dir.display(),
                dir.display()
            ),
        )?;
        let got = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = got
            .lines()
            .rfind(|l| l.contains("reason=BOUND6"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .with_context(|| {
                format!(
                    "{c} on {h}: dhclient -6 got no lease: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?
            .to_string();
        let a = u128::from(addr.parse::<std::net::Ipv6Addr>()?);
        let (f, l) = block(h)?;
        ensure!(
            a >= f && a <= l,
            "{c} on {h} got {addr}, outside {h}'s DHCPv6 block {}",
            dhcp6_of(h).unwrap_or_default()
        );
        println!("$ dhclient -6 -1 eth0   # in {c} on {h}\n{}", got.trim());
        // The leased address is a /128: the rest of the subnet is on the link.
        lab.sh(c, "ip -6 route replace fd00:10::/64 dev eth0")?;
        addrs.push(addr);
    }
    ensure!(addrs[0] != addrs[1], "both containers got {}", addrs[0]);
    // The leases are endpoints (with their IPv6 address and name) on both hosts.
    for h in ["h1", "h2"] {
        cl.wait_show(h, "2 endpoints", Duration::from_secs(15), |v| {
            v["networks"][0]["endpoints"] == 2
        })?;
    }
    println!(
        "$ vswitchctl cluster-show   # on h2\n{}",
        cl.ctl_ok("h2", &["cluster-show"])?
    );
    // ping -6 across the overlay, both ways, between the leased addresses.
    lab.assert_ping("d1", &addrs[1])?;
    lab.assert_ping("d2", &addrs[0])?;
    println!(
        "$ ping -6 -c 2 {}   # in d1 on h1\n{}",
        addrs[1],
        lab.sh("d1", &format!("ping -6 -c 2 {}", addrs[1]))?
    );
    // The names the clients sent answer AAAA at the other host's gateway.
    for (c, name, want) in [("d1", "d2", &addrs[1]), ("d2", "d1", &addrs[0])] {
        let mut got = String::new();
        wait_for(&format!("AAAA {name} at {c}'s gateway"), 10, || {
            got = lab
                .sh(
                    c,
                    &format!("dig +short +time=1 +tries=1 AAAA {name} @fd00:10::1"),
                )
                .unwrap_or_default();
            got.trim() == want.as_str()
        })
        .with_context(|| {
            format!(
                "{c}: dig AAAA {name}: {got:?}, want {want}; leases {}; endpoints {}",
                cl.ctl_ok("h1", &["dhcp-leases", "ov"]).unwrap_or_default()
                    + &cl.ctl_ok("h2", &["dhcp-leases", "ov"]).unwrap_or_default(),
                cl.etcdctl(&lab, &["get", "--prefix", "/vswitch/endpoints/"])
                    .unwrap_or_default()
            )
        })?;
    }
    println!(
        "$ dig +short AAAA d2 @fd00:10::1   # in d1 on h1\n{}",
        lab.sh("d1", "dig +short +time=2 +tries=2 AAAA d2 @fd00:10::1")?
    );
    // A static IPv6 address in h1's block, asked for on h2: refused, naming h1.
    v6_container(&mut lab, "s2")?;
    let stolen = std::net::Ipv6Addr::from(b1.0 + 0x20);
    let err = pipework6_refused(
        &cl,
        &lab,
        "h2",
        "s2",
        &format!("{stolen}/64"),
        &["h1", "DHCPv6 block"],
    )?;
    println!(
        "$ pipework ov -i eth1 -a inet6 s2 {stolen}/64   # on h2\n{}",
        err.trim()
    );
    // Bad DHCPv6 input: one line, non-zero exit (a DHCPv6 range without an IPv6
    // gateway: dual_stack_overlay_across_hosts).
    ctl_refused(
        &cl,
        "h2",
        &[(
            "add-br ov6 --overlay --subnet fd00:20::/64 --gateway fd00:20::1 \
             --dhcp fd00:21::10-fd00:21::20",
            "bad DHCPv6 range",
        )],
    )?;
    Ok(())
}
