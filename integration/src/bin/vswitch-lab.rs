//! vswitch-lab: build network labs of namespaces around vswitchd.
//!
//! `demo` brings up a built-in lab, proves connectivity with real pings, prints what
//! it built and tears it down. `up`/`down`/`status FILE` manage a lab described in a
//! TOML file (see `vswitch_integration::labfile`); `graph FILE` prints it as DOT.

use anyhow::{bail, Result};
use std::process::{Command, ExitCode};
use vswitch_integration::labfile::LabFile;
use vswitch_integration::{labrun, run_ok, runner::INNER_ENV, Lab};

fn usage() -> &'static str {
    "usage: vswitch-lab demo | up FILE | down FILE | status FILE | graph FILE"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => {}
        Some("-h") | Some("--help") => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some("up" | "down" | "status" | "graph") if args.len() == 2 => {}
        _ => {
            eprintln!("error: {}", usage());
            return ExitCode::from(2);
        }
    }
    // Always inside a private network namespace of our own.
    if std::env::var_os(INNER_ENV).is_none() {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: cannot find own executable: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(exe)
            .args(&args)
            .env(INNER_ENV, "1")
            .status()
        {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: cannot run unshare --net (root needed): {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some(cmd) => file_command(cmd, &args[1]),
        None => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn file_command(cmd: &str, file: &str) -> Result<()> {
    let lab = LabFile::load(std::path::Path::new(file))?;
    match cmd {
        "up" => labrun::up(&lab),
        "down" => labrun::down(&lab),
        "status" => labrun::status(&lab),
        _ => {
            print!("{}", lab.dot());
            Ok(())
        }
    }
}

fn step(title: &str) {
    println!("\n=== {title}");
}

fn show(lab: &Lab, shown: &str, args: &[&str]) -> Result<()> {
    println!("$ vswitchctl {shown}");
    print!("{}", lab.ctl_ok(args)?);
    Ok(())
}

fn ping(lab: &Lab, from: &str, to: &str) -> Result<()> {
    lab.assert_ping(from, to)?;
    println!("[{from}]$ ping -c 3 {to}");
    let out = run_ok(lab.cmd(from, "ping").args(["-c", "3", "-i", "0.2", to]))?;
    for l in out
        .lines()
        .filter(|l| l.contains("bytes from") || l.contains("packet loss") || l.starts_with("rtt"))
    {
        println!("  {l}");
    }
    Ok(())
}

fn demo() -> Result<()> {
    let mut lab = Lab::new()?;
    step("vswitchd in namespace `sw`, two bridges routed by its gateways");
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ])?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
    ])?;
    println!("$ vswitchctl add-br br0 --subnet 10.0.0.0/24 --gateway 10.0.0.1");
    println!("$ vswitchctl add-br br1 --subnet 10.1.0.0/24 --gateway 10.1.0.1");
    for (ctr, port, cidr, gw, br) in [
        ("ctr1", "veth-ctr1", "10.0.0.11/24", "10.0.0.1", "br0"),
        ("ctr2", "veth-ctr2", "10.0.0.12/24", "10.0.0.1", "br0"),
        ("ctr3", "veth-ctr3", "10.1.0.13/24", "10.1.0.1", "br1"),
    ] {
        lab.container("sw", ctr, port, cidr, Some(gw))?;
        lab.ctl_ok(&["add-port", br, port])?;
        println!("$ vswitchctl add-port {br} {port}        # {ctr}: {cidr}, default via {gw}");
    }
    lab.ctl_ok(&["add-port", "br0", "vsint0", "--type", "internal"])?;
    lab.sh("sw", "ip addr add 10.0.0.254/24 dev vsint0")?;
    println!("$ vswitchctl add-port br0 vsint0 --type internal   # the switch host's own leg: 10.0.0.254");
    lab.ctl_ok(&["add-host", "br0", "ctr2", "10.0.0.12"])?;
    println!("$ vswitchctl add-host br0 ctr2 10.0.0.12");

    step("containers talk through vswitchd");
    ping(&lab, "ctr1", "10.0.0.12")?;
    ping(&lab, "sw", "10.0.0.12")?;
    ping(&lab, "ctr1", "10.0.0.1")?;
    ping(&lab, "ctr1", "10.1.0.13")?;
    println!("[ctr1]$ dig +short @10.0.0.1 ctr2");
    let dig = lab.sh_out("ctr1", "dig +short +time=2 @10.0.0.1 ctr2")?;
    if dig.status.success() {
        print!("  {}", String::from_utf8_lossy(&dig.stdout));
    } else {
        println!("  (dig not installed: apt-get install bind9-dnsutils)");
    }

    step("what vswitchd built");
    show(&lab, "show", &["show"])?;
    show(&lab, "fdb-show br0", &["fdb-show", "br0"])?;
    show(&lab, "list-routes", &["list-routes"])?;
    show(&lab, "stats", &["stats"])?;

    step("tear down");
    let code = lab.stop_switch()?;
    if code != 0 {
        bail!("vswitchd exited {code}");
    }
    drop(lab);
    println!("vswitchd stopped (exit 0), namespaces removed.");
    demo_two_hosts()
}

/// Part two of the demo: two hosts, each with its own vswitchd, one network stretched
/// across them by VXLAN and a routed network on each (each host's vswitchd routes for
/// the containers on that host).
const DEMO_LAB: &str = r#"name = "demo"

[[host]]
name = "h1"
underlay = "192.0.2.1/24"

[[host]]
name = "h2"
underlay = "192.0.2.2/24"

[[bridge]]
name = "overlay"
subnet = "10.0.0.0/24"
gateway = "10.0.0.1"
vni = 100

[[bridge]]
name = "local"
subnet = "10.1.0.0/24"
gateway = "10.1.0.1"

[[container]]
name = "web"
host = "h1"
bridge = "overlay"
ip = "10.0.0.11/24"
gateway = "10.0.0.1"

[[container]]
name = "client"
host = "h2"
bridge = "overlay"
ip = "10.0.0.12/24"
gateway = "10.0.0.1"

[[container]]
name = "db"
host = "h2"
bridge = "local"
ip = "10.1.0.21/24"
gateway = "10.1.0.1"
"#;

fn ns_ping(ns: &str, to: &str) -> Result<()> {
    println!("[{}]$ ping -c 3 {to}", ns.trim_start_matches("vl-demo-"));
    let out = run_ok(Command::new("ip").args([
        "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", to,
    ]))?;
    for l in out
        .lines()
        .filter(|l| l.contains("bytes from") || l.contains("packet loss"))
    {
        println!("  {l}");
    }
    Ok(())
}

fn demo_two_hosts() -> Result<()> {
    step("two hosts, a vswitchd on each, joined by VXLAN (a built-in lab file)");
    print!("{DEMO_LAB}");
    let lab = LabFile::parse(DEMO_LAB, "built-in demo lab", None)?;
    println!("$ vswitch-lab up demo.toml");
    let built = labrun::up(&lab);
    let result = built.and_then(|()| {
        step("across the tunnel, across routed subnets, by name");
        ns_ping("vl-demo-client", "10.0.0.11")?;
        ns_ping("vl-demo-client", "10.1.0.21")?;
        println!("[client]$ dig +short @10.0.0.1 web");
        let dig = run_ok(Command::new("ip").args([
            "netns",
            "exec",
            "vl-demo-client",
            "dig",
            "+short",
            "+time=2",
            "@10.0.0.1",
            "web",
        ]))
        .unwrap_or_else(|_| "(dig not installed: apt-get install bind9-dnsutils)\n".into());
        print!("  {dig}");
        step("host h1's switch");
        let sock = "/run/vswitch-lab/demo/h1.sock";
        println!("$ vswitchctl show");
        print!(
            "{}",
            run_ok(
                Command::new(vswitch_integration::bin("vswitchctl")?)
                    .args(["--socket", sock, "show"])
            )?
        );
        println!("$ vswitchctl fdb-show overlay");
        print!(
            "{}",
            run_ok(
                Command::new(vswitch_integration::bin("vswitchctl")?)
                    .args(["--socket", sock, "fdb-show", "overlay"])
            )?
        );
        Ok(())
    });
    step("tear down");
    println!("$ vswitch-lab down demo.toml");
    let down = labrun::down(&lab);
    result?;
    down
}
