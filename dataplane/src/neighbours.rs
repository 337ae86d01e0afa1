//! A small lock-free neighbour cache shared by all workers: a worker that
//! sees an ARP packet records the sender here at once, so that a NAT reply
//! handled a few microseconds later (maybe by another worker) finds the
//! client's MAC even before the management thread has published new
//! tables. The tables' neighbour map stays the authority (static entries,
//! aging, resolution); this cache only bridges the gap.
//!
//! Direct-mapped slots, each guarded by a sequence number (a seqlock):
//! writers (ARP packets only, never ordinary traffic) claim a slot with a
//! compare-and-swap and give up if another writer holds it; readers never
//! wait and treat a slot being written as a miss.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Slots in the cache (a power of two).
pub const SLOTS: usize = 4096;

#[derive(Default)]
#[repr(C, align(32))]
struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU32,
    /// `(port << 32) | ip`, plus 1 << 63 so that 0 means empty.
    key: AtomicU64,
    mac: AtomicU64,
}

/// The cache; share it with `Arc`.
pub struct NeighbourCache {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for NeighbourCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighbourCache")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Default for NeighbourCache {
    fn default() -> Self {
        NeighbourCache {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

#[inline]
fn key_of(port: u16, ip: u32) -> u64 {
    (1 << 63) | (u64::from(port) << 32) | u64::from(ip)
}

#[inline]
fn slot_of(key: u64) -> usize {
    let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 52) as usize & (SLOTS - 1)
}

fn mac_to_u64(m: [u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

fn u64_to_mac(v: u64) -> [u8; 6] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

impl NeighbourCache {
    /// Records `ip` at `mac` on `port`, replacing whatever the slot held.
    /// Returns false (and records nothing) if another writer holds the slot.
    pub fn learn(&self, port: u16, ip: u32, mac: [u8; 6]) -> bool {
        let key = key_of(port, ip);
        let slot = &self.slots[slot_of(key)];
        let s = slot.seq.load(Ordering::Relaxed);
        if s & 1 == 1
            || slot
                .seq
                .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        slot.key.store(key, Ordering::Relaxed);
        slot.mac.store(mac_to_u64(mac), Ordering::Relaxed);
        slot.seq.store(s.wrapping_add(2), Ordering::Release);
        true
    }

    /// The MAC of `ip` on `port`, if cached and not being rewritten.
    #[inline]
    pub fn get(&self, port: u16, ip: u32) -> Option<[u8; 6]> {
        let key = key_of(port, ip);
        let slot = &self.slots[slot_of(key)];
        let s1 = slot.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let k = slot.key.load(Ordering::Relaxed);
        let m = slot.mac.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != s1 || k != key {
            return None;
        }
        Some(u64_to_mac(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn learns_and_finds() {
        let c = NeighbourCache::default();
        assert_eq!(c.get(0, 0x0a000001), None);
        assert!(c.learn(0, 0x0a000001, [2, 0, 0, 0, 0, 1]));
        assert_eq!(c.get(0, 0x0a000001), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(c.get(1, 0x0a000001), None, "per port");
        assert!(c.learn(0, 0x0a000001, [2, 0, 0, 0, 0, 9]));
        assert_eq!(c.get(0, 0x0a000001), Some([2, 0, 0, 0, 0, 9]), "updated");
    }

    #[test]
    fn readers_never_see_torn_entries() {
        // Two writers alternate two consistent (ip, mac) pairs that map to
        // whatever slots they map to; a reader must only ever see a MAC that
        // was written for the ip it asks about.
        let c = Arc::new(NeighbourCache::default());
        let ips = [0xc612_0101u32, 0xc612_0102];
        let mac_for = |ip: u32, round: u8| [2, round, 0, 0, (ip >> 8) as u8, ip as u8];
        let mut writers = Vec::new();
        for w in 0..2u8 {
            let c = Arc::clone(&c);
            writers.push(std::thread::spawn(move || {
                for round in 0..20_000u32 {
                    let ip = ips[(round as usize + w as usize) % 2];
                    c.learn(0, ip, mac_for(ip, round as u8));
                }
            }));
        }
        let reader = {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    for ip in ips {
                        if let Some(m) = c.get(0, ip) {
                            assert_eq!(&m[4..6], &[(ip >> 8) as u8, ip as u8], "torn read");
                        }
                    }
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
    }
}
