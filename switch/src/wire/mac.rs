//! 48-bit MAC addresses.

use std::fmt;
use std::str::FromStr;

/// A MAC address. Prints as lower-case colon hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group (multicast or broadcast) addresses have the I/G bit set.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// The address as the low 48 bits of a `u64`.
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Copy from the first six bytes of `b`; `b` must hold at least six.
    #[inline]
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(a))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad MAC address (expected six colon-separated hex bytes)")]
pub struct MacParseError;

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, MacParseError> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or(MacParseError)?;
            if p.is_empty() || p.len() > 2 {
                return Err(MacParseError);
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| MacParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacParseError);
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_lower_case_colon_hex() {
        let m = MacAddr([0x02, 0xAB, 0, 1, 0xfe, 0x10]);
        assert_eq!(m.to_string(), "02:ab:00:01:fe:10");
        assert_eq!("02:AB:00:01:fe:10".parse::<MacAddr>(), Ok(m));
    }

    #[test]
    fn u64_round_trip() {
        let m = MacAddr([0x02, 0xAB, 0, 1, 0xfe, 0x10]);
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
    }

    #[test]
    fn rejects_bad_text() {
        for s in [
            "",
            "1:2:3:4:5",
            "1:2:3:4:5:6:7",
            "zz:00:00:00:00:00",
            "123:0:0:0:0:0",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
    }
}
