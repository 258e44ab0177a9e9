//! pipework: plumb a container (Docker, a named network namespace, or `pid:N`) into a
//! vswitch bridge, with the grammar of jpetazzo's pipework.
//!
//! ```text
//! pipework [--socket PATH] BRIDGE [-i IFNAME] [-l HOSTIFNAME] [-a 4] GUEST IP/PREFIX[@GATEWAY] [MAC][@VLAN]
//! pipework [--socket PATH] BRIDGE [-i IFNAME] [-l HOSTIFNAME] GUEST dhcp [MAC][@VLAN]
//! pipework [--socket PATH] --remove BRIDGE [-i IFNAME] GUEST
//! pipework --wait [-i IFNAME] [--timeout SECS]
//! pipework route GUEST ROUTE...        pipework rule GUEST RULE...
//! ```
//!
//! The host end of the veth pair is created in vswitchd's own network namespace (found
//! from the daemon's PID), wherever pipework runs. Link and address work is done with
//! the host's iproute2 (`ip`) inside the namespaces (`nsenter`); nothing needs to exist
//! inside the container.

mod args;
mod guest;
mod plumb;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match plumb::run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
