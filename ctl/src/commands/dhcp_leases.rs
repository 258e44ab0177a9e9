//! `dhcp-leases`: the leases of a bridge's DHCP server.

use super::Ctx;
use crate::error::Error;
use crate::output::{or_dash, table};
use vswitch_proto::{Command, LeaseEntry};

/// Show the DHCP leases of a bridge
#[derive(clap::Args, Debug)]
pub struct DhcpLeases {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl DhcpLeases {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DhcpLeases {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |l: Vec<LeaseEntry>| render(&l))
    }
}

/// The leases as a table; a DUID column (DHCPv6 clients) when any lease has one.
pub fn render(leases: &[LeaseEntry]) -> String {
    let v6 = leases.iter().any(|l| l.duid.is_some());
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            let mut r = vec![
                l.mac.clone(),
                l.ip.clone(),
                or_dash(l.hostname.as_deref()),
                format!("{}s", l.remaining),
            ];
            if v6 {
                r.push(or_dash(l.duid.as_deref()));
            }
            r
        })
        .collect();
    if v6 {
        return table(&["MAC", "IP", "HOSTNAME", "EXPIRES_IN", "DUID"], &rows);
    }
    table(&["MAC", "IP", "HOSTNAME", "EXPIRES_IN"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_table() {
        let l = |mac: &str, ip: &str, host: Option<&str>, remaining: u64| LeaseEntry {
            mac: mac.into(),
            ip: ip.into(),
            hostname: host.map(String::from),
            expires: 1_800_000_000,
            remaining,
            reserved: false,
            duid: None,
            iaid: None,
        };
        assert_eq!(
            render(&[
                l("02:00:00:00:00:01", "10.0.0.100", Some("c1"), 3591),
                l("02:00:00:00:00:02", "10.0.0.101", None, 0),
            ]),
            "MAC                IP          HOSTNAME  EXPIRES_IN\n\
             02:00:00:00:00:01  10.0.0.100  c1        3591s\n\
             02:00:00:00:00:02  10.0.0.101  -         0s\n"
        );
    }
}
