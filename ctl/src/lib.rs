//! The Sluice control process's building blocks, free of DPDK: the
//! balancing policies (pure), health checks, backend agents and the server
//! list. `sluicectl` (src/main.rs) wires them together.

pub mod agent;
pub mod health;
pub mod policy;
pub mod serverlist;
