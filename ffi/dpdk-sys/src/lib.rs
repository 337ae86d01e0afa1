//! Raw DPDK bindings, generated at build time by bindgen from the system
//! DPDK (>= 22.11, found with pkg-config), plus `sluice_*` wrappers from a C
//! shim for DPDK's static-inline fast-path functions. Use the `dpdk` crate
//! instead of this one: nothing else in the workspace calls these directly.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
