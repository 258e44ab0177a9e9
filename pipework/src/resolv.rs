//! A named network namespace's resolver: `/etc/netns/NAME/resolv.conf`, which
//! `ip netns exec NAME` mounts over /etc/resolv.conf. pipework points it at the
//! bridge's gateway (vswitchd's DNS: the bridge's names, other names forwarded) when it
//! gives the guest a default route, and removes it on `--remove`.
//!
//! A file pipework did not write is kept aside (`resolv.conf.pipework-saved`) and put
//! back on removal. The first interface plumbed with a gateway owns the file; only its
//! removal takes the file away.

use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// First line of a file pipework wrote; names the bridge and interface that own it.
const MARK: &str = "# written by pipework for";

fn dir(root: &Path, ns: &str) -> PathBuf {
    root.join(ns)
}

/// The marker line for `bridge`/`ifname`.
fn mark(bridge: &str, ifname: &str) -> String {
    format!("{MARK} {bridge} {ifname}; removed by pipework --remove")
}

/// Point namespace `ns`'s resolver at `gateway`. The path written, or `None` when
/// another interface of the guest already owns the file.
pub fn write(
    root: &Path,
    ns: &str,
    bridge: &str,
    ifname: &str,
    gateway: Ipv4Addr,
) -> Result<Option<PathBuf>> {
    let d = dir(root, ns);
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    let path = d.join("resolv.conf");
    let saved = d.join("resolv.conf.pipework-saved");
    match std::fs::read_to_string(&path) {
        Ok(old) if old.starts_with(MARK) => return Ok(None),
        Ok(_) if !saved.exists() => {
            std::fs::rename(&path, &saved)
                .with_context(|| format!("keep {} aside", path.display()))?;
        }
        _ => {}
    }
    let text = format!("{}\nnameserver {gateway}\n", mark(bridge, ifname));
    let tmp = d.join(".resolv.conf.pipework");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    Ok(Some(path))
}

/// Undo [`write`] for `bridge`/`ifname`: remove the file (putting back the one it
/// replaced). Whether it was removed (false: not ours, or not there).
pub fn remove(root: &Path, ns: &str, bridge: &str, ifname: &str) -> Result<bool> {
    let d = dir(root, ns);
    let path = d.join("resolv.conf");
    let ours = std::fs::read_to_string(&path)
        .is_ok_and(|t| t.lines().next() == Some(mark(bridge, ifname).as_str()));
    if !ours {
        return Ok(false);
    }
    let saved = d.join("resolv.conf.pipework-saved");
    if saved.exists() {
        std::fs::rename(&saved, &path).with_context(|| format!("put {} back", saved.display()))?;
    } else {
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        // The directory too, if pipework's file was all it held.
        let _ = std::fs::remove_dir(&d);
    }
    Ok(true)
}

/// Where `ip netns` keeps per-namespace files.
pub fn netns_etc() -> PathBuf {
    PathBuf::from("/etc/netns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_kept_and_restored() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        // No file before: written, then removed with its directory.
        let p = write(r, "web", "br0", "eth1", gw).unwrap().unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(t.ends_with("\nnameserver 10.0.0.1\n"), "{t}");
        assert!(
            write(r, "web", "br1", "eth2", gw).unwrap().is_none(),
            "first owns it"
        );
        assert!(!remove(r, "web", "br1", "eth2").unwrap(), "not the owner");
        assert!(remove(r, "web", "br0", "eth1").unwrap());
        assert!(!r.join("web").exists());
        // The user's own file is kept aside and put back.
        std::fs::create_dir_all(r.join("db")).unwrap();
        std::fs::write(r.join("db/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        write(r, "db", "br0", "eth1", gw).unwrap().unwrap();
        assert!(std::fs::read_to_string(r.join("db/resolv.conf"))
            .unwrap()
            .contains("nameserver 10.0.0.1"));
        assert!(remove(r, "db", "br0", "eth1").unwrap());
        assert_eq!(
            std::fs::read_to_string(r.join("db/resolv.conf")).unwrap(),
            "nameserver 127.0.0.1\n"
        );
        assert!(!r.join("db/resolv.conf.pipework-saved").exists());
    }
}
