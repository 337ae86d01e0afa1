//! The typed configuration of one appliance. Field names are the TOML keys.
//! Defaults are applied by serde; semantic checks live in `validate`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Whole appliance configuration (`appliance.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[eal]`: DPDK environment (cores, memory, EAL arguments).
    pub eal: Eal,
    /// `[control]`: the control socket.
    #[serde(default)]
    pub control: Control,
    /// `[flows]`: per-worker flow tables and their timeouts.
    #[serde(default)]
    pub flows: Flows,
    /// `[maglev]`: consistent-hashing lookup tables.
    #[serde(default)]
    pub maglev: Maglev,
    /// `[[port]]` tables.
    #[serde(default, rename = "port")]
    pub ports: Vec<Port>,
    /// `[[vip]]` tables.
    #[serde(default, rename = "vip")]
    pub vips: Vec<Vip>,
    /// `[controller]`: settings of `sluicectl run` (ignored by `sluiced`).
    #[serde(default)]
    pub controller: Controller,
}

/// `[controller]`: the control process (`sluicectl run`): how often it
/// recomputes the selection tables, the policies' parameters, where it
/// listens for backend agents and where it serves the server list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// Seconds between two computations (and pushes) of the selection tables.
    #[serde(default = "default_two")]
    pub interval_s: f64,
    /// Weight of the newest measurement in the exponential moving averages
    /// of the measured policies (0 < smoothing <= 1; 1 = no smoothing).
    #[serde(default = "default_smoothing")]
    pub smoothing: f64,
    /// `agent-load`: backends whose load is within this fraction of the best
    /// one are candidates.
    #[serde(default = "default_fuzz")]
    pub fuzz: f64,
    /// UDP address the agents report to, e.g. `"198.18.2.1:7946"`; no
    /// agent listener without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_listen: Option<String>,
    /// File holding the shared agent key (required with `agent_listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key_file: Option<String>,
    /// The agents' reporting interval; a report older than 3 intervals is
    /// stale and ignored.
    #[serde(default = "default_two")]
    pub agent_interval_s: f64,
    /// TCP address of the server list (seed 003), e.g. `"198.18.2.1:7947"`;
    /// not served without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_list: Option<String>,
    /// The twin dispatcher's controller: its `server_list` address, e.g.
    /// `"198.18.2.2:7947"`. Each interval `link-load` adds the traffic the
    /// twin measured on every backend link (`GET /link-counts`) to this
    /// dispatcher's own (seed 000, Fig. 11); needs `server_list`, where the
    /// twin reads this controller's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            interval_s: default_two(),
            smoothing: default_smoothing(),
            fuzz: default_fuzz(),
            agent_listen: None,
            agent_key_file: None,
            agent_interval_s: default_two(),
            server_list: None,
            twin: None,
        }
    }
}

/// How the backend of a new connection is chosen (per VIP, or per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Weighted consistent hashing over the configured weights and health.
    #[default]
    Maglev,
    /// Seed 000: weights from the traffic measured on each backend's link.
    LinkLoad,
    /// Weighted by the active flows per backend (fewer is better).
    LeastConn,
    /// Seed 001: health-probe round-trip time (lower is better).
    ResponseTime,
    /// Seed 002: agents' load metrics, candidates within a fuzz factor of the best.
    AgentLoad,
    /// Seed 004: contiguous hash ranges proportional to available capacity.
    CapacityRanges,
}

impl Policy {
    /// Every policy, in documentation order.
    pub const ALL: [Policy; 6] = [
        Policy::Maglev,
        Policy::LinkLoad,
        Policy::LeastConn,
        Policy::ResponseTime,
        Policy::AgentLoad,
        Policy::CapacityRanges,
    ];

    /// The TOML spelling, e.g. `"link-load"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Maglev => "maglev",
            Policy::LinkLoad => "link-load",
            Policy::LeastConn => "least-conn",
            Policy::ResponseTime => "response-time",
            Policy::AgentLoad => "agent-load",
            Policy::CapacityRanges => "capacity-ranges",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown policy \"{s}\"; use one of {}",
                    Policy::ALL.map(Policy::as_str).join(", ")
                )
            })
    }
}

/// Kind of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP GET answers with the expected status.
    Http,
    /// A UDP datagram gets the expected reply.
    Udp,
    /// No checks: backends are always up.
    None,
}

impl HealthKind {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthKind::Tcp => "tcp",
            HealthKind::Http => "http",
            HealthKind::Udp => "udp",
            HealthKind::None => "none",
        }
    }
}

/// `[vip.health]`: how the controller checks this VIP's backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp`, `http`, `udp` or `none`.
    #[serde(rename = "type")]
    pub kind: HealthKind,
    /// Port to check; defaults to the backend's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Seconds between two checks of a backend.
    #[serde(default = "default_two")]
    pub interval_s: f64,
    /// Seconds a check may take.
    #[serde(default = "default_one")]
    pub timeout_s: f64,
    /// Consecutive successes that bring a down backend up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// `http`: the path requested.
    #[serde(default = "default_http_path")]
    pub path: String,
    /// `http`: the status that means healthy.
    #[serde(default = "default_http_status")]
    pub expect_status: u16,
    /// `udp`: the datagram sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// `udp`: the reply expected (any reply when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

impl HealthCheck {
    /// The default check of a VIP without `[vip.health]`: TCP connect for
    /// TCP VIPs; none for UDP VIPs (a UDP check needs a request and reply).
    pub fn default_for(protocol: Protocol) -> HealthCheck {
        HealthCheck {
            kind: match protocol {
                Protocol::Tcp => HealthKind::Tcp,
                Protocol::Udp => HealthKind::None,
            },
            port: None,
            interval_s: default_two(),
            timeout_s: default_one(),
            rise: default_rise(),
            fall: default_fall(),
            path: default_http_path(),
            expect_status: default_http_status(),
            send: None,
            expect: None,
        }
    }
}

/// `[eal]`: DPDK Environment Abstraction Layer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eal {
    /// lcore that runs the management thread.
    #[serde(default)]
    pub main_core: u32,
    /// lcores that run poll-mode workers (one RX/TX queue pair per port each).
    pub worker_cores: Vec<u32>,
    /// Memory for DPDK in MiB (`-m`).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Use hugepages; `false` runs with `--no-huge` (tests, demo).
    #[serde(default = "default_true")]
    pub hugepages: bool,
    /// `--file-prefix`, so that several DPDK processes can run on one host.
    #[serde(default)]
    pub file_prefix: Option<String>,
    /// Optional lcore-to-CPU map in DPDK's `--lcores` syntax, restricted to
    /// `lcore@cpu` pairs: `"0@0,1@2,2@3"`. Lets lcore ids differ from CPU
    /// ids (e.g. workers on chosen hyperthreads, or more lcores than CPUs on
    /// a test box). Without it, lcore id = CPU id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lcores: Option<String>,
    /// Extra EAL arguments passed through verbatim (e.g. `--no-pci`).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// `[control]`: the control-protocol endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Unix socket path of the control protocol (created mode 0600).
    #[serde(default = "default_socket")]
    pub socket: String,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_socket(),
        }
    }
}

/// `[flows]`: flow-table sizing and idle timeouts (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flows {
    /// Flow-table capacity of each worker (entries).
    #[serde(default = "default_capacity")]
    pub capacity_per_worker: u32,
    /// TCP flow that never got past SYN.
    #[serde(default = "default_syn_timeout")]
    pub syn_timeout_s: u32,
    /// TCP flow that saw traffic from the client after its SYN.
    #[serde(default = "default_established_timeout")]
    pub established_timeout_s: u32,
    /// TCP flow that saw FIN or RST.
    #[serde(default = "default_closing_timeout")]
    pub closing_timeout_s: u32,
    /// UDP flow.
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout_s: u32,
    /// Capacity of each worker's flow-event ring (for twin sync).
    #[serde(default = "default_event_ring")]
    pub event_ring_size: u32,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            capacity_per_worker: default_capacity(),
            syn_timeout_s: default_syn_timeout(),
            established_timeout_s: default_established_timeout(),
            closing_timeout_s: default_closing_timeout(),
            udp_timeout_s: default_udp_timeout(),
            event_ring_size: default_event_ring(),
        }
    }
}

/// `[maglev]`: Maglev consistent-hashing parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maglev {
    /// Lookup-table size per VIP; must be prime.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev {
            table_size: default_table_size(),
        }
    }
}

/// Which side of the load balancer a port faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// Receives client traffic for the VIPs (`"client"`).
    Client,
    /// Reaches the backends (`"backend"`).
    Backend,
    /// Both at once, e.g. a one-armed setup (`"both"`).
    Both,
}

impl PortRole {
    /// True for `client` and `both`.
    pub fn faces_clients(self) -> bool {
        matches!(self, PortRole::Client | PortRole::Both)
    }
    /// True for `backend` and `both`.
    pub fn faces_backends(self) -> bool {
        matches!(self, PortRole::Backend | PortRole::Both)
    }
    /// The TOML spelling: `"client"`, `"backend"` or `"both"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortRole::Client => "client",
            PortRole::Backend => "backend",
            PortRole::Both => "both",
        }
    }
}

impl fmt::Display for PortRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[port]]`: a DPDK Ethernet port and its layer-3 identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Operator's name for the port (unique), used by `backend.egress`.
    pub name: String,
    /// PCI address (`0000:01:00.0`); exactly one of `pci` and `vdev`.
    #[serde(default)]
    pub pci: Option<String>,
    /// DPDK virtual device devargs (`net_af_packet0,iface=veth0`).
    #[serde(default)]
    pub vdev: Option<String>,
    /// Which side the port faces: `client`, `backend` or `both`.
    pub role: PortRole,
    /// The port's own IPv4 address with prefix (`198.18.1.254/24`).
    pub address: Ipv4Cidr,
    /// Override of the NIC's MAC address.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Next hop for destinations outside `address`'s prefix.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Static MAC of `gateway`; when absent it is learned by ARP.
    #[serde(default)]
    pub gateway_mac: Option<MacAddr>,
}

/// Layer-4 protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `"tcp"`.
    Tcp,
    /// `"udp"`.
    Udp,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    /// The TOML spelling: `"tcp"` or `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown protocol \"{s}\"; use tcp or udp"))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a VIP forwards to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct routing: destination MAC rewrite, replies bypass the dispatcher.
    Dr,
    /// NAT: destination IP/port rewrite, replies pass back through the dispatcher.
    Nat,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 2] = [Mode::Dr, Mode::Nat];

    /// The TOML spelling: `"dr"` or `"nat"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dr => "dr",
            Mode::Nat => "nat",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode \"{s}\"; use dr or nat"))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[vip]]`: a virtual service (address, port, protocol) and its backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Optional operator's label; defaults to `address:port/protocol`.
    #[serde(default)]
    pub name: Option<String>,
    /// Virtual IPv4 address clients connect to.
    pub address: Ipv4Addr,
    /// Virtual port clients connect to.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// `dr` (direct routing) or `nat`.
    pub mode: Mode,
    /// How new connections are spread over the backends (default `maglev`).
    #[serde(default)]
    pub policy: Policy,
    /// With backend groups: the policy that chooses the group (the VIP's
    /// `policy` chooses inside it); default `maglev` (groups by total weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_policy: Option<Policy>,
    /// `[vip.health]`: health checks run by the controller; defaults to
    /// [`HealthCheck::default_for`] the VIP's protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// `[[vip.backend]]` tables.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

/// One `[[vip.backend]]`: a real server behind a VIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The backend's IPv4 address.
    pub address: Ipv4Addr,
    /// Defaults to the VIP's port; in DR mode it must equal it.
    #[serde(default)]
    pub port: Option<u16>,
    /// Relative share of new connections; 0 takes no new connections.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Backend MAC; learned by ARP on the egress port when absent.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Name of the port to reach it through; defaults to the backend-facing
    /// port whose prefix contains `address`, else the first backend-facing port.
    #[serde(default)]
    pub egress: Option<String>,
    /// Draining: takes no new connections; established ones stay until
    /// they close or time out.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drain: bool,
    /// Priority group (seed 003): lower is preferred; only the lowest
    /// priority that has live backends receives new connections.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// Backend group (seed 001): a site or farm; with groups, the VIP's
    /// `group_policy` picks a group and its `policy` a backend in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Name under which this backend's agent reports; defaults to the
    /// backend's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// IPv4 address with prefix length, written `a.b.c.d/len` in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address itself (host bits are kept).
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The netmask as a host-order integer (`/24` is `0xffff_ff00`).
    pub fn netmask(self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }
    /// True if `ip` lies inside this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        let m = self.netmask();
        (u32::from(self.addr) & m) == (u32::from(ip) & m)
    }
}

/// Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl Ipv4Cidr {
    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.netmask())
    }
    /// The directed-broadcast address (host bits set).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.netmask())
    }
}

/// Why a string is not an `a.b.c.d/len` prefix; the text says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrParseError(String);

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((addr, len)) = s.split_once('/') else {
            return Err(CidrParseError(format!(
                "\"{s}\" lacks a prefix length: expected a.b.c.d/len"
            )));
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| {
            CidrParseError(format!(
                "\"{addr}\" in \"{s}\" is not an IPv4 address: expected a.b.c.d/len"
            ))
        })?;
        let prefix_len =
            if !len.is_empty() && len.len() <= 2 && len.bytes().all(|b| b.is_ascii_digit()) {
                len.parse::<u8>().ok().filter(|&l| l <= 32)
            } else {
                None
            };
        let Some(prefix_len) = prefix_len else {
            return Err(CidrParseError(format!(
                "prefix length \"{len}\" in \"{s}\" is not a number from 0 to 32"
            )));
        };
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Ipv4Cidr>::new(
            "an IPv4 address with prefix length as a string, like \"198.18.1.254/24\"",
        ))
    }
}

impl MacAddr {
    /// True for group addresses (least significant bit of the first octet
    /// set), which includes the broadcast address.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
    /// True for `00:00:00:00:00:00`.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

/// Why a string is not an `aa:bb:cc:dd:ee:ff` MAC; the text says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MacParseError(String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(MacParseError(format!(
                "\"{s}\" has {} colon-separated octets: a MAC address has exactly 6, written aa:bb:cc:dd:ee:ff",
                parts.len()
            )));
        }
        let mut mac = [0u8; 6];
        for (slot, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacParseError(format!(
                    "octet \"{part}\" in \"{s}\" is not two hexadecimal digits: expected aa:bb:cc:dd:ee:ff"
                )));
            }
            *slot = u8::from_str_radix(part, 16).map_err(|e| MacParseError(e.to_string()))?;
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<MacAddr>::new(
            "a MAC address as a string, like \"02:00:00:00:00:01\"",
        ))
    }
}

/// Serde visitor that accepts a string and parses it with `FromStr`.
struct FromStrVisitor<T> {
    expecting: &'static str,
    _marker: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        FromStrVisitor {
            expecting,
            _marker: std::marker::PhantomData,
        }
    }
}

impl<T> de::Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn default_two() -> f64 {
    2.0
}
fn default_one() -> f64 {
    1.0
}
fn default_smoothing() -> f64 {
    0.5
}
fn default_fuzz() -> f64 {
    0.05
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_http_path() -> String {
    "/".to_string()
}
fn default_http_status() -> u16 {
    200
}
fn default_true() -> bool {
    true
}
fn default_memory_mb() -> u32 {
    1024
}
fn default_socket() -> String {
    "/run/sluice/sluiced.sock".to_string()
}
fn default_capacity() -> u32 {
    1 << 20
}
fn default_syn_timeout() -> u32 {
    5
}
fn default_established_timeout() -> u32 {
    300
}
fn default_closing_timeout() -> u32 {
    10
}
fn default_udp_timeout() -> u32 {
    30
}
fn default_event_ring() -> u32 {
    65536
}
fn default_table_size() -> u32 {
    65537
}
fn default_weight() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse_back_and_unknown_ones_are_named() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
        }
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert_eq!(
            "DR".parse::<Mode>(),
            Err("unknown mode \"DR\"; use dr or nat".to_string())
        );
        assert_eq!(
            "sctp".parse::<Protocol>(),
            Err("unknown protocol \"sctp\"; use tcp or udp".to_string())
        );
        assert!("fastest"
            .parse::<Policy>()
            .unwrap_err()
            .contains("link-load"));
    }
}
