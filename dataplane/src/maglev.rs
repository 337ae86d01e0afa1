//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016).
//!
//! A [`MaglevTable`] maps a 32-bit flow hash to a backend through a lookup
//! table of prime size `M`. Each backend owns a pseudo-random permutation of
//! the slots, derived from its stable `key` only, and backends take turns
//! claiming the next still-free slot of their permutation until the table is
//! full. Because a backend's preferences do not depend on the other
//! backends, adding or removing one backend moves few slots between the
//! survivors (the "disruption" the tests measure).
//!
//! Weighting: the paper's round robin gives every backend one turn per
//! round. Here backend `i` with weight `w` gets its `k`-th turn (k = 1, 2, ..)
//! at virtual time `(2k - 1) / (2w)` and turns are served in time order
//! (Sainte-Laguë apportionment, driven by a binary heap). A backend therefore
//! ends with `round(T * w)` slots for the final time `T`, i.e. within one
//! slot of its exact weight share, and the turn sequence of one backend does
//! not depend on the weights of the others: removing a backend only deletes
//! its turns from the merged sequence, exactly like removing it from the
//! paper's round robin. With equal weights the order is the paper's round
//! robin. Simultaneous turns go to the heavier backends first, then by
//! backend key (then slice index), so the table does not depend on the order
//! of the `backends` slice, only on its content. Equal-weight backends share
//! one heap entry, so the heap holds one entry per distinct weight.
//!
//! Lookup reduces the hash with the multiply-shift ("fastrange") reduction
//! `(hash * M) >> 32`, which uses the high bits of the hash; the flow table
//! indexes its buckets with the low bits, so the two stay decorrelated.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Slot value meaning "no backend" (only present when no backend has weight).
const EMPTY: u32 = u32::MAX;

/// Seeds of the two permutation hashes; any two distinct odd constants work,
/// these are digits of pi so that nobody suspects a chosen weakness.
const SEED_OFFSET: u64 = 0x243F_6A88_85A3_08D3;
const SEED_SKIP: u64 = 0x1319_8A2E_0370_7344;

/// One backend as seen by the table builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// Stable identity of the backend (the caller hashes `ip:port` into it);
    /// it alone decides the backend's slot preferences, so it must not
    /// change while the backend stays configured.
    pub key: u64,
    /// Relative weight; 0 means the backend gets no slots (drained/down).
    pub weight: u32,
}

/// A built Maglev lookup table; immutable, cheap to look up from the fast
/// path, rebuilt off the fast path whenever the backend set changes.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend index (into the slice given to [`MaglevTable::build`]) per
    /// slot, [`u32::MAX`] when empty.
    slots: Box<[u32]>,
}

impl std::fmt::Debug for MaglevTable {
    // The slot array is tens of thousands of entries; print a summary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size())
            .field("empty", &(self.slots.first() == Some(&EMPTY)))
            .finish()
    }
}

/// splitmix64 finaliser: a bijective 64-bit mixer with full avalanche.
#[inline]
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Whether `n` is prime. Deterministic trial division by 6k ± 1, at most
/// ~22k divisions for a `u32`; only used when building a table.
// `is_multiple_of` would need Rust 1.87; the workspace targets 1.80.
#[allow(clippy::manual_is_multiple_of)]
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// The next turn of one weight class in the weighted fill, ordered so that
/// the [`BinaryHeap`] (a max-heap) pops the earliest virtual time first.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Turn {
    /// Virtual time is `num / (2 * weight)`; `num` is `2k - 1` for turn k.
    num: u64,
    /// Weight of the class; unique per heap entry.
    weight: u32,
    /// Index of the class in the class list.
    class: u32,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // Compare num/weight as fractions without rounding. u128 because
        // num < 2^34 and weight < 2^32 can overflow u64.
        let lhs = u128::from(self.num) * u128::from(other.weight);
        let rhs = u128::from(other.num) * u128::from(self.weight);
        // Reversed: earlier time is "greater"; at equal times the heavier
        // class goes first (weights are unique, so this is a total order).
        rhs.cmp(&lhs).then(self.weight.cmp(&other.weight))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Walk state of one backend's permutation `offset + j * skip (mod M)`.
struct Walk {
    index: u32,
    pos: u64,
    skip: u64,
}

impl MaglevTable {
    /// Builds the table for `backends` with `size` slots.
    ///
    /// `size` must be prime (so that every skip generates a full
    /// permutation) and should be much larger than the number of backends
    /// (the paper uses M > 100 N). Lookups return indices into `backends`.
    /// Runs off the fast path: the expected O(M log M) permutation probes
    /// dominate (about 1-2 ms for M = 65537 in release builds).
    ///
    /// # Panics
    /// If `size` is not prime or `backends.len() >= u32::MAX`.
    pub fn build(backends: &[MaglevBackend], size: u32) -> MaglevTable {
        assert!(is_prime(size), "Maglev table size {size} is not prime");
        assert!(backends.len() < EMPTY as usize, "too many Maglev backends");
        let m = u64::from(size);
        let mut slots = vec![EMPTY; size as usize].into_boxed_slice();

        // Backends with equal weight have identical turn times, so they are
        // served as one class, in key order (duplicate keys: slice order).
        // That keeps the heap as small as the number of distinct weights,
        // and makes the table independent of the slice order.
        let mut order: Vec<u32> = (0..backends.len() as u32)
            .filter(|&i| backends[i as usize].weight > 0)
            .collect();
        order.sort_unstable_by_key(|&i| {
            let b = &backends[i as usize];
            (b.weight, b.key, i)
        });
        let mut walks: Vec<Walk> = order
            .iter()
            .map(|&i| {
                let key = backends[i as usize].key;
                Walk {
                    index: i,
                    pos: mix64(key ^ SEED_OFFSET) % m,
                    // (m - 1).max(1): size 2 gives skip 1, still a permutation.
                    skip: mix64(key ^ SEED_SKIP) % (m - 1).max(1) + 1,
                }
            })
            .collect();
        let mut classes: Vec<&mut [Walk]> = Vec::new();
        let mut heap: BinaryHeap<Turn> = BinaryHeap::new();
        let mut rest = walks.as_mut_slice();
        while let Some(first) = rest.first() {
            let weight = backends[first.index as usize].weight;
            let len = rest
                .iter()
                .take_while(|w| backends[w.index as usize].weight == weight)
                .count();
            let (class, tail) = rest.split_at_mut(len);
            heap.push(Turn {
                num: 1,
                weight,
                class: classes.len() as u32,
            });
            classes.push(class);
            rest = tail;
        }

        // Occupancy bitmap: the probe loop below runs ~M ln M times, and an
        // 8 KiB bitmap (for M = 65537) stays in L1 where the 256 KiB slot
        // array would not.
        let mut taken = vec![0u64; size.div_ceil(64) as usize];
        let mut filled = 0u64;
        // `heap` is empty only when no backend has weight; otherwise every
        // turn is pushed back (PeekMut re-sifts it when dropped).
        while let Some(mut turn) = heap.peek_mut() {
            for walk in classes[turn.class as usize].iter_mut() {
                if filled == m {
                    return MaglevTable { slots };
                }
                // Terminates: the permutation visits every slot within M
                // steps and at least one slot is still empty.
                loop {
                    let slot = walk.pos as usize;
                    walk.pos += walk.skip;
                    if walk.pos >= m {
                        walk.pos -= m;
                    }
                    let (word, bit) = (slot / 64, 1u64 << (slot % 64));
                    if taken[word] & bit == 0 {
                        taken[word] |= bit;
                        slots[slot] = walk.index;
                        break;
                    }
                }
                filled += 1;
            }
            turn.num += 2;
        }
        MaglevTable { slots }
    }

    /// A table of contiguous ranges (seed 004): backend `i` owns one run of
    /// slots, in the order given, sized in proportion to `weights[i]`
    /// (largest remainders round so the runs tile the table). Because
    /// [`MaglevTable::slot_of`] is monotonic in the hash, each run is one
    /// contiguous range of the hash space. All weights 0 gives an empty
    /// table. `size` need not be prime here.
    pub fn from_ranges(weights: &[u32], size: u32) -> MaglevTable {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut slots = vec![EMPTY; size as usize].into_boxed_slice();
        if total == 0 || size == 0 {
            return MaglevTable { slots };
        }
        let m = u64::from(size);
        let mut counts: Vec<u64> = weights.iter().map(|&w| u64::from(w) * m / total).collect();
        let mut left = m - counts.iter().sum::<u64>();
        // Hand the remaining slots to the largest remainders (ties: first).
        let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(u64::from(weights[i]) * m % total));
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            counts[i] += 1;
            left -= 1;
        }
        let mut at = 0usize;
        for (i, &n) in counts.iter().enumerate() {
            for s in &mut slots[at..at + n as usize] {
                *s = i as u32;
            }
            at += n as usize;
        }
        MaglevTable { slots }
    }

    /// The contiguous slot range `[start, end)` of backend index `i`, if it
    /// owns one run of slots (as in [`MaglevTable::from_ranges`]).
    pub fn range_of(&self, i: u32) -> Option<(u32, u32)> {
        let start = self.slots.iter().position(|&b| b == i)?;
        let len = self.slots[start..].iter().take_while(|&&b| b == i).count();
        Some((start as u32, (start + len) as u32))
    }

    /// Slot index for `hash`: multiply-shift reduction into `0..size`.
    #[inline]
    pub fn slot_of(&self, hash: u32) -> usize {
        ((u64::from(hash) * self.slots.len() as u64) >> 32) as usize
    }

    /// Backend index for a flow hash, or `None` when no backend has weight.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<u32> {
        // `slot_of` is always in range; `get` keeps the fast path panic-free
        // without unsafe, and the bound check is a never-taken branch.
        match self.slots.get(self.slot_of(hash)) {
            Some(&b) if b != EMPTY => Some(b),
            _ => None,
        }
    }

    /// Number of slots (the prime `M`).
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Slots owned by each backend index `0..n_backends` (others ignored).
    pub fn slot_counts(&self, n_backends: usize) -> Vec<u32> {
        let mut counts = vec![0u32; n_backends];
        for &b in self.slots.iter() {
            if let Some(c) = counts.get_mut(b as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The raw slot array: a backend index per slot, [`u32::MAX`] if empty.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    fn backends(weights: &[u32]) -> Vec<MaglevBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MaglevBackend {
                // Something like a hashed ip:port; any distinct keys do.
                key: mix64(0xABCD_0000 + i as u64),
                weight,
            })
            .collect()
    }

    /// Asserts every backend's slot share is within 1 percentage point of
    /// its weight share, and returns the worst deviation in pp.
    fn check_shares(weights: &[u32], size: u32) -> f64 {
        let t = MaglevTable::build(&backends(weights), size);
        let counts = t.slot_counts(weights.len());
        let total_w: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        assert_eq!(
            counts.iter().map(|&c| u64::from(c)).sum::<u64>(),
            u64::from(size),
            "table not full"
        );
        let mut worst = 0f64;
        for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
            let got = 100.0 * f64::from(c) / f64::from(size);
            let want = 100.0 * w as f64 / total_w as f64;
            worst = worst.max((got - want).abs());
            assert!(
                (got - want).abs() <= 1.0,
                "backend {i} weight {w}: {got:.3}% of slots, want {want:.3}%"
            );
        }
        worst
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..50).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            small,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
        );
        assert!(is_prime(65537));
        assert!(is_prime(655373));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(!is_prime(4_294_967_295));
        assert!(!is_prime(65521 * 65519)); // product of two large primes
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn non_prime_size_panics() {
        MaglevTable::build(&backends(&[1]), 65536);
    }

    #[test]
    fn equal_weight_shares() {
        for n in [1, 3, 10, 100] {
            check_shares(&vec![1; n], M);
            check_shares(&vec![7; n], M);
        }
        // Tiny table: every backend is within one slot of M / n.
        let counts = MaglevTable::build(&backends(&[5; 7]), 13).slot_counts(7);
        assert!(counts.iter().all(|&c| c == 1 || c == 2), "{counts:?}");
        assert_eq!(counts.iter().sum::<u32>(), 13);
    }

    #[test]
    fn unequal_weight_shares() {
        check_shares(&[1, 2, 3, 4], M);
        check_shares(&[1, 10, 100], M);
        check_shares(&[100, 1, 1, 1, 1, 1], M);
        check_shares(&[u32::MAX, 1, u32::MAX / 3], M);
    }

    #[test]
    fn many_weighted_backends_shares() {
        // 1000 backends, weights 1..=100 (deterministic pseudo-random).
        let weights: Vec<u32> = (0..1000u64).map(|i| (mix64(i) % 100) as u32 + 1).collect();
        let worst = check_shares(&weights, M);
        // Sainte-Laguë gives every backend within a slot of its share.
        assert!(worst < 0.01, "worst deviation {worst} pp");
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let t = MaglevTable::build(&backends(&[3, 0, 1, 0]), M);
        let counts = t.slot_counts(4);
        assert_eq!(counts[1], 0);
        assert_eq!(counts[3], 0);
        assert_eq!(counts[0] + counts[2], M);
        check_shares(&[3, 0, 1, 0], M);
    }

    #[test]
    fn no_weight_means_no_backend() {
        for bs in [backends(&[]), backends(&[0]), backends(&[0, 0, 0])] {
            let t = MaglevTable::build(&bs, M);
            assert_eq!(t.size(), M);
            assert!(t.slots().iter().all(|&s| s == u32::MAX));
            for h in [0, 1, 12345, u32::MAX] {
                assert_eq!(t.lookup(h), None);
            }
        }
    }

    #[test]
    fn ranges_are_contiguous_proportional_and_tile_the_table() {
        let t = MaglevTable::from_ranges(&[1, 0, 2, 1], 65537);
        let c = t.slot_counts(4);
        assert_eq!(c.iter().sum::<u32>(), 65537);
        assert_eq!(c[1], 0);
        assert!((i64::from(c[2]) - 2 * i64::from(c[0])).abs() <= 2, "{c:?}");
        assert_eq!(t.range_of(0), Some((0, c[0])));
        assert_eq!(t.range_of(2), Some((c[0], c[0] + c[2])));
        assert_eq!(t.range_of(3), Some((c[0] + c[2], 65537)));
        assert_eq!(t.range_of(1), None);
        // Monotonic: hashes map to backends in range order.
        assert_eq!(t.lookup(0), Some(0));
        assert_eq!(t.lookup(u32::MAX), Some(3));
        assert_eq!(t.lookup(u32::MAX / 2), Some(2));
        let empty = MaglevTable::from_ranges(&[0, 0], 7);
        assert_eq!(empty.lookup(5), None);
        assert_eq!(MaglevTable::from_ranges(&[], 7).lookup(1), None);
    }

    #[test]
    fn lookup_covers_every_slot_consistently() {
        let t = MaglevTable::build(&backends(&[1, 2, 3]), 7);
        assert_eq!(t.slot_of(0), 0);
        assert_eq!(t.slot_of(u32::MAX), 6);
        let mut hit = [false; 7];
        for h in (0..=u32::MAX).step_by(1 << 20) {
            let s = t.slot_of(h);
            hit[s] = true;
            assert_eq!(t.lookup(h), Some(t.slots()[s]));
        }
        assert!(hit.iter().all(|&x| x));
    }

    #[test]
    fn deterministic_and_order_independent() {
        let bs = backends(&[1, 2, 3, 4, 5]);
        let a = MaglevTable::build(&bs, M);
        let b = MaglevTable::build(&bs, M);
        assert_eq!(a, b);
        // Reversed slice: the same backend keys own the same slots.
        let rev: Vec<MaglevBackend> = bs.iter().rev().copied().collect();
        let r = MaglevTable::build(&rev, M);
        for (x, y) in a.slots().iter().zip(r.slots()) {
            assert_eq!(bs[*x as usize].key, rev[*y as usize].key);
        }
    }

    /// Removes backend `victim` of `n` equal-weight backends and returns
    /// (fraction of slots moved between two survivors, per-survivor share
    /// of the victim's former slots).
    fn disruption(n: usize, victim: usize) -> (f64, Vec<u32>) {
        let before_bs = backends(&vec![1; n]);
        let mut after_bs = before_bs.clone();
        after_bs.remove(victim);
        let before = MaglevTable::build(&before_bs, M);
        let after = MaglevTable::build(&after_bs, M);
        let mut moved = 0u32;
        // Indexed by the surviving backend's position in `after_bs`.
        let mut inherited = vec![0u32; n - 1];
        for (&b, &a) in before.slots().iter().zip(after.slots()) {
            let (kb, ka) = (before_bs[b as usize].key, after_bs[a as usize].key);
            if b as usize == victim {
                inherited[a as usize] += 1;
            } else if kb != ka {
                moved += 1;
            }
        }
        (f64::from(moved) / f64::from(M), inherited)
    }

    #[test]
    fn disruption_on_removal() {
        for (n, victims) in [(10usize, [0usize, 4, 9]), (100, [0, 37, 99])] {
            for victim in victims {
                let (moved, inherited) = disruption(n, victim);
                println!(
                    "maglev disruption N={n} remove #{victim}: {:.3}% of slots moved \
                     between surviving backends",
                    moved * 100.0
                );
                assert!(moved <= 0.05, "N={n}: {:.3}% moved", moved * 100.0);
                // The victim's ~M/n slots spread over all survivors, each
                // getting roughly 1/(n-1) of them.
                let total: u32 = inherited.iter().sum();
                let fair = f64::from(total) / (n - 1) as f64;
                let (lo, hi) = (
                    *inherited.iter().min().unwrap(),
                    *inherited.iter().max().unwrap(),
                );
                println!(
                    "  victim's {total} slots: min {lo} max {hi} per survivor (fair {fair:.1})"
                );
                // Poisson-like spread: everyone within 5 sigma of fair, and
                // (with ~6.6 expected each for N=100) almost all get some.
                let tol = 5.0 * fair.sqrt();
                assert!(f64::from(lo) >= fair - tol && f64::from(hi) <= fair + tol);
                let receivers = inherited.iter().filter(|&&c| c > 0).count();
                assert!(receivers as f64 >= 0.9 * (n - 1) as f64);
            }
        }
    }

    #[test]
    fn survivors_keep_their_slots_unequal_weights() {
        // Removing a light backend barely disturbs the heavy ones' slots.
        let bs = backends(&[10, 20, 30, 40, 5]);
        let before = MaglevTable::build(&bs, M);
        let after = MaglevTable::build(&bs[..4], M);
        let kept = before
            .slots()
            .iter()
            .zip(after.slots())
            .filter(|(b, a)| b == a)
            .count();
        let owned_by_survivors = before.slots().iter().filter(|&&b| b < 4).count();
        let kept_frac = kept as f64 / owned_by_survivors as f64;
        println!(
            "unequal weights: survivors kept {:.2}% of their slots",
            kept_frac * 100.0
        );
        assert!(kept_frac >= 0.95);
    }

    #[test]
    fn build_1000_backends_timing() {
        let weights: Vec<u32> = (0..1000u64).map(|i| (mix64(i) % 100) as u32 + 1).collect();
        let bs = backends(&weights);
        let equal = backends(&[1; 1000]);
        let mut best = [f64::MAX; 2];
        for _ in 0..5 {
            for (k, b) in [&equal, &bs].into_iter().enumerate() {
                let t0 = std::time::Instant::now();
                let t = MaglevTable::build(b, M);
                best[k] = best[k].min(t0.elapsed().as_secs_f64());
                assert!(t.lookup(42).is_some());
            }
        }
        println!(
            "maglev build, 1000 backends, M={M}: equal weights {:.2} ms, weights 1..=100 {:.2} ms",
            best[0] * 1e3,
            best[1] * 1e3
        );
        // Generous bound so debug builds pass too; release is far below.
        assert!(best[0] < 1.0 && best[1] < 1.0);
    }
}
