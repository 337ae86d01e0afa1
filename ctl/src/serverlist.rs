//! The server list: client-side server selection after seed 003.
//!
//! A *list server* hands clients, per VIP, the list of backend servers with
//! their status (`UP`/`DOWN`), the number of connected users and a priority
//! group. The client then picks a server itself:
//!
//! * only `UP` servers of the best priority group that has any `UP` server
//!   are candidates (a LOWER `priority` value is a BETTER group, like the
//!   seed's group A before group B); the other groups are a fallback used
//!   only when no server of a better group is `UP`;
//! * among the `N` candidates server `i` is chosen at random with probability
//!   `P_i = (1 - U_i / ΣU) / (N - 1)`, `U_i` being its connected users, so
//!   that less loaded servers are more likely to be chosen. The seed is
//!   silent on two degenerate cases; our choice: a single candidate gets
//!   `1.0`, and when no candidate has any user (`ΣU = 0`) each gets `1/N`;
//! * on a failed connection the client retries the same server once, and if
//!   that fails too it fetches a fresh list (the status of the servers has
//!   probably changed) and chooses again.
//!
//! The seed's priority group is our numeric `priority`. The balancer's
//! *backend group* (a site or farm, seed 001) is a different thing and is
//! published as `backend_group`; the client formula does not use it. The
//! `weight` of a server is carried for information too (it is the weight
//! the balancer's own Maglev table uses).
//!
//! Server side: [`serve`] answers `GET /` and `GET /servers` with the whole
//! [`ServerList`], `GET /servers/{vip}` with one [`VipServers`], where
//! `{vip}` is a VIP name, `address:port/protocol` (the slash may be sent as
//! `%2F`) or `address:port` when that is unique (see [`find_vip`]), and
//! `GET /status` with the controller's [`StatusReply`].
//!
//! Client side: [`fetch`] (over the shared HTTP/1.0 client,
//! [`crate::http`]), [`probabilities`], [`choose`] and [`pick`], which runs
//! the whole connect / retry / re-fetch procedure with an injectable
//! connect function ([`probe_server`] is the real one: a TCP connection for
//! a TCP VIP, a UDP request that must be answered for a UDP VIP).

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::agent::{unix_ms, Receiver, ReceiverCounts, Refusal};
use crate::http;

/// The most bytes [`fetch`] reads from a list server (headers included).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How often the [`serve`] loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Everything a list server knows: every VIP with its servers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ServerList {
    /// When the list was generated, in milliseconds since the Unix epoch.
    pub generated_unix_ms: u64,
    pub vips: Vec<VipServers>,
}

/// One VIP (virtual service) and the servers that provide it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VipServers {
    pub name: String,
    /// The VIP's IP address.
    pub address: String,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// UDP VIPs only: the datagram a client sends to test a server (the
    /// VIP's `udp` health-check `send`, when the check uses the service's
    /// own port); absent otherwise, and then [`pick`] sends an empty
    /// datagram.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub udp_probe: Option<String>,
    pub servers: Vec<Server>,
}

/// One server as the list server sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Server {
    pub address: String,
    pub port: u16,
    pub status: Status,
    /// Number of connected users.
    pub connections: u64,
    /// Priority group (seed 003's group A, B, ...): a LOWER value is a
    /// HIGHER priority (tried first).
    pub priority: u32,
    /// The balancer's backend group (a site or farm, seed 001), when the
    /// backend has one; NOT the seed-003 priority group, and not used by
    /// the client formula.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backend_group: Option<String>,
    /// The balancer's weight for this server (informational here).
    pub weight: u32,
}

/// A server's status, serialized as `"UP"` / `"DOWN"`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    #[serde(rename = "UP", alias = "up", alias = "Up")]
    Up,
    #[serde(rename = "DOWN", alias = "down", alias = "Down")]
    Down,
}

// ---------------------------------------------------------------------------
// Controller status (`GET /status`)
// ---------------------------------------------------------------------------

/// What the controller publishes for `GET /status` (every interval);
/// [`status_reply`] adds the agents' live counts and the ages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControllerStatus {
    /// The controller's name (`--name`).
    pub controller: String,
    /// When the controller started, unix ms.
    pub started_unix_ms: u64,
    /// `controller.interval_s` in use.
    pub interval_s: f64,
    /// `controller.smoothing` in use.
    pub smoothing: f64,
    /// Intervals run so far.
    pub rounds: u64,
    /// Intervals that failed (sluiced unreachable or refusing).
    pub failed_rounds: u64,
    /// The latest interval's result.
    pub last_round: Option<RoundResult>,
    /// The latest successful push of the tables.
    pub last_push: Option<PushResult>,
    /// The agent names the configured backends report under.
    pub agent_names: BTreeSet<String>,
    /// One entry per VIP of the running configuration.
    pub vips: Vec<VipStatus>,
    /// The twin's link counts (`controller.twin`), when one is set.
    pub twin: Option<crate::links::TwinStatus>,
}

/// The result of one controller interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundResult {
    /// When it ended, unix ms.
    pub unix_ms: u64,
    /// Whether the tables were pushed.
    pub ok: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

/// One successful `selection_set`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PushResult {
    /// When sluiced accepted it, unix ms.
    pub unix_ms: u64,
    /// VIPs pushed.
    pub vips: usize,
    /// VIPs sluiced skipped, with its reason.
    pub skipped: Vec<String>,
}

/// One VIP in `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipStatus {
    pub name: String,
    /// `address:port/protocol`.
    pub service: String,
    pub policy: String,
    /// Backends configured.
    pub backends: usize,
    /// Backends the health checks see up.
    pub up: usize,
    /// Backends with a weight above 0 in the latest decision.
    pub serving: usize,
}

/// A value with its age at the time of the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aged<T> {
    #[serde(flatten)]
    pub value: T,
    /// Seconds since `unix_ms`.
    pub age_s: f64,
}

/// The latest report of one agent, in `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentView {
    pub agent: String,
    pub seq: u64,
    pub sent_unix_ms: u64,
    /// Seconds since the report was sent (negative: from the future).
    pub age_s: f64,
    /// Not stale: the controller uses it.
    pub fresh: bool,
    /// A configured backend reports under this name.
    pub known: bool,
}

/// The agents' side of `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentsView {
    /// Datagrams accepted and refused, by reason.
    pub counts: ReceiverCounts,
    /// The latest accepted report of every agent heard of.
    pub reports: Vec<AgentView>,
    /// Agents heard of under a name no configured backend uses (their
    /// reports are accepted but unused: a typo in `--name` or `agent`).
    pub unknown_agents: Vec<String>,
    /// The latest datagram refused, with its reason.
    pub last_refused: Option<Aged<Refusal>>,
}

/// The body of `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReply {
    pub controller: String,
    pub now_unix_ms: u64,
    pub started_unix_ms: u64,
    pub uptime_s: f64,
    pub interval_s: f64,
    pub smoothing: f64,
    pub rounds: u64,
    pub failed_rounds: u64,
    pub last_round: Option<Aged<RoundResult>>,
    pub last_push: Option<Aged<PushResult>>,
    /// `null` when the controller does not listen for agents.
    pub agents: Option<AgentsView>,
    pub vips: Vec<VipStatus>,
    /// `null` when no twin is set.
    pub twin: Option<crate::links::TwinStatus>,
}

/// Seconds from `then_ms` to `now_ms` (negative when `then_ms` is later).
fn seconds_between(then_ms: u64, now_ms: u64) -> f64 {
    if now_ms >= then_ms {
        (now_ms - then_ms) as f64 / 1000.0
    } else {
        -((then_ms - now_ms) as f64 / 1000.0)
    }
}

/// The `GET /status` reply at `now_ms` (pure).
pub fn status_reply(
    status: &ControllerStatus,
    agents: Option<&Receiver>,
    now_ms: u64,
) -> StatusReply {
    let aged = |unix_ms: u64| seconds_between(unix_ms, now_ms);
    let agents = agents.map(|rx| {
        let reports: Vec<AgentView> = rx
            .agents()
            .map(|r| AgentView {
                agent: r.agent.clone(),
                seq: r.seq,
                sent_unix_ms: r.sent_ms,
                age_s: aged(r.sent_ms),
                fresh: rx.latest(&r.agent, now_ms).is_some(),
                known: status.agent_names.contains(&r.agent),
            })
            .collect();
        let unknown_agents = reports
            .iter()
            .filter(|a| !a.known)
            .map(|a| a.agent.clone())
            .collect();
        AgentsView {
            counts: rx.counts(),
            reports,
            unknown_agents,
            last_refused: rx.last_refused().cloned().map(|r| Aged {
                age_s: aged(r.unix_ms),
                value: r,
            }),
        }
    });
    StatusReply {
        controller: status.controller.clone(),
        now_unix_ms: now_ms,
        started_unix_ms: status.started_unix_ms,
        uptime_s: aged(status.started_unix_ms).max(0.0),
        interval_s: status.interval_s,
        smoothing: status.smoothing,
        rounds: status.rounds,
        failed_rounds: status.failed_rounds,
        last_round: status.last_round.clone().map(|r| Aged {
            age_s: aged(r.unix_ms),
            value: r,
        }),
        last_push: status.last_push.clone().map(|p| Aged {
            age_s: aged(p.unix_ms),
            value: p,
        }),
        agents,
        vips: status.vips.clone(),
        twin: status.twin.clone(),
    }
}

/// What [`serve`] serves; the controller keeps a clone and updates it.
#[derive(Clone, Default)]
pub struct Published {
    /// The server list.
    pub list: Arc<RwLock<ServerList>>,
    /// The controller's state for `GET /status`.
    pub status: Arc<RwLock<ControllerStatus>>,
    /// The agents' receiver, when the controller listens for agents.
    pub agents: Option<Arc<Mutex<Receiver>>>,
    /// This controller's own traffic per backend link, for its twin
    /// (`GET /link-counts`).
    pub link_counts: Arc<RwLock<LinkCounts>>,
}

/// The traffic a controller's own dispatcher counted on each backend link,
/// as served on `GET /link-counts` for the twin dispatcher's controller
/// (seed 000, Fig. 11: the two traffic monitors pool their data). The
/// counters are cumulative, as read from `sluiced`; the reader turns two
/// readings into rates. Only the dispatcher's own counts, never pooled
/// ones, so that nothing is counted twice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkCounts {
    /// The controller's name.
    pub controller: String,
    /// When the counters were read from `sluiced`, unix ms (0: not yet).
    pub unix_ms: u64,
    /// One entry per backend address.
    pub links: Vec<LinkCount>,
}

/// Cumulative traffic to and from one backend address (every VIP and port
/// it serves: a link, not a service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkCount {
    pub address: String,
    /// Bytes to and from it.
    pub bytes: u64,
    /// Packets to and from it.
    pub packets: u64,
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// Serves `published` over HTTP on `listener` from a new thread until
/// `stop` is set (it is looked at every 100 ms); the thread then closes the
/// listener and ends.
///
/// * `GET /`, `GET /servers`: the whole [`ServerList`] as JSON;
/// * `GET /servers/{vip}`: one [`VipServers`] (see [`find_vip`] for the
///   selector forms; percent-encoding is decoded), `404` with
///   `{"error": "..."}` when no VIP matches;
/// * `GET /status`: the controller's [`StatusReply`];
/// * any other path: `404`; any other method: `405`.
pub fn serve(
    listener: TcpListener,
    published: Published,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| io::Error::other(format!("server list: cannot serve: {e}")))?;
    std::thread::Builder::new()
        .name("serverlist-http".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match server.recv_timeout(POLL) {
                    Ok(Some(request)) => {
                        let (code, body) = route(&published, request.method(), request.url());
                        let mut response = add_header(
                            tiny_http::Response::from_data(body).with_status_code(code),
                            "Content-Type",
                            "application/json",
                        );
                        if code == 405 {
                            response = add_header(response, "Allow", "GET");
                        }
                        // A client that went away is not our problem.
                        let _ = request.respond(response);
                    }
                    Ok(None) => {}
                    // An accept error: do not spin on it.
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })
}

/// Adds a header; `tiny_http` only refuses non-ASCII bytes, which we never
/// pass, and the response simply goes without it then.
fn add_header<R: Read>(
    response: tiny_http::Response<R>,
    field: &str,
    value: &str,
) -> tiny_http::Response<R> {
    match tiny_http::Header::from_bytes(field.as_bytes(), value.as_bytes()) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

/// Answers one request: `(status code, JSON body)`.
fn route(published: &Published, method: &tiny_http::Method, url: &str) -> (u16, Vec<u8>) {
    if *method != tiny_http::Method::Get {
        return (
            405,
            error_body(&format!("method {method} not allowed; use GET")),
        );
    }
    let path = url.split(['?', '#']).next().unwrap_or_default();
    if matches!(path, "/link-counts" | "/link-counts/") {
        let counts = published
            .link_counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        return json_body(&counts);
    }
    if matches!(path, "/status" | "/status/") {
        // A copy, so that no two locks are ever held together.
        let status = published
            .status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let reply = match &published.agents {
            Some(agents) => {
                let rx = agents.lock().unwrap_or_else(PoisonError::into_inner);
                status_reply(&status, Some(&rx), unix_ms())
            }
            None => status_reply(&status, None, unix_ms()),
        };
        return json_body(&reply);
    }
    let list = published
        .list
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    if matches!(path, "/" | "/servers" | "/servers/") {
        return json_body(&*list);
    }
    match path.strip_prefix("/servers/") {
        Some(selector) => match find_vip(&list, &percent_decode(selector)) {
            Ok(vip) => json_body(vip),
            Err(e) => (404, error_body(&e)),
        },
        None => (
            404,
            error_body(&format!(
                "no such path {path:?}; try /servers, /servers/{{vip}}, /status or /link-counts"
            )),
        ),
    }
}

fn json_body<T: Serialize + ?Sized>(value: &T) -> (u16, Vec<u8>) {
    match serde_json::to_vec(value) {
        Ok(body) => (200, body),
        Err(e) => (500, error_body(&format!("cannot serialize: {e}"))),
    }
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "error": message })
        .to_string()
        .into_bytes()
}

/// Finds one VIP of `list` by `selector`, tried in this order:
///
/// 1. the VIP's name, exactly;
/// 2. `address:port/protocol` (protocol compared case-insensitively);
/// 3. `address:port`, when exactly one VIP has that address and port.
///
/// IPv6 addresses may be written in brackets (`[::1]:80/tcp`). The error
/// says why nothing (or more than one VIP) matched.
pub fn find_vip<'a>(list: &'a ServerList, selector: &str) -> Result<&'a VipServers, String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err("empty VIP selector".to_string());
    }
    if let Some(vip) = list.vips.iter().find(|v| v.name == selector) {
        return Ok(vip);
    }
    let (addr_port, protocol) = match selector.rsplit_once('/') {
        Some((addr_port, protocol)) => (addr_port, Some(protocol)),
        None => (selector, None),
    };
    if let Some((address, port)) = split_addr_port(addr_port) {
        let matches: Vec<&VipServers> = list
            .vips
            .iter()
            .filter(|v| {
                v.port == port
                    && same_address(&v.address, address)
                    && protocol.is_none_or(|p| v.protocol.eq_ignore_ascii_case(p))
            })
            .collect();
        match matches.as_slice() {
            [] => {}
            [only] => return Ok(only),
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|v| format!("{} ({}:{}/{})", v.name, v.address, v.port, v.protocol))
                    .collect();
                return Err(format!(
                    "VIP selector {selector:?} is ambiguous: it matches {}; \
                     add /protocol or use the name",
                    names.join(", ")
                ));
            }
        }
    }
    let known: Vec<&str> = list.vips.iter().map(|v| v.name.as_str()).collect();
    Err(format!(
        "no VIP matches {selector:?} (known VIPs: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// `"10.0.0.1:80"` → `("10.0.0.1", 80)`, `"[::1]:80"` → `("::1", 80)`.
fn split_addr_port(s: &str) -> Option<(&str, u16)> {
    let (address, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    (!address.is_empty()).then_some((address, port))
}

fn same_address(a: &str, b: &str) -> bool {
    let unbracket = |s: &str| {
        s.strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s)
            .to_string()
    };
    let (a, b) = (unbracket(a), unbracket(b));
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(&b),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `:`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` sequences; malformed ones are kept as they are, and bytes
/// that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Fetches one VIP's servers from the list server at `from` with a minimal
/// HTTP/1.0 `GET /servers/{vip}` (`vip` is percent-encoded). `timeout`
/// bounds the connection and, separately, the whole exchange after it; at
/// most [`MAX_RESPONSE_BYTES`] are read. Fails, saying why, when the list
/// server is unreachable or slow, answers anything but `200`, or sends a
/// body that is not a [`VipServers`].
pub fn fetch(from: SocketAddr, vip: &str, timeout: Duration) -> anyhow::Result<VipServers> {
    let path = format!("/servers/{}", percent_encode(vip));
    let (status, body) = http_get(from, &path, timeout)?;
    if status != 200 {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| snippet(&body));
        bail!("list server {from} answered HTTP status {status} for VIP {vip:?}: {detail}");
    }
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "list server {from} sent bad JSON for VIP {vip:?}: {}",
            snippet(&body)
        )
    })
}

/// Fetches the twin controller's own link counts (`GET /link-counts`) from
/// its server-list address `from`, like [`fetch`].
pub fn fetch_link_counts(from: SocketAddr, timeout: Duration) -> anyhow::Result<LinkCounts> {
    let (status, body) = http_get(from, "/link-counts", timeout)?;
    if status != 200 {
        bail!(
            "list server {from} answered HTTP status {status} for /link-counts: {}",
            snippet(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| {
        format!(
            "list server {from} sent bad JSON for /link-counts: {}",
            snippet(&body)
        )
    })
}

/// The start of a body for error messages ([`http::excerpt`], 120
/// characters), or `(empty body)`.
fn snippet(body: &[u8]) -> String {
    if body.trim_ascii().is_empty() {
        "(empty body)".to_string()
    } else {
        http::excerpt(body, 120)
    }
}

/// One HTTP/1.0 GET: `(status code, body)`.
fn http_get(from: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, Vec<u8>)> {
    if timeout.is_zero() {
        bail!("list server {from}: the timeout must not be zero");
    }
    let mut stream = TcpStream::connect_timeout(&from, timeout)
        .with_context(|| format!("list server {from} unreachable"))?;
    let deadline = http::deadline_after(timeout);
    let request = http::get_request(path, &from.to_string(), &[("Accept", "application/json")]);
    http::send(&mut stream, request.as_bytes(), deadline).map_err(|e| {
        io_cause(e).context(format!("cannot send the request to list server {from}"))
    })?;
    let mut response = Vec::new();
    // One byte over the limit, so that a longer response is seen as such.
    http::read_tcp(
        &mut stream,
        &mut response,
        deadline,
        MAX_RESPONSE_BYTES + 1,
        http::Until::WholeResponse,
    )
    .map_err(|e| match e {
        http::Error::TimedOut => anyhow!("list server {from} did not answer within {timeout:?}"),
        http::Error::TooBig => {
            anyhow!("list server {from} sent more than {MAX_RESPONSE_BYTES} bytes")
        }
        other => io_cause(other).context(format!("reading from list server {from}")),
    })?;
    http::parse_response(&response)
        .with_context(|| format!("bad HTTP response from list server {from}"))
}

/// The I/O error inside an [`http::Error`] (the error itself otherwise),
/// as the cause under our own context.
fn io_cause(e: http::Error) -> anyhow::Error {
    match e {
        http::Error::Socket(e) | http::Error::Send(e) | http::Error::Read(e) => anyhow!(e),
        other => anyhow!(other),
    }
}

/// The best (lowest) priority among `UP` servers, if any is `UP`.
fn best_live_priority(servers: &[Server]) -> Option<u32> {
    servers
        .iter()
        .filter(|s| s.status == Status::Up)
        .map(|s| s.priority)
        .min()
}

/// The probability of each server (same order) to be chosen, after seed 003:
/// `0` for `DOWN` servers and for servers outside the best priority group
/// that has an `UP` server; inside it `P_i = (1 - U_i/ΣU) / (N - 1)` with
/// `N` the number of `UP` servers in the group. Our choices where the seed
/// is silent: `N = 1` gives that server `1.0`; `ΣU = 0` gives each `1/N`.
///
/// The probabilities sum to 1 (up to rounding) when any server is `UP`,
/// and are all 0 when none is.
pub fn probabilities(servers: &[Server]) -> Vec<f64> {
    let mut p = vec![0.0; servers.len()];
    let Some(best) = best_live_priority(servers) else {
        return p;
    };
    let live: Vec<usize> = servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == Status::Up && s.priority == best)
        .map(|(i, _)| i)
        .collect();
    let total: u128 = live
        .iter()
        .filter_map(|&i| servers.get(i))
        .map(|s| u128::from(s.connections))
        .sum();
    let n = live.len();
    for (&i, s) in live.iter().zip(live.iter().filter_map(|&i| servers.get(i))) {
        let value = if n == 1 {
            1.0
        } else if total == 0 {
            1.0 / n as f64
        } else {
            let share = s.connections as f64 / total as f64;
            (1.0 - share) / (n - 1) as f64
        };
        if let Some(slot) = p.get_mut(i) {
            *slot = value.clamp(0.0, 1.0);
        }
    }
    p
}

/// Draws an index with the given probabilities (normalized by their sum);
/// `None` when they are all zero.
fn draw<R: Rng + ?Sized>(p: &[f64], rng: &mut R) -> Option<usize> {
    let last = p.iter().rposition(|&x| x > 0.0)?;
    let total: f64 = p.iter().filter(|x| **x > 0.0).sum();
    let mut r = rng.gen::<f64>() * total;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            if r < pi {
                return Some(i);
            }
            r -= pi;
        }
    }
    // Rounding left `r` just past the end.
    Some(last)
}

/// Chooses a server at random with the [`probabilities`]; `None` when no
/// server is `UP`.
pub fn choose<R: Rng + ?Sized>(servers: &[Server], rng: &mut R) -> Option<usize> {
    draw(&probabilities(servers), rng)
}

/// What [`pick`] ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct PickOutcome {
    /// The server a connection succeeded to.
    pub server: SocketAddrV4,
    /// A human-readable log of every step taken.
    pub attempts: Vec<String>,
}

/// How [`pick`] tests that a chosen server works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP VIP: a TCP connection is accepted (and closed at once).
    Tcp,
    /// A UDP VIP: this datagram (possibly empty) gets an answer.
    Udp(Vec<u8>),
}

impl Probe {
    /// The probe for a VIP of the list, by its `protocol`: `Udp` with the
    /// list's `udp_probe` (an empty datagram without one) for `udp`, `Tcp`
    /// for `tcp` (case-insensitive).
    pub fn for_vip(vip: &VipServers) -> Result<Probe, String> {
        if vip.protocol.eq_ignore_ascii_case("tcp") {
            Ok(Probe::Tcp)
        } else if vip.protocol.eq_ignore_ascii_case("udp") {
            Ok(Probe::Udp(
                vip.udp_probe.clone().unwrap_or_default().into_bytes(),
            ))
        } else {
            Err(format!(
                "VIP {:?} has protocol {:?}; pick knows tcp and udp",
                vip.name, vip.protocol
            ))
        }
    }

    /// "connect to X" / "UDP probe of X", for the log.
    fn what(&self, addr: SocketAddrV4) -> String {
        match self {
            Probe::Tcp => format!("connect to {addr}"),
            Probe::Udp(_) => format!("UDP probe of {addr}"),
        }
    }

    /// "connected to X" / "X answered the UDP probe", for the log.
    fn success(&self, addr: SocketAddrV4) -> String {
        match self {
            Probe::Tcp => format!("connected to {addr}"),
            Probe::Udp(_) => format!("{addr} answered the UDP probe"),
        }
    }
}

/// Connects to `addr` within `timeout` and closes the connection at once.
pub fn tcp_connect(addr: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout).map(drop)
}

/// Sends `payload` in one datagram to `addr` from a connected UDP socket and
/// waits up to `timeout` for an answer (any datagram from `addr`). Fails
/// with [`io::ErrorKind::ConnectionRefused`] when an ICMP port unreachable
/// comes back, and with [`io::ErrorKind::TimedOut`] when nothing does.
pub fn udp_probe(addr: SocketAddrV4, payload: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = http::deadline_after(timeout);
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // Connected: only `addr`'s datagrams are received, and the kernel
    // reports its ICMP port unreachable as ECONNREFUSED.
    socket.connect(addr)?;
    let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "port unreachable (ICMP)");
    match socket.send(payload) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(refused()),
        other => other?,
    };
    let no_answer = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )
    };
    // The answer's content does not matter; a longer one is truncated.
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(no_answer());
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(no_answer())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(refused()),
            Err(e) => return Err(e),
        }
    }
}

/// The real connect function for [`pick`]: [`tcp_connect`] or
/// [`udp_probe`] as `probe` says.
pub fn probe_server(addr: SocketAddrV4, probe: &Probe, timeout: Duration) -> io::Result<()> {
    match probe {
        Probe::Tcp => tcp_connect(addr, timeout),
        Probe::Udp(payload) => udp_probe(addr, payload, timeout),
    }
}

/// "fetched list from X: 3 servers, 2 UP in priority 0".
fn describe_list(from: SocketAddr, servers: &[Server]) -> String {
    let total = servers.len();
    let plural = if total == 1 { "" } else { "s" };
    match best_live_priority(servers) {
        Some(best) => {
            let up = servers
                .iter()
                .filter(|s| s.status == Status::Up && s.priority == best)
                .count();
            format!("fetched list from {from}: {total} server{plural}, {up} UP in priority {best}")
        }
        None => format!("fetched list from {from}: {total} server{plural}, none UP"),
    }
}

/// Seed 003's client procedure for `vip`: fetch the list from `from`,
/// [`choose`] a server, `connect` to it with the VIP's [`Probe`] (TCP or
/// UDP, from the list's `protocol`); on failure retry the same server
/// once; if that fails too, fetch a fresh list and choose again, fetching
/// at most `max_lists` lists in all. `connect_timeout` bounds each connect
/// (or UDP probe) and each fetch. Servers whose address is not IPv4 are
/// treated as `DOWN`.
///
/// Fails when a list has no `UP` server or a protocol other than TCP and
/// UDP, when `max_lists` is 0, or when every attempt failed; the error
/// carries the log of the attempts.
pub fn pick(
    from: SocketAddr,
    vip: &str,
    connect_timeout: Duration,
    max_lists: u32,
    rng: &mut impl Rng,
    mut connect: impl FnMut(SocketAddrV4, &Probe, Duration) -> io::Result<()>,
) -> anyhow::Result<PickOutcome> {
    if max_lists == 0 {
        bail!("no server for VIP {vip:?}: max_lists is 0, so no list may be fetched");
    }
    let mut attempts = Vec::new();
    for list_number in 1..=max_lists {
        if list_number > 1 {
            attempts.push("fetching a fresh list".to_string());
        }
        let mut list = match fetch(from, vip, connect_timeout) {
            Ok(list) => list,
            Err(e) => {
                attempts.push(format!("fetching the list from {from} failed: {e:#}"));
                continue;
            }
        };
        let probe = Probe::for_vip(&list).map_err(|e| anyhow!("{e}; {}", attempts.join("; ")))?;
        for s in &mut list.servers {
            if s.status == Status::Up && s.address.parse::<Ipv4Addr>().is_err() {
                attempts.push(format!(
                    "server {:?} port {} has no IPv4 address; treating it as DOWN",
                    s.address, s.port
                ));
                s.status = Status::Down;
            }
        }
        attempts.push(describe_list(from, &list.servers));
        let p = probabilities(&list.servers);
        let chosen = draw(&p, rng).and_then(|i| Some((list.servers.get(i)?, p.get(i)?)));
        let Some((server, probability)) = chosen else {
            bail!("no UP server for VIP {vip:?}: {}", attempts.join("; "));
        };
        let Ok(ip) = server.address.parse::<Ipv4Addr>() else {
            // Not reachable: non-IPv4 servers were marked DOWN above.
            bail!(
                "internal error: chose a non-IPv4 server; {}",
                attempts.join("; ")
            );
        };
        let addr = SocketAddrV4::new(ip, server.port);
        attempts.push(format!(
            "chose {addr} (probability {probability:.3}, {} users)",
            server.connections
        ));
        match connect(addr, &probe, connect_timeout) {
            Ok(()) => {
                attempts.push(probe.success(addr));
                return Ok(PickOutcome {
                    server: addr,
                    attempts,
                });
            }
            Err(e) => attempts.push(format!(
                "{} failed: {e}; retrying the same server",
                probe.what(addr)
            )),
        }
        match connect(addr, &probe, connect_timeout) {
            Ok(()) => {
                attempts.push(format!("{} on the retry", probe.success(addr)));
                return Ok(PickOutcome {
                    server: addr,
                    attempts,
                });
            }
            Err(e) => attempts.push(format!("{} failed again: {e}", probe.what(addr))),
        }
    }
    bail!(
        "no server for VIP {vip:?} could be reached with {max_lists} list(s): {}",
        attempts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::cell::Cell;
    use std::io::Write;

    const T: Duration = Duration::from_secs(3);

    fn server(address: &str, port: u16, status: Status, connections: u64, priority: u32) -> Server {
        Server {
            address: address.to_string(),
            port,
            status,
            connections,
            priority,
            backend_group: None,
            weight: 1,
        }
    }

    fn assert_close(got: &[f64], want: &[f64], tolerance: f64) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tolerance, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn seed_example() {
        let servers = [
            server("1.1.1.1", 80, Status::Up, 2963, 0),
            server("1.1.1.2", 80, Status::Down, 0, 1),
            server("1.1.1.3", 80, Status::Up, 2979, 0),
        ];
        assert_close(&probabilities(&servers), &[0.501, 0.0, 0.499], 1e-3);
    }

    #[test]
    fn three_way_split_and_lower_groups_ignored() {
        let servers = [
            server("10.0.0.1", 80, Status::Up, 100, 0),
            server("10.0.0.2", 80, Status::Up, 300, 0),
            server("10.0.0.3", 80, Status::Down, 0, 0),
            server("10.0.0.4", 80, Status::Up, 600, 0),
            server("10.0.0.5", 80, Status::Up, 0, 1),
        ];
        assert_close(
            &probabilities(&servers),
            &[0.45, 0.35, 0.0, 0.2, 0.0],
            1e-12,
        );
    }

    #[test]
    fn falls_back_to_the_next_priority_group() {
        let servers = [
            server("10.0.0.1", 80, Status::Down, 10, 0),
            server("10.0.0.2", 80, Status::Down, 0, 0),
            server("10.0.0.3", 80, Status::Up, 30, 1),
            server("10.0.0.4", 80, Status::Up, 10, 1),
            server("10.0.0.5", 80, Status::Up, 0, 2),
        ];
        assert_close(
            &probabilities(&servers),
            &[0.0, 0.0, 0.25, 0.75, 0.0],
            1e-12,
        );
    }

    #[test]
    fn degenerate_cases() {
        // N = 1.
        let one = [
            server("10.0.0.1", 80, Status::Up, 500, 3),
            server("10.0.0.2", 80, Status::Down, 0, 0),
        ];
        assert_eq!(probabilities(&one), vec![1.0, 0.0]);
        // ΣU = 0.
        let idle = [
            server("10.0.0.1", 80, Status::Up, 0, 0),
            server("10.0.0.2", 80, Status::Up, 0, 0),
            server("10.0.0.3", 80, Status::Up, 0, 0),
            server("10.0.0.4", 80, Status::Up, 0, 0),
        ];
        assert_close(&probabilities(&idle), &[0.25; 4], 1e-12);
        // None UP, and empty.
        let down = [server("10.0.0.1", 80, Status::Down, 5, 0)];
        assert_eq!(probabilities(&down), vec![0.0]);
        assert!(probabilities(&[]).is_empty());
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(choose(&down, &mut rng), None);
        assert_eq!(choose(&[], &mut rng), None);
        // One server holding every user gets 0 (the others share it all).
        let hog = [
            server("10.0.0.1", 80, Status::Up, 7, 0),
            server("10.0.0.2", 80, Status::Up, 0, 0),
            server("10.0.0.3", 80, Status::Up, 0, 0),
        ];
        assert_close(&probabilities(&hog), &[0.0, 0.5, 0.5], 1e-12);
    }

    #[test]
    fn choose_follows_the_probabilities() {
        let servers = [
            server("10.0.0.1", 80, Status::Up, 100, 0),
            server("10.0.0.2", 80, Status::Down, 0, 0),
            server("10.0.0.3", 80, Status::Up, 300, 0),
            server("10.0.0.4", 80, Status::Up, 600, 0),
            server("10.0.0.5", 80, Status::Up, 0, 1),
        ];
        let p = probabilities(&servers);
        let mut rng = StdRng::seed_from_u64(0x5eed_0003);
        let draws = 20_000;
        let mut counts = [0u32; 5];
        for _ in 0..draws {
            let i = choose(&servers, &mut rng).expect("some server is UP");
            counts[i] += 1;
        }
        for (i, (&c, &pi)) in counts.iter().zip(&p).enumerate() {
            let freq = f64::from(c) / f64::from(draws);
            assert!(
                (freq - pi).abs() <= 0.02,
                "server {i}: frequency {freq} vs probability {pi}"
            );
            if pi == 0.0 {
                assert_eq!(c, 0, "server {i} has probability 0");
            }
        }
    }

    #[test]
    fn status_serializes_as_up_down() {
        let s = server("10.0.0.1", 80, Status::Up, 1, 0);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["status"], "UP");
        assert!(json.get("backend_group").is_none());
        let mut down = server("10.0.0.1", 80, Status::Down, 1, 1);
        down.backend_group = Some("site-b".into());
        let json = serde_json::to_value(&down).unwrap();
        assert_eq!(json["status"], "DOWN");
        // The priority group is `priority`; the backend group has its own
        // name, and no field is called `group`.
        assert_eq!(json["priority"], 1);
        assert_eq!(json["backend_group"], "site-b");
        assert!(json.get("group").is_none(), "{json}");
        let back: Server = serde_json::from_value(json).unwrap();
        assert_eq!(back, down);
        // A list from elsewhere with a `group` field still parses; the
        // field is not taken for a backend group.
        let old: Server = serde_json::from_str(
            r#"{"address": "10.0.0.1", "port": 80, "status": "UP", "connections": 3,
                "priority": 0, "group": "A", "weight": 1}"#,
        )
        .unwrap();
        assert_eq!(old.backend_group, None);
        assert_eq!(old.priority, 0);
    }

    fn sample_list() -> ServerList {
        ServerList {
            generated_unix_ms: 1_700_000_000_000,
            vips: vec![
                VipServers {
                    name: "web".into(),
                    address: "10.1.0.1".into(),
                    port: 80,
                    protocol: "tcp".into(),
                    udp_probe: None,
                    servers: vec![
                        server("127.0.0.1", 8001, Status::Up, 10, 0),
                        server("127.0.0.1", 8002, Status::Down, 0, 1),
                    ],
                },
                VipServers {
                    name: "dns-tcp".into(),
                    address: "10.1.0.2".into(),
                    port: 53,
                    protocol: "tcp".into(),
                    udp_probe: None,
                    servers: vec![server("127.0.0.1", 5301, Status::Up, 0, 0)],
                },
                VipServers {
                    name: "dns-udp".into(),
                    address: "10.1.0.2".into(),
                    port: 53,
                    protocol: "udp".into(),
                    udp_probe: Some("ping".into()),
                    servers: vec![server("127.0.0.1", 5302, Status::Up, 0, 0)],
                },
            ],
        }
    }

    #[test]
    fn find_vip_selectors() {
        let list = sample_list();
        assert_eq!(find_vip(&list, "web").unwrap().name, "web");
        assert_eq!(find_vip(&list, "10.1.0.1:80").unwrap().name, "web");
        assert_eq!(find_vip(&list, "10.1.0.1:80/tcp").unwrap().name, "web");
        assert_eq!(find_vip(&list, "10.1.0.2:53/UDP").unwrap().name, "dns-udp");
        assert_eq!(find_vip(&list, "10.1.0.2:53/tcp").unwrap().name, "dns-tcp");
        let ambiguous = find_vip(&list, "10.1.0.2:53").unwrap_err();
        assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
        let unknown = find_vip(&list, "nope").unwrap_err();
        assert!(
            unknown.contains("nope") && unknown.contains("web"),
            "{unknown}"
        );
        assert!(find_vip(&list, "10.1.0.1:81").is_err());
        assert!(find_vip(&list, "10.1.0.1:80/udp").is_err());
        assert!(find_vip(&list, "").is_err());
        assert!(find_vip(&ServerList::default(), "web").is_err());
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_encode("10.1.0.2:53/udp"), "10.1.0.2:53%2Fudp");
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_decode("10.1.0.2:53%2fudp"), "10.1.0.2:53/udp");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
    }

    struct Running {
        addr: SocketAddr,
        list: Arc<RwLock<ServerList>>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Running {
        fn start(list: ServerList) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let list = Arc::new(RwLock::new(list));
            let stop = Arc::new(AtomicBool::new(false));
            let published = Published {
                list: list.clone(),
                ..Published::default()
            };
            let handle = serve(listener, published, stop.clone()).unwrap();
            Running {
                addr,
                list,
                stop,
                handle: Some(handle),
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }

    fn raw(addr: SocketAddr, request: &str) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect_timeout(&addr, T).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        http::parse_response(&response).unwrap()
    }

    #[test]
    fn serve_and_fetch_round_trip() {
        let running = Running::start(sample_list());
        let addr = running.addr;

        // The whole list, at / and /servers.
        for path in ["/", "/servers", "/servers/", "/servers?pretty=1"] {
            let (status, body) = http_get(addr, path, T).unwrap();
            assert_eq!(status, 200, "{path}");
            let list: ServerList = serde_json::from_slice(&body).unwrap();
            assert_eq!(list, sample_list(), "{path}");
        }

        // One VIP by each selector form.
        assert_eq!(fetch(addr, "web", T).unwrap(), sample_list().vips[0]);
        assert_eq!(fetch(addr, "10.1.0.1:80", T).unwrap().name, "web");
        assert_eq!(fetch(addr, "10.1.0.2:53/udp", T).unwrap().name, "dns-udp");
        let (status, body) = http_get(addr, "/servers/10.1.0.2:53%2Ftcp", T).unwrap();
        assert_eq!(status, 200);
        let vip: VipServers = serde_json::from_slice(&body).unwrap();
        assert_eq!(vip.name, "dns-tcp");
        let (status, _) = http_get(addr, "/servers/10.1.0.2:53/tcp", T).unwrap();
        assert_eq!(status, 200);

        // Unknown and ambiguous VIPs: 404 with a JSON error.
        let (status, body) = http_get(addr, "/servers/nope", T).unwrap();
        assert_eq!(status, 404);
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(error["error"].as_str().unwrap().contains("nope"));
        let e = fetch(addr, "nope", T).unwrap_err().to_string();
        assert!(e.contains("404") && e.contains("no VIP matches"), "{e}");
        let e = fetch(addr, "10.1.0.2:53", T).unwrap_err().to_string();
        assert!(e.contains("404") && e.contains("ambiguous"), "{e}");
        let (status, _) = http_get(addr, "/elsewhere", T).unwrap();
        assert_eq!(status, 404);

        // Other methods: 405.
        let (status, body) = raw(
            addr,
            "POST /servers HTTP/1.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 405);
        assert!(String::from_utf8_lossy(&body).contains("error"));

        // Changes to the shared list are served.
        running.list.write().unwrap().vips[0].servers[1].status = Status::Up;
        let web = fetch(addr, "web", T).unwrap();
        assert_eq!(web.servers[1].status, Status::Up);

        // Stopping ends the thread (Drop joins it) and closes the listener.
        drop(running);
        let e = fetch(addr, "web", Duration::from_secs(1)).unwrap_err();
        assert!(format!("{e:#}").contains("list server"), "{e:#}");
    }

    #[test]
    fn link_counts_are_served_for_the_twin() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let published = Published::default();
        let counts = published.link_counts.clone();
        let handle = serve(listener, published, stop.clone()).unwrap();
        // Nothing read from sluiced yet: an empty, dated-zero reading.
        assert_eq!(fetch_link_counts(addr, T).unwrap(), LinkCounts::default());
        let reading = LinkCounts {
            controller: "a".into(),
            unix_ms: 1_700_000_000_000,
            links: vec![LinkCount {
                address: "198.18.2.11".into(),
                bytes: 123_456,
                packets: 789,
            }],
        };
        *counts.write().unwrap() = reading.clone();
        assert_eq!(fetch_link_counts(addr, T).unwrap(), reading);
        let (status, _) = http_get(addr, "/link-counts/", T).unwrap();
        assert_eq!(status, 200);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        let e = format!(
            "{:#}",
            fetch_link_counts(addr, Duration::from_secs(1)).unwrap_err()
        );
        assert!(e.contains("unreachable"), "{e}");
    }

    #[test]
    fn fetch_reports_bad_json_and_unreachable() {
        // A one-shot server sending garbage.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nnope!");
        });
        let e = format!("{:#}", fetch(addr, "web", T).unwrap_err());
        assert!(e.contains("bad JSON"), "{e}");
        thread.join().unwrap();

        // Nobody listening any more on that port.
        let e = format!(
            "{:#}",
            fetch(addr, "web", Duration::from_secs(1)).unwrap_err()
        );
        assert!(e.contains("unreachable"), "{e}");
        assert!(fetch(addr, "web", Duration::ZERO).is_err());
    }

    #[test]
    fn pick_retries_once_then_fetches_a_fresh_list() {
        let mut list = ServerList::default();
        list.vips.push(VipServers {
            name: "web".into(),
            address: "10.1.0.1".into(),
            port: 80,
            protocol: "tcp".into(),
            udp_probe: None,
            servers: vec![
                server("127.0.0.1", 8001, Status::Up, 10, 0),
                server("127.0.0.2", 8002, Status::Up, 0, 1),
            ],
        });
        let running = Running::start(list);
        let shared = running.list.clone();
        let a: SocketAddrV4 = "127.0.0.1:8001".parse().unwrap();
        let b: SocketAddrV4 = "127.0.0.2:8002".parse().unwrap();
        let calls = Cell::new(0);
        let mut rng = StdRng::seed_from_u64(7);
        let outcome = pick(running.addr, "web", T, 3, &mut rng, |addr, _, _| {
            calls.set(calls.get() + 1);
            if addr == a {
                if calls.get() == 2 {
                    // The list server learns that A is down.
                    shared.write().unwrap().vips[0].servers[0].status = Status::Down;
                }
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(outcome.server, b);
        assert_eq!(calls.get(), 3);
        let from = running.addr;
        assert_eq!(
            outcome.attempts,
            vec![
                format!("fetched list from {from}: 2 servers, 1 UP in priority 0"),
                "chose 127.0.0.1:8001 (probability 1.000, 10 users)".to_string(),
                "connect to 127.0.0.1:8001 failed: refused; retrying the same server".to_string(),
                "connect to 127.0.0.1:8001 failed again: refused".to_string(),
                "fetching a fresh list".to_string(),
                format!("fetched list from {from}: 2 servers, 1 UP in priority 1"),
                "chose 127.0.0.2:8002 (probability 1.000, 0 users)".to_string(),
                "connected to 127.0.0.2:8002".to_string(),
            ]
        );
    }

    #[test]
    fn pick_succeeds_on_the_retry_and_fails_when_nothing_works() {
        let running = Running::start(sample_list());
        let mut rng = StdRng::seed_from_u64(3);

        // First attempt fails, the retry of the same server works.
        let calls = Cell::new(0);
        let outcome = pick(running.addr, "web", T, 2, &mut rng, |_, _, _| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(outcome.server, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(
            outcome.attempts.last().unwrap(),
            "connected to 127.0.0.1:8001 on the retry"
        );

        // Everything fails: max_lists lists, two connects each.
        let calls = Cell::new(0);
        let e = pick(running.addr, "web", T, 2, &mut rng, |_, _, _| {
            calls.set(calls.get() + 1);
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
        })
        .unwrap_err()
        .to_string();
        assert_eq!(calls.get(), 4);
        assert!(
            e.contains("2 list(s)") && e.contains("fetching a fresh list"),
            "{e}"
        );

        // No UP server.
        running.list.write().unwrap().vips[0].servers[0].status = Status::Down;
        let e = pick(running.addr, "web", T, 2, &mut rng, |_, _, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no UP server") && e.contains("none UP"), "{e}");

        // Unknown VIP: every fetch fails.
        let e = pick(running.addr, "nope", T, 2, &mut rng, |_, _, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("404"), "{e}");

        assert!(pick(running.addr, "web", T, 0, &mut rng, |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn pick_with_real_tcp_connect() {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = backend.local_addr().unwrap().port();
        let mut list = ServerList::default();
        list.vips.push(VipServers {
            name: "real".into(),
            address: "10.1.0.9".into(),
            port: 80,
            protocol: "tcp".into(),
            udp_probe: None,
            servers: vec![
                server("127.0.0.1", port, Status::Up, 3, 0),
                server("::1", port, Status::Up, 0, 0),
            ],
        });
        let running = Running::start(list);
        let mut rng = StdRng::seed_from_u64(11);
        let outcome = pick(running.addr, "real", T, 1, &mut rng, probe_server).unwrap();
        assert_eq!(outcome.server, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        assert!(
            outcome.attempts[0].contains("no IPv4 address"),
            "{:?}",
            outcome.attempts
        );
    }

    /// A UDP server on 127.0.0.1 echoing `answers` datagrams; the thread
    /// returns the payloads it received.
    fn udp_echo(answers: usize) -> (SocketAddrV4, JoinHandle<Vec<Vec<u8>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let SocketAddr::V4(addr) = socket.local_addr().unwrap() else {
            panic!("not IPv4");
        };
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            for _ in 0..answers {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    break;
                };
                got.push(buf[..n].to_vec());
                let _ = socket.send_to(&buf[..n], peer);
            }
            got
        });
        (addr, thread)
    }

    /// A UDP port on 127.0.0.1 with nobody behind it.
    fn closed_udp_port() -> SocketAddrV4 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = socket.local_addr().unwrap() else {
            panic!("not IPv4");
        };
        addr
    }

    #[test]
    fn udp_probe_answer_refusal_and_silence() {
        let (echo, server) = udp_echo(2);
        udp_probe(echo, b"ping", T).unwrap();
        probe_server(echo, &Probe::Udp(Vec::new()), T).unwrap();
        assert_eq!(server.join().unwrap(), vec![b"ping".to_vec(), Vec::new()]);
        // Nobody answers TCP there: the protocol matters.
        assert!(probe_server(echo, &Probe::Tcp, T).is_err());

        // A closed port: ICMP port unreachable (a timeout if the ICMP is
        // lost), never success.
        let closed = closed_udp_port();
        let e = udp_probe(closed, b"ping", Duration::from_millis(500)).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        if e.kind() == io::ErrorKind::ConnectionRefused {
            assert_eq!(e.to_string(), "port unreachable (ICMP)");
        }

        // A socket that reads nothing: a timeout, on time.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(silent_addr) = silent.local_addr().unwrap() else {
            panic!("not IPv4");
        };
        let started = Instant::now();
        let e = udp_probe(silent_addr, b"ping", Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("no answer within"), "{e}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn probe_follows_the_protocol() {
        let mut vip = sample_list().vips[2].clone();
        assert_eq!(Probe::for_vip(&vip), Ok(Probe::Udp(b"ping".to_vec())));
        vip.udp_probe = None;
        vip.protocol = "UDP".into();
        assert_eq!(Probe::for_vip(&vip), Ok(Probe::Udp(Vec::new())));
        assert_eq!(Probe::for_vip(&sample_list().vips[0]), Ok(Probe::Tcp));
        vip.protocol = "sctp".into();
        let e = Probe::for_vip(&vip).unwrap_err();
        assert!(e.contains("sctp"), "{e}");
        // The list carries the probe of UDP VIPs only.
        let json = serde_json::to_value(sample_list()).unwrap();
        assert_eq!(json["vips"][2]["udp_probe"], "ping");
        assert!(json["vips"][0].get("udp_probe").is_none());
    }

    #[test]
    fn pick_udp_vip_probes_with_udp_and_keeps_the_retry_rule() {
        let (echo, echo_thread) = udp_echo(1);
        let closed = closed_udp_port();
        let mut list = ServerList::default();
        list.vips.push(VipServers {
            name: "dns".into(),
            address: "198.18.100.53".into(),
            port: 53,
            protocol: "udp".into(),
            udp_probe: Some("ping".into()),
            servers: vec![
                server("127.0.0.1", closed.port(), Status::Up, 0, 0),
                server("127.0.0.1", echo.port(), Status::Up, 0, 1),
            ],
        });
        let running = Running::start(list);
        let shared = running.list.clone();
        let calls = Cell::new(0);
        let mut rng = StdRng::seed_from_u64(5);
        let short = Duration::from_millis(500);
        let outcome = pick(
            running.addr,
            "198.18.100.53:53/udp",
            short,
            3,
            &mut rng,
            |addr, probe, timeout| {
                calls.set(calls.get() + 1);
                assert_eq!(probe, &Probe::Udp(b"ping".to_vec()));
                let result = probe_server(addr, probe, timeout);
                if calls.get() == 2 {
                    // The list server learns that the closed one is down.
                    shared.write().unwrap().vips[0].servers[0].status = Status::Down;
                }
                result
            },
        )
        .unwrap();
        assert_eq!(outcome.server, echo);
        assert_eq!(calls.get(), 3);
        let a = &outcome.attempts;
        assert_eq!(a.len(), 8, "{a:?}");
        assert!(
            a[2].starts_with(&format!("UDP probe of {closed} failed: "))
                && a[2].ends_with("; retrying the same server"),
            "{a:?}"
        );
        assert!(
            a[3].starts_with(&format!("UDP probe of {closed} failed again: ")),
            "{a:?}"
        );
        assert_eq!(a[4], "fetching a fresh list");
        assert_eq!(a[7], format!("{echo} answered the UDP probe"));
        // The echo server got the VIP's probe payload, once.
        assert_eq!(echo_thread.join().unwrap(), vec![b"ping".to_vec()]);
    }

    const STATUS_KEY: &[u8] = b"status-test-key-0123456789";

    fn sealed(agent: &str, seq: u64, sent_ms: u64, key: &[u8]) -> Vec<u8> {
        let report = crate::agent::Report {
            v: crate::agent::REPORT_VERSION,
            agent: agent.into(),
            seq,
            sent_ms,
            interval_s: 2.0,
            metrics: crate::agent::Metrics {
                cpu_idle: 0.5,
                mem_free_bytes: 1,
                mem_total_bytes: 2,
                swap_free_bytes: 0,
                swap_total_bytes: 0,
                tcp_connections: 3,
                service_connections: None,
                custom: Some(0.25),
            },
        };
        crate::agent::seal(&report, key)
    }

    #[test]
    fn status_endpoint_shows_agent_counts_and_the_controller() {
        let now = unix_ms();
        let mut rx = Receiver::new(STATUS_KEY.to_vec(), 6.0);
        rx.accept(&sealed("web1", 10, now, STATUS_KEY), now)
            .unwrap();
        rx.accept(&sealed("typo", 1, now, STATUS_KEY), now).unwrap();
        let _ = rx.accept(&sealed("web1", 10, now, STATUS_KEY), now); // replay
        let _ = rx.accept(&sealed("web1", 11, now, b"the wrong key, long enough"), now);
        let _ = rx.accept(b"garbage", now);
        let _ = rx.accept(&sealed("web2", 1, now - 60_000, STATUS_KEY), now); // stale

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let status = ControllerStatus {
            controller: "test-controller".into(),
            started_unix_ms: now - 5_000,
            interval_s: 2.0,
            smoothing: 0.25,
            rounds: 3,
            failed_rounds: 1,
            last_round: Some(RoundResult {
                unix_ms: now - 1_000,
                ok: false,
                error: Some("sluiced unreachable".into()),
            }),
            last_push: Some(PushResult {
                unix_ms: now - 3_000,
                vips: 1,
                skipped: vec![],
            }),
            agent_names: ["web1".to_string(), "web2".to_string()].into(),
            vips: vec![VipStatus {
                name: "web".into(),
                service: "198.18.100.1:80/tcp".into(),
                policy: "agent-load".into(),
                backends: 3,
                up: 2,
                serving: 1,
            }],
            twin: Some(crate::links::TwinStatus {
                address: "198.18.2.2:7947".into(),
                pooled: true,
                last_ok_age_s: Some(0.5),
                error: None,
                links: 3,
            }),
        };
        let published = Published {
            list: Arc::new(RwLock::new(sample_list())),
            status: Arc::new(RwLock::new(status)),
            agents: Some(Arc::new(Mutex::new(rx))),
            ..Published::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let handle = serve(listener, published.clone(), stop.clone()).unwrap();

        let (code, body) = http_get(addr, "/status", T).unwrap();
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["controller"], "test-controller");
        assert_eq!(v["twin"]["address"], "198.18.2.2:7947");
        assert_eq!(v["twin"]["pooled"], true);
        assert_eq!(v["twin"]["links"], 3);
        let uptime = v["uptime_s"].as_f64().unwrap();
        assert!((5.0..60.0).contains(&uptime), "{v}");
        assert_eq!(v["smoothing"], 0.25);
        assert_eq!(
            (v["rounds"].as_u64(), v["failed_rounds"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(v["last_round"]["ok"], false);
        assert_eq!(v["last_round"]["error"], "sluiced unreachable");
        assert!(v["last_round"]["age_s"].as_f64().unwrap() >= 1.0, "{v}");
        assert_eq!(v["last_push"]["vips"], 1);
        assert!(v["last_push"]["age_s"].as_f64().unwrap() >= 3.0, "{v}");
        assert_eq!(
            v["agents"]["counts"],
            serde_json::json!({"accepted": 2, "malformed": 1, "unauthenticated": 1,
                               "stale": 1, "replayed": 1})
        );
        assert_eq!(v["agents"]["unknown_agents"], serde_json::json!(["typo"]));
        let reports = v["agents"]["reports"].as_array().unwrap();
        assert_eq!(reports.len(), 2, "{v}");
        let web1 = reports.iter().find(|r| r["agent"] == "web1").unwrap();
        assert_eq!(
            (web1["seq"].as_u64(), web1["fresh"].as_bool()),
            (Some(10), Some(true))
        );
        assert_eq!(web1["known"], true);
        assert!(v["agents"]["last_refused"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("stale report"));
        assert_eq!(v["vips"][0]["backends"], 3);
        assert_eq!(v["vips"][0]["up"], 2);

        // Live: a new accepted report shows at the next request, and the
        // list is still served beside it.
        published
            .agents
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .accept(&sealed("web1", 11, unix_ms(), STATUS_KEY), unix_ms())
            .unwrap();
        let (_, body) = http_get(addr, "/status/", T).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["agents"]["counts"]["accepted"], 3);
        assert_eq!(fetch(addr, "web", T).unwrap(), sample_list().vips[0]);

        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
    }

    #[test]
    fn status_without_agents_or_rounds() {
        let status = ControllerStatus {
            controller: "c".into(),
            started_unix_ms: 10_000,
            ..ControllerStatus::default()
        };
        let reply = status_reply(&status, None, 12_500);
        assert_eq!(reply.uptime_s, 2.5);
        let v = serde_json::to_value(&reply).unwrap();
        assert!(v["agents"].is_null(), "{v}");
        assert!(v["last_push"].is_null() && v["last_round"].is_null(), "{v}");
        assert_eq!(v["vips"], serde_json::json!([]));
        // A clock that went backwards gives no negative uptime.
        assert_eq!(status_reply(&status, None, 9_000).uptime_s, 0.0);
    }

    fn arb_server() -> impl Strategy<Value = Server> {
        (any::<bool>(), any::<u64>(), 0u32..4, 0u64..5).prop_map(|(up, c, prio, small)| {
            // Mix huge and small user counts.
            let connections = if c % 3 == 0 { small } else { c };
            server(
                "10.0.0.1",
                80,
                if up { Status::Up } else { Status::Down },
                connections,
                prio,
            )
        })
    }

    proptest! {
        #[test]
        fn probabilities_are_a_distribution(servers in prop::collection::vec(arb_server(), 0..12), seed in any::<u64>()) {
            let p = probabilities(&servers);
            prop_assert_eq!(p.len(), servers.len());
            for &x in &p {
                prop_assert!((0.0..=1.0).contains(&x), "{:?}", p);
            }
            let sum: f64 = p.iter().sum();
            if servers.iter().any(|s| s.status == Status::Up) {
                prop_assert!((sum - 1.0).abs() < 1e-9, "sum {} of {:?}", sum, p);
                let mut rng = StdRng::seed_from_u64(seed);
                let i = choose(&servers, &mut rng);
                prop_assert!(i.is_some_and(|i| p[i] > 0.0));
            } else {
                prop_assert_eq!(sum, 0.0);
                let mut rng = StdRng::seed_from_u64(seed);
                prop_assert_eq!(choose(&servers, &mut rng), None);
            }
        }

        #[test]
        fn selectors_never_panic(selector in ".{0,40}") {
            let _ = find_vip(&sample_list(), &selector);
            prop_assert_eq!(percent_decode(&percent_encode(&selector)), selector);
        }
    }
}
