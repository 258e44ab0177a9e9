//! The vswitch control protocol: one definition of every request and reply, plus a
//! small blocking client.
//!
//! Layer: shared by `vswitchd` (server side, in `vswitch::control`), `vswitchctl` and
//! `pipework`, so neither CLI compiles the datapath.
//!
//! # Wire format
//! A Unix stream socket carrying one JSON object per line in each direction.
//!
//! Request: `{"version":1,"cmd":"add-br","name":"br1","subnet":"10.0.0.0/24",...}` —
//! the command name equals the CLI verb, its arguments sit beside it.
//!
//! Reply: `{"version":1,"ok":true,"result":...}` or
//! `{"version":1,"ok":false,"error":"no such bridge: br9"}`.
//!
//! A server answers a request whose `version` it does not know with an error reply and
//! keeps the connection open; so does a line that is not valid JSON.

pub mod cluster;
pub mod events;
pub mod pcapng;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Version of the protocol spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;
/// Socket used when neither `--socket` nor `$VSWITCH_SOCK` is given.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";
/// Database used when neither `--db` nor `$VSWITCH_DB` is given.
pub const DEFAULT_DB: &str = "/var/lib/vswitch/conf.db";
/// Longest request or reply line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Resolve the control socket path: explicit flag, then `$VSWITCH_SOCK`, then the default.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("VSWITCH_SOCK") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Resolve the database path: explicit flag, then `$VSWITCH_DB`, then the default.
pub fn db_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("VSWITCH_DB") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_DB),
    }
}

/// Kind of a port. Serialised lower-case (`system`, `tap`, `internal`, `vxlan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// An existing netdev (e.g. a veth end) attached through AF_PACKET.
    #[default]
    System,
    /// A TAP device created by vswitchd.
    Tap,
    /// A TAP device that gives vswitchd's own network namespace a leg on the bridge.
    Internal,
    /// A VXLAN tunnel endpoint (not yet implemented by the datapath).
    Vxlan,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::System => "system",
            PortKind::Tap => "tap",
            PortKind::Internal => "internal",
            PortKind::Vxlan => "vxlan",
        }
    }
}

impl std::fmt::Display for PortKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PortKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(PortKind::System),
            "tap" => Ok(PortKind::Tap),
            "internal" => Ok(PortKind::Internal),
            "vxlan" => Ok(PortKind::Vxlan),
            other => Err(format!(
                "unknown port type: {other} (expected system, tap, internal or vxlan)"
            )),
        }
    }
}

/// A request: the protocol version plus one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

/// Whether the options of a DHCPv4 message (`data` = the UDP payload) are safe to
/// hand to the `dhcproto` codec (vswitchd's server and pipework's client both use it).
/// dhcproto 0.15 `debug_assert!`s the lengths of a few fixed-size options while
/// decoding, so a message with, say, a 2-byte option 94 panics a debug build (found
/// by fuzzing). Walk the options first, summing repeated options as dhcproto merges
/// them, and refuse those lengths.
pub fn dhcp_options_sane(data: &[u8]) -> bool {
    // The lengths dhcproto asserts for these option codes.
    fn ok(code: u8, len: usize) -> bool {
        match code {
            80 => len == 0,
            81 => len >= 3,
            94 => len == 3,
            152..=155 => len == 4,
            _ => true,
        }
    }
    // Fixed header (236 bytes) + magic cookie (4).
    let Some(mut opts) = data.get(240..) else {
        return true; // too short: dhcproto refuses it on its own
    };
    let mut total = [0usize; 256];
    let mut seen = [false; 256];
    while let [code, rest @ ..] = opts {
        match code {
            0 => opts = rest,
            255 => break,
            _ => {
                let [len, body @ ..] = rest else { break };
                let len = usize::from(*len).min(body.len());
                // Each instance (decoded alone) and their sum (when merged) must fit.
                if !ok(*code, len) {
                    return false;
                }
                seen[usize::from(*code)] = true;
                total[usize::from(*code)] += len;
                opts = &body[len..];
            }
        }
    }
    (0..=255u8).all(|c| !seen[usize::from(c)] || ok(c, total[usize::from(c)]))
}

/// Decode one request line as vswitchd does: JSON, then the protocol version, then
/// the command. The error is the reply's one-line message.
pub fn decode_request(line: &str) -> Result<Request, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    match v.get("version").and_then(|x| x.as_u64()) {
        Some(n) if n == u64::from(PROTOCOL_VERSION) => {}
        Some(n) => {
            return Err(format!(
                "unsupported protocol version {n} (this vswitchd speaks {PROTOCOL_VERSION})"
            ))
        }
        None => return Err("malformed request: missing \"version\"".into()),
    }
    serde_json::from_value(v).map_err(|e| format!("malformed request: {e}"))
}

/// Fuzz entry point: any bytes as a request line. Never panics; whatever decodes
/// encodes back to the same request.
pub fn fuzz_decode(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = decode_request(line) {
        let again = serde_json::to_string(&r)
            .ok()
            .and_then(|s| decode_request(&s).ok());
        assert_eq!(again.as_ref(), Some(&r), "request does not round-trip");
    }
}

impl Request {
    pub fn new(command: Command) -> Self {
        Request {
            version: PROTOCOL_VERSION,
            command,
        }
    }
}

/// Every command of the control protocol. The `cmd` tag equals the CLI verb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    /// Liveness and version check; result: [`VersionInfo`].
    Version,
    /// Result: [`BridgeInfo`] of the new bridge.
    AddBr(AddBr),
    /// Result: null. `if_exists`: a missing bridge is not an error.
    DelBr {
        name: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Result: `Vec<BridgeInfo>`.
    ListBr,
    /// Result: [`ShowInfo`].
    Show,
    /// Result: [`PortInfo`] of the new port.
    AddPort(AddPort),
    /// Result: null. vswitchd deletes a netdev it owns (a pipework veth pair) and the
    /// DNS names registered for the port. `if_exists`: a missing port (or bridge) is
    /// not an error; a port of that name on another bridge still is.
    DelPort {
        bridge: String,
        port: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Result: `Vec<PortInfo>`.
    ListPorts { bridge: String },
    /// Result: `Vec<FdbEntry>`.
    FdbShow { bridge: String },
    /// Result: [`FlushResult`].
    FdbFlush { bridge: String },
    /// Result: `Vec<PortStats>` (one entry when `port` is given).
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
    },
    /// Register a DNS name on a bridge. Result: [`HostEntry`].
    AddHost(AddHost),
    /// Result: null.
    DelHost {
        bridge: String,
        name: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Result: `Vec<HostEntry>`.
    ListHosts { bridge: String },
    /// Static route. Result: [`RouteEntry`]. `may_exist`: the same route is not an
    /// error (another next hop for the prefix still is).
    AddRoute {
        cidr: String,
        via: String,
        #[serde(default, skip_serializing_if = "is_false")]
        may_exist: bool,
    },
    /// Result: null.
    DelRoute {
        cidr: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Connected and static routes. Result: `Vec<RouteEntry>`.
    ListRoutes,
    /// Result: `Vec<LeaseEntry>`.
    DhcpLeases { bridge: String },
    /// Reserve a DHCP address for a MAC (optionally with a DNS name). Result: null.
    DhcpReserve {
        bridge: String,
        mac: String,
        ip: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The same reservation is not an error; another address or name for the MAC is.
        #[serde(default, skip_serializing_if = "is_false")]
        may_exist: bool,
    },
    /// Result: null.
    DhcpUnreserve {
        bridge: String,
        mac: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Source NAT of `bridge`'s subnet behind `out`'s gateway address. Result: null.
    Masquerade { bridge: String, out: String },
    /// Remove a masquerade rule (extension). Result: null.
    DelMasquerade {
        bridge: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Source NAT of `bridge`'s IPv6 subnet behind `out`'s IPv6 gateway (opt-in NAT66).
    /// Result: null.
    Masquerade6 { bridge: String, out: String },
    /// Remove a `masquerade6` rule. Result: null.
    DelMasquerade6 {
        bridge: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Destination NAT (like `docker run -p`); an IPv6 `[IP]:PORT` listen and target
    /// publish on IPv6. Result: [`PublishedEntry`].
    Publish(Publish),
    /// Result: null.
    Unpublish {
        proto: String,
        /// `[IP:]PORT[-END]`, as published.
        listen: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// Result: `Vec<PublishedEntry>`.
    ListPublished,
    /// Result: `Vec<CtEntry>`.
    CtShow,
    /// Run a frame through the pipeline without sending it. Result: [`TraceResult`].
    Trace(TraceReq),
    /// Capture frames of a port or bridge. Result: [`CaptureStarted`], after which
    /// the connection carries a pcapng stream ([`pcapng`]) until the capture ends (the
    /// count is reached, or the client sends a line `stop`) and vswitchd closes it.
    Capture(CaptureReq),
    /// Subscribe to events: after the `ok` reply (result null) the connection carries
    /// one [`events::Event`] per line until either side closes it.
    Monitor,
    /// The cluster as the local `vswitch-agent` sees it. Result: [`cluster::ClusterInfo`].
    ClusterShow,
    /// Sent by `vswitch-agent`: after the `ok` reply the connection carries
    /// [`cluster::AgentCall`]s from vswitchd, each answered by one reply line.
    ClusterAgent { node: String },
    /// Sent by `vswitch-agent`: the desired state of one overlay bridge on this host.
    /// Result: [`BridgeInfo`].
    OverlaySet(cluster::OverlaySet),
    /// Sent by `vswitch-agent`: the overlay network is gone. Result: null.
    OverlayRemove { name: String },
    /// Hold an address of a bridge's subnet for `owner` (a static one, or the first
    /// free one), so that DHCP, pipework and the Docker driver never hand it out
    /// twice. Result: [`AllocEntry`].
    AllocAddress(AllocAddress),
    /// Release the addresses `owner` holds on `bridge` (only `ip`, if given).
    /// Result: the number released (0 is not an error).
    ReleaseAddress {
        bridge: String,
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// Result: `Vec<AllocEntry>`.
    ListAllocations { bridge: String },
    /// Impair what leaves a port (delay, jitter, loss, corruption, rate, link down):
    /// the fields given replace the port's settings, the others stay. Result:
    /// [`PortInfo`].
    SetPort {
        port: String,
        #[serde(flatten)]
        set: ImpairSet,
    },
    /// Remove every impairment of a port. Result: [`PortInfo`].
    ClearPort { port: String },
    /// Mirror (SPAN) what a bridge's ports receive and send to an output port.
    /// Result: [`MirrorInfo`].
    AddMirror(AddMirror),
    /// Remove a mirror. Result: null.
    DelMirror {
        bridge: String,
        name: String,
        #[serde(default, skip_serializing_if = "is_false")]
        if_exists: bool,
    },
    /// The kernel fast path's cache (all bridges, or one). Result: [`FastpathInfo`].
    FastpathShow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bridge: Option<String>,
    },
}

impl Command {
    /// The CLI verb / JSON `cmd` of this command.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::AddBr(_) => "add-br",
            Command::DelBr { .. } => "del-br",
            Command::ListBr => "list-br",
            Command::Show => "show",
            Command::AddPort(_) => "add-port",
            Command::DelPort { .. } => "del-port",
            Command::ListPorts { .. } => "list-ports",
            Command::FdbShow { .. } => "fdb-show",
            Command::FdbFlush { .. } => "fdb-flush",
            Command::Stats { .. } => "stats",
            Command::AddHost(_) => "add-host",
            Command::DelHost { .. } => "del-host",
            Command::ListHosts { .. } => "list-hosts",
            Command::AddRoute { .. } => "add-route",
            Command::DelRoute { .. } => "del-route",
            Command::ListRoutes => "list-routes",
            Command::DhcpLeases { .. } => "dhcp-leases",
            Command::DhcpReserve { .. } => "dhcp-reserve",
            Command::DhcpUnreserve { .. } => "dhcp-unreserve",
            Command::Masquerade { .. } => "masquerade",
            Command::DelMasquerade { .. } => "del-masquerade",
            Command::Masquerade6 { .. } => "masquerade6",
            Command::DelMasquerade6 { .. } => "del-masquerade6",
            Command::Publish(_) => "publish",
            Command::Unpublish { .. } => "unpublish",
            Command::ListPublished => "list-published",
            Command::CtShow => "ct-show",
            Command::Trace(_) => "trace",
            Command::Capture(_) => "capture",
            Command::Monitor => "monitor",
            Command::ClusterShow => "cluster-show",
            Command::ClusterAgent { .. } => "cluster-agent",
            Command::OverlaySet(_) => "overlay-set",
            Command::OverlayRemove { .. } => "overlay-remove",
            Command::AllocAddress(_) => "alloc-address",
            Command::ReleaseAddress { .. } => "release-address",
            Command::ListAllocations { .. } => "list-allocations",
            Command::SetPort { .. } => "set-port",
            Command::ClearPort { .. } => "clear-port",
            Command::AddMirror(_) => "add-mirror",
            Command::DelMirror { .. } => "del-mirror",
            Command::FastpathShow { .. } => "fastpath-show",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Arguments of `add-br`. Addresses travel as strings and are validated by the daemon,
/// so every client gets the same error text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AddBr {
    pub name: String,
    /// IPv4 CIDR, e.g. `10.0.0.0/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The router's own address on this bridge; requires `subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6 CIDR beside the IPv4 one (dual stack), e.g. `fd00:10::/64`. An IPv6 CIDR in
    /// `subnet` (with `subnet6` absent) is taken as this too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    /// The router's own IPv6 address on this bridge; requires `subnet6`. An IPv6
    /// address in `gateway` (with `gateway6` absent) is taken as this too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// DHCP service: `None` off, `Some("")` on with the default range,
    /// `Some("FIRST-LAST")` on with that range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<String>,
    /// DHCPv6 service: `Some("FIRST-LAST")` an IPv6 range (an IPv6 range in `dhcp` is
    /// taken as this too), `Some("")` the default range. A bare `dhcp` (`Some("")`)
    /// turns DHCPv6 on as well where the bridge has an IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<String>,
    #[serde(default)]
    pub isolated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Where the bridge's DNS forwards names it does not own: `IP` or `IP:PORT` each.
    /// Empty: the resolvers of vswitchd's own /etc/resolv.conf (unless
    /// `no_dns_upstream`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstream: Vec<String>,
    /// Forward nothing: names the bridge does not own get NXDOMAIN.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_dns_upstream: bool,
    /// An identical existing bridge is not an error (one with other settings is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub may_exist: bool,
    /// Cluster-wide (`--overlay`): declared in etcd through the local vswitch-agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlay: bool,
    /// VXLAN network identifier of an overlay bridge (`--vni`; allocated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Free-form key/value pairs kept with the bridge (like OVS `external_ids`), e.g.
    /// the Docker driver's `docker_network`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
}

/// Arguments of `alloc-address`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocAddress {
    pub bridge: String,
    /// This address; refused when anyone else uses it. `None`: the first free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Pick inside this CIDR (within the bridge's subnet), like Docker's `--ip-range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Who holds the address, e.g. `docker-ep:ID`.
    pub owner: String,
    /// An address held by this owner changes hands to `owner` instead of being refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_over: Option<String>,
}

/// An address held on a bridge (`alloc-address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocEntry {
    pub bridge: String,
    pub ip: String,
    pub owner: String,
}

/// Arguments of `add-port`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AddPort {
    pub bridge: String,
    pub port: String,
    #[serde(default, rename = "type")]
    pub kind: PortKind,
    /// Access port of this VLAN (1..=4094).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    /// Trunk port carrying these VLANs (each 1..=4094). Empty: all VLANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<u16>,
    /// vswitchd deletes the netdev (and its veth peer) when the port is deleted.
    /// pipework sets this for the veth pairs it creates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owned: bool,
    /// Free-form key/value pairs kept with the port (like OVS `external_ids`), e.g.
    /// pipework's `guest`, `ifname`, `ip`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
    /// VXLAN: remote VTEP addresses (`--remote-ip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip: Vec<String>,
    /// VXLAN network identifier (`--vni`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// VXLAN: local address (`--local-ip`; default: the route's source address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    /// VXLAN: UDP port (`--dst-port`, default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// Port security (`--lock-mac`): frames whose source MAC (or ARP sender MAC) is
    /// not this one are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_mac: Option<String>,
    /// Port security (`--lock-ip`, needs `lock_mac`): IPv4 and IPv6 addresses, mixed;
    /// each family passes only from its locked addresses (IPv4 also from 0.0.0.0, for
    /// DHCP; IPv6 also from the MAC's link-local address and `::` for DAD), IPv6 not
    /// at all without an IPv6 address locked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_ip: Vec<String>,
    /// An identical existing port on this bridge is not an error (one with other
    /// settings, or on another bridge, is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub may_exist: bool,
}

/// VXLAN settings of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    pub remote_ip: Vec<String>,
    pub vni: u32,
    pub local_ip: Option<String>,
    pub dst_port: u16,
}

/// Arguments of `add-host`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AddHost {
    pub bridge: String,
    /// A DNS name (case-insensitive; stored lower-case).
    pub name: String,
    pub ip: String,
    /// Who registers it (`user` when absent; pipework sends `pipework`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The port (on this bridge) the name belongs to: it leaves with the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The same name with the same address is not an error (another address is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub may_exist: bool,
}

/// A DNS name registered on a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub ip: String,
    /// Who registered it: `user` (add-host), `pipework`, `dhcp`, `dhcp-reserve`.
    pub source: String,
    /// The port the name leaves with, if it was registered for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// A route of the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination network, e.g. `10.2.0.0/24` or `0.0.0.0/0`.
    pub cidr: String,
    /// Next hop for static routes; `None` for connected subnets.
    pub via: Option<String>,
    /// Bridge the traffic leaves by.
    pub bridge: String,
    /// `connected` or `static`.
    pub kind: String,
}

/// Arguments of `publish`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Publish {
    /// `tcp` or `udp`.
    pub proto: String,
    /// `[IP:]PORT` or `[IP:]PORT-END` on the router's outside address(es).
    pub listen: String,
    /// `IP:PORT` (or `IP:PORT-END`, as long as the listening range) of the container.
    pub target: String,
    /// The same mapping is not an error (another target for the port is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub may_exist: bool,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEntry {
    pub proto: String,
    /// The listening address, `None` for every outside address.
    pub ip: Option<String>,
    pub port: u16,
    pub target_ip: String,
    pub target_port: u16,
    /// Last port of a published range (`port`..=`port_end`), mapped one to one onto
    /// `target_port`..=`target_port_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_end: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port_end: Option<u16>,
}

/// A tracked connection (original direction, as translated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtEntry {
    pub proto: String,
    /// `IP:PORT` (ICMP: `IP:ID`) as the connection's first packet had it.
    pub src: String,
    pub dst: String,
    /// After translation.
    pub nat_src: String,
    pub nat_dst: String,
    /// `new`, `established`, `closing` (TCP), `active` (UDP/ICMP).
    pub state: String,
    /// Seconds left before the entry expires without traffic.
    pub expires_in: u64,
}

/// Arguments of `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TraceReq {
    pub bridge: String,
    /// The port the frame arrives on (a vxlan port: `NAME` or `NAME@REMOTE`).
    pub in_port: String,
    /// OVS flow syntax (`dl_src=…,dl_dst=…,ip,nw_src=…,nw_dst=…,tcp,tp_dst=80`) or
    /// the frame in hex.
    pub flow: String,
}

/// One stage's decision in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStage {
    /// `input`, `parse`, `vlan`, `security`, `learn`, `l2`, `l3`, `nat`, `rewrite`,
    /// `router`, `output`, `tunnel`, `impair`.
    pub stage: String,
    pub text: String,
}

/// A port the traced frame would leave by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOutput {
    pub port: String,
    /// The 802.1Q tag pushed on egress, if any.
    pub vlan: Option<u16>,
}

/// Result of `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceResult {
    pub bridge: String,
    pub in_port: String,
    /// The frame traced, as a flow (with the defaults filled in).
    pub flow: String,
    /// The frame traced, hex.
    pub frame: String,
    pub stages: Vec<TraceStage>,
    /// `output` (to known ports), `flood`, `drop`, or `router` (to the router's slow
    /// path: ARP, ICMP, DHCP, DNS, resolving a next hop, an ICMP error).
    pub verdict: String,
    /// Where it leaves (`output`, `flood`).
    pub outputs: Vec<TraceOutput>,
    /// Why it was dropped (`drop`): a `stats` drop reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// What the slow path does with it (`router`): `local`, `resolve`, `ttl_exceeded`,
    /// `no_route`, `frag_needed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punt: Option<String>,
    /// The frame as it leaves (after NAT and routing rewrites), as a flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_flow: Option<String>,
}

/// Arguments of `capture`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaptureReq {
    /// A port (a vxlan port: all its remotes, or `NAME@REMOTE`) or a bridge (all its
    /// ports).
    pub target: String,
    /// `ingress`, `egress`, `drop`; empty: `ingress` and `egress`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// The filter as typed (tcpdump syntax), for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The filter compiled to classic BPF (`tcpdump -ddd -y EN10MB`): `[code, jt, jf,
    /// k]` per instruction. Empty: every frame.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub program: Vec<[u32; 4]>,
    /// Stop after this many frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Bytes kept of each frame (default 262144: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// A port's link impairment, applied to what leaves it towards its guest (as netem on
/// an interface). Integers, so that configurations compare exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impairment {
    /// Added latency, microseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_us: u64,
    /// The latency varies uniformly by up to this much either way, microseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_us: u64,
    /// Frames lost, parts per million (1 % = 10000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub loss_ppm: u64,
    /// Frames with one bit flipped, parts per million.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub corrupt_ppm: u64,
    /// Rate limit, kbit/s (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_kbit: u64,
    /// Link down: every frame dropped (and the carrier off where the port type
    /// allows).
    #[serde(default, skip_serializing_if = "is_false")]
    pub down: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Impairment {
    /// Whether nothing is impaired.
    pub fn is_none(&self) -> bool {
        *self == Impairment::default()
    }

    /// `delay 50ms±5ms loss 1% corrupt 0.1% rate 100Mbit down`.
    pub fn describe(&self) -> String {
        fn ms(us: u64) -> String {
            if us.is_multiple_of(1000) {
                format!("{}ms", us / 1000)
            } else {
                format!("{}ms", us as f64 / 1000.0)
            }
        }
        fn pct(ppm: u64) -> String {
            format!("{}%", ppm as f64 / 10_000.0)
        }
        let mut v = Vec::new();
        if self.delay_us > 0 || self.jitter_us > 0 {
            let j = if self.jitter_us > 0 {
                format!("±{}", ms(self.jitter_us))
            } else {
                String::new()
            };
            v.push(format!("delay {}{j}", ms(self.delay_us)));
        }
        if self.loss_ppm > 0 {
            v.push(format!("loss {}", pct(self.loss_ppm)));
        }
        if self.corrupt_ppm > 0 {
            v.push(format!("corrupt {}", pct(self.corrupt_ppm)));
        }
        if self.rate_kbit > 0 {
            v.push(if self.rate_kbit.is_multiple_of(1000) {
                format!("rate {}Mbit", self.rate_kbit / 1000)
            } else {
                format!("rate {}kbit", self.rate_kbit)
            });
        }
        if self.down {
            v.push("down".into());
        }
        v.join(" ")
    }
}

/// The settings `set-port` changes (`None`: keep the port's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_ppm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_ppm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
}

impl ImpairSet {
    /// `base` with these changes.
    pub fn apply(&self, base: &Impairment) -> Impairment {
        Impairment {
            delay_us: self.delay_us.unwrap_or(base.delay_us),
            jitter_us: self.jitter_us.unwrap_or(base.jitter_us),
            loss_ppm: self.loss_ppm.unwrap_or(base.loss_ppm),
            corrupt_ppm: self.corrupt_ppm.unwrap_or(base.corrupt_ppm),
            rate_kbit: self.rate_kbit.unwrap_or(base.rate_kbit),
            down: self.down.unwrap_or(base.down),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ImpairSet::default()
    }
}

/// Arguments of `add-mirror`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMirror {
    pub bridge: String,
    /// Default: `span-OUTPUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ports whose received and sent frames are copied.
    pub select: Vec<String>,
    /// The port the copies leave by; it takes no part in normal forwarding.
    pub output: String,
}

/// A mirror (SPAN) of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    pub name: String,
    pub select: Vec<String>,
    pub output: String,
}

/// Result of `capture` (then the pcapng stream follows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    pub target: String,
    /// The ports captured now (a bridge's ports added later are captured too).
    pub ports: Vec<String>,
    pub stages: Vec<String>,
    /// `pcapng`.
    pub format: String,
}

/// A DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    pub mac: String,
    pub ip: String,
    pub hostname: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
    /// Seconds until expiry (0 when expired).
    pub remaining: u64,
    /// The address is reserved for this MAC (`dhcp-reserve`).
    #[serde(default)]
    pub reserved: bool,
    /// DHCPv6 leases: the client's DUID (colon hex) and IAID. `mac` is then the MAC
    /// inside the DUID (DUID-LLT or DUID-LL), else `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iaid: Option<u32>,
}

/// Reply envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(result: serde_json::Value) -> Self {
        Reply {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Reply {
            version: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// Result of `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub protocol: u32,
    pub daemon: String,
    pub pid: u32,
    pub workers: usize,
}

/// A bridge and its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    /// IPv6 subnet and gateway (dual stack); absent when the bridge has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// DHCP range `FIRST-LAST` when DHCP is on.
    pub dhcp: Option<String>,
    /// DHCPv6 range `FIRST-LAST` when DHCPv6 is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<String>,
    pub isolated: bool,
    pub mtu: u32,
    pub ports: Vec<PortInfo>,
    /// Learned MAC addresses now, the table's capacity, and evictions so far.
    #[serde(default)]
    pub fdb_entries: u64,
    #[serde(default)]
    pub fdb_capacity: u64,
    #[serde(default)]
    pub fdb_evictions: u64,
    /// DHCP requests that found the pool exhausted (no offer) since vswitchd started.
    #[serde(default)]
    pub dhcp_exhausted: u64,
    /// DHCP leases now, and the most the bridge holds (pool size, at most 65 536, plus
    /// one per reservation). 0 and 0 without DHCP.
    #[serde(default)]
    pub dhcp_leases: u64,
    #[serde(default)]
    pub dhcp_lease_cap: u64,
    /// Addresses quarantined now (declined by their holder; not handed out for 10 min).
    #[serde(default)]
    pub dhcp_quarantined: u64,
    /// DHCPDECLINEs accepted since vswitchd started (from the lease holder, for its
    /// address).
    #[serde(default)]
    pub dhcp_declined: u64,
    /// DHCPDECLINEs ignored since vswitchd started: not from the lease holder, not its
    /// address, outside the subnet, another server's, or from another MAC than the
    /// client's.
    #[serde(default)]
    pub dhcp_declines_ignored: u64,
    /// DHCP clients refused since vswitchd started because the lease cap was reached.
    #[serde(default)]
    pub dhcp_capped: u64,
    /// DHCPv6, as the `dhcp_*` fields: leases now and at most (the range size, at most
    /// 65 536), Advertises outstanding (at most 256), Solicits/Requests that found no
    /// address, clients refused by the cap, Declines accepted, and Declines/Releases
    /// ignored (not from the holder of the address). 0 without DHCPv6.
    #[serde(default)]
    pub dhcp6_leases: u64,
    #[serde(default)]
    pub dhcp6_lease_cap: u64,
    #[serde(default)]
    pub dhcp6_offers: u64,
    #[serde(default)]
    pub dhcp6_exhausted: u64,
    #[serde(default)]
    pub dhcp6_capped: u64,
    #[serde(default)]
    pub dhcp6_declined: u64,
    #[serde(default)]
    pub dhcp6_ignored: u64,
    /// DNS queries to the bridge's gateway since vswitchd started (UDP and TCP, IPv4
    /// and IPv6), those forwarded upstream, and the answers sent by response code
    /// (local and forwarded alike; `other`: FORMERR, NOTIMP and rarer codes).
    #[serde(default)]
    pub dns_queries: u64,
    #[serde(default)]
    pub dns_forwarded: u64,
    #[serde(default)]
    pub dns_noerror: u64,
    #[serde(default)]
    pub dns_nxdomain: u64,
    #[serde(default)]
    pub dns_servfail: u64,
    #[serde(default)]
    pub dns_refused: u64,
    #[serde(default)]
    pub dns_other: u64,
    /// Where names the bridge does not own are forwarded: `resolv.conf` (vswitchd's
    /// own resolvers), `bridge` (`--dns-upstream`) or `off` (NXDOMAIN).
    #[serde(default)]
    pub dns_forward: String,
    /// The upstream resolvers now in use (`IP:PORT`), empty when off.
    #[serde(default)]
    pub dns_upstream: Vec<String>,
    /// The VNI of an overlay bridge (`add-br --overlay`); absent for local bridges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_vni: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
    /// Mirrors (`add-mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorInfo>,
    /// The outside bridge this one is masqueraded behind (`masquerade --out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<String>,
    /// The outside bridge this one's IPv6 is masqueraded behind (`masquerade6 --out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade6: Option<String>,
}

/// A port as configured, with its live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    pub bridge: String,
    #[serde(rename = "type")]
    pub kind: PortKind,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    /// `up` when attached to the datapath, otherwise the reason it is not
    /// (e.g. `error: no such device`).
    pub state: String,
    /// Kernel ifindex of the netdev in vswitchd's namespace, when attached.
    pub ifindex: Option<u32>,
    /// The worker thread polling this port, when attached.
    pub worker: Option<usize>,
    /// Whether vswitchd deletes the netdev when the port is deleted.
    #[serde(default)]
    pub owned: bool,
    #[serde(default)]
    pub external_ids: BTreeMap<String, String>,
    /// VXLAN settings, for `vxlan` ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanInfo>,
    /// Port security: the only source MAC allowed, if locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_mac: Option<String>,
    /// Port security: the only source addresses allowed, IPv4 and IPv6 (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_ip: Vec<String>,
    /// Link impairment of what leaves the port (`set-port`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<Impairment>,
}

/// Result of `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowInfo {
    pub version: String,
    pub workers: usize,
    pub db: String,
    pub bridges: Vec<BridgeInfo>,
    /// NAT connection tracking: directional entries now, capacity, evictions so far.
    #[serde(default)]
    pub ct_entries: u64,
    #[serde(default)]
    pub ct_capacity: u64,
    #[serde(default)]
    pub ct_evictions: u64,
    /// IPv6 NAT connection tracking (`masquerade6`, IPv6 `publish`), as `ct_*`.
    #[serde(default)]
    pub ct6_entries: u64,
    #[serde(default)]
    pub ct6_capacity: u64,
    #[serde(default)]
    pub ct6_evictions: u64,
    /// The kernel fast path: "on" (programs attached to system ports) or "off".
    #[serde(default)]
    pub fastpath: String,
}

/// One learned MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub port: String,
    /// VLAN id; 0 for untagged traffic.
    pub vlan: u16,
    /// Lower-case colon hex.
    pub mac: String,
    /// Seconds since the address was last seen.
    pub age: u64,
}

/// Result of `fdb-flush`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    pub flushed: u64,
}

/// Counters of one port, summed over workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortStats {
    pub port: String,
    pub bridge: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Dropped frames by reason (stable snake_case names); zero counts are omitted.
    pub drops: BTreeMap<String, u64>,
    /// The part of `rx_packets`/`rx_bytes` and `tx_packets`/`tx_bytes` that the kernel
    /// fast path forwarded without vswitchd seeing it.
    #[serde(default)]
    pub fastpath_rx_packets: u64,
    #[serde(default)]
    pub fastpath_rx_bytes: u64,
    #[serde(default)]
    pub fastpath_tx_packets: u64,
    #[serde(default)]
    pub fastpath_tx_bytes: u64,
}

/// Result of `fastpath-show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FastpathInfo {
    /// "on" or "off" (`vswitchd --fastpath`, and whether the kernel allowed it).
    pub mode: String,
    /// Generation of the cache: entries of older generations miss.
    pub generation: u64,
    /// Entries installed, offers refused on re-validation, offers dropped on a full
    /// queue, invalidations (generation bumps), entries deleted, since start.
    pub installs: u64,
    pub rejected: u64,
    pub queue_full: u64,
    pub invalidations: u64,
    pub removed: u64,
    pub entries: Vec<FastpathEntry>,
}

/// One cached decision: frames from `src` to `dst` arriving on `in_port` (in `vlan`
/// of the bridge) leave on `out_port`, tagged `tag` or untagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastpathEntry {
    pub bridge: String,
    pub in_port: String,
    pub out_port: String,
    pub vlan: u16,
    pub src: String,
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    pub packets: u64,
    pub bytes: u64,
    /// Milliseconds since the last hit; absent if never hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Routed entries (`dst` is the router's MAC): the IPv4 destination they match
    /// and how the frame leaves (absent for L2 entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<FastpathRoute>,
    /// Established NAT flows (routed too): the connection as matched and translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<FastpathNat>,
    /// Delivered straight into the veth peer's ingress (`bpf_redirect_peer`):
    /// the output is a veth whose other end is in another namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer: bool,
}

/// How a NAT fast-path entry translates its frames (endpoints as in `ct-show`:
/// `IP:PORT`, ICMP echo `IP:ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastpathNat {
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub nat_src: String,
    pub nat_dst: String,
    /// Milliseconds until the kernel stops translating unless vswitchd extends it
    /// (0: passed; frames go to vswitchd).
    pub expires_ms: u64,
}

/// How a routed fast-path entry rewrites its frames: sent from the router's MAC on
/// `out_bridge` to `next_hop` (a MAC), TTL decremented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastpathRoute {
    pub ip_dst: String,
    pub out_bridge: String,
    pub next_hop: String,
}

/// Errors of the blocking client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // `reason`, not `source`: the message already says it, and `{:#}` would repeat it.
    #[error(
        "vswitchd is not running (cannot connect to {path}: {reason}); start it with `{}`",
        start_hint(path)
    )]
    NotRunning {
        path: String,
        reason: std::io::Error,
    },
    #[error("permission denied on {path}: the control socket is root-only")]
    PermissionDenied { path: String },
    #[error("control socket {path}: {reason}")]
    Io {
        path: String,
        reason: std::io::Error,
    },
    #[error("vswitchd closed the connection without a reply")]
    Closed,
    #[error("bad reply from vswitchd: {0}")]
    BadReply(String),
    /// The daemon refused the request; the message is its one-line error.
    #[error("{0}")]
    Daemon(String),
}

/// How to start a vswitchd that listens on `path` (the default socket needs no flag).
pub fn start_hint(path: &str) -> String {
    if path == DEFAULT_SOCKET {
        "vswitchd --detach".to_string()
    } else {
        format!("vswitchd --socket {path} --detach")
    }
}

/// A blocking connection to vswitchd.
pub struct Client {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connect to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: shown.clone(),
            },
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning {
                    path: shown.clone(),
                    reason: e,
                }
            }
            _ => ClientError::Io {
                path: shown.clone(),
                reason: e,
            },
        })?;
        // A wedged daemon must not hang scripts forever.
        let timeout = Some(Duration::from_secs(60));
        let io = |e| ClientError::Io {
            path: shown.clone(),
            reason: e,
        };
        stream.set_read_timeout(timeout).map_err(io)?;
        stream.set_write_timeout(timeout).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client {
            path: shown,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Connect to `path`, retrying for up to `wait` while nobody listens there yet (the
    /// daemon is starting: no socket file, or connection refused). Other errors, and
    /// the last "not running" once `wait` has passed, are returned as they are.
    pub fn connect_wait(path: &Path, wait: Duration) -> Result<Client, ClientError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Client::connect(path) {
                Err(ClientError::NotRunning { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Send one command and return the raw `result` value of a successful reply.
    pub fn call_value(&mut self, command: Command) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_string(&Request::new(command))
            .map_err(|e| ClientError::BadReply(e.to_string()))?;
        line.push('\n');
        let io = |e| ClientError::Io {
            path: self.path.clone(),
            reason: e,
        };
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        let mut reply = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut reply)
            .map_err(|e| ClientError::Io {
                path: self.path.clone(),
                reason: e,
            })?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        let reply: Reply =
            serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
        if reply.ok {
            Ok(reply.result.unwrap_or(serde_json::Value::Null))
        } else {
            Err(ClientError::Daemon(
                reply.error.unwrap_or_else(|| "unknown error".to_string()),
            ))
        }
    }

    /// Subscribe to vswitchd's events: the connection becomes a stream of
    /// [`events::Event`]s (read them with [`Client::next_event`]); it blocks until the
    /// next event arrives.
    pub fn monitor(&mut self) -> Result<(), ClientError> {
        self.call_value(Command::Monitor)?;
        let io = |e| ClientError::Io {
            path: self.path.clone(),
            reason: e,
        };
        self.reader.get_ref().set_read_timeout(None).map_err(io)?;
        Ok(())
    }

    /// Start a capture: after the reply the connection carries a pcapng stream (read it
    /// with [`Client::stream`]) until the count is reached or [`Client::stop_capture`]
    /// is answered by vswitchd closing the connection.
    pub fn capture(&mut self, req: CaptureReq) -> Result<CaptureStarted, ClientError> {
        let started = self.call(Command::Capture(req))?;
        self.set_read_timeout(None)?;
        Ok(started)
    }

    /// The raw byte stream of the connection (after `capture`).
    pub fn stream(&mut self) -> &mut BufReader<UnixStream> {
        &mut self.reader
    }

    /// A second handle on the connection's socket (to send `stop` from elsewhere, or
    /// to learn its file descriptor).
    pub fn socket_clone(&self) -> Result<UnixStream, ClientError> {
        self.writer.try_clone().map_err(|e| ClientError::Io {
            path: self.path.clone(),
            reason: e,
        })
    }

    /// The next line of a `monitor` or `cluster-agent` connection, raw (without the
    /// newline); `None` when vswitchd closed it.
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .map_err(|e| ClientError::Io {
                path: self.path.clone(),
                reason: e,
            })?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end().to_string()))
    }

    /// The next event of a `monitor` connection; `None` when vswitchd closed it.
    pub fn next_event(&mut self) -> Result<Option<events::Event>, ClientError> {
        match self.next_line()? {
            None => Ok(None),
            Some(l) => serde_json::from_str(&l)
                .map(Some)
                .map_err(|e| ClientError::BadReply(e.to_string())),
        }
    }

    /// Write one raw line (a reply on a `cluster-agent` connection).
    pub fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        let io = |e| ClientError::Io {
            path: self.path.clone(),
            reason: e,
        };
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        self.writer.write_all(b"\n").map_err(io)
    }

    /// Set the read timeout of this connection (`None`: wait for ever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(t)
            .map_err(|e| ClientError::Io {
                path: self.path.clone(),
                reason: e,
            })
    }

    /// Send one command and decode its result as `T`.
    pub fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        command: Command,
    ) -> Result<T, ClientError> {
        let v = self.call_value(command)?;
        serde_json::from_value(v).map_err(|e| ClientError::BadReply(e.to_string()))
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_uses_cli_verbs() {
        let r = Request::new(Command::AddPort(AddPort {
            bridge: "br1".into(),
            port: "veth1".into(),
            kind: PortKind::Tap,
            tag: Some(10),
            trunks: vec![],
            ..Default::default()
        }));
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"version":1,"cmd":"add-port","bridge":"br1","port":"veth1","type":"tap","tag":10}"#
        );
        let back: Request = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.command.verb(), "add-port");
    }

    #[test]
    fn unit_commands_round_trip() {
        for c in [
            Command::ListBr,
            Command::Show,
            Command::Version,
            Command::Stats { port: None },
        ] {
            let s = serde_json::to_string(&Request::new(c.clone())).unwrap();
            assert!(s.contains(&format!("\"cmd\":\"{}\"", c.verb())), "{s}");
            let back: Request = serde_json::from_str(&s).unwrap();
            assert_eq!(back.command, c);
        }
    }

    #[test]
    fn unknown_command_is_an_error() {
        assert!(serde_json::from_str::<Request>(r#"{"version":1,"cmd":"frobnicate"}"#).is_err());
    }

    #[test]
    fn socket_path_prefers_flag() {
        assert_eq!(
            socket_path(Some(Path::new("/x.sock"))),
            PathBuf::from("/x.sock")
        );
    }
}
