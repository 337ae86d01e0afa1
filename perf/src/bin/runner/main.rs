//! `sluice-perf`: the perf suite. Runs `dpdk-testpmd` (io, macswap) and
//! `sluiced` (DR, NAT) one after the other on the same links and cores,
//! drives `sluice-pktgen` against each, and writes a table, JSON and an SVG
//! chart. See docs/performance.md.

mod dut;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use dut::{Dut, DutCounts, Links};
use perf::gen::FrameSize;
use perf::interference::{self, Interference};
use perf::report::Report;
use perf::suite::{
    chart_svg, compute_ratios, table, Forwarder, LatencyNs, RunCounts, Scenario, ScenarioResult,
    Trial,
};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluice-perf",
    version,
    about = "The Sluice perf suite: testpmd and sluiced side by side under sluice-pktgen"
)]
pub struct Opts {
    /// Where results, the chart and logs go.
    #[arg(long, default_value = "target/perf")]
    out: PathBuf,
    /// Repetitions of each scenario.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds of full-speed traffic per repetition (the half-rate latency
    /// run takes half as long).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Forwarders, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "testpmd-io,testpmd-macswap,sluiced-dr,sluiced-nat"
    )]
    forwarders: Vec<String>,
    /// Flow counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    flows: Vec<u32>,
    /// Frame sizes (64..1518 or imix), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,1518")]
    sizes: Vec<FrameSize>,
    /// CPU of the generator.
    #[arg(long, default_value_t = 0)]
    gen_cpu: u32,
    /// CPU of the device under test (its worker and main lcore share it).
    #[arg(long, default_value_t = 1)]
    dut_cpu: u32,
    /// CPU of the device's main (management) lcore; default: --dut-cpu.
    #[arg(long)]
    dut_main_cpu: Option<u32>,
    /// Backends behind the VIP (sluiced).
    #[arg(long, default_value_t = 8)]
    backends: u32,
    /// Where sluiced, sluicectl and sluice-pktgen are (default: next to
    /// this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The testpmd program.
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: String,
    /// Links: `memif` (shared-memory virtual links between two processes on
    /// this host) or `pci` (NIC ports cabled from the generator's ports to
    /// the device's; see --dut-pci and --gen-pci).
    #[arg(long, default_value = "memif")]
    link: String,
    /// With --link pci: the device's client-facing and backend-facing PCI
    /// ports, `0000:01:00.0,0000:01:00.1`.
    #[arg(long, value_delimiter = ',')]
    dut_pci: Vec<String>,
    /// With --link pci: the generator's sending and receiving PCI ports,
    /// cabled to --dut-pci's client and backend ports.
    #[arg(long, value_delimiter = ',')]
    gen_pci: Vec<String>,
    /// The rate of the latency run, as a share of the rate reached at full
    /// speed (0.5: half of it, as the targets are stated).
    #[arg(long, default_value_t = 0.5)]
    latency_share: f64,
    /// Seconds of the interference probe run first: every CPU of the suite
    /// spins at once and counts how often and how long the machine takes it
    /// away (timer ticks, interrupts, the host of a VM); 0 skips it.
    #[arg(long, default_value_t = 1.0)]
    probe_seconds: f64,
    /// Run without hugepages (figures 2-4× lower and noisy: smoke runs).
    #[arg(long)]
    no_huge: bool,
    /// A seconds-long check that every part produces a result: every
    /// forwarder, 100 flows, 64-byte frames, one short repetition, no
    /// hugepages. Asserts nothing about speed.
    #[arg(long)]
    smoke: bool,
}

impl Opts {
    fn apply_smoke(&mut self) {
        if self.smoke {
            self.reps = 1;
            self.duration = 0.3;
            self.flows = vec![100];
            self.sizes = vec![FrameSize::Fixed(64)];
            self.no_huge = true;
            self.probe_seconds = self.probe_seconds.min(0.2);
        }
    }

    fn bin(&self, name: &str) -> PathBuf {
        let dir = self.bin_dir.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."))
        });
        dir.join(name)
    }
}

/// What the JSON results file holds.
#[derive(Serialize)]
struct Results<'a> {
    date: String,
    machine: Machine,
    link: &'a str,
    hugepages: bool,
    reps: usize,
    duration_s: f64,
    gen_cpu: u32,
    dut_cpu: u32,
    baseline: &'static str,
    /// The latency run's rate as a share of the full-speed rate.
    latency_share: f64,
    /// What the machine took from the generator's and the device's CPUs
    /// while both spun, measured before the scenarios.
    interference: Vec<Interference>,
    scenarios: &'a [ScenarioResult],
    elapsed_s: f64,
}

#[derive(Serialize)]
struct Machine {
    cpu: String,
    cpus: usize,
    kernel: String,
    dpdk: String,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel,
        // The library the generator and sluiced link; testpmd comes from the
        // same Debian packages.
        dpdk: dpdk::version(),
    }
}

fn main() {
    let mut opts = Opts::parse();
    opts.apply_smoke();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    match run(&opts, &stop) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("sluice-perf: {e:#}");
            std::process::exit(if stop.load(Ordering::Relaxed) { 130 } else { 2 });
        }
    }
}

/// Hugepages this run set up, given back when dropped.
struct Hugepages {
    restore: Option<u64>,
}

const HUGEPAGES_PATH: &str = "/proc/sys/vm/nr_hugepages";
/// 2 MiB pages for the device (512 MiB), the generator (256 MiB) and slack.
const HUGEPAGES_WANTED: u64 = 1024;

impl Hugepages {
    fn ensure() -> Result<Hugepages> {
        let read =
            || -> Result<u64> { Ok(std::fs::read_to_string(HUGEPAGES_PATH)?.trim().parse()?) };
        let have = read()?;
        if have >= HUGEPAGES_WANTED {
            return Ok(Hugepages { restore: None });
        }
        std::fs::write(HUGEPAGES_PATH, HUGEPAGES_WANTED.to_string()).with_context(|| {
            format!("reserving {HUGEPAGES_WANTED} hugepages in {HUGEPAGES_PATH}")
        })?;
        let got = read()?;
        if got < HUGEPAGES_WANTED {
            let _ = std::fs::write(HUGEPAGES_PATH, have.to_string());
            bail!("the kernel gave {got} of {HUGEPAGES_WANTED} hugepages");
        }
        Ok(Hugepages {
            restore: Some(have),
        })
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if let Some(n) = self.restore {
            let _ = std::fs::write(HUGEPAGES_PATH, n.to_string());
        }
    }
}

fn run(opts: &Opts, stop: &AtomicBool) -> Result<bool> {
    let started = Instant::now();
    let forwarders: Vec<Forwarder> = opts
        .forwarders
        .iter()
        .map(|f| Forwarder::parse(f).map_err(|e| anyhow!(e)))
        .collect::<Result<_>>()?;
    if opts.reps == 0 || opts.duration.is_nan() || opts.duration <= 0.0 {
        bail!("--reps and --duration must be positive");
    }
    if !(opts.latency_share > 0.0 && opts.latency_share <= 1.0) {
        bail!("--latency-share must be in (0, 1]");
    }
    if !(0.0..=60.0).contains(&opts.probe_seconds) {
        bail!("--probe-seconds must be between 0 and 60");
    }
    let links = Links::from_opts(opts)?;
    std::fs::create_dir_all(opts.out.join("logs"))
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let work = opts.out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let mut hugepages = !opts.no_huge;
    let _pages = if hugepages {
        match Hugepages::ensure() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("sluice-perf: no hugepages ({e:#}); running with --no-huge, figures will be 2-4× lower and noisy");
                hugepages = false;
                None
            }
        }
    } else {
        None
    };
    let env = Env {
        opts,
        links,
        work,
        hugepages,
        logs: opts.out.join("logs").canonicalize()?,
    };
    let total = forwarders.len() * opts.flows.len() * opts.sizes.len();
    eprintln!(
        "sluice-perf: {total} scenarios × {} repetitions on {} links, generator on CPU {}, device on CPU {}{}",
        opts.reps,
        opts.link,
        opts.gen_cpu,
        opts.dut_cpu,
        if hugepages { "" } else { ", no hugepages" }
    );
    let interference = if opts.probe_seconds > 0.0 {
        let mut cpus = vec![opts.gen_cpu, opts.dut_cpu];
        cpus.dedup();
        let r = interference::probe(&cpus, Duration::from_secs_f64(opts.probe_seconds));
        eprintln!(
            "sluice-perf: interference probe, {} CPU(s) spinning at once for {:.1} s:",
            cpus.len(),
            opts.probe_seconds
        );
        for i in &r {
            eprintln!("  {}", interference::describe(i));
        }
        r
    } else {
        Vec::new()
    };
    // Traffic-major: every forwarder runs one traffic right after the
    // others, so the ratios compare figures taken within tens of seconds
    // of each other (a VM's host can change its speed over minutes).
    let mut results = Vec::new();
    let mut flows = opts.flows.clone();
    flows.sort_unstable();
    // The baseline runs each traffic again after the others: if the two
    // measurements disagree, the machine changed speed in between, and the
    // table says so.
    let recheck = forwarders.contains(&Forwarder::BASELINE) && forwarders.len() > 1;
    for &fl in &flows {
        for &size in &opts.sizes {
            let group_start = results.len();
            for &f in &forwarders {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let s = Scenario {
                    forwarder: f,
                    flows: fl,
                    size,
                };
                let r = scenario(&env, s, stop);
                eprintln!(
                    "  {:<16} {:>5} {:>5}: {}",
                    f.name(),
                    perf::suite::flows_label(fl),
                    size.to_string(),
                    match (&r.error, r.mpps) {
                        (Some(e), _) => format!("FAILED: {e}"),
                        (None, Some(m)) => format!(
                            "{:.2} Mpps (±{:.1}%), check {}",
                            m.median,
                            m.spread_percent(),
                            if r.check_ok { "ok" } else { "BAD" }
                        ),
                        (None, None) => "no result".into(),
                    }
                );
                results.push(r);
            }
            if recheck && !stop.load(Ordering::Relaxed) {
                let s = Scenario {
                    forwarder: Forwarder::BASELINE,
                    flows: fl,
                    size,
                };
                let again = scenario(&env, s, stop).mpps.map(|m| m.median);
                if let Some(b) = results[group_start..]
                    .iter_mut()
                    .find(|r| r.scenario.forwarder == Forwarder::BASELINE)
                {
                    b.recheck_mpps = again;
                    if let (Some(d), Some(a)) = (b.drift(), again) {
                        eprintln!(
                            "  {:<16} {:>5} {:>5}: re-checked: {a:.2} Mpps ({:+.1}%)",
                            Forwarder::BASELINE.name(),
                            perf::suite::flows_label(fl),
                            size.to_string(),
                            d * 100.0
                        );
                    }
                }
            }
        }
    }
    // Shown grouped by forwarder, in the order asked for.
    let rank = |f: Forwarder| {
        forwarders
            .iter()
            .position(|&x| x == f)
            .unwrap_or(usize::MAX)
    };
    results.sort_by_key(|r| (rank(r.scenario.forwarder), r.scenario.flows));
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    compute_ratios(&mut results);
    let text = table(&results);
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let m = machine();
    let title = format!(
        "Sluice vs testpmd, {} links, 1 core each ({}, {})",
        opts.link, m.cpu, date
    );
    let doc = Results {
        date,
        machine: m,
        link: &opts.link,
        hugepages,
        reps: opts.reps,
        duration_s: opts.duration,
        gen_cpu: opts.gen_cpu,
        dut_cpu: opts.dut_cpu,
        baseline: Forwarder::BASELINE.name(),
        latency_share: opts.latency_share,
        interference: interference.clone(),
        scenarios: &results,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        opts.out.join("results.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    std::fs::write(opts.out.join("table.txt"), &text)?;
    let svg = chart_svg(&results, &title).map_err(|e| anyhow!("drawing the chart: {e}"))?;
    std::fs::write(opts.out.join("ratios.svg"), svg)?;
    println!("{text}");
    println!(
        "Mpps: frames back at the generator per second at full speed (median of {}, ±: half the range); ratio: Mpps / {}'s for the same traffic;\n\
         cyc/pkt: device worker cycles per packet at full speed, ½ cyc: in the latency run; latency and drops (generator/link/dispatcher): at {} the full-speed rate;\n\
         max d: device drops at full speed; check: sampled frames rewritten as expected with valid checksums.",
        opts.reps,
        Forwarder::BASELINE.name(),
        if opts.latency_share == 0.5 {
            "half".to_string()
        } else {
            format!("{:.2} ×", opts.latency_share)
        }
    );
    for i in &interference {
        println!("interference: {}", interference::describe(i));
    }
    println!(
        "results: {}, {}, {} ({:.0} s)",
        opts.out.join("table.txt").display(),
        opts.out.join("results.json").display(),
        opts.out.join("ratios.svg").display(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&env.work);
    Ok(results.iter().all(|r| r.error.is_none() && r.check_ok))
}

/// What every part of a run needs.
pub struct Env<'a> {
    pub opts: &'a Opts,
    pub links: Links,
    pub work: PathBuf,
    pub logs: PathBuf,
    pub hugepages: bool,
}

impl Env<'_> {
    /// The log file for a part, appended to.
    pub fn log(&self, name: &str) -> Result<std::fs::File> {
        let p = self.logs.join(format!("{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))
    }
}

/// Every repetition of `s` on a running device, with one retry (and a fresh
/// generator) per repetition.
fn run_scenario(
    env: &Env,
    dut: &mut Dut,
    s: &Scenario,
    stop: &AtomicBool,
) -> (Vec<Trial>, Option<String>) {
    // Started at the first repetition, kept for the others; dropped (its
    // end of the links closed) when this returns, while the device still
    // runs and no traffic flows.
    let mut gen: Option<Gen> = None;
    let mut trials = Vec::new();
    for _ in 0..env.opts.reps {
        if stop.load(Ordering::Relaxed) {
            return (trials, Some("interrupted".into()));
        }
        // One retry, with a fresh generator.
        let mut attempt = || -> Result<Trial> {
            if gen.is_none() {
                gen = Some(Gen::start(env, dut)?);
            }
            let g = gen.as_mut().context("generator")?;
            let r = run_trial(env, dut, g, s);
            if r.is_err() {
                gen = None;
            }
            r
        };
        match attempt().or_else(|e| {
            eprintln!("    retrying after: {e:#}");
            attempt()
        }) {
            Ok(t) => trials.push(t),
            Err(e) => return (trials, Some(format!("{e:#}"))),
        }
    }
    (trials, None)
}

/// Starts forwarder `s.forwarder` sized for `s.flows`, runs the scenario
/// (every repetition) and stops it.
fn scenario(env: &Env, s: Scenario, stop: &AtomicBool) -> ScenarioResult {
    match Dut::start(s.forwarder, env, s.flows) {
        Ok(mut d) => {
            // The generator leaves first (in run_scenario).
            let (trials, error) = run_scenario(env, &mut d, &s, stop);
            remove_runtime_dir(GEN_PREFIX);
            d.stop();
            ScenarioResult::new(s, trials, error)
        }
        Err(e) => ScenarioResult::new(s, vec![], Some(format!("did not start: {e:#}"))),
    }
}

/// One repetition: full speed, then `--latency-share` (half) of the rate
/// reached, for latency.
fn run_trial(env: &Env, dut: &mut Dut, gen: &mut Gen, s: &Scenario) -> Result<Trial> {
    let (max, max_dut) = gen.run(env, dut, s, None, env.opts.duration)?;
    if max.rx.packets == 0 {
        bail!("no frames came back at full speed");
    }
    let half_rate = max.rx.pps * env.opts.latency_share;
    let (half, half_dut) = gen.run(env, dut, s, Some(half_rate), env.opts.duration / 2.0)?;
    let check_ok = |r: &Report| r.check.sampled > 0 && r.check.ok == r.check.sampled;
    let mut examples = max.check.examples.clone();
    examples.extend(half.check.examples.iter().cloned());
    Ok(Trial {
        mpps: max.rx.pps / 1e6,
        gbps: max.rx.gbps,
        cycles_per_packet: max_dut.cycles_per_packet,
        max: counts(&max, &max_dut),
        half_rate_mpps: half_rate / 1e6,
        half_cycles_per_packet: half_dut.cycles_per_packet,
        latency: half.latency_ns.as_ref().map(|l| LatencyNs {
            p50: l.p50 as f64,
            p99: l.p99 as f64,
            p999: l.p999 as f64,
        }),
        half: counts(&half, &half_dut),
        check_ok: check_ok(&max) && check_ok(&half),
        check_examples: examples,
    })
}

fn counts(r: &Report, d: &DutCounts) -> RunCounts {
    RunCounts {
        gen_sent: r.tx.sent,
        gen_refused: r.tx.refused,
        gen_rx_lost: r.nic.rx_port.rx_missed + r.nic.rx_port.rx_nombuf,
        gen_received: r.rx.packets,
        dut_received: d.received,
        dut_sent: d.sent,
        dut_rx_lost: d.rx_lost,
    }
}

/// A child's standard output, line by line, with timeouts.
struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    /// Reads `out` in a thread; every line is also appended to `log`.
    fn new(out: impl std::io::Read + Send + 'static, mut log: std::fs::File) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = writeln!(log, "{line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// Waits for a line that satisfies `want`; returns it, or None on
    /// timeout or end of output. Other lines are passed to `other`.
    fn wait_for(
        &self,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
        mut other: impl FnMut(&str),
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if want(&l) => return Some(l),
                Ok(l) => other(&l),
                Err(_) => return None,
            }
        }
    }
}

/// A child process, stopped when dropped if still running.
pub struct Reaped(Child);

impl Reaped {
    /// Waits up to `limit` for the child to exit; true if it has.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            if t0.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to `limit` to exit, then SIGKILL.
    pub fn stop(&mut self, limit: Duration) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            if !self.exited_within(limit) {
                let _ = self.0.kill();
            }
        }
        let _ = self.0.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// EAL's runtime directory of a process run without hugepages is left
/// behind: removed once the process has gone.
pub fn remove_runtime_dir(file_prefix: &str) {
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(file_prefix));
}

const GEN_PREFIX: &str = "sluice-perf-gen";

/// A `sluice-pktgen --sync` connected to the device, kept across runs so
/// the links are never torn down while the device polls them (DPDK 22.11's
/// memif can crash a forwarder whose peer disconnects under traffic).
pub struct Gen {
    // Fields drop in order: closing stdin first lets it exit on its own.
    stdin: std::process::ChildStdin,
    lines: Lines,
    child: Reaped,
}

impl Gen {
    pub fn start(env: &Env, dut: &Dut) -> Result<Gen> {
        let o = env.opts;
        let mut cmd = Command::new(o.bin("sluice-pktgen"));
        cmd.args(["--cpu", &o.gen_cpu.to_string()])
            .args(["--file-prefix", GEN_PREFIX])
            .args(["--src-ip", "198.19.0.0/16"])
            // Sixteen client-side hosts.
            .args(["--src-mac", "02:00:00:00:01:01-02:00:00:00:01:10"])
            .args([
                "--dst-ip",
                dut::VIP,
                "--dst-port",
                &dut::VIP_PORT.to_string(),
            ])
            .args(["--dst-mac", dut::CLIENT_MAC])
            .arg("--json")
            .arg(env.work.join("gen.json"))
            .arg("--sync");
        if !env.hugepages {
            cmd.arg("--no-huge");
        }
        env.links.generator_args(&mut cmd, &env.work);
        dut.expect_args(&mut cmd);
        let log = env.log("sluice-pktgen")?;
        let _ = writeln!(&log, "--- {:?}", cmd);
        let out_log = log.try_clone()?;
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", o.bin("sluice-pktgen").display()))?;
        let mut child = Reaped(child);
        let lines = Lines::new(child.0.stdout.take().context("generator stdout")?, out_log);
        let stdin = child.0.stdin.take().context("generator stdin")?;
        let mut g = Gen {
            child,
            stdin,
            lines,
        };
        g.wait("ready", Duration::from_secs(60), env)?;
        Ok(g)
    }

    fn wait(&mut self, word: &str, limit: Duration, env: &Env) -> Result<()> {
        let mut error = None;
        let got = self
            .lines
            .wait_for(limit, |l| l == word || l.starts_with("error "), |_| {});
        match got {
            Some(l) if l == word => return Ok(()),
            Some(l) => error = Some(l),
            None => {}
        }
        let status = self.child.0.try_wait().ok().flatten();
        bail!(
            "sluice-pktgen did not say {word:?} ({}); see {}",
            error.unwrap_or_else(|| format!("exit {:?}", status.and_then(|s| s.code()))),
            env.logs.join("sluice-pktgen.log").display()
        )
    }

    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Measures once and reads the device's counters over exactly the
    /// measured interval.
    pub fn run(
        &mut self,
        env: &Env,
        dut: &mut Dut,
        s: &Scenario,
        rate: Option<f64>,
        duration: f64,
    ) -> Result<(Report, DutCounts)> {
        let json = env.work.join("gen.json");
        let _ = std::fs::remove_file(&json);
        self.send(&format!(
            "run flows={} size={} rate={} duration={duration}",
            s.flows,
            s.size,
            rate.map_or("max".to_string(), |r| format!("{r:.0}"))
        ))?;
        let warm_limit = Duration::from_secs(60 + u64::from(s.flows) / 50_000);
        self.wait("warm", warm_limit, env)?;
        dut.begin()?;
        self.send("go")?;
        self.wait("done", Duration::from_secs_f64(duration + 30.0), env)?;
        let counts = dut.end()?;
        self.wait("ready", Duration::from_secs(10), env)?;
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("reading {}", json.display()))?;
        let report: Report =
            serde_json::from_str(&text).context("parsing the generator's report")?;
        Ok((report, counts))
    }
}
