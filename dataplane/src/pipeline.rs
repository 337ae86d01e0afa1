//! The per-packet work of a worker, free of DPDK: parse → classify → flow
//! lookup → Maglev → rewrite → count. The `sluiced` workers call
//! [`Worker::process_burst`] on each received burst; benchmarks and tests
//! call it on plain byte buffers.
//!
//! Every packet ends as [`Action::Forward`] (rewritten in place, including
//! ARP and ICMP echo replies, which go back out the port they came in on)
//! or [`Action::Drop`] with its reason counted on the ingress port.

use crate::checksum::update_many;
use crate::counters::{DropReason, WorkerCounters};
use crate::events::{EventRing, FlowEvent, FlowEventKind, HintRing, NeighbourHint};
use crate::flow::{FlowEntry, FlowKey, FlowState, FlowTable, FlowTimeouts, Insert, Lookup};
use crate::tables::{ForwardMode, LocalAddr, Tables, VipInfo};
use crate::wire::{
    self, ArpPacket, Icmpv4Packet, Ipv4Packet, Ipv6Packet, TcpSegment, UdpDatagram, ETHERTYPE_ARP,
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};
use std::sync::Arc;

/// What to do with a packet after processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transmit (already rewritten) on this port.
    Forward(u16),
    /// Free it; the reason is already counted.
    Drop(DropReason),
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// TTL of ICMP echo replies the dispatcher originates.
const REPLY_TTL: u8 = 64;

/// One worker's private state: its flow-table shard, its counters and its
/// rings. Single writer: only the owning lcore touches it.
pub struct Worker {
    pub id: u16,
    flows: FlowTable,
    counters: Arc<WorkerCounters>,
    events: Arc<EventRing>,
    hints: Arc<HintRing>,
    /// The management thread, woken when a neighbour hint is pushed so a
    /// new neighbour reaches the tables within microseconds, and when the
    /// flow-event ring fills to half, so that it is drained before it
    /// overflows. Only ARP, unresolved-neighbour packets and bursts of new
    /// or ending flows wake it, never ordinary traffic: it otherwise sleeps
    /// long, and does not take the CPU from a worker that shares it.
    waker: Option<std::thread::Thread>,
    /// Paced expiry sweep: slots due for examination, the remainder of
    /// slot-milliseconds not yet a whole slot, and the flow-clock time they
    /// were last accounted at.
    sweep_due: u64,
    sweep_rem: u64,
    sweep_at: u32,
}

/// One full expiry sweep of the flow table per this many milliseconds,
/// whatever the packet rate (see [`Worker::expire_paced`]).
pub const SWEEP_PERIOD_MS: u32 = 2000;
/// Most slots examined by one [`Worker::expire_paced`] call, so that a
/// burst never waits long behind the sweep.
pub const SWEEP_CHUNK: usize = 64;

impl Worker {
    /// Allocates the flow table (`capacity` flows) up front: nothing on the
    /// fast path allocates afterwards.
    pub fn new(
        id: u16,
        capacity: usize,
        timeouts: FlowTimeouts,
        counters: Arc<WorkerCounters>,
        events: Arc<EventRing>,
        hints: Arc<HintRing>,
    ) -> Worker {
        Worker {
            id,
            flows: FlowTable::new(capacity, timeouts),
            counters,
            events,
            hints,
            waker: None,
            sweep_due: 0,
            sweep_rem: 0,
            sweep_at: 0,
        }
    }

    /// Sets the thread to unpark after pushing a neighbour hint or when the
    /// flow-event ring reaches half its capacity.
    pub fn set_waker(&mut self, t: std::thread::Thread) {
        self.waker = Some(t);
    }

    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Processes a burst received on `in_port`: a first pass hashes the
    /// flows and prefetches their flow-table buckets, so that the second
    /// pass finds them in cache.
    pub fn process_burst<P: AsMut<[u8]>>(
        &mut self,
        pkts: &mut [P],
        in_port: u16,
        now: u32,
        t: &Tables,
        actions: &mut [Action],
    ) {
        let mut hints = [NO_HINT; BURST_HINTS];
        let n = pkts.len().min(BURST_HINTS);
        for (p, h) in pkts[..n].iter_mut().zip(hints.iter_mut()) {
            if let Some(hint) = peek_flow(p.as_mut(), t) {
                self.flows.prefetch(hint.hash);
                // ~13% of flows live in their second bucket at full load;
                // its line is needed before the first one's compare is done.
                self.flows.prefetch_alternative(hint.hash);
                *h = hint;
            }
        }
        for (i, (p, a)) in pkts.iter_mut().zip(actions.iter_mut()).enumerate() {
            let hint = hints.get(i).copied().unwrap_or(NO_HINT);
            *a = self.process_hinted(p.as_mut(), in_port, now, t, hint);
        }
    }

    /// Processes one frame received on `in_port` at time `now`.
    #[inline]
    pub fn process(&mut self, data: &mut [u8], in_port: u16, now: u32, t: &Tables) -> Action {
        self.process_hinted(data, in_port, now, t, NO_HINT)
    }

    #[inline]
    fn process_hinted(
        &mut self,
        data: &mut [u8],
        in_port: u16,
        now: u32,
        t: &Tables,
        hint: FlowHint,
    ) -> Action {
        let Some(port) = t.ports.get(in_port as usize) else {
            return Action::Drop(DropReason::WrongPortRole);
        };
        let pc = &self.counters.ports[in_port as usize];
        pc.rx_packets.inc();
        pc.rx_bytes.add(data.len() as u64);
        let r = self.classify(data, in_port, now, t, port.mac, hint);
        if let Action::Drop(reason) = r {
            self.counters.ports[in_port as usize].drop(reason);
        }
        r
    }

    #[inline]
    fn classify(
        &mut self,
        data: &mut [u8],
        in_port: u16,
        now: u32,
        t: &Tables,
        our_mac: [u8; 6],
        hint: FlowHint,
    ) -> Action {
        if data.len() < wire::ethernet::HEADER_LEN {
            return Action::Drop(DropReason::RuntFrame);
        }
        let (ethertype, l3, _vlan) = match wire::ethernet::l3_offset(data) {
            Ok(x) => x,
            Err(_) => return Action::Drop(DropReason::BadVlan),
        };
        // Group bit set = broadcast/multicast: ARP requests arrive that way.
        if data[0..6] != our_mac && data[0] & 1 == 0 {
            return Action::Drop(DropReason::ForeignMac);
        }
        let pc = &self.counters.ports[in_port as usize];
        match ethertype {
            ETHERTYPE_IPV4 => {
                pc.rx_ipv4.inc();
                self.ipv4(data, l3, in_port, now, t, hint)
            }
            ETHERTYPE_ARP => {
                pc.rx_arp.inc();
                self.arp(data, l3, in_port, t)
            }
            ETHERTYPE_IPV6 => {
                pc.rx_ipv6.inc();
                match Ipv6Packet::new_checked(&data[l3..]) {
                    Ok(ip6) => {
                        if ip6.next_header() == IPPROTO_ICMPV6 {
                            pc.rx_icmpv6.inc();
                        }
                        Action::Drop(DropReason::Ipv6NotForwarded)
                    }
                    Err(_) => Action::Drop(DropReason::BadIpv6Header),
                }
            }
            _ => Action::Drop(DropReason::UnknownEthertype),
        }
    }

    fn hint(&self, h: NeighbourHint) {
        if self.hints.push(h).is_err() {
            self.counters.flows.learn_dropped.inc();
        } else if let Some(w) = &self.waker {
            w.unpark();
        }
    }

    fn event(&self, kind: FlowEventKind, key: FlowKey, backend: u32) {
        let waker = self.waker.as_ref();
        push_event(
            &self.counters,
            &self.events,
            waker,
            self.id,
            kind,
            key,
            backend,
        );
    }

    fn flow_ended(&self, key: FlowKey, old: &FlowEntry) {
        if let Some(bc) = self.counters.backends.get(old.backend as usize) {
            bc.ended_flows.inc();
        }
        self.event(FlowEventKind::Expired, key, old.backend);
    }

    fn arp(&mut self, data: &mut [u8], l3: usize, in_port: u16, t: &Tables) -> Action {
        let port = &t.ports[in_port as usize];
        let Ok(mut arp) = ArpPacket::new_checked(&mut data[l3..]) else {
            return Action::Drop(DropReason::BadArp);
        };
        let sender_ip = u32::from(arp.sender_proto_addr());
        let sender_mac = arp.sender_hw_addr();
        if sender_ip != 0 && port.on_link(sender_ip) && sender_mac[0] & 1 == 0 {
            // Usable by every worker at once; the management thread makes it
            // part of the next tables.
            if t.neighbour(in_port, sender_ip) != Some(sender_mac) {
                t.cache.learn(in_port, sender_ip, sender_mac);
            }
            self.hint(NeighbourHint::Learned {
                port: in_port,
                ip: sender_ip,
                mac: sender_mac,
            });
        }
        match arp.operation() {
            wire::arp::ArpOperation::Request => {
                let target = u32::from(arp.target_proto_addr());
                let ours = match t.local(target) {
                    Some(LocalAddr::Vip) => port.faces_clients,
                    Some(LocalAddr::Port(p)) => p == in_port,
                    None => false,
                };
                if !ours {
                    return Action::Drop(DropReason::ArpNotForUs);
                }
                arp.make_reply_in_place(port.mac);
                reply_to_sender(data, port.mac);
                self.counters.ports[in_port as usize].arp_replies_sent.inc();
                Action::Forward(in_port)
            }
            wire::arp::ArpOperation::Reply => Action::Drop(DropReason::ArpReplyConsumed),
            _ => Action::Drop(DropReason::BadArp),
        }
    }

    #[inline]
    fn ipv4(
        &mut self,
        data: &mut [u8],
        l3: usize,
        in_port: u16,
        now: u32,
        t: &Tables,
        hint: FlowHint,
    ) -> Action {
        let (src, dst, proto, ttl, l4, end) = {
            let Ok(ip) = Ipv4Packet::new_checked(&data[l3..]) else {
                return Action::Drop(DropReason::BadIpv4Header);
            };
            if !ip.verify_checksum() {
                return Action::Drop(DropReason::BadIpv4Checksum);
            }
            if ip.is_fragment() {
                return Action::Drop(DropReason::Ipv4Fragment);
            }
            (
                ip.src_addr_raw(),
                ip.dst_addr_raw(),
                ip.protocol(),
                ip.ttl(),
                l3 + ip.header_len(),
                l3 + ip.total_len() as usize,
            )
        };
        // 224.0.0.0/4 and the limited broadcast.
        if dst >> 28 == 0xe || dst == u32::MAX {
            return Action::Drop(DropReason::Ipv4Multicast);
        }
        let port = &t.ports[in_port as usize];
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                let Some((sport, dport, flags)) = l4_ports(&data[l4..end], proto) else {
                    return Action::Drop(DropReason::BadL4Header);
                };
                // Pass 1 found the service from these same bytes; its
                // lookup is reused (the header is now validated).
                let vip = if hint.vip != NO_VIP {
                    t.vip(hint.vip)
                } else {
                    t.service(dst, dport, proto)
                };
                if let Some(vip) = vip {
                    if !port.faces_clients {
                        return Action::Drop(DropReason::WrongPortRole);
                    }
                    // NAT routes the packet, so its TTL must survive the hop;
                    // checked before a flow is created for it.
                    if vip.mode == ForwardMode::Nat && ttl <= 1 {
                        // Counted like every VIP packet: drops ⊆ packets.
                        let vc = &self.counters.vips[vip.index as usize];
                        vc.packets.inc();
                        vc.bytes.add(data.len() as u64);
                        vc.drops.inc();
                        return Action::Drop(DropReason::TtlExpired);
                    }
                    let key = FlowKey {
                        client_ip: src,
                        vip: vip.index,
                        client_port: sport,
                        proto,
                    };
                    let hash = if hint.vip != NO_VIP {
                        hint.hash
                    } else {
                        key.hash()
                    };
                    return self.dispatch(data, l3, l4, vip, key, hash, flags, now, t);
                }
                if t.local(dst).is_some() {
                    return Action::Drop(DropReason::NoService);
                }
                if port.faces_backends {
                    if let Some(b) = t.nat_reply(src, sport, proto) {
                        return self.nat_reply(data, l3, l4, b.id, dst, t);
                    }
                }
                Action::Drop(DropReason::UnknownDestination)
            }
            IPPROTO_ICMP => match t.local(dst) {
                Some(kind) => self.icmp_echo(data, l3, l4, end, in_port, kind, t),
                None => Action::Drop(DropReason::UnknownDestination),
            },
            _ => {
                if t.local(dst).is_some() {
                    Action::Drop(DropReason::NoService)
                } else {
                    Action::Drop(DropReason::UnknownDestination)
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn icmp_echo(
        &mut self,
        data: &mut [u8],
        l3: usize,
        l4: usize,
        end: usize,
        in_port: u16,
        kind: LocalAddr,
        t: &Tables,
    ) -> Action {
        let port = &t.ports[in_port as usize];
        let answers = match kind {
            LocalAddr::Vip => port.faces_clients,
            LocalAddr::Port(p) => p == in_port,
        };
        if !answers {
            return Action::Drop(DropReason::IcmpNotHandled);
        }
        {
            let Ok(mut icmp) = Icmpv4Packet::new_checked(&mut data[l4..end]) else {
                return Action::Drop(DropReason::IcmpNotHandled);
            };
            if icmp.msg_type() != wire::icmpv4::ECHO_REQUEST || icmp.code() != 0 {
                return Action::Drop(DropReason::IcmpNotHandled);
            }
            if !icmp.verify_checksum() {
                return Action::Drop(DropReason::BadIcmpChecksum);
            }
            if icmp.make_echo_reply().is_err() {
                return Action::Drop(DropReason::IcmpNotHandled);
            }
        }
        {
            // The header was validated by the caller.
            let Ok(mut ip) = Ipv4Packet::new_checked(&mut data[l3..end]) else {
                return Action::Drop(DropReason::BadIpv4Header);
            };
            ip.swap_addrs();
            ip.set_ttl(REPLY_TTL);
            ip.fill_checksum();
        }
        reply_to_sender(data, port.mac);
        self.counters.ports[in_port as usize]
            .icmp_echo_replies_sent
            .inc();
        Action::Forward(in_port)
    }

    /// Picks (or finds) the backend of a client packet to a VIP and
    /// rewrites the packet toward it.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn dispatch(
        &mut self,
        data: &mut [u8],
        l3: usize,
        l4: usize,
        vip: &VipInfo,
        key: FlowKey,
        hash: u32,
        flags: u8,
        now: u32,
        t: &Tables,
    ) -> Action {
        let vc = &self.counters.vips[vip.index as usize];
        vc.packets.inc();
        vc.bytes.add(data.len() as u64);
        let is_tcp = key.proto == IPPROTO_TCP;

        let mut chosen: Option<u32> = None;
        let mut expired: Option<FlowEntry> = None;
        let mut closed_now = false;
        let mut reopen: Option<(u32, u32)> = None;
        match self.flows.lookup(&key, hash, now) {
            Lookup::Hit(mut entry) => {
                let usable = t
                    .backend(entry.backend())
                    .is_some_and(|b| b.alive && b.vip == vip.index);
                // A bare SYN on a closing entry is the client reusing its
                // port for a new connection: it is chosen like any new one.
                let reopened = is_tcp
                    && entry.state() == FlowState::Closing
                    && flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
                if usable && reopened {
                    if let Some(nb) = vip.select(hash) {
                        reopen = Some((entry.backend(), nb));
                        entry.set_backend(nb);
                        entry.observe_tcp(flags, now);
                        chosen = Some(nb);
                    }
                } else if usable {
                    let was_closing = entry.state() == FlowState::Closing;
                    if is_tcp {
                        entry.observe_tcp(flags, now);
                    } else {
                        entry.touch(now);
                    }
                    closed_now = !was_closing && entry.state() == FlowState::Closing;
                    chosen = Some(entry.backend());
                } else if let Some(new_backend) = vip.select(hash) {
                    // Its backend is gone: this connection is lost anyway,
                    // so move the entry rather than dropping every packet.
                    let old = entry.backend();
                    entry.set_backend(new_backend);
                    entry.touch(now);
                    self.counters.flows.rescheduled.inc();
                    if let Some(bc) = self.counters.backends.get(old as usize) {
                        bc.ended_flows.inc();
                    }
                    if let Some(bc) = self.counters.backends.get(new_backend as usize) {
                        bc.new_flows.inc();
                    }
                    chosen = Some(new_backend);
                }
            }
            Lookup::Expired { old } => expired = Some(old),
            Lookup::Miss => {}
        }
        if let Some(old) = expired {
            self.flow_ended(key, &old);
        }
        if let Some((old, new)) = reopen {
            if let Some(bc) = self.counters.backends.get(old as usize) {
                bc.ended_flows.inc();
            }
            self.event(FlowEventKind::Expired, key, old);
            self.flow_created(key, new);
        }
        if closed_now {
            if let Some(b) = chosen {
                self.event(FlowEventKind::Closed, key, b);
            }
        }
        let backend_id = match chosen {
            Some(b) => b,
            None => {
                let Some(b) = vip.select(hash) else {
                    vc.drops.inc();
                    return Action::Drop(DropReason::NoBackend);
                };
                // An RST for an unknown flow is forwarded but not tracked.
                if !(is_tcp && flags & TCP_RST != 0) {
                    let entry = if is_tcp {
                        FlowEntry::new_tcp(b, now, flags)
                    } else {
                        FlowEntry::new_udp(b, now)
                    };
                    match self.flows.insert(key, hash, entry, now) {
                        Insert::New => self.flow_created(key, b),
                        Insert::ReplacedExpired { old_key, old } => {
                            self.flow_ended(old_key, &old);
                            self.flow_created(key, b);
                        }
                        // Forwarded by Maglev alone; every packet of such a
                        // connection lands here and is counted.
                        Insert::Full => self.counters.flows.table_full.inc(),
                    }
                }
                b
            }
        };

        let Some(b) = t.backend(backend_id) else {
            vc.drops.inc();
            return Action::Drop(DropReason::NoBackend);
        };
        let Some(mac) = b.next_hop_mac else {
            vc.drops.inc();
            return Action::Drop(DropReason::BackendUnresolved);
        };
        let Some(egress) = t.ports.get(b.egress_port as usize) else {
            vc.drops.inc();
            return Action::Drop(DropReason::BackendUnresolved);
        };
        if vip.mode == ForwardMode::Nat {
            if let Err(reason) = nat_rewrite(data, l3, l4, key.proto, Rewrite::Dst(b.addr, b.port))
            {
                vc.drops.inc();
                return Action::Drop(reason);
            }
        }
        data[0..6].copy_from_slice(&mac);
        data[6..12].copy_from_slice(&egress.mac);
        let bc = &self.counters.backends[backend_id as usize];
        bc.tx_packets.inc();
        bc.tx_bytes.add(data.len() as u64);
        Action::Forward(b.egress_port)
    }

    /// A flow entered the table: a new connection of its VIP and backend.
    fn flow_created(&self, key: FlowKey, backend: u32) {
        if let Some(vc) = self.counters.vips.get(key.vip as usize) {
            vc.new_flows.inc();
        }
        if let Some(bc) = self.counters.backends.get(backend as usize) {
            bc.new_flows.inc();
        }
        self.event(FlowEventKind::Created, key, backend);
    }

    /// Translates a NAT backend's reply back to the VIP: no flow state is
    /// needed because a backend address:port belongs to exactly one NAT
    /// service (the config refuses otherwise), so any worker can do it.
    #[allow(clippy::too_many_arguments)]
    fn nat_reply(
        &mut self,
        data: &mut [u8],
        l3: usize,
        l4: usize,
        backend_id: u32,
        client: u32,
        t: &Tables,
    ) -> Action {
        let Some(b) = t.backend(backend_id) else {
            return Action::Drop(DropReason::UnknownDestination);
        };
        let Some(vip) = t.vip(b.vip) else {
            return Action::Drop(DropReason::UnknownDestination);
        };
        let Some((out_port, next_hop)) = t.client_route(client) else {
            return Action::Drop(DropReason::NoRouteToClient);
        };
        let Some(mac) = t.neighbour(out_port, next_hop) else {
            self.hint(NeighbourHint::Wanted {
                port: out_port,
                ip: next_hop,
            });
            return Action::Drop(DropReason::ClientUnresolved);
        };
        if let Err(reason) = nat_rewrite(data, l3, l4, vip.proto, Rewrite::Src(vip.addr, vip.port))
        {
            return Action::Drop(reason);
        }
        data[0..6].copy_from_slice(&mac);
        data[6..12].copy_from_slice(&t.ports[out_port as usize].mac);
        let len = data.len() as u64;
        let bc = &self.counters.backends[backend_id as usize];
        bc.rx_packets.inc();
        bc.rx_bytes.add(len);
        let vc = &self.counters.vips[vip.index as usize];
        vc.reply_packets.inc();
        vc.reply_bytes.add(len);
        Action::Forward(out_port)
    }

    /// Incremental sweep of the flow table: call between bursts with a small
    /// budget so that idle flows leave even when no packet looks them up.
    /// Returns how many flows expired.
    pub fn expire_some(&mut self, now: u32, budget: usize) -> usize {
        let (counters, events, id) = (&self.counters, &self.events, self.id);
        let waker = self.waker.as_ref();
        let mut n = 0;
        self.flows.expire_scan(now, budget, |k, e| {
            n += 1;
            if let Some(bc) = counters.backends.get(e.backend as usize) {
                bc.ended_flows.inc();
            }
            let kind = FlowEventKind::Expired;
            push_event(counters, events, waker, id, kind, *k, e.backend);
        });
        n
    }

    /// The expiry sweep at a steady pace: a full pass over the table every
    /// [`SWEEP_PERIOD_MS`], spread over the calls in chunks of at most
    /// [`SWEEP_CHUNK`] slots. Call it every poll iteration. A fixed budget
    /// per iteration would make the sweep's cost grow with the packet rate
    /// (at 16 Mpps, 64 slots per burst cost ≈ 5 ns per packet, most of a
    /// cache line per packet at 1M flows); paced by time it costs the same
    /// few microseconds per millisecond at any rate. Expired flows are
    /// already misses for lookups; the sweep frees their slots and reports
    /// them. Returns how many flows expired.
    pub fn expire_paced(&mut self, now: u32) -> usize {
        let elapsed = now.wrapping_sub(self.sweep_at);
        if elapsed > 0 {
            self.sweep_at = now;
            let slots = self.flows.slots() as u64;
            let period = u64::from(SWEEP_PERIOD_MS);
            // Exact pace: the remainder carries over, so a pass takes one
            // period whatever the table size and the call rate.
            let owed = self.sweep_rem + slots * u64::from(elapsed.min(SWEEP_PERIOD_MS));
            self.sweep_rem = owed % period;
            // Never more than one full pass owed.
            self.sweep_due = (self.sweep_due + owed / period).min(slots);
        }
        if self.sweep_due == 0 {
            return 0;
        }
        let n = (self.sweep_due as usize).min(SWEEP_CHUNK);
        self.sweep_due -= n as u64;
        self.expire_some(now, n)
    }

    /// Counts a transmitted burst on `port`.
    #[inline]
    pub fn count_tx(&self, port: u16, packets: u64, bytes: u64) {
        let pc = &self.counters.ports[port as usize];
        pc.tx_packets.add(packets);
        pc.tx_bytes.add(bytes);
    }

    /// Counts frames from the management side (ARP requests) queued for
    /// transmission on `port`.
    #[inline]
    pub fn count_slow_path(&self, port: u16, n: u64) {
        self.counters.ports[port as usize].arp_requests_sent.add(n);
    }

    /// Counts packets received on `port` and dropped before the pipeline
    /// saw them (e.g. multi-segment mbufs), so that received = forwarded +
    /// dropped still holds.
    #[inline]
    pub fn count_rx_dropped(&self, port: u16, reason: DropReason, packets: u64, bytes: u64) {
        if let Some(pc) = self.counters.ports.get(port as usize) {
            pc.rx_packets.add(packets);
            pc.rx_bytes.add(bytes);
            pc.drops[reason as usize].add(packets);
        }
    }

    /// Counts packets dropped on `port` outside the pipeline (TX queue full,
    /// multi-segment mbufs).
    #[inline]
    pub fn count_drop(&self, port: u16, reason: DropReason, n: u64) {
        if let Some(pc) = self.counters.ports.get(port as usize) {
            pc.drops[reason as usize].add(n);
        }
    }
}

/// Counts a flow event and pushes it to the worker's sync ring (a full ring
/// drops and counts it: the worker never waits). The push that fills the
/// ring to half wakes `waker` (once per filling: the worker is the ring's
/// only producer, so exactly one push reaches the half).
fn push_event(
    counters: &WorkerCounters,
    events: &EventRing,
    waker: Option<&std::thread::Thread>,
    worker: u16,
    kind: FlowEventKind,
    key: FlowKey,
    backend: u32,
) {
    let fc = &counters.flows;
    match kind {
        FlowEventKind::Created => fc.created.inc(),
        FlowEventKind::Closed => fc.closed.inc(),
        FlowEventKind::Expired => fc.expired.inc(),
    }
    let ev = FlowEvent {
        kind,
        worker,
        key,
        backend,
    };
    if events.push(ev).is_ok() {
        fc.events_pushed.inc();
        if events.len() == events.capacity() / 2 {
            if let Some(w) = waker {
                w.unpark();
            }
        }
    } else {
        fc.events_dropped.inc();
    }
}

/// Turns a received frame's Ethernet header into the reply's: back to the
/// sender's MAC, from ours (ARP and ICMP echo replies).
#[inline]
fn reply_to_sender(frame: &mut [u8], our_mac: [u8; 6]) {
    frame.copy_within(6..12, 0);
    frame[6..12].copy_from_slice(&our_mac);
}

/// Which address of a packet NAT rewrites.
#[derive(Clone, Copy)]
enum Rewrite {
    /// Client → backend: destination := backend.
    Dst(u32, u16),
    /// Backend → client: source := VIP.
    Src(u32, u16),
}

/// Rewrites an IPv4 TCP/UDP packet's address and port, decrements the TTL,
/// and updates the IPv4 and L4 checksums incrementally (RFC 1624), each
/// with a single fold. The caller has validated the IPv4 header (at `l3`)
/// and the L4 header (at `l4`); the bounds are re-checked here without
/// panicking.
#[inline(always)]
fn nat_rewrite(
    data: &mut [u8],
    l3: usize,
    l4: usize,
    proto: u8,
    rw: Rewrite,
) -> Result<(), DropReason> {
    let (addr_off, port_off, new_addr, new_port) = match rw {
        Rewrite::Dst(a, p) => (16, 2, a, p),
        Rewrite::Src(a, p) => (12, 0, a, p),
    };
    let Some(ip) = data.get_mut(l3..l3 + 20) else {
        return Err(DropReason::BadIpv4Header);
    };
    let ttl = ip[8];
    if ttl <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let old_addr = u32::from_be_bytes([
        ip[addr_off],
        ip[addr_off + 1],
        ip[addr_off + 2],
        ip[addr_off + 3],
    ]);
    let (old_hi, old_lo) = ((old_addr >> 16) as u16, old_addr as u16);
    let (new_hi, new_lo) = ((new_addr >> 16) as u16, new_addr as u16);
    // TTL shares a 16-bit word with the protocol.
    let ip_ck = update_many(
        u16::from_be_bytes([ip[10], ip[11]]),
        [
            (
                u16::from_be_bytes([ttl, proto]),
                u16::from_be_bytes([ttl - 1, proto]),
            ),
            (old_hi, new_hi),
            (old_lo, new_lo),
        ],
    );
    ip[8] = ttl - 1;
    ip[addr_off..addr_off + 4].copy_from_slice(&new_addr.to_be_bytes());
    ip[10..12].copy_from_slice(&ip_ck.to_be_bytes());

    let ck_off = if proto == IPPROTO_TCP { 16 } else { 6 };
    let Some(seg) = data.get_mut(l4..l4 + ck_off + 2) else {
        return Err(DropReason::BadL4Header);
    };
    // Port offsets: source 0..2, destination 2..4, for TCP and UDP alike.
    let old_port = u16::from_be_bytes([seg[port_off], seg[port_off + 1]]);
    seg[port_off..port_off + 2].copy_from_slice(&new_port.to_be_bytes());
    let old_ck = u16::from_be_bytes([seg[ck_off], seg[ck_off + 1]]);
    if proto == IPPROTO_UDP && old_ck == 0 {
        // UDP without checksum stays without one.
        return Ok(());
    }
    let mut ck = update_many(
        old_ck,
        [(old_hi, new_hi), (old_lo, new_lo), (old_port, new_port)],
    );
    if proto == IPPROTO_UDP && ck == 0 {
        ck = 0xffff;
    }
    seg[ck_off..ck_off + 2].copy_from_slice(&ck.to_be_bytes());
    Ok(())
}

/// Source port, destination port and TCP flags of an L4 segment, after the
/// length checks that make the later rewrite safe.
#[inline]
fn l4_ports(seg: &[u8], proto: u8) -> Option<(u16, u16, u8)> {
    if proto == IPPROTO_TCP {
        let t = TcpSegment::new_checked(seg).ok()?;
        Some((t.src_port(), t.dst_port(), t.flags()))
    } else {
        let u = UdpDatagram::new_checked(seg).ok()?;
        Some((u.src_port(), u.dst_port(), 0))
    }
}

/// Most packets per burst that get a pass-1 hint.
const BURST_HINTS: usize = 64;

/// What pass 1 learned about a packet: the VIP it is for and its flow
/// hash, or [`NO_HINT`].
#[derive(Clone, Copy)]
struct FlowHint {
    vip: u32,
    hash: u32,
}

const NO_VIP: u32 = u32::MAX;
const NO_HINT: FlowHint = FlowHint {
    vip: NO_VIP,
    hash: 0,
};

/// A cheap look at a frame: if it looks like an unfragmented IPv4 TCP/UDP
/// packet to a VIP service, that VIP and the flow hash. Only bounds are
/// checked: pass 2 validates the headers before it uses the hint, and reads
/// the same bytes, so a hint it uses is always for the packet it processes.
#[inline]
fn peek_flow(data: &[u8], t: &Tables) -> Option<FlowHint> {
    let (ethertype, l3, _) = wire::ethernet::l3_offset(data).ok()?;
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = data.get(l3..l3 + 20)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let l4 = data.get(l3 + ihl..l3 + ihl + 4)?;
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let vip = t.service(dst, dport, proto)?;
    let hash = FlowKey {
        client_ip: src,
        vip: vip.index,
        client_port: sport,
        proto,
    }
    .hash();
    Some(FlowHint {
        vip: vip.index,
        hash,
    })
}

/// Flow timeouts from seconds to the flow clock's milliseconds.
pub fn timeouts_ms(syn_s: u32, established_s: u32, closing_s: u32, udp_s: u32) -> FlowTimeouts {
    let ms = |s: u32| s.saturating_mul(1000);
    FlowTimeouts {
        syn: ms(syn_s),
        established: ms(established_s),
        closing: ms(closing_s),
        udp: ms(udp_s),
    }
}
