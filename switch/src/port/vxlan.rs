//! `vxlan` ports (RFC 7348): one UDP socket per port receives from every remote VTEP;
//! each remote VTEP is a port of its own in the snapshot ("vx0@192.0.2.2"), so the
//! FDB learns behind which VTEP a MAC lives, flooding replicates to every remote
//! (head-end replication), and counters exist per VTEP. The remotes of one port form a
//! split-horizon group: a frame from one VTEP is never sent to another (full mesh).
//!
//! Frames leave with no offload pending: GSO super-frames are segmented and partial
//! checksums completed in software ([`crate::wire::gso`]) before encapsulation, and the
//! segments of one super-frame leave as one UDP GSO train. Trains that arrive joined
//! (UDP GRO) are coalesced back into a super-frame when they are one TCP flow.

use super::sys::udp::{self, Dgram};
use super::sys::{netdev, tap};
use super::{Port, PortRx, RxResult, RxSlot, TxFrame, TxResult};
use crate::dp::{Batch, BATCH_SIZE, FRAME_CAP, HEADROOM};
use crate::wire::vxlan::{self, VxlanHeader};
use crate::wire::{csum, field, gro, gso, ipv4, l4, VnetHdr, ETH_HLEN};
use std::cell::RefCell;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Where a vxlan port's frames arrive.
enum RxSource {
    /// Userspace VXLAN: the port's own socket on the VXLAN UDP port.
    Socket(OwnedFd),
    /// The kernel fast path owns the UDP port (docs/architecture.md, "Kernel fast
    /// path", VXLAN): an external VXLAN device decapsulates, and what its tc program
    /// does not forward arrives on a TAP, behind a header with the VNI and remote.
    Kernel(KernelTunnel),
}

/// The external VXLAN device and the slow-path TAP of a vxlan port in fast-path mode.
pub struct KernelTunnel {
    /// The device (`vsvx<port>`), deleted with the port.
    pub dev: String,
    pub dev_ifindex: u32,
    /// The TAP (`vsvx<port>u`): closing the fd removes it.
    tap: OwnedFd,
    pub tap_ifindex: u32,
    dst_port: u16,
}

/// UDP ports whose external device this vswitchd owns: a device of that name is a
/// live port's, never a stale one to replace.
static KERNEL_PORTS: parking_lot::Mutex<Vec<u16>> = parking_lot::Mutex::new(Vec::new());

impl Drop for KernelTunnel {
    fn drop(&mut self) {
        KERNEL_PORTS.lock().retain(|p| *p != self.dst_port);
        if let Err(e) = netdev::delete(self.dev_ifindex) {
            tracing::warn!(dev = %self.dev, error = %e, "cannot delete the VXLAN device");
        }
    }
}

/// The header `fp_tun_up` (switch/bpf/fastpath.c) puts in front of a decap miss.
const KHDR_LEN: usize = 14;
const KHDR_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Create the external device owning UDP `dst_port` and the slow-path TAP. A device of
/// that name left by a killed vswitchd (a VXLAN device, nothing else) is replaced.
fn open_kernel(dst_port: u16) -> io::Result<KernelTunnel> {
    let mut owned = KERNEL_PORTS.lock();
    if owned.contains(&dst_port) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("UDP port {dst_port} already belongs to another vxlan port's kernel device"),
        ));
    }
    let dev = format!("vsvx{dst_port}");
    let tap_name = format!("vsvx{dst_port}u");
    let dev_ifindex = match netdev::create_vxlan_external(&dev, dst_port) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let stale = netdev::ifindex(&dev)?;
            if netdev::link_info(&dev)?.kind.as_deref() != Some("vxlan") {
                return Err(e);
            }
            netdev::delete(stale)?;
            netdev::create_vxlan_external(&dev, dst_port)?
        }
        r => r?,
    };
    let fail = |e: io::Error| {
        let _ = netdev::delete(dev_ifindex);
        e
    };
    // Up opens the device's UDP socket: EADDRINUSE when something else has the port.
    netdev::set_up(&dev).map_err(fail)?;
    let tap = tap::create(&tap_name).map_err(fail)?;
    netdev::set_up(&tap_name).map_err(fail)?;
    let tap_ifindex = netdev::ifindex(&tap_name).map_err(fail)?;
    owned.push(dst_port);
    Ok(KernelTunnel {
        dev,
        dev_ifindex,
        tap,
        tap_ifindex,
        dst_port,
    })
}

/// What the remotes of one vxlan port share.
pub struct VxlanShared {
    rx: RxSource,
    /// Senders, one per outer UDP source port; the inner flow picks one.
    tx: Vec<OwnedFd>,
    pub vni: u32,
    pub dst_port: u16,
    pub local: Ipv4Addr,
    pub remotes: Vec<Ipv4Addr>,
    /// PortId of each remote, set when the ports are attached.
    ids: Vec<AtomicU32>,
    /// Sends left without UDP GSO after the kernel refused a train (the underlay's MTU
    /// is smaller than a segment): trains are retried now and then, not every time.
    gso_backoff: AtomicU32,
    /// The refusal was logged (once per port).
    gso_warned: AtomicBool,
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
        Self::open_with(remotes, vni, local, dst_port, false)
    }

    /// As [`VxlanShared::open`]; with `kernel`, the kernel fast path receives: an
    /// external VXLAN device owns `dst_port` and misses come up a TAP. Sending is the
    /// same either way (the sender sockets do not use `dst_port` locally).
    pub fn open_with(
        remotes: Vec<Ipv4Addr>,
        vni: u32,
        local: Option<Ipv4Addr>,
        dst_port: u16,
        kernel: bool,
    ) -> io::Result<Arc<VxlanShared>> {
        let first = *remotes
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no remote"))?;
        let local = match local {
            Some(l) => l,
            None => udp::source_for(first)?,
        };
        let rx = if kernel {
            RxSource::Kernel(open_kernel(dst_port)?)
        } else {
            RxSource::Socket(udp::bind(local, dst_port)?)
        };
        let tx = (0..TX_SOCKETS)
            .map(|_| udp::sender(local))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Arc::new(VxlanShared {
            rx,
            tx,
            vni,
            dst_port,
            local,
            ids: remotes.iter().map(|_| AtomicU32::new(u32::MAX)).collect(),
            gso_backoff: AtomicU32::new(0),
            gso_warned: AtomicBool::new(false),
            remotes,
        }))
    }

    /// The kernel device and TAP, in fast-path mode.
    pub fn kernel(&self) -> Option<&KernelTunnel> {
        match &self.rx {
            RxSource::Kernel(k) => Some(k),
            RxSource::Socket(_) => None,
        }
    }

    fn rx_fd(&self) -> RawFd {
        match &self.rx {
            RxSource::Socket(fd) => fd.as_raw_fd(),
            RxSource::Kernel(k) => k.tap.as_raw_fd(),
        }
    }

    /// The port of the remote at `src`, once attached.
    fn origin(&self, src: Ipv4Addr) -> Option<u32> {
        let i = self.remotes.iter().position(|r| *r == src)?;
        let id = self.ids[i].load(Ordering::Relaxed);
        (id != u32::MAX).then_some(id)
    }

    pub fn set_id(&self, remote: usize, id: u32) {
        if let Some(a) = self.ids.get(remote) {
            a.store(id, Ordering::Relaxed);
        }
    }
}

/// Sending sockets per vxlan port: the outer UDP source ports a flow hash spreads over.
const TX_SOCKETS: usize = 8;

/// Sends without UDP GSO after a refusal.
const GSO_BACKOFF: u32 = 4096;

/// Per-thread scratch for encapsulating (no allocation once warm).
struct TxScratch {
    /// The head (and tag) of the frame being encapsulated.
    flat: Vec<u8>,
    /// Every datagram of one `send` call, as pieces.
    prep: gso::Prepared,
    /// Datagrams per sending socket.
    out: [Vec<Dgram>; TX_SOCKETS],
}

thread_local! {
    static SCRATCH: RefCell<TxScratch> = const {
        RefCell::new(TxScratch {
            flat: Vec::new(),
            prep: gso::Prepared {
                arena: Vec::new(),
                pieces: Vec::new(),
                wires: Vec::new(),
            },
            out: [const { Vec::new() }; TX_SOCKETS],
        })
    };
}

/// One remote VTEP of a vxlan port.
pub struct VxlanRemote {
    name: String,
    shared: Arc<VxlanShared>,
    remote: usize,
    /// The shared socket's receive side; only the first remote has one.
    rx: RxSlot<VxlanRx>,
}

/// The receive side of a vxlan port: its shared UDP socket, read for all its remotes.
pub struct VxlanRx {
    shared: Arc<VxlanShared>,
}

impl PortRx for VxlanRx {
    fn recv(&mut self, batch: &mut Batch) -> io::Result<RxResult> {
        let sh = &self.shared;
        match &sh.rx {
            RxSource::Socket(fd) => {
                decap_batch(fd.as_raw_fd(), batch, sh.vni, |src| sh.origin(src))
            }
            RxSource::Kernel(k) => kernel_recv(sh, k.tap.as_raw_fd(), batch),
        }
    }
}

/// Reads of the slow-path TAP per wake-up.
const KERNEL_READ_BUDGET: usize = 64;

/// Receive the kernel's decap misses from the TAP: check and strip the metadata
/// header, put back an inner tag the kernel had taken out, attribute each frame to
/// its remote's port (another VNI or an unknown remote: dropped, as the socket path
/// drops them), and mark TCP/UDP checksums partial as the socket path does.
fn kernel_recv(sh: &VxlanShared, fd: RawFd, batch: &mut Batch) -> io::Result<RxResult> {
    let start = batch.len();
    let mut res = tap::recv_batch(fd, batch, KERNEL_READ_BUDGET)?;
    let mut i = start;
    while i < batch.len() {
        match unwrap_kernel(sh.vni, |r| sh.origin(r), batch, i) {
            Some(port) => {
                batch.set_origin(i, port);
                i += 1;
            }
            None => {
                batch.remove(i);
                res.received = res.received.saturating_sub(1);
                res.dropped += 1;
            }
        }
    }
    Ok(res)
}

/// Frame `i` of `batch` as `fp_tun_up` sent it: made the inner frame, and its port
/// (`origin(remote)`); `None` (to be dropped) for another VNI, an unknown remote or a
/// frame without the header.
fn unwrap_kernel(
    vni: u32,
    origin: impl Fn(Ipv4Addr) -> Option<u32>,
    batch: &mut Batch,
    i: usize,
) -> Option<u32> {
    let f = batch.frame_mut(i);
    if f.len() < KHDR_LEN + ETH_HLEN || f[0] != 0x02 || f[12..14] != KHDR_ETHERTYPE {
        return None;
    }
    let got = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
    let remote = Ipv4Addr::new(f[8], f[9], f[10], f[11]);
    if got != vni {
        return None;
    }
    let port = origin(remote)?;
    let strip = match f[1] {
        0 => KHDR_LEN,
        t => {
            // dst and src MAC 4 bytes earlier, then the tag, then the EtherType.
            let tpid: u16 = if t == 1 { 0x8100 } else { 0x88a8 };
            let (c0, c1) = (f[2], f[3]);
            f.copy_within(KHDR_LEN..KHDR_LEN + 12, KHDR_LEN - 4);
            let at = KHDR_LEN - 4 + 12;
            f[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
            f[at + 2] = c0;
            f[at + 3] = c1;
            KHDR_LEN - 4
        }
    };
    batch.strip_front(i, strip);
    let vnet = batch.vnet(i);
    if vnet.flags & crate::wire::vnet::F_NEEDS_CSUM == 0 {
        let p = csum::mark_partial(batch.frame_mut(i));
        if p.flags & crate::wire::vnet::F_NEEDS_CSUM != 0 {
            batch.set_vnet(
                i,
                VnetHdr {
                    flags: p.flags,
                    csum_start: p.csum_start,
                    csum_offset: p.csum_offset,
                    ..vnet
                },
            );
        }
    }
    Some(port)
}

/// Receive VXLAN datagrams into `batch`: each VXLAN header is checked (I flag, `vni`)
/// and dropped; `origin(src_ip)` names the port each frame is attributed to (`None`:
/// not one of our remote VTEPs, dropped).
///
/// A read may return a train of datagrams (UDP GRO). A train of segments of one TCP
/// flow becomes one GSO super-frame ([`gro::coalesce`]); any other train is split into
/// one frame per datagram, in the free slots kept for that (half the batch), and what
/// does not fit is dropped and counted. Consecutive frames that continue one TCP train
/// are then joined across reads ([`join_runs`]).
fn decap_batch(
    fd: RawFd,
    batch: &mut Batch,
    vni: u32,
    origin: impl Fn(Ipv4Addr) -> Option<u32>,
) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    let bufs = batch.free_bufs();
    let free = bufs.len().min(BATCH_SIZE);
    let n = free.div_ceil(2);
    if n == 0 {
        return Ok(res);
    }
    // Messages land in the last `n` free slots, each with its VXLAN header in the
    // headroom and the inner frame at HEADROOM; frames are laid out from slot 0 on.
    let base = free - n;
    let mut msgs = [udp::Received::NONE; BATCH_SIZE];
    let got = udp::recv_msgs(
        fd,
        &mut bufs[base..base + n],
        HEADROOM - vxlan::HLEN,
        vxlan::HLEN + FRAME_CAP,
        &mut msgs[..n],
    )?;
    res.drained = got < n;
    // (offset, length, port, offloads) of the frame in slot w.
    let mut kept = [(0usize, 0usize, 0u32, VnetHdr::default()); BATCH_SIZE];
    let mut w = 0;
    let mut segs = [(0usize, 0usize); udp::MAX_SEGMENTS];
    for (i, msg) in msgs[..got].iter().enumerate() {
        let p = base + i;
        let (len, g) = (msg.len, msg.seg);
        // An empty datagram is one (malformed) datagram too.
        let count = len.div_ceil(g.max(1)).max(1);
        let port = match origin(msg.src) {
            Some(port) if !msg.truncated => port,
            _ => {
                res.dropped += count;
                continue;
            }
        };
        let mut m = 0;
        for k in 0..count {
            let s = HEADROOM - vxlan::HLEN + k * g;
            let l = g.min(len - k * g);
            let ok = VxlanHeader::new_checked(&bufs[p][s..]).and_then(|h| h.vni()) == Some(vni);
            if l < vxlan::HLEN + ETH_HLEN || !ok || m == segs.len() {
                res.dropped += 1;
                continue;
            }
            segs[m] = (s + vxlan::HLEN, l - vxlan::HLEN);
            m += 1;
        }
        if m == 0 {
            continue;
        }
        if m > 1 {
            if let Some((flen, vnet)) = gro::coalesce(&mut bufs[p], &segs[..m]) {
                bufs.swap(w, p);
                kept[w] = (segs[0].0, flen, port, vnet);
                w += 1;
                continue;
            }
        }
        // One frame per datagram: the first stays in the message's buffer (moved to
        // slot w), the others are copied into the slots after it, up to slot p.
        let fit = m.min(p - w + 1);
        res.dropped += m - fit;
        for (k, &(s, l)) in segs[..fit].iter().enumerate().skip(1) {
            if w + k < p {
                let (lo, hi) = bufs.split_at_mut(p);
                lo[w + k][HEADROOM..HEADROOM + l].copy_from_slice(&hi[0][s..s + l]);
            }
        }
        bufs.swap(w, p);
        if fit > 1 && w + fit - 1 == p {
            // The last one goes into the slot the message left (now free).
            let (s, l) = segs[fit - 1];
            let (lo, hi) = bufs.split_at_mut(p);
            hi[0][HEADROOM..HEADROOM + l].copy_from_slice(&lo[w][s..s + l]);
        }
        for (k, &(s, l)) in segs[..fit].iter().enumerate() {
            let off = if k == 0 { s } else { HEADROOM };
            let vnet = csum::mark_partial(&mut bufs[w + k][off..off + l]);
            kept[w + k] = (off, l, port, vnet);
        }
        w += fit;
    }
    let w = join_runs(bufs, &mut kept, w);
    for &(off, len, port, vnet) in &kept[..w] {
        batch.commit(off, len, vnet);
        batch.set_origin(batch.len() - 1, port);
    }
    res.received = w;
    Ok(res)
}

/// Software GRO across datagrams (a peer that sends one datagram per segment, a
/// train the sender's kernel had to fragment, or a 64 KB super-frame that left as two
/// UDP GSO trains): consecutive frames of one port — single segments, or super-frames
/// coalesced from one datagram train — that continue one TCP train are joined into
/// the first one's buffer
/// ([`gro::join`]). `kept[..w]` describes the frames in `bufs[..w]`; returns how many
/// are left, moved to the front.
fn join_runs(bufs: &mut [Box<[u8]>], kept: &mut [(usize, usize, u32, VnetHdr)], w: usize) -> usize {
    use crate::wire::vnet::{GSO_NONE, GSO_TCPV4};
    // One segment (0) or a super-frame `coalesce` made (its segment size).
    let mss = |v: &VnetHdr| match v.gso_type {
        GSO_NONE => Some(0),
        GSO_TCPV4 => Some(usize::from(v.gso_size)),
        _ => None,
    };
    let mut out = 0;
    let mut i = 0;
    while i < w {
        let (off, len, port, vnet) = kept[i];
        let mut taken = 0;
        let mut joined = None;
        if let Some(mss0) = mss(&vnet) {
            let mut j = i + 1;
            while j < w
                && j - i <= udp::MAX_SEGMENTS
                && kept[j].2 == port
                && mss(&kept[j].3).is_some()
            {
                j += 1;
            }
            if j > i + 1 {
                let (lo, hi) = bufs.split_at_mut(i + 1);
                let mut next: [(&[u8], usize); udp::MAX_SEGMENTS] = [(&[], 0); udp::MAX_SEGMENTS];
                let cnt = j - i - 1;
                for (k, n) in next[..cnt].iter_mut().enumerate() {
                    let (o, l, _, v) = kept[i + 1 + k];
                    *n = (&hi[k][o..o + l], mss(&v).unwrap_or(0));
                }
                if let Some((total, n, h)) = gro::join(&mut lo[i][off..], len, mss0, &next[..cnt]) {
                    joined = Some((total, h));
                    taken = n;
                }
            }
        }
        bufs.swap(out, i);
        kept[out] = match joined {
            Some((total, h)) => (off, total, port, h),
            None => kept[i],
        };
        out += 1;
        i += 1 + taken;
    }
    out
}

impl VxlanRemote {
    pub fn new(name: String, shared: Arc<VxlanShared>, remote: usize) -> VxlanRemote {
        let rx = if remote == 0 {
            RxSlot::new(VxlanRx {
                shared: shared.clone(),
            })
        } else {
            RxSlot::empty()
        };
        VxlanRemote {
            name,
            shared,
            remote,
            rx,
        }
    }
}

impl Port for VxlanRemote {
    fn name(&self) -> &str {
        &self.name
    }
    /// Only the first remote polls the shared socket.
    fn fd(&self) -> Option<RawFd> {
        (self.remote == 0).then(|| self.shared.rx_fd())
    }
    fn ifindex(&self) -> Option<u32> {
        None
    }
    /// Only the first remote reads the shared socket.
    fn take_rx(&self) -> Option<Box<dyn PortRx>> {
        self.rx.take()
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        let sh = &self.shared;
        let Some(&remote) = sh.remotes.get(self.remote) else {
            return TxResult {
                failed: frames.len(),
                ..Default::default()
            };
        };
        let vxh = vxlan::header(sh.vni);
        SCRATCH.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return TxResult {
                    failed: frames.len(),
                    ..Default::default()
                };
            };
            let TxScratch { flat, prep, out } = &mut *s;
            prep.clear();
            out.iter_mut().for_each(Vec::clear);
            let mut res = TxResult::default();
            let gso = sh.gso_backoff.load(Ordering::Relaxed) == 0;
            if !gso {
                let _ = sh
                    .gso_backoff
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
            }
            for (i, f) in frames.iter().enumerate() {
                // The head and tag in one piece; the rest is read where it is.
                flat.clear();
                flat.extend_from_slice(f.head);
                if let Some(t) = f.tag {
                    flat.extend_from_slice(&t);
                }
                let (pieces0, wires0) = (prep.pieces.len(), prep.wires.len());
                if gso::prepare_into(flat, f.rest, i, &f.vnet, &vxh, prep).is_err() {
                    res.failed += 1;
                    continue;
                }
                // The first wire frame's headers, as they go out.
                let first = match prep.pieces.get(pieces0) {
                    Some(gso::Piece::Arena { start, len }) => prep
                        .arena
                        .get(start + vxlan::HLEN..start + len)
                        .unwrap_or(&[]),
                    _ => &[],
                };
                let sock = flow_hash(first) as usize % TX_SOCKETS;
                udp::trains(&prep.wires[wires0..], gso, &mut out[sock]);
            }
            for (fd, list) in sh.tx.iter().zip(out.iter()) {
                if list.is_empty() {
                    continue;
                }
                let r = udp::send_dgrams(
                    fd.as_raw_fd(),
                    remote,
                    sh.dst_port,
                    &prep.arena,
                    frames,
                    &prep.pieces,
                    list,
                );
                res.sent += r.sent;
                res.failed += r.failed;
                res.full += r.full;
                res.bytes += r.bytes - vxlan::HLEN * r.sent;
                if r.refused {
                    sh.gso_backoff.store(GSO_BACKOFF, Ordering::Relaxed);
                    if !sh.gso_warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            port = %self.name,
                            remote = %remote,
                            "the route to the remote VTEP has a smaller MTU than a VXLAN \
                             datagram: segments are sent one by one and IP-fragmented \
                             (slow); give the underlay an MTU of the bridge MTU + 50, or \
                             the bridge --mtu 1450"
                        );
                    }
                }
            }
            res
        })
    }
}

/// FNV-1a over what stays the same for every frame of a flow: the MACs and, for IPv4,
/// the addresses, the protocol and (unless fragmented) the TCP/UDP ports.
///
/// `f` may be the headers alone (the first piece of a segmented super-frame, whose
/// payload is referenced elsewhere), so the IPv4 header's length fields are not
/// checked against it: only the bytes read are.
fn flow_hash(f: &[u8]) -> u32 {
    let fnv = |mut h: u32, b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x0100_0193);
        }
        h
    };
    let macs = field::ETHERTYPE.start;
    let mut h = fnv(0x811c_9dc5, f.get(..macs).unwrap_or(f));
    let l3 = field::ETHERTYPE.end;
    let Some(ip) = f.get(l3..l3 + ipv4::MIN_HLEN) else {
        return h;
    };
    if f[field::ETHERTYPE] != ipv4::ETHERTYPE_IPV4.to_be_bytes() {
        return h;
    }
    let proto = ip[ipv4::field::PROTOCOL];
    h = fnv(h, &[proto]);
    h = fnv(h, &ip[ipv4::field::SRC..ipv4::field::DST + 4]);
    let ihl = usize::from(ip[ipv4::field::VER_IHL] & 0x0f) * 4;
    let ff = ipv4::field::FLAGS_FRAG;
    let frag = u16::from_be_bytes([ip[ff], ip[ff + 1]]) & ipv4::FRAG_MASK;
    if frag == 0 && matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP) {
        let ports = l4::field::SRC_PORT.start..l4::field::DST_PORT.end;
        if let Some(p) = f.get(l3 + ihl + ports.start..l3 + ihl + ports.end) {
            h = fnv(h, p);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::{flow_hash, unwrap_kernel, KHDR_LEN};
    use crate::dp::Batch;
    use std::net::Ipv4Addr;

    /// `fp_tun_up`'s header: tag kind (0, 1 = 802.1Q, 2 = 802.1ad), TCI, VNI, remote.
    fn khdr(tag: u8, tci: u16, vni: u32, remote: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x02, tag];
        h.extend_from_slice(&tci.to_be_bytes());
        h.extend_from_slice(&vni.to_be_bytes());
        h.extend_from_slice(&remote);
        h.extend_from_slice(&[0x88, 0xb5]);
        assert_eq!(h.len(), KHDR_LEN);
        h
    }

    fn inner() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x06];
        f.extend_from_slice(&[0xab; 28]);
        f
    }

    #[test]
    fn kernel_misses_are_unwrapped_and_attributed() {
        let origin = |r: Ipv4Addr| (r == Ipv4Addr::new(192, 0, 2, 2)).then_some(7);
        let mut b = Batch::new();
        // Untagged, tagged (the tag back in the frame), another VNI, unknown remote,
        // no header.
        let mut f = khdr(0, 0, 42, [192, 0, 2, 2]);
        f.extend_from_slice(&inner());
        assert!(b.push_copy(&f));
        let mut f = khdr(1, 0x2064, 42, [192, 0, 2, 2]);
        f.extend_from_slice(&inner());
        assert!(b.push_copy(&f));
        let mut f = khdr(0, 0, 43, [192, 0, 2, 2]);
        f.extend_from_slice(&inner());
        assert!(b.push_copy(&f));
        let mut f = khdr(0, 0, 42, [192, 0, 2, 9]);
        f.extend_from_slice(&inner());
        assert!(b.push_copy(&f));
        assert!(b.push_copy(&inner()));
        assert_eq!(unwrap_kernel(42, origin, &mut b, 0), Some(7));
        assert_eq!(b.frame(0), &inner()[..]);
        assert_eq!(unwrap_kernel(42, origin, &mut b, 1), Some(7));
        let mut tagged = inner()[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]);
        tagged.extend_from_slice(&inner()[12..]);
        assert_eq!(b.frame(1), &tagged[..]);
        assert_eq!(unwrap_kernel(42, origin, &mut b, 2), None, "another VNI");
        assert_eq!(unwrap_kernel(42, origin, &mut b, 3), None, "unknown remote");
        assert_eq!(unwrap_kernel(42, origin, &mut b, 4), None, "no header");
        b.remove(2);
        assert_eq!(b.len(), 4);
        assert_eq!(b.frame(2).len(), KHDR_LEN + inner().len());
    }

    #[test]
    fn flow_hash_ignores_what_changes_per_packet() {
        let mut a = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        a.extend_from_slice(&[0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0xaa, 0xbb]);
        a.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1]);
        let mut b = a.clone();
        b[16..20].copy_from_slice(&[0x05, 0xdc, 0x99, 0x99]); // length, id
        b[24..26].copy_from_slice(&[1, 2]); // checksum
        b[41] = 7; // sequence number
        assert_eq!(flow_hash(&a), flow_hash(&b));
        let mut c = a.clone();
        c[37] = 0x52; // another destination port
        assert_ne!(flow_hash(&a), flow_hash(&c));
        assert_eq!(flow_hash(&[1, 2, 3]), flow_hash(&[1, 2, 3]));
    }
}
