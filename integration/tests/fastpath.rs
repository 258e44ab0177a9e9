//! The kernel fast path (vswitchd --fastpath): frames of learned unicast flows are
//! forwarded by the tc program, counted once, invalidated on every change, and nothing
//! of it is left in the kernel after vswitchd exits or is killed.

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[(
        "ping_goes_through_the_kernel",
        ping_goes_through_the_kernel,
    )])
}

/// A switch (`--fastpath on` plus `flags`) with bridge br0 and containers c1..cN at
/// 10.0.0.i/24 on ports vI.
fn lab_with(n: usize, flags: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    let mut f = vec!["--fastpath", "on"];
    f.extend_from_slice(flags);
    lab.start_switch_with("sw", &f)?;
    lab.ctl_ok(&["add-br", "br0"])?;
    for i in 1..=n {
        lab.container(
            "sw",
            &format!("c{i}"),
            &format!("v{i}"),
            &format!("10.0.0.{i}/24"),
            None,
        )?;
        lab.ctl_ok(&["add-port", "br0", &format!("v{i}")])?;
    }
    Ok(lab)
}

/// `stats PORT --json` of one port.
fn stats(lab: &Lab, port: &str) -> Result<serde_json::Value> {
    let v = lab.ctl_json(&["stats", port])?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .with_context(|| format!("no stats for {port}"))
}

fn n(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

fn ping_goes_through_the_kernel() -> Result<()> {
    let lab = lab_with(2, &[])?;
    lab.assert_ping("c1", "10.0.0.2")?;
    lab.assert_pings("c1", "10.0.0.2", 20)?;
    let fp = lab.ctl_json(&["fastpath-show", "br0"])?;
    println!("{}", serde_json::to_string_pretty(&fp)?);
    let s1 = stats(&lab, "v1")?;
    let s2 = stats(&lab, "v2")?;
    println!("{s1}\n{s2}");
    ensure!(n(&s1, "fastpath_rx_packets") >= 15, "v1: {s1}");
    Ok(())
}
