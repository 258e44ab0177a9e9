//! `publish`: destination NAT from the router's outside address(es) to a container,
//! like `docker run -p`.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{Command, Publish as Request};

/// Publish a container port on the router's outside address(es) (like docker run -p)
#[derive(clap::Args, Debug)]
pub struct Publish {
    /// tcp or udp
    #[arg(value_name = "PROTO")]
    pub proto: String,
    /// Where to listen: PORT (every outside address), IP:PORT, or [IPV6]:PORT (an IPv6
    /// gateway; the target is then [IPV6]:PORT too); a range FIRST-LAST publishes each
    /// port of it
    #[arg(value_name = "[IP:]PORT[-LAST]")]
    pub listen: String,
    /// The container's address and port, [IPV6]:PORT for IPv6 (a range as long as the
    /// listening one)
    #[arg(value_name = "TARGET_IP:PORT[-LAST]")]
    pub target: String,
    /// Succeed if it exists with exactly these settings (other settings are still an error)
    #[arg(long)]
    pub may_exist: bool,
}

impl Publish {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::Publish(Request {
            proto: self.proto.clone(),
            listen: self.listen.clone(),
            target: self.target.clone(),
            may_exist: self.may_exist,
        }))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}
