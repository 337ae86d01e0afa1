//! The per-packet pipeline (parse → flow lookup → Maglev → rewrite →
//! count) over 64-byte TCP frames, in bursts of 32 as a worker sees them,
//! at 1,000 and 1,000,000 established flows, NAT and DR. Frames are
//! produced from 12 bytes per flow (see `perf::FlowFrames`); the
//! "copy_only" baseline measures producing them, so it can be subtracted.
//!
//! Run: `cargo bench -p perf --bench pipeline` (or `make bench`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::counters::DropReason;
use dataplane::pipeline::Action;
use perf::{dispatcher, FlowFrames, TCP_ACK};
use std::hint::black_box;

const BURST: usize = 32;

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    for flows in [1_000u32, 1_000_000] {
        let frames = FlowFrames::new(flows, TCP_ACK);
        g.bench_with_input(BenchmarkId::new("copy_only", flows), &flows, |b, _| {
            let mut burst = vec![[0u8; 64]; BURST];
            let mut at = 0usize;
            b.iter(|| {
                for f in burst.iter_mut() {
                    frames.write(at, f);
                    at = if at + 1 == frames.len() { 0 } else { at + 1 };
                }
                black_box(&mut burst);
            })
        });
        for mode in ["nat", "dr"] {
            let (mut worker, tables) = dispatcher(mode, 100, 1 << 20);
            // Establish every flow first: the benchmark measures the steady
            // state of established connections.
            let mut actions = [Action::Drop(DropReason::RuntFrame); BURST];
            let mut burst = vec![[0u8; 64]; BURST];
            for start in (0..frames.len()).step_by(BURST) {
                let n = BURST.min(frames.len() - start);
                for (k, f) in burst[..n].iter_mut().enumerate() {
                    frames.write(start + k, f);
                }
                worker.process_burst(&mut burst[..n], 0, 1, &tables, &mut actions[..n]);
            }
            assert_eq!(
                worker.flows().len(),
                flows as usize,
                "all flows established"
            );
            g.bench_with_input(BenchmarkId::new(mode, flows), &flows, |b, _| {
                let mut burst = vec![[0u8; 64]; BURST];
                let mut at = 0usize;
                let mut now = 2u32;
                b.iter(|| {
                    for f in burst.iter_mut() {
                        frames.write(at, f);
                        at = if at + 1 == frames.len() { 0 } else { at + 1 };
                    }
                    now += 1;
                    worker.process_burst(&mut burst, 0, now, &tables, &mut actions);
                    debug_assert!(actions.iter().all(|a| *a == Action::Forward(1)));
                    black_box(&actions);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
