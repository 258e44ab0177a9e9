//! Parse stage: the per-frame metadata every later stage reuses (OVS's `dp_packet`
//! offsets and miniflow, reduced to what this pipeline reads).
//!
//! The Ethernet/802.1Q header is parsed once on ingress for every frame. The IPv4
//! header is parsed once, when a frame turns out to be addressed to the router (an
//! L2-switched frame never needs more than its MAC addresses and VLAN), and from then
//! on NAT and L3 read [`Meta::ip`] instead of the bytes; NAT keeps it current when it
//! rewrites addresses.

use crate::dp::DropReason;
use crate::wire::ipv4::{self, Ipv4Meta};
use crate::wire::EthFrame;

/// What the pipeline knows about one frame.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub eth: EthFrame,
    /// The frame's VLAN inside its bridge (after ingress VLAN processing).
    pub vlan: u16,
    /// Offset of the L3 header (just after the EtherType).
    pub l3: usize,
    /// The IPv4 header, once parsed ([`Meta::parse_ipv4`]).
    pub ip: Option<Ipv4Meta>,
    /// NAT translated the frame (an existing connection or a published port): it
    /// belongs to a tracked connection, which may cross `--isolated` bridges, and it
    /// is not a new connection for masquerade. (Netfilter's conntrack mark, OVS's
    /// `ct_state`.)
    pub translated: bool,
}

impl Meta {
    /// Parse the Ethernet (and 802.1Q) header of `f`.
    #[inline]
    pub fn parse(f: &[u8]) -> Result<Meta, DropReason> {
        let eth = EthFrame::parse(f).map_err(|_| DropReason::Malformed)?;
        Ok(Meta {
            eth,
            vlan: 0,
            l3: eth.payload_ofs + 2,
            ip: None,
            translated: false,
        })
    }

    /// Parse the IPv4 header (once; later calls return the stored one).
    #[inline]
    pub fn parse_ipv4(&mut self, f: &[u8]) -> Result<Ipv4Meta, DropReason> {
        if let Some(m) = self.ip {
            return Ok(m);
        }
        if self.eth.ethertype != ipv4::ETHERTYPE_IPV4 {
            return Err(DropReason::NotRoutable);
        }
        let m = f
            .get(self.l3..)
            .and_then(|ip| Ipv4Meta::parse(ip).ok())
            .ok_or(DropReason::Malformed)?;
        self.ip = Some(m);
        Ok(m)
    }

    /// Offset of the L4 header (IPv4 parsed).
    #[inline]
    pub fn l4(&self) -> Option<usize> {
        self.ip.map(|m| self.l3 + m.hlen)
    }
}
