//! DNS forwarding at the gateway with a real upstream (dnsmasq) inside the test's own
//! namespaces — never the machine's resolver: names the bridge does not own go upstream
//! (UDP, TCP after truncation, cached within their TTL); plain names and the bridge's
//! own domain never leave; a dead upstream gives SERVFAIL while local names answer.

use anyhow::{ensure, Context, Result};
use std::process::Command;
use std::time::Duration;
use vswitch_integration::{run, wait_until, Lab, Proto};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        ("forwards_to_a_real_upstream", forwards_to_a_real_upstream),
        (
            "dead_upstream_gives_servfail_and_local_names_still_answer",
            dead_upstream_gives_servfail_and_local_names_still_answer,
        ),
        (
            "default_upstream_is_vswitchds_resolv_conf",
            default_upstream_is_vswitchds_resolv_conf,
        ),
    ])
}

/// Four 200-byte strings: a TXT answer longer than 512 bytes.
fn big_txt() -> Vec<String> {
    ["a", "b", "c", "d"].iter().map(|c| c.repeat(200)).collect()
}

/// Namespace `up` (203.0.113.53, linked to the switch namespace's own kernel stack at
/// 203.0.113.1, not through vswitchd) running dnsmasq with `www.example.test` →
/// 203.0.113.7 and a long TXT record; returns dnsmasq's PID. Call before starting
/// vswitchd's bridges, after `add_ns("sw")`.
fn upstream(lab: &mut Lab) -> Result<u32> {
    lab.add_ns("up")?;
    lab.veth("sw", "vup", "up", "eth0")?;
    lab.sh(
        "sw",
        "ip addr add 203.0.113.1/24 dev vup && ip link set vup up",
    )?;
    lab.sh(
        "up",
        "ip addr add 203.0.113.53/24 dev eth0 && ip link set eth0 up",
    )?;
    let txt = format!("--txt-record=big.example.test,{}", big_txt().join(","));
    let pid = lab.spawn(
        "up",
        "dnsmasq",
        &[
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            "--listen-address=203.0.113.53",
            "--address=/www.example.test/203.0.113.7",
            "--address=/other.example.test/203.0.113.8",
            &txt,
            "--local-ttl=300",
            "--log-queries",
            "--log-facility=-",
        ],
        "dnsmasq.log",
    )?;
    ensure!(
        lab.wait_listening("up", Proto::Udp, 53) && lab.wait_listening("up", Proto::Tcp, 53),
        "dnsmasq did not start: {}",
        lab.read_log("dnsmasq.log")
    );
    Ok(pid)
}

/// br `name` (10.N.0.0/24, gateway .1) with a container `c` at .5 on it.
fn bridge(lab: &mut Lab, name: &str, n: u8, c: &str, extra: &[&str]) -> Result<()> {
    let subnet = format!("10.{n}.0.0/24");
    let gw = format!("10.{n}.0.1");
    let mut args = vec!["add-br", name, "--subnet", &subnet, "--gateway", &gw];
    args.extend_from_slice(extra);
    lab.ctl_ok(&args)?;
    let port = format!("v{c}");
    lab.container("sw", c, &port, &format!("10.{n}.0.5/24"), Some(&gw))?;
    lab.ctl_ok(&["add-port", name, &port])?;
    Ok(())
}

/// dig from namespace `ns` at `server`: the whole output (one try, `time` seconds).
fn dig(lab: &Lab, ns: &str, server: &str, args: &[&str], time: u32) -> Result<String> {
    let o = run(lab
        .cmd(ns, "dig")
        .args(["+tries=1", &format!("+time={time}"), &format!("@{server}")])
        .args(args))?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
}

fn answer_a(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect()
}

fn forwards_to_a_real_upstream() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_ns("sw")?;
    let dnsmasq = upstream(&mut lab)?;
    lab.start_switch("sw")?;
    bridge(
        &mut lab,
        "br0",
        0,
        "c1",
        &["--dns-upstream", "203.0.113.53"],
    )?;
    lab.ctl_ok(&["add-host", "br0", "web", "10.0.0.9"])?;
    let gw = "10.0.0.1";
    // UDP and TCP from the client; local names still local.
    let out = dig(&lab, "c1", gw, &["www.example.test"], 5)?;
    ensure!(answer_a(&out) == ["203.0.113.7"], "UDP: {out}");
    let out = dig(&lab, "c1", gw, &["+tcp", "other.example.test"], 5)?;
    ensure!(answer_a(&out) == ["203.0.113.8"], "TCP: {out}");
    ensure!(answer_a(&dig(&lab, "c1", gw, &["web"], 5)?) == ["10.0.0.9"]);
    // Longer than 512 bytes: dnsmasq truncates over UDP, the gateway asks again over
    // TCP, the client (no EDNS) is told to come back over TCP and gets all of it.
    let out = dig(&lab, "c1", gw, &["+noedns", "big.example.test", "TXT"], 10)?;
    for s in big_txt() {
        ensure!(out.contains(&s), "TXT answer incomplete:\n{out}");
    }
    // Never forwarded: plain names, the bridge's own domain, private reverse names.
    for name in ["nope", "nope.br0"] {
        let out = dig(&lab, "c1", gw, &[name], 5)?;
        ensure!(status(&out) == "NXDOMAIN", "{name}: {out}");
    }
    let out = dig(&lab, "c1", gw, &["-x", "10.0.0.77"], 5)?;
    ensure!(status(&out) == "NXDOMAIN", "PTR 10.0.0.77: {out}");
    let log = lab.read_log("dnsmasq.log");
    ensure!(log.contains("query[A] www.example.test"), "{log}");
    for leaked in ["nope", "br0", "10.0.0.77", "77.0.0.10"] {
        ensure!(
            !log.lines()
                .any(|l| l.contains("query[") && l.contains(leaked)),
            "{leaked} reached the upstream:\n{log}"
        );
    }
    // Cached within its TTL: answered with the upstream gone.
    run(Command::new("kill").arg(dnsmasq.to_string()))?;
    ensure!(
        wait_until(Duration::from_secs(5), || !lab.wait_listening(
            "up",
            Proto::Tcp,
            53
        )),
        "dnsmasq did not stop"
    );
    let out = dig(&lab, "c1", gw, &["www.example.test"], 5)?;
    ensure!(answer_a(&out) == ["203.0.113.7"], "not cached: {out}");
    // Not cached, upstream gone: SERVFAIL, not a timeout.
    let out = dig(&lab, "c1", gw, &["new.example.test"], 15)?;
    ensure!(status(&out) == "SERVFAIL", "{out}");
    Ok(())
}

fn dead_upstream_gives_servfail_and_local_names_still_answer() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_ns("sw")?;
    lab.add_ns("up")?;
    lab.veth("sw", "vup", "up", "eth0")?;
    lab.sh(
        "sw",
        "ip addr add 203.0.113.1/24 dev vup && ip link set vup up",
    )?;
    lab.sh(
        "up",
        "ip addr add 203.0.113.54/24 dev eth0 && ip link set eth0 up",
    )?;
    // A resolver that reads queries and never answers; it counts them.
    let count = lab.dir().join("sink.count");
    let sink = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('203.0.113.54',53))\nn=0\nwhile True:\n s.recv(4096); n+=1; open('{}','w').write(str(n))\n",
        count.display()
    );
    lab.spawn("up", "python3", &["-c", &sink], "sink.log")?;
    ensure!(
        lab.wait_listening("up", Proto::Udp, 53),
        "sink did not start"
    );
    lab.start_switch("sw")?;
    bridge(
        &mut lab,
        "br0",
        0,
        "c1",
        &["--dns-upstream", "203.0.113.54"],
    )?;
    lab.ctl_ok(&["add-host", "br0", "web", "10.0.0.9"])?;
    // A slow query in flight (dig's own timeout far above the forwarder's)...
    lab.spawn(
        "c1",
        "dig",
        &["+tries=1", "+time=20", "@10.0.0.1", "slow.example.test"],
        "slow.log",
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), || count.exists()),
        "the query never reached the upstream"
    );
    // ...while local names answer.
    for _ in 0..5 {
        let out = dig(&lab, "c1", "10.0.0.1", &["web"], 2)?;
        ensure!(answer_a(&out) == ["10.0.0.9"], "local name stalled: {out}");
    }
    // The slow one ends in SERVFAIL, bounded by the forwarder, not by dig.
    ensure!(
        wait_until(Duration::from_secs(20), || lab
            .read_log("slow.log")
            .contains(";; ->>HEADER<<-")
            || lab.read_log("slow.log").contains("timed out")),
        "dig did not finish"
    );
    let out = lab.read_log("slow.log");
    ensure!(status(&out) == "SERVFAIL", "{out}");
    let tries: u32 = std::fs::read_to_string(&count)?
        .trim()
        .parse()
        .context("count")?;
    ensure!(tries >= 2, "the upstream was asked {tries} time(s)");
    Ok(())
}

fn default_upstream_is_vswitchds_resolv_conf() -> Result<()> {
    let mut lab = Lab::new()?;
    let sw = lab.add_ns("sw")?;
    upstream(&mut lab)?;
    // vswitchd's own resolver (ip netns exec mounts it over /etc/resolv.conf).
    std::fs::write(
        std::path::PathBuf::from("/etc/netns")
            .join(&sw)
            .join("resolv.conf"),
        "nameserver 203.0.113.53\n",
    )?;
    lab.start_switch("sw")?;
    bridge(&mut lab, "br0", 0, "c1", &[])?;
    bridge(&mut lab, "br1", 1, "c2", &["--no-dns-upstream"])?;
    let out = dig(&lab, "c1", "10.0.0.1", &["www.example.test"], 5)?;
    ensure!(answer_a(&out) == ["203.0.113.7"], "{out}");
    let out = dig(&lab, "c2", "10.1.0.1", &["www.example.test"], 5)?;
    ensure!(status(&out) == "NXDOMAIN", "--no-dns-upstream: {out}");
    let show = lab.ctl_json(&["show"])?;
    let b = &show["bridges"];
    ensure!(b[0]["dns_forward"] == "resolv.conf" && b[0]["dns_upstream"][0] == "203.0.113.53:53");
    ensure!(b[1]["dns_forward"] == "off");
    Ok(())
}
