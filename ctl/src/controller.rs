//! `sluicectl run`: the controller. Each interval it reads the running
//! configuration and counters from `sluiced`, combines them with its health
//! checks and the agents' reports, computes every VIP's selection with the
//! VIP's policy (ctl::policy) and pushes the tables to `sluiced`. It also
//! serves the server list (seed 003). `sluiced` never computes a policy:
//! without a controller it keeps the last tables it was given.

use anyhow::{Context, Result};
use ctl::agent::{unix_ms, Receiver};
use ctl::health::{HealthChecker, Target};
use ctl::links::{pooled, smooth, LinkMeters, TwinLinks};
use ctl::policy::{self, BackendInput, Ewma, Params};
use ctl::serverlist::{
    self, ControllerStatus, LinkCount, LinkCounts, Published, PushResult, RoundResult, Server,
    ServerList, Status, VipServers, VipStatus,
};
use firmware_config::client::Client;
use firmware_config::control::{
    BackendSelection, Command, ConfigDumpReply, SelectionSetReply, StatsReply, VipSelection,
};
use firmware_config::{Config, HealthCheck, HealthKind, Policy, Protocol};
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A backend's identity in the controller: (VIP `address:port/protocol`,
/// backend address, backend port).
type Key = (String, std::net::Ipv4Addr, u16);

/// Transmit drops on one port: fraction of what it tried to send.
#[derive(Default)]
struct PortMeter {
    last: Option<(u64, u64)>,
    fraction: Option<Ewma>,
}

impl PortMeter {
    fn update(&mut self, sent: u64, dropped: u64, alpha: f64) {
        if let Some((s0, d0)) = self.last {
            let s = sent.saturating_sub(s0) as f64;
            let d = dropped.saturating_sub(d0) as f64;
            let f = if s + d > 0.0 { d / (s + d) } else { 0.0 };
            smooth(&mut self.fraction, f, alpha);
        }
        self.last = Some((sent, dropped));
    }

    fn value(&self) -> f64 {
        self.fraction.as_ref().and_then(Ewma::value).unwrap_or(0.0)
    }
}

/// EWMAs of a sampled measurement, one per key: every interval the current
/// sample of each key is fed in; a key without a sample is forgotten (its
/// next sample starts afresh).
struct Smoothed<K> {
    averages: HashMap<K, Ewma>,
}

impl<K> Default for Smoothed<K> {
    fn default() -> Self {
        Smoothed {
            averages: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Smoothed<K> {
    /// Feeds this interval's `samples` with the smoothing factor `alpha`.
    fn update(&mut self, samples: &HashMap<K, f64>, alpha: f64) {
        self.averages.retain(|k, _| samples.contains_key(k));
        for (k, &x) in samples {
            let e = self
                .averages
                .entry(k.clone())
                .or_insert_with(|| Ewma::new(alpha));
            e.set_alpha(alpha);
            e.update(x);
        }
    }

    /// The smoothed value of `key` (`None` before its first finite sample).
    fn get(&self, key: &K) -> Option<f64> {
        self.averages.get(key).and_then(Ewma::value)
    }
}

/// The agents' spare capacity, smoothed per agent over its reports: a
/// report is fed in once (the first interval that sees it), however many
/// intervals it stays the latest one, so the average moves at the agents'
/// pace. An agent without a fresh report is forgotten.
#[derive(Default)]
struct SpareMeter {
    /// By agent name: the `seq` of the last report fed in, and the average.
    agents: HashMap<String, (u64, Ewma)>,
}

impl SpareMeter {
    /// Feeds the fresh reports (agent → (`seq`, raw spare capacity)).
    fn update(&mut self, fresh: &HashMap<String, (u64, f64)>, alpha: f64) {
        self.agents.retain(|name, _| fresh.contains_key(name));
        for (name, &(seq, spare)) in fresh {
            match self.agents.get_mut(name) {
                Some((last, e)) => {
                    e.set_alpha(alpha);
                    if *last != seq {
                        *last = seq;
                        e.update(spare);
                    }
                }
                None => {
                    let mut e = Ewma::new(alpha);
                    e.update(spare);
                    self.agents.insert(name.clone(), (seq, e));
                }
            }
        }
    }

    /// The smoothed spare capacity of `agent`.
    fn get(&self, agent: &str) -> Option<f64> {
        self.agents.get(agent).and_then(|(_, e)| e.value())
    }
}

struct Controller {
    name: String,
    client: Client,
    settings: firmware_config::Controller,
    health: HealthChecker,
    agents: Option<Arc<Mutex<Receiver>>>,
    /// The server list and status, served when `server_list` is set.
    published: Published,
    /// By backend address: a server's link carries the traffic of every
    /// VIP and port it serves (seed 000 measures links, not services).
    links: LinkMeters,
    /// The clock of the link readings.
    epoch: Instant,
    /// The twin dispatcher's link traffic (`controller.twin`).
    twin: TwinLinks,
    ports: HashMap<String, PortMeter>,
    /// Active flows per backend of each VIP.
    flows: Smoothed<Key>,
    /// Spare capacity per agent.
    spares: SpareMeter,
    /// Whether sluiced answered last time (to log only the changes).
    connected: Option<bool>,
    /// Whether the twin answered last time (likewise).
    twin_ok: Option<bool>,
}

pub fn run(config_path: &Path, socket: Option<PathBuf>, name: Option<String>) -> Result<()> {
    let cfg = firmware_config::load(config_path).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{} is invalid; the controller did not start",
            config_path.display()
        )
    })?;
    let socket = socket.unwrap_or_else(|| PathBuf::from(&cfg.control.socket));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let k = cfg.controller.clone();
    let mut threads = Vec::new();
    let agents = match &k.agent_listen {
        Some(addr) => {
            let key_file = k
                .agent_key_file
                .as_deref()
                .context("controller.agent_listen needs controller.agent_key_file")?;
            let key = ctl::agent::load_key(Path::new(key_file))?;
            let addr: SocketAddrV4 = addr.parse().context("controller.agent_listen")?;
            let sock = UdpSocket::bind(addr)
                .with_context(|| format!("listening for agents on UDP {addr}"))?;
            let rx = Arc::new(Mutex::new(Receiver::new(
                key.clone(),
                3.0 * k.agent_interval_s,
            )));
            threads.push(ctl::agent::listen(
                sock,
                Arc::clone(&rx),
                Arc::clone(&stop),
            )?);
            eprintln!("sluicectl: controller: agents report to UDP {addr}");
            Some(rx)
        }
        None => None,
    };
    let name = name.unwrap_or_else(|| format!("sluicectl-run[{}]", std::process::id()));
    let published = Published {
        list: Arc::new(RwLock::new(ServerList::default())),
        status: Arc::new(RwLock::new(ControllerStatus {
            controller: name.clone(),
            started_unix_ms: unix_ms(),
            interval_s: k.interval_s,
            smoothing: k.smoothing,
            ..ControllerStatus::default()
        })),
        agents: agents.clone(),
        link_counts: Arc::default(),
    };
    if let Some(addr) = &k.server_list {
        let l = TcpListener::bind(addr)
            .with_context(|| format!("serving the server list on TCP {addr}"))?;
        threads.push(serverlist::serve(l, published.clone(), Arc::clone(&stop))?);
        eprintln!(
            "sluicectl: controller: server list on http://{addr}/servers, status on http://{addr}/status"
        );
    }
    let mut c = Controller {
        name,
        client: Client::new(socket.clone()),
        settings: k,
        health: HealthChecker::new(),
        agents,
        published,
        links: LinkMeters::default(),
        epoch: Instant::now(),
        twin: TwinLinks::default(),
        ports: HashMap::new(),
        flows: Smoothed::default(),
        spares: SpareMeter::default(),
        connected: None,
        twin_ok: None,
    };
    eprintln!(
        "sluicectl: controller {} started: sluiced at {}, every {} s",
        c.name,
        socket.display(),
        c.settings.interval_s
    );
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = c.tick();
        c.record_round(&result);
        match result {
            Ok(()) => {
                if c.connected != Some(true) {
                    eprintln!("sluicectl: controller: pushing tables to sluiced");
                }
                c.connected = Some(true);
            }
            Err(e) => {
                if c.connected != Some(false) {
                    eprintln!("sluicectl: controller: {e:#}; sluiced keeps its last tables, retrying every interval");
                }
                c.connected = Some(false);
            }
        }
        let period = Duration::from_secs_f64(c.settings.interval_s);
        while !stop.load(Ordering::Relaxed) && started.elapsed() < period {
            std::thread::sleep(Duration::from_millis(50).min(period));
        }
    }
    eprintln!("sluicectl: controller stopping");
    c.health.stop();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

impl Controller {
    /// One round: read, measure, decide, push, publish.
    fn tick(&mut self) -> Result<()> {
        let dump: ConfigDumpReply = serde_json::from_value(self.client.call(Command::ConfigDump)?)?;
        let cfg: Config = toml::from_str(&dump.toml).context("sluiced's running configuration")?;
        // Controller settings follow the running configuration (config
        // apply), except the listeners, which need a restart.
        self.settings.interval_s = cfg.controller.interval_s;
        self.settings.smoothing = cfg.controller.smoothing;
        self.settings.fuzz = cfg.controller.fuzz;
        let alpha = self.settings.smoothing;
        self.health.set_targets(targets(&cfg));
        let stats: StatsReply = serde_json::from_value(self.client.call(Command::Stats)?)?;
        let now = Instant::now();
        self.measure(&stats, now);
        self.settings.twin = cfg.controller.twin.clone();
        self.poll_twin(alpha);
        let health = self.health.snapshot();
        let now_ms = unix_ms();
        let stale_ms = self.twin_stale_ms();
        let active: HashMap<Key, u64> = stats
            .backends
            .iter()
            .filter_map(|b| {
                let v = cfg.vips.iter().find(|v| v.label() == b.vip)?;
                Some((
                    (v.service(), b.address.parse().ok()?, b.port),
                    b.active_flows,
                ))
            })
            .collect();
        let flow_samples: HashMap<Key, f64> =
            active.iter().map(|(k, &n)| (k.clone(), n as f64)).collect();
        self.flows.update(&flow_samples, alpha);
        let agent_names: BTreeSet<String> = cfg
            .vips
            .iter()
            .flat_map(|v| &v.backends)
            .map(|b| b.agent.clone().unwrap_or_else(|| b.address.to_string()))
            .collect();
        let fresh: HashMap<String, (u64, f64)> = match &self.agents {
            Some(a) => {
                let rx = a.lock().unwrap_or_else(|e| e.into_inner());
                agent_names
                    .iter()
                    .filter_map(|name| {
                        let r = rx.latest(name, now_ms)?;
                        let spare = r.metrics.custom.unwrap_or(r.metrics.cpu_idle);
                        Some((name.clone(), (r.seq, spare.clamp(0.0, 1.0))))
                    })
                    .collect()
            }
            None => HashMap::new(),
        };
        self.spares.update(&fresh, alpha);
        let params = Params {
            fuzz: self.settings.fuzz,
        };
        let mut selections = Vec::new();
        let mut servers = Vec::new();
        let mut vip_status = Vec::new();
        for v in &cfg.vips {
            let id = v.service();
            let inputs: Vec<BackendInput> = v
                .backends
                .iter()
                .map(|b| {
                    let port = b.port_or(v.port);
                    let key: Key = (id.clone(), b.address, port);
                    let h = health.get(&target_key(&id, b.address, port));
                    // The backend's link leaves through its egress port.
                    let drop = cfg
                        .egress_port_index(b)
                        .and_then(|i| self.ports.get(&cfg.ports[i].name))
                        .map_or(0.0, PortMeter::value);
                    let agent_name = b.agent.clone().unwrap_or_else(|| b.address.to_string());
                    BackendInput {
                        address: b.address,
                        port,
                        configured_weight: b.weight,
                        drain: b.drain,
                        up: h.is_none_or(|h| h.up),
                        priority: b.priority,
                        group: b.group.clone(),
                        link: pooled(
                            self.links.rates(b.address),
                            self.twin.rates(b.address, now_ms, stale_ms),
                            drop,
                        ),
                        active_flows: self.flows.get(&key),
                        rtt_ms: h.and_then(|h| h.rtt_ms),
                        spare: self.spares.get(&agent_name),
                    }
                })
                .collect();
            let d = policy::decide(v.policy, v.group_policy, &inputs, &params);
            vip_status.push(VipStatus {
                name: v.label(),
                service: id.clone(),
                policy: v.policy.to_string(),
                backends: inputs.len(),
                up: inputs.iter().filter(|i| i.up).count(),
                serving: d.backends.iter().filter(|b| b.weight > 0).count(),
            });
            servers.push(VipServers {
                name: v.label(),
                address: v.address.to_string(),
                port: v.port,
                protocol: v.protocol.to_string(),
                udp_probe: udp_probe(v.protocol, v.health.as_ref()),
                servers: inputs
                    .iter()
                    .zip(&d.backends)
                    .map(|(i, bd)| Server {
                        address: i.address.to_string(),
                        port: i.port,
                        status: if i.up && !i.drain && i.configured_weight > 0 {
                            Status::Up
                        } else {
                            Status::Down
                        },
                        // The seed's "connected users": the current count,
                        // not the smoothed one the policies use.
                        connections: active
                            .get(&(id.clone(), i.address, i.port))
                            .copied()
                            .unwrap_or(0),
                        priority: i.priority,
                        backend_group: i.group.clone(),
                        weight: bd.weight,
                    })
                    .collect(),
            });
            selections.push(VipSelection {
                vip: id,
                policy: v.policy,
                kind: d.kind,
                summary: d.summary,
                backends: inputs
                    .iter()
                    .zip(d.backends)
                    .map(|(i, mut bd)| {
                        // What of the link's load the twin measured.
                        if v.policy == Policy::LinkLoad {
                            if let Some((bytes, _)) = self.twin.rates(i.address, now_ms, stale_ms) {
                                bd.inputs.insert("twin_bytes_per_s".into(), bytes);
                            }
                        }
                        (i, bd)
                    })
                    .map(|(i, bd)| BackendSelection {
                        address: i.address,
                        port: i.port,
                        up: i.up,
                        weight: bd.weight,
                        inputs: bd.inputs,
                        group: i.group.clone(),
                        note: bd.note,
                    })
                    .collect(),
            });
        }
        {
            let mut st = self
                .published
                .status
                .write()
                .unwrap_or_else(|e| e.into_inner());
            st.agent_names = agent_names;
            st.vips = vip_status;
            st.twin = self
                .settings
                .twin
                .as_ref()
                .map(|a| self.twin.status(a, now_ms, stale_ms));
        }
        let pushed = selections.len();
        let reply: SelectionSetReply =
            serde_json::from_value(self.client.call(Command::SelectionSet {
                controller: self.name.clone(),
                vips: selections,
            })?)?;
        for s in &reply.skipped {
            eprintln!("sluicectl: controller: sluiced skipped {s}");
        }
        self.published
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .last_push = Some(PushResult {
            unix_ms: unix_ms(),
            vips: pushed,
            skipped: reply.skipped.clone(),
        });
        let mut l = self
            .published
            .list
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *l = ServerList {
            generated_unix_ms: now_ms,
            vips: servers,
        };
        Ok(())
    }

    /// The twin's counts stop counting 3 intervals after its last answer.
    fn twin_stale_ms(&self) -> u64 {
        (3.0 * self.settings.interval_s * 1000.0) as u64
    }

    /// Fetches the twin controller's own link counts (`controller.twin`)
    /// for `link-load`; a twin that does not answer is logged once, and its
    /// counts stop counting when they are stale.
    fn poll_twin(&mut self, alpha: f64) {
        let Some(addr) = self.settings.twin.clone() else {
            self.twin = TwinLinks::default();
            self.twin_ok = None;
            return;
        };
        let timeout = Duration::from_secs_f64((self.settings.interval_s / 2.0).clamp(0.05, 1.0));
        let fetched = addr
            .parse::<SocketAddr>()
            .context("controller.twin")
            .and_then(|a| serverlist::fetch_link_counts(a, timeout));
        match fetched {
            Ok(counts) => {
                if self.twin_ok != Some(true) {
                    eprintln!(
                        "sluicectl: controller: pooling link counts with the twin's controller {} at {addr}",
                        if counts.controller.is_empty() { "(unnamed)" } else { &counts.controller }
                    );
                }
                self.twin_ok = Some(true);
                self.twin.absorb(&counts, alpha, unix_ms());
            }
            Err(e) => {
                if self.twin_ok != Some(false) {
                    eprintln!(
                        "sluicectl: controller: twin at {addr}: {e:#}; link-load counts this dispatcher's traffic alone once the twin's last counts are stale"
                    );
                }
                self.twin_ok = Some(false);
                self.twin.failed(format!("{e:#}"));
            }
        }
    }

    /// Records the result of one round for `GET /status`.
    fn record_round(&self, result: &Result<()>) {
        let mut st = self
            .published
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner());
        st.interval_s = self.settings.interval_s;
        st.smoothing = self.settings.smoothing;
        st.rounds += 1;
        if result.is_err() {
            st.failed_rounds += 1;
        }
        st.last_round = Some(RoundResult {
            unix_ms: unix_ms(),
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
        });
    }

    /// Updates the link and port meters from the counters.
    fn measure(&mut self, stats: &StatsReply, now: Instant) {
        let alpha = self.settings.smoothing;
        let mut per_link: HashMap<std::net::Ipv4Addr, (u64, u64)> = HashMap::new();
        for b in &stats.backends {
            let Ok(addr) = b.address.parse() else {
                continue;
            };
            let e = per_link.entry(addr).or_default();
            e.0 += b.tx_bytes + b.rx_bytes;
            e.1 += b.tx_packets + b.rx_packets;
        }
        // Our own counts (never the pooled ones): measured here and served
        // to the twin.
        let mut links: Vec<LinkCount> = per_link
            .iter()
            .map(|(addr, &(bytes, packets))| LinkCount {
                address: addr.to_string(),
                bytes,
                packets,
            })
            .collect();
        links.sort_by(|a, b| a.address.cmp(&b.address));
        let t_s = now.duration_since(self.epoch).as_secs_f64();
        self.links.update(t_s, &links, alpha);
        *self
            .published
            .link_counts
            .write()
            .unwrap_or_else(|e| e.into_inner()) = LinkCounts {
            controller: self.name.clone(),
            unix_ms: unix_ms(),
            links,
        };
        for p in &stats.ports {
            let dropped = p.drops.get("tx_queue_full").copied().unwrap_or(0) + p.nic.tx_errors;
            self.ports
                .entry(p.name.clone())
                .or_default()
                .update(p.tx_packets, dropped, alpha);
        }
    }
}

/// The `udp_probe` of a VIP in the server list: the `send` of its `udp`
/// health check, when the check uses the service's own port (a check on
/// another port speaks another protocol).
fn udp_probe(protocol: Protocol, check: Option<&HealthCheck>) -> Option<String> {
    let check = check?;
    (protocol == Protocol::Udp && check.kind == HealthKind::Udp && check.port.is_none())
        .then(|| check.send.clone())
        .flatten()
}

fn target_key(vip: &str, addr: std::net::Ipv4Addr, port: u16) -> String {
    format!("{vip} {addr}:{port}")
}

/// The health-check targets of a configuration.
fn targets(cfg: &Config) -> Vec<Target> {
    let mut out = Vec::new();
    for v in &cfg.vips {
        let check = v
            .health
            .clone()
            .unwrap_or_else(|| HealthCheck::default_for(v.protocol));
        if check.kind == HealthKind::None {
            continue;
        }
        let id = v.service();
        for b in &v.backends {
            let port = b.port_or(v.port);
            out.push(Target {
                key: target_key(&id, b.address, port),
                addr: SocketAddrV4::new(b.address, check.port.unwrap_or(port)),
                check: check.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctl::links::LinkMeter;

    fn key(last: u8) -> Key {
        (
            "198.18.100.1:80/tcp".to_string(),
            std::net::Ipv4Addr::new(198, 18, 2, last),
            8080,
        )
    }

    #[test]
    fn active_flows_are_smoothed_and_forgotten_when_gone() {
        let mut flows = Smoothed::default();
        let samples = |pairs: &[(u8, f64)]| -> HashMap<Key, f64> {
            pairs.iter().map(|&(k, x)| (key(k), x)).collect()
        };
        flows.update(&samples(&[(1, 10.0), (2, 0.0)]), 0.5);
        assert_eq!(flows.get(&key(1)), Some(10.0));
        assert_eq!(flows.get(&key(2)), Some(0.0));
        flows.update(&samples(&[(1, 30.0), (2, 100.0)]), 0.5);
        assert_eq!(flows.get(&key(1)), Some(20.0));
        assert_eq!(flows.get(&key(2)), Some(50.0));
        // Backend 2 gone from the counters: forgotten; back: starts afresh.
        flows.update(&samples(&[(1, 20.0)]), 0.5);
        assert_eq!(flows.get(&key(2)), None);
        flows.update(&samples(&[(1, 20.0), (2, 8.0)]), 0.5);
        assert_eq!(flows.get(&key(2)), Some(8.0));
        // A live change of smoothing applies to the existing averages.
        flows.update(&samples(&[(1, 40.0), (2, 8.0)]), 1.0);
        assert_eq!(flows.get(&key(1)), Some(40.0));
        flows.update(&samples(&[(1, 0.0), (2, 8.0)]), 0.25);
        assert_eq!(flows.get(&key(1)), Some(30.0));
    }

    #[test]
    fn spare_is_smoothed_per_report_not_per_interval() {
        let mut spares = SpareMeter::default();
        let fresh = |pairs: &[(&str, u64, f64)]| -> HashMap<String, (u64, f64)> {
            pairs
                .iter()
                .map(|&(n, seq, x)| (n.to_string(), (seq, x)))
                .collect()
        };
        spares.update(&fresh(&[("web1", 1, 0.8)]), 0.5);
        assert_eq!(spares.get("web1"), Some(0.8));
        // The same report seen again (the controller ticks faster than the
        // agent reports): not fed twice.
        spares.update(&fresh(&[("web1", 2, 0.2)]), 0.5);
        assert_eq!(spares.get("web1"), Some(0.5));
        spares.update(&fresh(&[("web1", 2, 0.2)]), 0.5);
        assert_eq!(spares.get("web1"), Some(0.5));
        // A smoothing change applies to the existing average.
        spares.update(&fresh(&[("web1", 3, 0.9), ("web2", 7, 0.3)]), 1.0);
        assert_eq!(spares.get("web1"), Some(0.9));
        assert_eq!(spares.get("web2"), Some(0.3));
        spares.update(&fresh(&[("web1", 4, 0.1), ("web2", 7, 0.3)]), 0.25);
        let v = spares.get("web1").unwrap_or(f64::NAN);
        assert!((v - 0.7).abs() < 1e-12, "{v}");
        // No fresh report: no spare (the policies' "no report" rule), and
        // the next report starts afresh.
        spares.update(&fresh(&[("web2", 7, 0.3)]), 0.25);
        assert_eq!(spares.get("web1"), None);
        spares.update(&fresh(&[("web1", 9, 0.4), ("web2", 7, 0.3)]), 0.25);
        assert_eq!(spares.get("web1"), Some(0.4));
        assert_eq!(spares.get("nobody"), None);
    }

    #[test]
    fn link_and_port_meters_follow_a_smoothing_change() {
        let mut link = LinkMeter::default();
        link.update(0.0, 0, 0, 0.5);
        assert!(link.rates().is_none(), "a rate needs two readings");
        link.update(1.0, 1000, 10, 0.5);
        link.update(2.0, 4000, 40, 0.5);
        assert_eq!(link.rates(), Some((2000.0, 20.0)));
        // smoothing = 1 from now on: the existing average follows at once.
        link.update(3.0, 4000, 40, 1.0);
        assert_eq!(link.rates(), Some((0.0, 0.0)));

        let mut port = PortMeter::default();
        port.update(0, 0, 0.5);
        port.update(100, 0, 0.5);
        assert_eq!(port.value(), 0.0);
        port.update(150, 50, 0.5);
        assert_eq!(port.value(), 0.25);
        port.update(150, 150, 1.0);
        assert_eq!(port.value(), 1.0);
    }

    #[test]
    fn udp_probe_comes_from_a_udp_check_on_the_service_port() {
        let mut check = HealthCheck::default_for(Protocol::Udp);
        check.kind = HealthKind::Udp;
        check.send = Some("ping".into());
        assert_eq!(
            udp_probe(Protocol::Udp, Some(&check)),
            Some("ping".to_string())
        );
        assert_eq!(udp_probe(Protocol::Tcp, Some(&check)), None);
        assert_eq!(udp_probe(Protocol::Udp, None), None);
        let mut other_port = check.clone();
        other_port.port = Some(5353);
        assert_eq!(udp_probe(Protocol::Udp, Some(&other_port)), None);
        let mut no_send = check;
        no_send.send = None;
        assert_eq!(udp_probe(Protocol::Udp, Some(&no_send)), None);
    }
}
