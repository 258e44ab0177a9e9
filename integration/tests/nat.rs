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
    ])
}

/// br1 10.0.0.0/24 (gw .1, isolated) with c1 10.0.0.5 and c2 10.0.0.6; wan
/// 198.51.100.0/24 (router .2) with the outside host 198.51.100.1.
fn nat_lab(ct_max: Option<&str>) -> Result<Lab> {
    let mut lab = Lab::new()?;
    match ct_max {
        Some(n) => lab.start_switch_with("sw", &["--ct-max", n])?,
        None => lab.start_switch("sw")?,
    }
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
