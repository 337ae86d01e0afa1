//! What a flow-table cache miss costs on this machine: for buffers of
//! several sizes (on transparent huge pages, as the flow table is), the
//! latency of one dependent load (a pointer chase over a random cycle of
//! cache lines) and the cost per line of bursts of independent random
//! lines, each prefetched first, then read and written (as a flow lookup
//! does). `cargo run --release -p perf --example memory_probe`; optional
//! arguments: sizes in MiB (default 1 16 32 64).

use std::hint::black_box;
use std::time::Instant;

use dataplane::hugemem::HugeZeroed;

const LINE: usize = 64;

/// xorshift64: cheap, and good enough to scatter line indices.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[inline(always)]
fn prefetch(p: *const u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint and never faults.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Nanoseconds per load of a chase through every line in a random order.
fn chase(words: &mut [u64]) -> f64 {
    let lines = words.len() * 8 / LINE;
    let stride = LINE / 8;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x = 0x2545_f491_4f6c_dd1d;
    for i in (1..lines).rev() {
        order.swap(i, (next(&mut x) % (i as u64 + 1)) as usize);
    }
    for (i, &l) in order.iter().enumerate() {
        words[l * stride] = (order[(i + 1) % lines] * stride) as u64;
    }
    let loads = 3_000_000;
    let mut at = order[0] * stride;
    let t = Instant::now();
    for _ in 0..loads {
        at = words[at] as usize;
    }
    black_box(at);
    t.elapsed().as_nanos() as f64 / f64::from(loads)
}

/// Nanoseconds per line of bursts of `burst` random lines: all prefetched,
/// then each read and written.
fn bursts(words: &mut [u64], burst: usize) -> f64 {
    let lines = (words.len() * 8 / LINE) as u64;
    let stride = LINE / 8;
    let mut idx = vec![0usize; burst];
    let mut x = 0x9e37_79b9_7f4a_7c15;
    let rounds = 12_000_000 / burst;
    let mut acc = 0u64;
    let t = Instant::now();
    for _ in 0..rounds {
        for i in idx.iter_mut() {
            *i = (next(&mut x) % lines) as usize * stride;
            prefetch(words.as_ptr().wrapping_add(*i));
        }
        for &i in &idx {
            acc = acc.wrapping_add(words[i]);
            words[i + 1] = words[i + 1].wrapping_add(1);
        }
    }
    black_box(acc);
    t.elapsed().as_nanos() as f64 / (rounds * burst) as f64
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 16, 32, 64]
    } else {
        sizes
    };
    println!(
        "size     dependent load   burst of 32   burst of 64   (ns; bursts: per line, prefetched)"
    );
    for mib in sizes {
        let mut b = HugeZeroed::new(mib << 20, "the probe");
        let words = b.words_mut();
        words.fill(1);
        let (c, b32, b64) = (chase(words), bursts(words, 32), bursts(words, 64));
        println!("{mib:>4} MiB  {c:>14.1}  {b32:>12.1}  {b64:>12.1}");
    }
}
