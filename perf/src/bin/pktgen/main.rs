//! `sluice-pktgen`: a DPDK traffic generator for measuring a dispatcher.
//!
//! Sends Ethernet/IPv4 TCP or UDP frames toward a VIP on one port, receives
//! what the device under test forwards on another (or the same) port,
//! checks a sample of it, measures latency from a TSC stamp in each payload
//! and prints the results as JSON. See docs/performance.md.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConf, PortStats, BURST_MAX};
use hdrhistogram::Histogram;
use perf::check::{Checker, Expect};
use perf::gen::{
    parse_mac, read_stamp, stamp_age, FrameBuilder, FrameSize, Ipv4Range, MacRange, PortRange,
    Proto, Traffic, FCS,
};
use perf::report::{Latency, NicReport, PortDelta, Report, RxReport, TxReport, Warmup};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets built per transmit burst.
const TX_BURST: usize = 32;
const _: () = assert!(TX_BURST <= BURST_MAX);
const POOL_SIZE: u32 = 16383;
const POOL_CACHE: u32 = 256;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluice-pktgen",
    version,
    about = "DPDK traffic generator: TCP/UDP toward a VIP, checks and times what comes back",
    after_help = "Example (memif links to a dispatcher that serves the sockets):\n  \
        sluice-pktgen --vdev net_memif0,role=client,socket=/run/a.sock \\\n    \
        --vdev net_memif1,role=client,socket=/run/b.sock --tx-port net_memif0 --rx-port net_memif1 \\\n    \
        --dst-mac 02:00:00:00:01:fe --dst-ip 198.18.100.1 --flows 1000000 --size 64 --duration 3 \\\n    \
        --expect dr --backend 02:00:00:00:02:01 --backend 02:00:00:00:02:02"
)]
struct Args {
    /// DPDK virtual device, e.g. `net_memif0,role=client,socket=/run/a.sock` (repeatable).
    #[arg(long)]
    vdev: Vec<String>,
    /// PCI device to use, e.g. `0000:01:00.0` (repeatable); without any, `--no-pci`.
    #[arg(long)]
    pci: Vec<String>,
    /// Port that sends (device name: vdev name or PCI address).
    #[arg(long)]
    tx_port: String,
    /// Port that receives what comes back (default: the sending port).
    #[arg(long)]
    rx_port: Option<String>,
    /// CPU the generator runs on.
    #[arg(long, default_value_t = 0)]
    cpu: u32,
    /// DPDK memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: u32,
    /// Run without hugepages (slower, noisier figures: smoke runs only).
    #[arg(long)]
    no_huge: bool,
    /// `--file-prefix` for EAL (needed without hugepages when several DPDK
    /// processes run).
    #[arg(long)]
    file_prefix: Option<String>,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    proto: Proto,
    /// Established flows, 1 to 10,000,000.
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// Frame size with FCS, 64..1518, or `imix` (7×64, 4×594, 1×1518).
    #[arg(long, default_value = "64")]
    size: FrameSize,
    /// Packets per second (`2.5M`, `500k`, `100000`) or `max`.
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// Seconds of measured traffic.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Share of packets that open a new connection (TCP SYN from an unseen
    /// source), 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    syn_share: f64,
    /// Source MACs: `first-last` (consecutive flows from consecutive
    /// addresses) or one address.
    #[arg(long, default_value = "02:00:00:00:01:01")]
    src_mac: MacRange,
    /// Destination MAC: the dispatcher's client-facing port.
    #[arg(long)]
    dst_mac: String,
    /// Source addresses: `a.b.c.d-e.f.g.h`, a CIDR or one address.
    #[arg(long, default_value = "198.18.0.0/16")]
    src_ip: Ipv4Range,
    /// Source ports: `first-last` or one port.
    #[arg(long, default_value = "1024-65535")]
    src_ports: PortRange,
    /// Destination address: the VIP.
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Destination port: the VIP's port.
    #[arg(long, default_value_t = 80)]
    dst_port: u16,
    /// What the device under test does: unchanged, macswap, dr or nat.
    #[arg(long, default_value = "unchanged")]
    expect: String,
    /// A backend: its MAC (`--expect dr`) or `ip:port` (`--expect nat`) (repeatable).
    #[arg(long)]
    backend: Vec<String>,
    /// Check every Nth received frame (rewrite and checksums).
    #[arg(long, default_value_t = 64)]
    check_every: u32,
    /// Record the latency of every Nth received frame.
    #[arg(long, default_value_t = 1)]
    latency_every: u32,
    /// Skip the warm-up (one opening packet per flow before measuring).
    #[arg(long)]
    no_warmup: bool,
    /// Seconds to wait for links to come up.
    #[arg(long, default_value_t = 10.0)]
    link_timeout: f64,
    /// Write the JSON report here instead of standard output.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Be driven over stdin/stdout (the suite runner), keeping the links
    /// connected across runs: print `ready` and read `run [flows=N]
    /// [size=S] [rate=R] [duration=D] [json=PATH]` (settings over the
    /// command line's); print `warm` after the warm-up and wait for a line
    /// before measuring; print `done` once the report is written; repeat
    /// until stdin closes. A bad `run` line gets `error REASON`.
    #[arg(long)]
    sync: bool,
}

/// Packets per second, or as fast as the link takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    Max,
    Pps(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        let (num, mult) = match s.char_indices().last() {
            Some((i, 'M' | 'm')) => (&s[..i], 1e6),
            Some((i, 'k' | 'K')) => (&s[..i], 1e3),
            _ => (s, 1.0),
        };
        let v: f64 = num.parse().map_err(|_| {
            format!("rate {s:?}: expected a number of packets/s (2.5M, 500k) or max")
        })?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("rate {s:?} must be positive"));
        }
        Ok(Rate::Pps(v * mult))
    }
}

fn delta(a: &PortStats, b: &PortStats) -> PortDelta {
    PortDelta {
        tx_packets: b.tx_packets.wrapping_sub(a.tx_packets),
        rx_packets: b.rx_packets.wrapping_sub(a.rx_packets),
        rx_missed: b.rx_missed.wrapping_sub(a.rx_missed),
        rx_nombuf: b.rx_nombuf.wrapping_sub(a.rx_nombuf),
        tx_errors: b.tx_errors.wrapping_sub(a.tx_errors),
    }
}

fn main() {
    let args = Args::parse();
    let setup = match Setup::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-pktgen: {e:#}");
            std::process::exit(2);
        }
    };
    match run(&args, setup) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("sluice-pktgen: {e:#}");
            std::process::exit(1);
        }
    }
}

/// What the arguments describe, validated before DPDK starts.
struct Setup {
    builder: FrameBuilder,
    expect: Expect,
}

impl Setup {
    fn from_args(a: &Args) -> Result<Setup> {
        let traffic = Traffic {
            proto: a.proto,
            size: a.size,
            flows: a.flows,
            syn_share: a.syn_share,
            src_macs: a.src_mac,
            dst_mac: parse_mac(&a.dst_mac).map_err(|e| anyhow!("--dst-mac: {e}"))?,
            src_ips: a.src_ip,
            src_ports: a.src_ports,
            dst_ip: u32::from(a.dst_ip),
            dst_port: a.dst_port,
        };
        if !(a.duration > 0.0 && a.duration <= 3600.0) {
            bail!(
                "--duration {}: must be more than 0 and at most 3600 s",
                a.duration
            );
        }
        if a.sync && a.json.is_none() {
            bail!("--sync needs --json (standard output carries the handshake)");
        }
        if a.check_every == 0 || a.latency_every == 0 {
            bail!("--check-every and --latency-every must be at least 1");
        }
        let expect = match a.expect.as_str() {
            "unchanged" | "io" => Expect::Unchanged,
            "macswap" => Expect::MacSwap,
            "dr" => Expect::Dr(
                a.backend
                    .iter()
                    .map(|b| parse_mac(b).map_err(|e| anyhow!("--backend: {e}")))
                    .collect::<Result<_>>()?,
            ),
            "nat" => Expect::Nat(
                a.backend
                    .iter()
                    .map(|b| {
                        b.parse::<std::net::SocketAddrV4>()
                            .map(|s| (*s.ip(), s.port()))
                            .map_err(|_| anyhow!("--backend {b:?}: expected ip:port for nat"))
                    })
                    .collect::<Result<_>>()?,
            ),
            other => bail!("--expect {other:?}: expected unchanged, macswap, dr or nat"),
        };
        if matches!(&expect, Expect::Dr(b) if b.is_empty())
            || matches!(&expect, Expect::Nat(b) if b.is_empty())
        {
            bail!("--expect {} needs at least one --backend", a.expect);
        }
        let builder = FrameBuilder::new(traffic).map_err(|e| anyhow!(e))?;
        Ok(Setup { builder, expect })
    }
}

fn eal_args(a: &Args) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "sluice-pktgen".into(),
        "--lcores".into(),
        format!("0@{}", a.cpu),
        "-m".into(),
        a.memory_mb.to_string(),
        "--log-level".into(),
        "lib.eal:warning".into(),
    ];
    if a.no_huge {
        v.push("--no-huge".into());
    } else {
        v.push("--in-memory".into());
    }
    if let Some(p) = &a.file_prefix {
        v.push("--file-prefix".into());
        v.push(p.clone());
    }
    if a.pci.is_empty() {
        v.push("--no-pci".into());
    }
    for p in &a.pci {
        v.push("-a".into());
        v.push(p.clone());
    }
    for d in &a.vdev {
        v.push("--vdev".into());
        v.push(d.clone());
    }
    v
}

/// Tells the driver (see `--sync`) where we are.
fn say(word: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{word}")?;
    out.flush()?;
    Ok(())
}

/// Prints `word` and waits for the driver's next line; None at the end of
/// its input.
fn handshake(word: &str) -> Result<Option<String>> {
    use std::io::BufRead;
    say(word)?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

/// A driver's `run` line: `flows=N size=S rate=R duration=D json=PATH`
/// (any subset) applied over the command-line arguments.
fn with_overrides(a: &Args, line: &str) -> Result<Args> {
    let mut b = a.clone();
    for tok in line.split_whitespace().skip(1) {
        let (k, v) = tok
            .split_once('=')
            .ok_or_else(|| anyhow!("{tok:?}: expected key=value"))?;
        let bad = |e: String| anyhow!("{k}: {e}");
        match k {
            "flows" => {
                b.flows = v
                    .parse()
                    .map_err(|_| anyhow!("flows: {v:?} is not a number"))?
            }
            "size" => b.size = v.parse().map_err(bad)?,
            "rate" => b.rate = v.parse().map_err(bad)?,
            "duration" => {
                b.duration = v
                    .parse()
                    .map_err(|_| anyhow!("duration: {v:?} is not a number"))?
            }
            "json" => b.json = Some(PathBuf::from(v)),
            _ => bail!("unknown setting {k:?}"),
        }
    }
    Ok(b)
}

fn write_report(a: &Args, report: &Report) -> Result<()> {
    let text = serde_json::to_string_pretty(report)? + "\n";
    match &a.json {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn run(a: &Args, setup: Setup) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let eal = Eal::init(&eal_args(a)).context("starting DPDK")?;
    let result = serve(a, setup, &stop);
    drop(eal);
    result
}

/// Opens the ports once and measures: once, or (with `--sync`) for each
/// `run` line of the driver, on the same connected links.
fn serve(a: &Args, setup: Setup, stop: &AtomicBool) -> Result<()> {
    let rx_pool = Mempool::new("pktgen_rx", POOL_SIZE, POOL_CACHE, -1)?;
    let tx_pool = Mempool::new("pktgen_tx", POOL_SIZE, POOL_CACHE, -1)?;
    prefill(&tx_pool, usize::from(perf::gen::MAX_FRAME) - FCS);
    let ports = open_ports(a, &rx_pool)?;
    wait_links(&ports, a.link_timeout, stop)?;
    eprintln!("sluice-pktgen: links up");
    if !a.sync {
        return measure(a, setup, &ports, tx_pool, stop);
    }
    while !stop.load(Ordering::Relaxed) {
        let Some(line) = handshake("ready")? else {
            break;
        };
        if !line.starts_with("run") {
            say(&format!("error expected `run key=value...`, got {line:?}"))?;
            continue;
        }
        let run = with_overrides(a, &line).and_then(|b| Ok((Setup::from_args(&b)?, b)));
        match run {
            Ok((setup, b)) => measure(&b, setup, &ports, tx_pool, stop)?,
            Err(e) => say(&format!("error {e:#}"))?,
        }
    }
    Ok(())
}

/// The ports in use, started; stopped and closed when dropped.
struct Ports {
    tx: Port,
    rx: Port,
}

impl Drop for Ports {
    fn drop(&mut self) {
        for p in [self.tx, self.rx] {
            let _ = p.stop();
            let _ = p.close();
            if self.tx == self.rx {
                break;
            }
        }
    }
}

fn open_ports(a: &Args, rx_pool: &Mempool) -> Result<Ports> {
    let tx = Port::by_name(&a.tx_port)?;
    let rx = match &a.rx_port {
        Some(n) => Port::by_name(n)?,
        None => tx,
    };
    let conf = PortConf {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        rss: false,
        promiscuous: true,
    };
    let ports = Ports { tx, rx };
    for p in [tx, rx] {
        p.configure(&conf, rx_pool)
            .with_context(|| format!("configuring port {}", p.id()))?;
        p.start()
            .with_context(|| format!("starting port {}", p.id()))?;
        if tx == rx {
            break;
        }
    }
    Ok(ports)
}

fn wait_links(ports: &Ports, timeout: f64, stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    loop {
        let up = [ports.tx, ports.rx]
            .iter()
            .all(|p| p.link().map(|l| l.up).unwrap_or(false));
        if up {
            return Ok(());
        }
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            bail!("links not up after {timeout} s: is the device under test running and serving the links?");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes of the frames in a burst, with FCS.
#[inline]
fn frame_bytes(b: &mut Burst) -> u64 {
    b.as_mut_slice()
        .iter()
        .map(|m| u64::from(m.pkt_len()) + FCS as u64)
        .sum()
}

/// Zeroes the data room of every buffer in the pool once, so frames built
/// in place have zero payloads (see `FrameBuilder`).
fn prefill(pool: &Mempool, len: usize) {
    let mut all = Vec::new();
    while let Some(mut m) = pool.alloc() {
        if let Some(d) = m.append(len as u16) {
            d.fill(0);
        }
        all.push(m);
    }
}

/// Receives whatever arrives until the link has been quiet for `quiet` or
/// `limit` has passed, handing each burst to `take` (which empties it).
fn drain(
    rx: &mut dpdk::RxQueue,
    quiet: Duration,
    limit: Duration,
    mut take: impl FnMut(&mut Burst),
) {
    let mut burst = Burst::new();
    let (start, mut last) = (Instant::now(), Instant::now());
    while start.elapsed() < limit && last.elapsed() < quiet {
        if rx.rx_burst(&mut burst) > 0 {
            last = Instant::now();
            take(&mut burst);
            burst.clear();
        }
    }
}

/// Builds one frame in a fresh mbuf: `write` gets the data room up to
/// `room` bytes and returns the frame's length.
#[inline]
fn build(m: &mut Mbuf, room: u16, write: impl FnOnce(&mut [u8]) -> usize) {
    m.set_len(room);
    let n = write(m.data_mut());
    m.set_len(n as u16);
}

/// What comes back during a measurement: counts, latency, sampled checks.
struct Receiver {
    proto: Proto,
    ns_per_cycle: f64,
    latency_every: u32,
    check_every: u32,
    report: RxReport,
    checker: Checker,
    hist: Histogram<u64>,
    check_n: u32,
    lat_n: u32,
}

impl Receiver {
    /// Accounts for a received burst and frees it.
    fn take(&mut self, inb: &mut Burst) {
        let now = dpdk::rdtsc();
        for m in inb.as_mut_slice().iter() {
            let data = m.data();
            self.report.packets += 1;
            self.report.bytes += u64::from(m.pkt_len()) + FCS as u64;
            self.lat_n += 1;
            if self.lat_n >= self.latency_every {
                self.lat_n = 0;
                if let Some(s) = read_stamp(data, self.proto) {
                    let ns = (stamp_age(s, now) as f64 * self.ns_per_cycle) as u64;
                    self.hist.saturating_record(ns.max(1));
                }
            }
            self.check_n += 1;
            if self.check_n >= self.check_every {
                self.check_n = 0;
                self.checker.check(data);
            }
        }
        inb.clear();
    }
}

/// Sends one opening packet per flow, retrying what the link refuses.
fn warm_up(
    b: &mut FrameBuilder,
    pool: &Mempool,
    tx: &mut dpdk::TxQueue,
    rx: &mut dpdk::RxQueue,
    stop: &AtomicBool,
) -> Result<Warmup> {
    let started = Instant::now();
    let flows = b.traffic().flows;
    let limit = Duration::from_secs(30 + u64::from(flows) / 100_000);
    let max_len = b.max_len();
    let (mut out, mut inb) = (Burst::new(), Burst::new());
    let mut next = 0u32;
    while (next < flows || !out.is_empty()) && !stop.load(Ordering::Relaxed) {
        if started.elapsed() > limit {
            bail!("warm-up: the link took {next} of {flows} opening packets in {limit:?}");
        }
        let want = (TX_BURST - out.len()).min((flows - next) as usize);
        if want > 0 && pool.alloc_bulk(&mut out, want) {
            let tsc = dpdk::rdtsc();
            let have = out.len();
            for m in &mut out.as_mut_slice()[have - want..] {
                build(m, max_len as u16, |buf| b.write_opening(buf, next, tsc));
                next += 1;
            }
        }
        tx.tx_burst(&mut out);
        if rx.rx_burst(&mut inb) > 0 {
            inb.clear();
        }
    }
    drain(
        rx,
        Duration::from_millis(100),
        Duration::from_secs(2),
        |_| {},
    );
    Ok(Warmup {
        packets: u64::from(next),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One measurement on open ports: warm-up, traffic, drain, report.
fn measure(
    a: &Args,
    setup: Setup,
    ports: &Ports,
    tx_pool: Mempool,
    stop: &AtomicBool,
) -> Result<()> {
    let Setup {
        mut builder,
        expect,
    } = setup;
    let max_len = builder.max_len();
    let mut txq = ports.tx.tx_queue(0);
    let mut rxq = ports.rx.rx_queue(0);
    // Frames left over from a previous run or the link coming up.
    drain(
        &mut rxq,
        Duration::from_millis(20),
        Duration::from_secs(1),
        |_| {},
    );
    let warmup = if a.no_warmup {
        Warmup::default()
    } else {
        warm_up(&mut builder, &tx_pool, &mut txq, &mut rxq, stop)?
    };
    eprintln!(
        "sluice-pktgen: warm-up: {} opening packets in {:.2} s",
        warmup.packets, warmup.seconds
    );
    if a.sync && handshake("warm")?.is_none() {
        bail!("the driver went away");
    }

    let hz = dpdk::tsc_hz();
    let traffic = builder.traffic().clone();
    let mut recv = Receiver {
        proto: traffic.proto,
        ns_per_cycle: 1e9 / hz as f64,
        latency_every: a.latency_every,
        check_every: a.check_every,
        report: RxReport::default(),
        checker: Checker::new(&traffic, expect),
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?,
        check_n: 0,
        lat_n: 0,
    };
    let mut tx = TxReport::default();
    let (mut out, mut inb) = (Burst::new(), Burst::new());
    // Bytes (with FCS) of the frames waiting in `out`.
    let mut out_bytes = 0u64;
    let tx_stats0 = ports.tx.stats()?;
    let rx_stats0 = ports.rx.stats()?;

    let start = dpdk::rdtsc();
    let end = start + (a.duration * hz as f64) as u64;
    let cycles_per_packet = match a.rate {
        Rate::Max => 0.0,
        Rate::Pps(pps) => hz as f64 / pps,
    };
    let mut now = start;
    while now < end && !stop.load(Ordering::Relaxed) {
        let want = match a.rate {
            // Frames the link refused stay in the burst and go first next
            // time: at full speed the link's back-pressure paces us.
            Rate::Max => TX_BURST - out.len(),
            Rate::Pps(_) => {
                let due = ((now - start) as f64 / cycles_per_packet) as u64;
                (due.saturating_sub(tx.offered) as usize).min(TX_BURST)
            }
        };
        if want > 0 {
            let have = out.len();
            if tx_pool.alloc_bulk(&mut out, want) {
                for m in &mut out.as_mut_slice()[have..] {
                    build(m, max_len as u16, |buf| builder.write_next(buf, now));
                    out_bytes += u64::from(m.pkt_len()) + FCS as u64;
                }
                tx.offered += want as u64;
            } else {
                tx.alloc_failed += 1;
            }
        }
        if !out.is_empty() {
            tx.sent += txq.tx_burst(&mut out) as u64;
            let unsent = frame_bytes(&mut out);
            tx.bytes += out_bytes - unsent;
            out_bytes = unsent;
            if !out.is_empty() && a.rate != Rate::Max {
                // Below full speed a refusal is a drop at the generator.
                tx.refused += out.len() as u64;
                out.clear();
                out_bytes = 0;
            }
        }
        if rxq.rx_burst(&mut inb) > 0 {
            recv.take(&mut inb);
        }
        now = dpdk::rdtsc();
    }
    let elapsed = (now - start) as f64 / hz as f64;
    // Frames still in flight: receive until the link is quiet.
    drain(
        &mut rxq,
        Duration::from_millis(50),
        Duration::from_secs(2),
        |b| recv.take(b),
    );
    let tx_stats1 = ports.tx.stats()?;
    let rx_stats1 = ports.rx.stats()?;
    let gbps = |bytes: u64| bytes as f64 * 8.0 / elapsed / 1e9;
    tx.pps = tx.sent as f64 / elapsed;
    tx.gbps = gbps(tx.bytes);
    let Receiver {
        report: mut rx,
        checker,
        hist,
        ..
    } = recv;
    rx.pps = rx.packets as f64 / elapsed;
    rx.gbps = gbps(rx.bytes);
    let latency = (!hist.is_empty()).then(|| Latency {
        samples: hist.len(),
        min: hist.min(),
        mean: hist.mean(),
        p50: hist.value_at_quantile(0.5),
        p90: hist.value_at_quantile(0.9),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    });
    let report = Report {
        rate_requested_pps: match a.rate {
            Rate::Max => None,
            Rate::Pps(p) => Some(p),
        },
        traffic,
        duration_s: elapsed,
        tsc_hz: hz,
        warmup,
        tx,
        rx,
        latency_ns: latency,
        check: checker.stats,
        nic: NicReport {
            tx_port: delta(&tx_stats0, &tx_stats1),
            rx_port: delta(&rx_stats0, &rx_stats1),
        },
        interrupted: stop.load(Ordering::Relaxed),
    };
    write_report(a, &report)?;
    if a.sync {
        say("done")?;
    }
    Ok(())
}
