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
//! The `weight` of a server is carried for information (it is the weight the
//! balancer's own Maglev table uses); the seed's formula does not use it.
//!
//! Server side: [`serve`] answers `GET /` and `GET /servers` with the whole
//! [`ServerList`] and `GET /servers/{vip}` with one [`VipServers`], where
//! `{vip}` is a VIP name, `address:port/protocol` (the slash may be sent as
//! `%2F`) or `address:port` when that is unique (see [`find_vip`]).
//!
//! Client side: [`fetch`] (a minimal HTTP/1.0 GET), [`probabilities`],
//! [`choose`] and [`pick`], which runs the whole connect / retry / re-fetch
//! procedure with an injectable connect function ([`tcp_connect`] is the
//! real one).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};

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
    /// Priority group: a LOWER value is a HIGHER priority (tried first).
    pub priority: u32,
    /// Optional human-readable name of the priority group (`"A"`, `"B"`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub group: Option<String>,
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
// Server side
// ---------------------------------------------------------------------------

/// Serves `list` over HTTP on `listener` from a new thread until `stop` is
/// set (it is looked at every 100 ms); the thread then closes the listener
/// and ends.
///
/// * `GET /`, `GET /servers`: the whole [`ServerList`] as JSON;
/// * `GET /servers/{vip}`: one [`VipServers`] (see [`find_vip`] for the
///   selector forms; percent-encoding is decoded), `404` with
///   `{"error": "..."}` when no VIP matches;
/// * any other path: `404`; any other method: `405`.
pub fn serve(
    listener: TcpListener,
    list: Arc<RwLock<ServerList>>,
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
                        let (code, body) = route(&list, request.method(), request.url());
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
fn route(list: &RwLock<ServerList>, method: &tiny_http::Method, url: &str) -> (u16, Vec<u8>) {
    if *method != tiny_http::Method::Get {
        return (
            405,
            error_body(&format!("method {method} not allowed; use GET")),
        );
    }
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let list = list.read().unwrap_or_else(PoisonError::into_inner);
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
                "no such path {path:?}; try /servers or /servers/{{vip}}"
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

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(120).collect();
    if text.chars().nth(120).is_some() {
        out.push('…');
    }
    if out.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        out
    }
}

/// One HTTP/1.0 GET: `(status code, body)`.
fn http_get(from: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, Vec<u8>)> {
    if timeout.is_zero() {
        bail!("list server {from}: the timeout must not be zero");
    }
    let mut stream = TcpStream::connect_timeout(&from, timeout)
        .with_context(|| format!("list server {from} unreachable"))?;
    let deadline = Instant::now().checked_add(timeout);
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| {
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {from}\r\nAccept: application/json\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes())
        })
        .with_context(|| format!("cannot send the request to list server {from}"))?;

    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let remaining = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => timeout,
        };
        if remaining.is_zero() {
            bail!("list server {from} did not answer within {timeout:?}");
        }
        stream
            .set_read_timeout(Some(remaining))
            .with_context(|| format!("reading from list server {from}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(chunk.get(..n).unwrap_or_default());
                if response.len() > MAX_RESPONSE_BYTES {
                    bail!("list server {from} sent more than {MAX_RESPONSE_BYTES} bytes");
                }
                if response_complete(&response) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                bail!("list server {from} did not answer within {timeout:?}");
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading from list server {from}"));
            }
        }
    }
    parse_response(&response).with_context(|| format!("bad HTTP response from list server {from}"))
}

/// Where the headers end (the body's first byte) in a response.
fn body_start(response: &[u8]) -> Option<usize> {
    let crlf = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = response
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        bail!("not an HTTP status line: {status_line:?}");
    }
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("no status code in {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| anyhow!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// Whether a Content-Length response has been read whole (so a server that
/// keeps the connection open does not make us wait for the timeout).
fn response_complete(response: &[u8]) -> bool {
    let Some(start) = body_start(response) else {
        return false;
    };
    match parse_head(response.get(..start).unwrap_or_default()) {
        Ok(Head {
            content_length: Some(length),
            chunked: false,
            ..
        }) => response.len().saturating_sub(start) >= length,
        _ => false,
    }
}

fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    if response.is_empty() {
        bail!("empty response");
    }
    let start = body_start(response).ok_or_else(|| anyhow!("incomplete response headers"))?;
    let head = parse_head(response.get(..start).unwrap_or_default())?;
    let body = response.get(start..).unwrap_or_default();
    let body = if head.chunked {
        dechunk(body)?
    } else if let Some(length) = head.content_length {
        match body.get(..length) {
            Some(body) => body.to_vec(),
            None => bail!("truncated body: got {} of {length} bytes", body.len()),
        }
    } else {
        body.to_vec()
    };
    Ok((head.status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body (trailers are ignored).
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let line = String::from_utf8_lossy(body.get(..line_end).unwrap_or_default());
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        body = body.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        let data = body.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(data);
        body = body
            .get(size..)
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
            .ok_or_else(|| anyhow!("chunk not followed by CRLF"))?;
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

/// Connects to `addr` within `timeout` and closes the connection at once:
/// the real connect function for [`pick`].
pub fn tcp_connect(addr: SocketAddrV4, timeout: Duration) -> io::Result<()> {
    TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout).map(drop)
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
/// [`choose`] a server, `connect` to it; on failure retry the same server
/// once; if that fails too, fetch a fresh list and choose again, fetching
/// at most `max_lists` lists in all. `connect_timeout` bounds each connect
/// and each fetch. Servers whose address is not IPv4 are treated as `DOWN`.
///
/// Fails when a list has no `UP` server, when `max_lists` is 0, or when
/// every attempt failed; the error carries the log of the attempts.
pub fn pick(
    from: SocketAddr,
    vip: &str,
    connect_timeout: Duration,
    max_lists: u32,
    rng: &mut impl Rng,
    mut connect: impl FnMut(SocketAddrV4, Duration) -> io::Result<()>,
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
        match connect(addr, connect_timeout) {
            Ok(()) => {
                attempts.push(format!("connected to {addr}"));
                return Ok(PickOutcome {
                    server: addr,
                    attempts,
                });
            }
            Err(e) => attempts.push(format!(
                "connect to {addr} failed: {e}; retrying the same server"
            )),
        }
        match connect(addr, connect_timeout) {
            Ok(()) => {
                attempts.push(format!("connected to {addr} on the retry"));
                return Ok(PickOutcome {
                    server: addr,
                    attempts,
                });
            }
            Err(e) => attempts.push(format!("connect to {addr} failed again: {e}")),
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

    const T: Duration = Duration::from_secs(3);

    fn server(address: &str, port: u16, status: Status, connections: u64, priority: u32) -> Server {
        Server {
            address: address.to_string(),
            port,
            status,
            connections,
            priority,
            group: None,
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
        assert!(json.get("group").is_none());
        let mut down = server("10.0.0.1", 80, Status::Down, 1, 0);
        down.group = Some("B".into());
        let json = serde_json::to_value(&down).unwrap();
        assert_eq!(json["status"], "DOWN");
        assert_eq!(json["group"], "B");
        let back: Server = serde_json::from_value(json).unwrap();
        assert_eq!(back, down);
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
                    servers: vec![server("127.0.0.1", 5301, Status::Up, 0, 0)],
                },
                VipServers {
                    name: "dns-udp".into(),
                    address: "10.1.0.2".into(),
                    port: 53,
                    protocol: "udp".into(),
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

    #[test]
    fn response_parsing() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(ok).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"abcde".to_vec()));
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}";
        assert!(parse_response(short).is_err());
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
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
            let handle = serve(listener, list.clone(), stop.clone()).unwrap();
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
        parse_response(&response).unwrap()
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
        let outcome = pick(running.addr, "web", T, 3, &mut rng, |addr, _| {
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
        let outcome = pick(running.addr, "web", T, 2, &mut rng, |_, _| {
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
        let e = pick(running.addr, "web", T, 2, &mut rng, |_, _| {
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
        let e = pick(running.addr, "web", T, 2, &mut rng, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no UP server") && e.contains("none UP"), "{e}");

        // Unknown VIP: every fetch fails.
        let e = pick(running.addr, "nope", T, 2, &mut rng, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("404"), "{e}");

        assert!(pick(running.addr, "web", T, 0, &mut rng, |_, _| Ok(())).is_err());
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
            servers: vec![
                server("127.0.0.1", port, Status::Up, 3, 0),
                server("::1", port, Status::Up, 0, 0),
            ],
        });
        let running = Running::start(list);
        let mut rng = StdRng::seed_from_u64(11);
        let outcome = pick(running.addr, "real", T, 1, &mut rng, tcp_connect).unwrap();
        assert_eq!(outcome.server, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        assert!(
            outcome.attempts[0].contains("no IPv4 address"),
            "{:?}",
            outcome.attempts
        );
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
        fn parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), selector in ".{0,40}") {
            let _ = parse_response(&bytes);
            let _ = dechunk(&bytes);
            let _ = find_vip(&sample_list(), &selector);
            prop_assert_eq!(percent_decode(&percent_encode(&selector)), selector);
        }
    }
}
