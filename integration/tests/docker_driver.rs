//! `vswitch-docker` with a real private dockerd: the Docker commands of the seed
//! articles, unchanged (`docker network create -d vswitch …`, `docker run --network
//! … --ip …`, `network connect`, `-p`, `--internal`, a Redis cluster), with vswitchd
//! as the datapath; restarts of the driver and of vswitchd; what `docker rm -f` and
//! `docker network rm` leave (nothing); errors as `docker` prints them.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::time::Duration;
use vswitch_integration::docker_driver::{DriverLab, REDIS_IMAGE};
use vswitch_integration::{bin, run, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        ("networks_addresses_and_names", networks_addresses_and_names),
        (
            "ipv6_network_through_the_driver",
            ipv6_network_through_the_driver,
        ),
        (
            "published_ports_masquerade_and_internal",
            published_ports_masquerade_and_internal,
        ),
        ("restarts_and_vswitchd_down", restarts_and_vswitchd_down),
        (
            "ipam_shares_vswitchd_allocator",
            ipam_shares_vswitchd_allocator,
        ),
        (
            "redis_cluster_survives_a_master",
            redis_cluster_survives_a_master,
        ),
    ])
}

fn inspect_ip(d: &DriverLab, c: &str, net: &str) -> Result<String> {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    Ok(d.docker_ok(&["inspect", "-f", &f, c])?.trim().to_string())
}

/// `docker ARGS` must fail with a message containing `want`.
fn refused(d: &DriverLab, args: &[&str], want: &str) -> Result<String> {
    let (ok, out) = d.docker(args)?;
    ensure!(
        !ok && out.contains(want),
        "docker {} should fail with {want:?}: {out}",
        args.join(" ")
    );
    Ok(out)
}

/// The addresses held on `bridge` (`vswitchctl list-allocations --json`).
fn allocations(d: &DriverLab, bridge: &str) -> Result<Vec<vswitch_proto::AllocEntry>> {
    let v = d.lab.ctl_json(&["list-allocations", bridge])?;
    Ok(serde_json::from_value(v)?)
}

fn json_array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Nothing of the driver's is left in vswitchd or in either namespace.
fn nothing_left(d: &DriverLab) -> Result<()> {
    let bridges = d.lab.ctl_json(&["list-br"])?;
    ensure!(
        !json_array(&bridges)
            .iter()
            .any(|b| b["external_ids"]["docker_network"].is_string()),
        "docker bridges left: {bridges}"
    );
    let published = d.lab.ctl_json(&["list-published"])?;
    ensure!(json_array(&published).is_empty(), "published: {published}");
    let links = d.driver_links()?;
    ensure!(links.is_empty(), "veths left: {links:?}");
    Ok(())
}

/// Whether container `c` gets an answer to `ping -6` from `dst` (up to 10 tries, one
/// a second: duplicate address detection runs for a second or two after start).
fn ping6(d: &DriverLab, c: &str, dst: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        d.docker
            .exec(c, &["ping", "-6", "-c", "1", "-W", "1", dst])
            .is_ok_and(|(ok, _)| ok)
    })
}

/// `docker network create -d vswitch --ipv6`: the bridge gets both subnets and
/// gateways, containers their IPv6 address (Docker's default IPAM) and default route,
/// ping -6 reaches the gateway and the other container, by address and by name
/// (Docker's embedded DNS answers AAAA); IPv6 errors are one line.
fn ipv6_network_through_the_driver() -> Result<()> {
    let mut d = DriverLab::start(None, |_| Ok(()))?;
    d.network(
        "n6",
        &[
            "--ipv6",
            "--subnet",
            "10.46.0.0/24",
            "--gateway",
            "10.46.0.1",
            "--subnet",
            "fd00:46::/64",
            "--gateway",
            "fd00:46::1",
        ],
    )?;
    ensure!(d.wait_bridge("n6")? == "n6");
    let b = d.bridge_of("n6")?.context("bridge")?;
    ensure!(
        b["subnet"] == "10.46.0.0/24"
            && b["subnet6"] == "fd00:46::/64"
            && b["gateway6"] == "fd00:46::1",
        "{b}"
    );
    d.sleeper("a6", &["--network", "n6", "--ip6", "fd00:46::11"])?;
    d.sleeper("b6", &["--network", "n6"])?;
    let (_, a) = d.docker.exec("a6", &["ip", "-6", "addr", "show", "eth0"])?;
    ensure!(a.contains("inet6 fd00:46::11/64"), "{a}");
    let (_, r) = d.docker.exec("a6", &["ip", "-6", "route"])?;
    ensure!(r.contains("default via fd00:46::1"), "{r}");
    let f = "{{(index .NetworkSettings.Networks \"n6\").GlobalIPv6Address}}";
    let b6 = d.docker_ok(&["inspect", "-f", f, "b6"])?.trim().to_string();
    ensure!(b6.starts_with("fd00:46::"), "b6's IPv6 address: {b6:?}");
    println!("$ docker exec a6 ip -6 addr show eth0\n{a}\n$ docker exec a6 ip -6 route\n{r}");
    ensure!(
        ping6(&d, "a6", "fd00:46::1"),
        "a6 cannot ping -6 its gateway"
    );
    ensure!(ping6(&d, "a6", &b6), "a6 cannot ping -6 b6 ({b6})");
    ensure!(ping6(&d, "b6", "fd00:46::11"), "b6 cannot ping -6 a6");
    ensure!(ping6(&d, "a6", "b6"), "a6 cannot ping -6 b6 by name");
    ensure!(
        d.ping("a6", "10.46.0.1")?,
        "a6 cannot ping its IPv4 gateway"
    );
    let (_, p) = d.docker.exec("a6", &["ping", "-6", "-c", "2", "b6"])?;
    println!("$ docker exec a6 ping -6 -c 2 b6\n{p}");
    // Errors: the vswitch IPAM driver has no IPv6 pools; an IPv6 subnet that
    // overlaps a vswitchd bridge's.
    let out = refused(
        &d,
        &[
            "network",
            "create",
            "-d",
            "vswitch",
            "--ipam-driver",
            "vswitch",
            "--ipv6",
            "--subnet",
            "10.47.0.0/24",
            "--subnet",
            "fd00:47::/64",
            "n7",
        ],
        "IPv4 pools only",
    )?;
    println!("$ docker network create -d vswitch --ipam-driver vswitch --ipv6 ... n7\n{out}");
    d.lab
        .ctl_ok(&["add-br", "lan6", "--subnet", "fd00:48::/64"])?;
    let out = refused(
        &d,
        &[
            "network",
            "create",
            "-d",
            "vswitch",
            "--ipv6",
            "--subnet",
            "10.48.0.0/24",
            "--subnet",
            "fd00:48::/64",
            "n8",
        ],
        "overlaps fd00:48::/64 of vswitchd bridge lan6",
    )?;
    println!("$ docker network create -d vswitch --ipv6 ... --subnet fd00:48::/64 n8\n{out}");
    d.lab.ctl_ok(&["del-br", "lan6"])?;
    // No IPv6 --gateway: the subnet's first address, as Docker's IPAM picks it. A
    // bridge made from the Engine's view of the network (here: deleted behind the
    // driver's back, remade by the first container) is dual stack too.
    d.network(
        "n9",
        &[
            "--ipv6",
            "--subnet",
            "10.49.0.0/24",
            "--subnet",
            "fd00:49::/64",
        ],
    )?;
    ensure!(d.wait_bridge("n9")? == "n9");
    d.lab.ctl_ok(&["del-br", "n9"])?;
    d.sleeper("c9", &["--network", "n9"])?;
    let b = d.bridge_of("n9")?.context("bridge n9 remade")?;
    ensure!(
        b["subnet6"] == "fd00:49::/64" && b["gateway6"] == "fd00:49::1",
        "{b}"
    );
    ensure!(
        ping6(&d, "c9", "fd00:49::1"),
        "c9 cannot ping -6 its gateway"
    );
    Ok(())
}

fn networks_addresses_and_names() -> Result<()> {
    let mut d = DriverLab::start(None, |_| Ok(()))?;
    d.network(
        "mynet",
        &["--subnet", "10.40.0.0/24", "--gateway", "10.40.0.1"],
    )?;
    ensure!(d.wait_bridge("mynet")? == "mynet");
    let b = d.bridge_of("mynet")?.context("bridge")?;
    ensure!(
        b["subnet"] == "10.40.0.0/24" && b["gateway"] == "10.40.0.1" && b["isolated"] == true,
        "{b}"
    );
    d.sleeper("web", &["--network", "mynet", "--ip", "10.40.0.11"])?;
    d.sleeper("db", &["--network", "mynet", "--network-alias", "database"])?;
    let (_, a) = d
        .docker
        .exec("web", &["ip", "-4", "addr", "show", "eth0"])?;
    ensure!(a.contains("inet 10.40.0.11/24"), "{a}");
    let (_, r) = d.docker.exec("web", &["ip", "route"])?;
    ensure!(r.contains("default via 10.40.0.1"), "{r}");
    let db = inspect_ip(&d, "db", "mynet")?;
    ensure!(d.ping("web", "10.40.0.1")?, "web cannot ping its gateway");
    ensure!(d.ping("web", &db)?, "web cannot ping db");
    ensure!(d.ping("db", "10.40.0.11")?, "db cannot ping web");
    // Names (and aliases) in vswitchd's DNS at the gateway, and Docker's own DNS.
    for (name, ip) in [
        ("db", db.as_str()),
        ("database", &db),
        ("web", "10.40.0.11"),
    ] {
        let ok = wait_until(Duration::from_secs(10), || {
            d.lookup("web", name, "10.40.0.1").ok().flatten().as_deref() == Some(ip)
        });
        ensure!(
            ok,
            "{name} does not resolve to {ip} at the gateway: {}",
            d.driver_log()
        );
    }
    ensure!(
        d.lookup("web", "db", "127.0.0.11")?.as_deref() == Some(db.as_str()),
        "Docker's embedded DNS does not answer for db"
    );
    let hosts = d.lab.ctl_json(&["list-hosts", "mynet"])?;
    ensure!(json_array(&hosts).len() == 3, "{hosts}");

    // Errors as `docker` prints them.
    d.lab
        .ctl_ok(&["add-br", "lan", "--subnet", "10.49.0.0/24"])?;
    d.lab
        .ctl_ok(&["add-host", "mynet", "printer", "10.40.0.50"])?;
    let out = refused(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "clash",
            "--network",
            "mynet",
            "--ip",
            "10.40.0.50",
            vswitch_integration::docker::IMAGE,
            "sleep",
            "600",
        ],
        "address 10.40.0.50 is already in use on bridge mynet (DNS name printer)",
    )?;
    println!("in use: {}", out.trim());
    d.docker.track("clash");
    let out = refused(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "outside",
            "--network",
            "mynet",
            "--ip",
            "10.41.0.5",
            vswitch_integration::docker::IMAGE,
            "sleep",
            "600",
        ],
        "10.41.0.5",
    )?;
    println!("outside: {}", out.trim());
    d.docker.track("outside");
    let mk = |name: &str, extra: &[&str]| {
        let mut a = vec!["network", "create", "-d", "vswitch"];
        a.extend_from_slice(extra);
        a.push(name);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for (args, want) in [
        (
            mk("bad1", &["--subnet", "10.42.0.0/24", "-o", "foo=bar"]),
            "unknown option -o foo",
        ),
        (
            mk(
                "bad2",
                &["--subnet", "10.42.0.0/24", "-o", "vswitch.vlan=10"],
            ),
            "-o vswitch.vlan is not supported",
        ),
        (
            mk("bad3", &["--subnet", "10.49.0.0/25"]),
            "subnet 10.49.0.0/25 overlaps 10.49.0.0/24 of vswitchd bridge lan",
        ),
        (
            mk(
                "bad4",
                &["--subnet", "10.43.0.0/24", "--subnet", "10.44.0.0/24"],
            ),
            "a vswitch network has one IPv4 subnet, got 2",
        ),
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = refused(&d, &a, want)?;
        println!("{}: {}", a.last().unwrap_or(&""), out.trim());
    }

    // Without --subnet: Docker's default pool, the same on the bridge.
    d.network("auto", &[])?;
    d.wait_bridge("auto")?;
    let subnet = d.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "auto",
    ])?;
    let b = d.bridge_of("auto")?.context("bridge of auto")?;
    ensure!(
        b["subnet"] == subnet.trim() && b["gateway"].is_string(),
        "{b} vs {subnet}"
    );

    // A long name gets a derived bridge name; -o vswitch.bridge names it.
    d.network("a-rather-long-network", &["--subnet", "10.45.0.0/24"])?;
    let long = d.wait_bridge("a-rather-long-network")?;
    ensure!(
        long.starts_with("a-rather-l-") && long.len() == 15,
        "{long}"
    );
    d.network(
        "named",
        &["--subnet", "10.47.0.0/24", "-o", "vswitch.bridge=custom0"],
    )?;
    ensure!(d
        .bridge_of("named")?
        .is_some_and(|b| b["name"] == "custom0"));

    // network connect / disconnect.
    d.docker_ok(&[
        "network",
        "connect",
        "--ip",
        "10.45.0.20",
        "a-rather-long-network",
        "web",
    ])?;
    let (_, a) = d
        .docker
        .exec("web", &["ip", "-4", "addr", "show", "eth1"])?;
    ensure!(a.contains("inet 10.45.0.20/24"), "{a}");
    ensure!(
        d.ping("web", "10.45.0.1")?,
        "web cannot ping the second gateway"
    );
    d.docker_ok(&["network", "disconnect", "a-rather-long-network", "web"])?;
    let (_, l) = d.docker.exec("web", &["ip", "link"])?;
    ensure!(!l.contains("eth1"), "{l}");
    let ports = d.lab.ctl_json(&["list-ports", &long])?;
    ensure!(json_array(&ports).is_empty(), "{ports}");

    // Isolation between networks (Docker's DOCKER-ISOLATION).
    d.network("other", &["--subnet", "10.46.0.0/24"])?;
    d.sleeper("cx", &["--network", "other", "--ip", "10.46.0.5"])?;
    ensure!(d.ping("cx", "10.46.0.1")?, "cx cannot ping its gateway");
    ensure!(
        !d.ping_quick("cx", "10.40.0.11")?,
        "cx reaches web on another network"
    );
    ensure!(
        !d.ping_quick("web", "10.46.0.5")?,
        "web reaches cx on another network"
    );
    ensure!(
        !d.ping_quick("web", "10.46.0.1")?,
        "web reaches another network's gateway"
    );

    // docker rm -f and docker network rm leave nothing.
    d.docker_ok(&["rm", "-f", "web", "db", "cx", "clash", "outside"])?;
    let ports = d.lab.ctl_json(&["list-ports", "mynet"])?;
    ensure!(json_array(&ports).is_empty(), "{ports}");
    let hosts = d.lab.ctl_json(&["list-hosts", "mynet"])?;
    ensure!(
        json_array(&hosts).iter().all(|h| h["name"] == "printer"),
        "{hosts}"
    );
    ensure!(allocations(&d, "mynet")?.is_empty(), "addresses still held");
    for n in ["mynet", "auto", "a-rather-long-network", "named", "other"] {
        d.docker_ok(&["network", "rm", n])?;
    }
    nothing_left(&d)
}

/// An uplink `wan` (198.51.100.0/24, router .2) leading to host `out` (.1).
fn uplink(lab: &mut Lab) -> Result<()> {
    lab.wan("sw")?;
    lab.ctl_ok(&["add-route", "0.0.0.0/0", "--via", "198.51.100.1"])?;
    Ok(())
}

fn curl(lab: &Lab, url: &str) -> String {
    lab.sh_out("out", &format!("curl -s -m 3 {url}"))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn published_ports_masquerade_and_internal() -> Result<()> {
    let mut d = DriverLab::start(Some("wan"), uplink)?;
    d.network(
        "app",
        &["--subnet", "10.50.0.0/24", "--gateway", "10.50.0.1"],
    )?;
    d.wait_bridge("app")?;
    d.docker.run_detached(
        "srv",
        &["--network", "app", "--ip", "10.50.0.10", "-p", "8080:80"],
        vswitch_integration::docker::IMAGE,
        &["sh", "-c", "mkdir -p /www && echo hello-from-srv > /www/index.html && exec busybox httpd -f -p 80 -h /www"],
    )?;
    // -p: reached from outside on the uplink's address.
    let ok = wait_until(Duration::from_secs(10), || {
        curl(&d.lab, "http://198.51.100.2:8080/").contains("hello-from-srv")
    });
    ensure!(
        ok,
        "-p 8080:80 not reachable from outside: {}",
        d.driver_log()
    );
    let published = d.lab.ctl_json(&["list-published"])?;
    println!("published: {published}");
    println!("docker port srv: {:?}", d.docker(&["port", "srv"])?);

    // -p CONTAINER_PORT: a free host port from 49153 up.
    d.docker.run_detached(
        "eph",
        &["--network", "app", "--ip", "10.50.0.11", "-p", "80"],
        vswitch_integration::docker::IMAGE,
        &["sh", "-c", "mkdir -p /www && echo hello-from-eph > /www/index.html && exec busybox httpd -f -p 80 -h /www"],
    )?;
    let ok = wait_until(Duration::from_secs(10), || {
        curl(&d.lab, "http://198.51.100.2:49153/").contains("hello-from-eph")
    });
    ensure!(
        ok,
        "-p 80 not published on 49153: {}",
        d.lab.ctl_ok(&["list-published"])?
    );
    d.docker_ok(&["rm", "-f", "eph"])?;
    let published = d.lab.ctl_json(&["list-published"])?;
    ensure!(json_array(&published).len() == 1, "{published}");

    // Masquerade: the outside server sees the uplink's address.
    d.lab.spawn(
        "out",
        "python3",
        &["-m", "http.server", "-b", "198.51.100.1", "8000"],
        "http.log",
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), || d
            .lab
            .sh_out("out", "ss -ltn | grep -q 198.51.100.1:8000")
            .is_ok_and(|o| o.status.success())),
        "http.server did not start"
    );
    let get = "printf 'GET /masq HTTP/1.0\\r\\n\\r\\n' | nc -w 3 198.51.100.1 8000";
    let (ok, out) = d.docker.exec("srv", &["sh", "-c", get])?;
    ensure!(ok && out.contains("HTTP/1.0"), "{out}");
    let log = d.lab.read_log("http.log");
    ensure!(
        log.contains("198.51.100.2 - - ") && log.contains("/masq"),
        "{log}"
    );
    ensure!(!log.contains("10.50.0.10"), "{log}");

    // --internal: its own subnet and gateway, nothing outside, no default route.
    d.network("sealed", &["--internal", "--subnet", "10.51.0.0/24"])?;
    d.sleeper("inner", &["--network", "sealed", "--ip", "10.51.0.5"])?;
    ensure!(
        d.ping("inner", "10.51.0.1")?,
        "inner cannot ping its gateway"
    );
    ensure!(
        !d.ping_quick("inner", "198.51.100.1")?,
        "inner reaches the outside"
    );
    ensure!(
        !d.ping_quick("inner", "10.50.0.10")?,
        "inner reaches another network"
    );
    let (_, r) = d.docker.exec("inner", &["ip", "route"])?;
    ensure!(!r.contains("default"), "{r}");
    let (ok, _) = d.docker.exec("inner", &["sh", "-c", get])?;
    ensure!(!ok, "inner reached the outside server");

    // Revoke removes exactly what -p added.
    d.lab.ctl_ok(&["publish", "tcp", "9090", "10.50.0.99:80"])?;
    d.docker_ok(&["stop", "-t", "1", "srv"])?;
    let published = d.lab.ctl_json(&["list-published"])?;
    let left = json_array(&published);
    ensure!(
        left.len() == 1 && left[0]["target_ip"] == "10.50.0.99",
        "{published}"
    );
    ensure!(
        !curl(&d.lab, "http://198.51.100.2:8080/").contains("hello"),
        "8080 still answers"
    );
    d.lab.ctl_ok(&["unpublish", "tcp", "9090"])?;
    // Start again: published again.
    d.docker_ok(&["start", "srv"])?;
    let ok = wait_until(Duration::from_secs(10), || {
        curl(&d.lab, "http://198.51.100.2:8080/").contains("hello-from-srv")
    });
    ensure!(ok, "-p not back after docker start");
    d.docker_ok(&["rm", "-f", "srv", "inner"])?;
    d.docker_ok(&["network", "rm", "app", "sealed"])?;
    nothing_left(&d)?;
    // The uplink is the user's: untouched.
    ensure!(
        d.lab
            .ctl_json(&["list-ports", "wan"])?
            .as_array()
            .map(Vec::len)
            == Some(1)
    );
    Ok(())
}

fn restarts_and_vswitchd_down() -> Result<()> {
    let mut d = DriverLab::start(None, |_| Ok(()))?;
    d.network("n1", &["--subnet", "10.60.0.0/24"])?;
    d.sleeper("ca", &["--network", "n1", "--ip", "10.60.0.11"])?;
    d.sleeper("cb", &["--network", "n1", "--ip", "10.60.0.12"])?;
    ensure!(d.ping("ca", "10.60.0.12")?, "no ping before restarts");

    // The driver restarts: containers stay connected; it still cleans up.
    ensure!(d.stop_driver()? == 0, "vswitch-docker did not exit 0");
    ensure!(
        d.ping("ca", "10.60.0.12")?,
        "no ping with the driver stopped"
    );
    d.start_driver()?;
    // A container removed while the driver is down: cleaned up when it starts.
    d.sleeper("cd", &["--network", "n1", "--ip", "10.60.0.13"])?;
    d.stop_driver()?;
    let t = std::time::Instant::now();
    let rm = d.docker(&["rm", "-f", "cd"])?;
    println!("rm -f with the driver down ({:?}): {rm:?}", t.elapsed());
    d.start_driver()?;
    let ports = d.lab.ctl_json(&["list-ports", "n1"])?;
    ensure!(json_array(&ports).len() == 2, "{ports}");
    ensure!(
        !allocations(&d, "n1")?.iter().any(|a| a.ip == "10.60.0.13"),
        "10.60.0.13 still held"
    );
    d.docker_ok(&["rm", "-f", "cb"])?;
    let ports = d.lab.ctl_json(&["list-ports", "n1"])?;
    ensure!(json_array(&ports).len() == 1, "{ports}");
    d.sleeper("cb", &["--network", "n1", "--ip", "10.60.0.12"])?;
    ensure!(d.ping("ca", "10.60.0.12")?, "no ping to the new cb");

    // vswitchd restarts with containers running.
    d.lab.restart_switch()?;
    let ok = wait_until(Duration::from_secs(10), || {
        d.ping("ca", "10.60.0.12").unwrap_or(false)
    });
    ensure!(ok, "no ping after vswitchd restarted");
    d.sleeper("cc", &["--network", "n1"])?;
    let c = inspect_ip(&d, "cc", "n1")?;
    ensure!(d.ping("cc", "10.60.0.11")?, "cc ({c}) cannot ping ca");

    // vswitchd down: readable errors.
    d.lab.stop_switch()?;
    let out = refused(
        &d,
        &[
            "network",
            "create",
            "-d",
            "vswitch",
            "--subnet",
            "10.61.0.0/24",
            "n2",
        ],
        "vswitchd is not running",
    )?;
    println!("vswitchd down, network create: {}", out.trim());
    let out = refused(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "late",
            "--network",
            "n1",
            vswitch_integration::docker::IMAGE,
            "sleep",
            "600",
        ],
        "vswitchd is not running",
    )?;
    println!("vswitchd down, run: {}", out.trim());
    d.docker.track("late");
    d.lab.start_switch("sw")?;
    ensure!(
        d.ping("ca", "10.60.0.12")?,
        "no ping after vswitchd came back"
    );
    d.docker_ok(&["rm", "-f", "ca", "cb", "cc", "late"])?;
    d.docker_ok(&["network", "rm", "n1"])?;
    nothing_left(&d)
}

fn ipam_shares_vswitchd_allocator() -> Result<()> {
    let mut d = DriverLab::start(None, |_| Ok(()))?;
    d.network(
        "shared",
        &[
            "--ipam-driver",
            "vswitch",
            "--subnet",
            "10.70.0.0/24",
            "--gateway",
            "10.70.0.1",
            "--aux-address",
            "printer=10.70.0.2",
            "-o",
            "vswitch.dhcp=10.70.0.2-10.70.0.9",
        ],
    )?;
    let br = d.wait_bridge("shared")?;
    // A DHCP client and a static pipework guest on the same bridge.
    let g1 = d.lab.add_ns("g1")?;
    let g2 = d.lab.add_ns("g2")?;
    let g3 = d.lab.add_ns("g3")?;
    let sock = d.lab.socket();
    let pipework = |args: &[&str]| -> Result<String> {
        let o = run(std::process::Command::new(bin("pipework")?)
            .arg("--socket")
            .arg(&sock)
            .args(args))?;
        let s = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        ensure!(o.status.success(), "pipework {}: {s}", args.join(" "));
        Ok(s)
    };
    println!("{}", pipework(&[&br, &g1, "dhcp"])?.trim());
    println!(
        "{}",
        pipework(&[&br, &g2, "10.70.0.22/24@10.70.0.1"])?.trim()
    );
    d.sleeper("c1", &["--network", "shared"])?;
    d.sleeper("c2", &["--network", "shared"])?;
    let (c1, c2) = (
        inspect_ip(&d, "c1", "shared")?,
        inspect_ip(&d, "c2", "shared")?,
    );
    // Outside the DHCP range first; the DHCP client skipped the aux address (.2).
    ensure!(c1 == "10.70.0.10" && c2 == "10.70.0.11", "{c1} {c2}");
    let leases = d.lab.ctl_json(&["dhcp-leases", &br])?;
    let leased = json_array(&leases)
        .first()
        .and_then(|l| l["ip"].as_str().map(str::to_string))
        .context("no lease")?;
    ensure!(leased == "10.70.0.3", "{leases}");
    ensure!(d.ping("c1", &leased)?, "c1 cannot ping the DHCP guest");
    ensure!(
        d.ping("c1", "10.70.0.22")?,
        "c1 cannot ping the pipework guest"
    );
    // Addresses in use elsewhere are refused with the reason.
    for (ip, why) in [
        ("10.70.0.3", "DHCP reservation of"),
        ("10.70.0.22", "port vp"),
        ("10.70.0.2", "held by docker-aux:"),
        ("10.70.0.10", "already in use"),
    ] {
        let out = refused(
            &d,
            &[
                "run",
                "-d",
                "--name",
                "taken",
                "--network",
                "shared",
                "--ip",
                ip,
                vswitch_integration::docker::IMAGE,
                "sleep",
                "600",
            ],
            why,
        )?;
        println!("--ip {ip}: {}", out.trim());
        d.docker.track("taken");
        let _ = d.docker(&["rm", "-f", "taken"]);
    }
    // pipework refuses them too.
    for (ip, why) in [
        ("10.70.0.2/24", "held by docker-aux:"),
        ("10.70.0.10/24", "(port vd"),
    ] {
        let err = pipework(&[&br, &g3, ip])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        ensure!(err.contains(why), "pipework {ip}: {err:?}");
        println!("pipework {ip}: {}", err.lines().last().unwrap_or_default());
    }
    let held = allocations(&d, &br)?;
    println!("allocations: {held:?}");
    ensure!(
        held.iter()
            .filter(|a| a.owner.starts_with("docker-ep:"))
            .count()
            == 2
            && held
                .iter()
                .any(|a| a.ip == "10.70.0.2" && a.owner.starts_with("docker-aux:")),
        "{held:?}"
    );
    // --ip-range: dynamic addresses from the range only.
    d.network(
        "ranged",
        &[
            "--ipam-driver",
            "vswitch",
            "--subnet",
            "10.71.0.0/24",
            "--ip-range",
            "10.71.0.128/25",
        ],
    )?;
    d.wait_bridge("ranged")?;
    d.sleeper("r1", &["--network", "ranged"])?;
    let r1 = inspect_ip(&d, "r1", "ranged")?;
    let gw = d.bridge_of("ranged")?.context("ranged")?["gateway"].clone();
    // As with Docker's default IPAM: the gateway first in the range, then containers.
    ensure!(gw == "10.71.0.128" && r1 == "10.71.0.129", "{gw} {r1}");
    d.docker_ok(&["rm", "-f", "c1", "c2", "r1"])?;
    d.docker_ok(&["network", "rm", "shared", "ranged"])?;
    nothing_left(&d)
}

fn redis_cluster_survives_a_master() -> Result<()> {
    let mut d = DriverLab::start(None, |_| Ok(()))?;
    d.import_redis()?;
    d.network("redis-net", &["--subnet", "10.38.0.0/16"])?;
    let ips: Vec<String> = (11..=16).map(|i| format!("10.38.0.{i}")).collect();
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("redis{}", i + 1);
        d.docker.run_detached(
            &name,
            &["--network", "redis-net", "--ip", ip],
            REDIS_IMAGE,
            &[
                "redis-server",
                "--port",
                "6379",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "/data/nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                "/data",
            ],
        )?;
    }
    for ip in &ips {
        let ok = wait_until(Duration::from_secs(20), || {
            d.docker
                .exec("redis1", &["redis-cli", "-h", ip, "ping"])
                .is_ok_and(|(_, o)| o.contains("PONG"))
        });
        ensure!(ok, "redis at {ip} does not answer");
    }
    let mut create = vec!["redis-cli", "--cluster", "create"];
    let nodes: Vec<String> = ips.iter().map(|ip| format!("{ip}:6379")).collect();
    create.extend(nodes.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    let (_, out) = d.docker.exec("redis1", &create)?;
    println!("{out}");
    // Every node sees all six and every slot served (gossip may still be spreading
    // when `--cluster create` returns).
    let cluster_ok = |d: &DriverLab, ip: &str| {
        d.docker
            .exec("redis1", &["redis-cli", "-h", ip, "cluster", "info"])
            .is_ok_and(|(_, o)| {
                o.contains("cluster_state:ok") && o.contains("cluster_known_nodes:6")
            })
    };
    let all_ok = wait_until(Duration::from_secs(60), || {
        ips.iter().all(|ip| cluster_ok(&d, ip))
    });
    ensure!(all_ok, "cluster not ok: {out}");
    let (_, set) = d.docker.exec(
        "redis1",
        &[
            "redis-cli",
            "-c",
            "-h",
            "10.38.0.11",
            "set",
            "greeting",
            "hello",
        ],
    )?;
    ensure!(set.contains("OK"), "{set}");
    // The master of the key's slot stops; its replica takes over.
    let (_, slot) = d.docker.exec(
        "redis1",
        &[
            "redis-cli",
            "-h",
            "10.38.0.11",
            "cluster",
            "keyslot",
            "greeting",
        ],
    )?;
    let slot: u32 = slot.trim().parse().context("keyslot")?;
    let (_, nodes_out) = d.docker.exec(
        "redis1",
        &["redis-cli", "-h", "10.38.0.11", "cluster", "nodes"],
    )?;
    let master_ip = nodes_out
        .lines()
        .filter(|l| l.contains("master"))
        .find(|l| {
            l.split_whitespace()
                .skip(8)
                .any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u32>().is_ok_and(|a| a <= slot)
                            && b.parse::<u32>().is_ok_and(|b| slot <= b)
                    }
                    None => r.parse::<u32>() == Ok(slot),
                })
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|a| a.split(':').next())
        .context("no master for the slot")?
        .to_string();
    let idx = ips
        .iter()
        .position(|ip| *ip == master_ip)
        .context("master ip")?;
    let victim = format!("redis{}", idx + 1);
    let asker = if victim == "redis1" {
        "redis2"
    } else {
        "redis1"
    };
    let other = ips
        .iter()
        .find(|ip| **ip != master_ip)
        .context("other")?
        .clone();
    // The write has reached the replica before its master goes.
    let replicated = wait_until(Duration::from_secs(30), || {
        d.docker
            .exec(
                "redis1",
                &["redis-cli", "-h", &master_ip, "wait", "1", "1000"],
            )
            .is_ok_and(|(_, o)| o.trim() == "1")
    });
    ensure!(
        replicated,
        "the replica of {master_ip} did not acknowledge the write"
    );
    println!("key slot {slot} on {master_ip} ({victim}); stopping it");
    d.docker_ok(&["stop", "-t", "1", &victim])?;
    // Until the replica takes over, `-c` follows MOVED to the stopped master: bound
    // each try (busybox timeout) and poll.
    let survived = wait_until(Duration::from_secs(90), || {
        d.docker
            .exec(
                asker,
                &[
                    "busybox",
                    "timeout",
                    "5",
                    "redis-cli",
                    "-c",
                    "-h",
                    &other,
                    "get",
                    "greeting",
                ],
            )
            .is_ok_and(|(_, o)| o.trim() == "hello")
    });
    if !survived {
        let (_, get) = d
            .docker
            .exec(asker, &["redis-cli", "-c", "-h", &other, "get", "greeting"])?;
        let (_, nodes) = d
            .docker
            .exec(asker, &["redis-cli", "-h", &other, "cluster", "nodes"])?;
        anyhow::bail!("the key did not survive its master's stop: get: {get}; nodes:\n{nodes}");
    }
    let names: Vec<String> = (1..=6).map(|i| format!("redis{i}")).collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    d.docker_ok(&rm)?;
    d.docker_ok(&["network", "rm", "redis-net"])?;
    nothing_left(&d)
}
