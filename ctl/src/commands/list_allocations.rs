//! `list-allocations`: the addresses held in a bridge's allocator (by vswitch-docker:
//! containers, `--aux-address`es) and who holds them.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{AllocEntry, Command};

/// List the addresses held on a bridge (OWNER: docker-ep:ID, docker-ipam, docker-aux:ID)
#[derive(clap::Args, Debug)]
pub struct ListAllocations {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl ListAllocations {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ListAllocations {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |a: Vec<AllocEntry>| render(&a))
    }
}

pub fn render(held: &[AllocEntry]) -> String {
    let rows: Vec<Vec<String>> = held
        .iter()
        .map(|a| vec![a.ip.clone(), a.owner.clone()])
        .collect();
    table(&["IP", "OWNER"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_table() {
        let a = |ip: &str, owner: &str| AllocEntry {
            bridge: "br0".into(),
            ip: ip.into(),
            owner: owner.into(),
        };
        assert_eq!(
            render(&[
                a("10.70.0.2", "docker-aux:05e613383cdf"),
                a("10.70.0.10", "docker-ep:e8f35522b4f2")
            ]),
            "IP          OWNER\n\
             10.70.0.2   docker-aux:05e613383cdf\n\
             10.70.0.10  docker-ep:e8f35522b4f2\n"
        );
    }
}
