//! The NAT rewrite (addresses, ports, incremental IP and TCP checksums) and the
//! conntrack lookup, ns per frame.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::Ipv4Addr;
use vswitch::pipeline::nat::{rewrite, tuple_of};
use vswitch::tables::conntrack::{Conntrack, CtEntry, CtState, Tuple};
use vswitch::wire::ipv4::Ipv4Meta;
use vswitch::wire::VnetHdr;

fn tcp_frame(sport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let ip = [
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 5, 198, 51, 100, 1,
    ];
    f.extend_from_slice(&ip);
    let c = vswitch::wire::ipv4::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[
        0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0x12, 0x34, 0, 0,
    ]);
    f
}

fn nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(64));
    let frames: Vec<Vec<u8>> = (0..64).map(|i| tcp_frame(40000 + i)).collect();
    let ct = Conntrack::new(65536);
    let tuples: Vec<Tuple> = frames
        .iter()
        .map(|f| {
            let m = Ipv4Meta::parse(&f[14..]).unwrap();
            tuple_of(&f[14..], &m).unwrap()
        })
        .collect();
    for t in &tuples {
        let x = Tuple {
            src: Ipv4Addr::new(198, 51, 100, 2),
            ..*t
        };
        ct.insert(
            t,
            CtEntry {
                xlate: x,
                state: CtState::Established,
                original: true,
                last_seen: 10,
            },
            10,
        );
    }
    g.bench_function("conntrack_lookup_and_rewrite", |b| {
        let mut work = frames.clone();
        b.iter(|| {
            for (f, t) in work.iter_mut().zip(&tuples) {
                if let Some(e) = ct.lookup(black_box(t), 10).found() {
                    // Translate there and back so the frame stays the same every round.
                    rewrite(f, 14, 20, t, &e.xlate, &VnetHdr::default());
                    rewrite(f, 14, 20, &e.xlate, t, &VnetHdr::default());
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, nat);
criterion_main!(benches);
