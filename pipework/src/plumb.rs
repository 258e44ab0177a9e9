//! Plumbing, unplumbing, waiting and routes.

use crate::args::{Addr, Cmd, Plumb, USAGE};
use crate::guest::{self, Guest};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vswitch_proto::{
    socket_path, AddHost, AddPort, BridgeInfo, Client, Command as Req, PortKind, VersionInfo,
};

/// Run `ip ARGS` inside the network namespace at `netns`.
fn ip_in(netns: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg("ip")
        .args(args)
        .output()
        .context("run nsenter (util-linux) and ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exists_in(netns: &Path, dev: &str) -> bool {
    ip_in(netns, &["link", "show", "dev", dev]).is_ok()
}

struct Daemon {
    client: Client,
    netns: PathBuf,
}

fn connect(socket: Option<&Path>) -> Result<Daemon> {
    let mut client = Client::connect(&socket_path(socket))?;
    let v: VersionInfo = client.call(Req::Version)?;
    Ok(Daemon {
        client,
        netns: PathBuf::from(format!("/proc/{}/ns/net", v.pid)),
    })
}

fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Cmd::Wait { ifname, timeout } => wait(&ifname, timeout),
        Cmd::Ip { what, guest, args } => {
            let g = guest::find(&guest)?;
            let mut a = vec![what];
            a.extend(args.iter().map(String::as_str));
            ip_in(&g.netns, &a).map(|out| print!("{out}"))
        }
        Cmd::Remove {
            socket,
            bridge,
            ifname,
            guest,
        } => remove(socket.as_deref(), &bridge, &ifname, &guest),
        Cmd::Plumb(p) => plumb(p),
    }
}

fn wait(ifname: &str, timeout: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let dir = PathBuf::from("/sys/class/net").join(ifname);
    loop {
        let up = std::fs::read_to_string(dir.join("operstate")).is_ok_and(|s| s.trim() == "up")
            || std::fs::read_to_string(dir.join("flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .is_some_and(|f| {
                    f & 1 == 1
                        && std::fs::read_to_string(dir.join("carrier"))
                            .is_ok_and(|c| c.trim() == "1")
                });
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("interface {ifname} did not come up within {timeout} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn guest_key(g: &Guest, guest_arg: &str) -> String {
    g.dns_name.clone().unwrap_or_else(|| guest_arg.to_string())
}

fn plumb(p: Plumb) -> Result<()> {
    let mut d = connect(p.socket.as_deref())?;
    let bridges: Vec<BridgeInfo> = d.client.call(Req::ListBr)?;
    let Some(br) = bridges.iter().find(|b| b.name == p.bridge) else {
        bail!("no such bridge: {}", p.bridge);
    };
    let g = guest::find(&p.guest)?;
    let key = guest_key(&g, &p.guest);
    // Already plumbed?
    for b in &bridges {
        for port in &b.ports {
            if port.external_ids.get("guest") == Some(&key)
                && port.external_ids.get("ifname") == Some(&p.ifname)
            {
                bail!(
                    "already plumbed: {key} {} is port {} on bridge {}",
                    p.ifname,
                    port.name,
                    b.name
                );
            }
        }
    }
    let ip_only = match &p.addr {
        Addr::Static { cidr, .. } => {
            let ip: std::net::Ipv4Addr = cidr
                .split('/')
                .next()
                .unwrap_or_default()
                .parse()
                .context("address")?;
            if let Some(subnet) = &br.subnet {
                let net: ipnet::Ipv4Net = subnet.parse().context("bridge subnet")?;
                if !net.contains(&ip) {
                    bail!(
                        "address {ip} is outside subnet {subnet} of bridge {}",
                        br.name
                    );
                }
            }
            let taken = br.ports.iter().any(|x| {
                x.external_ids.get("ip").and_then(|v| v.split('/').next()) == Some(&ip.to_string())
            }) || Some(ip.to_string()) == br.gateway;
            let hosts: Vec<vswitch_proto::HostEntry> = d.client.call(Req::ListHosts {
                bridge: br.name.clone(),
            })?;
            if taken || hosts.iter().any(|h| h.ip == ip.to_string()) {
                bail!("address {ip} is already in use on bridge {}", br.name);
            }
            Some(ip.to_string())
        }
        Addr::Dhcp => {
            if br.dhcp.is_none() {
                bail!(
                    "bridge {} has no DHCP server (vswitchctl add-br ... --dhcp)",
                    br.name
                );
            }
            None
        }
    };
    if exists_in(&g.netns, &p.ifname) {
        bail!("interface {} already exists in {key}", p.ifname);
    }
    // Host-side name: given, or derived and checked for collisions.
    let host = match &p.host_ifname {
        Some(h) => {
            if exists_in(&d.netns, h) {
                bail!("interface {h} already exists in vswitchd's namespace");
            }
            h.clone()
        }
        None => {
            let mut n = None;
            for salt in 0..16u32 {
                let cand = format!("vp{:08x}", fnv(&format!("{key}/{}/{salt}", p.ifname)));
                if !exists_in(&d.netns, &cand) {
                    n = Some(cand);
                    break;
                }
            }
            n.context("cannot find a free host interface name")?
        }
    };
    let tmp = format!("vg{:08x}", fnv(&format!("tmp/{host}")));
    let mtu = br.mtu.to_string();
    ip_in(
        &d.netns,
        &[
            "link", "add", "name", &host, "mtu", &mtu, "type", "veth", "peer", "name", &tmp, "mtu",
            &mtu,
        ],
    )?;
    let undo_veth = |d: &Daemon| {
        let _ = ip_in(&d.netns, &["link", "del", &host]);
    };
    let configure = || -> Result<()> {
        ip_in(
            &d.netns,
            &["link", "set", "dev", &tmp, "netns", &g.ip_target],
        )?;
        ip_in(&g.netns, &["link", "set", "dev", &tmp, "name", &p.ifname])?;
        if let Some(m) = &p.mac {
            ip_in(&g.netns, &["link", "set", "dev", &p.ifname, "address", m])?;
        }
        ip_in(&g.netns, &["link", "set", "lo", "up"])?;
        ip_in(&g.netns, &["link", "set", "dev", &p.ifname, "up"])?;
        if let Addr::Static { cidr, gateway } = &p.addr {
            ip_in(&g.netns, &["addr", "add", cidr, "dev", &p.ifname])?;
            if let Some(gw) = gateway {
                ip_in(&g.netns, &["route", "replace", "default", "via", gw])?;
            }
        }
        Ok(())
    };
    if let Err(e) = configure() {
        undo_veth(&d);
        return Err(e);
    }
    let mac = ip_in(&g.netns, &["-j", "link", "show", "dev", &p.ifname])
        .ok()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
        .and_then(|v| v[0]["address"].as_str().map(str::to_string))
        .unwrap_or_default();
    let mut ids = BTreeMap::new();
    ids.insert("pipework".to_string(), "1".to_string());
    ids.insert("guest".to_string(), key.clone());
    ids.insert("ifname".to_string(), p.ifname.clone());
    ids.insert("mac".to_string(), mac.clone());
    if let Some(ip) = &ip_only {
        ids.insert("ip".to_string(), ip.clone());
    }
    if p.addr == Addr::Dhcp {
        ids.insert("dhcp".to_string(), "1".to_string());
    }
    let add = AddPort {
        bridge: br.name.clone(),
        port: host.clone(),
        kind: PortKind::System,
        tag: p.vlan,
        owned: true,
        external_ids: ids,
        ..Default::default()
    };
    if let Err(e) = d.client.call_value(Req::AddPort(add)) {
        undo_veth(&d);
        return Err(e.into());
    }
    let result = (|| -> Result<()> {
        let ip = match &p.addr {
            Addr::Static { .. } => ip_only.clone(),
            Addr::Dhcp => Some(dhcp(&g, &p.ifname, &key)?),
        };
        if let (Some(name), Some(ip)) = (&g.dns_name, &ip) {
            if p.addr == Addr::Dhcp {
                // Keep the address for as long as the port exists: a reservation
                // (removed with the port by `pipework --remove`).
                d.client.call_value(Req::DhcpReserve {
                    bridge: br.name.clone(),
                    mac: mac.clone(),
                    ip: ip.clone(),
                    name: Some(name.to_ascii_lowercase()),
                })?;
            } else {
                let name = name.to_ascii_lowercase();
                if let Err(e) = d.client.call_value(Req::AddHost(AddHost {
                    bridge: br.name.clone(),
                    name: name.clone(),
                    ip: ip.clone(),
                    source: Some("pipework".into()),
                })) {
                    eprintln!("warning: DNS name {name} not registered: {e}");
                }
            }
        }
        println!(
            "{key} {} {} on {} (host side {host})",
            p.ifname,
            ip.unwrap_or_default(),
            br.name
        );
        Ok(())
    })();
    if let Err(e) = result {
        let _ = d.client.call_value(Req::DelPort {
            bridge: br.name.clone(),
            port: host.clone(),
        });
        return Err(e);
    }
    Ok(())
}

/// Get an address from the bridge's DHCP server by a real exchange from inside the
/// guest's namespace (busybox udhcpc run from the host; nothing needed in the guest).
fn dhcp(g: &Guest, ifname: &str, hostname: &str) -> Result<String> {
    let script = std::env::temp_dir().join(format!("pipework-udhcpc-{}.sh", std::process::id()));
    std::fs::write(&script, "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev $interface; ip addr add $ip/$mask dev $interface; [ -n \"$router\" ] && ip route replace default via $router; echo \"$ip\";; esac\n")?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = Command::new("nsenter")
        .arg(format!("--net={}", g.netns.display()))
        .args([
            "--", "busybox", "udhcpc", "-i", ifname, "-n", "-q", "-t", "5", "-T", "1", "-x",
        ])
        .arg(format!("hostname:{hostname}"))
        .arg("-s")
        .arg(&script)
        .output()
        .context("run busybox udhcpc (apt-get install busybox)");
    let _ = std::fs::remove_file(&script);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text
        .lines()
        .rev()
        .find(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
    {
        Some(ip) if out.status.success() => Ok(ip.to_string()),
        _ => bail!("no DHCP lease for {ifname} of {hostname} (pool exhausted or no answer)"),
    }
}

fn remove(socket: Option<&Path>, bridge: &str, ifname: &str, guest_arg: &str) -> Result<()> {
    let mut d = connect(socket)?;
    let bridges: Vec<BridgeInfo> = d.client.call(Req::ListBr)?;
    let Some(br) = bridges.iter().find(|b| b.name == bridge) else {
        bail!("no such bridge: {bridge}");
    };
    // The guest may be gone already (stopped container): match on the recorded name.
    let key = guest::find(guest_arg)
        .map(|g| guest_key(&g, guest_arg))
        .unwrap_or_else(|_| guest_arg.to_string());
    let Some(port) = br.ports.iter().find(|p| {
        p.external_ids.get("guest") == Some(&key)
            && p.external_ids.get("ifname").map(String::as_str) == Some(ifname)
    }) else {
        bail!("{key} {ifname} is not plumbed into bridge {bridge}");
    };
    if port.external_ids.contains_key("dhcp") {
        if let Some(mac) = port.external_ids.get("mac") {
            let _ = d.client.call_value(Req::DhcpUnreserve {
                bridge: bridge.into(),
                mac: mac.clone(),
            });
        }
    } else if port.external_ids.contains_key("ip") {
        let _ = d.client.call_value(Req::DelHost {
            bridge: bridge.into(),
            name: key.to_ascii_lowercase(),
        });
    }
    d.client.call_value(Req::DelPort {
        bridge: bridge.into(),
        port: port.name.clone(),
    })?;
    println!("removed {key} {ifname} from {bridge}");
    Ok(())
}
