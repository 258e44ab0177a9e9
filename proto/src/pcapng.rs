//! The capture stream: pcapng, as vswitchd writes it after a `capture` reply and as
//! `vswitchctl` reads it (to print frames, count them, and find the loss count).
//!
//! Blocks (all little-endian): one Section Header, an Interface Description per port
//! (`if_name` = the port, nanosecond timestamps), an Enhanced Packet per frame
//! (`epb_flags` direction: inbound for `ingress`, outbound for `egress`; a frame of
//! the `drop` stage carries the comment `drop: REASON` and the stage in every
//! frame's comment), and at the end an Interface Statistics block whose `isb_ifdrop`
//! is the number of frames the capture lost (a slow reader). `tcpdump -r` and
//! Wireshark read it.
//!
//! Read first: draft-ietf-opsawg-pcapng (the PCAP Now Generic format).

use std::io::{self, Read, Write};

pub const SHB: u32 = 0x0A0D_0D0A;
pub const IDB: u32 = 1;
pub const ISB: u32 = 5;
pub const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Ethernet.
pub const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;
const SHB_USERAPPL: u16 = 4;

/// Longest block a reader accepts (a 64 KB GSO frame and its options fit easily).
pub const MAX_BLOCK: usize = 1 << 20;

/// Which way a captured frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the guest into the switch (`ingress`), or dropped.
    Inbound,
    /// From the switch to the guest (`egress`).
    Outbound,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn opt(buf: &mut Vec<u8>, code: u16, val: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(val.len() as u16).to_le_bytes());
    buf.extend_from_slice(val);
    buf.extend(std::iter::repeat_n(0, pad4(val.len())));
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// Writes a pcapng stream; interfaces are described as their first frame comes.
pub struct Writer<W: Write> {
    w: W,
    ifaces: Vec<String>,
    snaplen: u32,
}

impl<W: Write> Writer<W> {
    /// Start a section, and describe interface 0 as `first` (a file needs one even
    /// when no frame is captured).
    pub fn new(mut w: W, snaplen: u32, first: &str) -> io::Result<Writer<W>> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        opt(&mut body, SHB_USERAPPL, b"vswitchd");
        opt(&mut body, OPT_END, &[]);
        w.write_all(&block(SHB, &body))?;
        let mut me = Writer {
            w,
            ifaces: Vec::new(),
            snaplen,
        };
        me.iface(first)?;
        Ok(me)
    }

    /// The interface id of `name`, described now if new.
    fn iface(&mut self, name: &str) -> io::Result<u32> {
        if let Some(i) = self.ifaces.iter().position(|n| n == name) {
            return Ok(i as u32);
        }
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&self.snaplen.to_le_bytes());
        opt(&mut body, IF_NAME, name.as_bytes());
        opt(&mut body, IF_TSRESOL, &[9]);
        opt(&mut body, OPT_END, &[]);
        self.w.write_all(&block(IDB, &body))?;
        self.ifaces.push(name.to_string());
        Ok(self.ifaces.len() as u32 - 1)
    }

    /// One frame seen on `port` at `ts_ns` (nanoseconds since the Unix epoch), `data`
    /// its first bytes, `orig_len` its length.
    pub fn packet(
        &mut self,
        port: &str,
        ts_ns: u64,
        orig_len: u32,
        data: &[u8],
        dir: Direction,
        comment: &str,
    ) -> io::Result<()> {
        let id = self.iface(port)?;
        let mut body = Vec::with_capacity(32 + data.len() + comment.len());
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&orig_len.to_le_bytes());
        body.extend_from_slice(data);
        body.extend(std::iter::repeat_n(0, pad4(data.len())));
        let flags: u32 = match dir {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        };
        opt(&mut body, EPB_FLAGS, &flags.to_le_bytes());
        if !comment.is_empty() {
            opt(&mut body, OPT_COMMENT, comment.as_bytes());
        }
        opt(&mut body, OPT_END, &[]);
        self.w.write_all(&block(EPB, &body))
    }

    /// The closing statistics: frames delivered and frames lost, on interface 0.
    pub fn stats(&mut self, ts_ns: u64, received: u64, lost: u64) -> io::Result<()> {
        let mut body = Vec::new();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        opt(&mut body, ISB_IFRECV, &received.to_le_bytes());
        opt(&mut body, ISB_IFDROP, &lost.to_le_bytes());
        opt(
            &mut body,
            OPT_COMMENT,
            format!("{received} frames captured, {lost} lost (the reader was too slow)").as_bytes(),
        );
        opt(&mut body, OPT_END, &[]);
        self.w.write_all(&block(ISB, &body))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }
}

/// One block as read: its type, and all its bytes (to copy it as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: u32,
    pub raw: Vec<u8>,
}

/// Read the next block; `None` at a clean end of stream.
pub fn read_block(r: &mut impl Read) -> io::Result<Option<Block>> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !(12..=MAX_BLOCK).contains(&len) || !len.is_multiple_of(4) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad pcapng block length {len}"),
        ));
    }
    let mut raw = vec![0u8; len];
    raw[..8].copy_from_slice(&head);
    r.read_exact(&mut raw[8..])?;
    Ok(Some(Block { kind, raw }))
}

/// What a reader learns from the blocks vswitchd writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A frame on interface `iface`.
    Packet {
        iface: String,
        ts_ns: u64,
        orig_len: u32,
        data: Vec<u8>,
        dir: Option<Direction>,
        comment: Option<String>,
    },
    /// The closing statistics.
    Stats { received: u64, lost: u64 },
}

/// Options of a block body: (code, value).
fn options(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while b.len() >= 4 {
        let code = u16::from_le_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_le_bytes([b[2], b[3]]));
        if code == OPT_END {
            break;
        }
        let Some(val) = b.get(4..4 + len) else { break };
        v.push((code, val));
        b = b.get(4 + len + pad4(len)..).unwrap_or_default();
    }
    v
}

fn u64_of(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Decodes the blocks of one stream, remembering the interfaces.
#[derive(Debug, Default)]
pub struct Reader {
    ifaces: Vec<String>,
}

impl Reader {
    /// The record in `b`, if it is one (section and interface blocks are absorbed).
    pub fn record(&mut self, b: &Block) -> Result<Option<Record>, String> {
        let body = &b.raw[8..b.raw.len() - 4];
        let u32_at = |o: usize| {
            body.get(o..o + 4)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .ok_or_else(|| "truncated pcapng block".to_string())
        };
        match b.kind {
            SHB => {
                if u32_at(0)? != BYTE_ORDER_MAGIC {
                    return Err("not a little-endian pcapng stream".into());
                }
                self.ifaces.clear();
                Ok(None)
            }
            IDB => {
                let name = options(body.get(8..).unwrap_or_default())
                    .into_iter()
                    .find(|(c, _)| *c == IF_NAME)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| format!("if{}", self.ifaces.len()));
                self.ifaces.push(name);
                Ok(None)
            }
            EPB => {
                let id = u32_at(0)? as usize;
                let ts_ns = (u64::from(u32_at(4)?) << 32) | u64::from(u32_at(8)?);
                let cap = u32_at(12)? as usize;
                let orig_len = u32_at(16)?;
                let data = body
                    .get(20..20 + cap)
                    .ok_or("truncated pcapng packet")?
                    .to_vec();
                let opts = options(body.get(20 + cap + pad4(cap)..).unwrap_or_default());
                let mut dir = None;
                let mut comment = None;
                for (c, v) in opts {
                    match c {
                        EPB_FLAGS => {
                            dir = match v.first().map(|f| f & 3) {
                                Some(1) => Some(Direction::Inbound),
                                Some(2) => Some(Direction::Outbound),
                                _ => None,
                            }
                        }
                        OPT_COMMENT => comment = Some(String::from_utf8_lossy(v).into_owned()),
                        _ => {}
                    }
                }
                Ok(Some(Record::Packet {
                    iface: self
                        .ifaces
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| format!("if{id}")),
                    ts_ns,
                    orig_len,
                    data,
                    dir,
                    comment,
                }))
            }
            ISB => {
                let mut received = 0;
                let mut lost = 0;
                for (c, v) in options(body.get(12..).unwrap_or_default()) {
                    match c {
                        ISB_IFRECV => received = u64_of(v),
                        ISB_IFDROP => lost = u64_of(v),
                        _ => {}
                    }
                }
                Ok(Some(Record::Stats { received, lost }))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::new(Vec::new(), 262144, "v1").unwrap();
        w.packet(
            "v1",
            1_700_000_000_123_456_789,
            60,
            &[1, 2, 3],
            Direction::Inbound,
            "ingress",
        )
        .unwrap();
        w.packet("v2", 5, 1000, &[9; 64], Direction::Outbound, "")
            .unwrap();
        w.packet("v1", 6, 42, &[7; 42], Direction::Inbound, "drop: isolated")
            .unwrap();
        w.stats(7, 3, 2).unwrap();
        let bytes = w.get_mut().clone();
        let mut r = &bytes[..];
        let mut reader = Reader::default();
        let mut recs = Vec::new();
        let mut kinds = Vec::new();
        while let Some(b) = read_block(&mut r).unwrap() {
            kinds.push(b.kind);
            if let Some(x) = reader.record(&b).unwrap() {
                recs.push(x);
            }
        }
        assert_eq!(kinds, vec![SHB, IDB, EPB, IDB, EPB, EPB, ISB]);
        assert_eq!(
            recs[0],
            Record::Packet {
                iface: "v1".into(),
                ts_ns: 1_700_000_000_123_456_789,
                orig_len: 60,
                data: vec![1, 2, 3],
                dir: Some(Direction::Inbound),
                comment: Some("ingress".into()),
            }
        );
        match &recs[1] {
            Record::Packet {
                iface,
                comment,
                dir,
                ..
            } => {
                assert_eq!(
                    (iface.as_str(), comment, *dir),
                    ("v2", &None, Some(Direction::Outbound))
                );
            }
            r => panic!("{r:?}"),
        }
        match &recs[2] {
            Record::Packet { comment, .. } => {
                assert_eq!(comment.as_deref(), Some("drop: isolated"))
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            recs[3],
            Record::Stats {
                received: 3,
                lost: 2
            }
        );
    }

    #[test]
    fn truncated_and_bad_blocks() {
        let mut w = Writer::new(Vec::new(), 100, "v1").unwrap();
        w.packet("v1", 1, 3, &[1, 2, 3], Direction::Inbound, "")
            .unwrap();
        let bytes = w.get_mut().clone();
        // Cut inside the last block: an error, not a panic.
        let mut r = &bytes[..bytes.len() - 3];
        let mut n = 0;
        loop {
            match read_block(&mut r) {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a cut stream ended cleanly"),
                Err(_) => break,
            }
        }
        assert_eq!(n, 2);
        let mut bad = &[1u8, 0, 0, 0, 5, 0, 0, 0][..];
        assert!(read_block(&mut bad).is_err());
        let mut empty = &[][..];
        assert_eq!(read_block(&mut empty).unwrap(), None);
    }
}
