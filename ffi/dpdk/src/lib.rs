//! A thin safe layer over `dpdk-sys`: EAL init and cleanup, mempools, port
//! setup (RSS, one RX/TX queue pair per worker), link state, NIC statistics,
//! mbufs as byte slices, and launching closures on worker lcores.
//!
//! This is the only crate that makes raw DPDK calls. Every `unsafe` block
//! says why it is sound.

mod eal;
mod mbuf;
mod port;

pub use eal::{launch_on_lcore, lcore_id, rdtsc, tsc_hz, version, wait_lcore, Eal};
pub use mbuf::{Burst, Mbuf, Mempool, BURST_MAX};
pub use port::{Link, Port, PortConf, PortStats, RxQueue, TxQueue};

/// An error from DPDK, with the call that failed and DPDK's own message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{call} failed: {reason} (rte_errno {errno})")]
    Dpdk {
        call: &'static str,
        errno: i32,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error::Dpdk`] from a negative return code (or rte_errno when
/// the call returns a null pointer).
pub(crate) fn dpdk_error(call: &'static str, code: i32) -> Error {
    let errno = if code < 0 { -code } else { code };
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any errno value.
    let reason = unsafe {
        let p = dpdk_sys::rte_strerror(errno);
        if p.is_null() {
            String::from("unknown error")
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Error::Dpdk {
        call,
        errno,
        reason,
    }
}

/// rte_errno of the calling thread, for calls that report failure by a null
/// pointer.
pub(crate) fn last_errno() -> i32 {
    // SAFETY: reads a per-lcore (thread-local) integer.
    unsafe { dpdk_sys::sluice_errno() }
}
