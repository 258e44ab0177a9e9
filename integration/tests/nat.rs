//! NAT with real peers: an "outside" namespace on 198.51.100.0/24 with python's
//! http.server and iperf3, containers behind masquerade, published ports, hairpin.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "masquerade_publish_unpublish_hairpin",
            masquerade_publish_unpublish_hairpin,
        ),
        ("udp_ping_and_tcp_through_nat", udp_ping_and_tcp_through_nat),
        ("conntrack_cap_holds", conntrack_cap_holds),
        ("nat_errors", nat_errors),
        (
            "icmp_errors_are_translated_for_pmtu",
            icmp_errors_are_translated_for_pmtu,
        ),
        ("conntrack_entries_expire", conntrack_entries_expire),
        (
            "fastpath_tcp_through_masquerade_and_published_port",
            fastpath_tcp_through_masquerade_and_published_port,
        ),
        (
            "fastpath_ping_through_nat_counted_once",
            fastpath_ping_through_nat_counted_once,
        ),
        (
            "fastpath_hits_keep_the_connection_alive",
            fastpath_hits_keep_the_connection_alive,
        ),
    ])
}

/// br1 10.0.0.0/24 (gw .1, isolated) with c1 10.0.0.5 and c2 10.0.0.6; wan
/// 198.51.100.0/24 (router .2) with the outside host 198.51.100.1.
fn nat_lab(ct_max: Option<&str>) -> Result<Lab> {
    match ct_max {
        Some(n) => nat_lab_with(&["--ct-max", n]),
        None => nat_lab_with(&[]),
    }
}

/// [`nat_lab`] with vswitchd started with `flags`.
fn nat_lab_with(flags: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", flags)?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "--isolated",
    ])?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", Some("10.0.0.1"))?;
    lab.container("sw", "c2", "v2", "10.0.0.6/24", Some("10.0.0.1"))?;
    for p in ["v1", "v2"] {
        lab.ctl_ok(&["add-port", "br1", p])?;
    }
    lab.wan("sw")?;
    lab.ctl_ok(&["masquerade", "br1", "--out", "wan"])?;
    Ok(lab)
}

fn http_server(lab: &mut Lab, ns: &str, ip: &str, port: &str, log: &str) -> Result<()> {
    lab.spawn(ns, "python3", &["-m", "http.server", "-b", ip, port], log)?;
    let ok = wait_until(Duration::from_secs(10), || {
        lab.sh_out(ns, &format!("ss -ltn | grep -q '{ip}:{port}'"))
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    ensure!(ok, "http.server on {ip}:{port} did not start");
    Ok(())
}

fn curl(lab: &Lab, ns: &str, url: &str) -> Result<String> {
    let o = lab.sh_out(
        ns,
        &format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {url}"),
    )?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn masquerade_publish_unpublish_hairpin() -> Result<()> {
    let mut lab = nat_lab(None)?;
    http_server(&mut lab, "out", "198.51.100.1", "8000", "out.log")?;
    http_server(&mut lab, "c1", "10.0.0.5", "80", "c1.log")?;
    // Masquerade: the outside server sees the router's outside address.
    ensure!(curl(&lab, "c1", "http://198.51.100.1:8000/")? == "200");
    let log = lab.read_log("out.log");
    ensure!(log.contains("198.51.100.2 - -"), "server log: {log}");
    // Published port: reachable from outside, the container sees the real client.
    lab.ctl_ok(&["publish", "tcp", "8080", "10.0.0.5:80"])?;
    ensure!(curl(&lab, "out", "http://198.51.100.2:8080/")? == "200");
    ensure!(
        lab.read_log("c1.log").contains("198.51.100.1 - -"),
        "{}",
        lab.read_log("c1.log")
    );
    // From another (routed) bridge: the container sees that client's real address.
    lab.ctl_ok(&[
        "add-br",
        "br2",
        "--subnet",
        "10.2.0.0/24",
        "--gateway",
        "10.2.0.1",
    ])?;
    lab.container("sw", "c3", "v3", "10.2.0.7/24", Some("10.2.0.1"))?;
    lab.ctl_ok(&["add-port", "br2", "v3"])?;
    ensure!(
        curl(&lab, "c3", "http://198.51.100.2:8080/")? == "200",
        "published port not reachable from another bridge"
    );
    ensure!(
        lab.read_log("c1.log").contains("10.2.0.7 - -"),
        "{}",
        lab.read_log("c1.log")
    );
    // Hairpin from a neighbour on the same bridge, through the outside address.
    ensure!(curl(&lab, "c2", "http://198.51.100.2:8080/")? == "200");
    ensure!(
        lab.read_log("c1.log").contains("10.0.0.1 - -"),
        "hairpin not source-NATed"
    );
    let ct = lab.ctl_json(&["ct-show"])?;
    ensure!(
        ct.as_array()
            .is_some_and(|a| a.iter().any(|e| e["nat_dst"] == "10.0.0.5:80")),
        "{ct}"
    );
    let published = lab.ctl_ok(&["list-published"])?;
    ensure!(
        published == "PROTO  LISTEN  TARGET\ntcp    *:8080  10.0.0.5:80\n",
        "{published}"
    );
    lab.ctl_ok(&["unpublish", "tcp", "8080"])?;
    ensure!(
        curl(&lab, "out", "http://198.51.100.2:8080/")? != "200",
        "still published"
    );
    Ok(())
}

fn udp_ping_and_tcp_through_nat() -> Result<()> {
    let mut lab = nat_lab(None)?;
    lab.assert_ping("c1", "198.51.100.1")?;
    // UDP: a DNS server outside (our own vswitchd would be circular; use a tiny
    // python UDP echo) answers through the masquerade.
    lab.spawn(
        "out",
        "python3",
        &["-c", "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.1',7))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(a[0].encode()+b' '+d,a)"],
        "echo.log",
    )?;
    let got = wait_until(Duration::from_secs(10), || {
        lab.sh_out("c1", "timeout 3 python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1)\ns.sendto(b'hi',('198.51.100.1',7))\nprint(s.recv(100).decode())\"")
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("198.51.100.2 hi"))
            .unwrap_or(false)
    });
    ensure!(
        got,
        "UDP echo did not come back through NAT (or showed the inside address)"
    );
    // TCP bulk (GSO super-frames with partial checksums through the rewrite).
    lab.iperf_server("out", "198.51.100.1")?;
    let bytes = lab.iperf_bytes("c1", "198.51.100.1")?;
    ensure!(
        bytes > 1_000_000,
        "TCP through NAT moved only {bytes} bytes"
    );
    Ok(())
}

fn conntrack_cap_holds() -> Result<()> {
    let lab = nat_lab(Some("16"))?;
    lab.assert_ping("c1", "198.51.100.1")
        .context("before the flood")?;
    // 200 UDP flows from distinct ports: the table stays at its cap.
    lab.sh("c1", "timeout 20 python3 -c \"import socket\nfor p in range(20000, 20200):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n s.bind(('10.0.0.5',p))\n s.sendto(b'x',('198.51.100.1',9))\n s.close()\"")?;
    let ct = lab.ctl_json(&["ct-show"])?;
    let n = ct.as_array().map(Vec::len).unwrap_or(0);
    ensure!(n > 0 && n <= 32, "{n} connections tracked with --ct-max 16");
    let show = lab.ctl_json(&["show"])?;
    ensure!(
        show["ct_evictions"].as_u64().unwrap_or(0) > 0,
        "evictions not counted: {show}"
    );
    // New connections still work after the flood (oldest entries were evicted).
    lab.assert_ping("c1", "198.51.100.1")
        .context("after the flood")?;
    Ok(())
}

fn nat_errors() -> Result<()> {
    let lab = nat_lab(None)?;
    lab.ctl_ok(&["publish", "tcp", "8080", "10.0.0.5:80"])?;
    let before = lab.ctl_ok(&["--json", "list-published"])?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["publish", "tcp", "8080", "10.0.0.6:80"],
            "error: tcp port 8080 is already published (to 10.0.0.5:80)",
        ),
        (
            &["publish", "tcp", "8081", "192.168.9.9:80"],
            "error: target 192.168.9.9 is outside every bridge's subnet",
        ),
        (
            &["publish", "sctp", "1", "10.0.0.5:80"],
            "error: bad protocol \"sctp\": expected tcp or udp",
        ),
        (
            &["masquerade", "br9", "--out", "wan"],
            "error: no such bridge: br9",
        ),
        (
            &["masquerade", "br1", "--out", "wan"],
            "error: bridge br1 is already masqueraded",
        ),
        (
            &["masquerade", "wan", "--out", "wan"],
            "error: a bridge cannot masquerade behind itself: wan",
        ),
        (
            &["unpublish", "udp", "53"],
            "error: udp port 53 is not published",
        ),
    ];
    for (args, want) in cases {
        let o = lab.ctl(args)?;
        ensure!(
            o.code != 0 && o.stderr.trim() == *want,
            "{args:?}: {:?}",
            o.stderr
        );
    }
    ensure!(lab.ctl_ok(&["--json", "list-published"])? == before);
    Ok(())
}

fn icmp_errors_are_translated_for_pmtu() -> Result<()> {
    // The outside host routes to a far network over a 1400-byte link: its
    // fragmentation-needed goes to the router's outside address and must reach the
    // masqueraded container, with the quoted packet translated back.
    let mut lab = nat_lab(None)?;
    lab.add_ns("far")?;
    lab.veth("out", "eth1", "far", "eth0")?;
    lab.sh("out", "ip addr add 203.0.113.1/24 dev eth1 && ip link set eth1 mtu 1400 up && sysctl -qw net.ipv4.ip_forward=1")?;
    lab.sh("far", "ip addr add 203.0.113.10/24 dev eth0 && ip link set eth0 mtu 1400 up && ip route add default via 203.0.113.1")?;
    lab.ctl_ok(&["add-route", "203.0.113.0/24", "--via", "198.51.100.1"])?;
    lab.assert_ping("c1", "203.0.113.10")?;
    let o = lab.sh_out("c1", "ping -c 2 -W 1 -M do -s 1450 203.0.113.10")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(
        text.contains("mtu = 1400") || text.contains("mtu=1400"),
        "PMTU error not translated: {text}"
    );
    Ok(())
}

fn conntrack_entries_expire() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--ct-timeouts", "udp=2,icmp=2"])?;
    lab.masquerade_lab("sw")?;
    lab.assert_ping("c1", "198.51.100.1")?;
    let n = |lab: &Lab| {
        lab.ctl_json(&["ct-show"])
            .map(|v| v.as_array().map_or(0, Vec::len))
    };
    ensure!(n(&lab)? > 0, "no connection tracked");
    ensure!(
        wait_until(Duration::from_secs(10), || n(&lab).is_ok_and(|n| n == 0)),
        "entries did not expire"
    );
    let bad = lab.ctl(&["version"])?;
    ensure!(bad.code == 0);
    Ok(())
}

/// A counter of `/proc/net/snmp` (`group` "Tcp", "Icmp", …) in namespace `ns`.
fn snmp(lab: &Lab, ns: &str, group: &str, field: &str) -> Result<u64> {
    let text = lab.sh(ns, "cat /proc/net/snmp")?;
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (
        lines.next().context("no header")?,
        lines.next().context("no values")?,
    );
    let i = names
        .split_whitespace()
        .position(|n| n == field)
        .with_context(|| format!("no {group} {field}"))?;
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("bad {group} {field}"))
}

/// Bytes `secs` seconds of iperf3 TCP from `from` to `ip` delivered.
fn iperf(lab: &Lab, from: &str, ip: &str, secs: u32) -> Result<u64> {
    let out = lab.sh(
        from,
        &format!("timeout {} iperf3 -c {ip} -t {secs} -J", secs + 20),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bytes"]
        .as_u64()
        .context("no iperf3 result")
}

/// A 4-second iperf3 run from `from` to `ip` (bytes received), watching the fast
/// path's NAT entries while it runs: the entries last seen, or the first that has an
/// entry matching `want`. They must be read during the transfer: its FINs move the
/// connections to Closing, and the next walk (once a second) deletes their entries,
/// so a look after iperf3 returns races the walk (and loses under load).
fn iperf_watching(
    lab: &Lab,
    from: &str,
    ip: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Result<(u64, Vec<serde_json::Value>)> {
    std::thread::scope(|s| {
        let run = s.spawn(|| iperf(lab, from, ip, 4));
        let mut seen = Vec::new();
        // Bounded: at most 40 looks, and none once iperf3 has returned.
        for _ in 0..40 {
            if run.is_finished() {
                break;
            }
            seen = fp_nat_entries(lab)?;
            if seen.iter().any(&want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let bytes = run
            .join()
            .map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
        Ok((bytes, seen))
    })
}

/// The fast path's NAT entries (`fastpath-show --json`).
fn fp_nat_entries(lab: &Lab) -> Result<Vec<serde_json::Value>> {
    let v = lab.ctl_json(&["fastpath-show"])?;
    Ok(v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["nat"].is_object())
        .cloned()
        .collect())
}

fn hits(e: &serde_json::Value) -> u64 {
    e["packets"].as_u64().unwrap_or(0)
}

/// TCP bulk through masquerade (c1 → outside) and through a published port (outside →
/// c1) with the kernel fast path translating: the egress veths on vswitchd's side have
/// transmit checksumming off, so the super-frames the program rewrote (partial
/// checksums: only the pseudo-header part is updated) are checksummed in software on
/// the way out and every segment is verified by the receiving TCP. Most bytes take the
/// kernel, the connections' NAT entries are hit, and the FINs closing them went up to
/// vswitchd (conntrack shows the connections closing, not established).
fn fastpath_tcp_through_masquerade_and_published_port() -> Result<()> {
    let mut lab = nat_lab_with(&["--fastpath", "on"])?;
    lab.sh(
        "sw",
        "ethtool -K vo tx off >/dev/null && ethtool -K v1 tx off >/dev/null",
    )?;
    lab.assert_ping("c1", "198.51.100.1")?;
    lab.assert_ping("out", "198.51.100.2")?;
    let csum_errors = |lab: &Lab| -> Result<u64> {
        Ok(snmp(lab, "out", "Tcp", "InCsumErrors")? + snmp(lab, "c1", "Tcp", "InCsumErrors")?)
    };
    let fast = |lab: &Lab, port: &str| -> Result<u64> {
        let v = lab.ctl_json(&["stats", port])?;
        Ok(v[0]["fastpath_rx_bytes"].as_u64().unwrap_or(0))
    };
    // Masquerade: data c1 → out, out of vo.
    lab.iperf_server("out", "198.51.100.1")?;
    let before = fast(&lab, "v1")?;
    let masq_hit = |x: &serde_json::Value| {
        x["nat"]["proto"] == "tcp"
            && x["nat"]["nat_src"]
                .as_str()
                .is_some_and(|s| s.starts_with("198.51.100.2:"))
            && x["nat"]["dst"] == "198.51.100.1:5201"
            && hits(x) > 0
    };
    let (bytes, seen) = iperf_watching(&lab, "c1", "198.51.100.1", masq_hit)?;
    let kernel = fast(&lab, "v1")? - before;
    ensure!(bytes > 10_000_000, "masquerade: only {bytes} bytes");
    ensure!(
        kernel * 2 >= bytes,
        "masquerade: {kernel} of {bytes} bytes through the kernel\n{}",
        lab.ctl_ok(&["fastpath-show"])?
    );
    ensure!(
        seen.iter().any(masq_hit),
        "no masquerade entry hit: {seen:#?}"
    );
    // Published port: data out → c1, out of v1.
    lab.ctl_ok(&["publish", "tcp", "5201", "10.0.0.5:5201"])?;
    lab.iperf_server("c1", "10.0.0.5")?;
    let before = fast(&lab, "vo")?;
    let pub_hit = |x: &serde_json::Value| {
        x["nat"]["dst"] == "198.51.100.2:5201"
            && x["nat"]["nat_dst"] == "10.0.0.5:5201"
            && hits(x) > 0
    };
    let (bytes, seen) = iperf_watching(&lab, "out", "198.51.100.2", pub_hit)?;
    let kernel = fast(&lab, "vo")? - before;
    ensure!(bytes > 10_000_000, "published: only {bytes} bytes");
    ensure!(
        kernel * 2 >= bytes,
        "published: {kernel} of {bytes} bytes through the kernel\n{}",
        lab.ctl_ok(&["fastpath-show"])?
    );
    ensure!(
        seen.iter().any(pub_hit),
        "no published-port entry hit: {seen:#?}"
    );
    ensure!(
        csum_errors(&lab)? == 0,
        "TCP checksum errors at the receivers"
    );
    // The FINs went up: every iperf3 connection is closing in vswitchd's conntrack.
    let ct = lab.ctl_json(&["ct-show"])?;
    let conns: Vec<_> = ct
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["proto"] == "tcp")
        .collect();
    ensure!(conns.len() >= 4, "iperf3 connections not tracked: {ct:#}");
    ensure!(
        conns.iter().all(|c| c["state"] == "closing"),
        "a FIN did not reach vswitchd: {ct:#}"
    );
    Ok(())
}

/// Pings through masquerade once the echo connection is cached: every request reaches
/// the outside host exactly once (its ICMP counters) and every reply c1 once (no
/// duplicates), while the kernel translates them.
fn fastpath_ping_through_nat_counted_once() -> Result<()> {
    let lab = nat_lab_with(&["--fastpath", "on"])?;
    lab.assert_ping("c1", "198.51.100.1")?;
    let echos = |lab: &Lab| snmp(lab, "out", "Icmp", "InEchos");
    let before = echos(&lab)?;
    let out = lab.sh_out("c1", "ping -c 100 -i 0.02 -W 2 198.51.100.1")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let s = vswitch_integration::PingSummary::parse(&text)
        .with_context(|| format!("no summary: {text}"))?;
    ensure!(s.received == 100 && s.duplicates == 0, "{text}");
    let got = echos(&lab)? - before;
    ensure!(
        got == 100,
        "the outside host got {got} echo requests for 100"
    );
    // The human view, for docs/cli.md.
    println!("{}", lab.ctl_ok(&["fastpath-show"])?);
    let e = fp_nat_entries(&lab)?;
    for dir in ["10.0.0.5:", "198.51.100.1:"] {
        ensure!(
            e.iter().any(|x| x["nat"]["proto"] == "icmp"
                && x["nat"]["src"].as_str().is_some_and(|s| s.starts_with(dir))
                && hits(x) > 0),
            "no ICMP entry from {dir} hit: {e:#?}"
        );
    }
    Ok(())
}

/// The kernel's hits keep the connection alive in vswitchd's conntrack: c1 sends one
/// datagram, the outside host answers 30 times over 9 s (three times the 3 s UDP
/// timeouts), c1 never sends again. Every answer after the first few is translated by
/// the kernel only; if the hits did not refresh the connection it would expire after
/// 3 s and the rest would be dropped (masquerade cannot re-create it from outside).
fn fastpath_hits_keep_the_connection_alive() -> Result<()> {
    let mut lab = nat_lab_with(&["--fastpath", "on", "--ct-timeouts", "udp=3,udp_stream=3"])?;
    lab.assert_ping("c1", "198.51.100.1")?;
    let fast = |lab: &Lab| -> Result<u64> {
        let v = lab.ctl_json(&["stats", "vo"])?;
        Ok(v[0]["fastpath_rx_packets"].as_u64().unwrap_or(0))
    };
    let before = fast(&lab)?;
    let script = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.1',7))\nd,a=s.recvfrom(100)\nfor i in range(30):\n s.sendto(b'r%d'%i,a)\n time.sleep(0.3)\n";
    lab.spawn("out", "python3", &["-c", script], "talker.log")?;
    ensure!(
        lab.wait_listening("out", vswitch_integration::Proto::Udp, 7),
        "UDP talker did not start"
    );
    let out = lab.sh("c1", "timeout 25 python3 -c \"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.0.0.5',5555))\ns.sendto(b'hi',('198.51.100.1',7))\ns.settimeout(1)\nn=0\nend=time.time()+12\nwhile time.time()<end:\n try:\n  s.recv(100)\n  n+=1\n except socket.timeout:\n  pass\nprint(n)\"")?;
    let n: u32 = out.trim().parse().context("count")?;
    ensure!(
        n == 30,
        "{n} of 30 answers reached c1\n{}",
        lab.ctl_ok(&["ct-show"])?
    );
    // The entry itself is gone by now (the connection expired 3 s after the last
    // answer, and the walk deleted it); the port's fast-path counter remains.
    let kernel = fast(&lab)? - before;
    ensure!(
        kernel >= 20,
        "only {kernel} of the 30 answers took the kernel"
    );
    Ok(())
}
