//! The pipework command line (hand-parsed: the original's positional grammar does not
//! fit a derive parser).

use anyhow::{bail, Result};
use std::path::PathBuf;

pub const USAGE: &str = "usage: pipework [--socket PATH] BRIDGE [-i IFNAME] [-l HOSTIFNAME] [-a 4] GUEST IP/PREFIX[@GATEWAY]|dhcp [MAC][@VLAN]
       pipework [--socket PATH] --remove BRIDGE [-i IFNAME] GUEST
       pipework --wait [-i IFNAME] [--timeout SECS]
       pipework route GUEST ROUTE...
       pipework rule GUEST RULE...";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Static {
        cidr: String,
        gateway: Option<String>,
    },
    Dhcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumb {
    pub socket: Option<PathBuf>,
    pub bridge: String,
    pub ifname: String,
    pub host_ifname: Option<String>,
    pub guest: String,
    pub addr: Addr,
    /// Explicit MAC, or `U:STRING` already turned into one.
    pub mac: Option<String>,
    pub vlan: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Plumb(Plumb),
    Remove {
        socket: Option<PathBuf>,
        bridge: String,
        ifname: String,
        guest: String,
    },
    Wait {
        ifname: String,
        timeout: u64,
    },
    Ip {
        what: &'static str,
        guest: String,
        args: Vec<String>,
    },
    Help,
}

/// A stable, locally administered unicast MAC derived from `s` (the original's `U:`).
pub fn mac_from_string(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[1], b[2], b[3], b[4], b[5]
    )
}

fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn parse_mac_vlan(s: &str) -> Result<(Option<String>, Option<u16>)> {
    let (mac, vlan) = match s.split_once('@') {
        Some((m, v)) => (m, Some(v)),
        None => (s, None),
    };
    let mac = if mac.is_empty() {
        None
    } else if let Some(seed) = mac.strip_prefix("U:") {
        Some(mac_from_string(seed))
    } else if valid_mac(&mac.to_ascii_lowercase()) {
        Some(mac.to_ascii_lowercase())
    } else {
        bail!(
            "bad MAC address {mac:?}: expected six colon-separated hex bytes (unicast) or U:STRING"
        );
    };
    let vlan = match vlan {
        None => None,
        Some(v) => match v.parse::<u16>() {
            Ok(n) if (1..=4094).contains(&n) => Some(n),
            _ => bail!("bad VLAN id {v:?}: must be 1..4094"),
        },
    };
    Ok((mac, vlan))
}

/// Parse the arguments (without the program name).
pub fn parse(argv: &[String]) -> Result<Cmd> {
    let mut socket = None;
    let mut ifname = "eth1".to_string();
    let mut host_ifname = None;
    let mut timeout = 60u64;
    let mut remove = false;
    let mut wait = false;
    let mut pos: Vec<String> = Vec::new();
    let mut it = argv.iter();
    let need = |it: &mut std::slice::Iter<String>, flag: &str| -> Result<String> {
        match it.next() {
            Some(v) => Ok(v.clone()),
            None => bail!("{flag} needs a value"),
        }
    };
    // `route`/`rule` take everything after GUEST verbatim (a leading --socket is
    // accepted and ignored: they do not talk to vswitchd).
    let argv = match argv {
        [s, _, rest @ ..]
            if s == "--socket" && rest.first().is_some_and(|r| r == "route" || r == "rule") =>
        {
            rest
        }
        _ => argv,
    };
    if let Some(first) = argv.first() {
        if first == "route" || first == "rule" {
            let what = if first == "route" { "route" } else { "rule" };
            let Some(guest) = argv.get(1) else {
                bail!("{what} needs GUEST and arguments; see pipework --help")
            };
            if argv.len() < 3 {
                bail!("pipework {what} {guest}: no {what} arguments");
            }
            return Ok(Cmd::Ip {
                what,
                guest: guest.clone(),
                args: argv[2..].to_vec(),
            });
        }
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help),
            "--socket" => socket = Some(PathBuf::from(need(&mut it, "--socket")?)),
            "-i" => ifname = need(&mut it, "-i")?,
            "-l" => host_ifname = Some(need(&mut it, "-l")?),
            "-a" => {
                let v = need(&mut it, "-a")?;
                if v != "4" && v != "inet" {
                    bail!("-a {v}: only IPv4 (-a 4) is supported");
                }
            }
            "--timeout" => {
                let v = need(&mut it, "--timeout")?;
                timeout = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad --timeout {v:?}"))?;
            }
            "--wait" => wait = true,
            "--remove" => remove = true,
            s if s.starts_with('-') && s.len() > 1 => bail!("unknown option {s}"),
            s => pos.push(s.to_string()),
        }
    }
    for n in [&ifname].into_iter().chain(host_ifname.as_ref()) {
        if n.is_empty() || n.len() > 15 || n.contains('/') || n.contains(char::is_whitespace) {
            bail!("bad interface name {n:?}: 1-15 characters");
        }
    }
    if wait {
        if !pos.is_empty() {
            bail!("--wait takes no other arguments; see pipework --help");
        }
        return Ok(Cmd::Wait { ifname, timeout });
    }
    if remove {
        let [bridge, guest] = <[String; 2]>::try_from(pos)
            .map_err(|_| anyhow::anyhow!("--remove needs BRIDGE and GUEST; see pipework --help"))?;
        return Ok(Cmd::Remove {
            socket,
            bridge,
            ifname,
            guest,
        });
    }
    if pos.len() < 3 || pos.len() > 4 {
        bail!("expected BRIDGE GUEST IP/PREFIX[@GATEWAY]|dhcp [MAC][@VLAN]; see pipework --help");
    }
    let addr = if pos[2] == "dhcp" {
        Addr::Dhcp
    } else {
        let (cidr, gw) = match pos[2].split_once('@') {
            Some((c, g)) => (c.to_string(), Some(g.to_string())),
            None => (pos[2].clone(), None),
        };
        let Some((ip, len)) = cidr.split_once('/') else {
            bail!("bad address {cidr:?}: expected IP/PREFIX, e.g. 10.0.0.5/24");
        };
        if ip.parse::<std::net::Ipv4Addr>().is_err() || !len.parse::<u8>().is_ok_and(|l| l <= 32) {
            bail!("bad address {cidr:?}: expected IP/PREFIX, e.g. 10.0.0.5/24");
        }
        if let Some(g) = &gw {
            if g.parse::<std::net::Ipv4Addr>().is_err() {
                bail!("bad gateway {g:?}");
            }
        }
        Addr::Static { cidr, gateway: gw }
    };
    let (mac, vlan) = match pos.get(3) {
        Some(s) => parse_mac_vlan(s)?,
        None => (None, None),
    };
    Ok(Cmd::Plumb(Plumb {
        socket,
        bridge: pos[0].clone(),
        ifname,
        host_ifname,
        guest: pos[1].clone(),
        addr,
        mac,
        vlan,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cmd> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn original_grammar() {
        match p("br1 -i eth2 ctr 10.0.0.5/24@10.0.0.1 U:web@10").unwrap() {
            Cmd::Plumb(x) => {
                assert_eq!(x.ifname, "eth2");
                assert_eq!(
                    x.addr,
                    Addr::Static {
                        cidr: "10.0.0.5/24".into(),
                        gateway: Some("10.0.0.1".into())
                    }
                );
                assert_eq!(x.mac, Some(mac_from_string("web")));
                assert_eq!(x.vlan, Some(10));
            }
            c => panic!("{c:?}"),
        }
        match p("br1 ctr dhcp").unwrap() {
            Cmd::Plumb(x) => assert_eq!((x.addr, x.ifname.as_str()), (Addr::Dhcp, "eth1")),
            c => panic!("{c:?}"),
        }
        assert_eq!(
            p("--wait -i eth3").unwrap(),
            Cmd::Wait {
                ifname: "eth3".into(),
                timeout: 60
            }
        );
        assert!(matches!(
            p("route ctr add 10.9.0.0/24 via 10.0.0.1").unwrap(),
            Cmd::Ip { what: "route", .. }
        ));
        assert!(matches!(p("--remove br1 ctr").unwrap(), Cmd::Remove { .. }));
    }

    #[test]
    fn bad_input() {
        assert!(p("br1 ctr 10.0.0.5")
            .unwrap_err()
            .to_string()
            .starts_with("bad address"));
        assert!(p("br1 ctr 10.0.0.5/24 zz:zz")
            .unwrap_err()
            .to_string()
            .starts_with("bad MAC"));
        assert!(p("br1 ctr 10.0.0.5/24 @5000")
            .unwrap_err()
            .to_string()
            .starts_with("bad VLAN"));
        assert!(p("br1 -i abcdefghijklmnopq ctr 10.0.0.5/24").is_err());
        assert!(p("br1 ctr").is_err());
        assert!(p("--bogus").is_err());
    }

    #[test]
    fn u_mac_is_stable_local_unicast() {
        let m = mac_from_string("x");
        assert_eq!(m, mac_from_string("x"));
        assert!(m.starts_with("02:"));
        assert!(valid_mac(&m));
    }
}
