//! vswitch-cni: a CNI plugin (spec 1.1.0; also 1.0.0 and 0.3.0-0.4.0) that attaches
//! containers to vswitchd bridges, for containerd/nerdctl, CRI-O, Kubernetes and
//! Podman 4. Installed as `vswitch` on a runtime's `CNI_PATH` (`"type": "vswitch"`).
//!
//! Layers, top to bottom:
//! - [`run`]: one invocation — the `CNI_*` environment and stdin in, the result or
//!   the spec's error JSON and an exit status out;
//! - [`config`]: the environment and the plugin configuration, checked once, with
//!   the spec's error codes;
//! - [`attach`] (ADD, DEL) and [`inspect`] (CHECK, STATUS, GC): the operations;
//! - [`delegate`]: another IPAM plugin, run as the spec's delegation says;
//! - [`vs`]: vswitchd through `vswitch-proto` only, and the marks CNI leaves on its
//!   ports; host ends of veth pairs are made in vswitchd's namespace through
//!   `vswitch-hostnet`, as pipework and vswitch-docker do;
//! - [`types`], [`error`]: the spec's result and error shapes, by version.
//!
//! Read first: containernetworking/cni `SPEC.md` (1.1.0) and `CONVENTIONS.md`.

pub mod attach;
pub mod config;
pub mod delegate;
pub mod error;
pub mod inspect;
pub mod types;
pub mod vs;

use config::{Cmd, Env, NetConf};
use error::CniError;
use serde_json::json;

/// What one invocation prints on stdout, and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub status: i32,
}

/// Run one invocation: `command` is `CNI_COMMAND`, `get` reads the environment,
/// `stdin` is the configuration.
pub fn run(command: &str, get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = config::version_of(stdin);
    match dispatch(command, get, stdin) {
        Ok(Some(v)) => Outcome {
            stdout: format!("{v:#}\n"),
            status: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            status: 0,
        },
        Err(e) => Outcome {
            stdout: format!("{:#}\n", e.to_json(&version)),
            status: 1,
        },
    }
}

fn dispatch(
    command: &str,
    get: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<serde_json::Value>, CniError> {
    let cmd = Cmd::parse(command)?;
    if cmd == Cmd::Version {
        // The version asked about, if stdin names one (libcni sends it).
        let asked = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| types::CURRENT.to_string());
        return Ok(Some(json!({
            "cniVersion": asked,
            "supportedVersions": types::SUPPORTED,
        })));
    }
    let env = Env::read(cmd, get)?;
    let conf = NetConf::parse(stdin, &env)?;
    match cmd {
        Cmd::Add => attach::add(&env, &conf).map(Some),
        Cmd::Del => attach::del(&env, &conf).map(|()| None),
        Cmd::Check => {
            types::check_allows(&conf.cni_version, "CHECK", "0.4.0")?;
            inspect::check(&env, &conf).map(|()| None)
        }
        Cmd::Status => {
            types::check_allows(&conf.cni_version, "STATUS", "1.1.0")?;
            inspect::status(&env, &conf).map(|()| None)
        }
        Cmd::Gc => {
            types::check_allows(&conf.cni_version, "GC", "1.1.0")?;
            inspect::gc(&env, &conf).map(|()| None)
        }
        Cmd::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn version_echoes_the_asked_version() {
        let o = run("VERSION", no_env, br#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(o.status, 0);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let o = run("VERSION", no_env, b"");
        assert!(
            o.stdout.contains("\"cniVersion\": \"1.1.0\""),
            "{}",
            o.stdout
        );
    }

    #[test]
    fn errors_are_json_on_stdout() {
        let o = run("FROB", no_env, b"{}");
        assert_eq!(o.status, 1);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "1.1.0");
        // The error speaks the configuration's version.
        let o = run(
            "CHECK",
            no_env,
            br#"{"cniVersion":"0.3.1","name":"n","bridge":"b"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["code"], 4, "{v}"); // CNI_CONTAINERID etc. are checked first
        assert_eq!(v["cniVersion"], "0.3.1");
        let env = |k: &str| match k {
            "CNI_CONTAINERID" => Some("c".to_string()),
            "CNI_NETNS" => Some("/nonexistent".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            _ => None,
        };
        let o = run(
            "CHECK",
            env,
            br#"{"cniVersion":"0.3.1","name":"n","bridge":"b"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["code"], 1, "{v}");
        let o = run(
            "GC",
            no_env,
            br#"{"cniVersion":"1.0.0","name":"n","bridge":"b"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["code"], 1, "{v}");
    }
}
