//! `add-port`: attach a port to a bridge. VLAN ids are checked here as well as in the
//! daemon, so a typo is caught before anything is sent; everything else (names,
//! devices, VXLAN settings) is the daemon's to judge.

use super::{parse_vid, Ctx};
use crate::error::Error;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use vswitch_proto::{AddPort as Request, Command, PortKind};

/// Attach a port to a bridge
#[derive(clap::Args, Debug)]
pub struct AddPort {
    /// The bridge
    #[arg(value_name = "BR")]
    pub bridge: String,
    /// Name of the port (for system ports: an existing netdev, e.g. a veth end)
    #[arg(value_name = "PORT")]
    pub port: String,
    /// system: an existing netdev; tap: a new TAP device; internal: a TAP device that
    /// stays in vswitchd's namespace; vxlan: a tunnel endpoint
    #[arg(
        long = "type",
        value_name = "TYPE",
        default_value = "system",
        value_parser = PossibleValuesParser::new(["system", "tap", "internal", "vxlan"])
            .try_map(|s| s.parse::<PortKind>()),
    )]
    pub kind: PortKind,
    /// Access port of VLAN VID (1..4094)
    #[arg(long, value_name = "VID", conflicts_with = "trunks")]
    pub tag: Option<String>,
    /// Trunk port carrying only these VLANs (default: all VLANs)
    #[arg(long, value_name = "VID,VID..")]
    pub trunks: Option<String>,
    /// vxlan: remote VTEP address(es)
    #[arg(long, value_name = "IP[,IP..]", value_delimiter = ',')]
    pub remote_ip: Vec<String>,
    /// vxlan: VXLAN network identifier (1..16777215)
    #[arg(long, value_name = "N")]
    pub vni: Option<u32>,
    /// vxlan: local VTEP address [default: the source address of the route to the remote]
    #[arg(long, value_name = "IP")]
    pub local_ip: Option<String>,
    /// vxlan: UDP port [default: 4789]
    #[arg(long, value_name = "N")]
    pub dst_port: Option<u16>,
    /// Port security: drop frames whose source MAC (or ARP sender) is not MAC
    #[arg(long, value_name = "MAC")]
    pub lock_mac: Option<String>,
    /// Port security (with --lock-mac): IPv4 and/or IPv6 addresses; IPv4/ARP only
    /// from the IPv4 ones (or 0.0.0.0 for DHCP), IPv6 only from the IPv6 ones (or the
    /// MAC's link-local address), no IPv6 at all if none is given; other frames are
    /// dropped
    #[arg(
        long,
        value_name = "IP[,IP..]",
        value_delimiter = ',',
        requires = "lock_mac"
    )]
    pub lock_ip: Vec<String>,
    /// Succeed if it exists with exactly these settings (other settings are still an error)
    #[arg(long)]
    pub may_exist: bool,
}

impl AddPort {
    pub fn request(&self) -> Result<Command, Error> {
        let tag = self.tag.as_deref().map(parse_vid).transpose()?;
        let trunks = match &self.trunks {
            Some(list) => list.split(',').map(parse_vid).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Command::AddPort(Request {
            bridge: self.bridge.clone(),
            port: self.port.clone(),
            kind: self.kind,
            tag,
            trunks,
            remote_ip: self.remote_ip.clone(),
            vni: self.vni,
            local_ip: self.local_ip.clone(),
            dst_port: self.dst_port,
            lock_mac: self.lock_mac.clone(),
            lock_ip: self.lock_ip.clone(),
            may_exist: self.may_exist,
            ..Default::default()
        }))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.mutate(self.request()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{parse, usage_error, Cmd};
    use crate::error::Error;
    use vswitch_proto::{AddPort, Command, PortKind};

    fn req(args: &[&str]) -> Result<AddPort, Error> {
        match parse(args).map_err(|e| usage_error(&e))?.command {
            Cmd::AddPort(a) => match a.request()? {
                Command::AddPort(r) => Ok(r),
                c => panic!("{c:?}"),
            },
            c => panic!("{c:?}"),
        }
    }

    fn usage(msg: &str) -> Result<AddPort, Error> {
        Err(Error::Usage(msg.into()))
    }

    #[test]
    fn plain_system_port() {
        let r = req(&["add-port", "br1", "veth1"]).unwrap();
        assert_eq!(r.bridge, "br1");
        assert_eq!(r.port, "veth1");
        assert_eq!(r.kind, PortKind::System);
        assert_eq!((r.tag, r.trunks.len()), (None, 0));
    }

    #[test]
    fn types() {
        for (t, k) in [
            ("system", PortKind::System),
            ("tap", PortKind::Tap),
            ("internal", PortKind::Internal),
            ("vxlan", PortKind::Vxlan),
        ] {
            assert_eq!(req(&["add-port", "b", "p", "--type", t]).unwrap().kind, k);
        }
        let e = req(&["add-port", "b", "p", "--type", "bogus"]).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "invalid value 'bogus' for '--type <TYPE>' [possible values: system, tap, internal, vxlan]"
            ),
            "{e}"
        );
    }

    #[test]
    fn access_and_trunk_ports() {
        assert_eq!(
            req(&["add-port", "b", "p", "--tag", "10"]).unwrap().tag,
            Some(10)
        );
        assert_eq!(
            req(&["add-port", "b", "p", "--trunks", "10,20,4094"])
                .unwrap()
                .trunks,
            vec![10, 20, 4094]
        );
    }

    #[test]
    fn tag_and_trunks_are_exclusive() {
        let e = req(&["add-port", "b", "p", "--tag", "1", "--trunks", "2"]).unwrap_err();
        assert_eq!(
            e,
            Error::Usage(
                "the argument '--tag <VID>' cannot be used with '--trunks <VID,VID..>'".into()
            )
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_vlan_ids_are_named() {
        assert_eq!(
            req(&["add-port", "b", "p", "--tag", "5000"]),
            usage("bad VLAN id 5000: must be 1..4094")
        );
        assert_eq!(
            req(&["add-port", "b", "p", "--tag", "0"]),
            usage("bad VLAN id 0: must be 1..4094")
        );
        assert_eq!(
            req(&["add-port", "b", "p", "--trunks", "10,4095,20"]),
            usage("bad VLAN id 4095: must be 1..4094")
        );
        assert_eq!(
            req(&["add-port", "b", "p", "--trunks", "10,x"]),
            usage("bad VLAN id x: must be 1..4094")
        );
        assert_eq!(
            req(&["add-port", "b", "p", "--trunks", "10,,20"]),
            usage("bad VLAN id \"\": must be 1..4094")
        );
    }

    #[test]
    fn vxlan_options() {
        let r = req(&[
            "add-port",
            "br0",
            "vx0",
            "--type",
            "vxlan",
            "--remote-ip",
            "192.0.2.2,192.0.2.3",
            "--vni",
            "42",
            "--local-ip",
            "192.0.2.1",
            "--dst-port",
            "4790",
        ])
        .unwrap();
        assert_eq!(r.remote_ip, vec!["192.0.2.2", "192.0.2.3"]);
        assert_eq!(r.vni, Some(42));
        assert_eq!(r.local_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(r.dst_port, Some(4790));
    }
}
