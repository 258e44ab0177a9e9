//! vswitchctl: the control CLI of vswitch (the ovs-vsctl of this project).
//!
//! Thin: parse arguments, send one request over the control socket, print the result
//! as a human table or, with `--json`, as the protocol's JSON.

mod cli;
mod output;

use clap::Parser;
use std::process::ExitCode;
use vswitch_proto::{socket_path, Client};

fn main() -> ExitCode {
    let json_anywhere = std::env::args().any(|a| a == "--json");
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            print_error(first, json_anywhere);
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let command = match args.command.to_request() {
        Ok(c) => c,
        Err(e) => {
            print_error(&e, json);
            return ExitCode::from(2);
        }
    };
    let path = socket_path(args.socket.as_deref());
    let result = Client::connect(&path).and_then(|mut c| c.call_value(command.clone()));
    match result {
        Ok(v) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_else(|_| "null".into())
                );
            } else {
                match output::human(&command, &v) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        print_error(&format!("cannot read vswitchd's reply: {e}"), json);
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(&e.to_string(), json);
            ExitCode::FAILURE
        }
    }
}

/// One line on stderr; with `--json` also `{"error": ...}` on stdout.
fn print_error(msg: &str, json: bool) {
    let one_line = msg.replace('\n', " ");
    if json {
        println!("{}", serde_json::json!({ "error": one_line }));
    }
    eprintln!("error: {one_line}");
}
