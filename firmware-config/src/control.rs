//! Messages of the control protocol between `sluicectl` and `sluiced`
//! (documented in docs/control-protocol.md). One JSON object per line on a
//! Unix stream socket; every request and reply carries `version`.

use crate::schema::{Backend, Mode, Policy, Vip};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

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
    /// The running configuration as TOML (`config apply` accepts it back).
    ConfigDump,
    /// Replaces VIPs, backends and controller settings with those of a
    /// whole configuration file, validated first; `file` names it in errors.
    ConfigApply { file: String, text: String },
    /// Adds a VIP (with at least one backend).
    VipAdd { vip: Vip },
    /// Changes a VIP's name, forwarding mode or policies, and clears its
    /// optional fields named in `clear`. An absent or `null` field is left
    /// as it is.
    VipSet {
        vip: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        policy: Option<Policy>,
        #[serde(default)]
        group_policy: Option<Policy>,
        /// Fields to remove (as if absent from the file). Left out of the
        /// request when empty, so that a `vip_set` that clears nothing is
        /// the same line as before `clear` existed.
        #[serde(
            default,
            deserialize_with = "null_as_empty",
            skip_serializing_if = "Vec::is_empty"
        )]
        clear: Vec<VipField>,
    },
    /// Removes a VIP; its established connections are dropped.
    VipRemove { vip: String },
    /// Adds a backend to a VIP.
    BackendAdd { vip: String, backend: Backend },
    /// Removes a backend; its established connections move to others.
    BackendRemove { vip: String, backend: String },
    /// Re-weights, drains/undrains, or moves a backend to another priority
    /// or group, and clears its optional fields named in `clear`. An absent
    /// or `null` field is left as it is.
    BackendSet {
        vip: String,
        backend: String,
        #[serde(default)]
        weight: Option<u32>,
        #[serde(default)]
        drain: Option<bool>,
        #[serde(default)]
        priority: Option<u32>,
        #[serde(default)]
        group: Option<String>,
        /// Fields to remove (as if absent from the file); left out of the
        /// request when empty, like [`Command::VipSet`]'s.
        #[serde(
            default,
            deserialize_with = "null_as_empty",
            skip_serializing_if = "Vec::is_empty"
        )]
        clear: Vec<BackendField>,
    },
    /// Sets a VIP's policy (and the policy choosing among its groups).
    PolicySet {
        vip: String,
        policy: Policy,
        #[serde(default)]
        group_policy: Option<Policy>,
    },
    /// Explains the selection of a VIP: inputs per backend, weights, ranges.
    PolicyShow { vip: String },
    /// Flows, optionally only those of one VIP and/or one backend.
    FlowList {
        #[serde(default)]
        vip: Option<String>,
        #[serde(default)]
        backend: Option<String>,
        #[serde(default = "default_flow_limit")]
        limit: usize,
    },
    /// From the controller: health and the selection tables it computed.
    SelectionSet {
        controller: String,
        vips: Vec<VipSelection>,
    },
}

fn default_flow_limit() -> usize {
    100
}

impl Command {
    /// Whether `field` is an argument of this command that its serialized
    /// form leaves out when empty (`clear`), so that [`Request::from_value`]
    /// does not take it for an unknown field when a client sends it empty.
    fn omits_when_empty(&self, field: &str) -> bool {
        field == "clear" && matches!(self, Command::VipSet { .. } | Command::BackendSet { .. })
    }
}

/// `null` for a list argument means the same as leaving it out: empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// An optional field of a VIP that `vip_set` can clear: after the change
/// the VIP is as if its `[[vip]]` table did not have the key. Spelled as the
/// key (`"name"`, `"group_policy"`); any other name is refused, with why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum VipField {
    /// `name`: the VIP is labelled `address:port/protocol` again.
    Name,
    /// `group_policy`: groups are chosen by `maglev` (the default) again.
    GroupPolicy,
}

impl VipField {
    /// Every clearable VIP field.
    pub const ALL: [VipField; 2] = [VipField::Name, VipField::GroupPolicy];

    /// The key, as in the configuration file and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            VipField::Name => "name",
            VipField::GroupPolicy => "group_policy",
        }
    }
}

impl fmt::Display for VipField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VipField {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(f) = VipField::ALL.into_iter().find(|f| f.as_str() == s) {
            return Ok(f);
        }
        Err(match s {
            "mode" => "`mode` cannot be cleared: a VIP needs a forwarding mode; set it instead (nat or dr)".into(),
            "policy" => "`policy` cannot be cleared: set it instead (the default is maglev)".into(),
            _ => format!("`{s}` cannot be cleared by vip_set; it clears name and group_policy"),
        })
    }
}

impl TryFrom<String> for VipField {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// An optional field of a backend that `backend_set` can clear: after the
/// change the backend is as if its `[[vip.backend]]` table did not have the
/// key. Spelled as the key (`"group"`); any other name is refused, with why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum BackendField {
    /// `group`: the backend belongs to no group.
    Group,
}

impl BackendField {
    /// Every clearable backend field.
    pub const ALL: [BackendField; 1] = [BackendField::Group];

    /// The key, as in the configuration file and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendField::Group => "group",
        }
    }
}

impl fmt::Display for BackendField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendField {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(f) = BackendField::ALL.into_iter().find(|f| f.as_str() == s) {
            return Ok(f);
        }
        Err(match s {
            "weight" => "`weight` cannot be cleared: set it instead (the default is 1)".into(),
            "drain" => "`drain` cannot be cleared: set it to false instead (the default)".into(),
            "priority" => "`priority` cannot be cleared: set it instead (the default is 0)".into(),
            _ => format!("`{s}` cannot be cleared by backend_set; it clears group"),
        })
    }
}

impl TryFrom<String> for BackendField {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// How a VIP's selection table is laid out from the pushed weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionKind {
    /// Maglev consistent hashing with these weights.
    Weights,
    /// Contiguous ranges of the hash space, in the order given, each
    /// proportional to its weight (seed 004).
    Ranges,
}

/// The controller's selection for one VIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSelection {
    /// VIP as `address:port/protocol`.
    pub vip: String,
    /// The policy that produced it; ignored when the VIP's policy has
    /// changed since.
    pub policy: Policy,
    pub kind: SelectionKind,
    /// How the weights were derived, for `policy show`.
    #[serde(default)]
    pub summary: String,
    pub backends: Vec<BackendSelection>,
}

/// One backend in a [`VipSelection`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSelection {
    pub address: Ipv4Addr,
    pub port: u16,
    /// Health as the controller's checks see it.
    pub up: bool,
    /// Share of new connections (relative); 0 takes none.
    pub weight: u32,
    /// The measured inputs that gave this weight (name → value).
    #[serde(default)]
    pub inputs: BTreeMap<String, f64>,
    /// Group of the backend, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Why the policy gave this weight when it is not the formula's plain
    /// result (down, draining, standby priority, outside the fuzz band...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Reply to `selection_set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionSetReply {
    /// VIPs whose tables were installed.
    pub applied: usize,
    /// VIPs skipped, with why (unknown VIP, policy changed meanwhile).
    pub skipped: Vec<String>,
    pub tables_generation: u64,
}

/// Reply to `policy_show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyShowReply {
    pub vip: String,
    pub policy: Policy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_policy: Option<Policy>,
    /// Who computed the weights: a controller id, or `sluiced` (configured
    /// weights, no controller has pushed tables for this policy).
    pub source: String,
    /// Seconds since the controller's last push; None without one.
    pub age_s: Option<f64>,
    pub kind: SelectionKind,
    pub summary: String,
    pub table_size: u32,
    pub backends: Vec<PolicyBackend>,
}

/// One backend in a [`PolicyShowReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyBackend {
    pub address: String,
    pub port: u16,
    pub configured_weight: u32,
    pub drain: bool,
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Health pushed by the controller (true until it says otherwise).
    pub up: bool,
    pub inputs: BTreeMap<String, f64>,
    /// The weight the table was built with.
    pub weight: u32,
    /// Share of the table's slots, in percent.
    pub share_percent: f64,
    /// `ranges`: the backend's slots `[start, end)` of the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(u32, u32)>,
    /// The controller's note on this backend's weight, if any.
    #[serde(default)]
    pub note: String,
}

/// Reply to `flow_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowListReply {
    /// Flows matching the filter (the listing may be shorter: `limit`).
    pub matched: u64,
    pub flows: Vec<FlowEntryView>,
    /// Flow events lost because a ring was full: when non-zero the list
    /// may miss flows or hold ended ones.
    pub events_dropped: u64,
}

/// One flow in a [`FlowListReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowEntryView {
    pub client: String,
    pub vip: String,
    pub protocol: String,
    pub backend: String,
    pub worker: u16,
    /// `open` or `closing`.
    pub state: String,
    pub age_s: f64,
}

/// Reply to `config_dump`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDumpReply {
    pub toml: String,
}

/// Reply to the commands that change the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReply {
    /// What changed, one line per VIP or backend.
    pub changes: Vec<String>,
    pub tables_generation: u64,
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

    /// Parses a request object, refusing fields the command does not have
    /// (serde's `deny_unknown_fields` does not reach through `flatten` for
    /// commands without arguments).
    pub fn from_value(value: serde_json::Value) -> Result<Request, String> {
        let req: Request = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let known = serde_json::to_value(&req).map_err(|e| e.to_string())?;
        if let (Some(given), Some(known)) = (value.as_object(), known.as_object()) {
            if let Some(k) = given
                .keys()
                .find(|k| !known.contains_key(*k) && !req.command.omits_when_empty(k))
            {
                return Err(format!(
                    "unknown field `{k}` for command `{}`",
                    given.get("command").and_then(|c| c.as_str()).unwrap_or("?")
                ));
            }
        }
        Ok(req)
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
    /// The connecting process's user may not control this sluiced.
    Unauthorised,
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
    /// `up`; `down` (health checks), `draining`, `unresolved` (next-hop MAC
    /// unknown), `no-new` (weight 0) or `removed`.
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
    fn commands_with_arguments_and_unknown_fields() {
        let r: Request = serde_json::from_str(
            r#"{"version":1,"command":"backend_set","vip":"web","backend":"198.18.2.11","drain":true}"#,
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::BackendSet {
                vip: "web".into(),
                backend: "198.18.2.11".into(),
                weight: None,
                drain: Some(true),
                priority: None,
                group: None,
                clear: vec![],
            }
        );
        let bad = r#"{"version":1,"command":"backend_set","vip":"web","backend":"x","drian":true}"#;
        assert!(
            serde_json::from_str::<Request>(bad).is_err(),
            "typo refused"
        );
        let bad = r#"{"version":1,"command":"status","extra":1}"#;
        let err = Request::from_value(serde_json::from_str(bad).unwrap()).unwrap_err();
        assert!(err.contains("unknown field `extra`"), "{err}");
        let r: Request =
            serde_json::from_str(r#"{"version":1,"command":"flow_list","vip":"web"}"#).unwrap();
        assert!(matches!(r.command, Command::FlowList { limit: 100, .. }));
        let r = Request::new(Command::PolicySet {
            vip: "web".into(),
            policy: Policy::LinkLoad,
            group_policy: None,
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""policy":"link-load""#), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }

    fn parse(json: &str) -> Result<Request, String> {
        Request::from_value(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn set_without_clear_keeps_the_version_1_wire_form() {
        // What every sluicectl has always sent: unset fields as `null`, so
        // `null` must keep meaning "leave it", and an empty `clear` is left
        // out so that an older sluiced still accepts the line.
        let r = Request::new(Command::VipSet {
            vip: "web".into(),
            name: None,
            mode: Some(Mode::Dr),
            policy: None,
            group_policy: None,
            clear: vec![],
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"version":1,"command":"vip_set","vip":"web","name":null,"mode":"dr","policy":null,"group_policy":null}"#
        );
        assert_eq!(parse(&s).unwrap(), r);
        let r = Request::new(Command::BackendSet {
            vip: "web".into(),
            backend: "198.18.2.11".into(),
            weight: Some(3),
            drain: None,
            priority: None,
            group: None,
            clear: vec![],
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains("clear"), "{s}");
        assert_eq!(parse(&s).unwrap(), r);
    }

    #[test]
    fn clear_round_trips_and_may_be_empty_or_null() {
        let r = Request::new(Command::VipSet {
            vip: "web".into(),
            name: None,
            mode: None,
            policy: None,
            group_policy: None,
            clear: vec![VipField::Name, VipField::GroupPolicy],
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.ends_with(r#""clear":["name","group_policy"]}"#), "{s}");
        assert_eq!(parse(&s).unwrap(), r);
        let r = Request::new(Command::BackendSet {
            vip: "web".into(),
            backend: "198.18.2.11".into(),
            weight: None,
            drain: None,
            priority: None,
            group: None,
            clear: vec![BackendField::Group],
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.ends_with(r#""clear":["group"]}"#), "{s}");
        assert_eq!(parse(&s).unwrap(), r);
        // A minimal hand-written request.
        let r = parse(
            r#"{"version":1,"command":"backend_set","vip":"web","backend":"198.18.2.11","clear":["group"]}"#,
        )
        .unwrap();
        assert!(
            matches!(&r.command, Command::BackendSet { clear, group: None, weight: None, .. } if clear == &[BackendField::Group]),
            "{r:?}"
        );
        // An empty or null `clear` clears nothing, and is not an unknown field.
        for clear in ["[]", "null"] {
            let r = parse(&format!(
                r#"{{"version":1,"command":"vip_set","vip":"web","mode":"nat","clear":{clear}}}"#
            ))
            .unwrap_or_else(|e| panic!("clear {clear}: {e}"));
            assert!(
                matches!(&r.command, Command::VipSet { clear, mode: Some(Mode::Nat), .. } if clear.is_empty()),
                "{r:?}"
            );
        }
        // `null` on a field still means "leave it", as in version 1.
        let r = parse(r#"{"version":1,"command":"vip_set","vip":"web","name":null,"mode":"nat"}"#)
            .unwrap();
        assert!(
            matches!(&r.command, Command::VipSet { name: None, clear, .. } if clear.is_empty()),
            "{r:?}"
        );
    }

    #[test]
    fn clear_of_a_required_or_unknown_field_is_refused() {
        let vip = |clear: &str| {
            parse(&format!(
                r#"{{"version":1,"command":"vip_set","vip":"web","clear":{clear}}}"#
            ))
        };
        let backend = |clear: &str| {
            parse(&format!(
                r#"{{"version":1,"command":"backend_set","vip":"web","backend":"198.18.2.11","clear":{clear}}}"#
            ))
        };
        let e = vip(r#"["mode"]"#).unwrap_err();
        assert!(e.contains("`mode` cannot be cleared"), "{e}");
        let e = vip(r#"["name","policy"]"#).unwrap_err();
        assert!(e.contains("`policy` cannot be cleared"), "{e}");
        let e = vip(r#"["address"]"#).unwrap_err();
        assert!(e.contains("it clears name and group_policy"), "{e}");
        let e = vip(r#"["group"]"#).unwrap_err();
        assert!(e.contains("`group` cannot be cleared by vip_set"), "{e}");
        let e = vip(r#"["group-policy"]"#).unwrap_err();
        assert!(e.contains("`group-policy` cannot be cleared"), "{e}");
        assert!(vip(r#""name""#).is_err(), "a list, not a string");
        let e = backend(r#"["weight"]"#).unwrap_err();
        assert!(e.contains("`weight` cannot be cleared"), "{e}");
        let e = backend(r#"["drain"]"#).unwrap_err();
        assert!(e.contains("`drain` cannot be cleared"), "{e}");
        let e = backend(r#"["priority"]"#).unwrap_err();
        assert!(e.contains("`priority` cannot be cleared"), "{e}");
        let e = backend(r#"["agent"]"#).unwrap_err();
        assert!(e.contains("it clears group"), "{e}");
        let e = backend(r#"["name"]"#).unwrap_err();
        assert!(e.contains("`name` cannot be cleared by backend_set"), "{e}");
        // `clear` belongs to vip_set and backend_set only, even empty.
        let e = parse(r#"{"version":1,"command":"status","clear":[]}"#).unwrap_err();
        assert!(e.contains("unknown field `clear`"), "{e}");
        let e = parse(
            r#"{"version":1,"command":"policy_set","vip":"web","policy":"maglev","clear":[]}"#,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `clear`"), "{e}");
        // Other unknown fields are still refused next to `clear`.
        let e = vip(r#"[], "nmae": "x""#).unwrap_err();
        assert!(e.contains("unknown field `nmae`"), "{e}");
    }

    #[test]
    fn clearable_field_names() {
        for f in VipField::ALL {
            assert_eq!(f.as_str().parse::<VipField>(), Ok(f));
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
        for f in BackendField::ALL {
            assert_eq!(f.as_str().parse::<BackendField>(), Ok(f));
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
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
