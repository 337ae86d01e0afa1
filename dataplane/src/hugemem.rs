//! Zeroed memory on transparent huge pages, for big tables looked up at
//! random (the flow table): on 4 KiB pages such a table takes a TLB miss,
//! a page walk, on nearly every access.

use std::ptr::NonNull;

/// Size of an x86-64 huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed bytes on a fresh private anonymous mapping, 2 MiB aligned,
/// which Linux is asked (`MADV_HUGEPAGE`) to back with transparent huge
/// pages before they are first touched. Where it refuses (THP disabled),
/// small pages are used.
pub struct HugeZeroed {
    start: NonNull<u8>,
    len: usize,
    /// The whole mapping (for munmap): base and length.
    map: (*mut libc::c_void, usize),
}

// SAFETY: HugeZeroed owns its mapping exclusively, like a Box<[u8]>.
unsafe impl Send for HugeZeroed {}
// SAFETY: shared access hands out nothing mutable.
unsafe impl Sync for HugeZeroed {}

impl HugeZeroed {
    /// Maps `len` bytes for `what` (named in the panic message when the
    /// kernel refuses the mapping: there is nothing to run without it).
    pub fn new(len: usize, what: &str) -> HugeZeroed {
        let map_len = len.checked_add(HUGE_PAGE).expect("mapping size overflows");
        // SAFETY: a fresh private anonymous mapping, checked for failure;
        // only its 2 MiB-aligned part of `len` bytes is handed out.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                panic!(
                    "cannot map {} MiB for {what}: {}",
                    map_len >> 20,
                    std::io::Error::last_os_error()
                );
            }
            let start = (base as usize).next_multiple_of(HUGE_PAGE);
            // Failure (THP disabled) is harmless: small pages are used.
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            HugeZeroed {
                start: NonNull::new_unchecked(start as *mut u8),
                len,
                map: (base, map_len),
            }
        }
    }

    /// Start of the memory: 2 MiB aligned, `len` bytes, zeroed until
    /// written.
    pub fn as_ptr(&self) -> *mut u8 {
        self.start.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory as 64-bit words (zero unless written).
    pub fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: start..start+len lies inside the mapping, is 2 MiB (so
        // 8-byte) aligned and initialised (zeroed by the kernel or written
        // since; every bit pattern is a valid u64), and &mut self gives
        // exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr().cast(), self.len / 8) }
    }
}

impl Drop for HugeZeroed {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no reference
        // into it outlives self.
        unsafe {
            libc::munmap(self.map.0, self.map.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_zeroed_aligned_and_writable() {
        let mut m = HugeZeroed::new(3 * HUGE_PAGE + 8, "a test");
        assert_eq!(m.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(m.len(), 3 * HUGE_PAGE + 8);
        let w = m.words_mut();
        assert_eq!(w.len(), (3 * HUGE_PAGE + 8) / 8);
        assert!(w.iter().all(|&x| x == 0));
        w[0] = 1;
        *w.last_mut().unwrap() = 2;
        assert_eq!(w[0] + w[w.len() - 1], 3);
    }
}
