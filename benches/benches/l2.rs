//! The L2 stage (parse, VLAN, learn, lookup, queue, flush to a null device), ns per
//! frame on one core, for a batch of 64 frames.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch::dp::Batch;
use vswitch::pipeline::{flush, process, Ctx, OutQueues};
use vswitch::tables::neigh::NeighMap;
use vswitch_benches::{bridge, frame};

fn l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2");
    g.throughput(Throughput::Elements(64));

    // Known unicast: 64 hosts behind port 0 talk to 64 hosts behind port 1.
    let snap = bridge(4, 8192);
    let mut back = Batch::new();
    for i in 0..64 {
        back.push_copy(&frame(1000 + i, 2000 + i));
    }
    let mut fwd = Batch::new();
    for i in 0..64 {
        fwd.push_copy(&frame(2000 + i, 1000 + i));
    }
    let mut out = OutQueues::default();
    let neigh = NeighMap::default();
    let ctx = Ctx {
        worker: 0,
        now: 10,
        snap: &snap,
        neigh: &neigh,
        punt: None,
        trace: None,
    };
    process(&ctx, 1, &mut back, &mut out);
    flush(&ctx, &back, &mut out);
    g.bench_function("unicast_learned", |b| {
        b.iter(|| {
            process(&ctx, 0, &mut fwd, &mut out);
            flush(&ctx, &fwd, &mut out);
        })
    });

    // Broadcast to 3 other ports.
    let mut bc = Batch::new();
    for i in 0..64 {
        let mut f = frame(0, 3000 + i);
        f[..6].copy_from_slice(&[0xff; 6]);
        bc.push_copy(&f);
    }
    g.bench_function("flood_3_ports", |b| {
        b.iter(|| {
            process(&ctx, 0, &mut bc, &mut out);
            flush(&ctx, &bc, &mut out);
        })
    });
    g.finish();
}

criterion_group!(benches, l2);
criterion_main!(benches);
