//! `fastpath-show`: the kernel fast path's cached decisions, like
//! `ovs-appctl dpctl/dump-flows`.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{Command, FastpathInfo};

/// Show the flows the kernel fast path forwards without vswitchd (all bridges, or one)
#[derive(clap::Args, Debug)]
pub struct FastpathShow {
    /// Only this bridge
    #[arg(value_name = "BR")]
    pub bridge: Option<String>,
}

impl FastpathShow {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::FastpathShow {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |f: FastpathInfo| render(&f))
    }
}

/// A summary line, then one row per entry. IP_DST and NEXT_HOP are a routed entry's
/// IPv4 destination and the MAC its frames leave with (`-`: an L2 entry); TAG is the
/// tag pushed on egress (`-`: untagged); IDLE is milliseconds since the last hit
/// (`-`: never hit). Established NAT flows follow in a table of their own: the
/// connection as matched (SRC, DST) and as it leaves (NAT_SRC, NAT_DST), and EXPIRES_MS
/// until the kernel stops translating unless vswitchd extends it.
pub fn render(f: &FastpathInfo) -> String {
    let mut out = format!(
        "fastpath: {}  generation: {}  entries: {}  installs: {}  invalidations: {}\n",
        f.mode,
        f.generation,
        f.entries.len(),
        f.installs,
        f.invalidations
    );
    let rows: Vec<Vec<String>> = f
        .entries
        .iter()
        .filter(|e| e.nat.is_none())
        .map(|e| {
            vec![
                e.bridge.clone(),
                e.in_port.clone(),
                e.vlan.to_string(),
                e.src.clone(),
                e.dst.clone(),
                e.route.as_ref().map_or("-".into(), |r| r.ip_dst.clone()),
                e.out_port.clone(),
                e.route.as_ref().map_or("-".into(), |r| r.next_hop.clone()),
                e.tag.map_or("-".into(), |t| t.to_string()),
                e.packets.to_string(),
                e.bytes.to_string(),
                e.idle_ms.map_or("-".into(), |t| t.to_string()),
            ]
        })
        .collect();
    let has_nat = f.entries.iter().any(|e| e.nat.is_some());
    // The L2/routed table, unless it would be an empty header above NAT flows.
    if !rows.is_empty() || !has_nat {
        out.push_str(&table(
            &[
                "BRIDGE", "IN_PORT", "VLAN", "SRC", "DST", "IP_DST", "OUT_PORT", "NEXT_HOP", "TAG",
                "PACKETS", "BYTES", "IDLE_MS",
            ],
            &rows,
        ));
    }
    let nat: Vec<Vec<String>> = f
        .entries
        .iter()
        .filter_map(|e| {
            let n = e.nat.as_ref()?;
            Some(vec![
                e.bridge.clone(),
                e.in_port.clone(),
                n.proto.clone(),
                n.src.clone(),
                n.dst.clone(),
                n.nat_src.clone(),
                n.nat_dst.clone(),
                e.out_port.clone(),
                e.route.as_ref().map_or("-".into(), |r| r.next_hop.clone()),
                e.packets.to_string(),
                e.bytes.to_string(),
                e.idle_ms.map_or("-".into(), |t| t.to_string()),
                n.expires_ms.to_string(),
            ])
        })
        .collect();
    if !nat.is_empty() {
        if !rows.is_empty() {
            out.push('\n');
        }
        out.push_str("NAT flows:\n");
        out.push_str(&table(
            &[
                "BRIDGE",
                "IN_PORT",
                "PROTO",
                "SRC",
                "DST",
                "NAT_SRC",
                "NAT_DST",
                "OUT_PORT",
                "NEXT_HOP",
                "PACKETS",
                "BYTES",
                "IDLE_MS",
                "EXPIRES_MS",
            ],
            &nat,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch_proto::{FastpathEntry, FastpathNat, FastpathRoute};

    #[test]
    fn summary_and_entries() {
        let f = FastpathInfo {
            mode: "on".into(),
            generation: 7,
            installs: 2,
            invalidations: 6,
            entries: vec![
                FastpathEntry {
                    bridge: "br0".into(),
                    in_port: "v1".into(),
                    out_port: "v2".into(),
                    vlan: 10,
                    src: "02:00:00:00:00:01".into(),
                    dst: "02:00:00:00:00:02".into(),
                    tag: Some(10),
                    packets: 5,
                    bytes: 490,
                    idle_ms: Some(12),
                    route: None,
                    nat: None,
                    peer: false,
                },
                FastpathEntry {
                    bridge: "br1".into(),
                    in_port: "v1".into(),
                    out_port: "v3".into(),
                    vlan: 0,
                    src: "02:00:00:00:00:01".into(),
                    dst: "02:76:00:00:00:01".into(),
                    tag: None,
                    packets: 3,
                    bytes: 294,
                    idle_ms: None,
                    route: Some(FastpathRoute {
                        ip_dst: "10.1.0.5".into(),
                        out_bridge: "br2".into(),
                        next_hop: "02:00:00:00:00:03".into(),
                    }),
                    nat: None,
                    peer: false,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            render(&f),
            "fastpath: on  generation: 7  entries: 2  installs: 2  invalidations: 6\n\
             BRIDGE  IN_PORT  VLAN  SRC                DST                IP_DST    OUT_PORT  NEXT_HOP           TAG  PACKETS  BYTES  IDLE_MS\n\
             br0     v1       10    02:00:00:00:00:01  02:00:00:00:00:02  -         v2        -                  10   5        490    12\n\
             br1     v1       0     02:00:00:00:00:01  02:76:00:00:00:01  10.1.0.5  v3        02:00:00:00:00:03  -    3        294    -\n"
        );
    }

    #[test]
    fn nat_flows_get_their_own_table() {
        let f = FastpathInfo {
            mode: "on".into(),
            generation: 3,
            installs: 2,
            invalidations: 2,
            entries: vec![FastpathEntry {
                bridge: "br1".into(),
                in_port: "v1".into(),
                out_port: "wan0".into(),
                vlan: 0,
                src: "02:00:00:00:00:01".into(),
                dst: "02:76:00:00:00:01".into(),
                tag: None,
                packets: 9,
                bytes: 900,
                idle_ms: Some(4),
                route: Some(FastpathRoute {
                    ip_dst: "198.51.100.1".into(),
                    out_bridge: "wan".into(),
                    next_hop: "02:00:00:00:00:09".into(),
                }),
                nat: Some(FastpathNat {
                    proto: "tcp".into(),
                    src: "10.0.0.5:40000".into(),
                    dst: "198.51.100.1:5201".into(),
                    nat_src: "198.51.100.2:40000".into(),
                    nat_dst: "198.51.100.1:5201".into(),
                    expires_ms: 119000,
                }),
                peer: false,
            }],
            ..Default::default()
        };
        assert_eq!(
            render(&f),
            "fastpath: on  generation: 3  entries: 1  installs: 2  invalidations: 2\n\
             NAT flows:\n\
             BRIDGE  IN_PORT  PROTO  SRC             DST                NAT_SRC             NAT_DST            OUT_PORT  NEXT_HOP           PACKETS  BYTES  IDLE_MS  EXPIRES_MS\n\
             br1     v1       tcp    10.0.0.5:40000  198.51.100.1:5201  198.51.100.2:40000  198.51.100.1:5201  wan0      02:00:00:00:00:09  9        900    4        119000\n"
        );
    }

    #[test]
    fn optional_bridge_argument() {
        use crate::cli::{parse, Cmd};
        for (args, want) in [
            (&["fastpath-show"][..], None),
            (&["fastpath-show", "br0"], Some("br0")),
        ] {
            match parse(args).unwrap().command {
                Cmd::FastpathShow(s) => assert_eq!(
                    s.request().unwrap(),
                    Command::FastpathShow {
                        bridge: want.map(String::from)
                    }
                ),
                c => panic!("{c:?}"),
            }
        }
    }
}
