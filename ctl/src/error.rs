//! The one error type of vswitchctl and the exit status each kind maps to.
//!
//! Every error prints as exactly one line (`error: …`), so a message that somehow holds
//! a newline is flattened before it is shown.

use std::fmt;
use vswitch_proto::ClientError;

/// Exit status when vswitchd refused the request, cannot be reached, or replied nonsense.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of bad arguments (clap's own errors and the checks made before sending).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad arguments, caught before anything was sent.
    Usage(String),
    /// The daemon refused the request, is not running, or its reply made no sense.
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Failed(_) => EXIT_FAILED,
        }
    }

    /// The message on one line, without the `error: ` prefix.
    pub fn message(&self) -> String {
        let (Error::Usage(m) | Error::Failed(m)) = self;
        if !m.contains(['\n', '\r']) {
            return m.clone();
        }
        let lines: Vec<&str> = m.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        lines.join(" ")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = Error::Failed("no such bridge:\n  br9".into());
        assert_eq!(e.to_string(), "no such bridge: br9");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn daemon_errors_pass_through_verbatim() {
        let e: Error = ClientError::Daemon("bridge already exists: br1".into()).into();
        assert_eq!(e, Error::Failed("bridge already exists: br1".into()));
    }
}
