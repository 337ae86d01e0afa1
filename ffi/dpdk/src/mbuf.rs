use crate::{dpdk_error, Error, Result};
use dpdk_sys::{rte_mbuf, rte_mempool};
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Largest burst handled at once.
pub const BURST_MAX: usize = 64;

/// A packet-buffer pool (`rte_pktmbuf_pool_create`). Pools live until the
/// process exits: DPDK offers no safe way to free a pool whose mbufs may
/// still sit in NIC rings, so dropping this handle does not free it.
#[derive(Clone, Copy)]
pub struct Mempool {
    ptr: NonNull<rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores; the
// handle is just a pointer to it.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `cache` per-lcore cached entries.
    pub fn new(name: &str, n: u32, cache: u32, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|_| Error::Invalid("pool name has NUL".into()))?;
        // SAFETY: valid NUL-terminated name; numeric arguments are checked
        // by DPDK.
        let p = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                cache,
                0,
                dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| dpdk_error("rte_pktmbuf_pool_create", crate::last_errno()))
    }

    pub(crate) fn as_ptr(&self) -> *mut rte_mempool {
        self.ptr.as_ptr()
    }

    /// Allocates one mbuf (None when the pool is empty).
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid for the process lifetime.
        let m = unsafe { dpdk_sys::sluice_pktmbuf_alloc(self.ptr.as_ptr()) };
        NonNull::new(m).map(|ptr| Mbuf { ptr })
    }

    /// Fills the burst's free room up to `n` mbufs in one call, all or
    /// nothing; returns false (burst unchanged) when the pool has too few.
    #[inline]
    pub fn alloc_bulk(&self, burst: &mut Burst, n: usize) -> bool {
        let have = burst.len();
        let n = n.min(BURST_MAX - have);
        if n == 0 {
            return true;
        }
        // SAFETY: slots have..have+n are uninitialised room; on success
        // DPDK writes n valid, reset mbuf pointers there, which the burst
        // then owns; on failure it writes nothing we keep.
        let rc = unsafe {
            dpdk_sys::sluice_pktmbuf_alloc_bulk(
                self.ptr.as_ptr(),
                burst.raw_slots().add(have),
                n as u32,
            )
        };
        if rc != 0 {
            return false;
        }
        burst.set_len(have + n);
        true
    }

    /// Free mbufs in the pool (approximate: excludes lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: read-only query on a valid pool.
        unsafe { dpdk_sys::sluice_mempool_avail_count(self.ptr.as_ptr()) }
    }
}

/// An owned packet buffer (single segment). Dropping it returns it to its
/// pool.
#[repr(transparent)]
pub struct Mbuf {
    ptr: NonNull<rte_mbuf>,
}

// SAFETY: an mbuf is owned by exactly one holder at a time; DPDK allows
// freeing it from any thread.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Packet bytes of the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // data room (DPDK invariant); we own the mbuf so nobody writes it.
        unsafe {
            let m = self.ptr.as_ref();
            let p = (m.buf_addr as *const u8).add(m.data_off as usize);
            std::slice::from_raw_parts(p, m.data_len as usize)
        }
    }

    /// Mutable packet bytes of the first segment.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` guarantees exclusive access.
        unsafe {
            let m = self.ptr.as_ref();
            let p = (m.buf_addr as *mut u8).add(m.data_off as usize);
            std::slice::from_raw_parts_mut(p, m.data_len as usize)
        }
    }

    /// Sets the length of a fresh single-segment mbuf to `len` bytes from
    /// its current data offset (cheaper than `append` for packets built in
    /// place); false when the data room is too small.
    #[inline]
    pub fn set_len(&mut self, len: u16) -> bool {
        // SAFETY: exclusive access to an owned mbuf; the length is checked
        // against the data room before it is written.
        unsafe {
            let m = self.ptr.as_mut();
            if m.data_off as u32 + len as u32 > m.buf_len as u32 || m.nb_segs != 1 {
                return false;
            }
            m.data_len = len;
            m.pkt_len = len as u32;
        }
        true
    }

    /// Total packet length over all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: plain field read of an owned mbuf.
        unsafe { self.ptr.as_ref().pkt_len }
    }

    /// Number of segments (the fast path handles single-segment packets).
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: plain field read of an owned mbuf.
        unsafe { self.ptr.as_ref().nb_segs }
    }

    /// Appends `len` bytes to an empty or single-segment mbuf and returns
    /// them (None when the tailroom is too small).
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: rte_pktmbuf_append checks the tailroom and returns null
        // when it is too small; the returned bytes belong to this mbuf.
        unsafe {
            let p = dpdk_sys::sluice_pktmbuf_append(self.ptr.as_ptr(), len);
            if p.is_null() {
                None
            } else {
                Some(std::slice::from_raw_parts_mut(p as *mut u8, len as usize))
            }
        }
    }
}

impl AsMut<[u8]> for Mbuf {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed exactly once.
        unsafe { dpdk_sys::sluice_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

/// A fixed-capacity array of owned mbufs, the unit of rx/tx bursts. No
/// allocation: the storage is inline.
pub struct Burst {
    bufs: [MaybeUninit<Mbuf>; BURST_MAX],
    len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub fn new() -> Burst {
        Burst {
            bufs: [const { MaybeUninit::uninit() }; BURST_MAX],
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST_MAX
    }

    /// Adds an mbuf; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> std::result::Result<(), Mbuf> {
        if self.len == BURST_MAX {
            return Err(m);
        }
        self.bufs[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Takes every mbuf out, in order.
    #[inline]
    pub fn drain(&mut self) -> impl Iterator<Item = Mbuf> + '_ {
        let n = self.len;
        self.len = 0;
        // SAFETY: slots 0..n were initialised; len is reset first so each
        // is read (moved out) exactly once.
        (0..n).map(move |i| unsafe { self.bufs[i].assume_init_read() })
    }

    /// The mbuf at `i`.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Mbuf> {
        if i < self.len {
            // SAFETY: slot i < len is initialised.
            Some(unsafe { self.bufs[i].assume_init_mut() })
        } else {
            None
        }
    }

    /// The mbufs as a slice.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: slots 0..len are initialised and MaybeUninit<Mbuf> has
        // Mbuf's layout.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.as_mut_ptr() as *mut Mbuf, self.len) }
    }

    /// Keeps the mbufs for which `keep` is true (in order) and frees the
    /// others; returns how many were freed.
    pub fn retain(&mut self, mut keep: impl FnMut(&Mbuf) -> bool) -> usize {
        let n = self.len;
        self.len = 0;
        let mut freed = 0;
        for i in 0..n {
            // SAFETY: slot i < n was initialised and is moved out once;
            // `len` was reset so nothing else reads it.
            let m = unsafe { self.bufs[i].assume_init_read() };
            if keep(&m) {
                self.bufs[self.len].write(m);
                self.len += 1;
            } else {
                drop(m);
                freed += 1;
            }
        }
        freed
    }

    /// Raw pointer array for rx/tx burst calls.
    pub(crate) fn raw_slots(&mut self) -> *mut *mut rte_mbuf {
        // Mbuf is repr(transparent) over NonNull<rte_mbuf>, so the array is
        // layout-compatible with `*mut rte_mbuf[BURST_MAX]`.
        self.bufs.as_mut_ptr() as *mut *mut rte_mbuf
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= BURST_MAX);
        self.len = n;
    }

    /// Drops the first `n` entries without freeing them (the NIC took them)
    /// and moves the rest to the front.
    pub(crate) fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        let rest = self.len - n;
        // Slots 0..n now belong to the NIC: overwriting them with the
        // unsent tail (a memmove) never drops them.
        // SAFETY: both ranges lie inside the array; ptr::copy handles overlap.
        unsafe {
            std::ptr::copy(self.bufs.as_ptr().add(n), self.bufs.as_mut_ptr(), rest);
        }
        self.len = rest;
    }

    /// Frees every mbuf in the burst (one bulk call).
    #[inline]
    pub fn clear(&mut self) {
        let n = self.len;
        if n == 0 {
            return;
        }
        self.len = 0;
        // SAFETY: slots 0..n hold owned mbufs; len was reset first so they
        // are freed exactly once, here.
        unsafe { dpdk_sys::sluice_pktmbuf_free_bulk(self.raw_slots(), n as u32) }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}
