//! `del-br`: delete a bridge with its ports.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Delete a bridge and its ports
#[derive(clap::Args, Debug)]
pub struct DelBr {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl DelBr {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelBr {
            name: self.bridge.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
