//! The worker lcore loop: rx burst → pipeline → tx burst, per port.

use arc_swap::{ArcSwap, Cache};
use dataplane::counters::DropReason;
use dataplane::pipeline::{Action, Worker};
use dataplane::tables::Tables;
use dpdk::{Burst, Mbuf, RxQueue, TxQueue, BURST_MAX};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The flow clock: milliseconds since start from the TSC, as a wrapping
/// 32-bit value (the flow table's time unit).
#[derive(Clone, Copy)]
pub struct FlowClock {
    start: u64,
    /// 2^32 × 1000 / TSC Hz: ms = (ticks × mult) >> 32, no division.
    mult: u128,
}

impl FlowClock {
    pub fn new(start: u64, hz: u64) -> FlowClock {
        FlowClock {
            start,
            mult: (1000u128 << 32) / u128::from(hz.max(1)),
        }
    }

    #[inline]
    pub fn now_ms(&self, tsc: u64) -> u32 {
        ((u128::from(tsc.wrapping_sub(self.start)) * self.mult) >> 32) as u32
    }
}

/// Everything one worker lcore owns.
pub struct WorkerCtx {
    pub worker: Worker,
    pub rx: Vec<RxQueue>,
    pub tx: Vec<TxQueue>,
    pub tables: Arc<ArcSwap<Tables>>,
    pub running: Arc<AtomicBool>,
    pub clock: FlowClock,
    /// Frames from the management thread (ARP requests) to send, one ring
    /// per port; only worker 0 gets them.
    pub slow_tx: Vec<Arc<crossbeam_queue::ArrayQueue<Mbuf>>>,
}

impl WorkerCtx {
    /// Polls until `running` is cleared. Returns 0 (lcore exit code).
    pub fn run(mut self) -> i32 {
        let n_ports = self.rx.len();
        let mut rx = Burst::new();
        let mut tx: Vec<Burst> = (0..n_ports).map(|_| Burst::new()).collect();
        let mut actions = [Action::Drop(DropReason::RuntFrame); BURST_MAX];
        // Keeps the current tables and only checks, with one atomic load,
        // that they are still current: cheaper than `ArcSwap::load` on
        // every iteration.
        let mut cached = Cache::new(Arc::clone(&self.tables));
        while self.running.load(Ordering::Relaxed) {
            let start = dpdk::rdtsc();
            let now = self.clock.now_ms(start);
            let tables: &Tables = cached.load();
            let mut busy = false;
            for p in 0..n_ports {
                // TX bursts are flushed after each RX burst, so one full RX
                // burst always fits in any TX burst.
                let n = self.rx[p].rx_burst(&mut rx);
                if n == 0 {
                    continue;
                }
                busy = true;
                let mut multi_bytes = 0u64;
                let multi = rx.retain(|m| {
                    let single = m.nb_segs() == 1;
                    if !single {
                        multi_bytes += u64::from(m.pkt_len());
                    }
                    single
                });
                if multi > 0 {
                    // Received like any packet, then dropped for its reason.
                    self.worker.count_rx_dropped(
                        p as u16,
                        DropReason::MultiSegment,
                        multi as u64,
                        multi_bytes,
                    );
                }
                let n = rx.len();
                self.worker.process_burst(
                    rx.as_mut_slice(),
                    p as u16,
                    now,
                    tables,
                    &mut actions[..n],
                );
                for (m, a) in rx.drain().zip(actions.iter()) {
                    if let Action::Forward(out) = *a {
                        match tx.get_mut(out as usize).map(|b| b.push(m)) {
                            Some(Ok(())) => {}
                            // A full burst (or, impossibly, no such port).
                            _ => self.worker.count_drop(out, DropReason::TxQueueFull, 1),
                        }
                    }
                    // Dropped packets are freed here; their reason is counted.
                }
                flush(&mut self.worker, &mut self.tx, &mut tx);
            }
            for (p, ring) in self.slow_tx.iter().enumerate() {
                let mut n = 0;
                while !tx[p].is_full() {
                    match ring.pop() {
                        Some(m) => {
                            let _ = tx[p].push(m);
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n > 0 {
                    self.worker.count_slow_path(p as u16, n);
                }
            }
            flush(&mut self.worker, &mut self.tx, &mut tx);
            self.worker.expire_paced(now);
            let c = self.worker.counters();
            c.loops.inc();
            if busy {
                c.busy_loops.inc();
                c.busy_cycles.add(dpdk::rdtsc().wrapping_sub(start));
            }
        }
        for b in tx.iter_mut() {
            b.clear();
        }
        0
    }
}

/// Sends every pending TX burst; what the NIC refuses is freed and counted.
fn flush(worker: &mut Worker, queues: &mut [TxQueue], bursts: &mut [Burst]) {
    for (p, (q, b)) in queues.iter_mut().zip(bursts.iter_mut()).enumerate() {
        if b.is_empty() {
            continue;
        }
        let bytes: u64 = b
            .as_mut_slice()
            .iter()
            .map(|m| u64::from(m.pkt_len()))
            .sum();
        let total = b.len();
        let mut sent = q.tx_burst(b);
        // One retry: a virtual device may need a moment to drain.
        if sent < total {
            sent += q.tx_burst(b);
        }
        let unsent = b.len();
        let unsent_bytes: u64 = if unsent == 0 {
            0
        } else {
            b.as_mut_slice()
                .iter()
                .map(|m| u64::from(m.pkt_len()))
                .sum()
        };
        b.clear();
        worker.count_tx(p as u16, sent as u64, bytes - unsent_bytes);
        if unsent > 0 {
            worker.count_drop(p as u16, DropReason::TxQueueFull, unsent as u64);
        }
    }
}
