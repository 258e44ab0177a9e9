//! `list-br`: bridge names, one per line (like `ovs-vsctl list-br`).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{BridgeInfo, Command};

/// List bridges, one name per line
#[derive(clap::Args, Debug)]
pub struct ListBr {}

impl ListBr {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ListBr)
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |b: Vec<BridgeInfo>| render(&b))
    }
}

pub fn render(bridges: &[BridgeInfo]) -> String {
    bridges.iter().map(|b| format!("{}\n", b.name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::show::tests::bridge;

    #[test]
    fn one_name_per_line() {
        assert_eq!(render(&[bridge("br1"), bridge("wan")]), "br1\nwan\n");
        assert_eq!(render(&[]), "");
    }
}
