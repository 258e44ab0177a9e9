//! In-memory port for pipeline tests (OVS netdev-dummy, smoltcp `Loopback`).
//!
//! Not for the data path: it takes a mutex per call.

use super::{Port, PortRx, RxResult, RxSlot, TxFrame, TxResult};
use crate::dp::Batch;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// A port whose receive queue is filled by the test and whose transmissions are kept.
pub struct MemPort {
    name: String,
    rx: Queue,
    reader: RxSlot<MemRx>,
    tx: Mutex<Vec<Vec<u8>>>,
}

/// The receive side of a [`MemPort`], for tests that run it on a worker.
pub struct MemRx {
    rx: Queue,
}

impl PortRx for MemRx {
    fn recv(&mut self, batch: &mut Batch) -> io::Result<RxResult> {
        drain_into(&self.rx, batch)
    }
}

fn drain_into(q: &Queue, batch: &mut Batch) -> io::Result<RxResult> {
    let mut rx = q.lock();
    let mut res = RxResult::default();
    while !batch.is_full() {
        let Some(f) = rx.pop_front() else { break };
        if batch.push_copy(&f) {
            res.received += 1;
        } else {
            res.dropped += 1;
        }
    }
    res.drained = rx.is_empty();
    Ok(res)
}

impl MemPort {
    pub fn new(name: &str) -> MemPort {
        let rx = Queue::default();
        MemPort {
            name: name.to_string(),
            reader: RxSlot::new(MemRx { rx: rx.clone() }),
            rx,
            tx: Mutex::default(),
        }
    }

    /// Queue a frame for the next `recv`.
    pub fn inject(&self, frame: &[u8]) {
        self.rx.lock().push_back(frame.to_vec());
    }

    /// Receive the injected frames into `batch` directly, for pipeline tests that run
    /// no worker (the queue is a mutex-guarded `VecDeque`, so this needs no `PortRx`).
    pub fn recv(&self, batch: &mut Batch) -> io::Result<RxResult> {
        drain_into(&self.rx, batch)
    }

    /// Take every frame sent so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.tx.lock())
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn fd(&self) -> Option<RawFd> {
        None
    }
    fn ifindex(&self) -> Option<u32> {
        None
    }
    fn take_rx(&self) -> Option<Box<dyn PortRx>> {
        self.reader.take()
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        let mut tx = self.tx.lock();
        let mut r = TxResult::default();
        for f in frames {
            r.bytes += f.len();
            tx.push(f.to_vec());
            r.sent += 1;
        }
        r
    }
}
