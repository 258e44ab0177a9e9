//! `masquerade`: source NAT of a bridge's subnet behind another bridge's gateway.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Source-NAT a bridge's subnet behind another bridge's gateway address
#[derive(clap::Args, Debug)]
pub struct Masquerade {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The outside bridge, whose gateway address becomes the source
    #[arg(long, value_name = "BR_OUT")]
    pub out: String,
}

impl Masquerade {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Masquerade {
            bridge: self.bridge.clone(),
            out: self.out.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
