//! IPv6 on the router with real clients: ping -6 (gateway, link-local, across bridges,
//! through a static route), the kernel's SLAAC and rdisc6 reading the Router
//! Advertisements, ICMPv6 errors (time exceeded, no route, packet too big with
//! tracepath -6), isolation, and the CLI's dual-stack errors.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "gateway_answers_ndp_and_ping6",
            gateway_answers_ndp_and_ping6,
        ),
        ("routes_ipv6_between_bridges", routes_ipv6_between_bridges),
        (
            "slaac_from_router_advertisements",
            slaac_from_router_advertisements,
        ),
        ("icmpv6_errors", icmpv6_errors),
        ("packet_too_big_on_small_mtu", packet_too_big_on_small_mtu),
        ("isolated_bridge_ipv6", isolated_bridge_ipv6),
        (
            "static_ipv6_route_via_next_hop",
            static_ipv6_route_via_next_hop,
        ),
        ("dual_stack_cli", dual_stack_cli),
        ("dns_aaaa_over_ipv6", dns_aaaa_over_ipv6),
        ("dhcpv6_dhclient_and_flood", dhcpv6_dhclient_and_flood),
        (
            "dhcpv6_names_events_and_reservations",
            dhcpv6_names_events_and_reservations,
        ),
        (
            "iperf3_ipv6_gso_through_router",
            iperf3_ipv6_gso_through_router,
        ),
        ("dns_over_tcp_at_ipv6_gateway", dns_over_tcp_at_ipv6_gateway),
        ("lock_ip_dual_stack", lock_ip_dual_stack),
    ])
}

/// A dual-stack bridge: `add-br BR --subnet 10.N.0.0/24 --gateway 10.N.0.1 --subnet
/// fd00:N::/64 --gateway fd00:N::1` (plus `extra`).
fn dual_br(lab: &Lab, br: &str, n: u8, extra: &[&str]) -> Result<()> {
    let (s4, g4) = (format!("10.{n}.0.0/24"), format!("10.{n}.0.1"));
    let (s6, g6) = (format!("fd00:{n}::/64"), format!("fd00:{n}::1"));
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
    Ok(())
}

/// Container `name` on port `port` with a static IPv4 and IPv6 address (no DAD wait)
/// and default routes via the gateways `10.N.0.1` and `fd00:N::1`.
fn dual_container(lab: &mut Lab, name: &str, port: &str, n: u8, host: u8) -> Result<()> {
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
    Ok(())
}

/// br1 (10.1/fd00:1) with c1 (::5), br2 (10.2/fd00:2) with c2 (::5).
fn two_nets(isolated: bool) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    dual_br(&lab, "br1", 1, if isolated { &["--isolated"] } else { &[] })?;
    dual_br(&lab, "br2", 2, &[])?;
    dual_container(&mut lab, "c1", "v1", 1, 5)?;
    dual_container(&mut lab, "c2", "v2", 2, 5)?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    Ok(lab)
}

fn gateway_answers_ndp_and_ping6() -> Result<()> {
    let lab = two_nets(false)?;
    lab.assert_ping("c1", "fd00:1::1")?;
    let neigh = lab.sh("c1", "ip -j -6 neigh show fd00:1::1")?;
    let v: serde_json::Value = serde_json::from_str(&neigh)?;
    let mac = v[0]["lladdr"]
        .as_str()
        .context("gateway not in the neighbour table")?;
    ensure!(mac.starts_with("02:76:"), "router MAC {mac}");
    // The router's link-local address (EUI-64 of that MAC) answers on the link.
    let m: Vec<u8> = mac
        .split(':')
        .filter_map(|x| u8::from_str_radix(x, 16).ok())
        .collect();
    ensure!(m.len() == 6, "{mac}");
    let ll = format!(
        "fe80::{:x}:{:x}ff:fe{:02x}:{:x}%eth0",
        u16::from(m[0] ^ 2) << 8 | u16::from(m[1]),
        m[2],
        m[3],
        u16::from(m[4]) << 8 | u16::from(m[5])
    );
    lab.assert_ping("c1", &ll)?;
    // IPv4 on the same bridges is untouched.
    lab.assert_ping("c1", "10.1.0.1")?;
    let show = lab.ctl_ok(&["show"])?;
    ensure!(
        show.contains(
            "Bridge br1 (subnet 10.1.0.0/24, gateway 10.1.0.1, subnet fd00:1::/64, gateway fd00:1::1, mtu 1500)"
        ),
        "{show}"
    );
    let j = lab.ctl_json(&["list-br"])?;
    let br1 = j
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == "br1"))
        .context("br1 in list-br --json")?;
    ensure!(
        br1["subnet6"] == "fd00:1::/64"
            && br1["gateway6"] == "fd00:1::1"
            && br1["subnet"] == "10.1.0.0/24",
        "{br1}"
    );
    Ok(())
}

fn routes_ipv6_between_bridges() -> Result<()> {
    let lab = two_nets(false)?;
    lab.assert_ping("c1", "fd00:2::5")?;
    lab.assert_ping("c2", "fd00:1::5")?;
    lab.assert_ping("c1", "fd00:2::1")?;
    // Hop limit decremented once by the router: the reply arrives with 64 - 1.
    let out = lab.sh("c1", "ping -6 -c 1 -W 1 fd00:2::5")?;
    ensure!(out.contains("ttl=63"), "{out}");
    // IPv4 between the same bridges still routes.
    lab.assert_ping("c1", "10.2.0.5")?;
    let routes = lab.ctl_ok(&["list-routes"])?;
    ensure!(
        routes.contains("fd00:1::/64") && routes.contains("fd00:2::/64"),
        "{routes}"
    );
    Ok(())
}

fn slaac_from_router_advertisements() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    dual_br(&lab, "br1", 1, &[])?;
    lab.add_ns("h")?;
    lab.veth("sw", "vh", "h", "eth0")?;
    lab.ctl_ok(&["add-port", "br1", "vh"])?;
    // No address but the link-local one: the kernel's SLAAC does the rest.
    lab.sh(
        "h",
        "sysctl -qw net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.eth0.accept_dad=0 && ip link set eth0 up",
    )?;
    let addr = || -> Option<String> {
        let out = lab
            .sh("h", "ip -j -6 addr show dev eth0 scope global")
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v[0]["addr_info"]
            .as_array()?
            .iter()
            .filter_map(|a| a["local"].as_str())
            .find(|a| a.starts_with("fd00:1:"))
            .map(str::to_string)
    };
    ensure!(
        wait_until(Duration::from_secs(20), || addr().is_some()),
        "no SLAAC address: {}\nvswitchd log:\n{}",
        lab.sh("h", "ip -6 addr; ip -6 route").unwrap_or_default(),
        lab.log_tail(20)
    );
    let a = addr().context("SLAAC address")?;
    let route = lab.sh("h", "ip -6 route show default")?;
    ensure!(
        route.contains("via fe80::") && route.contains("dev eth0") && route.contains("proto ra"),
        "default route: {route}"
    );
    // The advertised MTU, and the host reaches the gateway from its own address.
    let mtu = lab.sh("h", "cat /proc/sys/net/ipv6/conf/eth0/mtu")?;
    ensure!(mtu.trim() == "1500", "{mtu}");
    lab.assert_ping("h", "fd00:1::1")?;
    // rdisc6 solicits and prints the advertisement: prefix, MTU, RDNSS = gateway.
    let ra = lab.sh("h", "rdisc6 -1 -r 3 -w 1000 eth0")?;
    ensure!(
        ra.contains("fd00:1::/64")
            && ra.contains("Recursive DNS server")
            && ra.contains("fd00:1::1")
            && ra.contains("MTU")
            && ra.contains("1500"),
        "{ra}"
    );
    println!("SLAAC address {a}; {}", route.trim());
    Ok(())
}

fn icmpv6_errors() -> Result<()> {
    let lab = two_nets(false)?;
    lab.assert_ping("c1", "fd00:2::5")?;
    // Hop limit 1: time exceeded from the router.
    let out = lab.sh_out("c1", "ping -6 -c 1 -W 2 -t 1 fd00:2::5")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("From fd00:1::1") && text.contains("Time exceeded"),
        "{text}"
    );
    // No route: destination unreachable.
    let out = lab.sh_out("c1", "ping -6 -c 1 -W 2 fd00:99::1")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("From fd00:1::1") && text.contains("Destination unreachable"),
        "{text}"
    );
    // A neighbour that never answers: address unreachable after the solicitations.
    let out = lab.sh_out("c1", "ping -6 -c 1 -W 6 fd00:2::77")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("From fd00:1::1") && text.contains("Address unreachable"),
        "{text}"
    );
    Ok(())
}

fn packet_too_big_on_small_mtu() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    dual_br(&lab, "br1", 1, &[])?;
    dual_br(&lab, "br2", 2, &["--mtu", "1280"])?;
    dual_container(&mut lab, "c1", "v1", 1, 5)?;
    dual_container(&mut lab, "c2", "v2", 2, 5)?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    lab.assert_ping("c1", "fd00:2::5")?;
    let out = lab.sh_out("c1", "ping -6 -c 1 -W 2 -M do -s 1400 fd00:2::5")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("From fd00:1::1") && text.contains("Packet too big: mtu=1280"),
        "{text}"
    );
    // tracepath -6 learns the path MTU from the router's packet too big.
    lab.sh("c1", "ip -6 route flush cache")?;
    let tp = lab.sh("c1", "tracepath -6 -n -m 4 fd00:2::5")?;
    ensure!(tp.contains("pmtu 1280"), "{tp}");
    // Smaller packets still pass.
    let out = lab.sh("c1", "ping -6 -c 2 -i 0.2 -W 1 -s 1200 fd00:2::5")?;
    ensure!(out.contains("2 received"), "{out}");
    Ok(())
}

fn isolated_bridge_ipv6() -> Result<()> {
    let mut lab = two_nets(true)?;
    dual_container(&mut lab, "c3", "v3", 1, 6)?;
    lab.ctl_ok(&["add-port", "br1", "v3"])?;
    lab.assert_ping("c1", "fd00:1::6")?;
    lab.assert_ping("c1", "fd00:1::1")?;
    lab.assert_no_ping("c1", "fd00:2::5")?;
    lab.assert_no_ping("c1", "fd00:2::1")?;
    lab.assert_no_ping("c2", "fd00:1::5")?;
    let s = lab.ctl_json(&["stats", "v1"])?;
    ensure!(s[0]["drops"]["isolated"].as_u64().unwrap_or(0) > 0, "{s}");
    Ok(())
}

fn static_ipv6_route_via_next_hop() -> Result<()> {
    let mut lab = two_nets(false)?;
    // A router namespace on br2 (fd00:2::254) leading to fd00:3::/64.
    lab.add_ns("r")?;
    lab.veth("sw", "vr", "r", "eth0")?;
    lab.ctl_ok(&["add-port", "br2", "vr"])?;
    lab.add_ns("far")?;
    lab.veth("r", "eth1", "far", "eth0")?;
    lab.sh("r", "sysctl -qw net.ipv6.conf.all.forwarding=1 && ip link set eth0 up && ip link set eth1 up && ip -6 addr add fd00:2::254/64 dev eth0 nodad && ip -6 addr add fd00:3::1/64 dev eth1 nodad && ip -6 route add fd00:1::/64 via fd00:2::1")?;
    lab.sh("far", "ip link set eth0 up && ip -6 addr add fd00:3::5/64 dev eth0 nodad && ip -6 route add default via fd00:3::1")?;
    lab.ctl_ok(&["add-route", "fd00:3::/64", "--via", "fd00:2::254"])?;
    lab.assert_ping("c1", "fd00:3::5")?;
    let routes = lab.ctl_ok(&["list-routes"])?;
    ensure!(
        routes.contains("fd00:3::/64") && routes.contains("fd00:2::254"),
        "{routes}"
    );
    lab.ctl_ok(&["del-route", "fd00:3::/64"])?;
    lab.assert_no_ping("c1", "fd00:3::5")?;
    Ok(())
}

fn dual_stack_cli() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    dual_br(&lab, "br1", 1, &[])?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["add-br", "b", "--subnet", "fd00:5::/64", "--subnet", "fd00:6::/64"],
            "error: --subnet given twice for IPv6 (fd00:5::/64 and fd00:6::/64): at most one per address family",
        ),
        (
            &["add-br", "b", "--subnet", "10.5.0.0/24", "--subnet", "10.6.0.0/24"],
            "error: --subnet given twice for IPv4 (10.5.0.0/24 and 10.6.0.0/24): at most one per address family",
        ),
        (
            &["add-br", "b", "--subnet", "10.5.0.0/24", "--gateway", "fd00:5::1"],
            "error: --gateway fd00:5::1 is IPv6 but the bridge has no IPv6 --subnet",
        ),
        (
            &["add-br", "b", "--subnet", "fd00:5::/64", "--gateway", "fd00:6::1"],
            "error: gateway fd00:6::1 is outside subnet fd00:5::/64",
        ),
        (
            &["add-br", "b", "--subnet", "fd00:1:0:0:8000::/65"],
            "error: subnet fd00:1:0:0:8000::/65 overlaps fd00:1::/64 of bridge br1",
        ),
        (
            &["add-br", "b", "--subnet", "fd00:5::1/64"],
            "error: bad subnet fd00:5::1/64: host bits set, did you mean fd00:5::/64?",
        ),
        (
            &["add-br", "b", "--subnet", "fd00:5::/64", "--mtu", "1000"],
            "error: bad MTU 1000: a bridge with an IPv6 subnet needs at least 1280 (IPv6's minimum)",
        ),
        (
            &["add-route", "fd00:9::/64", "--via", "10.1.0.9"],
            "error: route fd00:9::/64 and next hop 10.1.0.9 are of different address families",
        ),
        (
            &["add-route", "fd00:9::/64", "--via", "fd00:8::9"],
            "error: next hop fd00:8::9 is not inside the subnet of any bridge with a gateway",
        ),
        (
            &["del-route", "fd00:9::/64"],
            "error: no such route: fd00:9::/64",
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
    // Persisted: the IPv6 subnet and a static route survive a restart.
    lab.ctl_ok(&["add-route", "fd00:9::/64", "--via", "fd00:1::9"])?;
    lab.restart_switch()?;
    let j = lab.ctl_json(&["list-br"])?;
    ensure!(j[0]["gateway6"] == "fd00:1::1", "{j}");
    let r = lab.ctl_json(&["list-routes"])?;
    ensure!(
        r.as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["cidr"] == "fd00:9::/64" && x["via"] == "fd00:1::9")),
        "{r}"
    );
    Ok(())
}

fn dns_aaaa_over_ipv6() -> Result<()> {
    let lab = two_nets(false)?;
    lab.ctl_ok(&["add-host", "br1", "web", "fd00:1::5"])?;
    lab.ctl_ok(&["add-host", "br1", "web", "10.1.0.5"])?;
    lab.assert_ping("c1", "fd00:1::1")?;
    let dig = |args: &str| lab.sh("c1", &format!("dig +time=2 +tries=2 {args}"));
    // Over IPv6 at the IPv6 gateway (the RDNSS the RAs announce), and over IPv4.
    let out = dig("+short AAAA web @fd00:1::1")?;
    ensure!(out.trim() == "fd00:1::5", "{out}");
    let out = dig("+short A web.br1 @fd00:1::1")?;
    ensure!(out.trim() == "10.1.0.5", "{out}");
    let out = dig("+short AAAA web @10.1.0.1")?;
    ensure!(out.trim() == "fd00:1::5", "{out}");
    let out = dig("+short -x fd00:1::5 @fd00:1::1")?;
    ensure!(out.trim() == "web.", "{out}");
    let hosts = lab.ctl_ok(&["list-hosts", "br1"])?;
    ensure!(
        hosts.contains("fd00:1::5") && hosts.contains("10.1.0.5"),
        "{hosts}"
    );
    let o = lab.ctl(&["add-host", "br1", "x", "fd00:9::1"])?;
    ensure!(
        o.code != 0
            && o.stderr.trim()
                == "error: address fd00:9::1 is outside subnet fd00:1::/64 of bridge br1",
        "{:?}",
        o.stderr
    );
    // del-host removes the name with both its addresses.
    lab.ctl_ok(&["del-host", "br1", "web"])?;
    let out = dig("AAAA web @fd00:1::1")?;
    ensure!(out.contains("status: NXDOMAIN"), "{out}");
    // UDP to another port of the gateway: port unreachable.
    let out = lab.sh_out("c1", "dig +time=1 +tries=1 -p 5353 web @fd00:1::1")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(!text.contains("ANSWER SECTION"), "{text}");
    Ok(())
}

/// dhclient-script stand-in for `dhclient -6 -sf`: configures the leased address and
/// logs what the server handed out (never touches /etc/resolv.conf).
const DHCLIENT6_SCRIPT: &str = r#"#!/bin/sh
case "$reason" in
BOUND6|RENEW6|REBIND6|REBOOT6)
    ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad
    echo "reason=$reason addr=$new_ip6_address dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search" >> "$LOG6";;
RELEASE6|EXPIRE6|STOP6)
    [ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface"
    echo "reason=$reason" >> "$LOG6";;
esac
exit 0
"#;

/// The events `vswitchctl --json monitor` wrote to `log`.
fn events(lab: &Lab, log: &str) -> Result<Vec<serde_json::Value>> {
    lab.read_log(log)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("event line {l:?} is not JSON")))
        .collect()
}

/// The first event of `kind` matching `f` in `log`, waited for (10 s).
fn wait_event(
    lab: &Lab,
    log: &str,
    kind: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let find = || {
        events(lab, log)
            .ok()?
            .into_iter()
            .find(|e| e["event"] == kind && f(e))
    };
    ensure!(
        wait_until(Duration::from_secs(10), || find().is_some()),
        "no {kind} event; monitor log:\n{}\nvswitchd log:\n{}",
        lab.read_log(log),
        lab.log_tail(30)
    );
    find().context("event gone")
}

/// `dig +short` at the gateway `gw` from `ns`.
fn dig(lab: &Lab, ns: &str, gw: &str, q: &str) -> Result<String> {
    Ok(lab
        .sh(ns, &format!("dig +short +tries=2 +time=2 {q} @{gw}"))?
        .trim()
        .to_string())
}

/// DHCPv6 leases with names, lease events, reservations, with ISC dhclient -6:
/// - a client sending its FQDN (`send fqdn.fqdn "c1"`) is answered AAAA and
///   ip6.arpa PTR at the gateway while its lease lives, gone after its Release;
/// - `monitor --json` shows the lease granted and released (family 6, the DUID, the
///   reason) and the name added and removed;
/// - a client sending no FQDN gets the AAAA of the name its MAC's DHCPv4 lease has;
/// - `dhcp-reserve BR MAC IPV6 NAME` pins the address (persisted, listed) and
///   refuses out-of-range and wrong-family addresses.
fn dhcpv6_names_events_and_reservations() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    dual_br(
        &lab,
        "br1",
        1,
        &["--dhcp", "--dhcp", "fd00:1::100-fd00:1::1ff"],
    )?;
    let ctl = vswitch_integration::bin("vswitchctl")?
        .display()
        .to_string();
    let sock = lab.socket().display().to_string();
    lab.spawn(
        "sw",
        &ctl,
        &["--socket", &sock, "--json", "monitor"],
        "mon.json",
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), || {
            let _ = lab.ctl(&["add-br", "probe"]);
            let _ = lab.ctl(&["del-br", "probe"]);
            lab.read_log("mon.json").contains("probe")
        }),
        "monitor did not subscribe"
    );
    lab.add_ns("d1")?;
    lab.veth("sw", "v1", "d1", "eth0")?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.sh("sw", "ip link set v1 up")?;
    lab.sh("d1", "ip link set lo up && ip link set eth0 up")?;
    ensure!(
        wait_until(Duration::from_secs(10), || lab
            .sh("d1", "ip -6 addr show dev eth0 scope link")
            .is_ok_and(|o| o.contains("fe80::") && !o.contains("tentative"))),
        "d1: no usable link-local address"
    );
    let mac = lab.mac("d1", "eth0")?;
    let dir = lab.dir().to_path_buf();
    let script = dir.join("dhclient6.sh");
    std::fs::write(&script, DHCLIENT6_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let log = dir.join("dhclient6.log");
    let conf = dir.join("dhclient6.conf");
    std::fs::write(
        &conf,
        "send fqdn.fqdn \"c1\";\nsend fqdn.server-update on;\n",
    )?;
    let empty = dir.join("empty.conf");
    std::fs::write(&empty, "")?;
    let dh = |args: &str, cf: &std::path::Path| {
        format!(
            "timeout 30 dhclient -6 {args} -cf {} -e LOG6={} -sf {} -lf {}/d1.leases6 -pf {}/d1.pid6 eth0 2>&1",
            cf.display(),
            log.display(),
            script.display(),
            dir.display(),
            dir.display()
        )
    };
    // The address of the last lease dhclient bound.
    let bound = || -> Result<String> {
        let got = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = got
            .lines()
            .rfind(|l| l.contains("reason=BOUND6"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .with_context(|| format!("dhclient -6 got no lease:\n{got}"))?;
        Ok(addr.to_string())
    };

    // 1. The FQDN becomes AAAA and PTR at the gateway.
    let out = lab.sh_out("d1", &dh("-1", &conf))?;
    let addr = bound().with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    ensure!(addr.starts_with("fd00:1::1"), "{addr}");
    lab.assert_ping("d1", "fd00:1::1")?;
    let aaaa = dig(&lab, "d1", "fd00:1::1", "AAAA c1.br1")?;
    ensure!(aaaa == addr, "dig AAAA c1.br1 said {aaaa:?}, lease {addr}");
    let ptr = dig(&lab, "d1", "fd00:1::1", &format!("-x {addr}"))?;
    ensure!(ptr == "c1.", "PTR of {addr}: {ptr:?}");
    let leases = lab.ctl_json(&["dhcp-leases", "br1"])?;
    let l = leases
        .as_array()
        .and_then(|a| a.iter().find(|l| l["ip"] == addr.as_str()))
        .with_context(|| format!("{addr} not in {leases}"))?;
    ensure!(l["hostname"] == "c1" && l["mac"] == mac.as_str(), "{l}");
    let hosts = lab.ctl_ok(&["list-hosts", "br1"])?;
    ensure!(
        hosts
            .lines()
            .any(|x| x.split_whitespace().collect::<Vec<_>>() == ["c1", addr.as_str(), "dhcp"]),
        "{hosts}"
    );
    let granted = wait_event(&lab, "mon.json", "lease-granted", |e| e["family"] == 6)?;
    ensure!(
        granted["ip"] == addr.as_str()
            && granted["name"] == "c1"
            && granted["mac"] == mac.as_str()
            && granted["duid"].as_str().is_some_and(|d| d.len() > 10)
            && granted["bridge"] == "br1",
        "{granted}"
    );
    wait_event(&lab, "mon.json", "name-added", |e| {
        e["name"] == "c1" && e["ip"] == addr.as_str()
    })?;

    // 2. Released: the name goes, with the events.
    let _ = lab.sh_out("d1", &format!("kill $(cat {}/d1.pid6)", dir.display()));
    lab.sh_out("d1", &dh("-r", &conf))?;
    let released = wait_event(&lab, "mon.json", "lease-released", |e| e["family"] == 6)?;
    ensure!(
        released["reason"] == "released"
            && released["ip"] == addr.as_str()
            && released["duid"] == granted["duid"],
        "{released}"
    );
    wait_event(&lab, "mon.json", "name-removed", |e| e["name"] == "c1")?;
    let aaaa = dig(&lab, "d1", "fd00:1::1", "AAAA c1.br1")?;
    ensure!(
        aaaa.is_empty(),
        "c1 still answers after the release: {aaaa:?}"
    );

    // 3. No FQDN: the name the same MAC's DHCPv4 lease registers, granted after the
    // DHCPv6 lease here, answers AAAA for it too (and a DHCPv6 lease bound after the
    // DHCPv4 one takes it at once: the reserved lease below).
    lab.sh_out("d1", &dh("-1", &empty))?;
    let addr2 = bound()?;
    let v4 = dir.join("udhcpc.sh");
    std::fs::write(
        &v4,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add $ip/$mask dev $interface;; esac\n",
    )?;
    std::fs::set_permissions(&v4, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    lab.sh(
        "d1",
        &format!(
            "busybox udhcpc -i eth0 -n -q -t 5 -T 1 -x hostname:alpha -s {}",
            v4.display()
        ),
    )?;
    ensure!(
        dig(&lab, "d1", "10.1.0.1", "A alpha")?.starts_with("10.1.0."),
        "the DHCPv4 name"
    );
    let aaaa = dig(&lab, "d1", "fd00:1::1", "AAAA alpha.br1")?;
    ensure!(aaaa == addr2, "AAAA alpha: {aaaa:?}, DHCPv6 lease {addr2}");
    ensure!(
        dig(&lab, "d1", "10.1.0.1", "AAAA alpha")? == addr2,
        "asked over IPv4"
    );
    let _ = lab.sh_out("d1", &format!("kill $(cat {}/d1.pid6)", dir.display()));
    lab.sh_out("d1", &dh("-r", &empty))?;

    // 4. Reservations: errors, then the pinned address with its name.
    lab.ctl_ok(&[
        "add-br",
        "br4",
        "--subnet",
        "10.4.0.0/24",
        "--gateway",
        "10.4.0.1",
        "--dhcp",
    ])?;
    for (args, want) in [
        (
            vec!["dhcp-reserve", "br1", &mac, "fd00:9::5"],
            "outside subnet fd00:1::/64",
        ),
        (
            vec!["dhcp-reserve", "br1", &mac, "fd00:1::1"],
            "outside subnet",
        ),
        (
            vec!["dhcp-reserve", "br4", &mac, "fd00:1::5"],
            "has no DHCPv6 server",
        ),
        (vec!["dhcp-reserve", "br1", &mac, "fd00:1::zz"], "bad IP"),
    ] {
        let o = lab.ctl(&args)?;
        ensure!(
            o.code != 0 && o.stderr.contains(want) && o.stderr.lines().count() == 1,
            "{args:?}: {} {:?}",
            o.code,
            o.stderr
        );
    }
    lab.ctl_ok(&["dhcp-reserve", "br1", &mac, "fd00:1::77", "res6"])?;
    let o = lab.ctl(&["dhcp-reserve", "br1", "02:00:00:00:00:99", "fd00:1::77"])?;
    ensure!(
        o.code != 0 && o.stderr.contains("already reserved"),
        "{o:?}"
    );
    lab.restart_switch()?;
    let hosts = lab.ctl_ok(&["list-hosts", "br1"])?;
    ensure!(
        hosts
            .lines()
            .any(|x| x.split_whitespace().collect::<Vec<_>>()
                == ["res6", "fd00:1::77", "dhcp-reserve"]),
        "reservation not persisted: {hosts}"
    );
    let out = lab.sh_out("d1", &dh("-1", &empty))?;
    ensure!(
        bound()? == "fd00:1::77",
        "reserved address not leased: {}\n{}\n{}",
        bound()?,
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let out = lab.sh("d1", "ping -6 -c 1 -W 2 -I fd00:1::77 fd00:1::1")?;
    ensure!(out.contains("1 received"), "{out}");
    ensure!(dig(&lab, "d1", "fd00:1::1", "AAAA res6")? == "fd00:1::77");
    // Bound after the DHCPv4 lease: the lease took its name at once.
    ensure!(dig(&lab, "d1", "fd00:1::1", "AAAA alpha")? == "fd00:1::77");
    let leases = lab.ctl_json(&["dhcp-leases", "br1"])?;
    ensure!(
        leases.as_array().is_some_and(|a| a
            .iter()
            .any(|l| l["ip"] == "fd00:1::77" && l["reserved"] == true)),
        "{leases}"
    );
    let _ = lab.sh_out("d1", &format!("kill $(cat {}/d1.pid6)", dir.display()));
    lab.ctl_ok(&["dhcp-unreserve", "br1", &mac])?;
    ensure!(!lab.ctl_ok(&["list-hosts", "br1"])?.contains("res6"));
    Ok(())
}

/// Floods the DHCPv6 server from a link-local socket: SOLICITS Solicits with random
/// DUIDs, then REQUESTS Requests with random DUIDs naming the server (its DUID taken
/// from the first Advertise). Prints the number of Advertises seen.
const FLOOD6: &str = r#"
import os, socket, struct, sys, time
ifname, solicits, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
idx = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 546, 0, idx))
s.settimeout(0.002)
dst = ("ff02::1:2", 547, 0, idx)
def opt(code, body): return struct.pack("!HH", code, len(body)) + body
def msg(ty, duid, server=None):
    m = bytes([ty]) + os.urandom(3) + opt(1, duid) + opt(3, struct.pack("!III", 1, 0, 0)) + opt(8, b"\0\0")
    return m + (opt(2, server) if server else b"")
server, adverts = None, 0
def drain():
    global server, adverts
    while True:
        try:
            d = s.recv(2048)
        except OSError:
            return
        if d[:1] == b"\x02":
            adverts += 1
            i = 4
            while i + 4 <= len(d):
                c, l = struct.unpack("!HH", d[i:i + 4])
                if c == 2: server = d[i + 4:i + 4 + l]
                i += 4 + l
for n in range(solicits):
    s.sendto(msg(1, b"\x00\x04" + os.urandom(16)), dst)
    if n % 50 == 0: drain(); time.sleep(0.01)
for _ in range(100):
    drain()
    if server: break
    time.sleep(0.02)
if not server: sys.exit("no Advertise seen")
for n in range(requests):
    s.sendto(msg(3, b"\x00\x04" + os.urandom(16), server), dst)
    if n % 50 == 0: drain(); time.sleep(0.01)
print("adverts", adverts)
"#;

/// ISC `dhclient -6` gets an address in the range and the DNS server from the bridge's
/// DHCPv6 server; the RA carries M and O; the lease is listed, survives a restart, and
/// goes with a Release; floods of random DUIDs stay within the pool's caps.
fn dhcpv6_dhclient_and_flood() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    dual_br(
        &lab,
        "br1",
        1,
        &["--dhcp", "--dhcp", "fd00:1::100-fd00:1::1ff"],
    )?;
    let j = lab.ctl_json(&["list-br"])?;
    ensure!(
        j[0]["dhcp6"] == "fd00:1::100-fd00:1::1ff" && j[0]["dhcp"] == "10.1.0.1-10.1.0.254",
        "{j}"
    );
    for (c, p) in [("d1", "v1"), ("fl", "vf")] {
        lab.add_ns(c)?;
        lab.veth("sw", p, c, "eth0")?;
        lab.ctl_ok(&["add-port", "br1", p])?;
        lab.sh(
            c,
            "sysctl -qw net.ipv6.conf.eth0.accept_ra=1 && ip link set eth0 up",
        )?;
    }
    // dhclient needs a link-local address that passed duplicate address detection.
    for c in ["d1", "fl"] {
        ensure!(
            wait_until(Duration::from_secs(10), || lab
                .sh(c, "ip -6 addr show dev eth0 scope link")
                .is_ok_and(|o| o.contains("fe80::") && !o.contains("tentative"))),
            "{c}: no usable link-local address"
        );
    }
    // The Router Advertisement says: addresses and other configuration from DHCPv6.
    let ra = lab.sh("d1", "rdisc6 -1 -r 3 -w 1000 eth0")?;
    ensure!(
        ra.lines()
            .any(|l| l.starts_with("Stateful address conf.") && l.trim_end().ends_with("Yes"))
            && ra
                .lines()
                .any(|l| l.starts_with("Stateful other conf.") && l.trim_end().ends_with("Yes")),
        "{ra}"
    );
    let dir = lab.dir().to_path_buf();
    let script = dir.join("dhclient6.sh");
    std::fs::write(&script, DHCLIENT6_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let log = dir.join("dhclient6.log");
    let dh = |args: &str| {
        format!(
            "LOG6={} timeout 30 dhclient -6 {args} -v -sf {} -lf {}/d1.leases6 -pf {}/d1.pid6 eth0 2>&1",
            log.display(),
            script.display(),
            dir.display(),
            dir.display()
        )
    };
    // dhclient passes its environment to the script only through -e.
    let out = lab.sh_out("d1", &dh(&format!("-1 -e LOG6={}", log.display())))?;
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        got.contains("reason=BOUND6"),
        "dhclient -6 got no lease: {}\n{got}\nvswitchd log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        lab.log_tail(20)
    );
    let addr = got
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .context("no address")?
        .to_string();
    let a: std::net::Ipv6Addr = addr.parse()?;
    ensure!(
        "fd00:1::100".parse::<std::net::Ipv6Addr>()? <= a
            && a <= "fd00:1::1ff".parse::<std::net::Ipv6Addr>()?,
        "{a} outside the range"
    );
    ensure!(
        got.contains("dns=fd00:1::1") && got.contains("search=br1."),
        "{got}"
    );
    let addrs = lab.sh("d1", "ip -6 addr show dev eth0")?;
    ensure!(addrs.contains(&format!("{addr}/128")), "{addrs}");
    lab.assert_ping("d1", "fd00:1::1")?;
    let out = lab.sh("d1", &format!("ping -6 -c 1 -W 2 -I {addr} fd00:1::1"))?;
    ensure!(out.contains("1 received"), "{out}");
    let leases = lab.ctl_json(&["dhcp-leases", "br1"])?;
    let mine = |v: &serde_json::Value| -> Option<serde_json::Value> {
        v.as_array()?
            .iter()
            .find(|l| l["ip"] == addr.as_str())
            .cloned()
    };
    let l = mine(&leases).with_context(|| format!("{addr} not in {leases}"))?;
    let mac = lab.mac("d1", "eth0")?;
    ensure!(
        l["mac"] == mac.as_str()
            && l["duid"].as_str().is_some_and(|d| d.len() > 10)
            && l["iaid"].is_u64(),
        "{l}"
    );
    let table = lab.ctl_ok(&["dhcp-leases", "br1"])?;
    ensure!(table.contains("DUID") && table.contains(&addr), "{table}");
    let _ = lab.sh_out("d1", &format!("kill $(cat {}/d1.pid6)", dir.display()));
    // Persisted: the lease is back after a restart.
    lab.restart_switch()?;
    let leases = lab.ctl_json(&["dhcp-leases", "br1"])?;
    ensure!(mine(&leases).is_some(), "lease lost in a restart: {leases}");
    // Release: the lease goes.
    let out = lab.sh_out("d1", &dh(&format!("-r -e LOG6={}", log.display())))?;
    ensure!(
        wait_until(Duration::from_secs(5), || lab
            .ctl_json(&["dhcp-leases", "br1"])
            .is_ok_and(|v| mine(&v).is_none())),
        "lease still there after dhclient -6 -r: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Floods of random DUIDs: 3000 Solicits, then 1000 Requests.
    let flood = dir.join("flood6.py");
    std::fs::write(&flood, FLOOD6)?;
    let out = lab.sh("fl", &format!("python3 {} eth0 3000 1000", flood.display()))?;
    ensure!(out.contains("adverts"), "{out}");
    let j = lab.ctl_json(&["list-br"])?;
    let b = &j[0];
    let n = |k: &str| b[k].as_u64().unwrap_or(u64::MAX);
    ensure!(
        n("dhcp6_offers") <= 256 && n("dhcp6_lease_cap") == 256 && n("dhcp6_leases") <= 256,
        "{b}"
    );
    ensure!(
        n("dhcp6_leases") > 0 && n("dhcp6_exhausted") > 0,
        "the Requests reached the pool: {b}"
    );
    // The pool is full of flood leases: another Solicit gets no address, and
    // the switch still answers.
    lab.assert_ping("d1", "fd00:1::1")?;
    let show = lab.ctl_ok(&["show"])?;
    ensure!(show.contains("dhcp6 fd00:1::100-fd00:1::1ff"), "{show}");
    Ok(())
}

/// TCP over IPv6 through the router between two bridges: iperf3 -6 completes with a
/// non-trivial byte count (a broken checksum in a routed super-frame would have the
/// receiver drop it, and the transfer stall), and the receiving container sees
/// TCP/IPv6 frames larger than the MTU: the sender's GSO super-frames were routed as
/// such (hop limit rewritten, partial checksum left to the receiver), not cut up.
fn iperf3_ipv6_gso_through_router() -> Result<()> {
    let mut lab = two_nets(false)?;
    lab.assert_ping("c1", "fd00:2::5")?;
    lab.spawn(
        "c2",
        "timeout",
        &[
            "20",
            "tcpdump",
            "-i",
            "eth0",
            "-nn",
            "-c",
            "1",
            "ip6 and tcp and greater 3000",
        ],
        "tcpdump6.log",
    )?;
    ensure!(
        wait_until(Duration::from_secs(5), || lab
            .read_log("tcpdump6.log")
            .contains("listening on")),
        "tcpdump did not start: {}",
        lab.read_log("tcpdump6.log")
    );
    lab.iperf_server("c2", "fd00:2::5")?;
    let bytes = lab.iperf_bytes("c1", "fd00:2::5")?;
    ensure!(
        bytes > 1_000_000,
        "iperf3 -6 through the router moved only {bytes} bytes"
    );
    ensure!(
        wait_until(Duration::from_secs(10), || lab
            .read_log("tcpdump6.log")
            .contains("1 packet captured")),
        "no TCP/IPv6 frame larger than 3000 bytes reached c2: {}",
        lab.read_log("tcpdump6.log")
    );
    Ok(())
}

/// DNS over TCP at the IPv6 gateway (`dig +tcp`): A and AAAA answers, the same as
/// over UDP, and dig says the answer came over TCP; a whole exchange counts no drop.
fn dns_over_tcp_at_ipv6_gateway() -> Result<()> {
    let lab = two_nets(false)?;
    lab.ctl_ok(&["add-host", "br1", "web", "fd00:1::5"])?;
    lab.ctl_ok(&["add-host", "br1", "web", "10.1.0.5"])?;
    lab.assert_ping("c1", "fd00:1::1")?;
    let dig = |args: &str| lab.sh("c1", &format!("dig +tcp +time=2 +tries=2 {args}"));
    let service = drop_count(&lab, "v1", "service")?;
    let out = dig("AAAA web @fd00:1::1")?;
    ensure!(
        out.contains("SERVER: fd00:1::1#53(fd00:1::1) (TCP)"),
        "not answered over TCP/IPv6: {out}"
    );
    ensure!(
        out.lines()
            .any(|l| l.starts_with("web.") && l.trim_end().ends_with("AAAA\tfd00:1::5")),
        "{out}"
    );
    let out = dig("+short A web.br1 @fd00:1::1")?;
    ensure!(out.trim() == "10.1.0.5", "dig +tcp A: {out:?}");
    // The client's last ACK needs no answer, and is no drop.
    let now = drop_count(&lab, "v1", "service")?;
    ensure!(
        now == service,
        "service drops {service} -> {now} over two dig +tcp"
    );
    let out = dig("+short -x fd00:1::5 @fd00:1::1")?;
    ensure!(out.trim() == "web.", "dig +tcp -x: {out:?}");
    let out = dig("AAAA nothere @fd00:1::1")?;
    ensure!(out.contains("status: NXDOMAIN"), "{out}");
    // Another bridge's IPv6 gateway is not this bridge's resolver (as over UDP).
    let o = lab.sh_out("c1", "dig +tcp +time=1 +tries=1 AAAA web @fd00:2::1")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(!text.contains("ANSWER SECTION"), "{text}");
    // IPv4's TCP responder still answers beside it.
    let out = dig("+short AAAA web @10.1.0.1")?;
    ensure!(out.trim() == "fd00:1::5", "dig +tcp @10.1.0.1: {out:?}");
    Ok(())
}

/// The bytes of a MAC written `aa:bb:..`.
fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {mac}"))
}

/// An Ethernet frame (hex) from `smac` to `dmac` carrying the ICMPv6 message `msg`
/// from `src` to `dst`, hop limit 255, checksum filled in.
fn icmp6_frame_hex(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    mut msg: Vec<u8>,
) -> String {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    msg[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut f = dmac.to_vec();
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// The link-layer address `ns` has for `ip` (empty when it has none).
fn neigh_mac(lab: &Lab, ns: &str, ip: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(&lab.sh(ns, &format!("ip -j -6 neigh show {ip} dev eth0"))?)?;
    Ok(v[0]["lladdr"].as_str().unwrap_or_default().to_string())
}

/// A port's drop count for `reason`.
fn drop_count(lab: &Lab, port: &str, reason: &str) -> Result<u64> {
    let v = lab.ctl_json(&["stats", port])?;
    Ok(v[0]["drops"][reason].as_u64().unwrap_or(0))
}

/// Port security with IPv6 (`--lock-ip 10.1.0.5,fd00:1::5`): c1 on the locked port v1
/// pings the gateway and c2 over both families (its address went through duplicate
/// address detection, from `::`); with its IPv6 address changed, its pings fail and
/// `spoofed_ip` grows; a Neighbor Advertisement claiming the gateway's address
/// (sent to all nodes, override flag) never reaches c2, whose neighbour entry for the
/// gateway keeps the router's MAC; a Router Advertisement from it is dropped as
/// `rogue_router`; `trace` says the same. A port locked to IPv4 only (c3) passes no
/// IPv6. Bad addresses are one-line errors; `show` and `list-ports --json` show the
/// lock. With `--fastpath on`, nothing from the locked port is offloaded (so the
/// kernel never forwards a spoofed frame either).
fn lock_ip_dual_stack() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", &["--fastpath", "on"])?;
    dual_br(&lab, "br1", 1, &[])?;
    lab.container("sw", "c1", "v1", "10.1.0.5/24", Some("10.1.0.1"))?;
    lab.sh("c1", "sysctl -qw net.ipv6.conf.eth0.accept_ra=0")?;
    dual_container(&mut lab, "c2", "v2", 1, 6)?;
    dual_container(&mut lab, "c3", "v3", 1, 7)?;
    let mac1 = lab.mac("c1", "eth0")?;
    let mac3 = lab.mac("c3", "eth0")?;
    // Bad input: one line, non-zero exit, nothing added.
    for (ips, want) in [
        (
            "10.1.0.5,fe80::zz",
            "error: bad --lock-ip \"fe80::zz\": expected an IPv4 or IPv6 address",
        ),
        (
            "ff02::1",
            "error: bad --lock-ip ff02::1: not a unicast address",
        ),
        ("::", "error: bad --lock-ip ::: not a unicast address"),
    ] {
        let o = lab.ctl(&[
            "add-port",
            "br1",
            "v1",
            "--lock-mac",
            &mac1,
            "--lock-ip",
            ips,
        ])?;
        ensure!(
            o.code != 0 && o.stderr.trim() == want && o.stderr.lines().count() == 1,
            "--lock-ip {ips}: exit {} {:?}",
            o.code,
            o.stderr
        );
    }
    ensure!(
        !lab.ctl_ok(&["list-ports", "br1"])?.contains("v1"),
        "a rejected add-port added the port"
    );
    lab.ctl_ok(&[
        "add-port",
        "br1",
        "v1",
        "--lock-mac",
        &mac1,
        "--lock-ip",
        "10.1.0.5,fd00:1::5",
    ])?;
    lab.ctl_ok(&["add-port", "br1", "v2"])?;
    lab.ctl_ok(&[
        "add-port",
        "br1",
        "v3",
        "--lock-mac",
        &mac3,
        "--lock-ip",
        "10.1.0.7",
    ])?;
    // c1's address goes through DAD (a Neighbor Solicitation from ::) behind the lock.
    lab.sh(
        "c1",
        "ip -6 addr add fd00:1::5/64 dev eth0 && ip -6 route replace default via fd00:1::1",
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), || lab
            .sh("c1", "ip -6 addr show dev eth0 tentative")
            .is_ok_and(|o| o.trim().is_empty())),
        "c1's addresses stay tentative: {}",
        lab.sh("c1", "ip -6 addr show dev eth0").unwrap_or_default()
    );
    let ports = lab.ctl_json(&["list-ports", "br1"])?;
    let v1 = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "v1"))
        .context("v1 in list-ports")?;
    ensure!(
        v1["lock_mac"] == mac1.as_str()
            && v1["lock_ip"] == serde_json::json!(["10.1.0.5", "fd00:1::5"]),
        "{v1}"
    );
    let show = lab.ctl_ok(&["show"])?;
    ensure!(
        show.contains(&format!("lock {mac1} 10.1.0.5,fd00:1::5")),
        "{show}"
    );
    lab.assert_ping("c1", "fd00:1::1")?;
    lab.assert_ping("c1", "fd00:1::6")?;
    lab.assert_ping("c1", "10.1.0.1")?;
    lab.assert_ping("c2", "fd00:1::5")?;
    // From the link-local address (EUI-64 of the locked MAC) too.
    let addrs = lab.sh("c1", "ip -j -6 addr show dev eth0")?;
    let v: serde_json::Value = serde_json::from_str(&addrs)?;
    let ll1 = v[0]["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["scope"] == "link"))
        .and_then(|x| x["local"].as_str())
        .with_context(|| format!("c1 has no link-local address: {addrs}"))?
        .to_string();
    lab.assert_ping("c2", &format!("{ll1}%eth0"))?;
    // The kernel fast path takes nothing from the locked port (frames to it, it may).
    let fp = lab.ctl_json(&["fastpath-show", "br1"])?;
    let from_v1: Vec<_> = fp["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["in_port"] == "v1")
        .collect();
    ensure!(from_v1.is_empty(), "fast-path entries from v1: {from_v1:?}");
    let st = lab.ctl_json(&["stats", "v1"])?;
    ensure!(
        st[0]["fastpath_rx_packets"].as_u64().unwrap_or(0) == 0,
        "v1's frames went through the kernel fast path: {st}"
    );

    // Another IPv6 address: dropped, counted.
    let spoofed = drop_count(&lab, "v1", "spoofed_ip")?;
    lab.sh(
        "c1",
        "ip -6 addr del fd00:1::5/64 dev eth0 && ip -6 addr add fd00:1::9/64 dev eth0 nodad && ip -6 route replace default via fd00:1::1",
    )?;
    lab.assert_no_ping("c1", "fd00:1::1")?;
    lab.assert_no_ping("c1", "fd00:1::6")?;
    let now = drop_count(&lab, "v1", "spoofed_ip")?;
    ensure!(now >= spoofed + 6, "spoofed_ip {spoofed} -> {now}");
    // Back to the locked address: answered again.
    lab.sh(
        "c1",
        "ip -6 addr del fd00:1::9/64 dev eth0 && ip -6 addr add fd00:1::5/64 dev eth0 nodad && ip -6 route replace default via fd00:1::1",
    )?;
    lab.assert_ping("c1", "fd00:1::1")?;

    // A spoofed Neighbor Advertisement: c1 claims the gateway's address.
    lab.assert_ping("c2", "fd00:1::1")?;
    let rmac = neigh_mac(&lab, "c2", "fd00:1::1")?;
    ensure!(rmac.starts_with("02:76:"), "c2's gateway entry: {rmac:?}");
    let m1 = mac_bytes(&mac1)?;
    // Neighbor Advertisements from c1 (fd00:1::5) to all nodes, for `target`, with
    // `flags` (router 0x80, solicited 0x40, override 0x20) and c1's MAC as the
    // target link-layer address.
    let na_hex = |target: &str, flags: u8| -> Result<String> {
        let mut na = vec![136, 0, 0, 0, flags, 0, 0, 0];
        na.extend_from_slice(&target.parse::<std::net::Ipv6Addr>()?.octets());
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&m1);
        Ok(icmp6_frame_hex(
            [0x33, 0x33, 0, 0, 0, 1],
            m1,
            "fd00:1::5".parse()?,
            "ff02::1".parse()?,
            na,
        ))
    };
    let na = na_hex("fd00:1::1", 0xa0)?; // router + override
    let t = lab.ctl_json(&["trace", "br1", "v1", &na])?;
    ensure!(
        t["verdict"] == "drop" && t["drop_reason"] == "spoofed_ip",
        "trace of the spoofed NA: {t}"
    );
    ensure!(
        t["stages"].to_string().contains(
            "IPv6 from fd00:1::5, a Neighbor Advertisement for fd00:1::1: not an address the port may use"
        ),
        "the trace does not say why: {t}"
    );
    // c1 sends frame `hex` `n` times: every one must be dropped on v1 as `reason`.
    let dropped_as = |hex: &str, n: u64, reason: &str| -> Result<()> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/send_frame.py");
        let before = drop_count(&lab, "v1", reason)?;
        lab.sh("c1", &format!("python3 {script} eth0 {hex} {n}"))?;
        ensure!(
            wait_until(Duration::from_secs(5), || {
                drop_count(&lab, "v1", reason).is_ok_and(|d| d >= before + n)
            }),
            "{n} frames were not dropped as {reason}: {}",
            lab.drops()
        );
        Ok(())
    };
    dropped_as(&na, 5, "spoofed_ip")?;
    let after = neigh_mac(&lab, "c2", "fd00:1::1")?;
    ensure!(
        after == rmac,
        "c2's entry for the gateway moved from {rmac} to {after}: the spoofed NA got through"
    );
    lab.assert_ping("c2", "fd00:1::1")?;
    // Its own address it may advertise (the trace lets it through).
    let own = na_hex("fd00:1::5", 0x20)?;
    let t = lab.ctl_json(&["trace", "br1", "v1", &own])?;
    ensure!(t["verdict"] == "flood", "trace of c1's own NA: {t}");
    let stages = t["stages"].to_string();
    ensure!(
        stages.contains(&format!(
            "port locked to {mac1} and 10.1.0.5, fd00:1::5: source fd00:1::5 allowed"
        )),
        "{stages}"
    );

    // A Router Advertisement from the locked port.
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    ra.extend_from_slice(&[1, 1]);
    ra.extend_from_slice(&m1);
    let ra = icmp6_frame_hex(
        [0x33, 0x33, 0, 0, 0, 1],
        m1,
        ll1.parse()?,
        "ff02::1".parse()?,
        ra,
    );
    let t = lab.ctl_json(&["trace", "br1", "v1", &ra])?;
    ensure!(
        t["verdict"] == "drop" && t["drop_reason"] == "rogue_router",
        "trace of the RA: {t}"
    );
    dropped_as(&ra, 3, "rogue_router")?;

    // Locked to an IPv4 address only: IPv4 passes, IPv6 not at all (c3's Neighbor
    // Solicitations for the gateway are dropped: its pings never leave).
    lab.assert_ping("c3", "10.1.0.1")?;
    let before = drop_count(&lab, "v3", "spoofed_ip")?;
    lab.assert_no_ping("c3", "fd00:1::1")?;
    ensure!(
        drop_count(&lab, "v3", "spoofed_ip")? > before,
        "v3's IPv6 was not dropped: {}",
        lab.drops()
    );

    // The lock is kept in the db: after a restart, the same addresses, and still
    // enforced.
    lab.restart_switch()?;
    let ports = lab.ctl_json(&["list-ports", "br1"])?;
    let v1 = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "v1"))
        .context("v1 in list-ports after a restart")?;
    ensure!(
        v1["lock_ip"] == serde_json::json!(["10.1.0.5", "fd00:1::5"]),
        "{v1}"
    );
    lab.assert_ping("c1", "fd00:1::1")?;
    let t = lab.ctl_json(&["trace", "br1", "v1", &na])?;
    ensure!(t["drop_reason"] == "spoofed_ip", "after a restart: {t}");
    Ok(())
}
