//! The router and its services with real clients: ping, traceroute, udhcpc, dhclient,
//! dig and busybox nslookup.

use anyhow::{ensure, Context, Result};
use vswitch_integration::Lab;

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        ("gateway_answers_arp_and_ping", gateway_answers_arp_and_ping),
        (
            "routes_between_bridges_with_ttl",
            routes_between_bridges_with_ttl,
        ),
        (
            "isolated_bridge_reaches_only_its_subnet",
            isolated_bridge_reaches_only_its_subnet,
        ),
        (
            "static_route_via_next_hop_router",
            static_route_via_next_hop_router,
        ),
        (
            "no_route_gives_net_unreachable",
            no_route_gives_net_unreachable,
        ),
        (
            "dhcp_udhcpc_dhclient_restart_exhaustion",
            dhcp_udhcpc_dhclient_restart_exhaustion,
        ),
        (
            "dns_names_aliases_ptr_nxdomain_tcp",
            dns_names_aliases_ptr_nxdomain_tcp,
        ),
        ("route_and_host_errors", route_and_host_errors),
        (
            "mtu_frag_needed_and_host_unreachable",
            mtu_frag_needed_and_host_unreachable,
        ),
    ])
}

/// br1 10.0.0.0/24 gw .1 with c1 (10.0.0.5), br2 10.1.0.0/24 gw .1 with c2 (10.1.0.5).
fn two_nets(isolated: bool) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    let mut a = vec![
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ];
    if isolated {
        a.push("--isolated");
    }
    lab.ctl_ok(&a)?;
    lab.ctl_ok(&[
        "add-br",
        "br2",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ])?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", Some("10.0.0.1"))?;
    lab.container("sw", "c2", "v2", "10.1.0.5/24", Some("10.1.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    Ok(lab)
}

fn gateway_answers_arp_and_ping() -> Result<()> {
    let lab = two_nets(false)?;
    lab.assert_ping("c1", "10.0.0.1")?;
    let neigh = lab.sh("c1", "ip -j neigh show 10.0.0.1")?;
    let v: serde_json::Value = serde_json::from_str(&neigh)?;
    let mac = v[0]["lladdr"]
        .as_str()
        .context("gateway not in ARP cache")?;
    ensure!(mac.starts_with("02:76:"), "router MAC {mac}");
    Ok(())
}

fn routes_between_bridges_with_ttl() -> Result<()> {
    let lab = two_nets(false)?;
    lab.assert_ping("c1", "10.1.0.5")?;
    lab.assert_ping("c1", "10.1.0.1")?;
    // TTL decremented once by the router: the reply arrives with 64 - 1.
    let out = lab.sh("c1", "ping -c 1 -W 1 10.1.0.5")?;
    ensure!(out.contains("ttl=63"), "{out}");
    // busybox traceroute: one hop through the gateway.
    let tr = lab.sh("c1", "busybox traceroute -n -w 1 -q 1 -m 5 10.1.0.5")?;
    let hops: Vec<&str> = tr
        .lines()
        .skip_while(|l| l.starts_with("traceroute"))
        .collect();
    ensure!(
        hops.len() == 2 && hops[0].contains("10.0.0.1") && hops[1].contains("10.1.0.5"),
        "{tr}"
    );
    Ok(())
}

fn isolated_bridge_reaches_only_its_subnet() -> Result<()> {
    let mut lab = two_nets(true)?;
    lab.container("sw", "c3", "v3", "10.0.0.6/24", Some("10.0.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "v3"])?;
    lab.assert_ping("c1", "10.0.0.6")?;
    lab.assert_ping("c1", "10.0.0.1")?;
    lab.assert_no_ping("c1", "10.1.0.5")?;
    lab.assert_no_ping("c1", "10.1.0.1")?;
    lab.assert_no_ping("c2", "10.0.0.5")?;
    let s = lab.ctl_json(&["stats", "v1"])?;
    ensure!(s[0]["drops"]["isolated"].as_u64().unwrap_or(0) > 0, "{s}");
    Ok(())
}

fn static_route_via_next_hop_router() -> Result<()> {
    let mut lab = two_nets(false)?;
    // A router namespace on br2 (10.1.0.254) leading to 10.2.0.0/24.
    lab.container("sw", "r", "vr", "10.1.0.254/24", None)?;
    lab.ctl_ok(&["add-port", "br2", "vr"])?;
    lab.add_ns("far")?;
    lab.veth("r", "eth1", "far", "eth0")?;
    lab.sh("r", "ip addr add 10.2.0.1/24 dev eth1 && ip link set eth1 up && sysctl -qw net.ipv4.ip_forward=1 && ip route add 10.0.0.0/24 via 10.1.0.1")?;
    lab.sh("far", "ip addr add 10.2.0.5/24 dev eth0 && ip link set eth0 up && ip route add default via 10.2.0.1")?;
    lab.ctl_ok(&["add-route", "10.2.0.0/24", "--via", "10.1.0.254"])?;
    lab.assert_ping("c1", "10.2.0.5")?;
    let routes = lab.ctl_ok(&["list-routes"])?;
    ensure!(
        routes.contains("10.2.0.0/24  10.1.0.254  br2     static"),
        "{routes}"
    );
    lab.ctl_ok(&["del-route", "10.2.0.0/24"])?;
    lab.assert_no_ping("c1", "10.2.0.5")?;
    Ok(())
}

fn no_route_gives_net_unreachable() -> Result<()> {
    let lab = two_nets(false)?;
    lab.assert_ping("c1", "10.0.0.1")?;
    let out = lab.sh_out("c1", "ping -c 1 -W 2 10.9.9.9")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("From 10.0.0.1") && text.contains("Unreachable"),
        "{text}"
    );
    Ok(())
}

fn lease_of(lab: &Lab, ns: &str) -> Result<Option<String>> {
    let out = lab.sh(ns, "ip -j -4 addr show dev eth0")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["addr_info"][0]["local"].as_str().map(str::to_string))
}

fn dhcp_udhcpc_dhclient_restart_exhaustion() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "--dhcp",
        "10.0.0.100-10.0.0.101",
    ])?;
    for (c, p) in [("d1", "v1"), ("d2", "v2"), ("d3", "v3")] {
        lab.add_ns(c)?;
        lab.veth("sw", p, c, "eth0")?;
        lab.sh(c, "ip link set eth0 up")?;
        lab.ctl_ok(&["add-port", "br1", p])?;
    }
    // udhcpc with the default script configures the interface.
    let script = lab.dir().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev $interface; ip addr add $ip/$mask dev $interface; [ -n \"$router\" ] && ip route replace default via $router; echo \"router=$router dns=$dns domain=$domain\";; esac\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = lab.sh(
        "d1",
        &format!(
            "timeout 20 busybox udhcpc -i eth0 -n -q -t 5 -T 1 -x hostname:alpha -s {}",
            script.display()
        ),
    )?;
    ensure!(
        out.contains("router=10.0.0.1")
            && out.contains("dns=10.0.0.1")
            && out.contains("domain=br1"),
        "{out}"
    );
    let ip1 = lease_of(&lab, "d1")?.context("udhcpc got no address")?;
    ensure!(
        ip1 == "10.0.0.100" || ip1 == "10.0.0.101",
        "{ip1} outside the range"
    );
    lab.assert_ping("d1", "10.0.0.1")?;
    // ISC dhclient on the second client.
    let conf = lab.dir().join("dhclient.conf");
    std::fs::write(&conf, "send host-name \"beta\";\n")?;
    lab.sh(
        "d2",
        &format!(
            "timeout 30 dhclient -1 -v -cf {} -lf {}/d2.leases -pf {}/d2.pid eth0 2>&1",
            conf.display(),
            lab.dir().display(),
            lab.dir().display()
        ),
    )?;
    let ip2 = lease_of(&lab, "d2")?.context("dhclient got no address")?;
    ensure!(ip2 != ip1 && ip2.starts_with("10.0.0.10"), "{ip2}");
    let _ = lab.sh_out("d2", &format!("kill $(cat {}/d2.pid)", lab.dir().display()));
    let leases = lab.ctl_json(&["dhcp-leases", "br1"])?;
    let names: Vec<&str> = leases
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["hostname"].as_str())
        .collect();
    ensure!(
        names.contains(&"alpha") && names.contains(&"beta"),
        "{leases}"
    );
    // Pool exhausted: the third client gets nothing, the others keep theirs.
    let o = lab.sh_out(
        "d3",
        &format!(
            "timeout 15 busybox udhcpc -i eth0 -n -q -t 3 -T 1 -s {}",
            script.display()
        ),
    )?;
    ensure!(
        !o.status.success(),
        "third client got a lease from a 2-address pool"
    );
    ensure!(
        lab.ctl_json(&["dhcp-leases", "br1"])?
            .as_array()
            .map(Vec::len)
            == Some(2)
    );
    // Restart keeps leases: the same client gets the same address again.
    lab.restart_switch()?;
    lab.sh("d1", "ip addr flush dev eth0")?;
    lab.sh(
        "d1",
        &format!(
            "timeout 20 busybox udhcpc -i eth0 -n -q -t 5 -T 1 -x hostname:alpha -s {}",
            script.display()
        ),
    )?;
    ensure!(
        lease_of(&lab, "d1")?.as_deref() == Some(ip1.as_str()),
        "address changed after restart"
    );
    Ok(())
}

fn dns_names_aliases_ptr_nxdomain_tcp() -> Result<()> {
    let lab = two_nets(false)?;
    lab.ctl_ok(&["add-host", "br1", "web", "10.0.0.5"])?;
    lab.ctl_ok(&["add-host", "br1", "WWW", "10.0.0.5"])?;
    lab.ctl_ok(&["add-host", "br2", "db", "10.1.0.5"])?;
    lab.assert_ping("c1", "10.0.0.1")?;
    let dig = |args: &str| lab.sh("c1", &format!("dig +time=2 +tries=2 @10.0.0.1 {args}"));
    ensure!(dig("+short web")?.trim() == "10.0.0.5");
    ensure!(
        dig("+short Www.")?.trim() == "10.0.0.5",
        "names are case-insensitive"
    );
    ensure!(dig("+short +tcp web")?.trim() == "10.0.0.5", "TCP query");
    let ptr = dig("+short -x 10.0.0.5")?;
    ensure!(ptr.contains("web.") && ptr.contains("www."), "{ptr}");
    ensure!(dig("nope")?.contains("status: NXDOMAIN"));
    ensure!(
        dig("db")?.contains("status: NXDOMAIN"),
        "a name on another bridge must not be visible"
    );
    let ns = lab.sh("c1", "busybox nslookup web 10.0.0.1")?;
    ensure!(ns.contains("10.0.0.5"), "{ns}");
    lab.ctl_ok(&["del-host", "br1", "web"])?;
    ensure!(dig("web")?.contains("status: NXDOMAIN"));
    let hosts = lab.ctl_ok(&["list-hosts", "br1"])?;
    ensure!(
        hosts == "NAME  IP        SOURCE\nwww   10.0.0.5  user\n",
        "{hosts}"
    );
    Ok(())
}

fn route_and_host_errors() -> Result<()> {
    let lab = two_nets(false)?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["add-route", "10.2.0.0/24", "--via", "192.0.2.1"],
            "error: next hop 192.0.2.1 is not inside the subnet of any bridge with a gateway",
        ),
        (
            &["add-route", "10.2.0.1/24", "--via", "10.1.0.254"],
            "error: bad subnet 10.2.0.1/24: host bits set, did you mean 10.2.0.0/24?",
        ),
        (
            &["del-route", "10.7.0.0/24"],
            "error: no such route: 10.7.0.0/24",
        ),
        (
            &["add-host", "br1", "x", "10.1.0.9"],
            "error: address 10.1.0.9 is outside subnet 10.0.0.0/24 of bridge br1",
        ),
        (
            &["add-host", "br9", "x", "10.0.0.9"],
            "error: no such bridge: br9",
        ),
        (
            &["add-br", "br3", "--subnet", "10.3.0.0/24", "--dhcp"],
            "error: --dhcp needs --gateway (the DHCP server answers from the gateway address)",
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
    Ok(())
}

fn mtu_frag_needed_and_host_unreachable() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ])?;
    lab.ctl_ok(&[
        "add-br",
        "br2",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
        "--mtu",
        "1400",
    ])?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", Some("10.0.0.1"))?;
    lab.container("sw", "c2", "v2", "10.1.0.5/24", Some("10.1.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br2", "v2"])?;
    lab.assert_ping("c1", "10.1.0.5")?;
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
    // A neighbour that never answers ARP: host unreachable after the retries.
    let o = lab.sh_out("c1", "ping -c 1 -W 6 10.1.0.77")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(text.contains("Host Unreachable"), "{text}");
    Ok(())
}
