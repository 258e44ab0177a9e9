//! `list-ports`: the ports of a bridge, one name per line (like `ovs-vsctl list-ports`).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{Command, PortInfo};

/// List the ports of a bridge, one name per line
#[derive(clap::Args, Debug)]
pub struct ListPorts {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl ListPorts {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ListPorts {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |p: Vec<PortInfo>| render(&p))
    }
}

pub fn render(ports: &[PortInfo]) -> String {
    ports.iter().map(|p| format!("{}\n", p.name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::show::tests::port;
    use vswitch_proto::PortKind;

    #[test]
    fn one_name_per_line() {
        let ports = [
            port("br1", "v1", PortKind::System),
            port("br1", "tap0", PortKind::Tap),
        ];
        assert_eq!(render(&ports), "v1\ntap0\n");
    }
}
