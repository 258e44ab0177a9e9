//! `add-host`: register a DNS name on a bridge (served on its gateway address).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{AddHost as Request, Command};

/// Register a DNS name on a bridge
#[derive(clap::Args, Debug)]
pub struct AddHost {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The name (case-insensitive)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The address the name resolves to
    #[arg(value_name = "IP")]
    pub ip: String,
    /// The port the name belongs to: it is deleted with the port
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    /// Succeed if it exists with exactly these settings (other settings are still an error)
    #[arg(long)]
    pub may_exist: bool,
}

impl AddHost {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::AddHost(Request {
            bridge: self.bridge.clone(),
            name: self.name.clone(),
            ip: self.ip.clone(),
            source: None,
            port: self.port.clone(),
            may_exist: self.may_exist,
        }))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
