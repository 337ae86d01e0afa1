//! `sluicectl run`: the controller. Each interval it reads the running
//! configuration and counters from `sluiced`, combines them with its health
//! checks and the agents' reports, computes every VIP's selection with the
//! VIP's policy (ctl::policy) and pushes the tables to `sluiced`. It also
//! serves the server list (seed 003). `sluiced` never computes a policy:
//! without a controller it keeps the last tables it was given.

use anyhow::{Context, Result};
use ctl::agent::{unix_ms, Receiver};
use ctl::health::{HealthChecker, Target};
use ctl::policy::{self, BackendInput, Ewma, LinkLoad, Params};
use ctl::serverlist::{self, Server, ServerList, Status, VipServers};
use firmware_config::client::Client;
use firmware_config::control::{
    BackendSelection, Command, ConfigDumpReply, SelectionSetReply, StatsReply, VipSelection,
};
use firmware_config::{Config, HealthCheck, HealthKind};
use std::collections::HashMap;
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A backend's identity in the controller: (VIP `address:port/protocol`,
/// backend address, backend port).
type Key = (String, std::net::Ipv4Addr, u16);

/// Smoothed traffic on one backend's link, from the dataplane's counters.
#[derive(Default)]
struct LinkMeter {
    last: Option<(Instant, u64, u64)>,
    bytes: Option<Ewma>,
    packets: Option<Ewma>,
}

impl LinkMeter {
    /// Records the backend's counters (bytes and packets to + from it).
    fn update(&mut self, now: Instant, bytes: u64, packets: u64, alpha: f64) {
        if let Some((t, b0, p0)) = self.last {
            let dt = now.duration_since(t).as_secs_f64();
            if let (Some(br), Some(pr)) =
                (policy::rate(b0, bytes, dt), policy::rate(p0, packets, dt))
            {
                self.bytes
                    .get_or_insert_with(|| Ewma::new(alpha))
                    .update(br);
                self.packets
                    .get_or_insert_with(|| Ewma::new(alpha))
                    .update(pr);
            }
        }
        self.last = Some((now, bytes, packets));
    }

    fn load(&self, drop_fraction: f64) -> Option<LinkLoad> {
        Some(LinkLoad {
            bytes_per_s: self.bytes.as_ref()?.value()?,
            packets_per_s: self.packets.as_ref()?.value()?,
            drop_fraction,
        })
    }
}

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
            self.fraction
                .get_or_insert_with(|| Ewma::new(alpha))
                .update(f);
        }
        self.last = Some((sent, dropped));
    }

    fn value(&self) -> f64 {
        self.fraction.as_ref().and_then(Ewma::value).unwrap_or(0.0)
    }
}

struct Controller {
    name: String,
    client: Client,
    settings: firmware_config::Controller,
    health: HealthChecker,
    agents: Option<Arc<Mutex<Receiver>>>,
    list: Arc<RwLock<ServerList>>,
    /// By backend address: a server's link carries the traffic of every
    /// VIP and port it serves (seed 000 measures links, not services).
    links: HashMap<std::net::Ipv4Addr, LinkMeter>,
    ports: HashMap<String, PortMeter>,
    /// Whether sluiced answered last time (to log only the changes).
    connected: Option<bool>,
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
    let list = Arc::new(RwLock::new(ServerList::default()));
    if let Some(addr) = &k.server_list {
        let l = TcpListener::bind(addr)
            .with_context(|| format!("serving the server list on TCP {addr}"))?;
        threads.push(serverlist::serve(l, Arc::clone(&list), Arc::clone(&stop))?);
        eprintln!("sluicectl: controller: server list on http://{addr}/servers");
    }
    let mut c = Controller {
        name: name.unwrap_or_else(|| format!("sluicectl-run[{}]", std::process::id())),
        client: Client::new(socket.clone()),
        settings: k,
        health: HealthChecker::new(),
        agents,
        list,
        links: HashMap::new(),
        ports: HashMap::new(),
        connected: None,
    };
    eprintln!(
        "sluicectl: controller {} started: sluiced at {}, every {} s",
        c.name,
        socket.display(),
        c.settings.interval_s
    );
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match c.tick() {
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
        self.health.set_targets(targets(&cfg));
        let stats: StatsReply = serde_json::from_value(self.client.call(Command::Stats)?)?;
        let now = Instant::now();
        self.measure(&stats, now);
        let health = self.health.snapshot();
        let now_ms = unix_ms();
        let agents = self
            .agents
            .as_ref()
            .map(|a| a.lock().unwrap_or_else(|e| e.into_inner()));
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
        let params = Params {
            fuzz: self.settings.fuzz,
        };
        let mut selections = Vec::new();
        let mut servers = Vec::new();
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
                    let spare = agents
                        .as_ref()
                        .and_then(|a| a.latest(&agent_name, now_ms))
                        .map(|r| {
                            r.metrics
                                .custom
                                .unwrap_or(r.metrics.cpu_idle)
                                .clamp(0.0, 1.0)
                        });
                    BackendInput {
                        address: b.address,
                        port,
                        configured_weight: b.weight,
                        drain: b.drain,
                        up: h.is_none_or(|h| h.up),
                        priority: b.priority,
                        group: b.group.clone(),
                        link: self.links.get(&b.address).and_then(|l| l.load(drop)),
                        active_flows: active.get(&key).map(|&n| n as f64),
                        rtt_ms: h.and_then(|h| h.rtt_ms),
                        spare,
                    }
                })
                .collect();
            let d = policy::decide(v.policy, v.group_policy, &inputs, &params);
            servers.push(VipServers {
                name: v.label(),
                address: v.address.to_string(),
                port: v.port,
                protocol: v.protocol.to_string(),
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
                        connections: i.active_flows.unwrap_or(0.0) as u64,
                        priority: i.priority,
                        group: i.group.clone(),
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
        drop(agents);
        let reply: SelectionSetReply =
            serde_json::from_value(self.client.call(Command::SelectionSet {
                controller: self.name.clone(),
                vips: selections,
            })?)?;
        for s in &reply.skipped {
            eprintln!("sluicectl: controller: sluiced skipped {s}");
        }
        let mut l = self.list.write().unwrap_or_else(|e| e.into_inner());
        *l = ServerList {
            generated_unix_ms: now_ms,
            vips: servers,
        };
        Ok(())
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
        for (addr, (bytes, packets)) in &per_link {
            self.links
                .entry(*addr)
                .or_default()
                .update(now, *bytes, *packets, alpha);
        }
        self.links.retain(|a, _| per_link.contains_key(a));
        for p in &stats.ports {
            let dropped = p.drops.get("tx_queue_full").copied().unwrap_or(0) + p.nic.tx_errors;
            self.ports
                .entry(p.name.clone())
                .or_default()
                .update(p.tx_packets, dropped, alpha);
        }
    }
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
