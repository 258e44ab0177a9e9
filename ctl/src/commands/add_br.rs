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
    /// Subnet of the bridge, e.g. 10.0.0.0/24; once per address family (an IPv6 one
    /// such as fd00:10::/64 beside it makes the bridge dual stack)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<String>,
    /// The router's own address on the bridge (needs a --subnet of its family); once
    /// per address family
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,
    /// Serve DHCP (needs --gateway): the whole subnet, or FIRST-LAST only. Bare, it
    /// serves every family with a gateway (DHCPv4, and DHCPv6 on an IPv6 subnet); a
    /// range serves its own family; once per address family
    #[arg(long, value_name = "FIRST-LAST", num_args = 0..=1, default_missing_value = "")]
    pub dhcp: Vec<String>,
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
        let (subnet, subnet6) = by_family("--subnet", &self.subnet)?;
        let (gateway, gateway6) = by_family("--gateway", &self.gateway)?;
        let (dhcp, dhcp6) = dhcp_by_family(&self.dhcp)?;
        Ok(Command::AddBr(Request {
            name: self.bridge.clone(),
            subnet,
            gateway,
            subnet6,
            gateway6,
            dhcp,
            dhcp6,
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

/// Sort `--dhcp` values into (IPv4, IPv6): a bare `--dhcp` is "" (every family the
/// daemon can serve) and goes to the IPv4 slot unless a range took it; ranges name
/// their family.
fn dhcp_by_family(vals: &[String]) -> Result<(Option<String>, Option<String>), Error> {
    let ranges: Vec<String> = vals.iter().filter(|v| !v.is_empty()).cloned().collect();
    let (v4, v6) = by_family("--dhcp", &ranges)?;
    let bare = vals.iter().any(String::is_empty);
    if bare && vals.len() > 2 {
        return Err(Error::Usage(
            "--dhcp given too often: once bare, or once per address family".into(),
        ));
    }
    Ok(match (bare, v4, v6) {
        (true, None, v6) => (Some(String::new()), v6),
        // A bare --dhcp beside an IPv4 range: DHCPv6 with the default range.
        (true, Some(v4), None) => (Some(v4), Some(String::new())),
        (true, Some(_), Some(_)) => {
            return Err(Error::Usage(
                "--dhcp given too often: once bare, or once per address family".into(),
            ))
        }
        (false, v4, v6) => (v4, v6),
    })
}

/// Sort the values of a repeatable address flag into (IPv4, IPv6): at most one each.
/// An IPv6 address or CIDR is one with a colon; the daemon checks the rest.
fn by_family(flag: &str, vals: &[String]) -> Result<(Option<String>, Option<String>), Error> {
    let (mut v4, mut v6) = (None, None);
    for v in vals {
        let (slot, fam) = match v.contains(':') {
            true => (&mut v6, "IPv6"),
            false => (&mut v4, "IPv4"),
        };
        if let Some(prev) = slot.replace(v.clone()) {
            return Err(Error::Usage(format!(
                "{flag} given twice for {fam} ({prev} and {v}): at most one per address family"
            )));
        }
    }
    Ok((v4, v6))
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
        // Per family: an IPv6 range goes to dhcp6; bare beside a range of one family
        // asks for the other family's default.
        let r = req(&["add-br", "b", "--dhcp", "fd00::10-fd00::20"]);
        assert_eq!(
            (r.dhcp, r.dhcp6.as_deref()),
            (None, Some("fd00::10-fd00::20"))
        );
        let r = req(&["add-br", "b", "--dhcp", "--dhcp", "fd00::10-fd00::20"]);
        assert_eq!(
            (r.dhcp.as_deref(), r.dhcp6.as_deref()),
            (Some(""), Some("fd00::10-fd00::20"))
        );
        let r = req(&["add-br", "b", "--dhcp", "10.0.0.5-10.0.0.9", "--dhcp"]);
        assert_eq!(
            (r.dhcp.as_deref(), r.dhcp6.as_deref()),
            (Some("10.0.0.5-10.0.0.9"), Some(""))
        );
        for bad in [
            &[
                "add-br",
                "b",
                "--dhcp",
                "fd00::1-fd00::2",
                "--dhcp",
                "fd00::3-fd00::4",
            ][..],
            &[
                "add-br",
                "b",
                "--dhcp",
                "--dhcp",
                "10.0.0.5-10.0.0.9",
                "--dhcp",
                "fd00::1-fd00::2",
            ],
        ] {
            let Cmd::AddBr(a) = parse(bad).unwrap().command else {
                panic!()
            };
            assert!(a.request().is_err(), "{bad:?}");
        }
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
        let r = req(&[
            "add-br",
            "br1",
            "--subnet",
            "fd00:10::/64",
            "--gateway",
            "10.0.0.1",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "fd00:10::1",
        ]);
        assert_eq!(
            (r.subnet, r.gateway, r.subnet6, r.gateway6),
            (
                Some("10.0.0.0/24".into()),
                Some("10.0.0.1".into()),
                Some("fd00:10::/64".into()),
                Some("fd00:10::1".into())
            )
        );
        let r = req(&["add-br", "ov", "--overlay", "--vni", "42"]);
        assert!(r.overlay);
        assert_eq!(r.vni, Some(42));
    }

    #[test]
    fn two_of_one_family_is_a_usage_error() {
        let Cmd::AddBr(a) = parse(&[
            "add-br",
            "b",
            "--subnet",
            "fd00:1::/64",
            "--subnet",
            "fd00:2::/64",
        ])
        .unwrap()
        .command
        else {
            panic!("not add-br")
        };
        let e = a.request().unwrap_err();
        assert_eq!(
            e.message(),
            "--subnet given twice for IPv6 (fd00:1::/64 and fd00:2::/64): at most one per address family"
        );
    }
}
