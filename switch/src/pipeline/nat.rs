//! The NAT stage: masquerade (source NAT behind an outside gateway address), published
//! ports (destination NAT, with hairpin source NAT for clients on the target's own
//! bridge), and the conntrack lookups that translate every later packet of a
//! connection in both directions.
//!
//! [`pre`] runs before the route decision (existing connections, published ports) and
//! marks what it translated in the frame's [`Meta`]; [`post`] runs after it (new
//! masqueraded connections). Both read the IPv4 header from the `Meta` (parsed once). Headers are
//! rewritten in place with incremental checksum updates; for a frame whose L4 checksum
//! is partial (a GSO super-frame from a veth or TAP), only the pseudo-header part is
//! updated, as Linux does, and the device completes it.
//!
//! Read first: RFC 3022 (traditional NAT), RFC 5382/4787 (NAT behaviour for TCP/UDP),
//! RFC 1624 (incremental checksums).

use super::{Ctx, Meta};
use crate::dp::DropReason;
use crate::tables::conntrack::{CtEntry, CtState, Inserted, Tuple};
use crate::tables::Lookup;
use crate::wire::csum;
use crate::wire::ipv4::{self, Ipv4Meta};
use crate::wire::l4::{L4Header, L4HeaderMut, L4Kind, TCP_FIN, TCP_RST};
use crate::wire::vnet::F_NEEDS_CSUM;
use crate::wire::VnetHdr;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// Ports (and ICMP identifiers) masquerade allocates from, as Linux's ephemeral range.
const PORT_MIN: u16 = 32768;
const PORT_MAX: u16 = 60999;
const PORT_TRIES: u32 = 64;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;

/// The conntrack tuple of an IPv4 packet (`ip` = bytes from the IPv4 header on).
/// `None` for fragments, other protocols, ICMP other than echo, and runts.
#[inline]
pub fn tuple_of(ip: &[u8], m: &Ipv4Meta) -> Option<Tuple> {
    if m.fragment {
        return None;
    }
    let kind = l4_kind(m.protocol)?;
    let h = L4Header::new_checked(ip.get(m.hlen..m.total_len)?, kind)?;
    let (sport, dport) = match kind {
        L4Kind::IcmpEcho => match h.icmp_type() {
            ICMP_ECHO => (h.echo_id(), 0),
            ICMP_ECHO_REPLY => (0, h.echo_id()),
            _ => return None,
        },
        _ => (h.src_port(), h.dst_port()),
    };
    Some(Tuple {
        proto: m.protocol,
        src: m.src,
        sport,
        dst: m.dst,
        dport,
    })
}

fn l4_kind(proto: u8) -> Option<L4Kind> {
    match proto {
        ipv4::PROTO_TCP => Some(L4Kind::Tcp),
        ipv4::PROTO_UDP => Some(L4Kind::Udp),
        ipv4::PROTO_ICMP => Some(L4Kind::IcmpEcho),
        _ => None,
    }
}

/// Rewrite the packet whose tuple is `from` (IPv4 header at `l3`) to `to`.
pub fn rewrite(frame: &mut [u8], l3: usize, hlen: usize, from: &Tuple, to: &Tuple, vnet: &VnetHdr) {
    let l4 = l3 + hlen;
    let Some(kind) = l4_kind(to.proto) else {
        return;
    };
    if frame.len() < l4 + kind.min_len() {
        return;
    }
    let mut old = [0u16; 4];
    let mut new = [0u16; 4];
    let mut n = 0;
    if from.src != to.src {
        old[n..n + 2].copy_from_slice(&csum::words(from.src));
        new[n..n + 2].copy_from_slice(&csum::words(to.src));
        n += 2;
        frame[l3 + ipv4::field::SRC..l3 + ipv4::field::SRC + 4].copy_from_slice(&to.src.octets());
    }
    if from.dst != to.dst {
        old[n..n + 2].copy_from_slice(&csum::words(from.dst));
        new[n..n + 2].copy_from_slice(&csum::words(to.dst));
        n += 2;
        frame[l3 + ipv4::field::DST..l3 + ipv4::field::DST + 4].copy_from_slice(&to.dst.octets());
    }
    if n > 0 {
        let c = l3 + ipv4::field::CHECKSUM;
        let hc = u16::from_be_bytes([frame[c], frame[c + 1]]);
        frame[c..c + 2].copy_from_slice(&csum::update(hc, &old[..n], &new[..n]).to_be_bytes());
    }
    let partial = vnet.flags & F_NEEDS_CSUM != 0 && usize::from(vnet.csum_start) == l4;
    let pseudo = kind != L4Kind::IcmpEcho;
    let Some(mut h) = L4HeaderMut::new_checked(&mut frame[l4..], kind) else {
        return;
    };
    let mut sum = h.checksum();
    let udp_none = kind == L4Kind::Udp && sum == 0 && !partial;
    // Ports (or the ICMP identifier), which a partial checksum does not cover yet.
    let mut pold = [0u16; 2];
    let mut pnew = [0u16; 2];
    let mut pn = 0;
    if kind == L4Kind::IcmpEcho {
        let (f, t) = if h.icmp_type() == ICMP_ECHO {
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
    if udp_none {
        return;
    }
    if partial {
        if pseudo && n > 0 {
            sum = csum::update_partial(sum, &old[..n], &new[..n]);
        }
    } else {
        if pseudo && n > 0 {
            sum = csum::update(sum, &old[..n], &new[..n]);
        }
        if pn > 0 {
            sum = csum::update(sum, &pold[..pn], &pnew[..pn]);
        }
        if kind == L4Kind::Udp && sum == 0 {
            sum = 0xffff;
        }
    }
    h.set_checksum(sum);
}

fn tcp_flags(frame: &[u8], l4: usize, proto: u8) -> u8 {
    match frame.get(l4..) {
        Some(b) if proto == ipv4::PROTO_TCP => {
            L4Header::new_checked(b, L4Kind::Tcp).map_or(0, |h| h.tcp_flags())
        }
        _ => 0,
    }
}

/// What [`pre`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// Not a NAT packet (or NAT not configured): route it as it is.
    Untouched,
    /// Rewritten by an existing connection or a published port.
    Translated,
    /// Drop it: its connection could not be looked up or recorded.
    Drop(DropReason),
}

/// Existing connections and published ports. `meta` has the IPv4 header parsed; a
/// translated packet's `meta.ip` addresses are updated and `meta.translated` set.
pub fn pre(ctx: &Ctx<'_>, frame: &mut [u8], meta: &mut Meta, vnet: &VnetHdr) -> Pre {
    let r = pre_inner(ctx, frame, meta, vnet);
    if r == Pre::Translated {
        meta.translated = true;
        if let Some(m) = meta.ip.as_mut() {
            let a = |o: usize| frame.get(meta.l3 + o..meta.l3 + o + 4);
            if let (Some(s), Some(d)) = (a(ipv4::field::SRC), a(ipv4::field::DST)) {
                m.src = Ipv4Addr::new(s[0], s[1], s[2], s[3]);
                m.dst = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
            }
        }
    }
    r
}

fn pre_inner(ctx: &Ctx<'_>, frame: &mut [u8], meta: &Meta, vnet: &VnetHdr) -> Pre {
    let snap = ctx.snap;
    let (Some(m), l3) = (meta.ip, meta.l3) else {
        return Pre::Untouched;
    };
    if snap.nat.is_empty() {
        return Pre::Untouched;
    }
    let Some(t) = frame.get(l3..).and_then(|ip| tuple_of(ip, &m)) else {
        return if m.protocol == ipv4::PROTO_ICMP && icmp_error(ctx, frame, l3, &m) {
            Pre::Translated
        } else {
            Pre::Untouched
        };
    };
    let ct = &snap.conntrack;
    let now = ctx.now;
    let found = match ct.lookup(&t, now) {
        Lookup::Found(e) => Some(e),
        Lookup::Absent => None,
        // Unknown: the packet may belong to a live connection, so it must neither
        // leave untranslated nor start a second translation of it.
        Lookup::Busy => return Pre::Drop(DropReason::CtBusy),
    };
    if let Some(e) = found {
        let flags = tcp_flags(frame, l3 + m.hlen, t.proto);
        let state = if flags & (TCP_FIN | TCP_RST) != 0 {
            CtState::Closing
        } else if !e.original && e.state == CtState::New {
            CtState::Established
        } else {
            e.state
        };
        ct.touch(&t, state, now);
        let partner = e.xlate.reversed();
        if !ct.touch(&partner, state, now) {
            // The other direction was evicted (table full): restore it, or the answers
            // of a live connection would be lost.
            let back = CtEntry {
                xlate: t.reversed(),
                state,
                original: !e.original,
                last_seen: now,
            };
            ct.insert(&partner, back, now);
        }
        rewrite(frame, l3, m.hlen, &t, &e.xlate, vnet);
        return Pre::Translated;
    }
    // A new connection to a published port?
    if t.proto == ipv4::PROTO_ICMP {
        return Pre::Untouched;
    }
    let Some(rules) = snap.nat.publish.get(&(t.proto, t.dport)) else {
        return Pre::Untouched;
    };
    let Some(rule) = rules.iter().find(|r| match r.ip {
        Some(ip) => ip == t.dst,
        None => snap.nat.outside_ips.contains(&t.dst),
    }) else {
        return Pre::Untouched;
    };
    let mut x = Tuple {
        dst: rule.target_ip,
        dport: rule.target_port,
        ..t
    };
    // Hairpin: a client on the target's own bridge must see the answer come back
    // through us, so it gets the gateway as source (Docker's hairpin NAT).
    let hairpin_gw = snap
        .bridges
        .iter()
        .filter_map(|b| b.router)
        .find(|r| r.net.contains(&rule.target_ip) && r.net.contains(&t.src))
        .map(|r| r.ip);
    let x = if let Some(gw) = hairpin_gw {
        x.src = gw;
        allocate(ctx, &t, x)
    } else {
        match commit(ctx, &t, x) {
            Commit::Done => Ok(x),
            Commit::Raced(e) => Ok(e.xlate),
            // The reply tuple of a published port is taken only by a connection from
            // the same client port: the client reuses a port still in TIME_WAIT here.
            Commit::Taken => Err(DropReason::NatExhausted),
            Commit::Busy => Err(DropReason::CtBusy),
        }
    };
    match x {
        Ok(x) => {
            rewrite(frame, l3, m.hlen, &t, &x, vnet);
            Pre::Translated
        }
        Err(r) => Pre::Drop(r),
    }
}

/// An ICMP error (unreachable, time exceeded, parameter problem) quoting a packet of a
/// translated connection: translate the quoted header back and send the error to the
/// connection's real endpoint, so path-MTU discovery and unreachables work through
/// NAT (RFC 5508 §4).
fn icmp_error(ctx: &Ctx<'_>, frame: &mut [u8], l3: usize, m: &Ipv4Meta) -> bool {
    let l4 = l3 + m.hlen;
    let end = l3 + m.total_len;
    if frame.len() < end || end < l4 + 8 + ipv4::MIN_HLEN + 8 || m.fragment {
        return false;
    }
    if !matches!(frame[l4], 3 | 4 | 11 | 12) {
        return false;
    }
    // The quoted packet: its header and at least 8 bytes of its payload.
    let q = l4 + 8;
    let qhlen = usize::from(frame[q] & 0x0f) * 4;
    if frame[q] >> 4 != 4 || qhlen < ipv4::MIN_HLEN || q + qhlen + 8 > end {
        return false;
    }
    let proto = frame[q + ipv4::field::PROTOCOL];
    let addr = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    let p16 = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
    let ql4 = q + qhlen;
    let (sport, dport) = match proto {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => (p16(ql4), p16(ql4 + 2)),
        ipv4::PROTO_ICMP if frame[ql4] == ICMP_ECHO => (p16(ql4 + 4), 0),
        ipv4::PROTO_ICMP if frame[ql4] == ICMP_ECHO_REPLY => (0, p16(ql4 + 4)),
        _ => return false,
    };
    let quoted = Tuple {
        proto,
        src: addr(q + ipv4::field::SRC),
        sport,
        dst: addr(q + ipv4::field::DST),
        dport,
    };
    // An answer to the quoted packet would have the reversed tuple; its entry says
    // what that answer becomes, hence what the quoted packet was before translation.
    // Busy reads as unknown: the error is then not translated (errors are advisory).
    let Some(e) = ctx
        .snap
        .conntrack
        .lookup(&quoted.reversed(), ctx.now)
        .found()
    else {
        return false;
    };
    let orig = e.xlate.reversed();
    // Quoted header back to the original addresses and ports.
    frame[q + ipv4::field::SRC..q + ipv4::field::SRC + 4].copy_from_slice(&orig.src.octets());
    frame[q + ipv4::field::DST..q + ipv4::field::DST + 4].copy_from_slice(&orig.dst.octets());
    match proto {
        ipv4::PROTO_ICMP => {
            let id = if frame[ql4] == ICMP_ECHO {
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
    let qc = q + ipv4::field::CHECKSUM;
    frame[qc..qc + 2].copy_from_slice(&[0, 0]);
    let c = ipv4::checksum(&frame[q..q + qhlen]);
    frame[qc..qc + 2].copy_from_slice(&c.to_be_bytes());
    // The error goes to the connection's real endpoint.
    let new_dst = e.xlate.dst;
    let hc = u16::from_be_bytes([
        frame[l3 + ipv4::field::CHECKSUM],
        frame[l3 + ipv4::field::CHECKSUM + 1],
    ]);
    let hc = csum::update(hc, &csum::words(m.dst), &csum::words(new_dst));
    frame[l3 + ipv4::field::CHECKSUM..l3 + ipv4::field::CHECKSUM + 2]
        .copy_from_slice(&hc.to_be_bytes());
    frame[l3 + ipv4::field::DST..l3 + ipv4::field::DST + 4].copy_from_slice(&new_dst.octets());
    // The ICMP checksum covers the quote: recompute it (errors are small and rare).
    frame[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let c = ipv4::checksum(&frame[l4..end]);
    frame[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    true
}

/// New connections leaving a masqueraded bridge by its outside bridge (only packets
/// [`pre`] left untouched: no connection exists for them). `Err`: drop the packet, it
/// must not leave with its inside source address.
pub fn post(
    ctx: &Ctx<'_>,
    in_bridge: usize,
    out_bridge: usize,
    frame: &mut [u8],
    meta: &Meta,
    vnet: &VnetHdr,
) -> Result<(), DropReason> {
    let snap = ctx.snap;
    if snap.nat.masq.get(in_bridge).copied().flatten() != Some(out_bridge) {
        return Ok(());
    }
    let (Some(inr), Some(outr)) = (
        snap.bridges[in_bridge].router,
        snap.bridges[out_bridge].router,
    ) else {
        return Ok(());
    };
    let (Some(m), l3) = (meta.ip, meta.l3) else {
        return Ok(());
    };
    if !inr.net.contains(&m.src) {
        return Ok(());
    }
    let Some(t) = frame.get(l3..).and_then(|ip| tuple_of(ip, &m)) else {
        return Ok(());
    };
    if t.proto == ipv4::PROTO_ICMP && t.sport == 0 {
        // An echo reply leaving: not a new connection.
        return Ok(());
    }
    let x = allocate(ctx, &t, Tuple { src: outr.ip, ..t })?;
    rewrite(frame, l3, m.hlen, &t, &x, vnet);
    Ok(())
}

/// Find a free source port (ICMP: identifier) for `x` and record the connection; the
/// translation to use (another worker's, if it recorded the same connection first).
fn allocate(ctx: &Ctx<'_>, t: &Tuple, mut x: Tuple) -> Result<Tuple, DropReason> {
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
            // Nothing was written: another port may be free (and in another bucket).
            Commit::Taken => {}
            Commit::Busy => return Err(DropReason::CtBusy),
        }
    }
    Err(DropReason::NatExhausted)
}

/// Outcome of [`commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Both directions recorded.
    Done,
    /// The reply tuple is taken (or its bucket busy): nothing recorded.
    Taken,
    /// Another worker recorded this connection first (`e` is its original direction);
    /// our reply entry was rolled back.
    Raced(CtEntry),
    /// The original direction's bucket was busy; our reply entry was rolled back.
    Busy,
}

/// Insert both directions of the connection `t` → `x`: first the reply direction
/// (insert-if-absent is what reserves the port), then the original one. A failed
/// second insert undoes the first, so no half connection is left holding a port.
fn commit(ctx: &Ctx<'_>, t: &Tuple, x: Tuple) -> Commit {
    let ct = &ctx.snap.conntrack;
    let reply = CtEntry {
        xlate: t.reversed(),
        state: CtState::New,
        original: false,
        last_seen: ctx.now,
    };
    match ct.insert(&x.reversed(), reply, ctx.now) {
        Inserted::Ok | Inserted::Evicted => {}
        Inserted::Exists(_) | Inserted::Busy => return Commit::Taken,
    }
    let orig = CtEntry {
        xlate: x,
        state: CtState::New,
        original: true,
        last_seen: ctx.now,
    };
    match ct.insert_keeping(t, orig, ctx.now, Some(&x.reversed())) {
        Inserted::Ok | Inserted::Evicted => Commit::Done,
        Inserted::Exists(e) => {
            ct.remove(&x.reversed(), &reply.xlate);
            Commit::Raced(e)
        }
        Inserted::Busy => {
            ct.remove(&x.reversed(), &reply.xlate);
            Commit::Busy
        }
    }
}

/// Whether `ip` is an address masquerade or publish answers on.
pub fn is_outside(snap: &crate::dp::Snapshot, ip: Ipv4Addr) -> bool {
    snap.nat.outside_ips.contains(&ip)
}
