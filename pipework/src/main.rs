//! pipework: plumb a container (Docker, a named network namespace, or `pid:N`) into a
//! vswitch bridge, with the grammar of jpetazzo's pipework (docs/pipework.md).
//!
//! ```text
//! pipework [--socket PATH] [--json] BRIDGE [-i IFNAME] [-l HOSTIFNAME] [-a 4] GUEST IP/PREFIX[@GATEWAY] [MAC][@VLAN]
//! pipework [--socket PATH] [--json] BRIDGE [-i IFNAME] [-l HOSTIFNAME] GUEST dhcp [MAC][@VLAN]
//! pipework [--socket PATH] [--json] --remove BRIDGE [-i IFNAME] GUEST
//! pipework --wait [-i IFNAME] [--timeout SECS]
//! pipework [--socket PATH] --watch
//! pipework route GUEST ROUTE...        pipework rule GUEST RULE...
//! ```
//!
//! Layers, top to bottom: `args` (command line) → `plumb` (the commands, validation,
//! rollback) → `guest` (Docker engine / netns / pid lookup), `dhcp`/`dhcp6` (one-shot DHCP
//! and DHCPv6 clients), `arp` (gratuitous ARP) → `netlink` (link, address, route requests) →
//! `netns` (acting inside another network namespace from a thread of its own).
//! The host end of the veth pair is made in vswitchd's own network namespace, found
//! from the daemon's PID, wherever pipework runs; nothing is needed in the guest.

mod args;
mod arp;
mod dhcp;
mod dhcp6;
mod guest;
mod plumb;
mod resolv;
mod watch;

use vswitch_hostnet::{netlink, netns};

use std::process::ExitCode;

/// One line on stderr; with `--json` also `{"error": ...}` on stdout.
fn print_error(msg: &str, json: bool) {
    let one_line = msg.replace('\n', " ");
    if json {
        println!("{}", serde_json::json!({ "error": one_line }));
    }
    eprintln!("error: {one_line}");
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let json_anywhere = argv.iter().any(|a| a == "--json");
    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            print_error(&format!("{e:#}"), json_anywhere);
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    match plumb::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&format!("{e:#}"), json);
            ExitCode::FAILURE
        }
    }
}
