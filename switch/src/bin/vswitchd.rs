//! vswitchd: the vswitch daemon. Thin: parse arguments, set up logging, call the library.

use clap::Parser;
use std::path::PathBuf;
use vswitch::control::handlers::Limits;

/// Userspace virtual switch daemon. Runs in the foreground; stop it with SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Control socket [env VSWITCH_SOCK; default /run/vswitch/vswitchd.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Configuration database [env VSWITCH_DB; default /var/lib/vswitch/conf.db]
    #[arg(long)]
    db: Option<PathBuf>,
    /// Worker threads (0: one per core)
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Keep every port on the worker it was first given to (no auto-balance)
    #[arg(long)]
    no_balance: bool,
    /// Microseconds a worker keeps polling after its last frame before it sleeps
    /// (0: sleep at once; at most 10000)
    #[arg(long, default_value_t = 50)]
    busy_poll_us: u64,
    /// Log level: error, warn, info, debug, trace (or a tracing filter)
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Maximum learned MAC addresses per bridge
    #[arg(long, default_value_t = 8192)]
    fdb_max: usize,
    /// Seconds a learned MAC address lives without traffic
    #[arg(long, default_value_t = 300)]
    fdb_aging: u32,
    /// Maximum tracked NAT connections
    #[arg(long, default_value_t = 32768)]
    ct_max: usize,
    /// NAT connection timeouts in seconds, e.g. `udp=30,tcp_established=3600`
    /// (tcp_new, tcp_established, tcp_closing, udp, udp_stream, icmp)
    #[arg(long)]
    ct_timeouts: Option<String>,
    /// Kernel fast path: auto (use it where the kernel and permissions allow), on
    /// (refuse to start without it), off (userspace datapath only)
    /// [env VSWITCH_FASTPATH; default auto]
    #[arg(long, value_name = "auto|on|off")]
    fastpath: Option<vswitch::fastpath::Mode>,
}

/// Longest busy poll: beyond this a worker would rather sleep (10 ms).
const MAX_BUSY_POLL_US: u64 = 10_000;

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
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first}");
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
    if !(1..=1 << 20).contains(&args.fdb_max) || args.fdb_aging == 0 {
        eprintln!("error: --fdb-max must be 1..1048576 and --fdb-aging at least 1");
        std::process::exit(2);
    }
    if let Some(t) = &args.ct_timeouts {
        if let Err(e) = vswitch::tables::conntrack::set_timeouts(t) {
            eprintln!("error: --ct-timeouts: {e}");
            std::process::exit(2);
        }
    }
    if args.busy_poll_us > MAX_BUSY_POLL_US {
        eprintln!("error: --busy-poll-us must be 0..{MAX_BUSY_POLL_US}");
        std::process::exit(2);
    }
    let fastpath = match args.fastpath {
        Some(m) => m,
        None => match std::env::var("VSWITCH_FASTPATH") {
            Ok(v) => match v.parse() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: VSWITCH_FASTPATH: {e}");
                    std::process::exit(2);
                }
            },
            Err(_) => vswitch::fastpath::Mode::Auto,
        },
    };
    if !(1..=1 << 22).contains(&args.ct_max) {
        eprintln!("error: --ct-max must be 1..4194304");
        std::process::exit(2);
    }
    let opts = vswitch::daemon::Options {
        socket: vswitch_proto::socket_path(args.socket.as_deref()),
        db: vswitch_proto::db_path(args.db.as_deref()),
        workers: args.workers,
        auto_balance: !args.no_balance,
        busy_poll: std::time::Duration::from_micros(args.busy_poll_us),
        limits: Limits {
            fdb_cap: args.fdb_max,
            fdb_aging: args.fdb_aging,
            ct_cap: args.ct_max * 2,
        },
        fastpath,
    };
    if let Err(e) = vswitch::daemon::run(opts) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
