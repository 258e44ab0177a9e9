//! vswitch-lab: build network labs of namespaces around vswitchd.
//!
//! `demo` brings up a built-in lab, proves connectivity with real pings, prints what
//! it built and tears it down. `up`/`down`/`status FILE` manage a lab described in a
//! TOML file (see `vswitch_integration::labfile`); `graph FILE` draws it (DOT, or SVG
//! and PNG through Graphviz's `dot`), with live rates on the links when the lab is up.

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use vswitch_integration::labfile::LabFile;
use vswitch_integration::{labrun, run_ok, runner::INNER_ENV, Lab};

/// Build network labs of namespaces around vswitchd (each command runs in a private
/// network namespace of its own, as root).
#[derive(Parser, Debug)]
#[command(name = "vswitch-lab", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bring up a built-in two-host lab, prove it with pings, print it, tear it down
    Demo,
    /// Bring up the lab described in FILE (TOML)
    Up {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Tear down the lab described in FILE
    Down {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Say whether the lab is up: each process it started (what it is, running or
    /// gone) and each container's address
    Status {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Draw the lab: Graphviz DOT, or SVG/PNG rendered by Graphviz's `dot`; when the
    /// lab is up, each link and tunnel carries its live rates
    Graph {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// dot, svg or png [default: from -o's extension, else dot]
        #[arg(long, value_name = "FORMAT")]
        format: Option<GraphFormat>,
        /// Write to OUT instead of standard output
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
        /// Seconds over which the live rates are measured (0.1..60)
        #[arg(short = 'i', long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
        /// The topology only: do not ask the lab's switches for rates
        #[arg(long)]
        no_rates: bool,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write manual pages (vswitch-lab.1 and one per command) into DIR
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Output formats of `graph`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum GraphFormat {
    Dot,
    Svg,
    Png,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            eprintln!("error: {}", first.strip_prefix("error: ").unwrap_or(first));
            return ExitCode::from(2);
        }
    };
    match &args.cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "vswitch-lab",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Cmd::Man { dir } => {
            let r = std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(Args::command(), dir));
            return match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write manual pages to {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Graph {
            file,
            format,
            output,
            interval,
            no_rates,
        } => {
            // Builds nothing: no namespace of its own needed.
            return match graph(file, *format, output.as_deref(), *interval, *no_rates) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", one_line(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
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
            .args(std::env::args_os().skip(1))
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
    let result = match &args.cmd {
        Cmd::Demo => demo(),
        Cmd::Up { file } => file_command("up", file),
        Cmd::Down { file } => file_command("down", file),
        Cmd::Status { file } => file_command("status", file),
        Cmd::Completions { .. } | Cmd::Man { .. } | Cmd::Graph { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn file_command(cmd: &str, file: &Path) -> Result<()> {
    let lab = LabFile::load(file)?;
    match cmd {
        "up" => labrun::up(&lab),
        "down" => labrun::down(&lab),
        _ => labrun::status(&lab),
    }
}

/// `text` on one line (a TOML error spans several).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `vswitch-lab graph`: the lab as DOT, SVG or PNG, with live rates when it is up.
fn graph(
    file: &Path,
    format: Option<GraphFormat>,
    output: Option<&Path>,
    interval: f64,
    no_rates: bool,
) -> Result<()> {
    if !(0.1..=60.0).contains(&interval) {
        bail!("bad interval {interval}: must be 0.1..60 seconds");
    }
    let format = format.unwrap_or_else(|| {
        match output
            .and_then(Path::extension)
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => GraphFormat::Svg,
            Some("png") => GraphFormat::Png,
            _ => GraphFormat::Dot,
        }
    });
    let lab = LabFile::load(file)?;
    // Graphviz first: a missing `dot` fails before a second is spent on rates.
    if format != GraphFormat::Dot {
        match Command::new("dot").arg("-V").output() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "Graphviz's dot is not installed (Debian: apt-get install graphviz); --format dot needs no Graphviz"
            ),
            Err(e) => bail!("cannot run Graphviz's dot: {e}"),
        }
    }
    // The output file before the rates: an unwritable one fails at once.
    let mut out: Box<dyn std::io::Write> = match output {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let result = (|| -> Result<()> {
        let live = if no_rates {
            None
        } else {
            labrun::live_rates(&lab, interval)?
        };
        let dot = lab.dot_with(live.as_ref());
        let bytes = match format {
            GraphFormat::Dot => dot.into_bytes(),
            GraphFormat::Svg => render(&dot, "svg")?,
            GraphFormat::Png => render(&dot, "png")?,
        };
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .with_context(|| match output {
                Some(p) => format!("cannot write {}", p.display()),
                None => "cannot write to standard output".to_string(),
            })
    })();
    if result.is_err() {
        if let Some(p) = output {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

/// `dot` rendered by Graphviz as `-T FORMAT`.
fn render(dot: &str, format: &str) -> Result<Vec<u8>> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("dot")
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run Graphviz's dot")?;
    // Written from a thread: dot may fill its stdout pipe before it has read all input.
    let mut stdin = child.stdin.take().context("dot's standard input")?;
    let text = dot.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .context("wait for Graphviz's dot")?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "Graphviz's dot failed: {}",
            one_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(out.stdout)
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
