//! The IPv6 NAT stage (NAT66, opt-in): `publish` on an IPv6 address (destination NAT
//! to a container's IPv6 address, with hairpin source NAT for clients on the target's
//! own bridge), `masquerade6` (source NAT of a bridge's IPv6 subnet behind an outside
//! bridge's IPv6 gateway) and the [`Conntrack6`] lookups that translate every later
//! packet of a connection in both directions. Without either, IPv6 is routed as it is
//! (Docker's "routed" mode): this stage costs one emptiness test per packet.
//!
//! The IPv4 stage ([`super::nat`]) in IPv6 clothes: [`pre`] before the route decision
//! (existing connections, published ports, ICMPv6 errors about a tracked connection),
//! [`post`] after it (new masqueraded connections). IPv6 has no header checksum, but
//! the TCP, UDP *and* ICMPv6 checksums cover a pseudo-header with both 128-bit
//! addresses (RFC 8200 §8.1): they are updated incrementally for the eight words of
//! each changed address and the port (ICMPv6 echo: the identifier). A partial checksum
//! (GSO super-frame) gets only the pseudo-header part, as in IPv4.
//!
//! Only packets whose L4 header follows the fixed header are translated (no extension
//! headers walked); others are routed untouched (and a masqueraded bridge's such
//! packets leave with their own source, as IPv4's non-TCP/UDP/ICMP ones do).
//!
//! Read first: RFC 6296 §1 (why NAT66 is not the IPv6 default), RFC 4787/5382, RFC
//! 1624, RFC 4443 §2.4 (what an ICMPv6 error quotes).

use super::trace::note;
use super::Ctx;
use crate::dp::DropReason;
use crate::tables::conntrack::CtState;
use crate::tables::conntrack6::{CtEntry6, Inserted6, Tuple6};
use crate::tables::Lookup;
use crate::wire::csum;
use crate::wire::ipv6::{self, icmp, Ipv6Meta};
use crate::wire::l4::{L4Header, L4HeaderMut, L4Kind, TCP_FIN, TCP_RST};
use crate::wire::vnet::F_NEEDS_CSUM;
use crate::wire::VnetHdr;
use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;

/// Ports (and ICMPv6 identifiers) masquerade6 allocates from, as IPv4's.
const PORT_MIN: u16 = 32768;
const PORT_MAX: u16 = 60999;
const PORT_TRIES: u32 = 64;

/// Offsets of the addresses in the IPv6 header.
const SRC: usize = 8;
const DST: usize = 24;

fn l4_kind(next: u8) -> Option<L4Kind> {
    match next {
        ipv6::NEXT_TCP => Some(L4Kind::Tcp),
        ipv6::NEXT_UDP => Some(L4Kind::Udp),
        ipv6::NEXT_ICMPV6 => Some(L4Kind::IcmpEcho),
        _ => None,
    }
}

/// The conntrack tuple of an IPv6 packet (`ip` = bytes from the IPv6 header on).
/// `None` for extension headers, other protocols, ICMPv6 other than echo, and runts.
#[inline]
pub fn tuple_of(ip: &[u8], m: &Ipv6Meta) -> Option<Tuple6> {
    let kind = l4_kind(m.next)?;
    let h = L4Header::new_checked(ip.get(ipv6::HLEN..ipv6::HLEN + m.payload_len)?, kind)?;
    let (sport, dport) = match kind {
        L4Kind::IcmpEcho => match h.icmp_type() {
            icmp::ECHO_REQUEST => (h.echo_id(), 0),
            icmp::ECHO_REPLY => (0, h.echo_id()),
            _ => return None,
        },
        _ => (h.src_port(), h.dst_port()),
    };
    Some(Tuple6 {
        proto: m.next,
        src: m.src,
        sport,
        dst: m.dst,
        dport,
    })
}

/// `proto [src]:port → [dst]:port`, for traces.
pub fn tuple_text(t: &Tuple6) -> String {
    let proto = match t.proto {
        ipv6::NEXT_TCP => "tcp",
        ipv6::NEXT_UDP => "udp",
        ipv6::NEXT_ICMPV6 => "icmpv6",
        _ => "ip6",
    };
    format!("{proto} [{}]:{} → [{}]:{}", t.src, t.sport, t.dst, t.dport)
}

/// Rewrite the packet whose tuple is `from` (IPv6 header at `l3`) to `to`: addresses,
/// ports or echo identifier, and the L4 checksum.
pub fn rewrite(frame: &mut [u8], l3: usize, from: &Tuple6, to: &Tuple6, vnet: &VnetHdr) {
    let l4 = l3 + ipv6::HLEN;
    let Some(kind) = l4_kind(to.proto) else {
        return;
    };
    if frame.len() < l4 + kind.min_len() {
        return;
    }
    // Address words of the pseudo-header: at most two addresses of eight words.
    let mut old = [0u16; 16];
    let mut new = [0u16; 16];
    let mut n = 0;
    if from.src != to.src {
        old[n..n + 8].copy_from_slice(&from.src.segments());
        new[n..n + 8].copy_from_slice(&to.src.segments());
        n += 8;
        frame[l3 + SRC..l3 + SRC + 16].copy_from_slice(&to.src.octets());
    }
    if from.dst != to.dst {
        old[n..n + 8].copy_from_slice(&from.dst.segments());
        new[n..n + 8].copy_from_slice(&to.dst.segments());
        n += 8;
        frame[l3 + DST..l3 + DST + 16].copy_from_slice(&to.dst.octets());
    }
    let partial = vnet.flags & F_NEEDS_CSUM != 0 && usize::from(vnet.csum_start) == l4;
    let Some(mut h) = L4HeaderMut::new_checked(&mut frame[l4..], kind) else {
        return;
    };
    let mut sum = h.checksum();
    let mut pold = [0u16; 2];
    let mut pnew = [0u16; 2];
    let mut pn = 0;
    if kind == L4Kind::IcmpEcho {
        let (f, t) = if h.icmp_type() == icmp::ECHO_REQUEST {
            (from.sport, to.sport)
        } else {
            (from.dport, to.dport)
        };
        if f != t {
            h.set_echo_id(t);
            pold[0] = f;
            pnew[0] = t;
            pn = 1;
        }
    } else {
        if from.sport != to.sport {
            h.set_src_port(to.sport);
            pold[pn] = from.sport;
            pnew[pn] = to.sport;
            pn += 1;
        }
        if from.dport != to.dport {
            h.set_dst_port(to.dport);
            pold[pn] = from.dport;
            pnew[pn] = to.dport;
            pn += 1;
        }
    }
    if partial {
        // The device completes the sum over the L4 bytes (ports included): only the
        // pseudo-header part is ours.
        if n > 0 {
            sum = csum::update_partial(sum, &old[..n], &new[..n]);
        }
    } else {
        if n > 0 {
            sum = csum::update(sum, &old[..n], &new[..n]);
        }
        if pn > 0 {
            sum = csum::update(sum, &pold[..pn], &pnew[..pn]);
        }
        // 0 means "no checksum" in UDP, which IPv6 forbids (RFC 8200 §8.1).
        if kind == L4Kind::Udp && sum == 0 {
            sum = 0xffff;
        }
    }
    h.set_checksum(sum);
}

fn tcp_flags(frame: &[u8], l4: usize, proto: u8) -> u8 {
    match frame.get(l4..) {
        Some(b) if proto == ipv6::NEXT_TCP => {
            L4Header::new_checked(b, L4Kind::Tcp).map_or(0, |h| h.tcp_flags())
        }
        _ => 0,
    }
}

/// What [`pre`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// Not a NAT packet (or no IPv6 NAT configured): route it as it is.
    Untouched,
    /// Rewritten by an existing connection, a published port or as an ICMPv6 error
    /// about a tracked connection; `m`'s addresses are updated.
    Translated,
    /// Drop it: its connection could not be looked up or recorded.
    Drop(DropReason),
}

/// Existing connections, published ports and ICMPv6 errors. `m` is the parsed header
/// of the packet at `l3`; a translated packet's addresses are updated in it.
pub fn pre(ctx: &Ctx<'_>, frame: &mut [u8], l3: usize, m: &mut Ipv6Meta, vnet: &VnetHdr) -> Pre {
    if ctx.snap.nat6.is_empty() {
        return Pre::Untouched;
    }
    let r = pre_inner(ctx, frame, l3, m, vnet);
    if r == Pre::Translated {
        let a = |o: usize| {
            frame
                .get(l3 + o..l3 + o + 16)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Ipv6Addr::from)
        };
        if let (Some(s), Some(d)) = (a(SRC), a(DST)) {
            m.src = s;
            m.dst = d;
        }
    }
    r
}

fn pre_inner(ctx: &Ctx<'_>, frame: &mut [u8], l3: usize, m: &Ipv6Meta, vnet: &VnetHdr) -> Pre {
    let snap = ctx.snap;
    let Some(t) = frame.get(l3..).and_then(|ip| tuple_of(ip, m)) else {
        return if m.next == ipv6::NEXT_ICMPV6 && icmp_error(ctx, frame, l3, m) {
            note(ctx, "nat", || {
                "ICMPv6 error about a tracked connection: quoted packet translated back".into()
            });
            Pre::Translated
        } else {
            Pre::Untouched
        };
    };
    let ct = &snap.conntrack6;
    let now = ctx.now;
    let found = match ct.lookup(&t, now) {
        Lookup::Found(e) => Some(e),
        Lookup::Absent => None,
        // Unknown: the packet may belong to a live connection.
        Lookup::Busy => return Pre::Drop(DropReason::CtBusy),
    };
    if let Some(e) = found {
        let flags = tcp_flags(frame, l3 + ipv6::HLEN, t.proto);
        let state = if flags & (TCP_FIN | TCP_RST) != 0 {
            CtState::Closing
        } else if !e.original && e.state == CtState::New {
            CtState::Established
        } else {
            e.state
        };
        note(ctx, "nat", || {
            let dir = if e.original { "original" } else { "reply" };
            let st = format!("{state:?}").to_lowercase();
            format!(
                "conntrack6: existing connection ({dir} direction, {st}): {} becomes {}",
                tuple_text(&t),
                tuple_text(&e.xlate)
            )
        });
        if ctx.trace.is_none() {
            ct.touch(&t, state, now);
            let partner = e.xlate.reversed();
            if !ct.touch(&partner, state, now) {
                // The other direction was evicted (table full): restore it.
                let back = CtEntry6 {
                    xlate: t.reversed(),
                    state,
                    original: !e.original,
                    last_seen: now,
                };
                ct.insert(&partner, back, now);
            }
        }
        rewrite(frame, l3, &t, &e.xlate, vnet);
        return Pre::Translated;
    }
    if t.proto == ipv6::NEXT_ICMPV6 {
        return Pre::Untouched;
    }
    // A new connection to a published port (IPv6 publishes always name their address).
    let Some(rule) = snap
        .nat6
        .publish
        .get(&(t.proto, t.dport))
        .and_then(|rules| rules.iter().find(|r| r.ip == t.dst))
    else {
        return Pre::Untouched;
    };
    let mut x = Tuple6 {
        dst: rule.target_ip,
        dport: rule.target_port,
        ..t
    };
    // Hairpin: a client on the target's own bridge gets the gateway as source, so the
    // answer comes back through us.
    let hairpin_gw = snap
        .bridges
        .iter()
        .filter_map(|b| b.router6)
        .find(|r| r.net.contains(&rule.target_ip) && r.net.contains(&t.src))
        .map(|r| r.ip);
    let x = if let Some(gw) = hairpin_gw {
        x.src = gw;
        allocate(ctx, &t, x)
    } else {
        match commit(ctx, &t, x) {
            Commit::Done => Ok(x),
            Commit::Raced(e) => Ok(e.xlate),
            Commit::Taken => Err(DropReason::NatExhausted),
            Commit::Busy => Err(DropReason::CtBusy),
        }
    };
    match x {
        Ok(x) => {
            note(ctx, "nat", || {
                format!(
                    "published port: new connection {} becomes {}{} (would be recorded)",
                    tuple_text(&t),
                    tuple_text(&x),
                    if hairpin_gw.is_some() {
                        " (hairpin: source is the gateway)"
                    } else {
                        ""
                    }
                )
            });
            rewrite(frame, l3, &t, &x, vnet);
            Pre::Translated
        }
        Err(r) => Pre::Drop(r),
    }
}

/// An ICMPv6 error (destination unreachable, packet too big, time exceeded, parameter
/// problem) quoting a packet of a translated connection: translate the quoted header
/// back and send the error to the connection's real endpoint, so path-MTU discovery
/// and unreachables work through NAT66 (RFC 5508 §4 in IPv6).
fn icmp_error(ctx: &Ctx<'_>, frame: &mut [u8], l3: usize, m: &Ipv6Meta) -> bool {
    let l4 = l3 + ipv6::HLEN;
    let end = l4 + m.payload_len;
    // The error header (8), the quoted fixed header (40) and 8 bytes of its payload.
    let q = l4 + 8;
    if frame.len() < end || end < q + ipv6::HLEN + 8 {
        return false;
    }
    if !matches!(frame[l4], 1..=4) {
        return false;
    }
    // The quote is usually cut short of its own payload length: read its fixed header
    // only.
    let mut hdr = [0u8; ipv6::HLEN];
    hdr.copy_from_slice(&frame[q..q + ipv6::HLEN]);
    hdr[4..6].copy_from_slice(&[0, 0]);
    let Ok(qm) = Ipv6Meta::parse(&hdr) else {
        return false;
    };
    let ql4 = q + ipv6::HLEN;
    let p16 = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
    let (sport, dport) = match qm.next {
        ipv6::NEXT_TCP | ipv6::NEXT_UDP => (p16(ql4), p16(ql4 + 2)),
        ipv6::NEXT_ICMPV6 if frame[ql4] == icmp::ECHO_REQUEST => (p16(ql4 + 4), 0),
        ipv6::NEXT_ICMPV6 if frame[ql4] == icmp::ECHO_REPLY => (0, p16(ql4 + 4)),
        _ => return false,
    };
    let quoted = Tuple6 {
        proto: qm.next,
        src: qm.src,
        sport,
        dst: qm.dst,
        dport,
    };
    // An answer to the quoted packet has the reversed tuple; its entry says what that
    // answer becomes, hence what the quoted packet was before translation. Busy reads
    // as unknown: the error is then not translated (errors are advisory).
    let Some(e) = ctx
        .snap
        .conntrack6
        .lookup(&quoted.reversed(), ctx.now)
        .found()
    else {
        return false;
    };
    let orig = e.xlate.reversed();
    frame[q + SRC..q + SRC + 16].copy_from_slice(&orig.src.octets());
    frame[q + DST..q + DST + 16].copy_from_slice(&orig.dst.octets());
    match qm.next {
        ipv6::NEXT_ICMPV6 => {
            let id = if frame[ql4] == icmp::ECHO_REQUEST {
                orig.sport
            } else {
                orig.dport
            };
            frame[ql4 + 4..ql4 + 6].copy_from_slice(&id.to_be_bytes());
        }
        _ => {
            frame[ql4..ql4 + 2].copy_from_slice(&orig.sport.to_be_bytes());
            frame[ql4 + 2..ql4 + 4].copy_from_slice(&orig.dport.to_be_bytes());
        }
    }
    // The quoted L4 checksum is left as it was: only its first 8 bytes are quoted
    // for certain, and receivers match errors by addresses and ports.
    // The error goes to the connection's real endpoint; its checksum covers the
    // pseudo-header and the quote: recompute it (errors are small and rare).
    frame[l3 + DST..l3 + DST + 16].copy_from_slice(&e.xlate.dst.octets());
    frame[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let c = ipv6::checksum(&m.src, &e.xlate.dst, ipv6::NEXT_ICMPV6, &frame[l4..end]);
    frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    true
}

/// New connections leaving a `masquerade6` bridge by its outside bridge (only packets
/// [`pre`] left untouched). `Err`: drop the packet, it must not leave with its inside
/// source address.
pub fn post(
    ctx: &Ctx<'_>,
    in_bridge: usize,
    out_bridge: usize,
    frame: &mut [u8],
    l3: usize,
    m: &Ipv6Meta,
    vnet: &VnetHdr,
) -> Result<(), DropReason> {
    let snap = ctx.snap;
    if snap.nat6.masq.get(in_bridge).copied().flatten() != Some(out_bridge) {
        return Ok(());
    }
    let (Some(inr), Some(outr)) = (
        snap.bridges[in_bridge].router6,
        snap.bridges[out_bridge].router6,
    ) else {
        return Ok(());
    };
    if !inr.net.contains(&m.src) {
        return Ok(());
    }
    let Some(t) = frame.get(l3..).and_then(|ip| tuple_of(ip, m)) else {
        return Ok(());
    };
    if t.proto == ipv6::NEXT_ICMPV6 && t.sport == 0 {
        // An echo reply leaving: not a new connection.
        return Ok(());
    }
    let x = allocate(ctx, &t, Tuple6 { src: outr.ip, ..t })?;
    note(ctx, "nat", || {
        format!(
            "masquerade6: new connection {} becomes {} (would be recorded)",
            tuple_text(&t),
            tuple_text(&x)
        )
    });
    rewrite(frame, l3, &t, &x, vnet);
    Ok(())
}

/// Find a free source port (ICMPv6: identifier) for `x` and record the connection.
fn allocate(ctx: &Ctx<'_>, t: &Tuple6, mut x: Tuple6) -> Result<Tuple6, DropReason> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    let span = u32::from(PORT_MAX - PORT_MIN) + 1;
    let start = (h.finish() % u64::from(span)) as u32;
    // Keep the original port when it is free (RFC 4787 port preservation).
    let keep = t.sport;
    for i in 0..=PORT_TRIES {
        let p = if i == 0 {
            keep
        } else {
            PORT_MIN + ((start + i) % span) as u16
        };
        if p == 0 {
            continue;
        }
        x.sport = p;
        match commit(ctx, t, x) {
            Commit::Done => return Ok(x),
            Commit::Raced(e) => return Ok(e.xlate),
            Commit::Taken => {}
            Commit::Busy => return Err(DropReason::CtBusy),
        }
    }
    Err(DropReason::NatExhausted)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    Done,
    Taken,
    Raced(CtEntry6),
    Busy,
}

/// Insert both directions of `t` → `x`: the reply direction first (insert-if-absent
/// reserves the port), then the original; a failed second insert undoes the first.
fn commit(ctx: &Ctx<'_>, t: &Tuple6, x: Tuple6) -> Commit {
    let ct = &ctx.snap.conntrack6;
    if ctx.trace.is_some() {
        // A trace records nothing: what it would do.
        match ct.lookup(&x.reversed(), ctx.now) {
            Lookup::Absent => {}
            Lookup::Found(_) | Lookup::Busy => return Commit::Taken,
        }
        return match ct.lookup(t, ctx.now) {
            Lookup::Found(e) => Commit::Raced(e),
            Lookup::Absent => Commit::Done,
            Lookup::Busy => Commit::Busy,
        };
    }
    let reply = CtEntry6 {
        xlate: t.reversed(),
        state: CtState::New,
        original: false,
        last_seen: ctx.now,
    };
    match ct.insert(&x.reversed(), reply, ctx.now) {
        Inserted6::Ok | Inserted6::Evicted => {}
        Inserted6::Exists(_) | Inserted6::Busy => return Commit::Taken,
    }
    let orig = CtEntry6 {
        xlate: x,
        state: CtState::New,
        original: true,
        last_seen: ctx.now,
    };
    match ct.insert_keeping(t, orig, ctx.now, Some(&x.reversed())) {
        Inserted6::Ok | Inserted6::Evicted => Commit::Done,
        Inserted6::Exists(e) => {
            ct.remove(&x.reversed(), &reply.xlate);
            Commit::Raced(e)
        }
        Inserted6::Busy => {
            ct.remove(&x.reversed(), &reply.xlate);
            Commit::Busy
        }
    }
}
