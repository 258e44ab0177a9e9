//! `vswitch-docker` with a real private dockerd: the Docker commands of the seed
//! articles, unchanged, with vswitchd as the datapath.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::docker_driver::DriverLab;
use vswitch_integration::wait_until;

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[("networks_addresses_and_names", networks_addresses_and_names)])
}

fn networks_addresses_and_names() -> Result<()> {
    let mut d = DriverLab::start(None, |_| Ok(()))?;
    d.network("mynet", &["--subnet", "10.40.0.0/24", "--gateway", "10.40.0.1"])?;
    let br = d.wait_bridge("mynet")?;
    ensure!(br == "mynet", "bridge {br}");
    d.sleeper("web", &["--network", "mynet", "--ip", "10.40.0.11"])?;
    d.sleeper("db", &["--network", "mynet", "--network-alias", "database"])?;
    let (_, a) = d.docker.exec("web", &["ip", "-4", "addr", "show", "eth0"])?;
    println!("{a}");
    ensure!(a.contains("10.40.0.11/24"), "{a}");
    ensure!(d.ping("web", "10.40.0.1")?, "gateway");
    let ip = d.docker_ok(&["inspect", "-f", "{{.NetworkSettings.Networks.mynet.IPAddress}}", "db"])?;
    ensure!(d.ping("web", ip.trim())?, "db");
    let ok = wait_until(Duration::from_secs(10), || d.lookup("web", "database", "10.40.0.1").ok().flatten().as_deref() == Some(ip.trim()));
    ensure!(ok, "alias: {}", d.driver_log());
    println!("{}", d.lab.ctl_ok(&["show"])?);
    Ok(())
}
