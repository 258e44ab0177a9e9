//! `del-host`: remove a DNS name from a bridge.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Remove a DNS name
#[derive(clap::Args, Debug)]
pub struct DelHost {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The DNS name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl DelHost {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelHost {
            bridge: self.bridge.clone(),
            name: self.name.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
