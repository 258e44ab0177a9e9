//! Ethernet/802.1Q parse, ns per frame.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vswitch::wire::EthFrame;

fn parse(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..64).map(|i| vswitch_benches::frame(i, i + 1)).collect();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("ethernet_64B_x64", |b| {
        b.iter(|| {
            for f in &frames {
                let _ = black_box(EthFrame::parse(black_box(f)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
