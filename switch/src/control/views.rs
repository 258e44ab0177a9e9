//! Views: the protocol's read-only shapes of the model and the live state (`show`,
//! `list-*`, `stats`). Nothing here changes anything.

use super::ports::live_names;
use super::state::State;
use crate::config::model::{proto_name, DnsForward};
use crate::config::{BridgeConf, HostConf, PortConf, PublishConf};
use crate::dp::clock;
use std::net::Ipv4Addr;
use vswitch_proto::{BridgeInfo, HostEntry, PortInfo, PortStats, PublishedEntry, VxlanInfo};

pub(super) fn published_entry(p: &PublishConf) -> PublishedEntry {
    PublishedEntry {
        proto: proto_name(p.proto).to_string(),
        ip: p.ip.map(|i| i.to_string()),
        port: p.port,
        target_ip: p.target_ip.to_string(),
        target_port: p.target_port,
        port_end: p.port_end,
        target_port_end: p.port_end.map(|_| p.target_port.saturating_add(p.extra())),
    }
}

pub(super) fn host_entry(h: &HostConf) -> HostEntry {
    HostEntry {
        name: h.name.clone(),
        ip: h.ip.to_string(),
        source: h.source.clone(),
        port: h.port.clone(),
    }
}

impl State {
    /// Name of the bridge whose subnet holds `ip` ("" if none).
    pub(super) fn bridge_of(&self, ip: Ipv4Addr) -> String {
        self.model
            .bridges
            .iter()
            .find(|b| b.subnet.is_some_and(|s| s.contains(&ip)))
            .map(|b| b.name.clone())
            .unwrap_or_default()
    }

    /// Name of the bridge whose subnet of `ip`'s family holds it ("" if none).
    pub(super) fn bridge_of_any(&self, ip: std::net::IpAddr) -> String {
        match ip {
            std::net::IpAddr::V4(a) => self.bridge_of(a),
            std::net::IpAddr::V6(a) => self
                .model
                .bridges
                .iter()
                .find(|b| b.subnet6.is_some_and(|s| s.contains(&a)))
                .map(|b| b.name.clone())
                .unwrap_or_default(),
        }
    }

    pub(super) fn port_info(&self, b: &BridgeConf, p: &PortConf) -> PortInfo {
        let l = live_names(p).first().and_then(|n| self.live.get(n));
        PortInfo {
            name: p.name.clone(),
            bridge: b.name.clone(),
            kind: p.kind,
            tag: p.tag,
            trunks: p.trunks.clone(),
            state: match (l, self.failed.get(&p.name)) {
                (Some(_), _) => "up".to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => "down".to_string(),
            },
            ifindex: l.and_then(|l| l.dev.ifindex()),
            worker: l.and_then(|l| l.worker),
            owned: p.owned,
            external_ids: p.external_ids.clone(),
            vxlan: p.vxlan.as_ref().map(|v| VxlanInfo {
                remote_ip: v.remotes.iter().map(ToString::to_string).collect(),
                vni: v.vni,
                local_ip: v.local.map(|l| l.to_string()),
                dst_port: v.dst_port,
            }),
            lock_mac: p.lock.as_ref().map(|l| l.mac.to_string()),
            lock_ip: p
                .lock
                .as_ref()
                .map(|l| l.ips.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            impair: p.impair.clone(),
        }
    }

    pub(super) fn bridge_info(&self, b: &BridgeConf) -> BridgeInfo {
        let dhcp = self.db.leases().stats(&b.name).unwrap_or_default();
        let dhcp6 = self.db.leases().stats6(&b.name).unwrap_or_default();
        let dns = self.tools.dns.get(&b.name);
        BridgeInfo {
            name: b.name.clone(),
            subnet: b.subnet.map(|s| s.to_string()),
            gateway: b.gateway.map(|g| g.to_string()),
            subnet6: b.subnet6.map(|s| s.to_string()),
            gateway6: b.gateway6.map(|g| g.to_string()),
            dhcp: b.dhcp.map(|d| d.to_string()),
            dhcp6: b.dhcp6.map(|d| d.to_string()),
            isolated: b.isolated,
            mtu: b.mtu,
            ports: b.ports.iter().map(|p| self.port_info(b, p)).collect(),
            fdb_entries: self
                .fdbs
                .get(&b.name)
                .map_or(0, |f| f.entries(clock::now_secs()).len() as u64),
            fdb_capacity: self.fdbs.get(&b.name).map_or(0, |f| f.capacity() as u64),
            fdb_evictions: self.fdbs.get(&b.name).map_or(0, |f| f.evictions()),
            dhcp_exhausted: dhcp.exhausted,
            dhcp_leases: dhcp.leases,
            dhcp_lease_cap: dhcp.lease_cap,
            dhcp_quarantined: dhcp.quarantined,
            dhcp_declined: dhcp.declined,
            dhcp_declines_ignored: dhcp.declines_ignored,
            dhcp_capped: dhcp.capped,
            dhcp6_leases: dhcp6.leases,
            dhcp6_lease_cap: dhcp6.lease_cap,
            dhcp6_offers: dhcp6.offers,
            dhcp6_exhausted: dhcp6.exhausted,
            dhcp6_capped: dhcp6.capped,
            dhcp6_declined: dhcp6.declined,
            dhcp6_ignored: dhcp6.declines_ignored,
            dns_queries: dns.queries,
            dns_forwarded: dns.forwarded,
            dns_noerror: dns.noerror,
            dns_nxdomain: dns.nxdomain,
            dns_servfail: dns.servfail,
            dns_refused: dns.refused,
            dns_other: dns.other,
            overlay_vni: b.overlay.map(|o| o.vni),
            dns_forward: match (&b.dns, b.gateway) {
                (_, None) | (DnsForward::Off, _) => "off",
                (DnsForward::System, _) => "resolv.conf",
                (DnsForward::Servers(_), _) => "bridge",
            }
            .to_string(),
            dns_upstream: match (&b.dns, b.gateway) {
                (_, None) | (DnsForward::Off, _) => Vec::new(),
                (DnsForward::System, _) => crate::service::forward::system_resolvers(),
                (DnsForward::Servers(s), _) => s.clone(),
            }
            .iter()
            .map(ToString::to_string)
            .collect(),
            external_ids: b.external_ids.clone(),
            mirrors: b
                .mirrors
                .iter()
                .map(|m| vswitch_proto::MirrorInfo {
                    name: m.name.clone(),
                    select: m.select.clone(),
                    output: m.output.clone(),
                })
                .collect(),
            masquerade: self
                .model
                .masquerade
                .iter()
                .find(|m| m.bridge == b.name)
                .map(|m| m.out.clone()),
            masquerade6: self
                .model
                .masquerade6
                .iter()
                .find(|m| m.bridge == b.name)
                .map(|m| m.out.clone()),
        }
    }

    /// Counters of port `p`: one entry, or one per remote VTEP for vxlan.
    pub(super) fn port_stats(&self, b: &BridgeConf, p: &PortConf) -> Vec<PortStats> {
        live_names(p)
            .into_iter()
            .map(|n| self.live_stats(&b.name, &n))
            .collect()
    }

    fn live_stats(&self, bridge: &str, name: &str) -> PortStats {
        let mut s = PortStats {
            port: name.to_string(),
            bridge: bridge.to_string(),
            ..Default::default()
        };
        if let Some(l) = self.live.get(name) {
            let t = l.counters.totals();
            s.rx_packets = t.rx_packets;
            s.rx_bytes = t.rx_bytes;
            s.tx_packets = t.tx_packets;
            s.tx_bytes = t.tx_bytes;
            s.drops = t
                .drops
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            self.fastpath_stats(l.id, &mut s);
            let k = l.dev.kernel_rx_drops();
            if k > 0 {
                s.drops.insert("rx_kernel_queue_full".to_string(), k);
            }
        }
        s
    }
}
