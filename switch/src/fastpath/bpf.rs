//! The BPF object (switch/bpf/fastpath.c, compiled by build.rs) as Rust sees it: the
//! programs, the maps, and the byte layout of their keys and values.
//!
//! Keys and values cross the syscall as byte arrays (`[u8; N]` is `aya::Pod`), encoded
//! and decoded here field by field in the C struct layout (host byte order), so no
//! `unsafe impl Pod` is needed for our own structs.

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{SchedClassifier, SocketFilter, TcAttachType};
use aya::Ebpf;
use std::collections::HashMap as StdMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

pub use crate::tables::conntrack::Tuple;

/// The compiled program; empty when build.rs found no clang.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.o"));
/// Why the object is empty ("" when it is not).
static MISSING: &str = include_str!(concat!(env!("OUT_DIR"), "/fastpath.why"));

/// Entries of the flow cache (`FP_MAX_FLOWS` in the C source).
pub const MAX_FLOWS: u32 = 16384;
/// Port slots with fast-path counters (`FP_MAX_SLOTS`); ports in higher slots stay on
/// the slow path.
pub const MAX_SLOTS: usize = 4096;

/// Action flag: `bpf_redirect_peer` (into a veth peer's ingress).
pub const F_PEER: u16 = 1;
/// Action flag: redirect into the egress device's *ingress* (`FP_F_INGRESS`): an
/// internal port's TAP, whose host receives the frame as if vswitchd had written it
/// to the TAP fd.
pub const F_INGRESS: u16 = 2;
/// Action flag: a routed entry (MACs rewritten, TTL - 1; `FP_F_ROUTED`).
pub const F_ROUTED: u16 = 4;
/// Action flag: an established NAT flow (`FP_F_NAT`, entries of `fp_nat`).
pub const F_NAT: u16 = 8;
/// Entries of the NAT flow map (`FP_MAX_NAT`).
pub const MAX_NAT: u32 = 16384;

const NAT_KEY_LEN: usize = 32;
const NAT_ACTION_LEN: usize = 80;
/// Action flag: out through VXLAN, the tunnel key of the remote VTEP port in
/// `out_slot` (`FP_F_TUNNEL`).
pub const F_TUNNEL: u16 = 16;
/// Keys name a remote VTEP port (no ifindex of its own) as this | its slot
/// (`FP_TUN_IFINDEX`).
pub const TUN_IFINDEX: u32 = 0x8000_0000;

const KEY_LEN: usize = 24;
/// Action flag: a routed IPv6 entry (`FP_F_ROUTED6`, entries of `fp_route6`: MACs
/// rewritten, hop limit - 1).
pub const F_ROUTED6: u16 = 32;
const KEY6_LEN: usize = 36;
const ACTION_LEN: usize = 64;

/// Why the fast path cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("this vswitchd was built without the kernel fast path: {0}")]
    NotBuilt(String),
    #[error("cannot load the fast path programs: {0}")]
    Load(String),
    #[error("cannot attach the fast path to {port}: {why}")]
    Attach { port: String, why: String },
    #[error("fast path map {map}: {why}")]
    Map { map: &'static str, why: String },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |e| BpfError::Map {
        map,
        why: e.to_string(),
    }
}

/// `struct fp_key`: what a cached decision is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub ifindex: u32,
    /// VLAN id as received (0: untagged or priority-tagged).
    pub vid: u16,
    pub src: [u8; 6],
    pub dst: [u8; 6],
    /// The IPv4 destination of a routed entry; `0.0.0.0` for an L2 entry.
    pub ip_dst: Ipv4Addr,
}

impl Key {
    pub fn encode(&self) -> [u8; KEY_LEN] {
        let mut b = [0u8; KEY_LEN];
        b[0..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[4..6].copy_from_slice(&self.vid.to_ne_bytes());
        b[6..12].copy_from_slice(&self.src);
        b[12..18].copy_from_slice(&self.dst);
        b[20..24].copy_from_slice(&self.ip_dst.octets());
        b
    }

    pub fn decode(b: &[u8; KEY_LEN]) -> Key {
        let mut src = [0u8; 6];
        let mut dst = [0u8; 6];
        src.copy_from_slice(&b[6..12]);
        dst.copy_from_slice(&b[12..18]);
        Key {
            ifindex: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            vid: u16::from_ne_bytes([b[4], b[5]]),
            src,
            dst,
            ip_dst: Ipv4Addr::new(b[20], b[21], b[22], b[23]),
        }
    }
}

/// `struct fp6_key`: a routed IPv6 entry's key (the L2 key to the router's MAC, plus
/// the IPv6 destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key6 {
    pub ifindex: u32,
    pub vid: u16,
    pub src: [u8; 6],
    /// The router's MAC on the ingress bridge.
    pub dst: [u8; 6],
    pub ip6_dst: Ipv6Addr,
}

impl Key6 {
    pub fn encode(&self) -> [u8; KEY6_LEN] {
        let mut b = [0u8; KEY6_LEN];
        b[0..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[4..6].copy_from_slice(&self.vid.to_ne_bytes());
        b[6..12].copy_from_slice(&self.src);
        b[12..18].copy_from_slice(&self.dst);
        b[20..36].copy_from_slice(&self.ip6_dst.octets());
        b
    }

    pub fn decode(b: &[u8; KEY6_LEN]) -> Key6 {
        let mut src = [0u8; 6];
        let mut dst = [0u8; 6];
        let mut ip = [0u8; 16];
        src.copy_from_slice(&b[6..12]);
        dst.copy_from_slice(&b[12..18]);
        ip.copy_from_slice(&b[20..36]);
        Key6 {
            ifindex: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            vid: u16::from_ne_bytes([b[4], b[5]]),
            src,
            dst,
            ip6_dst: Ipv6Addr::from(ip),
        }
    }
}

/// `struct fp_action`: the decision, and the program's hit counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action {
    pub gen: u64,
    pub out_ifindex: u32,
    pub in_slot: u16,
    pub out_slot: u16,
    /// Tag to push on egress (0: untagged).
    pub push_vid: u16,
    pub flags: u16,
    /// The VLAN inside the bridge.
    pub bvlan: u16,
    /// Routed: the egress bridge's MTU (larger packets go to vswitchd).
    pub mtu: u16,
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns` of the last hit (0: never).
    pub last_hit: u64,
    /// Routed: the new destination MAC (the next hop's).
    pub new_dst: [u8; 6],
    /// Routed: the new source MAC (the router's on the egress bridge).
    pub new_src: [u8; 6],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(x)
}

impl Action {
    pub fn encode(&self) -> [u8; ACTION_LEN] {
        let mut b = [0u8; ACTION_LEN];
        b[0..8].copy_from_slice(&self.gen.to_ne_bytes());
        b[8..12].copy_from_slice(&self.out_ifindex.to_ne_bytes());
        b[12..14].copy_from_slice(&self.in_slot.to_ne_bytes());
        b[14..16].copy_from_slice(&self.out_slot.to_ne_bytes());
        b[16..18].copy_from_slice(&self.push_vid.to_ne_bytes());
        b[18..20].copy_from_slice(&self.flags.to_ne_bytes());
        b[20..22].copy_from_slice(&self.bvlan.to_ne_bytes());
        b[22..24].copy_from_slice(&self.mtu.to_ne_bytes());
        b[24..32].copy_from_slice(&self.packets.to_ne_bytes());
        b[32..40].copy_from_slice(&self.bytes.to_ne_bytes());
        b[40..48].copy_from_slice(&self.last_hit.to_ne_bytes());
        b[48..54].copy_from_slice(&self.new_dst);
        b[54..60].copy_from_slice(&self.new_src);
        b
    }

    pub fn decode(b: &[u8; ACTION_LEN]) -> Action {
        let mut new_dst = [0u8; 6];
        let mut new_src = [0u8; 6];
        new_dst.copy_from_slice(&b[48..54]);
        new_src.copy_from_slice(&b[54..60]);
        Action {
            gen: u64_at(b, 0),
            out_ifindex: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            in_slot: u16_at(b, 12),
            out_slot: u16_at(b, 14),
            push_vid: u16_at(b, 16),
            flags: u16_at(b, 18),
            bvlan: u16_at(b, 20),
            mtu: u16_at(b, 22),
            packets: u64_at(b, 24),
            bytes: u64_at(b, 32),
            last_hit: u64_at(b, 40),
            new_dst,
            new_src,
        }
    }
}

/// `struct fp_nat_key`: an established NAT flow as received. Addresses and ports are
/// host values here and network byte order in the map; ICMP echo carries its id as
/// conntrack does (request: `sport`, reply: `dport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatKey {
    pub ifindex: u32,
    pub vid: u16,
    pub src: [u8; 6],
    /// The router's MAC on the ingress bridge.
    pub dst: [u8; 6],
    pub tuple: Tuple,
}

impl NatKey {
    pub fn encode(&self) -> [u8; NAT_KEY_LEN] {
        let mut b = [0u8; NAT_KEY_LEN];
        b[0..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[4..6].copy_from_slice(&self.vid.to_ne_bytes());
        b[6..12].copy_from_slice(&self.src);
        b[12..18].copy_from_slice(&self.dst);
        b[18] = self.tuple.proto;
        b[20..32].copy_from_slice(&tuple_bytes(&self.tuple));
        b
    }

    pub fn decode(b: &[u8; NAT_KEY_LEN]) -> NatKey {
        let mut src = [0u8; 6];
        let mut dst = [0u8; 6];
        src.copy_from_slice(&b[6..12]);
        dst.copy_from_slice(&b[12..18]);
        NatKey {
            ifindex: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            vid: u16::from_ne_bytes([b[4], b[5]]),
            src,
            dst,
            tuple: tuple_from(b[18], &b[20..32]),
        }
    }
}

/// src, dst, sport, dport as they sit in a frame (network byte order).
fn tuple_bytes(t: &Tuple) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&t.src.octets());
    b[4..8].copy_from_slice(&t.dst.octets());
    b[8..10].copy_from_slice(&t.sport.to_be_bytes());
    b[10..12].copy_from_slice(&t.dport.to_be_bytes());
    b
}

fn tuple_from(proto: u8, b: &[u8]) -> Tuple {
    Tuple {
        proto,
        src: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        dst: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        sport: u16::from_be_bytes([b[8], b[9]]),
        dport: u16::from_be_bytes([b[10], b[11]]),
    }
}

/// `struct fp_nat_action`: the routed rewrite of [`Action`], the tuple the frame
/// leaves with, and the deadline after which frames go to vswitchd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatAction {
    /// `gen`, `out_ifindex`, slots, `push_vid`, `flags`, `mtu`, counters and MACs as in
    /// a routed entry (`bvlan` is not stored: always 0).
    pub route: Action,
    /// `bpf_ktime_get_coarse_ns` after which the entry no longer translates.
    pub deadline: u64,
    /// What the frame becomes (`proto` as the key's).
    pub xlate: Tuple,
}

impl NatAction {
    pub fn encode(&self) -> [u8; NAT_ACTION_LEN] {
        let r = &self.route;
        let mut b = [0u8; NAT_ACTION_LEN];
        b[0..8].copy_from_slice(&r.gen.to_ne_bytes());
        b[8..12].copy_from_slice(&r.out_ifindex.to_ne_bytes());
        b[12..14].copy_from_slice(&r.in_slot.to_ne_bytes());
        b[14..16].copy_from_slice(&r.out_slot.to_ne_bytes());
        b[16..18].copy_from_slice(&r.push_vid.to_ne_bytes());
        b[18..20].copy_from_slice(&r.flags.to_ne_bytes());
        b[20..22].copy_from_slice(&r.mtu.to_ne_bytes());
        b[24..32].copy_from_slice(&r.packets.to_ne_bytes());
        b[32..40].copy_from_slice(&r.bytes.to_ne_bytes());
        b[40..48].copy_from_slice(&r.last_hit.to_ne_bytes());
        b[48..56].copy_from_slice(&self.deadline.to_ne_bytes());
        b[56..62].copy_from_slice(&r.new_dst);
        b[62..68].copy_from_slice(&r.new_src);
        b[68..80].copy_from_slice(&tuple_bytes(&self.xlate));
        b
    }

    pub fn decode(b: &[u8; NAT_ACTION_LEN], proto: u8) -> NatAction {
        let mut new_dst = [0u8; 6];
        let mut new_src = [0u8; 6];
        new_dst.copy_from_slice(&b[56..62]);
        new_src.copy_from_slice(&b[62..68]);
        NatAction {
            route: Action {
                gen: u64_at(b, 0),
                out_ifindex: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
                in_slot: u16_at(b, 12),
                out_slot: u16_at(b, 14),
                push_vid: u16_at(b, 16),
                flags: u16_at(b, 18),
                bvlan: 0,
                mtu: u16_at(b, 20),
                packets: u64_at(b, 24),
                bytes: u64_at(b, 32),
                last_hit: u64_at(b, 40),
                new_dst,
                new_src,
            },
            deadline: u64_at(b, 48),
            xlate: tuple_from(proto, &b[68..80]),
        }
    }
}

/// Frames and bytes the fast path forwarded for one port (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// The loaded object: programs, their attachments, and the maps vswitchd writes.
pub struct Loaded {
    /// Owns the programs and their tcx links: dropping it detaches everything.
    ebpf: Ebpf,
    flows: HashMap<MapData, [u8; KEY_LEN], [u8; ACTION_LEN]>,
    /// Established NAT flows.
    nat: HashMap<MapData, [u8; NAT_KEY_LEN], [u8; NAT_ACTION_LEN]>,
    /// Routed IPv6 entries.
    route6: HashMap<MapData, [u8; KEY6_LEN], [u8; ACTION_LEN]>,
    stats: PerCpuArray<MapData, [u64; 4]>,
    /// tcx links by ifindex.
    links: StdMap<u32, aya::programs::tc::SchedClassifierLinkId>,
    /// `fp_tun_ports`: tunnel parameters by port slot (`struct fp_tun_port`).
    tun_ports: Array<MapData, [u8; 16]>,
    /// `fp_tun_remotes`: (VNI, remote) → slot.
    tun_remotes: HashMap<MapData, [u8; 8], u32>,
    /// `fp_tun_chan`: external device ifindex → slow-path TAP ifindex.
    tun_chan: HashMap<MapData, u32, u32>,
    /// `fp_tun_rx` links by the external device's ifindex.
    tun_links: StdMap<u32, aya::programs::tc::SchedClassifierLinkId>,
    /// `fp_tap_out` links (tcx egress of internal ports' TAPs) by ifindex.
    tap_links: StdMap<u32, aya::programs::tc::SchedClassifierLinkId>,
    /// The loaded egress program: `fp_tap_out`, or `fp_tap_out_nc` on a kernel whose
    /// tc programs lack `bpf_get_netns_cookie`.
    tap_prog: &'static str,
}

/// The generation array, apart so that bumping it (workers, rarely) never waits for a
/// map walk (the fast-path thread).
pub struct GenMap(Array<MapData, u64>);

impl GenMap {
    pub fn set(&mut self, gen: u64) -> Result<(), BpfError> {
        self.0.set(0, gen, 0).map_err(map_err("fp_gen"))
    }
}

/// Load and verify both programs; no attachment yet.
pub fn load() -> Result<(Loaded, GenMap), BpfError> {
    if OBJECT.is_empty() {
        return Err(BpfError::NotBuilt(MISSING.trim().to_string()));
    }
    let mut ebpf = Ebpf::load(OBJECT).map_err(|e| BpfError::Load(chain(&e)))?;
    let load_err = |what: &str, e: aya::programs::ProgramError| {
        BpfError::Load(format!("{what}: {}", verifier_msg(&e)))
    };
    {
        let p: &mut SchedClassifier = ebpf
            .program_mut("fp_tc")
            .ok_or_else(|| BpfError::Load("fp_tc missing from the object".into()))?
            .try_into()
            .map_err(|e| load_err("fp_tc", e))?;
        p.load().map_err(|e| load_err("fp_tc", e))?;
    }
    let tap_prog = load_tap_out(&mut ebpf)?;
    {
        let p: &mut SchedClassifier = ebpf
            .program_mut("fp_tun_rx")
            .ok_or_else(|| BpfError::Load("fp_tun_rx missing from the object".into()))?
            .try_into()
            .map_err(|e| load_err("fp_tun_rx", e))?;
        p.load().map_err(|e| load_err("fp_tun_rx", e))?;
    }
    {
        let p: &mut SocketFilter = ebpf
            .program_mut("fp_sock")
            .ok_or_else(|| BpfError::Load("fp_sock missing from the object".into()))?
            .try_into()
            .map_err(|e| load_err("fp_sock", e))?;
        p.load().map_err(|e| load_err("fp_sock", e))?;
    }
    let take = |ebpf: &mut Ebpf, name: &'static str| {
        ebpf.take_map(name).ok_or(BpfError::Map {
            map: name,
            why: "missing from the object".into(),
        })
    };
    let flows = HashMap::try_from(take(&mut ebpf, "fp_flows")?).map_err(map_err("fp_flows"))?;
    let nat = HashMap::try_from(take(&mut ebpf, "fp_nat")?).map_err(map_err("fp_nat"))?;
    let route6 = HashMap::try_from(take(&mut ebpf, "fp_route6")?).map_err(map_err("fp_route6"))?;
    let stats = PerCpuArray::try_from(take(&mut ebpf, "fp_stats")?).map_err(map_err("fp_stats"))?;
    let gen = Array::try_from(take(&mut ebpf, "fp_gen")?).map_err(map_err("fp_gen"))?;
    let tun_ports =
        Array::try_from(take(&mut ebpf, "fp_tun_ports")?).map_err(map_err("fp_tun_ports"))?;
    let tun_remotes =
        HashMap::try_from(take(&mut ebpf, "fp_tun_remotes")?).map_err(map_err("fp_tun_remotes"))?;
    let tun_chan =
        HashMap::try_from(take(&mut ebpf, "fp_tun_chan")?).map_err(map_err("fp_tun_chan"))?;
    Ok((
        Loaded {
            ebpf,
            flows,
            nat,
            route6,
            stats,
            links: StdMap::new(),
            tun_ports,
            tun_remotes,
            tun_chan,
            tun_links: StdMap::new(),
            tap_links: StdMap::new(),
            tap_prog,
        },
        GenMap(gen),
    ))
}

/// Load the internal ports' egress program: `fp_tap_out` (which sends frames of
/// sockets in another namespace up: its TAP was moved), else `fp_tap_out_nc` (kernels
/// before 6.15, whose tc programs lack `bpf_get_netns_cookie`); then record vswitchd's
/// netns cookie for it (`fp_netns_probe`, run once). Returns the program's name.
fn load_tap_out(ebpf: &mut Ebpf) -> Result<&'static str, BpfError> {
    use aya::programs::{TestRun, TestRunOptions};
    let prog = |ebpf: &mut Ebpf, name: &'static str| -> Result<(), BpfError> {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| BpfError::Load(format!("{name} missing from the object")))?
            .try_into()
            .map_err(|e| BpfError::Load(format!("{name}: {}", verifier_msg(&e))))?;
        p.load()
            .map_err(|e| BpfError::Load(format!("{name}: {}", verifier_msg(&e))))
    };
    if let Err(e) = prog(ebpf, "fp_tap_out") {
        tracing::info!(error = %e, "fast path: internal ports without the namespace check (fp_tap_out_nc)");
        prog(ebpf, "fp_tap_out_nc")?;
        return Ok("fp_tap_out_nc");
    }
    // The probe needs the same helper, so it loads where fp_tap_out did. Without a
    // recorded cookie (0) fp_tap_out checks nothing: forwarding is as without it.
    let probed = prog(ebpf, "fp_netns_probe").and_then(|()| {
        let p: &SchedClassifier = ebpf
            .program("fp_netns_probe")
            .ok_or_else(|| BpfError::Load("fp_netns_probe missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| BpfError::Load(e.to_string()))?;
        let frame = [0u8; 64];
        p.test_run(TestRunOptions {
            data_in: Some(&frame),
            ..TestRunOptions::new()
        })
        .map(|_| ())
        .map_err(|e| BpfError::Load(format!("fp_netns_probe: {e}")))
    });
    if let Err(e) = probed {
        tracing::info!(error = %e, "fast path: vswitchd's namespace not recorded; internal ports without the namespace check");
    }
    Ok("fp_tap_out")
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The verifier's last lines, when that is why loading failed.
fn verifier_msg(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!("{io_error}; verifier: {}", tail.join(" | "))
        }
        other => other.to_string(),
    }
}

/// Attach the loaded tc program `prog` at `point` of device `name`; the error says why.
fn attach_tc(
    ebpf: &mut Ebpf,
    prog: &str,
    name: &str,
    point: TcAttachType,
) -> Result<aya::programs::tc::SchedClassifierLinkId, String> {
    let tc: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("{prog} missing"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    if aya::util::KernelVersion::current().is_ok_and(|v| v < aya::util::KernelVersion::new(6, 6, 0))
    {
        // Before tcx: the clsact qdisc carries the filter (an existing one is fine).
        let _ = aya::programs::tc::qdisc_add_clsact(name);
    }
    tc.attach(name, point).map_err(|e| e.to_string())
}

/// Detach `link` from the tc program `prog` (a program not loaded has no links: Ok).
fn detach_tc(
    ebpf: &mut Ebpf,
    prog: &str,
    link: aya::programs::tc::SchedClassifierLinkId,
) -> Result<(), aya::programs::ProgramError> {
    let Some(p) = ebpf.program_mut(prog) else {
        return Ok(());
    };
    let tc: Result<&mut SchedClassifier, _> = p.try_into();
    match tc {
        Ok(tc) => tc.detach(link),
        Err(_) => Ok(()),
    }
}

impl Loaded {
    /// Attach the socket filter to `socket` and the tc program at `name`'s ingress.
    pub fn attach(
        &mut self,
        name: &str,
        ifindex: u32,
        socket: BorrowedFd<'_>,
    ) -> Result<(), BpfError> {
        let err = |why: String| BpfError::Attach {
            port: name.to_string(),
            why,
        };
        let sock: &SocketFilter = self
            .ebpf
            .program("fp_sock")
            .ok_or_else(|| err("fp_sock missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
        // The filter first: once the tc program redirects, the socket must already hide
        // what it redirects.
        sock.attach(socket).map_err(|e| err(e.to_string()))?;
        match attach_tc(&mut self.ebpf, "fp_tc", name, TcAttachType::Ingress) {
            Ok(link) => {
                self.links.insert(ifindex, link);
                Ok(())
            }
            Err(why) => {
                // Nothing will be redirected, so the filter must hide nothing either.
                let _ = SocketFilter::detach(socket);
                Err(err(why))
            }
        }
    }

    /// Detach the tc program from `ifindex` (the socket filter goes with its socket).
    pub fn detach(&mut self, ifindex: u32) {
        let Some(link) = self.links.remove(&ifindex) else {
            return;
        };
        if let Err(e) = detach_tc(&mut self.ebpf, "fp_tc", link) {
            tracing::warn!(ifindex, error = %e, "cannot detach the fast path");
        }
    }

    /// Attach `fp_tap_out` at the tcx egress of the internal port's TAP `name`
    /// (`ifindex`, in vswitchd's namespace). No socket filter: the TAP fd is not a
    /// packet socket, and what the program redirects never reaches it.
    pub fn attach_tap(&mut self, name: &str, ifindex: u32) -> Result<(), BpfError> {
        if self.tap_links.contains_key(&ifindex) {
            return Ok(());
        }
        let link = attach_tc(&mut self.ebpf, self.tap_prog, name, TcAttachType::Egress).map_err(
            |why| BpfError::Attach {
                port: name.to_string(),
                why,
            },
        )?;
        self.tap_links.insert(ifindex, link);
        Ok(())
    }

    /// Detach `fp_tap_out` from the TAP that had `ifindex` when it was attached (it
    /// may have moved to another namespace since: the link still names it).
    pub fn detach_tap(&mut self, ifindex: u32) {
        let Some(link) = self.tap_links.remove(&ifindex) else {
            return;
        };
        if let Err(e) = detach_tc(&mut self.ebpf, self.tap_prog, link) {
            tracing::warn!(ifindex, error = %e, "cannot detach the fast path from a TAP");
        }
    }

    /// Attach `fp_tun_rx` at the ingress of the external VXLAN device `name` (once per
    /// device) and point its decap misses at the slow-path TAP `chan_ifindex`.
    pub fn attach_tunnel(
        &mut self,
        name: &str,
        ifindex: u32,
        chan_ifindex: u32,
    ) -> Result<(), BpfError> {
        if self.tun_links.contains_key(&ifindex) {
            return Ok(());
        }
        // The channel first: from the attach on, every miss needs it.
        self.tun_chan
            .insert(ifindex, chan_ifindex, 0)
            .map_err(map_err("fp_tun_chan"))?;
        let link =
            attach_tc(&mut self.ebpf, "fp_tun_rx", name, TcAttachType::Ingress).map_err(|why| {
                BpfError::Attach {
                    port: name.to_string(),
                    why,
                }
            })?;
        self.tun_links.insert(ifindex, link);
        Ok(())
    }

    /// Detach `fp_tun_rx` from device `ifindex` (its last remote VTEP port went).
    pub fn detach_tunnel(&mut self, ifindex: u32) {
        let _ = self.tun_chan.remove(&ifindex);
        let Some(link) = self.tun_links.remove(&ifindex) else {
            return;
        };
        // The device may be gone already (then so is the link).
        let _ = detach_tc(&mut self.ebpf, "fp_tun_rx", link);
    }

    /// Tunnel parameters of the remote VTEP port in `slot`, and the reverse lookup
    /// (VNI, remote) → slot the decap program uses.
    pub fn set_tun_port(
        &mut self,
        slot: usize,
        vni: u32,
        remote: Ipv4Addr,
        local: Ipv4Addr,
    ) -> Result<(), BpfError> {
        let mut v = [0u8; 16];
        v[0..4].copy_from_slice(&vni.to_ne_bytes());
        v[4..8].copy_from_slice(&u32::from(remote).to_ne_bytes());
        v[8..12].copy_from_slice(&u32::from(local).to_ne_bytes());
        v[12..16].copy_from_slice(&1u32.to_ne_bytes());
        self.tun_ports
            .set(slot as u32, v, 0)
            .map_err(map_err("fp_tun_ports"))?;
        self.tun_remotes
            .insert(tun_remote_key(vni, remote), slot as u32, 0)
            .map_err(map_err("fp_tun_remotes"))
    }

    /// Forget the remote VTEP port in `slot` (VNI `vni`, address `remote`).
    pub fn clear_tun_port(&mut self, slot: usize, vni: u32, remote: Ipv4Addr) {
        let _ = self.tun_ports.set(slot as u32, [0u8; 16], 0);
        let _ = self.tun_remotes.remove(&tun_remote_key(vni, remote));
    }

    /// Zero the counters of `slot` (a port taking over a slot).
    pub fn reset_stats(&mut self, slot: usize) -> Result<(), BpfError> {
        let n = aya::util::nr_cpus().map_err(|(_, e)| BpfError::Map {
            map: "fp_stats",
            why: e.to_string(),
        })?;
        let zeros = PerCpuValues::try_from(vec![[0u64; 4]; n]).map_err(|e| BpfError::Map {
            map: "fp_stats",
            why: e.to_string(),
        })?;
        self.stats
            .set(slot as u32, zeros, 0)
            .map_err(map_err("fp_stats"))
    }

    /// The counters of `slot`, summed over CPUs.
    pub fn stats(&self, slot: usize) -> PortTotals {
        let mut t = PortTotals::default();
        if let Ok(v) = self.stats.get(&(slot as u32), 0) {
            for c in v.iter() {
                t.rx_packets += c[0];
                t.rx_bytes += c[1];
                t.tx_packets += c[2];
                t.tx_bytes += c[3];
            }
        }
        t
    }

    pub fn insert(&mut self, key: &Key, action: &Action) -> Result<(), BpfError> {
        self.flows
            .insert(key.encode(), action.encode(), 0)
            .map_err(map_err("fp_flows"))
    }

    pub fn remove(&mut self, key: &Key) {
        // A key already gone (evicted by the LRU, or removed) is what we wanted.
        let _ = self.flows.remove(&key.encode());
    }

    /// Every entry (a walk of the map: two syscalls per entry).
    pub fn entries(&self) -> Vec<(Key, Action)> {
        self.flows
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (Key::decode(&k), Action::decode(&v)))
            .collect()
    }

    pub fn insert_route6(&mut self, key: &Key6, action: &Action) -> Result<(), BpfError> {
        self.route6
            .insert(key.encode(), action.encode(), 0)
            .map_err(map_err("fp_route6"))
    }

    pub fn remove_route6(&mut self, key: &Key6) {
        // Gone already (LRU eviction, removed): what we wanted.
        let _ = self.route6.remove(&key.encode());
    }

    /// Every routed IPv6 entry (a walk of the map).
    pub fn route6_entries(&self) -> Vec<(Key6, Action)> {
        self.route6
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (Key6::decode(&k), Action::decode(&v)))
            .collect()
    }

    pub fn insert_nat(&mut self, key: &NatKey, action: &NatAction) -> Result<(), BpfError> {
        self.nat
            .insert(key.encode(), action.encode(), 0)
            .map_err(map_err("fp_nat"))
    }

    pub fn remove_nat(&mut self, key: &NatKey) {
        // Gone already (LRU eviction, removed): what we wanted.
        let _ = self.nat.remove(&key.encode());
    }

    /// The NAT entry of `key` as the program has it now (fresh counters).
    pub fn nat_entry(&self, key: &NatKey) -> Option<NatAction> {
        self.nat
            .get(&key.encode(), 0)
            .ok()
            .map(|v| NatAction::decode(&v, key.tuple.proto))
    }

    /// Every NAT entry (a walk of the map).
    pub fn nat_entries(&self) -> Vec<(NatKey, NatAction)> {
        self.nat
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                let k = NatKey::decode(&k);
                (k, NatAction::decode(&v, k.tuple.proto))
            })
            .collect()
    }
}

/// `struct fp_tun_remote` (host byte order, as `struct bpf_tunnel_key` has them).
fn tun_remote_key(vni: u32, remote: Ipv4Addr) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&vni.to_ne_bytes());
    k[4..8].copy_from_slice(&u32::from(remote).to_ne_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::programs::{TestRun, TestRunOptions};

    /// `TC_ACT_OK`, `TC_ACT_REDIRECT` (linux/pkt_cls.h).
    const TC_ACT_OK: u32 = 0;
    const TC_ACT_REDIRECT: u32 = 7;
    /// `BPF_PROG_TEST_RUN` builds its skb on the loopback device: `skb->ifindex` is 1.
    const LO: u32 = 1;

    /// The programs, loaded; `None` (test skipped) without the privileges to load BPF,
    /// unless VSWITCH_REQUIRE_NETNS=1 (CI), where that is a failure. `BPF_PROG_TEST_RUN`
    /// runs a program on a frame built in memory: nothing is attached or sent.
    fn loaded() -> Option<(Loaded, GenMap)> {
        match load() {
            Ok(l) => Some(l),
            Err(e) => {
                if std::env::var("VSWITCH_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
                    panic!("cannot load the fast path: {e}");
                }
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// Pin this thread to one CPU: the socket filter's verdict is per CPU, as it is when
    /// both programs run in one softirq.
    fn pin() {
        let mut set = nix::sched::CpuSet::new();
        let cpu = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .ok()
            .and_then(|s| (0..nix::sched::CpuSet::count()).find(|&c| s.is_set(c).unwrap_or(false)))
            .unwrap_or(0);
        set.set(cpu).expect("cpu in range");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
    }

    fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0x45; 46]);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn key() -> Key {
        Key {
            ifindex: LO,
            vid: 0,
            src: A,
            dst: B,
            ip_dst: Ipv4Addr::UNSPECIFIED,
        }
    }

    fn action(gen: u64) -> Action {
        Action {
            gen,
            out_ifindex: LO,
            in_slot: 3,
            out_slot: 4,
            ..Action::default()
        }
    }

    fn run_tc(l: &Loaded, f: &[u8]) -> u32 {
        run_tc_out(l, f).0
    }

    /// The tc program's verdict and the frame as it left the program.
    fn run_tc_out(l: &Loaded, f: &[u8]) -> (u32, Vec<u8>) {
        run_prog_out(l, "fp_tc", f)
    }

    /// The verdict of tc program `prog` and the frame as it left the program.
    fn run_prog_out(l: &Loaded, prog: &str, f: &[u8]) -> (u32, Vec<u8>) {
        let p: &SchedClassifier = l.ebpf.program(prog).unwrap().try_into().unwrap();
        let mut out = vec![0u8; f.len() + 64];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("test run {prog}: {e}"));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn run_sock(l: &Loaded, f: &[u8]) -> u32 {
        let p: &SocketFilter = l.ebpf.program("fp_sock").unwrap().try_into().unwrap();
        // A packet tap gives a SOCK_RAW socket's filter the whole frame; the test run
        // gives a socket filter what follows the Ethernet header. One more header in
        // front makes the filter see `f` as the tap would show it.
        let mut data = f[..14].to_vec();
        data.extend_from_slice(f);
        p.test_run(TestRunOptions {
            data_in: Some(&data),
            ..TestRunOptions::new()
        })
        .expect("test run fp_sock")
        .return_value
    }

    #[test]
    fn miss_passes_hit_redirects_and_counts_stale_misses() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(5).unwrap();
        let f = frame(B, A, 0x0800);
        assert_eq!(run_tc(&l, &f), TC_ACT_OK, "empty cache");
        l.insert(&key(), &action(5)).unwrap();
        assert_eq!(run_tc(&l, &f), TC_ACT_REDIRECT, "cached");
        let e = l.entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1.packets, 1);
        assert_eq!(e[0].1.bytes, f.len() as u64);
        assert!(e[0].1.last_hit > 0);
        let (rx, tx) = (l.stats(3), l.stats(4));
        assert_eq!((rx.rx_packets, rx.rx_bytes), (1, f.len() as u64));
        assert_eq!((tx.tx_packets, tx.tx_bytes), (1, f.len() as u64));
        // Another source, another VLAN, another port: not this entry.
        assert_eq!(
            run_tc(&l, &frame(B, [2, 0, 0, 0, 0, 0xc], 0x0800)),
            TC_ACT_OK
        );
        // A tag left in the frame (QinQ): vswitchd's.
        assert_eq!(run_tc(&l, &frame(B, A, 0x8100)), TC_ACT_OK);
        // A new generation: the entry is dead.
        g.set(6).unwrap();
        assert_eq!(run_tc(&l, &f), TC_ACT_OK, "stale generation");
        assert_eq!(l.stats(3).rx_packets, 1);
    }

    /// The socket filter decides, the tc program follows: a cache change between the
    /// two (on one CPU, as inside one softirq) changes nothing for that frame.
    #[test]
    fn tc_follows_the_socket_filters_verdict() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(1).unwrap();
        let f = frame(B, A, 0x0800);
        // Hit at the tap: hidden from vswitchd (0 bytes kept)...
        l.insert(&key(), &action(1)).unwrap();
        assert_eq!(run_sock(&l, &f), 0, "hit hidden from the socket");
        // ...so it must be redirected even though the entry went in between.
        l.remove(&key());
        assert_eq!(run_tc(&l, &f), TC_ACT_REDIRECT, "verdict of the tap");
        // The verdict is used once: the next frame without a tap verdict misses.
        assert_eq!(run_tc(&l, &f), TC_ACT_OK);
        // Miss at the tap: vswitchd has the frame, so tc must not forward it too.
        assert!(run_sock(&l, &f) > 0, "miss goes to the socket");
        l.insert(&key(), &action(1)).unwrap();
        assert_eq!(run_tc(&l, &f), TC_ACT_OK, "verdict of the tap");
        // A verdict for another frame is not taken for this one.
        assert!(run_sock(&l, &frame(A, B, 0x0800)) > 0);
        assert_eq!(run_tc(&l, &f), TC_ACT_REDIRECT, "own lookup");
    }

    /// The router's MAC on the ingress bridge, the one on the egress bridge, the next hop.
    const R_IN: [u8; 6] = [2, 0x76, 0, 0, 0, 1];
    const R_OUT: [u8; 6] = [2, 0x76, 0, 0, 0, 2];
    const NH: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    const DST_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

    /// An IPv4/UDP frame from A to the router, to DST_IP, `len` bytes of IP packet,
    /// with a valid header checksum.
    fn ip_frame(ttl: u8, id: u16, len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&R_IN);
        f.extend_from_slice(&A);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0u8; len];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = ttl;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 5]);
        ip[16..20].copy_from_slice(&DST_IP.octets());
        set_ip_checksum(&mut ip[..20]);
        ip[20..22].copy_from_slice(&4000u16.to_be_bytes());
        ip[22..24].copy_from_slice(&5000u16.to_be_bytes());
        ip[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
        f.extend_from_slice(&ip);
        f
    }

    fn set_ip_checksum(h: &mut [u8]) {
        h[10..12].copy_from_slice(&[0, 0]);
        let c = crate::wire::ipv4::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// Whether the IPv4 header at 14.. carries a correct checksum (recomputed from
    /// scratch, not incrementally).
    fn ip_checksum_ok(f: &[u8]) -> bool {
        let mut h = f[14..34].to_vec();
        let stored = [h[10], h[11]];
        set_ip_checksum(&mut h);
        h[10..12] == stored
    }

    fn routed_key() -> Key {
        Key {
            ifindex: LO,
            vid: 0,
            src: A,
            dst: R_IN,
            ip_dst: DST_IP,
        }
    }

    fn routed_action(gen: u64, mtu: u16) -> Action {
        Action {
            gen,
            out_ifindex: LO,
            in_slot: 5,
            out_slot: 6,
            flags: F_ROUTED,
            mtu,
            new_dst: NH,
            new_src: R_OUT,
            ..Action::default()
        }
    }

    #[test]
    fn routed_hit_rewrites_macs_and_ttl_with_a_valid_checksum() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(2).unwrap();
        l.insert(&routed_key(), &routed_action(2, 1500)).unwrap();
        // TTLs and ids chosen so that some updates carry around the ones' complement.
        for (ttl, id) in [
            (64u8, 0u16),
            (2, 0xffff),
            (255, 0x1234),
            (128, 0xbfff),
            (17, 1),
        ] {
            let f = ip_frame(ttl, id, 100);
            assert!(ip_checksum_ok(&f));
            let (rv, out) = run_tc_out(&l, &f);
            assert_eq!(rv, TC_ACT_REDIRECT, "ttl {ttl}");
            assert_eq!(out.len(), f.len());
            assert_eq!(out[0..6], NH, "destination: the next hop");
            assert_eq!(out[6..12], R_OUT, "source: the egress router MAC");
            assert_eq!(out[14 + 8], ttl - 1, "TTL");
            assert!(ip_checksum_ok(&out), "checksum after ttl {ttl} id {id:#x}");
            // Nothing else changed.
            assert_eq!(out[12..22], f[12..22]);
            assert_eq!(out[23..24], f[23..24]);
            assert_eq!(out[26..], f[26..]);
        }
        let e = l.entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1.packets, 5);
        assert_eq!(l.stats(5).rx_packets, 5);
        assert_eq!(l.stats(6).tx_packets, 5);
        // The socket filter hides a routed hit from vswitchd, and tc carries it out
        // even if the entry went in between.
        let f = ip_frame(64, 7, 100);
        assert_eq!(run_sock(&l, &f), 0, "routed hit hidden from the socket");
        l.remove(&routed_key());
        let (rv, out) = run_tc_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "verdict of the tap");
        assert_eq!((out[0..6].to_vec(), out[14 + 8]), (NH.to_vec(), 63));
        assert!(ip_checksum_ok(&out));
    }

    #[test]
    fn routed_entries_leave_what_needs_the_router_to_vswitchd() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(3).unwrap();
        l.insert(&routed_key(), &routed_action(3, 200)).unwrap();
        let up = |l: &Loaded, f: &[u8], why: &str| {
            // Both halves agree: the socket keeps the frame, tc passes it unchanged.
            assert!(run_sock(l, f) > 0, "{why}: not hidden from vswitchd");
            let (rv, out) = run_tc_out(l, f);
            assert_eq!(rv, TC_ACT_OK, "{why}");
            assert_eq!(out, f, "{why}: frame changed");
            let (rv, _) = run_tc_out(l, f);
            assert_eq!(rv, TC_ACT_OK, "{why}: own lookup");
        };
        up(
            &l,
            &ip_frame(1, 0, 100),
            "TTL 1 (time exceeded from vswitchd)",
        );
        up(&l, &ip_frame(0, 0, 100), "TTL 0");
        up(&l, &ip_frame(64, 0, 201), "over the egress MTU");
        let mut f = ip_frame(64, 0, 100);
        f[14] = 0x46; // one word of options
        set_ip_checksum(&mut f[14..38]);
        up(&l, &f, "IP options");
        let mut f = ip_frame(64, 0, 100);
        f[14 + 6] = 0x20; // MF
        set_ip_checksum(&mut f[14..34]);
        up(&l, &f, "first fragment");
        let mut f = ip_frame(64, 0, 100);
        f[14 + 7] = 0x10; // offset
        set_ip_checksum(&mut f[14..34]);
        up(&l, &f, "later fragment");
        let mut f = ip_frame(64, 0, 100);
        f[14 + 12] = 224;
        set_ip_checksum(&mut f[14..34]);
        up(&l, &f, "multicast source");
        let mut f = ip_frame(64, 0, 100);
        f[14 + 19] = 6; // 10.1.0.6: another destination
        set_ip_checksum(&mut f[14..34]);
        up(&l, &f, "another destination");
        // At the MTU exactly: routed.
        assert_eq!(run_tc(&l, &ip_frame(64, 0, 200)), TC_ACT_REDIRECT);
        // A new generation: the entry is dead.
        g.set(4).unwrap();
        up(&l, &ip_frame(64, 0, 100), "stale generation");
        // An L2 entry does not route: without F_ROUTED the IPv4 key is not taken.
        l.insert(
            &routed_key(),
            &Action {
                flags: 0,
                ..routed_action(4, 1500)
            },
        )
        .unwrap();
        up(
            &l,
            &ip_frame(64, 0, 100),
            "routed key without the routed flag",
        );
    }

    const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 5);

    /// An IPv6/UDP frame from A to the router, to DST6, with `payload` bytes after the
    /// 40-byte header.
    fn ip6_frame(hlim: u8, payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&R_IN);
        f.extend_from_slice(&A);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let mut ip = vec![0u8; 40 + payload];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        ip[6] = 17;
        ip[7] = hlim;
        ip[8..24].copy_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 5).octets());
        ip[24..40].copy_from_slice(&DST6.octets());
        ip[40..42].copy_from_slice(&4000u16.to_be_bytes());
        ip[42..44].copy_from_slice(&5000u16.to_be_bytes());
        ip[44..46].copy_from_slice(&(payload as u16).to_be_bytes());
        for (i, b) in ip[48..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f.extend_from_slice(&ip);
        f
    }

    fn routed6_key() -> Key6 {
        Key6 {
            ifindex: LO,
            vid: 0,
            src: A,
            dst: R_IN,
            ip6_dst: DST6,
        }
    }

    fn routed6_action(gen: u64, mtu: u16) -> Action {
        Action {
            flags: F_ROUTED6,
            ..routed_action(gen, mtu)
        }
    }

    #[test]
    fn routed6_hit_rewrites_macs_and_hop_limit() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(2).unwrap();
        l.insert_route6(&routed6_key(), &routed6_action(2, 1500))
            .unwrap();
        for hlim in [64u8, 2, 255] {
            let f = ip6_frame(hlim, 100);
            let (rv, out) = run_tc_out(&l, &f);
            assert_eq!(rv, TC_ACT_REDIRECT, "hop limit {hlim}");
            assert_eq!(out.len(), f.len());
            assert_eq!(out[0..6], NH, "destination: the next hop");
            assert_eq!(out[6..12], R_OUT, "source: the egress router MAC");
            assert_eq!(out[14 + 7], hlim - 1, "hop limit");
            // Nothing else changed.
            assert_eq!(out[12..21], f[12..21]);
            assert_eq!(out[22..], f[22..]);
        }
        let e = l.route6_entries();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, routed6_key());
        assert_eq!(e[0].1.packets, 3);
        assert_eq!(l.stats(5).rx_packets, 3);
        assert_eq!(l.stats(6).tx_packets, 3);
        // The socket filter hides the hit, and tc carries it out even if the entry
        // went in between: one decision per frame.
        let f = ip6_frame(64, 100);
        assert_eq!(run_sock(&l, &f), 0, "routed hit hidden from the socket");
        l.remove_route6(&routed6_key());
        let (rv, out) = run_tc_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "verdict of the tap");
        assert_eq!((out[0..6].to_vec(), out[14 + 7]), (NH.to_vec(), 63));
        // Without the entry and without a verdict: up.
        assert_eq!(run_tc(&l, &f), TC_ACT_OK, "gone");
        // A verdict for another destination is not followed by a frame to this one.
        l.insert_route6(&routed6_key(), &routed6_action(2, 1500))
            .unwrap();
        assert_eq!(run_sock(&l, &f), 0);
        l.remove_route6(&routed6_key());
        let mut other = f.clone();
        other[14 + 39] = 6;
        assert_eq!(
            run_tc(&l, &other),
            TC_ACT_OK,
            "verdict tied to its destination"
        );
    }

    #[test]
    fn routed6_entries_leave_what_needs_the_router_to_vswitchd() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(3).unwrap();
        l.insert_route6(&routed6_key(), &routed6_action(3, 200))
            .unwrap();
        let up = |l: &Loaded, f: &[u8], why: &str| {
            assert!(run_sock(l, f) > 0, "{why}: not hidden from vswitchd");
            let (rv, out) = run_tc_out(l, f);
            assert_eq!(rv, TC_ACT_OK, "{why}");
            assert_eq!(out, f, "{why}: frame changed");
            let (rv, _) = run_tc_out(l, f);
            assert_eq!(rv, TC_ACT_OK, "{why}: own lookup");
        };
        up(
            &l,
            &ip6_frame(1, 100),
            "hop limit 1 (time exceeded from vswitchd)",
        );
        up(&l, &ip6_frame(0, 100), "hop limit 0");
        up(
            &l,
            &ip6_frame(64, 161),
            "over the egress MTU (packet too big)",
        );
        let mut f = ip6_frame(64, 100);
        f[14 + 6] = 0; // hop-by-hop options
        up(&l, &f, "hop-by-hop header");
        let mut f = ip6_frame(64, 100);
        f[14 + 6] = 44;
        up(&l, &f, "fragment header");
        let mut f = ip6_frame(64, 100);
        f[14 + 8] = 0xfe;
        f[14 + 9] = 0x80;
        up(&l, &f, "link-local source");
        let mut f = ip6_frame(64, 100);
        f[14 + 8] = 0xff;
        up(&l, &f, "multicast source");
        // A link-local destination: its own key, which is never installed, but even
        // an entry for it (the installer refuses one) is not taken.
        let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 5);
        l.insert_route6(
            &Key6 {
                ip6_dst: ll,
                ..routed6_key()
            },
            &routed6_action(3, 1500),
        )
        .unwrap();
        let mut f = ip6_frame(64, 100);
        f[14 + 24..14 + 40].copy_from_slice(&ll.octets());
        up(&l, &f, "link-local destination");
        let mut f = ip6_frame(64, 100);
        f[14 + 39] = 6;
        up(&l, &f, "another destination");
        // At the MTU exactly: routed.
        assert_eq!(run_tc(&l, &ip6_frame(64, 160)), TC_ACT_REDIRECT);
        // A new generation: the entry is dead.
        g.set(4).unwrap();
        up(&l, &ip6_frame(64, 100), "stale generation");
        // Without the routed flag the entry is not taken.
        l.insert_route6(
            &routed6_key(),
            &Action {
                flags: 0,
                ..routed6_action(4, 1500)
            },
        )
        .unwrap();
        up(&l, &ip6_frame(64, 100), "entry without the routed6 flag");
        // An IPv4 routed entry never routes an IPv6 frame and vice versa.
        l.insert_route6(&routed6_key(), &routed6_action(4, 1500))
            .unwrap();
        assert_eq!(run_tc(&l, &ip6_frame(64, 100)), TC_ACT_REDIRECT);
        up(&l, &ip_frame(64, 0, 100), "IPv4 frame, IPv6 entry only");
    }

    #[test]
    fn key6_round_trip() {
        let k = Key6 {
            ifindex: 7,
            vid: 12,
            src: A,
            dst: R_IN,
            ip6_dst: DST6,
        };
        assert_eq!(Key6::decode(&k.encode()), k);
    }

    /// `offsetof(struct __sk_buff, gso_size)` and `sizeof(struct __sk_buff)`
    /// (linux/bpf.h: a stable UAPI layout).
    const SKB_GSO_SIZE: usize = 176;
    const SKB_LEN: usize = 192;

    /// The tc program on `f` as a GSO super-frame with segments of `gso_size` bytes
    /// of payload (the test run copies gso_size from the context into the skb).
    fn run_tc_gso(l: &Loaded, f: &[u8], gso_size: u32) -> u32 {
        let p: &SchedClassifier = l.ebpf.program("fp_tc").unwrap().try_into().unwrap();
        let mut ctx = vec![0u8; SKB_LEN];
        ctx[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
        let mut out = vec![0u8; f.len() + 64];
        p.test_run(TestRunOptions {
            data_in: Some(f),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .expect("test run fp_tc with a GSO context")
        .return_value
    }

    /// A GSO super-frame is judged by its segments (IP + TCP header + gso_size), as
    /// vswitchd's router does, not by its total length.
    #[test]
    fn routed_gso_frames_are_judged_by_their_segments() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(8).unwrap();
        l.insert(&routed_key(), &routed_action(8, 1500)).unwrap();
        // 2000 bytes of IP packet (a test run takes at most a page), TCP with a
        // 32-byte header (doff 8: timestamps).
        let mut f = ip_frame(64, 1, 2000);
        f[14 + 9] = 6;
        f[14 + 20 + 12] = 8 << 4;
        set_ip_checksum(&mut f[14..34]);
        assert_eq!(run_tc(&l, &f), TC_ACT_OK, "not GSO: 2000 > 1500");
        assert_eq!(
            run_tc_gso(&l, &f, 1448),
            TC_ACT_REDIRECT,
            "20 + 32 + 1448 = 1500 segments"
        );
        assert_eq!(run_tc_gso(&l, &f, 1449), TC_ACT_OK, "1501-byte segments");
        // UDP (USO): 20 + 8 + gso_size.
        let f = ip_frame(64, 1, 2000);
        assert_eq!(run_tc_gso(&l, &f, 1472), TC_ACT_REDIRECT);
        assert_eq!(run_tc_gso(&l, &f, 1473), TC_ACT_OK);
        // Another protocol as GSO: left to vswitchd.
        let mut f = ip_frame(64, 1, 2000);
        f[14 + 9] = 47;
        set_ip_checksum(&mut f[14..34]);
        assert_eq!(run_tc_gso(&l, &f, 1000), TC_ACT_OK);
    }

    /// An IPv6 GSO super-frame is judged by its segments (40 + TCP header + gso_size,
    /// or 40 + 8 + gso_size for UDP), as `l3::decide6` does.
    #[test]
    fn routed6_gso_frames_are_judged_by_their_segments() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(8).unwrap();
        l.insert_route6(&routed6_key(), &routed6_action(8, 1500))
            .unwrap();
        // 2000 bytes of payload, TCP with a 32-byte header (doff 8).
        let mut f = ip6_frame(64, 2000);
        f[14 + 6] = 6;
        f[14 + 40 + 12] = 8 << 4;
        assert_eq!(run_tc(&l, &f), TC_ACT_OK, "not GSO: 2040 > 1500");
        assert_eq!(
            run_tc_gso(&l, &f, 1428),
            TC_ACT_REDIRECT,
            "40 + 32 + 1428 = 1500 segments"
        );
        assert_eq!(run_tc_gso(&l, &f, 1429), TC_ACT_OK, "1501-byte segments");
        let f = ip6_frame(64, 2000);
        assert_eq!(
            run_tc_gso(&l, &f, 1452),
            TC_ACT_REDIRECT,
            "UDP 40 + 8 + 1452"
        );
        assert_eq!(run_tc_gso(&l, &f, 1453), TC_ACT_OK);
        // ICMPv6 as GSO: left to vswitchd.
        let mut f = ip6_frame(64, 2000);
        f[14 + 6] = 58;
        assert_eq!(run_tc_gso(&l, &f, 1000), TC_ACT_OK);
    }

    // ---- Established NAT flows ----

    const C1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const OUT_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn tup(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
        Tuple {
            proto,
            src,
            sport,
            dst,
            dport,
        }
    }

    /// The L4 checksum of the IPv4 packet at 14.. computed from scratch (TCP/UDP with
    /// the pseudo-header, ICMP without), with the field taken as 0.
    fn l4_checksum(f: &[u8]) -> u16 {
        let ip = &f[14..];
        let proto = ip[9];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let mut l4 = ip[20..total].to_vec();
        let at = match proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let mut acc = 0;
        if proto != 1 {
            let mut ph = Vec::new();
            ph.extend_from_slice(&ip[12..20]);
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            acc = crate::wire::csum::sum16(&ph, 0);
        }
        let c = !crate::wire::csum::fold(crate::wire::csum::sum16(&l4, acc));
        if proto == 17 && c == 0 {
            0xffff
        } else {
            c
        }
    }

    fn l4_field(f: &[u8]) -> u16 {
        let at = 14
            + 20
            + match f[14 + 9] {
                6 => 16,
                17 => 6,
                _ => 2,
            };
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    /// A frame from A to the router for tuple `t` (ICMP: echo request for (id, 0),
    /// reply for (0, id)) with `payload` bytes, both checksums valid (UDP: 0 with
    /// `udp_zero`), TCP flags `tcp_flags`.
    fn nat_frame(t: &Tuple, payload: usize, tcp_flags: u8, udp_zero: bool) -> Vec<u8> {
        let l4_len = match t.proto {
            6 => 20,
            17 => 8,
            _ => 8,
        } + payload;
        let mut f = Vec::new();
        f.extend_from_slice(&R_IN);
        f.extend_from_slice(&A);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0u8; 20 + l4_len];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = t.proto;
        ip[12..16].copy_from_slice(&t.src.octets());
        ip[16..20].copy_from_slice(&t.dst.octets());
        set_ip_checksum(&mut ip[..20]);
        let l4 = &mut ip[20..];
        for (i, b) in l4.iter_mut().enumerate().skip(8) {
            *b = (i * 7 + 3) as u8;
        }
        match t.proto {
            1 => {
                l4[0] = if t.sport != 0 { 8 } else { 0 };
                l4[4..6].copy_from_slice(&(t.sport | t.dport).to_be_bytes());
                l4[6..8].copy_from_slice(&1u16.to_be_bytes());
            }
            _ => {
                l4[0..2].copy_from_slice(&t.sport.to_be_bytes());
                l4[2..4].copy_from_slice(&t.dport.to_be_bytes());
                if t.proto == 6 {
                    l4[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
                    l4[12] = 5 << 4;
                    l4[13] = tcp_flags;
                    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
                } else {
                    l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                }
            }
        }
        f.extend_from_slice(&ip);
        let c = if udp_zero { 0 } else { l4_checksum(&f) };
        let at = f.len() - l4_len
            + match t.proto {
                6 => 16,
                17 => 6,
                _ => 2,
            };
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn nat_key(t: Tuple) -> NatKey {
        NatKey {
            ifindex: LO,
            vid: 0,
            src: A,
            dst: R_IN,
            tuple: t,
        }
    }

    fn nat_action(gen: u64, x: Tuple, deadline: u64) -> NatAction {
        NatAction {
            route: Action {
                flags: F_ROUTED | F_NAT,
                ..routed_action(gen, 1500)
            },
            deadline,
            xlate: x,
        }
    }

    fn far_future() -> u64 {
        u64::MAX / 2
    }

    /// The frame `out` is `f` routed and translated to `x`: MACs, TTL, addresses,
    /// ports or echo id as `x`, everything else unchanged, both checksums right
    /// (recomputed from scratch).
    fn assert_translated(f: &[u8], out: &[u8], x: &Tuple, what: &str) {
        assert_eq!(out.len(), f.len(), "{what}: length");
        assert_eq!(out[0..6], NH, "{what}: destination MAC");
        assert_eq!(out[6..12], R_OUT, "{what}: source MAC");
        assert_eq!(out[14 + 8], f[14 + 8] - 1, "{what}: TTL");
        assert!(ip_checksum_ok(out), "{what}: IP header checksum");
        assert_eq!(out[26..30], x.src.octets(), "{what}: source address");
        assert_eq!(out[30..34], x.dst.octets(), "{what}: destination address");
        let l4 = &out[34..];
        if x.proto == 1 {
            assert_eq!(
                u16::from_be_bytes([l4[4], l4[5]]),
                x.sport | x.dport,
                "{what}: echo id"
            );
            assert_eq!(l4[..2], f[34..36], "{what}: ICMP type changed");
            assert_eq!(l4[6..], f[40..], "{what}: ICMP payload changed");
        } else {
            assert_eq!(u16::from_be_bytes([l4[0], l4[1]]), x.sport, "{what}: sport");
            assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), x.dport, "{what}: dport");
            let c = if x.proto == 6 { 16 } else { 6 };
            assert_eq!(l4[4..c], f[38..34 + c], "{what}: L4 header changed");
            assert_eq!(l4[c + 2..], f[34 + c + 2..], "{what}: payload changed");
        }
        assert_eq!(l4_field(out), l4_checksum(out), "{what}: L4 checksum");
    }

    /// TCP through masquerade (source address and port), its replies (destination), a
    /// published port (destination address and port) and a hairpin (all four): both
    /// checksums right after the program's incremental updates.
    #[test]
    fn nat_tcp_rewrites_with_valid_checksums() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(9).unwrap();
        let cases = [
            (
                "masquerade, port kept",
                tup(6, C1, 40000, OUT_HOST, 5201),
                tup(6, OUTSIDE, 40000, OUT_HOST, 5201),
            ),
            (
                "masquerade, port moved",
                tup(6, C1, 40001, OUT_HOST, 5201),
                tup(6, OUTSIDE, 33333, OUT_HOST, 5201),
            ),
            (
                "masquerade reply",
                tup(6, OUT_HOST, 5201, OUTSIDE, 33333),
                tup(6, OUT_HOST, 5201, C1, 40001),
            ),
            (
                "published port",
                tup(6, OUT_HOST, 50000, OUTSIDE, 8080),
                tup(6, OUT_HOST, 50000, C1, 80),
            ),
            (
                "hairpin",
                tup(6, Ipv4Addr::new(10, 0, 0, 6), 50001, OUTSIDE, 8080),
                tup(6, GW, 32999, C1, 80),
            ),
        ];
        for (what, t, x) in cases {
            l.insert_nat(&nat_key(t), &nat_action(9, x, far_future()))
                .unwrap();
            for payload in [0, 1, 1000] {
                let f = nat_frame(&t, payload, 0x10, false);
                let (rv, out) = run_tc_out(&l, &f);
                assert_eq!(rv, TC_ACT_REDIRECT, "{what}");
                assert_translated(&f, &out, &x, what);
                // The socket filter hides it, tc follows its verdict.
                assert_eq!(run_sock(&l, &f), 0, "{what}: hidden from vswitchd");
                let (rv, out) = run_tc_out(&l, &f);
                assert_eq!(rv, TC_ACT_REDIRECT, "{what}: verdict of the tap");
                assert_translated(&f, &out, &x, what);
            }
        }
        let (_, a) = l
            .nat_entries()
            .into_iter()
            .find(|(k, _)| k.tuple.sport == 40000)
            .unwrap();
        assert_eq!(a.route.packets, 6);
        assert!(a.route.last_hit > 0);
    }

    /// UDP: with a checksum, and with none (0 stays 0, BPF_F_MARK_MANGLED_0); a
    /// translation whose checksum comes out as 0 is sent as 0xffff.
    #[test]
    fn nat_udp_rewrites_with_valid_checksums_and_zero_stays_zero() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(10).unwrap();
        let t = tup(17, C1, 5353, OUT_HOST, 53);
        let x = tup(17, OUTSIDE, 40053, OUT_HOST, 53);
        l.insert_nat(&nat_key(t), &nat_action(10, x, far_future()))
            .unwrap();
        for payload in [0, 3, 512] {
            let f = nat_frame(&t, payload, 0, false);
            let (rv, out) = run_tc_out(&l, &f);
            assert_eq!(rv, TC_ACT_REDIRECT);
            assert_translated(&f, &out, &x, "udp");
            let f = nat_frame(&t, payload, 0, true);
            let (rv, out) = run_tc_out(&l, &f);
            assert_eq!(rv, TC_ACT_REDIRECT);
            assert_eq!(l4_field(&out), 0, "no checksum stays no checksum");
            assert_eq!(out[26..30], OUTSIDE.octets());
            assert_eq!(out[34..36], 40053u16.to_be_bytes());
            assert!(ip_checksum_ok(&out));
        }
        // A translated port whose correct checksum is 0: sent as 0xffff (0 would mean
        // "none"). Found by trying ports.
        let t0 = tup(17, C1, 6000, OUT_HOST, 53);
        let f = nat_frame(&t0, 10, 0, false);
        let sport = (1..=u16::MAX)
            .find(|&p| {
                let mut g = f.clone();
                g[26..30].copy_from_slice(&OUTSIDE.octets());
                g[34..36].copy_from_slice(&p.to_be_bytes());
                l4_checksum(&g) == 0xffff && {
                    // The true complement sum is 0 (not an ordinary 0xffff).
                    g[40..42].copy_from_slice(&[0, 0]);
                    let mut ph = Vec::new();
                    ph.extend_from_slice(&g[26..34]);
                    ph.extend_from_slice(&[0, 17]);
                    ph.extend_from_slice(&18u16.to_be_bytes());
                    let acc = crate::wire::csum::sum16(&ph, 0);
                    !crate::wire::csum::fold(crate::wire::csum::sum16(&g[34..], acc)) == 0
                }
            })
            .expect("some port sums to 0");
        let x0 = tup(17, OUTSIDE, sport, OUT_HOST, 53);
        l.insert_nat(&nat_key(t0), &nat_action(10, x0, far_future()))
            .unwrap();
        let (rv, out) = run_tc_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT);
        assert_eq!(l4_field(&out), 0xffff, "computed 0 goes out as 0xffff");
        assert_translated(&f, &out, &x0, "udp to 0");
    }

    /// ICMP echo: the request's id (masquerade) and the reply's id (back inside), with
    /// the ICMP checksum (no pseudo-header) and the IP header checksum right.
    #[test]
    fn nat_icmp_echo_rewrites_with_valid_checksums() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(11).unwrap();
        let cases = [
            (
                "request",
                tup(1, C1, 0x1234, OUT_HOST, 0),
                tup(1, OUTSIDE, 0x8001, OUT_HOST, 0),
            ),
            (
                "request, id kept",
                tup(1, C1, 0xfffe, OUT_HOST, 0),
                tup(1, OUTSIDE, 0xfffe, OUT_HOST, 0),
            ),
            (
                "reply",
                tup(1, OUT_HOST, 0, OUTSIDE, 0x8001),
                tup(1, OUT_HOST, 0, C1, 0x1234),
            ),
        ];
        for (what, t, x) in cases {
            l.insert_nat(&nat_key(t), &nat_action(11, x, far_future()))
                .unwrap();
            let f = nat_frame(&t, 56, 0, false);
            let (rv, out) = run_tc_out(&l, &f);
            assert_eq!(rv, TC_ACT_REDIRECT, "{what}");
            assert_translated(&f, &out, &x, what);
        }
        // A reply to the request's key is another flow: not translated.
        let f = nat_frame(&tup(1, C1, 0, OUT_HOST, 0x1234), 56, 0, false);
        assert_eq!(run_tc(&l, &f), TC_ACT_OK);
    }

    /// What changes a connection or outlives it goes to vswitchd: TCP SYN, FIN and RST,
    /// frames past the entry's deadline, entries of an old generation. Both halves
    /// agree: the socket keeps the frame and tc passes it unchanged.
    #[test]
    fn nat_entries_leave_state_changes_and_expired_flows_to_vswitchd() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(12).unwrap();
        let t = tup(6, C1, 40000, OUT_HOST, 5201);
        let x = tup(6, OUTSIDE, 40000, OUT_HOST, 5201);
        l.insert_nat(&nat_key(t), &nat_action(12, x, far_future()))
            .unwrap();
        let up = |l: &Loaded, f: &[u8], why: &str| {
            assert!(run_sock(l, f) > 0, "{why}: not hidden from vswitchd");
            let (rv, out) = run_tc_out(l, f);
            assert_eq!(rv, TC_ACT_OK, "{why}");
            assert_eq!(out, f, "{why}: frame changed");
            let (rv, _) = run_tc_out(l, f);
            assert_eq!(rv, TC_ACT_OK, "{why}: own lookup");
        };
        assert_eq!(run_tc(&l, &nat_frame(&t, 10, 0x18, false)), TC_ACT_REDIRECT);
        up(&l, &nat_frame(&t, 0, 0x02, false), "SYN");
        up(&l, &nat_frame(&t, 0, 0x12, false), "SYN-ACK");
        up(&l, &nat_frame(&t, 0, 0x11, false), "FIN");
        up(&l, &nat_frame(&t, 0, 0x04, false), "RST");
        let mut f = nat_frame(&t, 10, 0x10, false);
        f[14 + 8] = 1;
        set_ip_checksum(&mut f[14..34]);
        up(&l, &f, "TTL 1");
        let other = tup(6, C1, 40002, OUT_HOST, 5201);
        up(
            &l,
            &nat_frame(&other, 10, 0x10, false),
            "another connection",
        );
        // Past the deadline: vswitchd's conntrack may have ended the connection.
        let now = l.nat_entries()[0].1.route.last_hit;
        l.insert_nat(&nat_key(t), &nat_action(12, x, now)).unwrap();
        up(&l, &nat_frame(&t, 10, 0x10, false), "past the deadline");
        l.insert_nat(&nat_key(t), &nat_action(12, x, far_future()))
            .unwrap();
        assert_eq!(run_tc(&l, &nat_frame(&t, 10, 0x10, false)), TC_ACT_REDIRECT);
        // A new generation (del-masquerade, unpublish: a snapshot change).
        g.set(13).unwrap();
        up(&l, &nat_frame(&t, 10, 0x10, false), "stale generation");
    }

    /// The socket filter's NAT verdict is taken only for the frame it was made for:
    /// a stale verdict with the same MACs and destination but another tuple is not
    /// applied (tc looks up by itself), and a verdict whose entry went in between is
    /// still carried out.
    #[test]
    fn nat_verdict_is_tied_to_its_tuple() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(14).unwrap();
        let t = tup(17, C1, 7000, OUT_HOST, 53);
        let x = tup(17, OUTSIDE, 47000, OUT_HOST, 53);
        l.insert_nat(&nat_key(t), &nat_action(14, x, far_future()))
            .unwrap();
        let f = nat_frame(&t, 20, 0, false);
        assert_eq!(run_sock(&l, &f), 0);
        l.remove_nat(&nat_key(t));
        let (rv, out) = run_tc_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "verdict of the tap");
        assert_translated(&f, &out, &x, "after removal");
        l.insert_nat(&nat_key(t), &nat_action(14, x, far_future()))
            .unwrap();
        assert_eq!(run_sock(&l, &f), 0);
        // No tap for this frame: another port, same MACs and destination.
        let other = nat_frame(&tup(17, C1, 7001, OUT_HOST, 53), 20, 0, false);
        let (rv, out) = run_tc_out(&l, &other);
        assert_eq!(rv, TC_ACT_OK, "another tuple's verdict applied");
        assert_eq!(out, other);
    }

    #[test]
    fn nat_key_and_action_round_trip() {
        let k = NatKey {
            ifindex: 7,
            vid: 0,
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0x76, 0, 0, 0, 2],
            tuple: tup(6, C1, 40000, OUT_HOST, 5201),
        };
        assert_eq!(NatKey::decode(&k.encode()), k);
        // Network byte order where the program compares it with the frame.
        assert_eq!(k.encode()[28..32], [0x9c, 0x40, 0x14, 0x51]);
        let a = NatAction {
            route: Action {
                packets: 3,
                bytes: 400,
                last_hit: 5,
                ..routed_action(2, 1500)
            },
            deadline: 99,
            xlate: tup(6, OUTSIDE, 33333, OUT_HOST, 5201),
        };
        assert_eq!(NatAction::decode(&a.encode(), 6), a);
    }

    /// `TC_ACT_SHOT` (linux/pkt_cls.h).
    const TC_ACT_SHOT: u32 = 2;

    /// An entry into a tunnel sets the remote VTEP port's tunnel key and redirects the
    /// frame unchanged (the device encapsulates); without tunnel parameters for its
    /// slot the frame is dropped, never sent into the device without a key.
    #[test]
    fn tunnel_entry_sets_the_key_and_redirects() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(9).unwrap();
        let f = frame(B, A, 0x0800);
        let a = Action {
            flags: F_TUNNEL,
            out_slot: 7,
            ..action(9)
        };
        l.insert(&key(), &a).unwrap();
        assert_eq!(run_tc(&l, &f), TC_ACT_SHOT, "no tunnel parameters");
        let (remote, local) = (Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 1));
        l.set_tun_port(7, 42, remote, local).unwrap();
        let (rv, out) = run_tc_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "into the device");
        assert_eq!(out, f, "the frame itself is not touched");
        assert_eq!(l.stats(7).tx_packets, 2);
        l.clear_tun_port(7, 42, remote);
        assert_eq!(run_tc(&l, &f), TC_ACT_SHOT, "parameters cleared");
        // The decap program needs the tunnel metadata a VXLAN device attaches; a frame
        // without it is dropped.
        let p: &SchedClassifier = l.ebpf.program("fp_tun_rx").unwrap().try_into().unwrap();
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(&f),
                ..TestRunOptions::new()
            })
            .expect("test run fp_tun_rx");
        assert_eq!(r.return_value, TC_ACT_SHOT);
    }

    /// `fp_tap_out`'s verdict and the frame as it left the program.
    fn run_tap_out(l: &Loaded, f: &[u8]) -> (u32, Vec<u8>) {
        run_prog_out(l, "fp_tap_out", f)
    }

    /// The egress program of an internal port's TAP decides alone, with its own
    /// lookup: a miss passes the frame unchanged (on to vswitchd's TAP fd), a hit is
    /// counted and redirected (never reaching the fd), routed and NAT entries are
    /// rewritten by the same body as `fp_tc`'s, a stale generation misses, and the
    /// socket filter's per-CPU verdict (left for another port's `fp_tc`) is neither
    /// taken nor consumed. (`BPF_PROG_TEST_RUN` does not carry out the redirect, so
    /// `F_INGRESS` itself is not observable here: the integration tests in
    /// integration/tests/fastpath.rs `internal_*` see the host receive the frames.)
    #[test]
    fn tap_out_looks_up_by_itself_and_redirects_hits() {
        let Some((mut l, mut g)) = loaded() else {
            return;
        };
        pin();
        g.set(21).unwrap();
        let f = frame(B, A, 0x0800);
        let into_host = Action {
            flags: F_INGRESS,
            in_slot: 8,
            out_slot: 9,
            ..action(21)
        };
        let (rv, out) = run_tap_out(&l, &f);
        assert_eq!(rv, TC_ACT_OK, "empty cache: on to vswitchd");
        assert_eq!(out, f, "a miss leaves the frame alone");
        // A hit verdict of the socket filter (another port, same CPU) is not the
        // egress program's to follow...
        l.insert(&key(), &action(21)).unwrap();
        assert_eq!(run_sock(&l, &f), 0);
        l.remove(&key());
        assert_eq!(
            run_tap_out(&l, &f).0,
            TC_ACT_OK,
            "followed fp_sock's verdict"
        );
        // ...nor to consume: fp_tc still finds it.
        assert_eq!(
            run_tc(&l, &f),
            TC_ACT_REDIRECT,
            "fp_sock's verdict was consumed"
        );
        // A miss verdict does not stop the egress program's own hit either.
        assert!(run_sock(&l, &f) > 0);
        l.insert(&key(), &into_host).unwrap();
        let (rv, out) = run_tap_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "own lookup: hit");
        assert_eq!(out, f, "an L2 hit is not rewritten");
        assert_eq!(
            run_tc(&l, &f),
            TC_ACT_OK,
            "fp_tc follows its own miss verdict"
        );
        let e = l.entries();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].1.packets, e[0].1.bytes), (1, f.len() as u64));
        // A frame from a socket of another namespace (the TAP was moved there and
        // vswitchd has not noticed yet) goes up, hit or not. The test run's skb carries
        // a socket of this namespace, whose cookie the probe recorded at load.
        assert_eq!(
            l.tap_prog, "fp_tap_out",
            "this kernel has bpf_get_netns_cookie in tc"
        );
        let own = {
            let m: Array<&MapData, u64> =
                Array::try_from(l.ebpf.map("fp_netns").expect("fp_netns")).unwrap();
            m.get(&0, 0).unwrap()
        };
        assert_ne!(own, 0, "vswitchd's netns cookie recorded");
        let set_own = |l: &mut Loaded, v: u64| {
            let mut m: Array<&mut MapData, u64> =
                Array::try_from(l.ebpf.map_mut("fp_netns").expect("fp_netns")).unwrap();
            m.set(0, v, 0).unwrap();
        };
        set_own(&mut l, own ^ 1);
        let (rv, out) = run_tap_out(&l, &f);
        assert_eq!(
            rv, TC_ACT_OK,
            "a socket of another namespace: up to vswitchd"
        );
        assert_eq!(out, f);
        set_own(&mut l, own);
        assert_eq!(
            run_tap_out(&l, &f).0,
            TC_ACT_REDIRECT,
            "own namespace again"
        );
        let e = l.entries();
        assert_eq!(e[0].1.packets, 2);
        let (rx, tx) = (l.stats(8), l.stats(9));
        assert_eq!((rx.rx_packets, rx.rx_bytes), (2, 2 * f.len() as u64));
        assert_eq!((tx.tx_packets, tx.tx_bytes), (2, 2 * f.len() as u64));
        // Routed from the host to another bridge: MACs, TTL and checksum as fp_tc does.
        l.insert(&routed_key(), &routed_action(21, 1500)).unwrap();
        let f = ip_frame(64, 0x1234, 100);
        let (rv, out) = run_tap_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "routed");
        assert_eq!(
            (out[0..6].to_vec(), out[6..12].to_vec()),
            (NH.to_vec(), R_OUT.to_vec())
        );
        assert_eq!(out[14 + 8], 63, "TTL");
        assert!(ip_checksum_ok(&out));
        assert_eq!(run_tap_out(&l, &ip_frame(1, 0, 100)).0, TC_ACT_OK, "TTL 1");
        // An established NAT flow from the host.
        let t = tup(6, C1, 40000, OUT_HOST, 5201);
        let x = tup(6, OUTSIDE, 40000, OUT_HOST, 5201);
        l.insert_nat(&nat_key(t), &nat_action(21, x, far_future()))
            .unwrap();
        let f = nat_frame(&t, 100, 0x10, false);
        let (rv, out) = run_tap_out(&l, &f);
        assert_eq!(rv, TC_ACT_REDIRECT, "NAT");
        assert_translated(&f, &out, &x, "NAT from an internal port");
        assert_eq!(
            run_tap_out(&l, &nat_frame(&t, 0, 0x02, false)).0,
            TC_ACT_OK,
            "SYN"
        );
        // A new generation: everything misses.
        g.set(22).unwrap();
        assert_eq!(
            run_tap_out(&l, &frame(B, A, 0x0800)).0,
            TC_ACT_OK,
            "stale generation"
        );
        assert_eq!(run_tap_out(&l, &ip_frame(64, 0, 100)).0, TC_ACT_OK);
        assert_eq!(
            run_tap_out(&l, &nat_frame(&t, 100, 0x10, false)).0,
            TC_ACT_OK
        );
        assert_eq!(l.stats(8).rx_packets, 2);
    }

    #[test]
    fn key_and_action_round_trip() {
        let k = Key {
            ifindex: 7,
            vid: 10,
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
            ip_dst: Ipv4Addr::new(10, 1, 0, 5),
        };
        assert_eq!(Key::decode(&k.encode()), k);
        let a = Action {
            gen: 3,
            out_ifindex: 9,
            in_slot: 1,
            out_slot: 2,
            push_vid: 20,
            flags: F_PEER,
            bvlan: 10,
            packets: 5,
            bytes: 600,
            last_hit: 123,
            mtu: 1500,
            new_dst: [2, 0, 0, 0, 0, 3],
            new_src: [2, 0x76, 0, 0, 0, 4],
        };
        assert_eq!(Action::decode(&a.encode()), a);
    }
}
