//! The pipework command line. Hand-parsed: the original's positional grammar
//! (`BRIDGE [-i IF] GUEST IP[@GW] [MAC][@VLAN]`, flags anywhere) does not fit a
//! derive parser. Everything is validated here that can be without asking anyone.

use crate::netlink::{check_ifname, parse_mac};
use anyhow::{anyhow, bail, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: pipework [--socket PATH] [--json] BRIDGE [-i IFNAME] [-l HOSTIFNAME] [-a inet|inet6] [--name DNSNAME] [--lock] GUEST IP/PREFIX[@GATEWAY] [MAC][@VLAN]
       pipework [--socket PATH] [--json] BRIDGE [-i IFNAME] [-l HOSTIFNAME] [--name DNSNAME] [--timeout SECS] [--lock] GUEST dhcp [MAC][@VLAN]
       pipework [--socket PATH] [--json] --remove BRIDGE [-i IFNAME] GUEST
       pipework --wait [-i IFNAME] [--timeout SECS]
       pipework [--socket PATH] --watch
       pipework route GUEST ROUTE...
       pipework rule GUEST RULE...

GUEST: a Docker container (name or id), a named network namespace (ip netns), or pid:N.
MAC: aa:bb:cc:dd:ee:ff, or U:STRING for a stable locally administered MAC.
@VLAN: the host end of the link becomes an access port of VLAN 1..4094.
--lock: port security: the guest can only send from its MAC (and its static IP).
dhcp: DHCPv4, and DHCPv6 too when the bridge serves it (both leases pinned to the MAC).
Default IFNAME: eth1. Default --timeout: 60 s for --wait, 30 s for dhcp.";

/// Default bound of `--wait`.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound of a DHCP exchange.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Static {
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
    Dhcp,
    /// `-a inet6`: an IPv6 address, switched at L2 (vswitchd routes IPv4 only).
    Static6 {
        ip: std::net::Ipv6Addr,
        prefix: u8,
        gateway: Option<std::net::Ipv6Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumb {
    pub bridge: String,
    pub ifname: String,
    pub host_ifname: Option<String>,
    pub guest: String,
    /// DNS name to register instead of the guest's own name.
    pub name: Option<String>,
    pub addr: Addr,
    /// Explicit MAC, or `U:STRING` already turned into one.
    pub mac: Option<[u8; 6]>,
    pub vlan: Option<u16>,
    pub timeout: Duration,
    /// Port security: the port only lets the guest's MAC (and static IP) through.
    pub lock: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Plumb(Plumb),
    Remove {
        bridge: String,
        ifname: String,
        guest: String,
    },
    Wait {
        ifname: String,
        timeout: Duration,
    },
    Ip {
        what: &'static str,
        guest: String,
        args: Vec<String>,
    },
    /// Follow Docker's events and re-plumb restarted containers.
    Watch,
    Help,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: Option<PathBuf>,
    pub json: bool,
    pub cmd: Cmd,
}

/// A stable, locally administered unicast MAC derived from `s` (the original's
/// `U:STRING`): 02 followed by five bytes of a 64-bit FNV-1a hash of `s`.
pub fn mac_from_string(s: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[1], b[2], b[3], b[4], b[5]]
}

fn parse_mac_vlan(s: &str) -> Result<(Option<[u8; 6]>, Option<u16>)> {
    let (mac, vlan) = match s.rsplit_once('@') {
        Some((m, v)) => (m, Some(v)),
        None => (s, None),
    };
    let mac = if mac.is_empty() {
        None
    } else if let Some(seed) = mac.strip_prefix("U:") {
        if seed.is_empty() {
            bail!("bad MAC address {mac:?}: U: needs a string after it");
        }
        Some(mac_from_string(seed))
    } else {
        match parse_mac(mac) {
            Some(m) if m[0] & 1 == 1 => {
                bail!("bad MAC address {mac:?}: a multicast address (the first byte is odd)")
            }
            Some(m) if m == [0; 6] => bail!("bad MAC address {mac:?}: all zeros"),
            Some(m) => Some(m),
            None => {
                bail!("bad MAC address {mac:?}: expected six colon-separated hex bytes or U:STRING")
            }
        }
    };
    let vlan = match vlan {
        None => None,
        Some(v) => match v.parse::<u16>() {
            Ok(n) if (1..=4094).contains(&n) => Some(n),
            _ => bail!("bad VLAN {v:?}: must be 1..4094"),
        },
    };
    Ok((mac, vlan))
}

/// `-a inet6`: `IPV6/PREFIX[@GATEWAY]`.
fn parse_addr6(s: &str) -> Result<Addr> {
    use std::net::Ipv6Addr;
    if s.starts_with("dhcp") {
        bail!("bad address {s:?}: -a inet6 takes a static address; plain dhcp asks for both families when the bridge serves DHCPv6");
    }
    let (cidr, gw) = match s.split_once('@') {
        Some((c, g)) => (c, Some(g)),
        None => (s, None),
    };
    let Some((ip, len)) = cidr.split_once('/') else {
        bail!("bad address {cidr:?}: expected IPV6/PREFIX (e.g. 2001:db8::5/64)");
    };
    let ip: Ipv6Addr = ip
        .parse()
        .map_err(|_| anyhow!("bad address {cidr:?}: expected IPV6/PREFIX (e.g. 2001:db8::5/64)"))?;
    let prefix = match len.parse::<u8>() {
        Ok(n) if n <= 128 => n,
        _ => bail!("bad address {cidr:?}: the prefix must be 0..128"),
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        bail!("bad address {cidr:?}: not a unicast host address");
    }
    let gateway = match gw {
        None => None,
        Some(g) => {
            let g: Ipv6Addr = g
                .parse()
                .map_err(|_| anyhow!("bad gateway {g:?}: expected an IPv6 address"))?;
            if g == ip {
                bail!("bad gateway {g}: must be another address");
            }
            Some(g)
        }
    };
    Ok(Addr::Static6 {
        ip,
        prefix,
        gateway,
    })
}

fn parse_addr(s: &str) -> Result<Addr> {
    if s.contains(':') && !s.starts_with("dhcp") {
        bail!("bad address {s:?}: an IPv6 address needs -a inet6");
    }
    if s == "dhcp" {
        return Ok(Addr::Dhcp);
    }
    if s.starts_with("dhcp:") {
        bail!("bad address {s:?}: dhcp takes no client options here (pipework runs the exchange itself)");
    }
    let (cidr, gw) = match s.split_once('@') {
        Some((c, g)) => (c, Some(g)),
        None => (s, None),
    };
    let net: Ipv4Net = match cidr.split_once('/') {
        Some((ip, len)) if ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok() => cidr
            .parse()
            .map_err(|_| anyhow!("bad address {cidr:?}: the prefix must be 0..32"))?,
        _ => bail!("bad address {cidr:?}: expected IP/PREFIX (e.g. 10.0.0.5/24) or dhcp"),
    };
    let ip = net.addr();
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        bail!("bad address {cidr:?}: not a unicast host address");
    }
    let gateway = match gw {
        None => None,
        Some(g) => {
            let g: Ipv4Addr = g
                .parse()
                .map_err(|_| anyhow!("bad gateway {g:?}: expected an IPv4 address"))?;
            if !net.contains(&g) || g == ip {
                bail!("bad gateway {g}: must be another address inside {net}");
            }
            Some(g)
        }
    };
    Ok(Addr::Static {
        ip,
        prefix: net.prefix_len(),
        gateway,
    })
}

fn parse_secs(flag: &str, v: &str) -> Result<Duration> {
    match v.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
        _ => bail!("bad {flag} {v:?}: seconds, 1..86400"),
    }
}

/// Parse the arguments (without the program name).
pub fn parse(argv: &[String]) -> Result<Args> {
    let mut socket = None;
    let mut json = false;
    // Global flags first, so `--socket S route ...` works.
    let mut rest = argv;
    loop {
        match rest {
            [f, v, tail @ ..] if f == "--socket" => {
                socket = Some(PathBuf::from(v));
                rest = tail;
            }
            [f, tail @ ..] if f == "--json" => {
                json = true;
                rest = tail;
            }
            _ => break,
        }
    }
    if let Some(first) = rest.first() {
        if first == "route" || first == "rule" {
            let what = if first == "route" { "route" } else { "rule" };
            let Some(guest) = rest.get(1) else {
                bail!("pipework {what} needs GUEST and {what} arguments (see pipework --help)")
            };
            if rest.len() < 3 {
                bail!("pipework {what} {guest}: no {what} arguments (see pipework --help)");
            }
            return Ok(Args {
                socket,
                json,
                cmd: Cmd::Ip {
                    what,
                    guest: guest.clone(),
                    args: rest[2..].to_vec(),
                },
            });
        }
    }
    let mut ifname = "eth1".to_string();
    let mut host_ifname = None;
    let mut name = None;
    let mut timeout = None;
    let mut remove = false;
    let mut wait = false;
    let mut watch = false;
    let mut lock = false;
    let mut inet6 = false;
    let mut pos: Vec<String> = Vec::new();
    let mut it = rest.iter();
    fn value(it: &mut std::slice::Iter<'_, String>, flag: &str) -> Result<String> {
        it.next()
            .cloned()
            .ok_or_else(|| anyhow!("{flag} needs a value (see pipework --help)"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                return Ok(Args {
                    socket,
                    json,
                    cmd: Cmd::Help,
                })
            }
            "--socket" => socket = Some(PathBuf::from(value(&mut it, "--socket")?)),
            "--json" => json = true,
            "-i" => ifname = value(&mut it, "-i")?,
            "-l" => host_ifname = Some(value(&mut it, "-l")?),
            "--name" => name = Some(value(&mut it, "--name")?),
            "--lock" => lock = true,
            "-a" => match value(&mut it, "-a")?.as_str() {
                "4" | "inet" => inet6 = false,
                "6" | "inet6" => inet6 = true,
                v => bail!("bad -a {v:?}: inet (4) or inet6 (6)"),
            },
            "--timeout" => timeout = Some(parse_secs("--timeout", &value(&mut it, "--timeout")?)?),
            "--wait" => wait = true,
            "--watch" => watch = true,
            "--remove" => remove = true,
            s if s.starts_with('-') && s.len() > 1 => {
                bail!("unknown option {s} (see pipework --help)")
            }
            s => pos.push(s.to_string()),
        }
    }
    check_ifname(&ifname)?;
    if let Some(h) = &host_ifname {
        check_ifname(h)?;
    }
    if watch {
        if !pos.is_empty() || remove || wait {
            bail!("--watch takes only --socket (see pipework --help)");
        }
        return Ok(Args {
            socket,
            json,
            cmd: Cmd::Watch,
        });
    }
    if wait {
        if !pos.is_empty() || remove {
            bail!("--wait takes only -i and --timeout (see pipework --help)");
        }
        return Ok(Args {
            socket,
            json,
            cmd: Cmd::Wait {
                ifname,
                timeout: timeout.unwrap_or(WAIT_TIMEOUT),
            },
        });
    }
    if remove {
        let [bridge, guest] = <[String; 2]>::try_from(pos)
            .map_err(|_| anyhow!("--remove needs BRIDGE and GUEST (see pipework --help)"))?;
        return Ok(Args {
            socket,
            json,
            cmd: Cmd::Remove {
                bridge,
                ifname,
                guest,
            },
        });
    }
    if pos.is_empty() {
        bail!("no arguments (see pipework --help)");
    }
    if pos.len() < 3 || pos.len() > 4 {
        bail!("expected BRIDGE GUEST IP/PREFIX[@GATEWAY]|dhcp [MAC][@VLAN] (see pipework --help)");
    }
    let addr = if inet6 {
        parse_addr6(&pos[2])?
    } else {
        parse_addr(&pos[2])?
    };
    let (mac, vlan) = match pos.get(3) {
        Some(s) => parse_mac_vlan(s)?,
        None => (None, None),
    };
    Ok(Args {
        socket,
        json,
        cmd: Cmd::Plumb(Plumb {
            bridge: pos[0].clone(),
            ifname,
            host_ifname,
            guest: pos[1].clone(),
            name,
            addr,
            mac,
            vlan,
            timeout: timeout.unwrap_or(DHCP_TIMEOUT),
            lock,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cmd> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).map(|a| a.cmd)
    }

    #[test]
    fn original_grammar() {
        match p("br1 -i eth2 ctr 10.0.0.5/24@10.0.0.1 U:web@10").unwrap() {
            Cmd::Plumb(x) => {
                assert_eq!(x.ifname, "eth2");
                assert_eq!(
                    x.addr,
                    Addr::Static {
                        ip: Ipv4Addr::new(10, 0, 0, 5),
                        prefix: 24,
                        gateway: Some(Ipv4Addr::new(10, 0, 0, 1))
                    }
                );
                assert_eq!(x.mac, Some(mac_from_string("web")));
                assert_eq!(x.vlan, Some(10));
            }
            c => panic!("{c:?}"),
        }
        match p("br1 ctr dhcp AA:bb:cc:dd:ee:00").unwrap() {
            Cmd::Plumb(x) => {
                assert_eq!((&x.addr, x.ifname.as_str()), (&Addr::Dhcp, "eth1"));
                assert_eq!(x.mac, Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0]));
                assert_eq!(x.timeout, DHCP_TIMEOUT);
            }
            c => panic!("{c:?}"),
        }
        match p("br1 -l myveth -a 4 pid:42 10.0.0.9/16 @4094").unwrap() {
            Cmd::Plumb(x) => {
                assert_eq!(x.host_ifname.as_deref(), Some("myveth"));
                assert_eq!((x.mac, x.vlan), (None, Some(4094)));
            }
            c => panic!("{c:?}"),
        }
        assert_eq!(
            p("--wait -i eth3").unwrap(),
            Cmd::Wait {
                ifname: "eth3".into(),
                timeout: WAIT_TIMEOUT
            }
        );
        assert!(matches!(
            p("route ctr add 10.9.0.0/24 via 10.0.0.1").unwrap(),
            Cmd::Ip { what: "route", .. }
        ));
        let a = parse(
            &"--socket /s --json rule ctr add from 10.0.0.5 table 7"
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(a.json && a.socket.is_some());
        assert!(matches!(a.cmd, Cmd::Ip { what: "rule", .. }));
        assert!(matches!(
            p("--remove br1 -i eth2 ctr").unwrap(),
            Cmd::Remove { ref ifname, .. } if ifname == "eth2"
        ));
    }

    #[test]
    fn bad_input() {
        let err = |s: &str| p(s).unwrap_err().to_string();
        assert!(err("br1 ctr 10.0.0.5").starts_with("bad address"));
        assert!(err("br1 ctr 10.0.0.5/33").starts_with("bad address"));
        assert!(err("br1 ctr 10.0.0.256/24").starts_with("bad address"));
        assert!(err("br1 ctr 10.0.0.5/24@10.1.0.1").starts_with("bad gateway"));
        assert!(err("br1 ctr 10.0.0.5/24@nope").starts_with("bad gateway"));
        assert!(err("br1 ctr 10.0.0.5/24 zz:zz").starts_with("bad MAC"));
        assert!(err("br1 ctr 10.0.0.5/24 01:00:5e:00:00:01").starts_with("bad MAC"));
        assert!(err("br1 ctr 10.0.0.5/24 @5000").starts_with("bad VLAN"));
        assert!(err("br1 ctr 10.0.0.5/24 @0").starts_with("bad VLAN"));
        assert!(err("br1 -i abcdefghijklmnopq ctr 10.0.0.5/24").starts_with("bad interface"));
        assert!(err("br1 -a 6 ctr 10.0.0.5/24").starts_with("bad address"));
        assert!(err("br1 -a inet6 ctr dhcp").contains("both families"));
        assert!(err("br1 -a inet6 ctr 2001:db8::5/129").contains("0..128"));
        assert!(err("br1 ctr 2001:db8::5/64").contains("needs -a inet6"));
        assert!(err("br1 -a 5 ctr 10.0.0.5/24").starts_with("bad -a"));
        assert!(matches!(
            p("br1 -a inet6 ctr 2001:db8::5/64@fe80::1"),
            Ok(Cmd::Plumb(Plumb {
                addr: Addr::Static6 {
                    prefix: 64,
                    gateway: Some(_),
                    ..
                },
                ..
            }))
        ));
        assert!(p("br1 ctr").is_err());
        assert!(p("--bogus").is_err());
        assert!(p("--wait --timeout 0").is_err());
        assert!(p("route ctr").is_err());
    }

    #[test]
    fn u_mac_is_stable_local_unicast() {
        let m = mac_from_string("x");
        assert_eq!(m, mac_from_string("x"));
        assert_ne!(m, mac_from_string("y"));
        assert_eq!(m[0], 0x02);
    }
}
