//! Worker threads: each polls the ports assigned to it and runs every received batch
//! to completion (receive → pipeline → flush) before the next.
//!
//! # Ownership of a port's receive side
//! A worker polls a port by owning its [`PortRx`] (the receive side, of which one
//! exists per port; not `Sync`, not `Clone`). The control thread never holds a
//! `PortRx` past the first hand-out ([`WorkerPool::add_port_to`] takes it from the port
//! and sends it to the worker) and never gives one to a second worker: to move a port,
//! it asks the old worker, which deregisters the port, sends the `PortRx` to the new
//! worker through that worker's channel and then acknowledges. The channel orders the
//! old worker's last reads before the new worker's first. So a port is polled by at
//! most one worker at any time — by construction, not by a timeout — however slow a
//! worker is (OVS waits for the PMD with no timeout when it moves an rxq; here the
//! hand-over needs no wait at all, the control thread waits only to keep its record of
//! who polls what in order).
//!
//! # Waiting without a timeout, and why it cannot hang
//! [`WorkerPool::move_port`] and [`WorkerPool::remove_port`] wait for the worker's
//! acknowledgement with no timeout. A live worker answers at its next wake-up (its
//! messages are rare and handled before any frame). A worker that stopped or died
//! drops its channel's receiving end, which discards every queued message with its
//! acknowledgement sender (the channels are unbounded, whose receivers discard on
//! drop), so the waiter sees a disconnected channel at once. Only a worker stuck
//! forever inside one batch would hold it up, and that is a bug to see, not to hide.
//!
//! # Thread safety
//! A worker is the only thread that calls `recv` on its ports. The control thread talks
//! to it through a channel plus a mio `Waker`; the messages are rare (port added,
//! moved, removed, stop). Everything per-frame is read from the published snapshot.

use super::{clock, Batch};
use crate::dp::snapshot::{slot_of, Snapshot};
use crate::pipeline::punt::PuntTx;
use crate::pipeline::{self, Ctx, OutQueues};
use crate::port::{Port, PortRx};
use crate::tables::NeighCache;
use crate::tables::PortId;
use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
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
    /// Start polling a port: it comes with its receive side.
    Add(Owned),
    /// Stop polling `id`, send it to worker `to`, then say whether it was handed over.
    Move {
        id: PortId,
        to: Mailbox,
        ack: Sender<bool>,
    },
    /// Stop polling `id` and drop its receive side, then acknowledge.
    Remove(PortId, Sender<()>),
    Stop,
}

/// How to reach a worker: its channel and the waker of its poll loop.
#[derive(Clone)]
struct Mailbox {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
}

impl Mailbox {
    /// Queue `m` and wake the worker; false if the worker is gone (`m` is dropped).
    fn post(&self, m: Msg) -> bool {
        if self.tx.send(m).is_err() {
            return false;
        }
        let _ = self.waker.wake();
        true
    }
}

/// The control thread's handle on one worker.
pub struct WorkerHandle {
    mailbox: Mailbox,
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
            // Unbounded: the control thread never blocks on a busy worker, and a
            // receiver that goes away discards what is queued (see the module docs).
            let (tx, rx) = unbounded();
            let snap = snap.clone();
            let neigh = neigh.clone();
            let punt = punt.clone();
            let busy_ns = Arc::new(CachePadded::new(AtomicU64::new(0)));
            let busy = busy_ns.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vsw-worker-{id}"))
                .spawn(move || Worker::new(id, poll, rx, snap, neigh, punt, busy).run(busy_poll))?;
            workers.push(WorkerHandle {
                mailbox: Mailbox { tx, waker },
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
    /// The port's receive side goes with it; a port whose receive side was already
    /// taken (it is polled already) is refused with an error in the log.
    pub fn add_port_to(&self, w: usize, id: PortId, dev: Arc<dyn Port>) -> usize {
        let w = w.min(self.workers.len().saturating_sub(1));
        let Some(h) = self.workers.get(w) else {
            return 0;
        };
        let Some(rx) = dev.take_rx() else {
            tracing::error!(
                port = dev.name(),
                "port has no receive side to poll (already polled?)"
            );
            return w;
        };
        if h.mailbox.post(Msg::Add(Owned { id, dev, rx })) {
            h.ports.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::error!(worker = w, "worker is gone; port not polled");
        }
        w
    }

    /// Move a port from worker `from` to worker `to` (clamped like
    /// [`WorkerPool::add_port_to`]); returns the worker that polls it afterwards. The
    /// old worker stops polling it and sends its receive side to the new one itself,
    /// so the two never poll it at once; frames wait in the socket meanwhile. Waits,
    /// with no timeout, until the old worker has handed it over (module docs).
    pub fn move_port(&self, from: usize, to: usize, id: PortId) -> usize {
        let to = to.min(self.workers.len().saturating_sub(1));
        if from == to {
            return from;
        }
        let (Some(src), Some(dst)) = (self.workers.get(from), self.workers.get(to)) else {
            return from;
        };
        let (ack, done) = bounded(1);
        let msg = Msg::Move {
            id,
            to: dst.mailbox.clone(),
            ack,
        };
        if !src.mailbox.post(msg) {
            tracing::error!(worker = from, "worker is gone; port not moved");
            return from;
        }
        match done.recv() {
            Ok(true) => {
                dec(&src.ports);
                dst.ports.fetch_add(1, Ordering::Relaxed);
                to
            }
            Ok(false) => {
                tracing::error!(
                    worker = from,
                    to,
                    "port not moved: the worker did not poll it"
                );
                from
            }
            Err(_) => {
                tracing::error!(worker = from, "worker is gone; port not moved");
                from
            }
        }
    }

    /// Each worker's total busy time so far (forwarding, not waiting).
    pub fn busy(&self) -> Vec<Duration> {
        self.workers
            .iter()
            .map(|h| Duration::from_nanos(h.busy_ns.load(Ordering::Relaxed)))
            .collect()
    }

    /// Take a port away from worker `w` and wait (no timeout, see the module docs)
    /// until it stopped polling it and dropped its receive side, so the device can be
    /// closed and its name reused.
    pub fn remove_port(&self, w: usize, id: PortId) {
        let Some(h) = self.workers.get(w) else { return };
        dec(&h.ports);
        let (ack, done) = bounded(1);
        if h.mailbox.post(Msg::Remove(id, ack)) {
            // Err: the worker is gone, and its ports with it.
            let _ = done.recv();
        }
    }

    /// Stop every worker and wait for them.
    pub fn stop(&mut self) {
        for h in &self.workers {
            h.mailbox.post(Msg::Stop);
        }
        for h in &mut self.workers {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Decrement a port count, never below zero.
fn dec(n: &AtomicUsize) {
    let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port a worker polls: the shared port and its receive side, which only this
/// worker holds.
struct Owned {
    id: PortId,
    dev: Arc<dyn Port>,
    rx: Box<dyn PortRx>,
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
                Msg::Add(o) => self.adopt(o),
                Msg::Move { id, to, ack } => {
                    let handed = match self.release(id) {
                        // The receive side goes straight to the new worker; the
                        // control thread never holds it.
                        Some(o) => {
                            let ok = to.post(Msg::Add(o));
                            if !ok {
                                tracing::error!(
                                    worker = self.id,
                                    "target worker is gone; port dropped"
                                );
                            }
                            ok
                        }
                        None => false,
                    };
                    let _ = ack.send(handed);
                }
                Msg::Remove(id, ack) => {
                    // The receive side is dropped here, before the acknowledgement.
                    drop(self.release(id));
                    let _ = ack.send(());
                }
                Msg::Stop => return false,
            }
        }
        true
    }

    /// Start polling `o`.
    fn adopt(&mut self, o: Owned) {
        let slot = slot_of(o.id);
        if let Some(fd) = o.dev.fd() {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE)
            {
                tracing::error!(port = o.dev.name(), error = %e, "cannot poll port");
            }
        }
        // Frames may already be waiting: edge-triggered polling would not report them,
        // so try the port once now.
        if !self.ready.contains(&slot) {
            self.ready.push(slot);
        }
        self.ports.insert(slot, o);
    }

    /// Stop polling port `id`; its receive side is returned to the caller. `None` if
    /// this worker does not poll it (a port of another generation in the slot stays).
    fn release(&mut self, id: PortId) -> Option<Owned> {
        let slot = slot_of(id);
        if self.ports.get(&slot)?.id != id {
            return None;
        }
        let o = self.ports.remove(&slot)?;
        if let Some(fd) = o.dev.fd() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.ready.retain(|&s| s != slot);
        Some(o)
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
            // Impaired ports: send what is due, and wake up when the next frame is.
            // Without any, this is one load of the snapshot and a length check.
            let (due, has_impaired) = {
                let snap = self.snap.load();
                if snap.impaired.is_empty() {
                    (None, false)
                } else {
                    (super::impair::service(&snap, self.id), true)
                }
            };
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
            let timeout = match due {
                Some(at) => {
                    let wait = Duration::from_nanos(at.saturating_sub(super::impair::now_ns()));
                    timeout.map(|t| t.min(wait))
                }
                // While a port is impaired, the service thread may queue a frame there
                // too (the router's replies) without waking a worker: look again soon.
                None if has_impaired => timeout.map(|t| t.min(super::impair::IDLE_CHECK)),
                None => timeout,
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
            let Some(o) = self.ports.get_mut(&slot) else {
                self.ready.swap_remove(i);
                continue;
            };
            self.batch.clear();
            let res = o.rx.recv(&mut self.batch);
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
                    trace: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{RxResult, RxSlot, TxFrame, TxResult};
    use std::os::fd::RawFd;
    use std::sync::atomic::AtomicBool;

    /// What a [`Probe`] port saw: how many threads were inside its `recv` at once.
    #[derive(Default)]
    struct Seen {
        inside: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicU64,
        /// The next `recv` takes 2.5 s (a starved worker: longer than the 2 s the
        /// pool used to wait before giving the port to another worker anyway).
        slow: AtomicBool,
        /// `recv` panics (a worker that dies).
        panic: AtomicBool,
        /// The receive side was dropped.
        dropped: AtomicBool,
    }

    /// A port whose receive side records concurrent calls and never drains (its
    /// owner keeps polling it).
    struct Probe {
        seen: Arc<Seen>,
        rx: RxSlot<ProbeRx>,
    }

    struct ProbeRx(Arc<Seen>);

    impl Probe {
        fn new() -> (Arc<Probe>, Arc<Seen>) {
            let seen = Arc::new(Seen::default());
            let p = Probe {
                seen: seen.clone(),
                rx: RxSlot::new(ProbeRx(seen.clone())),
            };
            (Arc::new(p), seen)
        }
    }

    impl PortRx for ProbeRx {
        fn recv(&mut self, _batch: &mut Batch) -> io::Result<RxResult> {
            let s = &self.0;
            // SeqCst throughout: a test counter, where the simplest order is enough.
            let n = s.inside.fetch_add(1, Ordering::SeqCst) + 1;
            s.most.fetch_max(n, Ordering::SeqCst);
            s.calls.fetch_add(1, Ordering::SeqCst);
            if s.panic.load(Ordering::SeqCst) {
                s.inside.fetch_sub(1, Ordering::SeqCst);
                panic!("probe: worker dies");
            }
            if s.slow.swap(false, Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2500));
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
            s.inside.fetch_sub(1, Ordering::SeqCst);
            Ok(RxResult::default())
        }
    }

    impl Drop for ProbeRx {
        fn drop(&mut self) {
            self.0.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl Port for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn fd(&self) -> Option<RawFd> {
            None
        }
        fn ifindex(&self) -> Option<u32> {
            None
        }
        fn take_rx(&self) -> Option<Box<dyn PortRx>> {
            self.rx.take()
        }
        fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
            let _ = &self.seen;
            TxResult {
                failed: frames.len(),
                ..Default::default()
            }
        }
    }

    fn pool(n: usize) -> WorkerPool {
        let (punt, _) = bounded(1);
        WorkerPool::start(
            n,
            Duration::ZERO,
            Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            Arc::new(NeighCache::new(16)),
            punt,
        )
        .expect("start workers")
    }

    /// Wait (10 s at most) until the port was polled again after `past` calls.
    fn wait_calls(s: &Seen, past: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.calls.load(Ordering::SeqCst) <= past {
            assert!(Instant::now() < deadline, "the port is not polled");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A worker stuck in `recv` longer than any timeout (starved, or a slow port) while
    /// the port moves: the new worker must not poll it before the old one let go.
    /// (Before the hand-over, the pool gave up waiting after 2 s and this saw 2.)
    #[test]
    fn a_moved_port_is_never_polled_by_two_workers() {
        let pool = pool(2);
        let (probe, seen) = Probe::new();
        let id: PortId = 1;
        assert_eq!(pool.add_port_to(0, id, probe.clone()), 0);
        wait_calls(&seen, 0);
        seen.slow.store(true, Ordering::SeqCst);
        // Wait until worker 0 is inside the slow call.
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.slow.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the slow call never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut at = 0;
        for to in [1, 0, 1, 0, 1] {
            at = pool.move_port(at, to, id);
            assert_eq!(at, to);
            let c = seen.calls.load(Ordering::SeqCst);
            wait_calls(&seen, c);
        }
        assert_eq!(
            seen.most.load(Ordering::SeqCst),
            1,
            "two workers were inside recv of one port at once"
        );
    }

    /// Many quick moves over three workers: always one poller, and the port is polled
    /// after every move; after removal its receive side is gone.
    #[test]
    fn rapid_moves_keep_one_poller() {
        let pool = pool(3);
        let (probe, seen) = Probe::new();
        let id: PortId = 7;
        let mut at = pool.add_port_to(0, id, probe.clone());
        for i in 0..300 {
            let to = (at + 1 + i % 2) % 3;
            at = pool.move_port(at, to, id);
            assert_eq!(at, to);
            if i % 50 == 0 {
                let c = seen.calls.load(Ordering::SeqCst);
                wait_calls(&seen, c);
            }
        }
        let c = seen.calls.load(Ordering::SeqCst);
        wait_calls(&seen, c);
        assert_eq!(seen.most.load(Ordering::SeqCst), 1);
        pool.remove_port(at, id);
        assert!(
            seen.dropped.load(Ordering::SeqCst),
            "receive side still alive after remove_port returned"
        );
        assert_eq!(seen.inside.load(Ordering::SeqCst), 0);
    }

    /// The receive side is handed out once: a second add of the same port does not
    /// make a second poller.
    #[test]
    fn a_port_is_given_to_one_worker_only() {
        let pool = pool(2);
        let (probe, seen) = Probe::new();
        pool.add_port_to(0, 3, probe.clone());
        pool.add_port_to(1, 3, probe.clone());
        wait_calls(&seen, 0);
        let c = seen.calls.load(Ordering::SeqCst);
        wait_calls(&seen, c + 100);
        assert_eq!(seen.most.load(Ordering::SeqCst), 1);
        assert_eq!(pool.workers[1].ports.load(Ordering::Relaxed), 0);
    }

    /// A worker that died (a panic) or stopped still lets `move_port` and
    /// `remove_port` return: nothing waits for an acknowledgement that cannot come.
    #[test]
    fn dead_or_stopped_workers_do_not_hang_the_control_thread() {
        let mut pool = pool(2);
        let (probe, seen) = Probe::new();
        pool.add_port_to(0, 5, probe.clone());
        wait_calls(&seen, 0);
        seen.panic.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.dropped.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "worker 0 did not die");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.move_port(0, 1, 5), 0);
        pool.remove_port(0, 5);
        let (other, _) = Probe::new();
        pool.add_port_to(1, 6, other);
        pool.stop();
        assert_eq!(pool.move_port(1, 0, 6), 1);
        pool.remove_port(1, 6);
    }
}
