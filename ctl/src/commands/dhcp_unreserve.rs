//! `dhcp-unreserve`: remove a DHCP reservation.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Remove a DHCP reservation
#[derive(clap::Args, Debug)]
pub struct DhcpUnreserve {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The client's MAC address
    #[arg(value_name = "MAC")]
    pub mac: String,
    /// Succeed if there is nothing to delete
    #[arg(long)]
    pub if_exists: bool,
}

impl DhcpUnreserve {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DhcpUnreserve {
            bridge: self.bridge.clone(),
            mac: self.mac.clone(),
            if_exists: self.if_exists,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
