//! The command line: global flags and one subcommand per protocol command. The `///`
//! comments are the help text.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vswitch_proto::{AddBr, AddHost, AddPort, Command, PortKind, Publish};

#[derive(Parser, Debug)]
#[command(name = "vswitchctl", version, about = "Configure and inspect vswitchd")]
pub struct Args {
    /// Control socket [env VSWITCH_SOCK; default /run/vswitch/vswitchd.sock]
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Print the result as JSON (stable field names)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print vswitchctl's and vswitchd's versions
    Version,
    /// Create a bridge
    AddBr {
        bridge: String,
        /// IPv4 subnet of the bridge, e.g. 10.0.0.0/24
        #[arg(long)]
        subnet: Option<String>,
        /// The router's own address on the bridge (needs --subnet)
        #[arg(long)]
        gateway: Option<String>,
        /// Serve DHCP, optionally from FIRST-LAST only
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        dhcp: Option<String>,
        /// Route only within the subnet and, through masquerade, to the outside
        #[arg(long)]
        isolated: bool,
        /// MTU of the bridge (default 1500)
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Delete a bridge and its ports
    DelBr { bridge: String },
    /// List bridges
    ListBr,
    /// Show bridges, ports and their state
    Show,
    /// Attach a port to a bridge
    AddPort {
        bridge: String,
        port: String,
        /// system (an existing netdev), tap or internal
        #[arg(long = "type", default_value = "system")]
        kind: String,
        /// Access port of this VLAN (1-4094)
        #[arg(long, conflicts_with = "trunks")]
        tag: Option<u16>,
        /// Trunk port carrying these VLANs (comma-separated)
        #[arg(long, value_delimiter = ',')]
        trunks: Vec<u16>,
        /// vxlan: remote VTEP address(es), comma-separated
        #[arg(long, value_delimiter = ',')]
        remote_ip: Vec<String>,
        /// vxlan: VXLAN network identifier (1-16777215)
        #[arg(long)]
        vni: Option<u32>,
        /// vxlan: local VTEP address (default: the route's source address)
        #[arg(long)]
        local_ip: Option<String>,
        /// vxlan: UDP port (default 4789)
        #[arg(long)]
        dst_port: Option<u16>,
    },
    /// Detach a port from a bridge
    DelPort { bridge: String, port: String },
    /// List the ports of a bridge
    ListPorts { bridge: String },
    /// Show the MAC addresses learned on a bridge
    FdbShow { bridge: String },
    /// Forget every MAC address learned on a bridge
    FdbFlush { bridge: String },
    /// Port counters (all ports, or one)
    Stats { port: Option<String> },
    /// Register a DNS name on a bridge
    AddHost {
        bridge: String,
        name: String,
        ip: String,
    },
    /// Remove a DNS name
    DelHost { bridge: String, name: String },
    /// List the DNS names of a bridge
    ListHosts { bridge: String },
    /// Add a static route
    AddRoute {
        cidr: String,
        /// Next-hop router (on a bridge's subnet)
        #[arg(long)]
        via: String,
    },
    /// Delete a static route
    DelRoute { cidr: String },
    /// List connected and static routes
    ListRoutes,
    /// Show DHCP leases of a bridge
    DhcpLeases { bridge: String },
    /// Always lease IP to MAC (optionally registering NAME in DNS)
    DhcpReserve {
        bridge: String,
        mac: String,
        ip: String,
        name: Option<String>,
    },
    /// Remove a DHCP reservation
    DhcpUnreserve { bridge: String, mac: String },
    /// Source-NAT a bridge's subnet behind another bridge's gateway address
    Masquerade {
        bridge: String,
        /// The outside bridge
        #[arg(long)]
        out: String,
    },
    /// Stop masquerading a bridge
    DelMasquerade { bridge: String },
    /// Publish a container port on the router's outside address(es) (docker -p)
    Publish {
        /// tcp or udp
        proto: String,
        /// [IP:]PORT to listen on
        listen: String,
        /// IP:PORT of the container
        target: String,
    },
    /// Remove a published port
    Unpublish { proto: String, listen: String },
    /// List published ports
    ListPublished,
    /// Show tracked NAT connections
    CtShow,
}

fn check_vlan(v: u16) -> Result<u16, String> {
    if (1..=4094).contains(&v) {
        Ok(v)
    } else {
        Err(format!("bad VLAN id {v}: must be 1..4094"))
    }
}

impl Cmd {
    /// The protocol request of this command.
    pub fn to_request(&self) -> Result<Command, String> {
        Ok(match self {
            Cmd::Version => Command::Version,
            Cmd::AddBr {
                bridge,
                subnet,
                gateway,
                dhcp,
                isolated,
                mtu,
            } => Command::AddBr(AddBr {
                name: bridge.clone(),
                subnet: subnet.clone(),
                gateway: gateway.clone(),
                dhcp: dhcp.clone(),
                isolated: *isolated,
                mtu: *mtu,
            }),
            Cmd::DelBr { bridge } => Command::DelBr {
                name: bridge.clone(),
            },
            Cmd::ListBr => Command::ListBr,
            Cmd::Show => Command::Show,
            Cmd::AddPort {
                bridge,
                port,
                kind,
                tag,
                trunks,
                remote_ip,
                vni,
                local_ip,
                dst_port,
            } => Command::AddPort(AddPort {
                bridge: bridge.clone(),
                port: port.clone(),
                kind: kind.parse::<PortKind>()?,
                tag: tag.map(check_vlan).transpose()?,
                trunks: trunks
                    .iter()
                    .map(|v| check_vlan(*v))
                    .collect::<Result<_, _>>()?,
                remote_ip: remote_ip.clone(),
                vni: *vni,
                local_ip: local_ip.clone(),
                dst_port: *dst_port,
                ..Default::default()
            }),
            Cmd::DelPort { bridge, port } => Command::DelPort {
                bridge: bridge.clone(),
                port: port.clone(),
            },
            Cmd::ListPorts { bridge } => Command::ListPorts {
                bridge: bridge.clone(),
            },
            Cmd::FdbShow { bridge } => Command::FdbShow {
                bridge: bridge.clone(),
            },
            Cmd::FdbFlush { bridge } => Command::FdbFlush {
                bridge: bridge.clone(),
            },
            Cmd::Stats { port } => Command::Stats { port: port.clone() },
            Cmd::AddHost { bridge, name, ip } => Command::AddHost(AddHost {
                bridge: bridge.clone(),
                name: name.clone(),
                ip: ip.clone(),
                source: None,
            }),
            Cmd::DelHost { bridge, name } => Command::DelHost {
                bridge: bridge.clone(),
                name: name.clone(),
            },
            Cmd::ListHosts { bridge } => Command::ListHosts {
                bridge: bridge.clone(),
            },
            Cmd::AddRoute { cidr, via } => Command::AddRoute {
                cidr: cidr.clone(),
                via: via.clone(),
            },
            Cmd::DelRoute { cidr } => Command::DelRoute { cidr: cidr.clone() },
            Cmd::ListRoutes => Command::ListRoutes,
            Cmd::DhcpLeases { bridge } => Command::DhcpLeases {
                bridge: bridge.clone(),
            },
            Cmd::DhcpReserve {
                bridge,
                mac,
                ip,
                name,
            } => Command::DhcpReserve {
                bridge: bridge.clone(),
                mac: mac.clone(),
                ip: ip.clone(),
                name: name.clone(),
            },
            Cmd::DhcpUnreserve { bridge, mac } => Command::DhcpUnreserve {
                bridge: bridge.clone(),
                mac: mac.clone(),
            },
            Cmd::Masquerade { bridge, out } => Command::Masquerade {
                bridge: bridge.clone(),
                out: out.clone(),
            },
            Cmd::DelMasquerade { bridge } => Command::DelMasquerade {
                bridge: bridge.clone(),
            },
            Cmd::Publish {
                proto,
                listen,
                target,
            } => Command::Publish(Publish {
                proto: proto.clone(),
                listen: listen.clone(),
                target: target.clone(),
            }),
            Cmd::Unpublish { proto, listen } => Command::Unpublish {
                proto: proto.clone(),
                listen: listen.clone(),
            },
            Cmd::ListPublished => Command::ListPublished,
            Cmd::CtShow => Command::CtShow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("vswitchctl").chain(a.iter().copied()))
    }

    #[test]
    fn json_before_or_after_the_command() {
        assert!(parse(&["--json", "list-br"]).unwrap().json);
        assert!(parse(&["list-br", "--json"]).unwrap().json);
        assert!(!parse(&["list-br"]).unwrap().json);
    }

    #[test]
    fn dhcp_with_and_without_range() {
        let req = |a: &[&str]| parse(a).unwrap().command.to_request().unwrap();
        match req(&["add-br", "b", "--subnet", "10.0.0.0/24", "--dhcp"]) {
            Command::AddBr(b) => assert_eq!(b.dhcp.as_deref(), Some("")),
            c => panic!("{c:?}"),
        }
        match req(&[
            "add-br",
            "b",
            "--dhcp",
            "10.0.0.5-10.0.0.9",
            "--subnet",
            "10.0.0.0/24",
        ]) {
            Command::AddBr(b) => assert_eq!(b.dhcp.as_deref(), Some("10.0.0.5-10.0.0.9")),
            c => panic!("{c:?}"),
        }
        match req(&["add-br", "b"]) {
            Command::AddBr(b) => assert_eq!(b.dhcp, None),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn vlan_checks() {
        assert!(parse(&["add-port", "b", "p", "--tag", "1", "--trunks", "2"]).is_err());
        let e = parse(&["add-port", "b", "p", "--tag", "5000"])
            .unwrap()
            .command
            .to_request()
            .unwrap_err();
        assert_eq!(e, "bad VLAN id 5000: must be 1..4094");
        match parse(&["add-port", "b", "p", "--trunks", "10,20"])
            .unwrap()
            .command
            .to_request()
        {
            Ok(Command::AddPort(p)) => assert_eq!(p.trunks, vec![10, 20]),
            c => panic!("{c:?}"),
        }
        let e = parse(&["add-port", "b", "p", "--type", "bogus"])
            .unwrap()
            .command
            .to_request();
        assert!(e.unwrap_err().starts_with("unknown port type"));
    }
}
