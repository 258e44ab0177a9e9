//! `ct-show`: connections tracked for NAT, as first seen and as translated.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{Command, CtEntry};

/// Show tracked NAT connections
#[derive(clap::Args, Debug)]
pub struct CtShow {}

impl CtShow {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::CtShow)
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |c: Vec<CtEntry>| render(&c))
    }
}

pub fn render(entries: &[CtEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_table() {
        let c = CtEntry {
            proto: "icmp".into(),
            src: "10.0.0.5:10953".into(),
            dst: "198.51.100.1:10953".into(),
            nat_src: "198.51.100.2:10953".into(),
            nat_dst: "198.51.100.1:10953".into(),
            state: "active".into(),
            expires_in: 30,
        };
        assert_eq!(
            render(&[c]),
            "PROTO  SRC             DST                 NAT_SRC             NAT_DST             STATE   EXPIRES\n\
             icmp   10.0.0.5:10953  198.51.100.1:10953  198.51.100.2:10953  198.51.100.1:10953  active  30s\n"
        );
    }
}
