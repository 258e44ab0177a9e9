//! A classic BPF interpreter, for `vswitchctl capture --filter`: `vswitchctl` compiles
//! the tcpdump (pcap-filter) expression with `tcpdump -ddd -y EN10MB` and sends the
//! program; vswitchd checks it once ([`Program::new`], the rules of the kernel's
//! `bpf_check_classic`) and runs it on each candidate frame ([`Program::run`]).
//!
//! A program only jumps forward and ends in `ret`, so a run is at most as many steps as
//! the program has instructions. Loads outside the frame end the run with 0 ("no
//! match"), as in the kernel. Linux's ancillary loads (negative offsets such as
//! `SKF_AD_VLAN_TAG`) are refused: libpcap never emits them for a program compiled
//! without a live interface, and our frames carry their 802.1Q tag in the bytes.
//!
//! The frame may be in up to three pieces (the egress stage sends `head`, a pushed tag
//! and `rest` without joining them), so loads read through [`Frame`].
//!
//! Read first: McCanne & Jacobson, "The BSD Packet Filter" (1993); Linux
//! `Documentation/networking/filter.rst`.

/// One instruction, as `tcpdump -ddd` prints it: `code jt jf k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Longest program accepted (the kernel's `BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Scratch memory words.
const MEMWORDS: u32 = 16;

// Instruction classes, sizes, modes, operations (linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;

const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;

const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;

const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const MOD: u16 = 0x90;
const XOR: u16 = 0xa0;

const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;

/// Operand source: the constant `k` or the index register `X`.
const SRC_X: u16 = 0x08;
/// `ret` operand: `k`, or the accumulator.
const RVAL_A: u16 = 0x10;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// Why a program was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("empty BPF program")]
    Empty,
    #[error("BPF program longer than {MAX_INSNS} instructions")]
    TooLong,
    #[error("BPF instruction {0}: unknown opcode {1:#06x}")]
    BadOpcode(usize, u16),
    #[error("BPF instruction {0}: jump out of the program")]
    BadJump(usize),
    #[error("BPF instruction {0}: scratch memory index out of range")]
    BadMem(usize),
    #[error("BPF instruction {0}: division by the constant 0")]
    DivZero(usize),
    #[error("BPF instruction {0}: Linux packet extensions are not supported")]
    Extension(usize),
    #[error("BPF program does not end in a return")]
    NoReturn,
}

/// A frame as up to three byte slices in a row.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    parts: [&'a [u8]; 3],
}

impl<'a> Frame<'a> {
    pub fn whole(b: &'a [u8]) -> Frame<'a> {
        Frame {
            parts: [b, &[], &[]],
        }
    }

    pub fn pieces(a: &'a [u8], b: &'a [u8], c: &'a [u8]) -> Frame<'a> {
        Frame { parts: [a, b, c] }
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn byte(&self, mut off: usize) -> Option<u8> {
        for p in self.parts {
            if off < p.len() {
                return Some(p[off]);
            }
            off -= p.len();
        }
        None
    }

    /// `n` (1, 2 or 4) bytes at `off`, big-endian.
    #[inline]
    fn load(&self, off: u32, n: usize) -> Option<u32> {
        let off = off as usize;
        // Fast path: inside the first piece (nearly always: headers are in `head`,
        // or the frame is whole).
        if let Some(b) = self.parts[0].get(off..off.checked_add(n)?) {
            return Some(b.iter().fold(0u32, |a, &x| a << 8 | u32::from(x)));
        }
        let mut v = 0u32;
        for i in 0..n {
            v = v << 8 | u32::from(self.byte(off + i)?);
        }
        Some(v)
    }

    /// The frame's bytes, at most `cap` of them.
    pub fn to_vec(&self, cap: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len().min(cap));
        for p in self.parts {
            let room = cap - v.len();
            v.extend_from_slice(&p[..p.len().min(room)]);
        }
        v
    }
}

/// A checked program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// Check `insns` as the kernel does before attaching a classic filter.
    pub fn new(insns: Vec<Insn>) -> Result<Program, BpfError> {
        if insns.is_empty() {
            return Err(BpfError::Empty);
        }
        if insns.len() > MAX_INSNS {
            return Err(BpfError::TooLong);
        }
        let n = insns.len();
        for (pc, i) in insns.iter().enumerate() {
            let code = i.code;
            let bad = || BpfError::BadOpcode(pc, code);
            match code & 0x07 {
                LD | LDX => {
                    let size = code & 0x18;
                    let mode = code & 0xe0;
                    let ok = if code & 0x07 == LD {
                        matches!((size, mode), (W | H | B, ABS | IND) | (W, IMM | MEM | LEN))
                    } else {
                        matches!((size, mode), (W, IMM | MEM | LEN) | (B, MSH))
                    };
                    if !ok || code & !0xff != 0 {
                        return Err(bad());
                    }
                    if mode == MEM && i.k >= MEMWORDS {
                        return Err(BpfError::BadMem(pc));
                    }
                    if matches!(mode, ABS | IND | MSH) && i.k >= 0x8000_0000 {
                        return Err(BpfError::Extension(pc));
                    }
                }
                ST | STX => {
                    if code & !0x07 != 0 {
                        return Err(bad());
                    }
                    if i.k >= MEMWORDS {
                        return Err(BpfError::BadMem(pc));
                    }
                }
                ALU => {
                    let op = code & 0xf0;
                    if !matches!(
                        op,
                        ADD | SUB | MUL | DIV | OR | AND | LSH | RSH | NEG | MOD | XOR
                    ) || code & !0xff != 0
                    {
                        return Err(bad());
                    }
                    if matches!(op, DIV | MOD) && code & SRC_X == 0 && i.k == 0 {
                        return Err(BpfError::DivZero(pc));
                    }
                }
                JMP => {
                    let op = code & 0xf0;
                    if code & !0xff != 0 {
                        return Err(bad());
                    }
                    match op {
                        JA => {
                            if (pc as u64 + 1 + u64::from(i.k)) >= n as u64 {
                                return Err(BpfError::BadJump(pc));
                            }
                        }
                        JEQ | JGT | JGE | JSET => {
                            if pc + 1 + usize::from(i.jt) >= n || pc + 1 + usize::from(i.jf) >= n {
                                return Err(BpfError::BadJump(pc));
                            }
                        }
                        _ => return Err(bad()),
                    }
                }
                RET => {
                    if !matches!(code & 0x18, 0x00 | SRC_X | RVAL_A) || code & !0x1f != 0 {
                        return Err(bad());
                    }
                }
                MISC => {
                    if !matches!(code & 0xf8, TAX | TXA) || code & !0xff != 0 {
                        return Err(bad());
                    }
                }
                _ => return Err(bad()),
            }
        }
        if insns[n - 1].code & 0x07 != RET {
            return Err(BpfError::NoReturn);
        }
        Ok(Program { insns })
    }

    /// Run on `f`, whose length on the wire is `wirelen`: the number of bytes to
    /// capture (0: not a match).
    pub fn run(&self, f: &Frame<'_>, wirelen: u32) -> u32 {
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; MEMWORDS as usize];
        let mut pc = 0usize;
        // Checked programs jump only forward and end in `ret`: this loop ends.
        while let Some(i) = self.insns.get(pc) {
            pc += 1;
            let k = i.k;
            match i.code & 0x07 {
                LD => {
                    let n = match i.code & 0x18 {
                        W => 4,
                        H => 2,
                        _ => 1,
                    };
                    a = match i.code & 0xe0 {
                        ABS => match f.load(k, n) {
                            Some(v) => v,
                            None => return 0,
                        },
                        IND => match x.checked_add(k).and_then(|o| f.load(o, n)) {
                            Some(v) => v,
                            None => return 0,
                        },
                        IMM => k,
                        MEM => mem[(k % MEMWORDS) as usize],
                        _ => wirelen,
                    };
                }
                LDX => {
                    x = match i.code & 0xe0 {
                        IMM => k,
                        MEM => mem[(k % MEMWORDS) as usize],
                        LEN => wirelen,
                        _ => match f.load(k, 1) {
                            Some(v) => (v & 0x0f) << 2,
                            None => return 0,
                        },
                    };
                }
                ST => mem[(k % MEMWORDS) as usize] = a,
                STX => mem[(k % MEMWORDS) as usize] = x,
                ALU => {
                    let v = if i.code & SRC_X != 0 { x } else { k };
                    a = match i.code & 0xf0 {
                        ADD => a.wrapping_add(v),
                        SUB => a.wrapping_sub(v),
                        MUL => a.wrapping_mul(v),
                        DIV => match a.checked_div(v) {
                            Some(r) => r,
                            None => return 0,
                        },
                        MOD => match a.checked_rem(v) {
                            Some(r) => r,
                            None => return 0,
                        },
                        OR => a | v,
                        AND => a & v,
                        LSH => a.checked_shl(v).unwrap_or(0),
                        RSH => a.checked_shr(v).unwrap_or(0),
                        NEG => a.wrapping_neg(),
                        _ => a ^ v,
                    };
                }
                JMP => {
                    let v = if i.code & SRC_X != 0 { x } else { k };
                    let taken = match i.code & 0xf0 {
                        JA => {
                            pc += k as usize;
                            continue;
                        }
                        JEQ => a == v,
                        JGT => a > v,
                        JGE => a >= v,
                        _ => a & v != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => {
                    return match i.code & 0x18 {
                        RVAL_A => a,
                        SRC_X => x,
                        _ => k,
                    };
                }
                _ => {
                    if i.code & 0xf8 == TXA {
                        a = x;
                    } else {
                        x = a;
                    }
                }
            }
        }
        0
    }
}

/// Parse `tcpdump -ddd` output: the instruction count, then `code jt jf k` per line.
pub fn parse_ddd(text: &str) -> Result<Vec<Insn>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let n: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("no instruction count")?;
    let mut v = Vec::with_capacity(n.min(MAX_INSNS));
    for l in lines {
        let f: Vec<u64> = l
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad instruction {l:?}"))?;
        let [code, jt, jf, k] = f[..] else {
            return Err(format!("bad instruction {l:?}"));
        };
        let (Ok(code), Ok(jt), Ok(jf), Ok(k)) = (
            u16::try_from(code),
            u8::try_from(jt),
            u8::try_from(jf),
            u32::try_from(k),
        ) else {
            return Err(format!("bad instruction {l:?}"));
        };
        v.push(Insn { code, jt, jf, k });
    }
    if v.len() != n {
        return Err(format!("{n} instructions announced, {} given", v.len()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// Programs as `tcpdump -ddd -y EN10MB EXPR` (tcpdump 4.99.3, libpcap 1.10.3)
    /// prints them.
    const PROGS: &[(&str, &str)] = &[
        ("ip and tcp port 80", "13;40 0 0 12;21 0 10 2048;48 0 0 23;21 0 8 6;40 0 0 20;69 6 0 8191;177 0 0 14;72 0 0 14;21 2 0 80;72 0 0 16;21 0 1 80;6 0 0 262144;6 0 0 0"),
        ("vlan 10 and host 10.0.0.5", "21;40 0 0 12;21 2 0 33024;21 1 0 34984;21 0 16 37120;40 0 0 14;84 0 0 4095;21 0 13 10;40 0 0 16;21 0 4 2048;32 0 0 30;21 8 0 167772165;32 0 0 34;21 6 7 167772165;21 1 0 2054;21 0 5 32821;32 0 0 32;21 2 0 167772165;32 0 0 42;21 0 1 167772165;6 0 0 262144;6 0 0 0"),
        ("arp", "4;40 0 0 12;21 0 1 2054;6 0 0 262144;6 0 0 0"),
        ("udp and dst port 53", "16;40 0 0 12;21 0 7 2048;48 0 0 23;21 0 11 17;40 0 0 20;69 9 0 8191;177 0 0 14;72 0 0 16;21 5 6 53;21 0 5 34525;48 0 0 20;21 0 3 17;40 0 0 56;21 0 1 53;6 0 0 262144;6 0 0 0"),
        ("net 10.0.0.0/24", "18;40 0 0 12;21 0 6 2048;32 0 0 26;84 0 0 4294967040;21 11 0 167772160;32 0 0 30;84 0 0 4294967040;21 8 9 167772160;21 1 0 2054;21 0 7 32821;32 0 0 28;84 0 0 4294967040;21 3 0 167772160;32 0 0 38;84 0 0 4294967040;21 0 1 167772160;6 0 0 262144;6 0 0 0"),
        ("icmp", "6;40 0 0 12;21 0 3 2048;48 0 0 23;21 0 1 1;6 0 0 262144;6 0 0 0"),
        ("ether src 02:00:00:00:00:05", "6;32 0 0 8;21 0 3 5;40 0 0 6;21 0 1 512;6 0 0 262144;6 0 0 0"),
        ("greater 1000", "4;128 0 0 0;53 0 1 1000;6 0 0 262144;6 0 0 0"),
        ("tcp[tcpflags] & tcp-syn != 0", "11;40 0 0 12;21 0 8 2048;48 0 0 23;21 0 6 6;40 0 0 20;69 4 0 8191;177 0 0 14;80 0 0 27;69 0 1 2;6 0 0 262144;6 0 0 0"),
    ];

    fn prog(expr: &str) -> Program {
        let (_, text) = PROGS.iter().find(|(e, _)| *e == expr).expect("known expr");
        Program::new(parse_ddd(&text.replace(';', "\n")).expect("parses")).expect("valid")
    }

    fn tcp(vlan: Option<u16>, src: [u8; 4], dport: u16, syn: bool, pad: usize) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 5], [2, 0, 0, 0, 0, 6]);
        let mut f = Vec::new();
        let payload = vec![0u8; pad];
        match (vlan, syn) {
            (Some(v), _) => eth
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4(src, [10, 0, 0, 6], 64)
                .tcp(40000, dport, 1, 100)
                .write(&mut f, &payload),
            (None, true) => eth
                .ipv4(src, [10, 0, 0, 6], 64)
                .tcp(40000, dport, 1, 100)
                .syn()
                .write(&mut f, &payload),
            (None, false) => eth
                .ipv4(src, [10, 0, 0, 6], 64)
                .tcp(40000, dport, 1, 100)
                .ack(5)
                .write(&mut f, &payload),
        }
        .unwrap();
        f
    }

    fn udp(dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 5], [2, 0, 0, 0, 0, 6])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(5555, dport)
            .write(&mut f, &[1, 2, 3])
            .unwrap();
        f
    }

    fn arp() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 5, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 5, 10, 0, 0, 5, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        f
    }

    fn matches(expr: &str, f: &[u8]) -> bool {
        prog(expr).run(&Frame::whole(f), f.len() as u32) != 0
    }

    #[test]
    fn tcpdump_programs_match_what_tcpdump_means() {
        let web = tcp(None, [10, 0, 0, 5], 80, true, 0);
        let ssh = tcp(None, [10, 0, 0, 5], 22, false, 0);
        assert!(matches("ip and tcp port 80", &web));
        assert!(!matches("ip and tcp port 80", &ssh));
        assert!(!matches("ip and tcp port 80", &udp(80)));
        assert!(matches("udp and dst port 53", &udp(53)));
        assert!(!matches("udp and dst port 53", &udp(54)));
        assert!(matches("arp", &arp()));
        assert!(!matches("arp", &web));
        assert!(matches("icmp", &{
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
                .icmpv4_echo_request(1, 1)
                .write(&mut f, &[])
                .unwrap();
            f
        }));
        assert!(matches("net 10.0.0.0/24", &web));
        assert!(!matches("net 10.0.0.0/24", &udp(1)));
        assert!(matches("net 10.0.0.0/24", &arp()), "ARP sender in the net");
        assert!(matches("ether src 02:00:00:00:00:05", &web));
        assert!(!matches(
            "ether src 02:00:00:00:00:05",
            &arp()[..]
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 11 { 9 } else { *b })
                .collect::<Vec<_>>()
        ));
        assert!(matches(
            "greater 1000",
            &tcp(None, [1, 1, 1, 1], 1, true, 1000)
        ));
        assert!(!matches("greater 1000", &web));
        assert!(matches("tcp[tcpflags] & tcp-syn != 0", &web));
        assert!(!matches("tcp[tcpflags] & tcp-syn != 0", &ssh));
        // VLAN: the tag is in the frame's bytes.
        assert!(matches(
            "vlan 10 and host 10.0.0.5",
            &tcp(Some(10), [10, 0, 0, 5], 1, true, 0)
        ));
        assert!(!matches(
            "vlan 10 and host 10.0.0.5",
            &tcp(Some(11), [10, 0, 0, 5], 1, true, 0)
        ));
        assert!(!matches("vlan 10 and host 10.0.0.5", &web), "untagged");
        // Snap length: tcpdump's default.
        assert_eq!(prog("arp").run(&Frame::whole(&arp()), 42), 262144);
    }

    #[test]
    fn split_frames_read_like_whole_ones() {
        let f = tcp(Some(10), [10, 0, 0, 5], 80, true, 0);
        let p = prog("vlan 10 and host 10.0.0.5");
        for a in 0..f.len() {
            for b in a..f.len() {
                let fr = Frame::pieces(&f[..a], &f[a..b], &f[b..]);
                assert_eq!(fr.len(), f.len());
                assert_eq!(p.run(&fr, f.len() as u32), 262144, "split at {a}, {b}");
                assert_eq!(fr.to_vec(20), f[..20].to_vec());
            }
        }
    }

    #[test]
    fn bad_programs_are_refused() {
        let i = |code, jt, jf, k| Insn { code, jt, jf, k };
        let ret = i(0x06, 0, 0, 1);
        assert_eq!(Program::new(vec![]), Err(BpfError::Empty));
        assert_eq!(
            Program::new(vec![ret; MAX_INSNS + 1]),
            Err(BpfError::TooLong)
        );
        assert_eq!(
            Program::new(vec![i(0x28, 0, 0, 12)]),
            Err(BpfError::NoReturn)
        );
        assert_eq!(
            Program::new(vec![i(0x15, 5, 0, 1), ret]),
            Err(BpfError::BadJump(0))
        );
        assert_eq!(
            Program::new(vec![i(0x05, 0, 0, 1), ret]),
            Err(BpfError::BadJump(0))
        );
        assert_eq!(
            Program::new(vec![i(0x60, 0, 0, 16), ret]),
            Err(BpfError::BadMem(0))
        );
        assert_eq!(
            Program::new(vec![i(0x34, 0, 0, 0), ret]),
            Err(BpfError::DivZero(0))
        );
        // ld [SKF_AD_OFF + SKF_AD_VLAN_TAG]
        assert_eq!(
            Program::new(vec![i(0x20, 0, 0, 0xffff_f02c), ret]),
            Err(BpfError::Extension(0))
        );
        assert_eq!(
            Program::new(vec![i(0xff, 0, 0, 0), ret]),
            Err(BpfError::BadOpcode(0, 0xff))
        );
        assert!(parse_ddd("2\n6 0 0 1\n").is_err(), "count mismatch");
        assert!(parse_ddd("1\n6 0 0\n").is_err());
        assert!(parse_ddd("1\n70000 0 0 1\n").is_err());
    }

    #[test]
    fn alu_scratch_and_division_by_x() {
        let i = |code, k| Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        // A = 7; M[3] = A; X = 2; A = M[3]; A *= X; A -= 4; A /= X; ret A  → (14-4)/2 = 5
        let p = Program::new(vec![
            i(0x00, 7),
            i(0x02, 3),
            i(0x01, 2),
            i(0x60, 3),
            i(0x2c, 0),
            i(0x14, 4),
            i(0x3c, 0),
            i(0x16, 0),
        ])
        .unwrap();
        assert_eq!(p.run(&Frame::whole(&[]), 0), 5);
        // X = 0; A /= X → 0 (no match), not a panic.
        let p = Program::new(vec![i(0x01, 0), i(0x3c, 0), i(0x06, 1)]).unwrap();
        assert_eq!(p.run(&Frame::whole(&[]), 0), 0);
        // A load past the end: no match.
        let p = Program::new(vec![i(0x20, 100), i(0x06, 1)]).unwrap();
        assert_eq!(p.run(&Frame::whole(&[0; 10]), 10), 0);
    }

    proptest::proptest! {
        #[test]
        fn checked_programs_never_panic(
            prog in proptest::collection::vec((0u16..256, 0u8..8, 0u8..8, proptest::num::u32::ANY), 1..40),
            frame in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
        ) {
            let insns: Vec<Insn> = prog.iter().map(|&(code, jt, jf, k)| Insn { code, jt, jf, k }).collect();
            if let Ok(p) = Program::new(insns) {
                let _ = p.run(&Frame::whole(&frame), frame.len() as u32);
                let (a, b) = frame.split_at(frame.len() / 2);
                let _ = p.run(&Frame::pieces(a, &[], b), frame.len() as u32);
            }
        }
    }
}
