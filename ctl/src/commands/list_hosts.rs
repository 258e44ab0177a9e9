//! `list-hosts`: every DNS name of a bridge and who registered it.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{Command, HostEntry};

/// List the DNS names of a bridge (SOURCE: user, pipework or dhcp)
#[derive(clap::Args, Debug)]
pub struct ListHosts {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl ListHosts {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ListHosts {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |h: Vec<HostEntry>| render(&h))
    }
}

pub fn render(hosts: &[HostEntry]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| vec![h.name.clone(), h.ip.clone(), h.source.clone()])
        .collect();
    table(&["NAME", "IP", "SOURCE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let h = |name: &str, ip: &str, source: &str| HostEntry {
            name: name.into(),
            ip: ip.into(),
            source: source.into(),
            port: None,
        };
        assert_eq!(
            render(&[
                h("web", "10.0.0.5", "user"),
                h("laptop", "10.0.0.100", "dhcp")
            ]),
            "NAME    IP          SOURCE\n\
             web     10.0.0.5    user\n\
             laptop  10.0.0.100  dhcp\n"
        );
    }
}
