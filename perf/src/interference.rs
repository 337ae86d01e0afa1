//! How much of a CPU the machine itself takes away from a busy-polling
//! thread: the kernel's timer tick, interrupts, and, in a virtual machine,
//! the host descheduling the vCPU.
//!
//! A poll-mode worker never sleeps, so every such interruption is time in
//! which no packet is received; the packets that arrive meanwhile wait, and
//! then wait again while the backlog drains. Below the maximum rate this is
//! what sets the latency tail (p99, p99.9), so the suite measures it on the
//! very CPUs it runs on, with the same load (every probed CPU spinning at
//! once), and reports it next to the latency figures.
//!
//! The probe is a spin loop reading a monotonic clock: a gap between two
//! readings longer than [`STALL`] is an interruption.

use serde::Serialize;
use std::time::{Duration, Instant};

/// A gap at least this long between two clock readings of the spin loop
/// is counted as an interruption (a clock reading costs tens of ns, a
/// cache miss ≈ 0.1 µs: nothing in the loop itself comes near).
pub const STALL: Duration = Duration::from_micros(10);

/// What one CPU lost while spinning.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Interference {
    /// The CPU probed (`None`: the thread could not be pinned and ran where
    /// the scheduler put it).
    pub cpu: Option<u32>,
    /// How long the probe spun.
    pub seconds: f64,
    /// Interruptions of at least 10 µs per second.
    pub stalls_per_s: f64,
    /// … of at least 100 µs per second.
    pub long_stalls_per_s: f64,
    /// Share of the spin time lost in interruptions of at least 10 µs, in
    /// percent.
    pub lost_percent: f64,
    /// Median length of those interruptions, in µs (0 if none).
    pub median_stall_us: f64,
    /// The longest gap, in µs.
    pub max_stall_us: f64,
}

/// Summarises the gaps (of any length) seen over `total` of spinning.
pub fn summarize(cpu: Option<u32>, gaps: &[Duration], total: Duration) -> Interference {
    let secs = total.as_secs_f64().max(1e-9);
    let mut stalls: Vec<f64> = gaps
        .iter()
        .filter(|g| **g >= STALL)
        .map(|g| g.as_secs_f64() * 1e6)
        .collect();
    stalls.sort_by(f64::total_cmp);
    let long = stalls.iter().filter(|us| **us >= 100.0).count();
    let lost_us: f64 = stalls.iter().sum();
    Interference {
        cpu,
        seconds: total.as_secs_f64(),
        stalls_per_s: stalls.len() as f64 / secs,
        long_stalls_per_s: long as f64 / secs,
        lost_percent: lost_us / 1e6 / secs * 100.0,
        median_stall_us: stalls.get(stalls.len() / 2).copied().unwrap_or(0.0),
        max_stall_us: gaps
            .iter()
            .map(|g| g.as_secs_f64() * 1e6)
            .fold(0.0, f64::max),
    }
}

/// Spins for `duration` on the calling thread and records every gap of at
/// least [`STALL`] (the rest are summed into the total only).
fn spin(duration: Duration) -> (Vec<Duration>, Duration) {
    let mut gaps = Vec::with_capacity(4096);
    let start = Instant::now();
    let mut prev = start;
    loop {
        let now = Instant::now();
        let gap = now - prev;
        if gap >= STALL && gaps.len() < 1_000_000 {
            gaps.push(gap);
        }
        prev = now;
        if now - start >= duration {
            return (gaps, now - start);
        }
    }
}

/// Spins on every CPU of `cpus` at once for `duration` and reports what
/// each lost. A CPU that cannot be pinned is probed where the thread runs,
/// and says so (`cpu: None`).
pub fn probe(cpus: &[u32], duration: Duration) -> Vec<Interference> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || {
                    let pinned =
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu as usize });
                    let (gaps, total) = spin(duration);
                    summarize(pinned.then_some(cpu), &gaps, total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("the probe thread panicked"))
            .collect()
    })
}

/// One line per CPU, for the runner's output.
pub fn describe(r: &Interference) -> String {
    format!(
        "CPU {}: {:.0} interruptions/s ≥ 10 µs (median {:.0} µs), {:.1}/s ≥ 100 µs, longest {:.0} µs: {:.2} % of the core lost",
        r.cpu.map_or("?".to_string(), |c| c.to_string()),
        r.stalls_per_s,
        r.median_stall_us,
        r.long_stalls_per_s,
        r.max_stall_us,
        r.lost_percent
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn summary_counts_only_gaps_of_ten_microseconds_or_more() {
        let gaps = [us(3), us(12), us(15), us(250), us(9)];
        let r = summarize(Some(1), &gaps, Duration::from_secs(2));
        assert_eq!(r.cpu, Some(1));
        assert_eq!(r.stalls_per_s, 1.5);
        assert_eq!(r.long_stalls_per_s, 0.5);
        assert_eq!(r.median_stall_us, 15.0);
        assert_eq!(r.max_stall_us, 250.0);
        // (12 + 15 + 250) µs of 2 s.
        assert!((r.lost_percent - 277e-6 / 2.0 * 100.0).abs() < 1e-9);
    }

    #[test]
    fn no_gaps_means_nothing_lost() {
        let r = summarize(None, &[], Duration::from_millis(100));
        assert_eq!(r.stalls_per_s, 0.0);
        assert_eq!(r.lost_percent, 0.0);
        assert_eq!(r.median_stall_us, 0.0);
        assert_eq!(r.max_stall_us, 0.0);
    }

    #[test]
    fn spin_runs_its_duration_and_records_only_stalls() {
        let (gaps, total) = spin(Duration::from_millis(5));
        assert!(total >= Duration::from_millis(5));
        assert!(total < Duration::from_secs(5));
        assert!(gaps.iter().all(|g| *g >= STALL), "{gaps:?}");
        let lost: Duration = gaps.iter().sum();
        assert!(lost <= total);
    }

    #[test]
    fn probe_reports_one_result_per_cpu() {
        let r = probe(&[0], Duration::from_millis(20));
        assert_eq!(r.len(), 1);
        assert!(r[0].seconds >= 0.02);
        assert!((0.0..=100.0).contains(&r[0].lost_percent), "{:?}", r[0]);
        assert!(describe(&r[0]).contains("of the core lost"));
    }
}
