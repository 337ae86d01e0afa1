//! Harness for tests that run the real binaries: finding them, starting
//! `sluiced` and waiting for its control socket, asking `sluicectl`,
//! building namespace topologies, and cleaning everything up on drop (also
//! when a test fails).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where `sluiced` and `sluicectl` are: `$SLUICE_BIN_DIR`, else the cargo
/// profile directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLUICE_BIN_DIR") {
        // Test binaries run in their package directory: a relative path is
        // taken from the repository root, where it was most likely meant.
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            d
        } else {
            repo_root().join(d)
        };
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (make test does), or set SLUICE_BIN_DIR",
        p.display()
    );
    p
}

static DPDK: Mutex<()> = Mutex::new(());

/// Only one DPDK process at a time: the machine has two cores and a
/// worker busy-polls one of them. Held within this test binary by a mutex
/// and across test binaries (two `cargo test` runs) by an flock.
pub struct DpdkGuard {
    _inner: MutexGuard<'static, ()>,
    _file: Option<std::fs::File>,
}

pub fn dpdk_exclusive() -> DpdkGuard {
    let inner = DPDK.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("sluice-tests-dpdk.lock"))
        .ok();
    if let Some(f) = &file {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; blocks until the other
        // holder's file is closed (also when it dies).
        unsafe {
            libc::flock(f.as_raw_fd(), libc::LOCK_EX);
        }
    }
    DpdkGuard {
        _inner: inner,
        _file: file,
    }
}

/// True when the tests may create namespaces and run DPDK (root).
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// For a test that runs DPDK or builds namespaces: the guard that keeps
/// such tests one at a time, or None (having said why) when not root.
pub fn system_test() -> Option<DpdkGuard> {
    if !privileged() {
        eprintln!("skipped: needs root for DPDK and network namespaces");
        return None;
    }
    Some(dpdk_exclusive())
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("sluice-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a scratch dir");
        Scratch(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what: what.to_string(),
        })
    }

    /// Sends SIGTERM and waits up to `timeout`; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<i32> {
        // SAFETY: kill with a pid we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.code().unwrap_or(-1));
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate(Duration::from_secs(5));
        }
    }
}

/// A running `sluiced`, stopped on drop.
pub struct Sluiced {
    pub proc: Proc,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Sluiced {
    /// Starts `sluiced --config CONFIG` (inside namespace `netns` if given)
    /// and waits until its control socket answers.
    pub fn start(config: &Path, socket: &Path, log: &Path, netns: Option<&str>) -> Result<Sluiced> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("sluiced"));
                c
            }
            None => Command::new(bin("sluiced")),
        };
        cmd.arg("--config").arg(config).stdout(out).stderr(err);
        let mut s = Sluiced {
            proc: Proc::spawn("sluiced", &mut cmd)?,
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let t0 = Instant::now();
        loop {
            if ctl(&s.socket, &["status", "--json"]).is_ok() {
                return Ok(s);
            }
            if let Some(st) = s.proc.child.try_wait()? {
                bail!(
                    "sluiced exited ({st}) before answering:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "sluiced did not answer on {} within 30 s:\n{}",
                    socket.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `sluicectl stats --json`.
    pub fn stats(&self) -> Result<serde_json::Value> {
        ctl(&self.socket, &["stats", "--json"])
    }

    /// Stops it with SIGTERM; returns the exit code.
    pub fn stop(&mut self) -> Result<i32> {
        self.proc.terminate(Duration::from_secs(15))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `sluicectl --socket SOCKET ARGS` and parses its JSON output.
pub fn ctl(socket: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(bin("sluicectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running sluicectl")?;
    if !out.status.success() {
        bail!(
            "sluicectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("sluicectl printed no JSON")
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A namespace topology from scripts/topology.sh, removed on drop.
pub struct Topology {
    pub id: String,
}

impl Topology {
    pub fn up(id: &str, mode: &str) -> Result<Topology> {
        let t = Topology { id: id.to_string() };
        let st = Command::new(repo_root().join("scripts/topology.sh"))
            .args(["up", id, mode])
            .status()
            .context("running scripts/topology.sh")?;
        if !st.success() {
            bail!("topology.sh up {id} {mode} failed");
        }
        Ok(t)
    }

    /// The namespace name of a node: "c" client, "d" dispatcher, "s"
    /// switch, "b1".."b3" backends.
    pub fn ns(&self, node: &str) -> String {
        format!("{}{node}", self.id)
    }

    /// A command that runs inside namespace `node`.
    pub fn cmd(&self, node: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node), program]);
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/topology.sh"))
            .args(["down", &self.id])
            .status();
    }
}

/// The `[eal]` and `[control]` tables of a test configuration: one worker
/// on lcore 1, no hugepages, no PCI, a private file prefix.
pub fn eal_and_control(prefix: &str, socket: &Path) -> String {
    format!(
        r#"[eal]
main_core = 0
worker_cores = [1]
memory_mb = 256
hugepages = false
file_prefix = "{prefix}"
extra_args = ["--no-pci", "--no-shconf", "--log-level=lib.eal:error"]

[control]
socket = "{}"
"#,
        socket.display()
    )
}

/// Reads a counter by JSON pointer, 0 when absent.
pub fn counter(v: &serde_json::Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Every non-zero drop counter of port `index`: (reason, count).
pub fn port_drops(stats: &serde_json::Value, index: usize) -> Vec<(String, u64)> {
    stats["ports"][index]["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops that say something went wrong, on any port: (port, reason,
/// count). ARP traffic not for us, clients not yet resolved and multicast
/// are the normal background of a live network and are left out.
pub fn unexpected_drops(stats: &serde_json::Value) -> Vec<(usize, String, u64)> {
    let ports = stats["ports"].as_array().map_or(0, Vec::len);
    (0..ports)
        .flat_map(|i| {
            port_drops(stats, i)
                .into_iter()
                .map(move |(r, n)| (i, r, n))
        })
        .filter(|(_, r, _)| {
            !matches!(
                r.as_str(),
                "arp_reply_consumed" | "arp_not_for_us" | "client_unresolved" | "ipv4_multicast"
            )
        })
        .collect()
}
