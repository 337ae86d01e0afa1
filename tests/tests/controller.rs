//! The controller (`sluicectl run`) against the real `sluiced` in network
//! namespaces (scripts/topology.sh, NAT mode): health checks taking a dead
//! backend out and bringing it back, draining, switching policies under a
//! long transfer, agent-reported capacities (and a forged report), the
//! link-load policy fed by sluiced's own counters and pooled with a twin's
//! (a scripted twin controller on loopback), a controller restart, and the
//! server list with `sluicectl pick`.
//!
//! Every test builds its own topology and sluiced and removes them on drop
//! (also when it fails); every wait is bounded in time.

use serde_json::Value;
use sluice_tests::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VIP: &str = "198.18.100.1";
/// The health check of VIP `web`: every HEALTH_INTERVAL_S, DOWN after FALL
/// failures, UP after RISE successes.
const HEALTH_INTERVAL_S: f64 = 0.5;
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Where the controller listens for agents and serves the server list
/// (the client namespace's leg on the backends' network).
const AGENT_LISTEN: &str = "198.18.2.1:7946";
const SERVER_LIST: &str = "198.18.2.1:7947";

fn addr_of(i: usize) -> String {
    format!("198.18.2.1{i}")
}

/// "198.18.2.12" or "198.18.2.12:8080" -> "b2".
fn name_of(addr: &str) -> String {
    let host = addr.split(':').next().unwrap_or(addr);
    format!("b{}", &host[host.len() - 1..])
}

/// A topology, three HTTP backends on port 8080, sluiced and the
/// controller. Fields drop in order: the processes first, then sluiced,
/// the namespaces, the scratch directory.
struct Lab {
    agents: Vec<Proc>,
    controller: Option<Proc>,
    /// Backend servers by "bN" (port 8080) or "bN:PORT".
    servers: BTreeMap<String, Proc>,
    sluiced: Sluiced,
    topo: Topology,
    dir: Scratch,
    config: PathBuf,
    socket: PathBuf,
    controllers_started: u32,
}

impl Lab {
    /// `extra` is appended after the `[controller]` table (more VIPs).
    /// `extra_servers` are (backend index, port) of servers started besides
    /// the three on port 8080, before sluiced.
    fn start(tag: &str, extra: &str, extra_servers: &[(usize, u16)]) -> Lab {
        let id = format!("sk{tag}{}", std::process::id() % 10_000);
        let dir = Scratch::new(&format!("controller-{tag}"));
        let topo = Topology::up(&id, "nat").expect("topology");
        let socket = dir.path("sluiced.sock");
        let key = dir.path("key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut text = std::fs::read_to_string(repo_root().join("scripts/netns.toml.in"))
            .expect("scripts/netns.toml.in")
            .replace("@PREFIX@", &id)
            .replace("@SOCKET@", &socket.display().to_string())
            .replace("@MODE@", "nat")
            .replace("@BPORT@", "8080");
        // [vip.health] belongs to the last [[vip]] so far: "web".
        text.push_str(&format!(
            r#"
[vip.health]
type = "http"
path = "/"
interval_s = {HEALTH_INTERVAL_S}
timeout_s = 0.4
rise = {RISE}
fall = {FALL}

[controller]
interval_s = 0.5
agent_listen = "{AGENT_LISTEN}"
agent_key_file = "{}"
agent_interval_s = 0.5
server_list = "{SERVER_LIST}"
{extra}"#,
            key.display()
        ));
        let config = dir.path("sluice.toml");
        std::fs::write(&config, text).unwrap();

        let mut lab_servers = BTreeMap::new();
        for i in 1..=3 {
            lab_servers.insert(format!("b{i}"), spawn_backend(&topo, &dir, i, 8080));
        }
        for &(i, port) in extra_servers {
            lab_servers.insert(format!("b{i}:{port}"), spawn_backend(&topo, &dir, i, port));
        }
        let sluiced = Sluiced::start(
            &config,
            &socket,
            &dir.path("sluiced.log"),
            Some(&topo.ns("d")),
        )
        .expect("sluiced starts");
        let mut lab = Lab {
            agents: Vec::new(),
            controller: None,
            servers: lab_servers,
            sluiced,
            topo,
            dir,
            config,
            socket,
            controllers_started: 0,
        };
        for i in 1..=3 {
            lab.wait_listening(i, 8080);
        }
        for &(i, port) in extra_servers {
            lab.wait_listening(i, port);
        }
        lab.start_controller();
        lab
    }

    fn wait_listening(&self, i: usize, port: u16) {
        let up = wait_until(Duration::from_secs(10), || {
            self.topo
                .cmd(&format!("b{i}"), "python3")
                .args([
                    "-c",
                    &format!(
                        "import socket; socket.create_connection(('{}', {port}), 1)",
                        addr_of(i)
                    ),
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "backend b{i} listening on port {port}");
    }

    fn restart_backend(&mut self, i: usize) {
        let p = spawn_backend(&self.topo, &self.dir, i, 8080);
        self.servers.insert(format!("b{i}"), p);
        self.wait_listening(i, 8080);
    }

    fn kill_backend(&mut self, name: &str) {
        let mut p = self.servers.remove(name).expect("that backend runs");
        p.terminate(Duration::from_secs(5)).expect("backend stops");
    }

    /// Starts `sluicectl run` in the client namespace and waits until its
    /// tables are in sluiced (policy show names it, computed < 1.5 s ago).
    fn start_controller(&mut self) {
        self.controllers_started += 1;
        let log = self
            .dir
            .path(&format!("controller{}.log", self.controllers_started));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut c = self.topo.cmd("c", bin("sluicectl").to_str().unwrap());
        c.arg("--socket")
            .arg(&self.socket)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdout(out)
            .stderr(err);
        let p = Proc::spawn("controller", &mut c).expect("controller starts");
        let pid = p.child.id();
        self.controller = Some(p);
        let ok = wait_until(Duration::from_secs(10), || {
            self.show("web").is_some_and(|s| {
                s["source"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&pid.to_string())
                    && s["age_s"].as_f64().unwrap_or(99.0) < 1.5
            })
        });
        assert!(
            ok,
            "controller (pid {pid}) pushed tables: {:?}\n{}",
            self.show("web"),
            self.controller_log()
        );
    }

    fn controller_log(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path(&format!("controller{}.log", self.controllers_started)),
        )
        .unwrap_or_default()
    }

    /// `sluicectl ARGS` that must succeed; its stdout.
    fn run_ctl(&self, args: &[&str]) -> String {
        let out = Command::new(bin("sluicectl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("sluicectl runs");
        assert!(
            out.status.success(),
            "sluicectl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `policy show VIP --json`, None while it fails.
    /// `GET /status` of the controller's server-list address.
    fn controller_status(&self) -> Value {
        let out = self
            .topo
            .cmd("c", "python3")
            .args([
                "-c",
                &format!(
                    "import urllib.request; print(urllib.request.urlopen('http://{SERVER_LIST}/status', timeout=5).read().decode())"
                ),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "GET /status: {e}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn show(&self, vip: &str) -> Option<Value> {
        ctl(&self.socket, &["policy", "show", vip, "--json"]).ok()
    }

    fn must_show(&self, vip: &str) -> Value {
        ctl(&self.socket, &["policy", "show", vip, "--json"]).expect("policy show")
    }

    /// Sets VIP web's policy and waits until sluiced holds tables computed
    /// by it.
    fn set_policy(&self, policy: &str) {
        self.run_ctl(&["policy", "set", "web", policy]);
        let ok = wait_until(Duration::from_secs(5), || {
            self.show("web").is_some_and(|s| s["policy"] == policy)
        });
        assert!(ok, "policy {policy} in effect: {:?}", self.show("web"));
    }

    /// `n` connections to VIP:port from the client; every one must
    /// complete. Returns connections per backend name and the summary.
    fn clients(&self, n: u64, port: u16) -> (BTreeMap<String, u64>, Value) {
        let out = self
            .topo
            .cmd("c", "python3")
            .arg(repo_root().join("tests/e2e/client.py"))
            .args(["--host", VIP, "--port", &port.to_string()])
            .args(["--count", &n.to_string(), "--deadline", "60"])
            .output()
            .expect("client runs");
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "client output not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            summary["ok"].as_u64(),
            Some(n),
            "every connection completes: {summary}\n{}",
            self.sluiced.log_text()
        );
        let per = summary["per_backend"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        (per, summary)
    }

    /// new_flows of VIP web's backends by name, from `stats`.
    fn new_flows(&self) -> BTreeMap<String, u64> {
        let stats = self.sluiced.stats().expect("stats");
        stats["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["vip"] == "web")
            .map(|b| {
                (
                    name_of(b["address"].as_str().unwrap()),
                    b["new_flows"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn spare_file(&self, i: usize) -> PathBuf {
        self.dir.path(&format!("spare{i}"))
    }

    fn set_spare(&self, i: usize, spare: f64) {
        std::fs::write(self.spare_file(i), format!("{spare}\n")).unwrap();
    }

    fn start_agent(&mut self, i: usize) {
        let mut c = self
            .topo
            .cmd(&format!("b{i}"), bin("sluicectl").to_str().unwrap());
        c.args(["agent", "--controller", AGENT_LISTEN, "--key-file"])
            .arg(self.dir.path("key"))
            .args(["--name", &addr_of(i), "--interval", "0.5", "--command"])
            .arg(format!("cat {}", self.spare_file(i).display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.agents
            .push(Proc::spawn(&format!("agent b{i}"), &mut c).expect("agent starts"));
    }
}

fn spawn_backend(topo: &Topology, dir: &Scratch, i: usize, port: u16) -> Proc {
    let mut c = topo.cmd(&format!("b{i}"), "python3");
    c.arg(repo_root().join("tests/e2e/backend.py"))
        .args(["--name", &format!("b{i}"), "--port", &port.to_string()])
        .arg("--log")
        .arg(dir.path(&format!("b{i}-{port}.log")))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::spawn(&format!("backend b{i}:{port}"), &mut c).unwrap()
}

/// The backend `addr` (address) in a `policy show` answer.
fn backend<'a>(show: &'a Value, addr: &str) -> &'a Value {
    show["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr)
        .unwrap_or_else(|| panic!("{addr} in {show}"))
}

fn is_up(show: &Value, addr: &str) -> bool {
    backend(show, addr)["up"] == true
}

fn weight(show: &Value, addr: &str) -> u64 {
    backend(show, addr)["weight"].as_u64().unwrap()
}

fn spare(show: &Value, addr: &str) -> Option<f64> {
    backend(show, addr)["inputs"]["spare"].as_f64()
}

fn share(show: &Value, addr: &str) -> f64 {
    backend(show, addr)["share_percent"].as_f64().unwrap()
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

#[test]
fn health_checks_take_a_killed_backend_out_and_bring_it_back() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = Lab::start("h", "", &[]);
    let b2 = addr_of(2);

    // Killed: DOWN after FALL failed checks.
    let t0 = Instant::now();
    lab.kill_backend("b2");
    let down = wait_until(Duration::from_secs(10), || {
        lab.show("web").is_some_and(|s| !is_up(&s, &b2))
    });
    let took = t0.elapsed().as_secs_f64();
    let bound = f64::from(FALL) * HEALTH_INTERVAL_S + 2.0;
    assert!(down, "b2 never DOWN: {:?}", lab.show("web"));
    eprintln!("b2 DOWN {took:.2} s after it was killed (bound {bound} s)");
    assert!(
        took <= bound,
        "b2 DOWN after {took:.2} s, more than fall*interval + 2 s = {bound} s"
    );
    let s = lab.must_show("web");
    assert_eq!(weight(&s, &b2), 0, "a DOWN backend has weight 0: {s}");

    let before = lab.new_flows();
    let (per, summary) = lab.clients(60, 80);
    let after = lab.new_flows();
    eprintln!("with b2 down: {summary}; new_flows {before:?} -> {after:?}");
    assert!(!per.contains_key("b2"), "b2 served nothing: {per:?}");
    assert_eq!(delta(&after, &before, "b2"), 0, "no new flow to b2");
    for b in ["b1", "b3"] {
        let n = per.get(b).copied().unwrap_or(0);
        assert!(n >= 10, "{b} carries on: {n} of 60 ({per:?})");
        assert_eq!(delta(&after, &before, b), n, "new_flows of {b}");
    }

    // Restarted: UP after RISE good checks.
    let t1 = Instant::now();
    lab.restart_backend(2);
    let up = wait_until(Duration::from_secs(10), || {
        lab.show("web")
            .is_some_and(|s| is_up(&s, &b2) && weight(&s, &b2) > 0)
    });
    let took = t1.elapsed().as_secs_f64();
    let bound = f64::from(RISE) * HEALTH_INTERVAL_S + 2.0;
    assert!(up, "b2 never UP again: {:?}", lab.show("web"));
    eprintln!("b2 UP {took:.2} s after it was restarted (bound {bound} s)");
    assert!(
        took <= bound,
        "b2 UP after {took:.2} s, more than rise*interval + 2 s = {bound} s"
    );
    let before = lab.new_flows();
    let (per, summary) = lab.clients(90, 80);
    let after = lab.new_flows();
    eprintln!("with b2 back: {summary}");
    // Expected 30 of 90; 5 is far below any plausible draw.
    let n2 = per.get("b2").copied().unwrap_or(0);
    assert!(n2 >= 5, "b2 takes connections again: {n2} of 90 ({per:?})");
    assert_eq!(delta(&after, &before, "b2"), n2, "new_flows of b2");
    eprintln!("health test took {:.1} s", t_test.elapsed().as_secs_f64());
}

#[test]
fn drain_keeps_connections_and_takes_no_new_ones_and_policy_switches_keep_a_long_transfer() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    let lab = Lab::start("d", "", &[]);
    const BYTES: u64 = 20_000_000;

    // A download paced to last about 8 s.
    let mut c = lab.topo.cmd("c", "python3");
    c.arg(repo_root().join("tests/e2e/slow_download.py"))
        .args(["--host", VIP, "--port", "80"])
        .args(["--bytes", &BYTES.to_string(), "--seconds", "8"])
        .args(["--deadline", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut dl = Proc::spawn("slow download", &mut c).unwrap();
    let mut lines = BufReader::new(dl.child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(
        &lines
            .next()
            .expect("the download prints its port")
            .expect("reading the download's output"),
    )
    .expect("the download's first line is JSON");
    let client = format!("198.18.1.1:{}", first["local_port"]);

    // Its flow, and so its backend.
    let mut flow = Value::Null;
    let found = wait_until(Duration::from_secs(5), || {
        let flows = ctl(&lab.socket, &["flow", "list", "--vip", "web", "--json"]);
        if let Some(f) = flows.ok().and_then(|v| {
            v["flows"]
                .as_array()?
                .iter()
                .find(|f| f["client"] == client.as_str())
                .cloned()
        }) {
            flow = f;
            return true;
        }
        false
    });
    assert!(found, "a flow for {client}");
    let backend_port = flow["backend"].as_str().unwrap().to_string();
    let target = backend_port.split(':').next().unwrap().to_string();
    let name = name_of(&target);
    eprintln!("download {client} is served by {backend_port} ({name})");

    // Drained: weight 0, no new connections.
    lab.run_ctl(&["backend", "drain", "web", &target]);
    let drained = wait_until(Duration::from_secs(5), || {
        lab.show("web")
            .is_some_and(|s| backend(&s, &target)["drain"] == true && weight(&s, &target) == 0)
    });
    assert!(drained, "{target} drained: {:?}", lab.show("web"));
    let before = lab.new_flows();
    let (per, summary) = lab.clients(60, 80);
    let after = lab.new_flows();
    eprintln!("while {name} drains: {summary}");
    assert!(!per.contains_key(&name), "{name} got none: {per:?}");
    assert_eq!(delta(&after, &before, &name), 0, "no new flow to {name}");

    // Policies switched under the download.
    for policy in ["least-conn", "link-load", "capacity-ranges", "maglev"] {
        lab.set_policy(policy);
        let s = lab.must_show("web");
        assert_eq!(
            weight(&s, &target),
            0,
            "{target} stays drained under {policy}: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        dl.child.try_wait().unwrap().is_none(),
        "the download still runs after the last switch (else the switches did not happen during it)"
    );
    let flows = ctl(&lab.socket, &["flow", "list", "--vip", "web", "--json"]).unwrap();
    let still = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["client"] == client.as_str());
    assert_eq!(
        still.map(|f| f["backend"].clone()),
        Some(Value::from(backend_port.clone())),
        "the download's flow keeps its backend: {flows}"
    );

    // The download completes, every byte.
    let t0 = Instant::now();
    let finished = wait_until(Duration::from_secs(40), || {
        dl.child.try_wait().ok().flatten().is_some()
    });
    assert!(finished, "download ends");
    let status = dl.child.wait().unwrap();
    let last: Vec<String> = lines.map_while(Result::ok).collect();
    let result: Value = last
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    eprintln!(
        "download: {result} (ended {:.1} s after the switches)",
        t0.elapsed().as_secs_f64()
    );
    assert!(status.success(), "download failed: {result} {last:?}");
    assert_eq!(result["body_bytes"].as_u64(), Some(BYTES), "{result}");

    // Undrained: takes new connections again.
    lab.run_ctl(&["backend", "undrain", "web", &target]);
    let back = wait_until(Duration::from_secs(5), || {
        lab.show("web")
            .is_some_and(|s| backend(&s, &target)["drain"] == false && weight(&s, &target) > 0)
    });
    assert!(back, "{target} undrained: {:?}", lab.show("web"));
    let (per, summary) = lab.clients(30, 80);
    eprintln!("after undrain: {summary}");
    // Expected 10 of 30; (2/3)^30 < 1e-5 to get none.
    assert!(per.get(&name).copied().unwrap_or(0) > 0, "{name}: {per:?}");
    eprintln!("drain test took {:.1} s", t_test.elapsed().as_secs_f64());
}

/// Waits until policy show reports these spares (within 0.005) for b1..b3.
fn wait_spares(lab: &Lab, want: [f64; 3]) {
    let ok = wait_until(Duration::from_secs(10), || {
        lab.show("web").is_some_and(|s| {
            (1..=3).all(|i| spare(&s, &addr_of(i)).is_some_and(|x| (x - want[i - 1]).abs() < 0.005))
        })
    });
    assert!(ok, "spares {want:?} reported: {:?}", lab.show("web"));
}

#[test]
fn agent_load_and_capacity_ranges_follow_reported_capacities() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = Lab::start("a", "", &[]);
    let spares = [0.9, 0.88, 0.4];
    for i in 1..=3 {
        lab.set_spare(i, spares[i - 1]);
        lab.start_agent(i);
    }
    lab.set_policy("agent-load");
    wait_spares(&lab, spares);
    let ok = wait_until(Duration::from_secs(5), || {
        lab.show("web").is_some_and(|s| {
            weight(&s, &addr_of(3)) == 0
                && weight(&s, &addr_of(1)) > 0
                && weight(&s, &addr_of(2)) > 0
        })
    });
    let s = lab.must_show("web");
    assert!(
        ok,
        "agent-load: b3 (spare 0.4) outside the 5% band of 0.9, b1 and b2 in it: {s}"
    );
    let before = lab.new_flows();
    let (per, summary) = lab.clients(120, 80);
    let after = lab.new_flows();
    eprintln!("agent-load 0.9/0.88/0.4: {summary}");
    assert_eq!(delta(&after, &before, "b3"), 0, "no new flow to b3");
    assert!(!per.contains_key("b3"), "{per:?}");
    for b in ["b1", "b2"] {
        let n = per.get(b).copied().unwrap_or(0);
        let frac = n as f64 / 120.0;
        assert!(
            (0.30..=0.70).contains(&frac),
            "agent-load: {b} got {:.1}% of 120 (want 30..70%): {per:?}",
            frac * 100.0
        );
        assert_eq!(delta(&after, &before, b), n, "new_flows of {b}");
    }

    // capacity-ranges: ranges proportional to the spares.
    let spares = [0.6, 0.3, 0.1];
    for i in 1..=3 {
        lab.set_spare(i, spares[i - 1]);
    }
    lab.set_policy("capacity-ranges");
    wait_spares(&lab, spares);
    let ok = wait_until(Duration::from_secs(5), || {
        lab.show("web").is_some_and(|s| {
            (1..=3).all(|i| (share(&s, &addr_of(i)) - spares[i - 1] * 100.0).abs() <= 2.0)
        })
    });
    let s = lab.must_show("web");
    assert_eq!(s["kind"], "ranges", "{s}");
    assert!(
        ok,
        "capacity-ranges shares within 2 points of 60/30/10: {s}"
    );
    let shown: Vec<f64> = (1..=3).map(|i| share(&s, &addr_of(i))).collect();
    eprintln!("capacity-ranges shares in policy show: {shown:?}");

    let before = lab.new_flows();
    let (per, summary) = lab.clients(300, 80);
    let after = lab.new_flows();
    eprintln!("capacity-ranges 0.6/0.3/0.1: {summary}");
    // Tolerance ±10 points: the hash spreads connections like independent
    // draws, so with 300 connections one standard deviation is at most
    // sqrt(0.6*0.4/300) = 2.8 points; 10 points is about 3.6 sigma (a false failure
    // about once in 3000 runs).
    for i in 1..=3 {
        let b = format!("b{i}");
        let n = delta(&after, &before, &b);
        assert_eq!(per.get(&b).copied().unwrap_or(0), n, "new_flows of {b}");
        let got = n as f64 / 3.0;
        let want = spares[i - 1] * 100.0;
        assert!(
            (got - want).abs() <= 10.0,
            "capacity-ranges: {b} got {got:.1}% of 300 connections, want {want}% ± 10: {per:?}"
        );
    }

    // A forged report (right shape, wrong HMAC) claiming b1 has no spare
    // capacity changes nothing.
    let forge = format!(
        r#"
import json, socket, time
now = int(time.time() * 1000)
report = json.dumps({{"v": 1, "agent": "{b1}", "seq": now * 1000, "sent_ms": now,
    "interval_s": 0.5, "metrics": {{"cpu_idle": 0.0, "mem_free_bytes": 0,
    "mem_total_bytes": 1, "swap_free_bytes": 0, "swap_total_bytes": 0,
    "tcp_connections": 0, "service_connections": None, "custom": 0.0}}}})
d = json.dumps({{"report": report, "hmac": "00" * 32}}).encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(d, ("{host}", {port}))
    time.sleep(0.2)
"#,
        b1 = addr_of(1),
        host = AGENT_LISTEN.split(':').next().unwrap(),
        port = AGENT_LISTEN.split(':').nth(1).unwrap(),
    );
    let st = lab
        .topo
        .cmd("b1", "python3")
        .args(["-c", &forge])
        .status()
        .unwrap();
    assert!(st.success(), "the forger ran");
    // Three controller periods after the last forged datagram.
    std::thread::sleep(Duration::from_millis(1500));
    let s = lab.must_show("web");
    assert!(
        spare(&s, &addr_of(1)).is_some_and(|x| (x - 0.6).abs() < 0.005),
        "b1's spare stays 0.6 after a forged report: {s}"
    );
    for i in 1..=3 {
        let got = share(&s, &addr_of(i));
        assert!(
            (got - spares[i - 1] * 100.0).abs() <= 2.0,
            "b{i}'s share stays: {got:.1}% ({s})"
        );
    }
    let log = lab.controller_log();
    assert!(
        log.lines().any(
            |l| l.contains(&format!("refused a report from {}:", addr_of(1)))
                && l.contains("authentication failed")
        ),
        "the controller says it refused the forged report:\n{log}"
    );
    // … and counts it where an operator looks: GET /status.
    let status = lab.controller_status();
    let agents = &status["agents"];
    assert!(
        agents["counts"]["unauthenticated"].as_u64().unwrap_or(0) >= 5,
        "the five forged reports are counted: {agents}"
    );
    assert!(
        agents["counts"]["accepted"].as_u64().unwrap_or(0) > 0,
        "the real agents' reports are counted: {agents}"
    );
    assert!(
        agents["last_refused"]["from"]
            .as_str()
            .is_some_and(|f| f.starts_with(&format!("{}:", addr_of(1)))),
        "the last refusal names the forger's address: {agents}"
    );
    eprintln!("agents test took {:.1} s", t_test.elapsed().as_secs_f64());
}

/// The twin dispatcher's controller, played by a script in the client
/// namespace: `GET /link-counts` reports 40 MB/s to and from b1 and nothing
/// on the other links, as counted by "its" dispatcher.
const FAKE_TWIN: &str = r#"
import http.server, json, sys, time
t0 = time.time()
addrs = sys.argv[2:]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/link-counts":
            self.send_response(404)
            self.end_headers()
            return
        dt = time.time() - t0
        links = [{"address": a, "bytes": int(dt * 40e6) if i == 0 else 0,
                  "packets": int(dt * 30000) if i == 0 else 0} for i, a in enumerate(addrs)]
        body = json.dumps({"controller": "fake-twin", "unix_ms": int(time.time() * 1000),
                           "links": links}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
const TWIN_PORT: u16 = 7948;

#[test]
fn link_load_pools_the_twins_link_counts() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    let lab = Lab::start("w", &format!("twin = \"127.0.0.1:{TWIN_PORT}\"\n"), &[]);
    let (b1, b2, b3) = (addr_of(1), addr_of(2), addr_of(3));
    let mut c = lab.topo.cmd("c", "python3");
    c.args(["-c", FAKE_TWIN, &TWIN_PORT.to_string(), &b1, &b2, &b3])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut twin = Proc::spawn("fake twin", &mut c).unwrap();
    lab.set_policy("link-load");

    // Only the twin's traffic makes b1 busy: this dispatcher carries none.
    let lighter = |s: &Value| share(s, &b1) < 0.6 * (share(s, &b2) + share(s, &b3)) / 2.0;
    let ok = wait_until(Duration::from_secs(8), || {
        lab.show("web").is_some_and(|s| lighter(&s))
    });
    let s = lab.must_show("web");
    assert!(
        ok,
        "the twin's traffic on b1's link gives b1 a smaller share: {s}"
    );
    let twin_bytes = backend(&s, &b1)["inputs"]["twin_bytes_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        twin_bytes > 20e6,
        "policy show names the twin's share of b1's load: {}",
        backend(&s, &b1)["inputs"]
    );
    let (per, _) = lab.clients(90, 80);
    let got = |b: &str| per.get(b).copied().unwrap_or(0) as f64;
    assert!(
        got("b1") < 0.6 * (got("b2") + got("b3")) / 2.0,
        "new connections follow: {per:?}"
    );
    let status = lab.controller_status();
    assert_eq!(status["twin"]["pooled"], true, "{status}");
    assert_eq!(status["twin"]["links"], 3, "{status}");
    let log = lab.controller_log();
    assert!(
        log.contains("pooling link counts with the twin's controller fake-twin"),
        "{log}"
    );

    // The twin goes away: once its counts are stale (3 intervals), b1 is
    // as good as the others again (this dispatcher's own, nearly idle links
    // decide; their few bytes/s move the shares by some points).
    twin.terminate(Duration::from_secs(5)).unwrap();
    let back = |s: &Value| share(s, &b1) > 0.8 * (share(s, &b2) + share(s, &b3)) / 2.0;
    let ok = wait_until(Duration::from_secs(8), || {
        lab.show("web").is_some_and(|s| back(&s))
    });
    let s = lab.must_show("web");
    assert!(ok, "without the twin b1's share comes back: {s}");
    assert!(
        backend(&s, &b1)["inputs"].get("twin_bytes_per_s").is_none(),
        "no twin share once stale: {}",
        backend(&s, &b1)["inputs"]
    );
    let status = lab.controller_status();
    assert_eq!(status["twin"]["pooled"], false, "{status}");
    assert!(status["twin"]["error"].as_str().is_some(), "{status}");
    eprintln!("twin test took {:.1} s", t_test.elapsed().as_secs_f64());
}

#[test]
fn link_load_gives_a_busy_link_fewer_new_connections() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    // A second NAT VIP whose only backend is on b1's address: its traffic
    // loads b1's link.
    let bulk = format!(
        r#"
[[vip]]
name = "bulk"
address = "{VIP}"
port = 81
protocol = "tcp"
mode = "nat"

[[vip.backend]]
address = "{}"
port = 8081
"#,
        addr_of(1)
    );
    let lab = Lab::start("l", &bulk, &[(1, 8081)]);
    lab.set_policy("link-load");

    // Back-to-back 5 MB downloads through VIP bulk, for at most 20 s.
    let load = format!(
        r#"
import socket, time
end = time.time() + 20
n = 0
while time.time() < end:
    s = socket.create_connection(("{VIP}", 81), timeout=5)
    s.sendall(b"GET /big?bytes=5000000 HTTP/1.0\r\n\r\n")
    while True:
        c = s.recv(1 << 16)
        if not c:
            break
        n += len(c)
    s.close()
print(n)
"#
    );
    let mut c = lab.topo.cmd("c", "python3");
    c.args(["-c", &load])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut loader = Proc::spawn("bulk downloads", &mut c).unwrap();

    let (b1, b2, b3) = (addr_of(1), addr_of(2), addr_of(3));
    let lighter = |s: &Value| share(s, &b1) < 0.6 * (share(s, &b2) + share(s, &b3)) / 2.0;
    let ok = wait_until(Duration::from_secs(8), || {
        lab.show("web").is_some_and(|s| lighter(&s))
    });
    let s = lab.must_show("web");
    eprintln!(
        "link-load inputs: b1 {} / b2 {} / b3 {}",
        backend(&s, &b1)["inputs"],
        backend(&s, &b2)["inputs"],
        backend(&s, &b3)["inputs"]
    );
    assert!(ok, "link-load gives the busy b1 a smaller share: {s}");

    let before = lab.new_flows();
    let (per, summary) = lab.clients(150, 80);
    let after = lab.new_flows();
    assert!(
        loader.child.try_wait().unwrap().is_none(),
        "the bulk load still ran during the measurement"
    );
    let s_after = lab.must_show("web");
    loader.terminate(Duration::from_secs(5)).ok();
    let shares: Vec<f64> = ["b1", "b2", "b3"]
        .iter()
        .map(|b| delta(&after, &before, b) as f64 / 150.0)
        .collect();
    eprintln!(
        "link-load with b1's link busy: new-flow shares b1 {:.1}% b2 {:.1}% b3 {:.1}% \
         (policy show before {:.1}/{:.1}/{:.1}%, after {:.1}/{:.1}/{:.1}%); {summary}",
        shares[0] * 100.0,
        shares[1] * 100.0,
        shares[2] * 100.0,
        share(&s, &b1),
        share(&s, &b2),
        share(&s, &b3),
        share(&s_after, &b1),
        share(&s_after, &b2),
        share(&s_after, &b3),
    );
    for (i, b) in ["b1", "b2", "b3"].iter().enumerate() {
        assert_eq!(
            per.get(*b).copied().unwrap_or(0),
            delta(&after, &before, b),
            "new_flows of {b} ({i})"
        );
    }
    let mean_others = (shares[1] + shares[2]) / 2.0;
    assert!(
        shares[0] < 0.6 * mean_others,
        "b1's share {:.1}% is not below 0.6 x the others' mean {:.1}%",
        shares[0] * 100.0,
        mean_others * 100.0
    );
    eprintln!(
        "link-load test took {:.1} s",
        t_test.elapsed().as_secs_f64()
    );
}

#[test]
fn controller_restart_resynchronises_and_sluiced_keeps_forwarding() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = Lab::start("r", "", &[]);
    let age = |lab: &Lab| lab.must_show("web")["age_s"].as_f64().unwrap();

    let mut old = lab.controller.take().unwrap();
    let old_pid = old.child.id();
    old.terminate(Duration::from_secs(5))
        .expect("controller stops");
    let age0 = age(&lab);
    let (per, summary) = lab.clients(30, 80);
    eprintln!("without a controller: {summary}");
    assert_eq!(per.len(), 3, "the last tables still spread: {per:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let age1 = age(&lab);
    eprintln!("tables' age without a controller: {age0:.2} s -> {age1:.2} s");
    assert!(
        age1 > age0 + 1.0 && age1 > 1.5,
        "age_s grows without a controller (a live one pushes every 0.5 s): {age0} -> {age1}"
    );

    let t0 = Instant::now();
    lab.start_controller();
    let took = t0.elapsed().as_secs_f64();
    let s = lab.must_show("web");
    eprintln!(
        "new controller pushed tables {took:.2} s after start (age {}, source {})",
        s["age_s"], s["source"]
    );
    assert!(took <= 3.0, "resynchronised within 3 s: took {took:.2} s");
    assert!(
        !s["source"]
            .as_str()
            .unwrap_or("")
            .contains(&old_pid.to_string()),
        "tables from the new controller: {s}"
    );
    let (per, _) = lab.clients(30, 80);
    assert_eq!(per.len(), 3, "{per:?}");
    eprintln!("restart test took {:.1} s", t_test.elapsed().as_secs_f64());
}

/// `sluicectl pick web --from SERVER_LIST -v` in the client namespace:
/// the chosen server and the attempts it logged.
fn pick(lab: &Lab) -> (String, String) {
    let out = lab
        .topo
        .cmd("c", bin("sluicectl").to_str().unwrap())
        .args(["pick", "web", "--from", SERVER_LIST, "-v"])
        .stdin(Stdio::null())
        .output()
        .expect("pick runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pick failed: {stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn server_list_and_pick() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let t_test = Instant::now();
    let mut lab = Lab::start("p", "", &[]);
    let (b1, b2, b3) = (addr_of(1), addr_of(2), addr_of(3));

    lab.kill_backend("b2");
    let down = wait_until(Duration::from_secs(10), || {
        lab.show("web").is_some_and(|s| !is_up(&s, &b2))
    });
    assert!(down, "b2 DOWN: {:?}", lab.show("web"));
    // One more controller period so the server list has it too.
    std::thread::sleep(Duration::from_millis(600));
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let (server, log) = pick(&lab);
        assert!(
            !server.starts_with(&format!("{b2}:")) && !log.contains(&format!("chose {b2}:")),
            "pick chose the DOWN b2: {server}\n{log}"
        );
        *seen.entry(server).or_insert(0u32) += 1;
    }
    eprintln!("picks with b2 down: {seen:?}");
    assert!(
        seen.keys()
            .all(|k| k == &format!("{b1}:8080") || k == &format!("{b3}:8080")),
        "{seen:?}"
    );

    // b3 to priority 1: the best live group is b1 alone.
    lab.run_ctl(&["backend", "set", "web", &b3, "--priority", "1"]);
    let ok = wait_until(Duration::from_secs(5), || {
        lab.show("web")
            .is_some_and(|s| backend(&s, &b3)["priority"] == 1 && weight(&s, &b3) == 0)
    });
    assert!(ok, "b3 at priority 1 on standby: {:?}", lab.show("web"));
    std::thread::sleep(Duration::from_millis(600));
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let (server, log) = pick(&lab);
        assert_eq!(
            server,
            format!("{b1}:8080"),
            "only b1 is in the best live priority group:\n{log}"
        );
        *seen.entry(server).or_insert(0u32) += 1;
    }
    eprintln!("picks with b2 down and b3 at priority 1: {seen:?}");
    eprintln!("pick test took {:.1} s", t_test.elapsed().as_secs_f64());
}
