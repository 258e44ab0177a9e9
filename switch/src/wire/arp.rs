//! ARP for IPv4 over Ethernet (RFC 826): the 28-byte payload after the EtherType.

use super::MacAddr;
use std::net::Ipv4Addr;

pub const ARP_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// An IPv4-over-Ethernet ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: MacAddr,
    pub spa: Ipv4Addr,
    pub tha: MacAddr,
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// Parse an ARP payload; `None` unless it is Ethernet/IPv4 ARP.
    pub fn parse(b: &[u8]) -> Option<Arp> {
        if b.len() < ARP_LEN || b[0..2] != [0, 1] || b[2..4] != [8, 0] || b[4] != 6 || b[5] != 4 {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([b[6], b[7]]),
            sha: MacAddr::from_slice(&b[8..14])?,
            spa: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
            tha: MacAddr::from_slice(&b[18..24])?,
            tpa: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
        })
    }

    /// A whole Ethernet frame carrying this message.
    pub fn to_frame(&self, eth_dst: MacAddr, eth_src: MacAddr) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&eth_dst.0);
        f.extend_from_slice(&eth_src.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sha.0);
        f.extend_from_slice(&self.spa.octets());
        f.extend_from_slice(&self.tha.0);
        f.extend_from_slice(&self.tpa.octets());
        f.resize(60, 0);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = Arp {
            op: OP_REQUEST,
            sha: MacAddr([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(10, 0, 0, 1),
            tha: MacAddr::default(),
            tpa: Ipv4Addr::new(10, 0, 0, 254),
        };
        let f = a.to_frame(MacAddr::BROADCAST, a.sha);
        assert_eq!(f.len(), 60);
        assert_eq!(Arp::parse(&f[14..]), Some(a));
        assert_eq!(Arp::parse(&f[14..30]), None);
    }
}
