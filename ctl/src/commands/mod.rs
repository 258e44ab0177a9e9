//! One module per vswitchctl command: its arguments (the `///` comments are the help
//! text), the protocol request it sends, and how its result is shown to a human.
//!
//! Every `run` returns the text to print on stdout; with `--json` that is the raw
//! protocol `result` (pretty-printed), otherwise the human rendering. Commands that
//! change the configuration print nothing in human mode, like `ovs-vsctl`.

pub mod add_br;
pub mod add_host;
pub mod add_port;
pub mod add_route;
pub mod capture;
pub mod cluster_show;
pub mod completions;
pub mod ct_show;
pub mod del_br;
pub mod del_host;
pub mod del_masquerade;
pub mod del_masquerade6;
pub mod del_port;
pub mod del_route;
pub mod dhcp_leases;
pub mod dhcp_reserve;
pub mod dhcp_unreserve;
pub mod fastpath_show;
pub mod fdb_flush;
pub mod fdb_show;
pub mod list_allocations;
pub mod list_br;
pub mod list_hosts;
pub mod list_ports;
pub mod list_published;
pub mod list_routes;
pub mod masquerade;
pub mod masquerade6;
pub mod mirror;
pub mod monitor;
pub mod publish;
pub mod set_port;
pub mod show;
pub mod stats;
pub mod top;
pub mod trace;
pub mod unpublish;
pub mod version;

use crate::error::Error;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use vswitch_proto::{Client, Command};

/// What every command needs: where vswitchd listens, how long to wait for it to
/// start, and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    socket: PathBuf,
    json: bool,
    wait: Duration,
}

impl Ctx {
    pub fn new(socket: PathBuf, json: bool, wait: Duration) -> Ctx {
        Ctx { socket, json, wait }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// How long to retry connecting while vswitchd starts (`--wait`).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Send one request and return the raw `result` of the reply.
    fn call(&self, command: Command) -> Result<Value, Error> {
        let mut client = Client::connect_wait(&self.socket, self.wait)?;
        Ok(client.call_value(command)?)
    }

    /// A command that reads: with `--json` the raw result, otherwise the result decoded
    /// as `T` and rendered by `human`.
    pub fn query<T: DeserializeOwned>(
        &self,
        command: Command,
        human: impl FnOnce(T) -> String,
    ) -> Result<String, Error> {
        let value = self.call(command)?;
        if self.json {
            return json_text(&value);
        }
        let decoded = serde_json::from_value(value)
            .map_err(|e| Error::Failed(format!("bad reply from vswitchd: {e}")))?;
        Ok(human(decoded))
    }

    /// A command that changes the configuration: with `--json` the raw result (the
    /// created object, or `null`), otherwise nothing.
    pub fn mutate(&self, command: Command) -> Result<String, Error> {
        let value = self.call(command)?;
        if self.json {
            json_text(&value)
        } else {
            Ok(String::new())
        }
    }
}

/// The `--json` rendering of a result: pretty-printed, object keys sorted (stable),
/// one trailing newline.
pub fn json_text(value: &Value) -> Result<String, Error> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Failed(format!("cannot print the reply as JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// The `--json` rendering of an error (`{"error":"..."}`, one line).
pub fn json_error(e: &Error) -> String {
    serde_json::json!({ "error": e.message() }).to_string()
}

/// Parse a VLAN id as typed (`--tag`, one item of `--trunks`): 1..=4094, the same
/// range and message as the daemon's own check.
pub fn parse_vid(s: &str) -> Result<u16, Error> {
    let t = s.trim();
    match t.parse::<u16>() {
        Ok(v) if (1..=4094).contains(&v) => Ok(v),
        _ if t.is_empty() => Err(Error::Usage(format!("bad VLAN id {s:?}: must be 1..4094"))),
        _ => Err(Error::Usage(format!("bad VLAN id {t}: must be 1..4094"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_ids() {
        assert_eq!(parse_vid("1"), Ok(1));
        assert_eq!(parse_vid("4094"), Ok(4094));
        for bad in ["0", "4095", "5000", "70000", "-1", "ten"] {
            assert_eq!(
                parse_vid(bad),
                Err(Error::Usage(format!("bad VLAN id {bad}: must be 1..4094")))
            );
        }
        assert_eq!(
            parse_vid(""),
            Err(Error::Usage("bad VLAN id \"\": must be 1..4094".into()))
        );
    }

    #[test]
    fn json_forms() {
        assert_eq!(json_text(&Value::Null).unwrap(), "null\n");
        assert_eq!(
            json_text(&serde_json::json!({"flushed": 3})).unwrap(),
            "{\n  \"flushed\": 3\n}\n"
        );
        assert_eq!(
            json_error(&Error::Failed("no such bridge: br9".into())),
            r#"{"error":"no such bridge: br9"}"#
        );
    }
}
