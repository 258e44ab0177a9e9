//! The snapshot builder: a pure function of the Model, the live-port registry and the
//! tables the snapshot points to. No device, no worker, no db: unit-testable with
//! in-memory ports.

use super::ports::live_names;
use super::state::Live;
use crate::config::model::DnsForward;
use crate::config::Model;
use crate::dp::impair::PortImpair;
use crate::dp::snapshot::{
    router_mac, slot_of, BridgeRt, NameMap, Names6, Nat6Rt, NatRt, PortEntry, PortLock, Publish6Rt,
    PublishRt, Router6If, RouterIf, Snapshot, Upstream, VlanMode,
};
use crate::tables::{Conntrack, Conntrack6, Fdb, Route, Route6, Route6Table, RouteTable};
use std::collections::HashMap;
use std::sync::Arc;

/// The shared tables a snapshot points to (they outlive snapshots).
pub struct Tables<'a> {
    /// One FDB per bridge, by name.
    pub fdbs: &'a HashMap<String, Arc<Fdb>>,
    pub conntrack: &'a Arc<Conntrack>,
    /// The kernel fast path, when it runs (`vswitchd --fastpath`).
    pub fastpath: &'a Option<Arc<crate::fastpath::FastPath>>,
}

/// The snapshot of `model` with the ports of `live` attached. A configured port that is
/// not live (its device is missing) is left out; a bridge without an FDB in `tables`
/// gets an empty one of minimal size (the control plane creates them with the bridge).
pub fn build(
    model: &Model,
    live: &HashMap<String, Live>,
    tables: &Tables<'_>,
    generation: u64,
) -> Snapshot {
    let mut ports: Vec<Option<PortEntry>> = Vec::new();
    let mut bridges = Vec::new();
    let mut impaired = Vec::new();
    for (bi, b) in model.bridges.iter().enumerate() {
        let mut slots = Vec::new();
        // Mirrors: the output slot(s) of each selected port.
        let slot_of_port = |n: &str| -> Vec<u16> {
            b.ports
                .iter()
                .filter(|p| p.name == n)
                .flat_map(live_names)
                .filter_map(|l| live.get(&l).map(|l| slot_of(l.id) as u16))
                .collect()
        };
        let mut mirror_to: HashMap<&str, Vec<u16>> = HashMap::new();
        let mut mirror_outs: Vec<&str> = Vec::new();
        for m in &b.mirrors {
            let outs = slot_of_port(&m.output);
            mirror_outs.push(&m.output);
            for s in &m.select {
                mirror_to.entry(s).or_default().extend(&outs);
            }
        }
        for p in &b.ports {
            let mut group = 0;
            for name in live_names(p) {
                let Some(l) = live.get(&name) else {
                    continue;
                };
                if p.vxlan.is_some() && group == 0 {
                    // The remotes of one vxlan port: a split-horizon group.
                    group = l.id.wrapping_add(1).max(1);
                }
                let s = slot_of(l.id);
                if ports.len() <= s {
                    ports.resize_with(s + 1, || None);
                }
                ports[s] = Some(PortEntry {
                    id: l.id,
                    name,
                    bridge: bi,
                    vlan: VlanMode::from_conf(p.tag, &p.trunks),
                    dev: l.dev.clone(),
                    counters: l.counters.clone(),
                    group,
                    lock: p
                        .lock
                        .as_ref()
                        .map(|c| Arc::new(PortLock::new(c.mac, &c.ips))),
                    mirror_to: mirror_to.get(p.name.as_str()).cloned().unwrap_or_default(),
                    mirror_out: mirror_outs.contains(&p.name.as_str()),
                    impair: p.impair.as_ref().filter(|i| !i.is_none()).map(|i| {
                        impaired.push(s as u16);
                        PortImpair {
                            conf: i.clone(),
                            queue: l.impair.clone(),
                        }
                    }),
                });
                slots.push(s as u16);
            }
        }
        let fdb = tables
            .fdbs
            .get(&b.name)
            .cloned()
            .unwrap_or_else(|| Arc::new(Fdb::new(1, 1)));
        let router = match (b.gateway, b.subnet) {
            (Some(ip), Some(net)) => Some(RouterIf {
                ip,
                net,
                mac: router_mac(&b.name),
            }),
            _ => None,
        };
        let router6 = match (b.gateway6, b.subnet6) {
            (Some(ip), Some(net)) => {
                let mac = router_mac(&b.name);
                Some(Router6If {
                    ip,
                    ll: crate::wire::ipv6::link_local(mac),
                    net,
                    mac,
                })
            }
            _ => None,
        };
        let mut names: NameMap = b
            .hosts
            .iter()
            .filter_map(|h| match h.ip {
                std::net::IpAddr::V4(a) => Some((h.name.clone(), (a, 0))),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let mut names6: Names6 = b
            .hosts
            .iter()
            .filter_map(|h| match h.ip {
                std::net::IpAddr::V6(a) => Some((h.name.clone(), a)),
                std::net::IpAddr::V4(_) => None,
            })
            .collect();
        for r in &b.reservations {
            if let Some(n) = &r.name {
                names.entry(n.clone()).or_insert((r.ip, 0));
            }
        }
        for r in &b.reservations6 {
            if let Some(n) = &r.name {
                names6.entry(n.clone()).or_insert(r.ip);
            }
        }
        // Overlay bridges: the names of remote endpoints (installed by vswitch-agent).
        super::cluster::add_names(&b.name, &mut names, &mut names6);
        bridges.push(BridgeRt {
            name: b.name.clone(),
            fdb,
            ports: slots,
            router,
            router6,
            isolated: b.isolated,
            mtu: b.mtu,
            dhcp: b.dhcp.map(|d| (d.first, d.last)),
            dhcp6: b.dhcp6.is_some() && router6.is_some(),
            names: Arc::new(names),
            names6: Arc::new(names6),
            dns: match &b.dns {
                DnsForward::System => Upstream::System,
                DnsForward::Servers(s) => Upstream::Servers(s.as_slice().into()),
                DnsForward::Off => Upstream::Off,
            },
            overlay: super::cluster::overlay_rt(b, &|n| live.get(n).map(|l| l.id)),
        });
    }
    let mut routes = RouteTable::default();
    let mut router_ips = HashMap::new();
    for (bi, b) in bridges.iter().enumerate() {
        if let Some(r) = b.router {
            routes.insert(
                r.net,
                Route {
                    bridge: bi,
                    via: None,
                },
            );
            router_ips.insert(r.ip, bi);
        }
    }
    let mut routes6 = Route6Table::default();
    let mut router_ips6 = HashMap::new();
    for (bi, b) in bridges.iter().enumerate() {
        if let Some(r) = b.router6 {
            routes6.insert(
                r.net,
                Route6 {
                    bridge: bi,
                    via: None,
                },
            );
            router_ips6.insert(r.ip, bi);
            router_ips6.insert(r.ll, bi);
        }
    }
    for r in &model.routes6 {
        if let Some(c) = routes6.lookup(r.via).filter(|c| c.via.is_none()) {
            routes6.insert(
                r.cidr,
                Route6 {
                    bridge: c.bridge,
                    via: Some(r.via),
                },
            );
        }
    }
    for r in &model.routes {
        // The next hop's bridge: the connected subnet that holds it.
        if let Some(c) = routes.lookup(r.via).filter(|c| c.via.is_none()) {
            routes.insert(
                r.cidr,
                Route {
                    bridge: c.bridge,
                    via: Some(r.via),
                },
            );
        }
    }
    let mut nat = NatRt {
        masq: vec![None; bridges.len()],
        ..Default::default()
    };
    let index = |name: &str| bridges.iter().position(|b| b.name == name);
    for m in &model.masquerade {
        if let (Some(i), Some(o)) = (index(&m.bridge), index(&m.out)) {
            nat.masq[i] = Some(o);
            if let Some(r) = bridges[o].router {
                if !nat.outside_ips.contains(&r.ip) {
                    nat.outside_ips.push(r.ip);
                }
            }
        }
    }
    for p in &model.published {
        // A range maps port for port: FIRST+i -> TARGET+i.
        // (A db edited by hand could overflow: those ports are left out.)
        for i in 0..=p.extra() {
            let (Some(port), Some(target_port)) =
                (p.port.checked_add(i), p.target_port.checked_add(i))
            else {
                break;
            };
            nat.publish
                .entry((p.proto, port))
                .or_default()
                .push(PublishRt {
                    ip: p.ip,
                    target_ip: p.target_ip,
                    target_port,
                });
        }
    }
    let mut nat6 = Nat6Rt {
        masq: vec![None; bridges.len()],
        ..Default::default()
    };
    for m in &model.masquerade6 {
        if let (Some(i), Some(o)) = (index(&m.bridge), index(&m.out)) {
            nat6.masq[i] = Some(o);
        }
    }
    for p in &model.published6 {
        for i in 0..=p.extra() {
            let (Some(port), Some(target_port)) =
                (p.port.checked_add(i), p.target_port.checked_add(i))
            else {
                break;
            };
            nat6.publish
                .entry((p.proto, port))
                .or_default()
                .push(Publish6Rt {
                    ip: p.ip,
                    target_ip: p.target_ip,
                    target_port,
                });
        }
    }
    Snapshot {
        generation,
        ports,
        bridges,
        routes,
        router_ips,
        routes6,
        router_ips6,
        nat,
        conntrack: tables.conntrack.clone(),
        nat6,
        // The control state puts the daemon's IPv6 conntrack in, as its taps.
        conntrack6: Arc::new(Conntrack6::new(64)),
        // The control state puts the daemon's taps in (`State::install_snapshot`).
        taps: Default::default(),
        impaired,
        fastpath: tables.fastpath.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::PortCounters;
    use crate::port::mem::MemPort;
    use std::net::Ipv4Addr;
    use vswitch_proto::{AddBr, AddHost, AddPort, PortKind};

    fn model() -> Model {
        let mut m = Model::default();
        for (name, subnet, gw) in [
            ("br0", "10.0.0.0/24", "10.0.0.1"),
            ("wan", "198.51.100.0/24", "198.51.100.2"),
        ] {
            let b = m
                .check_add_bridge(&AddBr {
                    name: name.into(),
                    subnet: Some(subnet.into()),
                    gateway: Some(gw.into()),
                    ..Default::default()
                })
                .unwrap();
            m.insert_bridge(b);
        }
        for (port, tag) in [("v1", None), ("v2", Some(10)), ("gone", None)] {
            let p = m
                .check_add_port(&AddPort {
                    bridge: "br0".into(),
                    port: port.into(),
                    kind: PortKind::System,
                    tag,
                    ..Default::default()
                })
                .unwrap();
            m.insert_port("br0", p).unwrap();
        }
        let h = m
            .check_add_host(&AddHost {
                bridge: "br0".into(),
                name: "Web".into(),
                ip: "10.0.0.5".into(),
                ..Default::default()
            })
            .unwrap();
        m.insert_host("br0", h).unwrap();
        {
            let r = m.check_add_route("203.0.113.0/24", "198.51.100.1").unwrap();
            m.insert_route(r);
        }
        m.masquerade.push(m.check_masquerade("br0", "wan").unwrap());
        m.published
            .push(m.check_publish("tcp", "8080", "10.0.0.5:80").unwrap());
        m
    }

    fn live(names: &[(&str, u32)]) -> HashMap<String, Live> {
        names
            .iter()
            .map(|(n, id)| {
                (
                    n.to_string(),
                    Live {
                        id: *id,
                        dev: Arc::new(MemPort::new(n)),
                        counters: Arc::new(PortCounters::new(1)),
                        worker: None,
                        rx_seen: 0,
                        impair: Arc::default(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn snapshot_of_a_model() {
        let m = model();
        // "gone" is configured but its device is missing; v2's slot 3 has generation 1.
        let live = live(&[("v1", 0), ("v2", (1 << 16) | 3)]);
        let fdbs: HashMap<String, Arc<Fdb>> = [("br0", 16), ("wan", 16)]
            .into_iter()
            .map(|(n, c)| (n.to_string(), Arc::new(Fdb::new(c, 300))))
            .collect();
        let ct = Arc::new(Conntrack::new(64));
        let tables = Tables {
            fdbs: &fdbs,
            conntrack: &ct,
            fastpath: &None,
        };
        let s = build(&m, &live, &tables, 7);
        assert_eq!(s.generation, 7);
        assert_eq!(s.bridges.len(), 2);
        let br0 = &s.bridges[0];
        assert_eq!(br0.name, "br0");
        assert_eq!(br0.ports, vec![0, 3], "only live ports, by slot");
        assert!(Arc::ptr_eq(&br0.fdb, &fdbs["br0"]));
        assert_eq!(br0.router.map(|r| r.mac), Some(router_mac("br0")));
        assert_eq!(
            br0.names.get("web"),
            Some(&(Ipv4Addr::new(10, 0, 0, 5), 0)),
            "names are lower-case"
        );
        let v2 = s.port((1 << 16) | 3).expect("v2 by its full id");
        assert_eq!((v2.name.as_str(), v2.bridge), ("v2", 0));
        assert!(v2.vlan.carries(10) && !v2.vlan.carries(0));
        assert!(s.port(3).is_none(), "an old generation of the slot misses");
        assert!(s.ports[1].is_none() && s.ports[2].is_none());
        assert_eq!(s.router_ip(Ipv4Addr::new(198, 51, 100, 2)), Some(1));
        let r = s.routes.lookup(Ipv4Addr::new(203, 0, 113, 9)).unwrap();
        assert_eq!((r.bridge, r.via), (1, Some(Ipv4Addr::new(198, 51, 100, 1))));
        assert_eq!(s.nat.masq, vec![Some(1), None]);
        assert_eq!(s.nat.outside_ips, vec![Ipv4Addr::new(198, 51, 100, 2)]);
        let p = &s.nat.publish[&(6, 8080)];
        assert_eq!(
            (p[0].target_ip, p[0].target_port),
            (Ipv4Addr::new(10, 0, 0, 5), 80)
        );
        assert!(Arc::ptr_eq(&s.conntrack, &ct));
    }

    #[test]
    fn a_route_whose_next_hop_left_is_dropped() {
        let mut m = model();
        m.remove_bridge("wan").unwrap();
        let fdbs = HashMap::new();
        let ct = Arc::new(Conntrack::new(64));
        let tables = Tables {
            fdbs: &fdbs,
            conntrack: &ct,
            fastpath: &None,
        };
        let s = build(&m, &HashMap::new(), &tables, 1);
        assert!(s.routes.lookup(Ipv4Addr::new(203, 0, 113, 9)).is_none());
        assert!(s.ports.is_empty() && s.bridges[0].ports.is_empty());
        assert_eq!(s.nat.masq, vec![None], "masquerade behind a missing bridge");
    }

    #[test]
    fn vxlan_remotes_share_a_group() {
        let mut m = model();
        let p = m
            .check_add_port(&AddPort {
                bridge: "br0".into(),
                port: "vx0".into(),
                kind: PortKind::Vxlan,
                remote_ip: vec!["192.0.2.2,192.0.2.3".into()],
                vni: Some(42),
                ..Default::default()
            })
            .unwrap();
        m.insert_port("br0", p).unwrap();
        let live = live(&[("vx0@192.0.2.2", 5), ("vx0@192.0.2.3", 6), ("v1", 0)]);
        let fdbs = HashMap::new();
        let ct = Arc::new(Conntrack::new(64));
        let tables = Tables {
            fdbs: &fdbs,
            conntrack: &ct,
            fastpath: &None,
        };
        let s = build(&m, &live, &tables, 1);
        let (a, b) = (s.port(5).unwrap(), s.port(6).unwrap());
        assert_eq!(a.group, b.group);
        assert_ne!(a.group, 0);
        assert_eq!(s.port(0).unwrap().group, 0);
    }
}
