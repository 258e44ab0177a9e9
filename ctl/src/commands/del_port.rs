//! `del-port`: detach a port (vswitchd deletes the veth pair if pipework made it).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Detach a port from a bridge
#[derive(clap::Args, Debug)]
pub struct DelPort {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The port
    #[arg(value_name = "PORT")]
    pub port: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl DelPort {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelPort {
            bridge: self.bridge.clone(),
            port: self.port.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
