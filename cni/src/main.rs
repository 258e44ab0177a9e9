//! `vswitch-cni`: the CNI plugin executable (install it as `vswitch` on `CNI_PATH`).
//! A runtime sets `CNI_COMMAND` and friends and writes the configuration to stdin;
//! the result or the spec's error JSON goes to stdout, logs to stderr.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

const ABOUT: &str = "vswitch-cni: CNI plugin attaching containers to vswitchd bridges (\"type\": \"vswitch\"); run by a container runtime with CNI_COMMAND set";

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    if command.is_empty() {
        eprintln!("{ABOUT}");
        eprintln!(
            "CNI protocol versions supported: {}",
            vswitch_cni::types::SUPPORTED.join(", ")
        );
    }
    let mut stdin = Vec::new();
    // VERSION may come without a configuration; never wait on a terminal for one.
    let no_input = command.is_empty() || (command == "VERSION" && std::io::stdin().is_terminal());
    let read = if no_input {
        Ok(0)
    } else {
        std::io::stdin().take(1 << 20).read_to_end(&mut stdin)
    };
    let out = match read {
        Ok(_) => vswitch_cni::run(&command, |k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            let err = vswitch_cni::error::CniError::new(
                vswitch_cni::error::IO_FAILURE,
                format!("error reading from stdin: {e}"),
            );
            vswitch_cni::Outcome {
                stdout: format!("{:#}\n", err.to_json(vswitch_cni::types::CURRENT)),
                status: 1,
            }
        }
    };
    print!("{}", out.stdout);
    if out.status == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
