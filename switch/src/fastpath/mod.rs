//! The kernel fast path: decisions the pipeline made, cached in a BPF map and carried
//! out by a tc program on the ports' ingress, so later frames of a flow never reach
//! userspace (Open vSwitch's kernel datapath under ovs-vswitchd; Cilium's tc
//! redirects). The pipeline stays the one source of truth: it offers what it decided,
//! a thread validates and installs it, and every change that could alter a decision
//! makes the entries it affects miss before the change is acknowledged.
//!
//! Layer: beside `pipeline` (which calls [`FastPath::learned`] and [`FastPath::offer`])
//! and below `control` (which attaches ports, bumps the generation on every snapshot
//! and reads the counters). The BPF side is switch/bpf/fastpath.c; [`bpf`] loads it.
//!
//! # What is cached
//! L2 known unicast inside a bridge and VLAN, keyed (ingress ifindex, VLAN as received,
//! source MAC, destination MAC) → (egress ifindex, egress tag). The source is in the
//! key so that a MAC showing up on another port always misses and reaches the
//! pipeline's learning. `system` ports take part (a veth or NIC in vswitchd's
//! namespace) and `internal` ports (a TAP vswitchd made in its own namespace for the
//! host: `fp_tap_out` at the TAP's tcx egress forwards what the host sends, entries
//! into it carry `F_INGRESS`; see [`FastPath::attach_port`] and
//! [`FastPath::check_taps`]); `tap` ports do not (their netdev belongs to a guest and
//! usually lives in another namespace, where an ifindex means something else). Only
//! ports without port security are an entry's ingress.
//!
//! VXLAN: with the fast path a vxlan port's UDP port belongs to a collect-metadata
//! kernel device ([`crate::port::vxlan`]); a remote VTEP port is keyed as
//! `TUN_IFINDEX | slot`, an entry into it carries `F_TUNNEL` (the program sets the
//! tunnel key of `fp_tun_ports[out_slot]` and redirects into the device), and the
//! device's own program `fp_tun_rx` forwards decapsulated hits and sends misses up a
//! TAP. [`FastPath::attach_vxlan`] wires a remote in.
//!
//! Routed unicast between bridges: a frame to the router's MAC that the pipeline
//! forwarded untranslated to a resolved next hop, keyed as above plus the IPv4
//! destination → (egress port, next hop's MAC, the egress router MAC, egress MTU). The
//! program rewrites both MACs and decrements the TTL with an incremental checksum;
//! frames with TTL <= 1, IP options, fragments or over the MTU go to vswitchd (ICMP
//! errors). Not cached: flows NAT could touch (a masqueraded bridge, published
//! addresses and the bridges of their targets), `--isolated` bridges, frames to the
//! router's own addresses as routed entries.
//!
//! Routed IPv6 unicast: the same decision from `pipeline::route6`, in a map of its own
//! (`fp_route6`, keyed by the L2 key plus the IPv6 destination, [`Key6`]) → the routed
//! action with `F_ROUTED6`: both MACs rewritten, hop limit - 1 (no header checksum).
//! Hop limit <= 1, extension headers, over the MTU, link-local/multicast addresses go
//! to vswitchd; flows NAT66 could touch are not cached ([`nat6_free`]).
//!
//! Established NAT connections (masquerade, published ports; TCP, UDP, ICMP echo):
//! keyed as a routed entry plus the L4 tuple as received, in a map of their own →
//! the routed rewrite plus the translated addresses and ports (incremental checksums,
//! partial ones included) and a deadline: the conntrack entry's expiry, after which
//! the program sends frames up. TCP SYN/FIN/RST go up too. The walk refreshes the
//! connection from the entry's hits and extends the deadline (`FastPath::nat_still`).
//!
//! # One decision per frame (the AF_PACKET tap runs before tc)
//! In `__netif_receive_skb_core` packet taps (vswitchd's AF_PACKET socket) see a frame
//! before tc ingress does. So the socket filter `fp_sock` on vswitchd's socket looks the
//! frame up, hides a hit from vswitchd, and leaves its verdict in a per-CPU slot;
//! `fp_tc` runs next on the same CPU and carries out that verdict instead of looking up
//! again. A cache change between the two can therefore neither duplicate nor lose a
//! frame. docs/architecture.md ("Kernel fast path") has the whole argument.
//!
//! # Invalidation: one generation
//! Every entry carries the generation it was installed under; the program treats an
//! entry whose generation differs from `fp_gen[0]` as a miss. [`FastPath::bump`] makes
//! every entry miss at once: on every snapshot publish (ports, VLANs, locks, bridges,
//! routes), `fdb-flush`, a MAC moving to another port, a MAC learned anew that some
//! entry may name (after aging or eviction), and a next hop whose MAC changed (the
//! service thread, when it learns it). The fast-path thread deletes dead entries and
//! re-checks live ones against the Fdb every [`RECONCILE`] (aging: an entry whose
//! destination aged out of the Fdb goes; hits refresh the source's Fdb entry, so a MAC
//! heard only by the fast path does not age out).
//!
//! # Thread safety
//! Writers of the BPF maps: the fast-path thread (installs, reconcile, an internal
//! port's TAP leaving the namespace) and the control thread (attach, detach, show),
//! serialised by `loaded`; the generation array by
//! [`FastPath::bump`] under `gen_map` (workers take that mutex only when a MAC moved or
//! a named MAC was learned anew, never per frame; the service thread when a neighbour
//! changed its MAC, after publishing the new neighbour map, so an installer that read
//! the new generation also reads the new map). Workers otherwise touch only atomics:
//! `gen` (Acquire load), `marks`, `ready`, their own `memo` row. The two orderings that
//! make a racing install harmless are spelled out at [`FastPath::bump`] and
//! [`FastPath::learned`].

pub mod bpf;

use crate::dp::clock;
use crate::dp::snapshot::{PortEntry, Snapshot, VlanMode};
use crate::pipeline::Meta;
use crate::port::Port;
use crate::tables::conntrack::{self, CtEntry, CtState, Tuple};
use crate::tables::fdb::Learned;
use crate::tables::neigh::NeighCache;
use crate::tables::Lookup;
use crate::tables::PortId;
use crate::wire::MacAddr;
use arc_swap::ArcSwap;
use bpf::{
    Action, Key, Key6, Loaded, NatAction, NatKey, PortTotals, F_INGRESS, F_NAT, F_PEER, F_ROUTED,
    F_ROUTED6, F_TUNNEL, MAX_SLOTS, TUN_IFINDEX,
};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use bpf::BpfError as Error;

/// `vswitchd --fastpath`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Use the fast path where the kernel and permissions allow; else log once and
    /// forward in userspace only.
    Auto,
    /// Refuse to start without it.
    On,
    /// Pure userspace datapath.
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            _ => Err(format!("invalid fast path mode {s:?} (auto, on, off)")),
        }
    }
}

/// How often the fast-path thread walks the cache (default).
pub const RECONCILE: Duration = Duration::from_secs(1);
/// Overrides [`RECONCILE`] in milliseconds: the tests set it very long to prove that
/// invalidation does not wait for the walk.
pub const RECONCILE_ENV: &str = "VSWITCH_FASTPATH_RECONCILE_MS";

/// Environment variable: `off` makes every entry use a plain `bpf_redirect`, never
/// `bpf_redirect_peer`.
pub const PEER_ENV: &str = "VSWITCH_FASTPATH_PEER";

fn reconcile_interval() -> Duration {
    std::env::var(RECONCILE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(RECONCILE, |ms| {
            Duration::from_millis(ms.clamp(10, 86_400_000))
        })
}
/// How often the fast-path thread checks that internal ports' TAPs are still in its
/// namespace ([`FastPath::check_taps`]); not changed by [`RECONCILE_ENV`], which only
/// spaces the cache walk.
const TAP_CHECK: Duration = Duration::from_secs(1);
/// Install requests waiting for the thread; more are dropped (and retried a second
/// later by the flow's next slow-path frame).
const OFFER_QUEUE: usize = 1024;
/// Bits of the "may be named by an entry" filter.
const MARK_BITS: usize = 1 << 16;
/// Rows of each worker's "already offered" memo.
const MEMO_ROWS: usize = 1024;

/// An install request: what the pipeline decided for one frame.
#[derive(Debug, Clone, Copy)]
struct Offer {
    key: Key,
    in_id: PortId,
    out_id: PortId,
    bvlan: u16,
    /// Routed (`key.ip_dst` set): the next hop's MAC the pipeline sent the frame to.
    next_hop: Option<MacAddr>,
    /// An established NAT flow (routed, `next_hop` set): the tuple as received and the
    /// one the frame left with.
    nat: Option<(Tuple, Tuple)>,
    /// A routed IPv6 flow (`next_hop` set, `key.ip_dst` unspecified): its destination.
    ip6: Option<Ipv6Addr>,
}

/// One worker's memo of flows it offered: a direct-mapped row per flow hash holding
/// `hash << 32 | second`. Written only by its worker (Relaxed: a hint, nothing is
/// published through it).
struct Memo([AtomicU64; MEMO_ROWS]);

/// Counters of the cache's own work (Relaxed: statistics).
#[derive(Default)]
struct Work {
    installs: AtomicU64,
    rejected: AtomicU64,
    queue_full: AtomicU64,
    bumps: AtomicU64,
    removed: AtomicU64,
}

/// What `fastpath-show` and `show` report about the cache itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub generation: u64,
    pub installs: u64,
    pub rejected: u64,
    pub queue_full: u64,
    pub bumps: u64,
    pub removed: u64,
}

/// One live cache entry, for `fastpath-show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub in_id: PortId,
    pub out_id: PortId,
    pub bvlan: u16,
    pub src: MacAddr,
    pub dst: MacAddr,
    /// Tag pushed on egress (`None`: untagged).
    pub tag: Option<u16>,
    pub packets: u64,
    pub bytes: u64,
    /// Milliseconds since the last hit (`None`: never hit).
    pub idle_ms: Option<u64>,
    /// Routed entries: the IPv4 or IPv6 destination matched and the next hop's MAC.
    pub route: Option<(IpAddr, MacAddr)>,
    /// NAT entries: the connection's tuple as matched and as it leaves.
    pub nat: Option<(Tuple, Tuple)>,
    /// NAT entries: milliseconds until the program stops translating (the conntrack
    /// deadline as last extended; 0: passed, frames go to vswitchd).
    pub expires_ms: Option<u64>,
    /// Delivered with `bpf_redirect_peer` (into the veth peer's ingress).
    pub peer: bool,
}

/// The kernel fast path of one vswitchd.
pub struct FastPath {
    loaded: Mutex<Loaded>,
    /// Serialises bumps so the kernel's generation only ever grows.
    gen_map: Mutex<bpf::GenMap>,
    /// The generation the kernel has (or is about to have, during a bump).
    gen: AtomicU64,
    /// Hash-indexed bits: set for every (VLAN, MAC) an installed entry names.
    marks: Box<[AtomicU64]>,
    /// Per port slot: `port id << 32 | ifindex` of a port the fast path is attached to;
    /// 0: none.
    ready: Box<[AtomicU64]>,
    /// Per port slot: the external VXLAN device of a remote VTEP port (its ready
    /// entry names it by `TUN_IFINDEX | slot`); 0: not a tunnel. Written by the
    /// control thread before (attach) and after (detach) `ready`.
    tun_out: Box<[AtomicU32]>,
    /// Per port slot: a veth whose peer is in another namespace, so entries out of it
    /// can use `bpf_redirect_peer` (straight into the peer's ingress). Set by the
    /// control thread before the port's `ready` store (Release), which publishes it to
    /// installers (they read `ready` with Acquire first); cleared by the fast-path
    /// thread itself ([`FastPath::recheck_peers`]) before a bump.
    peer: Box<[AtomicBool]>,
    /// `bpf_redirect_peer` allowed at all (`VSWITCH_FASTPATH_PEER=off` turns it off,
    /// for A/B measurements and as a way out should a kernel misbehave).
    peer_ok: bool,
    /// (VNI, remote) of each attached remote VTEP port by slot (control thread).
    tun_params: Mutex<std::collections::HashMap<usize, (u32, Ipv4Addr)>>,
    /// Per port slot: an attached `internal` port (its TAP's egress runs
    /// `fp_tap_out`; entries into it redirect with `F_INGRESS`). Written by the
    /// control thread before (attach) and after (detach) `ready`, and by the
    /// fast-path thread when the TAP left the namespace ([`FastPath::check_taps`]).
    internal: Box<[AtomicBool]>,
    /// (port id, name, ifindex) of each attached internal port by slot, for
    /// [`FastPath::check_taps`]. Control and fast-path threads, never per frame; taken
    /// after `loaded` when both are held.
    taps: Mutex<std::collections::HashMap<usize, (PortId, String, u32)>>,
    memo: Box<[CachePadded<Memo>]>,
    offers: Sender<Offer>,
    inbox: Mutex<Option<Receiver<Offer>>>,
    snap: Arc<ArcSwap<Snapshot>>,
    /// The router's neighbour cache: routed entries are checked against it.
    neigh: Arc<NeighCache>,
    stop: AtomicBool,
    work: Work,
}

fn mark_bit(vlan: u16, mac: MacAddr) -> usize {
    // A fixed odd multiplier spreads the 60 bits well enough for a filter whose false
    // positives only cost an extra bump.
    let x = (u64::from(vlan) << 48 | mac.to_u64()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 40) as usize % MARK_BITS
}

/// The memo hash of an offer: its key, and a NAT flow's tuple (flows between the same
/// MACs and destination must not share a memo row).
fn offer_hash(o: &Offer, gen: u64) -> u64 {
    let mut h = key_hash(&o.key, gen);
    if let Some(d) = o.ip6 {
        let d = u128::from(d);
        h = (h ^ d as u64 ^ ((d >> 64) as u64).rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    match &o.nat {
        None => h,
        Some((t, _)) => {
            let x =
                (u64::from(u32::from(t.src)) << 32 | u64::from(t.sport) << 16 | u64::from(t.dport))
                    ^ u64::from(t.proto) << 56;
            (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
    }
}

fn key_hash(k: &Key, gen: u64) -> u64 {
    let a = (u64::from(k.ifindex) << 16 | u64::from(k.vid))
        ^ gen.rotate_left(32)
        ^ u64::from(u32::from(k.ip_dst)).rotate_left(20);
    let b = MacAddr(k.src).to_u64() ^ MacAddr(k.dst).to_u64().rotate_left(24);
    (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// The VLAN inside the bridge of a frame received with `vid` (0: untagged) on a port in
/// `mode`, as `pipeline::l2::ingress_vlan` decides it; `None`: the pipeline drops it.
fn bridge_vlan(mode: &VlanMode, vid: u16) -> Option<u16> {
    match mode {
        VlanMode::Access(t) => (vid == 0).then_some(*t),
        VlanMode::Trunk(_) => mode.carries(vid).then_some(vid),
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`.
fn ktime_coarse() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

impl FastPath {
    /// Load and verify the programs (nothing attached yet). Fails without clang at
    /// build time, without CAP_BPF/CAP_NET_ADMIN, or on a kernel that refuses them.
    pub fn open(
        snap: Arc<ArcSwap<Snapshot>>,
        neigh: Arc<NeighCache>,
        workers: usize,
    ) -> Result<Arc<FastPath>, Error> {
        let (loaded, gen_map) = bpf::load()?;
        let (tx, rx) = bounded(OFFER_QUEUE);
        let fp = FastPath {
            loaded: Mutex::new(loaded),
            gen_map: Mutex::new(gen_map),
            gen: AtomicU64::new(0),
            marks: (0..MARK_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            ready: (0..MAX_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            tun_out: (0..MAX_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            peer: (0..MAX_SLOTS).map(|_| AtomicBool::new(false)).collect(),
            peer_ok: std::env::var(PEER_ENV).map_or(true, |v| v != "off"),
            tun_params: Mutex::new(std::collections::HashMap::new()),
            internal: (0..MAX_SLOTS).map(|_| AtomicBool::new(false)).collect(),
            taps: Mutex::new(std::collections::HashMap::new()),
            memo: (0..workers.max(1))
                .map(|_| CachePadded::new(Memo(std::array::from_fn(|_| AtomicU64::new(0)))))
                .collect(),
            offers: tx,
            inbox: Mutex::new(Some(rx)),
            snap,
            neigh,
            stop: AtomicBool::new(false),
            work: Work::default(),
        };
        // Generation 1: an entry with the zeroed value of a fresh map never matches.
        fp.bump();
        Ok(Arc::new(fp))
    }

    /// Start the thread that installs offered entries and reconciles the cache.
    pub fn spawn(self: &Arc<FastPath>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let fp = self.clone();
        let rx = self.inbox.lock().take();
        let watcher = self.clone();
        // Not fatal: without it, the thread's one-second check still notices.
        if let Err(e) = std::thread::Builder::new()
            .name("vswitch-fp-links".into())
            .spawn(move || {
                if let Err(e) = watcher.watch_links() {
                    tracing::info!(error = %e, "fast path: no link notifications; internal ports are checked every second");
                }
            })
        {
            tracing::info!(error = %e, "fast path: no link watcher thread");
        }
        std::thread::Builder::new()
            .name("vswitch-fastpath".into())
            .spawn(move || {
                if let Some(rx) = rx {
                    fp.run(rx)
                }
            })
    }

    /// Run [`FastPath::check_taps`] on every rtnetlink link notification of
    /// vswitchd's namespace (`RTMGRP_LINK`), until [`FastPath::stop`]. A device moved
    /// to another namespace is announced here as `RTM_DELLINK` (after it left our
    /// device list), and the move takes it down: so an internal port whose TAP moves is
    /// unmarked, and the generation bumped, usually while the device is still down over
    /// there. Not always: this thread may wait for a CPU longer than a script takes to
    /// bring the device up and send (docs/architecture.md, "Internal ports"). The
    /// one-second check in [`FastPath::run`] stays as the backstop (a lost
    /// notification, a full socket buffer).
    fn watch_links(&self) -> nix::Result<()> {
        use nix::errno::Errno;
        use nix::sys::socket::{
            bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
            SockFlag, SockProtocol, SockType,
        };
        use nix::sys::time::TimeValLike;
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(
            fd.as_raw_fd(),
            &NetlinkAddr::new(0, libc::RTMGRP_LINK as u32),
        )?;
        // Wake at least every second to notice `stop`.
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::seconds(1),
        )?;
        let mut buf = vec![0u8; 32 * 1024];
        while !self.stop.load(Ordering::Relaxed) {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                // ENOBUFS: notifications were lost; check anyway.
                Ok(_) | Err(Errno::ENOBUFS) => {
                    if !self.taps.lock().is_empty() {
                        self.check_taps();
                    }
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ask the thread to stop (it exits within [`RECONCILE`] or its current walk).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    /// Make every cached entry miss from now on. Returns once the kernel has the new
    /// generation, so a frame forwarded after this call is not forwarded by an entry
    /// made before it.
    ///
    /// Ordering: the kernel's copy is written first, then `gen` (Release). An installer
    /// reads `gen` (Acquire) *before* it reads the snapshot and the Fdb; if it read the
    /// new value it also sees every change made before this bump, and if it read the
    /// old one its entry carries the old generation and is dead. The mutex keeps the
    /// kernel's generation increasing: two bumps cannot land out of order.
    pub fn bump(&self) {
        let mut m = self.gen_map.lock();
        let next = self.gen.load(Ordering::Relaxed) + 1;
        if let Err(e) = m.set(next) {
            // Cannot happen on a live array fd; if it did, entries of the old
            // generation would stay valid, so say so loudly.
            tracing::error!(error = %e, "fast path: cannot invalidate the cache");
        }
        self.gen.store(next, Ordering::Release);
        self.work.bumps.fetch_add(1, Ordering::Relaxed);
    }

    fn marked(&self, vlan: u16, mac: MacAddr) -> bool {
        let b = mark_bit(vlan, mac);
        self.marks[b / 64].load(Ordering::Relaxed) & (1 << (b % 64)) != 0
    }

    fn mark(&self, vlan: u16, mac: MacAddr) {
        let b = mark_bit(vlan, mac);
        self.marks[b / 64].fetch_or(1 << (b % 64), Ordering::Relaxed);
    }

    /// The pipeline learned `mac` in `vlan` (hot path: atomics only, except the rare
    /// bump). A MAC that moved invalidates the cache; so does a MAC learned anew (after
    /// aging out or being evicted) that an entry may still name.
    ///
    /// Ordering with a racing install (which sets the mark, then reads the Fdb): the
    /// Fdb write is before the SeqCst fence here, the mark store before the installer's
    /// fence, so either the installer sees this Fdb write (and refuses a stale entry)
    /// or this check sees its mark (and bumps).
    #[inline]
    pub fn learned(&self, l: Learned, vlan: u16, mac: MacAddr) {
        match l {
            Learned::Moved => self.bump(),
            Learned::Written | Learned::Evicted => {
                fence(Ordering::SeqCst);
                if self.marked(vlan, mac) {
                    self.bump();
                }
            }
            Learned::Unchanged | Learned::Refreshed | Learned::Busy => {}
        }
    }

    /// The port's ifindex if the fast path is attached to it.
    #[inline]
    fn ready_ifindex(&self, id: PortId) -> Option<u32> {
        let slot = crate::dp::snapshot::slot_of(id);
        let v = self.ready.get(slot)?.load(Ordering::Acquire);
        (v != 0 && (v >> 32) as u32 == id).then_some(v as u32)
    }

    /// The pipeline forwarded a frame (parsed as `meta`, VLAN `meta.vlan` in the
    /// bridge) from `inp` to the learned port `out_id`: offer the decision for the
    /// cache, at most once a second per flow and worker. Hot path: a hash, an atomic
    /// load, and a channel send for a new flow.
    #[inline]
    pub fn offer(&self, worker: usize, now: u32, inp: &PortEntry, meta: &Meta, out_id: PortId) {
        if inp.lock.is_some() {
            return;
        }
        let (Some(in_if), Some(_)) = (self.ready_ifindex(inp.id), self.ready_ifindex(out_id))
        else {
            return;
        };
        let key = Key {
            ifindex: in_if,
            vid: if meta.eth.tagged { meta.eth.vid } else { 0 },
            src: meta.eth.src.0,
            dst: meta.eth.dst.0,
            ip_dst: Ipv4Addr::UNSPECIFIED,
        };
        self.send(
            worker,
            now,
            Offer {
                key,
                in_id: inp.id,
                out_id,
                bvlan: meta.vlan,
                next_hop: None,
                nat: None,
                ip6: None,
            },
        );
    }

    /// The pipeline routed an IPv4 frame (parsed as `meta`, untranslated by NAT) from
    /// `inp` to the next hop `next_hop`, learned on port `out_id` of the egress bridge:
    /// offer a routed entry, at most once a second per flow and worker. The thread
    /// re-checks the whole decision (route, neighbour, NAT, isolation) before it
    /// installs anything.
    #[inline]
    pub fn offer_routed(
        &self,
        worker: usize,
        now: u32,
        inp: &PortEntry,
        meta: &Meta,
        out_id: PortId,
        next_hop: MacAddr,
    ) {
        if inp.lock.is_some() || meta.translated || meta.vlan != 0 {
            return;
        }
        let Some(ip) = meta.ip else {
            return;
        };
        let (Some(in_if), Some(_)) = (self.ready_ifindex(inp.id), self.ready_ifindex(out_id))
        else {
            return;
        };
        let key = Key {
            ifindex: in_if,
            vid: if meta.eth.tagged { meta.eth.vid } else { 0 },
            src: meta.eth.src.0,
            dst: meta.eth.dst.0,
            ip_dst: ip.dst,
        };
        self.send(
            worker,
            now,
            Offer {
                key,
                in_id: inp.id,
                out_id,
                bvlan: 0,
                next_hop: Some(next_hop),
                nat: None,
                ip6: None,
            },
        );
    }

    /// The pipeline routed an IPv6 frame (parsed as `meta`, to `dst`, untranslated by
    /// NAT66) from `inp` to the next hop `next_hop`, learned on port `out_id` of the
    /// egress bridge: offer a routed IPv6 entry, at most once a second per flow and
    /// worker. The thread re-checks the decision ([`FastPath::check_routed6`]).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn offer_routed6(
        &self,
        worker: usize,
        now: u32,
        inp: &PortEntry,
        meta: &Meta,
        dst: Ipv6Addr,
        out_id: PortId,
        next_hop: MacAddr,
    ) {
        if inp.lock.is_some() || meta.vlan != 0 {
            return;
        }
        let (Some(in_if), Some(_)) = (self.ready_ifindex(inp.id), self.ready_ifindex(out_id))
        else {
            return;
        };
        let key = Key {
            ifindex: in_if,
            vid: if meta.eth.tagged { meta.eth.vid } else { 0 },
            src: meta.eth.src.0,
            dst: meta.eth.dst.0,
            ip_dst: Ipv4Addr::UNSPECIFIED,
        };
        self.send(
            worker,
            now,
            Offer {
                key,
                in_id: inp.id,
                out_id,
                bvlan: 0,
                next_hop: Some(next_hop),
                nat: None,
                ip6: Some(dst),
            },
        );
    }

    /// The pipeline translated an IPv4 frame of an existing connection (tuple `orig` as
    /// received, `xlate` as it left) and routed it to `next_hop`, learned on port
    /// `out_id`: offer a NAT entry, at most once a second per flow and worker. The
    /// thread installs it only for an Established connection whose conntrack entry
    /// still says `xlate`, with the checks of a routed entry.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn offer_nat(
        &self,
        worker: usize,
        now: u32,
        inp: &PortEntry,
        meta: &Meta,
        out_id: PortId,
        next_hop: MacAddr,
        orig: Tuple,
        xlate: Tuple,
    ) {
        if inp.lock.is_some() || meta.vlan != 0 {
            return;
        }
        let (Some(in_if), Some(_)) = (self.ready_ifindex(inp.id), self.ready_ifindex(out_id))
        else {
            return;
        };
        let key = Key {
            ifindex: in_if,
            vid: if meta.eth.tagged { meta.eth.vid } else { 0 },
            src: meta.eth.src.0,
            dst: meta.eth.dst.0,
            ip_dst: orig.dst,
        };
        self.send(
            worker,
            now,
            Offer {
                key,
                in_id: inp.id,
                out_id,
                bvlan: 0,
                next_hop: Some(next_hop),
                nat: Some((orig, xlate)),
                ip6: None,
            },
        );
    }

    /// Queue `o` for the thread unless this worker offered the same flow this second.
    #[inline]
    fn send(&self, worker: usize, now: u32, o: Offer) {
        let h = offer_hash(&o, self.gen.load(Ordering::Relaxed));
        let Some(memo) = self.memo.get(worker) else {
            return;
        };
        let row = &memo.0[(h as usize) % MEMO_ROWS];
        let tag = h >> 32;
        let seen = row.load(Ordering::Relaxed);
        if seen >> 32 == tag && now.wrapping_sub(seen as u32) < 1 {
            return;
        }
        row.store(tag << 32 | u64::from(now), Ordering::Relaxed);
        if let Err(TrySendError::Full(_)) = self.offers.try_send(o) {
            self.work.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Attach to port `id` (control thread): counters zeroed, socket filter on its
    /// AF_PACKET socket, tc program at its ingress; for an `internal` port, `fp_tap_out`
    /// at its TAP's egress. Ports the fast path cannot serve (`tap`, in-memory, slot
    /// beyond the counters) are left alone, which is not an error.
    pub fn attach_port(&self, id: PortId, dev: &dyn Port) -> Result<(), Error> {
        let slot = crate::dp::snapshot::slot_of(id);
        if let (None, Some(ifindex)) = (dev.packet_socket(), dev.tap_ifindex()) {
            return self.attach_tap(id, dev.name(), ifindex);
        }
        let (Some(sock), Some(ifindex)) = (dev.packet_socket(), dev.ifindex()) else {
            return Ok(());
        };
        if slot >= MAX_SLOTS {
            tracing::info!(
                port = dev.name(),
                "port slot beyond the fast path's counters: userspace only"
            );
            return Ok(());
        }
        let mut l = self.loaded.lock();
        l.reset_stats(slot)?;
        l.attach(dev.name(), ifindex, sock)?;
        // Relaxed: published by the Release store of `ready` below.
        self.peer[slot].store(self.peer_ok && peer_elsewhere(ifindex), Ordering::Relaxed);
        self.ready[slot].store(u64::from(id) << 32 | u64::from(ifindex), Ordering::Release);
        tracing::debug!(port = dev.name(), ifindex, "fast path attached");
        Ok(())
    }

    /// Attach to internal port `id` whose TAP `name` (`ifindex`) is in vswitchd's
    /// namespace (control thread): counters zeroed, `fp_tap_out` at the TAP's tcx
    /// egress, then the port is ready for entries (entries into it get `F_INGRESS`).
    fn attach_tap(&self, id: PortId, name: &str, ifindex: u32) -> Result<(), Error> {
        let slot = crate::dp::snapshot::slot_of(id);
        if slot >= MAX_SLOTS {
            tracing::info!(
                port = name,
                "port slot beyond the fast path's counters: userspace only"
            );
            return Ok(());
        }
        let mut l = self.loaded.lock();
        l.reset_stats(slot)?;
        l.attach_tap(name, ifindex)?;
        self.taps
            .lock()
            .insert(slot, (id, name.to_string(), ifindex));
        // Before `ready` (Release): whoever sees the port ready sees it internal.
        self.internal[slot].store(true, Ordering::Release);
        // Relaxed: published by the Release store of `ready` below.
        self.peer[slot].store(false, Ordering::Relaxed);
        self.ready[slot].store(u64::from(id) << 32 | u64::from(ifindex), Ordering::Release);
        tracing::debug!(
            port = name,
            ifindex,
            "fast path attached to an internal port"
        );
        Ok(())
    }

    /// Whether port `id` is an attached internal port.
    #[inline]
    fn is_internal(&self, id: PortId) -> bool {
        self.ready_ifindex(id).is_some()
            && self
                .internal
                .get(crate::dp::snapshot::slot_of(id))
                .is_some_and(|b| b.load(Ordering::Acquire))
    }

    /// How an entry from port `in_id` redirects into port `out_id`: the one place
    /// the redirect flags are computed, for every kind of entry (L2, routed, routed
    /// IPv6, NAT; the kind's own flag is OR'ed in by its check). Into an internal
    /// port: `F_INGRESS` (the host receives it). `F_PEER` (bpf_redirect_peer, for veth
    /// outputs) belongs here too, and must be masked when `in_id` is an internal port:
    /// its entries run in `fp_tap_out` at tc egress, where bpf_redirect_peer drops
    /// the frame (the program ignores the flag there too, but the entry should not
    /// claim it).
    fn redirect_flags(&self, in_id: PortId, out_id: PortId) -> u16 {
        if self.is_internal(out_id) {
            return F_INGRESS;
        }
        // F_PEER: a veth output whose other end is in another namespace (then
        // `bpf_redirect_peer` skips the veth's transmit and the peer's backlog queue:
        // the frame enters the peer's stack in the same softirq). Never from an
        // internal port (its entries run at tc egress) and never into a tunnel.
        // Relaxed: `peer` is written before the port's `ready` (Release), which
        // `check*` read with Acquire before calling this, or by this thread
        // (recheck_peers).
        let slot = crate::dp::snapshot::slot_of(out_id);
        if !self.is_internal(in_id)
            && self.tun_dev(out_id).is_none()
            && self
                .peer
                .get(slot)
                .is_some_and(|p| p.load(Ordering::Relaxed))
        {
            F_PEER
        } else {
            0
        }
    }

    /// Internal ports whose TAP is no longer in vswitchd's namespace under its name
    /// and ifindex (the user moved it: `ip link set NAME netns X`), checked on every
    /// link notification ([`FastPath::watch_links`]) and by the fast-path thread every
    /// [`TAP_CHECK`] (both may run at once: the compare-exchange on `ready` lets one
    /// of them act): each is unmarked (no new entries), the
    /// generation bumped (every entry misses), `fp_tap_out` detached and the entries
    /// naming it deleted. Its frames then go through vswitchd's TAP fd, as without
    /// the fast path, until the port is added again.
    fn check_taps(&self) {
        let taps: Vec<(usize, PortId, String, u32)> = self
            .taps
            .lock()
            .iter()
            .map(|(&s, (id, name, ifx))| (s, *id, name.clone(), *ifx))
            .collect();
        for (slot, id, name, ifindex) in taps {
            if crate::port::sys::netdev::ifindex(&name).is_ok_and(|i| i == ifindex) {
                continue;
            }
            let want = u64::from(id) << 32 | u64::from(ifindex);
            // Only if the slot still holds that port (a del-port may have raced us;
            // it then detaches). AcqRel: the unmark is ordered before the bump.
            if self.ready[slot]
                .compare_exchange(want, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            self.bump();
            let mut l = self.loaded.lock();
            self.internal[slot].store(false, Ordering::Release);
            self.taps.lock().remove(&slot);
            l.detach_tap(ifindex);
            let removed = Self::purge(&mut l, ifindex);
            self.work
                .removed
                .fetch_add(removed as u64, Ordering::Relaxed);
            tracing::warn!(
                port = %name,
                ifindex,
                "internal port's device left vswitchd's namespace: fast path detached, userspace only"
            );
        }
    }

    /// Delete every entry naming port `ifindex` (as its key's or as its action's);
    /// how many went.
    fn purge(l: &mut Loaded, ifindex: u32) -> usize {
        let dead: Vec<Key> = l
            .entries()
            .into_iter()
            .filter(|(k, a)| k.ifindex == ifindex || out_key_ifindex(a) == ifindex)
            .map(|(k, _)| k)
            .collect();
        for k in &dead {
            l.remove(k);
        }
        let dead_nat: Vec<NatKey> = l
            .nat_entries()
            .into_iter()
            .filter(|(k, a)| k.ifindex == ifindex || a.route.out_ifindex == ifindex)
            .map(|(k, _)| k)
            .collect();
        for k in &dead_nat {
            l.remove_nat(k);
        }
        let dead6: Vec<Key6> = l
            .route6_entries()
            .into_iter()
            .filter(|(k, a)| k.ifindex == ifindex || a.out_ifindex == ifindex)
            .map(|(k, _)| k)
            .collect();
        for k in &dead6 {
            l.remove_route6(k);
        }
        dead.len() + dead_nat.len() + dead6.len()
    }

    /// Attach remote VTEP port `id` of a vxlan port whose UDP port the external
    /// device `dev` owns (control thread): `fp_tun_rx` on the device (once), the
    /// tunnel key for encap entries and the (VNI, remote) → slot map for decap, then
    /// the port is ready for entries under the key ifindex `TUN_IFINDEX | slot`.
    #[allow(clippy::too_many_arguments)]
    pub fn attach_vxlan(
        &self,
        id: PortId,
        remote: Ipv4Addr,
        vni: u32,
        local: Ipv4Addr,
        dev: &str,
        dev_ifindex: u32,
        chan_ifindex: u32,
    ) -> Result<(), Error> {
        let slot = crate::dp::snapshot::slot_of(id);
        if slot >= MAX_SLOTS {
            return Err(bpf::BpfError::Attach {
                port: dev.to_string(),
                why: "port slot beyond the fast path's counters".into(),
            });
        }
        let mut l = self.loaded.lock();
        l.reset_stats(slot)?;
        l.attach_tunnel(dev, dev_ifindex, chan_ifindex)?;
        l.set_tun_port(slot, vni, remote, local)?;
        self.tun_params.lock().insert(slot, (vni, remote));
        // Relaxed: published by the Release store of `ready` below.
        self.peer[slot].store(false, Ordering::Relaxed);
        self.tun_out[slot].store(dev_ifindex, Ordering::Release);
        let key_if = TUN_IFINDEX | slot as u32;
        self.ready[slot].store(u64::from(id) << 32 | u64::from(key_if), Ordering::Release);
        tracing::debug!(dev, %remote, vni, "fast path attached to a VXLAN remote");
        Ok(())
    }

    /// The external device behind remote VTEP port `id`, if it is one and attached.
    #[inline]
    fn tun_dev(&self, id: PortId) -> Option<u32> {
        self.ready_ifindex(id)?;
        let slot = crate::dp::snapshot::slot_of(id);
        let d = self.tun_out.get(slot)?.load(Ordering::Acquire);
        (d != 0).then_some(d)
    }

    /// Detach from port `id` (control thread, the port already out of the snapshot):
    /// no new entries for it, every entry invalidated, its tc program removed and the
    /// entries that name it deleted.
    pub fn detach_port(&self, id: PortId) {
        let Some(ifindex) = self.ready_ifindex(id) else {
            return;
        };
        let slot = crate::dp::snapshot::slot_of(id);
        self.ready[slot].store(0, Ordering::Release);
        self.bump();
        let mut l = self.loaded.lock();
        let tun = self.tun_out[slot].swap(0, Ordering::AcqRel);
        if self.internal[slot].swap(false, Ordering::AcqRel) {
            self.taps.lock().remove(&slot);
            l.detach_tap(ifindex);
        } else if tun != 0 {
            if let Some((vni, remote)) = self.tun_params.lock().remove(&slot) {
                l.clear_tun_port(slot, vni, remote);
            }
            if !self
                .tun_out
                .iter()
                .any(|d| d.load(Ordering::Acquire) == tun)
            {
                l.detach_tunnel(tun);
            }
        } else {
            l.detach(ifindex);
        }
        let removed = Self::purge(&mut l, ifindex);
        self.work
            .removed
            .fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// What the fast path forwarded for port `id` (zero if it is not attached).
    pub fn port_stats(&self, id: PortId) -> PortTotals {
        if self.ready_ifindex(id).is_none() {
            return PortTotals::default();
        }
        self.loaded.lock().stats(crate::dp::snapshot::slot_of(id))
    }

    /// Whether port `id` is served by the fast path.
    pub fn attached(&self, id: PortId) -> bool {
        self.ready_ifindex(id).is_some()
    }

    pub fn summary(&self) -> Summary {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            generation: self.generation(),
            installs: r(&self.work.installs),
            rejected: r(&self.work.rejected),
            queue_full: r(&self.work.queue_full),
            bumps: r(&self.work.bumps),
            removed: r(&self.work.removed),
        }
    }

    /// The live entries (current generation, ports still attached).
    pub fn entries(&self) -> Vec<Entry> {
        let gen = self.generation();
        let now = ktime_coarse();
        let by_ifindex = self.ports_by_ifindex();
        let (all, nat, r6) = {
            let l = self.loaded.lock();
            (l.entries(), l.nat_entries(), l.route6_entries())
        };
        let r6 = r6.into_iter().filter_map(|(k, a)| {
            let in_id = *by_ifindex.get(&k.ifindex)?;
            let out_id = *by_ifindex.get(&a.out_ifindex)?;
            (a.gen == gen).then_some(Entry {
                in_id,
                out_id,
                bvlan: 0,
                src: MacAddr(k.src),
                dst: MacAddr(k.dst),
                tag: (a.push_vid != 0).then_some(a.push_vid),
                packets: a.packets,
                bytes: a.bytes,
                idle_ms: (a.last_hit != 0).then(|| now.saturating_sub(a.last_hit) / 1_000_000),
                route: Some((IpAddr::V6(k.ip6_dst), MacAddr(a.new_dst))),
                nat: None,
                expires_ms: None,
                peer: a.flags & F_PEER != 0,
            })
        });
        let nat = nat.into_iter().filter_map(|(k, a)| {
            let in_id = *by_ifindex.get(&k.ifindex)?;
            let out_id = *by_ifindex.get(&a.route.out_ifindex)?;
            (a.route.gen == gen).then_some(Entry {
                in_id,
                out_id,
                bvlan: 0,
                src: MacAddr(k.src),
                dst: MacAddr(k.dst),
                tag: (a.route.push_vid != 0).then_some(a.route.push_vid),
                packets: a.route.packets,
                bytes: a.route.bytes,
                idle_ms: (a.route.last_hit != 0)
                    .then(|| now.saturating_sub(a.route.last_hit) / 1_000_000),
                route: Some((IpAddr::V4(k.tuple.dst), MacAddr(a.route.new_dst))),
                nat: Some((k.tuple, a.xlate)),
                expires_ms: Some(a.deadline.saturating_sub(now) / 1_000_000),
                peer: a.route.flags & F_PEER != 0,
            })
        });
        all.into_iter()
            .filter(|(_, a)| a.gen == gen)
            .filter_map(|(k, a)| {
                let in_id = *by_ifindex.get(&k.ifindex)?;
                let out_id = *by_ifindex.get(&out_key_ifindex(&a))?;
                Some(Entry {
                    in_id,
                    out_id,
                    bvlan: a.bvlan,
                    src: MacAddr(k.src),
                    dst: MacAddr(k.dst),
                    tag: (a.push_vid != 0).then_some(a.push_vid),
                    packets: a.packets,
                    bytes: a.bytes,
                    idle_ms: (a.last_hit != 0).then(|| now.saturating_sub(a.last_hit) / 1_000_000),
                    route: (a.flags & F_ROUTED != 0)
                        .then_some((IpAddr::V4(k.ip_dst), MacAddr(a.new_dst))),
                    nat: None,
                    expires_ms: None,
                    peer: a.flags & F_PEER != 0,
                })
            })
            .chain(nat)
            .chain(r6)
            .collect()
    }

    /// A veth's peer moved into vswitchd's namespace (`ip link set ... netns`) would
    /// make `bpf_redirect_peer` drop (the kernel requires another namespace): look
    /// every [`RECONCILE`]; a port whose peer came home loses the flag and every entry
    /// misses (bump), so frames go through vswitchd and then plain redirects. A peer
    /// that moved away again gets the flag back for entries installed from then on.
    fn recheck_peers(&self) {
        let mut changed = false;
        for (slot, r) in self.ready.iter().enumerate() {
            let v = r.load(Ordering::Acquire);
            if v == 0 || (v as u32) & TUN_IFINDEX != 0 {
                continue;
            }
            let now = self.peer_ok && peer_elsewhere(v as u32);
            // Relaxed: only this thread writes after attach (which happened before
            // the `ready` value read above, by its Release/Acquire pair); installers
            // run on this thread too.
            if self.peer[slot].swap(now, Ordering::Relaxed) && !now {
                changed = true;
                tracing::info!(
                    ifindex = v as u32,
                    "fast path: a port's veth peer is in vswitchd's namespace now: plain redirects"
                );
            }
        }
        if changed {
            self.bump();
        }
    }

    fn ports_by_ifindex(&self) -> std::collections::HashMap<u32, PortId> {
        self.ready
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .filter(|&v| v != 0)
            .map(|v| (v as u32, (v >> 32) as u32))
            .collect()
    }

    /// The fast-path thread: install offers as they come, reconcile every [`RECONCILE`].
    fn run(&self, rx: Receiver<Offer>) {
        let every = reconcile_interval();
        let mut next = Instant::now() + every;
        let mut next_taps = Instant::now() + TAP_CHECK;
        let mut next_peers = Instant::now() + RECONCILE;
        let mut last_scan = ktime_coarse();
        while !self.stop.load(Ordering::Relaxed) {
            // Wake at least every RECONCILE to notice `stop`.
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(RECONCILE);
            match rx.recv_timeout(wait) {
                Ok(o) => self.install(o),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next {
                last_scan = self.reconcile(last_scan);
                next = Instant::now() + every;
            }
            if Instant::now() >= next_taps {
                self.check_taps();
                next_taps = Instant::now() + TAP_CHECK;
            }
            if Instant::now() >= next_peers {
                self.recheck_peers();
                next_peers = Instant::now() + RECONCILE;
            }
        }
    }

    /// Validate an offer against the current snapshot and Fdb, then install it.
    fn install(&self, o: Offer) {
        // Before anything is read: see `bump`.
        let gen = self.gen.load(Ordering::Acquire);
        let (src, dst) = (MacAddr(o.key.src), MacAddr(o.key.dst));
        self.mark(o.bvlan, src);
        // A routed entry names the next hop on the egress bridge, not the router's MAC.
        self.mark(o.bvlan, o.next_hop.unwrap_or(dst));
        // Pairs with the fence in `learned`.
        fence(Ordering::SeqCst);
        if let (Some((t, x)), Some(nh)) = (o.nat, o.next_hop) {
            let key = NatKey {
                ifindex: o.key.ifindex,
                vid: o.key.vid,
                src: o.key.src,
                dst: o.key.dst,
                tuple: t,
            };
            match self.check_nat(&o, nh, &t, &x) {
                Some(mut a) => {
                    a.route.gen = gen;
                    match self.loaded.lock().insert_nat(&key, &a) {
                        Ok(()) => {
                            self.work.installs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(error = %e, "fast path: NAT install failed"),
                    }
                }
                None => {
                    self.work.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        if let (Some(d), Some(nh)) = (o.ip6, o.next_hop) {
            match self.check_routed6(&o, nh, d) {
                Some(action) => {
                    let a = Action { gen, ..action };
                    match self.loaded.lock().insert_route6(&key6(&o.key, d), &a) {
                        Ok(()) => {
                            self.work.installs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(error = %e, "fast path: IPv6 install failed"),
                    }
                }
                None => {
                    self.work.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        match self.check(&o) {
            Some(action) => {
                let a = Action { gen, ..action };
                match self.loaded.lock().insert(&o.key, &a) {
                    Ok(()) => {
                        self.work.installs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(error = %e, "fast path: install failed"),
                }
            }
            None => {
                self.work.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The entry for offer `o` if the pipeline would still decide the same now.
    /// (Lab tools need every frame in userspace: see [`lab_tools_allow`].)
    fn check(&self, o: &Offer) -> Option<Action> {
        if let Some(nh) = o.next_hop {
            return self.check_routed(o, nh);
        }
        let snap = self.snap.load();
        let now = clock::now_secs();
        let inp = snap.port(o.in_id)?;
        let out = snap.port(o.out_id)?;
        let out_if = self.ready_ifindex(o.out_id)?;
        // Into a tunnel: the device, with the remote's tunnel key. Never from one
        // tunnel into another (split horizon, and no encap on decap).
        let tun = self.tun_dev(o.out_id);
        if tun.is_some() && self.tun_dev(o.in_id).is_some() {
            return None;
        }
        if self.ready_ifindex(o.in_id)? != o.key.ifindex
            || inp.lock.is_some()
            || inp.bridge != out.bridge
            || o.in_id == o.out_id
            || bridge_vlan(&inp.vlan, o.key.vid)? != o.bvlan
            || !out.vlan.carries(o.bvlan)
            || !lab_tools_allow(&snap, inp, out)
        {
            return None;
        }
        let fdb = &snap.bridges.get(inp.bridge)?.fdb;
        if fdb.lookup(o.bvlan, MacAddr(o.key.src), now) != Some(o.in_id)
            || fdb.lookup(o.bvlan, MacAddr(o.key.dst), now) != Some(o.out_id)
        {
            return None;
        }
        Some(Action {
            out_ifindex: tun.unwrap_or(out_if),
            in_slot: crate::dp::snapshot::slot_of(o.in_id) as u16,
            out_slot: crate::dp::snapshot::slot_of(o.out_id) as u16,
            push_vid: out.vlan.egress_tag(o.bvlan).unwrap_or(0),
            flags: if tun.is_some() { F_TUNNEL } else { 0 }
                | self.redirect_flags(o.in_id, o.out_id),
            bvlan: o.bvlan,
            ..Action::default()
        })
    }

    /// The routed entry for offer `o` (to next hop `nh`) if the pipeline would still
    /// route such a frame the same way now, untranslated: `pipeline::route` and
    /// `l3::decide` with the current snapshot, neighbour cache and Fdbs. Isolated
    /// bridges and flows NAT could touch are refused (see [`nat_free`]).
    fn check_routed(&self, o: &Offer, nh: MacAddr) -> Option<Action> {
        let snap = self.snap.load();
        let now = clock::now_secs();
        let inp = snap.port(o.in_id)?;
        let out = snap.port(o.out_id)?;
        let out_if = self.ready_ifindex(o.out_id)?;
        // Into a tunnel (a remote VTEP on the egress bridge): routed, then
        // encapsulated with the remote's tunnel key, as `check` does for L2. Never
        // from one tunnel into another.
        let tun = self.tun_dev(o.out_id);
        if tun.is_some() && self.tun_dev(o.in_id).is_some() {
            return None;
        }
        if self.ready_ifindex(o.in_id)? != o.key.ifindex
            || inp.lock.is_some()
            || o.bvlan != 0
            || bridge_vlan(&inp.vlan, o.key.vid)? != 0
            || !out.vlan.carries(0)
            || !lab_tools_allow(&snap, inp, out)
        {
            return None;
        }
        let (inb, outb) = (snap.bridges.get(inp.bridge)?, snap.bridges.get(out.bridge)?);
        let (in_rif, out_rif) = (inb.router?, outb.router?);
        let dst = o.key.ip_dst;
        if in_rif.mac.0 != o.key.dst
            || inb.isolated
            || outb.isolated
            || dst.is_unspecified()
            || dst.is_broadcast()
            || dst.is_multicast()
            || snap.router_ip(dst).is_some()
            || !nat_free(&snap, inp.bridge, dst)
        {
            return None;
        }
        let r = snap.routes.lookup(dst)?;
        if r.bridge != out.bridge {
            return None;
        }
        let next = r.via.unwrap_or(dst);
        if NeighCache::lookup(&self.neigh.load(), next, now) != Some(nh)
            || inb.fdb.lookup(0, MacAddr(o.key.src), now) != Some(o.in_id)
            || outb.fdb.lookup(0, nh, now) != Some(o.out_id)
        {
            return None;
        }
        Some(Action {
            out_ifindex: tun.unwrap_or(out_if),
            in_slot: crate::dp::snapshot::slot_of(o.in_id) as u16,
            out_slot: crate::dp::snapshot::slot_of(o.out_id) as u16,
            push_vid: out.vlan.egress_tag(0).unwrap_or(0),
            flags: if tun.is_some() {
                F_ROUTED | F_TUNNEL
            } else {
                F_ROUTED
            } | self.redirect_flags(o.in_id, o.out_id),
            bvlan: 0,
            mtu: outb.mtu.min(0xffff) as u16,
            new_dst: nh.0,
            new_src: out_rif.mac.0,
            ..Action::default()
        })
    }

    /// The routed IPv6 entry for offer `o` (to `dst`, next hop `nh`) if the pipeline
    /// would still route such a frame the same way now, untranslated: `pipeline::route6`
    /// and `l3::decide6` with the current snapshot, neighbour cache (NDP) and Fdbs.
    /// Isolated bridges and flows NAT66 could touch are refused (see [`nat6_free`]).
    fn check_routed6(&self, o: &Offer, nh: MacAddr, dst: Ipv6Addr) -> Option<Action> {
        let snap = self.snap.load();
        let now = clock::now_secs();
        let inp = snap.port(o.in_id)?;
        let out = snap.port(o.out_id)?;
        let out_if = self.ready_ifindex(o.out_id)?;
        if self.ready_ifindex(o.in_id)? != o.key.ifindex
            || self.tun_dev(o.out_id).is_some()
            || self.tun_dev(o.in_id).is_some()
            || inp.lock.is_some()
            || o.bvlan != 0
            || !o.key.ip_dst.is_unspecified()
            || bridge_vlan(&inp.vlan, o.key.vid)? != 0
            || !out.vlan.carries(0)
            || !lab_tools_allow(&snap, inp, out)
        {
            return None;
        }
        let (inb, outb) = (snap.bridges.get(inp.bridge)?, snap.bridges.get(out.bridge)?);
        let (in_rif, out_rif) = (inb.router6?, outb.router6?);
        if in_rif.mac.0 != o.key.dst
            || inb.isolated
            || outb.isolated
            || dst.is_unspecified()
            || dst.is_loopback()
            || dst.is_multicast()
            || crate::wire::ipv6::is_link_local(&dst)
            || snap.router_ip6(&dst).is_some()
            || !nat6_free(&snap, inp.bridge, out.bridge, dst)
        {
            return None;
        }
        let r = snap.routes6.lookup(dst)?;
        if r.bridge != out.bridge {
            return None;
        }
        let next = r.via.unwrap_or(dst);
        if NeighCache::lookup(&self.neigh.load(), next, now) != Some(nh)
            || inb.fdb.lookup(0, MacAddr(o.key.src), now) != Some(o.in_id)
            || outb.fdb.lookup(0, nh, now) != Some(o.out_id)
        {
            return None;
        }
        Some(Action {
            out_ifindex: out_if,
            in_slot: crate::dp::snapshot::slot_of(o.in_id) as u16,
            out_slot: crate::dp::snapshot::slot_of(o.out_id) as u16,
            push_vid: out.vlan.egress_tag(0).unwrap_or(0),
            flags: F_ROUTED6 | self.redirect_flags(o.in_id, o.out_id),
            bvlan: 0,
            mtu: outb.mtu.min(0xffff) as u16,
            new_dst: nh.0,
            new_src: out_rif.mac.0,
            ..Action::default()
        })
    }

    /// The NAT entry for offer `o` (tuple `t` as received, `x` as translated, to next
    /// hop `nh`) if the pipeline would still translate and route such a frame the same
    /// way now: its connection Established in conntrack with the same translation, and
    /// the translated packet routed as [`FastPath::check_routed`] requires (isolation
    /// does not apply: translated traffic is NAT's, as in `l3::decide`).
    fn check_nat(&self, o: &Offer, nh: MacAddr, t: &Tuple, x: &Tuple) -> Option<NatAction> {
        let snap = self.snap.load();
        let now = clock::now_secs();
        let inp = snap.port(o.in_id)?;
        let out = snap.port(o.out_id)?;
        let out_if = self.ready_ifindex(o.out_id)?;
        if self.ready_ifindex(o.in_id)? != o.key.ifindex
            || inp.lock.is_some()
            || o.bvlan != 0
            || bridge_vlan(&inp.vlan, o.key.vid)? != 0
            || !out.vlan.carries(0)
            || !lab_tools_allow(&snap, inp, out)
            || o.key.ip_dst != t.dst
            || t.proto != x.proto
            || !matches!(t.proto, 1 | 6 | 17)
        {
            return None;
        }
        let (inb, outb) = (snap.bridges.get(inp.bridge)?, snap.bridges.get(out.bridge)?);
        let (in_rif, out_rif) = (inb.router?, outb.router?);
        let dst = x.dst;
        if in_rif.mac.0 != o.key.dst
            || dst.is_unspecified()
            || dst.is_broadcast()
            || dst.is_multicast()
            || x.src.is_multicast()
            || x.src.is_broadcast()
            || snap.router_ip(dst).is_some()
        {
            return None;
        }
        let r = snap.routes.lookup(dst)?;
        if r.bridge != out.bridge {
            return None;
        }
        let next = r.via.unwrap_or(dst);
        if NeighCache::lookup(&self.neigh.load(), next, now) != Some(nh)
            || inb.fdb.lookup(0, MacAddr(o.key.src), now) != Some(o.in_id)
            || outb.fdb.lookup(0, nh, now) != Some(o.out_id)
        {
            return None;
        }
        let e = match snap.conntrack.lookup(t, now) {
            Lookup::Found(e) if e.xlate == *x && e.state == CtState::Established => e,
            _ => return None,
        };
        Some(NatAction {
            route: Action {
                out_ifindex: out_if,
                in_slot: crate::dp::snapshot::slot_of(o.in_id) as u16,
                out_slot: crate::dp::snapshot::slot_of(o.out_id) as u16,
                push_vid: out.vlan.egress_tag(0).unwrap_or(0),
                flags: F_ROUTED | F_NAT | self.redirect_flags(o.in_id, o.out_id),
                bvlan: 0,
                mtu: outb.mtu.min(0xffff) as u16,
                new_dst: nh.0,
                new_src: out_rif.mac.0,
                ..Action::default()
            },
            deadline: nat_deadline(t.proto, &e, now)?,
            xlate: *x,
        })
    }

    /// Delete dead entries (old generation, port gone, source or destination no longer
    /// where the Fdb says), and refresh the Fdb entry of the source of every entry hit
    /// since the last walk. Returns the time of this walk.
    fn reconcile(&self, last_scan: u64) -> u64 {
        let started = ktime_coarse();
        let gen = self.gen.load(Ordering::Acquire);
        let snap = self.snap.load();
        let now = clock::now_secs();
        let by_ifindex = self.ports_by_ifindex();
        let mut l = self.loaded.lock();
        let mut dead = Vec::new();
        for (k, a) in l.entries() {
            if a.flags & F_ROUTED != 0 {
                // Routed: alive while the whole decision still holds (route, next hop
                // and its MAC, both Fdb places); hits keep the source learned.
                let alive = a.gen == gen
                    && self.routed_still(&k, &a, &by_ifindex).is_some_and(|in_id| {
                        if a.last_hit > last_scan {
                            if let Some(inp) = snap.port(in_id) {
                                if let Some(b) = snap.bridges.get(inp.bridge) {
                                    b.fdb.refresh(0, MacAddr(k.src), in_id, now);
                                }
                            }
                        }
                        true
                    });
                if !alive {
                    dead.push(k);
                }
                continue;
            }
            let alive = a.gen == gen
                && by_ifindex.get(&k.ifindex).is_some_and(|&in_id| {
                    let Some(inp) = snap.port(in_id) else {
                        return false;
                    };
                    let Some(b) = snap.bridges.get(inp.bridge) else {
                        return false;
                    };
                    let out_ok = by_ifindex.get(&out_key_ifindex(&a)).is_some_and(|&out| {
                        b.fdb.lookup(a.bvlan, MacAddr(k.dst), now) == Some(out)
                    });
                    let src_ok = b.fdb.lookup(a.bvlan, MacAddr(k.src), now) == Some(in_id);
                    if out_ok && src_ok && a.last_hit > last_scan {
                        // Heard by the fast path only: keep the MAC from aging out.
                        b.fdb.refresh(a.bvlan, MacAddr(k.src), in_id, now);
                    }
                    out_ok && src_ok
                });
            if !alive {
                dead.push(k);
            }
        }
        for k in &dead {
            l.remove(k);
        }
        let mut removed = dead.len();
        for (k, a) in l.nat_entries() {
            match self.nat_still(&k, &a, gen, a.route.last_hit > last_scan, &by_ifindex) {
                None => {
                    l.remove_nat(&k);
                    removed += 1;
                }
                // Extended (hit, or the connection refreshed by the slow path): the
                // entry as the program has it now, so that only the hits counted
                // between this read and the write are lost.
                Some(deadline) if deadline > a.deadline + DEADLINE_SLACK_NS => {
                    if let Some(cur) = l.nat_entry(&k) {
                        let _ = l.insert_nat(&k, &NatAction { deadline, ..cur });
                    }
                }
                Some(_) => {}
            }
        }
        for (k, a) in l.route6_entries() {
            let alive = a.gen == gen
                && self
                    .routed6_still(&k, &a, &by_ifindex)
                    .is_some_and(|in_id| {
                        if a.last_hit > last_scan {
                            if let Some(b) =
                                snap.port(in_id).and_then(|p| snap.bridges.get(p.bridge))
                            {
                                b.fdb.refresh(0, MacAddr(k.src), in_id, now);
                            }
                        }
                        true
                    });
            if !alive {
                l.remove_route6(&k);
                removed += 1;
            }
        }
        self.work
            .removed
            .fetch_add(removed as u64, Ordering::Relaxed);
        started
    }

    /// The walk's look at NAT entry (k, a): `None` if it must go (old generation, a
    /// port gone, the connection no longer Established with that translation, the
    /// route or next hop changed), else its deadline from the conntrack entry now. An
    /// entry `hit` since the last walk first refreshes its connection (both
    /// directions, as the pipeline does per packet) and its source's Fdb entry: the
    /// kernel's hits keep the connection alive.
    fn nat_still(
        &self,
        k: &NatKey,
        a: &NatAction,
        gen: u64,
        hit: bool,
        by_ifindex: &std::collections::HashMap<u32, PortId>,
    ) -> Option<u64> {
        if a.route.gen != gen {
            return None;
        }
        let in_id = *by_ifindex.get(&k.ifindex)?;
        let out_id = *by_ifindex.get(&a.route.out_ifindex)?;
        let t = k.tuple;
        let x = a.xlate;
        if hit {
            let snap = self.snap.load();
            let now = clock::now_secs();
            let ct = &snap.conntrack;
            ct.refresh(&t, &x, CtState::Established, now);
            ct.refresh(&x.reversed(), &t.reversed(), CtState::Established, now);
            if let Some(b) = snap.port(in_id).and_then(|p| snap.bridges.get(p.bridge)) {
                b.fdb.refresh(0, MacAddr(k.src), in_id, now);
            }
        }
        let nh = MacAddr(a.route.new_dst);
        let o = Offer {
            key: Key {
                ifindex: k.ifindex,
                vid: k.vid,
                src: k.src,
                dst: k.dst,
                ip_dst: t.dst,
            },
            in_id,
            out_id,
            bvlan: 0,
            next_hop: Some(nh),
            nat: Some((t, x)),
            ip6: None,
        };
        let now = self.check_nat(&o, nh, &t, &x)?;
        let r = &now.route;
        (r.new_src == a.route.new_src && r.mtu == a.route.mtu && r.push_vid == a.route.push_vid)
            .then_some(now.deadline)
    }

    /// The ingress port of routed entry (k, a) if the entry would be installed as it
    /// is now (same egress, next hop MAC, rewrite and MTU).
    fn routed_still(
        &self,
        k: &Key,
        a: &Action,
        by_ifindex: &std::collections::HashMap<u32, PortId>,
    ) -> Option<PortId> {
        let in_id = *by_ifindex.get(&k.ifindex)?;
        let out_id = *by_ifindex.get(&out_key_ifindex(a))?;
        let o = Offer {
            key: *k,
            in_id,
            out_id,
            bvlan: 0,
            next_hop: Some(MacAddr(a.new_dst)),
            nat: None,
            ip6: None,
        };
        let now = self.check_routed(&o, MacAddr(a.new_dst))?;
        (now.new_src == a.new_src && now.mtu == a.mtu && now.push_vid == a.push_vid)
            .then_some(in_id)
    }

    /// [`FastPath::routed_still`] for a routed IPv6 entry.
    fn routed6_still(
        &self,
        k: &Key6,
        a: &Action,
        by_ifindex: &std::collections::HashMap<u32, PortId>,
    ) -> Option<PortId> {
        let in_id = *by_ifindex.get(&k.ifindex)?;
        let out_id = *by_ifindex.get(&a.out_ifindex)?;
        let o = Offer {
            key: Key {
                ifindex: k.ifindex,
                vid: k.vid,
                src: k.src,
                dst: k.dst,
                ip_dst: Ipv4Addr::UNSPECIFIED,
            },
            in_id,
            out_id,
            bvlan: 0,
            next_hop: Some(MacAddr(a.new_dst)),
            nat: None,
            ip6: Some(k.ip6_dst),
        };
        let now = self.check_routed6(&o, MacAddr(a.new_dst), k.ip6_dst)?;
        (now.new_src == a.new_src && now.mtu == a.mtu && now.push_vid == a.push_vid)
            .then_some(in_id)
    }
}

/// The coarse clock (`bpf_ktime_get_coarse_ns`) lags the monotonic clock by up to a
/// tick (1–10 ms): deadlines are set this much early, so the program never translates
/// a frame vswitchd's conntrack would already call expired.
const COARSE_MARGIN: Duration = Duration::from_millis(20);
/// The walk rewrites a NAT entry's deadline only when it moves by more than this.
const DEADLINE_SLACK_NS: u64 = 500_000_000;

/// The kernel deadline (`bpf_ktime_get_coarse_ns`) of a NAT entry for conntrack entry
/// `e` of a `proto` connection: when vswitchd's conntrack would expire it (`last_seen`
/// plus its state's timeout), for TCP no later than the closing timeout from now (a
/// FIN the program sends up moves the connection to Closing, whose shorter timeout
/// the entry must not outlive either; the walk deletes it then, but only at its next
/// round). `None` if that is (nearly) now.
fn nat_deadline(proto: u8, e: &CtEntry, now: u32) -> Option<u64> {
    let mut at = e
        .last_seen
        .saturating_add(conntrack::timeout(proto, e.state));
    if proto == 6 {
        at = at.min(now.saturating_add(conntrack::timeout(proto, CtState::Closing)));
    }
    let left = clock::until(at).checked_sub(COARSE_MARGIN)?;
    Some(ktime_coarse().saturating_add(left.as_nanos() as u64))
}

/// The ifindex an action's egress port is known by in keys and `ready`: the device's
/// own, or for a tunnel entry (out through the external VXLAN device) the remote VTEP
/// port's `TUN_IFINDEX | slot`.
/// Whether netdev `ifindex` is a veth whose peer lives in another namespace.
fn peer_elsewhere(ifindex: u32) -> bool {
    crate::port::sys::netdev::link_info_index(ifindex)
        .map(|i| i.kind.as_deref() == Some("veth") && i.link_in_other_netns)
        .unwrap_or(false)
}

fn out_key_ifindex(a: &Action) -> u32 {
    if a.flags & F_TUNNEL != 0 {
        TUN_IFINDEX | u32::from(a.out_slot)
    } else {
        a.out_ifindex
    }
}

/// Whether no NAT rule can touch a routed flow from bridge `in_bridge` to `dst`, now or
/// for a connection already in conntrack: the bridge is not masqueraded, `dst` is no
/// outside or published address, and no published port targets a host on the bridge
/// (its replies are translated). Conntrack entries exist only for such flows, and
/// `del-masquerade`/`unpublish` flush it.
fn nat_free(snap: &Snapshot, in_bridge: usize, dst: Ipv4Addr) -> bool {
    let nat = &snap.nat;
    if nat.is_empty() {
        return true;
    }
    if nat.masq.get(in_bridge).copied().flatten().is_some() || nat.outside_ips.contains(&dst) {
        return false;
    }
    let net = snap
        .bridges
        .get(in_bridge)
        .and_then(|b| b.router)
        .map(|r| r.net);
    !nat.publish
        .values()
        .flatten()
        .any(|p| p.ip == Some(dst) || net.is_some_and(|n| n.contains(&p.target_ip)))
}

/// The `fp_route6` key of a routed IPv6 offer keyed `k` (its L2 part), to `dst`.
fn key6(k: &Key, dst: Ipv6Addr) -> Key6 {
    Key6 {
        ifindex: k.ifindex,
        vid: k.vid,
        src: k.src,
        dst: k.dst,
        ip6_dst: dst,
    }
}

/// Whether no NAT66 rule can touch a routed IPv6 flow from bridge `in_bridge` to `dst`
/// on `out_bridge`: neither bridge is masqueraded (`masquerade6`) or the outside of a
/// masquerade, `dst` is no published IPv6 address, and no published port targets a
/// host on the ingress bridge (its replies are translated).
fn nat6_free(snap: &Snapshot, in_bridge: usize, out_bridge: usize, dst: Ipv6Addr) -> bool {
    let nat = &snap.nat6;
    if nat.is_empty() {
        return true;
    }
    let masq =
        |b: usize| nat.masq.get(b).copied().flatten().is_some() || nat.masq.contains(&Some(b));
    if masq(in_bridge) || masq(out_bridge) {
        return false;
    }
    let net = snap
        .bridges
        .get(in_bridge)
        .and_then(|b| b.router6)
        .map(|r| r.net);
    !nat.publish
        .values()
        .flatten()
        .any(|p| p.ip == dst || net.is_some_and(|n| n.contains(&p.target_ip)))
}

/// Whether the lab tools let a flow from `inp` to `out` leave userspace: not while a
/// capture runs (`control::capture` bumps the generation when one starts, so entries
/// made before it miss), and never for a port with an impairment or in a mirror, whose
/// frames only the pipeline can delay, drop or copy (`set-port` and `add-mirror`
/// publish a snapshot, which bumps the generation too).
fn lab_tools_allow(snap: &Snapshot, inp: &PortEntry, out: &PortEntry) -> bool {
    !snap.taps.active()
        && inp.impair.is_none()
        && out.impair.is_none()
        && inp.mirror_to.is_empty()
        && out.mirror_to.is_empty()
        && !inp.mirror_out
        && !out.mirror_out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<Mode>(), Ok(Mode::Auto));
        assert_eq!("on".parse::<Mode>(), Ok(Mode::On));
        assert_eq!("off".parse::<Mode>(), Ok(Mode::Off));
        assert!("yes".parse::<Mode>().is_err());
    }

    #[test]
    fn bridge_vlan_follows_the_pipeline() {
        let access = VlanMode::from_conf(Some(10), &[]);
        assert_eq!(bridge_vlan(&access, 0), Some(10));
        assert_eq!(bridge_vlan(&access, 20), None);
        let trunk = VlanMode::from_conf(None, &[10]);
        assert_eq!(bridge_vlan(&trunk, 10), Some(10));
        assert_eq!(bridge_vlan(&trunk, 0), Some(0));
        assert_eq!(bridge_vlan(&trunk, 20), None);
    }

    #[test]
    fn flow_hash_changes_with_generation() {
        let k = Key {
            ifindex: 3,
            vid: 0,
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
            ip_dst: Ipv4Addr::UNSPECIFIED,
        };
        assert_ne!(key_hash(&k, 1), key_hash(&k, 2));
        let routed = Key {
            ip_dst: Ipv4Addr::new(10, 1, 0, 5),
            ..k
        };
        assert_ne!(key_hash(&k, 1), key_hash(&routed, 1));
        assert_eq!(key_hash(&k, 1), key_hash(&k, 1));
    }
}
