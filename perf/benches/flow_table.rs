//! The flow table alone at 1M flows: lookups (hits and misses) in a random
//! order, one at a time and in bursts of 32 with the prefetch the pipeline
//! uses. Run: `cargo bench -p perf --bench flow_table`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dataplane::flow::{FlowEntry, FlowKey, FlowTable, Insert, Lookup};
use dataplane::pipeline::timeouts_ms;
use std::hint::black_box;

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

criterion_group!(benches, flow_table);
criterion_main!(benches);
