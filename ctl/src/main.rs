//! `sluicectl`: the Sluice control CLI. Talks to `sluiced` over its control
//! socket (docs/control-protocol.md) and checks configuration files.
//!
//! Exit codes: 0 success; 1 sluiced answered with an error; 2 bad usage or
//! an invalid configuration; 3 sluiced is not reachable.

mod table;

use anyhow::Result;
use clap::{Parser, Subcommand};
use firmware_config::client::{Client, CtlError};
use firmware_config::control::{Command, StatsReply, StatusReply, VipListReply};
use std::path::PathBuf;
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
    /// VIPs.
    Vip {
        #[command(subcommand)]
        cmd: VipCmd,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
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
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a configuration file without applying it.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
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

fn run(cli: &Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => config_check(file),
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

fn config_check(file: &std::path::Path) -> Result<()> {
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
