//! `del-masquerade`: undo `masquerade` (an extension of the contract).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Stop masquerading a bridge
#[derive(clap::Args, Debug)]
pub struct DelMasquerade {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
}

impl DelMasquerade {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelMasquerade {
            bridge: self.bridge.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
