//! `sluiced --config appliance.toml`: the Sluice dataplane daemon.
//!
//! The main lcore runs the management loop (neighbour learning and ARP,
//! table snapshots, flow-event draining) next to the control-socket
//! threads; every worker lcore polls one RX/TX queue pair on every port and
//! runs the pure pipeline of the `dataplane` library to completion.

mod daemon;
mod worker;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Sluice layer-4 load-balancing dataplane (DPDK).
#[derive(Parser, Debug)]
#[command(
    name = "sluiced",
    version,
    about = "Sluice layer-4 load-balancing dataplane (DPDK): sluiced --config appliance.toml"
)]
struct Args {
    /// The appliance configuration (TOML); see docs/configuration.md.
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match firmware_config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("sluiced: configuration refused, nothing started:\n{errors}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = dataplane::appliance::check_limits(&config) {
        eprintln!("sluiced: configuration refused: {e}");
        return ExitCode::from(2);
    }
    match daemon::run(&args.config, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluiced: {e:#}");
            ExitCode::from(1)
        }
    }
}
