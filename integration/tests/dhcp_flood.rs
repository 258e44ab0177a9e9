//! DHCP under a flood: a guest sends 20 000 DHCPDECLINEs (for another client's address,
//! for random addresses in and outside the subnet) and 20 000 DHCPDISCOVERs, each from a
//! random MAC, at a bridge with a 10-address pool. A real client (busybox udhcpc) keeps
//! its lease and renews it, the lease table stays within the pool, and a second, quiet
//! container still gets DNS answers and ping replies from the gateway while it goes on.

use anyhow::{ensure, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vswitch_integration::{run, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[(
        "dhcp_flood_keeps_the_real_lease_dns_and_ping",
        dhcp_flood_keeps_the_real_lease_dns_and_ping,
    )])
}

const FLOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dhcp_flood.py");
/// DECLINEs, and as many DISCOVERs.
const FLOOD_EACH: u32 = 20_000;
/// Seconds the flood is spread over.
const FLOOD_SECS: u32 = 20;
/// Probes (pings, DNS queries) sent during the flood, and how many must be answered.
const PROBES: usize = 20;
const PROBES_NEEDED: usize = 18;
const POOL: (&str, &str) = ("10.0.0.100", "10.0.0.109");
const GATEWAY: &str = "10.0.0.1";

/// A background process we started; killed (by its handle) and reaped when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, log: &std::path::Path) -> Result<Bg> {
    let f = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    Ok(Bg(child))
}

/// The address udhcpc's script last reported for `event` ("bound", "renew"), if any.
fn last_event(log: &std::path::Path, event: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{event} ")).map(str::to_string))
}

fn in_pool(ip: &str) -> bool {
    let parse = |s: &str| s.parse::<std::net::Ipv4Addr>().ok();
    match (parse(ip), parse(POOL.0), parse(POOL.1)) {
        (Some(a), Some(lo), Some(hi)) => lo <= a && a <= hi,
        _ => false,
    }
}

fn dhcp_flood_keeps_the_real_lease_dns_and_ping() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        GATEWAY,
        "--dhcp",
        &format!("{}-{}", POOL.0, POOL.1),
    ])?;
    for (ns, port) in [("real", "v1"), ("flood", "v3")] {
        lab.add_ns(ns)?;
        lab.veth("sw", port, ns, "eth0")?;
        lab.sh(ns, "ip link set eth0 up")?;
        lab.ctl_ok(&["add-port", "br0", port])?;
    }
    lab.container("sw", "quiet", "v2", "10.0.0.2/24", None)?;
    lab.ctl_ok(&["add-port", "br0", "v2"])?;

    // The real client: udhcpc in the foreground for the whole test, its script logging
    // every event (and configuring the address, so a renewal is a real unicast one).
    let events = lab.dir().join("udhcpc.events");
    let script = lab.dir().join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev $interface; ip addr add $ip/$mask dev $interface;; esac\necho \"$1 $ip\" >> {}\n",
            events.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut udhcpc = lab.cmd("real", "busybox");
    udhcpc.args(["udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "1"]);
    udhcpc.args(["-x", "hostname:real", "-s"]).arg(&script);
    let udhcpc = spawn(udhcpc, &lab.dir().join("udhcpc.log"))?;
    ensure!(
        wait_until(Duration::from_secs(20), || last_event(&events, "bound")
            .is_some()),
        "udhcpc got no lease: {}",
        std::fs::read_to_string(&events).unwrap_or_default()
    );
    let ip = last_event(&events, "bound").context("no bound event")?;
    ensure!(in_pool(&ip), "udhcpc bound {ip}, outside the pool");
    let real_mac = lab.mac("real", "eth0")?;

    // Before the flood: the gateway answers pings and the lease's name.
    lab.assert_ping("quiet", GATEWAY)?;
    let dig = |lab: &Lab| -> bool {
        lab.sh_out(
            "quiet",
            &format!("dig +short +time=1 +tries=1 @{GATEWAY} real"),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == ip)
        .unwrap_or(false)
    };
    ensure!(
        wait_until(Duration::from_secs(5), || dig(&lab)),
        "the lease's name does not resolve before the flood"
    );
    let rss_before = rss_kb(lab.switch_pid())?;

    // The flood.
    let flood_log = lab.dir().join("flood.log");
    let mut cmd = lab.cmd("flood", "python3");
    cmd.args([FLOOD, "eth0"])
        .arg(FLOOD_EACH.to_string())
        .arg(FLOOD_SECS.to_string())
        .args([ip.as_str(), GATEWAY]);
    let mut flood = spawn(cmd, &flood_log)?;
    ensure!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            &flood_log
        )
        .is_ok_and(|t| t.contains("started"))),
        "the flood did not start: {}",
        std::fs::read_to_string(&flood_log).unwrap_or_default()
    );
    // Give the flood a second to fill whatever queue it fills, then probe.
    std::thread::sleep(Duration::from_secs(1));
    let mut ping = lab.cmd("quiet", "ping");
    ping.args(["-c", &PROBES.to_string(), "-i", "0.5", "-W", "1", GATEWAY]);
    let pinger = std::thread::spawn(move || run(&mut ping));
    let mut answered = 0;
    for _ in 0..PROBES {
        if dig(&lab) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let ping_out = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
    let ping_text = String::from_utf8_lossy(&ping_out.stdout).into_owned();
    let pinged: usize = ping_text
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0);
    let still_flooding = flood.0.try_wait()?.is_none();
    // Wait (bounded) for the flood to end, then for the slow path to drain its queue.
    let deadline = Instant::now() + Duration::from_secs(u64::from(FLOOD_SECS) + 20);
    while flood.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = std::fs::read_to_string(&flood_log)?
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u64>().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(1));

    // What the flood left behind.
    let leases = lab.ctl_json(&["dhcp-leases", "br0"])?;
    let list = leases.as_array().cloned().unwrap_or_default();
    let outside = list
        .iter()
        .filter(|l| !l["ip"].as_str().is_some_and(in_pool))
        .count();
    let zero = list
        .iter()
        .filter(|l| l["mac"] == "00:00:00:00:00:00")
        .count();
    let holder = list
        .iter()
        .find(|l| l["ip"] == ip.as_str())
        .map(|l| l["mac"].as_str().unwrap_or("?").to_string());
    let br = lab.ctl_json(&["show"])?["bridges"][0].clone();
    let rss_after = rss_kb(lab.switch_pid())?;
    // A real renewal (unicast DHCPREQUEST from the leased address): same address.
    let renewed_before = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .matches("renew ")
        .count();
    run(Command::new("kill").args(["-USR1", &udhcpc.0.id().to_string()]))?;
    wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .matches("renew ")
            .count()
            > renewed_before
    });
    let renewed = last_event(&events, "renew");
    println!(
        "dhcp flood: {sent} frames; during it {pinged}/{PROBES} pings and {answered}/{PROBES} DNS \
         answers (flood still running after the probes: {still_flooding}); after it {} leases \
         ({outside} outside the pool, {zero} with a zero MAC), {ip} held by {holder:?} \
         (the real client is {real_mac}), renewal gave {renewed:?}; ignored declines {}, \
         vswitchd RSS {rss_before} -> {rss_after} kB",
        list.len(),
        br["dhcp_declines_ignored"],
    );

    ensure!(
        sent >= u64::from(FLOOD_EACH),
        "the flood sent only {sent} frames"
    );
    ensure!(
        pinged >= PROBES_NEEDED,
        "the gateway answered {pinged} of {PROBES} pings during the flood:\n{ping_text}"
    );
    ensure!(
        answered >= PROBES_NEEDED,
        "DNS at the gateway answered {answered} of {PROBES} queries during the flood"
    );
    ensure!(
        still_flooding,
        "the flood ended before the probes did: they did not measure it"
    );
    ensure!(
        list.len() <= 10,
        "{} leases from a 10-address pool",
        list.len()
    );
    ensure!(outside == 0, "{outside} leases outside the pool: {leases}");
    ensure!(zero == 0, "{zero} leases with a zero MAC: {leases}");
    ensure!(
        holder.as_deref() == Some(real_mac.as_str()),
        "the real client's {ip} is held by {holder:?}, not {real_mac}"
    );
    ensure!(
        renewed.as_deref() == Some(ip.as_str()),
        "the real client's renewal gave {renewed:?}, not {ip}: {}",
        std::fs::read_to_string(&events).unwrap_or_default()
    );
    ensure!(
        br["dhcp_declines_ignored"].as_u64().unwrap_or(0) > 0,
        "ignored declines are not counted: {br}"
    );
    ensure!(
        br["dhcp_lease_cap"].as_u64().is_some_and(|c| c >= 10),
        "no lease cap shown: {br}"
    );
    drop(udhcpc);

    // The lease survives a restart (written in a batch, and at shutdown).
    lab.restart_switch()?;
    let leases = lab.ctl_json(&["dhcp-leases", "br0"])?;
    ensure!(
        leases.as_array().is_some_and(|a| a
            .iter()
            .any(|l| l["mac"] == real_mac.as_str() && l["ip"] == ip.as_str())),
        "the real lease did not survive a restart: {leases}"
    );
    ensure!(
        wait_until(Duration::from_secs(5), || dig(&lab)),
        "the lease's name does not resolve after a restart"
    );
    Ok(())
}

fn rss_kb(pid: Option<u32>) -> Result<u64> {
    let pid = pid.context("vswitchd is not running")?;
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}
