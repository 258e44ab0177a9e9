//! Capture taps: copies of frames as they enter a port (`ingress`), leave it
//! (`egress`) or are dropped (`drop`, with the reason), for `vswitchctl capture`.
//!
//! Costs nothing when unused: the pipeline asks [`Taps::active`] (one relaxed load)
//! once per batch and does nothing more while no capture runs. Bounded when used: each
//! capture ([`Tap`]) has a bounded queue (frames and bytes); a frame that does not fit
//! is counted as lost, never waited for, so a slow reader cannot stall a worker. The
//! filter (classic BPF, `wire::bpf`) runs before any copy; only matching frames are
//! copied, at most `snaplen` bytes of each.
//!
//! # Thread safety
//! The control thread adds and removes taps ([`Taps::add`], [`Taps::remove`], under a
//! mutex only they take) by publishing a new list (arc-swap) and then the count
//! (`on`). Workers load `on` with `Relaxed`: it only says whether to look at all; a
//! worker that reads a stale 0 misses the first frames of a capture that is starting,
//! or one that reads a stale non-zero loads the list and finds it empty, both
//! harmless. The list itself is read with `ArcSwap::load`, which orders the tap's
//! construction before its use. Frames go to the reader through a crossbeam channel
//! (which synchronises their contents); the loss and byte counters are statistics,
//! `Relaxed`.

use crate::dp::snapshot::{PortEntry, Snapshot};
use crate::dp::DropReason;
use crate::wire::bpf::{Frame, Program};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Frames a capture may have queued for its reader.
pub const QUEUE_FRAMES: usize = 4096;
/// Bytes a capture may have queued for its reader.
pub const QUEUE_BYTES: usize = 32 << 20;
/// Bytes kept of a frame unless the capture asks for fewer (tcpdump's default).
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// Where in the pipeline a frame was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// As it entered the switch from the port's guest.
    Ingress = 1,
    /// As it left the switch towards the port's guest.
    Egress = 2,
    /// Dropped, with a reason.
    Drop = 4,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Egress => "egress",
            Stage::Drop => "drop",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "ingress" => Some(Stage::Ingress),
            "egress" => Some(Stage::Egress),
            "drop" => Some(Stage::Drop),
            _ => None,
        }
    }
}

/// What a capture watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A port by name; a vxlan port's remotes (`NAME@REMOTE`) are its own.
    Port(String),
    /// Every port of a bridge.
    Bridge(String),
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub port: String,
    pub stage: Stage,
    pub reason: Option<DropReason>,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// One running capture.
pub struct Tap {
    target: Target,
    /// Bit set of [`Stage`]s.
    stages: u8,
    filter: Option<Program>,
    snaplen: u32,
    tx: Sender<Captured>,
    queued: AtomicUsize,
    lost: AtomicU64,
    /// Frames still wanted (`-c N`); `u64::MAX`: no limit.
    remaining: AtomicU64,
}

impl Tap {
    /// A capture of `target` at `stages` through `filter`; the receiver is the reader's
    /// end of its queue.
    pub fn new(
        target: Target,
        stages: &[Stage],
        filter: Option<Program>,
        snaplen: u32,
        count: Option<u64>,
    ) -> (Arc<Tap>, Receiver<Captured>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_FRAMES);
        let tap = Tap {
            target,
            stages: stages.iter().fold(0, |a, s| a | *s as u8),
            filter,
            snaplen: snaplen.max(1),
            tx,
            queued: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            remaining: AtomicU64::new(count.unwrap_or(u64::MAX)),
        };
        (Arc::new(tap), rx)
    }

    /// Frames lost so far (queue full: the reader was too slow).
    pub fn lost(&self) -> u64 {
        self.lost.load(Relaxed)
    }

    /// The reader took `c` off the queue.
    pub fn taken(&self, c: &Captured) {
        self.queued.fetch_sub(c.data.len(), Relaxed);
    }

    #[inline]
    fn watches(&self, snap: &Snapshot, port: &PortEntry, stage: Stage) -> bool {
        if self.stages & stage as u8 == 0 {
            return false;
        }
        match &self.target {
            Target::Port(n) => {
                port.name == *n
                    || port
                        .name
                        .strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('@'))
            }
            Target::Bridge(b) => snap.bridges.get(port.bridge).is_some_and(|x| x.name == *b),
        }
    }

    fn offer(&self, port: &PortEntry, stage: Stage, reason: Option<DropReason>, f: &Frame<'_>) {
        let len = f.len();
        let keep = match &self.filter {
            Some(p) => p.run(f, len as u32).min(self.snaplen) as usize,
            None => self.snaplen as usize,
        };
        if keep == 0 {
            return;
        }
        if self
            .remaining
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            return;
        }
        let keep = keep.min(len);
        // Room is checked before the copy (a 64 KB GSO frame is not copied to be
        // thrown away).
        if self.tx.is_full() || self.queued.load(Relaxed) + keep > QUEUE_BYTES {
            self.lost.fetch_add(1, Relaxed);
            return;
        }
        let c = Captured {
            ts_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            port: port.name.clone(),
            stage,
            reason,
            orig_len: len as u32,
            data: f.to_vec(keep),
        };
        self.queued.fetch_add(keep, Relaxed);
        if let Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) = self.tx.try_send(c) {
            self.queued.fetch_sub(c.data.len(), Relaxed);
            self.lost.fetch_add(1, Relaxed);
        }
    }
}

/// Every running capture. One per daemon, shared by every snapshot.
#[derive(Default)]
pub struct Taps {
    on: AtomicUsize,
    list: ArcSwap<Vec<Arc<Tap>>>,
    /// Serialises the control thread's changes to `list`.
    edit: parking_lot::Mutex<()>,
}

impl Taps {
    /// Whether any capture runs (one relaxed load; see the module docs).
    #[inline(always)]
    pub fn active(&self) -> bool {
        self.on.load(Relaxed) != 0
    }

    pub fn add(&self, tap: Arc<Tap>) {
        let _g = self.edit.lock();
        let mut v = (**self.list.load()).clone();
        v.push(tap);
        let n = v.len();
        self.list.store(Arc::new(v));
        self.on.store(n, Relaxed);
    }

    pub fn remove(&self, tap: &Arc<Tap>) {
        let _g = self.edit.lock();
        let mut v = (**self.list.load()).clone();
        v.retain(|t| !Arc::ptr_eq(t, tap));
        let n = v.len();
        self.list.store(Arc::new(v));
        self.on.store(n, Relaxed);
    }

    /// Offer frame `f` of `port` at `stage` to every capture that wants it. Call only
    /// when [`Taps::active`].
    #[cold]
    pub fn offer(
        &self,
        snap: &Snapshot,
        port: &PortEntry,
        stage: Stage,
        reason: Option<DropReason>,
        f: &Frame<'_>,
    ) {
        for t in self.list.load().iter() {
            if t.watches(snap, port, stage) {
                t.offer(port, stage, reason, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::snapshot::VlanMode;
    use crate::dp::PortCounters;
    use crate::port::mem::MemPort;
    use crate::wire::bpf::{parse_ddd, Program};

    fn port(name: &str) -> PortEntry {
        PortEntry {
            id: 0,
            name: name.into(),
            bridge: 0,
            vlan: VlanMode::from_conf(None, &[]),
            dev: Arc::new(MemPort::new(name)),
            counters: Arc::new(PortCounters::new(1)),
            group: 0,
            lock: None,
            mirror_to: Vec::new(),
            mirror_out: false,
            impair: None,
        }
    }

    #[test]
    fn a_slow_reader_loses_frames_and_never_blocks() {
        let taps = Taps::default();
        assert!(!taps.active());
        let (tap, rx) = Tap::new(
            Target::Port("v1".into()),
            &[Stage::Ingress],
            None,
            DEFAULT_SNAPLEN,
            None,
        );
        taps.add(tap.clone());
        assert!(taps.active());
        let snap = Snapshot::default();
        let p = port("v1");
        let f = [0u8; 100];
        for _ in 0..QUEUE_FRAMES + 10 {
            taps.offer(&snap, &p, Stage::Ingress, None, &Frame::whole(&f));
        }
        assert_eq!(rx.len(), QUEUE_FRAMES);
        assert_eq!(tap.lost(), 10);
        // Other stages and ports are not captured.
        taps.offer(&snap, &p, Stage::Egress, None, &Frame::whole(&f));
        taps.offer(&snap, &port("v2"), Stage::Ingress, None, &Frame::whole(&f));
        assert_eq!(tap.lost(), 10);
        taps.remove(&tap);
        assert!(!taps.active());
    }

    #[test]
    fn filter_count_snaplen_and_vxlan_remotes() {
        let taps = Taps::default();
        // arp
        let prog =
            Program::new(parse_ddd("4\n40 0 0 12\n21 0 1 2054\n6 0 0 262144\n6 0 0 0\n").unwrap())
                .unwrap();
        let (tap, rx) = Tap::new(
            Target::Port("vx0".into()),
            &[Stage::Ingress, Stage::Drop],
            Some(prog),
            20,
            Some(2),
        );
        taps.add(tap.clone());
        let snap = Snapshot::default();
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.resize(60, 0);
        let mut ip = arp.clone();
        ip[13] = 0;
        let remote = port("vx0@192.0.2.2");
        taps.offer(&snap, &remote, Stage::Ingress, None, &Frame::whole(&ip));
        taps.offer(
            &snap,
            &port("vx01"),
            Stage::Ingress,
            None,
            &Frame::whole(&arp),
        );
        taps.offer(
            &snap,
            &remote,
            Stage::Drop,
            Some(DropReason::Isolated),
            &Frame::pieces(&arp[..12], &[], &arp[12..]),
        );
        taps.offer(&snap, &remote, Stage::Ingress, None, &Frame::whole(&arp));
        taps.offer(&snap, &remote, Stage::Ingress, None, &Frame::whole(&arp));
        let got: Vec<Captured> = rx.try_iter().collect();
        assert_eq!(got.len(), 2, "only ARP, only vx0's remotes, two at most");
        assert_eq!(got[0].reason, Some(DropReason::Isolated));
        assert_eq!(got[0].data, arp[..20].to_vec(), "snap length");
        assert_eq!(got[0].orig_len, 60);
        assert_eq!(got[1].stage, Stage::Ingress);
        assert_eq!(tap.lost(), 0);
    }
}
