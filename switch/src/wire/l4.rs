//! In-place views of the transport headers the NAT stage reads and rewrites: TCP, UDP
//! and ICMP echo. Each view is built by `new_checked`, which checks the length once; after that
//! no accessor can panic.
//!
//! Read first: RFC 9293 §3.1 (TCP header), RFC 768 (UDP), RFC 792 (ICMP echo).

/// Byte offsets inside the headers.
pub mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    /// TCP flags byte (CWR..FIN).
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CHECKSUM: Range<usize> = 16..18;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CHECKSUM: Range<usize> = 2..4;
    pub const ICMP_ECHO_ID: Range<usize> = 4..6;
}

pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// ICMP header with the echo identifier and sequence.
pub const ICMP_ECHO_HLEN: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_URG: u8 = 0x20;
pub const TCP_CWR: u8 = 0x80;

#[inline]
fn get16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

#[inline]
fn set16(b: &mut [u8], r: std::ops::Range<usize>, v: u16) {
    b[r].copy_from_slice(&v.to_be_bytes());
}

/// Where a transport header keeps its ports (or ICMP echo identifier) and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Kind {
    Tcp,
    Udp,
    IcmpEcho,
}

impl L4Kind {
    /// Header bytes a view of this kind needs.
    pub const fn min_len(self) -> usize {
        match self {
            L4Kind::Tcp => TCP_MIN_HLEN,
            L4Kind::Udp => UDP_HLEN,
            L4Kind::IcmpEcho => ICMP_ECHO_HLEN,
        }
    }

    fn checksum(self) -> std::ops::Range<usize> {
        match self {
            L4Kind::Tcp => field::TCP_CHECKSUM,
            L4Kind::Udp => field::UDP_CHECKSUM,
            L4Kind::IcmpEcho => field::ICMP_CHECKSUM,
        }
    }
}

/// A view of a TCP, UDP or ICMP echo header at the start of its buffer (smoltcp's
/// `Packet<T>` shape: read on any `T: AsRef<[u8]>`, write when `T: AsMut<[u8]>`).
pub struct L4Header<T> {
    b: T,
    kind: L4Kind,
}

/// The mutable view the NAT stage rewrites through.
pub type L4HeaderMut<'a> = L4Header<&'a mut [u8]>;

impl<T: AsRef<[u8]>> L4Header<T> {
    /// `None` if `b` is shorter than the header of `kind`.
    #[inline]
    pub fn new_checked(b: T, kind: L4Kind) -> Option<L4Header<T>> {
        (b.as_ref().len() >= kind.min_len()).then_some(L4Header { b, kind })
    }

    pub fn kind(&self) -> L4Kind {
        self.kind
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get16(self.b.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get16(self.b.as_ref(), field::DST_PORT)
    }

    /// ICMP: the message type (echo request 8, reply 0).
    #[inline]
    pub fn icmp_type(&self) -> u8 {
        self.b.as_ref()[field::ICMP_TYPE]
    }

    #[inline]
    pub fn echo_id(&self) -> u16 {
        get16(self.b.as_ref(), field::ICMP_ECHO_ID)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.b.as_ref(), self.kind.checksum())
    }

    /// TCP flags (0 for other kinds).
    #[inline]
    pub fn tcp_flags(&self) -> u8 {
        match self.kind {
            L4Kind::Tcp => self.b.as_ref()[field::TCP_FLAGS],
            _ => 0,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> L4Header<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set16(self.b.as_mut(), field::SRC_PORT, v)
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set16(self.b.as_mut(), field::DST_PORT, v)
    }

    #[inline]
    pub fn set_echo_id(&mut self, v: u16) {
        set16(self.b.as_mut(), field::ICMP_ECHO_ID, v)
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        let r = self.kind.checksum();
        set16(self.b.as_mut(), r, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_refused_and_fields_round_trip() {
        let mut b = [0u8; 19];
        assert!(L4HeaderMut::new_checked(&mut b, L4Kind::Tcp).is_none());
        let mut b = [0u8; 20];
        let mut t = L4HeaderMut::new_checked(&mut b, L4Kind::Tcp).unwrap();
        t.set_src_port(40000);
        t.set_dst_port(80);
        t.set_checksum(0xbeef);
        assert_eq!(
            (t.src_port(), t.dst_port(), t.checksum()),
            (40000, 80, 0xbeef)
        );
        assert_eq!(b[0..4], [0x9c, 0x40, 0, 80]);
        assert_eq!(b[16..18], [0xbe, 0xef]);
        let mut u = [0u8; 8];
        let mut v = L4HeaderMut::new_checked(&mut u, L4Kind::Udp).unwrap();
        v.set_checksum(0x1234);
        assert_eq!(u[6..8], [0x12, 0x34]);
        let mut i = [8u8, 0, 0, 0, 0, 7, 0, 1];
        let mut v = L4HeaderMut::new_checked(&mut i, L4Kind::IcmpEcho).unwrap();
        assert_eq!((v.icmp_type(), v.echo_id()), (8, 7));
        v.set_echo_id(9);
        assert_eq!(i[4..6], [0, 9]);
    }
}
