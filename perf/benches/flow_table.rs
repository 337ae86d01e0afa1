//! The flow table alone at 1M flows (`FlowTable::new(1 << 20)`: 2^19
//! buckets, 32 MiB), keys in a random order:
//!
//! * `flow_table_1M`: lookups (hits and misses), one at a time and in
//!   bursts of 32 with the prefetch the pipeline uses; per lookup.
//! * `flow_table_1M_insert`: inserts of new flows in batches of 1024 into
//!   an empty table (`empty`) and into one holding 1M - 1024 flows
//!   (`near_full`, where the cuckoo moves happen); per insert. Each batch
//!   is removed again outside the timing.
//! * `flow_table_1M_fill`: filling a fresh table with 1M flows (the
//!   mapping's page faults included); per insert.
//! * `flow_table_1M_expire`: `expire_scan` over a full table, with the
//!   worker's budget of 64 slots per call (`budget64`) and as one full pass
//!   over all 2^19 x 3 slots (`full_pass`), when no flow has expired and,
//!   for a full pass, when all 1M have (refilled outside the timing);
//!   per slot for `budget64`, per flow of the 1M for `full_pass`.
//!
//! Run: `cargo bench -p perf --bench flow_table`.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use dataplane::flow::{FlowEntry, FlowKey, FlowTable, FlowTimeouts, Insert, Lookup};
use dataplane::pipeline::timeouts_ms;
use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

const N: usize = 1 << 20;
const BURST: usize = 32;

/// Distinct pseudo-random keys (xorshift), with their hashes.
fn keys(n: usize, seed: u64) -> Vec<(FlowKey, u32)> {
    let mut x = seed | 1;
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = FlowKey {
            client_ip: x as u32,
            vip: (x >> 32) as u32 & 7,
            client_port: (x >> 40) as u16,
            proto: 6,
        };
        if seen.insert(k) {
            out.push((k, k.hash()));
        }
    }
    out
}

fn flow_table(c: &mut Criterion) {
    let mut t = FlowTable::new(N, timeouts_ms(5, 300, 10, 30));
    let hits = keys(N, 42);
    for (i, (k, h)) in hits.iter().enumerate() {
        let r = t.insert(*k, *h, FlowEntry::new_tcp(i as u32, 1, 0x10), 1);
        assert_eq!(r, Insert::New, "the table takes its full capacity");
    }
    let misses = keys(N, 4242);
    let mut g = c.benchmark_group("flow_table_1M");
    g.throughput(criterion::Throughput::Elements(BURST as u64));
    for (name, qs) in [("hit", &hits), ("miss", &misses)] {
        for prefetch in [false, true] {
            let id = BenchmarkId::new(
                name,
                if prefetch {
                    "burst32_prefetch"
                } else {
                    "one_by_one"
                },
            );
            g.bench_function(id, |b| {
                let mut at = 0usize;
                b.iter(|| {
                    let chunk = &qs[at..at + BURST];
                    at = (at + BURST) % (qs.len() - BURST);
                    if prefetch {
                        for (_, h) in chunk {
                            t.prefetch(*h);
                            t.prefetch_alternative(*h);
                        }
                    }
                    let mut found = 0u32;
                    for (k, h) in chunk {
                        if let Lookup::Hit(mut s) = t.lookup(k, *h, 2) {
                            s.observe_tcp(0x10, 2);
                            found += 1;
                        }
                    }
                    black_box(found)
                })
            });
        }
    }
    g.finish();
}

/// The timeouts of every table here (established flows: 300 s).
fn timeouts() -> FlowTimeouts {
    timeouts_ms(5, 300, 10, 30)
}

/// Flow clock at which flows last seen at 1 have expired.
const EXPIRED: u32 = 1 + 300_000;

/// `keys(n, seed)` without any key of `avoid`.
fn keys_except(n: usize, seed: u64, avoid: &[(FlowKey, u32)]) -> Vec<(FlowKey, u32)> {
    let avoid: HashSet<FlowKey> = avoid.iter().map(|(k, _)| *k).collect();
    keys(n + 64, seed)
        .into_iter()
        .filter(|(k, _)| !avoid.contains(k))
        .take(n)
        .collect()
}

/// Inserts `ks` as established flows last seen at 1; all must fit.
fn fill(t: &mut FlowTable, ks: &[(FlowKey, u32)]) {
    for (i, (k, h)) in ks.iter().enumerate() {
        let r = t.insert(*k, *h, FlowEntry::new_tcp(i as u32, 1, 0x10), 1);
        assert_eq!(r, Insert::New, "the table takes its full capacity");
    }
}

fn insert(c: &mut Criterion) {
    const BATCH: usize = 1024;
    let resident = keys(N - BATCH, 42);
    // Fresh keys, cycled through batch by batch: 1M of them, so that the
    // inserts touch the whole table rather than a cached part of it.
    let fresh = keys_except(N, 4242, &resident);
    let mut g = c.benchmark_group("flow_table_1M_insert");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, preload) in [("empty", &resident[..0]), ("near_full", &resident[..])] {
        let mut t = FlowTable::new(N, timeouts());
        fill(&mut t, preload);
        g.bench_function(BenchmarkId::new("batch1024", name), |b| {
            let mut at = 0usize;
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                let mut failed = 0usize;
                for _ in 0..iters {
                    let batch = &fresh[at..at + BATCH];
                    at = (at + BATCH) % (fresh.len() - BATCH);
                    let start = Instant::now();
                    for (i, (k, h)) in batch.iter().enumerate() {
                        let e = FlowEntry::new_tcp(i as u32, 2, 0x02);
                        failed += usize::from(t.insert(*k, *h, e, 2) != Insert::New);
                    }
                    took += start.elapsed();
                    for (k, h) in batch {
                        black_box(t.remove(k, *h));
                    }
                }
                assert_eq!(failed, 0, "every insert finds room");
                took
            })
        });
        assert_eq!(t.len(), preload.len());
    }
    g.finish();

    // Filling a fresh table: ~0.1 s an iteration, so few flat samples.
    let all = keys(N, 42);
    let mut g = c.benchmark_group("flow_table_1M_fill");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("fresh_table", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let mut t = FlowTable::new(N, timeouts());
                let start = Instant::now();
                for (i, (k, h)) in all.iter().enumerate() {
                    let e = FlowEntry::new_tcp(i as u32, 1, 0x10);
                    black_box(t.insert(*k, *h, e, 1));
                }
                took += start.elapsed();
                assert_eq!(t.len(), N);
                drop(black_box(t));
            }
            took
        })
    });
    g.finish();
}

fn expire(c: &mut Criterion) {
    const BUDGET: usize = 64;
    let ks = keys(N, 42);
    let mut t = FlowTable::new(N, timeouts());
    fill(&mut t, &ks);
    // 2^19 buckets of 64 bytes, 3 slots each.
    let slots = t.memory_bytes() / 64 * 3;

    let mut g = c.benchmark_group("flow_table_1M_expire");
    g.throughput(Throughput::Elements(BUDGET as u64));
    g.bench_function(BenchmarkId::new("budget64", "none_expired"), |b| {
        b.iter(|| {
            let n = t.expire_scan(black_box(2), BUDGET, |k, _| {
                black_box(k);
            });
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::new("full_pass", "none_expired"), |b| {
        b.iter(|| {
            let n = t.expire_scan(black_box(2), slots, |k, _| {
                black_box(k);
            });
            black_box(n)
        })
    });
    assert_eq!(t.len(), N, "nothing expired");

    // Every iteration refills the table (outside the timing; in bucket
    // order, which is quicker) and then expires all 1M flows in one pass.
    let mut by_bucket = ks.clone();
    let mask = t.memory_bytes() / 64 - 1;
    by_bucket.sort_unstable_by_key(|(_, h)| *h as usize & mask);
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function(BenchmarkId::new("full_pass", "all_expired"), |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut t, &by_bucket);
                let start = Instant::now();
                let n = t.expire_scan(black_box(EXPIRED), slots, |k, _| {
                    black_box(k);
                });
                took += start.elapsed();
                assert_eq!(n, N, "all flows expired");
            }
            took
        })
    });
    g.finish();
}

criterion_group!(benches, flow_table, insert, expire);
criterion_main!(benches);
