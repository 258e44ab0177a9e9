//! `add-br`: create a bridge, optionally routed (subnet + gateway) with DHCP.
//! Addresses are checked by the daemon so every client gets the same error text.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{AddBr as Request, Command};

/// Create a bridge
#[derive(clap::Args, Debug)]
pub struct AddBr {
    /// Name of the new bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// IPv4 subnet of the bridge, e.g. 10.0.0.0/24
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// The router's own address on the bridge (needs --subnet)
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// Serve DHCP (needs --gateway): the whole subnet, or FIRST-LAST only
    #[arg(long, value_name = "FIRST-LAST", num_args = 0..=1, default_missing_value = "")]
    pub dhcp: Option<String>,
    /// Reach only this subnet, the own gateway and, through masquerade, the outside
    #[arg(long)]
    pub isolated: bool,
    /// MTU of the bridge (68..65535, default 1500; overlay bridges 1450)
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// Forward names the bridge does not own to these resolvers (IP or IP:PORT)
    /// instead of those of vswitchd's /etc/resolv.conf
    #[arg(
        long,
        value_name = "IP[,IP..]",
        value_delimiter = ',',
        conflicts_with = "no_dns_upstream"
    )]
    pub dns_upstream: Vec<String>,
    /// Forward nothing: names the bridge does not own get NXDOMAIN
    #[arg(long)]
    pub no_dns_upstream: bool,
    /// Succeed if it exists with exactly these settings (other settings are still an error)
    #[arg(long)]
    pub may_exist: bool,
    /// Cluster-wide bridge: declared in etcd through the local vswitch-agent, created on
    /// every host of the cluster (docs/cluster.md)
    #[arg(long)]
    pub overlay: bool,
    /// VXLAN network identifier of an --overlay bridge (1..16777215; default: allocated)
    #[arg(long, value_name = "N", requires = "overlay")]
    pub vni: Option<u32>,
}

impl AddBr {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::AddBr(Request {
            name: self.bridge.clone(),
            subnet: self.subnet.clone(),
            gateway: self.gateway.clone(),
            dhcp: self.dhcp.clone(),
            isolated: self.isolated,
            mtu: self.mtu,
            dns_upstream: self.dns_upstream.clone(),
            no_dns_upstream: self.no_dns_upstream,
            may_exist: self.may_exist,
            overlay: self.overlay,
            vni: self.vni,
            ..Default::default()
        }))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{parse, Cmd};
    use vswitch_proto::{AddBr, Command};

    fn req(args: &[&str]) -> AddBr {
        match parse(args).unwrap().command {
            Cmd::AddBr(a) => match a.request().unwrap() {
                Command::AddBr(r) => r,
                c => panic!("{c:?}"),
            },
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn dhcp_with_and_without_range() {
        let r = req(&["add-br", "b", "--subnet", "10.0.0.0/24", "--dhcp"]);
        assert_eq!(r.dhcp.as_deref(), Some(""));
        // A bare --dhcp last on the line, and before another flag.
        let r = req(&["add-br", "b", "--dhcp", "--isolated"]);
        assert_eq!(r.dhcp.as_deref(), Some(""));
        assert!(r.isolated);
        let r = req(&[
            "add-br",
            "b",
            "--dhcp",
            "10.0.0.5-10.0.0.9",
            "--mtu",
            "9000",
        ]);
        assert_eq!(r.dhcp.as_deref(), Some("10.0.0.5-10.0.0.9"));
        assert_eq!(r.mtu, Some(9000));
        assert_eq!(req(&["add-br", "b"]).dhcp, None);
    }

    #[test]
    fn every_option_reaches_the_request() {
        let r = req(&[
            "add-br",
            "br1",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
            "--isolated",
        ]);
        assert_eq!(
            r,
            AddBr {
                name: "br1".into(),
                subnet: Some("10.0.0.0/24".into()),
                gateway: Some("10.0.0.1".into()),
                dhcp: None,
                isolated: true,
                mtu: None,
                ..Default::default()
            }
        );
        let r = req(&["add-br", "ov", "--overlay", "--vni", "42"]);
        assert!(r.overlay);
        assert_eq!(r.vni, Some(42));
    }
}
