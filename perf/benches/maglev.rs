//! Maglev consistent hashing (`dataplane::maglev`):
//!
//! * `maglev_build`: `MaglevTable::build` of a 65,537-slot table for 10,
//!   100 and 1,000 equal-weight backends, and for 1,000 backends of four
//!   different weights (`1000_weighted`, one heap entry per weight). The
//!   target is "well under 10 ms" for 1,000 backends at 65,537 slots.
//!   Figures are per table.
//! * `maglev_lookup`: `MaglevTable::lookup` of 1,024 random flow hashes in a
//!   65,537-slot table (256 KiB, in cache after the first batches) for 100
//!   and 1,000 backends. Figures are per lookup.
//!
//! Run: `cargo bench -p perf --bench maglev`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::maglev::{MaglevBackend, MaglevTable};
use std::hint::black_box;

/// Table size: the default (a prime, > 100 x 100 backends).
const SLOTS: u32 = 65_537;
/// Lookups per iteration of `maglev_lookup`.
const LOOKUPS: usize = 1024;

/// splitmix64, for stable backend keys and random hashes.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` backends with random keys (as the hash of `ip:port` would be) and
/// the weight `weight(i)`.
fn backends(n: usize, weight: impl Fn(usize) -> u32) -> Vec<MaglevBackend> {
    let mut s = 0x5eed;
    (0..n)
        .map(|i| MaglevBackend {
            key: splitmix(&mut s),
            weight: weight(i),
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    // A build takes milliseconds: 20 samples keep a run within seconds.
    g.sample_size(20);
    let cases = [
        ("10", backends(10, |_| 1)),
        ("100", backends(100, |_| 1)),
        ("1000", backends(1000, |_| 1)),
        ("1000_weighted", backends(1000, |i| 1 + (i % 4) as u32)),
    ];
    for (name, bs) in &cases {
        // Every backend gets slots: the table is complete.
        let t = MaglevTable::build(bs, SLOTS);
        assert!(t.slot_counts(bs.len()).iter().all(|&n| n > 0));
        g.bench_with_input(BenchmarkId::new("backends", name), bs, |b, bs| {
            b.iter(|| MaglevTable::build(black_box(bs), black_box(SLOTS)))
        });
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    let mut s = 42;
    let hashes: Vec<u32> = (0..LOOKUPS).map(|_| splitmix(&mut s) as u32).collect();
    for n in [100usize, 1000] {
        let t = MaglevTable::build(&backends(n, |_| 1), SLOTS);
        g.bench_function(BenchmarkId::new("random_1024", n), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &h in black_box(&hashes[..]) {
                    acc = acc.wrapping_add(t.lookup(h).unwrap_or(u32::MAX));
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
