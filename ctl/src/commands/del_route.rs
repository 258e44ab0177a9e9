//! `del-route`: remove a static route.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Delete a static route
#[derive(clap::Args, Debug)]
pub struct DelRoute {
    /// Destination network
    #[arg(value_name = "CIDR")]
    pub cidr: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl DelRoute {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DelRoute {
            cidr: self.cidr.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
