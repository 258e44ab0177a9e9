//! Worker threads: each polls the ports assigned to it and runs every received batch
//! to completion (receive → pipeline → flush) before the next.
//!
//! # Thread safety
//! A worker is the only thread that calls `recv` on its ports. The control thread talks
//! to it through a bounded channel plus a mio `Waker`; the messages are rare (port
//! added/removed, stop). Everything per-frame is read from the published snapshot.

use super::{clock, Batch};
use crate::dp::snapshot::{slot_of, Snapshot};
use crate::pipeline::punt::PuntTx;
use crate::pipeline::{self, Ctx, OutQueues};
use crate::port::Port;
use crate::tables::NeighCache;
use crate::tables::PortId;
use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, Sender};
use crossbeam_utils::CachePadded;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);

enum Msg {
    Add(PortId, Arc<dyn Port>),
    Remove(PortId, Sender<()>),
    Stop,
}

/// The control thread's handle on one worker.
pub struct WorkerHandle {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    ports: AtomicUsize,
    /// Nanoseconds the worker spent forwarding (not waiting), written only by it.
    busy_ns: Arc<CachePadded<AtomicU64>>,
}

/// All workers.
pub struct WorkerPool {
    workers: Vec<WorkerHandle>,
}

impl WorkerPool {
    /// Start `n` workers reading configuration from `snap`; each keeps polling for
    /// `busy_poll` after its last frame before it sleeps.
    pub fn start(
        n: usize,
        busy_poll: Duration,
        snap: Arc<ArcSwap<Snapshot>>,
        neigh: Arc<NeighCache>,
        punt: PuntTx,
    ) -> io::Result<WorkerPool> {
        let mut workers = Vec::with_capacity(n);
        for id in 0..n.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = bounded(1024);
            let snap = snap.clone();
            let neigh = neigh.clone();
            let punt = punt.clone();
            let busy_ns = Arc::new(CachePadded::new(AtomicU64::new(0)));
            let busy = busy_ns.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vsw-worker-{id}"))
                .spawn(move || Worker::new(id, poll, rx, snap, neigh, punt, busy).run(busy_poll))?;
            workers.push(WorkerHandle {
                tx,
                waker,
                thread: Some(thread),
                ports: AtomicUsize::new(0),
                busy_ns,
            });
        }
        Ok(WorkerPool { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Hand a port to the worker with the fewest ports; returns that worker's index.
    pub fn add_port(&self, id: PortId, dev: Arc<dyn Port>) -> usize {
        let w = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, h)| h.ports.load(Ordering::Relaxed))
            .map_or(0, |(w, _)| w);
        self.add_port_to(w, id, dev)
    }

    /// The worker with the most ports (the lowest index on a tie).
    pub fn fullest(&self) -> usize {
        let n = self.workers.len();
        (0..n)
            .max_by_key(|&w| (self.workers[w].ports.load(Ordering::Relaxed), n - w))
            .unwrap_or(0)
    }

    /// Hand a port to worker `w` (the last one if out of range); returns its index.
    pub fn add_port_to(&self, w: usize, id: PortId, dev: Arc<dyn Port>) -> usize {
        let w = w.min(self.workers.len().saturating_sub(1));
        let Some(h) = self.workers.get(w) else {
            return 0;
        };
        h.ports.fetch_add(1, Ordering::Relaxed);
        let _ = h.tx.send(Msg::Add(id, dev));
        let _ = h.waker.wake();
        w
    }

    /// Move a port from worker `from` to worker `to`: `from` stops polling it first
    /// (frames wait in the socket meanwhile), so only one worker ever receives on it.
    pub fn move_port(&self, from: usize, to: usize, id: PortId, dev: Arc<dyn Port>) -> usize {
        self.remove_port(from, id);
        self.add_port_to(to, id, dev)
    }

    /// Each worker's total busy time so far (forwarding, not waiting).
    pub fn busy(&self) -> Vec<Duration> {
        self.workers
            .iter()
            .map(|h| Duration::from_nanos(h.busy_ns.load(Ordering::Relaxed)))
            .collect()
    }

    /// Take a port away from worker `w` and wait (bounded) until it stopped polling it,
    /// so the device can be closed and its name reused.
    pub fn remove_port(&self, w: usize, id: PortId) {
        let Some(h) = self.workers.get(w) else { return };
        h.ports.fetch_sub(1, Ordering::Relaxed);
        let (ack_tx, ack_rx) = bounded(1);
        if h.tx.send(Msg::Remove(id, ack_tx)).is_ok() {
            let _ = h.waker.wake();
            let _ = ack_rx.recv_timeout(Duration::from_secs(2));
        }
    }

    /// Stop every worker and wait for them.
    pub fn stop(&mut self) {
        for h in &self.workers {
            let _ = h.tx.send(Msg::Stop);
            let _ = h.waker.wake();
        }
        for h in &mut self.workers {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Owned {
    id: PortId,
    dev: Arc<dyn Port>,
}

struct Worker {
    id: usize,
    poll: Poll,
    rx: Receiver<Msg>,
    snap: Arc<ArcSwap<Snapshot>>,
    neigh: Arc<NeighCache>,
    punt: PuntTx,
    ports: HashMap<usize, Owned>,
    ready: Vec<usize>,
    batch: Batch,
    out: OutQueues,
    busy_ns: Arc<CachePadded<AtomicU64>>,
}

impl Worker {
    fn new(
        id: usize,
        poll: Poll,
        rx: Receiver<Msg>,
        snap: Arc<ArcSwap<Snapshot>>,
        neigh: Arc<NeighCache>,
        punt: PuntTx,
        busy_ns: Arc<CachePadded<AtomicU64>>,
    ) -> Worker {
        Worker {
            id,
            poll,
            rx,
            snap,
            neigh,
            punt,
            ports: HashMap::new(),
            ready: Vec::with_capacity(64),
            batch: Batch::new(),
            out: OutQueues::default(),
            busy_ns,
        }
    }

    /// Apply control messages; false when told to stop.
    fn control(&mut self) -> bool {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Add(id, dev) => {
                    let slot = slot_of(id);
                    if let Some(fd) = dev.fd() {
                        if let Err(e) = self.poll.registry().register(
                            &mut SourceFd(&fd),
                            Token(slot),
                            Interest::READABLE,
                        ) {
                            tracing::error!(port = dev.name(), error = %e, "cannot poll port");
                        }
                    }
                    // Frames may already be waiting: edge-triggered polling would not
                    // report them, so try the port once now.
                    self.ready.push(slot);
                    self.ports.insert(slot, Owned { id, dev });
                }
                Msg::Remove(id, ack) => {
                    let slot = slot_of(id);
                    if let Some(o) = self.ports.remove(&slot) {
                        if let Some(fd) = o.dev.fd() {
                            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                        }
                    }
                    self.ready.retain(|&s| s != slot);
                    let _ = ack.send(());
                }
                Msg::Stop => return false,
            }
        }
        true
    }

    /// Poll, forward, repeat. With nothing ready the worker sleeps in `epoll_wait`,
    /// except for `busy_poll` after its last frame: then it keeps polling (timeout 0),
    /// so the next frame of a flow finds it awake instead of paying a wake-up (on a VM,
    /// an IPI and a halt exit of the vCPU it slept on). Each spin yields the CPU first
    /// (without it, two vswitchd hosts' four workers spinning on two cores cost 7 % of a
    /// VXLAN stream). Spinning is not counted as busy time, so the balancer sees only
    /// forwarding work.
    fn run(mut self, busy_poll: Duration) {
        let mut events = Events::with_capacity(256);
        let mut last_work = Instant::now();
        loop {
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else if last_work.elapsed() < busy_poll {
                // Spinning, but not at the expense of a runnable thread on this CPU
                // (an endpoint, or another worker when there are more threads than
                // cores): let it run first.
                std::thread::yield_now();
                Some(Duration::ZERO)
            } else {
                Some(Duration::from_millis(500))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.id, error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woken = true;
                } else if !self.ready.contains(&ev.token().0) {
                    self.ready.push(ev.token().0);
                }
            }
            if woken && !self.control() {
                return;
            }
            if !self.ready.is_empty() {
                // Busy time for the balancer: two clock reads per wake-up, not per frame.
                let t0 = Instant::now();
                last_work = t0;
                self.service_ready();
                let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.busy_ns.fetch_add(ns, Ordering::Relaxed);
            }
        }
    }

    /// One batch from each ready port; ports with more to read stay ready.
    fn service_ready(&mut self) {
        let now = clock::now_secs();
        let snap = self.snap.load();
        let neigh = self.neigh.load();
        let mut i = 0;
        while i < self.ready.len() {
            let slot = self.ready[i];
            let Some(o) = self.ports.get(&slot) else {
                self.ready.swap_remove(i);
                continue;
            };
            self.batch.clear();
            let res = o.dev.recv(&mut self.batch);
            let drained = match res {
                Ok(r) => {
                    if r.dropped > 0 {
                        if let Some(p) = snap.port(o.id) {
                            p.counters.dropped(
                                self.id,
                                crate::dp::DropReason::Malformed,
                                r.dropped as u64,
                            );
                        }
                    }
                    r.drained
                }
                Err(e) => {
                    tracing::debug!(port = o.dev.name(), error = %e, "receive failed");
                    true
                }
            };
            if !self.batch.is_empty() {
                let ctx = Ctx {
                    worker: self.id,
                    now,
                    snap: &snap,
                    neigh: &neigh,
                    punt: Some(&self.punt),
                };
                pipeline::process(&ctx, o.id, &mut self.batch, &mut self.out);
                pipeline::flush(&ctx, &self.batch, &mut self.out);
            }
            if drained {
                self.ready.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}
