//! Messages of the control protocol between `sluicectl` and `sluiced`
//! (documented in docs/control-protocol.md). One JSON object per line on a
//! Unix stream socket; every request and reply carries `version`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the protocol this build speaks. A request with another
/// version gets an `unsupported_version` error and changes nothing.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Version, uptime, ports with link state, workers.
    Status,
    /// Every counter.
    Stats,
    /// VIPs with their backends.
    VipList,
}

/// A request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

impl Request {
    pub fn new(command: Command) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            command,
        }
    }
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON, or not a known command with valid arguments.
    BadRequest,
    /// `version` differs from [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// The request was understood but could not be carried out.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// A reply line: `ok` with `result`, or not `ok` with `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// sluiced's version.
    pub version: String,
    pub dpdk_version: String,
    pub pid: u32,
    pub uptime_s: f64,
    pub config_file: String,
    pub ports: Vec<PortStatus>,
    pub workers: Vec<WorkerStatus>,
    pub vips: usize,
    pub backends: usize,
    /// Generation of the forwarding tables the workers use.
    pub tables_generation: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    pub index: u16,
    pub name: String,
    /// DPDK device name (PCI address or vdev).
    pub device: String,
    pub driver: String,
    pub mac: String,
    pub address: String,
    pub role: String,
    pub link_up: bool,
    pub speed_mbps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: u16,
    pub lcore: u32,
    /// Flows in this worker's table.
    pub active_flows: u64,
    /// Flows this worker has created since start (how RSS spreads new
    /// connections over the workers).
    pub created_flows: u64,
    pub flow_capacity: u64,
    /// Share of poll iterations that received packets, since start.
    pub busy_percent: f64,
    /// Packets this worker received, on all ports, since start.
    #[serde(default)]
    pub rx_packets: u64,
    /// TSC cycles spent in poll iterations that received packets, since
    /// start: Δbusy_cycles / Δrx_packets is the worker's cycles per packet.
    #[serde(default)]
    pub busy_cycles: u64,
}

/// Reply to `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    pub uptime_s: f64,
    pub ports: Vec<PortStats>,
    pub vips: Vec<VipStats>,
    pub backends: Vec<BackendStats>,
    pub flows: FlowStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_arp: u64,
    pub rx_ipv4: u64,
    pub rx_ipv6: u64,
    pub rx_icmpv6: u64,
    pub arp_replies_sent: u64,
    /// ARP requests sent to resolve backends, gateways and clients.
    pub arp_requests_sent: u64,
    pub icmp_echo_replies_sent: u64,
    /// Dropped packets by reason (every reason listed, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// The NIC's own counters.
    pub nic: NicStats,
}

impl PortStats {
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NicStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipStats {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub drops: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    pub id: u32,
    pub vip: String,
    pub address: String,
    pub port: u16,
    pub weight: u32,
    /// `up`, or `unresolved` while its next-hop MAC is unknown.
    pub state: String,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub new_flows: u64,
    pub active_flows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowStats {
    pub active: u64,
    pub capacity: u64,
    pub created: u64,
    pub closed: u64,
    pub expired: u64,
    /// Packets of untracked connections forwarded by Maglev alone because
    /// the flow table was full.
    pub table_full: u64,
    pub rescheduled: u64,
    pub events_pushed: u64,
    pub events_dropped: u64,
    /// Events taken off the rings by the management thread.
    pub events_drained: u64,
    pub neighbour_hints_dropped: u64,
}

/// Reply to `vip_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipListReply {
    pub vips: Vec<VipEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipEntry {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    pub maglev_table_size: u32,
    pub backends: Vec<BackendEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendEntry {
    pub id: u32,
    pub address: String,
    pub port: u16,
    pub weight: u32,
    /// Share of the VIP's Maglev slots, in percent.
    pub slot_share_percent: f64,
    pub next_hop_mac: Option<String>,
    pub egress: String,
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_is_flat() {
        let r = Request::new(Command::VipList);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"version":1,"command":"vip_list"}"#);
        let back: Request = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unknown_command_is_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"version":1,"command":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"version":1}"#).is_err());
    }

    #[test]
    fn error_reply_has_no_result() {
        let s = serde_json::to_string(&Response::error(ErrorCode::BadRequest, "x")).unwrap();
        assert_eq!(
            s,
            r#"{"version":1,"ok":false,"error":{"code":"bad_request","message":"x"}}"#
        );
    }
}
