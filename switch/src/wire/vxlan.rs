//! The VXLAN header (RFC 7348 §5): 8 bytes after the outer UDP header.
//!
//! ```text
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

/// Length of the VXLAN header.
pub const HLEN: usize = 8;
/// IANA's UDP port for VXLAN.
pub const UDP_PORT: u16 = 4789;

mod field {
    pub const FLAGS: usize = 0;
    pub const VNI: std::ops::Range<usize> = 4..7;
}

/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

/// The header for `vni` (I flag set, reserved fields zero).
#[inline]
pub fn header(vni: u32) -> [u8; HLEN] {
    let mut h = [0u8; HLEN];
    h[field::FLAGS] = FLAG_I;
    h[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    h
}

/// A received header, checked for length once.
#[derive(Debug, Clone, Copy)]
pub struct VxlanHeader<'a>(&'a [u8; HLEN]);

impl<'a> VxlanHeader<'a> {
    /// `None` if `b` is shorter than a header.
    #[inline]
    pub fn new_checked(b: &'a [u8]) -> Option<VxlanHeader<'a>> {
        b.get(..HLEN)?.try_into().ok().map(VxlanHeader)
    }

    /// The VNI, if the I flag says it is valid.
    #[inline]
    pub fn vni(&self) -> Option<u32> {
        let v = self.0[field::VNI.clone()].try_into().ok()?;
        let [a, b, c]: [u8; 3] = v;
        (self.0[field::FLAGS] & FLAG_I != 0).then_some(u32::from_be_bytes([0, a, b, c]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_needs_the_i_flag() {
        let h = header(0x12_3456);
        assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(VxlanHeader::new_checked(&h).unwrap().vni(), Some(0x12_3456));
        let mut no_i = h;
        no_i[0] = 0;
        assert_eq!(VxlanHeader::new_checked(&no_i).unwrap().vni(), None);
        assert!(VxlanHeader::new_checked(&h[..7]).is_none());
    }
}
