//! Delegation to another IPAM plugin (CNI spec 1.1.0 section 4): found on
//! `CNI_PATH`, run with the same environment and the whole configuration on stdin,
//! its stderr passed through, its result read from stdout.
//!
//! One liberty, for plugins older than the configuration: a plugin that does not
//! speak the configuration's 1.x version but speaks 1.0.0 is asked in 1.0.0 (the
//! result of ADD is the same shape in 1.0.0 and 1.1.0; what 1.1.0 added, STATUS and
//! GC, is only forwarded to plugins that have it). Debian 12's `host-local` speaks up
//! to 1.0.0.

use crate::config::{Env, NetConf};
use crate::error::{
    CniError, CniResult, DECODING_FAILURE, INTERNAL, INVALID_CONFIG, INVALID_ENV, IO_FAILURE,
};
use crate::types::{at_least, AddResult};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A delegated IPAM plugin.
pub struct Delegate<'a> {
    pub plugin: &'a str,
    env: &'a Env,
    conf: &'a NetConf,
}

impl<'a> Delegate<'a> {
    pub fn new(plugin: &'a str, env: &'a Env, conf: &'a NetConf) -> Delegate<'a> {
        Delegate { plugin, env, conf }
    }

    fn find(&self) -> CniResult<PathBuf> {
        if self.env.path.is_empty() {
            return Err(CniError::new(
                INVALID_ENV,
                format!(
                    "required env variables [CNI_PATH] missing (needed to find IPAM plugin {})",
                    self.plugin
                ),
            ));
        }
        self.env
            .path
            .iter()
            .map(|d| d.join(self.plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                CniError::new(
                    INVALID_CONFIG,
                    format!(
                        "failed to find IPAM plugin {:?} in path {:?}",
                        self.plugin, self.env.path
                    ),
                )
            })
    }

    /// Run the plugin with `CNI_COMMAND=command` and `stdin`: its stdout (empty for
    /// commands without output), or its error.
    fn exec(&self, command: &str, stdin: &[u8]) -> CniResult<Vec<u8>> {
        let exe = self.find()?;
        let mut child = Command::new(&exe)
            .env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| CniError::new(IO_FAILURE, format!("run {}: {e}", exe.display())))?;
        if let Some(mut i) = child.stdin.take() {
            // A plugin that exits without reading its stdin is not an error here.
            let _ = i.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::new(IO_FAILURE, format!("run {}: {e}", exe.display())))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let v: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let code = v
            .as_ref()
            .and_then(|v| v.get("code")?.as_u64())
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(INTERNAL);
        let msg = v
            .as_ref()
            .and_then(|v| v.get("msg")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stdout).trim().to_string());
        let details = v
            .as_ref()
            .and_then(|v| v.get("details")?.as_str().map(str::to_string))
            .unwrap_or_default();
        Err(CniError::new(
            code,
            format!("IPAM plugin {} {command}: {msg}", self.plugin),
        )
        .with_details(details))
    }

    /// The versions the plugin says it speaks.
    fn versions(&self) -> CniResult<Vec<String>> {
        let q = json!({ "cniVersion": self.conf.cni_version }).to_string();
        let out = self.exec("VERSION", q.as_bytes())?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("IPAM plugin {} VERSION: {e}", self.plugin),
            )
        })?;
        Ok(v["supportedVersions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The configuration to hand over: as received, or in 1.0.0 for a plugin that
    /// does not speak the configuration's newer 1.x.
    fn stdin(&self) -> CniResult<Vec<u8>> {
        let v = &self.conf.cni_version;
        let raw = serde_json::to_vec(&self.conf.raw)
            .map_err(|e| CniError::new(INTERNAL, e.to_string()))?;
        if !at_least(v, "1.1.0") {
            return Ok(raw);
        }
        let supported = self.versions()?;
        if supported.iter().any(|s| s == v) || !supported.iter().any(|s| s == "1.0.0") {
            return Ok(raw);
        }
        let mut c = self.conf.raw.clone();
        c["cniVersion"] = json!("1.0.0");
        serde_json::to_vec(&c).map_err(|e| CniError::new(INTERNAL, e.to_string()))
    }

    /// ADD: the addresses, routes and DNS the plugin hands out.
    pub fn add(&self) -> CniResult<AddResult> {
        let out = self.exec("ADD", &self.stdin()?)?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("IPAM plugin {} ADD result: {e}", self.plugin),
            )
        })?;
        AddResult::from_value(&v).map_err(|e| {
            CniError::new(
                DECODING_FAILURE,
                format!("IPAM plugin {} ADD result: {e}", self.plugin),
            )
        })
    }

    pub fn del(&self) -> CniResult<()> {
        self.exec("DEL", &self.stdin()?).map(|_| ())
    }

    pub fn check(&self) -> CniResult<()> {
        self.exec("CHECK", &self.stdin()?).map(|_| ())
    }

    /// STATUS or GC (1.1.0 commands), forwarded only to a plugin that has them:
    /// whether it was forwarded.
    pub fn forward_new(&self, command: &str) -> CniResult<bool> {
        if !self.versions()?.iter().any(|s| at_least(s, "1.1.0")) {
            return Ok(false);
        }
        let raw = serde_json::to_vec(&self.conf.raw)
            .map_err(|e| CniError::new(INTERNAL, e.to_string()))?;
        self.exec(command, &raw).map(|_| true)
    }
}
