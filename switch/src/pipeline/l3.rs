//! The L3 stage: IPv4 forwarding between bridges with a gateway.
//!
//! For a frame addressed to the router's MAC (IPv4 header parsed once, in [`Meta`]): decide
//! (local → punt; no route → punt for ICMP; isolation → drop; TTL → punt for ICMP;
//! MTU with DF → punt for ICMP; neighbour unknown → punt to resolve), and for a
//! forwarded frame rewrite MACs and TTL in place with an incremental checksum update.
//! GSO super-frames are judged by their segment size, not their total length, and are
//! forwarded whole (TTL and checksum are per-header, so every segment inherits them).
//!
//! Read first: RFC 1812 (requirements for IPv4 routers) §5.2–5.3.

use super::punt::PuntKind;
use super::Meta;
use crate::dp::DropReason;
use crate::dp::Snapshot;
use crate::tables::neigh::{NeighCache, NeighMap};
use crate::wire::ipv4;
use crate::wire::ipv6::{self, Ipv6Meta};
use crate::wire::{MacAddr, VnetHdr};

/// What to do with a frame sent to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Route out of `bridge`; `mac` is the next hop's, `None` when it must be resolved.
    Forward {
        bridge: usize,
        mac: Option<MacAddr>,
    },
    Punt(PuntKind),
    Drop(DropReason),
}

/// Decide the fate of the IPv4 packet described by `meta` (IPv4 parsed) that arrived
/// on bridge `in_bridge`.
#[inline]
pub fn decide(
    snap: &Snapshot,
    neigh: &NeighMap,
    now: u32,
    in_bridge: usize,
    meta: &Meta,
    vnet: &VnetHdr,
) -> Verdict {
    let Some(m) = meta.ip else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let l3_ofs = meta.l3;
    if snap.router_ip(m.dst).is_some() || m.dst.is_broadcast() {
        return Verdict::Punt(PuntKind::Local);
    }
    if m.dst.is_multicast() || m.src.is_multicast() || m.src.is_broadcast() {
        return Verdict::Drop(DropReason::NotRoutable);
    }
    let Some(r) = snap.routes.lookup(m.dst) else {
        return Verdict::Punt(PuntKind::NoRoute);
    };
    let (Some(inb), Some(outb)) = (snap.bridges.get(in_bridge), snap.bridges.get(r.bridge)) else {
        return Verdict::Drop(DropReason::NotRoutable);
    };
    // Isolated bridges reach other bridges only through NAT (masquerade out, published
    // ports and their replies in).
    let via_nat =
        meta.translated || snap.nat.masq.get(in_bridge).copied().flatten() == Some(r.bridge);
    if r.bridge != in_bridge && (inb.isolated || outb.isolated) && !via_nat {
        return Verdict::Drop(DropReason::Isolated);
    }
    if m.ttl <= 1 {
        return Verdict::Punt(PuntKind::TtlExceeded);
    }
    let seg = if vnet.is_gso() {
        let hdrs = usize::from(vnet.hdr_len).saturating_sub(l3_ofs);
        let hdrs = if hdrs == 0 { m.hlen + 60 } else { hdrs };
        hdrs + usize::from(vnet.gso_size)
    } else {
        m.total_len
    };
    if seg > outb.mtu as usize {
        if m.df {
            return Verdict::Punt(PuntKind::FragNeeded {
                mtu: outb.mtu.min(0xffff) as u16,
            });
        }
        return Verdict::Drop(DropReason::TooBig);
    }
    let next = r.via.unwrap_or(m.dst);
    Verdict::Forward {
        bridge: r.bridge,
        mac: NeighCache::lookup(neigh, next, now),
    }
}

/// Decide the fate of the IPv6 packet `m` (at `l3_ofs`) that arrived on bridge
/// `in_bridge` addressed to the router's MAC (`translated`: NAT66 rewrote it, a
/// tracked connection). As [`decide`]: the
/// router's own addresses and link-scope traffic → punt; link-local or multicast
/// sources are never forwarded (RFC 4291 §2.5.6); no route → punt for destination
/// unreachable; isolation; hop limit → punt for time exceeded; over the egress MTU
/// → punt for packet too big (routers never fragment IPv6, RFC 8200 §5).
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn decide6(
    snap: &Snapshot,
    neigh: &NeighMap,
    now: u32,
    in_bridge: usize,
    m: &Ipv6Meta,
    l3_ofs: usize,
    vnet: &VnetHdr,
    translated: bool,
) -> Verdict {
    if snap.router_ip6(&m.dst).is_some() || m.dst.is_multicast() {
        return Verdict::Punt(PuntKind::Local);
    }
    if ipv6::is_link_local(&m.dst)
        || ipv6::is_link_local(&m.src)
        || m.src.is_multicast()
        || m.src.is_unspecified()
        || m.src.is_loopback()
        || m.dst.is_loopback()
    {
        return Verdict::Drop(DropReason::NotRoutable);
    }
    let Some(r) = snap.routes6.lookup(m.dst) else {
        return Verdict::Punt(PuntKind::NoRoute);
    };
    let (Some(inb), Some(outb)) = (snap.bridges.get(in_bridge), snap.bridges.get(r.bridge)) else {
        return Verdict::Drop(DropReason::NotRoutable);
    };
    // Isolated bridges reach others only through NAT66 (`masquerade6` out, published
    // ports and their replies in); without it, only themselves.
    let via_nat = translated || snap.nat6.masq.get(in_bridge).copied().flatten() == Some(r.bridge);
    if r.bridge != in_bridge && (inb.isolated || outb.isolated) && !via_nat {
        return Verdict::Drop(DropReason::Isolated);
    }
    if m.hop_limit <= 1 {
        return Verdict::Punt(PuntKind::TtlExceeded);
    }
    let seg = if vnet.is_gso() {
        let hdrs = usize::from(vnet.hdr_len).saturating_sub(l3_ofs);
        let hdrs = if hdrs == 0 { ipv6::HLEN + 60 } else { hdrs };
        hdrs + usize::from(vnet.gso_size)
    } else {
        ipv6::HLEN + m.payload_len
    };
    if seg > outb.mtu as usize {
        return Verdict::Punt(PuntKind::FragNeeded {
            mtu: outb.mtu.min(0xffff) as u16,
        });
    }
    let next = r.via.unwrap_or(m.dst);
    Verdict::Forward {
        bridge: r.bridge,
        mac: NeighCache::lookup(neigh, next, now),
    }
}

/// Rewrite a routed frame in place: new destination and source MAC, TTL (IPv4, with
/// its checksum) or hop limit (IPv6) − 1. The EtherType just before `l3_ofs` says
/// which.
#[inline]
pub fn rewrite(frame: &mut [u8], l3_ofs: usize, dst: MacAddr, src: MacAddr) {
    let Some(et) = l3_ofs
        .checked_sub(2)
        .and_then(|o| frame.get(o..l3_ofs))
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
    else {
        return;
    };
    let min = match et {
        ipv6::ETHERTYPE_IPV6 => ipv6::HLEN,
        _ => ipv4::MIN_HLEN,
    };
    if frame.len() < l3_ofs + min {
        return;
    }
    frame[0..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    match et {
        ipv6::ETHERTYPE_IPV6 => ipv6::decrement_hop_limit(&mut frame[l3_ofs..]),
        _ => ipv4::decrement_ttl(&mut frame[l3_ofs..]),
    }
}
