//! The IPAM driver (`--ipam-driver vswitch`): addresses from vswitchd's allocator,
//! so that Docker containers, pipework guests and DHCP clients on one bridge never
//! get the same address.
//!
//! A pool is the subnet of one vswitch network; its id is the subnet, with
//! `|IP-RANGE` appended for `--ip-range` (`10.38.0.0/16|10.38.5.0/24`). The network's
//! bridge does not exist yet while Docker asks for the pool, the gateway and the
//! `--aux-address`es, so those are checked against vswitchd and answered without a
//! hold (the bridge, made by the network driver, owns its gateway and holds the aux
//! addresses). Container addresses are held in vswitchd by `docker-ipam` until the
//! endpoint takes them over (`endpoint`), and released by ReleaseAddress.
//! `RequiresRequestReplay` is false: vswitchd keeps the holds across restarts, so
//! Docker need not replay its requests.

use crate::api::{
    PoolRef, ReleaseAddress, RequestAddress, RequestAddressReply, RequestPool, RequestPoolReply,
    GATEWAY_TYPE, REQUEST_ADDRESS_TYPE,
};
use crate::server::decode;
use crate::vs::{self, IPAM_OWNER};
use crate::{lock, Driver};
use anyhow::{anyhow, bail, Result};
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_proto::{AllocAddress, AllocEntry, BridgeInfo, Command};

pub const LOCAL_SPACE: &str = "vswitch";
pub const GLOBAL_SPACE: &str = "vswitch-global";
/// How long a dynamic address request waits for the network's bridge to appear
/// (it is created just after the network, see `network`).
const BRIDGE_WAIT: Duration = Duration::from_secs(10);

/// Pools handed out when `docker network create` gives no `--subnet`: Docker's own
/// defaults, 172.18-31.0.0/16, then 192.168.0-240.0/20.
fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let a = (18..=31u8).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let b = (0..16u8).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
    a.chain(b)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn subnet_of(b: &BridgeInfo) -> Option<Ipv4Net> {
    b.subnet.as_deref().and_then(|s| s.parse().ok())
}

/// A CIDR without host bits.
fn parse_cidr(s: &str, what: &str) -> Result<Ipv4Net> {
    let n: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("bad {what} {s:?}: expected an IPv4 network such as 10.0.0.0/24"))?;
    if n.trunc() != n {
        bail!("bad {what} {s}: host bits set, did you mean {}?", n.trunc());
    }
    Ok(n)
}

/// The gateway when none is given, as Docker's default IPAM picks it: the first
/// address of the `--ip-range` (or of the subnet) that is not the subnet's network
/// address.
pub fn first_host(pool: Ipv4Net, sub: Option<Ipv4Net>) -> Ipv4Addr {
    let start = sub.unwrap_or(pool).network();
    if start == pool.network() {
        Ipv4Addr::from(u32::from(start) + 1)
    } else {
        start
    }
}

/// Pool id → (pool, sub-pool).
fn parse_pool_id(id: &str) -> Result<(Ipv4Net, Option<Ipv4Net>)> {
    let (pool, sub) = match id.split_once('|') {
        Some((p, s)) => (p, Some(s)),
        None => (id, None),
    };
    let pool = parse_cidr(pool, "pool id")?;
    let sub = sub.map(|s| parse_cidr(s, "pool id")).transpose()?;
    Ok((pool, sub))
}

/// `/IpamDriver.RequestPool`.
pub fn request_pool(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: RequestPool = decode(body)?;
    if req.v6 {
        bail!(
            "the vswitch IPAM driver serves IPv4 pools only: create an --ipv6 network with \
             Docker's default IPAM (leave out --ipam-driver vswitch)"
        );
    }
    let mut c = d.vs()?;
    let bridges = vs::bridges(&mut c)?;
    let mut handed = lock(&d.pools);
    let taken = |n: Ipv4Net| -> Option<String> {
        for b in &bridges {
            if let Some(s) = subnet_of(b).filter(|s| overlaps(*s, n)) {
                return Some(format!("{s} of vswitchd bridge {}", b.name));
            }
        }
        handed
            .iter()
            .find(|p| overlaps(**p, n))
            .map(|p| format!("{p} of another vswitch network being created"))
    };
    let pool = if req.pool.is_empty() {
        default_pools()
            .find(|p| taken(*p).is_none())
            .ok_or_else(|| anyhow!("no free default pool left: give the network a --subnet"))?
    } else {
        let p = parse_cidr(&req.pool, "subnet")?;
        if let Some(other) = taken(p) {
            bail!("subnet {p} overlaps {other}");
        }
        p
    };
    let mut id = pool.to_string();
    if !req.sub_pool.is_empty() {
        let s = parse_cidr(&req.sub_pool, "--ip-range")?;
        if !pool.contains(&s.network()) || !pool.contains(&s.broadcast()) {
            bail!("--ip-range {s} is not inside subnet {pool}");
        }
        id = format!("{pool}|{s}");
    }
    handed.insert(pool);
    Ok(serde_json::to_value(RequestPoolReply {
        pool_id: id,
        pool: pool.to_string(),
        data: Default::default(),
    })?)
}

/// `/IpamDriver.ReleasePool`.
pub fn release_pool(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: PoolRef = decode(body)?;
    if let Ok((pool, _)) = parse_pool_id(&req.pool_id) {
        lock(&d.pools).remove(&pool);
    }
    Ok(json!({}))
}

/// The bridge whose subnet is `pool`, waiting up to `wait` for it.
fn pool_bridge(d: &Driver, pool: Ipv4Net, wait: Duration) -> Result<Option<BridgeInfo>> {
    let deadline = Instant::now() + wait;
    loop {
        let mut c = d.vs()?;
        let found = vs::bridges(&mut c)?
            .into_iter()
            .find(|b| subnet_of(b) == Some(pool));
        if found.is_some() || Instant::now() >= deadline {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/IpamDriver.RequestAddress`.
pub fn request_address(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: RequestAddress = decode(body)?;
    let (pool, sub) = parse_pool_id(&req.pool_id)?;
    let prefix = pool.prefix_len();
    let wanted = match req.address.as_str() {
        "" => None,
        a => {
            let ip: Ipv4Addr = a
                .split('/')
                .next()
                .unwrap_or(a)
                .parse()
                .map_err(|_| anyhow!("bad address {a:?}"))?;
            if !pool.contains(&ip) {
                bail!("address {ip} is outside subnet {pool}");
            }
            Some(ip)
        }
    };
    let reply = |ip: Ipv4Addr| -> Result<Value> {
        Ok(serde_json::to_value(RequestAddressReply {
            address: format!("{ip}/{prefix}"),
            data: Default::default(),
        })?)
    };
    if req.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_TYPE) {
        return reply(wanted.unwrap_or_else(|| first_host(pool, sub)));
    }
    let wait = if wanted.is_some() {
        Duration::ZERO
    } else {
        BRIDGE_WAIT
    };
    let Some(b) = pool_bridge(d, pool, wait)? else {
        // An --aux-address while the network is being created: its bridge holds it.
        return match wanted {
            Some(ip) => reply(ip),
            None => bail!(
                "no vswitch bridge has subnet {pool}: the vswitch IPAM driver serves networks of the vswitch network driver (-d vswitch)"
            ),
        };
    };
    let _g = d.changes();
    let mut c = d.vs()?;
    let a: AllocEntry = c.call(Command::AllocAddress(AllocAddress {
        bridge: b.name.clone(),
        ip: wanted.map(|ip| ip.to_string()),
        range: sub.filter(|_| wanted.is_none()).map(|s| s.to_string()),
        owner: IPAM_OWNER.to_string(),
        take_over: None,
    }))?;
    let ip: Ipv4Addr =
        a.ip.parse()
            .map_err(|_| anyhow!("bad address {:?} from vswitchd", a.ip))?;
    reply(ip)
}

/// `/IpamDriver.ReleaseAddress`.
pub fn release_address(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: ReleaseAddress = decode(body)?;
    let (pool, _) = parse_pool_id(&req.pool_id)?;
    let ip = req
        .address
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    if let Some(b) = pool_bridge(d, pool, Duration::ZERO)? {
        let _g = d.changes();
        d.vs()?.call_value(Command::ReleaseAddress {
            bridge: b.name,
            owner: IPAM_OWNER.to_string(),
            ip: Some(ip),
        })?;
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids() {
        let (p, s) = parse_pool_id("10.38.0.0/16|10.38.5.0/24").unwrap();
        assert_eq!(p.to_string(), "10.38.0.0/16");
        assert_eq!(s.map(|s| s.to_string()).as_deref(), Some("10.38.5.0/24"));
        assert!(parse_pool_id("10.38.0.1/16")
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        assert_eq!(
            default_pools().next().map(|p| p.to_string()).as_deref(),
            Some("172.18.0.0/16")
        );
        assert_eq!(default_pools().count(), 30);
        let (p, s) = parse_pool_id("10.71.0.0/24|10.71.0.128/25").unwrap();
        assert_eq!(first_host(p, s), Ipv4Addr::new(10, 71, 0, 128));
        assert_eq!(first_host(p, None), Ipv4Addr::new(10, 71, 0, 1));
    }
}
