//! Per-worker flow table with TCP-state-aware aging.
//!
//! Each worker owns one [`FlowTable`]; it is single-writer, so it needs no
//! atomics or locks. All memory is allocated once in [`FlowTable::new`]; no
//! operation allocates or panics afterwards.
//!
//! # Layout
//!
//! The table is a power-of-two array of 192-byte, 64-byte-aligned buckets
//! (three cache lines) of 5 ways each:
//!
//! ```text
//! line 0   keys: 5 x 12 B (client ip, vip, port|proto)  occupied: u8  overflow: u16
//! line 1-2 entries: 5 x 24 B FlowEntry (8 B tail padding)
//! ```
//!
//! The keys of a bucket share one line, so a miss reads one cache line and
//! compares all five keys branch-free; a hit reads that line plus the line
//! holding its entry (one entry in five straddles lines 1 and 2). Storing
//! full keys instead of short signatures means no false matches and no
//! third line to confirm a match. Keeping the entries in the bucket rather
//! than in a separate array makes the bucket 192 contiguous bytes: one page
//! walk instead of two, and [`FlowTable::prefetch`] can fetch all of it
//! before the lookup knows which entry line it needs.
//!
//! Collisions use bucketized cuckoo hashing: a key lives in its primary
//! bucket (low bits of the hash) or in one alternative bucket (a remix of
//! all hash bits). Inserts prefer the primary, then the alternative, and
//! when both are full move entries to their own alternatives along the
//! shortest path found by a bounded breadth-first search. Each bucket
//! counts (`overflow`, per quarter of the hash space) the keys whose
//! primary it is that live in their alternative, so a lookup reads the
//! second bucket only when a key like it overflowed. The table is sized so
//! that at full `capacity` buckets are at most 80 % occupied, far below the
//! ~95 % where 2-choice 5-way cuckoo hashing starts to fail: 1 << 20 flows
//! take 2^18 buckets, 48 MiB. Even at that worst-case load 87 % of flows
//! sit in their primary bucket and 90 % of misses read a single bucket.
//!
//! # Hash contract
//!
//! The `hash` passed to [`FlowTable::lookup`], [`FlowTable::insert`] etc.
//! must be [`FlowKey::hash`] of the key: it is a parameter only so that a
//! burst can be hashed and prefetched before the lookups. Relocations and
//! [`FlowTable::expire_scan`] recompute it from stored keys. Debug builds
//! assert the contract in `insert` and `remove`.
//!
//! # Aging
//!
//! An entry expires when it has been idle (`now - last_seen`) for at least
//! the timeout of its state: a TCP flow that has only sent a SYN gets the
//! short `syn` timeout (this bounds the damage of SYN floods), an
//! established one `established`, one that sent FIN or RST `closing`, UDP
//! flows `udp`. Expired entries are reclaimed lazily by lookups, by inserts
//! that need their slot, and by the incremental [`FlowTable::expire_scan`].

/// TCP flag bits as found in the TCP header's flags byte.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Identity of a flow: the client side of a connection to one VIP.
///
/// The VIP address and port are implied by `vip`, and the backend is what
/// the flow maps to, so these four fields identify a client connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(C)]
pub struct FlowKey {
    /// Client IPv4 address, host byte order.
    pub client_ip: u32,
    /// Index of the VIP (address, port, protocol) the flow is addressed to.
    pub vip: u32,
    /// Client port, host byte order.
    pub client_port: u16,
    /// IP protocol number (6 = TCP, 17 = UDP).
    pub proto: u8,
}

/// 64 x 64 -> 128-bit multiply folded to 64 bits (the wyhash "mum" mix):
/// every input bit influences the middle bits of the product, and the fold
/// brings them to both halves.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl FlowKey {
    /// 32-bit hash of the key, used both to index the flow table (low bits)
    /// and by Maglev to pick the backend (high bits), so all its bits must
    /// be well mixed. Two folded 128-bit multiplies, following wyhash's
    /// short-input path; a few nanoseconds.
    #[inline]
    pub fn hash(&self) -> u32 {
        // wyhash's default secrets. The VIP half of S1 is far above any
        // VIP index, so `a ^ S1` (a multiplication by zero) cannot occur.
        const S0: u64 = 0xA076_1D64_78BD_642F;
        const S1: u64 = 0xE703_7ED1_A0B4_28DB;
        const S2: u64 = 0x8EBC_6AF0_9C88_C6E3;
        let a = (u64::from(self.client_ip) << 32) | u64::from(self.vip);
        let b = (u64::from(self.client_port) << 8) | u64::from(self.proto);
        // `b` has 24 bits, so `b ^ S2` is never zero either.
        let r = u128::from(a ^ S1) * u128::from(b ^ S2);
        let h = fold_mul((r as u64) ^ S0, ((r >> 64) as u64) ^ S1);
        (h ^ (h >> 32)) as u32
    }
}

/// Connection state that selects the idle timeout of a flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum FlowState {
    /// TCP: only SYN(s) seen from the client; handshake not completed.
    SynSeen,
    /// TCP: the client acknowledged (completed the handshake or was picked
    /// up mid-stream).
    Established,
    /// TCP: FIN or RST seen from the client.
    Closing,
    /// UDP (or any connectionless protocol).
    Udp,
}

/// Idle timeouts per state, in the unit of the `now` values passed to the
/// table (TSC ticks or nanoseconds, at the caller's choice).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct FlowTimeouts {
    /// For [`FlowState::SynSeen`].
    pub syn: u64,
    /// For [`FlowState::Established`].
    pub established: u64,
    /// For [`FlowState::Closing`].
    pub closing: u64,
    /// For [`FlowState::Udp`].
    pub udp: u64,
}

impl FlowTimeouts {
    /// The idle timeout that applies in `state`.
    #[inline]
    pub fn for_state(&self, state: FlowState) -> u64 {
        match state {
            FlowState::SynSeen => self.syn,
            FlowState::Established => self.established,
            FlowState::Closing => self.closing,
            FlowState::Udp => self.udp,
        }
    }
}

/// What the table remembers about a flow (24 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct FlowEntry {
    /// Backend the flow is pinned to (index into the VIP's backend list).
    pub backend: u32,
    /// Connection state; selects the idle timeout.
    pub state: FlowState,
    /// Time of the last packet; expiry is measured from here.
    pub last_seen: u64,
    /// Time of the first packet.
    pub created: u64,
}

impl FlowEntry {
    /// Entry for a TCP flow whose first packet carried `flags`: SYN (without
    /// FIN/RST) starts in [`FlowState::SynSeen`], FIN or RST in
    /// [`FlowState::Closing`], anything else (a flow picked up mid-stream,
    /// e.g. after a restart) in [`FlowState::Established`].
    pub fn new_tcp(backend: u32, now: u64, flags: u8) -> FlowEntry {
        let state = if flags & (TCP_FIN | TCP_RST) != 0 {
            FlowState::Closing
        } else if flags & TCP_SYN != 0 {
            FlowState::SynSeen
        } else {
            FlowState::Established
        };
        FlowEntry {
            backend,
            state,
            last_seen: now,
            created: now,
        }
    }

    /// Entry for a UDP flow.
    pub fn new_udp(backend: u32, now: u64) -> FlowEntry {
        FlowEntry {
            backend,
            state: FlowState::Udp,
            last_seen: now,
            created: now,
        }
    }

    /// Records a client TCP packet with `flags` at `now`: refreshes
    /// `last_seen` and advances the state. FIN or RST means Closing (it
    /// stays there, only its idle timer is refreshed by the last ACKs); an
    /// ACK without SYN completes the handshake; a bare SYN on a Closing flow
    /// is the client reusing the port for a new connection. UDP entries are
    /// only touched.
    #[inline]
    pub fn observe_tcp(&mut self, flags: u8, now: u64) {
        self.touch(now);
        let closing = flags & (TCP_FIN | TCP_RST) != 0;
        let syn = flags & TCP_SYN != 0;
        let ack = flags & TCP_ACK != 0;
        self.state = match self.state {
            FlowState::Udp => FlowState::Udp,
            _ if closing => FlowState::Closing,
            FlowState::SynSeen if ack && !syn => FlowState::Established,
            FlowState::Closing if syn && !ack => FlowState::SynSeen,
            s => s,
        };
    }

    /// Records a packet at `now` without state change. `last_seen` never
    /// goes backwards, so an out-of-order timestamp cannot shorten a flow's
    /// life.
    #[inline]
    pub fn touch(&mut self, now: u64) {
        self.last_seen = self.last_seen.max(now);
    }

    /// Whether the flow has been idle for at least its state's timeout.
    #[inline]
    pub fn is_expired(&self, now: u64, t: &FlowTimeouts) -> bool {
        now.saturating_sub(self.last_seen) >= t.for_state(self.state)
    }
}

/// Result of [`FlowTable::lookup`].
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Live entry for the key; the caller updates it (e.g. with
    /// [`FlowEntry::observe_tcp`]).
    Hit(&'a mut FlowEntry),
    /// No entry for the key.
    Miss,
    /// The key's entry had expired; it has been removed (treat as a miss,
    /// after counting / reporting the expiry).
    Expired {
        /// The removed entry.
        old: FlowEntry,
    },
}

/// Result of [`FlowTable::insert`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Insert {
    /// Stored in a free slot. Also returned when the key was already present
    /// and live: its entry is then overwritten in place and `len` is
    /// unchanged (callers normally insert only after a miss).
    New,
    /// Stored in the slot of an expired entry, which is reported so the
    /// caller can count it. `old_key` may be the inserted key itself.
    ReplacedExpired {
        /// Key of the evicted expired flow.
        old_key: FlowKey,
        /// The evicted expired entry.
        old: FlowEntry,
    },
    /// No room: the table holds `capacity` live flows, or (vanishingly rare
    /// below capacity) no free slot was reachable. Nothing was changed.
    Full,
}

/// Ways per bucket: 5 keys of 12 bytes fill a cache line (see module doc).
const WAYS: usize = 5;
/// Buckets are sized for at most this many flows per bucket on average at
/// full capacity: 4 of 5 ways, i.e. 80 % load.
const FLOWS_PER_BUCKET: usize = 4;
/// Largest supported capacity: buckets are indexed by the 32-bit hash.
const MAX_CAPACITY: usize = 1 << 31;
/// Bound on the cuckoo breadth-first search (buckets visited per insert):
/// covers every path of up to 3 moves from the two candidate buckets.
const BFS_NODES: usize = 128;

/// A key as stored in a bucket: `[client_ip, vip, port | proto << 16]`.
/// Unlike `FlowKey` it has no padding byte, so it compares as three words.
type PackedKey = [u32; 3];

#[inline]
fn pack(k: &FlowKey) -> PackedKey {
    [
        k.client_ip,
        k.vip,
        u32::from(k.client_port) | (u32::from(k.proto) << 16),
    ]
}

#[inline]
fn unpack(k: &PackedKey) -> FlowKey {
    FlowKey {
        client_ip: k[0],
        vip: k[1],
        client_port: k[2] as u16,
        proto: (k[2] >> 16) as u8,
    }
}

/// One bucket: three cache lines, keys first (see module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    keys: [PackedKey; WAYS],
    /// Bit `w` set when way `w` holds a flow.
    occupied: u8,
    _pad: u8,
    /// Flows whose primary bucket this is that live in their alternative,
    /// as four 4-bit counters, one per class of the top two hash bits (see
    /// [`overflow_shift`]), so that a miss reads the alternative bucket only
    /// when a flow of its own class overflowed: about a quarter as often as
    /// with a single counter. A counter that reaches 15 sticks there (is
    /// never decremented): it can only over-state, which costs a probe,
    /// never a lost flow.
    overflow: u16,
    entries: [FlowEntry; WAYS],
}

// The layout claims of the module doc.
const _: () = assert!(std::mem::size_of::<Bucket>() == 192);
const _: () = assert!(std::mem::offset_of!(Bucket, entries) == 64);


const FULL_MASK: u8 = (1 << WAYS) - 1;

/// The bucket array: `n` buckets on fresh anonymous memory, 2 MiB aligned,
/// which Linux is asked to back with transparent huge pages before it is
/// first touched. A table of tens of megabytes looked up at random would
/// otherwise take a TLB miss (a page walk) on nearly every packet.
struct BucketArray {
    ptr: std::ptr::NonNull<Bucket>,
    len: usize,
    /// The whole mapping (for munmap): base and length.
    map: (*mut libc::c_void, usize),
}

// SAFETY: BucketArray owns its mapping exclusively, like a Box<[Bucket]>.
unsafe impl Send for BucketArray {}
// SAFETY: shared access only hands out `&[Bucket]`.
unsafe impl Sync for BucketArray {}

const HUGE_PAGE: usize = 2 << 20;

impl BucketArray {
    fn new(n: usize) -> BucketArray {
        let bytes = std::mem::size_of::<Bucket>()
            .checked_mul(n)
            .expect("flow table size overflows");
        let map_len = bytes + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; the kernel fills it
        // with zeros, and an all-zero Bucket is a valid value (integers,
        // arrays of integers, and `FlowState` discriminant 0 in entries that
        // `occupied == 0` marks unused).
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
                    "cannot map {} MiB for the flow table: {}",
                    map_len >> 20,
                    std::io::Error::last_os_error()
                );
            }
            let start = (base as usize).next_multiple_of(HUGE_PAGE);
            // Failure (THP disabled) is harmless: small pages are used.
            libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
            BucketArray {
                ptr: std::ptr::NonNull::new_unchecked(start as *mut Bucket),
                len: n,
                map: (base, map_len),
            }
        }
    }
}

impl std::ops::Deref for BucketArray {
    type Target = [Bucket];
    fn deref(&self) -> &[Bucket] {
        // SAFETY: ptr..ptr+len lies inside the mapping, initialised (zeroed
        // by the kernel or written since), and owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for BucketArray {
    fn deref_mut(&mut self) -> &mut [Bucket] {
        // SAFETY: as in deref; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for BucketArray {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no reference
        // into it outlives self.
        unsafe {
            libc::munmap(self.map.0, self.map.1);
        }
    }
}

/// Bit offset, in [`Bucket::overflow`], of the counter for `hash`'s class.
/// The class is the top two hash bits, which the primary index never uses
/// (at most 2^29 buckets), so the classes of one bucket are equally full.
#[inline]
fn overflow_shift(hash: u32) -> u32 {
    (hash >> 30) * 4
}

impl Bucket {
    /// Ways whose key equals `k` (a bit mask), compared branch-free.
    #[inline]
    fn matches(&self, k: &PackedKey) -> u8 {
        let mut m = 0u8;
        for (w, s) in self.keys.iter().enumerate() {
            let diff = (s[0] ^ k[0]) | (s[1] ^ k[1]) | (s[2] ^ k[2]);
            m |= u8::from(diff == 0) << w;
        }
        m & self.occupied
    }

    #[inline]
    fn find(&self, k: &PackedKey) -> Option<usize> {
        let m = self.matches(k);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    #[inline]
    fn free_way(&self) -> Option<usize> {
        let free = !self.occupied & FULL_MASK;
        (free != 0).then(|| free.trailing_zeros() as usize)
    }

    #[inline]
    fn is_occupied(&self, way: usize) -> bool {
        self.occupied & (1 << way) != 0
    }
}

/// Prefetches cache lines `lines` (0 = keys, 1-2 = entries) of `b`.
#[inline(always)]
fn prefetch_lines(b: &Bucket, lines: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for line in lines {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (b as *const Bucket).cast::<i8>().wrapping_add(64 * line);
        // SAFETY: a prefetch is only a hint: it never faults (even for an
        // invalid address, and this one is within `b`) and has no
        // architectural effect; SSE is part of the x86_64 baseline.
        // (Newer compilers consider the call safe, hence the allow.)
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (b, lines);
}

/// A bucket reached by the cuckoo search, and how: the flow at
/// `(nodes[parent].bucket, way)` can move here.
#[derive(Clone, Copy)]
struct Node {
    bucket: usize,
    parent: u8,
    way: u8,
}

/// `Node::parent` of the two roots.
const ROOT: u8 = u8::MAX;

/// The per-worker flow table (see the module documentation).
pub struct FlowTable {
    buckets: BucketArray,
    /// `buckets.len() - 1`; the length is a power of two.
    mask: usize,
    len: usize,
    capacity: usize,
    timeouts: FlowTimeouts,
    /// Next slot `expire_scan` examines, as bucket and way.
    cursor_bucket: usize,
    cursor_way: usize,
}

impl std::fmt::Debug for FlowTable {
    // The bucket array can be tens of megabytes; print a summary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("buckets", &self.buckets.len())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl FlowTable {
    /// A table for at most `capacity` live flows (clamped to 2^31), with
    /// all memory allocated now: `capacity / 4` buckets of 192 bytes rounded
    /// up to a power of two, i.e. 48 to 96 bytes per flow (1 << 20 and
    /// 1_000_000 flows: 48 MiB).
    pub fn new(capacity: usize, timeouts: FlowTimeouts) -> FlowTable {
        let capacity = capacity.min(MAX_CAPACITY);
        // At least two buckets so that a key's alternative bucket differs
        // from its primary.
        let n = capacity
            .div_ceil(FLOWS_PER_BUCKET)
            .next_power_of_two()
            .max(2);
        FlowTable {
            buckets: BucketArray::new(n),
            mask: n - 1,
            len: 0,
            capacity,
            timeouts,
            cursor_bucket: 0,
            cursor_way: 0,
        }
    }

    /// Number of flows stored (including expired ones not yet reclaimed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no flow is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of flows, as given to [`FlowTable::new`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of the bucket array (all the memory the table uses).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// The idle timeouts in force.
    pub fn timeouts(&self) -> &FlowTimeouts {
        &self.timeouts
    }

    /// Replaces the idle timeouts (e.g. on configuration reload); they apply
    /// to existing flows from the next check on.
    pub fn set_timeouts(&mut self, timeouts: FlowTimeouts) {
        self.timeouts = timeouts;
    }

    #[inline]
    fn primary(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// Alternative bucket of a key, never equal to its primary `p`.
    #[inline]
    fn alternative(&self, hash: u32, p: usize) -> usize {
        // "lowbias32" (C. Wellons), a bijective 32-bit mixer, so that the
        // alternative depends on all hash bits, not only on those of `p`.
        let mut x = hash;
        x ^= x >> 16;
        x = x.wrapping_mul(0x7FEB_352D);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846C_A68B);
        x ^= x >> 16;
        let a = x as usize & self.mask;
        if a == p {
            p ^ 1
        } else {
            a
        }
    }

    /// Hints the CPU to load the primary bucket of `hash`: its key line and
    /// both entry lines, since which entry line a hit needs is only known
    /// after the keys are compared (192 contiguous bytes, one page walk).
    /// Call it for every packet of a burst before looking them up, so that
    /// the memory accesses overlap instead of stalling one after another.
    #[inline]
    pub fn prefetch(&self, hash: u32) {
        if let Some(b) = self.buckets.get(self.primary(hash)) {
            prefetch_lines(b, 0..3);
        }
    }

    /// Where the flow with packed key `k` and `hash` lives: `(bucket, way)`.
    #[inline]
    fn locate(&self, k: &PackedKey, hash: u32) -> Option<(usize, usize)> {
        let p = self.primary(hash);
        let pb = self.buckets.get(p)?;
        // Start loading the entry lines now: their addresses are known, and
        // this overlaps their cache misses with the one of the key line
        // instead of serializing them behind the key comparison. (A miss
        // usually leads to an insert, which writes an entry line too.)
        prefetch_lines(pb, 1..3);
        if let Some(w) = pb.find(k) {
            return Some((p, w));
        }
        if (pb.overflow >> overflow_shift(hash)) & 0xF == 0 {
            return None;
        }
        let a = self.alternative(hash, p);
        let w = self.buckets.get(a)?.find(k)?;
        Some((a, w))
    }

    /// Looks up the flow `key` (`hash` must be `key.hash()`) at time `now`.
    /// A live entry is returned for update; an expired one is removed and
    /// returned by value.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u32, now: u64) -> Lookup<'_> {
        let Some((b, w)) = self.locate(&pack(key), hash) else {
            return Lookup::Miss;
        };
        let old = self.buckets[b].entries[w];
        if old.is_expired(now, &self.timeouts) {
            self.vacate(b, w, hash);
            return Lookup::Expired { old };
        }
        Lookup::Hit(&mut self.buckets[b].entries[w])
    }

    /// Inserts the flow `key` (`hash` must be `key.hash()`) with `entry`.
    ///
    /// Prefers a free slot in the key's buckets, then the slot of an expired
    /// flow there, then makes room by moving other flows to their
    /// alternative buckets. Never evicts a live flow; if the key is already
    /// present its entry is overwritten (see [`Insert`]).
    pub fn insert(&mut self, key: FlowKey, hash: u32, entry: FlowEntry, now: u64) -> Insert {
        debug_assert_eq!(hash, key.hash(), "FlowTable hash must be FlowKey::hash");
        let k = pack(&key);
        if let Some((b, w)) = self.locate(&k, hash) {
            let slot = &mut self.buckets[b].entries[w];
            let old = std::mem::replace(slot, entry);
            return if old.is_expired(now, &self.timeouts) {
                Insert::ReplacedExpired { old_key: key, old }
            } else {
                Insert::New
            };
        }
        let room = self.len < self.capacity;
        let p = self.primary(hash);
        let a = self.alternative(hash, p);
        // Primary first: a flow there is found by reading one cache line.
        for b in [p, a] {
            if room {
                if let Some(w) = self.buckets[b].free_way() {
                    self.place(b, w, hash, &k, entry);
                    return Insert::New;
                }
            }
            if let Some(r) = self.replace_expired(b, hash, &k, entry, now) {
                return r;
            }
        }
        if room {
            if let Some((b, w)) = self.make_room(p, a) {
                self.place(b, w, hash, &k, entry);
                return Insert::New;
            }
        }
        Insert::Full
    }

    /// Removes the flow `key` (`hash` must be `key.hash()`), returning its
    /// entry whether or not it had expired.
    pub fn remove(&mut self, key: &FlowKey, hash: u32) -> Option<FlowEntry> {
        debug_assert_eq!(hash, key.hash(), "FlowTable hash must be FlowKey::hash");
        let (b, w) = self.locate(&pack(key), hash)?;
        let old = self.buckets[b].entries[w];
        self.vacate(b, w, hash);
        Some(old)
    }

    /// Incremental sweep: examines up to `max_slots` slots (at most one
    /// full pass) from where the previous call stopped, wrapping around,
    /// removes the flows that have expired at `now` and reports each to
    /// `on_expired`. Returns how many were removed. Meant to be called every
    /// poll-loop iteration with a small budget (each slot costs a few ns).
    pub fn expire_scan(
        &mut self,
        now: u64,
        max_slots: usize,
        mut on_expired: impl FnMut(&FlowKey, &FlowEntry),
    ) -> usize {
        let budget = max_slots.min(self.buckets.len() * WAYS);
        let timeouts = self.timeouts;
        let mut removed = 0;
        for _ in 0..budget {
            let (b, w) = (self.cursor_bucket, self.cursor_way);
            self.cursor_way += 1;
            if self.cursor_way == WAYS {
                self.cursor_way = 0;
                self.cursor_bucket = (self.cursor_bucket + 1) & self.mask;
            }
            let bucket = &self.buckets[b];
            if !bucket.is_occupied(w) || !bucket.entries[w].is_expired(now, &timeouts) {
                continue;
            }
            let key = unpack(&bucket.keys[w]);
            on_expired(&key, &bucket.entries[w]);
            self.vacate(b, w, key.hash());
            removed += 1;
        }
        removed
    }

    /// All stored flows, in table order. Meant for listing flows off the
    /// fast path; expired flows not yet reclaimed are included (check
    /// [`FlowEntry::is_expired`] to filter them).
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, FlowEntry)> + '_ {
        self.buckets.iter().flat_map(|b| {
            (0..WAYS)
                .filter(|&w| b.is_occupied(w))
                .map(|w| (unpack(&b.keys[w]), b.entries[w]))
        })
    }

    /// Stores the flow `k` (hash `hash`) in the free way `w` of bucket `b`.
    #[inline]
    fn place(&mut self, b: usize, w: usize, hash: u32, k: &PackedKey, entry: FlowEntry) {
        let bucket = &mut self.buckets[b];
        bucket.keys[w] = *k;
        bucket.entries[w] = entry;
        bucket.occupied |= 1 << w;
        let p = self.primary(hash);
        if b != p {
            let (o, shift) = (&mut self.buckets[p].overflow, overflow_shift(hash));
            if (*o >> shift) & 0xF != 0xF {
                *o += 1 << shift;
            }
        }
        self.len += 1;
    }

    /// Frees way `w` of bucket `b`, which holds a flow with hash `hash`.
    #[inline]
    fn vacate(&mut self, b: usize, w: usize, hash: u32) {
        self.buckets[b].occupied &= !(1 << w);
        let p = self.primary(hash);
        if b != p {
            let (o, shift) = (&mut self.buckets[p].overflow, overflow_shift(hash));
            let count = (*o >> shift) & 0xF;
            // 0 cannot happen (the flow was counted); 15 is sticky.
            if count != 0 && count != 0xF {
                *o -= 1 << shift;
            }
        }
        self.len = self.len.saturating_sub(1);
    }

    /// If bucket `b` holds an expired flow, replaces it with the new flow
    /// (hash `hash`) and reports the old one.
    fn replace_expired(
        &mut self,
        b: usize,
        hash: u32,
        k: &PackedKey,
        entry: FlowEntry,
        now: u64,
    ) -> Option<Insert> {
        let bucket = &self.buckets[b];
        let w = (0..WAYS).find(|&w| {
            bucket.is_occupied(w) && bucket.entries[w].is_expired(now, &self.timeouts)
        })?;
        let old_key = unpack(&bucket.keys[w]);
        let old = bucket.entries[w];
        self.vacate(b, w, old_key.hash());
        self.place(b, w, hash, k, entry);
        Some(Insert::ReplacedExpired { old_key, old })
    }

    /// Moves the flow at `(from, w)` into a free way of `to`, which must be
    /// its other bucket.
    fn relocate(&mut self, from: usize, w: usize, to: usize) {
        let k = self.buckets[from].keys[w];
        let entry = self.buckets[from].entries[w];
        let Some(to_w) = self.buckets[to].free_way() else {
            return; // unreachable: callers check for a free way first
        };
        let hash = unpack(&k).hash();
        self.vacate(from, w, hash);
        self.place(to, to_w, hash, &k, entry);
    }

    /// Frees a way in bucket `p` or `a` (both full) by moving flows to their
    /// alternative buckets along the shortest path found by a bounded
    /// breadth-first search; returns the freed `(bucket, way)`. Runs without
    /// allocating: the search tree lives on the stack.
    fn make_room(&mut self, p: usize, a: usize) -> Option<(usize, usize)> {
        let mut nodes = [Node {
            bucket: 0,
            parent: ROOT,
            way: 0,
        }; BFS_NODES];
        nodes[0].bucket = p;
        nodes[1].bucket = a;
        let mut n = 2;
        let mut head = 0;
        while head < n {
            let cur = nodes[head].bucket;
            for w in 0..WAYS {
                let hash = unpack(&self.buckets[cur].keys[w]).hash();
                let kp = self.primary(hash);
                let other = if cur == kp {
                    self.alternative(hash, kp)
                } else {
                    kp
                };
                if self.buckets[other].free_way().is_some() {
                    // Found: shift flows one step along the path, leaf first,
                    // so that every move goes into a just-freed way.
                    self.relocate(cur, w, other);
                    let (mut hole, mut idx) = ((cur, w), head);
                    while nodes[idx].parent != ROOT {
                        let parent = usize::from(nodes[idx].parent);
                        let from = (nodes[parent].bucket, usize::from(nodes[idx].way));
                        self.relocate(from.0, from.1, hole.0);
                        hole = from;
                        idx = parent;
                    }
                    return Some(hole);
                }
                // Each bucket at most once, so a path never revisits one.
                if n < BFS_NODES && !nodes[..n].iter().any(|x| x.bucket == other) {
                    nodes[n] = Node {
                        bucket: other,
                        parent: head as u8,
                        way: w as u8,
                    };
                    n += 1;
                }
            }
            head += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const T: FlowTimeouts = FlowTimeouts {
        syn: 10,
        established: 1000,
        closing: 20,
        udp: 100,
    };

    fn key(i: u32) -> FlowKey {
        FlowKey {
            client_ip: 0x0A00_0000 + i / 50_000,
            vip: i % 3,
            client_port: (1024 + i % 50_000) as u16,
            proto: [6, 17][(i & 1) as usize],
        }
    }

    fn lookup<'a>(t: &'a mut FlowTable, k: &FlowKey, now: u64) -> Lookup<'a> {
        t.lookup(k, k.hash(), now)
    }

    fn insert(t: &mut FlowTable, k: FlowKey, e: FlowEntry, now: u64) -> Insert {
        t.insert(k, k.hash(), e, now)
    }

    fn hit_backend(t: &mut FlowTable, k: &FlowKey, now: u64) -> Option<u32> {
        match lookup(t, k, now) {
            Lookup::Hit(e) => Some(e.backend),
            _ => None,
        }
    }

    /// Checks `overflow` counters and `len` against the stored flows.
    fn check_invariants(t: &FlowTable) {
        let mut want = vec![0u16; t.buckets.len()];
        let mut n = 0;
        for (b, bucket) in t.buckets.iter().enumerate() {
            for w in (0..WAYS).filter(|&w| bucket.is_occupied(w)) {
                let h = unpack(&bucket.keys[w]).hash();
                let p = t.primary(h);
                assert!(
                    b == p || b == t.alternative(h, p),
                    "flow in a foreign bucket"
                );
                if b != p {
                    want[p] += 1 << overflow_shift(h);
                }
                n += 1;
            }
        }
        assert_eq!(n, t.len());
        for (b, bucket) in t.buckets.iter().enumerate() {
            assert_eq!(bucket.overflow, want[b], "overflow counts of bucket {b}");
        }
    }

    #[test]
    fn insert_lookup_remove() {
        let mut t = FlowTable::new(100, T);
        assert!(t.is_empty());
        let k = key(1);
        assert!(matches!(lookup(&mut t, &k, 0), Lookup::Miss));
        assert_eq!(insert(&mut t, k, FlowEntry::new_udp(7, 0), 0), Insert::New);
        assert_eq!(t.len(), 1);
        match lookup(&mut t, &k, 5) {
            Lookup::Hit(e) => {
                assert_eq!(e.backend, 7);
                e.touch(5);
            }
            other => panic!("{other:?}"),
        }
        // The update through the Hit reference is stored.
        assert_eq!(t.iter().next().unwrap().1.last_seen, 5);
        assert!(matches!(lookup(&mut t, &key(2), 5), Lookup::Miss));
        assert_eq!(t.remove(&k, k.hash()).map(|e| e.backend), Some(7));
        assert_eq!(t.remove(&k, k.hash()), None);
        assert!(matches!(lookup(&mut t, &k, 5), Lookup::Miss));
        assert!(t.is_empty());
    }

    #[test]
    fn keys_differing_in_one_field_are_distinct() {
        let base = FlowKey {
            client_ip: 1,
            vip: 2,
            client_port: 3,
            proto: 6,
        };
        let variants = [
            base,
            FlowKey {
                client_ip: 9,
                ..base
            },
            FlowKey { vip: 9, ..base },
            FlowKey {
                client_port: 9,
                ..base
            },
            FlowKey { proto: 17, ..base },
        ];
        let mut t = FlowTable::new(16, T);
        for (i, k) in variants.iter().enumerate() {
            assert_eq!(
                insert(&mut t, *k, FlowEntry::new_udp(i as u32, 0), 0),
                Insert::New
            );
        }
        for (i, k) in variants.iter().enumerate() {
            assert_eq!(hit_backend(&mut t, k, 1), Some(i as u32));
        }
        let hashes: HashSet<u32> = variants.iter().map(|k| k.hash()).collect();
        assert_eq!(hashes.len(), variants.len());
    }

    #[test]
    fn reinsert_overwrites_in_place() {
        let mut t = FlowTable::new(8, T);
        let k = key(3);
        assert_eq!(insert(&mut t, k, FlowEntry::new_udp(1, 0), 0), Insert::New);
        assert_eq!(insert(&mut t, k, FlowEntry::new_udp(2, 1), 1), Insert::New);
        assert_eq!(t.len(), 1);
        assert_eq!(hit_backend(&mut t, &k, 2), Some(2));
        // Re-inserting over an expired entry of the same key reports it.
        let r = insert(&mut t, k, FlowEntry::new_udp(3, 500), 500);
        assert_eq!(
            r,
            Insert::ReplacedExpired {
                old_key: k,
                old: FlowEntry::new_udp(2, 1)
            }
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn capacity_bound_yields_full() {
        for cap in [0usize, 1, 2, 5, 17, 100, 1000, 4096, 10_000] {
            let mut t = FlowTable::new(cap, T);
            assert_eq!(t.capacity(), cap);
            for i in 0..cap as u32 {
                assert_eq!(
                    insert(&mut t, key(i), FlowEntry::new_udp(i, 0), 0),
                    Insert::New,
                    "cap {cap}, flow {i}"
                );
            }
            for i in cap as u32..cap as u32 + 50 {
                assert_eq!(
                    insert(&mut t, key(i), FlowEntry::new_udp(i, 0), 0),
                    Insert::Full
                );
            }
            assert_eq!(t.len(), cap);
            check_invariants(&t);
            // Nothing live was lost or evicted.
            for i in 0..cap as u32 {
                assert_eq!(hit_backend(&mut t, &key(i), 1), Some(i));
            }
            for i in cap as u32..cap as u32 + 50 {
                assert!(matches!(lookup(&mut t, &key(i), 1), Lookup::Miss));
            }
            // Removing one makes room for exactly one.
            if cap > 0 {
                t.remove(&key(0), key(0).hash());
                let extra = key(cap as u32 + 1);
                assert_eq!(
                    insert(&mut t, extra, FlowEntry::new_udp(0, 1), 1),
                    Insert::New
                );
                let extra = key(cap as u32 + 2);
                assert_eq!(
                    insert(&mut t, extra, FlowEntry::new_udp(0, 1), 1),
                    Insert::Full
                );
            }
        }
    }

    #[test]
    fn full_table_reuses_expired_slots() {
        let mut t = FlowTable::new(64, T);
        for i in 0..64 {
            insert(&mut t, key(i), FlowEntry::new_udp(i, 0), 0);
        }
        // Nothing expired yet: full.
        assert_eq!(
            insert(&mut t, key(100), FlowEntry::new_udp(0, 50), 50),
            Insert::Full
        );
        // After the UDP timeout every old flow is reusable; the new flow
        // takes one over and the old key is reported.
        let r = insert(&mut t, key(100), FlowEntry::new_udp(1, 100), 100);
        let Insert::ReplacedExpired { old_key, old } = r else {
            panic!("{r:?}");
        };
        assert!(old_key != key(100));
        assert_eq!(old.backend, old_key.client_port as u32 - 1024);
        assert_eq!(t.len(), 64);
        assert!(matches!(lookup(&mut t, &old_key, 100), Lookup::Miss));
        assert_eq!(hit_backend(&mut t, &key(100), 100), Some(1));
        check_invariants(&t);
    }

    #[test]
    fn expiry_per_state() {
        let mut t = FlowTable::new(16, T);
        let (syn, est, fin, rst, udp) = (key(0), key(2), key(4), key(6), key(1));
        insert(&mut t, syn, FlowEntry::new_tcp(0, 0, TCP_SYN), 0);
        insert(&mut t, est, FlowEntry::new_tcp(1, 0, TCP_SYN), 0);
        insert(&mut t, fin, FlowEntry::new_tcp(2, 0, TCP_SYN), 0);
        insert(&mut t, rst, FlowEntry::new_tcp(3, 0, TCP_SYN), 0);
        insert(&mut t, udp, FlowEntry::new_udp(4, 0), 0);
        // Handshake completes for `est`, `fin`, `rst`.
        for k in [est, fin, rst] {
            let Lookup::Hit(e) = lookup(&mut t, &k, 5) else {
                panic!()
            };
            e.observe_tcp(TCP_ACK, 5);
            assert_eq!(e.state, FlowState::Established);
        }
        let Lookup::Hit(e) = lookup(&mut t, &fin, 6) else {
            panic!()
        };
        e.observe_tcp(TCP_FIN | TCP_ACK, 6);
        assert_eq!(e.state, FlowState::Closing);
        let Lookup::Hit(e) = lookup(&mut t, &rst, 6) else {
            panic!()
        };
        e.observe_tcp(TCP_RST, 6);
        assert_eq!(e.state, FlowState::Closing);

        // SYN-only: alive just before its timeout, expired at it.
        assert!(matches!(lookup(&mut t, &syn, 9), Lookup::Hit(_)));
        match lookup(&mut t, &syn, 10) {
            Lookup::Expired { old } => {
                assert_eq!((old.backend, old.state), (0, FlowState::SynSeen))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(lookup(&mut t, &syn, 10), Lookup::Miss));
        // Closing (FIN, RST): 20 after their last packet at 6.
        assert!(matches!(lookup(&mut t, &fin, 25), Lookup::Hit(_)));
        assert!(matches!(lookup(&mut t, &fin, 26), Lookup::Expired { .. }));
        assert!(matches!(lookup(&mut t, &rst, 26), Lookup::Expired { .. }));
        // UDP: 100 idle.
        assert!(matches!(lookup(&mut t, &udp, 99), Lookup::Hit(_)));
        assert!(matches!(lookup(&mut t, &udp, 100), Lookup::Expired { .. }));
        // Established lives on; idle time counts from the last packet.
        let Lookup::Hit(e) = lookup(&mut t, &est, 500) else {
            panic!()
        };
        e.observe_tcp(TCP_ACK, 500);
        assert!(matches!(lookup(&mut t, &est, 1499), Lookup::Hit(_)));
        assert!(matches!(lookup(&mut t, &est, 1500), Lookup::Expired { .. }));
        assert!(t.is_empty());
    }

    #[test]
    fn tcp_state_machine() {
        let mut e = FlowEntry::new_tcp(0, 0, TCP_SYN);
        assert_eq!(e.state, FlowState::SynSeen);
        e.observe_tcp(TCP_SYN, 1); // retransmitted SYN
        assert_eq!(e.state, FlowState::SynSeen);
        e.observe_tcp(TCP_SYN | TCP_ACK, 2); // not a handshake completion
        assert_eq!(e.state, FlowState::SynSeen);
        e.observe_tcp(TCP_ACK, 3);
        assert_eq!(e.state, FlowState::Established);
        e.observe_tcp(TCP_ACK | 0x08, 4); // PSH|ACK
        assert_eq!(e.state, FlowState::Established);
        e.observe_tcp(TCP_FIN | TCP_ACK, 5);
        assert_eq!(e.state, FlowState::Closing);
        e.observe_tcp(TCP_ACK, 6); // last ACK keeps Closing but refreshes
        assert_eq!((e.state, e.last_seen), (FlowState::Closing, 6));
        e.observe_tcp(TCP_SYN, 7); // port reuse: new handshake
        assert_eq!(e.state, FlowState::SynSeen);
        assert_eq!(e.created, 0);
        e.observe_tcp(TCP_RST, 8);
        assert_eq!(e.state, FlowState::Closing);
        // First-packet classification.
        assert_eq!(
            FlowEntry::new_tcp(0, 0, TCP_ACK).state,
            FlowState::Established
        );
        assert_eq!(FlowEntry::new_tcp(0, 0, TCP_RST).state, FlowState::Closing);
        assert_eq!(
            FlowEntry::new_tcp(0, 0, TCP_SYN | TCP_FIN).state,
            FlowState::Closing
        );
        // UDP entries ignore TCP flags; time never goes backwards.
        let mut u = FlowEntry::new_udp(0, 10);
        u.observe_tcp(TCP_FIN, 20);
        assert_eq!((u.state, u.last_seen), (FlowState::Udp, 20));
        u.touch(15);
        assert_eq!(u.last_seen, 20);
        assert!(!u.is_expired(5, &T)); // a clock behind last_seen: not idle
    }

    #[test]
    fn expire_scan_reports_each_expired_once() {
        let n = 5000u32;
        let mut t = FlowTable::new(8192, T);
        for i in 0..n {
            // Thirds: SYN-only (expire at 10), UDP (100), established (1000).
            let e = match i % 3 {
                0 => FlowEntry::new_tcp(i, 0, TCP_SYN),
                1 => FlowEntry::new_udp(i, 0),
                _ => FlowEntry::new_tcp(i, 0, TCP_ACK),
            };
            assert_eq!(insert(&mut t, key(i), e, 0), Insert::New);
        }
        let slots = t.buckets.len() * WAYS;
        let mut seen = HashSet::new();
        // Small budgets, more than a full pass in total.
        let mut removed = 0;
        for _ in 0..slots / 7 + 2 {
            removed += t.expire_scan(150, 7, |k, e| {
                assert!(seen.insert(*k), "reported twice: {k:?}");
                assert_eq!(e.backend % 3, if e.state == FlowState::Udp { 1 } else { 0 });
            });
        }
        let expected: HashSet<FlowKey> = (0..n).filter(|i| i % 3 != 2).map(key).collect();
        assert_eq!(seen, expected);
        assert_eq!(removed, expected.len());
        assert_eq!(t.len(), (n as usize) - expected.len());
        check_invariants(&t);
        // Another full pass finds nothing; live flows are all still there.
        assert_eq!(t.expire_scan(150, usize::MAX, |_, _| panic!()), 0);
        for i in (0..n).filter(|i| i % 3 == 2) {
            assert_eq!(hit_backend(&mut t, &key(i), 150), Some(i));
        }
    }

    #[test]
    fn iter_lists_stored_flows() {
        let mut t = FlowTable::new(1000, T);
        let mut want = HashMap::new();
        for i in 0..500 {
            let e = FlowEntry::new_udp(i, u64::from(i));
            insert(&mut t, key(i), e, 0);
            want.insert(key(i), e);
        }
        for i in (0..500).step_by(3) {
            t.remove(&key(i), key(i).hash());
            want.remove(&key(i));
        }
        let got: HashMap<FlowKey, FlowEntry> = t.iter().collect();
        assert_eq!(got.len(), t.iter().count());
        assert_eq!(got, want);
    }

    #[test]
    fn memory_for_a_million_flows() {
        let t = FlowTable::new(1 << 20, T);
        assert_eq!(t.memory_bytes(), 48 << 20);
        assert!(t.memory_bytes() <= 64 << 20);
        let t = FlowTable::new(1_000_000, T);
        assert_eq!(t.memory_bytes(), 48 << 20);
    }

    #[test]
    fn million_flows_all_found() {
        let n = 1u32 << 20;
        let mut t = FlowTable::new(n as usize, T);
        let keys: Vec<FlowKey> = (0..n)
            .map(|i| FlowKey {
                client_ip: 0xC0A8_0000 | (i >> 4),
                vip: i & 3,
                client_port: 40_000 + (i as u16 & 0xC),
                proto: 6,
            })
            .collect();
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), n as usize);
        for (i, k) in keys.iter().enumerate() {
            let h = k.hash();
            t.prefetch(h);
            let r = t.insert(*k, h, FlowEntry::new_tcp(i as u32, 0, TCP_SYN), 0);
            assert_eq!(r, Insert::New, "flow {i}");
        }
        assert_eq!(t.len(), n as usize);
        let extra = FlowKey {
            proto: 17,
            ..keys[0]
        };
        assert_eq!(
            insert(&mut t, extra, FlowEntry::new_udp(0, 0), 0),
            Insert::Full
        );
        let mut single_line = 0;
        for (i, k) in keys.iter().enumerate() {
            let h = k.hash();
            if t.buckets[t.primary(h)].find(&pack(k)).is_some() {
                single_line += 1;
            }
            assert_eq!(hit_backend(&mut t, k, 1), Some(i as u32));
        }
        let in_primary = single_line as f64 / f64::from(n);
        let probes_one = keys
            .iter()
            .map(|k| FlowKey { proto: 17, ..*k }.hash())
            .filter(|&h| (t.buckets[t.primary(h)].overflow >> overflow_shift(h)) & 0xF == 0)
            .count() as f64
            / f64::from(n);
        println!(
            "flow table at 80% load: {:.1}% of flows in their primary bucket, \
             {:.1}% of misses read one bucket",
            in_primary * 100.0,
            probes_one * 100.0
        );
        check_invariants(&t);
    }

    #[test]
    fn hash_spreads_sequential_keys() {
        // Sequential client ports of one client (the worst realistic case)
        // must spread evenly both over low bits (flow table buckets) and
        // over high bits (Maglev's multiply-shift reduction).
        let n = 1u32 << 16;
        let mut low = [0u32; 64];
        let mut high = [0u32; 64];
        for port in 0..n {
            let h = FlowKey {
                client_ip: 0x0A00_0001,
                vip: 0,
                client_port: port as u16,
                proto: 6,
            }
            .hash();
            low[(h & 63) as usize] += 1;
            high[(h >> 26) as usize] += 1;
        }
        let expect = f64::from(n) / 64.0;
        for counts in [low, high] {
            let chi2: f64 = counts
                .iter()
                .map(|&c| (f64::from(c) - expect).powi(2) / expect)
                .sum();
            // 63 degrees of freedom: p = 1e-6 at about 130.
            assert!(chi2 < 130.0, "chi2 {chi2}: {counts:?}");
        }
        // Single-bit input changes flip about half of the output bits.
        let base = key(12345);
        let flips: Vec<u32> = (0..32)
            .map(|b| FlowKey {
                client_ip: base.client_ip ^ (1 << b),
                ..base
            })
            .chain((0..16).map(|b| FlowKey {
                client_port: base.client_port ^ (1 << b),
                ..base
            }))
            .chain((0..8).map(|b| FlowKey {
                proto: base.proto ^ (1 << b),
                ..base
            }))
            .map(|k| (k.hash() ^ base.hash()).count_ones())
            .collect();
        assert!(flips.iter().all(|&f| (6..=26).contains(&f)), "{flips:?}");
    }

    #[test]
    fn prefetch_any_hash() {
        let t = FlowTable::new(10, T);
        for h in [0, 1, 0xFFFF_FFFF, 0x8000_0000] {
            t.prefetch(h);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, bool),
        Lookup(u8, u8),
        Remove(u8),
        Advance(u8),
        Scan(u16),
    }

    /// Operations; `insert_weight` and `max_step` tune how full the table
    /// gets (many inserts and slow time fill it up).
    fn op(insert_weight: u32, max_step: u8) -> impl Strategy<Value = Op> {
        prop_oneof![
            insert_weight => (any::<u8>(), any::<bool>()).prop_map(|(k, udp)| Op::Insert(k, udp)),
            4 => (any::<u8>(), any::<u8>()).prop_map(|(k, f)| Op::Lookup(k, f)),
            2 => any::<u8>().prop_map(Op::Remove),
            2 => (0..max_step).prop_map(Op::Advance),
            1 => any::<u16>().prop_map(Op::Scan),
        ]
    }

    /// Runs `ops` against the table and a HashMap model. With `allow_full`
    /// (a cramped table) `Full` is accepted but must change nothing.
    fn run_model(capacity: usize, n_keys: u32, ops: &[Op], allow_full: bool) {
        let mut t = FlowTable::new(capacity, T);
        let mut model: HashMap<FlowKey, FlowEntry> = HashMap::new();
        let mut now = 0u64;
        let k_of = |i: u8| key(u32::from(i) % n_keys);
        for op in ops {
            match *op {
                Op::Insert(i, udp) => {
                    let k = k_of(i);
                    let e = if udp {
                        FlowEntry::new_udp(u32::from(i), now)
                    } else {
                        FlowEntry::new_tcp(u32::from(i), now, TCP_SYN)
                    };
                    match insert(&mut t, k, e, now) {
                        Insert::New => {
                            if let Some(old) = model.get(&k) {
                                assert!(!old.is_expired(now, &T));
                            }
                            model.insert(k, e);
                        }
                        Insert::ReplacedExpired { old_key, old } => {
                            assert_eq!(model.remove(&old_key), Some(old));
                            assert!(old.is_expired(now, &T));
                            model.insert(k, e);
                        }
                        Insert::Full => {
                            assert!(allow_full, "unexpected Full");
                            assert!(!model.contains_key(&k));
                        }
                    }
                }
                Op::Lookup(i, flags) => {
                    let k = k_of(i);
                    let want = model.get(&k).copied();
                    match lookup(&mut t, &k, now) {
                        Lookup::Hit(e) => {
                            let w = want.expect("hit for a key the model lacks");
                            assert!(!w.is_expired(now, &T));
                            assert_eq!(*e, w);
                            e.observe_tcp(flags, now);
                            model.insert(k, *e);
                        }
                        Lookup::Expired { old } => {
                            assert_eq!(Some(old), want);
                            assert!(old.is_expired(now, &T));
                            model.remove(&k);
                        }
                        Lookup::Miss => assert_eq!(want, None),
                    }
                }
                Op::Remove(i) => {
                    let k = k_of(i);
                    assert_eq!(t.remove(&k, k.hash()), model.remove(&k));
                }
                Op::Advance(dt) => now += u64::from(dt),
                Op::Scan(budget) => {
                    t.expire_scan(now, usize::from(budget), |k, e| {
                        assert_eq!(model.remove(k), Some(*e));
                        assert!(e.is_expired(now, &T));
                    });
                }
            }
            assert_eq!(t.len(), model.len());
        }
        let stored: HashMap<FlowKey, FlowEntry> = t.iter().collect();
        assert_eq!(stored, model);
        check_invariants(&t);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_hashmap_model(ops in proptest::collection::vec(op(4, 40), 1..400)) {
            run_model(4096, 200, &ops, false);
        }

        #[test]
        fn cramped_table_never_loses_flows(
            ops in proptest::collection::vec(op(24, 4), 1..600),
        ) {
            // 16 buckets, 80 slots, 60 flows max, 100 keys, slow clock:
            // relocations, expired-slot reuse and Full all happen.
            run_model(60, 100, &ops, true);
        }
    }
}
