//! Sluice performance tools.
//!
//! - [`gen`] and [`check`]: the pure parts of `sluice-pktgen` (frame
//!   building with precomputed checksums, traffic mix, sampled checks of
//!   what comes back);
//! - [`interference`]: how much of a CPU the machine takes from a
//!   busy-polling thread (timer ticks, interrupts, a host descheduling the
//!   vCPU), measured by the runner next to the latency figures;
//! - [`suite`]: the pure parts of the `sluice-perf` runner (scenarios,
//!   statistics, the table and the chart);
//! - workloads for the criterion benchmarks: a dispatcher set up from a
//!   configuration as `sluiced` would be, and 64-byte TCP frames spread
//!   over a chosen number of flows.

pub mod check;
pub mod gen;
pub mod interference;
pub mod report;
pub mod suite;

use dataplane::appliance::Appliance;
use dataplane::counters::WorkerCounters;
use dataplane::events::{EventRing, HintRing};
use dataplane::pipeline::Worker;
use dataplane::tables::Tables;
use std::sync::Arc;

pub const CLIENT_PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0xfe];
pub const BACKEND_PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0xfe];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const VIP: [u8; 4] = [198, 18, 100, 1];

/// A one-worker dispatcher with one VIP (`mode` "nat" or "dr") over
/// `backends` backends, flow table sized for `capacity` flows.
pub fn dispatcher(mode: &str, backends: usize, capacity: usize) -> (Worker, Tables) {
    let mut text = format!(
        r#"
[eal]
main_core = 0
worker_cores = [1]
hugepages = false
[flows]
capacity_per_worker = {capacity}
[[port]]
name = "client"
vdev = "net_null0"
role = "client"
address = "198.18.1.254/24"
gateway = "198.18.1.1"
gateway_mac = "02:00:00:00:01:01"
[[port]]
name = "backend"
vdev = "net_null1"
role = "backend"
address = "198.18.0.254/16"
[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
mode = "{mode}"
"#
    );
    for i in 0..backends {
        let port = if mode == "dr" { 80 } else { 8080 };
        text.push_str(&format!(
            "[[vip.backend]]\naddress = \"198.18.{}.{}\"\nport = {port}\nmac = \"02:00:00:01:{:02x}:{:02x}\"\n",
            2 + i / 200,
            1 + i % 200,
            i / 256,
            i % 256
        ));
    }
    let cfg = firmware_config::parse_with(
        &text,
        "bench.toml",
        &firmware_config::Environment { cpus: 2 },
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"));
    let mut app = Appliance::new(cfg, vec![CLIENT_PORT_MAC, BACKEND_PORT_MAC]);
    let tables = app.build_tables();
    let worker = Worker::new(
        0,
        capacity,
        dataplane::pipeline::timeouts_ms(5, 300, 10, 30),
        Arc::new(WorkerCounters::default()),
        Arc::new(EventRing::new(1 << 16)),
        Arc::new(HintRing::new(1024)),
    );
    (worker, tables)
}

/// A 64-byte Ethernet/IPv4/TCP frame (ACK, 6 bytes of payload) from flow
/// `i` to the VIP, with valid checksums.
pub fn tcp_frame(i: u32, flags: u8) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[0..6].copy_from_slice(&CLIENT_PORT_MAC);
    f[6..12].copy_from_slice(&GATEWAY_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes()); // 20 + 20 + 6
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    // Clients spread over 198.19.0.0/16 and ports 1024..=65535.
    let client = u32::from_be_bytes([198, 19, 0, 0]) | ((i / 64_000) & 0xffff);
    ip[12..16].copy_from_slice(&client.to_be_bytes());
    ip[16..20].copy_from_slice(&VIP);
    let ck = dataplane::checksum::internet_checksum(ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let sport = 1024 + (i % 64_000) as u16;
    let tcp = &mut f[34..60];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..26].copy_from_slice(b"sluice");
    let src = client;
    let dst = u32::from_be_bytes(VIP);
    let mut sum = dataplane::checksum::pseudo_header_v4(src, dst, 6, 26);
    sum += dataplane::checksum::sum16(tcp);
    let ck = !dataplane::checksum::fold(sum);
    tcp[16..18].copy_from_slice(&ck.to_be_bytes());
    f
}

/// Frames of many flows without storing a frame per flow: a base frame
/// plus, per flow, its client address and port and both checksums (12
/// bytes), patched in when a frame is produced. A million prebuilt 64-byte
/// frames would stream 64 MB through the caches and evict the flow table,
/// which a NIC writing into a small recycled mbuf pool does not do.
pub struct FlowFrames {
    base: [u8; 64],
    flows: Vec<PackedFlow>,
}

#[derive(Clone, Copy)]
struct PackedFlow {
    client: [u8; 4],
    sport: [u8; 2],
    ip_ck: [u8; 2],
    tcp_ck: [u8; 2],
}

impl FlowFrames {
    /// `n` flows (see [`tcp_frame`]), visited in a scattered order: a stride
    /// coprime with `n`, so consecutive frames hit unrelated flow buckets.
    pub fn new(n: u32, flags: u8) -> FlowFrames {
        let stride = 7_919u64;
        let flows = (0..u64::from(n))
            .map(|k| {
                let f = tcp_frame(((k * stride) % u64::from(n)) as u32, flags);
                PackedFlow {
                    client: [f[26], f[27], f[28], f[29]],
                    sport: [f[34], f[35]],
                    ip_ck: [f[24], f[25]],
                    tcp_ck: [f[50], f[51]],
                }
            })
            .collect();
        FlowFrames {
            base: tcp_frame(0, flags),
            flows,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Writes the frame of the `i`-th flow (in visiting order) into `out`.
    #[inline]
    pub fn write(&self, i: usize, out: &mut [u8; 64]) {
        let f = &self.flows[i];
        *out = self.base;
        out[26..30].copy_from_slice(&f.client);
        out[34..36].copy_from_slice(&f.sport);
        out[24..26].copy_from_slice(&f.ip_ck);
        out[50..52].copy_from_slice(&f.tcp_ck);
    }
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::pipeline::Action;

    #[test]
    fn frames_are_valid_and_dispatched() {
        for mode in ["nat", "dr"] {
            let (mut w, t) = dispatcher(mode, 10, 4096);
            for i in [0, 1, 63_999, 64_000, 999_999] {
                let mut f = tcp_frame(i, TCP_SYN);
                assert_eq!(
                    w.process(&mut f, 0, 1, &t),
                    Action::Forward(1),
                    "{mode} flow {i}"
                );
            }
            assert_eq!(w.counters().flows.created.get(), 5);
        }
    }

    #[test]
    fn packed_frames_equal_full_frames() {
        let ff = FlowFrames::new(10_000, TCP_ACK);
        let mut out = [0u8; 64];
        for k in [0usize, 1, 5_000, 9_999] {
            ff.write(k, &mut out);
            let i = ((k as u64 * 7_919) % 10_000) as u32;
            assert_eq!(out, tcp_frame(i, TCP_ACK), "flow {i}");
        }
    }

    #[test]
    fn million_flows_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..1_000_000).step_by(997) {
            let f = tcp_frame(i, TCP_ACK);
            assert!(seen.insert((f[26..30].to_vec(), f[34..36].to_vec())));
        }
    }
}
