//! `unpublish`: remove a published port.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Remove a published port
#[derive(clap::Args, Debug)]
pub struct Unpublish {
    /// tcp or udp
    #[arg(value_name = "PROTO")]
    pub proto: String,
    /// As given to publish: PORT, IP:PORT, or a range FIRST-LAST
    #[arg(value_name = "[IP:]PORT[-LAST]")]
    pub listen: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl Unpublish {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Unpublish {
            proto: self.proto.clone(),
            listen: self.listen.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
