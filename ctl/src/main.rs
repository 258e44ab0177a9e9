//! vswitchctl: the control CLI of vswitch (the ovs-vsctl of this project).
//!
//! Thin: parse the arguments, run one command (one request over vswitchd's control
//! socket, see `commands/`), print its output. Every failure is one line on stderr,
//! `error: …` (with `--json` also `{"error":"…"}` on stdout); exit status 1 when the
//! daemon refused or cannot be reached, 2 for bad arguments.

mod cli;
mod commands;
mod error;
mod output;

use clap::error::ErrorKind;
use clap::Parser;
use commands::{json_error, Ctx};
use error::Error;
use std::io::{self, Write};
use std::process::ExitCode;
use vswitch_proto::socket_path;

fn main() -> ExitCode {
    let json_typed = cli::wants_json(std::env::args_os());
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&cli::usage_error(&e), json_typed),
    };
    let ctx = Ctx::new(
        socket_path(args.socket.as_deref()),
        args.json,
        std::time::Duration::from_secs(args.wait),
    );
    match args.command.run(&ctx) {
        Ok(text) => match write_stdout(&text) {
            Ok(()) => ExitCode::SUCCESS,
            // A reader that went away (`| head`) is not our failure.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => fail(&Error::Failed(format!("cannot write output: {e}")), false),
        },
        Err(e) => fail(&e, args.json),
    }
}

fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Report `e` as one line on stderr (and as JSON on stdout with `--json`).
fn fail(e: &Error, json: bool) -> ExitCode {
    if json {
        let _ = write_stdout(&format!("{}\n", json_error(e)));
    }
    let _ = writeln!(io::stderr(), "error: {e}");
    ExitCode::from(e.exit_code())
}
