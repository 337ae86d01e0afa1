//! `sluicectl`: the Sluice control CLI. Talks to `sluiced` over its control
//! socket (docs/control-protocol.md) and checks configuration files.
//!
//! Exit codes: 0 success; 1 sluiced answered with an error; 2 bad usage or
//! an invalid configuration; 3 sluiced is not reachable.

mod controller;
mod table;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use firmware_config::client::{Client, CtlError};
use firmware_config::control::{
    ChangeReply, Command, ConfigDumpReply, FlowListReply, PolicyShowReply, SelectionKind,
    StatsReply, StatusReply, VipListReply,
};
use firmware_config::{Backend, MacAddr, Mode, Policy, Protocol, Vip};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use table::{human_bytes, Table};

/// Control the Sluice load-balancing dataplane.
#[derive(Parser, Debug)]
#[command(
    name = "sluicectl",
    version,
    about = "Control the Sluice load-balancing dataplane over its control socket"
)]
struct Cli {
    /// sluiced's control socket (default: $SLUICE_SOCKET, else /run/sluice/sluiced.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Version, uptime, ports with link state, workers.
    Status {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Every counter: ports (with drops by reason), VIPs, backends, flows.
    Stats {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// VIPs: list, add, change, remove.
    Vip {
        #[command(subcommand)]
        cmd: VipCmd,
    },
    /// Backends of a VIP: add, remove, re-weight, drain, undrain.
    Backend {
        #[command(subcommand)]
        cmd: BackendCmd,
    },
    /// A VIP's balancing policy: set it, or explain its decision.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Flows in the dataplane.
    Flow {
        #[command(subcommand)]
        cmd: FlowCmd,
    },
    /// Configuration files: check, apply to the running sluiced, dump.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The controller: health checks, agents, policies, server list.
    Run {
        /// Configuration file (the appliance's, with its [controller] section).
        #[arg(long)]
        config: PathBuf,
        /// Name the controller reports to sluiced (default: sluicectl-run[PID]).
        #[arg(long)]
        name: Option<String>,
    },
    /// A backend agent: reports load to the controller every interval.
    Agent {
        /// The controller's agent address (its [controller] agent_listen).
        #[arg(long)]
        controller: std::net::SocketAddrV4,
        /// File with the key shared with the controller.
        #[arg(long)]
        key_file: PathBuf,
        /// Name to report under (a backend's `agent`, or its address).
        #[arg(long)]
        name: String,
        /// Seconds between reports.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Count established connections on this local port.
        #[arg(long)]
        service_port: Option<u16>,
        /// Shell command whose first printed number is reported as `custom`
        /// (the backend's spare capacity, 0 to 1, for the agent policies).
        #[arg(long)]
        command: Option<String>,
        /// Stop after this many reports.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Seed 003's client: fetch the server list, pick a server, connect
    /// (TCP VIPs) or send a UDP probe that must be answered (UDP VIPs).
    Pick {
        /// The VIP: name, address:port/protocol or address:port.
        vip: String,
        /// The controller's server-list address.
        #[arg(long)]
        from: SocketAddr,
        /// Connect (or UDP answer) timeout in seconds.
        #[arg(long, default_value_t = 1.0)]
        timeout: f64,
        /// UDP VIPs: the datagram to send, instead of the list's
        /// `udp_probe` (the VIP's health-check `send`; empty without one).
        #[arg(long)]
        udp_probe: Option<String>,
        /// Print the steps taken.
        #[arg(long, short)]
        verbose: bool,
    },
}

#[derive(Subcommand, Debug)]
enum VipCmd {
    /// VIPs with their backends and Maglev shares.
    List {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Add a VIP with its backends.
    Add {
        /// address:port/protocol, e.g. 198.18.100.2:80/tcp.
        vip: String,
        /// dr or nat.
        #[arg(long)]
        mode: String,
        #[arg(long)]
        name: Option<String>,
        /// maglev, link-load, least-conn, response-time, agent-load, capacity-ranges.
        #[arg(long)]
        policy: Option<String>,
        /// Backends: address[:port][@weight]; at least one.
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
    },
    /// Change a VIP's name, mode or policies, or clear its name or group policy.
    Set {
        vip: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        group_policy: Option<String>,
        /// Remove an optional field, as if absent from the file: `name` (the
        /// VIP is labelled address:port/protocol again) or `group-policy`
        /// (groups are chosen by maglev). Repeatable.
        #[arg(long, value_name = "FIELD", value_parser = parse_vip_field)]
        clear: Vec<firmware_config::control::VipField>,
    },
    /// Remove a VIP (its connections end).
    Remove { vip: String },
}

#[derive(Subcommand, Debug)]
enum BackendCmd {
    /// Add a backend to a VIP.
    Add {
        vip: String,
        /// address or address:port.
        backend: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[arg(long, default_value_t = 0)]
        priority: u32,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        egress: Option<String>,
        /// Name its agent reports under.
        #[arg(long)]
        agent: Option<String>,
        /// Add it draining.
        #[arg(long)]
        drain: bool,
    },
    /// Remove a backend (its connections move to the others).
    Remove { vip: String, backend: String },
    /// Change a backend's weight, priority or group, or clear its group.
    Set {
        vip: String,
        backend: String,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        priority: Option<u32>,
        #[arg(long)]
        group: Option<String>,
        /// Remove an optional field, as if absent from the file: `group`
        /// (the backend belongs to no group). Repeatable.
        #[arg(long, value_name = "FIELD", value_parser = parse_backend_field)]
        clear: Vec<firmware_config::control::BackendField>,
    },
    /// No new connections; established ones stay until they end.
    Drain { vip: String, backend: String },
    /// Take new connections again.
    Undrain { vip: String, backend: String },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Set a VIP's policy.
    Set {
        vip: String,
        policy: String,
        /// Policy choosing among backend groups.
        #[arg(long)]
        group_policy: Option<String>,
    },
    /// Explain a VIP's selection: inputs per backend, weights, ranges.
    Show {
        vip: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FlowCmd {
    /// List flows (oldest first).
    List {
        #[arg(long)]
        vip: Option<String>,
        #[arg(long)]
        backend: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a configuration file without applying it.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Validate a whole file and apply its VIPs, backends and controller
    /// settings to the running sluiced (nothing changes on any error).
    Apply { file: PathBuf },
    /// Print the running configuration as TOML.
    Dump,
}

/// The socket given on the command line or in the environment, if any.
fn socket_override(cli: &Cli) -> Option<PathBuf> {
    cli.socket
        .clone()
        .or_else(|| std::env::var_os("SLUICE_SOCKET").map(PathBuf::from))
}

fn socket_path(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .or_else(|| std::env::var_os("SLUICE_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(firmware_config::Control::default().socket))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<CtlError>() {
                Some(CtlError::Unreachable { .. }) => 3,
                Some(CtlError::Refused(_)) => 1,
                Some(CtlError::Protocol(_)) => 1,
                None => 2,
            };
            eprintln!("sluicectl: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// A policy, mode or protocol as the configuration spells it.
fn parse_spelled<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse::<T>().map_err(|e| anyhow::anyhow!(e))
}

/// `vip set --clear FIELD`: the field as its option is spelled
/// (`group-policy`) or as its key (`group_policy`).
fn parse_vip_field(s: &str) -> Result<firmware_config::control::VipField, String> {
    s.replace('-', "_").parse()
}

/// `backend set --clear FIELD`.
fn parse_backend_field(s: &str) -> Result<firmware_config::control::BackendField, String> {
    s.replace('-', "_").parse()
}

/// `address:port/protocol`.
fn parse_service(s: &str) -> Result<(Ipv4Addr, u16, Protocol)> {
    let bad = || anyhow::anyhow!("\"{s}\" is not address:port/protocol, e.g. 198.18.100.2:80/tcp");
    let (ap, proto) = s.split_once('/').ok_or_else(bad)?;
    let (a, p) = ap.split_once(':').ok_or_else(bad)?;
    let proto: Protocol = proto.parse().map_err(|_| bad())?;
    Ok((
        a.parse().map_err(|_| bad())?,
        p.parse().map_err(|_| bad())?,
        proto,
    ))
}

/// `address[:port][@weight]`.
fn parse_backend(s: &str) -> Result<Backend> {
    let bad = || anyhow::anyhow!("\"{s}\" is not address[:port][@weight], e.g. 198.18.2.11:8080@2");
    let (ap, weight) = match s.split_once('@') {
        Some((ap, w)) => (ap, w.parse().map_err(|_| bad())?),
        None => (s, 1),
    };
    let (address, port) = match ap.split_once(':') {
        Some((a, p)) => (
            a.parse().map_err(|_| bad())?,
            Some(p.parse().map_err(|_| bad())?),
        ),
        None => (ap.parse().map_err(|_| bad())?, None),
    };
    Ok(Backend {
        address,
        port,
        weight,
        mac: None,
        egress: None,
        drain: false,
        priority: 0,
        group: None,
        agent: None,
    })
}

fn print_changes(v: serde_json::Value) -> Result<()> {
    let r: ChangeReply = serde_json::from_value(v)?;
    for c in &r.changes {
        println!("{c}");
    }
    println!("tables generation {}", r.tables_generation);
    Ok(())
}

fn run(cli: &Cli) -> Result<()> {
    let client = || Client::new(socket_path(cli));
    let change = |cmd: Command| -> Result<()> { print_changes(client().call(cmd)?) };
    match &cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => config_check(file),
        Cmd::Config {
            cmd: ConfigCmd::Apply { file },
        } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            change(Command::ConfigApply {
                file: file.display().to_string(),
                text,
            })
        }
        Cmd::Config {
            cmd: ConfigCmd::Dump,
        } => {
            let r: ConfigDumpReply = serde_json::from_value(client().call(Command::ConfigDump)?)?;
            print!("{}", r.toml);
            Ok(())
        }
        Cmd::Vip {
            cmd:
                VipCmd::Add {
                    vip,
                    mode,
                    name,
                    policy,
                    backends,
                },
        } => {
            let (address, port, protocol) = parse_service(vip)?;
            let vip = Vip {
                name: name.clone(),
                address,
                port,
                protocol,
                mode: parse_spelled::<Mode>(mode)?,
                policy: policy
                    .as_deref()
                    .map(parse_spelled::<Policy>)
                    .transpose()?
                    .unwrap_or_default(),
                group_policy: None,
                health: None,
                backends: backends
                    .iter()
                    .map(|b| parse_backend(b))
                    .collect::<Result<_>>()?,
            };
            change(Command::VipAdd { vip })
        }
        Cmd::Vip {
            cmd:
                VipCmd::Set {
                    vip,
                    name,
                    mode,
                    policy,
                    group_policy,
                    clear,
                },
        } => change(Command::VipSet {
            vip: vip.clone(),
            name: name.clone(),
            mode: mode.as_deref().map(parse_spelled::<Mode>).transpose()?,
            policy: policy.as_deref().map(parse_spelled::<Policy>).transpose()?,
            group_policy: group_policy
                .as_deref()
                .map(parse_spelled::<Policy>)
                .transpose()?,
            clear: clear.clone(),
        }),
        Cmd::Vip {
            cmd: VipCmd::Remove { vip },
        } => change(Command::VipRemove { vip: vip.clone() }),
        Cmd::Backend { cmd } => match cmd {
            BackendCmd::Add {
                vip,
                backend,
                weight,
                priority,
                group,
                mac,
                egress,
                agent,
                drain,
            } => {
                let mut b = parse_backend(backend)?;
                b.weight = *weight;
                b.priority = *priority;
                b.group = group.clone();
                b.mac = mac
                    .as_deref()
                    .map(|m| {
                        m.parse::<MacAddr>()
                            .map_err(|e| anyhow::anyhow!("--mac: {e}"))
                    })
                    .transpose()?;
                b.egress = egress.clone();
                b.agent = agent.clone();
                b.drain = *drain;
                change(Command::BackendAdd {
                    vip: vip.clone(),
                    backend: b,
                })
            }
            BackendCmd::Remove { vip, backend } => change(Command::BackendRemove {
                vip: vip.clone(),
                backend: backend.clone(),
            }),
            BackendCmd::Set {
                vip,
                backend,
                weight,
                priority,
                group,
                clear,
            } => change(Command::BackendSet {
                vip: vip.clone(),
                backend: backend.clone(),
                weight: *weight,
                drain: None,
                priority: *priority,
                group: group.clone(),
                clear: clear.clone(),
            }),
            BackendCmd::Drain { vip, backend } | BackendCmd::Undrain { vip, backend } => {
                change(Command::BackendSet {
                    vip: vip.clone(),
                    backend: backend.clone(),
                    weight: None,
                    drain: Some(matches!(cmd, BackendCmd::Drain { .. })),
                    priority: None,
                    group: None,
                    clear: vec![],
                })
            }
        },
        Cmd::Policy {
            cmd:
                PolicyCmd::Set {
                    vip,
                    policy,
                    group_policy,
                },
        } => change(Command::PolicySet {
            vip: vip.clone(),
            policy: parse_spelled::<Policy>(policy)?,
            group_policy: group_policy
                .as_deref()
                .map(parse_spelled::<Policy>)
                .transpose()?,
        }),
        Cmd::Policy {
            cmd: PolicyCmd::Show { vip, json },
        } => {
            let v = client().call(Command::PolicyShow { vip: vip.clone() })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_policy(&serde_json::from_value(v)?);
            }
            Ok(())
        }
        Cmd::Flow {
            cmd:
                FlowCmd::List {
                    vip,
                    backend,
                    limit,
                    json,
                },
        } => {
            let v = client().call(Command::FlowList {
                vip: vip.clone(),
                backend: backend.clone(),
                limit: *limit,
            })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_flows(&serde_json::from_value(v)?);
            }
            Ok(())
        }
        Cmd::Run { config, name } => controller::run(config, socket_override(cli), name.clone()),
        Cmd::Agent {
            controller,
            key_file,
            name,
            interval,
            service_port,
            command,
            count,
        } => {
            if !(interval.is_finite() && *interval > 0.0) {
                bail!("--interval must be a positive number of seconds");
            }
            let key = ctl::agent::load_key(key_file)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))?;
            }
            ctl::agent::run_agent(
                ctl::agent::AgentOptions {
                    name: name.clone(),
                    controller: *controller,
                    key,
                    interval_s: *interval,
                    service_port: *service_port,
                    command: command.clone(),
                    count: *count,
                },
                stop,
            )
        }
        Cmd::Pick {
            vip,
            from,
            timeout,
            udp_probe,
            verbose,
        } => {
            use ctl::serverlist::{probe_server, Probe};
            let t = std::time::Duration::try_from_secs_f64(timeout.max(0.01))
                .map_err(|_| anyhow::anyhow!("--timeout {timeout}: not a number of seconds"))?;
            let payload = udp_probe
                .as_ref()
                .map(|p| Probe::Udp(p.clone().into_bytes()));
            let o = ctl::serverlist::pick(
                *from,
                vip,
                t,
                3,
                &mut rand::thread_rng(),
                |addr, probe, t| match (probe, &payload) {
                    (Probe::Udp(_), Some(mine)) => probe_server(addr, mine, t),
                    _ => probe_server(addr, probe, t),
                },
            )?;
            if *verbose {
                for a in &o.attempts {
                    eprintln!("{a}");
                }
            }
            println!("{}", o.server);
            Ok(())
        }
        Cmd::Status { json } => {
            let v = Client::new(socket_path(cli)).call(Command::Status)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&serde_json::from_value(v)?);
            }
            Ok(())
        }
        Cmd::Stats { json } => {
            let v = Client::new(socket_path(cli)).call(Command::Stats)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_stats(&serde_json::from_value(v)?);
            }
            Ok(())
        }
        Cmd::Vip {
            cmd: VipCmd::List { json },
        } => {
            let v = Client::new(socket_path(cli)).call(Command::VipList)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_vips(&serde_json::from_value(v)?);
            }
            Ok(())
        }
    }
}

fn print_policy(r: &PolicyShowReply) {
    println!(
        "VIP {}: policy {}{}, from {}{}",
        r.vip,
        r.policy,
        r.group_policy
            .map(|g| format!(" (groups chosen by {g})"))
            .unwrap_or_default(),
        r.source,
        r.age_s
            .map(|a| format!(", computed {a:.1} s ago"))
            .unwrap_or_default()
    );
    println!("{}", r.summary);
    println!();
    let ranges = r.kind == SelectionKind::Ranges;
    // Configured weight, drain, priority and health have columns of their own.
    let shown = ["configured_weight", "drain", "priority", "up"];
    let mut keys: Vec<&String> = r
        .backends
        .iter()
        .flat_map(|b| b.inputs.keys())
        .filter(|k| !shown.contains(&k.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    let notes = r.backends.iter().any(|b| !b.note.is_empty());
    let mut header = vec!["BACKEND", "PRIO", "GROUP", "STATE", "CFG W"];
    header.extend(keys.iter().map(|k| k.as_str()));
    header.extend(["WEIGHT", "SHARE"]);
    if ranges {
        header.push("RANGE");
    }
    if notes {
        header.push("NOTE");
    }
    let upper: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let mut t = Table::new(&upper.iter().map(String::as_str).collect::<Vec<_>>());
    for b in &r.backends {
        let mut row = vec![
            format!("{}:{}", b.address, b.port),
            b.priority.to_string(),
            b.group.clone().unwrap_or_else(|| "-".into()),
            if !b.up {
                "down".into()
            } else if b.drain {
                "draining".into()
            } else {
                "up".into()
            },
            b.configured_weight.to_string(),
        ];
        row.extend(keys.iter().map(|k| {
            b.inputs
                .get(*k)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        }));
        row.push(b.weight.to_string());
        row.push(format!("{:.1}%", b.share_percent));
        if ranges {
            row.push(
                b.range
                    .map_or_else(|| "-".into(), |(s, e)| format!("[{s}, {e})")),
            );
        }
        if notes {
            row.push(b.note.clone());
        }
        t.row(row);
    }
    t.print();
    println!("table size {}", r.table_size);
}

fn print_flows(r: &FlowListReply) {
    let mut t = Table::new(&[
        "CLIENT", "VIP", "PROTO", "BACKEND", "WORKER", "STATE", "AGE",
    ]);
    for f in &r.flows {
        t.row(vec![
            f.client.clone(),
            f.vip.clone(),
            f.protocol.clone(),
            f.backend.clone(),
            f.worker.to_string(),
            f.state.clone(),
            format!("{:.1} s", f.age_s),
        ]);
    }
    t.print();
    println!("{} flow(s) shown of {} matching", r.flows.len(), r.matched);
    if r.events_dropped > 0 {
        println!(
            "warning: {} flow events were lost (ring full): the list may be incomplete",
            r.events_dropped
        );
    }
}

fn config_check(file: &Path) -> Result<()> {
    match firmware_config::load(file) {
        Ok(cfg) => {
            let backends: usize = cfg.vips.iter().map(|v| v.backends.len()).sum();
            println!(
                "{}: OK ({} port(s), {} worker(s), {} VIP(s), {} backend(s))",
                file.display(),
                cfg.ports.len(),
                cfg.eal.worker_cores.len(),
                cfg.vips.len(),
                backends
            );
            Ok(())
        }
        Err(errors) => {
            let n = errors.0.len();
            eprintln!("{errors}");
            anyhow::bail!(
                "{} is invalid ({n} error{}); nothing was applied",
                file.display(),
                if n == 1 { "" } else { "s" }
            )
        }
    }
}

fn print_status(s: &StatusReply) {
    println!(
        "sluiced {} (pid {}), {}, up {:.0} s, config {}",
        s.version, s.pid, s.dpdk_version, s.uptime_s, s.config_file
    );
    println!(
        "{} VIP(s), {} backend(s), tables generation {}",
        s.vips, s.backends, s.tables_generation
    );
    println!();
    let mut t = Table::new(&[
        "PORT", "NAME", "DEVICE", "DRIVER", "MAC", "ADDRESS", "ROLE", "LINK",
    ]);
    for p in &s.ports {
        t.row(vec![
            p.index.to_string(),
            p.name.clone(),
            p.device.clone(),
            p.driver.clone(),
            p.mac.clone(),
            p.address.clone(),
            p.role.clone(),
            if p.link_up {
                format!("up {} Mb/s", p.speed_mbps)
            } else {
                "down".to_string()
            },
        ]);
    }
    t.print();
    println!();
    let mut t = Table::new(&["WORKER", "LCORE", "FLOWS", "CREATED", "CAPACITY", "BUSY"]);
    for w in &s.workers {
        t.row(vec![
            w.id.to_string(),
            w.lcore.to_string(),
            w.active_flows.to_string(),
            w.created_flows.to_string(),
            w.flow_capacity.to_string(),
            format!("{:.1}%", w.busy_percent),
        ]);
    }
    t.print();
}

fn print_stats(s: &StatsReply) {
    let mut t = Table::new(&[
        "PORT",
        "RX PKTS",
        "RX BYTES",
        "TX PKTS",
        "TX BYTES",
        "DROPS",
        "NIC MISSED",
        "NIC ERR",
        "NO MBUF",
    ]);
    for p in &s.ports {
        t.row(vec![
            p.name.clone(),
            p.rx_packets.to_string(),
            human_bytes(p.rx_bytes),
            p.tx_packets.to_string(),
            human_bytes(p.tx_bytes),
            p.total_drops().to_string(),
            p.nic.rx_missed.to_string(),
            (p.nic.rx_errors + p.nic.tx_errors).to_string(),
            p.nic.rx_nombuf.to_string(),
        ]);
    }
    t.print();
    let mut drops = Table::new(&["PORT", "DROP REASON", "PACKETS"]);
    let mut any = false;
    for p in &s.ports {
        for (reason, n) in p.drops.iter().filter(|(_, n)| **n > 0) {
            drops.row(vec![p.name.clone(), reason.clone(), n.to_string()]);
            any = true;
        }
    }
    println!();
    if any {
        drops.print();
    } else {
        println!("no drops");
    }
    println!();
    let mut t = Table::new(&[
        "VIP",
        "MODE",
        "PKTS",
        "BYTES",
        "NEW FLOWS",
        "DROPS",
        "REPLY PKTS",
        "REPLY BYTES",
    ]);
    for v in &s.vips {
        t.row(vec![
            v.name.clone(),
            v.mode.clone(),
            v.packets.to_string(),
            human_bytes(v.bytes),
            v.new_flows.to_string(),
            v.drops.to_string(),
            v.reply_packets.to_string(),
            human_bytes(v.reply_bytes),
        ]);
    }
    t.print();
    println!();
    let mut t = Table::new(&[
        "BACKEND",
        "VIP",
        "STATE",
        "WEIGHT",
        "TO PKTS",
        "TO BYTES",
        "FROM PKTS",
        "FROM BYTES",
        "NEW FLOWS",
        "ACTIVE",
    ]);
    for b in &s.backends {
        t.row(vec![
            format!("{}:{}", b.address, b.port),
            b.vip.clone(),
            b.state.clone(),
            b.weight.to_string(),
            b.tx_packets.to_string(),
            human_bytes(b.tx_bytes),
            b.rx_packets.to_string(),
            human_bytes(b.rx_bytes),
            b.new_flows.to_string(),
            b.active_flows.to_string(),
        ]);
    }
    t.print();
    let f = &s.flows;
    println!();
    println!(
                "flows: {} active of {} capacity, {} created, {} closed, {} expired, {} rescheduled; {} packets forwarded without a flow entry (table full)",
                f.active, f.capacity, f.created, f.closed, f.expired, f.rescheduled, f.table_full
    );
    println!(
        "sync events: {} pushed, {} dropped (ring full), {} drained",
        f.events_pushed, f.events_dropped, f.events_drained
    );
}

fn print_vips(r: &VipListReply) {
    let mut t = Table::new(&[
        "VIP",
        "ADDRESS",
        "PROTO",
        "MODE",
        "BACKEND",
        "WEIGHT",
        "SLOTS",
        "NEXT HOP MAC",
        "EGRESS",
        "STATE",
    ]);
    for v in &r.vips {
        let addr = format!("{}:{}", v.address, v.port);
        if v.backends.is_empty() {
            t.row(vec![
                v.name.clone(),
                addr.clone(),
                v.protocol.clone(),
                v.mode.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for (i, b) in v.backends.iter().enumerate() {
            let first = i == 0;
            t.row(vec![
                if first { v.name.clone() } else { String::new() },
                if first { addr.clone() } else { String::new() },
                if first {
                    v.protocol.clone()
                } else {
                    String::new()
                },
                if first { v.mode.clone() } else { String::new() },
                format!("{}:{}", b.address, b.port),
                b.weight.to_string(),
                format!("{:.1}%", b.slot_share_percent),
                b.next_hop_mac
                    .clone()
                    .unwrap_or_else(|| "(unresolved)".into()),
                b.egress.clone(),
                b.state.clone(),
            ]);
        }
    }
    t.print();
}

#[cfg(test)]
mod set_clear_tests {
    use super::*;
    use clap::Parser;
    use firmware_config::control::{BackendField, VipField};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluicectl").chain(args.iter().copied()))
    }

    #[test]
    fn vip_set_clear_is_repeatable_and_takes_both_spellings() {
        let cli = parse(&[
            "vip",
            "set",
            "web",
            "--clear",
            "name",
            "--clear",
            "group-policy",
            "--mode",
            "dr",
        ])
        .unwrap();
        let Cmd::Vip {
            cmd: VipCmd::Set { clear, mode, .. },
        } = cli.cmd
        else {
            panic!("{:?}", cli.cmd)
        };
        assert_eq!(clear, [VipField::Name, VipField::GroupPolicy]);
        assert_eq!(mode.as_deref(), Some("dr"));
        let cli = parse(&["vip", "set", "web", "--clear", "group_policy"]).unwrap();
        assert!(
            matches!(&cli.cmd, Cmd::Vip { cmd: VipCmd::Set { clear, .. } } if clear == &[VipField::GroupPolicy]),
            "{:?}",
            cli.cmd
        );
        let cli = parse(&["vip", "set", "web", "--name", "www"]).unwrap();
        assert!(
            matches!(&cli.cmd, Cmd::Vip { cmd: VipCmd::Set { clear, .. } } if clear.is_empty()),
            "{:?}",
            cli.cmd
        );
    }

    #[test]
    fn backend_set_clear() {
        let cli = parse(&["backend", "set", "web", "198.18.2.11", "--clear", "group"]).unwrap();
        let Cmd::Backend {
            cmd: BackendCmd::Set { clear, group, .. },
        } = cli.cmd
        else {
            panic!("{:?}", cli.cmd)
        };
        assert_eq!(clear, [BackendField::Group]);
        assert_eq!(group, None);
    }

    #[test]
    fn clear_of_a_field_that_cannot_be_cleared_is_bad_usage() {
        for (args, why) in [
            (
                &["vip", "set", "web", "--clear", "mode"][..],
                "`mode` cannot be cleared",
            ),
            (
                &["vip", "set", "web", "--clear", "policy"],
                "set it instead",
            ),
            (&["vip", "set", "web", "--clear", "group"], "it clears name"),
            (
                &["backend", "set", "web", "198.18.2.11", "--clear", "weight"],
                "`weight` cannot be cleared",
            ),
            (
                &["backend", "set", "web", "198.18.2.11", "--clear", "agent"],
                "it clears group",
            ),
            (&["vip", "set", "web", "--clear"], "--clear <FIELD>"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }
}
