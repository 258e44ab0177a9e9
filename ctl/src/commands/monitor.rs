//! `monitor`: follow vswitchd's events as they happen, like `ovsdb-client monitor` or
//! `ip monitor`: one line per event (`--json`: one JSON object per line), flushed as
//! each arrives, until vswitchd stops or the reader goes away.

use super::Ctx;
use crate::error::Error;
use std::io::Write;
use vswitch_proto::Client;

/// Print events as they happen (bridges, ports, MACs, leases, names), one per line
#[derive(clap::Args, Debug)]
pub struct Monitor {}

impl Monitor {
    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        let mut c = Client::connect(ctx.socket())?;
        c.monitor()?;
        let mut out = std::io::stdout().lock();
        loop {
            let Some(line) = c.next_line()? else {
                // vswitchd stopped: the stream is over.
                return Ok(String::new());
            };
            let text = if ctx.json() {
                line
            } else {
                match serde_json::from_str::<vswitch_proto::events::Event>(&line) {
                    Ok(e) => e.human(),
                    Err(_) => line,
                }
            };
            let written = writeln!(out, "{text}").and_then(|()| out.flush());
            if written.is_err() {
                // The reader went away (`| head`): not an error.
                return Ok(String::new());
            }
        }
    }
}
