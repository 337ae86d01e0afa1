//! Runs the pipeline benchmark's inner loop for a fixed number of bursts,
//! for profilers (callgrind counts instructions; `perf record` samples):
//! `cargo run --release -p perf --example pipeline_loop -- nat 1000 100000`;
//! a fourth argument sets the flow-table capacity (default 2^20).

use dataplane::counters::DropReason;
use dataplane::pipeline::Action;
use perf::{dispatcher, FlowFrames, TCP_ACK};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "nat".into());
    let flows: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let bursts: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let capacity: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let frames = FlowFrames::new(flows, TCP_ACK);
    let (mut worker, tables) = dispatcher(&mode, 100, capacity);
    let mut actions = [Action::Drop(DropReason::RuntFrame); 32];
    let mut burst = [[0u8; 64]; 32];
    let mut at = 0usize;
    // Establish every flow first, then time the steady state.
    for start in (0..frames.len()).step_by(32) {
        let n = 32.min(frames.len() - start);
        for (k, f) in burst[..n].iter_mut().enumerate() {
            frames.write(start + k, f);
        }
        worker.process_burst(&mut burst[..n], 0, 1, &tables, &mut actions[..n]);
    }
    let t0 = std::time::Instant::now();
    for round in 0..bursts {
        for f in burst.iter_mut() {
            frames.write(at, f);
            at = if at + 1 == frames.len() { 0 } else { at + 1 };
        }
        worker.process_burst(&mut burst, 0, round as u32 + 1, &tables, &mut actions);
    }
    let ns = t0.elapsed().as_nanos() as f64 / (bursts * 32) as f64;
    let fwd = actions
        .iter()
        .filter(|a| matches!(a, Action::Forward(_)))
        .count();
    println!(
        "{mode} {flows} flows: {ns:.1} ns/packet over {bursts} bursts of 32 (frame copy included); last burst forwarded {fwd}/32, {} flows",
        worker.flows().len()
    );
}
