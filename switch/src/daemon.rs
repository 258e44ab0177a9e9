//! `vswitchd` as a library call: restore the db, start workers and the control server,
//! wait for SIGTERM/SIGINT, release devices, exit.

use crate::config::db;
use crate::control::handlers::Limits;
use crate::control::{server, State};
use crate::dp::Snapshot;
use crate::dp::{balance, WorkerPool};
use crate::pipeline::punt::PUNT_QUEUE;
use crate::service::Service;
use crate::tables::NeighCache;
use anyhow::Context;
use arc_swap::ArcSwap;
use nix::sys::signal::{SigSet, Signal};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Daemon options (the `vswitchd` command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub db: PathBuf,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Move ports between workers with the load (`dp::balance`).
    pub auto_balance: bool,
    /// How long a worker keeps polling its ports after its last frame before it
    /// sleeps (zero: sleep at once).
    pub busy_poll: std::time::Duration,
    pub limits: Limits,
    /// Written with vswitchd's PID once it is ready; removed when it stops.
    pub pidfile: Option<PathBuf>,
    /// The kernel fast path (`--fastpath`).
    pub fastpath: crate::fastpath::Mode,
    /// Serve Prometheus metrics on this address (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Tell the service manager (systemd's `Type=notify`, or `vswitchd --detach` waiting
/// for its child) about our state: one datagram to `$NOTIFY_SOCKET` (a path, or an
/// abstract name after `@`), as sd_notify(3). Without `$NOTIFY_SOCKET`, nothing.
pub fn notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!(socket = %path, error = %e, "cannot notify the service manager");
    }
}

/// Neighbour cache entries.
const NEIGH_CAP: usize = 4096;

/// Interval of periodic control-plane work (retrying ports that are not attached).
const TICK: Duration = Duration::from_secs(2);

/// Balancing ticks per control-plane tick.
const BALANCE_PER_TICK: u32 = (TICK.as_millis() / balance::TICK.as_millis()) as u32;

/// How often changed DHCP leases are written to the db, at most.
const LEASE_FLUSH: Duration = Duration::from_secs(1);

/// Write changed DHCP leases to the db. `failing` counts failed writes in a row: one
/// is logged a minute while it lasts (a full disk must not flood the log).
fn flush_leases(db: &db::Db, failing: &mut u32) {
    match db.flush_leases() {
        Ok(_) if *failing > 0 => {
            tracing::info!("DHCP leases written to the db again");
            *failing = 0;
        }
        Ok(_) => {}
        Err(e) => {
            if failing.is_multiple_of(60) {
                tracing::error!(error = %e, "cannot write DHCP leases to the db; retrying every second");
            }
            *failing = failing.saturating_add(1);
        }
    }
}

/// Turns the lease store's change journal into `monitor` events, drained from the main
/// loop (every balancing tick, 250 ms). A journal, not a comparison of two states: a
/// lease granted and released between two ticks still gives both events.
#[derive(Default)]
struct LeaseEvents {
    lost: u64,
}

impl LeaseEvents {
    /// Emit the lease changes made since the last call, in the order they were made
    /// (a lease granted and released within one interval gives both events).
    fn poll(&mut self, store: &crate::tables::leases::LeaseStore) {
        use crate::tables::leases::LeaseChange;
        let (changes, lost) = store.drain_changes();
        for (bridge, c) in changes {
            match c {
                LeaseChange::Granted(l) => crate::control::events::emit_leases(&bridge, &[], &[l]),
                LeaseChange::Ended(l) => crate::control::events::emit_leases(&bridge, &[l], &[]),
                LeaseChange::Granted6(l) => crate::control::events::emit_lease6(&bridge, &l, None),
                LeaseChange::Ended6(l, why) => {
                    crate::control::events::emit_lease6(&bridge, &l, Some(why))
                }
            }
        }
        if lost > 0 {
            // Logged once per 1000 so a DHCP flood does not flood the log too.
            if self.lost == 0 || self.lost / 1000 != (self.lost + lost) / 1000 {
                tracing::warn!(
                    lost = self.lost + lost,
                    "lease events lost: more than 1024 lease changes in 250 ms"
                );
            }
            self.lost += lost;
        }
    }
}

/// Run until SIGTERM or SIGINT. Returns after devices were released.
pub fn run(opts: Options) -> anyhow::Result<()> {
    // Block the stop signals in every thread (threads inherit the mask), and take them
    // synchronously below with sigtimedwait.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    sigs.thread_block().context("block signals")?;

    let (model, db) = db::open(&opts.db, crate::service::dhcp::unix_now())?;
    let db = Arc::new(db);
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.workers
    };
    // Before the control socket: a bad --metrics address leaves no socket file behind.
    let metrics = opts
        .metrics
        .map(crate::control::metrics::bind)
        .transpose()?;
    let listener = server::bind(&opts.socket)?;
    let snap = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let neigh = Arc::new(NeighCache::new(NEIGH_CAP));
    let fastpath = start_fastpath(opts.fastpath, &snap, &neigh, workers)?;
    let (punt_tx, punt_rx) = crossbeam_channel::bounded(PUNT_QUEUE);
    let pool = WorkerPool::start(
        workers,
        opts.busy_poll,
        snap.clone(),
        neigh.clone(),
        punt_tx,
    )
    .context("start workers")?;
    let mut state = State::new(
        model,
        db.clone(),
        snap.clone(),
        pool,
        opts.limits,
        fastpath.clone(),
    );
    state.set_auto_balance(opts.auto_balance && workers > 1);
    let service = Service::new(snap.clone(), neigh.clone(), db.leases().clone(), workers);
    state.set_tools(crate::control::tools::Tools {
        neigh: Some(neigh),
        dns: service.dns_stats(),
        ..Default::default()
    });
    let state = Arc::new(Mutex::new(state));
    crate::control::events::spawn_mac_watch(snap).context("start MAC watcher")?;
    std::thread::Builder::new()
        .name("vswitch-service".into())
        .spawn(move || service.run(punt_rx))
        .context("start service thread")?;
    server::spawn(listener, state.clone()).context("start control server")?;
    if let Some(m) = metrics {
        crate::control::metrics::spawn(m, state.clone()).context("start metrics server")?;
    }
    if let Some(p) = &opts.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("write pidfile {}", p.display()))?;
    }
    notify("READY=1\nSTATUS=ready");
    tracing::info!(
        socket = %opts.socket.display(),
        db = %opts.db.display(),
        workers,
        fastpath = if fastpath.is_some() { "on" } else { "off" },
        "vswitchd ready"
    );

    let mut ticks = 0u32;
    let mut flushed = Instant::now();
    let mut flush_failing = 0u32;
    let mut lease_events = LeaseEvents::default();
    let signal = loop {
        match crate::port::sys::signal::wait(&sigs, balance::TICK) {
            Some(s) => break s,
            None => {
                {
                    let mut st = state.lock();
                    st.balance();
                    ticks = (ticks + 1) % BALANCE_PER_TICK.max(1);
                    if ticks == 0 {
                        st.tick();
                    }
                }
                // Lease changes as `monitor` events (lease-granted/released and their
                // names), from the store the slow path answers DHCP from.
                lease_events.poll(db.leases());
                // DHCP lease changes, in one write a second at most (without the
                // control mutex: the db orders this write with the control thread's).
                if flushed.elapsed() >= LEASE_FLUSH {
                    flushed = Instant::now();
                    flush_leases(&db, &mut flush_failing);
                }
            }
        }
    };
    tracing::info!(signal = %signal, "stopping");
    notify("STOPPING=1");
    let _ = std::fs::remove_file(&opts.socket);
    // Only our own: a vswitchd started after us may have written its PID there.
    if let Some(p) = &opts.pidfile {
        let ours =
            std::fs::read_to_string(p).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(p);
        }
    }
    state.lock().shutdown();
    if let Some(fp) = fastpath {
        fp.stop();
    }
    if let Err(e) = db.flush_leases() {
        tracing::error!(error = %e, "cannot write DHCP leases to the db at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Load the kernel fast path as `--fastpath` asks: `on` fails without it, `auto` says
/// once why it runs without it.
fn start_fastpath(
    mode: crate::fastpath::Mode,
    snap: &Arc<ArcSwap<Snapshot>>,
    neigh: &Arc<NeighCache>,
    workers: usize,
) -> anyhow::Result<Option<Arc<crate::fastpath::FastPath>>> {
    use crate::fastpath::{FastPath, Mode};
    let fp = match mode {
        Mode::Off => return Ok(None),
        Mode::On => {
            FastPath::open(snap.clone(), neigh.clone(), workers).context("--fastpath on")?
        }
        Mode::Auto => match FastPath::open(snap.clone(), neigh.clone(), workers) {
            Ok(fp) => fp,
            Err(e) => {
                tracing::info!(reason = %e, "kernel fast path unavailable: forwarding in userspace only");
                return Ok(None);
            }
        },
    };
    fp.spawn().context("start fast path thread")?;
    Ok(Some(fp))
}
