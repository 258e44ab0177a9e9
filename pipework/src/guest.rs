//! Finding a guest's network namespace: `pid:N`, a named namespace (`ip netns`,
//! `/run/netns/NAME`), or a Docker container through the Docker Engine API
//! (`GET /containers/NAME/json` over `$DOCKER_HOST` if it is `unix://…`, else
//! `/var/run/docker.sock`; plain HTTP/1.0, so the reply is never chunked).

use crate::netns::NetNs;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
pub use vswitch_hostnet::dns_name;
pub use vswitch_hostnet::engine::docker_socket;
use vswitch_hostnet::engine::{docker_get, error_message};

/// What kind of guest it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Docker { id: String },
    Netns,
    Pid,
}

/// A guest's network namespace and names.
#[derive(Debug)]
pub struct Guest {
    pub ns: NetNs,
    /// How the guest is recorded on its ports (`external_ids.guest`): the container
    /// name, the namespace name, or `pid:N`.
    pub key: String,
    /// The name registered in the bridge's DNS, if any.
    pub dns_name: Option<String>,
    pub kind: Kind,
}

/// Resolve GUEST. `name` overrides the DNS name.
pub fn find(guest: &str, name: Option<&str>) -> Result<Guest> {
    let dns = |own: Option<&str>| name.or(own).and_then(dns_name);
    if let Some(pid) = guest.strip_prefix("pid:") {
        let n: u32 = match pid.parse() {
            Ok(n) if n > 0 => n,
            _ => bail!("bad guest {guest:?}: expected pid:N with a process id"),
        };
        let path = PathBuf::from(format!("/proc/{n}/ns/net"));
        if !Path::new(&format!("/proc/{n}")).exists() {
            bail!("no such process: {n}");
        }
        return Ok(Guest {
            ns: NetNs::open(&path)?,
            key: format!("pid:{n}"),
            dns_name: dns(None),
            kind: Kind::Pid,
        });
    }
    if guest.is_empty() || guest.contains('/') || guest == "." || guest == ".." {
        bail!("no such container or network namespace: {guest:?}");
    }
    let named = PathBuf::from("/run/netns").join(guest);
    if named.exists() {
        return Ok(Guest {
            ns: NetNs::open(&named)?,
            key: guest.to_string(),
            dns_name: dns(Some(guest)),
            kind: Kind::Netns,
        });
    }
    // Docker names and ids: [a-zA-Z0-9][a-zA-Z0-9_.-]*.
    if !guest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bail!("no such container or network namespace: {guest}");
    }
    let sock = docker_socket()?;
    match docker_get(&sock, &format!("/containers/{guest}/json"))? {
        None => bail!(
            "no such container or network namespace: {guest} (no /run/netns/{guest}, and no Docker engine at {})",
            sock.display()
        ),
        Some((404, _)) => bail!("no such container or network namespace: {guest}"),
        Some((200, body)) => {
            let v: serde_json::Value =
                serde_json::from_str(&body).context("read the Docker engine's reply")?;
            let cname = v["Name"]
                .as_str()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| guest.to_string());
            let pid = v["State"]["Pid"].as_u64().unwrap_or(0);
            if v["State"]["Running"] != true || pid == 0 {
                bail!("container {cname} is not running");
            }
            let id = v["Id"].as_str().unwrap_or_default().to_string();
            Ok(Guest {
                ns: NetNs::open(Path::new(&format!("/proc/{pid}/ns/net")))?,
                dns_name: dns(Some(&cname)),
                key: cname,
                kind: Kind::Docker { id },
            })
        }
        Some((code, body)) => {
            bail!(
                "the Docker engine answered {code} for {guest}: {}",
                error_message(&body)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert_eq!(dns_name("Web-1").as_deref(), Some("web-1"));
        assert_eq!(dns_name("my_app.v2").as_deref(), Some("my_app.v2"));
        assert_eq!(dns_name("-x"), None);
        assert_eq!(dns_name("a..b"), None);
        assert_eq!(dns_name("pid:4"), None);
    }

    #[test]
    fn bad_pid_guest() {
        assert!(find("pid:abc", None).is_err());
        assert!(find("pid:0", None).is_err());
        assert!(find("../etc", None).is_err());
    }
}
