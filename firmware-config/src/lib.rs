//! Sluice appliance configuration: the typed TOML schema, parsing with
//! precise errors (file, line, column, dotted field path, problem, hint),
//! semantic validation, and resolved helpers used by the daemon.
//!
//! ```no_run
//! let cfg = firmware_config::load(std::path::Path::new("/etc/sluice/appliance.toml"))
//!     .unwrap_or_else(|errs| panic!("{errs}"));
//! println!("{} VIPs", cfg.vips.len());
//! ```

#![warn(missing_docs)]

/// A control-socket client (`sluicectl`, the perf runner).
#[allow(missing_docs)]
pub mod client;
/// Control-protocol messages shared by `sluiced` and `sluicectl`.
#[allow(missing_docs)]
pub mod control;
/// Live changes as validated edits of the running configuration.
pub mod edit;
mod error;
mod locate;
mod parse;
/// Preflight checks of the machine (core isolation of the workers).
pub mod preflight;
mod resolve;
pub mod schema;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use parse::{load, load_with, parse, parse_with};
pub use schema::*;
pub use validate::{
    is_prime, parse_lcore_map, validate, validate_with, Environment, MAX_FLOW_CAPACITY,
    MAX_TABLE_SIZE, MAX_WEIGHT, MIN_EVENT_RING, MIN_FLOW_CAPACITY, MIN_MEMORY_MB, MIN_TABLE_SIZE,
};
