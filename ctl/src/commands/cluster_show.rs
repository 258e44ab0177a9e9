//! `cluster-show`: the cluster as the local vswitch-agent sees it (nodes, overlay
//! networks, endpoint counts), asked through vswitchd.

use super::Ctx;
use crate::error::Error;
use crate::output::{or_dash, table};
use vswitch_proto::cluster::ClusterInfo;
use vswitch_proto::Command;

/// Show the cluster: nodes (alive or gone), overlay networks and their endpoints
#[derive(clap::Args, Debug)]
pub struct ClusterShow {}

impl ClusterShow {
    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(Command::ClusterShow, |c: ClusterInfo| render(&c))
    }
}

pub fn render(c: &ClusterInfo) -> String {
    let mut s = format!("node {} (etcd {}, prefix {})\n\n", c.node, c.etcd, c.prefix);
    let rows: Vec<Vec<String>> = c
        .nodes
        .iter()
        .map(|n| {
            vec![
                if n.local {
                    format!("{}*", n.name)
                } else {
                    n.name.clone()
                },
                n.vtep.clone(),
                n.state.clone(),
                n.endpoints.to_string(),
            ]
        })
        .collect();
    s.push_str(&table(&["NODE", "VTEP", "STATE", "ENDPOINTS"], &rows));
    s.push('\n');
    let rows: Vec<Vec<String>> = c
        .networks
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.vni.to_string(),
                n.udp_port.to_string(),
                both(n.subnet.as_deref(), n.subnet6.as_deref()),
                both(n.gateway.as_deref(), n.gateway6.as_deref()),
                n.endpoints.to_string(),
                if n.blocks.is_empty() {
                    "-".into()
                } else {
                    n.blocks.join(",")
                },
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "NETWORK",
            "VNI",
            "UDP",
            "SUBNET",
            "GATEWAY",
            "ENDPOINTS",
            "LOCAL-BLOCKS",
        ],
        &rows,
    ));
    for p in &c.conflicts {
        s.push_str(&format!("conflict: {p}\n"));
    }
    s
}

/// The IPv4 and IPv6 value of a dual-stack column, `,`-separated (`-`: neither).
fn both(v4: Option<&str>, v6: Option<&str>) -> String {
    match (v4, v6) {
        (Some(a), Some(b)) => format!("{a},{b}"),
        (a, b) => or_dash(a.or(b)),
    }
}
