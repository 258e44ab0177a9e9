//! Flows for `trace`: Open vSwitch's flow syntax (`in_port=v1,dl_src=…,ip,nw_dst=…,
//! tcp,tp_dst=80`, as `ovs-appctl ofproto/trace` takes it) or a frame in hex, turned
//! into the frame to trace; and any frame described back in that syntax.
//!
//! Fields: `in_port`, `dl_src`, `dl_dst`, `dl_vlan`, `dl_type`, `nw_src`, `nw_dst`,
//! `nw_ttl`, `nw_proto`, `tp_src`, `tp_dst`, `icmp_type`, `icmp_code`, `icmp_id`,
//! `arp_op`; keywords `ip`, `arp`, `icmp`, `tcp`, `udp`. Fields are separated by commas
//! (or blanks). What a flow leaves out is filled in by the caller ([`Flow`] keeps
//! `None`), then by [`Flow::build`]'s defaults (TTL 64, ports 40000 → 80, echo request).

use crate::wire::MacAddr;
use etherparse::{Icmpv4Type, IpNumber, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::Ipv4Addr;

/// The fields of a flow; `None`: not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    pub in_port: Option<String>,
    pub dl_src: Option<MacAddr>,
    pub dl_dst: Option<MacAddr>,
    pub dl_vlan: Option<u16>,
    pub dl_type: Option<u16>,
    pub nw_src: Option<Ipv4Addr>,
    pub nw_dst: Option<Ipv4Addr>,
    pub nw_ttl: Option<u8>,
    pub nw_proto: Option<u8>,
    pub tp_src: Option<u16>,
    pub tp_dst: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub icmp_id: Option<u16>,
    pub arp_op: Option<u16>,
}

/// What `trace` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Flow(Flow),
    /// A whole frame, from hex.
    Frame(Vec<u8>),
}

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Parse a flow or a hex frame. The error names the bad field.
pub fn parse(s: &str) -> Result<Spec, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty flow".into());
    }
    let hex: String = t
        .strip_prefix("0x")
        .unwrap_or(t)
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !t.contains('=') && hex.len() >= 28 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        if !hex.len().is_multiple_of(2) {
            return Err("hex frame has an odd number of digits".into());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("bad hex frame: {e}"))?;
        return Ok(Spec::Frame(bytes));
    }
    let mut f = Flow::default();
    for item in t.split([',', ' ', '\t']).filter(|x| !x.is_empty()) {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item.trim(), None),
        };
        let num = |v: Option<&str>, max: u64| number(k, v, max);
        let mac = |v: Option<&str>| -> Result<MacAddr, String> {
            let v = need(k, v)?;
            v.parse::<MacAddr>()
                .map_err(|_| format!("bad {k} {v:?}: expected a MAC address"))
        };
        let ip = |v: Option<&str>| -> Result<Ipv4Addr, String> {
            let v = need(k, v)?;
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("bad {k} {v:?}: expected an IPv4 address"))
        };
        let proto = |f: &mut Flow, p: u8| {
            f.dl_type = Some(ETH_IPV4);
            f.nw_proto = Some(p);
        };
        match (k, v) {
            ("ip", None) => f.dl_type = Some(ETH_IPV4),
            ("arp", None) => f.dl_type = Some(ETH_ARP),
            ("icmp", None) => proto(&mut f, PROTO_ICMP),
            ("tcp", None) => proto(&mut f, PROTO_TCP),
            ("udp", None) => proto(&mut f, PROTO_UDP),
            ("in_port", v) => f.in_port = Some(need(k, v)?.to_string()),
            ("dl_src", v) => f.dl_src = Some(mac(v)?),
            ("dl_dst", v) => f.dl_dst = Some(mac(v)?),
            ("dl_vlan", v) => {
                let n = num(v, 4094)? as u16;
                if n == 0 {
                    return Err("bad dl_vlan 0: must be 1..4094".into());
                }
                f.dl_vlan = Some(n);
            }
            ("dl_type", v) => f.dl_type = Some(num(v, 0xffff)? as u16),
            ("nw_src", v) => f.nw_src = Some(ip(v)?),
            ("nw_dst", v) => f.nw_dst = Some(ip(v)?),
            ("nw_ttl", v) => f.nw_ttl = Some(num(v, 255)? as u8),
            ("nw_proto", v) => proto(&mut f, num(v, 255)? as u8),
            ("tp_src", v) => f.tp_src = Some(num(v, 0xffff)? as u16),
            ("tp_dst", v) => f.tp_dst = Some(num(v, 0xffff)? as u16),
            ("icmp_type", v) => f.icmp_type = Some(num(v, 255)? as u8),
            ("icmp_code", v) => f.icmp_code = Some(num(v, 255)? as u8),
            ("icmp_id", v) => f.icmp_id = Some(num(v, 0xffff)? as u16),
            ("arp_op", v) => f.arp_op = Some(num(v, 0xffff)? as u16),
            (k, Some(_)) => return Err(format!("unknown flow field {k:?}")),
            (k, None) => return Err(format!("unknown flow keyword {k:?}")),
        }
    }
    // Fields that only make sense with their protocol imply it, as in OVS.
    if f.dl_type.is_none() && (f.nw_src.is_some() || f.nw_dst.is_some() || f.nw_ttl.is_some()) {
        f.dl_type = Some(ETH_IPV4);
    }
    if f.nw_proto.is_none() && (f.tp_src.is_some() || f.tp_dst.is_some()) {
        return Err("tp_src/tp_dst need tcp or udp".into());
    }
    Ok(Spec::Flow(f))
}

/// The value of field `k`, which must have one.
fn need<'a>(k: &str, v: Option<&'a str>) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("{k} needs a value ({k}=…)"))
}

/// The value of field `k` as a number (decimal or 0x hex) of at most `max`.
fn number(k: &str, v: Option<&str>, max: u64) -> Result<u64, String> {
    let v = need(k, v)?;
    let n = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse::<u64>(),
    }
    .map_err(|_| format!("bad {k} {v:?}: expected a number"))?;
    if n > max {
        return Err(format!("bad {k} {v}: at most {max}"));
    }
    Ok(n)
}

impl Flow {
    /// The frame this flow describes (fields still `None` take the defaults).
    pub fn build(&self) -> Result<Vec<u8>, String> {
        let dst = self.dl_dst.unwrap_or(MacAddr::BROADCAST);
        let src = self.dl_src.unwrap_or(MacAddr([2, 0, 0, 0, 0, 1]));
        let dl_type = self.dl_type.unwrap_or(ETH_IPV4);
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(v) = self.dl_vlan {
            f.extend_from_slice(&ETH_VLAN.to_be_bytes());
            f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
        }
        f.extend_from_slice(&dl_type.to_be_bytes());
        let nw_src = self.nw_src.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let nw_dst = self.nw_dst.unwrap_or(Ipv4Addr::UNSPECIFIED);
        match dl_type {
            ETH_IPV4 => {
                let b = PacketBuilder::ipv4(
                    nw_src.octets(),
                    nw_dst.octets(),
                    self.nw_ttl.unwrap_or(64),
                );
                let (sp, dp) = (self.tp_src.unwrap_or(40000), self.tp_dst.unwrap_or(80));
                let w = match self.nw_proto.unwrap_or(PROTO_ICMP) {
                    PROTO_TCP => b.tcp(sp, dp, 1, 64240).syn().write(&mut f, &[]),
                    PROTO_UDP => b.udp(sp, dp).write(&mut f, &[0; 8]),
                    PROTO_ICMP => {
                        match (self.icmp_type.unwrap_or(8), self.icmp_code.unwrap_or(0)) {
                            (8, 0) => b
                                .icmpv4_echo_request(self.icmp_id.unwrap_or(1), 1)
                                .write(&mut f, &[0; 32]),
                            (t, c) => b
                                .icmpv4(Icmpv4Type::Unknown {
                                    type_u8: t,
                                    code_u8: c,
                                    bytes5to8: [0; 4],
                                })
                                .write(&mut f, &[0; 28]),
                        }
                    }
                    p => b.write(&mut f, IpNumber(p), &[0; 8]),
                };
                w.map_err(|e| format!("cannot build the frame: {e}"))?;
            }
            ETH_ARP => {
                // htype 1, ptype IPv4, hlen 6, plen 4, op, sha, spa, tha, tpa.
                f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
                f.extend_from_slice(&self.arp_op.unwrap_or(1).to_be_bytes());
                f.extend_from_slice(&src.0);
                f.extend_from_slice(&nw_src.octets());
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&nw_dst.octets());
            }
            _ => f.extend_from_slice(&[0; 46]),
        }
        // Pad to the Ethernet minimum, as a sender's NIC would.
        if f.len() < 60 {
            f.resize(60, 0);
        }
        Ok(f)
    }
}

/// `frame` in flow syntax (what a trace shows for the frame in and out).
pub fn describe(frame: &[u8]) -> String {
    let mut out = Vec::new();
    let Some(dst) = MacAddr::from_slice(frame) else {
        return format!("runt frame of {} bytes", frame.len());
    };
    let src = frame
        .get(6..)
        .and_then(MacAddr::from_slice)
        .unwrap_or_default();
    out.push(format!("dl_src={src}"));
    out.push(format!("dl_dst={dst}"));
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        if let Some(t) = frame.get(12..14) {
            out.push(format!("dl_type={:#06x}", u16::from_be_bytes([t[0], t[1]])));
        }
        out.push("(not parsed further)".into());
        return out.join(",");
    };
    if let Some(v) = p.vlan_ids().first() {
        out.push(format!("dl_vlan={}", v.value()));
    }
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            out.push("ip".into());
            out.push(format!("nw_src={}", h.source_addr()));
            out.push(format!("nw_dst={}", h.destination_addr()));
            out.push(format!("nw_ttl={}", h.ttl()));
            match &p.transport {
                Some(TransportSlice::Tcp(t)) => {
                    out.push("tcp".into());
                    out.push(format!("tp_src={}", t.source_port()));
                    out.push(format!("tp_dst={}", t.destination_port()));
                }
                Some(TransportSlice::Udp(u)) => {
                    out.push("udp".into());
                    out.push(format!("tp_src={}", u.source_port()));
                    out.push(format!("tp_dst={}", u.destination_port()));
                }
                Some(TransportSlice::Icmpv4(i)) => {
                    out.push("icmp".into());
                    out.push(format!("icmp_type={}", i.type_u8()));
                    out.push(format!("icmp_code={}", i.code_u8()));
                    if matches!(i.type_u8(), 0 | 8) {
                        let b = i.bytes5to8();
                        out.push(format!("icmp_id={}", u16::from_be_bytes([b[0], b[1]])));
                    }
                }
                _ => out.push(format!("nw_proto={}", h.protocol().0)),
            }
        }
        Some(NetSlice::Arp(a)) => {
            out.push("arp".into());
            out.push(format!("arp_op={}", a.operation().0));
            if let (Ok(s), Ok(t)) = (
                <[u8; 4]>::try_from(a.sender_protocol_addr()),
                <[u8; 4]>::try_from(a.target_protocol_addr()),
            ) {
                out.push(format!("nw_src={}", Ipv4Addr::from(s)));
                out.push(format!("nw_dst={}", Ipv4Addr::from(t)));
            }
        }
        Some(NetSlice::Ipv6(_)) => out.push("ipv6".into()),
        _ => {
            if let Some(et) = p
                .link
                .as_ref()
                .and_then(|l| l.to_header())
                .and_then(|h| match h {
                    etherparse::LinkHeader::Ethernet2(e) => Some(e.ether_type.0),
                    _ => None,
                })
            {
                out.push(format!("dl_type=0x{et:04x}"));
            }
        }
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(s: &str) -> Flow {
        match parse(s) {
            Ok(Spec::Flow(f)) => f,
            r => panic!("{s}: {r:?}"),
        }
    }

    #[test]
    fn ovs_syntax() {
        let f = flow("in_port=v1,dl_src=02:00:00:00:00:05,dl_dst=ff:ff:ff:ff:ff:ff,ip,nw_src=10.0.0.5,nw_dst=10.1.0.5,tcp,tp_dst=80");
        assert_eq!(f.in_port.as_deref(), Some("v1"));
        assert_eq!(f.nw_proto, Some(6));
        assert_eq!(f.tp_dst, Some(80));
        assert_eq!(f.nw_dst, Some(Ipv4Addr::new(10, 1, 0, 5)));
        let d = describe(&f.build().unwrap());
        assert_eq!(
            d,
            "dl_src=02:00:00:00:00:05,dl_dst=ff:ff:ff:ff:ff:ff,ip,nw_src=10.0.0.5,nw_dst=10.1.0.5,nw_ttl=64,tcp,tp_src=40000,tp_dst=80"
        );
        // Blanks separate too; nw_* imply ip.
        let g = flow("nw_dst=10.0.0.6 nw_ttl=1 dl_vlan=10");
        assert_eq!(g.dl_type, Some(ETH_IPV4));
        let d = describe(&g.build().unwrap());
        assert!(
            d.contains("dl_vlan=10,ip,") && d.contains("nw_ttl=1,icmp,icmp_type=8"),
            "{d}"
        );
    }

    #[test]
    fn udp_arp_and_raw_ip() {
        let d = describe(&flow("udp,nw_dst=10.0.0.1,tp_dst=53").build().unwrap());
        assert!(d.ends_with("udp,tp_src=40000,tp_dst=53"), "{d}");
        let d = describe(
            &flow("arp,nw_src=10.0.0.5,nw_dst=10.0.0.1,dl_src=02:00:00:00:00:05")
                .build()
                .unwrap(),
        );
        assert_eq!(
            d,
            "dl_src=02:00:00:00:00:05,dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,nw_src=10.0.0.5,nw_dst=10.0.0.1"
        );
        let d = describe(&flow("ip,nw_proto=47,nw_dst=1.2.3.4").build().unwrap());
        assert!(d.ends_with("nw_proto=47"), "{d}");
        let d = describe(&flow("dl_type=0x86dd").build().unwrap());
        assert!(d.contains("dl_type=0x86dd") || d.contains("ipv6"), "{d}");
    }

    #[test]
    fn hex_frames() {
        let f = flow("icmp,nw_src=10.0.0.5,nw_dst=10.0.0.6")
            .build()
            .unwrap();
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse(&hex), Ok(Spec::Frame(f.clone())));
        assert_eq!(parse(&format!("0x{hex}")), Ok(Spec::Frame(f)));
        assert!(parse(&hex[..29]).is_err(), "odd digits");
    }

    #[test]
    fn errors_name_the_field() {
        for (s, want) in [
            ("", "empty flow"),
            ("nw_dst=10.0.0", "bad nw_dst"),
            ("dl_src=xx", "bad dl_src"),
            ("dl_vlan=5000", "bad dl_vlan 5000"),
            ("dl_vlan=0", "bad dl_vlan 0"),
            ("frob=1", "unknown flow field \"frob\""),
            ("frob", "unknown flow keyword \"frob\""),
            ("tp_dst=80", "need tcp or udp"),
            ("nw_ttl=300", "at most 255"),
            ("dl_src", "dl_src needs a value"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn describe_never_panics_on_junk() {
        for n in 0..80 {
            let _ = describe(&vec![0x45; n]);
            let mut f = vec![0xff; 12];
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend(std::iter::repeat_n(0x45, n));
            let _ = describe(&f);
        }
    }
}
