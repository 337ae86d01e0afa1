//! The devices under test (testpmd and sluiced), the links between them
//! and the generator, and how their counters are read over exactly the
//! measured interval.

use crate::{remove_runtime_dir, Env, Lines, Opts, Reaped};
use anyhow::{anyhow, bail, Context, Result};
use firmware_config::client::Client;
use firmware_config::control::{Command as Ctl, StatsReply, StatusReply};
use perf::suite::Forwarder;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "198.18.100.1";
pub const VIP_PORT: u16 = 80;
/// The device's client-facing port MAC (sluiced sets it; testpmd forwards
/// promiscuously whatever it is).
pub const CLIENT_MAC: &str = "02:00:00:00:01:fe";
const BACKEND_PORT_MAC: &str = "02:00:00:00:02:fe";
const NAT_BACKEND_PORT: u16 = 8080;
const DUT_PREFIX: &str = "sluice-perf-dut";

/// The two links: generator TX → device client port, device backend port
/// → generator RX.
pub enum Links {
    /// memif: the device serves two sockets, the generator connects.
    Memif,
    /// NIC ports cabled generator → device (client) and device (backend) →
    /// generator.
    Pci { dut: [String; 2], gen: [String; 2] },
}

impl Links {
    pub fn from_opts(o: &Opts) -> Result<Links> {
        match o.link.as_str() {
            "memif" => Ok(Links::Memif),
            "pci" => {
                let two = |v: &[String], what: &str| -> Result<[String; 2]> {
                    match v {
                        [a, b] => Ok([a.clone(), b.clone()]),
                        _ => bail!("--link pci needs {what} with exactly two PCI addresses"),
                    }
                };
                Ok(Links::Pci {
                    dut: two(&o.dut_pci, "--dut-pci")?,
                    gen: two(&o.gen_pci, "--gen-pci")?,
                })
            }
            other => bail!("--link {other:?}: expected memif or pci"),
        }
    }

    fn socket(work: &Path, side: &str) -> String {
        work.join(format!("{side}.sock")).display().to_string()
    }

    /// Generator arguments: devices and which port sends and receives.
    pub fn generator_args(&self, cmd: &mut Command, work: &Path) {
        match self {
            Links::Memif => {
                for (i, side) in ["client", "backend"].iter().enumerate() {
                    cmd.arg("--vdev").arg(format!(
                        "net_memif{i},role=client,socket={}",
                        Self::socket(work, side)
                    ));
                }
                cmd.args(["--tx-port", "net_memif0", "--rx-port", "net_memif1"]);
            }
            Links::Pci { gen, .. } => {
                cmd.args(["--pci", &gen[0], "--pci", &gen[1]]);
                cmd.args(["--tx-port", &gen[0], "--rx-port", &gen[1]]);
            }
        }
    }

    /// The device's client and backend ports: (`vdev` or `pci`, value).
    fn dut_ports(&self, work: &Path) -> [(&'static str, String); 2] {
        match self {
            Links::Memif => [
                (
                    "vdev",
                    format!(
                        "net_memif0,role=server,socket={}",
                        Self::socket(work, "client")
                    ),
                ),
                (
                    "vdev",
                    format!(
                        "net_memif1,role=server,socket={}",
                        Self::socket(work, "backend")
                    ),
                ),
            ],
            Links::Pci { dut, .. } => [("pci", dut[0].clone()), ("pci", dut[1].clone())],
        }
    }
}

/// The device's counters over one measured interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct DutCounts {
    /// Frames received on the client-facing port.
    pub received: u64,
    /// Frames sent on the backend-facing port.
    pub sent: u64,
    /// Frames lost in the client port's RX queue.
    pub rx_lost: u64,
    /// Worker cycles per packet received.
    pub cycles_per_packet: Option<f64>,
}

/// A running device under test.
pub enum Dut {
    Testpmd(Testpmd),
    Sluiced(Box<Sluiced>),
}

impl Dut {
    pub fn start(f: Forwarder, env: &Env, max_flows: u32) -> Result<Dut> {
        Ok(match f {
            Forwarder::TestpmdIo => Dut::Testpmd(Testpmd::start(env, "io")?),
            Forwarder::TestpmdMacswap => Dut::Testpmd(Testpmd::start(env, "macswap")?),
            Forwarder::SluicedDr => Dut::Sluiced(Box::new(Sluiced::start(env, "dr", max_flows)?)),
            Forwarder::SluicedNat => Dut::Sluiced(Box::new(Sluiced::start(env, "nat", max_flows)?)),
        })
    }

    /// What the generator should check in returning frames.
    pub fn expect_args(&self, cmd: &mut Command) {
        match self {
            Dut::Testpmd(t) => {
                cmd.args([
                    "--expect",
                    if t.mode == "io" {
                        "unchanged"
                    } else {
                        "macswap"
                    },
                ]);
            }
            Dut::Sluiced(s) => {
                cmd.args(["--expect", &s.mode]);
                for b in &s.backends {
                    cmd.args(["--backend", b]);
                }
            }
        }
    }

    /// Marks the start of a measured interval.
    pub fn begin(&mut self) -> Result<()> {
        match self {
            Dut::Testpmd(t) => t.command("clear fwd stats all").map(|_| ()),
            Dut::Sluiced(s) => {
                s.before = Some(s.snapshot()?);
                Ok(())
            }
        }
    }

    /// The counters since `begin`.
    pub fn end(&mut self) -> Result<DutCounts> {
        match self {
            Dut::Testpmd(t) => {
                let out = t.command("show fwd stats all")?;
                parse_testpmd_stats(&out)
            }
            Dut::Sluiced(s) => {
                let before = s.before.take().context("end without begin")?;
                let after = s.snapshot()?;
                Ok(sluiced_delta(&before, &after))
            }
        }
    }

    pub fn stop(self) {
        match self {
            Dut::Testpmd(mut t) => {
                let _ = writeln!(t.stdin, "quit");
                let _ = t.stdin.flush();
                // Still running after that: Reaped's drop stops it.
                t.child.exited_within(Duration::from_secs(10));
            }
            Dut::Sluiced(mut s) => s.child.stop(Duration::from_secs(10)),
        }
        remove_runtime_dir(DUT_PREFIX);
    }
}

/// EAL arguments shared by the devices: lcores 0 (main) and 1 (worker)
/// both on the device CPU, memory, devices.
fn eal_args(env: &Env) -> Vec<String> {
    let cpu = env.opts.dut_cpu;
    let main = env.opts.dut_main_cpu.unwrap_or(cpu);
    let mut a: Vec<String> = vec![
        "--lcores".into(),
        format!("0@{main},1@{cpu}"),
        "--main-lcore".into(),
        "0".into(),
        "-m".into(),
        "512".into(),
        "--file-prefix".into(),
        DUT_PREFIX.into(),
    ];
    if env.hugepages {
        a.push("--in-memory".into());
    } else {
        a.extend(["--no-huge".into(), "--no-shconf".into()]);
    }
    let ports = env.links.dut_ports(&env.work);
    if ports.iter().all(|(k, _)| *k == "vdev") {
        a.push("--no-pci".into());
    }
    for (kind, v) in ports {
        a.push(if kind == "vdev" { "--vdev" } else { "-a" }.into());
        a.push(v);
    }
    a
}

/// `dpdk-testpmd` in interactive mode, driven over its standard input.
pub struct Testpmd {
    mode: String,
    child: Reaped,
    stdin: ChildStdin,
    lines: Lines,
}

/// An unknown command testpmd answers with "Command not found": marks the
/// end of a command's output.
const SENTINEL: &str = "sluice_perf_sentinel";

impl Testpmd {
    fn start(env: &Env, mode: &str) -> Result<Testpmd> {
        // testpmd prints with stdio: line-buffer it, or the statistics
        // would sit in its buffer while we wait for them.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(&env.opts.testpmd);
        cmd.args(eal_args(env)).arg("--").args([
            "-i",
            &format!("--forward-mode={mode}"),
            "--nb-cores=1",
            "--record-core-cycles",
            "--auto-start",
            "--rxd=1024",
            "--txd=1024",
            "--total-num-mbufs=16384",
        ]);
        let log = env.log(&format!("testpmd-{mode}"))?;
        let _ = writeln!(&log, "--- {cmd:?}");
        let out_log = log.try_clone()?;
        let mut child = Reaped(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", env.opts.testpmd))?,
        );
        let lines = Lines::new(child.0.stdout.take().context("testpmd stdout")?, out_log);
        let stdin = child.0.stdin.take().context("testpmd stdin")?;
        let mut t = Testpmd {
            mode: mode.to_string(),
            child,
            stdin,
            lines,
        };
        t.command_within("show port summary all", Duration::from_secs(60))
            .context("testpmd did not come up")?;
        Ok(t)
    }

    fn command(&mut self, c: &str) -> Result<Vec<String>> {
        self.command_within(c, Duration::from_secs(20))
    }

    /// Runs a command and returns its output lines.
    fn command_within(&mut self, c: &str, limit: Duration) -> Result<Vec<String>> {
        writeln!(self.stdin, "{c}\n{SENTINEL}")?;
        self.stdin.flush()?;
        let mut out = Vec::new();
        self.lines
            .wait_for(
                limit,
                |l| l.contains("Command not found"),
                |l| out.push(l.to_string()),
            )
            .ok_or_else(|| anyhow!("testpmd did not answer {c:?} (exited or hung)"))?;
        Ok(out)
    }
}

/// Reads testpmd's `show fwd stats all`: port 0 is the client side, port 1
/// the backend side.
pub fn parse_testpmd_stats(lines: &[String]) -> Result<DutCounts> {
    let mut port: Option<u32> = None;
    let mut c = DutCounts::default();
    let field = |l: &str, name: &str| -> Option<u64> {
        let i = l.find(name)? + name.len();
        l[i..].split_whitespace().next()?.parse().ok()
    };
    let mut seen = 0;
    for l in lines {
        if let Some(i) = l.find("Forward statistics for port ") {
            port = l[i + 28..]
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
        } else if l.contains("Accumulated forward statistics") {
            port = None;
        }
        match port {
            Some(0) if l.contains("RX-packets:") => {
                c.received = field(l, "RX-packets:").context("RX-packets")?;
                c.rx_lost = field(l, "RX-dropped:").unwrap_or(0);
                seen += 1;
            }
            Some(1) if l.contains("TX-packets:") => {
                c.sent = field(l, "TX-packets:").context("TX-packets")?;
                seen += 1;
            }
            _ => {}
        }
        if let Some(i) = l.find("CPU cycles/packet=") {
            c.cycles_per_packet = l[i + 18..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok());
        }
    }
    if seen < 2 {
        bail!("testpmd's forward statistics lack port 0 RX or port 1 TX");
    }
    Ok(c)
}

/// `sluiced` with a generated configuration.
pub struct Sluiced {
    mode: String,
    child: Reaped,
    client: Client,
    backends: Vec<String>,
    before: Option<(StatusReply, StatsReply)>,
}

/// The configuration the suite runs sluiced with.
pub fn sluiced_config(
    env: &Env,
    mode: &str,
    max_flows: u32,
    socket: &Path,
) -> (String, Vec<String>) {
    let cpu = env.opts.dut_cpu;
    let main = env.opts.dut_main_cpu.unwrap_or(cpu);
    let ports = env.links.dut_ports(&env.work);
    let capacity = (u64::from(max_flows) * 2).clamp(65_536, 1 << 25);
    let mut t = format!(
        r#"# Written by sluice-perf.
[eal]
main_core = 0
worker_cores = [1]
lcores = "0@{main},1@{cpu}"
memory_mb = 512
hugepages = {huge}
file_prefix = "{DUT_PREFIX}"
extra_args = [{no_pci}"--log-level=lib.eal:error"{no_shconf}]

[control]
socket = "{socket}"

[flows]
capacity_per_worker = {capacity}

[[port]]
name = "client"
{k0} = "{v0}"
role = "client"
address = "198.18.1.254/24"
mac = "{CLIENT_MAC}"

[[port]]
name = "backend"
{k1} = "{v1}"
role = "backend"
address = "198.18.2.254/24"
mac = "{BACKEND_PORT_MAC}"

[[vip]]
name = "perf"
address = "{VIP}"
port = {VIP_PORT}
protocol = "tcp"
mode = "{mode}"
"#,
        huge = env.hugepages,
        no_pci = if ports.iter().all(|(k, _)| *k == "vdev") {
            "\"--no-pci\", "
        } else {
            ""
        },
        no_shconf = if env.hugepages {
            ""
        } else {
            ", \"--no-shconf\""
        },
        socket = socket.display(),
        k0 = ports[0].0,
        v0 = ports[0].1,
        k1 = ports[1].0,
        v1 = ports[1].1,
    );
    let mut expect = Vec::new();
    for i in 0..env.opts.backends {
        let ip = format!("198.18.2.{}", 10 + i);
        let mac = format!("02:00:00:00:02:{:02x}", i + 1);
        let port = if mode == "nat" {
            NAT_BACKEND_PORT
        } else {
            VIP_PORT
        };
        t.push_str(&format!(
            "\n[[vip.backend]]\naddress = \"{ip}\"\nport = {port}\nmac = \"{mac}\"\n"
        ));
        expect.push(if mode == "nat" {
            format!("{ip}:{port}")
        } else {
            mac
        });
    }
    (t, expect)
}

impl Sluiced {
    fn start(env: &Env, mode: &str, max_flows: u32) -> Result<Sluiced> {
        if env.opts.backends == 0 || env.opts.backends > 200 {
            bail!("--backends must be 1..200");
        }
        let socket: PathBuf = env.work.join("sluiced.ctl");
        let (text, backends) = sluiced_config(env, mode, max_flows, &socket);
        let file = env.work.join(format!("sluiced-{mode}.toml"));
        std::fs::write(&file, text)?;
        let log = env.log(&format!("sluiced-{mode}"))?;
        let bin = env.opts.bin("sluiced");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut child = Reaped(child);
        let client = Client::new(socket);
        let t0 = Instant::now();
        loop {
            if client.call(Ctl::Status).is_ok() {
                break;
            }
            if let Ok(Some(st)) = child.0.try_wait() {
                bail!(
                    "sluiced exited ({st}) at start; see {}",
                    env.logs.join(format!("sluiced-{mode}.log")).display()
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("sluiced's control socket did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Sluiced {
            mode: mode.to_string(),
            child,
            client,
            backends,
            before: None,
        })
    }

    fn snapshot(&self) -> Result<(StatusReply, StatsReply)> {
        let status = serde_json::from_value(self.client.call(Ctl::Status)?)?;
        let stats = serde_json::from_value(self.client.call(Ctl::Stats)?)?;
        Ok((status, stats))
    }
}

/// The device's counters between two readings of sluiced's status and
/// stats.
pub fn sluiced_delta(a: &(StatusReply, StatsReply), b: &(StatusReply, StatsReply)) -> DutCounts {
    let port = |s: &StatsReply, name: &str| {
        s.ports
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.nic.clone())
    };
    let d = |x: u64, y: u64| y.wrapping_sub(x);
    let (c0, c1) = (port(&a.1, "client"), port(&b.1, "client"));
    let (b0, b1) = (port(&a.1, "backend"), port(&b.1, "backend"));
    let mut out = DutCounts::default();
    if let (Some(c0), Some(c1)) = (c0, c1) {
        out.received = d(c0.rx_packets, c1.rx_packets);
        out.rx_lost = d(c0.rx_missed + c0.rx_nombuf, c1.rx_missed + c1.rx_nombuf);
    }
    if let (Some(b0), Some(b1)) = (b0, b1) {
        out.sent = d(b0.tx_packets, b1.tx_packets);
    }
    let sum = |s: &StatusReply, f: fn(&firmware_config::control::WorkerStatus) -> u64| {
        s.workers.iter().map(f).sum::<u64>()
    };
    let cycles = d(sum(&a.0, |w| w.busy_cycles), sum(&b.0, |w| w.busy_cycles));
    let packets = d(sum(&a.0, |w| w.rx_packets), sum(&b.0, |w| w.rx_packets));
    out.cycles_per_packet = (packets > 0).then(|| cycles as f64 / packets as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testpmd_forward_stats_are_read() {
        let text = "
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 4626112        RX-dropped: 3             RX-total: 4626115
  TX-packets: 0              TX-dropped: 0             TX-total: 0
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 4625696        TX-dropped: 416           TX-total: 4626112
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 4626112        RX-dropped: 0             RX-total: 4626112
  TX-packets: 4625696        TX-dropped: 416           TX-total: 4626112
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

  CPU cycles/packet=194.98 (total cycles=902006016 / total macswap packets=4626112) at 2600 MHz Clock";
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let c = parse_testpmd_stats(&lines).unwrap();
        assert_eq!((c.received, c.rx_lost, c.sent), (4626112, 3, 4625696));
        assert_eq!(c.cycles_per_packet, Some(194.98));
        assert!(parse_testpmd_stats(&lines[..3]).is_err());
    }
}
