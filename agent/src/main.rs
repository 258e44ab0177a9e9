//! vswitch-agent: thin: parse arguments, set up logging, run the agent on a
//! current-thread tokio runtime.

use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use vswitch_agent::agent::{self, Options, TlsFiles};

/// The vswitch cluster agent: joins this host's vswitchd to the cluster whose shared
/// state is in etcd. Runs in the foreground; exits 0 on SIGTERM (the node leaves the
/// cluster at once).
#[derive(Parser, Debug)]
#[command(name = "vswitch-agent", version)]
struct Args {
    /// etcd endpoints, e.g. http://192.0.2.10:2379,http://192.0.2.11:2379 (https:// with
    /// --cacert/--cert/--key)
    #[arg(
        long,
        value_name = "URL[,URL..]",
        value_delimiter = ',',
        required = true
    )]
    etcd: Vec<String>,
    /// vswitchd's control socket [default: $VSWITCH_SOCK, else /run/vswitch/vswitchd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// This node's name in the cluster [default: the host name]
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// This node's tunnel endpoint address [default: the source address of the route
    /// towards the first etcd endpoint]
    #[arg(long, value_name = "IP")]
    vtep: Option<Ipv4Addr>,
    /// Prefix of every etcd key the cluster uses
    #[arg(long, default_value = "/vswitch", value_name = "PREFIX")]
    prefix: String,
    /// Seconds the node stays in the cluster after its agent stops answering
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    ttl: i64,
    /// CA certificate that signed etcd's server certificate (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    cacert: Option<PathBuf>,
    /// This agent's client certificate (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["cacert", "key"])]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["cacert", "cert"])]
    key: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter)
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// host:port of an etcd URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hp = rest.split('/').next()?;
    Some(if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:2379")
    })
}

/// The source address the kernel would use towards `url` (no packet is sent).
fn route_source(url: &str) -> Result<Ipv4Addr, String> {
    let hp = host_port(url).ok_or_else(|| format!("bad etcd URL {url:?}"))?;
    let addr = hp
        .to_socket_addrs()
        .map_err(|e| format!("etcd endpoint {hp}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("etcd endpoint {hp} has no IPv4 address"))?;
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.connect(addr)
        .map_err(|e| format!("no route towards etcd at {hp}: {e}"))?;
    match s.local_addr().map_err(|e| e.to_string())?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Ok(ip),
        other => Err(format!("no IPv4 source address towards {hp} ({other})")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            eprintln!("error: {}", first.strip_prefix("error: ").unwrap_or(first));
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !(1..=3600).contains(&args.ttl) {
        fail("--ttl must be 1..3600 seconds");
    }
    let etcd: Vec<String> = args
        .etcd
        .iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let Some(first) = etcd.first() else {
        fail("--etcd needs at least one URL");
    };
    let tls = match (args.cacert, args.cert, args.key) {
        (Some(cacert), Some(cert), Some(key)) => Some(TlsFiles { cacert, cert, key }),
        _ => None,
    };
    if tls.is_none() && etcd.iter().any(|u| u.starts_with("https://")) {
        fail("https:// etcd endpoints need --cacert, --cert and --key");
    }
    let vtep = match args.vtep {
        Some(v) => v,
        None => route_source(first)
            .unwrap_or_else(|e| fail(format!("cannot choose a VTEP address ({e}): give --vtep"))),
    };
    let node = args.node.unwrap_or_else(hostname);
    if node.is_empty() || node.contains('/') || node.len() > 64 {
        fail(format!(
            "bad node name {node:?}: 1-64 characters without '/'"
        ));
    }
    let opts = Options {
        etcd,
        socket: vswitch_proto::socket_path(args.socket.as_deref()),
        node,
        vtep,
        prefix: args.prefix,
        ttl: args.ttl,
        tls,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(format!("cannot start the runtime: {e}")),
    };
    if let Err(e) = rt.block_on(agent::run(opts)) {
        fail(format!("{e:#}"));
    }
}
