//! `pipework --watch`: keep Docker containers plumbed across restarts.
//!
//! A container's network namespace dies with its process, and the veth pair with it:
//! after `docker restart` the container comes back with only `lo`. The watcher follows
//! the Docker engine's event stream (`GET /events`, container `start` events) and, for
//! every vswitch port that pipework made for that container (the port's
//! `external_ids.container_id`), removes the stale port and plumbs the container again
//! with what the port recorded: bridge, interface name, host-side name, MAC, address or
//! dhcp, gateway, VLAN and DNS name. At start it does the same for every recorded
//! container that is running but whose host-side interface is gone (restarted while no
//! watcher ran).

use crate::args::{Addr, Plumb, DHCP_TIMEOUT};
use crate::guest::docker_socket;
use crate::netlink::{parse_mac, Rtnl};
use crate::plumb::{self, Daemon};
use anyhow::{anyhow, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use vswitch_proto::{BridgeInfo, Command as Req, PortInfo};

/// Container `start` events only (URL-encoded `{"type":["container"],"event":["start"]}`).
const EVENTS: &str =
    "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%5D%7D";

/// The plumbing a port records, turned back into a `pipework` command.
fn recorded_plumb(br: &BridgeInfo, p: &PortInfo) -> Result<Plumb> {
    let id = |k: &str| p.external_ids.get(k).map(String::as_str);
    let guest = id("container_id")
        .ok_or_else(|| anyhow!("port {} records no container", p.name))?
        .to_string();
    let ifname = id("ifname")
        .ok_or_else(|| anyhow!("port {} records no interface name", p.name))?
        .to_string();
    let mac = id("mac")
        .and_then(parse_mac)
        .ok_or_else(|| anyhow!("port {} records no usable MAC", p.name))?;
    let addr = if id("dhcp") == Some("1") {
        Addr::Dhcp
    } else if let Some((ip6, len)) = id("ip")
        .and_then(|c| c.split_once('/'))
        .and_then(|(i, l)| Some((i.parse::<std::net::Ipv6Addr>().ok()?, l.parse::<u8>().ok()?)))
    {
        Addr::Static6 {
            ip: ip6,
            prefix: len,
            gateway: id("gateway").and_then(|g| g.parse().ok()),
        }
    } else {
        let cidr = id("ip").ok_or_else(|| anyhow!("port {} records no address", p.name))?;
        let (ip, prefix) = cidr
            .split_once('/')
            .and_then(|(i, l)| Some((i.parse::<Ipv4Addr>().ok()?, l.parse::<u8>().ok()?)))
            .ok_or_else(|| anyhow!("port {} records a bad address {cidr:?}", p.name))?;
        let gateway = match id("gateway") {
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| anyhow!("port {} records a bad gateway {g:?}", p.name))?,
            ),
            None => None,
        };
        Addr::Static {
            ip,
            prefix,
            gateway,
        }
    };
    Ok(Plumb {
        bridge: br.name.clone(),
        ifname,
        host_ifname: Some(p.name.clone()),
        guest,
        name: id("dns").map(str::to_string),
        addr,
        mac: Some(mac),
        vlan: p.tag,
        timeout: DHCP_TIMEOUT,
        lock: id("lock") == Some("1"),
    })
}

/// Pipework's ports for containers: (bridge, port).
fn container_ports(d: &mut Daemon) -> Result<Vec<(BridgeInfo, PortInfo)>> {
    let bridges: Vec<BridgeInfo> = d.client.call(Req::ListBr)?;
    let mut out = Vec::new();
    for b in &bridges {
        for p in &b.ports {
            if p.external_ids.get("pipework").map(String::as_str) == Some("1")
                && p.external_ids.contains_key("container_id")
            {
                out.push((b.clone(), p.clone()));
            }
        }
    }
    Ok(out)
}

/// Plumb again every port of container `cid` (all of them when `only_missing` is
/// false; else only those whose host-side interface is gone).
fn replumb(d: &mut Daemon, cid: &str, only_missing: bool) -> Result<usize> {
    let mut hrt = Rtnl::open_in(&d.ns)?;
    let mut done = 0;
    for (br, port) in container_ports(d)? {
        if port.external_ids.get("container_id").map(String::as_str) != Some(cid) {
            continue;
        }
        if only_missing && hrt.link(&port.name)?.is_some() {
            continue;
        }
        let p = recorded_plumb(&br, &port)?;
        let short = &cid[..cid.len().min(12)];
        // The old pair died with the old namespace: drop the port, its name and its
        // reservation. The lease itself stays, so the same MAC gets the same address.
        for req in stale(&br.name, &port) {
            if let Err(e) = d.client.call_value(req) {
                eprintln!("warning: container {short}: {e}");
            }
        }
        match plumb::plumb(d, &p) {
            Ok(r) => {
                println!("container {short} started: {}", plumb::Report::human(&r));
                done += 1;
            }
            Err(e) => eprintln!("error: container {short}: re-plumbing {}: {e:#}", p.ifname),
        }
    }
    let _ = std::io::stdout().flush();
    Ok(done)
}

/// The requests that forget a dead port: its DNS name (static) or reservation (dhcp),
/// then the port.
fn stale(bridge: &str, p: &PortInfo) -> Vec<Req> {
    let mut out = Vec::new();
    let id = |k: &str| p.external_ids.get(k).cloned();
    if id("dhcp").as_deref() == Some("1") {
        if let Some(mac) = id("mac") {
            out.push(Req::DhcpUnreserve {
                bridge: bridge.to_string(),
                mac,
                if_exists: true,
            });
        }
    } else if let Some(name) = id("dns") {
        out.push(Req::DelHost {
            bridge: bridge.to_string(),
            name,
            if_exists: true,
        });
    }
    out.push(Req::DelPort {
        bridge: bridge.to_string(),
        port: p.name.clone(),
        if_exists: true,
    });
    out
}

/// Is container `cid` running? (Errors count as not running.)
fn running(sock: &Path, cid: &str) -> bool {
    crate::guest::find(cid, None).is_ok() && sock.exists()
}

/// Open the event stream; the reader is positioned at the body.
fn events(sock: &Path) -> Result<BufReader<UnixStream>> {
    let mut s = UnixStream::connect(sock)
        .with_context(|| format!("connect to the Docker engine at {}", sock.display()))?;
    write!(s, "GET {EVENTS} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(anyhow!(
            "the Docker engine refused the event stream: {}",
            status.trim()
        ));
    }
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    Ok(r)
}

/// Run until killed (or until the engine cannot be reached for `GIVE_UP`).
pub fn watch(socket: Option<&Path>) -> Result<()> {
    const GIVE_UP: u32 = 60;
    let sock = docker_socket()?;
    let mut failures = 0;
    loop {
        // Subscribe first, then catch up, so no start event falls between the two.
        let stream = match events(&sock) {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                failures += 1;
                if failures > GIVE_UP {
                    return Err(e.context("giving up"));
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut d = plumb::connect(socket)?;
        let mut seen: Vec<String> = Vec::new();
        for (_, p) in container_ports(&mut d)? {
            if let Some(cid) = p.external_ids.get("container_id") {
                if !seen.contains(cid) && running(&sock, cid) {
                    replumb(&mut d, cid, true)?;
                    seen.push(cid.clone());
                }
            }
        }
        println!("watching {} for container starts", sock.display());
        let _ = std::io::stdout().flush();
        for line in stream.lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let cid = v["Actor"]["ID"].as_str().or(v["id"].as_str());
            if let (Some(cid), Some("start")) = (cid, v["Action"].as_str().or(v["status"].as_str()))
            {
                let mut d = plumb::connect(socket)?;
                replumb(&mut d, cid, false)?;
            }
        }
        // The engine went away (restart?): reconnect.
        std::thread::sleep(Duration::from_secs(1));
    }
}
