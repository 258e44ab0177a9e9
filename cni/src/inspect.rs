//! CHECK (is the attachment still what `prevResult` says?), STATUS (can ADD work
//! now?) and GC (remove every attachment of the network the runtime no longer
//! knows).

use crate::attach::open_netns;
use crate::config::{owner, Env, Ipam, NetConf};
use crate::delegate::Delegate;
use crate::error::{
    fail, CniError, CniResult, CHECK_FAILED, INTERNAL, INVALID_CONFIG, LIMITED_CONNECTIVITY,
    NOT_AVAILABLE,
};
use crate::vs::{self, Vs};
use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use vswitch_hostnet::netlink::{mac_string, parse_mac, Rtnl};
use vswitch_proto::{Client, Command, VersionInfo};

fn internal(e: anyhow::Error) -> CniError {
    crate::error::classify(e, INTERNAL)
}

fn differs(msg: String) -> CniError {
    CniError::new(CHECK_FAILED, msg)
}

/// CHECK: the interface, its MAC, addresses and routes as `prevResult` lists them;
/// the vswitchd port up and the address still held; the delegated plugin's CHECK.
pub fn check(env: &Env, conf: &NetConf) -> CniResult<()> {
    let Some(prev) = &conf.prev_result else {
        return fail(INVALID_CONFIG, "CHECK needs prevResult (the result of ADD)");
    };
    if let Ipam::Delegate { plugin } = &conf.ipam {
        Delegate::new(plugin, env, conf).check()?;
    }
    let ns = open_netns(&env.netns)?;
    let Some(idx) = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.as_deref().is_none_or(|s| s == env.netns))
    else {
        return Err(differs(format!(
            "prevResult lists no interface {} in {}",
            env.ifname, env.netns
        )));
    };
    let want = &prev.interfaces[idx];
    let mut grt = Rtnl::open_in(&ns).map_err(internal)?;
    let link = grt.link(&env.ifname).map_err(internal)?.ok_or_else(|| {
        differs(format!(
            "interface {} is gone from {}",
            env.ifname, env.netns
        ))
    })?;
    if let Some(m) = want.mac.as_deref() {
        let have = link.mac.as_ref().map(mac_string);
        if parse_mac(m).map(|x| mac_string(&x)) != have {
            return Err(differs(format!(
                "interface {} has MAC {}, prevResult says {m}",
                env.ifname,
                have.as_deref().unwrap_or("none")
            )));
        }
    }
    if !link.up {
        return Err(differs(format!("interface {} is down", env.ifname)));
    }
    let have = grt.addrs(link.index).map_err(internal)?;
    let mut ours: Vec<Ipv4Net> = Vec::new();
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(idx)) {
        let Ok(ipnet::IpNet::V4(n)) = ip.address.parse::<ipnet::IpNet>() else {
            continue;
        };
        if !have.contains(&(n.addr(), n.prefix_len())) {
            return Err(differs(format!(
                "interface {} lacks address {n}",
                env.ifname
            )));
        }
        ours.push(n);
    }
    let routes = grt.routes4().map_err(internal)?;
    for r in &prev.routes {
        let Ok(ipnet::IpNet::V4(dst)) = r.dst.parse::<ipnet::IpNet>() else {
            continue;
        };
        let gw: Option<Ipv4Addr> = r.gw.as_deref().and_then(|g| g.parse().ok());
        let found = routes.iter().any(|x| {
            x.dst == dst.network() && x.prefix == dst.prefix_len() && (gw.is_none() || x.gw == gw)
        });
        if !found {
            return Err(differs(format!(
                "route to {dst}{} is gone from {}",
                gw.map(|g| format!(" via {g}")).unwrap_or_default(),
                env.netns
            )));
        }
    }

    let owner = conf.owner(&env.container_id, &env.ifname);
    let mut vs = Vs::connect(&conf.socket)?;
    let bridges = vs.bridges()?;
    let Some((b, p)) = vs::find_port(&bridges, &conf.name, &owner) else {
        return Err(differs(format!(
            "vswitchd has no port for {} {} on network {}",
            env.container_id, env.ifname, conf.name
        )));
    };
    if p.state != "up" {
        return Err(differs(format!(
            "port {} on bridge {} is not up: {}",
            p.name, b.name, p.state
        )));
    }
    let subnet: Option<Ipv4Net> = b.subnet.as_deref().and_then(|s| s.parse().ok());
    let held: BTreeSet<String> = vs
        .allocations(&b.name)?
        .into_iter()
        .filter(|a| a.owner == owner)
        .map(|a| a.ip)
        .collect();
    for n in ours {
        if subnet.is_some_and(|s| s.contains(&n.addr())) && !held.contains(&n.addr().to_string()) {
            return Err(differs(format!(
                "address {} is no longer held for this container on bridge {}",
                n.addr(),
                b.name
            )));
        }
    }
    Ok(())
}

/// STATUS: 50 when vswitchd cannot serve ADD (not reachable, the bridge missing and
/// not makeable, no subnet to allocate from); 51 when it answers but ports of this
/// network are not up (their containers have limited connectivity).
pub fn status(env: &Env, conf: &NetConf) -> CniResult<()> {
    let unavailable = |m: String| CniError::new(NOT_AVAILABLE, m);
    let path = conf.socket.display().to_string();
    let mut client = Client::connect(&conf.socket)
        .map_err(|e| unavailable(format!("vswitchd is not reachable: {e}")))?;
    let _: VersionInfo = client
        .call(Command::Version)
        .map_err(|e| unavailable(format!("vswitchd at {path} does not answer: {e}")))?;
    let bridges: Vec<vswitch_proto::BridgeInfo> = client
        .call(Command::ListBr)
        .map_err(|e| unavailable(format!("vswitchd at {path}: list-br: {e}")))?;
    match bridges.iter().find(|b| b.name == conf.bridge) {
        None if conf.subnet.is_none() => {
            return Err(unavailable(format!(
                "bridge {} does not exist in vswitchd, and the configuration gives no subnet to create it",
                conf.bridge
            )))
        }
        None => {}
        Some(b) => {
            vs::check_matches(b, conf).map_err(|e| unavailable(e.msg))?;
            if matches!(conf.ipam, Ipam::Vswitch { .. }) && b.subnet.is_none() {
                return Err(unavailable(format!(
                    "bridge {} has no subnet to allocate addresses from",
                    b.name
                )));
            }
        }
    }
    let down: Vec<String> = bridges
        .iter()
        .flat_map(|b| b.ports.iter())
        .filter(|p| vs::is_cni_port(p, &conf.name) && p.state != "up")
        .map(|p| format!("{} ({})", p.name, p.state))
        .collect();
    if !down.is_empty() {
        return Err(CniError::new(
            LIMITED_CONNECTIVITY,
            format!(
                "ports of network {} are not up: {}",
                conf.name,
                down.join(", ")
            ),
        ));
    }
    if let Ipam::Delegate { plugin } = &conf.ipam {
        Delegate::new(plugin, env, conf).forward_new("STATUS")?;
    }
    Ok(())
}

/// GC: tear down every attachment of this network that is not in
/// `cni.dev/valid-attachments` (ports CNI marked, their names, addresses and
/// published ports; names and addresses left without a port), then forward GC to
/// the delegated plugin. Ports CNI did not make, and other networks', stay.
pub fn gc(env: &Env, conf: &NetConf) -> CniResult<()> {
    let Some(valid) = &conf.valid_attachments else {
        return fail(
            INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments (nothing removed)",
        );
    };
    let valid: BTreeSet<String> = valid.iter().map(|(c, i)| owner(&conf.name, c, i)).collect();
    let prefix = format!("cni:{}/", conf.name);
    let stale = |o: &str| o.starts_with(&prefix) && !valid.contains(o);
    let mut vs = Vs::connect(&conf.socket)?;
    let mut errs = Vec::new();
    let bridges = vs.bridges()?;
    for b in &bridges {
        for p in b.ports.iter().filter(|p| vs::is_cni_port(p, &conf.name)) {
            if vs::port_owner(p).is_some_and(|o| !valid.contains(o)) {
                vs::teardown_port(&mut vs, b, p, &mut errs);
            }
        }
    }
    // Names and addresses whose port is gone.
    for b in &bridges {
        let mut owners: BTreeSet<String> = BTreeSet::new();
        match vs.allocations(&b.name) {
            Ok(a) => owners.extend(a.into_iter().map(|a| a.owner).filter(|o| stale(o))),
            Err(e) => errs.push(e.msg),
        }
        match vs.hosts(&b.name) {
            Ok(h) => owners.extend(h.into_iter().map(|h| h.source).filter(|o| stale(o))),
            Err(e) => errs.push(e.msg),
        }
        for o in owners {
            vs::release(&mut vs, &b.name, &o, None, &[], &mut errs);
        }
    }
    if let Ipam::Delegate { plugin } = &conf.ipam {
        if let Err(e) = Delegate::new(plugin, env, conf).forward_new("GC") {
            errs.push(e.msg);
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(INTERNAL, errs.join("; ")))
    }
}
