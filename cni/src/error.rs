//! The CNI error result: a code, a short message and details, printed as JSON on
//! stdout with a non-zero exit (CNI spec 1.1.0, section 5 "Error").
//!
//! Codes 1-11 and 50/51 are the spec's; 100+ are ours (documented in docs/cni.md).

use serde::Serialize;
use std::fmt;

/// 1: the configuration's `cniVersion` is not one this plugin speaks.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// 2: a configuration field this plugin does not support.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// 3: the container (its network namespace) does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// 4: a missing or invalid `CNI_*` variable.
pub const INVALID_ENV: u32 = 4;
/// 5: reading stdin (or a delegated plugin's output) failed.
pub const IO_FAILURE: u32 = 5;
/// 6: stdin is not the JSON the spec describes.
pub const DECODING_FAILURE: u32 = 6;
/// 7: the configuration decodes but is not valid.
pub const INVALID_CONFIG: u32 = 7;
/// 11: a transient condition (vswitchd not running): try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// 50 (STATUS): cannot serve ADD.
pub const NOT_AVAILABLE: u32 = 50;
/// 51 (STATUS): cannot serve ADD, and existing containers may have limited
/// connectivity.
pub const LIMITED_CONNECTIVITY: u32 = 51;
/// 100 (CHECK): the attachment differs from `prevResult`.
pub const CHECK_FAILED: u32 = 100;
/// 101: something ADD would create exists already (the interface, the address, a
/// published port).
pub const ALREADY_EXISTS: u32 = 101;
/// 999: any other failure (a kernel or vswitchd error), as the reference plugins.
pub const INTERNAL: u32 = 999;

/// A CNI error: what the plugin prints and exits non-zero with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The spec's JSON, for the configuration's version `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (code {})", self.msg, self.details, self.code)
        }
    }
}

impl std::error::Error for CniError {}

/// Turn any error into a CNI error: a `CniError` inside keeps its code, anything else
/// becomes `code` with the whole chain as its message.
pub fn classify(e: anyhow::Error, code: u32) -> CniError {
    if let Some(c) = e.downcast_ref::<CniError>() {
        return c.clone();
    }
    CniError::new(code, format!("{e:#}"))
}

/// `Result` with a CNI error.
pub type CniResult<T> = Result<T, CniError>;

/// Shorthand: `Err(CniError::new(code, msg))`.
pub fn fail<T>(code: u32, msg: impl Into<String>) -> CniResult<T> {
    Err(CniError::new(code, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let e = CniError::new(INVALID_CONFIG, "bad subnet").with_details("10.0.0.0/33");
        assert_eq!(
            e.to_json("1.1.0"),
            serde_json::json!({"cniVersion": "1.1.0", "code": 7, "msg": "bad subnet",
                               "details": "10.0.0.0/33"})
        );
        let e = CniError::new(TRY_AGAIN_LATER, "vswitchd is not running");
        assert!(e.to_json("1.0.0").get("details").is_none());
    }

    #[test]
    fn classify_keeps_codes() {
        let inner = anyhow::Error::new(CniError::new(ALREADY_EXISTS, "x"));
        assert_eq!(classify(inner, INTERNAL).code, ALREADY_EXISTS);
        let other = anyhow::anyhow!("netlink said no").context("add route");
        let c = classify(other, INTERNAL);
        assert_eq!(
            (c.code, c.msg.as_str()),
            (INTERNAL, "add route: netlink said no")
        );
    }
}
