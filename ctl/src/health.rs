//! Controller-side health checks of the backends.
//!
//! * [`probe`] runs one check (TCP connect, HTTP GET, UDP request/reply)
//!   with a total timeout and returns its round-trip time.
//! * [`HealthState`] is the pure rise/fall state machine fed with the
//!   probes' results.
//! * [`HealthChecker`] runs one thread per checked target and keeps their
//!   states; the controller reads them with [`HealthChecker::snapshot`].
//!
//! Nothing here panics on any input, and every network operation is bounded
//! by the check's `timeout_s`.

use crate::http;
use firmware_config::{HealthCheck, HealthKind};
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Most bytes read while looking for an HTTP status line.
const MAX_HTTP_READ: usize = 8 * 1024;
/// Largest UDP reply looked at.
const MAX_UDP_REPLY: usize = 64 * 1024;
/// Weight of the newest round-trip time in the smoothed one.
const RTT_ALPHA: f64 = 0.3;
/// Longest a checker thread sleeps before looking at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A number of seconds from the configuration as a `Duration`, within
/// `[min, max]`; `NaN` and negative values give `min`.
fn seconds(s: f64, min: Duration, max: Duration) -> Duration {
    if s.is_nan() {
        return min;
    }
    match Duration::try_from_secs_f64(s) {
        Ok(d) => d.clamp(min, max),
        Err(_) if s > 0.0 => max,
        Err(_) => min,
    }
}

/// Total time a probe may take.
fn probe_timeout(check: &HealthCheck) -> Duration {
    seconds(
        check.timeout_s,
        Duration::from_millis(1),
        Duration::from_secs(3600),
    )
}

/// Time between the starts of two checks.
fn check_interval(check: &HealthCheck) -> Duration {
    seconds(
        check.interval_s,
        Duration::from_millis(10),
        Duration::from_secs(86_400),
    )
}

/// Time left until `deadline`, or a timeout error naming `what`.
fn remaining(deadline: Instant, what: &str) -> Result<Duration, String> {
    crate::http::left(deadline).map_err(|_| format!("timed out {what}"))
}

/// Runs one health check of `target` and returns its round-trip time
/// (connect plus response), or what went wrong.
///
/// The port checked is `check.port` when set, else `target`'s port. The
/// whole check takes at most `check.timeout_s`:
///
/// * `tcp`: a TCP connection is accepted (and closed at once);
/// * `http`: `GET {path} HTTP/1.0` is answered with a status line
///   `HTTP/1.x NNN` where NNN is `expect_status`;
/// * `udp`: the `send` datagram gets a reply, equal to `expect` (trailing
///   `\r`/`\n` ignored on both sides) when `expect` is set;
/// * `none`: always healthy, with a round-trip time of zero.
pub fn probe(check: &HealthCheck, target: SocketAddrV4) -> Result<Duration, String> {
    let addr = SocketAddrV4::new(*target.ip(), check.port.unwrap_or(target.port()));
    let start = Instant::now();
    let deadline = start + probe_timeout(check);
    match check.kind {
        HealthKind::None => Ok(Duration::ZERO),
        HealthKind::Tcp => {
            let stream = connect(addr, deadline)?;
            let rtt = start.elapsed();
            drop(stream);
            Ok(rtt)
        }
        HealthKind::Http => {
            probe_http(check, addr, deadline)?;
            Ok(start.elapsed())
        }
        HealthKind::Udp => {
            probe_udp(check, addr, deadline)?;
            Ok(start.elapsed())
        }
    }
}

fn connect(addr: SocketAddrV4, deadline: Instant) -> Result<TcpStream, String> {
    let left = remaining(deadline, "connecting")?;
    TcpStream::connect_timeout(&SocketAddr::V4(addr), left).map_err(|e| {
        if crate::http::is_timeout(&e) {
            format!("connect to {addr} timed out")
        } else {
            format!("connect to {addr}: {e}")
        }
    })
}

fn probe_http(check: &HealthCheck, addr: SocketAddrV4, deadline: Instant) -> Result<(), String> {
    let mut stream = connect(addr, deadline)?;
    let request = http::get_request(
        &check.path,
        &addr.ip().to_string(),
        &[("User-Agent", "sluice-health")],
    );
    http::send(&mut stream, request.as_bytes(), deadline).map_err(|e| match e {
        http::Error::TimedOut => "timed out sending the request".to_string(),
        http::Error::Socket(e) => format!("socket: {e}"),
        other => other.to_string(),
    })?;

    let mut buf = Vec::with_capacity(1024);
    http::read_tcp(
        &mut stream,
        &mut buf,
        deadline,
        MAX_HTTP_READ,
        http::Until::StatusLine,
    )
    .map_err(|e| match e {
        http::Error::TimedOut => "timed out waiting for the status line".to_string(),
        http::Error::TooBig => format!(
            "no status line in the first {MAX_HTTP_READ} bytes: \"{}\"",
            http::excerpt(&buf, 60)
        ),
        http::Error::Socket(e) => format!("socket: {e}"),
        other => other.to_string(),
    })?;
    if buf.is_empty() {
        return Err("connection closed without a response".to_string());
    }
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(end) => buf.get(..end).unwrap_or_default(),
        None => &buf,
    };
    let status = http::parse_status_line(line)
        .map_err(|_| format!("not an HTTP response: \"{}\"", http::excerpt(line, 60)))?;
    if status == check.expect_status {
        Ok(())
    } else {
        Err(format!(
            "HTTP status {status} (expected {})",
            check.expect_status
        ))
    }
}

fn trim_line_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = b {
        b = rest;
    }
    b
}

fn probe_udp(check: &HealthCheck, addr: SocketAddrV4, deadline: Instant) -> Result<(), String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("socket: {e}"))?;
    // Connected: only the target's replies are received, and an ICMP port
    // unreachable ends the check at once.
    socket
        .connect(addr)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let payload = check.send.as_deref().unwrap_or("");
    socket
        .send(payload.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = vec![0u8; MAX_UDP_REPLY];
    let n = loop {
        let left = remaining(deadline, "waiting for a reply")?;
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| format!("socket: {e}"))?;
        match socket.recv(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::http::is_timeout(&e) => {
                return Err("timed out waiting for a reply".to_string())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(format!("{addr}: port unreachable"))
            }
            Err(e) => return Err(format!("receive from {addr}: {e}")),
        }
    };
    let reply = buf.get(..n).unwrap_or_default();
    match &check.expect {
        None => Ok(()),
        Some(expect) => {
            if trim_line_end(reply) == trim_line_end(expect.as_bytes()) {
                Ok(())
            } else {
                Err(format!(
                    "unexpected reply \"{}\" (expected \"{}\")",
                    http::excerpt(trim_line_end(reply), 60),
                    http::excerpt(expect.as_bytes(), 60)
                ))
            }
        }
    }
}

/// Rise/fall state of one checked backend (pure: fed with probe results).
///
/// A new state is **up**: a controller that restarts must not take every
/// backend out of service before its first checks have run. A backend
/// therefore goes down only after `fall` consecutive failed checks, and
/// comes back after `rise` consecutive successful ones.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthState {
    /// Whether the backend is up.
    pub up: bool,
    /// Successful checks in a row (0 after a failure).
    pub consecutive_successes: u32,
    /// Failed checks in a row (0 after a success).
    pub consecutive_failures: u32,
    /// Checks recorded.
    pub checks: u64,
    /// Failed checks recorded.
    pub failures: u64,
    /// Error of the latest check when it failed; `None` after a success.
    pub last_error: Option<String>,
    /// Round-trip time of the latest successful check, in ms.
    pub last_rtt_ms: Option<f64>,
    /// Exponential moving average (alpha 0.3) of the successful checks'
    /// round-trip times, in ms.
    pub rtt_ms: Option<f64>,
    /// Up/down transitions so far.
    pub transitions: u64,
    /// When the state last changed (or was created).
    pub since: Instant,
}

impl HealthState {
    /// A new state: up, nothing recorded.
    pub fn new(now: Instant) -> Self {
        HealthState {
            up: true,
            consecutive_successes: 0,
            consecutive_failures: 0,
            checks: 0,
            failures: 0,
            last_error: None,
            last_rtt_ms: None,
            rtt_ms: None,
            transitions: 0,
            since: now,
        }
    }

    /// Records the result of one check made at `now`. Returns `Some(up)`
    /// when the state changed: down after `fall` consecutive failures, up
    /// after `rise` consecutive successes (0 counts as 1).
    pub fn record(
        &mut self,
        result: &Result<Duration, String>,
        now: Instant,
        rise: u32,
        fall: u32,
    ) -> Option<bool> {
        self.checks = self.checks.saturating_add(1);
        match result {
            Ok(rtt) => {
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.consecutive_failures = 0;
                self.last_error = None;
                let ms = rtt.as_secs_f64() * 1000.0;
                self.last_rtt_ms = Some(ms);
                self.rtt_ms = Some(match self.rtt_ms {
                    Some(prev) => RTT_ALPHA * ms + (1.0 - RTT_ALPHA) * prev,
                    None => ms,
                });
                if !self.up && self.consecutive_successes >= rise.max(1) {
                    self.set(true, now);
                    return Some(true);
                }
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_successes = 0;
                self.last_error = Some(e.clone());
                if self.up && self.consecutive_failures >= fall.max(1) {
                    self.set(false, now);
                    return Some(false);
                }
            }
        }
        None
    }

    fn set(&mut self, up: bool, now: Instant) {
        self.up = up;
        self.since = now;
        self.transitions = self.transitions.saturating_add(1);
    }

    /// The state as shown to operators, at `now`.
    pub fn view(&self, now: Instant) -> HealthView {
        HealthView {
            up: self.up,
            rtt_ms: self.rtt_ms,
            last_error: self.last_error.clone(),
            checks: self.checks,
            failures: self.failures,
            since_s: now.saturating_duration_since(self.since).as_secs_f64(),
        }
    }
}

/// What [`HealthChecker::snapshot`] tells about one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthView {
    /// Whether the backend is up.
    pub up: bool,
    /// Smoothed round-trip time of the successful checks, in ms.
    pub rtt_ms: Option<f64>,
    /// Error of the latest check when it failed.
    pub last_error: Option<String>,
    /// Checks made.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Seconds in the current state.
    pub since_s: f64,
}

/// One backend to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Unique name of the target, e.g. `"198.18.100.1:80/tcp 198.18.2.11:8080"`
    /// (VIP and backend); the keys of [`HealthChecker::snapshot`].
    pub key: String,
    /// The backend's address (its port is checked unless `check.port` is set).
    pub addr: SocketAddrV4,
    /// How to check it.
    pub check: HealthCheck,
}

struct Entry {
    addr: SocketAddrV4,
    check: HealthCheck,
    state: Arc<Mutex<HealthState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the health checks of a changing set of targets, one thread per
/// target (none for `type = "none"`, which is always up). Each thread checks
/// at once when started, then every `interval_s`, and logs transitions to
/// stderr.
pub struct HealthChecker {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Default for HealthChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecker {
    /// A checker with no targets.
    pub fn new() -> Self {
        HealthChecker {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `targets` the set of checked targets. A target whose key,
    /// address and check settings are unchanged keeps its state and thread;
    /// new or changed ones start from a fresh (up) state with a check at
    /// once; removed ones are stopped (their threads end within 100 ms, or
    /// after the check in progress). With duplicate keys, the last wins.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut wanted: HashMap<String, Target> = HashMap::with_capacity(targets.len());
        for t in targets {
            wanted.insert(t.key.clone(), t);
        }
        let mut entries = lock(&self.entries);
        entries.retain(|key, e| {
            let keep = wanted
                .get(key)
                .is_some_and(|t| t.addr == e.addr && t.check == e.check);
            if !keep {
                e.stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        for (key, t) in wanted {
            if entries.contains_key(&key) {
                continue;
            }
            let entry = start(key.clone(), t.addr, t.check);
            entries.insert(key, entry);
        }
    }

    /// The state of every target, by key.
    pub fn snapshot(&self) -> HashMap<String, HealthView> {
        let now = Instant::now();
        lock(&self.entries)
            .iter()
            .map(|(key, e)| (key.clone(), lock(&e.state).view(now)))
            .collect()
    }

    /// Stops every thread and waits for them, then forgets all targets.
    pub fn stop(&self) {
        let entries: Vec<Entry> = lock(&self.entries).drain().map(|(_, e)| e).collect();
        for e in &entries {
            e.stop.store(true, Ordering::Relaxed);
        }
        for mut e in entries {
            if let Some(t) = e.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for e in lock(&self.entries).values() {
            e.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn start(key: String, addr: SocketAddrV4, check: HealthCheck) -> Entry {
    let state = Arc::new(Mutex::new(HealthState::new(Instant::now())));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = if check.kind == HealthKind::None {
        None
    } else {
        let (state2, stop2, check2, key2) =
            (state.clone(), stop.clone(), check.clone(), key.clone());
        match thread::Builder::new()
            .name("sluice-health".to_string())
            .spawn(move || check_loop(&key2, addr, &check2, &state2, &stop2))
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("sluicectl: health: {key}: cannot start the checker thread: {e}");
                None
            }
        }
    };
    Entry {
        addr,
        check,
        state,
        stop,
        thread,
    }
}

fn check_loop(
    key: &str,
    addr: SocketAddrV4,
    check: &HealthCheck,
    state: &Mutex<HealthState>,
    stop: &AtomicBool,
) {
    let interval = check_interval(check);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = probe(check, addr);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let change = lock(state).record(&result, Instant::now(), check.rise, check.fall);
        match (change, &result) {
            (Some(false), Err(e)) => eprintln!("sluicectl: health: {key}: UP -> DOWN ({e})"),
            (Some(false), Ok(_)) => eprintln!("sluicectl: health: {key}: UP -> DOWN"),
            (Some(true), _) => eprintln!("sluicectl: health: {key}: DOWN -> UP"),
            (None, _) => {}
        }
        let next = started + interval;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(STOP_POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn check(kind: HealthKind) -> HealthCheck {
        HealthCheck {
            kind,
            port: None,
            interval_s: 0.05,
            timeout_s: 0.5,
            rise: 1,
            fall: 1,
            path: "/health".to_string(),
            expect_status: 200,
            send: None,
            expect: None,
        }
    }

    fn v4(addr: SocketAddr) -> SocketAddrV4 {
        match addr {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        }
    }

    const OK: Result<Duration, String> = Ok(Duration::from_millis(10));

    fn fail() -> Result<Duration, String> {
        Err("boom".to_string())
    }

    #[test]
    fn state_starts_up_and_falls_after_exactly_fall_failures() {
        let t0 = Instant::now();
        let mut s = HealthState::new(t0);
        assert!(s.up);
        assert_eq!(s.record(&fail(), t0, 2, 3), None);
        assert_eq!(s.record(&fail(), t0, 2, 3), None);
        assert!(s.up);
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.record(&fail(), t1, 2, 3), Some(false));
        assert!(!s.up);
        assert_eq!(s.since, t1);
        assert_eq!((s.checks, s.failures, s.transitions), (3, 3, 1));
        // Further failures change nothing.
        assert_eq!(s.record(&fail(), t1, 2, 3), None);
        // Rises after exactly `rise` successes.
        assert_eq!(s.record(&OK, t1, 2, 3), None);
        assert!(!s.up);
        assert_eq!(s.last_error, None);
        assert_eq!(s.record(&OK, t1, 2, 3), Some(true));
        assert!(s.up);
        assert_eq!(s.transitions, 2);
        assert_eq!(s.consecutive_successes, 2);
    }

    #[test]
    fn state_streaks_reset_on_flapping() {
        let t = Instant::now();
        let mut s = HealthState::new(t);
        for _ in 0..10 {
            assert_eq!(s.record(&fail(), t, 2, 2), None);
            assert_eq!(s.record(&OK, t, 2, 2), None);
        }
        assert!(s.up);
        assert_eq!(s.transitions, 0);
        s.record(&fail(), t, 2, 2);
        assert_eq!(s.record(&fail(), t, 2, 2), Some(false));
        for _ in 0..10 {
            assert_eq!(s.record(&OK, t, 2, 2), None);
            assert_eq!(s.record(&fail(), t, 2, 2), None);
        }
        assert!(!s.up);
        assert_eq!((s.checks, s.failures), (42, 22));
    }

    #[test]
    fn state_rise_fall_zero_count_as_one() {
        let t = Instant::now();
        let mut s = HealthState::new(t);
        assert_eq!(s.record(&fail(), t, 0, 0), Some(false));
        assert_eq!(s.record(&OK, t, 0, 0), Some(true));
    }

    #[test]
    fn state_smooths_rtt() {
        let t = Instant::now();
        let mut s = HealthState::new(t);
        s.record(&Ok(Duration::from_millis(10)), t, 1, 1);
        assert_eq!(s.rtt_ms, Some(10.0));
        s.record(&Ok(Duration::from_millis(20)), t, 1, 1);
        let rtt = s.rtt_ms.unwrap_or(0.0);
        assert!((rtt - 13.0).abs() < 1e-9, "{rtt}");
        assert_eq!(s.last_rtt_ms, Some(20.0));
        s.record(&fail(), t, 1, 5);
        assert_eq!(s.rtt_ms, Some(rtt));
        let view = s.view(t + Duration::from_secs(2));
        assert_eq!(view.checks, 3);
        assert_eq!(view.failures, 1);
        assert!((view.since_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn tcp_probe_open_and_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = v4(listener.local_addr().expect("addr"));
        assert!(probe(&check(HealthKind::Tcp), addr).is_ok());
        drop(listener);
        let err = probe(&check(HealthKind::Tcp), addr).expect_err("closed port");
        assert!(err.contains("connect"), "{err}");
        // The port override wins over the target's port.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = v4(listener.local_addr().expect("addr"));
        let mut c = check(HealthKind::Tcp);
        c.port = Some(open.port());
        assert!(probe(&c, addr).is_ok());
    }

    #[test]
    fn none_probe_is_always_ok() {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        assert_eq!(probe(&check(HealthKind::None), addr), Ok(Duration::ZERO));
    }

    /// An HTTP server answering `answers` connections with `response`
    /// (nothing at all when `None`, holding the connection open).
    fn http_server(
        response: Option<&'static str>,
        answers: usize,
    ) -> (SocketAddrV4, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = v4(listener.local_addr().expect("addr"));
        let t = thread::spawn(move || {
            let mut request = String::new();
            for _ in 0..answers {
                let Ok((mut s, _)) = listener.accept() else {
                    break;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                request = String::from_utf8_lossy(&buf).into_owned();
                match response {
                    Some(r) => {
                        let _ = s.write_all(r.as_bytes());
                    }
                    None => thread::sleep(Duration::from_millis(500)),
                }
            }
            request
        });
        (addr, t)
    }

    #[test]
    fn http_probe_ok() {
        let (addr, server) = http_server(Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 1);
        assert!(probe(&check(HealthKind::Http), addr).is_ok());
        let request = server.join().expect("server");
        let expected = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n";
        assert_eq!(request, expected);
    }

    #[test]
    fn http_probe_wrong_status() {
        let (addr, server) = http_server(Some("HTTP/1.0 503 Service Unavailable\r\n\r\n"), 1);
        let err = probe(&check(HealthKind::Http), addr).expect_err("503");
        assert!(err.contains("503") && err.contains("200"), "{err}");
        server.join().expect("server");
        // And 503 is fine when expected.
        let (addr, server) = http_server(Some("HTTP/1.0 503 Service Unavailable\r\n\r\n"), 1);
        let mut c = check(HealthKind::Http);
        c.expect_status = 503;
        assert!(probe(&c, addr).is_ok());
        server.join().expect("server");
    }

    #[test]
    fn http_probe_garbage_and_silence() {
        let (addr, server) = http_server(Some("garbage\r\nmore"), 1);
        let err = probe(&check(HealthKind::Http), addr).expect_err("garbage");
        assert!(
            err.contains("not an HTTP response") && err.contains("garbage"),
            "{err}"
        );
        server.join().expect("server");

        let (addr, server) = http_server(Some(""), 1);
        let err = probe(&check(HealthKind::Http), addr).expect_err("empty");
        assert!(err.contains("closed"), "{err}");
        server.join().expect("server");

        let (addr, server) = http_server(None, 1);
        let mut c = check(HealthKind::Http);
        c.timeout_s = 0.2;
        let started = Instant::now();
        let err = probe(&c, addr).expect_err("silent");
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        server.join().expect("server");
    }

    /// A UDP server answering `answers` datagrams with `reply` (an echo
    /// when `None`).
    fn udp_server(reply: Option<&'static str>, answers: usize) -> (SocketAddrV4, JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
        let addr = v4(socket.local_addr().expect("addr"));
        let t = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for _ in 0..answers {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    break;
                };
                let out = reply.map(str::as_bytes).unwrap_or(&buf[..n]);
                let _ = socket.send_to(out, from);
            }
        });
        (addr, t)
    }

    #[test]
    fn udp_probe_replies() {
        let mut c = check(HealthKind::Udp);
        c.send = Some("ping".to_string());
        // Any reply.
        let (addr, server) = udp_server(None, 1);
        assert!(probe(&c, addr).is_ok());
        server.join().expect("server");
        // Expected reply, trailing CRLF ignored.
        c.expect = Some("pong".to_string());
        let (addr, server) = udp_server(Some("pong\r\n"), 1);
        assert!(probe(&c, addr).is_ok());
        server.join().expect("server");
        // Unexpected reply.
        let (addr, server) = udp_server(Some("nope"), 1);
        let err = probe(&c, addr).expect_err("unexpected");
        assert!(
            err.contains("unexpected reply") && err.contains("nope"),
            "{err}"
        );
        server.join().expect("server");
    }

    #[test]
    fn udp_probe_no_reply_times_out() {
        let mut c = check(HealthKind::Udp);
        c.send = Some("ping".to_string());
        c.timeout_s = 0.2;
        // A socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = v4(silent.local_addr().expect("addr"));
        let started = Instant::now();
        let err = probe(&c, addr).expect_err("silent");
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // A closed port: refused (ICMP) or timed out, never OK.
        drop(silent);
        assert!(probe(&c, addr).is_err());
    }

    #[test]
    fn probe_survives_odd_settings() {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
        for t in [f64::NAN, -1.0, 0.0, f64::INFINITY, 1e300] {
            let mut c = check(HealthKind::Udp);
            c.timeout_s = t.min(0.2);
            let _ = probe(&c, addr);
            assert!(
                seconds(t, Duration::from_millis(1), Duration::from_secs(5))
                    <= Duration::from_secs(5)
            );
        }
    }

    /// A TCP listener accepting (and closing) connections until stopped.
    struct Server {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(addr: &str) -> (Server, SocketAddrV4) {
            let listener = TcpListener::bind(addr).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let local = v4(listener.local_addr().expect("addr"));
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = stop.clone();
            let thread = thread::spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => drop(s),
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            (
                Server {
                    stop,
                    thread: Some(thread),
                },
                local,
            )
        }

        fn close(mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().expect("server thread");
            }
        }
    }

    fn wait_for(
        checker: &HealthChecker,
        key: &str,
        what: impl Fn(&HealthView) -> bool,
    ) -> HealthView {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = checker.snapshot().get(key) {
                if what(v) {
                    return v.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {:?}",
                checker.snapshot().get(key)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn checker_detects_down_and_up() {
        let (server, addr) = Server::start("127.0.0.1:0");
        let mut c = check(HealthKind::Tcp);
        c.timeout_s = 0.2;
        c.rise = 2;
        c.fall = 2;
        let key = "vip backend".to_string();
        let none_key = "vip none".to_string();
        let checker = HealthChecker::new();
        checker.set_targets(vec![
            Target {
                key: key.clone(),
                addr,
                check: c.clone(),
            },
            Target {
                key: none_key.clone(),
                addr,
                check: check(HealthKind::None),
            },
        ]);
        let v = wait_for(&checker, &key, |v| v.checks >= 2);
        assert!(v.up && v.rtt_ms.is_some() && v.failures == 0, "{v:?}");

        server.close();
        let v = wait_for(&checker, &key, |v| !v.up);
        assert!(v.failures >= 2 && v.last_error.is_some(), "{v:?}");

        let (server, _) = Server::start(&addr.to_string());
        let v = wait_for(&checker, &key, |v| v.up);
        assert_eq!(v.last_error, None);

        // Kind none: always up, never checked.
        let none = checker
            .snapshot()
            .get(&none_key)
            .cloned()
            .expect("none target");
        assert!(none.up);
        assert_eq!(none.checks, 0);

        // Same settings: state kept. Removed: gone.
        let before = checker.snapshot().get(&key).map(|v| v.checks).unwrap_or(0);
        checker.set_targets(vec![Target {
            key: key.clone(),
            addr,
            check: c.clone(),
        }]);
        let snap = checker.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap.get(&key).map(|v| v.checks).unwrap_or(0) >= before);

        // Changed settings: a fresh state, checked at once.
        c.interval_s = 30.0;
        checker.set_targets(vec![Target {
            key: key.clone(),
            addr,
            check: c,
        }]);
        let v = wait_for(&checker, &key, |v| v.checks >= 1);
        thread::sleep(Duration::from_millis(200));
        let v2 = checker.snapshot().get(&key).cloned().expect("target");
        assert_eq!((v.checks, v2.checks), (1, 1));

        let started = Instant::now();
        checker.stop();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(checker.snapshot().is_empty());
        server.close();
    }
}
