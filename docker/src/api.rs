//! The wire types of Docker's plugin API: libnetwork's remote network driver
//! (`NetworkDriver.*`) and remote IPAM driver (`IpamDriver.*`).
//!
//! Read first: moby/libnetwork `drivers/remote/api/api.go`, `ipams/remote/api/api.go`,
//! `docs/remote.md`, `docs/ipam.md`. Field names are Docker's (PascalCase); every
//! request field has a default, so a field Docker leaves out never fails a request.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `Options` key holding the `-o k=v` options of `docker network create`.
pub const GENERIC: &str = "com.docker.network.generic";
/// `Options` key (true) of `docker network create --internal`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// `Options` key of the `-p` bindings (ProgramExternalConnectivity).
pub const PORTMAP: &str = "com.docker.network.portmap";
/// IPAM `RequestAddress` option naming what the address is for.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// ... and its value for a network's gateway.
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";

/// A field Docker may send as `null` (Go's nil map or slice) reads as its default.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One IPv4 (or IPv6) pool of a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// CIDR, e.g. `10.38.0.0/16`.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// `IP/PREFIX`, e.g. `10.38.0.1/16`.
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
    /// Name → `IP/PREFIX` (`--aux-address`).
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(deserialize_with = "nullable", rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
    #[serde(deserialize_with = "nullable", rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(deserialize_with = "nullable", rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

/// Requests that name a network only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRef {
    #[serde(deserialize_with = "nullable", rename = "NetworkID")]
    pub network_id: String,
}

/// Requests that name an endpoint (DeleteEndpoint, EndpointOperInfo, Leave,
/// RevokeExternalConnectivity), or an endpoint and options (Join,
/// ProgramExternalConnectivity).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    #[serde(deserialize_with = "nullable", rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "nullable", rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(deserialize_with = "nullable")]
    pub sandbox_key: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    #[serde(
        deserialize_with = "nullable",
        rename = "AddressIPv6",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(deserialize_with = "nullable", rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "nullable", rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(deserialize_with = "nullable")]
    pub interface: EndpointInterface,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointReply {
    /// Empty unless the driver fills in what Docker left out (the MAC).
    pub interface: EndpointInterface,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub disable_gateway_service: bool,
}

/// One `-p` binding as Docker sends it (`types.PortBinding`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// IP protocol number: 6 (tcp) or 17 (udp).
    pub proto: u8,
    #[serde(deserialize_with = "nullable", rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(deserialize_with = "nullable", rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

// ---- IPAM

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    #[serde(deserialize_with = "nullable")]
    pub sub_pool: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolReply {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolRef {
    #[serde(deserialize_with = "nullable", rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    #[serde(deserialize_with = "nullable", rename = "PoolID")]
    pub pool_id: String,
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressReply {
    /// `IP/PREFIX`.
    pub address: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddress {
    #[serde(deserialize_with = "nullable", rename = "PoolID")]
    pub pool_id: String,
    #[serde(deserialize_with = "nullable")]
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_requests_decode() {
        // As dockerd 20.10 sends them.
        let c: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"8c2f","Options":{"com.docker.network.enable_ipv6":false,
            "com.docker.network.generic":{"vswitch.bridge":"br7"}},
            "IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"10.38.0.1/16",
            "Pool":"10.38.0.0/16","AuxAddresses":{"db":"10.38.0.9/16"}}],"IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(c.network_id, "8c2f");
        assert_eq!(c.ipv4_data[0].gateway, "10.38.0.1/16");
        assert_eq!(c.ipv4_data[0].aux_addresses["db"], "10.38.0.9/16");
        assert_eq!(c.options[GENERIC]["vswitch.bridge"], "br7");
        let e: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.38.0.11/16",
            "AddressIPv6":"","MacAddress":""},"Options":{}}"#,
        )
        .unwrap();
        assert_eq!(e.interface.address, "10.38.0.11/16");
        let p: Vec<PortBinding> = serde_json::from_str(
            r#"[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]"#,
        )
        .unwrap();
        assert_eq!(p[0].host_port, 8080);
        // Go's nil maps arrive as null.
        let a: RequestAddress = serde_json::from_str(
            r#"{"PoolID":"10.70.0.0/24","Address":"10.70.0.21","Options":null}"#,
        )
        .unwrap();
        assert!(a.options.is_empty());
        // An empty interface in the reply is `{}`.
        let r = CreateEndpointReply {
            interface: EndpointInterface::default(),
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"Interface":{}}"#);
    }
}
