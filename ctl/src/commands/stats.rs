//! `stats`: per-port counters summed over workers, with drops by reason.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{Command, PortStats};

/// Port counters and drops by reason (all ports, or one)
#[derive(clap::Args, Debug)]
pub struct Stats {
    /// Only this port (a vxlan port: each of its remote VTEPs)
    #[arg(value_name = "PORT")]
    pub port: Option<String>,
}

impl Stats {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Stats {
            port: self.port.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |s: Vec<PortStats>| render(&s))
    }
}

/// DROPS is the total; DROP_REASONS lists `reason=count` pairs (sorted by reason,
/// comma-separated) or `-` when nothing was dropped, so every row has as many words.
pub fn render(stats: &[PortStats]) -> String {
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let total: u64 = s.drops.values().sum();
            let reasons: Vec<String> = s
                .drops
                .iter()
                .filter(|(_, n)| **n != 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, rx: u64, tx: u64) -> PortStats {
        PortStats {
            port: name.into(),
            bridge: "br1".into(),
            rx_packets: rx,
            rx_bytes: rx * 85,
            tx_packets: tx,
            tx_bytes: tx * 85,
            drops: Default::default(),
            ..Default::default()
        }
    }

    #[test]
    fn table_with_drop_reasons() {
        let mut v2 = port("v2", 7, 0);
        v2.drops.insert("vlan_filtered".into(), 2);
        v2.drops.insert("malformed".into(), 1);
        v2.drops.insert("no_port".into(), 0);
        assert_eq!(
            render(&[port("v1", 12, 17), v2]),
            "PORT  BRIDGE  RX_PKTS  RX_BYTES  TX_PKTS  TX_BYTES  DROPS  DROP_REASONS\n\
             v1    br1     12       1020      17       1445      0      -\n\
             v2    br1     7        595       0        0         3      malformed=1,vlan_filtered=2\n"
        );
    }

    #[test]
    fn no_ports() {
        assert_eq!(
            render(&[]),
            "PORT  BRIDGE  RX_PKTS  RX_BYTES  TX_PKTS  TX_BYTES  DROPS  DROP_REASONS\n"
        );
    }

    #[test]
    fn optional_port_argument() {
        use crate::cli::{parse, Cmd};
        for (args, want) in [
            (&["stats"][..], None),
            (&["stats", "v1"], Some("v1")),
            (&["stats", "v1", "--json"], Some("v1")),
        ] {
            match parse(args).unwrap().command {
                Cmd::Stats(s) => assert_eq!(
                    s.request().unwrap(),
                    Command::Stats {
                        port: want.map(String::from)
                    }
                ),
                c => panic!("{c:?}"),
            }
        }
    }
}
