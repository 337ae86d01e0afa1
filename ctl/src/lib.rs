//! The Sluice control process's building blocks, free of DPDK: the
//! balancing policies (pure), health checks, backend agents, the server
//! list and the small HTTP/1.0 client the last two share. `sluicectl`
//! (src/main.rs) wires them together.

pub mod agent;
pub mod health;
pub mod http;
pub mod links;
pub mod policy;
pub mod serverlist;
