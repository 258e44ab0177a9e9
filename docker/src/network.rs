//! Networks: one Docker network is one vswitchd bridge.
//!
//! The bridge has the network's subnet and gateway, is `--isolated` (Docker's
//! DOCKER-ISOLATION between networks), is masqueraded behind `--uplink` unless the
//! network is `--internal`, and carries `external_ids.docker_network = ID`, which is
//! how every later call finds it. `--aux-address` addresses are held in vswitchd's
//! allocator so that nothing else gets them.
//!
//! # Naming
//! Docker does not send the network's name, and during CreateNetwork the Engine API
//! does not know the network yet. So CreateNetwork validates everything it can
//! against vswitchd (options, subnet overlap, the uplink) and answers; a background
//! thread then reads the name from the Engine (it appears within milliseconds) and
//! creates the bridge. Any endpoint call that finds no bridge creates it itself from
//! the Engine's view of the network (after a driver restart, say). With
//! `-o vswitch.bridge=BR` the name is known and the bridge is made at once.
//! The bridge is named after the network when the name has at most
//! [`NAME_MAX`] characters, else after its first 10 characters, `-`, and the first
//! 4 hex digits of the network id (`redis-clus-8c2f`); if that name is taken by a
//! bridge that is not this network's, `dk-` and the first 12 hex digits of the id.

use crate::api::{self, CreateNetwork, NetworkRef};
use crate::server::decode;
use crate::vs::{self, NET_KEY};
use crate::{engine, lock, Driver};
use anyhow::{anyhow, bail, Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_proto::{AddBr, AllocAddress, BridgeInfo, Client, Command};

/// Longest Docker network name used as it is for the bridge (an interface name's
/// length, so that a bridge's name can also name a netdev).
pub const NAME_MAX: usize = 15;
/// How long the background thread waits for the Engine to know a new network.
const NAME_WAIT: Duration = Duration::from_secs(30);

pub const OPT_BRIDGE: &str = "vswitch.bridge";
pub const OPT_DHCP: &str = "vswitch.dhcp";
pub const OPT_VLAN: &str = "vswitch.vlan";
pub const OPT_OVERLAY: &str = "vswitch.overlay";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// The `-o` options a vswitch network takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opts {
    pub bridge: Option<String>,
    /// `Some("")`: DHCP on the default range.
    pub dhcp: Option<String>,
    pub mtu: Option<u32>,
}

/// Check the `-o` options of `docker network create`.
pub fn parse_opts(generic: &BTreeMap<String, String>) -> Result<Opts> {
    let mut o = Opts::default();
    for (k, v) in generic {
        match k.as_str() {
            OPT_BRIDGE => {
                if v.is_empty() {
                    bail!("-o {OPT_BRIDGE}= needs a bridge name");
                }
                o.bridge = Some(v.clone());
            }
            OPT_DHCP => {
                o.dhcp = Some(match v.as_str() {
                    "" | "on" | "true" | "1" => String::new(),
                    range => range.to_string(),
                })
            }
            OPT_MTU => {
                o.mtu = Some(
                    v.parse()
                        .map_err(|_| anyhow!("bad -o {OPT_MTU}={v}: expected a number"))?,
                )
            }
            OPT_VLAN => bail!(
                "-o {OPT_VLAN} is not supported: a vswitch network is a bridge of its own with \
                 its own subnet and gateway; to put a container on a VLAN of a trunk bridge use \
                 `pipework BRIDGE CONTAINER IP/PREFIX@GATEWAY @VLAN`"
            ),
            OPT_OVERLAY => bail!(
                "-o {OPT_OVERLAY} is not supported yet: it needs the cluster agent \
                 (vswitch-agent); create the overlay bridge with `vswitchctl add-br BR --overlay` \
                 and plumb containers with pipework"
            ),
            other => bail!(
                "unknown option -o {other} (vswitch networks take {OPT_BRIDGE}, {OPT_DHCP} and {OPT_MTU})"
            ),
        }
    }
    Ok(o)
}

/// What a Docker network needs in vswitchd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub id: String,
    pub internal: bool,
    pub opts: Opts,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub aux: Vec<Ipv4Addr>,
    /// `--ipv6`: the IPv6 subnet and gateway (dual stack).
    pub v6: Option<(Ipv6Net, Ipv6Addr)>,
}

/// `IP/PREFIX` or `IP` → an IPv6 address.
fn addr6_of(s: &str) -> Result<Ipv6Addr> {
    let a = s.split('/').next().unwrap_or(s);
    a.parse()
        .map_err(|_| anyhow!("bad IPv6 address {s:?}: expected an IPv6 address"))
}

/// The IPv6 subnet and gateway of an `--ipv6` network: one pool, an IPv6 CIDR; no
/// gateway given → the subnet's first host address (Docker's default IPAM's choice).
fn v6_of(pools: &[(String, String)]) -> Result<(Ipv6Net, Ipv6Addr)> {
    let (pool, gw) = match pools {
        [] => bail!(
            "IPv6 without an IPv6 subnet: give --ipv6 networks a --subnet such as fd00:40::/64"
        ),
        [p] => p,
        many => bail!(
            "a vswitch network has one IPv6 subnet, got {} ({})",
            many.len(),
            many.iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let net: Ipv6Net = pool.parse().map_err(|_| {
        anyhow!("bad IPv6 subnet {pool:?}: expected an IPv6 network such as fd00:40::/64")
    })?;
    if net.trunc() != net {
        bail!(
            "bad IPv6 subnet {net}: host bits set, did you mean {}?",
            net.trunc()
        );
    }
    if net.prefix_len() > 127 {
        bail!("bad IPv6 subnet {net}: must be /127 or shorter");
    }
    let gw = if gw.is_empty() {
        Ipv6Addr::from(u128::from(net.network()) + 1)
    } else {
        addr6_of(gw)?
    };
    if !net.contains(&gw) || gw == net.network() {
        bail!("IPv6 gateway {gw} is not a host address of {net}");
    }
    Ok((net, gw))
}

/// `IP/PREFIX` or `IP` → IP.
fn addr_of(s: &str) -> Result<Ipv4Addr> {
    let a = s.split('/').next().unwrap_or(s);
    a.parse()
        .map_err(|_| anyhow!("bad IPv4 address {s:?} from Docker"))
}

fn one_pool<T>(pools: &[T], show: impl Fn(&T) -> String) -> Result<&T> {
    match pools {
        [] => bail!(
            "no IPv4 subnet: a vswitch network needs one (use the default IPAM driver or \
             --ipam-driver vswitch, and --subnet)"
        ),
        [p] => Ok(p),
        many => bail!(
            "a vswitch network has one IPv4 subnet, got {} ({}): create one network per subnet",
            many.len(),
            many.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn strings(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = v {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), v);
        }
    }
    out
}

/// The spec of a CreateNetwork request.
pub fn spec_of_request(req: &CreateNetwork) -> Result<Spec> {
    if !vs::valid_id(&req.network_id) {
        bail!("bad network id {:?} from Docker", req.network_id);
    }
    let v6 = if req.ipv6_data.is_empty() {
        None
    } else {
        let pools: Vec<(String, String)> = req
            .ipv6_data
            .iter()
            .map(|p| (p.pool.clone(), p.gateway.clone()))
            .collect();
        Some(v6_of(&pools)?)
    };
    let opts = parse_opts(&strings(req.options.get(api::GENERIC)))?;
    let p = one_pool(&req.ipv4_data, |p| p.pool.clone())?;
    let subnet: Ipv4Net = p
        .pool
        .parse()
        .map_err(|_| anyhow!("bad IPv4 pool {:?} from Docker", p.pool))?;
    if p.gateway.is_empty() {
        bail!("no gateway for {subnet}: give the network one (--gateway)");
    }
    let gateway = addr_of(&p.gateway)?;
    let aux = p
        .aux_addresses
        .values()
        .map(|a| addr_of(a))
        .collect::<Result<Vec<_>>>()?;
    Ok(Spec {
        id: req.network_id.clone(),
        internal: req.options.get(api::INTERNAL) == Some(&Value::Bool(true)),
        opts,
        subnet,
        gateway,
        aux,
        v6,
    })
}

/// The spec of a network as the Engine shows it (which leaves out a gateway Docker
/// chose: that is [`crate::ipam::first_host`]).
pub fn spec_of_engine(n: &engine::Network) -> Result<Spec> {
    let (v6_config, v4_config): (Vec<_>, Vec<_>) = n
        .ipam
        .config
        .iter()
        .cloned()
        .partition(|c| c.subnet.contains(':'));
    let v6 = if n.enable_ipv6 {
        let pools: Vec<(String, String)> = v6_config
            .iter()
            .map(|c| (c.subnet.clone(), c.gateway.clone()))
            .collect();
        Some(v6_of(&pools)?)
    } else {
        None
    };
    let opts = parse_opts(&n.options)?;
    let c = one_pool(&v4_config, |c| c.subnet.clone())?;
    let subnet: Ipv4Net = c
        .subnet
        .parse()
        .map_err(|_| anyhow!("bad subnet {:?} of network {}", c.subnet, n.name))?;
    let gateway = if c.gateway.is_empty() {
        crate::ipam::first_host(subnet, c.ip_range.parse().ok())
    } else {
        addr_of(&c.gateway)?
    };
    let aux = c
        .auxiliary_addresses
        .values()
        .map(|a| addr_of(a))
        .collect::<Result<Vec<_>>>()?;
    Ok(Spec {
        id: n.id.clone(),
        internal: n.internal,
        opts,
        subnet,
        gateway,
        aux,
        v6,
    })
}

/// The bridge name for network `name` (see the module doc).
pub fn bridge_name(name: &str, id: &str) -> String {
    if !name.is_empty() && name.len() <= NAME_MAX {
        return name.to_string();
    }
    let head: String = name.chars().take(10).collect();
    format!("{head}-{}", id.get(..4).unwrap_or(id))
}

/// The fallback name when the preferred one is taken.
fn fallback_name(id: &str) -> String {
    format!("dk-{}", vs::short(id))
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What vswitchd would refuse later, refused now (so that `docker network create`
/// says it): subnet overlap, a missing uplink, a taken `vswitch.bridge` name.
fn precheck(d: &Driver, spec: &Spec, bridges: &[BridgeInfo]) -> Result<()> {
    for b in bridges {
        if b.external_ids.get(NET_KEY) == Some(&spec.id) {
            continue;
        }
        if let Some(other) = b.subnet.as_deref().and_then(|s| s.parse::<Ipv4Net>().ok()) {
            if overlaps(spec.subnet, other) {
                bail!(
                    "subnet {} overlaps {other} of vswitchd bridge {}",
                    spec.subnet,
                    b.name
                );
            }
        }
        let other6 = b.subnet6.as_deref().and_then(|s| s.parse::<Ipv6Net>().ok());
        if let (Some((net, _)), Some(other)) = (spec.v6, other6) {
            if net.contains(&other.network()) || other.contains(&net.network()) {
                bail!(
                    "subnet {net} overlaps {other} of vswitchd bridge {}",
                    b.name
                );
            }
        }
    }
    if let Some(name) = &spec.opts.bridge {
        if bridges.iter().any(|b| &b.name == name) {
            bail!(
                "bridge {name} already exists in vswitchd: -o {OPT_BRIDGE} names a new bridge for this network"
            );
        }
    }
    if !spec.internal {
        if let Some(u) = &d.uplink {
            match bridges.iter().find(|b| &b.name == u) {
                None => bail!(
                    "uplink bridge {u} (vswitch-docker --uplink) does not exist in vswitchd: create it first or use --internal"
                ),
                Some(b) if b.gateway.is_none() => bail!(
                    "uplink bridge {u} (vswitch-docker --uplink) has no gateway address to masquerade behind"
                ),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Create the bridge of `spec` named `name` (or the fallback), with its aux
/// addresses and masquerade; undo all of it on failure. Call with the changes lock.
fn make(
    d: &Driver,
    c: &mut Client,
    spec: &Spec,
    net_name: &str,
    bridges: &[BridgeInfo],
) -> Result<BridgeInfo> {
    let name = match &spec.opts.bridge {
        Some(b) => b.clone(),
        None => {
            let n = bridge_name(net_name, &spec.id);
            if bridges.iter().any(|b| b.name == n) {
                let f = fallback_name(&spec.id);
                tracing::warn!(network = net_name, taken = %n, bridge = %f, "bridge name taken, using the fallback");
                f
            } else {
                n
            }
        }
    };
    let mut ids = BTreeMap::new();
    ids.insert(NET_KEY.to_string(), spec.id.clone());
    if !net_name.is_empty() {
        ids.insert(vs::NAME_KEY.to_string(), net_name.to_string());
    }
    if spec.internal {
        ids.insert(vs::INTERNAL_KEY.to_string(), "1".to_string());
    }
    let info: BridgeInfo = c
        .call(Command::AddBr(AddBr {
            name: name.clone(),
            subnet: Some(spec.subnet.to_string()),
            gateway: Some(spec.gateway.to_string()),
            subnet6: spec.v6.map(|(n, _)| n.to_string()),
            gateway6: spec.v6.map(|(_, g)| g.to_string()),
            dhcp: spec.opts.dhcp.clone(),
            isolated: true,
            mtu: spec.opts.mtu,
            external_ids: ids,
            ..Default::default()
        }))
        .with_context(|| format!("create vswitchd bridge {name} for network {net_name}"))?;
    let mut rest = || -> Result<()> {
        for a in &spec.aux {
            c.call_value(Command::AllocAddress(AllocAddress {
                bridge: name.clone(),
                ip: Some(a.to_string()),
                owner: vs::aux_owner(&spec.id),
                ..Default::default()
            }))
            .with_context(|| format!("--aux-address {a}"))?;
        }
        if let (false, Some(u)) = (spec.internal, &d.uplink) {
            c.call_value(Command::Masquerade {
                bridge: name.clone(),
                out: u.clone(),
            })
            .with_context(|| format!("masquerade {name} behind uplink {u}"))?;
        }
        Ok(())
    };
    if let Err(e) = rest() {
        if let Err(e2) = c.call_value(Command::DelBr {
            name: name.clone(),
            if_exists: false,
        }) {
            return Err(e.context(format!("and removing bridge {name} again failed: {e2}")));
        }
        return Err(e);
    }
    tracing::info!(network = net_name, bridge = %name, subnet = %spec.subnet, internal = spec.internal, "bridge created");
    Ok(info)
}

/// The name of network `id` from the Engine, waiting (bounded) for it to appear.
fn wait_name(d: &Driver, id: &str) -> Result<Option<engine::Network>> {
    let deadline = Instant::now() + NAME_WAIT;
    loop {
        if lock(&d.deleted).contains(id) {
            return Ok(None);
        }
        if let Some(n) = engine::network(id)? {
            return Ok(Some(n));
        }
        if Instant::now() >= deadline {
            bail!(
                "network {} did not appear in the Docker engine within {} s",
                vs::short(id),
                NAME_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Background: create the bridge of a network once its name is known.
fn name_later(d: Arc<Driver>, spec: Spec) {
    let run = || -> Result<()> {
        let Some(n) = wait_name(&d, &spec.id)? else {
            return Ok(());
        };
        let _g = d.changes();
        if lock(&d.deleted).contains(&spec.id) {
            return Ok(());
        }
        let mut c = d.vs()?;
        let bridges = vs::bridges(&mut c)?;
        if vs::network_bridge(&bridges, &spec.id).is_none() {
            make(&d, &mut c, &spec, &n.name, &bridges)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        tracing::error!(network = vs::short(&spec.id), error = %format!("{e:#}"),
            "bridge not created now; the first container on the network tries again");
    }
}

/// `/NetworkDriver.CreateNetwork`.
pub fn create(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: CreateNetwork = decode(body)?;
    let spec = spec_of_request(&req)?;
    let mut c = d.vs()?;
    let bridges = vs::bridges(&mut c)?;
    if vs::network_bridge(&bridges, &spec.id).is_some() {
        return Ok(json!({}));
    }
    precheck(d, &spec, &bridges)?;
    lock(&d.deleted).remove(&spec.id);
    if spec.opts.bridge.is_some() {
        // The bridge is named: make it now (the network's own name is not known yet).
        let _g = d.changes();
        make(d, &mut c, &spec, "", &bridges)?;
    } else {
        let d = Arc::clone(d);
        std::thread::spawn(move || name_later(d, spec));
    }
    Ok(json!({}))
}

/// The bridge of network `id`, created now from the Engine's view if it does not
/// exist yet.
pub fn ensure(d: &Driver, id: &str) -> Result<BridgeInfo> {
    if !vs::valid_id(id) {
        bail!("bad network id {id:?} from Docker");
    }
    let mut c = d.vs()?;
    if let Some(b) = vs::network_bridge(&vs::bridges(&mut c)?, id) {
        return Ok(b);
    }
    let n = engine::network(id)?
        .ok_or_else(|| anyhow!("network {} is unknown to Docker", vs::short(id)))?;
    let spec = spec_of_engine(&n)?;
    let _g = d.changes();
    let bridges = vs::bridges(&mut c)?;
    if let Some(b) = vs::network_bridge(&bridges, id) {
        return Ok(b);
    }
    precheck(d, &spec, &bridges)?;
    make(d, &mut c, &spec, &n.name, &bridges)
}

/// `/NetworkDriver.DeleteNetwork`: the bridge goes, and with it its ports (and
/// their veth pairs), names and held addresses; its masquerade and the ports
/// published to its containers go too.
pub fn delete(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: NetworkRef = decode(body)?;
    lock(&d.deleted).insert(req.network_id.clone());
    let _g = d.changes();
    let mut c = d.vs()?;
    let Some(b) = vs::network_bridge(&vs::bridges(&mut c)?, &req.network_id) else {
        return Ok(json!({}));
    };
    remove_bridge(&mut c, &b)?;
    tracing::info!(bridge = %b.name, "bridge deleted");
    Ok(json!({}))
}

/// Remove bridge `b` and what leads to it: the ports published to its subnet and
/// its masquerade. Goes on after a failure and reports them all.
pub fn remove_bridge(c: &mut Client, b: &BridgeInfo) -> Result<()> {
    let mut errs = Vec::new();
    if let Some(net) = b.subnet.as_deref().and_then(|s| s.parse::<Ipv4Net>().ok()) {
        if let Err(e) = vs::unpublish_where(c, |ip| net.contains(&ip)) {
            errs.push(format!("{e:#}"));
        }
    }
    if let Err(e) = c.call_value(Command::DelMasquerade {
        bridge: b.name.clone(),
        if_exists: false,
    }) {
        if !e.to_string().contains("is not masqueraded") {
            errs.push(format!("del-masquerade {}: {e}", b.name));
        }
    }
    if let Err(e) = c.call_value(Command::DelBr {
        name: b.name.clone(),
        if_exists: false,
    }) {
        errs.push(format!("del-br {}: {e}", b.name));
    }
    if !errs.is_empty() {
        bail!("removing network bridge {}: {}", b.name, errs.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options() {
        let o = parse_opts(&generic(&[(OPT_BRIDGE, "br7"), (OPT_DHCP, "on")])).unwrap();
        assert_eq!(o.bridge.as_deref(), Some("br7"));
        assert_eq!(o.dhcp.as_deref(), Some(""));
        let e = parse_opts(&generic(&[("foo", "1")])).unwrap_err();
        assert!(e.to_string().starts_with("unknown option -o foo"), "{e}");
        assert!(parse_opts(&generic(&[(OPT_VLAN, "10")]))
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(parse_opts(&generic(&[(OPT_MTU, "x")])).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(bridge_name("mynet", "8c2f0a"), "mynet");
        assert_eq!(bridge_name("exactly15chars_", "8c2f0a"), "exactly15chars_");
        let long = bridge_name("redis-cluster-net", "8c2f0a");
        assert_eq!(long, "redis-clus-8c2f");
        assert!(long.len() <= NAME_MAX);
        assert_eq!(fallback_name("8c2f0a1b2c3d4e5f"), "dk-8c2f0a1b2c3d");
    }

    #[test]
    fn request_specs() {
        let req: CreateNetwork = serde_json::from_value(json!({
            "NetworkID": "8c2f0a1b2c3d",
            "Options": {"com.docker.network.internal": true, "com.docker.network.generic": {}},
            "IPv4Data": [{"Pool": "10.38.0.0/16", "Gateway": "10.38.0.1/16",
                          "AuxAddresses": {"x": "10.38.0.5/16"}}],
        }))
        .unwrap();
        let s = spec_of_request(&req).unwrap();
        assert!(s.internal);
        assert_eq!(s.gateway, Ipv4Addr::new(10, 38, 0, 1));
        assert_eq!(s.aux, vec![Ipv4Addr::new(10, 38, 0, 5)]);
        let two: CreateNetwork = serde_json::from_value(json!({
            "NetworkID": "8c2f0a1b2c3d",
            "IPv4Data": [{"Pool": "10.38.0.0/16", "Gateway": "10.38.0.1/16"},
                         {"Pool": "10.39.0.0/16", "Gateway": "10.39.0.1/16"}],
        }))
        .unwrap();
        let e = spec_of_request(&two).unwrap_err().to_string();
        assert!(
            e.contains("one IPv4 subnet, got 2 (10.38.0.0/16, 10.39.0.0/16)"),
            "{e}"
        );
    }

    #[test]
    fn ipv6_pools() {
        let p = |pool: &str, gw: &str| vec![(pool.to_string(), gw.to_string())];
        let (n, g) = v6_of(&p("fd00:40::/64", "")).unwrap();
        assert_eq!(
            (n.to_string(), g.to_string()),
            ("fd00:40::/64".into(), "fd00:40::1".into())
        );
        let (_, g) = v6_of(&p("fd00:40::/64", "fd00:40::fe/64")).unwrap();
        assert_eq!(g.to_string(), "fd00:40::fe");
        for (pools, want) in [
            (vec![], "without an IPv6 subnet"),
            (p("10.0.0.0/24", ""), "bad IPv6 subnet"),
            (p("fd00:40::1/64", ""), "host bits set"),
            (p("fd00:40::/64", "10.0.0.1"), "bad IPv6 address"),
            (p("fd00:40::/64", "fd00:41::1"), "not a host address"),
        ] {
            let e = v6_of(&pools).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
