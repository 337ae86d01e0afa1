//! The JSON report of `sluice-pktgen`, read back by the suite runner.

use crate::check::CheckStats;
use crate::gen::Traffic;
use serde::{Deserialize, Serialize};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub traffic: Traffic,
    pub rate_requested_pps: Option<f64>,
    pub duration_s: f64,
    pub tsc_hz: u64,
    pub warmup: Warmup,
    pub tx: TxReport,
    pub rx: RxReport,
    pub latency_ns: Option<Latency>,
    pub check: CheckStats,
    /// The generator's own ports' counters over the measurement.
    pub nic: NicReport,
    pub interrupted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Warmup {
    pub packets: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TxReport {
    /// Frames built.
    pub offered: u64,
    /// Frames the port took.
    pub sent: u64,
    /// Frames the port refused (link full): dropped at the generator.
    pub refused: u64,
    /// Bursts not built for want of buffers.
    pub alloc_failed: u64,
    /// Bytes sent, frames with FCS.
    pub bytes: u64,
    pub pps: f64,
    pub gbps: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RxReport {
    pub packets: u64,
    /// Frames with FCS.
    pub bytes: u64,
    pub pps: f64,
    pub gbps: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NicReport {
    pub tx_port: PortDelta,
    pub rx_port: PortDelta,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortDelta {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub rx_missed: u64,
    pub rx_nombuf: u64,
    pub tx_errors: u64,
}
