//! `dhcp-reserve`: always lease one address to one MAC (and register a DNS name).

use super::Ctx;
use crate::error::Error;
use vswitch_proto::Command;

/// Always lease IP to MAC, and only to it (optionally registering NAME in DNS)
#[derive(clap::Args, Debug)]
pub struct DhcpReserve {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// The client's MAC address
    #[arg(value_name = "MAC")]
    pub mac: String,
    /// The address to lease (inside the bridge's subnet of its family: IPv4 for DHCP,
    /// IPv6 for DHCPv6)
    #[arg(value_name = "IP")]
    pub ip: String,
    /// A DNS name to register for the client
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Succeed if it exists with exactly these settings (other settings are still an error)
    #[arg(long)]
    pub may_exist: bool,
}

impl DhcpReserve {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::DhcpReserve {
            bridge: self.bridge.clone(),
            mac: self.mac.clone(),
            ip: self.ip.clone(),
            name: self.name.clone(),
            may_exist: self.may_exist,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
