//! `show`: the whole configuration and the state of every port, as a tree like
//! `ovs-vsctl show`.

use super::Ctx;
use crate::error::Error;
use crate::output::vlan_list;
use std::fmt::Write as _;
use vswitch_proto::{BridgeInfo, Command, PortInfo, ShowInfo};

/// Show bridges, ports and their state
#[derive(clap::Args, Debug)]
pub struct Show {}

impl Show {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Show)
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |s: ShowInfo| render(&s))
    }
}

/// `Bridge br1 (subnet 10.0.0.0/24, gateway 10.0.0.1, dhcp A-B, isolated,
/// dns upstream IP:PORT, mtu 1500)`:
/// attributes that are not set are left out; the MTU is always there.
pub fn bridge_line(b: &BridgeInfo) -> String {
    let mut attrs = Vec::new();
    if let Some(s) = &b.subnet {
        attrs.push(format!("subnet {s}"));
    }
    if let Some(g) = &b.gateway {
        attrs.push(format!("gateway {g}"));
    }
    if let Some(s) = &b.subnet6 {
        attrs.push(format!("subnet {s}"));
    }
    if let Some(g) = &b.gateway6 {
        attrs.push(format!("gateway {g}"));
    }
    if let Some(d) = &b.dhcp {
        attrs.push(format!("dhcp {d}"));
    }
    if let Some(d) = &b.dhcp6 {
        attrs.push(format!("dhcp6 {d}"));
    }
    if b.dhcp6_exhausted > 0 {
        attrs.push(format!("dhcp6 pool exhausted {}x", b.dhcp6_exhausted));
    }
    if b.dhcp_exhausted > 0 {
        attrs.push(format!("dhcp pool exhausted {}x", b.dhcp_exhausted));
    }
    if b.dhcp_capped > 0 {
        attrs.push(format!("dhcp lease cap reached {}x", b.dhcp_capped));
    }
    if b.dhcp_declines_ignored > 0 {
        attrs.push(format!(
            "dhcp declines ignored {}x",
            b.dhcp_declines_ignored
        ));
    }
    if b.isolated {
        attrs.push("isolated".into());
    }
    // Forwarding to vswitchd's own resolvers is the default, left out.
    match b.dns_forward.as_str() {
        "bridge" => attrs.push(format!("dns upstream {}", b.dns_upstream.join(","))),
        "off" if b.gateway.is_some() => attrs.push("no dns upstream".into()),
        _ => {}
    }
    if let Some(v) = b.overlay_vni {
        attrs.push(format!("overlay vni {v}"));
    }
    if let Some(o) = &b.masquerade {
        attrs.push(format!("masquerade {o}"));
    }
    if let Some(o) = &b.masquerade6 {
        attrs.push(format!("masquerade6 {o}"));
    }
    attrs.push(format!("mtu {}", b.mtu));
    format!("Bridge {} ({})", b.name, attrs.join(", "))
}

/// `Port NAME (TYPE, STATE)` then ` tag N`, ` trunks A,B` and, for vxlan ports,
/// ` vni N remote IP[,IP] [local IP] [dst_port N]` (the port only when not 4789), and
/// for locked ports ` lock MAC [IP,IP..]`, for impaired ones ` impair delay 50ms …`.
pub fn port_line(p: &PortInfo) -> String {
    let mut s = format!("Port {} ({}, {})", p.name, p.kind, p.state);
    if let Some(t) = p.tag {
        let _ = write!(s, " tag {t}");
    }
    if !p.trunks.is_empty() {
        let _ = write!(s, " trunks {}", vlan_list(&p.trunks));
    }
    if let Some(v) = &p.vxlan {
        let _ = write!(s, " vni {} remote {}", v.vni, v.remote_ip.join(","));
        if let Some(l) = &v.local_ip {
            let _ = write!(s, " local {l}");
        }
        if v.dst_port != 4789 {
            let _ = write!(s, " dst_port {}", v.dst_port);
        }
    }
    if let Some(m) = &p.lock_mac {
        let _ = write!(s, " lock {m}");
        if !p.lock_ip.is_empty() {
            let _ = write!(s, " {}", p.lock_ip.join(","));
        }
    }
    if let Some(i) = p.impair.as_ref().filter(|i| !i.is_none()) {
        let _ = write!(s, " impair {}", i.describe());
    }
    s
}

pub fn render(s: &ShowInfo) -> String {
    // The fast path's mode, when the daemon reports one (older daemons do not).
    let fp = if s.fastpath.is_empty() {
        String::new()
    } else {
        format!(", fastpath {}", s.fastpath)
    };
    let mut out = format!(
        "vswitchd {} ({} workers{fp}, db {})\n",
        s.version, s.workers, s.db
    );
    for b in &s.bridges {
        let _ = writeln!(out, "    {}", bridge_line(b));
        for p in &b.ports {
            let _ = writeln!(out, "        {}", port_line(p));
        }
        for m in &b.mirrors {
            let _ = writeln!(out, "        {}", super::mirror::line(m));
        }
        if let Some(d) = dns_line(b) {
            let _ = writeln!(out, "        {d}");
        }
    }
    out
}

/// `DNS 12 queries (2 forwarded): noerror 9, nxdomain 3` — the answers by response
/// code, the zero ones left out; `None` while the bridge's DNS was never asked.
pub fn dns_line(b: &BridgeInfo) -> Option<String> {
    if b.dns_queries == 0 {
        return None;
    }
    let mut s = format!("DNS {} queries", b.dns_queries);
    if b.dns_forwarded > 0 {
        let _ = write!(s, " ({} forwarded)", b.dns_forwarded);
    }
    let codes: Vec<String> = [
        ("noerror", b.dns_noerror),
        ("nxdomain", b.dns_nxdomain),
        ("servfail", b.dns_servfail),
        ("refused", b.dns_refused),
        ("other", b.dns_other),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if !codes.is_empty() {
        let _ = write!(s, ": {}", codes.join(", "));
    }
    Some(s)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use vswitch_proto::{PortKind, VxlanInfo};

    /// A bridge with no addresses and no ports.
    pub fn bridge(name: &str) -> BridgeInfo {
        BridgeInfo {
            name: name.into(),
            subnet: None,
            gateway: None,
            subnet6: None,
            gateway6: None,
            dhcp: None,
            dhcp6: None,
            isolated: false,
            mtu: 1500,
            ports: vec![],
            fdb_entries: 0,
            fdb_capacity: 8192,
            fdb_evictions: 0,
            dhcp_exhausted: 0,
            dhcp_leases: 0,
            dhcp_lease_cap: 0,
            dhcp_quarantined: 0,
            dhcp_declined: 0,
            dhcp_declines_ignored: 0,
            dhcp_capped: 0,
            dhcp6_leases: 0,
            dhcp6_lease_cap: 0,
            dhcp6_offers: 0,
            dhcp6_exhausted: 0,
            dhcp6_capped: 0,
            dhcp6_declined: 0,
            dhcp6_ignored: 0,
            dns_queries: 0,
            dns_forwarded: 0,
            dns_noerror: 0,
            dns_nxdomain: 0,
            dns_servfail: 0,
            dns_refused: 0,
            dns_other: 0,
            dns_forward: "resolv.conf".into(),
            dns_upstream: vec![],
            overlay_vni: None,
            external_ids: Default::default(),
            mirrors: vec![],
            masquerade: None,
            masquerade6: None,
        }
    }

    /// An attached port of `kind` on `bridge`, neither access nor restricted trunk.
    pub fn port(bridge: &str, name: &str, kind: PortKind) -> PortInfo {
        PortInfo {
            name: name.into(),
            bridge: bridge.into(),
            kind,
            tag: None,
            trunks: vec![],
            state: "up".into(),
            ifindex: Some(3),
            worker: Some(0),
            owned: false,
            external_ids: Default::default(),
            vxlan: None,
            lock_mac: None,
            lock_ip: vec![],
            impair: None,
        }
    }

    fn info(bridges: Vec<BridgeInfo>) -> ShowInfo {
        ShowInfo {
            version: "0.1.0".into(),
            workers: 2,
            db: "/var/lib/vswitch/conf.db".into(),
            bridges,
            ct_entries: 0,
            ct_capacity: 32768,
            ct_evictions: 0,
            ct6_entries: 0,
            ct6_capacity: 0,
            ct6_evictions: 0,
            fastpath: String::new(),
        }
    }

    #[test]
    fn dns_counters_once_asked() {
        let mut b = bridge("br1");
        assert_eq!(dns_line(&b), None);
        b.dns_queries = 5;
        b.dns_forwarded = 1;
        b.dns_noerror = 3;
        b.dns_nxdomain = 2;
        assert_eq!(
            dns_line(&b).as_deref(),
            Some("DNS 5 queries (1 forwarded): noerror 3, nxdomain 2")
        );
    }

    #[test]
    fn tree_of_bridges_and_ports() {
        let mut br1 = bridge("br1");
        br1.subnet = Some("10.0.0.0/24".into());
        br1.gateway = Some("10.0.0.1".into());
        let mut tap0 = port("br1", "tap0", PortKind::Tap);
        tap0.tag = Some(10);
        let mut trunk0 = port("br1", "trunk0", PortKind::System);
        trunk0.trunks = vec![10, 20];
        br1.ports = vec![port("br1", "veth1", PortKind::System), tap0, trunk0];
        assert_eq!(
            render(&info(vec![br1])),
            "vswitchd 0.1.0 (2 workers, db /var/lib/vswitch/conf.db)\n\
             \x20   Bridge br1 (subnet 10.0.0.0/24, gateway 10.0.0.1, mtu 1500)\n\
             \x20       Port veth1 (system, up)\n\
             \x20       Port tap0 (tap, up) tag 10\n\
             \x20       Port trunk0 (system, up) trunks 10,20\n"
        );
    }

    #[test]
    fn every_bridge_attribute_and_a_port_in_error() {
        let mut b = bridge("iso");
        b.subnet = Some("10.1.0.0/24".into());
        b.gateway = Some("10.1.0.1".into());
        b.dhcp = Some("10.1.0.100-10.1.0.199".into());
        b.isolated = true;
        b.mtu = 1450;
        let mut gone = port("iso", "v9", PortKind::System);
        gone.state = "error: no such device: v9".into();
        b.ports = vec![gone];
        assert_eq!(
            render(&info(vec![b, bridge("empty")])),
            "vswitchd 0.1.0 (2 workers, db /var/lib/vswitch/conf.db)\n\
             \x20   Bridge iso (subnet 10.1.0.0/24, gateway 10.1.0.1, dhcp 10.1.0.100-10.1.0.199, isolated, mtu 1450)\n\
             \x20       Port v9 (system, error: no such device: v9)\n\
             \x20   Bridge empty (mtu 1500)\n"
        );
    }

    #[test]
    fn vxlan_port() {
        let mut p = port("br0", "vx0", PortKind::Vxlan);
        p.vxlan = Some(VxlanInfo {
            remote_ip: vec!["192.0.2.2".into(), "192.0.2.3".into()],
            vni: 42,
            local_ip: None,
            dst_port: 4789,
        });
        assert_eq!(
            port_line(&p),
            "Port vx0 (vxlan, up) vni 42 remote 192.0.2.2,192.0.2.3"
        );
        p.vxlan = Some(VxlanInfo {
            remote_ip: vec!["192.0.2.2".into()],
            vni: 7,
            local_ip: Some("192.0.2.1".into()),
            dst_port: 4790,
        });
        assert_eq!(
            port_line(&p),
            "Port vx0 (vxlan, up) vni 7 remote 192.0.2.2 local 192.0.2.1 dst_port 4790"
        );
    }

    #[test]
    fn no_bridges() {
        assert_eq!(
            render(&info(vec![])),
            "vswitchd 0.1.0 (2 workers, db /var/lib/vswitch/conf.db)\n"
        );
    }
}
