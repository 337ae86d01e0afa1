//! Sluice dataplane logic, free of DPDK so that it tests and benchmarks
//! without a NIC. The `sluiced` binary wraps it around DPDK ports.

pub mod checksum;
pub mod flow;
pub mod hugemem;
pub mod maglev;
pub mod neighbours;
pub mod wire;

pub mod appliance;
pub mod control;
pub mod counters;
pub mod events;
pub mod flowmirror;
pub mod pipeline;
pub mod tables;
