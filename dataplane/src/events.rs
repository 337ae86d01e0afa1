//! What workers tell the management side without blocking: flow events
//! (for the twin sync channel) and neighbour hints (ARP learning and
//! resolution requests). Each worker owns its own bounded lock-free rings;
//! a full ring drops and counts, it never blocks the worker.

use crate::flow::FlowKey;
use crossbeam_queue::ArrayQueue;

/// A change in a worker's flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEventKind {
    Created,
    /// FIN or RST seen; the entry stays until its closing timeout.
    Closed,
    Expired,
}

/// A flow event, small and `Copy` so that pushing it never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    pub kind: FlowEventKind,
    pub worker: u16,
    pub key: FlowKey,
    pub backend: u32,
}

/// What a worker learned or needs about a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourHint {
    /// An ARP packet showed `ip` is at `mac` on `port`.
    Learned { port: u16, ip: u32, mac: [u8; 6] },
    /// A packet could not be sent because `ip` is unresolved on `port`.
    Wanted { port: u16, ip: u32 },
}

/// Per-worker event ring.
pub type EventRing = ArrayQueue<FlowEvent>;
/// Per-worker neighbour hint ring.
pub type HintRing = ArrayQueue<NeighbourHint>;
