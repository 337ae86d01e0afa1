//! Per-worker counters. Each worker is the single writer of its own block,
//! so an increment is a relaxed load and store (a plain `add` on x86), never
//! an atomic read-modify-write; the management thread sums all blocks on
//! read. Blocks are cache-line aligned so workers never share a line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most ports, VIPs and backends a dataplane counts (fixed so the fast path
/// never allocates); the config is refused beyond these at start.
pub const MAX_PORTS: usize = 16;
pub const MAX_VIPS: usize = 1024;
pub const MAX_BACKENDS: usize = 8192;

/// A single-writer counter.
#[derive(Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a packet was dropped. Every drop has one; the names are what
/// `sluicectl stats` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    RuntFrame,
    /// More than two VLAN tags, or a truncated tag.
    BadVlan,
    /// Neither IPv4, IPv6 nor ARP.
    UnknownEthertype,
    /// Destination MAC is neither ours nor broadcast/multicast.
    ForeignMac,
    /// ARP that is not Ethernet/IPv4 or is truncated.
    BadArp,
    /// ARP request for an address that is not ours.
    ArpNotForUs,
    /// ARP reply: learned, then consumed.
    ArpReplyConsumed,
    /// IPv4 header truncated, bad version/IHL, or total length beyond the frame.
    BadIpv4Header,
    /// IPv4 header checksum wrong.
    BadIpv4Checksum,
    /// IPv4 fragment (first or later): not dispatched, see docs/architecture.md.
    Ipv4Fragment,
    /// TTL would reach zero when forwarding (NAT).
    TtlExpired,
    /// IPv6 parsed and counted; IPv6 forwarding is not built yet.
    Ipv6NotForwarded,
    /// IPv6 header truncated or inconsistent.
    BadIpv6Header,
    /// Destination is neither a VIP, a port address, nor a NAT reply.
    UnknownDestination,
    /// IPv4 multicast or broadcast destination (IGMP, mDNS, ...): the
    /// dispatcher does not route multicast.
    Ipv4Multicast,
    /// Destination is a VIP address but no service on that port/protocol.
    NoService,
    /// TCP/UDP header truncated or bad length.
    BadL4Header,
    /// ICMP to a local address that is not an echo request, or truncated.
    IcmpNotHandled,
    /// ICMP checksum wrong.
    BadIcmpChecksum,
    /// The VIP has no backend that can take new connections.
    NoBackend,
    /// The backend's MAC (or its gateway's) is not resolved yet.
    BackendUnresolved,
    /// No client-facing port has a route to the client (NAT reply).
    NoRouteToClient,
    /// The client's next hop MAC is not resolved yet (NAT reply).
    ClientUnresolved,
    /// Multi-segment mbuf (jumbo scatter): not handled by the fast path.
    MultiSegment,
    /// The TX queue was full.
    TxQueueFull,
    /// Frame from a port whose role does not accept it (e.g. client traffic on a backend-only port).
    WrongPortRole,
}

impl DropReason {
    pub const COUNT: usize = 26;
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::RuntFrame,
        DropReason::BadVlan,
        DropReason::UnknownEthertype,
        DropReason::ForeignMac,
        DropReason::BadArp,
        DropReason::ArpNotForUs,
        DropReason::ArpReplyConsumed,
        DropReason::BadIpv4Header,
        DropReason::BadIpv4Checksum,
        DropReason::Ipv4Fragment,
        DropReason::TtlExpired,
        DropReason::Ipv6NotForwarded,
        DropReason::BadIpv6Header,
        DropReason::UnknownDestination,
        DropReason::Ipv4Multicast,
        DropReason::NoService,
        DropReason::BadL4Header,
        DropReason::IcmpNotHandled,
        DropReason::BadIcmpChecksum,
        DropReason::NoBackend,
        DropReason::BackendUnresolved,
        DropReason::NoRouteToClient,
        DropReason::ClientUnresolved,
        DropReason::MultiSegment,
        DropReason::TxQueueFull,
        DropReason::WrongPortRole,
    ];

    /// Stable snake_case name used in stats output and the control protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::RuntFrame => "runt_frame",
            DropReason::BadVlan => "bad_vlan",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::ForeignMac => "foreign_mac",
            DropReason::BadArp => "bad_arp",
            DropReason::ArpNotForUs => "arp_not_for_us",
            DropReason::ArpReplyConsumed => "arp_reply_consumed",
            DropReason::BadIpv4Header => "bad_ipv4_header",
            DropReason::BadIpv4Checksum => "bad_ipv4_checksum",
            DropReason::Ipv4Fragment => "ipv4_fragment",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::Ipv6NotForwarded => "ipv6_not_forwarded",
            DropReason::BadIpv6Header => "bad_ipv6_header",
            DropReason::UnknownDestination => "unknown_destination",
            DropReason::Ipv4Multicast => "ipv4_multicast",
            DropReason::NoService => "no_service",
            DropReason::BadL4Header => "bad_l4_header",
            DropReason::IcmpNotHandled => "icmp_not_handled",
            DropReason::BadIcmpChecksum => "bad_icmp_checksum",
            DropReason::NoBackend => "no_backend",
            DropReason::BackendUnresolved => "backend_unresolved",
            DropReason::NoRouteToClient => "no_route_to_client",
            DropReason::ClientUnresolved => "client_unresolved",
            DropReason::MultiSegment => "multi_segment",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::WrongPortRole => "wrong_port_role",
        }
    }
}

/// Counters of one port on one worker.
#[derive(Default)]
#[repr(C, align(64))]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub rx_arp: Counter,
    pub rx_ipv4: Counter,
    pub rx_ipv6: Counter,
    pub rx_icmpv6: Counter,
    pub arp_replies_sent: Counter,
    /// ARP requests from the management side (neighbour resolution).
    pub arp_requests_sent: Counter,
    pub icmp_echo_replies_sent: Counter,
    pub drops: [Counter; DropReason::COUNT],
}

impl PortCounters {
    #[inline(always)]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }
}

/// Counters of one VIP on one worker.
#[derive(Default)]
#[repr(C, align(64))]
pub struct VipCounters {
    pub packets: Counter,
    pub bytes: Counter,
    pub new_flows: Counter,
    pub drops: Counter,
    /// Replies translated back to the VIP (NAT).
    pub reply_packets: Counter,
    pub reply_bytes: Counter,
}

/// Counters of one backend on one worker (seed 000's traffic table: traffic
/// to and from each backend link).
#[derive(Default)]
#[repr(C, align(64))]
pub struct BackendCounters {
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub new_flows: Counter,
    /// Flows that ended (expired or removed); active = new - ended.
    pub ended_flows: Counter,
}

/// Worker-wide counters that belong to no port, VIP or backend.
#[derive(Default)]
#[repr(C, align(64))]
pub struct FlowCounters {
    /// Packets of untracked connections forwarded by their Maglev choice
    /// alone because the flow table was full (a non-zero value means the
    /// table is too small).
    pub table_full: Counter,
    /// Established flows whose backend went away and were re-dispatched.
    pub rescheduled: Counter,
    pub events_pushed: Counter,
    /// Flow events dropped because the sync ring was full.
    pub events_dropped: Counter,
    /// Neighbour hints dropped because the learn ring was full.
    pub learn_dropped: Counter,
    pub expired: Counter,
    pub closed: Counter,
    pub created: Counter,
}

/// All counters of one worker.
pub struct WorkerCounters {
    pub ports: Box<[PortCounters]>,
    pub vips: Box<[VipCounters]>,
    pub backends: Box<[BackendCounters]>,
    pub flows: FlowCounters,
    /// Busy-poll iterations and iterations that received something: the
    /// management side derives the worker's load from them.
    pub loops: Counter,
    pub busy_loops: Counter,
    /// TSC cycles spent in iterations that received packets: divided by
    /// the packets received, the worker's cycles per packet.
    pub busy_cycles: Counter,
}

fn boxed<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            ports: boxed(MAX_PORTS),
            vips: boxed(MAX_VIPS),
            backends: boxed(MAX_BACKENDS),
            flows: FlowCounters::default(),
            loops: Counter::default(),
            busy_loops: Counter::default(),
            busy_cycles: Counter::default(),
        }
    }
}

/// Sum of a counter over every worker.
pub fn sum<'a>(
    workers: impl IntoIterator<Item = &'a WorkerCounters>,
    f: impl Fn(&WorkerCounters) -> &Counter,
) -> u64 {
    workers
        .into_iter()
        .map(|w| f(w).get())
        .fold(0u64, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_complete() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL must be in discriminant order");
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counters_sum_over_workers() {
        let a = WorkerCounters::default();
        let b = WorkerCounters::default();
        a.ports[1].rx_packets.add(3);
        b.ports[1].rx_packets.add(4);
        a.ports[1].drop(DropReason::NoBackend);
        assert_eq!(sum([&a, &b], |w| &w.ports[1].rx_packets), 7);
        assert_eq!(
            sum([&a, &b], |w| &w.ports[1].drops
                [DropReason::NoBackend as usize]),
            1
        );
        assert_eq!(sum([&a, &b], |w| &w.ports[0].rx_packets), 0);
    }

    #[test]
    fn blocks_are_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
        assert_eq!(std::mem::align_of::<BackendCounters>(), 64);
        let w = WorkerCounters::default();
        assert_eq!(w.backends.as_ptr() as usize % 64, 0);
    }
}
