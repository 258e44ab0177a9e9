//! `fdb-show`: the MAC addresses learned on a bridge, like `ovs-appctl fdb/show`.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use vswitch_proto::{Command, FdbEntry};

/// Show the MAC addresses learned on a bridge (VLAN 0: untagged; AGE: seconds since seen)
#[derive(clap::Args, Debug)]
pub struct FdbShow {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl FdbShow {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::FdbShow {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |f: Vec<FdbEntry>| render(&f))
    }
}

pub fn render(entries: &[FdbEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(port: &str, vlan: u16, mac: &str, age: u64) -> FdbEntry {
        FdbEntry {
            port: port.into(),
            vlan,
            mac: mac.into(),
            age,
        }
    }

    #[test]
    fn table_of_entries() {
        let t = render(&[
            entry("tap0", 0, "ea:33:38:68:52:1c", 6),
            entry("v1", 0, "a6:25:6b:1f:14:61", 6),
            entry("vx0@192.0.2.2", 10, "62:28:f3:31:db:3f", 117),
        ]);
        assert_eq!(
            t,
            "PORT           VLAN  MAC                AGE\n\
             tap0           0     ea:33:38:68:52:1c  6\n\
             v1             0     a6:25:6b:1f:14:61  6\n\
             vx0@192.0.2.2  10    62:28:f3:31:db:3f  117\n"
        );
    }

    #[test]
    fn empty_table_keeps_its_header() {
        assert_eq!(render(&[]), "PORT  VLAN  MAC  AGE\n");
    }
}
