//! Cluster types: what `vswitch-agent` and vswitchd say to each other, and what
//! `cluster-show` returns.
//!
//! The agent keeps two connections to its vswitchd: a `monitor` stream (events) and a
//! `cluster-agent` connection. After the `ok` reply to `cluster-agent`, that connection
//! runs the other way: vswitchd writes one [`AgentCall`] per line (an `add-br
//! --overlay`, a `del-br` of an overlay bridge, a `cluster-show`, a static address to
//! claim), the agent answers each with one [`crate::Reply`] line. So user commands
//! that need the cluster are typed at vswitchctl as usual and reach etcd through the
//! agent; vswitchd itself never talks to etcd.
//!
//! The agent programs its vswitchd with [`OverlaySet`] (the whole desired state of one
//! overlay bridge: the network, the tunnel's remote VTEPs, the remote endpoints) and
//! `overlay-remove`; both are idempotent.

use serde::{Deserialize, Serialize};

/// A call from vswitchd to its agent (one JSON line on the `cluster-agent` connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCall {
    /// Calls are answered strictly in order, one at a time; the id names a call in logs.
    pub id: u64,
    #[serde(flatten)]
    pub call: AgentCallKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum AgentCallKind {
    /// `add-br --overlay`: declare the network cluster-wide. Result: [`crate::BridgeInfo`]
    /// of the local bridge.
    AddOverlay(crate::AddBr),
    /// `del-br` of an overlay bridge: remove it everywhere. Result: null.
    DelOverlay { name: String },
    /// Result: [`ClusterInfo`].
    Show,
    /// A static address about to be used on an overlay bridge (pipework `IP`, Docker
    /// `--ip`): claim it cluster-wide or refuse. Result: null.
    ClaimIp {
        bridge: String,
        ip: String,
        mac: Option<String>,
        port: String,
    },
}

/// A remote endpoint installed on an overlay bridge: frames to `mac` go through the
/// tunnel to `vtep` (a static FDB entry), ARP for `ip` is answered locally with `mac`,
/// and `name` resolves to `ip` at the local gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its IPv6 address (dual stack): Neighbor Solicitations for it are answered
    /// locally with `mac`, and `name` resolves to it (AAAA) at the local gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub node: String,
    pub vtep: String,
}

/// `overlay-set`: the desired state of one overlay bridge on this host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OverlaySet {
    pub name: String,
    pub vni: u32,
    /// Underlay UDP port of this network's tunnel.
    pub udp_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6 subnet and gateway (dual stack): the same on every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// This host's DHCP range (`FIRST-LAST`, its address blocks), if DHCP is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<String>,
    /// This host's DHCPv6 range (`FIRST-LAST`, its IPv6 address blocks), if DHCPv6 is
    /// on (absent from older agents: no DHCPv6 on the bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<String>,
    #[serde(default)]
    pub isolated: bool,
    pub mtu: u32,
    /// This host's VTEP address.
    pub local_ip: String,
    /// Remote VTEPs (live nodes with ports on this network).
    #[serde(default)]
    pub remotes: Vec<String>,
    #[serde(default)]
    pub endpoints: Vec<RemoteEndpoint>,
}

/// A node as `cluster-show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub vtep: String,
    /// `alive` (registered under a live etcd lease) or `gone` (its lease expired or
    /// was revoked since this agent started).
    pub state: String,
    /// The agent version that registered it.
    #[serde(default)]
    pub agent: String,
    /// Endpoints it publishes, over all networks.
    pub endpoints: u64,
    /// This is the node of the agent that answered.
    #[serde(default)]
    pub local: bool,
}

/// An overlay network as `cluster-show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub vni: u32,
    pub udp_port: u16,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    /// IPv6 subnet and gateway (dual stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    pub dhcp: Option<String>,
    /// The cluster-wide DHCPv6 range, if DHCPv6 is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<String>,
    pub isolated: bool,
    pub mtu: u32,
    /// Endpoints on it, over all nodes.
    pub endpoints: u64,
    /// Endpoints per node (nodes without any are left out).
    pub nodes: std::collections::BTreeMap<String, u64>,
    /// This node's DHCP address blocks on it (IPv4, then IPv6).
    #[serde(default)]
    pub blocks: Vec<String>,
}

/// Result of `cluster-show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The node of the agent that answered.
    pub node: String,
    pub prefix: String,
    /// `connected`, or `unreachable: REASON`.
    pub etcd: String,
    pub nodes: Vec<NodeInfo>,
    pub networks: Vec<NetworkInfo>,
    /// Problems on this host, one line each (e.g. an overlay network that clashes
    /// with a local bridge of the same name).
    #[serde(default)]
    pub conflicts: Vec<String>,
}
