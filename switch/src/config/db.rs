//! The configuration database: one JSON file, written atomically (write a temporary
//! file beside it, fsync, rename, fsync the directory), so a crash at any moment leaves
//! either the old or the new state on disk.

use super::Model;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Format version written by this build. Newer files are refused, never overwritten.
pub const DB_VERSION: u32 = 1;
const DB_FORMAT: &str = "vswitch-db";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read database {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "database {path} is corrupt ({detail}); move it aside to start with an empty configuration"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("database {path} has version {found}, newer than this vswitchd understands ({DB_VERSION}); upgrade vswitchd or move the file aside")]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot write database {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
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
                source: e,
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
        source: e,
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
                dhcp: None,
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
                }],
                hosts: vec![],
                leases: vec![],
                reservations: vec![],
                allocations: vec![],
                external_ids: Default::default(),
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
