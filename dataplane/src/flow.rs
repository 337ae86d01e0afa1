//! Per-worker flow table with TCP-state-aware aging.
//!
//! Each worker owns one [`FlowTable`]; it is single-writer, so it needs no
//! atomics or locks. All memory is allocated once in [`FlowTable::new`]; no
//! operation allocates or panics afterwards.
//!
//! # Layout
//!
//! The table is a power-of-two array of buckets of exactly one 64-byte
//! cache line, 3 ways each, stored as a structure of arrays:
//!
//! ```text
//! bytes  0..36  keys:      3 x 12 B (client ip, vip, port | proto << 16)
//!       36..48  backends:  3 x u32
//!       48..60  last_seen: 3 x u32 (flow clock)
//!       60..64  meta: u32  bits  0..3   occupied ways
//!                          bits  4..10  FlowState of each way, 2 bits each
//!                          bits 12..32  4 overflow counters of 5 bits
//! ```
//!
//! A lookup of a flow that lives in its primary bucket therefore reads one
//! cache line, and [`FlowTable::prefetch`] fetches exactly that line, so a
//! burst of 32 packets has 32 misses in flight rather than 96. The three
//! keys are compared branch-free (as a 64-bit and a 32-bit word each).
//! Storing full keys instead of short signatures means no false matches
//! and no second line to confirm a match.
//!
//! Collisions use bucketized cuckoo hashing: a key lives in its primary
//! bucket (low bits of the hash) or in one alternative bucket (a remix of
//! all hash bits). Inserts prefer the primary: a free way there, else the
//! slot of an expired flow, else a way freed by sending a guest (a flow for
//! which this is the alternative) home; then the alternative; and when both
//! are full they move flows to their other buckets along the shortest path
//! found by a bounded breadth-first search. A lookup that finds a flow in
//! its alternative moves it home if its primary has room by then.
//!
//! Each bucket counts the flows whose primary it is that live in their
//! alternative, separately for the four classes of the top two hash bits
//! (5 bits each, sticky at 31: a count can only over-state, which costs a
//! probe, never a lost flow). A miss reads the alternative bucket only when
//! a flow of its own class overflowed.
//!
//! # Size and load
//!
//! [`FlowTable::new`] allocates `capacity / (3 * 0.85)` buckets rounded up
//! to a power of two, so that at full capacity at most 85 % of the ways are
//! used; 2-choice 3-way cuckoo hashing with this search fills to 93.9 %
//! before an insert first fails (measured with random keys on 2^19
//! buckets). 1 << 20 (and 1_000_000) flows take 2^19 buckets: 32 MiB
//! (the previous 3-line design took 48 MiB). At that full capacity (67 %
//! of the ways), 87 % of flows sit in their primary bucket after filling
//! (83 to 85 % under random churn) and 94 % of misses read a single line.
//! (With 3 ways at this load, at least 11 % of flows cannot be in their
//! primary bucket: more than 3 flows share it.)
//!
//! # Prefetching
//!
//! For a burst, hash every packet's key and call [`FlowTable::prefetch`]
//! (and, for big tables, [`FlowTable::prefetch_alternative`]) for each
//! before looking any up, so that the memory accesses overlap. A flow in
//! its alternative bucket otherwise costs a second, dependent memory
//! access; `prefetch_alternative` removes that stall at the price of a
//! second line per packet, which it only spends when the table is large
//! and more than 1 in 32 flows have overflowed. Measured on the
//! development VM (AMD EPYC, 32 MiB L3) with 1 << 20 flows at full
//! capacity, looked up in random order in bursts of 32, per hit
//! (`lookup_speed` test): 22 ns with `prefetch` alone, 12 ns adding
//! `prefetch_alternative`, versus 28 to 31 ns for the previous 3-line
//! design; misses 13 and 10 ns. In a loop that also does ~17 ns of other
//! work per packet, 1 << 20 flows then cost about 4 ns per packet more
//! than 1000 flows (previous design: 18 ns; `prefetch` alone: 12 ns).
//!
//! # Hash contract
//!
//! The `hash` passed to [`FlowTable::lookup`], [`FlowTable::insert`] etc.
//! must be [`FlowKey::hash`] of the key: it is a parameter only so that a
//! burst can be hashed and prefetched before the lookups. Relocations and
//! [`FlowTable::expire_scan`] recompute it from stored keys. Debug builds
//! assert the contract in `insert` and `remove`.
//!
//! # Time and aging
//!
//! Times are a 32-bit wrapping "flow clock" chosen by the caller
//! (milliseconds, say); timeouts are in the same unit. A flow's idle time is
//! `now.wrapping_sub(last_seen)`, read as a signed 32-bit difference: a
//! `now` up to 2^31 units *behind* `last_seen` means "not idle". So an
//! entry must be looked at before it has been idle for 2^31 units (about 24
//! days in milliseconds), or it would look fresh again; the incremental
//! [`FlowTable::expire_scan`] guarantees that as long as the caller
//! completes a pass over the table (`buckets * 3` slots) well within
//! `2^31 - max timeout` units, and timeouts are below 2^31 (a timeout of
//! 2^31 or more never expires).
//!
//! An entry expires when it has been idle for at least the timeout of its
//! state: a TCP flow that has only sent a SYN gets the short `syn` timeout
//! (this bounds the damage of SYN floods), an established one
//! `established`, one that sent FIN or RST `closing`, UDP flows `udp`.
//! Expired entries are reclaimed lazily by lookups, by inserts that need
//! their slot, and by the incremental sweep.

use crate::hugemem::HugeZeroed;

/// TCP flag bits as found in the TCP header's flags byte.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Identity of a flow: the client side of a connection to one VIP.
///
/// The VIP address and port are implied by `vip`, and the backend is what
/// the flow maps to, so these four fields identify a client connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
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
#[repr(u8)]
pub enum FlowState {
    /// TCP: only SYN(s) seen from the client; handshake not completed.
    SynSeen = 0,
    /// TCP: the client acknowledged (completed the handshake or was picked
    /// up mid-stream).
    Established = 1,
    /// TCP: FIN or RST seen from the client.
    Closing = 2,
    /// UDP (or any connectionless protocol).
    Udp = 3,
}

impl FlowState {
    /// The state stored as `s as u8` (only the low two bits are used).
    #[inline]
    fn from_u8(s: u8) -> FlowState {
        match s & 3 {
            0 => FlowState::SynSeen,
            1 => FlowState::Established,
            2 => FlowState::Closing,
            _ => FlowState::Udp,
        }
    }

    /// The state after a client TCP packet with `flags` (see
    /// [`FlowEntry::observe_tcp`]).
    #[inline]
    fn after_tcp(self, flags: u8) -> FlowState {
        let closing = flags & (TCP_FIN | TCP_RST) != 0;
        let syn = flags & TCP_SYN != 0;
        let ack = flags & TCP_ACK != 0;
        match self {
            FlowState::Udp => FlowState::Udp,
            _ if closing => FlowState::Closing,
            FlowState::SynSeen if ack && !syn => FlowState::Established,
            FlowState::Closing if syn && !ack => FlowState::SynSeen,
            s => s,
        }
    }
}

/// Idle timeouts per state, in the unit of the flow clock (the `now` values
/// passed to the table, e.g. milliseconds). Values of 2^31 or more mean
/// "never expires" (see the module documentation on time).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct FlowTimeouts {
    /// For [`FlowState::SynSeen`].
    pub syn: u32,
    /// For [`FlowState::Established`].
    pub established: u32,
    /// For [`FlowState::Closing`].
    pub closing: u32,
    /// For [`FlowState::Udp`].
    pub udp: u32,
}

impl FlowTimeouts {
    /// The idle timeout that applies in `state`.
    #[inline]
    pub fn for_state(&self, state: FlowState) -> u32 {
        match state {
            FlowState::SynSeen => self.syn,
            FlowState::Established => self.established,
            FlowState::Closing => self.closing,
            FlowState::Udp => self.udp,
        }
    }

    /// The timeouts indexed by `state as usize`.
    fn by_state(&self) -> [u32; 4] {
        [self.syn, self.established, self.closing, self.udp]
    }
}

/// Whether a flow last seen at `last_seen` has been idle for at least
/// `timeout` at `now`: the wrapping difference, read as signed, is at least
/// `timeout` (a `now` behind `last_seen` is not idle).
#[inline]
fn idle_expired(now: u32, last_seen: u32, timeout: u32) -> bool {
    let idle = now.wrapping_sub(last_seen);
    idle >= timeout && idle <= i32::MAX as u32
}

/// `last_seen` refreshed by a packet at `now`: never moves backwards, i.e.
/// takes `now` only if it is after `last_seen` on the wrapping clock.
#[inline]
fn later(last_seen: u32, now: u32) -> u32 {
    if (now.wrapping_sub(last_seen) as i32) > 0 {
        now
    } else {
        last_seen
    }
}

/// A flow's value, copied out of the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct FlowEntry {
    /// Backend the flow is pinned to (index into the VIP's backend list).
    pub backend: u32,
    /// Connection state; selects the idle timeout.
    pub state: FlowState,
    /// Flow-clock time of the last packet; expiry is measured from here.
    pub last_seen: u32,
}

impl FlowEntry {
    /// Entry for a TCP flow whose first packet carried `flags`: SYN (without
    /// FIN/RST) starts in [`FlowState::SynSeen`], FIN or RST in
    /// [`FlowState::Closing`], anything else (a flow picked up mid-stream,
    /// e.g. after a restart) in [`FlowState::Established`].
    pub fn new_tcp(backend: u32, now: u32, flags: u8) -> FlowEntry {
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
        }
    }

    /// Entry for a UDP flow.
    pub fn new_udp(backend: u32, now: u32) -> FlowEntry {
        FlowEntry {
            backend,
            state: FlowState::Udp,
            last_seen: now,
        }
    }

    /// Records a client TCP packet with `flags` at `now`: refreshes
    /// `last_seen` and advances the state. FIN or RST means Closing (it
    /// stays there, only its idle timer is refreshed by the last ACKs); an
    /// ACK without SYN completes the handshake; a bare SYN on a Closing flow
    /// is the client reusing the port for a new connection. UDP entries are
    /// only touched.
    #[inline]
    pub fn observe_tcp(&mut self, flags: u8, now: u32) {
        self.touch(now);
        self.state = self.state.after_tcp(flags);
    }

    /// Records a packet at `now` without state change. `last_seen` never
    /// goes backwards (on the wrapping clock: `now` is taken only if
    /// `(now - last_seen) as i32 > 0`), so an out-of-order timestamp cannot
    /// shorten a flow's life.
    #[inline]
    pub fn touch(&mut self, now: u32) {
        self.last_seen = later(self.last_seen, now);
    }

    /// Whether the flow has been idle for at least its state's timeout.
    #[inline]
    pub fn is_expired(&self, now: u32, t: &FlowTimeouts) -> bool {
        idle_expired(now, self.last_seen, t.for_state(self.state))
    }
}

/// A live flow inside the table, returned by [`FlowTable::lookup`] for
/// in-place update. Reads and writes go straight to the flow's cache line.
pub struct FlowSlot<'a> {
    bucket: &'a mut Bucket,
    /// Always below `WAYS`.
    way: usize,
}

impl FlowSlot<'_> {
    /// The flow's current value.
    #[inline]
    pub fn get(&self) -> FlowEntry {
        self.bucket.entry(self.way)
    }

    /// Backend the flow is pinned to.
    #[inline]
    pub fn backend(&self) -> u32 {
        self.bucket.backends[self.way]
    }

    /// Connection state.
    #[inline]
    pub fn state(&self) -> FlowState {
        self.bucket.state(self.way)
    }

    /// Re-pins the flow to `backend`.
    #[inline]
    pub fn set_backend(&mut self, backend: u32) {
        self.bucket.backends[self.way] = backend;
    }

    /// [`FlowEntry::observe_tcp`] on the stored flow.
    #[inline]
    pub fn observe_tcp(&mut self, flags: u8, now: u32) {
        let w = self.way;
        let b = &mut *self.bucket;
        b.last_seen[w] = later(b.last_seen[w], now);
        let state = b.state(w);
        let next = state.after_tcp(flags);
        // Nearly every packet leaves the state as it is.
        if next != state {
            b.set_state(w, next);
        }
    }

    /// [`FlowEntry::touch`] on the stored flow.
    #[inline]
    pub fn touch(&mut self, now: u32) {
        let w = self.way;
        self.bucket.last_seen[w] = later(self.bucket.last_seen[w], now);
    }
}

impl std::fmt::Debug for FlowSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FlowSlot").field(&self.get()).finish()
    }
}

/// Result of [`FlowTable::lookup`].
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Live entry for the key, for the caller to update in place (e.g. with
    /// [`FlowSlot::observe_tcp`]).
    Hit(FlowSlot<'a>),
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

/// Ways per bucket: 3 keys, values and times fill a cache line.
const WAYS: usize = 3;
/// `meta` bits of the occupied ways.
const OCCUPIED: u32 = (1 << WAYS) - 1;
/// Where the way states start in `meta`.
const STATE_SHIFT: u32 = 4;
/// Where the four overflow counters start in `meta`, their width and
/// saturation value.
const OVERFLOW_SHIFT: u32 = 12;
const OVERFLOW_BITS: u32 = 5;
const OVERFLOW_MAX: u32 = (1 << OVERFLOW_BITS) - 1;
/// [`FlowTable::prefetch_alternative`] prefetches when more than 1 in this
/// many flows live in their alternative bucket.
const GUESTS_WORTH_PREFETCH: usize = 32;
/// ... and the table has more buckets than this (1 MiB).
const SMALL_TABLE: usize = (1 << 20) / std::mem::size_of::<Bucket>();
/// Largest supported capacity.
const MAX_CAPACITY: usize = 1 << 31;
/// Bound on the cuckoo breadth-first search (buckets visited per insert):
/// covers every path of up to 4 moves from the two candidate buckets.
const BFS_NODES: usize = 242;

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

/// One bucket: one cache line, a structure of arrays (see module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    keys: [PackedKey; WAYS],
    backends: [u32; WAYS],
    last_seen: [u32; WAYS],
    /// Bits 0..3: way `w` holds a flow when bit `w` is set. Bits `4 + 2w`
    /// and up: the `FlowState as u32` of way `w`. Bits `12 + 5c` and up, for
    /// each class `c` of the top two hash bits (see [`overflow_shift`]):
    /// how many flows of that class whose primary bucket this is live in
    /// their alternative, sticky at [`OVERFLOW_MAX`] (never decremented from
    /// there): a count can only over-state, which costs a probe, never a
    /// flow.
    meta: u32,
}

// The layout claims of the module doc.
const _: () = assert!(std::mem::size_of::<Bucket>() == 64);
const _: () = assert!(std::mem::align_of::<Bucket>() == 64);
const _: () = assert!(std::mem::offset_of!(Bucket, meta) == 60);
const _: () = assert!(STATE_SHIFT + 2 * WAYS as u32 <= OVERFLOW_SHIFT);
const _: () = assert!(OVERFLOW_SHIFT + 4 * OVERFLOW_BITS == 32);

/// Bit offset, in [`Bucket::meta`], of the overflow counter for `hash`'s
/// class. The class is the top two hash bits, which the primary index
/// never uses (at most 2^30 buckets), so the classes of one bucket are
/// equally full.
#[inline]
fn overflow_shift(hash: u32) -> u32 {
    OVERFLOW_SHIFT + (hash >> 30) * OVERFLOW_BITS
}

/// Bit offset, in [`Bucket::meta`], of the state of way `w`.
#[inline]
fn state_shift(w: usize) -> u32 {
    STATE_SHIFT + 2 * w as u32
}

impl Bucket {
    #[inline]
    fn occupied(&self) -> u8 {
        (self.meta & OCCUPIED) as u8
    }

    #[inline]
    fn is_occupied(&self, way: usize) -> bool {
        self.meta & (1 << way) != 0
    }

    /// The overflow count of `hash`'s class.
    #[inline]
    fn overflow(&self, hash: u32) -> u32 {
        (self.meta >> overflow_shift(hash)) & OVERFLOW_MAX
    }

    /// `FlowState as usize` of way `w`.
    #[inline]
    fn state_index(&self, w: usize) -> usize {
        (self.meta >> state_shift(w)) as usize & 3
    }

    #[inline]
    fn state(&self, w: usize) -> FlowState {
        FlowState::from_u8(self.state_index(w) as u8)
    }

    #[inline]
    fn set_state(&mut self, w: usize, s: FlowState) {
        let shift = state_shift(w);
        self.meta = (self.meta & !(3 << shift)) | ((s as u32) << shift);
    }

    /// Ways whose key equals `k` (a bit mask), compared branch-free.
    #[inline]
    fn matches(&self, k: &PackedKey) -> u8 {
        let k01 = u64::from(k[0]) | (u64::from(k[1]) << 32);
        let mut m = 0u8;
        for (w, s) in self.keys.iter().enumerate() {
            let s01 = u64::from(s[0]) | (u64::from(s[1]) << 32);
            let diff = (s01 ^ k01) | u64::from(s[2] ^ k[2]);
            m |= u8::from(diff == 0) << w;
        }
        m & self.occupied()
    }

    #[inline]
    fn find(&self, k: &PackedKey) -> Option<usize> {
        let m = self.matches(k);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    #[inline]
    fn free_way(&self) -> Option<usize> {
        let free = !self.meta & OCCUPIED;
        (free != 0).then(|| free.trailing_zeros() as usize)
    }

    #[inline]
    fn entry(&self, w: usize) -> FlowEntry {
        FlowEntry {
            backend: self.backends[w],
            state: self.state(w),
            last_seen: self.last_seen[w],
        }
    }

    /// Writes flow `k` with `e` into way `w` and marks it occupied.
    #[inline]
    fn put(&mut self, w: usize, k: &PackedKey, e: &FlowEntry) {
        self.keys[w] = *k;
        self.backends[w] = e.backend;
        self.last_seen[w] = e.last_seen;
        self.set_state(w, e.state);
        self.meta |= 1 << w;
    }

    /// Counts one more overflowed flow of `hash`'s class.
    #[inline]
    fn overflow_inc(&mut self, hash: u32) {
        if self.overflow(hash) != OVERFLOW_MAX {
            self.meta += 1 << overflow_shift(hash);
        }
    }

    /// Counts one overflowed flow of `hash`'s class less.
    #[inline]
    fn overflow_dec(&mut self, hash: u32) {
        // 0 cannot happen (the flow was counted); the maximum is sticky.
        let o = self.overflow(hash);
        if o != 0 && o != OVERFLOW_MAX {
            self.meta -= 1 << overflow_shift(hash);
        }
    }
}

/// Prefetches the cache line of bucket `b` (which need not be valid).
#[inline(always)]
fn prefetch_line(b: *const Bucket) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint: it never faults, even for an
        // invalid address, and has no architectural effect; SSE is part of
        // the x86_64 baseline. (Newer compilers consider the call safe,
        // hence the allow.)
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(b.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = b;
}

/// The bucket array: `n` buckets on zeroed memory that Linux is asked to
/// back with transparent huge pages ([`HugeZeroed`]): a table of tens of
/// megabytes looked up at random would otherwise take a TLB miss (a page
/// walk) on nearly every packet.
struct BucketArray {
    mem: HugeZeroed,
    len: usize,
}

impl BucketArray {
    fn new(n: usize) -> BucketArray {
        let bytes = std::mem::size_of::<Bucket>()
            .checked_mul(n)
            .expect("flow table size overflows");
        BucketArray {
            mem: HugeZeroed::new(bytes, "the flow table"),
            len: n,
        }
    }

    /// The first bucket (2 MiB aligned: more than a Bucket needs).
    #[inline(always)]
    fn as_ptr(&self) -> *mut Bucket {
        self.mem.as_ptr().cast()
    }
}

impl std::ops::Deref for BucketArray {
    type Target = [Bucket];
    fn deref(&self) -> &[Bucket] {
        // SAFETY: the `len` buckets lie inside `mem`, aligned, initialised
        // (zeroed by the kernel or written since: an all-zero Bucket is a
        // valid value, integers and arrays of integers only, `meta == 0`
        // marking every way unused), and owned by self.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for BucketArray {
    fn deref_mut(&mut self) -> &mut [Bucket] {
        // SAFETY: as in deref; &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }
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
const _: () = assert!(BFS_NODES <= ROOT as usize);

/// The per-worker flow table (see the module documentation).
pub struct FlowTable {
    buckets: BucketArray,
    /// `buckets.len() - 1`; the length is a power of two.
    mask: usize,
    len: usize,
    /// How many of the `len` flows live in their alternative bucket.
    guests: usize,
    capacity: usize,
    timeouts: FlowTimeouts,
    /// `timeouts` indexed by `FlowState as usize`.
    timeout_of: [u32; 4],
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
    /// all memory allocated now: `ceil(capacity / 2.55)` buckets of 64
    /// bytes (3 ways at most 85 % full) rounded up to a power of two, i.e.
    /// 25 to 50 bytes per flow (1 << 20 and 1_000_000 flows: 32 MiB).
    pub fn new(capacity: usize, timeouts: FlowTimeouts) -> FlowTable {
        let capacity = capacity.min(MAX_CAPACITY);
        // capacity / (3 * 0.85) = capacity * 20 / 51. At least two buckets
        // so that a key's alternative bucket differs from its primary.
        let n = (capacity as u64 * 20)
            .div_ceil(51)
            .next_power_of_two()
            .max(2) as usize;
        FlowTable {
            buckets: BucketArray::new(n),
            mask: n - 1,
            len: 0,
            guests: 0,
            capacity,
            timeouts,
            timeout_of: timeouts.by_state(),
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

    /// Flow slots in the table (what one full expiry sweep examines).
    pub fn slots(&self) -> usize {
        self.buckets.len() * WAYS
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
        self.timeout_of = timeouts.by_state();
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

    /// The other bucket of the flow with `hash` stored in bucket `b`.
    #[inline]
    fn other_bucket(&self, hash: u32, b: usize) -> usize {
        let p = self.primary(hash);
        if b == p {
            self.alternative(hash, p)
        } else {
            p
        }
    }

    /// Whether the flow at way `w` of `b` has expired at `now`.
    #[inline]
    fn expired_at(&self, b: &Bucket, w: usize, now: u32) -> bool {
        let timeout = self.timeout_of[b.state_index(w)];
        idle_expired(now, b.last_seen[w], timeout)
    }

    /// Hints the CPU to load the primary bucket of `hash`: the one cache
    /// line that a lookup of a flow living there reads. Call it for every
    /// packet of a burst before looking them up, so that the memory
    /// accesses overlap instead of stalling one after another.
    #[inline]
    pub fn prefetch(&self, hash: u32) {
        // No bounds check needed: `primary` is below the length, and a
        // prefetch never faults anyway.
        prefetch_line(self.buckets.as_ptr().wrapping_add(self.primary(hash)));
    }

    /// Hints the CPU to load the alternative bucket of `hash` too, where
    /// the flow lives if it overflowed its primary: call it right after
    /// [`FlowTable::prefetch`], for every packet of the burst. At full
    /// capacity about 1 flow in 8 lives in its alternative bucket; without
    /// this, each lookup of such a flow stalls on a second memory access
    /// that only starts once the primary bucket has been read. Does nothing
    /// for a table of at most 1 MiB, which stays in cache, or while fewer
    /// than 1 in 32 of the flows live in their alternative (a lightly
    /// loaded table): there the extra line costs more than the rare stall
    /// it saves.
    #[inline]
    pub fn prefetch_alternative(&self, hash: u32) {
        if self.mask >= SMALL_TABLE && self.guests * GUESTS_WORTH_PREFETCH > self.len {
            let p = self.primary(hash);
            let a = self.alternative(hash, p);
            prefetch_line(self.buckets.as_ptr().wrapping_add(a));
        }
    }

    /// Where the flow with packed key `k` and `hash` lives: `(bucket, way)`.
    #[inline]
    fn locate(&self, k: &PackedKey, hash: u32) -> Option<(usize, usize)> {
        let p = self.primary(hash);
        let pb = self.buckets.get(p)?;
        if let Some(w) = pb.find(k) {
            return Some((p, w));
        }
        if pb.overflow(hash) == 0 {
            return None;
        }
        let a = self.alternative(hash, p);
        let w = self.buckets.get(a)?.find(k)?;
        Some((a, w))
    }

    /// Looks up the flow `key` (`hash` must be `key.hash()`) at time `now`.
    /// A live entry is returned for in-place update; an expired one is
    /// removed and returned by value.
    ///
    /// A flow found in its alternative bucket is moved back to its primary
    /// if that has a free way by now (both lines are in cache then), so that
    /// its next lookups read one line. Without this, ways that free up in a
    /// bucket would go to other flows' overflow while its own flows stay in
    /// their alternatives: at full capacity under random churn the share of
    /// flows in their primary bucket would sink from 87 % to 78 %.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u32, now: u32) -> Lookup<'_> {
        let k = pack(key);
        let p = self.primary(hash);
        let Some(pb) = self.buckets.get(p) else {
            return Lookup::Miss;
        };
        let m = pb.matches(&k);
        let (b, way) = if m != 0 {
            (p, m.trailing_zeros() as usize)
        } else if pb.overflow(hash) == 0 {
            return Lookup::Miss;
        } else {
            let a = self.alternative(hash, p);
            let Some(w) = self.buckets.get(a).and_then(|ab| ab.find(&k)) else {
                return Lookup::Miss;
            };
            if pb.free_way().is_some() {
                (p, self.go_home(a, w, p))
            } else {
                (a, w)
            }
        };
        let bucket = &self.buckets[b];
        if self.expired_at(bucket, way, now) {
            return Lookup::Expired {
                old: self.remove_at(b, way, hash),
            };
        }
        Lookup::Hit(FlowSlot {
            bucket: &mut self.buckets[b],
            way,
        })
    }

    /// Moves the flow at way `w` of bucket `a`, its alternative, into a free
    /// way of its primary `p`; returns that way.
    #[cold]
    fn go_home(&mut self, a: usize, w: usize, p: usize) -> usize {
        let home = self.buckets[p].free_way().unwrap_or(0);
        self.relocate(a, w, p);
        home
    }

    /// Removes the flow at way `w` of bucket `b` (hash `hash`), returning it.
    #[cold]
    fn remove_at(&mut self, b: usize, w: usize, hash: u32) -> FlowEntry {
        let old = self.buckets[b].entry(w);
        self.vacate(b, w, hash);
        old
    }

    /// Inserts the flow `key` (`hash` must be `key.hash()`) with `entry`.
    ///
    /// Prefers a way in the key's primary bucket (free, else the slot of an
    /// expired flow, else freed by sending a guest home), then one in its
    /// alternative (free, else expired), then makes room by moving other
    /// flows to their other buckets. Never evicts a live flow; if the key
    /// is already present its entry is overwritten (see [`Insert`]).
    pub fn insert(&mut self, key: FlowKey, hash: u32, entry: FlowEntry, now: u32) -> Insert {
        debug_assert_eq!(hash, key.hash(), "FlowTable hash must be FlowKey::hash");
        let k = pack(&key);
        if let Some((b, w)) = self.locate(&k, hash) {
            let bucket = &mut self.buckets[b];
            let old = bucket.entry(w);
            bucket.put(w, &k, &entry);
            return if idle_expired(now, old.last_seen, self.timeout_of[old.state as usize]) {
                Insert::ReplacedExpired { old_key: key, old }
            } else {
                Insert::New
            };
        }
        let room = self.len < self.capacity;
        let p = self.primary(hash);
        // Primary first (a flow there is found by reading one line): a free
        // way, an expired flow's way, a way freed by sending a guest home.
        if room {
            if let Some(w) = self.buckets[p].free_way() {
                self.place(p, w, hash, &k, &entry);
                return Insert::New;
            }
        }
        if let Some(r) = self.replace_expired(p, hash, &k, &entry, now) {
            return r;
        }
        if room {
            if let Some(w) = self.send_guest_home(p) {
                self.place(p, w, hash, &k, &entry);
                return Insert::New;
            }
        }
        let a = self.alternative(hash, p);
        if room {
            if let Some(w) = self.buckets[a].free_way() {
                self.place(a, w, hash, &k, &entry);
                return Insert::New;
            }
        }
        if let Some(r) = self.replace_expired(a, hash, &k, &entry, now) {
            return r;
        }
        if room {
            if let Some((b, w)) = self.make_room(p, a) {
                self.place(b, w, hash, &k, &entry);
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
        let old = self.buckets[b].entry(w);
        self.vacate(b, w, hash);
        Some(old)
    }

    /// Incremental sweep: examines up to `max_slots` slots (at most one
    /// full pass) from where the previous call stopped, wrapping around,
    /// removes the flows that have expired at `now` and reports each to
    /// `on_expired`. Returns how many were removed. Meant to be called every
    /// poll-loop iteration with a small budget (each slot costs a few ns);
    /// a full pass (`3 * buckets` slots) must complete well within 2^31
    /// clock units (see the module documentation on time).
    pub fn expire_scan(
        &mut self,
        now: u32,
        max_slots: usize,
        mut on_expired: impl FnMut(&FlowKey, &FlowEntry),
    ) -> usize {
        let budget = max_slots.min(self.buckets.len() * WAYS);
        let mut removed = 0;
        for _ in 0..budget {
            let (b, w) = (self.cursor_bucket, self.cursor_way);
            self.cursor_way += 1;
            if self.cursor_way == WAYS {
                self.cursor_way = 0;
                self.cursor_bucket = (self.cursor_bucket + 1) & self.mask;
            }
            let bucket = &self.buckets[b];
            if !bucket.is_occupied(w) || !self.expired_at(bucket, w, now) {
                continue;
            }
            let key = unpack(&bucket.keys[w]);
            on_expired(&key, &bucket.entry(w));
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
                .map(|w| (unpack(&b.keys[w]), b.entry(w)))
        })
    }

    /// Stores the flow `k` (hash `hash`) in the free way `w` of bucket `b`.
    #[inline]
    fn place(&mut self, b: usize, w: usize, hash: u32, k: &PackedKey, entry: &FlowEntry) {
        self.buckets[b].put(w, k, entry);
        let p = self.primary(hash);
        if b != p {
            self.buckets[p].overflow_inc(hash);
            self.guests += 1;
        }
        self.len += 1;
    }

    /// Frees way `w` of bucket `b`, which holds a flow with hash `hash`.
    #[inline]
    fn vacate(&mut self, b: usize, w: usize, hash: u32) {
        self.buckets[b].meta &= !(1 << w);
        let p = self.primary(hash);
        if b != p {
            self.buckets[p].overflow_dec(hash);
            self.guests = self.guests.saturating_sub(1);
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
        entry: &FlowEntry,
        now: u32,
    ) -> Option<Insert> {
        let bucket = &self.buckets[b];
        let w = (0..WAYS).find(|&w| bucket.is_occupied(w) && self.expired_at(bucket, w, now))?;
        let old_key = unpack(&bucket.keys[w]);
        let old = bucket.entry(w);
        self.vacate(b, w, old_key.hash());
        self.place(b, w, hash, k, entry);
        Some(Insert::ReplacedExpired { old_key, old })
    }

    /// Moves the flow at `(from, w)` into a free way of `to`, which must be
    /// its other bucket.
    fn relocate(&mut self, from: usize, w: usize, to: usize) {
        let k = self.buckets[from].keys[w];
        let entry = self.buckets[from].entry(w);
        let Some(to_w) = self.buckets[to].free_way() else {
            return; // unreachable: callers check for a free way first
        };
        let hash = unpack(&k).hash();
        self.vacate(from, w, hash);
        self.place(to, to_w, hash, &k, &entry);
    }

    /// Frees a way of the full bucket `p` by moving a guest (a flow whose
    /// alternative `p` is) back to its primary bucket, if that has room.
    /// This keeps flows in their primary bucket, where a lookup reads one
    /// cache line, and costs nothing when `p` holds no guest.
    fn send_guest_home(&mut self, p: usize) -> Option<usize> {
        for w in 0..WAYS {
            let hash = unpack(&self.buckets[p].keys[w]).hash();
            let home = self.primary(hash);
            if home != p && self.buckets[home].free_way().is_some() {
                self.relocate(p, w, home);
                return Some(w);
            }
        }
        None
    }

    /// Frees a way in bucket `p` or `a` (both full) by moving flows to their
    /// other buckets along the shortest path found by a bounded
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
                let other = self.other_bucket(hash, cur);
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

    /// Pseudo-random keys (xorshift64), distinct in practice.
    fn random_keys(n: usize, seed: u64) -> Vec<FlowKey> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                FlowKey {
                    client_ip: x as u32,
                    vip: (x >> 32) as u32 & 0xFF,
                    client_port: (x >> 40) as u16,
                    proto: [6, 17][(x >> 63) as usize],
                }
            })
            .collect()
    }

    fn lookup<'a>(t: &'a mut FlowTable, k: &FlowKey, now: u32) -> Lookup<'a> {
        t.lookup(k, k.hash(), now)
    }

    fn insert(t: &mut FlowTable, k: FlowKey, e: FlowEntry, now: u32) -> Insert {
        t.insert(k, k.hash(), e, now)
    }

    fn hit_backend(t: &mut FlowTable, k: &FlowKey, now: u32) -> Option<u32> {
        match lookup(t, k, now) {
            Lookup::Hit(s) => Some(s.backend()),
            _ => None,
        }
    }

    /// Checks the overflow counters and `len` against the stored flows.
    fn check_invariants(t: &FlowTable) {
        let mut want = vec![[0u32; 4]; t.buckets.len()];
        let (mut n, mut guests) = (0, 0);
        for (b, bucket) in t.buckets.iter().enumerate() {
            for w in (0..WAYS).filter(|&w| bucket.is_occupied(w)) {
                let h = unpack(&bucket.keys[w]).hash();
                let p = t.primary(h);
                assert!(
                    b == p || b == t.alternative(h, p),
                    "flow in a foreign bucket"
                );
                if b != p {
                    want[p][(h >> 30) as usize] += 1;
                    guests += 1;
                }
                n += 1;
            }
        }
        assert_eq!(n, t.len());
        assert_eq!(guests, t.guests);
        for (b, bucket) in t.buckets.iter().enumerate() {
            for (class, &want) in want[b].iter().enumerate() {
                let o = bucket.overflow((class as u32) << 30);
                // Exact, or stuck at the maximum (which only over-states).
                assert!(
                    o == want || o == OVERFLOW_MAX,
                    "overflow count {class} of bucket {b}: {o}, want {want}"
                );
            }
        }
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
        let t = FlowTable::new(1000, T);
        assert_eq!(t.buckets.as_ptr() as usize % (2 << 20), 0);
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
            Lookup::Hit(mut s) => {
                assert_eq!(s.backend(), 7);
                s.touch(5);
            }
            other => panic!("{other:?}"),
        }
        // The update through the slot is stored.
        assert_eq!(t.iter().next().unwrap().1.last_seen, 5);
        assert!(matches!(lookup(&mut t, &key(2), 5), Lookup::Miss));
        assert_eq!(t.remove(&k, k.hash()).map(|e| e.backend), Some(7));
        assert_eq!(t.remove(&k, k.hash()), None);
        assert!(matches!(lookup(&mut t, &k, 5), Lookup::Miss));
        assert!(t.is_empty());
    }

    #[test]
    fn slot_updates_in_place() {
        let mut t = FlowTable::new(100, T);
        let k = key(8);
        insert(&mut t, k, FlowEntry::new_tcp(3, 10, TCP_SYN), 10);
        let Lookup::Hit(mut s) = lookup(&mut t, &k, 11) else {
            panic!()
        };
        assert_eq!(s.get(), FlowEntry::new_tcp(3, 10, TCP_SYN));
        assert_eq!(s.state(), FlowState::SynSeen);
        s.observe_tcp(TCP_ACK, 12);
        s.set_backend(9);
        assert_eq!(s.backend(), 9);
        assert_eq!(s.state(), FlowState::Established);
        s.touch(11); // behind: ignored
        let want = FlowEntry {
            backend: 9,
            state: FlowState::Established,
            last_seen: 12,
        };
        assert_eq!(s.get(), want);
        assert_eq!(format!("{s:?}"), format!("FlowSlot({want:?})"));
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(k, want)]);
        // The slot and FlowEntry run the same state machine.
        let mut e = want;
        let Lookup::Hit(mut s) = lookup(&mut t, &k, 13) else {
            panic!()
        };
        for (i, flags) in [TCP_FIN, TCP_ACK, TCP_SYN, TCP_ACK, TCP_RST]
            .into_iter()
            .enumerate()
        {
            let now = 13 + i as u32;
            s.observe_tcp(flags, now);
            e.observe_tcp(flags, now);
            assert_eq!(s.get(), e);
        }
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
            FlowKey::default(),
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
        for cap in [0usize, 1, 2, 5, 6, 17, 100, 1000, 4096, 10_000] {
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
    fn sizing() {
        // ceil(capacity / 2.55) buckets, rounded up to a power of two.
        for (cap, buckets) in [
            (0, 2),
            (1, 2),
            (5, 2),
            (6, 4),
            (60, 32),
            (1000, 512),
            (1 << 20, 1 << 19),
            (1_000_000, 1 << 19),
            (1_336_000, 1 << 19),
            (1_337_000, 1 << 20),
        ] {
            let t = FlowTable::new(cap, T);
            assert_eq!(t.buckets.len(), buckets, "capacity {cap}");
            assert_eq!(t.memory_bytes(), buckets * 64);
            assert!(cap as f64 <= 0.85 * (3 * buckets) as f64);
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
            let Lookup::Hit(mut e) = lookup(&mut t, &k, 5) else {
                panic!()
            };
            e.observe_tcp(TCP_ACK, 5);
            assert_eq!(e.state(), FlowState::Established);
        }
        let Lookup::Hit(mut e) = lookup(&mut t, &fin, 6) else {
            panic!()
        };
        e.observe_tcp(TCP_FIN | TCP_ACK, 6);
        assert_eq!(e.state(), FlowState::Closing);
        let Lookup::Hit(mut e) = lookup(&mut t, &rst, 6) else {
            panic!()
        };
        e.observe_tcp(TCP_RST, 6);
        assert_eq!(e.state(), FlowState::Closing);

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
        let Lookup::Hit(mut e) = lookup(&mut t, &est, 500) else {
            panic!()
        };
        e.observe_tcp(TCP_ACK, 500);
        assert!(matches!(lookup(&mut t, &est, 1499), Lookup::Hit(_)));
        assert!(matches!(lookup(&mut t, &est, 1500), Lookup::Expired { .. }));
        assert!(t.is_empty());
    }

    #[test]
    fn timeouts_can_change() {
        let mut t = FlowTable::new(16, T);
        insert(&mut t, key(1), FlowEntry::new_udp(1, 0), 0);
        assert!(matches!(lookup(&mut t, &key(1), 50), Lookup::Hit(_)));
        let short = FlowTimeouts { udp: 40, ..T };
        t.set_timeouts(short);
        assert_eq!(t.timeouts(), &short);
        assert!(matches!(
            lookup(&mut t, &key(1), 50),
            Lookup::Expired { .. }
        ));
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
        e.observe_tcp(TCP_SYN | TCP_ACK, 7); // not a bare SYN
        assert_eq!(e.state, FlowState::Closing);
        e.observe_tcp(TCP_SYN, 7); // port reuse: new handshake
        assert_eq!(e.state, FlowState::SynSeen);
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
        for s in [
            FlowState::SynSeen,
            FlowState::Established,
            FlowState::Closing,
            FlowState::Udp,
        ] {
            assert_eq!(FlowState::from_u8(s as u8), s);
            assert_eq!(T.by_state()[s as usize], T.for_state(s));
        }
    }

    #[test]
    fn clock_wraps_around() {
        let start = u32::MAX - 5;
        // Idle time across the wrap: from u32::MAX - 5 to 10 is 16.
        let e = FlowEntry::new_tcp(1, start, TCP_SYN);
        assert!(!e.is_expired(3, &T)); // idle 9
        assert!(e.is_expired(4, &T)); // idle 10
        assert!(e.is_expired(10, &T)); // idle 16

        // touch / observe_tcp move forward across the wrap, never back.
        let mut e = FlowEntry::new_udp(1, start);
        e.touch(10);
        assert_eq!(e.last_seen, 10);
        e.touch(u32::MAX - 7);
        assert_eq!(e.last_seen, 10);
        e.observe_tcp(TCP_ACK, u32::MAX);
        assert_eq!(e.last_seen, 10);
        e.observe_tcp(TCP_ACK, 11);
        assert_eq!(e.last_seen, 11);
        // A clock behind last_seen is not idle, up to 2^31 behind; idle
        // times of 2^31 or more read as "behind" (hence the sweep).
        let e = FlowEntry::new_udp(0, 1000);
        assert!(!e.is_expired(999, &T));
        assert!(!e.is_expired(1000u32.wrapping_sub(1 << 31), &T));
        assert!(e.is_expired(1000 + (1 << 31) - 1, &T));
        assert!(!e.is_expired(1000 + (1 << 31), &T));
        let forever = FlowTimeouts { udp: 1 << 31, ..T };
        assert!(!e.is_expired(1000 + (1 << 31) - 1, &forever));

        // In the table: lookups, the sweep and inserts across the wrap.
        let mut t = FlowTable::new(64, T);
        let (syn, udp) = (key(0), key(1));
        insert(&mut t, syn, FlowEntry::new_tcp(0, start, TCP_SYN), start);
        insert(&mut t, udp, FlowEntry::new_udp(1, start), start);
        assert!(matches!(lookup(&mut t, &syn, 3), Lookup::Hit(_)));
        let Lookup::Hit(mut s) = lookup(&mut t, &udp, 2) else {
            panic!()
        };
        s.touch(2);
        match lookup(&mut t, &syn, 10) {
            Lookup::Expired { old } => assert_eq!(old.last_seen, start),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.expire_scan(101, usize::MAX, |_, _| panic!()), 0);
        let mut gone = vec![];
        assert_eq!(t.expire_scan(102, usize::MAX, |k, _| gone.push(*k)), 1);
        assert_eq!(gone, vec![udp]);
        assert!(t.is_empty());
    }

    #[test]
    fn expire_scan_reports_each_expired_once() {
        for t0 in [0, u32::MAX - 100] {
            let n = 5000u32;
            let mut t = FlowTable::new(8192, T);
            for i in 0..n {
                // Thirds: SYN-only (expire at 10), UDP (100), established (1000).
                let e = match i % 3 {
                    0 => FlowEntry::new_tcp(i, t0, TCP_SYN),
                    1 => FlowEntry::new_udp(i, t0),
                    _ => FlowEntry::new_tcp(i, t0, TCP_ACK),
                };
                assert_eq!(insert(&mut t, key(i), e, t0), Insert::New);
            }
            let slots = t.buckets.len() * WAYS;
            let now = t0.wrapping_add(150);
            let mut seen = HashSet::new();
            // Small budgets, more than a full pass in total.
            let mut removed = 0;
            for _ in 0..slots / 7 + 2 {
                removed += t.expire_scan(now, 7, |k, e| {
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
            assert_eq!(t.expire_scan(now, usize::MAX, |_, _| panic!()), 0);
            for i in (0..n).filter(|i| i % 3 == 2) {
                assert_eq!(hit_backend(&mut t, &key(i), now), Some(i));
            }
        }
    }

    #[test]
    fn iter_lists_stored_flows() {
        let mut t = FlowTable::new(1000, T);
        let mut want = HashMap::new();
        for i in 0..500 {
            let e = FlowEntry::new_udp(i, i);
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
    fn overflow_counter_saturates_and_sticks() {
        // 40 keys of class 2 sharing primary bucket 0: 3 live there, 37
        // overflow.
        let mut t = FlowTable::new(1000, T);
        let class = 2 << 30;
        let keys: Vec<FlowKey> = random_keys(400_000, 7)
            .into_iter()
            .filter(|k| t.primary(k.hash()) == 0 && k.hash() >> 30 == 2)
            .take(40)
            .collect();
        assert_eq!(keys.len(), 40);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                insert(&mut t, *k, FlowEntry::new_udp(i as u32, 0), 0),
                Insert::New
            );
        }
        assert_eq!(t.buckets[0].overflow(class), OVERFLOW_MAX);
        assert_eq!(t.buckets[0].overflow(0), 0);
        assert_eq!(u32::from(t.buckets[0].occupied()), OCCUPIED);
        check_invariants(&t);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(hit_backend(&mut t, k, 1), Some(i as u32));
        }
        // Removing them leaves the counter stuck at the maximum: later
        // misses on bucket 0 read the alternative too, but nothing is lost.
        for k in &keys[3..] {
            assert!(t.remove(k, k.hash()).is_some());
        }
        assert_eq!(t.buckets[0].overflow(class), OVERFLOW_MAX);
        check_invariants(&t);
        for (i, k) in keys.iter().enumerate().skip(3).step_by(2) {
            assert_eq!(
                insert(&mut t, *k, FlowEntry::new_udp(i as u32, 2), 2),
                Insert::New
            );
        }
        for (i, k) in keys.iter().enumerate() {
            let want = (i < 3 || i % 2 == 1).then_some(i as u32);
            assert_eq!(hit_backend(&mut t, k, 3), want);
        }
        check_invariants(&t);
    }

    #[test]
    fn memory_for_a_million_flows() {
        let t = FlowTable::new(1 << 20, T);
        assert_eq!(t.memory_bytes(), 32 << 20);
        let t = FlowTable::new(1_000_000, T);
        assert_eq!(t.memory_bytes(), 32 << 20);
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
        let one_line = |h: u32| t.buckets[t.primary(h)].overflow(h) == 0;
        let probes_one = keys
            .iter()
            .filter(|k| one_line(FlowKey { proto: 17, ..**k }.hash()))
            .count() as f64
            / f64::from(n);
        let prefetch_one = keys.iter().filter(|k| one_line(k.hash())).count() as f64 / f64::from(n);
        println!(
            "flow table at full capacity ({:.1}% of ways): {:.1}% of flows in their \
             primary bucket, {:.1}% of misses read one bucket, prefetch_alternative \
             fetches a second line for {:.1}% of hits",
            100.0 * t.len() as f64 / (t.buckets.len() * WAYS) as f64,
            in_primary * 100.0,
            probes_one * 100.0,
            100.0 - prefetch_one * 100.0
        );
        assert!(in_primary > 0.85, "{in_primary}");
        assert!(probes_one > 0.9, "{probes_one}");
        check_invariants(&t);
    }

    #[test]
    fn max_load_before_first_full() {
        // Capacity 1 << 20 (2^19 buckets), with the capacity bound lifted
        // to find where the cuckoo search itself first fails.
        let mut t = FlowTable::new(1 << 20, T);
        t.capacity = usize::MAX;
        let slots = t.buckets.len() * WAYS;
        let keys = random_keys(slots, 0x9E37_79B9_7F4A_7C15);
        let mut first_full = None;
        for (i, k) in keys.iter().enumerate() {
            if insert(&mut t, *k, FlowEntry::new_udp(i as u32, 0), 0) == Insert::Full {
                first_full = Some(t.len());
                break;
            }
        }
        let load = first_full.unwrap_or(slots) as f64 / slots as f64;
        println!("max load before the first Full: {:.2}%", load * 100.0);
        // The sizing promises inserts succeed up to 85 % load.
        assert!(load > 0.9, "{load}");
        check_invariants(&t);
        for (i, k) in keys.iter().enumerate().take(t.len()).step_by(97) {
            assert_eq!(hit_backend(&mut t, k, 1), Some(i as u32));
        }
    }

    /// Share of the stored flows that live in their primary bucket.
    fn in_primary(t: &FlowTable) -> f64 {
        let home = t
            .iter()
            .filter(|(k, _)| t.buckets[t.primary(k.hash())].find(&pack(k)).is_some())
            .count();
        home as f64 / t.len() as f64
    }

    #[test]
    fn churn_keeps_flows_home() {
        // A full table with random flows coming and going, each looked up a
        // few times while it lives: flows return to their primary bucket
        // when it has room (at 1 << 20 flows, 4 lookups per flow keep 83 %
        // home, 16 lookups 85 %; without going home it would be 78 %).
        let n = 1usize << 14;
        let mut t = FlowTable::new(n, T);
        let mut keys = random_keys(n, 5);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                insert(&mut t, *k, FlowEntry::new_udp(i as u32, 0), 0),
                Insert::New
            );
        }
        let filled = in_primary(&t);
        let mut x = 12345u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for (r, k) in random_keys(4 * n, 77).into_iter().enumerate() {
            let i = rand();
            assert!(t.remove(&keys[i], keys[i].hash()).is_some());
            keys[i] = k;
            let e = FlowEntry::new_udp(r as u32, 0);
            assert_eq!(insert(&mut t, k, e, 0), Insert::New);
            for _ in 0..4 {
                let k = keys[rand()];
                let Lookup::Hit(mut s) = lookup(&mut t, &k, 0) else {
                    panic!("lost {k:?}");
                };
                s.touch(1);
            }
        }
        check_invariants(&t);
        let churned = in_primary(&t);
        println!("in primary: {filled:.3} filled, {churned:.3} after churn");
        assert!(churned > 0.8, "{churned}");
        assert_eq!(t.len(), n);
        let stored: HashMap<FlowKey, FlowEntry> = t.iter().collect();
        assert!(keys.iter().all(|k| stored.contains_key(k)));
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
            t.prefetch_alternative(h);
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

    /// Clock start values: plain, just before the 32-bit wrap, anywhere.
    fn clock_start() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0u32),
            (0..2000u32).prop_map(|d| u32::MAX - d),
            any::<u32>()
        ]
    }

    /// Runs `ops` against the table and a HashMap model, starting the clock
    /// at `start`. With `allow_full` (a cramped table) `Full` is accepted
    /// but must change nothing. `capacity` is the table's size; `limit`
    /// (if given) then overrides its capacity bound, to push the cuckoo
    /// search itself to failure.
    fn run_model(
        capacity: usize,
        limit: Option<usize>,
        n_keys: u32,
        ops: &[Op],
        start: u32,
        allow_full: bool,
    ) {
        let mut t = FlowTable::new(capacity, T);
        if let Some(l) = limit {
            t.capacity = l;
        }
        let mut model: HashMap<FlowKey, FlowEntry> = HashMap::new();
        let mut now = start;
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
                        Lookup::Hit(mut s) => {
                            let w = want.expect("hit for a key the model lacks");
                            assert!(!w.is_expired(now, &T));
                            assert_eq!(s.get(), w);
                            s.observe_tcp(flags, now);
                            model.insert(k, s.get());
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
                Op::Advance(dt) => now = now.wrapping_add(u32::from(dt)),
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
        fn agrees_with_hashmap_model(
            ops in proptest::collection::vec(op(4, 40), 1..400),
            start in clock_start(),
        ) {
            run_model(4096, None, 200, &ops, start, false);
        }

        #[test]
        fn cramped_table_never_loses_flows(
            ops in proptest::collection::vec(op(24, 4), 1..600),
            start in clock_start(),
            tight in any::<bool>(),
        ) {
            // 16 buckets, 48 slots, 40 flows max (83 % load) or, `tight`,
            // no capacity bound at all; 70 keys, slow clock: relocations,
            // expired-slot reuse, Full by capacity and by a failed search
            // all happen.
            let limit = tight.then_some(usize::MAX);
            run_model(40, limit, 70, &ops, start, true);
        }
    }
}
