//! `version`: vswitchctl's and vswitchd's versions (also a liveness check: it fails
//! when the daemon does not answer).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{Command, VersionInfo};

/// Print vswitchctl's and vswitchd's versions
#[derive(clap::Args, Debug)]
pub struct Version {}

impl Version {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Version)
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |v: VersionInfo| render(&v))
    }
}

pub fn render(d: &VersionInfo) -> String {
    format!(
        "vswitchctl {}\nvswitchd {} (protocol {}, pid {}, {} workers)\n",
        env!("CARGO_PKG_VERSION"),
        d.daemon,
        d.protocol,
        d.pid,
        d.workers
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_daemon() {
        let d = VersionInfo {
            protocol: 1,
            daemon: "0.1.0".into(),
            pid: 7652,
            workers: 2,
        };
        assert_eq!(
            render(&d),
            format!(
                "vswitchctl {}\nvswitchd 0.1.0 (protocol 1, pid 7652, 2 workers)\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
