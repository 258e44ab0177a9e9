//! pipework against vswitchd with named network namespaces as guests.

use anyhow::{ensure, Context, Result};
use std::process::Command;
use vswitch_integration::{bin, run, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "static_guests_ping_and_removal_leaves_nothing",
            static_guests_ping_and_removal_leaves_nothing,
        ),
        (
            "gateway_dns_mac_vlan_second_network_route",
            gateway_dns_mac_vlan_second_network_route,
        ),
        (
            "dhcp_guest_gets_a_lease_and_a_name",
            dhcp_guest_gets_a_lease_and_a_name,
        ),
        (
            "errors_are_one_line_and_change_nothing",
            errors_are_one_line_and_change_nothing,
        ),
        ("wait_for_the_interface", wait_for_the_interface),
        (
            "failure_half_way_rolls_everything_back",
            failure_half_way_rolls_everything_back,
        ),
        (
            "lock_drops_mac_and_ip_spoofing",
            lock_drops_mac_and_ip_spoofing,
        ),
        (
            "lock_with_an_ipv6_address_locks_it",
            lock_with_an_ipv6_address_locks_it,
        ),
        ("ipv6_guests_talk", ipv6_guests_talk),
        ("dhcp_asks_for_both_families", dhcp_asks_for_both_families),
    ])
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn pipework(lab: &Lab, args: &[&str]) -> Result<Out> {
    let o = run(Command::new(bin("pipework")?)
        .arg("--socket")
        .arg(lab.socket())
        .args(args))?;
    Ok(Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

fn pipework_ok(lab: &Lab, args: &[&str]) -> Result<String> {
    let o = pipework(lab, args)?;
    ensure!(
        o.ok,
        "pipework {} failed: {}",
        args.join(" "),
        o.stderr.trim()
    );
    Ok(o.stdout)
}

fn lab_with(guests: &[&str], br: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(br)?;
    for g in guests {
        lab.add_ns(g)?;
    }
    Ok(lab)
}

fn static_guests_ping_and_removal_leaves_nothing() -> Result<()> {
    let lab = lab_with(&["g1", "g2"], &["add-br", "br0", "--subnet", "10.0.0.0/24"])?;
    let (g1, g2) = (lab.ns("g1"), lab.ns("g2"));
    pipework_ok(&lab, &["br0", &g1, "10.0.0.11/24"])?;
    pipework_ok(&lab, &["br0", &g2, "10.0.0.12/24"])?;
    lab.assert_ping("g1", "10.0.0.12")?;
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    let p = &ports[0];
    ensure!(
        p["owned"] == true
            && p["external_ids"]["guest"] == g1.as_str()
            && p["external_ids"]["ifname"] == "eth1",
        "{p}"
    );
    let host_if = p["name"].as_str().unwrap_or_default().to_string();
    ensure!(
        host_if.len() <= 15 && host_if.starts_with("vp"),
        "{host_if}"
    );
    // Same again: a clear error, nothing half-built.
    let again = pipework(&lab, &["br0", &g1, "10.0.0.13/24"])?;
    ensure!(
        !again.ok && again.stderr.starts_with("error: already plumbed"),
        "{}",
        again.stderr
    );
    // Removal: port, veth, DNS name gone; traffic stops.
    pipework_ok(&lab, &["--remove", "br0", &g2])?;
    ensure!(
        lab.ctl_json(&["list-ports", "br0"])?
            .as_array()
            .map(Vec::len)
            == Some(1)
    );
    ensure!(
        !lab.sh_out("g2", "ip link show eth1")?.status.success(),
        "eth1 still in the guest"
    );
    ensure!(!lab
        .sh_out("sw", &format!("ip link show {host_if}x 2>/dev/null"))?
        .status
        .success());
    let hosts = lab.ctl_ok(&["list-hosts", "br0"])?;
    ensure!(!hosts.contains(&g2), "{hosts}");
    lab.assert_no_ping("g1", "10.0.0.12")?;
    Ok(())
}

fn gateway_dns_mac_vlan_second_network_route() -> Result<()> {
    let lab = lab_with(
        &["web", "cli", "v10", "v20"],
        &[
            "add-br",
            "br0",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
        ],
    )?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ])?;
    let (web, cli) = (lab.ns("web"), lab.ns("cli"));
    pipework_ok(&lab, &["br0", &web, "10.0.0.5/24@10.0.0.1", "U:web"])?;
    pipework_ok(&lab, &["br0", &cli, "10.0.0.6/24@10.0.0.1"])?;
    // U: MAC applied and stable.
    let mac = lab.mac("web", "eth1")?;
    ensure!(mac.starts_with("02:"), "{mac}");
    // Gateway and DNS: the guest's name resolves on the bridge.
    lab.assert_ping("cli", "10.0.0.1")?;
    let dig = lab.sh("cli", &format!("dig +short +time=2 @10.0.0.1 {web}"))?;
    ensure!(dig.trim() == "10.0.0.5", "{dig}");
    // A second network with -i eth2, routed.
    pipework_ok(&lab, &["br1", "-i", "eth2", &web, "10.1.0.5/24"])?;
    ensure!(lab.sh_out("web", "ip link show eth2")?.status.success());
    // route: applied inside the guest.
    pipework_ok(
        &lab,
        &["route", &cli, "add", "10.9.0.0/24", "via", "10.0.0.1"],
    )?;
    ensure!(lab
        .sh("cli", "ip route show 10.9.0.0/24")?
        .contains("via 10.0.0.1"));
    // VLANs: guests on different tags do not talk.
    let (v10, v20) = (lab.ns("v10"), lab.ns("v20"));
    pipework_ok(&lab, &["br0", &v10, "10.0.0.30/24", "@10"])?;
    pipework_ok(&lab, &["br0", &v20, "10.0.0.31/24", "@20"])?;
    lab.assert_no_ping("v10", "10.0.0.31")?;
    Ok(())
}

fn dhcp_guest_gets_a_lease_and_a_name() -> Result<()> {
    let lab = lab_with(
        &["dc", "peer"],
        &[
            "add-br",
            "br0",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
            "--dhcp",
            "10.0.0.100-10.0.0.120",
        ],
    )?;
    let dc = lab.ns("dc");
    let out = pipework_ok(&lab, &["br0", &dc, "dhcp"])?;
    ensure!(out.contains("10.0.0.1"), "{out}");
    let addr = lab.sh("dc", "ip -4 -o addr show dev eth1")?;
    ensure!(
        addr.contains("10.0.0.10") || addr.contains("10.0.0.11") || addr.contains("10.0.0.12"),
        "{addr}"
    );
    lab.assert_ping("dc", "10.0.0.1")?;
    let leased = addr
        .split_whitespace()
        .nth(3)
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_string();
    let dig = lab.sh("dc", &format!("dig +short +time=2 @10.0.0.1 {dc}"))?;
    ensure!(dig.trim() == leased, "name → {dig:?}, lease {leased}");
    pipework_ok(&lab, &["--remove", "br0", &dc])?;
    let dig = lab.sh("peer", &format!("dig +time=2 @10.0.0.1 {dc} || true"))?;
    ensure!(
        dig.is_empty() || dig.contains("NXDOMAIN") || !dig.contains(&leased),
        "{dig}"
    );
    Ok(())
}

fn errors_are_one_line_and_change_nothing() -> Result<()> {
    let lab = lab_with(&["g1", "g2"], &["add-br", "br0", "--subnet", "10.0.0.0/24"])?;
    let (g1, g2) = (lab.ns("g1"), lab.ns("g2"));
    pipework_ok(&lab, &["br0", &g1, "10.0.0.11/24"])?;
    lab.sh("g2", "ip link add name eth1 type veth peer name eth1p")?;
    let before = lab.config_snapshot()?;
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["br9", &g2, "10.0.0.12/24"],
            "error: no such bridge: br9".into(),
        ),
        (
            vec!["br0", "nosuchns", "10.0.0.12/24"],
            "error: no such container or network namespace: nosuchns".into(),
        ),
        (
            vec!["br0", &g2, "10.1.0.12/24"],
            "error: address 10.1.0.12 is outside subnet 10.0.0.0/24 of bridge br0".into(),
        ),
        (
            vec!["br0", "-i", "eth2", &g2, "10.0.0.11/24"],
            "error: address 10.0.0.11 is already in use on bridge br0".into(),
        ),
        (
            vec!["br0", &g2, "10.0.0.12/24"],
            format!("error: interface eth1 already exists in {g2}"),
        ),
        (
            vec!["br0", &g2, "10.0.0.12"],
            "error: bad address \"10.0.0.12\": expected IP/PREFIX (e.g. 10.0.0.5/24) or dhcp"
                .into(),
        ),
    ];
    for (args, want) in &cases {
        let o = pipework(&lab, args)?;
        ensure!(!o.ok, "{args:?} succeeded");
        ensure!(
            o.stderr.lines().count() == 1 && o.stderr.trim().starts_with(want.as_str()),
            "{args:?}: {:?}",
            o.stderr
        );
    }
    ensure!(
        lab.config_snapshot()? == before,
        "configuration changed by a refused plumbing"
    );
    // No daemon: says so, and how to start it.
    let o = run(Command::new(bin("pipework")?).args([
        "--socket",
        "/nonexistent/sock",
        "br0",
        &g2,
        "10.0.0.12/24",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success()
            && err.contains("vswitchd is not running")
            && err.contains("start it with"),
        "{err}"
    );
    Ok(())
}

fn wait_for_the_interface() -> Result<()> {
    let lab = lab_with(&["g1"], &["add-br", "br0", "--subnet", "10.0.0.0/24"])?;
    let pw = bin("pipework")?;
    let o = lab.sh_out(
        "g1",
        &format!("{} --wait -i eth1 --timeout 1", pw.display()),
    )?;
    ensure!(!o.status.success(), "--wait succeeded without an interface");
    pipework_ok(&lab, &["br0", &lab.ns("g1"), "10.0.0.11/24"])?;
    lab.sh(
        "g1",
        &format!("{} --wait -i eth1 --timeout 10", pw.display()),
    )?;
    Ok(())
}

/// A DHCP exchange that fails after the veth pair and the port exist (the one-address
/// pool is taken): the error names the cause, and neither namespace keeps a veth end,
/// the bridge keeps no port, the config is as before.
fn failure_half_way_rolls_everything_back() -> Result<()> {
    let lab = lab_with(
        &["first", "second"],
        &[
            "add-br",
            "br0",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
            "--dhcp",
            "10.0.0.100-10.0.0.100",
        ],
    )?;
    pipework_ok(&lab, &["br0", &lab.ns("first"), "dhcp"])?;
    let before = lab.config_snapshot()?;
    let sw_links = lab.sh("sw", "ip -o link | wc -l")?;
    let o = pipework(&lab, &["--timeout", "3", "br0", &lab.ns("second"), "dhcp"])?;
    ensure!(!o.ok, "second dhcp guest got an address from a full pool");
    ensure!(
        o.stderr.lines().count() == 1 && o.stderr.contains("DHCP"),
        "{:?}",
        o.stderr
    );
    let links = lab.sh("second", "ip -o link")?;
    ensure!(!links.contains("eth1"), "eth1 left in the guest: {links}");
    ensure!(
        lab.sh("sw", "ip -o link | wc -l")? == sw_links,
        "a veth end was left in vswitchd's namespace: {}",
        lab.sh("sw", "ip -o link")?
    );
    ensure!(lab.config_snapshot()? == before, "config changed");
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    ensure!(ports.as_array().map(Vec::len) == Some(1), "{ports}");
    Ok(())
}

/// `pipework --lock`: the guest keeps working from its own MAC and address; frames from
/// another source address or another MAC are dropped and counted; unlocked guests are
/// unaffected.
fn lock_drops_mac_and_ip_spoofing() -> Result<()> {
    let lab = lab_with(
        &["good", "evil"],
        &[
            "add-br",
            "br0",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
        ],
    )?;
    let (good, evil) = (lab.ns("good"), lab.ns("evil"));
    pipework_ok(&lab, &["br0", &good, "10.0.0.12/24"])?;
    let out = pipework_ok(&lab, &["--lock", "br0", &evil, "10.0.0.11/24"])?;
    lab.assert_ping("evil", "10.0.0.12")?;
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    let port = ports
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|p| p["external_ids"]["guest"] == evil.as_str())
        })
        .cloned()
        .context("evil's port")?;
    let name = port["name"].as_str().context("port name")?.to_string();
    let mac = lab.mac("evil", "eth1")?;
    ensure!(
        port["lock_mac"] == mac.as_str() && port["lock_ip"] == serde_json::json!(["10.0.0.11"]),
        "{port} ({out})"
    );
    let show = lab.ctl_ok(&["show"])?;
    ensure!(
        show.contains(&format!("Port {name} (system, up) lock {mac} 10.0.0.11")),
        "{show}"
    );
    let drops = |reason: &str| -> Result<u64> {
        let s = lab.ctl_json(&["stats", &name])?;
        Ok(s.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|p| p["port"] == name.as_str() || p["name"] == name.as_str())
            })
            .and_then(|p| p["drops"][reason].as_u64())
            .unwrap_or(0))
    };
    // Another source address: dropped (its ARP and its pings).
    lab.sh("evil", "ip addr add 10.0.0.99/24 dev eth1")?;
    let spoof = lab.sh_out("evil", "ping -c 2 -W 1 -I 10.0.0.99 10.0.0.12")?;
    ensure!(
        !spoof.status.success(),
        "a spoofed source address got through"
    );
    ensure!(drops("spoofed_ip")? > 0, "no spoofed_ip drops counted");
    // Another MAC: nothing gets through, not even from the locked address.
    lab.sh(
        "evil",
        "ip addr del 10.0.0.99/24 dev eth1; ip neigh flush all",
    )?;
    lab.sh("evil", "ip link set eth1 address 02:00:00:00:00:99")?;
    ensure!(
        !lab.ping_once("evil", "10.0.0.12"),
        "a spoofed MAC got through"
    );
    ensure!(drops("spoofed_mac")? > 0, "no spoofed_mac drops counted");
    // The honest MAC again: back to normal; the unlocked guest never noticed.
    lab.sh("evil", &format!("ip link set eth1 address {mac}"))?;
    lab.assert_ping("evil", "10.0.0.12")?;
    lab.assert_ping("good", "10.0.0.1")?;
    Ok(())
}

/// `-a inet6`: static IPv6 addresses (with `@GATEWAY`, the IPv6 default route), next to an
/// IPv4 interface on the same guest; errors for dhcp and a missing `-a inet6`.
fn ipv6_guests_talk() -> Result<()> {
    let lab = lab_with(&["a", "b"], &["add-br", "br0", "--subnet", "10.0.0.0/24"])?;
    let (a, b) = (lab.ns("a"), lab.ns("b"));
    let out = pipework_ok(&lab, &["br0", "-a", "inet6", &a, "2001:db8::11/64"])?;
    ensure!(out.contains("2001:db8::11/64"), "{out}");
    pipework_ok(&lab, &["br0", "-a", "6", &b, "2001:db8::12/64@2001:db8::1"])?;
    pipework_ok(&lab, &["br0", "-i", "eth2", &b, "10.0.0.12/24"])?;
    let ping = lab.sh_out("a", "ping -6 -c 2 -W 2 2001:db8::12")?;
    ensure!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let route = lab.sh("b", "ip -6 route show default")?;
    ensure!(route.contains("via 2001:db8::1 dev eth1"), "{route}");
    let o = pipework(
        &lab,
        &["br0", "-i", "eth3", "-a", "inet6", &a, "2001:db8::12/64"],
    )?;
    ensure!(
        !o.ok
            && o.stderr
                .contains("2001:db8::12 is already in use on bridge br0"),
        "{}",
        o.stderr
    );
    let o = pipework(&lab, &["br0", "-i", "eth3", "-a", "inet6", &a, "dhcp"])?;
    ensure!(
        !o.ok && o.stderr.contains("plain dhcp asks for both families"),
        "{}",
        o.stderr
    );
    let o = pipework(&lab, &["br0", "-i", "eth3", &a, "2001:db8::13/64"])?;
    ensure!(
        !o.ok && o.stderr.contains("an IPv6 address needs -a inet6"),
        "{}",
        o.stderr
    );
    pipework_ok(&lab, &["--remove", "br0", &a])?;
    ensure!(!lab.sh("a", "ip -o link")?.contains("eth1"), "eth1 left");
    Ok(())
}

/// `pipework br0 GUEST dhcp` on a bridge with an IPv6 range: the guest gets an IPv4
/// and an IPv6 address (DHCPv4 and DHCPv6), a default route of each family, pings the
/// gateway over both, and its name answers A and AAAA; `--remove` takes both away.
fn dhcp_asks_for_both_families() -> Result<()> {
    let lab = lab_with(
        &["dc", "peer"],
        &[
            "add-br",
            "br0",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
            "--subnet",
            "fd00:7::/64",
            "--gateway",
            "fd00:7::1",
            "--dhcp",
            "10.0.0.100-10.0.0.120",
            "--dhcp",
            "fd00:7::100-fd00:7::1ff",
        ],
    )?;
    let dc = lab.ns("dc");
    let out = pipework_ok(&lab, &["br0", &dc, "dhcp"])?;
    ensure!(
        out.contains("default route via 10.0.0.1") && out.contains("default route via fd00:7::1"),
        "{out}"
    );
    let v4 = lab.sh("dc", "ip -4 -o addr show dev eth1")?;
    ensure!(v4.contains("inet 10.0.0.1"), "{v4}");
    let v6 = lab.sh("dc", "ip -6 -o addr show dev eth1 scope global")?;
    let leased6 = v6
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .with_context(|| format!("no IPv6 address: {v6}"))?
        .to_string();
    ensure!(
        leased6.starts_with("fd00:7::1") && v6.contains("/64"),
        "{v6}"
    );
    let routes = lab.sh("dc", "ip -6 route show default")?;
    ensure!(routes.contains("via fd00:7::1 dev eth1"), "{routes}");
    lab.assert_ping("dc", "10.0.0.1")?;
    let ping = lab.sh_out("dc", "ping -6 -c 3 -i 0.2 -W 2 fd00:7::1")?;
    let text = String::from_utf8_lossy(&ping.stdout);
    ensure!(
        ping.status.success() && text.contains("3 received"),
        "ping -6 the gateway: {text}"
    );
    let aaaa = lab.sh("dc", &format!("dig +short +time=2 AAAA {dc} @fd00:7::1"))?;
    ensure!(
        aaaa.trim() == leased6,
        "AAAA {dc}: {aaaa:?}, lease {leased6}"
    );
    let json = pipework(
        &lab,
        &["--json", "br0", "-i", "eth2", &lab.ns("peer"), "dhcp"],
    )?;
    ensure!(json.ok, "{}", json.stderr);
    let j: serde_json::Value = serde_json::from_str(&json.stdout)?;
    ensure!(
        j["ip6"]
            .as_str()
            .is_some_and(|a| a.starts_with("fd00:7::1") && a.ends_with("/64"))
            && j["gateway6"] == "fd00:7::1",
        "{j}"
    );
    pipework_ok(&lab, &["--remove", "br0", &dc])?;
    let leases = lab.ctl_json(&["dhcp-leases", "br0"])?;
    ensure!(
        !leases.to_string().contains(&format!("\"{leased6}\"")),
        "the IPv6 lease outlived the port: {leases}"
    );
    let aaaa = lab.sh(
        "peer",
        &format!("dig +short +time=2 AAAA {dc} @fd00:7::1 || true"),
    )?;
    ensure!(!aaaa.contains(&leased6), "{aaaa}");
    Ok(())
}

/// `pipework --lock -a inet6`: the port is locked to the guest's MAC and its IPv6
/// address; the guest talks from it (and its link-local address), another IPv6 source
/// is dropped and counted.
fn lock_with_an_ipv6_address_locks_it() -> Result<()> {
    let lab = lab_with(&["l6", "peer6"], &["add-br", "br0"])?;
    let (l6, peer6) = (lab.ns("l6"), lab.ns("peer6"));
    pipework_ok(
        &lab,
        &["--lock", "br0", "-a", "inet6", &l6, "2001:db8::11/64"],
    )?;
    pipework_ok(&lab, &["br0", "-a", "inet6", &peer6, "2001:db8::12/64"])?;
    let ping = lab.sh_out("l6", "ping -6 -c 3 -i 0.2 -W 2 2001:db8::12")?;
    let text = String::from_utf8_lossy(&ping.stdout);
    ensure!(
        ping.status.success() && text.contains("3 received"),
        "the locked guest cannot ping from its own address: {text}"
    );
    let ports = lab.ctl_json(&["list-ports", "br0"])?;
    let port = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["external_ids"]["guest"] == l6.as_str()))
        .cloned()
        .context("the locked guest's port")?;
    let mac = lab.mac("l6", "eth1")?;
    ensure!(
        port["lock_mac"] == mac.as_str() && port["lock_ip"] == serde_json::json!(["2001:db8::11"]),
        "{port}"
    );
    let name = port["name"].as_str().context("port name")?.to_string();
    let spoofed = || -> Result<u64> {
        let s = lab.ctl_json(&["stats", &name])?;
        Ok(s.as_array()
            .and_then(|a| a.first())
            .and_then(|p| p["drops"]["spoofed_ip"].as_u64())
            .unwrap_or(0))
    };
    let before = spoofed()?;
    lab.sh("l6", "ip -6 addr add 2001:db8::99/64 dev eth1 nodad")?;
    let spoof = lab.sh_out("l6", "ping -6 -c 2 -W 1 -I 2001:db8::99 2001:db8::12")?;
    ensure!(
        !spoof.status.success(),
        "a spoofed IPv6 source got through the lock"
    );
    ensure!(spoofed()? > before, "no spoofed_ip drops counted");
    lab.sh("l6", "ip -6 addr del 2001:db8::99/64 dev eth1")?;
    let ping = lab.sh_out("l6", "ping -6 -c 2 -i 0.2 -W 2 2001:db8::12")?;
    ensure!(
        ping.status.success(),
        "the locked guest lost its own address"
    );
    let _ = peer6;
    Ok(())
}
