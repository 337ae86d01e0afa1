//! Start-up, the management loop, the control handler and shutdown.

use crate::worker::WorkerCtx;
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use dataplane::appliance::{arp_request, mac_string, Appliance};
use dataplane::control::{ControlSocket, Handler};
use dataplane::counters::WorkerCounters;
use dataplane::events::{EventRing, HintRing, NeighbourHint};
use dataplane::flowmirror::FlowMirror;
use dataplane::pipeline::{timeouts_ms, Worker};
use dataplane::tables::Tables;
use dpdk::{Eal, Mbuf, Mempool, Port, PortConf};
use firmware_config::control::{
    ChangeReply, Command, ConfigDumpReply, NicStats, PortStatus, StatusReply, WorkerStatus,
};
use firmware_config::{Config, Environment};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RX_DESC: u16 = 1024;
const TX_DESC: u16 = 1024;
const HINT_RING: usize = 4096;
const SLOW_TX_RING: usize = 1024;
/// How often the management loop wakes up by itself (ARP ageing and
/// retries, draining the flow events). Workers wake it sooner for a new
/// neighbour or a half-full event ring; otherwise it sleeps, because where
/// the main lcore shares a CPU with a worker every wake-up preempts the
/// worker (with a 10 ms tick that was ≈ 100 preemptions/s and a longer
/// latency tail).
const TICK: Duration = Duration::from_millis(250);
/// Least time between two ARP requests for the same address.
const ARP_RETRY: Duration = Duration::from_millis(500);

/// The DPDK device name of a port: the PCI address, or the vdev name before
/// its first comma.
fn device_name(p: &firmware_config::Port) -> String {
    match (&p.pci, &p.vdev) {
        (Some(pci), _) => pci.clone(),
        (None, Some(v)) => v.split(',').next().unwrap_or("").to_string(),
        (None, None) => String::new(),
    }
}

fn eal_args(cfg: &Config) -> Vec<String> {
    let mut lcores = vec![cfg.eal.main_core];
    lcores.extend(&cfg.eal.worker_cores);
    let (lcore_flag, lcore_arg) = match &cfg.eal.lcores {
        // An explicit lcore@cpu map (validated by the config).
        Some(map) => ("--lcores", map.replace(' ', "")),
        None => (
            "-l",
            lcores
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let mut a = vec![
        "sluiced".to_string(),
        lcore_flag.to_string(),
        lcore_arg,
        "--main-lcore".to_string(),
        cfg.eal.main_core.to_string(),
        "-m".to_string(),
        cfg.eal.memory_mb.to_string(),
    ];
    if cfg.eal.hugepages {
        // No hugepage files are left behind when the process exits.
        a.push("--in-memory".to_string());
    } else {
        a.push("--no-huge".to_string());
    }
    if let Some(prefix) = &cfg.eal.file_prefix {
        a.push("--file-prefix".to_string());
        a.push(prefix.clone());
    }
    for p in &cfg.ports {
        if let Some(v) = &p.vdev {
            a.push("--vdev".to_string());
            a.push(v.clone());
        }
        if let Some(pci) = &p.pci {
            a.push("-a".to_string());
            a.push(pci.clone());
        }
    }
    a.extend(cfg.eal.extra_args.iter().cloned());
    a
}

/// Locks `m`, ignoring poisoning: a control connection thread that
/// panicked must not take the management loop and every later request down
/// with it (the behaviour each call site had spelled out before).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the control handler and the management loop share.
struct Shared {
    app: Mutex<Appliance>,
    tables: Arc<ArcSwap<Tables>>,
    counters: Vec<Arc<WorkerCounters>>,
    ports: Vec<(Port, String, String)>,
    lcores: Vec<u32>,
    flow_capacity: u64,
    started: Instant,
    config_file: String,
    events_drained: AtomicU64,
    /// The workers' flows, kept from their flow events (`flow list`).
    mirror: Mutex<FlowMirror>,
    /// The machine as seen before DPDK pinned this process to its main
    /// lcore (after that, the visible CPU count is 1): live changes are
    /// validated against it.
    env: Environment,
}

impl Shared {
    fn nic_stats(&self) -> Vec<NicStats> {
        self.ports
            .iter()
            .map(|(p, _, _)| {
                p.stats()
                    .map(|s| NicStats {
                        rx_packets: s.rx_packets,
                        tx_packets: s.tx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_bytes: s.tx_bytes,
                        rx_missed: s.rx_missed,
                        rx_errors: s.rx_errors,
                        tx_errors: s.tx_errors,
                        rx_nombuf: s.rx_nombuf,
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    fn status(&self) -> StatusReply {
        let app = lock(&self.app);
        let tables = self.tables.load();
        let ports = app
            .config
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (port, device, driver) = &self.ports[i];
                let link = port.link().ok();
                PortStatus {
                    index: i as u16,
                    name: p.name.clone(),
                    device: device.clone(),
                    driver: driver.clone(),
                    mac: mac_string(app.port_macs[i]),
                    address: p.address.to_string(),
                    role: p.role.to_string(),
                    link_up: link.is_some_and(|l| l.up),
                    speed_mbps: link.map_or(0, |l| l.speed_mbps),
                }
            })
            .collect();
        let workers = self
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let loops = c.loops.get().max(1);
                WorkerStatus {
                    id: i as u16,
                    lcore: self.lcores[i],
                    active_flows: c.flows.created.get().saturating_sub(c.flows.expired.get()),
                    created_flows: c.flows.created.get(),
                    flow_capacity: self.flow_capacity,
                    busy_percent: c.busy_loops.get() as f64 * 100.0 / loops as f64,
                    rx_packets: c.ports.iter().map(|p| p.rx_packets.get()).sum(),
                    busy_cycles: c.busy_cycles.get(),
                }
            })
            .collect();
        StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            dpdk_version: dpdk::version(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            config_file: self.config_file.clone(),
            ports,
            workers,
            vips: app.config.vips.len(),
            backends: tables.backends.iter().flatten().count(),
            tables_generation: tables.generation,
        }
    }
}

impl Handler for Shared {
    fn handle(&self, cmd: &Command) -> Result<serde_json::Value, String> {
        let v = match cmd {
            Command::Status => serde_json::to_value(self.status()),
            Command::Stats => {
                let nic = self.nic_stats();
                let app = lock(&self.app);
                let tables = self.tables.load();
                serde_json::to_value(app.stats(
                    &tables,
                    &self.counters,
                    &nic,
                    self.events_drained.load(Ordering::Relaxed),
                    self.flow_capacity * self.counters.len() as u64,
                    self.started.elapsed().as_secs_f64(),
                ))
            }
            Command::VipList => {
                let app = lock(&self.app);
                let tables = self.tables.load();
                serde_json::to_value(app.vip_list(&tables))
            }
            Command::ConfigDump => {
                let app = lock(&self.app);
                serde_json::to_value(ConfigDumpReply {
                    toml: app.config.to_toml(),
                })
            }
            Command::ConfigApply { file, text } => {
                let new = firmware_config::parse_with(text, file, &self.env)
                    .map_err(|e| format!("{e}\nnothing was changed"))?;
                let mut app = lock(&self.app);
                firmware_config::edit::check_live(&app.config, &new, text, file)
                    .map_err(|e| format!("{e}\nnothing was changed"))?;
                let changes = describe_apply(&app.config, &new);
                serde_json::to_value(self.install(&mut app, new, changes)?)
            }
            Command::VipAdd { .. }
            | Command::VipSet { .. }
            | Command::VipRemove { .. }
            | Command::BackendAdd { .. }
            | Command::BackendRemove { .. }
            | Command::BackendSet { .. }
            | Command::PolicySet { .. } => {
                let mut app = lock(&self.app);
                let (new, changes) = firmware_config::edit::apply(&app.config, cmd, &self.env)
                    .map_err(|e| format!("{e}\nnothing was changed"))?;
                serde_json::to_value(self.install(&mut app, new, changes)?)
            }
            Command::PolicyShow { vip } => {
                let app = lock(&self.app);
                serde_json::to_value(app.policy_show(vip, self.started.elapsed().as_secs_f64())?)
            }
            Command::FlowList {
                vip,
                backend,
                limit,
            } => {
                let app = lock(&self.app);
                let tables = self.tables.load();
                let dropped = self
                    .counters
                    .iter()
                    .map(|c| c.flows.events_dropped.get())
                    .sum();
                let mirror = lock(&self.mirror);
                let mut reply = app.flow_list(
                    &mirror,
                    &tables,
                    vip.as_deref(),
                    backend.as_deref(),
                    *limit,
                    self.started.elapsed().as_secs_f64(),
                )?;
                reply.events_dropped = dropped;
                serde_json::to_value(reply)
            }
            Command::SelectionSet { controller, vips } => {
                let mut app = lock(&self.app);
                let mut reply =
                    app.apply_selection(controller, vips, self.started.elapsed().as_secs_f64());
                self.publish(&mut app);
                reply.tables_generation = app.generation();
                serde_json::to_value(reply)
            }
        };
        v.map_err(|e| format!("cannot encode the reply: {e}"))
    }
}

impl Shared {
    /// Publishes new tables built from `app` (the caller holds its lock).
    fn publish(&self, app: &mut Appliance) {
        self.tables.store(Arc::new(app.build_tables()));
    }

    /// Makes a validated configuration the running one, publishes its
    /// tables and logs what changed.
    fn install(
        &self,
        app: &mut Appliance,
        new: Config,
        changes: Vec<String>,
    ) -> Result<ChangeReply, String> {
        app.reconfigure(new)
            .map_err(|e| format!("{e}; nothing was changed"))?;
        self.publish(app);
        for c in &changes {
            eprintln!("sluiced: {c}");
        }
        Ok(ChangeReply {
            changes,
            tables_generation: app.generation(),
        })
    }
}

/// One line per VIP a whole-file apply adds, removes or changes.
fn describe_apply(old: &Config, new: &Config) -> Vec<String> {
    let key = |v: &firmware_config::Vip| (v.address, v.port, v.protocol);
    let mut out = Vec::new();
    for v in &new.vips {
        match old.vips.iter().find(|o| key(o) == key(v)) {
            None => out.push(format!("added VIP {}", v.label())),
            Some(o) if o != v => out.push(format!("changed VIP {}", v.label())),
            Some(_) => {}
        }
    }
    for o in &old.vips {
        if !new.vips.iter().any(|v| key(o) == key(v)) {
            out.push(format!("removed VIP {}", o.label()));
        }
    }
    if old.controller != new.controller {
        out.push("changed [controller]".into());
    }
    if out.is_empty() {
        out.push("no change".into());
    }
    out
}

pub fn run(config_path: &Path, cfg: Config) -> Result<()> {
    let started = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let env = Environment::current();
    let eal = Eal::init(&eal_args(&cfg)).context("starting DPDK (EAL)")?;
    let n_workers = cfg.eal.worker_cores.len() as u16;

    let mut ports = Vec::new();
    for p in &cfg.ports {
        let dev = device_name(p);
        let port = Port::by_name(&dev).with_context(|| format!("port {:?}", p.name))?;
        ports.push((port, dev));
    }
    let n_mbufs = (ports.len() as u32
        * u32::from(n_workers)
        * (u32::from(RX_DESC) + u32::from(TX_DESC) + 512)
        + 4096)
        .max(8191);
    let pool = Mempool::new("sluice_mbufs", n_mbufs, 256, 0).context("creating the mbuf pool")?;
    let conf = PortConf {
        rx_queues: n_workers,
        tx_queues: n_workers,
        rx_desc: RX_DESC,
        tx_desc: TX_DESC,
        rss: true,
        promiscuous: false,
    };
    let mut macs = Vec::new();
    for (p, (port, dev)) in cfg.ports.iter().zip(&ports) {
        port.configure(&conf, &pool)
            .with_context(|| format!("configuring port {:?} ({dev})", p.name))?;
        port.start()
            .with_context(|| format!("starting port {:?} ({dev})", p.name))?;
        let mac = match p.mac {
            None => port.mac()?,
            Some(mac) => {
                if let Err(e) = port.set_mac(mac.0) {
                    // The dataplane sources and accepts frames for the
                    // configured MAC itself; promiscuous mode lets frames
                    // addressed to it in.
                    eprintln!(
                        "sluiced: port {:?}: the driver cannot set MAC {mac} ({e}); using it in software with promiscuous mode",
                        p.name
                    );
                    port.enable_promiscuous().with_context(|| {
                        format!("port {:?}: enabling promiscuous mode for MAC {mac}", p.name)
                    })?;
                }
                mac.0
            }
        };
        macs.push(mac);
    }

    let mut app = Appliance::new(cfg.clone(), macs.clone());
    let tables = Arc::new(ArcSwap::from_pointee(app.build_tables()));
    let clock = crate::worker::FlowClock::new(dpdk::rdtsc(), dpdk::tsc_hz());
    let f = &cfg.flows;
    let timeouts = timeouts_ms(
        f.syn_timeout_s,
        f.established_timeout_s,
        f.closing_timeout_s,
        f.udp_timeout_s,
    );
    let slow_tx: Vec<Arc<ArrayQueue<Mbuf>>> = (0..ports.len())
        .map(|_| Arc::new(ArrayQueue::new(SLOW_TX_RING)))
        .collect();

    let mut counters = Vec::new();
    let mut event_rings: Vec<Arc<EventRing>> = Vec::new();
    let mut hint_rings: Vec<Arc<HintRing>> = Vec::new();
    let mut contexts = Vec::new();
    for w in 0..n_workers {
        let c = Arc::new(WorkerCounters::default());
        let ev = Arc::new(EventRing::new(f.event_ring_size as usize));
        let hints = Arc::new(HintRing::new(HINT_RING));
        counters.push(Arc::clone(&c));
        event_rings.push(Arc::clone(&ev));
        hint_rings.push(Arc::clone(&hints));
        let mut worker = Worker::new(w, f.capacity_per_worker as usize, timeouts, c, ev, hints);
        worker.set_waker(std::thread::current());
        contexts.push(WorkerCtx {
            worker,
            rx: ports.iter().map(|(p, _)| p.rx_queue(w)).collect(),
            tx: ports.iter().map(|(p, _)| p.tx_queue(w)).collect(),
            tables: Arc::clone(&tables),
            running: Arc::clone(&running),
            clock,
            slow_tx: if w == 0 { slow_tx.clone() } else { Vec::new() },
        });
    }
    for (ctx, &lcore) in contexts.into_iter().zip(&cfg.eal.worker_cores) {
        let job = move || {
            // Before polling starts: not on the fast path.
            let problems = worker_cpu_problems();
            if !problems.is_empty() {
                eprintln!(
                    "sluiced: warning: worker lcore {lcore} does not have its CPU to itself \
                     (expect a longer latency tail; docs/performance.md, \"Tuning an appliance\"): {}",
                    problems.join("; ")
                );
            }
            ctx.run()
        };
        if let Err(e) = dpdk::launch_on_lcore(lcore, job) {
            // Stop the workers already running before EAL is torn down.
            shutdown(&running, &cfg, &ports);
            return Err(e).with_context(|| format!("launching the worker on lcore {lcore}"));
        }
    }

    let shared = Arc::new(Shared {
        app: Mutex::new(app),
        tables: Arc::clone(&tables),
        counters,
        ports: ports
            .iter()
            .map(|(p, dev)| (*p, dev.clone(), p.driver()))
            .collect(),
        lcores: cfg.eal.worker_cores.clone(),
        flow_capacity: u64::from(f.capacity_per_worker),
        started,
        config_file: config_path.display().to_string(),
        events_drained: AtomicU64::new(0),
        env,
        mirror: Mutex::new(FlowMirror::new(
            f.capacity_per_worker as usize * usize::from(n_workers),
        )),
    });
    let control_stop = Arc::new(AtomicBool::new(false));
    let control = match ControlSocket::bind(Path::new(&cfg.control.socket)) {
        Ok(sock) => sock.serve(
            Arc::clone(&shared) as Arc<dyn Handler>,
            Arc::clone(&control_stop),
        ),
        Err(e) => {
            shutdown(&running, &cfg, &ports);
            bail!("control socket {}: {e}", cfg.control.socket);
        }
    };
    eprintln!(
        "sluiced: ready: {} port(s), {} worker(s) on lcores {:?}, {} VIP(s), control socket {}",
        ports.len(),
        n_workers,
        cfg.eal.worker_cores,
        cfg.vips.len(),
        cfg.control.socket
    );

    // Management loop.
    let mut last_arp: HashMap<(u16, u32), Instant> = HashMap::new();
    let mut last_sweep = Instant::now() - Duration::from_secs(10);
    while !stop.load(Ordering::Relaxed) {
        let now_s = started.elapsed().as_secs_f64();
        let mut changed = false;
        let mut wanted: Vec<(u16, u32)> = Vec::new();
        {
            let mut app = lock(&shared.app);
            for ring in &hint_rings {
                while let Some(h) = ring.pop() {
                    match h {
                        NeighbourHint::Learned { port, ip, mac } => {
                            changed |= app.learn(port, ip, mac, now_s);
                        }
                        NeighbourHint::Wanted { port, ip } => wanted.push((port, ip)),
                    }
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                changed |= app.age_neighbours(now_s);
                wanted.extend(app.wanted_neighbours(now_s));
            }
            if changed {
                tables.store(Arc::new(app.build_tables()));
            }
        }
        for (port, ip) in wanted {
            let due = last_arp
                .get(&(port, ip))
                .is_none_or(|t| t.elapsed() >= ARP_RETRY);
            if due {
                last_arp.insert((port, ip), Instant::now());
                send_arp_request(&pool, &slow_tx, &cfg, &macs, port, ip);
            }
        }
        // Flow events feed the flow mirror (`flow list`); draining keeps
        // the rings from filling up.
        let mut drained = 0;
        {
            let mut mirror = lock(&shared.mirror);
            for ring in &event_rings {
                while let Some(ev) = ring.pop() {
                    mirror.apply(&ev, now_s);
                    drained += 1;
                }
            }
        }
        shared.events_drained.fetch_add(drained, Ordering::Relaxed);
        // Workers unpark this thread when they push a neighbour hint or
        // their event ring is half full.
        std::thread::park_timeout(TICK);
    }

    eprintln!("sluiced: stopping");
    control_stop.store(true, Ordering::SeqCst);
    let _ = control.join();
    shutdown(&running, &cfg, &ports);
    // Mbufs still queued for the slow path go back to the pool before EAL
    // cleanup.
    drop(slow_tx);
    drop(shared);
    drop(eal);
    eprintln!("sluiced: stopped");
    Ok(())
}

/// What keeps the calling (worker) thread's CPU from being its own; see
/// `firmware_config::preflight`.
fn worker_cpu_problems() -> Vec<String> {
    // The calling thread's affinity.
    let Some(cpus) = core_affinity::get_core_ids() else {
        return vec!["its CPU affinity could not be read".into()];
    };
    let cpus: Vec<usize> = cpus.into_iter().map(|c| c.id).collect();
    let read = |f: &str| std::fs::read_to_string(Path::new("/sys/devices/system/cpu").join(f)).ok();
    firmware_config::preflight::check(
        &cpus,
        read("isolated").as_deref(),
        read("nohz_full").as_deref(),
    )
}

fn send_arp_request(
    pool: &Mempool,
    slow_tx: &[Arc<ArrayQueue<Mbuf>>],
    cfg: &Config,
    macs: &[[u8; 6]],
    port: u16,
    ip: u32,
) {
    let Some(p) = cfg.ports.get(port as usize) else {
        return;
    };
    let frame = arp_request(macs[port as usize], u32::from(p.address.addr), ip);
    let Some(mut m) = pool.alloc() else {
        return;
    };
    let Some(buf) = m.append(frame.len() as u16) else {
        return;
    };
    buf.copy_from_slice(&frame);
    let _ = slow_tx[port as usize].push(m);
}

/// Stops the workers, then stops and closes every port (which also flushes
/// pcap output files).
fn shutdown(running: &AtomicBool, cfg: &Config, ports: &[(Port, String)]) {
    running.store(false, Ordering::SeqCst);
    for &lcore in &cfg.eal.worker_cores {
        dpdk::wait_lcore(lcore);
    }
    for (p, _) in ports {
        let _ = p.stop();
        let _ = p.close();
    }
}
