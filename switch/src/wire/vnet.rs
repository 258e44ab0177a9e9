//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that AF_PACKET
//! (`PACKET_VNET_HDR`) and TAP (`IFF_VNET_HDR`) put in front of each frame. It carries
//! offload state: a GSO super-frame's segment size and type, and a checksum the sender
//! left for the last hop to complete. Forwarding it unchanged is what lets TCP cross
//! the switch as 64 KB frames instead of 1500-byte ones.
//!
//! Read first: virtio spec §5.1.6 "Device Operation", linux/virtio_net.h.
//! Byte order: native (the legacy virtio rule both AF_PACKET and an un-configured TAP
//! use on the host).

/// Length of the header on the wire.
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum at `csum_start + csum_offset` still has to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified by the sender.
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// A decoded virtio-net header. `Default` is "a plain frame, nothing to do".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    #[inline]
    pub fn decode(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }

    #[inline]
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let h = self.hdr_len.to_ne_bytes();
        let g = self.gso_size.to_ne_bytes();
        let s = self.csum_start.to_ne_bytes();
        let o = self.csum_offset.to_ne_bytes();
        [
            self.flags,
            self.gso_type,
            h[0],
            h[1],
            g[0],
            g[1],
            s[0],
            s[1],
            o[0],
            o[1],
        ]
    }

    /// Whether this is a GSO super-frame.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// The header for the same frame after `delta` bytes were inserted (positive) or
    /// removed (negative) in front of the L3 header, e.g. a VLAN tag pushed or popped.
    #[inline]
    pub fn shifted(&self, delta: i32) -> VnetHdr {
        let mut h = *self;
        // DATA_VALID is meaningless to the next device's transmit path; drop it so
        // the receiving stack verifies what it must.
        h.flags &= !F_DATA_VALID;
        if delta != 0 {
            if h.flags & F_NEEDS_CSUM != 0 {
                h.csum_start = (i32::from(h.csum_start) + delta).clamp(0, 0xffff) as u16;
            }
            if h.hdr_len != 0 {
                h.hdr_len = (i32::from(h.hdr_len) + delta).clamp(0, 0xffff) as u16;
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shift() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM | F_DATA_VALID,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::decode(&h.encode()), h);
        assert!(h.is_gso());
        let t = h.shifted(4);
        assert_eq!((t.csum_start, t.hdr_len, t.flags), (38, 70, F_NEEDS_CSUM));
        assert_eq!(h.shifted(-4).csum_start, 30);
        assert!(!VnetHdr::default().is_gso());
    }
}

/// Why a software offload (checksum completion, segmentation) refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Headers shorter than they claim, or offsets outside the frame.
    Malformed,
    /// A GSO type we do not segment (legacy UFO), or IPv6 extension headers we do not
    /// walk (routing, fragment, AH/ESP, or more than
    /// [`IPV6_EXT_MAX`](super::gso::IPV6_EXT_MAX) bytes of options).
    Unsupported,
}
