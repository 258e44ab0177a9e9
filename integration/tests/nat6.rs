//! NAT66, opt-in, with real clients: `publish` on the uplink's IPv6 address reaching a
//! container (curl -6, iperf3 -6), `masquerade6` (the outside server logs the router's
//! address; ping -6 and TCP get answers without a route back), the routed default
//! without it (the server sees the container's own address), isolation, a bounded
//! conntrack6 under a flood of new flows, and the CLI's one-line errors.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        ("publish6_curl_and_iperf3", publish6_curl_and_iperf3),
        (
            "masquerade6_and_the_routed_default",
            masquerade6_and_the_routed_default,
        ),
        ("conntrack6_cap_holds", conntrack6_cap_holds),
        ("nat6_errors", nat6_errors),
    ])
}

/// Container `name` on port `port` of bridge `br` with fd00:N::HOST/64 (no DAD wait)
/// and a default route via fd00:N::1, plus 10.N.0.HOST/24.
fn container6(lab: &mut Lab, br: &str, name: &str, port: &str, n: u8, host: u8) -> Result<()> {
    lab.container(
        "sw",
        name,
        port,
        &format!("10.{n}.0.{host}/24"),
        Some(&format!("10.{n}.0.1")),
    )?;
    lab.sh(
        name,
        &format!(
            "sysctl -qw net.ipv6.conf.eth0.accept_ra=0 && ip -6 addr add fd00:{n}::{host}/64 dev eth0 nodad && ip -6 route add default via fd00:{n}::1"
        ),
    )?;
    lab.ctl_ok(&["add-port", br, port])?;
    Ok(())
}

/// br1 (10.1/fd00:1, c1 = ::5) and the dual-stack uplink `wan` (198.51.100.0/24 and
/// 2001:db8:ff::/64, router ::2) with the outside host `out` (2001:db8:ff::1, no
/// route to fd00:1::/64 unless a test adds it).
fn lab6(ct_max: Option<&str>) -> Result<Lab> {
    let mut lab = Lab::new()?;
    match ct_max {
        Some(n) => lab.start_switch_with("sw", &["--ct-max", n])?,
        None => lab.start_switch("sw")?,
    }
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
        "--subnet",
        "fd00:1::/64",
        "--gateway",
        "fd00:1::1",
    ])?;
    container6(&mut lab, "br1", "c1", "v1", 1, 5)?;
    lab.ctl_ok(&[
        "add-br",
        "wan",
        "--subnet",
        "198.51.100.0/24",
        "--gateway",
        "198.51.100.2",
        "--subnet",
        "2001:db8:ff::/64",
        "--gateway",
        "2001:db8:ff::2",
    ])?;
    lab.container("sw", "out", "vo", "198.51.100.1/24", None)?;
    lab.sh(
        "out",
        "sysctl -qw net.ipv6.conf.eth0.accept_ra=0 && ip -6 addr add 2001:db8:ff::1/64 dev eth0 nodad",
    )?;
    lab.ctl_ok(&["add-port", "wan", "vo"])?;
    Ok(lab)
}

fn http_server(lab: &mut Lab, ns: &str, ip: &str, port: &str, log: &str) -> Result<()> {
    lab.spawn(ns, "python3", &["-m", "http.server", "-b", ip, port], log)?;
    let ok = wait_until(Duration::from_secs(10), || {
        lab.sh_out(ns, &format!("ss -ltn | grep -q '\\[{ip}\\]:{port}'"))
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    ensure!(ok, "http.server on [{ip}]:{port} did not start");
    Ok(())
}

/// HTTP status of `curl -6` to `url` from `ns` ("000" when it failed).
fn curl6(lab: &Lab, ns: &str, url: &str) -> Result<String> {
    let o = lab.sh_out(
        ns,
        &format!("curl -6 -g -s -m 5 -o /dev/null -w '%{{http_code}}' '{url}'"),
    )?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn publish6_curl_and_iperf3() -> Result<()> {
    let mut lab = lab6(None)?;
    http_server(&mut lab, "c1", "fd00:1::5", "80", "c1.log")?;
    let url = "http://[2001:db8:ff::2]:8080/";
    ensure!(
        curl6(&lab, "out", url)? != "200",
        "reachable before publish"
    );
    lab.ctl_ok(&["publish", "tcp", "[2001:db8:ff::2]:8080", "[fd00:1::5]:80"])?;
    lab.ctl_ok(&[
        "publish",
        "tcp",
        "[2001:db8:ff::2]:5201",
        "[fd00:1::5]:5201",
    ])?;
    // `out` has no route to fd00:1::/64: only the translation brings the answer back.
    ensure!(curl6(&lab, "out", url)? == "200", "{}", lab.drops());
    let log = lab.read_log("c1.log");
    ensure!(
        log.contains("2001:db8:ff::1 - -"),
        "the container must see the real client: {log}"
    );
    let ct = lab.ctl_json(&["ct-show"])?;
    ensure!(
        ct.as_array().is_some_and(|a| a.iter().any(|e| {
            e["nat_dst"] == "[fd00:1::5]:80"
                && e["src"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("[2001:db8:ff::1]:"))
        })),
        "{ct}"
    );
    let published = lab.ctl_ok(&["list-published"])?;
    println!("{published}");
    ensure!(
        published.contains("tcp    [2001:db8:ff::2]:8080  [fd00:1::5]:80"),
        "{published}"
    );
    // iperf3 -6 to the published port.
    lab.iperf_server("c1", "fd00:1::5")?;
    let bytes = lab.iperf_bytes("out", "2001:db8:ff::2")?;
    ensure!(
        bytes > 0,
        "iperf3 -6 through the published port moved nothing"
    );
    // Persisted: after a restart the port is still published.
    lab.restart_switch()?;
    ensure!(
        lab.ctl_ok(&["list-published"])? == published,
        "not persisted"
    );
    let ok = wait_until(Duration::from_secs(10), || {
        curl6(&lab, "out", url).is_ok_and(|c| c == "200")
    });
    ensure!(ok, "published port gone after restart: {}", lab.drops());
    lab.ctl_ok(&["unpublish", "tcp", "[2001:db8:ff::2]:8080"])?;
    ensure!(curl6(&lab, "out", url)? != "200", "still published");
    Ok(())
}

fn masquerade6_and_the_routed_default() -> Result<()> {
    let mut lab = lab6(None)?;
    http_server(&mut lab, "out", "2001:db8:ff::1", "8000", "out.log")?;
    let url = "http://[2001:db8:ff::1]:8000/";
    // Routed (the default): the outside routes the prefix to the router and sees the
    // container's own address.
    lab.sh("out", "ip -6 route add fd00:1::/64 via 2001:db8:ff::2")?;
    lab.assert_ping("c1", "2001:db8:ff::1")
        .context("routed ping -6")?;
    ensure!(curl6(&lab, "c1", url)? == "200", "{}", lab.drops());
    let log = lab.read_log("out.log");
    ensure!(log.contains("fd00:1::5 - -"), "routed: {log}");
    // masquerade6, and no route back: the router's address is the source.
    lab.sh("out", "ip -6 route del fd00:1::/64")?;
    ensure!(
        !lab.ping_once("c1", "2001:db8:ff::1"),
        "answered without a route"
    );
    lab.ctl_ok(&["masquerade6", "br1", "--out", "wan"])?;
    lab.assert_ping("c1", "2001:db8:ff::1")
        .context("ping -6 through masquerade6")?;
    ensure!(curl6(&lab, "c1", url)? == "200", "{}", lab.drops());
    let log = lab.read_log("out.log");
    ensure!(
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("2001:db8:ff::2 - -")),
        "masquerade6: {log}"
    );
    lab.iperf_server("out", "2001:db8:ff::1")?;
    ensure!(
        lab.iperf_bytes("c1", "2001:db8:ff::1")? > 0,
        "iperf3 -6 out"
    );
    let show = lab.ctl_json(&["show"])?;
    let br1 = show["bridges"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == "br1"))
        .context("br1 in show")?;
    ensure!(br1["masquerade6"] == "wan", "{br1}");
    println!("{}", lab.ctl_ok(&["show"])?);
    println!("{}", lab.ctl_ok(&["ct-show"])?);
    // Isolation holds: an isolated bridge reaches the outside through masquerade6
    // only, never br1's containers (nor they it).
    lab.ctl_ok(&[
        "add-br",
        "br3",
        "--subnet",
        "10.3.0.0/24",
        "--gateway",
        "10.3.0.1",
        "--subnet",
        "fd00:3::/64",
        "--gateway",
        "fd00:3::1",
        "--isolated",
    ])?;
    container6(&mut lab, "br3", "c3", "v3", 3, 5)?;
    lab.assert_ping("c3", "fd00:3::1")?;
    lab.assert_no_ping("c3", "2001:db8:ff::1")?;
    lab.ctl_ok(&["masquerade6", "br3", "--out", "wan"])?;
    lab.assert_ping("c3", "2001:db8:ff::1")
        .context("isolated bridge through masquerade6")?;
    lab.assert_no_ping("c3", "fd00:1::5")?;
    lab.assert_no_ping("c1", "fd00:3::5")?;
    // Undone: the outside is unreachable again without a route back.
    lab.ctl_ok(&["del-masquerade6", "br1"])?;
    ensure!(curl6(&lab, "c1", url)? != "200", "still masqueraded");
    Ok(())
}

fn conntrack6_cap_holds() -> Result<()> {
    let lab = lab6(Some("16"))?;
    lab.ctl_ok(&["masquerade6", "br1", "--out", "wan"])?;
    lab.assert_ping("c1", "2001:db8:ff::1")
        .context("before the flood")?;
    // 300 UDP flows from distinct ports: the table stays at its cap.
    lab.sh("c1", "timeout 20 python3 -c \"import socket\nfor p in range(20000, 20300):\n s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n s.bind(('fd00:1::5',p))\n s.sendto(b'x',('2001:db8:ff::1',9))\n s.close()\"")?;
    let ct = lab.ctl_json(&["ct-show"])?;
    let n = ct.as_array().map(Vec::len).unwrap_or(0);
    let show = lab.ctl_json(&["show"])?;
    let cap = show["ct6_capacity"].as_u64().unwrap_or(0);
    ensure!(
        n > 0 && n as u64 <= cap && cap <= 64,
        "{n} connections tracked, capacity {cap}, with --ct-max 16"
    );
    ensure!(
        show["ct6_evictions"].as_u64().unwrap_or(0) > 0,
        "evictions not counted: {show}"
    );
    lab.assert_ping("c1", "2001:db8:ff::1")
        .context("after the flood")?;
    Ok(())
}

fn nat6_errors() -> Result<()> {
    let lab = lab6(None)?;
    lab.ctl_ok(&[
        "add-br",
        "br4",
        "--subnet",
        "10.4.0.0/24",
        "--gateway",
        "10.4.0.1",
    ])?;
    lab.ctl_ok(&["publish", "tcp", "[2001:db8:ff::2]:8080", "[fd00:1::5]:80"])?;
    let before = lab.ctl_ok(&["--json", "list-published"])?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["publish", "tcp", "198.51.100.2:8080", "[fd00:1::5]:80"],
            "error: listening address 198.51.100.2:8080 is IPv4 but target [fd00:1::5]:80 is IPv6: both must be of one family",
        ),
        (
            &["publish", "tcp", "[2001:db8:ff::2]:8081", "10.1.0.5:80"],
            "error: listening address [2001:db8:ff::2]:8081 is IPv6 but target 10.1.0.5:80 is not: publish an IPv6 address to an IPv6 target, [IP]:PORT",
        ),
        (
            &["publish", "tcp", "8081", "[fd00:1::5]:80"],
            "error: target [fd00:1::5]:80 is IPv6: it needs an IPv6 listening address, [IP]:PORT (the uplink's IPv6 gateway)",
        ),
        (
            &["publish", "tcp", "[2001:db8:ff::2]:8081", "fd00:1::5:80"],
            "error: bad address \"fd00:1::5:80\": write an IPv6 address in brackets, [IP]:PORT",
        ),
        (
            &["publish", "tcp", "[2001:db8:ff::9]:8081", "[fd00:1::5]:80"],
            "error: 2001:db8:ff::9 is not a gateway address of any bridge",
        ),
        (
            &["publish", "tcp", "[2001:db8:ff::2]:8080", "[fd00:1::6]:80"],
            "error: tcp port [2001:db8:ff::2]:8080 is already published (to [fd00:1::5]:80)",
        ),
        (
            &["publish", "tcp", "[2001:db8:ff::2]:8081", "[fd00:9::5]:80"],
            "error: target fd00:9::5 is outside every bridge's subnet",
        ),
        (
            &["masquerade6", "br4", "--out", "wan"],
            "error: bridge br4 has no IPv6 --subnet to masquerade6",
        ),
        (
            &["masquerade6", "br1", "--out", "br4"],
            "error: bridge br4 has no IPv6 gateway address to masquerade6 behind (add-br ... --subnet IPV6/LEN --gateway IPV6)",
        ),
        (
            &["masquerade6", "br9", "--out", "wan"],
            "error: no such bridge: br9",
        ),
        (
            &["del-masquerade6", "br1"],
            "error: bridge br1 is not masqueraded (IPv6)",
        ),
        (
            &["unpublish", "tcp", "[2001:db8:ff::2]:9999"],
            "error: tcp port [2001:db8:ff::2]:9999 is not published",
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
    lab.ctl_ok(&["del-masquerade6", "br1", "--if-exists"])?;
    Ok(())
}
