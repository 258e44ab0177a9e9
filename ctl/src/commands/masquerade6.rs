//! `masquerade6`: source NAT of a bridge's IPv6 subnet behind another bridge's IPv6
//! gateway (NAT66, opt-in: without it IPv6 is routed as it is).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Source-NAT a bridge's IPv6 subnet behind another bridge's IPv6 gateway (opt-in NAT66)
#[derive(clap::Args, Debug)]
pub struct Masquerade6 {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The outside bridge, whose IPv6 gateway address becomes the source
    #[arg(long, value_name = "BR_OUT")]
    pub out: String,
}

impl Masquerade6 {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Masquerade6 {
            bridge: self.bridge.clone(),
            out: self.out.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
