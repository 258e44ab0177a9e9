//! VXLAN's software offloads: a 64 KB TCP super-frame cut into MSS segments behind
//! their VXLAN headers (checksums computed, payloads referenced), and a train of such
//! segments joined back into a super-frame (each iteration also restores the train: one
//! 64 KB copy). Bytes per second of TCP payload.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vswitch::wire::gro;
use vswitch::wire::gso::{self, Piece, Prepared};
use vswitch::wire::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};

const PAYLOAD: usize = 65_160; // 45 segments of 1448 bytes, what a veth hands over

/// A TCP/IPv4 super-frame (timestamps option, 66 bytes of headers) and its offloads.
fn superframe() -> (Vec<u8>, VnetHdr) {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 32 + PAYLOAD) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x10]);
    f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..PAYLOAD).map(|i| (i * 7) as u8));
    let v = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    (f, v)
}

fn vxlan(c: &mut Criterion) {
    let (f, v) = superframe();
    let vxh = [0x08, 0, 0, 0, 0, 0, 42, 0];
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    let mut prep = Prepared::default();
    g.bench_function("segment_64KB_superframe", |b| {
        b.iter(|| {
            prep.clear();
            let r = gso::prepare_into(&f[..12], &f[12..], 0, &v, &vxh, &mut prep);
            black_box((r, prep.wires.len()))
        })
    });
    // The train as it arrives in one UDP GRO read: the segments back to back.
    prep.clear();
    let _ = gso::prepare_into(&f[..12], &f[12..], 0, &v, &vxh, &mut prep);
    let mut train = Vec::new();
    let mut segs = Vec::new();
    for w in &prep.wires {
        let start = train.len();
        for p in &prep.pieces[w.first..w.first + w.count] {
            match *p {
                Piece::Arena { start, len } => {
                    train.extend_from_slice(&prep.arena[start..start + len])
                }
                Piece::Frame { start, len, .. } => {
                    train.extend_from_slice(&f[12 + start..12 + start + len])
                }
            }
        }
        segs.push((start + 8, w.len - 8));
    }
    let mut buf = train.clone();
    g.bench_function("coalesce_45_segments", |b| {
        b.iter(|| {
            buf.copy_from_slice(&train);
            black_box(gro::coalesce(&mut buf, &segs))
        })
    });
    g.finish();
}

criterion_group!(benches, vxlan);
criterion_main!(benches);
