//! `del-masquerade6`: undo `masquerade6`.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Stop masquerading a bridge's IPv6
#[derive(clap::Args, Debug)]
pub struct DelMasquerade6 {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl DelMasquerade6 {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelMasquerade6 {
            bridge: self.bridge.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
