//! Backend agents (`sluicectl agent`) and the controller's receiver of
//! their load reports (seed 002).
//!
//! An agent samples its host's load ([`Sampler`]: CPU idle, memory, swap,
//! TCP connections, an optional operator command) every interval and sends
//! a [`Report`] to the controller in one UDP datagram:
//!
//! ```text
//! {"report": "<the Report as a JSON string>", "hmac": "<hex HMAC-SHA256(key, report string)>"}
//! ```
//!
//! The key is shared by the agents and the controller ([`load_key`]). The
//! controller's [`Receiver`] authenticates every datagram before parsing the
//! report inside, refuses stale reports (and reports from the future), and
//! replays (a sequence number not above the last accepted one of that
//! agent). An agent's sequence numbers start at the unix time in ms when it
//! starts, so a restarted agent keeps being accepted.

use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// Version of the report format.
pub const REPORT_VERSION: u32 = 1;
/// Largest datagram accepted (and sent).
pub const MAX_DATAGRAM: usize = 8 * 1024;
/// Shortest key accepted by [`load_key`], in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Longest agent name [`run_agent`] accepts, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// How long the operator's command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two log lines about the same source.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest a thread waits before looking at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The load of one backend host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Fraction of CPU time idle (idle + iowait) since the previous sample,
    /// 0 to 1.
    pub cpu_idle: f64,
    /// Memory available to new work (`MemAvailable`), bytes.
    pub mem_free_bytes: u64,
    /// Total memory, bytes.
    pub mem_total_bytes: u64,
    /// Free swap, bytes.
    pub swap_free_bytes: u64,
    /// Total swap, bytes.
    pub swap_total_bytes: u64,
    /// Open TCP connections: every state but LISTEN, IPv4 and IPv6.
    pub tcp_connections: u64,
    /// ESTABLISHED connections whose local port is the service port, when
    /// one is configured.
    pub service_connections: Option<u64>,
    /// First number printed by the operator's command, when one is
    /// configured and it printed one.
    pub custom: Option<f64>,
}

/// One load report of an agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    /// Format version ([`REPORT_VERSION`]).
    pub v: u32,
    /// The agent's name (as in the backends' `agent` key).
    pub agent: String,
    /// Sequence number, increasing by 1 per report; starts at the unix time
    /// in ms when the agent started.
    pub seq: u64,
    /// When the report was sent, unix time in ms.
    pub sent_ms: u64,
    /// The agent's reporting interval, seconds.
    pub interval_s: f64,
    /// The measurements.
    pub metrics: Metrics,
}

/// The datagram: the report as a string and its MAC.
#[derive(Serialize, Deserialize)]
struct Envelope {
    report: String,
    hmac: String,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// Not a well-formed report (too big, not JSON, wrong version...).
    #[error("malformed report: {0}")]
    Malformed(String),
    /// The MAC does not match (wrong key or tampered report).
    #[error("authentication failed (wrong key or altered report)")]
    Unauthenticated,
    /// Sent too long ago (`age_s` > 0) or too far in the future (`age_s` < 0).
    #[error(
        "stale report (sent {:.1} s {})",
        .age_s.abs(),
        if *.age_s < 0.0 { "in the future" } else { "ago" }
    )]
    Stale {
        /// Receive time minus send time, seconds.
        age_s: f64,
    },
    /// Sequence number not above the last accepted one of that agent.
    #[error("replayed report (sequence number not increasing)")]
    Replayed,
}

/// Unix time in ms (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn mac(key: &[u8]) -> Option<HmacSha256> {
    <HmacSha256 as Mac>::new_from_slice(key).ok()
}

/// The datagram carrying `report`, authenticated with `key`.
///
/// Non-finite numbers (which JSON cannot carry) are sent as 0
/// (`cpu_idle`, `interval_s`) or absent (`custom`); `cpu_idle` is clamped
/// to 0..1.
pub fn seal(report: &Report, key: &[u8]) -> Vec<u8> {
    let mut r = report.clone();
    r.interval_s = finite_or_zero(r.interval_s);
    r.metrics.cpu_idle = finite_or_zero(r.metrics.cpu_idle).clamp(0.0, 1.0);
    r.metrics.custom = r.metrics.custom.filter(|c| c.is_finite());
    let inner = serde_json::to_string(&r).unwrap_or_default();
    let tag = match mac(key) {
        Some(mut m) => {
            m.update(inner.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        None => String::new(),
    };
    serde_json::to_vec(&Envelope {
        report: inner,
        hmac: tag,
    })
    .unwrap_or_default()
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Authenticates `datagram` with `key` and returns the report inside.
/// The MAC is checked (in constant time) before the report is parsed.
/// Does not judge age or sequence: that is [`Receiver::accept`]'s job.
pub fn open(datagram: &[u8], key: &[u8]) -> Result<Report, Reject> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Reject::Malformed(format!(
            "{} bytes, more than {MAX_DATAGRAM}",
            datagram.len()
        )));
    }
    let env: Envelope =
        serde_json::from_slice(datagram).map_err(|e| Reject::Malformed(e.to_string()))?;
    let tag =
        hex::decode(&env.hmac).map_err(|_| Reject::Malformed("hmac is not hex".to_string()))?;
    let mut m = mac(key).ok_or(Reject::Unauthenticated)?;
    m.update(env.report.as_bytes());
    m.verify_slice(&tag).map_err(|_| Reject::Unauthenticated)?;
    let report: Report =
        serde_json::from_str(&env.report).map_err(|e| Reject::Malformed(e.to_string()))?;
    if report.v != REPORT_VERSION {
        return Err(Reject::Malformed(format!(
            "report version {} (expected {REPORT_VERSION})",
            report.v
        )));
    }
    Ok(report)
}

/// Reads the shared agent key from `path`: the file's content without
/// surrounding whitespace, at least [`MIN_KEY_LEN`] bytes. Warns on stderr
/// when the file is readable by its group or others.
pub fn load_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path)
        .with_context(|| format!("cannot read the agent key file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                eprintln!(
                    "sluicectl: warning: the agent key file {} is accessible to group or others \
                     (mode {:03o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
    let key = raw.trim_ascii();
    if key.is_empty() {
        bail!(
            "the agent key file {} is empty; put a random key of at least {MIN_KEY_LEN} bytes in it \
             (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)",
            path.display()
        );
    }
    if key.len() < MIN_KEY_LEN {
        bail!(
            "the agent key in {} is {} bytes long, shorter than {MIN_KEY_LEN}; use a longer random key \
             (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)",
            path.display(),
            key.len()
        );
    }
    Ok(key.to_vec())
}

/// What a [`Receiver`] did with the datagrams it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReceiverCounts {
    /// Reports accepted.
    pub accepted: u64,
    /// Datagrams refused as [`Reject::Malformed`].
    pub malformed: u64,
    /// Datagrams refused as [`Reject::Unauthenticated`].
    pub unauthenticated: u64,
    /// Reports refused as [`Reject::Stale`].
    pub stale: u64,
    /// Reports refused as [`Reject::Replayed`].
    pub replayed: u64,
}

/// The latest datagram a [`Receiver`] refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// Where it came from, when known (`ADDR:PORT`).
    pub from: Option<String>,
    /// Why it was refused (the [`Reject`] as text).
    pub reason: String,
    /// When, unix ms.
    pub unix_ms: u64,
}

/// The controller's side: judges datagrams and keeps the latest report of
/// each agent. Pure (no sockets, time passed in); [`listen`] feeds it.
#[derive(Debug, Clone)]
pub struct Receiver {
    key: Vec<u8>,
    stale_after_ms: u64,
    latest: BTreeMap<String, Report>,
    counts: ReceiverCounts,
    last_refused: Option<Refusal>,
}

impl Receiver {
    /// A receiver for `key`, refusing reports older than `stale_after_s`
    /// (the controller passes 3 agent intervals) or sent more than that in
    /// the future.
    pub fn new(key: Vec<u8>, stale_after_s: f64) -> Self {
        // `as` saturates (and maps NaN to 0).
        let stale_after_ms = (stale_after_s * 1000.0).max(0.0) as u64;
        Receiver {
            key,
            stale_after_ms,
            latest: BTreeMap::new(),
            counts: ReceiverCounts::default(),
            last_refused: None,
        }
    }

    /// Judges one datagram received at `now_ms` (unix ms); on success it
    /// becomes the latest report of its agent.
    pub fn accept(&mut self, datagram: &[u8], now_ms: u64) -> Result<&Report, Reject> {
        self.accept_from(datagram, None, now_ms)
    }

    /// [`Receiver::accept`] for a datagram from `from` (remembered with a
    /// refusal, see [`Receiver::last_refused`]).
    pub fn accept_from(
        &mut self,
        datagram: &[u8],
        from: Option<SocketAddr>,
        now_ms: u64,
    ) -> Result<&Report, Reject> {
        match self.judge(datagram, now_ms) {
            Ok(report) => {
                self.counts.accepted += 1;
                let slot = match self.latest.entry(report.agent.clone()) {
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        o.insert(report);
                        o.into_mut()
                    }
                    std::collections::btree_map::Entry::Vacant(v) => v.insert(report),
                };
                Ok(slot)
            }
            Err(reject) => {
                let c = &mut self.counts;
                match reject {
                    Reject::Malformed(_) => c.malformed += 1,
                    Reject::Unauthenticated => c.unauthenticated += 1,
                    Reject::Stale { .. } => c.stale += 1,
                    Reject::Replayed => c.replayed += 1,
                }
                self.last_refused = Some(Refusal {
                    from: from.map(|a| a.to_string()),
                    reason: reject.to_string(),
                    unix_ms: now_ms,
                });
                Err(reject)
            }
        }
    }

    fn judge(&self, datagram: &[u8], now_ms: u64) -> Result<Report, Reject> {
        let report = open(datagram, &self.key)?;
        if let Some(age_s) = self.stale_age(&report, now_ms) {
            return Err(Reject::Stale { age_s });
        }
        if let Some(prev) = self.latest.get(&report.agent) {
            if report.seq <= prev.seq {
                return Err(Reject::Replayed);
            }
        }
        Ok(report)
    }

    /// The age in seconds of `report` at `now_ms` if it is stale (negative:
    /// from the future).
    fn stale_age(&self, report: &Report, now_ms: u64) -> Option<f64> {
        if now_ms >= report.sent_ms {
            let age = now_ms - report.sent_ms;
            (age > self.stale_after_ms).then(|| age as f64 / 1000.0)
        } else {
            let ahead = report.sent_ms - now_ms;
            (ahead > self.stale_after_ms).then(|| -(ahead as f64) / 1000.0)
        }
    }

    /// The latest report of `agent`, unless it is stale at `now_ms`.
    pub fn latest(&self, agent: &str, now_ms: u64) -> Option<&Report> {
        self.latest
            .get(agent)
            .filter(|r| self.stale_age(r, now_ms).is_none())
    }

    /// The latest report of every agent heard of, stale or not, by name.
    pub fn agents(&self) -> impl Iterator<Item = &Report> + '_ {
        self.latest.values()
    }

    /// What was done with the datagrams so far.
    pub fn counts(&self) -> ReceiverCounts {
        self.counts
    }

    /// The latest datagram refused, if any.
    pub fn last_refused(&self) -> Option<&Refusal> {
        self.last_refused.as_ref()
    }
}

/// Feeds the datagrams arriving on `socket` to `shared` in a new thread,
/// until `stop` is set (looked at every 100 ms).
///
/// The caller binds the socket (e.g. `UdpSocket::bind(addr)`), so that it
/// can learn the port (`local_addr`) when it bound port 0. Refused reports
/// are logged to stderr, at most once per source address per 10 s.
pub fn listen(
    socket: UdpSocket,
    shared: Arc<Mutex<Receiver>>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    socket.set_read_timeout(Some(STOP_POLL))?;
    thread::Builder::new()
        .name("sluice-agents".to_string())
        .spawn(move || receive_loop(&socket, &shared, &stop))
}

fn receive_loop(socket: &UdpSocket, shared: &Mutex<Receiver>, stop: &AtomicBool) {
    // One byte more than the limit, so that oversized datagrams are seen.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut limiter = LogLimiter::default();
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                if limiter.allow(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Instant::now()) {
                    eprintln!("sluicectl: agents: receive error: {e}");
                }
                thread::sleep(STOP_POLL);
                continue;
            }
        };
        let datagram = buf.get(..n).unwrap_or_default();
        let result = {
            let mut r = shared.lock().unwrap_or_else(|p| p.into_inner());
            r.accept_from(datagram, Some(from), unix_ms()).map(|_| ())
        };
        if let Err(reject) = result {
            if limiter.allow(from.ip(), Instant::now()) {
                eprintln!("sluicectl: agents: refused a report from {from}: {reject}");
            }
        }
    }
}

/// At most one log line per key per [`LOG_EVERY`].
#[derive(Default)]
struct LogLimiter {
    last: HashMap<IpAddr, Instant>,
}

impl LogLimiter {
    fn allow(&mut self, key: IpAddr, now: Instant) -> bool {
        if self.last.len() > 4096 {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < LOG_EVERY);
        }
        match self.last.get(&key) {
            Some(t) if now.saturating_duration_since(*t) < LOG_EVERY => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Metrics collection from /proc.

/// Cumulative CPU times from the first `cpu` line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// idle + iowait.
    pub idle: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal.
    pub total: u64,
}

/// The aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
    let total = fields.iter().fold(0u64, |a, &f| a.saturating_add(f));
    Some(CpuTimes { idle, total })
}

/// Fraction of CPU time idle between `prev` (since boot when `None`) and
/// `cur`; `None` when no time passed.
pub fn cpu_idle_between(prev: Option<CpuTimes>, cur: CpuTimes) -> Option<f64> {
    let prev = prev.unwrap_or(CpuTimes { idle: 0, total: 0 });
    let total = cur.total.saturating_sub(prev.total);
    if total == 0 {
        return None;
    }
    let idle = cur.idle.saturating_sub(prev.idle);
    Some((idle as f64 / total as f64).clamp(0.0, 1.0))
}

/// Memory figures of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub mem_total: u64,
    /// `MemAvailable` (`MemFree` on kernels without it).
    pub mem_available: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
}

/// Parses `/proc/meminfo` (values in kB); `None` without `MemTotal`.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut total = None;
    let mut available = None;
    let mut free = None;
    let mut info = MemInfo::default();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(value)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        };
        match name.trim() {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free = Some(bytes),
            "SwapTotal" => info.swap_total = bytes,
            "SwapFree" => info.swap_free = bytes,
            _ => {}
        }
    }
    info.mem_total = total?;
    info.mem_available = available.or(free).unwrap_or(0);
    Some(info)
}

/// Connection counts of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Sockets in any state but LISTEN.
    pub connections: u64,
    /// ESTABLISHED sockets whose local port is the service port.
    pub service: u64,
}

impl std::ops::Add for TcpCounts {
    type Output = TcpCounts;
    fn add(self, o: TcpCounts) -> TcpCounts {
        TcpCounts {
            connections: self.connections.saturating_add(o.connections),
            service: self.service.saturating_add(o.service),
        }
    }
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

/// Counts the sockets of a `/proc/net/tcp` or `/proc/net/tcp6` text; the
/// header and lines that do not parse are skipped.
pub fn parse_tcp(text: &str, service_port: Option<u16>) -> TcpCounts {
    let mut counts = TcpCounts::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let Ok(state) = u8::from_str_radix(state, 16) else {
            continue;
        };
        if state == TCP_LISTEN {
            continue;
        }
        counts.connections += 1;
        if state == TCP_ESTABLISHED && service_port == Some(port) {
            counts.service += 1;
        }
    }
    counts
}

/// The first whitespace-separated token of a command's output as a finite
/// number.
pub fn parse_custom(output: &str) -> Result<f64, String> {
    let Some(token) = output.split_whitespace().next() else {
        return Err("the command printed nothing".to_string());
    };
    match token.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!(
            "the command printed \"{}\", not a number",
            token.chars().take(40).collect::<String>().escape_debug()
        )),
    }
}

/// Runs `command` with `sh -c` (stdin empty, stderr inherited), killing it
/// (and its process group) after `timeout`; returns the first number it
/// printed.
pub fn run_command(command: &str, timeout: Duration) -> Result<f64, String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `sh -c {command}`: {e}"))?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        // Reads in its own thread so that a full pipe cannot block the
        // command; left behind if a grandchild keeps the pipe open.
        let _ = thread::Builder::new()
            .name("sluice-agent-cmd".to_string())
            .spawn(move || {
                let mut out = Vec::new();
                let _ = stdout.take(64 * 1024).read_to_end(&mut out);
                let _ = tx.send(out);
            });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the command did not finish within {:.1} s and was killed",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for the command: {e}"));
            }
        }
    };
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let out = rx.recv_timeout(wait).map_err(|_| {
        "the command's output did not end (a background process keeps it open?)".to_string()
    })?;
    if !status.success() {
        return Err(format!("the command failed ({status})"));
    }
    parse_custom(&String::from_utf8_lossy(&out))
}

/// Kills the process group `pgid` (the command and what it started).
fn kill_group(pgid: u32) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    #[cfg(not(unix))]
    let _ = pgid;
}

/// Samples this host's load from `/proc` (of the current network namespace
/// for the TCP figures) and the operator's command.
#[derive(Debug)]
pub struct Sampler {
    service_port: Option<u16>,
    command: Option<String>,
    prev_cpu: Option<CpuTimes>,
    last_idle: f64,
    /// Last warning and when it was printed (to print each problem rarely).
    last_warning: Option<(String, Instant)>,
}

impl Sampler {
    /// A sampler counting the connections of `service_port` (when given)
    /// and running `command` (when given) at each sample.
    pub fn new(service_port: Option<u16>, command: Option<String>) -> Self {
        Sampler {
            service_port,
            command,
            prev_cpu: None,
            last_idle: 1.0,
            last_warning: None,
        }
    }

    /// Reads the CPU counters only, so that the next [`Sampler::sample`]
    /// measures the CPU since now rather than since boot.
    pub fn prime(&mut self) {
        if let Some(cur) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_cpu)
        {
            self.prev_cpu = Some(cur);
        }
    }

    /// Measures the load: CPU idle since the previous call (since boot on
    /// the first), memory, TCP connections and the command's number.
    /// Figures that cannot be read are 0 (with a warning on stderr).
    pub fn sample(&mut self) -> Metrics {
        let mut problems = Vec::new();

        match std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_cpu)
        {
            Some(cur) => {
                if let Some(idle) = cpu_idle_between(self.prev_cpu, cur) {
                    self.last_idle = idle;
                }
                self.prev_cpu = Some(cur);
            }
            None => problems.push("cannot read /proc/stat".to_string()),
        }

        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(parse_meminfo)
            .unwrap_or_else(|| {
                problems.push("cannot read /proc/meminfo".to_string());
                MemInfo::default()
            });

        let mut tcp = TcpCounts::default();
        for (i, file) in ["/proc/net/tcp", "/proc/net/tcp6"].into_iter().enumerate() {
            match std::fs::read_to_string(file) {
                Ok(text) => tcp = tcp + parse_tcp(&text, self.service_port),
                // Without IPv6 there is no tcp6.
                Err(_) if i == 1 => {}
                Err(e) => problems.push(format!("cannot read {file}: {e}")),
            }
        }

        let custom = match &self.command {
            None => None,
            Some(cmd) => match run_command(cmd, COMMAND_TIMEOUT) {
                Ok(x) => Some(x),
                Err(e) => {
                    problems.push(format!("custom metric: {e}"));
                    None
                }
            },
        };

        if !problems.is_empty() {
            self.warn(problems.join("; "));
        }

        Metrics {
            cpu_idle: self.last_idle,
            mem_free_bytes: mem.mem_available,
            mem_total_bytes: mem.mem_total,
            swap_free_bytes: mem.swap_free,
            swap_total_bytes: mem.swap_total,
            tcp_connections: tcp.connections,
            service_connections: self.service_port.map(|_| tcp.service),
            custom,
        }
    }

    /// Prints `msg` unless the same one was printed less than a minute ago.
    fn warn(&mut self, msg: String) {
        let now = Instant::now();
        let repeat = self.last_warning.as_ref().is_some_and(|(m, t)| {
            *m == msg && now.saturating_duration_since(*t) < Duration::from_secs(60)
        });
        if !repeat {
            eprintln!("sluicectl: agent: warning: {msg}");
            self.last_warning = Some((msg, now));
        }
    }
}

/// Settings of [`run_agent`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The agent's name, as in the backends' `agent` key.
    pub name: String,
    /// Where the controller listens for reports.
    pub controller: SocketAddrV4,
    /// The shared key ([`load_key`]).
    pub key: Vec<u8>,
    /// Seconds between two reports.
    pub interval_s: f64,
    /// Port of the service whose ESTABLISHED connections are counted.
    pub service_port: Option<u16>,
    /// Command whose first printed number is reported as `custom`.
    pub command: Option<String>,
    /// Stop after this many reports (tests); forever when `None`.
    pub count: Option<u64>,
}

/// Runs an agent until `stop` is set (looked at every 100 ms) or `count`
/// reports were sent: every `interval_s` it samples the load, seals a report
/// and sends it to the controller. The first report goes out one interval
/// after the start, so that its CPU figure covers that interval. Send errors
/// are logged (rarely) and do not stop the agent.
pub fn run_agent(opts: AgentOptions, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    if opts.name.trim().is_empty() {
        bail!("the agent name is empty");
    }
    if opts.name.len() > MAX_NAME_LEN {
        bail!("the agent name is longer than {MAX_NAME_LEN} bytes");
    }
    if opts.key.is_empty() {
        bail!("the agent key is empty");
    }
    if !(opts.interval_s.is_finite() && opts.interval_s > 0.0) {
        bail!(
            "the agent interval must be a positive number of seconds, not {}",
            opts.interval_s
        );
    }
    let interval = Duration::try_from_secs_f64(opts.interval_s)
        .unwrap_or(Duration::from_secs(86_400))
        .clamp(Duration::from_millis(1), Duration::from_secs(86_400));
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .context("cannot open a UDP socket for the reports")?;
    let mut sampler = Sampler::new(opts.service_port, opts.command.clone());
    sampler.prime();
    let mut seq = unix_ms();
    let mut sent: u64 = 0;
    let mut limiter = LogLimiter::default();
    let mut next = Instant::now() + interval;
    loop {
        // Wait for the next tick.
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(STOP_POLL));
        }
        next += interval;
        // After a long pause (suspend), do not send a burst.
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }

        let metrics = sampler.sample();
        let report = Report {
            v: REPORT_VERSION,
            agent: opts.name.clone(),
            seq,
            sent_ms: unix_ms(),
            interval_s: opts.interval_s,
            metrics,
        };
        let datagram = seal(&report, &opts.key);
        if let Err(e) = socket.send_to(&datagram, SocketAddr::V4(opts.controller)) {
            if limiter.allow(IpAddr::V4(*opts.controller.ip()), Instant::now()) {
                eprintln!("sluicectl: agent: cannot send to {}: {e}", opts.controller);
            }
        }
        seq = seq.saturating_add(1);
        sent += 1;
        if opts.count.is_some_and(|n| sent >= n) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"0123456789abcdef-test-key";
    const NOW: u64 = 1_700_000_000_000;

    fn metrics() -> Metrics {
        Metrics {
            cpu_idle: 0.75,
            mem_free_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            swap_free_bytes: 0,
            swap_total_bytes: 0,
            tcp_connections: 12,
            service_connections: Some(3),
            custom: Some(1.5),
        }
    }

    fn report(agent: &str, seq: u64, sent_ms: u64) -> Report {
        Report {
            v: REPORT_VERSION,
            agent: agent.to_string(),
            seq,
            sent_ms,
            interval_s: 2.0,
            metrics: metrics(),
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let r = report("web1", 7, NOW);
        let d = seal(&r, KEY);
        assert!(d.len() < MAX_DATAGRAM);
        assert_eq!(open(&d, KEY), Ok(r.clone()));
        // The wire format: report string and lowercase hex MAC.
        let v: serde_json::Value = serde_json::from_slice(&d).expect("json");
        let inner = v["report"].as_str().expect("report string");
        let parsed: Report = serde_json::from_str(inner).expect("inner");
        assert_eq!(parsed, r);
        let tag = v["hmac"].as_str().expect("hmac");
        assert_eq!(tag.len(), 64);
        assert!(tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }

    #[test]
    fn seal_sanitizes_non_finite_numbers() {
        let mut r = report("web1", 1, NOW);
        r.metrics.cpu_idle = f64::NAN;
        r.metrics.custom = Some(f64::INFINITY);
        r.interval_s = f64::NEG_INFINITY;
        let got = open(&seal(&r, KEY), KEY).expect("open");
        assert_eq!(got.metrics.cpu_idle, 0.0);
        assert_eq!(got.metrics.custom, None);
        assert_eq!(got.interval_s, 0.0);
    }

    #[test]
    fn open_refuses_tampering_and_wrong_key() {
        let r = report("web1", 7, NOW);
        let d = seal(&r, KEY);
        assert_eq!(
            open(&d, b"another key of 16+ bytes"),
            Err(Reject::Unauthenticated)
        );

        // Tampered report: the MAC no longer matches.
        let text = String::from_utf8(d.clone()).expect("utf8");
        let tampered = text.replace("web1", "web2");
        assert_ne!(tampered, text);
        assert_eq!(open(tampered.as_bytes(), KEY), Err(Reject::Unauthenticated));

        // Tampered MAC.
        let v: serde_json::Value = serde_json::from_slice(&d).expect("json");
        let tag = v["hmac"].as_str().expect("hmac");
        let flipped = format!(
            "{}{}",
            if tag.starts_with('0') { "1" } else { "0" },
            &tag[1..]
        );
        let forged = serde_json::json!({"report": v["report"], "hmac": flipped}).to_string();
        assert_eq!(open(forged.as_bytes(), KEY), Err(Reject::Unauthenticated));
        let short = serde_json::json!({"report": v["report"], "hmac": &tag[..32]}).to_string();
        assert_eq!(open(short.as_bytes(), KEY), Err(Reject::Unauthenticated));
    }

    #[test]
    fn open_refuses_malformed() {
        let d = seal(&report("web1", 7, NOW), KEY);
        for bad in [
            &d[..d.len() / 2],
            b"".as_slice(),
            b"garbage".as_slice(),
            b"{\"report\": 1, \"hmac\": \"00\"}".as_slice(),
            b"{\"report\": \"x\", \"hmac\": \"not hex\"}".as_slice(),
        ] {
            assert!(
                matches!(open(bad, KEY), Err(Reject::Malformed(_))),
                "{bad:?}"
            );
        }
        // Oversized, even with a valid MAC.
        let mut r = report("web1", 7, NOW);
        r.agent = "x".repeat(MAX_DATAGRAM);
        let big = seal(&r, KEY);
        assert!(matches!(open(&big, KEY), Err(Reject::Malformed(m)) if m.contains("bytes")));
        // Authenticated, but not a report, or another version.
        let sign = |inner: &str| {
            let mut m = mac(KEY).expect("mac");
            m.update(inner.as_bytes());
            serde_json::json!({"report": inner, "hmac": hex::encode(m.finalize().into_bytes())})
                .to_string()
        };
        assert!(matches!(
            open(sign("{}").as_bytes(), KEY),
            Err(Reject::Malformed(_))
        ));
        let mut v2 = serde_json::to_value(report("web1", 7, NOW)).expect("value");
        v2["v"] = 2.into();
        let err = open(sign(&v2.to_string()).as_bytes(), KEY).expect_err("v2");
        assert!(matches!(err, Reject::Malformed(m) if m.contains("version")));
    }

    #[test]
    fn receiver_accepts_and_refuses_replays() {
        let mut rx = Receiver::new(KEY.to_vec(), 6.0);
        let d1 = seal(&report("web1", 10, NOW), KEY);
        assert_eq!(rx.accept(&d1, NOW + 100).map(|r| r.seq), Ok(10));
        assert_eq!(rx.accept(&d1, NOW + 200), Err(Reject::Replayed));
        let older = seal(&report("web1", 9, NOW + 150), KEY);
        assert_eq!(rx.accept(&older, NOW + 200), Err(Reject::Replayed));
        // Sequence numbers are per agent.
        let other = seal(&report("web2", 1, NOW), KEY);
        assert!(rx.accept(&other, NOW + 200).is_ok());
        let d2 = seal(&report("web1", 11, NOW + 2000), KEY);
        assert!(rx.accept(&d2, NOW + 2000).is_ok());
        assert_eq!(rx.latest("web1", NOW + 2000).map(|r| r.seq), Some(11));
        let names: Vec<&str> = rx.agents().map(|r| r.agent.as_str()).collect();
        assert_eq!(names, ["web1", "web2"]);
        assert_eq!(
            rx.counts(),
            ReceiverCounts {
                accepted: 3,
                replayed: 2,
                ..ReceiverCounts::default()
            }
        );
    }

    #[test]
    fn receiver_refuses_stale_and_future_reports() {
        let mut rx = Receiver::new(KEY.to_vec(), 6.0);
        let d = seal(&report("web1", 1, NOW), KEY);
        assert_eq!(rx.accept(&d, NOW + 7000), Err(Reject::Stale { age_s: 7.0 }));
        assert_eq!(
            rx.accept(&d, NOW - 7000),
            Err(Reject::Stale { age_s: -7.0 })
        );
        // Within the window on either side.
        assert!(rx.accept(&d, NOW - 6000).is_ok());
        let d = seal(&report("web1", 2, NOW), KEY);
        assert!(rx.accept(&d, NOW + 6000).is_ok());
        // Bad datagrams are counted and change nothing.
        let _ = rx.accept(b"junk", NOW);
        let _ = rx.accept(&seal(&report("web1", 3, NOW), b"wrong key, 16 bytes+"), NOW);
        assert_eq!(
            rx.counts(),
            ReceiverCounts {
                accepted: 2,
                malformed: 1,
                unauthenticated: 1,
                stale: 2,
                replayed: 0,
            }
        );
        assert_eq!(rx.latest("web1", NOW).map(|r| r.seq), Some(2));
        // The latest refusal is remembered, with its source when known.
        let refused = rx.last_refused().cloned().expect("a refusal");
        assert_eq!(refused.from, None);
        assert_eq!(refused.unix_ms, NOW);
        assert!(refused.reason.contains("authentication"), "{refused:?}");
        let from: SocketAddr = "127.0.0.1:4242".parse().expect("addr");
        let _ = rx.accept_from(b"junk", Some(from), NOW + 1);
        let refused = rx.last_refused().cloned().expect("a refusal");
        assert_eq!(refused.from.as_deref(), Some("127.0.0.1:4242"));
        assert!(refused.reason.starts_with("malformed"), "{refused:?}");
        // An accepted report does not clear it.
        let _ = rx.accept(&seal(&report("web1", 5, NOW), KEY), NOW + 2);
        assert_eq!(rx.last_refused(), Some(&refused));
    }

    #[test]
    fn latest_hides_stale_reports() {
        let mut rx = Receiver::new(KEY.to_vec(), 6.0);
        assert!(rx.accept(&seal(&report("web1", 1, NOW), KEY), NOW).is_ok());
        assert!(rx.latest("web1", NOW + 6000).is_some());
        assert!(rx.latest("web1", NOW + 6001).is_none());
        assert!(rx.latest("web2", NOW).is_none());
        // Still listed.
        assert_eq!(rx.agents().count(), 1);
    }

    #[test]
    fn receiver_survives_odd_windows() {
        for s in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
            let mut rx = Receiver::new(KEY.to_vec(), s);
            let _ = rx.accept(&seal(&report("a", 1, NOW), KEY), 0);
            let _ = rx.accept(&seal(&report("a", 2, 0), KEY), u64::MAX);
            let _ = rx.latest("a", u64::MAX);
        }
    }

    #[test]
    fn load_key_checks_length() {
        let dir = std::env::temp_dir().join(format!("sluice-agent-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("key");
        std::fs::write(&path, "  0123456789abcdef0123\n").expect("write");
        assert_eq!(load_key(&path).expect("key"), b"0123456789abcdef0123");
        std::fs::write(&path, " \n").expect("write");
        let err = load_key(&path).expect_err("empty").to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::write(&path, "short\n").expect("write");
        let err = load_key(&path).expect_err("short").to_string();
        assert!(err.contains("shorter than 16"), "{err}");
        assert!(load_key(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    const STAT: &str = "cpu  10 2 3 80 5 0 0 0 7 0\ncpu0 5 1 1 40 2 0 0 0 0 0\nintr 1 2 3\n";

    #[test]
    fn cpu_parser() {
        let t = parse_cpu(STAT).expect("cpu");
        assert_eq!(
            t,
            CpuTimes {
                idle: 85,
                total: 100
            }
        );
        assert_eq!(cpu_idle_between(None, t), Some(0.85));
        let later = parse_cpu("cpu  20 2 3 160 5 0 0 0 0 0\n").expect("cpu");
        assert_eq!(cpu_idle_between(Some(t), later), Some(80.0 / 90.0));
        assert_eq!(cpu_idle_between(Some(later), later), None);
        // Counters going backwards never give a value out of 0..1.
        let idle = cpu_idle_between(Some(later), t);
        assert!(idle.is_none_or(|x| (0.0..=1.0).contains(&x)));
        assert_eq!(parse_cpu("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_cpu("cpu x y z\n"), None);
        assert_eq!(parse_cpu(""), None);
    }

    const MEMINFO: &str = "MemTotal:       16318432 kB\n\
MemFree:         1234567 kB\n\
MemAvailable:    8000000 kB\n\
Buffers:          123456 kB\n\
SwapTotal:       2097148 kB\n\
SwapFree:        2000000 kB\n\
HugePages_Total:       0\n";

    #[test]
    fn meminfo_parser() {
        let m = parse_meminfo(MEMINFO).expect("meminfo");
        assert_eq!(
            m,
            MemInfo {
                mem_total: 16318432 * 1024,
                mem_available: 8000000 * 1024,
                swap_total: 2097148 * 1024,
                swap_free: 2000000 * 1024,
            }
        );
        // Old kernels: MemFree instead of MemAvailable.
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 40 kB\n").expect("old");
        assert_eq!(old.mem_available, 40 * 1024);
        assert_eq!(parse_meminfo("garbage\n"), None);
    }

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0\n\
   1: 0B0212C6:1F90 0A6412C6:C350 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1\n\
   2: 0B0212C6:1F90 0A6412C6:C351 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1\n\
   3: 0B0212C6:1F90 0A6412C6:C352 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000\n\
   4: 0100007F:8AE2 0100007F:0016 01 00000000:00000000 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000B0212C6:1F90 0000000000000000FFFF00000A6412C6:D000 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F90 08 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 20 4 30 10 -1\n";

    #[test]
    fn tcp_parser() {
        // Port 8080 = 0x1F90: 2 ESTABLISHED (+1 TIME_WAIT, +1 LISTEN not counted).
        assert_eq!(
            parse_tcp(TCP4, Some(8080)),
            TcpCounts {
                connections: 4,
                service: 2
            }
        );
        assert_eq!(
            parse_tcp(TCP4, None),
            TcpCounts {
                connections: 4,
                service: 0
            }
        );
        assert_eq!(
            parse_tcp(TCP6, Some(8080)),
            TcpCounts {
                connections: 2,
                service: 1
            }
        );
        assert_eq!(
            parse_tcp(TCP4, Some(8080)) + parse_tcp(TCP6, Some(8080)),
            TcpCounts {
                connections: 6,
                service: 3
            }
        );
        assert_eq!(parse_tcp("", Some(1)), TcpCounts::default());
        assert_eq!(
            parse_tcp("0: zz:zz 0:0 01\n1: 0:1F90 0:0 QQ\n", Some(8080)),
            TcpCounts::default()
        );
    }

    #[test]
    fn custom_parser() {
        assert_eq!(parse_custom("  42.5 requests\n"), Ok(42.5));
        assert_eq!(parse_custom("-3\n"), Ok(-3.0));
        assert!(parse_custom("").is_err());
        assert!(parse_custom("abc 1").is_err());
        assert!(parse_custom("NaN").is_err());
        assert!(parse_custom("inf").is_err());
    }

    #[test]
    fn command_runs_and_times_out() {
        assert_eq!(run_command("echo 7.25 extra", COMMAND_TIMEOUT), Ok(7.25));
        assert!(run_command("echo nope", COMMAND_TIMEOUT).is_err());
        assert!(run_command("echo 1; exit 3", COMMAND_TIMEOUT).is_err());
        let started = Instant::now();
        let err = run_command("sleep 5; echo 1", Duration::from_millis(200)).expect_err("timeout");
        assert!(err.contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn sampler_reads_this_host() {
        let mut s = Sampler::new(Some(1), Some("echo 3".to_string()));
        let m = s.sample();
        assert!((0.0..=1.0).contains(&m.cpu_idle));
        assert!(m.mem_total_bytes > 0 && m.mem_free_bytes <= m.mem_total_bytes);
        assert!(m.service_connections.is_some());
        assert_eq!(m.custom, Some(3.0));
        let m = s.sample();
        assert!((0.0..=1.0).contains(&m.cpu_idle));
        assert_eq!(Sampler::new(None, None).sample().service_connections, None);
    }

    #[test]
    fn agent_reports_over_loopback() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(addr) = socket.local_addr().expect("addr") else {
            panic!("not IPv4");
        };
        let shared = Arc::new(Mutex::new(Receiver::new(KEY.to_vec(), 6.0)));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = listen(socket, shared.clone(), stop.clone()).expect("listen");

        let before = unix_ms();
        let opts = AgentOptions {
            name: "web1".to_string(),
            controller: addr,
            key: KEY.to_vec(),
            interval_s: 0.02,
            service_port: None,
            command: None,
            count: Some(2),
        };
        run_agent(opts, Arc::new(AtomicBool::new(false))).expect("agent");

        let counts =
            |shared: &Mutex<Receiver>| shared.lock().map(|r| r.counts()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while counts(&shared).accepted < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(counts(&shared).accepted, 2);
        let latest = shared
            .lock()
            .ok()
            .and_then(|r| r.latest("web1", unix_ms()).cloned())
            .expect("latest");
        assert!(latest.seq > before);
        assert!((latest.interval_s - 0.02).abs() < 1e-12);

        // A forged report (wrong key, higher sequence) changes nothing.
        let mut forged = latest.clone();
        forged.seq += 100;
        forged.metrics.cpu_idle = 0.0;
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender
            .send_to(&seal(&forged, b"not the right key!!"), addr)
            .expect("send");
        while counts(&shared).unauthenticated < 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            counts(&shared),
            ReceiverCounts {
                accepted: 2,
                unauthenticated: 1,
                ..ReceiverCounts::default()
            }
        );
        let still = shared
            .lock()
            .ok()
            .and_then(|r| r.latest("web1", unix_ms()).cloned());
        assert_eq!(still, Some(latest));

        stop.store(true, Ordering::Relaxed);
        listener.join().expect("listener");
    }

    #[test]
    fn agent_refuses_bad_options() {
        let base = AgentOptions {
            name: "web1".to_string(),
            controller: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            key: KEY.to_vec(),
            interval_s: 1.0,
            service_port: None,
            command: None,
            count: Some(1),
        };
        let stop = Arc::new(AtomicBool::new(true));
        assert!(run_agent(
            AgentOptions {
                name: " ".into(),
                ..base.clone()
            },
            stop.clone()
        )
        .is_err());
        assert!(run_agent(
            AgentOptions {
                key: vec![],
                ..base.clone()
            },
            stop.clone()
        )
        .is_err());
        assert!(run_agent(
            AgentOptions {
                interval_s: f64::NAN,
                ..base.clone()
            },
            stop.clone()
        )
        .is_err());
        assert!(run_agent(
            AgentOptions {
                interval_s: 0.0,
                ..base.clone()
            },
            stop.clone()
        )
        .is_err());
        // Stopped at once: returns without sending.
        assert!(run_agent(base, stop).is_ok());
    }

    proptest! {
        #[test]
        fn open_and_accept_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10_000), now in any::<u64>()) {
            let _ = open(&bytes, KEY);
            let mut rx = Receiver::new(KEY.to_vec(), 6.0);
            let _ = rx.accept(&bytes, now);
        }

        #[test]
        fn authenticated_garbage_never_panics(inner in ".{0,300}", now in any::<u64>()) {
            let mut m = mac(KEY).expect("mac");
            m.update(inner.as_bytes());
            let d = serde_json::json!({"report": inner, "hmac": hex::encode(m.finalize().into_bytes())}).to_string();
            let mut rx = Receiver::new(KEY.to_vec(), 6.0);
            let _ = rx.accept(d.as_bytes(), now);
        }

        #[test]
        fn seal_open_round_trips(seq in any::<u64>(), sent in any::<u64>(), idle in 0u32..=64, name in "[a-z0-9-]{1,40}") {
            let mut r = report(&name, seq, sent);
            // Multiples of 1/64: exact in decimal, so the JSON round trip is exact.
            r.metrics.cpu_idle = f64::from(idle) / 64.0;
            prop_assert_eq!(open(&seal(&r, KEY), KEY), Ok(r));
        }
    }
}
