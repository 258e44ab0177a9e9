//! The Docker Engine API, for what the plugin calls do not carry: a network's name,
//! options and IPAM configuration, and a container's name and aliases.
//! Engine errors are returned; an unreachable engine says where it was looked for.

use crate::api::nullable;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use vswitch_hostnet::engine::{docker_get, docker_socket, error_message};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    #[serde(deserialize_with = "nullable")]
    pub subnet: String,
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
    #[serde(deserialize_with = "nullable", rename = "IPRange")]
    pub ip_range: String,
    #[serde(deserialize_with = "nullable")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    #[serde(deserialize_with = "nullable")]
    pub driver: String,
    #[serde(deserialize_with = "nullable")]
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Attached {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable", rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `GET /networks/ID`, the parts the driver reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Network {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub driver: String,
    pub internal: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(deserialize_with = "nullable", rename = "IPAM")]
    pub ipam: Ipam,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// Container id (or `ep-ENDPOINT` while it is being attached) → attachment.
    #[serde(deserialize_with = "nullable")]
    pub containers: BTreeMap<String, Attached>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    pub aliases: Option<Vec<String>>,
    #[serde(deserialize_with = "nullable", rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    #[serde(deserialize_with = "nullable")]
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `GET /containers/ID/json`, the parts the driver reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Container {
    /// With Docker's leading `/`.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub network_settings: NetworkSettings,
}

/// GET `path` and decode it; `Ok(None)` on 404.
fn get<T: serde::de::DeserializeOwned>(path: &str) -> Result<Option<T>> {
    let sock = docker_socket()?;
    match docker_get(&sock, path)? {
        None => bail!(
            "cannot reach the Docker engine at {} (set DOCKER_HOST=unix://PATH for vswitch-docker)",
            sock.display()
        ),
        Some((404, _)) => Ok(None),
        Some((200, body)) => Ok(Some(
            serde_json::from_str(&body).with_context(|| format!("decode Docker's {path}"))?,
        )),
        Some((code, body)) => bail!(
            "the Docker engine answered {code} to GET {path}: {}",
            error_message(&body)
        ),
    }
}

pub fn network(id: &str) -> Result<Option<Network>> {
    get(&format!("/networks/{id}"))
}

pub fn container(id: &str) -> Result<Option<Container>> {
    get(&format!("/containers/{id}/json"))
}
