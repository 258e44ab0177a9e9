//! `vxlan` ports (RFC 7348): one UDP socket per port receives from every remote VTEP;
//! each remote VTEP is a port of its own in the snapshot ("vx0@192.0.2.2"), so the
//! FDB learns behind which VTEP a MAC lives, flooding replicates to every remote
//! (head-end replication), and counters exist per VTEP. The remotes of one port form a
//! split-horizon group: a frame from one VTEP is never sent to another (full mesh).
//!
//! Frames leave with no offload pending: GSO super-frames are segmented and partial
//! checksums completed in software ([`crate::wire::gso`]) before encapsulation.

use super::sys::udp;
use super::{Port, RxResult, TxFrame, TxResult};
use crate::dp::Batch;
use crate::wire::gso;
use std::cell::RefCell;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// What the remotes of one vxlan port share.
pub struct VxlanShared {
    rx: OwnedFd,
    tx: OwnedFd,
    pub vni: u32,
    pub dst_port: u16,
    pub local: Ipv4Addr,
    pub remotes: Vec<Ipv4Addr>,
    /// PortId of each remote, set when the ports are attached.
    ids: Vec<AtomicU32>,
}

impl VxlanShared {
    /// Open the sockets. `local`: the VTEP address (default: the source address the
    /// kernel would use towards the first remote).
    pub fn open(
        remotes: Vec<Ipv4Addr>,
        vni: u32,
        local: Option<Ipv4Addr>,
        dst_port: u16,
    ) -> io::Result<Arc<VxlanShared>> {
        let first = *remotes
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no remote"))?;
        let local = match local {
            Some(l) => l,
            None => udp::source_for(first)?,
        };
        let rx = udp::bind(local, dst_port)?;
        let tx = udp::raw_sender()?;
        Ok(Arc::new(VxlanShared {
            rx,
            tx,
            vni,
            dst_port,
            local,
            ids: remotes.iter().map(|_| AtomicU32::new(u32::MAX)).collect(),
            remotes,
        }))
    }

    pub fn set_id(&self, remote: usize, id: u32) {
        if let Some(a) = self.ids.get(remote) {
            a.store(id, Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// Per-thread scratch for flattening and segmenting frames (no allocation once warm).
    static SCRATCH: RefCell<(Vec<u8>, Vec<Vec<u8>>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// One remote VTEP of a vxlan port.
pub struct VxlanRemote {
    name: String,
    shared: Arc<VxlanShared>,
    remote: usize,
}

impl VxlanRemote {
    pub fn new(name: String, shared: Arc<VxlanShared>, remote: usize) -> VxlanRemote {
        VxlanRemote {
            name,
            shared,
            remote,
        }
    }
}

impl Port for VxlanRemote {
    fn name(&self) -> &str {
        &self.name
    }
    /// Only the first remote polls the shared socket.
    fn fd(&self) -> Option<RawFd> {
        (self.remote == 0).then(|| self.shared.rx.as_raw_fd())
    }
    fn ifindex(&self) -> Option<u32> {
        None
    }
    fn recv(&self, batch: &mut Batch) -> io::Result<RxResult> {
        if self.remote != 0 {
            return Ok(RxResult {
                drained: true,
                ..Default::default()
            });
        }
        let sh = &self.shared;
        udp::recv_batch(sh.rx.as_raw_fd(), batch, sh.vni, |src| {
            let i = sh.remotes.iter().position(|r| *r == src)?;
            let id = sh.ids[i].load(Ordering::Relaxed);
            (id != u32::MAX).then_some(id)
        })
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        let sh = &self.shared;
        let Some(&remote) = sh.remotes.get(self.remote) else {
            return TxResult {
                failed: frames.len(),
                ..Default::default()
            };
        };
        SCRATCH.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return TxResult {
                    failed: frames.len(),
                    ..Default::default()
                };
            };
            let (flat, segs) = &mut *s;
            let mut res = TxResult::default();
            let mut used = 0;
            for f in frames {
                flat.clear();
                flat.extend_from_slice(f.head);
                if let Some(t) = f.tag {
                    flat.extend_from_slice(&t);
                }
                flat.extend_from_slice(f.rest);
                if gso::prepare(flat, &f.vnet, segs, &mut used).is_err() {
                    res.failed += 1;
                }
            }
            let out = &segs[..used];
            let (sent, failed) = udp::send_batch(
                sh.tx.as_raw_fd(),
                sh.local,
                remote,
                sh.dst_port,
                sh.vni,
                out,
            );
            res.sent = sent;
            res.failed += failed;
            res.bytes = out.iter().take(sent).map(Vec::len).sum();
            res
        })
    }
}
