//! Human output: aligned tables with upper-case headers, one item per line for lists,
//! an ovs-vsctl-like tree for `show`. Mutations print nothing on success.

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Write as _;
use vswitch_proto::{
    BridgeInfo, Command, CtEntry, FdbEntry, FlushResult, HostEntry, LeaseEntry, PortInfo,
    PortStats, PublishedEntry, RouteEntry, ShowInfo, VersionInfo,
};

fn de<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

/// Render rows under `headers`, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                let _ = write!(s, "{:<width$}  ", c, width = w[i]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".to_string())
}

fn port_line(p: &PortInfo) -> String {
    let mut s = format!("Port {} ({}, {})", p.name, p.kind, p.state);
    if let Some(t) = p.tag {
        let _ = write!(s, " tag {t}");
    }
    if !p.trunks.is_empty() {
        let t: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
        let _ = write!(s, " trunks {}", t.join(","));
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
    s
}

fn bridge_line(b: &BridgeInfo) -> String {
    let mut attrs = Vec::new();
    if let Some(s) = &b.subnet {
        attrs.push(format!("subnet {s}"));
    }
    if let Some(g) = &b.gateway {
        attrs.push(format!("gateway {g}"));
    }
    if let Some(d) = &b.dhcp {
        attrs.push(format!("dhcp {d}"));
    }
    if b.isolated {
        attrs.push("isolated".into());
    }
    attrs.push(format!("mtu {}", b.mtu));
    format!("Bridge {} ({})", b.name, attrs.join(", "))
}

/// The `show` tree.
pub fn show(s: &ShowInfo) -> String {
    let mut out = format!(
        "vswitchd {} ({} workers, db {})\n",
        s.version, s.workers, s.db
    );
    for b in &s.bridges {
        let _ = writeln!(out, "    {}", bridge_line(b));
        for p in &b.ports {
            let _ = writeln!(out, "        {}", port_line(p));
        }
    }
    out
}

pub fn stats(v: &[PortStats]) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            let total: u64 = s.drops.values().sum();
            let reasons: Vec<String> = s.drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
            vec![
                s.port.clone(),
                s.bridge.clone(),
                s.rx_packets.to_string(),
                s.rx_bytes.to_string(),
                s.tx_packets.to_string(),
                s.tx_bytes.to_string(),
                total.to_string(),
                if reasons.is_empty() {
                    "-".into()
                } else {
                    reasons.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "BRIDGE",
            "RX_PKTS",
            "RX_BYTES",
            "TX_PKTS",
            "TX_BYTES",
            "DROPS",
            "DROP_REASONS",
        ],
        &rows,
    )
}

/// Human text of the result `v` of `cmd`.
pub fn human(cmd: &Command, v: &Value) -> Result<String, String> {
    Ok(match cmd {
        Command::Version => {
            let d: VersionInfo = de(v)?;
            format!(
                "vswitchctl {}\nvswitchd {} (protocol {}, pid {}, {} workers)\n",
                env!("CARGO_PKG_VERSION"),
                d.daemon,
                d.protocol,
                d.pid,
                d.workers
            )
        }
        Command::AddBr(_)
        | Command::DelBr { .. }
        | Command::AddPort(_)
        | Command::DelPort { .. }
        | Command::AddHost(_)
        | Command::DelHost { .. }
        | Command::AddRoute { .. }
        | Command::DelRoute { .. }
        | Command::Masquerade { .. }
        | Command::DelMasquerade { .. }
        | Command::Publish(_)
        | Command::Unpublish { .. }
        | Command::DhcpReserve { .. }
        | Command::DhcpUnreserve { .. } => String::new(),
        Command::ListBr => {
            let b: Vec<BridgeInfo> = de(v)?;
            b.iter().map(|b| format!("{}\n", b.name)).collect()
        }
        Command::ListPorts { .. } => {
            let p: Vec<PortInfo> = de(v)?;
            p.iter().map(|p| format!("{}\n", p.name)).collect()
        }
        Command::Show => show(&de(v)?),
        Command::FdbShow { .. } => {
            let f: Vec<FdbEntry> = de(v)?;
            let rows: Vec<Vec<String>> = f
                .iter()
                .map(|e| {
                    vec![
                        e.port.clone(),
                        e.vlan.to_string(),
                        e.mac.clone(),
                        e.age.to_string(),
                    ]
                })
                .collect();
            table(&["PORT", "VLAN", "MAC", "AGE"], &rows)
        }
        Command::FdbFlush { .. } => {
            let r: FlushResult = de(v)?;
            format!("flushed {} entries\n", r.flushed)
        }
        Command::Stats { .. } => stats(&de::<Vec<PortStats>>(v)?),
        Command::ListHosts { .. } => {
            let h: Vec<HostEntry> = de(v)?;
            let rows: Vec<Vec<String>> = h
                .iter()
                .map(|h| vec![h.name.clone(), h.ip.clone(), h.source.clone()])
                .collect();
            table(&["NAME", "IP", "SOURCE"], &rows)
        }
        Command::ListRoutes => {
            let r: Vec<RouteEntry> = de(v)?;
            let rows: Vec<Vec<String>> = r
                .iter()
                .map(|r| {
                    vec![
                        r.cidr.clone(),
                        opt(&r.via),
                        r.bridge.clone(),
                        r.kind.clone(),
                    ]
                })
                .collect();
            table(&["DESTINATION", "VIA", "BRIDGE", "KIND"], &rows)
        }
        Command::DhcpLeases { .. } => {
            let l: Vec<LeaseEntry> = de(v)?;
            let rows: Vec<Vec<String>> = l
                .iter()
                .map(|l| {
                    vec![
                        l.mac.clone(),
                        l.ip.clone(),
                        opt(&l.hostname),
                        format!("{}s", l.remaining),
                    ]
                })
                .collect();
            table(&["MAC", "IP", "HOSTNAME", "EXPIRES_IN"], &rows)
        }
        Command::ListPublished => {
            let p: Vec<PublishedEntry> = de(v)?;
            let rows: Vec<Vec<String>> = p
                .iter()
                .map(|p| {
                    vec![
                        p.proto.clone(),
                        format!("{}:{}", p.ip.clone().unwrap_or_else(|| "*".into()), p.port),
                        format!("{}:{}", p.target_ip, p.target_port),
                    ]
                })
                .collect();
            table(&["PROTO", "LISTEN", "TARGET"], &rows)
        }
        Command::CtShow => {
            let c: Vec<CtEntry> = de(v)?;
            let rows: Vec<Vec<String>> = c
                .iter()
                .map(|c| {
                    vec![
                        c.proto.clone(),
                        c.src.clone(),
                        c.dst.clone(),
                        c.nat_src.clone(),
                        c.nat_dst.clone(),
                        c.state.clone(),
                        format!("{}s", c.expires_in),
                    ]
                })
                .collect();
            table(
                &[
                    "PROTO", "SRC", "DST", "NAT_SRC", "NAT_DST", "STATE", "EXPIRES",
                ],
                &rows,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::PortKind;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["PORT", "VLAN", "MAC", "AGE"],
            &[
                vec![
                    "v1".into(),
                    "0".into(),
                    "02:00:00:00:00:01".into(),
                    "3".into(),
                ],
                vec![
                    "trunk0".into(),
                    "10".into(),
                    "02:00:00:00:00:02".into(),
                    "12".into(),
                ],
            ],
        );
        assert_eq!(
            t,
            "PORT    VLAN  MAC                AGE\n\
             v1      0     02:00:00:00:00:01  3\n\
             trunk0  10    02:00:00:00:00:02  12\n"
        );
    }

    #[test]
    fn show_tree() {
        let s = ShowInfo {
            version: "0.1.0".into(),
            workers: 2,
            db: "/var/lib/vswitch/conf.db".into(),
            ct_entries: 0,
            ct_capacity: 65536,
            ct_evictions: 0,
            bridges: vec![BridgeInfo {
                name: "br1".into(),
                subnet: Some("10.0.0.0/24".into()),
                gateway: Some("10.0.0.1".into()),
                dhcp: None,
                isolated: false,
                mtu: 1500,
                ports: vec![PortInfo {
                    name: "veth1".into(),
                    bridge: "br1".into(),
                    kind: PortKind::System,
                    tag: Some(10),
                    trunks: vec![],
                    state: "up".into(),
                    ifindex: Some(3),
                    worker: Some(0),
                    owned: false,
                    external_ids: Default::default(),
                    vxlan: None,
                }],
                fdb_entries: 0,
                fdb_capacity: 8192,
                fdb_evictions: 0,
            }],
        };
        assert_eq!(
            show(&s),
            "vswitchd 0.1.0 (2 workers, db /var/lib/vswitch/conf.db)\n    \
             Bridge br1 (subnet 10.0.0.0/24, gateway 10.0.0.1, mtu 1500)\n        \
             Port veth1 (system, up) tag 10\n"
        );
    }

    #[test]
    fn stats_lists_drop_reasons() {
        let mut s = PortStats {
            port: "v1".into(),
            bridge: "br0".into(),
            rx_packets: 5,
            ..Default::default()
        };
        s.drops.insert("vlan_filtered".into(), 2);
        let t = stats(&[s]);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .ends_with("2      vlan_filtered=2"),
            "{t}"
        );
    }
}
