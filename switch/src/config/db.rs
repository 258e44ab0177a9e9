//! The configuration database: one JSON file, written atomically (write a temporary
//! file beside it, fsync, rename, fsync the directory), so a crash at any moment leaves
//! either the old or the new state on disk.
//!
//! The file holds the model and, inside each bridge, its DHCP leases. At run time the
//! leases live in the [`LeaseStore`] (the service thread changes them without the
//! control mutex); [`Db`] folds them into every write. Two writers share the file: the
//! control thread on each accepted change ([`Db::save`]) and the daemon's ticker, which
//! writes changed leases in batches, at most once a second ([`Db::flush_leases`]). One
//! lock orders them, and each writes the newest model and the newest leases, so neither
//! can undo the other. Lock order: the control mutex, then this write lock, then the
//! lease store's lock (held only to copy the leases); the service thread takes the
//! store's lock alone.
//!
//! Batching means a crash loses at most the last second of lease changes; a client
//! whose lease was lost renews it (its address is still free) or gets a new one.

use super::Model;
use crate::tables::leases::LeaseStore;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Format version written by this build. Newer files are refused, never overwritten.
pub const DB_VERSION: u32 = 1;
const DB_FORMAT: &str = "vswitch-db";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    // `reason`, not `source`: the message already says it, and `{:#}` would repeat it.
    #[error("cannot read database {path}: {reason}")]
    Read { path: PathBuf, reason: io::Error },
    #[error(
        "database {path} is corrupt ({detail}); move it aside to start with an empty configuration"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("database {path} has version {found}, newer than this vswitchd understands ({DB_VERSION}); upgrade vswitchd or move the file aside")]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot write database {path}: {reason}")]
    Write { path: PathBuf, reason: io::Error },
}

#[derive(Serialize, Deserialize)]
struct DbFile {
    format: String,
    version: u32,
    #[serde(flatten)]
    model: Model,
}

#[derive(Deserialize)]
struct DbHeader {
    format: Option<String>,
    version: Option<u32>,
}

/// Load the model from `path`; a missing file is an empty model.
pub fn load(path: &Path) -> Result<Model, DbError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Model::default()),
        Err(e) => {
            return Err(DbError::Read {
                path: path.to_path_buf(),
                reason: e,
            })
        }
    };
    let corrupt = |detail: String| DbError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let header: DbHeader = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if header.format.as_deref() != Some(DB_FORMAT) {
        return Err(corrupt("not a vswitch database".into()));
    }
    match header.version {
        Some(v) if v > DB_VERSION => {
            return Err(DbError::TooNew {
                path: path.to_path_buf(),
                found: v,
            })
        }
        Some(_) => {}
        None => return Err(corrupt("no version".into())),
    }
    let f: DbFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    Ok(f.model)
}

/// Write `model` to `path` atomically.
pub fn save(path: &Path, model: &Model) -> Result<(), DbError> {
    let werr = |e: io::Error| DbError::Write {
        path: path.to_path_buf(),
        reason: e,
    };
    let f = DbFile {
        format: DB_FORMAT.to_string(),
        version: DB_VERSION,
        model: model.clone(),
    };
    let mut text = serde_json::to_vec_pretty(&f)
        .map_err(|e| werr(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    text.push(b'\n');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(werr)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "conf.db".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(werr)
}

/// The db file of a running vswitchd, with the lease store whose leases it holds.
pub struct Db {
    path: PathBuf,
    leases: Arc<LeaseStore>,
    /// The model last written (without leases: they come from the store) and the
    /// lease generation written. Held while writing: one writer at a time.
    written: Mutex<Written>,
}

struct Written {
    model: Model,
    lease_generation: u64,
}

/// Load the db at `path` (a missing file is an empty model): the model, without its
/// leases, and the db, whose lease store holds them (those expired, or no longer
/// fitting their bridge's pool, are dropped).
pub fn open(path: &Path, now: u64) -> Result<(Model, Db), DbError> {
    let mut model = load(path)?;
    let leases = Arc::new(LeaseStore::new());
    let restored = model.take_leases();
    let restored6 = model.take_leases6();
    leases.sync(model.dhcp_pools(), now);
    leases.sync6(model.dhcp6_pools(), now);
    for (bridge, l) in restored6 {
        let n = l.len();
        let kept = leases.restore6(&bridge, l, now);
        if kept < n {
            tracing::info!(bridge = %bridge, kept, dropped = n - kept, "DHCPv6 leases restored; expired or invalid ones dropped");
        }
    }
    for (bridge, l) in restored {
        let n = l.len();
        let kept = leases.restore(&bridge, l, now);
        if kept < n {
            tracing::info!(
                bridge = %bridge,
                kept,
                dropped = n - kept,
                "DHCP leases restored; expired or invalid ones dropped"
            );
        }
    }
    let db = Db {
        path: path.to_path_buf(),
        leases,
        written: Mutex::new(Written {
            model: model.clone(),
            // Rewrite once if anything was restored (drops what was not).
            lease_generation: 0,
        }),
    };
    Ok((model, db))
}

impl Db {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lease store whose leases this db holds.
    pub fn leases(&self) -> &Arc<LeaseStore> {
        &self.leases
    }

    /// Write `next` (the model the control thread is about to commit), with the
    /// current leases.
    pub fn save(&self, next: &Model) -> Result<(), DbError> {
        let mut w = self.written.lock();
        let generation = self.write(next)?;
        w.model = next.clone();
        w.lease_generation = generation;
        Ok(())
    }

    /// Write the leases if they changed since the last write. Whether it wrote.
    pub fn flush_leases(&self) -> Result<bool, DbError> {
        let mut w = self.written.lock();
        if self.leases.generation() == w.lease_generation {
            return Ok(false);
        }
        let generation = self.write(&w.model)?;
        w.lease_generation = generation;
        Ok(true)
    }

    /// `model` with the store's leases; returns the lease generation written.
    fn write(&self, model: &Model) -> Result<u64, DbError> {
        let (generation, mut leases, mut leases6) = self.leases.all_leases_both();
        let mut m = model.clone();
        for b in &mut m.bridges {
            b.leases = leases.remove(&b.name).unwrap_or_default();
            b.leases6 = leases6.remove(&b.name).unwrap_or_default();
        }
        save(&self.path, &m)?;
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BridgeConf, PortConf};

    fn sample() -> Model {
        Model {
            bridges: vec![BridgeConf {
                name: "br1".into(),
                subnet: Some("10.0.0.0/24".parse().unwrap()),
                gateway: Some("10.0.0.1".parse().unwrap()),
                subnet6: None,
                gateway6: None,
                dhcp: None,
                dhcp6: None,
                isolated: false,
                mtu: 1500,
                ports: vec![PortConf {
                    name: "veth1".into(),
                    kind: vswitch_proto::PortKind::System,
                    tag: Some(10),
                    trunks: vec![],
                    owned: false,
                    external_ids: Default::default(),
                    vxlan: None,
                    lock: None,
                    impair: None,
                }],
                hosts: vec![],
                leases: vec![],
                leases6: vec![],
                reservations: vec![],
                reservations6: vec![],
                dns: Default::default(),
                overlay: None,
                allocations: vec![],
                external_ids: Default::default(),
                mirrors: vec![],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/conf.db");
        assert_eq!(load(&p).unwrap(), Model::default());
        save(&p, &sample()).unwrap();
        assert_eq!(load(&p).unwrap(), sample());
        // No temporary files left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn leases_live_in_the_store_and_are_written_with_the_model() {
        use crate::tables::leases::Lease;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("conf.db");
        let now = 1_000_000;
        let mut m = sample();
        m.bridges[0].dhcp = Some(crate::config::DhcpRange {
            first: "10.0.0.100".parse().unwrap(),
            last: "10.0.0.109".parse().unwrap(),
        });
        let lease = |n: u8, ip: &str| Lease {
            mac: crate::wire::MacAddr([2, 0, 0, 0, 0, n]),
            ip: ip.parse().unwrap(),
            hostname: Some(format!("h{n}")),
            expires: now + 100,
        };
        // A file as vswitchd has always written it: the leases inside the bridge,
        // with junk an older vswitchd let in (a zero MAC, an address outside the pool).
        let mut old = m.clone();
        old.bridges[0].leases = vec![
            lease(1, "10.0.0.100"),
            Lease {
                mac: crate::wire::MacAddr::default(),
                ..lease(2, "10.0.0.101")
            },
            lease(3, "192.0.2.1"),
        ];
        save(&p, &old).unwrap();
        let (model, db) = open(&p, now).unwrap();
        assert_eq!(model, m, "the model comes without its leases");
        assert_eq!(
            db.leases().leases("br1", now),
            Some(vec![lease(1, "10.0.0.100")])
        );
        // The first flush rewrites the file without the junk; then nothing to write.
        assert!(db.flush_leases().unwrap());
        assert!(!db.flush_leases().unwrap());
        assert_eq!(
            load(&p).unwrap().bridges[0].leases,
            vec![lease(1, "10.0.0.100")]
        );
        // A lease from the service thread: written by the next flush, and by a
        // configuration change of the control thread (which must not drop it).
        db.leases()
            .with_pool("br1", |pool| {
                pool.request(
                    crate::wire::MacAddr([2, 0, 0, 0, 0, 4]),
                    "10.0.0.104".parse().unwrap(),
                    Some("h4".into()),
                    now - 3500,
                )
            })
            .unwrap()
            .unwrap();
        let mut next = model.clone();
        next.bridges[0].isolated = true;
        db.save(&next).unwrap();
        assert!(!db.flush_leases().unwrap(), "the save wrote the leases");
        let on_disk = load(&p).unwrap();
        assert!(on_disk.bridges[0].isolated);
        assert_eq!(on_disk.bridges[0].leases.len(), 2);
        // A flush after it keeps the saved model.
        db.leases().with_pool("br1", |pool| {
            pool.release(
                crate::wire::MacAddr([2, 0, 0, 0, 0, 1]),
                std::net::Ipv4Addr::UNSPECIFIED,
                now,
            )
        });
        assert!(db.flush_leases().unwrap());
        let on_disk = load(&p).unwrap();
        assert!(
            on_disk.bridges[0].isolated,
            "a lease flush undid a configuration change"
        );
        assert_eq!(on_disk.bridges[0].leases.len(), 1);
        // And a restart finds it.
        let (_, db2) = open(&p, now).unwrap();
        assert_eq!(db2.leases().leases("br1", now).map(|l| l.len()), Some(1));
    }

    #[test]
    fn corrupt_and_future_files_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("conf.db");
        fs::write(&p, "{not json").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("is corrupt") && e.contains("conf.db"), "{e}");
        fs::write(&p, r#"{"format":"vswitch-db","version":99,"bridges":[]}"#).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        fs::write(&p, r#"{"bridges":[]}"#).unwrap();
        assert!(load(&p)
            .unwrap_err()
            .to_string()
            .contains("not a vswitch database"));
    }
}
