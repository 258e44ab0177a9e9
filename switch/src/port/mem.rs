//! In-memory port for pipeline tests (OVS netdev-dummy, smoltcp `Loopback`).
//!
//! Not for the data path: it takes a mutex per call.

use super::{Port, RxResult, TxFrame, TxResult};
use crate::dp::Batch;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

/// A port whose receive queue is filled by the test and whose transmissions are kept.
#[derive(Default)]
pub struct MemPort {
    name: String,
    rx: Mutex<VecDeque<Vec<u8>>>,
    tx: Mutex<Vec<Vec<u8>>>,
}

impl MemPort {
    pub fn new(name: &str) -> MemPort {
        MemPort {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Queue a frame for the next `recv`.
    pub fn inject(&self, frame: &[u8]) {
        self.rx.lock().push_back(frame.to_vec());
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
    fn recv(&self, batch: &mut Batch) -> io::Result<RxResult> {
        let mut rx = self.rx.lock();
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
