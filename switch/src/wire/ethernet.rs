//! Ethernet II frames with at most one 802.1Q tag.

use super::MacAddr;

/// Byte offsets inside an Ethernet header.
pub mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    /// EtherType of an untagged frame, TPID of a tagged one.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Tag control information of a tagged frame.
    pub const TCI: Range<usize> = 14..16;
    /// Inner EtherType of a tagged frame.
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// Length of an untagged Ethernet header.
pub const ETH_HLEN: usize = 14;
/// Length of one 802.1Q tag.
pub const VLAN_HLEN: usize = 4;
/// 802.1Q customer tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag (treated as an ordinary EtherType: we do not do QinQ).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Why a frame could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than an Ethernet header (or a tagged header).
    Truncated,
}

/// The L2 facts of one frame, parsed once and reused by every later stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthFrame {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// VLAN id from the 802.1Q tag (0 when untagged or priority-tagged).
    pub vid: u16,
    /// Whether the frame carried an 802.1Q tag.
    pub tagged: bool,
    /// Offset of the EtherType that follows the MAC addresses and any tag; the egress
    /// stage rebuilds the frame as `[0..12] + optional tag + [payload_ofs..]`.
    pub payload_ofs: usize,
    /// EtherType of the payload (after the tag).
    pub ethertype: u16,
}

impl EthFrame {
    /// Parse the Ethernet (and 802.1Q) header of `b`.
    #[inline]
    pub fn parse(b: &[u8]) -> Result<EthFrame, ParseError> {
        if b.len() < ETH_HLEN {
            return Err(ParseError::Truncated);
        }
        let dst = MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]);
        let src = MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]]);
        let et = u16::from_be_bytes([b[12], b[13]]);
        if et == ETHERTYPE_VLAN {
            if b.len() < ETH_HLEN + VLAN_HLEN {
                return Err(ParseError::Truncated);
            }
            let tci = u16::from_be_bytes([b[14], b[15]]);
            Ok(EthFrame {
                dst,
                src,
                vid: tci & 0x0fff,
                tagged: true,
                payload_ofs: 16,
                ethertype: u16::from_be_bytes([b[16], b[17]]),
            })
        } else {
            Ok(EthFrame {
                dst,
                src,
                vid: 0,
                tagged: false,
                payload_ofs: 12,
                ethertype: et,
            })
        }
    }
}

/// The four bytes of an 802.1Q tag for `vid` (PCP 0).
#[inline]
pub fn vlan_tag(vid: u16) -> [u8; 4] {
    let t = ETHERTYPE_VLAN.to_be_bytes();
    let v = (vid & 0x0fff).to_be_bytes();
    [t[0], t[1], v[0], v[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request captured on a veth (ping 10.0.0.2 from 10.0.0.1), untagged.
    const ARP_REQ: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5a, 0x1e, 0x3c, 0x7d, 0x22, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x5a, 0x1e, 0x3c, 0x7d, 0x22, 0x01, 0x0a, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn parses_untagged_arp() {
        let f = EthFrame::parse(&ARP_REQ).unwrap();
        assert!(f.dst.is_multicast());
        assert_eq!(f.src.to_string(), "5a:1e:3c:7d:22:01");
        assert_eq!(
            (f.vid, f.tagged, f.payload_ofs, f.ethertype),
            (0, false, 12, 0x0806)
        );
    }

    #[test]
    fn parses_tagged() {
        let mut v = ARP_REQ[..12].to_vec();
        v.extend_from_slice(&vlan_tag(10));
        v.extend_from_slice(&ARP_REQ[12..]);
        let f = EthFrame::parse(&v).unwrap();
        assert_eq!(
            (f.vid, f.tagged, f.payload_ofs, f.ethertype),
            (10, true, 16, 0x0806)
        );
    }

    #[test]
    fn truncated_is_an_error_not_a_panic() {
        for n in 0..ETH_HLEN {
            assert_eq!(EthFrame::parse(&ARP_REQ[..n]), Err(ParseError::Truncated));
        }
        let mut v = ARP_REQ[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(EthFrame::parse(&v), Err(ParseError::Truncated));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = EthFrame::parse(&bytes);
        }
    }
}
