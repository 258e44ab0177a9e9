//! vswitchd: the vswitch daemon. Thin: parse arguments, set up logging, call the library
//! (`--detach`: start a copy of itself in the background and return once it answers).

use clap::{CommandFactory, Parser};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vswitch::control::handlers::Limits;
use vswitch::daemon::notify;

/// Userspace virtual switch daemon. Runs in the foreground (stop it with SIGTERM), or
/// with --detach in the background.
#[derive(Parser, Debug)]
#[command(name = "vswitchd", version)]
struct Args {
    /// Control socket [env VSWITCH_SOCK; default /run/vswitch/vswitchd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Configuration database [env VSWITCH_DB; default /var/lib/vswitch/conf.db]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Run in the background: return once the control socket answers (exit 1 with the
    /// reason if vswitchd cannot start)
    #[arg(long)]
    detach: bool,
    /// Write vswitchd's PID to FILE once it is ready (removed when it stops)
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Write the log to FILE instead of stderr (appended)
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
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
    #[arg(long, default_value = "warn")]
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
    /// Print a shell completion script and exit
    #[arg(long, value_name = "SHELL", help_heading = "Installation")]
    completions: Option<clap_complete::Shell>,
    /// Write the manual page vswitchd.1 into DIR and exit
    #[arg(long, value_name = "DIR", help_heading = "Installation")]
    man: Option<PathBuf>,
    /// Kernel fast path: auto (use it where the kernel and permissions allow), on
    /// (refuse to start without it), off (userspace datapath only)
    /// [env VSWITCH_FASTPATH; default auto]
    #[arg(long, value_name = "auto|on|off")]
    fastpath: Option<vswitch::fastpath::Mode>,
    /// Serve Prometheus metrics (text format 0.0.4) on http://ADDR:PORT/metrics
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

/// Longest busy poll: beyond this a worker would rather sleep (10 ms).
const MAX_BUSY_POLL_US: u64 = 10_000;

/// How long `--detach` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One line on stderr (and, when started by a service manager or `--detach`, as the
/// status it reads); exit 1.
fn fail(msg: &str) -> ExitCode {
    let one = msg.replace('\n', " ");
    notify(&format!("STATUS=error: {one}\nERRNO=1"));
    eprintln!("error: {one}");
    ExitCode::FAILURE
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
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first}");
            return ExitCode::from(2);
        }
    };
    if let Some(shell) = args.completions {
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "vswitchd",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &args.man {
        let r = std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::Man::new(Args::command()).generate_to(dir));
        return match r {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&format!(
                "cannot write the manual page to {}: {e}",
                dir.display()
            )),
        };
    }
    if !(1..=1 << 20).contains(&args.fdb_max) || args.fdb_aging == 0 {
        eprintln!("error: --fdb-max must be 1..1048576 and --fdb-aging at least 1");
        return ExitCode::from(2);
    }
    if let Some(t) = &args.ct_timeouts {
        if let Err(e) = vswitch::tables::conntrack::set_timeouts(t) {
            eprintln!("error: --ct-timeouts: {e}");
            return ExitCode::from(2);
        }
    }
    if args.busy_poll_us > MAX_BUSY_POLL_US {
        eprintln!("error: --busy-poll-us must be 0..{MAX_BUSY_POLL_US}");
        return ExitCode::from(2);
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
        return ExitCode::from(2);
    }
    let socket = vswitch_proto::socket_path(args.socket.as_deref());
    if args.detach {
        return detach(&args, &socket);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &args.log_file {
        Some(path) => {
            let file = match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => f,
                Err(e) => return fail(&format!("cannot open log file {}: {e}", path.display())),
            };
            builder
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init();
        }
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let opts = vswitch::daemon::Options {
        socket,
        db: vswitch_proto::db_path(args.db.as_deref()),
        workers: args.workers,
        auto_balance: !args.no_balance,
        busy_poll: Duration::from_micros(args.busy_poll_us),
        limits: Limits {
            fdb_cap: args.fdb_max,
            fdb_aging: args.fdb_aging,
            ct_cap: args.ct_max * 2,
        },
        pidfile: args.pidfile.clone(),
        fastpath,
        metrics: args.metrics,
    };
    match vswitch::daemon::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// `path` made absolute against the current directory (the detached daemon runs in /).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `--detach`: run this program again without `--detach`, in its own process group,
/// in /, with stdio closed (the log to `--log-file`), and tell it to report readiness
/// (or the error that stopped it) on a private notify socket — the sd_notify protocol
/// it speaks to systemd. Return once it is ready and its control socket answers.
fn detach(args: &Args, socket: &Path) -> ExitCode {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(&format!("cannot find own executable: {e}")),
    };
    let name = format!(
        "vswitchd-start-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let listen =
        SocketAddr::from_abstract_name(name.as_bytes()).and_then(|a| UnixDatagram::bind_addr(&a));
    let notify_sock = match listen {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot create the start-up notify socket: {e}")),
    };
    if let Err(e) = notify_sock.set_read_timeout(Some(Duration::from_millis(100))) {
        return fail(&format!("start-up notify socket: {e}"));
    }
    // Everything the child needs, with paths made absolute.
    let mut child_args: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |flag: &str, v: &Path| {
        child_args.push(flag.into());
        child_args.push(absolute(v).into_os_string());
    };
    push("--socket", socket);
    push("--db", &vswitch_proto::db_path(args.db.as_deref()));
    if let Some(p) = &args.pidfile {
        push("--pidfile", p);
    }
    if let Some(p) = &args.log_file {
        push("--log-file", p);
    }
    let mut rest: Vec<String> = vec![
        format!("--workers={}", args.workers),
        format!("--busy-poll-us={}", args.busy_poll_us),
        format!("--log-level={}", args.log_level),
        format!("--fdb-max={}", args.fdb_max),
        format!("--fdb-aging={}", args.fdb_aging),
        format!("--ct-max={}", args.ct_max),
    ];
    if args.no_balance {
        rest.push("--no-balance".into());
    }
    if let Some(t) = &args.ct_timeouts {
        rest.push(format!("--ct-timeouts={t}"));
    }
    if let Some(m) = &args.metrics {
        rest.push(format!("--metrics={m}"));
    }
    child_args.extend(rest.into_iter().map(Into::into));
    let spawned = std::process::Command::new(&exe)
        .args(&child_args)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .current_dir("/")
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start {}: {e}", exe.display())),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut status = None;
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = notify_sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            for line in text.lines() {
                if let Some(s) = line.strip_prefix("STATUS=") {
                    status = Some(s.to_string());
                }
            }
            if text.lines().any(|l| l == "READY=1") {
                break;
            }
        }
        match child.try_wait() {
            Ok(Some(st)) => {
                let why = status
                    .and_then(|s| s.strip_prefix("error: ").map(str::to_string))
                    .unwrap_or_else(|| format!("vswitchd exited during start-up ({st})"));
                return fail(&why);
            }
            Ok(None) => {}
            Err(e) => return fail(&format!("cannot watch the starting vswitchd: {e}")),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return fail(&format!(
                "vswitchd did not become ready within {} s; stopped it",
                START_TIMEOUT.as_secs()
            ));
        }
    }
    // Ready: the socket answers (checked, not assumed).
    match vswitch_proto::Client::connect(socket)
        .and_then(|mut c| c.call::<vswitch_proto::VersionInfo>(vswitch_proto::Command::Version))
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("vswitchd started but does not answer: {e}")),
    }
}
