//! Operator basics: devices that cannot be ports, daemon start-up (--detach, --wait),
//! idempotent commands (--may-exist / --if-exists), names that leave with their port,
//! published port ranges, and the README's tour run as pasted.

use anyhow::{ensure, Result};
use vswitch_integration::Lab;

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[(
        "devices_that_cannot_be_ports_are_refused",
        devices_that_cannot_be_ports_are_refused,
    )])
}

/// `vswitchctl` must fail with exactly one line naming `want`, and change nothing.
fn refused(lab: &Lab, args: &[&str], want: &str) -> Result<()> {
    let before = lab.config_snapshot()?;
    let o = lab.ctl(args)?;
    ensure!(o.code == 1, "{args:?}: exit {} ({})", o.code, o.stderr);
    let line = o.stderr.trim_end();
    ensure!(
        !line.contains('\n') && line.starts_with("error: ") && line.contains(want),
        "{args:?}: want one line with {want:?}, got {:?}",
        o.stderr
    );
    ensure!(
        lab.config_snapshot()? == before,
        "{args:?} changed the configuration"
    );
    Ok(())
}

fn devices_that_cannot_be_ports_are_refused() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&["add-br", "br0"])?;
    lab.ctl_ok(&["add-br", "br1"])?;
    lab.sh(
        "sw",
        "ip link add kbr0 type bridge && ip link add vk0 type veth peer name vk1 \
         && ip link set vk0 master kbr0 && ip tuntap add tun9 mode tun",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "lo"],
        "cannot add lo as a port: it is the loopback device",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "tun9"],
        "cannot add tun9 as a port: not an Ethernet device",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "kbr0"],
        "cannot add kbr0 as a port: it is a kernel bridge",
    )?;
    refused(
        &lab,
        &["add-port", "br0", "vk0"],
        "cannot add vk0 as a port: it is already enslaved to kbr0",
    )?;
    // vswitchd's own internal port cannot join a second bridge.
    lab.ctl_ok(&["add-port", "br0", "int0", "--type", "internal"])?;
    refused(
        &lab,
        &["add-port", "br1", "int0"],
        "port already exists: int0 (on bridge br0)",
    )?;
    // Its free peer is an Ethernet device like any other.
    lab.ctl_ok(&["add-port", "br1", "vk1"])?;
    Ok(())
}
