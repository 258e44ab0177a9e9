//! Link impairment (`vswitchctl set-port`): delay with jitter, loss, corruption, a rate
//! limit and link down, applied to what leaves a port towards its guest, as netem and
//! tbf do on an interface — in the datapath, with no thread of its own.
//!
//! A worker flushing frames to an impaired port calls [`egress`] instead of sending:
//! lost frames (down, loss) are dropped and counted (`impaired`); frames that only
//! need to leave go at once; the others (delayed, rate-limited or corrupted) are copied
//! into the port's deadline queue ([`Queue`]: a heap ordered by the time each frame is
//! due). Every worker, at each turn of its poll loop while any port is impaired, sends
//! what is due ([`service`]) and sleeps no longer than until the next frame is due:
//! a timer queue serviced by the workers, no sleeping thread, so a delayed port
//! delays nothing else.
//!
//! The rate is a token bucket expressed in time: each frame takes `len * 8 / rate`
//! of the link; the bucket ("the link's clock") may lag the present by up to one burst
//! ([`BURST_BYTES`]), and a frame that would have to wait more than [`MAX_BACKLOG`]
//! behind the others is dropped (a queue limit, as tbf's `latency`). Delay and jitter
//! are added after the rate, as netem does; with jitter frames may be reordered.
//!
//! # Thread safety
//! The queue of a port is shared by every worker that sends to it, behind a mutex that
//! only impaired ports take. Workers read `next_due` with `Relaxed` as a hint of when
//! to look (a stale value makes a worker look too early, finding nothing due, or too
//! late by one poll turn: the worker that queued a frame also sees its own store);
//! the frames themselves are read under the mutex.

use super::capture::Stage;
use super::snapshot::{PortEntry, Snapshot};
use super::{DropReason, BATCH_SIZE};
use crate::port::TxFrame;
use crate::wire::bpf::Frame;
use crate::wire::VnetHdr;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use vswitch_proto::Impairment;

/// A frame may wait at most this long for the rate limit; later ones are dropped.
pub const MAX_BACKLOG: Duration = Duration::from_millis(100);
/// Frames a port may hold (delayed or rate-limited), as netem's default `limit`
/// (but in frames that may be 64 KB GSO ones, so also bounded in bytes).
pub const MAX_FRAMES: usize = 10_000;
pub const MAX_BYTES: usize = 64 << 20;
/// Bytes the rate limit lets through at once after an idle time (the bucket's depth).
pub const BURST_BYTES: u64 = 64 << 10;
/// How often an idle worker looks at the impaired ports' queues when none holds a
/// frame (the service thread queues frames without waking a worker).
pub const IDLE_CHECK: Duration = Duration::from_millis(5);
/// Frames one service turn sends from one port.
const SERVICE_BATCH: usize = 64;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on a monotonic clock (since the first call).
pub fn now_ns() -> u64 {
    let e = EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A frame held back.
struct Held {
    due: u64,
    seq: u64,
    vnet: VnetHdr,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

struct Inner {
    heap: BinaryHeap<Reverse<Held>>,
    bytes: usize,
    seq: u64,
    /// xorshift64 state (loss, corruption, jitter).
    rng: u64,
    /// When the link is free again (the rate limit's clock), ns.
    free_at: u64,
}

impl Inner {
    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// True with probability `ppm` per million.
    fn roll(&mut self, ppm: u64) -> bool {
        ppm > 0 && (ppm >= 1_000_000 || self.rand() % 1_000_000 < ppm)
    }

    fn push(&mut self, h: Held) {
        self.bytes += h.data.len();
        self.heap.push(Reverse(h));
    }

    fn next_due(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |h| h.0.due)
    }
}

/// The frames a port holds back. Lives as long as the port (in the live-port
/// registry), across snapshots.
pub struct Queue {
    next_due: AtomicU64,
    inner: Mutex<Inner>,
}

impl Default for Queue {
    fn default() -> Self {
        // Any non-zero seed; distinct per queue so that two lossy ports differ.
        static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let rng = SEED.fetch_add(0x6a09_e667_f3bc_c909, Relaxed) | 1;
        Queue {
            next_due: AtomicU64::new(u64::MAX),
            inner: Mutex::new(Inner {
                heap: BinaryHeap::new(),
                bytes: 0,
                seq: 0,
                rng,
                free_at: 0,
            }),
        }
    }
}

impl Queue {
    /// Frames held now.
    pub fn len(&self) -> usize {
        self.inner.lock().heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every held frame (the impairment was cleared); their count.
    pub fn clear(&self) -> usize {
        let mut q = self.inner.lock();
        let n = q.heap.len();
        q.heap.clear();
        q.bytes = 0;
        q.free_at = 0;
        self.next_due.store(u64::MAX, Relaxed);
        n
    }
}

/// A port's impairment in a snapshot: its settings and its queue.
pub struct PortImpair {
    pub conf: Impairment,
    pub queue: std::sync::Arc<Queue>,
}

impl PortImpair {
    /// Whether frames never need to be held (only dropped or passed).
    fn passes(&self) -> bool {
        self.conf.delay_us == 0
            && self.conf.jitter_us == 0
            && self.conf.rate_kbit == 0
            && self.conf.corrupt_ppm == 0
    }
}

fn tap(snap: &Snapshot, op: &PortEntry, stage: Stage, why: Option<DropReason>, f: &TxFrame<'_>) {
    let tag = f.tag.as_ref().map_or(&[][..], |t| &t[..]);
    snap.taps
        .offer(snap, op, stage, why, &Frame::pieces(f.head, tag, f.rest));
}

/// Send `frames` out of impaired port `op` (in place of `op.dev.send`).
pub fn egress(
    snap: &Snapshot,
    worker: usize,
    op: &PortEntry,
    imp: &PortImpair,
    frames: &[TxFrame<'_>],
) {
    let empty = TxFrame {
        vnet: VnetHdr::default(),
        head: &[],
        tag: None,
        rest: &[],
    };
    let c = &imp.conf;
    let tapping = snap.taps.active();
    let mut pass = [empty; BATCH_SIZE];
    let mut np = 0;
    let mut lost = 0u64;
    {
        let mut q = imp.queue.inner.lock();
        let now = now_ns();
        for f in frames {
            if c.down || q.roll(c.loss_ppm) {
                lost += 1;
                if tapping {
                    tap(snap, op, Stage::Drop, Some(DropReason::Impaired), f);
                }
                continue;
            }
            if imp.passes() {
                if np < BATCH_SIZE {
                    pass[np] = *f;
                    np += 1;
                }
                continue;
            }
            let len = f.len();
            let mut due = now;
            if let Some(rate) = std::num::NonZeroU64::new(c.rate_kbit) {
                // ns of link time: len * 8 bits / (rate_kbit * 1000 bit/s) * 1e9.
                let cost = (len as u64).saturating_mul(8_000_000) / rate;
                let burst = BURST_BYTES.saturating_mul(8_000_000) / rate;
                let start = q.free_at.max(now.saturating_sub(burst));
                if start.saturating_sub(now) > MAX_BACKLOG.as_nanos() as u64 {
                    lost += 1;
                    if tapping {
                        tap(snap, op, Stage::Drop, Some(DropReason::Impaired), f);
                    }
                    continue;
                }
                // The frame leaves when the bucket has its tokens (at `start`).
                q.free_at = start + cost;
                due = start.max(now);
            }
            due += c.delay_us * 1000;
            if c.jitter_us > 0 {
                let span = 2 * c.jitter_us * 1000 + 1;
                let j = q.rand() % span;
                due = (due + j).saturating_sub(c.jitter_us * 1000).max(now);
            }
            if q.heap.len() >= MAX_FRAMES || q.bytes + len > MAX_BYTES {
                lost += 1;
                if tapping {
                    tap(snap, op, Stage::Drop, Some(DropReason::Impaired), f);
                }
                continue;
            }
            let mut data = f.to_vec();
            if q.roll(c.corrupt_ppm) && !data.is_empty() {
                let bit = q.rand() as usize % (data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            let seq = q.seq;
            q.seq += 1;
            q.push(Held {
                due,
                seq,
                vnet: f.vnet,
                data,
            });
        }
        imp.queue.next_due.store(q.next_due(), Relaxed);
    }
    if lost > 0 {
        op.counters.dropped(worker, DropReason::Impaired, lost);
    }
    if np > 0 {
        send(snap, worker, op, &pass[..np], tapping);
    }
}

/// Send `frames` out of port `op`: through its impairment if it has one, counted in
/// counter slot `worker`, captured at egress when `tapping`.
#[inline]
pub fn transmit(
    snap: &Snapshot,
    worker: usize,
    op: &PortEntry,
    frames: &[TxFrame<'_>],
    tapping: bool,
) {
    match &op.impair {
        Some(imp) => egress(snap, worker, op, imp, frames),
        None => send(snap, worker, op, frames, tapping),
    }
    if !op.mirror_to.is_empty() {
        mirror(snap, worker, op, frames);
    }
}

/// Copies of `frames` (received or sent by `op`) to the outputs of its mirrors. An
/// output port is never selected by a mirror (`add-mirror` refuses it), so this does
/// not recurse.
#[cold]
pub fn mirror(snap: &Snapshot, worker: usize, op: &PortEntry, frames: &[TxFrame<'_>]) {
    let tapping = snap.taps.active();
    for &s in &op.mirror_to {
        if let Some(Some(out)) = snap.ports.get(usize::from(s)) {
            if out.mirror_to.is_empty() {
                transmit(snap, worker, out, frames, tapping);
            }
        }
    }
}

/// Send now; frames the device's queue did not take are dropped (`tx_queue_full`).
fn send(snap: &Snapshot, worker: usize, op: &PortEntry, frames: &[TxFrame<'_>], tapping: bool) {
    let r = op.dev.send(frames);
    op.counters.sent(worker, &r);
    if tapping {
        let sent = frames.len().saturating_sub(r.full);
        for (k, f) in frames.iter().enumerate() {
            if k < sent {
                tap(snap, op, Stage::Egress, None, f);
            } else {
                tap(snap, op, Stage::Drop, Some(DropReason::TxQueueFull), f);
            }
        }
    }
}

/// Send what is due on every impaired port of `snap`; when the next frame is due
/// (ns on [`now_ns`]'s clock), if any is held.
pub fn service(snap: &Snapshot, worker: usize) -> Option<u64> {
    let mut next = u64::MAX;
    let tapping = snap.taps.active();
    for &s in &snap.impaired {
        let Some(Some(op)) = snap.ports.get(usize::from(s)) else {
            continue;
        };
        let Some(imp) = &op.impair else { continue };
        let now = now_ns();
        let due = imp.queue.next_due.load(Relaxed);
        if due > now {
            next = next.min(due);
            continue;
        }
        // Another worker is at it: look again soon.
        let Some(mut q) = imp.queue.inner.try_lock() else {
            next = next.min(now + 1_000_000);
            continue;
        };
        let mut held = Vec::with_capacity(SERVICE_BATCH);
        while held.len() < SERVICE_BATCH && q.heap.peek().is_some_and(|h| h.0.due <= now) {
            if let Some(Reverse(h)) = q.heap.pop() {
                q.bytes -= h.data.len();
                held.push(h);
            }
        }
        let frames: Vec<TxFrame<'_>> = held
            .iter()
            .map(|h| TxFrame {
                vnet: h.vnet,
                head: &h.data,
                tag: None,
                rest: &[],
            })
            .collect();
        // Sent under the lock: frames of a port leave in the order they are due.
        for chunk in frames.chunks(BATCH_SIZE) {
            send(snap, worker, op, chunk, tapping);
        }
        let n = q.next_due();
        imp.queue.next_due.store(n, Relaxed);
        next = next.min(n);
    }
    (next != u64::MAX).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::snapshot::VlanMode;
    use crate::dp::PortCounters;
    use crate::port::mem::MemPort;
    use std::sync::Arc;

    fn setup(conf: Impairment) -> (Snapshot, Arc<MemPort>) {
        let dev = Arc::new(MemPort::new("v1"));
        let snap = Snapshot {
            ports: vec![Some(PortEntry {
                id: 0,
                name: "v1".into(),
                bridge: 0,
                vlan: VlanMode::from_conf(None, &[]),
                dev: dev.clone(),
                counters: Arc::new(PortCounters::new(1)),
                group: 0,
                lock: None,
                mirror_to: Vec::new(),
                mirror_out: false,
                impair: Some(PortImpair {
                    conf,
                    queue: Arc::default(),
                }),
            })],
            impaired: vec![0],
            ..Default::default()
        };
        (snap, dev)
    }

    fn frame(b: &[u8]) -> TxFrame<'_> {
        TxFrame {
            vnet: VnetHdr::default(),
            head: b,
            tag: None,
            rest: &[],
        }
    }

    fn out(snap: &Snapshot, frames: &[TxFrame<'_>]) {
        let op = snap.ports[0].as_ref().unwrap();
        egress(snap, 0, op, op.impair.as_ref().unwrap(), frames);
    }

    fn drops(snap: &Snapshot) -> u64 {
        let op = snap.ports[0].as_ref().unwrap();
        let t = op.counters.totals();
        t.drops.get("impaired").copied().unwrap_or(0)
    }

    #[test]
    fn down_and_full_loss_drop_everything_counted() {
        for conf in [
            Impairment {
                down: true,
                ..Default::default()
            },
            Impairment {
                loss_ppm: 1_000_000,
                ..Default::default()
            },
        ] {
            let (snap, dev) = setup(conf);
            let f = [1u8; 60];
            out(&snap, &[frame(&f), frame(&f)]);
            assert_eq!(dev.take_sent().len(), 0);
            assert_eq!(drops(&snap), 2);
        }
    }

    #[test]
    fn partial_loss_is_about_right() {
        let (snap, dev) = setup(Impairment {
            loss_ppm: 100_000,
            ..Default::default()
        });
        let f = [1u8; 60];
        for _ in 0..10_000 {
            out(&snap, &[frame(&f)]);
        }
        let lost = drops(&snap);
        assert!((800..1200).contains(&lost), "10 % of 10000: {lost}");
        assert_eq!(dev.take_sent().len() as u64, 10_000 - lost);
    }

    #[test]
    fn delay_holds_frames_until_due_in_order() {
        let (snap, dev) = setup(Impairment {
            delay_us: 30_000,
            ..Default::default()
        });
        let (a, b) = ([1u8; 60], [2u8; 60]);
        let t0 = now_ns();
        out(&snap, &[frame(&a), frame(&b)]);
        assert_eq!(dev.take_sent().len(), 0, "held");
        let next = service(&snap, 0).expect("a frame is due later");
        assert!(next >= t0 + 30_000_000, "due after the delay");
        std::thread::sleep(Duration::from_nanos(next.saturating_sub(now_ns())));
        assert_eq!(service(&snap, 0), None, "all sent");
        let sent = dev.take_sent();
        assert_eq!(sent.len(), 2);
        assert_eq!((sent[0][0], sent[1][0]), (1, 2), "in order");
    }

    #[test]
    fn rate_spaces_frames_and_bounds_the_backlog() {
        // 8 Mbit/s: a 1000-byte frame takes 1 ms of the link.
        let (snap, _dev) = setup(Impairment {
            rate_kbit: 8000,
            ..Default::default()
        });
        let f = [0u8; 1000];
        let frames = vec![frame(&f); BATCH_SIZE];
        for _ in 0..8 {
            out(&snap, &frames);
        }
        let op = snap.ports[0].as_ref().unwrap();
        let held = op.impair.as_ref().unwrap().queue.len();
        // 100 ms of backlog at 1 ms per frame, plus up to 64 KB of burst (less when the
        // clock started less than 65 ms ago, as in a test): 100 to 166 held.
        assert!((100..=167).contains(&held), "held {held}");
        assert_eq!(drops(&snap), 8 * BATCH_SIZE as u64 - held as u64);
    }

    #[test]
    fn corruption_flips_one_bit() {
        let (snap, dev) = setup(Impairment {
            corrupt_ppm: 1_000_000,
            ..Default::default()
        });
        let f = [0u8; 60];
        out(&snap, &[frame(&f)]);
        assert_eq!(service(&snap, 0), None);
        let sent = dev.take_sent();
        let ones: u32 = sent[0].iter().map(|b| b.count_ones()).sum();
        assert_eq!(ones, 1);
    }
}
