//! `add-route`: a static route through a next-hop router on one of the bridges.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Add a static route
#[derive(clap::Args, Debug)]
pub struct AddRoute {
    /// Destination network, e.g. 10.2.0.0/24 or 0.0.0.0/0
    #[arg(value_name = "CIDR")]
    pub cidr: String,
    /// Next-hop router (an address on a bridge's subnet)
    #[arg(long, value_name = "IP")]
    pub via: String,
    /// Succeed if it exists with exactly these settings (other settings are still an error)
    #[arg(long)]
    pub may_exist: bool,
}

impl AddRoute {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::AddRoute {
            cidr: self.cidr.clone(),
            via: self.via.clone(),
            may_exist: self.may_exist,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
