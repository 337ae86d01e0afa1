use crate::{dpdk_error, Error, Result};
use std::ffi::{c_void, CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. Only one may exist per
/// process (DPDK allows one `rte_eal_init`); dropping it calls
/// `rte_eal_cleanup`, so drop ports and mempools first.
pub struct Eal {
    /// EAL's runtime directory (`/var/run/dpdk/<file-prefix>`).
    runtime_dir: Option<std::path::PathBuf>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (argv[0] included).
    pub fn init(args: &[String]) -> Result<Eal> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::Invalid(
                "EAL already initialised in this process".into(),
            ));
        }
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Invalid("EAL argument contains a NUL byte".into()))?;
        // rte_eal_init may permute argv, so it gets its own pointer array;
        // the CStrings outlive the call.
        let mut argv: Vec<*mut c_char> = cargs.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that live
        // until after the call.
        let rc = unsafe { dpdk_sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            INITIALISED.store(false, Ordering::SeqCst);
            return Err(dpdk_error("rte_eal_init", crate::last_errno()));
        }
        // SAFETY: valid after init; returns a static NUL-terminated path.
        let runtime_dir = unsafe {
            let p = dpdk_sys::rte_eal_get_runtime_dir();
            (!p.is_null())
                .then(|| std::path::PathBuf::from(CStr::from_ptr(p).to_string_lossy().into_owned()))
        };
        Ok(Eal { runtime_dir })
    }

    /// EAL's runtime directory (`/var/run/dpdk/<file-prefix>`).
    pub fn runtime_dir(&self) -> Option<&std::path::Path> {
        self.runtime_dir.as_deref()
    }

    /// The lcore id of the main lcore.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: plain getter, valid after init.
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Number of lcores EAL enabled.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: plain getter, valid after init.
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    /// Number of usable ethdev ports.
    pub fn port_count(&self) -> u16 {
        // SAFETY: plain getter, valid after init.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by this value; all lcores were waited
        // for by the owner before dropping.
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
        // Cleanup leaves the runtime directory behind, holding only this
        // primary process's telemetry socket (unlinked at process exit,
        // too late for the directory). Remove both; the directory only if
        // it is then empty, so files of other processes sharing the prefix
        // stay.
        if let Some(d) = &self.runtime_dir {
            let _ = std::fs::remove_file(d.join("dpdk_telemetry.v2"));
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The DPDK version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(dpdk_sys::sluice_version()) }
        .to_string_lossy()
        .into_owned()
}

/// The calling thread's lcore id (u32::MAX on a non-EAL thread).
#[inline]
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local.
    unsafe { dpdk_sys::sluice_lcore_id() }
}

/// Time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the TSC; no memory access.
    unsafe { dpdk_sys::sluice_rdtsc() }
}

/// TSC ticks per second, as measured by EAL.
pub fn tsc_hz() -> u64 {
    // SAFETY: plain getter, valid after init.
    unsafe { dpdk_sys::sluice_tsc_hz() }
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by launch_on_lcore, consumed
    // exactly once here.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    job()
}

/// Runs `f` on worker lcore `lcore` (which must be idle). Its return value
/// is what [`wait_lcore`] returns.
pub fn launch_on_lcore<F>(lcore: u32, f: F) -> Result<()>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let job: Box<Job> = Box::new(Box::new(f));
    let raw = Box::into_raw(job) as *mut c_void;
    // SAFETY: trampoline takes ownership of `raw` when the launch succeeds.
    let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), raw, lcore) };
    if rc != 0 {
        // SAFETY: the launch failed, so the job was not handed over.
        drop(unsafe { Box::from_raw(raw as *mut Job) });
        return Err(dpdk_error("rte_eal_remote_launch", rc));
    }
    Ok(())
}

/// Waits until the job on `lcore` returns, and gives its return value.
pub fn wait_lcore(lcore: u32) -> i32 {
    // SAFETY: waits on an lcore id; safe for any id.
    unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) }
}
