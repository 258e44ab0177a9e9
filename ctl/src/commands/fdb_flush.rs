//! `fdb-flush`: forget every MAC address learned on a bridge.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{Command, FlushResult};

/// Forget every MAC address learned on a bridge
#[derive(clap::Args, Debug)]
pub struct FdbFlush {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl FdbFlush {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::FdbFlush {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |r: FlushResult| render(&r))
    }
}

pub fn render(r: &FlushResult) -> String {
    format!("flushed {} entries\n", r.flushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count() {
        assert_eq!(render(&FlushResult { flushed: 3 }), "flushed 3 entries\n");
        assert_eq!(render(&FlushResult { flushed: 0 }), "flushed 0 entries\n");
    }
}
