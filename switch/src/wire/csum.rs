//! Incremental checksum updates (RFC 1624) for in-place header rewrites.
//!
//! A full checksum field holds the complement of the one's-complement sum:
//! `HC' = ~(~HC + ~m + m')`. A *partial* checksum (virtio `NEEDS_CSUM`, Linux
//! `CHECKSUM_PARTIAL`) holds the plain folded sum of the pseudo-header, which the
//! device completes; it is updated without the complements, and only for pseudo-header
//! fields (addresses), never for ports.

#[inline]
fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Update a full checksum for 16-bit words `old` → `new`.
#[inline]
pub fn update(hc: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(!hc);
    for &o in old {
        s += u32::from(!o);
    }
    for &n in new {
        s += u32::from(n);
    }
    !fold(s)
}

/// Update a partial (pseudo-header) checksum for words `old` → `new`.
#[inline]
pub fn update_partial(sum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(sum);
    for &o in old {
        s += u32::from(!o);
    }
    for &n in new {
        s += u32::from(n);
    }
    fold(s)
}

/// The two 16-bit words of an IPv4 address.
#[inline]
pub fn words(a: std::net::Ipv4Addr) -> [u16; 2] {
    let o = a.octets();
    [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::checksum;

    #[test]
    fn incremental_equals_recomputed() {
        let mut data = vec![
            0x45u8, 0, 0, 40, 1, 2, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 5, 203, 0, 113, 10,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        let old = words("10.0.0.5".parse().unwrap());
        let new = words("198.51.100.2".parse().unwrap());
        data[12..16].copy_from_slice(&[198, 51, 100, 2]);
        let c2 = update(c, &old, &new);
        data[10..12].copy_from_slice(&c2.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }

    #[test]
    fn partial_tracks_plain_sum() {
        // A partial checksum is the folded sum; replacing a word keeps it the folded sum.
        let words_before = [0x0a00u16, 0x0005, 0xcb00, 0x710a];
        let sum = fold(words_before.iter().map(|&w| u32::from(w)).sum());
        let after = [0xc633u16, 0x6402, 0xcb00, 0x710a];
        let want = fold(after.iter().map(|&w| u32::from(w)).sum());
        assert_eq!(update_partial(sum, &words_before[..2], &after[..2]), want);
    }
}
