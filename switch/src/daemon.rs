//! `vswitchd` as a library call: restore the db, start workers and the control server,
//! wait for SIGTERM/SIGINT, release devices, exit.

use crate::config::{db, Snapshot};
use crate::control::handlers::Limits;
use crate::control::{server, State};
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
use std::time::Duration;

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
    /// The kernel fast path (`--fastpath`).
    pub fastpath: crate::fastpath::Mode,
}

/// Neighbour cache entries.
const NEIGH_CAP: usize = 4096;

/// Interval of periodic control-plane work (retrying ports that are not attached).
const TICK: Duration = Duration::from_secs(2);

/// Balancing ticks per control-plane tick.
const BALANCE_PER_TICK: u32 = (TICK.as_millis() / balance::TICK.as_millis()) as u32;

/// Run until SIGTERM or SIGINT. Returns after devices were released.
pub fn run(opts: Options) -> anyhow::Result<()> {
    // Block the stop signals in every thread (threads inherit the mask), and take them
    // synchronously below with sigtimedwait.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    sigs.thread_block().context("block signals")?;

    let model = db::load(&opts.db)?;
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.workers
    };
    let listener = server::bind(&opts.socket)?;
    let snap = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let fastpath = start_fastpath(opts.fastpath, &snap, workers)?;
    let neigh = Arc::new(NeighCache::new(NEIGH_CAP));
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
        opts.db.clone(),
        snap.clone(),
        pool,
        opts.limits,
        fastpath.clone(),
    );
    state.set_auto_balance(opts.auto_balance && workers > 1);
    let state = Arc::new(Mutex::new(state));
    let service = Service::new(snap, neigh, Some(state.clone()), workers);
    std::thread::Builder::new()
        .name("vswitch-service".into())
        .spawn(move || service.run(punt_rx))
        .context("start service thread")?;
    server::spawn(listener, state.clone()).context("start control server")?;
    tracing::info!(
        socket = %opts.socket.display(),
        db = %opts.db.display(),
        workers,
        fastpath = if fastpath.is_some() { "on" } else { "off" },
        "vswitchd ready"
    );

    let mut ticks = 0u32;
    let signal = loop {
        match crate::port::sys::signal::wait(&sigs, balance::TICK) {
            Some(s) => break s,
            None => {
                let mut st = state.lock();
                st.balance();
                ticks = (ticks + 1) % BALANCE_PER_TICK.max(1);
                if ticks == 0 {
                    st.tick();
                }
            }
        }
    };
    tracing::info!(signal = %signal, "stopping");
    let _ = std::fs::remove_file(&opts.socket);
    state.lock().shutdown();
    if let Some(fp) = fastpath {
        fp.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Load the kernel fast path as `--fastpath` asks: `on` fails without it, `auto` says
/// once why it runs without it.
fn start_fastpath(
    mode: crate::fastpath::Mode,
    snap: &Arc<ArcSwap<Snapshot>>,
    workers: usize,
) -> anyhow::Result<Option<Arc<crate::fastpath::FastPath>>> {
    use crate::fastpath::{FastPath, Mode};
    let fp = match mode {
        Mode::Off => return Ok(None),
        Mode::On => FastPath::open(snap.clone(), workers).context("--fastpath on")?,
        Mode::Auto => match FastPath::open(snap.clone(), workers) {
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
