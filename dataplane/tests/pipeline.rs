//! End-to-end tests of the per-packet pipeline through the crate's public
//! API only: a configuration is parsed from TOML, turned into tables by the
//! `Appliance`, and frames built with `etherparse` (or by hand, for ARP,
//! fragments and malformed input) are run through `Worker::process`. Every
//! rewritten frame is re-parsed with `etherparse` and its checksums are
//! recomputed independently (both with `etherparse` and with a plain
//! RFC 1071 reference sum written here).

use dataplane::appliance::Appliance;
use dataplane::counters::{DropReason, WorkerCounters};
use dataplane::events::{EventRing, FlowEvent, FlowEventKind, HintRing, NeighbourHint};
use dataplane::flow::{FlowKey, FlowTimeouts};
use dataplane::pipeline::{Action, Worker};
use dataplane::tables::{BackendInfo, Tables, VipInfo, VipSpec};
use etherparse::{
    Icmpv4Type, LinkHeader, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice,
    TransportHeader, VlanHeader, VlanId,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Test network
// ---------------------------------------------------------------------------

const CLIENT_PORT: u16 = 0;
const BACKEND_PORT: u16 = 1;
const CLIENT_PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const BACKEND_PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_PORT_IP: [u8; 4] = [198, 18, 1, 254];
const BACKEND_PORT_IP: [u8; 4] = [198, 18, 2, 254];
const GATEWAY_IP: [u8; 4] = [198, 18, 1, 1];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
/// The L2 source of frames we inject (a router or host on the link).
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x09, 0x09];
const BROADCAST: [u8; 6] = [0xff; 6];
const VIP: [u8; 4] = [198, 18, 100, 1];
const VIP_DR: [u8; 4] = [198, 18, 100, 2];
/// An off-link client, reached through the client port's gateway.
const FAR_CLIENT: [u8; 4] = [203, 0, 113, 7];

/// VIP indexes of the standard config.
const WEB: u32 = 0; // 198.18.100.1:80/tcp NAT -> 198.18.2.11-13:8080
const DNS: u32 = 1; // 198.18.100.1:53/udp NAT -> 198.18.2.21-22:5353
const DR: u32 = 2; // 198.18.100.2:443/tcp DR -> 198.18.2.31-32

const TCP: u8 = 6;
const UDP: u8 = 17;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Fake clock unit: milliseconds.
const TIMEOUTS: FlowTimeouts = FlowTimeouts {
    syn: 5_000,
    established: 300_000,
    closing: 10_000,
    udp: 30_000,
};

fn ip(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a)
}

fn backend_ip(host: u8) -> [u8; 4] {
    [198, 18, 2, host]
}

fn backend_mac(host: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, host]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One `[[vip.backend]]`.
#[derive(Clone, Debug)]
struct B {
    host: u8,
    port: Option<u16>,
    weight: u32,
    mac: bool,
}

fn b(host: u8, port: Option<u16>) -> B {
    B {
        host,
        port,
        weight: 1,
        mac: true,
    }
}

/// One `[[vip]]`.
#[derive(Clone, Debug)]
struct V {
    name: &'static str,
    addr: [u8; 4],
    port: u16,
    proto: &'static str,
    mode: &'static str,
    backends: Vec<B>,
}

fn web(backends: Vec<B>) -> V {
    V {
        name: "web",
        addr: VIP,
        port: 80,
        proto: "tcp",
        mode: "nat",
        backends,
    }
}

fn web3() -> Vec<B> {
    vec![b(11, Some(8080)), b(12, Some(8080)), b(13, Some(8080))]
}

fn dns() -> V {
    V {
        name: "dns",
        addr: VIP,
        port: 53,
        proto: "udp",
        mode: "nat",
        backends: vec![b(21, Some(5353)), b(22, Some(5353))],
    }
}

fn dr() -> V {
    V {
        name: "dr",
        addr: VIP_DR,
        port: 443,
        proto: "tcp",
        mode: "dr",
        backends: vec![b(31, None), b(32, None)],
    }
}

/// Whole configuration text.
struct Cfg {
    table_size: u32,
    gateway: bool,
    client_role: &'static str,
    backend_port: bool,
    vips: Vec<V>,
}

impl Cfg {
    fn standard() -> Cfg {
        Cfg {
            table_size: 1021,
            gateway: true,
            client_role: "client",
            backend_port: true,
            vips: vec![web(web3()), dns(), dr()],
        }
    }

    fn text(&self) -> String {
        let mut s = format!(
            "[eal]\nmain_core = 0\nworker_cores = [1]\nhugepages = false\n\n\
             [flows]\ncapacity_per_worker = 65536\n\n\
             [maglev]\ntable_size = {}\n\n\
             [[port]]\nname = \"client\"\nvdev = \"net_af_packet0\"\nrole = \"{}\"\n\
             address = \"198.18.1.254/24\"\n",
            self.table_size, self.client_role
        );
        if self.gateway {
            s += &format!(
                "gateway = \"198.18.1.1\"\ngateway_mac = \"{}\"\n",
                mac_str(GATEWAY_MAC)
            );
        }
        if self.backend_port {
            s += "\n[[port]]\nname = \"backend\"\nvdev = \"net_af_packet1\"\nrole = \"backend\"\n\
                  address = \"198.18.2.254/24\"\n";
        }
        for v in &self.vips {
            s += &format!(
                "\n[[vip]]\nname = \"{}\"\naddress = \"{}.{}.{}.{}\"\nport = {}\nprotocol = \"{}\"\nmode = \"{}\"\n",
                v.name, v.addr[0], v.addr[1], v.addr[2], v.addr[3], v.port, v.proto, v.mode
            );
            for b in &v.backends {
                s += &format!("  [[vip.backend]]\n  address = \"198.18.2.{}\"\n", b.host);
                if let Some(p) = b.port {
                    s += &format!("  port = {p}\n");
                }
                s += &format!("  weight = {}\n", b.weight);
                if b.mac {
                    s += &format!("  mac = \"{}\"\n", mac_str(backend_mac(b.host)));
                }
            }
        }
        s
    }

    fn parse(&self) -> firmware_config::Config {
        let text = self.text();
        firmware_config::parse_with(
            &text,
            "test.toml",
            &firmware_config::Environment { cpus: 2 },
        )
        .unwrap_or_else(|e| panic!("test config refused: {e}\n{text}"))
    }
}

// ---------------------------------------------------------------------------
// Rig: appliance + tables + one worker with its counters and rings
// ---------------------------------------------------------------------------

struct Rig {
    app: Appliance,
    tables: Tables,
    worker: Worker,
    counters: Arc<WorkerCounters>,
    events: Arc<EventRing>,
    hints: Arc<HintRing>,
}

fn port_macs(cfg: &firmware_config::Config) -> Vec<[u8; 6]> {
    [CLIENT_PORT_MAC, BACKEND_PORT_MAC][..cfg.ports.len()].to_vec()
}

impl Rig {
    fn new(cfg: &Cfg) -> Rig {
        Rig::with_capacity(cfg, 65536)
    }

    fn standard() -> Rig {
        Rig::new(&Cfg::standard())
    }

    fn with_capacity(cfg: &Cfg, capacity: usize) -> Rig {
        let config = cfg.parse();
        let macs = port_macs(&config);
        let mut app = Appliance::new(config, macs);
        let tables = app.build_tables();
        let counters = Arc::new(WorkerCounters::default());
        let events = Arc::new(EventRing::new(1 << 16));
        let hints = Arc::new(HintRing::new(1024));
        let worker = Worker::new(
            0,
            capacity,
            TIMEOUTS,
            counters.clone(),
            events.clone(),
            hints.clone(),
        );
        Rig {
            app,
            tables,
            worker,
            counters,
            events,
            hints,
        }
    }

    /// Replaces the configuration (a new Appliance and Tables) while the
    /// worker keeps its flow table, as a reload does.
    fn reconfigure(&mut self, cfg: &Cfg) {
        let config = cfg.parse();
        let macs = port_macs(&config);
        let _ = macs;
        self.app
            .reconfigure(config)
            .expect("reconfiguration accepted");
        self.tables = self.app.build_tables();
    }

    fn learn(&mut self, port: u16, addr: [u8; 4], mac: [u8; 6]) {
        self.app.learn(port, ip(addr), mac, 0.0);
        self.tables = self.app.build_tables();
    }

    fn process(&mut self, frame: &mut [u8], port: u16, now: u32) -> Action {
        self.worker.process(frame, port, now, &self.tables)
    }

    fn drops(&self, port: u16, reason: DropReason) -> u64 {
        self.counters.ports[port as usize].drops[reason as usize].get()
    }

    fn all_drops(&self, port: u16) -> u64 {
        DropReason::ALL.iter().map(|&r| self.drops(port, r)).sum()
    }

    fn events(&self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.events.pop()).collect()
    }

    fn hints(&self) -> Vec<NeighbourHint> {
        std::iter::from_fn(|| self.hints.pop()).collect()
    }

    /// The backend Maglev picks in the current tables for a flow.
    fn select(&self, vip: u32, client: [u8; 4], sport: u16, proto: u8) -> &BackendInfo {
        let key = FlowKey {
            client_ip: ip(client),
            vip,
            client_port: sport,
            proto,
        };
        let id = self.tables.vips[vip as usize]
            .select(key.hash())
            .expect("VIP has a backend");
        self.tables.backend(id).expect("selected backend exists")
    }
}

// ---------------------------------------------------------------------------
// Frame builders
// ---------------------------------------------------------------------------

/// A TCP or UDP packet to build.
#[derive(Clone, Debug)]
struct Pkt {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    payload: Vec<u8>,
}

impl Pkt {
    /// A client packet to the web VIP, arriving on the client port.
    fn client(src: [u8; 4], sport: u16) -> Pkt {
        Pkt {
            src_mac: PEER_MAC,
            dst_mac: CLIENT_PORT_MAC,
            src,
            dst: VIP,
            ttl: 64,
            sport,
            dport: 80,
            flags: SYN,
            seq: 0x1000_0000,
            payload: Vec::new(),
        }
    }

    /// A backend's reply to a client, arriving on the backend port.
    fn reply(from: [u8; 4], from_port: u16, to: [u8; 4], to_port: u16) -> Pkt {
        Pkt {
            src_mac: PEER_MAC,
            dst_mac: BACKEND_PORT_MAC,
            src: from,
            dst: to,
            ttl: 64,
            sport: from_port,
            dport: to_port,
            flags: SYN | ACK,
            seq: 0x2000_0000,
            payload: Vec::new(),
        }
    }

    fn to(mut self, dst: [u8; 4], dport: u16) -> Pkt {
        self.dst = dst;
        self.dport = dport;
        self
    }

    fn flags(mut self, flags: u8) -> Pkt {
        self.flags = flags;
        self
    }

    fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    fn payload(mut self, p: &[u8]) -> Pkt {
        self.payload = p.to_vec();
        self
    }

    fn dst_mac(mut self, m: [u8; 6]) -> Pkt {
        self.dst_mac = m;
        self
    }

    fn tcp(&self) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(self.src, self.dst, self.ttl)
            .tcp(self.sport, self.dport, self.seq, 64240);
        if self.flags & SYN != 0 {
            b = b.syn();
        }
        if self.flags & ACK != 0 {
            b = b.ack(0x0bad_cafe);
        }
        if self.flags & FIN != 0 {
            b = b.fin();
        }
        if self.flags & RST != 0 {
            b = b.rst();
        }
        if self.flags & PSH != 0 {
            b = b.psh();
        }
        let mut out = Vec::with_capacity(b.size(self.payload.len()));
        b.write(&mut out, &self.payload).unwrap();
        out
    }

    fn udp(&self) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(self.src, self.dst, self.ttl)
            .udp(self.sport, self.dport);
        let mut out = Vec::with_capacity(b.size(self.payload.len()));
        b.write(&mut out, &self.payload).unwrap();
        out
    }
}

fn icmp_echo(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(PEER_MAC, CLIENT_PORT_MAC)
        .ipv4(src, dst, 57)
        .icmpv4_echo_request(id, seq);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// A 60-byte (padded) Ethernet/IPv4 ARP frame.
fn arp_frame(
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&sha);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..16].copy_from_slice(&[0, 1]);
    f[16..18].copy_from_slice(&[0x08, 0x00]);
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&sha);
    f[28..32].copy_from_slice(&spa);
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&tpa);
    // Recognisable padding, to check that it is left alone.
    for (i, x) in f[42..].iter_mut().enumerate() {
        *x = 0xa0 + i as u8;
    }
    f
}

fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    arp_frame(BROADCAST, 1, sha, spa, [0; 6], tpa)
}

/// Inserts a VLAN tag (`tpid`, `tci`) after the MAC addresses.
fn add_vlan(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// Pads a frame to the 60-byte Ethernet minimum with junk bytes.
fn pad60(mut f: Vec<u8>) -> Vec<u8> {
    let mut i = 0u8;
    while f.len() < 60 {
        f.push(0xe0 | (i & 0x0f));
        i += 1;
    }
    f
}

/// Offset of the L3 header, skipping any number of VLAN tags.
fn l3_of(f: &[u8]) -> usize {
    let mut off = 12;
    while off + 2 <= f.len() && matches!(u16::from_be_bytes([f[off], f[off + 1]]), 0x8100 | 0x88a8)
    {
        off += 4;
    }
    off + 2
}

// ---------------------------------------------------------------------------
// Independent checksum reference (RFC 1071, one word at a time)
// ---------------------------------------------------------------------------

fn ref_sum(data: &[u8]) -> u32 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        s += u32::from(w);
    }
    s
}

fn ref_fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Fixes the IPv4 header checksum of the packet at `l3` (after a test
/// edited the header).
fn fix_ip_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let ck = !ref_fold(ref_sum(&f[l3..l3 + ihl]));
    f[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
}

/// Fixes the TCP/UDP checksum of the IPv4 packet at `l3` (UDP: over its
/// own length field, 0 becomes 0xffff).
fn fix_l4_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
    let proto = f[l3 + 9];
    let l4 = l3 + ihl;
    let (len, off) = match proto {
        TCP => (total - ihl, 16),
        UDP => (usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]])), 6),
        _ => return,
    };
    f[l4 + off] = 0;
    f[l4 + off + 1] = 0;
    let pseudo = ref_sum(&f[l3 + 12..l3 + 20]) + u32::from(proto) + len as u32;
    let mut ck = !ref_fold(pseudo + ref_sum(&f[l4..l4 + len]));
    if proto == UDP && ck == 0 {
        ck = 0xffff;
    }
    f[l4 + off..l4 + off + 2].copy_from_slice(&ck.to_be_bytes());
}

/// Whether the TCP/UDP checksum of an IPv4 frame verifies (None: not a
/// well-formed IPv4 TCP/UDP frame). A UDP checksum of 0 counts as valid.
fn l4_checksum_ok(f: &[u8]) -> Option<bool> {
    let l3 = l3_of(f);
    let ver_ihl = *f.get(l3)?;
    if ver_ihl >> 4 != 4
        || f.len() < l3 + 20
        || u16::from_be_bytes([f[l3 - 2], f[l3 - 1]]) != 0x0800
    {
        return None;
    }
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
    if ihl < 20 || total < ihl || l3 + total > f.len() {
        return None;
    }
    let proto = f[l3 + 9];
    let l4 = l3 + ihl;
    let len = match proto {
        TCP if total - ihl >= 20 => total - ihl,
        UDP if total - ihl >= 8 => {
            let ul = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
            if ul < 8 || ul > total - ihl {
                return None;
            }
            if u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]) == 0 {
                return Some(true);
            }
            ul
        }
        _ => return None,
    };
    let pseudo = ref_sum(&f[l3 + 12..l3 + 20]) + u32::from(proto) + len as u32;
    Some(ref_fold(pseudo + ref_sum(&f[l4..l4 + len])) == 0xffff)
}

// ---------------------------------------------------------------------------
// Output parsing and verification
// ---------------------------------------------------------------------------

/// What a forwarded IPv4 TCP/UDP/ICMP frame contains, after its checksums
/// were verified against full recomputations.
#[derive(Debug)]
struct Out {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    /// Raw VLAN tags (TPID, TCI), outermost first.
    vlans: Vec<(u16, u16)>,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    /// TCP/UDP/ICMP payload.
    payload: Vec<u8>,
    /// ICMP: (type, code, id, seq).
    icmp: Option<(u8, u8, u16, u16)>,
    /// UDP checksum field (0 = none).
    udp_checksum: u16,
}

/// Parses a forwarded frame with etherparse and checks every checksum two
/// ways: equal to etherparse's full recomputation, and verifying with the
/// reference sum above.
fn check(frame: &[u8]) -> Out {
    let h = PacketHeaders::from_ethernet_slice(frame)
        .unwrap_or_else(|e| panic!("forwarded frame does not parse: {e:?}\n{frame:02x?}"));
    let Some(LinkHeader::Ethernet2(eth)) = &h.link else {
        panic!("no Ethernet header");
    };
    let Some(NetHeaders::Ipv4(iph, _)) = &h.net else {
        panic!("not IPv4: {:?}", h.net);
    };
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "IPv4 header checksum differs from a full recomputation"
    );
    let l3 = l3_of(frame);
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    assert_eq!(
        ref_fold(ref_sum(&frame[l3..l3 + ihl])),
        0xffff,
        "IPv4 header checksum does not verify"
    );
    let mut vlans = Vec::new();
    let mut off = 12;
    while matches!(
        u16::from_be_bytes([frame[off], frame[off + 1]]),
        0x8100 | 0x88a8
    ) {
        vlans.push((
            u16::from_be_bytes([frame[off], frame[off + 1]]),
            u16::from_be_bytes([frame[off + 2], frame[off + 3]]),
        ));
        off += 4;
    }
    match (&h.vlan, vlans.len()) {
        (None, 0) | (Some(VlanHeader::Single(_)), 1) | (Some(VlanHeader::Double(_)), 2) => {}
        (v, n) => panic!("etherparse saw {v:?}, {n} tags in the bytes"),
    }
    let mut out = Out {
        dst_mac: eth.destination,
        src_mac: eth.source,
        vlans,
        src: iph.source,
        dst: iph.destination,
        ttl: iph.time_to_live,
        proto: iph.protocol.0,
        sport: 0,
        dport: 0,
        payload: Vec::new(),
        icmp: None,
        udp_checksum: 0,
    };
    match (&h.transport, &h.payload) {
        (Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(iph, p).unwrap(),
                "TCP checksum differs from a full recomputation"
            );
            out.sport = t.source_port;
            out.dport = t.destination_port;
            out.payload = p.to_vec();
        }
        (Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(iph, p).unwrap(),
                    "UDP checksum differs from a full recomputation"
                );
            }
            out.sport = u.source_port;
            out.dport = u.destination_port;
            out.payload = p.to_vec();
            out.udp_checksum = u.checksum;
        }
        (Some(TransportHeader::Icmpv4(i)), PayloadSlice::Icmpv4(p)) => {
            let l4 = l3 + ihl;
            let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            assert_eq!(
                ref_fold(ref_sum(&frame[l4..l3 + total])),
                0xffff,
                "ICMP checksum does not verify"
            );
            let mut copy = frame[l4..l3 + total].to_vec();
            copy[2] = 0;
            copy[3] = 0;
            assert_eq!(
                i.checksum,
                !ref_fold(ref_sum(&copy)),
                "ICMP checksum differs from a full recomputation"
            );
            let (id, seq) = match &i.icmp_type {
                Icmpv4Type::EchoReply(e) | Icmpv4Type::EchoRequest(e) => (e.id, e.seq),
                _ => (0, 0),
            };
            out.icmp = Some((frame[l4], frame[l4 + 1], id, seq));
            out.payload = p.to_vec();
        }
        (t, _) => panic!("unexpected transport {t:?}"),
    }
    if matches!(out.proto, TCP | UDP) {
        assert_eq!(
            l4_checksum_ok(frame),
            Some(true),
            "L4 checksum does not verify"
        );
    }
    out
}

/// Byte offsets at which two equally long frames differ.
fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "frame length changed");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// Asserts that `after` differs from `before` only at the given offsets.
fn assert_only_changed(before: &[u8], after: &[u8], allowed: &[usize]) {
    let allowed: HashSet<usize> = allowed.iter().copied().collect();
    for i in diff(before, after) {
        assert!(
            allowed.contains(&i),
            "byte {i} changed ({:#04x} -> {:#04x}) but should not have",
            before[i],
            after[i]
        );
    }
}

/// Offsets NAT may change in an IPv4 TCP/UDP frame: MACs, TTL, IP checksum,
/// the rewritten address and port, and the L4 checksum.
fn nat_mutable(frame: &[u8], rewrite_dst: bool, proto: u8) -> Vec<usize> {
    let l3 = l3_of(frame);
    let l4 = l3 + usize::from(frame[l3] & 0x0f) * 4;
    let mut v: Vec<usize> = (0..12).collect();
    v.extend([l3 + 8, l3 + 10, l3 + 11]);
    let (addr, port) = if rewrite_dst {
        (l3 + 16, l4 + 2)
    } else {
        (l3 + 12, l4)
    };
    v.extend(addr..addr + 4);
    v.extend(port..port + 2);
    let ck = if proto == TCP { l4 + 16 } else { l4 + 6 };
    v.extend(ck..ck + 2);
    v
}

// ===========================================================================
// 1. ARP
// ===========================================================================

const REQUESTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
const REQUESTER_IP: [u8; 4] = [198, 18, 1, 10];

/// Checks an ARP reply made from a request by (REQUESTER_MAC, REQUESTER_IP),
/// at L3 offset `l3`, sent by `port_mac` for `addr`.
fn assert_arp_reply(f: &[u8], l3: usize, port_mac: [u8; 6], addr: [u8; 4]) {
    assert_eq!(f[0..6], REQUESTER_MAC, "Ethernet dst = requester");
    assert_eq!(f[6..12], port_mac, "Ethernet src = port MAC");
    assert_eq!(f[l3 - 2..l3], [0x08, 0x06], "still ARP");
    let a = &f[l3..];
    assert_eq!(a[0..2], [0, 1], "htype");
    assert_eq!(a[2..4], [0x08, 0x00], "ptype");
    assert_eq!((a[4], a[5]), (6, 4), "hlen/plen");
    assert_eq!(a[6..8], [0, 2], "operation = reply");
    assert_eq!(a[8..14], port_mac, "sender MAC = port MAC");
    assert_eq!(a[14..18], addr, "sender IP = requested address");
    assert_eq!(a[18..24], REQUESTER_MAC, "target MAC = requester");
    assert_eq!(a[24..28], REQUESTER_IP, "target IP = requester");
}

#[test]
fn arp_request_for_vip_on_client_port_is_answered() {
    for vip in [VIP, VIP_DR] {
        let mut r = Rig::standard();
        let mut f = arp_request(REQUESTER_MAC, REQUESTER_IP, vip);
        let before = f.clone();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(CLIENT_PORT)
        );
        assert_eq!(f.len(), before.len());
        assert_arp_reply(&f, 14, CLIENT_PORT_MAC, vip);
        assert_eq!(f[42..], before[42..], "padding untouched");
        let pc = &r.counters.ports[CLIENT_PORT as usize];
        assert_eq!(pc.rx_packets.get(), 1);
        assert_eq!(pc.rx_arp.get(), 1);
        assert_eq!(pc.arp_replies_sent.get(), 1);
        assert_eq!(r.all_drops(CLIENT_PORT), 0);
        // The requester is on-link: learned on the way.
        assert_eq!(
            r.hints(),
            vec![NeighbourHint::Learned {
                port: CLIENT_PORT,
                ip: ip(REQUESTER_IP),
                mac: REQUESTER_MAC
            }]
        );
    }
}

#[test]
fn arp_request_unicast_to_port_mac_is_answered() {
    let mut r = Rig::standard();
    let mut f = arp_frame(CLIENT_PORT_MAC, 1, REQUESTER_MAC, REQUESTER_IP, [0; 6], VIP);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    assert_arp_reply(&f, 14, CLIENT_PORT_MAC, VIP);
}

#[test]
fn arp_request_for_port_address_is_answered_on_that_port_only() {
    let mut r = Rig::standard();
    // Client port's own address, on the client port.
    let mut f = arp_request(REQUESTER_MAC, REQUESTER_IP, CLIENT_PORT_IP);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    assert_arp_reply(&f, 14, CLIENT_PORT_MAC, CLIENT_PORT_IP);

    // Backend port's address, on the backend port.
    let mut f = arp_request(REQUESTER_MAC, REQUESTER_IP, BACKEND_PORT_IP);
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 0),
        Action::Forward(BACKEND_PORT)
    );
    assert_arp_reply(&f, 14, BACKEND_PORT_MAC, BACKEND_PORT_IP);
    assert_eq!(
        r.counters.ports[BACKEND_PORT as usize]
            .arp_replies_sent
            .get(),
        1
    );

    // The backend port's address asked on the client port: not ours there.
    let mut f = arp_request(REQUESTER_MAC, REQUESTER_IP, BACKEND_PORT_IP);
    let before = f.clone();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Drop(DropReason::ArpNotForUs)
    );
    assert_eq!(f, before, "a dropped request is not modified");
    assert_eq!(r.drops(CLIENT_PORT, DropReason::ArpNotForUs), 1);
}

#[test]
fn arp_request_for_unknown_address_is_dropped() {
    let mut r = Rig::standard();
    let mut f = arp_request(REQUESTER_MAC, REQUESTER_IP, [198, 18, 1, 99]);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Drop(DropReason::ArpNotForUs)
    );
    assert_eq!(r.drops(CLIENT_PORT, DropReason::ArpNotForUs), 1);
    assert_eq!(
        r.counters.ports[CLIENT_PORT as usize]
            .arp_replies_sent
            .get(),
        0
    );
    // Still learned: the sender is on-link.
    assert_eq!(r.hints().len(), 1);
}

#[test]
fn arp_request_for_vip_on_backend_port_is_not_answered() {
    let mut r = Rig::standard();
    let mut f = arp_request(REQUESTER_MAC, [198, 18, 2, 50], VIP);
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 0),
        Action::Drop(DropReason::ArpNotForUs)
    );
    assert_eq!(r.drops(BACKEND_PORT, DropReason::ArpNotForUs), 1);
    assert_eq!(
        r.counters.ports[BACKEND_PORT as usize]
            .arp_replies_sent
            .get(),
        0
    );
}

#[test]
fn arp_reply_is_consumed_and_learned() {
    let mut r = Rig::standard();
    let host_mac = [0x02, 0, 0, 0, 0x0a, 0x32];
    let host = [198, 18, 1, 50];
    let mut f = arp_frame(
        CLIENT_PORT_MAC,
        2,
        host_mac,
        host,
        CLIENT_PORT_MAC,
        CLIENT_PORT_IP,
    );
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Drop(DropReason::ArpReplyConsumed)
    );
    assert_eq!(r.drops(CLIENT_PORT, DropReason::ArpReplyConsumed), 1);
    let hints = r.hints();
    assert_eq!(
        hints,
        vec![NeighbourHint::Learned {
            port: CLIENT_PORT,
            ip: ip(host),
            mac: host_mac
        }]
    );

    // Feeding the hint to the appliance makes NAT replies to that client go
    // straight to its MAC.
    let NeighbourHint::Learned { port, ip: a, mac } = hints[0] else {
        unreachable!()
    };
    r.app.learn(port, a, mac, 0.0);
    r.tables = r.app.build_tables();
    let mut syn = Pkt::client(host, 33000).tcp();
    let Action::Forward(_) = r.process(&mut syn, CLIENT_PORT, 0) else {
        panic!("SYN not forwarded");
    };
    let be = check(&syn);
    let mut reply = Pkt::reply(be.dst, be.dport, host, 33000).tcp();
    assert_eq!(
        r.process(&mut reply, BACKEND_PORT, 1),
        Action::Forward(CLIENT_PORT)
    );
    assert_eq!(check(&reply).dst_mac, host_mac);
}

#[test]
fn arp_from_off_link_or_multicast_sender_is_not_learned() {
    let mut r = Rig::standard();
    // Sender address outside the port's prefix.
    let mut f = arp_request(REQUESTER_MAC, [10, 1, 2, 3], VIP);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    // Multicast sender MAC, sender address 0 (a probe).
    let mut f = arp_frame(
        BROADCAST,
        2,
        [0x03, 0, 0, 0, 0, 1],
        [198, 18, 1, 9],
        [0; 6],
        VIP,
    );
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Drop(DropReason::ArpReplyConsumed)
    );
    let mut f = arp_frame(BROADCAST, 1, REQUESTER_MAC, [0; 4], [0; 6], [198, 18, 1, 9]);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Drop(DropReason::ArpNotForUs)
    );
    assert_eq!(r.hints(), vec![]);
}

#[test]
fn malformed_arp_is_bad_arp() {
    let good = arp_request(REQUESTER_MAC, REQUESTER_IP, VIP);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to 14 + 20 bytes", good[..34].to_vec()),
        ("truncated to 14 + 27 bytes", good[..41].to_vec()),
    ];
    let mut f = good.clone();
    f[15] = 6; // htype 6 (IEEE 802)
    cases.push(("hardware type 6", f));
    let mut f = good.clone();
    f[16] = 0x86;
    f[17] = 0xdd; // ptype IPv6
    cases.push(("protocol type IPv6", f));
    let mut f = good.clone();
    f[18] = 8;
    cases.push(("hlen 8", f));
    let mut f = good.clone();
    f[21] = 3; // RARP request
    cases.push(("operation 3", f));
    for (what, mut f) in cases {
        let mut r = Rig::standard();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Drop(DropReason::BadArp),
            "{what}"
        );
        assert_eq!(r.drops(CLIENT_PORT, DropReason::BadArp), 1, "{what}");
        assert_eq!(r.all_drops(CLIENT_PORT), 1, "{what}");
        assert_eq!(r.counters.ports[0].rx_arp.get(), 1, "{what}");
    }
}

#[test]
fn vlan_tagged_arp_request_is_answered_with_the_tag() {
    let mut r = Rig::standard();
    let mut f = add_vlan(
        &arp_request(REQUESTER_MAC, REQUESTER_IP, VIP),
        0x8100,
        0x2064,
    );
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    assert_eq!(f[12..16], [0x81, 0x00, 0x20, 0x64], "tag kept");
    assert_arp_reply(&f, 18, CLIENT_PORT_MAC, VIP);
}

// ===========================================================================
// 2. ICMP echo
// ===========================================================================

fn assert_echo_reply(f: &[u8], to: [u8; 4], from: [u8; 4], id: u16, seq: u16, payload: &[u8]) {
    let o = check(f);
    assert_eq!(o.dst_mac, PEER_MAC, "back to the sender's MAC");
    assert_eq!(o.src_mac, CLIENT_PORT_MAC);
    assert_eq!(o.src, from, "source = the pinged address");
    assert_eq!(o.dst, to, "destination = the pinger");
    assert_eq!(o.proto, 1);
    assert!(o.ttl > 1, "a fresh TTL, got {}", o.ttl);
    assert_eq!(o.icmp, Some((0, 0, id, seq)), "echo reply, same id/seq");
    assert_eq!(o.payload, payload, "same data");
}

#[test]
fn icmp_echo_to_vip_is_answered() {
    for payload in [
        &b"sluice ping payload, 31 bytes.."[..],
        b"",
        b"x",
        &[0u8; 1000],
    ] {
        let mut r = Rig::standard();
        let mut f = icmp_echo(FAR_CLIENT, VIP, 0x1234, 7, payload);
        let len = f.len();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(CLIENT_PORT)
        );
        assert_eq!(f.len(), len);
        assert_echo_reply(&f, FAR_CLIENT, VIP, 0x1234, 7, payload);
        let pc = &r.counters.ports[0];
        assert_eq!(pc.icmp_echo_replies_sent.get(), 1);
        assert_eq!(pc.rx_ipv4.get(), 1);
        assert_eq!(r.all_drops(CLIENT_PORT), 0);
    }
}

#[test]
fn icmp_echo_to_port_address_and_padded_echo_are_answered() {
    let mut r = Rig::standard();
    let mut f = icmp_echo(FAR_CLIENT, CLIENT_PORT_IP, 1, 2, b"abc");
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    assert_echo_reply(&f, FAR_CLIENT, CLIENT_PORT_IP, 1, 2, b"abc");

    // 42-byte echo padded to 60 bytes: the padding is not ICMP data.
    let mut f = pad60(icmp_echo(FAR_CLIENT, VIP_DR, 9, 9, b""));
    let before = f.clone();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    assert_echo_reply(&f, FAR_CLIENT, VIP_DR, 9, 9, b"");
    assert_eq!(f[42..], before[42..], "padding untouched");
}

#[test]
fn icmp_all_zero_echo_gets_checksum_ffff() {
    // Request: type 8, everything else zero. The reply is all zero but for
    // its checksum, the one case where the incremental update needs care.
    let mut r = Rig::standard();
    let mut f = icmp_echo(FAR_CLIENT, VIP, 0, 0, b"");
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    assert_echo_reply(&f, FAR_CLIENT, VIP, 0, 0, b"");
    assert_eq!(f[34 + 2..34 + 4], [0xff, 0xff]);
}

#[test]
fn icmp_that_is_not_answered() {
    let ok = icmp_echo(FAR_CLIENT, VIP, 1, 1, b"data");
    let l4 = 34;
    let fix_icmp = |f: &mut Vec<u8>| {
        f[l4 + 2] = 0;
        f[l4 + 3] = 0;
        let ck = !ref_fold(ref_sum(&f[l4..]));
        f[l4 + 2..l4 + 4].copy_from_slice(&ck.to_be_bytes());
    };
    let mut cases: Vec<(&str, Vec<u8>, u16, DropReason)> = Vec::new();
    let mut f = ok.clone();
    f[l4 + 8] ^= 0xff;
    cases.push((
        "bad ICMP checksum",
        f,
        CLIENT_PORT,
        DropReason::BadIcmpChecksum,
    ));
    let mut f = ok.clone();
    f[l4] = 13; // timestamp request
    fix_icmp(&mut f);
    cases.push(("timestamp", f, CLIENT_PORT, DropReason::IcmpNotHandled));
    let mut f = ok.clone();
    f[l4] = 0; // echo reply
    fix_icmp(&mut f);
    cases.push(("echo reply", f, CLIENT_PORT, DropReason::IcmpNotHandled));
    let mut f = ok.clone();
    f[l4 + 1] = 1; // echo request with code 1
    fix_icmp(&mut f);
    cases.push(("code 1", f, CLIENT_PORT, DropReason::IcmpNotHandled));
    // 4 bytes of ICMP: shorter than its header.
    let mut f = ok[..l4 + 4].to_vec();
    f[16..18].copy_from_slice(&24u16.to_be_bytes());
    fix_ip_checksum(&mut f, 14);
    cases.push(("truncated", f, CLIENT_PORT, DropReason::IcmpNotHandled));
    cases.push((
        "VIP pinged on the backend port",
        ok.clone(),
        BACKEND_PORT,
        DropReason::IcmpNotHandled,
    ));
    cases.push((
        "backend port address pinged on the client port",
        icmp_echo(FAR_CLIENT, BACKEND_PORT_IP, 1, 1, b"data"),
        CLIENT_PORT,
        DropReason::IcmpNotHandled,
    ));
    cases.push((
        "unknown destination",
        icmp_echo(FAR_CLIENT, [192, 0, 2, 1], 1, 1, b"data"),
        CLIENT_PORT,
        DropReason::UnknownDestination,
    ));
    for (what, mut f, port, reason) in cases {
        let mut r = Rig::standard();
        f[0..6].copy_from_slice(&[CLIENT_PORT_MAC, BACKEND_PORT_MAC][port as usize]);
        let before = f.clone();
        assert_eq!(r.process(&mut f, port, 0), Action::Drop(reason), "{what}");
        assert_eq!(f, before, "{what}: a dropped frame is not modified");
        assert_eq!(r.drops(port, reason), 1, "{what}");
        assert_eq!(r.all_drops(port), 1, "{what}");
        assert_eq!(
            r.counters.ports[port as usize].icmp_echo_replies_sent.get(),
            0,
            "{what}"
        );
    }
}

// ===========================================================================
// 3. NAT
// ===========================================================================

#[test]
fn nat_tcp_syn_is_rewritten_to_the_chosen_backend() {
    for payload in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"odd"] {
        let mut r = Rig::standard();
        let p = Pkt::client(FAR_CLIENT, 40000).ttl(64).payload(payload);
        let mut f = p.tcp();
        let before = f.clone();
        let be = r.select(WEB, FAR_CLIENT, 40000, TCP).clone();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(be.egress_port)
        );
        assert_eq!(be.egress_port, BACKEND_PORT);
        let o = check(&f);
        assert_eq!(o.dst, be.addr.to_be_bytes(), "dst = backend address");
        assert_eq!(o.dport, 8080, "dst port = backend port");
        assert_eq!(o.src, FAR_CLIENT, "src unchanged");
        assert_eq!(o.sport, 40000, "src port unchanged");
        assert_eq!(o.ttl, 63, "TTL decremented");
        assert_eq!(Some(o.dst_mac), be.next_hop_mac);
        assert_eq!(o.dst_mac, backend_mac(be.addr.to_be_bytes()[3]));
        assert_eq!(o.src_mac, BACKEND_PORT_MAC);
        assert_eq!(o.payload, payload);
        assert!(o.vlans.is_empty());
        assert_only_changed(&before, &f, &nat_mutable(&before, true, TCP));
    }
}

#[test]
fn nat_udp_is_rewritten_and_zero_checksum_stays_zero() {
    for zero in [false, true] {
        for payload in [&b"\x12\x34\x01\x00\x00\x01"[..], b"", b"odd length!"] {
            let mut r = Rig::standard();
            let p = Pkt::client(FAR_CLIENT, 5353).to(VIP, 53).payload(payload);
            let mut f = p.udp();
            if zero {
                f[40] = 0;
                f[41] = 0;
            }
            let before = f.clone();
            let be = r.select(DNS, FAR_CLIENT, 5353, UDP).clone();
            assert_eq!(
                r.process(&mut f, CLIENT_PORT, 0),
                Action::Forward(BACKEND_PORT)
            );
            let o = check(&f);
            assert_eq!(o.dst, be.addr.to_be_bytes());
            assert_eq!(o.dport, 5353);
            assert_eq!((o.src, o.sport), (FAR_CLIENT, 5353));
            assert_eq!(o.ttl, 63);
            assert_eq!(Some(o.dst_mac), be.next_hop_mac);
            assert_eq!(o.src_mac, BACKEND_PORT_MAC);
            assert_eq!(o.payload, payload);
            if zero {
                assert_eq!(o.udp_checksum, 0, "no checksum stays no checksum");
            } else {
                assert_ne!(o.udp_checksum, 0);
            }
            assert_only_changed(&before, &f, &nat_mutable(&before, true, UDP));
        }
    }
}

#[test]
fn nat_udp_checksum_that_becomes_zero_is_sent_as_ffff() {
    // Search a payload word for which the rewritten datagram's computed
    // checksum is 0: it must go out as 0xffff, not 0 ("no checksum").
    let r0 = Rig::standard();
    let be = r0.select(DNS, FAR_CLIENT, 5353, UDP).clone();
    let mut found = false;
    for w in 0..=u16::MAX {
        let mut f = Pkt::client(FAR_CLIENT, 5353)
            .to(VIP, 53)
            .payload(&w.to_be_bytes())
            .udp();
        // What the rewritten frame's checksum would be.
        let mut g = f.clone();
        g[30..34].copy_from_slice(&be.addr.to_be_bytes());
        g[36..38].copy_from_slice(&5353u16.to_be_bytes());
        g[22] -= 1;
        g[40] = 0;
        g[41] = 0;
        let pseudo = ref_sum(&g[26..34]) + 17 + 10;
        if !ref_fold(pseudo + ref_sum(&g[34..44])) != 0 {
            continue;
        }
        found = true;
        let mut r = Rig::standard();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(BACKEND_PORT)
        );
        let o = check(&f);
        assert_eq!(o.udp_checksum, 0xffff);
        break;
    }
    assert!(found, "no payload gives a zero checksum");
}

#[test]
fn nat_with_ip_options_and_ethernet_padding() {
    // IHL 6 (one word of NOP options) and a frame padded to 60 bytes.
    let mut r = Rig::standard();
    let base = Pkt::client(FAR_CLIENT, 41000).tcp();
    let mut f = base[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&base[34..]);
    f[14] = 0x46;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut f, 14);
    let mut f = pad60(f);
    f.extend_from_slice(&[0xee; 6]);
    let before = f.clone();
    let be = r.select(WEB, FAR_CLIENT, 41000, TCP).clone();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(BACKEND_PORT)
    );
    let o = check(&f);
    assert_eq!((o.dst, o.dport), (be.addr.to_be_bytes(), 8080));
    assert_eq!(f[34..38], [1, 1, 1, 0], "options kept");
    let end = 14 + usize::from(total);
    assert_eq!(f[end..], before[end..], "padding untouched");
    assert_only_changed(&before, &f, &nat_mutable(&before, true, TCP));
}

#[test]
fn nat_ttl_expired() {
    for ttl in [0, 1] {
        let mut r = Rig::standard();
        let mut f = Pkt::client(FAR_CLIENT, 40000).ttl(ttl).tcp();
        let before = f.clone();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Drop(DropReason::TtlExpired),
            "TTL {ttl}"
        );
        assert_eq!(f[12..], before[12..], "IP packet untouched");
        assert_eq!(r.drops(CLIENT_PORT, DropReason::TtlExpired), 1);
        assert_eq!(r.counters.vips[WEB as usize].drops.get(), 1);

        // The reply direction decrements too.
        let be = r.select(WEB, FAR_CLIENT, 40000, TCP).clone();
        let mut f = Pkt::reply(be.addr.to_be_bytes(), 8080, FAR_CLIENT, 40000)
            .ttl(ttl)
            .tcp();
        assert_eq!(
            r.process(&mut f, BACKEND_PORT, 0),
            Action::Drop(DropReason::TtlExpired)
        );
        assert_eq!(r.drops(BACKEND_PORT, DropReason::TtlExpired), 1);
    }
    // TTL 2 is fine and leaves with 1.
    let mut r = Rig::standard();
    let mut f = Pkt::client(FAR_CLIENT, 40000).ttl(2).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(BACKEND_PORT)
    );
    assert_eq!(check(&f).ttl, 1);
}

#[test]
fn nat_reply_is_translated_back_to_the_vip() {
    let mut r = Rig::standard();
    let client_mac = [0x02, 0, 0, 0, 0x0a, 0x33];
    let near = [198, 18, 1, 51];
    r.learn(CLIENT_PORT, near, client_mac);
    for (client, expect_mac) in [(FAR_CLIENT, GATEWAY_MAC), (near, client_mac)] {
        // Client -> VIP first, to know the backend (not required: NAT
        // replies are stateless).
        let mut syn = Pkt::client(client, 45000).tcp();
        assert_eq!(
            r.process(&mut syn, CLIENT_PORT, 0),
            Action::Forward(BACKEND_PORT)
        );
        let fwd = check(&syn);
        let p = Pkt::reply(fwd.dst, fwd.dport, client, 45000).payload(b"HTTP/1.1 200 OK\r\n");
        let mut f = p.tcp();
        let before = f.clone();
        assert_eq!(
            r.process(&mut f, BACKEND_PORT, 1),
            Action::Forward(CLIENT_PORT)
        );
        let o = check(&f);
        assert_eq!((o.src, o.sport), (VIP, 80), "src = VIP:80");
        assert_eq!((o.dst, o.dport), (client, 45000), "dst unchanged");
        assert_eq!(o.ttl, 63);
        assert_eq!(o.dst_mac, expect_mac);
        assert_eq!(o.src_mac, CLIENT_PORT_MAC);
        assert_eq!(o.payload, b"HTTP/1.1 200 OK\r\n");
        assert_only_changed(&before, &f, &nat_mutable(&before, false, TCP));
    }

    // UDP reply from a DNS backend.
    let mut f = Pkt::reply(backend_ip(22), 5353, FAR_CLIENT, 7777)
        .payload(b"answer")
        .udp();
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 2),
        Action::Forward(CLIENT_PORT)
    );
    let o = check(&f);
    assert_eq!((o.src, o.sport), (VIP, 53));
    assert_eq!((o.dst, o.dport), (FAR_CLIENT, 7777));
    assert_eq!(o.dst_mac, GATEWAY_MAC);
    assert_eq!(r.all_drops(BACKEND_PORT), 0);
}

#[test]
fn nat_reply_to_unresolved_client_asks_for_it() {
    let mut r = Rig::standard();
    let client = [198, 18, 1, 77];
    let mut f = Pkt::reply(backend_ip(11), 8080, client, 45000).tcp();
    let before = f.clone();
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 0),
        Action::Drop(DropReason::ClientUnresolved)
    );
    assert_eq!(f, before, "a dropped frame is not modified");
    assert_eq!(r.drops(BACKEND_PORT, DropReason::ClientUnresolved), 1);
    assert_eq!(
        r.hints(),
        vec![NeighbourHint::Wanted {
            port: CLIENT_PORT,
            ip: ip(client)
        }]
    );
    // An off-link client behind an unresolved gateway: the gateway is wanted.
    let mut cfg = Cfg::standard();
    cfg.gateway = false;
    let mut text = cfg.text();
    text = text.replace(
        "address = \"198.18.1.254/24\"\n",
        "address = \"198.18.1.254/24\"\ngateway = \"198.18.1.1\"\n",
    );
    let config =
        firmware_config::parse_with(&text, "t.toml", &firmware_config::Environment { cpus: 2 })
            .unwrap();
    r.app = Appliance::new(config, vec![CLIENT_PORT_MAC, BACKEND_PORT_MAC]);
    r.tables = r.app.build_tables();
    let mut f = Pkt::reply(backend_ip(11), 8080, FAR_CLIENT, 45000).tcp();
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 0),
        Action::Drop(DropReason::ClientUnresolved)
    );
    assert_eq!(
        r.hints(),
        vec![NeighbourHint::Wanted {
            port: CLIENT_PORT,
            ip: ip(GATEWAY_IP)
        }]
    );
}

#[test]
fn nat_reply_without_route_or_from_unknown_source() {
    // No gateway: an off-link client cannot be reached.
    let mut cfg = Cfg::standard();
    cfg.gateway = false;
    let mut r = Rig::new(&cfg);
    let mut f = Pkt::reply(backend_ip(11), 8080, FAR_CLIENT, 45000).tcp();
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 0),
        Action::Drop(DropReason::NoRouteToClient)
    );
    assert_eq!(r.drops(BACKEND_PORT, DropReason::NoRouteToClient), 1);

    let mut r = Rig::standard();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "wrong source port",
            Pkt::reply(backend_ip(11), 9999, FAR_CLIENT, 45000).tcp(),
            BACKEND_PORT,
        ),
        (
            "TCP from a UDP backend",
            Pkt::reply(backend_ip(21), 5353, FAR_CLIENT, 45000).tcp(),
            BACKEND_PORT,
        ),
        (
            "DR backend: replies bypass us",
            Pkt::reply(backend_ip(31), 443, FAR_CLIENT, 45000).tcp(),
            BACKEND_PORT,
        ),
        (
            "NAT reply on the client-only port",
            Pkt::reply(backend_ip(11), 8080, FAR_CLIENT, 45000)
                .dst_mac(CLIENT_PORT_MAC)
                .tcp(),
            CLIENT_PORT,
        ),
    ];
    for (what, mut f, port) in cases {
        assert_eq!(
            r.process(&mut f, port, 0),
            Action::Drop(DropReason::UnknownDestination),
            "{what}"
        );
    }
    assert_eq!(r.drops(BACKEND_PORT, DropReason::UnknownDestination), 3);
    assert_eq!(r.drops(CLIENT_PORT, DropReason::UnknownDestination), 1);
}

/// A random but valid NAT VIP: 1 to 5 backends with distinct addresses on
/// the backend subnet, random ports and weights.
#[derive(Debug, Clone)]
struct RandVip {
    udp: bool,
    vip_port: u16,
    backends: Vec<(u8, u16, u32)>,
}

fn rand_vip() -> impl Strategy<Value = RandVip> {
    (
        any::<bool>(),
        1u16..,
        proptest::collection::btree_map(1u8..=253, (1u16.., 1u32..=1000), 1..=5),
    )
        .prop_map(|(udp, vip_port, m)| RandVip {
            udp,
            vip_port,
            backends: m.into_iter().map(|(h, (p, w))| (h, p, w)).collect(),
        })
}

fn rand_vip_cfg(v: &RandVip) -> Cfg {
    let mut cfg = Cfg::standard();
    cfg.vips = vec![V {
        name: "rand",
        addr: VIP,
        port: v.vip_port,
        proto: if v.udp { "udp" } else { "tcp" },
        mode: "nat",
        backends: v
            .backends
            .iter()
            .map(|&(host, port, weight)| B {
                host,
                port: Some(port),
                weight,
                mac: true,
            })
            .collect(),
    }];
    cfg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every NAT rewrite, both ways, gives checksums equal to a full
    /// recomputation and changes exactly the fields it should.
    #[test]
    fn nat_rewrite_checksums_match_full_recomputation(
        v in rand_vip(),
        client in any::<u32>(),
        sport in any::<u16>(),
        ttl in 2u8..=255,
        flags in prop::sample::select(vec![SYN, ACK, ACK | PSH, FIN | ACK, 0]),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        zero_udp_ck in any::<bool>(),
        vlan in proptest::option::of(0u16..4096),
        reply_ttl in 2u8..=255,
    ) {
        let mut r = Rig::new(&rand_vip_cfg(&v));
        // Keep the client off the client port's subnet, so that replies go
        // through the (static) gateway.
        let mut client = client.to_be_bytes();
        if client[0..3] == [198, 18, 1] {
            client[2] = 9;
        }
        // Nor a local address (a "reply" to it would be local traffic), nor
        // a multicast or broadcast one (replies to it are not routed).
        if client == VIP || client == BACKEND_PORT_IP || client[0] >= 224 {
            client[0] = 10;
        }
        let proto = if v.udp { UDP } else { TCP };
        let mut p = Pkt::client(client, sport).to(VIP, v.vip_port).ttl(ttl).flags(flags);
        p.payload = payload.clone();
        let mut f = if v.udp { p.udp() } else { p.tcp() };
        if v.udp && zero_udp_ck {
            f[40] = 0;
            f[41] = 0;
        }
        if let Some(tci) = vlan {
            f = add_vlan(&f, 0x8100, tci);
        }
        let before = f.clone();
        let be = r.select(0, client, sport, proto).clone();
        prop_assert_eq!(r.process(&mut f, CLIENT_PORT, 0), Action::Forward(BACKEND_PORT));
        let o = check(&f);
        prop_assert_eq!(o.dst, be.addr.to_be_bytes());
        prop_assert_eq!(o.dport, be.port);
        prop_assert_eq!((o.src, o.sport), (client, sport));
        prop_assert_eq!(o.ttl, ttl - 1);
        prop_assert_eq!(Some(o.dst_mac), be.next_hop_mac);
        prop_assert_eq!(&o.payload, &payload);
        if v.udp && zero_udp_ck {
            prop_assert_eq!(o.udp_checksum, 0);
        }
        assert_only_changed(&before, &f, &nat_mutable(&before, true, proto));
        let (host, port, _) = v.backends.iter().find(|b| backend_ip(b.0) == o.dst).copied().unwrap();
        prop_assert_eq!(port, o.dport);

        // The reply.
        let mut q = Pkt::reply(backend_ip(host), port, client, sport).ttl(reply_ttl);
        q.payload = payload.clone();
        let mut g = if v.udp { q.udp() } else { q.tcp() };
        if let Some(tci) = vlan {
            g = add_vlan(&g, 0x8100, tci);
        }
        let before = g.clone();
        prop_assert_eq!(r.process(&mut g, BACKEND_PORT, 1), Action::Forward(CLIENT_PORT));
        let o = check(&g);
        prop_assert_eq!((o.src, o.sport), (VIP, v.vip_port));
        prop_assert_eq!((o.dst, o.dport), (client, sport));
        prop_assert_eq!(o.ttl, reply_ttl - 1);
        prop_assert_eq!(o.dst_mac, GATEWAY_MAC);
        assert_only_changed(&before, &g, &nat_mutable(&before, false, proto));
    }
}

// ===========================================================================
// 4. Direct routing
// ===========================================================================

#[test]
fn dr_changes_only_the_macs() {
    let mut r = Rig::standard();
    for (i, ttl) in [64u8, 1, 255].into_iter().enumerate() {
        let sport = 50000 + i as u16;
        let p = Pkt::client(FAR_CLIENT, sport)
            .to(VIP_DR, 443)
            .ttl(ttl)
            .flags(ACK | PSH)
            .payload(b"\x16\x03\x01 client hello");
        for mut f in [p.tcp(), add_vlan(&p.tcp(), 0x8100, 7)] {
            let before = f.clone();
            let be = r.select(DR, FAR_CLIENT, sport, TCP).clone();
            assert_eq!(
                r.process(&mut f, CLIENT_PORT, 0),
                Action::Forward(BACKEND_PORT)
            );
            assert_eq!(f[0..6], be.next_hop_mac.unwrap());
            assert_eq!(f[0..6], backend_mac(be.addr.to_be_bytes()[3]));
            assert_eq!(f[6..12], BACKEND_PORT_MAC);
            assert_eq!(f[12..], before[12..], "IP header and L4 byte-identical");
        }
    }
}

// ===========================================================================
// 5. Backend selection
// ===========================================================================

/// A small deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A client address outside the test subnets.
    fn client(&mut self) -> [u8; 4] {
        let x = self.next();
        [
            10 + (x % 100) as u8,
            (x >> 8) as u8,
            (x >> 16) as u8,
            (x >> 24) as u8,
        ]
    }
}

#[test]
fn backend_is_maglev_choice_and_sticks_for_the_flow() {
    let mut r = Rig::standard();
    let mut rng = Rng(1);
    for i in 0..200u64 {
        let client = rng.client();
        let sport = (rng.next() % 60000) as u16 + 1024;
        let (vip, proto, dport) = [(WEB, TCP, 80), (DNS, UDP, 53), (DR, TCP, 443)][i as usize % 3];
        let dst = if vip == DR { VIP_DR } else { VIP };
        let be = r.select(vip, client, sport, proto).clone();
        let seq = [SYN, ACK, ACK | PSH, ACK | PSH, FIN | ACK, ACK];
        for (n, &flags) in seq.iter().enumerate() {
            let p = Pkt::client(client, sport)
                .to(dst, dport)
                .flags(flags)
                .payload(&[n as u8; 3]);
            let mut f = if proto == UDP { p.udp() } else { p.tcp() };
            assert_eq!(
                r.process(&mut f, CLIENT_PORT, (i * 10) as u32 + n as u32),
                Action::Forward(BACKEND_PORT)
            );
            assert_eq!(f[0..6], be.next_hop_mac.unwrap(), "flow {i} packet {n}");
            if vip != DR {
                assert_eq!(check(&f).dst, be.addr.to_be_bytes());
            }
        }
    }
}

#[test]
fn equal_weights_spread_evenly() {
    let mut cfg = Cfg::standard();
    cfg.table_size = 65537;
    let mut r = Rig::new(&cfg);
    let mut rng = Rng(42);
    let mut count: BTreeMap<[u8; 4], u32> = BTreeMap::new();
    const N: u32 = 3000;
    for _ in 0..N {
        let client = rng.client();
        let sport = (rng.next() % 64000) as u16 + 1024;
        let mut f = Pkt::client(client, sport).tcp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(BACKEND_PORT)
        );
        *count.entry(check(&f).dst).or_default() += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    for (b, n) in &count {
        let share = f64::from(*n) / f64::from(N);
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.03,
            "backend {b:?} got {:.1} % of flows: {count:?}",
            share * 100.0
        );
    }
    assert_eq!(r.counters.vips[WEB as usize].new_flows.get(), u64::from(N));
}

// ===========================================================================
// 6. Flow pinning, reconfiguration and flow events
// ===========================================================================

/// The single-VIP config of examples/af_packet.toml (with backend MACs).
fn web_only(backends: Vec<B>) -> Cfg {
    let mut cfg = Cfg::standard();
    cfg.vips = vec![web(backends)];
    cfg
}

/// Establishes `n` flows (SYN then ACK) from distinct clients to the web
/// VIP; returns (client, sport, backend address).
fn establish(r: &mut Rig, n: usize, seed: u64, now: u32) -> Vec<([u8; 4], u16, [u8; 4])> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let client = rng.client();
            let sport = (rng.next() % 60000) as u16 + 1024;
            let mut f = Pkt::client(client, sport).tcp();
            assert_eq!(
                r.process(&mut f, CLIENT_PORT, now),
                Action::Forward(BACKEND_PORT)
            );
            let be = check(&f).dst;
            let mut f = Pkt::client(client, sport).flags(ACK).tcp();
            assert_eq!(
                r.process(&mut f, CLIENT_PORT, now),
                Action::Forward(BACKEND_PORT)
            );
            assert_eq!(check(&f).dst, be);
            (client, sport, be)
        })
        .collect()
}

/// Sends a data packet of the flow and returns the backend address.
fn send_data(r: &mut Rig, client: [u8; 4], sport: u16, now: u32) -> [u8; 4] {
    let mut f = Pkt::client(client, sport)
        .flags(ACK | PSH)
        .payload(b"data")
        .tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, now),
        Action::Forward(BACKEND_PORT)
    );
    check(&f).dst
}

#[test]
fn added_backend_takes_only_new_flows() {
    let mut r = Rig::new(&web_only(web3()));
    let flows = establish(&mut r, 400, 7, 0);
    r.reconfigure(&web_only(vec![
        b(11, Some(8080)),
        b(12, Some(8080)),
        b(13, Some(8080)),
        b(14, Some(8080)),
    ]));
    let mut would_move = 0;
    for &(client, sport, be) in &flows {
        if r.select(WEB, client, sport, TCP).addr.to_be_bytes() != be {
            would_move += 1;
        }
        assert_eq!(send_data(&mut r, client, sport, 1), be, "pinned flow moved");
    }
    assert!(would_move > 40, "the new table moves {would_move} of 400");
    assert_eq!(r.counters.flows.rescheduled.get(), 0);

    // New flows follow the new table, the new backend included.
    let mut rng = Rng(999);
    let mut to_new = 0;
    for _ in 0..400 {
        let client = rng.client();
        let sport = (rng.next() % 60000) as u16 + 1024;
        let expect = r.select(WEB, client, sport, TCP).addr.to_be_bytes();
        let mut f = Pkt::client(client, sport).tcp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 2),
            Action::Forward(BACKEND_PORT)
        );
        let got = check(&f).dst;
        assert_eq!(got, expect);
        to_new += u32::from(got == backend_ip(14));
    }
    assert!(
        to_new > 50,
        "only {to_new} of 400 new flows to the new backend"
    );
}

#[test]
fn weight_change_and_drain_keep_existing_flows() {
    let mut r = Rig::new(&web_only(web3()));
    let flows = establish(&mut r, 300, 8, 0);
    let mut bs = web3();
    bs[0].weight = 5; // .11 heavier
    bs[1].weight = 0; // .12 drained
    r.reconfigure(&web_only(bs));
    for &(client, sport, be) in &flows {
        assert_eq!(send_data(&mut r, client, sport, 1), be);
    }
    assert!(flows.iter().any(|f| f.2 == backend_ip(12)));
    assert_eq!(r.counters.flows.rescheduled.get(), 0);
    let mut rng = Rng(1234);
    let mut count: HashMap<[u8; 4], u32> = HashMap::new();
    for _ in 0..600 {
        let client = rng.client();
        let sport = (rng.next() % 60000) as u16 + 1024;
        let expect = r.select(WEB, client, sport, TCP).addr.to_be_bytes();
        let mut f = Pkt::client(client, sport).tcp();
        r.process(&mut f, CLIENT_PORT, 2);
        let got = check(&f).dst;
        assert_eq!(got, expect);
        *count.entry(got).or_default() += 1;
    }
    assert_eq!(
        count.get(&backend_ip(12)),
        None,
        "drained backend got new flows"
    );
    assert!(
        count[&backend_ip(11)] > 3 * count[&backend_ip(13)],
        "{count:?}"
    );
}

#[test]
fn flows_of_a_removed_backend_are_rescheduled() {
    let mut r = Rig::new(&web_only(web3()));
    let flows = establish(&mut r, 300, 9, 0);
    let on_13 = flows.iter().filter(|f| f.2 == backend_ip(13)).count() as u64;
    assert!(on_13 > 50);
    // The last backend is removed (ids of the others are unchanged).
    r.reconfigure(&web_only(web3()[..2].to_vec()));
    for round in 0..2 {
        for &(client, sport, be) in &flows {
            let got = send_data(&mut r, client, sport, 1 + round);
            if be == backend_ip(13) {
                let expect = r.select(WEB, client, sport, TCP).addr.to_be_bytes();
                assert_eq!(got, expect, "rescheduled by the new table");
            } else {
                assert_eq!(got, be, "untouched flows stay");
            }
        }
        // Counted once per flow, not per packet.
        assert_eq!(r.counters.flows.rescheduled.get(), on_13);
    }
    // Backend 2 (.13) ended those flows; the others took them over.
    assert_eq!(r.counters.backends[2].ended_flows.get(), on_13);
    let new0 = r.counters.backends[0].new_flows.get();
    let new1 = r.counters.backends[1].new_flows.get();
    assert_eq!(new0 + new1, 300, "every flow has a live backend");
}

#[test]
fn flows_of_a_dead_backend_are_rescheduled_and_no_backend_drops() {
    // Tables built by hand: backend .12 still listed but not alive.
    let mut r = Rig::new(&web_only(web3()));
    let flows = establish(&mut r, 200, 10, 0);
    let rebuilt = |t: &Tables, f: &dyn Fn(&mut BackendInfo)| -> Tables {
        let mut backends = t.backends.clone();
        for b in backends.iter_mut().flatten() {
            f(b);
        }
        let vips = t
            .vips
            .iter()
            .map(|v| {
                let members: Vec<&BackendInfo> = v
                    .backend_ids
                    .iter()
                    .filter_map(|&id| backends[id as usize].as_ref())
                    .collect();
                Arc::new(VipInfo::build(
                    VipSpec {
                        index: v.index,
                        label: v.label.clone(),
                        addr: v.addr,
                        port: v.port,
                        proto: v.proto,
                        mode: v.mode,
                    },
                    &members,
                    v.maglev.size(),
                ))
            })
            .collect();
        Tables::new(
            t.generation + 1,
            t.ports.clone(),
            vips,
            backends,
            &[(CLIENT_PORT, ip(GATEWAY_IP), GATEWAY_MAC)],
            std::sync::Arc::clone(&t.cache),
        )
    };
    r.tables = rebuilt(&r.tables, &|b| {
        if b.addr == ip(backend_ip(12)) {
            b.alive = false;
            b.accepts_new = false;
        }
    });
    let on_12 = flows.iter().filter(|f| f.2 == backend_ip(12)).count() as u64;
    for &(client, sport, be) in &flows {
        let got = send_data(&mut r, client, sport, 1);
        assert_ne!(got, backend_ip(12));
        if be != backend_ip(12) {
            assert_eq!(got, be);
        }
    }
    assert_eq!(r.counters.flows.rescheduled.get(), on_12);

    // Nobody takes new connections: existing flows keep going (their
    // backends are alive), new ones are dropped with NoBackend.
    r.tables = rebuilt(&r.tables, &|b| b.accepts_new = false);
    let (client, sport, be) = flows.iter().find(|f| f.2 != backend_ip(12)).unwrap();
    assert_eq!(send_data(&mut r, *client, *sport, 2), *be);
    let mut f = Pkt::client([10, 9, 9, 9], 1111).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 2),
        Action::Drop(DropReason::NoBackend)
    );
    assert_eq!(r.drops(CLIENT_PORT, DropReason::NoBackend), 1);
    assert_eq!(r.counters.vips[WEB as usize].drops.get(), 1);
}

/// Adding a backend to one VIP renumbers the backends of every later VIP
/// (ids are positions in the flattened backend list), so established flows
/// of *other* VIPs are silently re-pinned to a different backend.
#[test]
fn adding_a_backend_to_one_vip_keeps_flows_of_other_vips() {
    let mut r = Rig::standard();
    let mut rng = Rng(77);
    let mut flows = Vec::new();
    for _ in 0..100 {
        let client = rng.client();
        let sport = (rng.next() % 60000) as u16 + 1024;
        let mut f = Pkt::client(client, sport).to(VIP, 53).udp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(BACKEND_PORT)
        );
        flows.push((client, sport, check(&f).dst));
    }
    let mut cfg = Cfg::standard();
    cfg.vips[0].backends.push(b(14, Some(8080)));
    r.reconfigure(&cfg);
    let mut moved = Vec::new();
    for &(client, sport, be) in &flows {
        let mut f = Pkt::client(client, sport).to(VIP, 53).udp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 1),
            Action::Forward(BACKEND_PORT)
        );
        let got = check(&f).dst;
        if got != be {
            moved.push((be, got));
        }
    }
    assert_eq!(
        (moved.len(), r.counters.flows.rescheduled.get()),
        (0, 0),
        "(moved, rescheduled) of 100 DNS flows although DNS's backends did not change; \
         first moves (old -> new backend): {:?}",
        &moved[..moved.len().min(3)]
    );
}

/// Same root cause within one VIP: removing a backend that is not the last
/// one shifts the ids of those after it.
#[test]
fn removing_a_middle_backend_reschedules_only_its_flows() {
    let mut r = Rig::new(&web_only(web3()));
    let flows = establish(&mut r, 300, 13, 0);
    let on_12 = flows.iter().filter(|f| f.2 == backend_ip(12)).count() as u64;
    r.reconfigure(&web_only(vec![b(11, Some(8080)), b(13, Some(8080))]));
    let mut wrong = Vec::new();
    for &(client, sport, be) in &flows {
        let got = send_data(&mut r, client, sport, 1);
        let expect = if be == backend_ip(12) {
            r.select(WEB, client, sport, TCP).addr.to_be_bytes()
        } else {
            be
        };
        if got != expect {
            wrong.push((be, expect, got));
        }
    }
    assert_eq!(
        (wrong.len(), r.counters.flows.rescheduled.get()),
        (0, on_12),
        "(misrouted flows, rescheduled) of 300; first (was, expected, got): {:?}",
        &wrong[..wrong.len().min(3)]
    );
}

#[test]
fn flow_events_created_and_closed() {
    let mut r = Rig::standard();
    let key = FlowKey {
        client_ip: ip(FAR_CLIENT),
        vip: WEB,
        client_port: 40000,
        proto: TCP,
    };
    let be = r.select(WEB, FAR_CLIENT, 40000, TCP).id;
    let p = Pkt::client(FAR_CLIENT, 40000);
    let send = |r: &mut Rig, flags: u8, now: u32| {
        let mut f = p.clone().flags(flags).tcp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, now),
            Action::Forward(BACKEND_PORT)
        );
    };
    send(&mut r, SYN, 0);
    let created = FlowEvent {
        kind: FlowEventKind::Created,
        worker: 0,
        key,
        backend: be,
    };
    assert_eq!(r.events(), vec![created]);
    send(&mut r, SYN, 1); // retransmitted SYN
    send(&mut r, ACK, 2);
    send(&mut r, ACK | PSH, 3);
    assert_eq!(r.events(), vec![]);
    send(&mut r, FIN | ACK, 4);
    assert_eq!(
        r.events(),
        vec![FlowEvent {
            kind: FlowEventKind::Closed,
            ..created
        }]
    );
    send(&mut r, ACK, 5);
    send(&mut r, FIN | ACK, 6);
    assert_eq!(r.events(), vec![], "closed once");
    let fc = &r.counters.flows;
    assert_eq!(
        (fc.created.get(), fc.closed.get(), fc.expired.get()),
        (1, 1, 0)
    );
    assert_eq!(fc.events_pushed.get(), 2);
    assert_eq!(r.worker.flows().len(), 1);

    // RST closes too.
    let p2 = Pkt::client(FAR_CLIENT, 40001);
    for (flags, now) in [(SYN, 10), (ACK, 11), (RST | ACK, 12)] {
        let mut f = p2.clone().flags(flags).tcp();
        r.process(&mut f, CLIENT_PORT, now);
    }
    let kinds: Vec<_> = r.events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![FlowEventKind::Created, FlowEventKind::Closed]);

    // An RST for an unknown flow is forwarded but not tracked.
    let mut f = Pkt::client(FAR_CLIENT, 40002).flags(RST).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 20),
        Action::Forward(BACKEND_PORT)
    );
    assert_eq!(
        check(&f).dst,
        r.select(WEB, FAR_CLIENT, 40002, TCP).addr.to_be_bytes()
    );
    assert_eq!(r.events(), vec![]);
    assert_eq!(r.worker.flows().len(), 2);
}

#[test]
fn flows_expire_after_their_state_timeout() {
    let mut r = Rig::standard();
    let t0 = 1_000_000;
    // SYN-only, established, closing TCP flows and a UDP flow.
    let steps: [(u16, &[u8]); 3] = [(1, &[SYN]), (2, &[SYN, ACK]), (3, &[SYN, ACK, FIN | ACK])];
    for (sport, flags) in steps {
        for &fl in flags {
            let mut f = Pkt::client(FAR_CLIENT, sport).flags(fl).tcp();
            r.process(&mut f, CLIENT_PORT, t0);
        }
    }
    let mut f = Pkt::client(FAR_CLIENT, 4).to(VIP, 53).udp();
    r.process(&mut f, CLIENT_PORT, t0);
    r.events();
    assert_eq!(r.worker.flows().len(), 4);

    let expired_ports = |r: &Rig| -> Vec<u16> {
        let ev = r.events();
        assert!(ev.iter().all(|e| e.kind == FlowEventKind::Expired));
        let mut v: Vec<u16> = ev.iter().map(|e| e.key.client_port).collect();
        v.sort_unstable();
        v
    };
    // Nothing before the shortest timeout.
    assert_eq!(r.worker.expire_some(t0 + TIMEOUTS.syn - 1, usize::MAX), 0);
    assert_eq!(r.worker.expire_some(t0 + TIMEOUTS.syn, usize::MAX), 1);
    assert_eq!(expired_ports(&r), vec![1]);
    assert_eq!(
        r.worker.expire_some(t0 + TIMEOUTS.closing - 1, usize::MAX),
        0
    );
    assert_eq!(r.worker.expire_some(t0 + TIMEOUTS.closing, usize::MAX), 1);
    assert_eq!(expired_ports(&r), vec![3]);
    assert_eq!(r.worker.expire_some(t0 + TIMEOUTS.udp, usize::MAX), 1);
    assert_eq!(expired_ports(&r), vec![4]);
    assert_eq!(
        r.worker
            .expire_some(t0 + TIMEOUTS.established - 1, usize::MAX),
        0
    );
    assert_eq!(
        r.worker.expire_some(t0 + TIMEOUTS.established, usize::MAX),
        1
    );
    let ev = r.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].key.client_port, 2);
    assert_eq!(ev[0].backend, r.select(WEB, FAR_CLIENT, 2, TCP).id);
    assert!(r.worker.flows().is_empty());
    assert_eq!(r.counters.flows.expired.get(), 4);
    let ended: u64 = (0..7)
        .map(|i| r.counters.backends[i].ended_flows.get())
        .sum();
    assert_eq!(ended, 4);
}

#[test]
fn expire_some_respects_its_budget() {
    let mut r = Rig::with_capacity(&Cfg::standard(), 1024);
    for sport in 0..100 {
        let mut f = Pkt::client(FAR_CLIENT, sport).tcp();
        r.process(&mut f, CLIENT_PORT, 0);
    }
    // A small budget examines few slots; repeated calls get everything.
    let later = TIMEOUTS.syn;
    let first = r.worker.expire_some(later, 8);
    assert!(first <= 8);
    let mut total = first;
    for _ in 0..1000 {
        total += r.worker.expire_some(later, 8);
    }
    assert_eq!(total, 100);
    assert!(r.worker.flows().is_empty());
}

#[test]
fn the_paced_sweep_covers_the_table_once_per_period_whatever_the_call_rate() {
    use dataplane::pipeline::{SWEEP_CHUNK, SWEEP_PERIOD_MS};
    let mut r = Rig::with_capacity(&Cfg::standard(), 4096);
    for sport in 0..300 {
        let mut f = Pkt::client(FAR_CLIENT, sport).tcp();
        r.process(&mut f, CLIENT_PORT, 0);
    }
    let slots = r.worker.flows().slots();
    let t0 = TIMEOUTS.syn;
    // The pass owed since time 0 is swept one millisecond before the flows
    // expire: nothing goes.
    let mut early = 0;
    for _ in 0..slots {
        early += r.worker.expire_paced(t0 - 1);
    }
    assert_eq!(early, 0);
    // Many calls within the next millisecond (a busy worker) examine only
    // the slots due for that millisecond, not a chunk per call: at most
    // that many of the now expired flows go.
    let per_ms = slots.div_ceil(SWEEP_PERIOD_MS as usize);
    assert!(
        per_ms < 300,
        "the test needs more flows than one ms examines"
    );
    let mut first_ms = 0;
    for _ in 0..10_000 {
        first_ms += r.worker.expire_paced(t0);
    }
    assert!(
        first_ms <= per_ms,
        "{first_ms} flows in one ms, {per_ms} slots due"
    );
    // Over one period, a few calls per millisecond, every flow is reclaimed.
    let mut total = first_ms;
    for ms in 1..=SWEEP_PERIOD_MS + 1 {
        for _ in 0..(slots / SWEEP_CHUNK / SWEEP_PERIOD_MS as usize + 2) {
            total += r.worker.expire_paced(t0 + ms);
        }
    }
    assert_eq!(total, 300);
    assert!(r.worker.flows().is_empty());
}

#[test]
fn a_packet_after_the_timeout_starts_a_new_flow() {
    let mut r = Rig::standard();
    let mut f = Pkt::client(FAR_CLIENT, 40000).tcp();
    r.process(&mut f, CLIENT_PORT, 0);
    r.events();
    // The SYN timed out; the next packet finds the entry expired.
    let mut f = Pkt::client(FAR_CLIENT, 40000).flags(ACK).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, TIMEOUTS.syn),
        Action::Forward(BACKEND_PORT)
    );
    let kinds: Vec<_> = r.events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![FlowEventKind::Expired, FlowEventKind::Created]);
    assert_eq!(r.worker.flows().len(), 1);
    assert_eq!(r.counters.vips[WEB as usize].new_flows.get(), 2);
}

#[test]
fn reused_client_port_after_close_is_a_new_connection() {
    // A flow closes (FIN), the tables change, and the client reuses its
    // port with a bare SYN: the new connection follows the new table while
    // the entry's old backend is reported as ended.
    let mut r = Rig::new(&web_only(web3()));
    let flows = establish(&mut r, 300, 12, 0);
    r.reconfigure(&web_only(vec![
        b(11, Some(8080)),
        b(12, Some(8080)),
        b(13, Some(8080)),
        b(14, Some(8080)),
    ]));
    let (client, sport, old) = *flows
        .iter()
        .find(|f| r.select(WEB, f.0, f.1, TCP).addr.to_be_bytes() != f.2)
        .expect("some flow maps elsewhere in the new table");
    let new = r.select(WEB, client, sport, TCP).clone();
    r.events();
    let mut f = Pkt::client(client, sport).flags(FIN | ACK).tcp();
    r.process(&mut f, CLIENT_PORT, 10);
    assert_eq!(
        check(&f).dst,
        old,
        "FIN of the old connection to its backend"
    );
    let mut f = Pkt::client(client, sport).flags(ACK).tcp();
    r.process(&mut f, CLIENT_PORT, 11);
    assert_eq!(check(&f).dst, old, "last ACK too");
    let mut f = Pkt::client(client, sport).flags(SYN).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 12),
        Action::Forward(BACKEND_PORT)
    );
    assert_eq!(
        check(&f).dst,
        new.addr.to_be_bytes(),
        "new connection, new table"
    );
    let ev = r.events();
    let kinds: Vec<_> = ev.iter().map(|e| (e.kind, e.backend)).collect();
    let old_id = (0..3u32)
        .find(|&i| r.tables.backend(i).unwrap().addr.to_be_bytes() == old)
        .unwrap();
    assert_eq!(
        kinds,
        vec![
            (FlowEventKind::Closed, old_id),
            (FlowEventKind::Expired, old_id),
            (FlowEventKind::Created, new.id),
        ]
    );
    // And it stays there.
    assert_eq!(send_data(&mut r, client, sport, 13), new.addr.to_be_bytes());
    assert_eq!(r.worker.flows().len(), 300);
}

// ===========================================================================
// 7. Flow table full
// ===========================================================================

#[test]
fn full_flow_table_still_forwards_statelessly() {
    let mut r = Rig::with_capacity(&Cfg::standard(), 1024);
    assert_eq!(r.worker.flows().capacity(), 1024);
    let mut rng = Rng(5);
    let mut clients = Vec::new();
    for _ in 0..1024 {
        let (c, s) = (rng.client(), (rng.next() % 60000) as u16 + 1024);
        clients.push((c, s));
        let mut f = Pkt::client(c, s).tcp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(BACKEND_PORT)
        );
    }
    let created = r.counters.flows.created.get();
    assert_eq!(created + r.counters.flows.table_full.get(), 1024);
    assert!(created >= 1000, "only {created} of 1024 flows stored");
    assert_eq!(r.worker.flows().len() as u64, created);
    let full_before = r.counters.flows.table_full.get();
    for _ in 0..100 {
        let (c, s) = (rng.client(), (rng.next() % 60000) as u16 + 1024);
        let expect = r.select(WEB, c, s, TCP).addr.to_be_bytes();
        let mut f = Pkt::client(c, s).tcp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 1),
            Action::Forward(BACKEND_PORT)
        );
        assert_eq!(check(&f).dst, expect, "stateless Maglev choice");
    }
    assert_eq!(r.counters.flows.table_full.get(), full_before + 100);
    assert_eq!(r.counters.flows.created.get(), created);
    assert_eq!(r.worker.flows().len() as u64, created);
    // Stored flows still work.
    let (c, s) = clients[0];
    assert_eq!(
        send_data(&mut r, c, s, 2),
        r.select(WEB, c, s, TCP).addr.to_be_bytes()
    );
    // Once flows expire, room is made again.
    let mut f = Pkt::client([10, 7, 7, 7], 7).tcp();
    r.process(&mut f, CLIENT_PORT, TIMEOUTS.syn + 10);
    assert_eq!(r.counters.flows.created.get(), created + 1);
}

#[test]
fn zero_capacity_flow_table_forwards_everything_statelessly() {
    let mut r = Rig::with_capacity(&Cfg::standard(), 0);
    for sport in 0..50u16 {
        let expect = r.select(WEB, FAR_CLIENT, sport, TCP).addr.to_be_bytes();
        let mut f = Pkt::client(FAR_CLIENT, sport).tcp();
        assert_eq!(
            r.process(&mut f, CLIENT_PORT, 0),
            Action::Forward(BACKEND_PORT)
        );
        assert_eq!(check(&f).dst, expect);
    }
    assert!(r.worker.flows().is_empty());
    assert_eq!(r.counters.flows.table_full.get(), 50);
    assert_eq!(r.counters.flows.created.get(), 0);
    assert_eq!(r.events(), vec![]);
}

/// With the table full, a connection's packets are forwarded statelessly:
/// `table_full` counts each of them (the operator's signal that the table
/// is too small) and VIP/backend `new_flows` count only flows in the table,
/// so they stay equal.
#[test]
fn full_table_counts_stateless_packets_and_no_new_flows() {
    let mut r = Rig::with_capacity(&Cfg::standard(), 1024);
    let mut rng = Rng(6);
    while r.counters.flows.table_full.get() == 0 {
        let mut f = Pkt::client(rng.client(), 1000).tcp();
        r.process(&mut f, CLIENT_PORT, 0);
    }
    let vc = &r.counters.vips[WEB as usize];
    let (full, new) = (r.counters.flows.table_full.get(), vc.new_flows.get());
    let c = rng.client();
    for flags in [SYN, ACK, ACK | PSH, ACK | PSH, FIN | ACK] {
        let mut f = Pkt::client(c, 2000).flags(flags).tcp();
        r.process(&mut f, CLIENT_PORT, 0);
    }
    let vc = &r.counters.vips[WEB as usize];
    assert_eq!(
        (
            r.counters.flows.table_full.get() - full,
            vc.new_flows.get() - new
        ),
        (5, 0),
        "5 stateless packets, no flow created"
    );
    let backend_new: u64 = r.counters.backends.iter().map(|b| b.new_flows.get()).sum();
    assert_eq!(
        vc.new_flows.get(),
        backend_new,
        "VIP and backend new flows agree"
    );
}

// ===========================================================================
// 8. Drops and their reasons
// ===========================================================================

fn valid_tcp() -> Vec<u8> {
    Pkt::client(FAR_CLIENT, 40000)
        .flags(ACK)
        .payload(b"0123456789")
        .tcp()
}

/// Applies `f` to the IPv4 header of `frame` and fixes its checksum.
fn with_ip(mut frame: Vec<u8>, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    f(&mut frame[14..34]);
    fix_ip_checksum(&mut frame, 14);
    frame
}

fn ipv6_frame(next_icmp: bool) -> Vec<u8> {
    let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut out = Vec::new();
    if next_icmp {
        let b = PacketBuilder::ethernet2(PEER_MAC, CLIENT_PORT_MAC)
            .ipv6(src, dst, 64)
            .icmpv6_echo_request(1, 1);
        b.write(&mut out, b"ping6").unwrap();
    } else {
        let b = PacketBuilder::ethernet2(PEER_MAC, CLIENT_PORT_MAC)
            .ipv6(src, dst, 64)
            .udp(1000, 53);
        b.write(&mut out, b"dns6").unwrap();
    }
    out
}

#[test]
fn drops_are_counted_with_their_reason() {
    let tcp = valid_tcp();
    let mut cases: Vec<(&str, Vec<u8>, u16, DropReason)> = vec![
        ("empty frame", vec![], CLIENT_PORT, DropReason::RuntFrame),
        (
            "13 bytes",
            tcp[..13].to_vec(),
            CLIENT_PORT,
            DropReason::RuntFrame,
        ),
        (
            "three VLAN tags",
            add_vlan(&add_vlan(&add_vlan(&tcp, 0x8100, 1), 0x8100, 2), 0x88a8, 3),
            CLIENT_PORT,
            DropReason::BadVlan,
        ),
        (
            "truncated VLAN tag",
            add_vlan(&tcp, 0x8100, 1)[..16].to_vec(),
            CLIENT_PORT,
            DropReason::BadVlan,
        ),
        (
            "unknown ethertype",
            {
                let mut f = tcp.clone();
                f[12..14].copy_from_slice(&[0x88, 0xcc]);
                f
            },
            CLIENT_PORT,
            DropReason::UnknownEthertype,
        ),
        (
            "unicast to a foreign MAC",
            Pkt::client(FAR_CLIENT, 40000)
                .dst_mac([0x02, 0, 0, 0, 0, 0x77])
                .tcp(),
            CLIENT_PORT,
            DropReason::ForeignMac,
        ),
        (
            "unicast to the other port's MAC",
            Pkt::client(FAR_CLIENT, 40000)
                .dst_mac(BACKEND_PORT_MAC)
                .tcp(),
            CLIENT_PORT,
            DropReason::ForeignMac,
        ),
        (
            "IPv4 ethertype, version 6",
            with_ip(tcp.clone(), |h| h[0] = 0x65),
            CLIENT_PORT,
            DropReason::BadIpv4Header,
        ),
        (
            "IHL 4",
            with_ip(tcp.clone(), |h| h[0] = 0x44),
            CLIENT_PORT,
            DropReason::BadIpv4Header,
        ),
        (
            "total length beyond the frame",
            with_ip(tcp.clone(), |h| {
                let t = u16::from_be_bytes([h[2], h[3]]) + 1;
                h[2..4].copy_from_slice(&t.to_be_bytes());
            }),
            CLIENT_PORT,
            DropReason::BadIpv4Header,
        ),
        (
            "total length below the header length",
            with_ip(tcp.clone(), |h| {
                h[2..4].copy_from_slice(&19u16.to_be_bytes())
            }),
            CLIENT_PORT,
            DropReason::BadIpv4Header,
        ),
        (
            "truncated IPv4 header",
            tcp[..30].to_vec(),
            CLIENT_PORT,
            DropReason::BadIpv4Header,
        ),
        (
            "bad IPv4 header checksum",
            {
                let mut f = tcp.clone();
                f[24] ^= 0x01;
                f
            },
            CLIENT_PORT,
            DropReason::BadIpv4Checksum,
        ),
        (
            "first fragment (MF)",
            with_ip(tcp.clone(), |h| h[6] = 0x20),
            CLIENT_PORT,
            DropReason::Ipv4Fragment,
        ),
        (
            "later fragment (offset 185)",
            with_ip(tcp.clone(), |h| {
                h[6..8].copy_from_slice(&185u16.to_be_bytes())
            }),
            CLIENT_PORT,
            DropReason::Ipv4Fragment,
        ),
        (
            "last fragment (offset 1, DF)",
            with_ip(tcp.clone(), |h| {
                h[6..8].copy_from_slice(&0x4001u16.to_be_bytes())
            }),
            CLIENT_PORT,
            DropReason::Ipv4Fragment,
        ),
        (
            "IPv6 UDP",
            ipv6_frame(false),
            CLIENT_PORT,
            DropReason::Ipv6NotForwarded,
        ),
        (
            "ICMPv6",
            ipv6_frame(true),
            CLIENT_PORT,
            DropReason::Ipv6NotForwarded,
        ),
        (
            "truncated IPv6",
            ipv6_frame(false)[..40].to_vec(),
            CLIENT_PORT,
            DropReason::BadIpv6Header,
        ),
        (
            "TCP to the VIP on a port with no service",
            Pkt::client(FAR_CLIENT, 40000).to(VIP, 81).tcp(),
            CLIENT_PORT,
            DropReason::NoService,
        ),
        (
            "UDP to the TCP service's port",
            Pkt::client(FAR_CLIENT, 40000).to(VIP, 80).udp(),
            CLIENT_PORT,
            DropReason::NoService,
        ),
        (
            "TCP to a port address",
            Pkt::client(FAR_CLIENT, 40000).to(CLIENT_PORT_IP, 22).tcp(),
            CLIENT_PORT,
            DropReason::NoService,
        ),
        (
            "GRE to the VIP",
            with_ip(tcp.clone(), |h| h[9] = 47),
            CLIENT_PORT,
            DropReason::NoService,
        ),
        (
            "UDP to a multicast group",
            Pkt::client(FAR_CLIENT, 5353)
                .to([224, 0, 0, 251], 5353)
                .dst_mac([0x01, 0x00, 0x5e, 0, 0, 0xfb])
                .udp(),
            CLIENT_PORT,
            DropReason::Ipv4Multicast,
        ),
        (
            "UDP to the limited broadcast",
            Pkt::client(FAR_CLIENT, 68)
                .to([255, 255, 255, 255], 67)
                .dst_mac(BROADCAST)
                .udp(),
            BACKEND_PORT,
            DropReason::Ipv4Multicast,
        ),
        (
            "TCP to an unknown destination",
            Pkt::client(FAR_CLIENT, 40000).to([192, 0, 2, 1], 80).tcp(),
            CLIENT_PORT,
            DropReason::UnknownDestination,
        ),
        (
            "GRE to an unknown destination",
            with_ip(tcp.clone(), |h| {
                h[9] = 47;
                h[16..20].copy_from_slice(&[192, 0, 2, 1]);
            }),
            CLIENT_PORT,
            DropReason::UnknownDestination,
        ),
        (
            "truncated TCP header",
            with_ip(tcp[..44].to_vec(), |h| {
                h[2..4].copy_from_slice(&30u16.to_be_bytes())
            }),
            CLIENT_PORT,
            DropReason::BadL4Header,
        ),
        (
            "TCP data offset 4",
            {
                let mut f = tcp.clone();
                f[46] = 0x40;
                f
            },
            CLIENT_PORT,
            DropReason::BadL4Header,
        ),
        (
            "TCP data offset beyond the segment",
            {
                let mut f = tcp.clone();
                f[46] = 0xf0;
                f
            },
            CLIENT_PORT,
            DropReason::BadL4Header,
        ),
        (
            "UDP length 7",
            {
                let mut f = Pkt::client(FAR_CLIENT, 1).to(VIP, 53).udp();
                f[38..40].copy_from_slice(&7u16.to_be_bytes());
                f
            },
            CLIENT_PORT,
            DropReason::BadL4Header,
        ),
        (
            "UDP length beyond the IP payload",
            {
                let mut f = Pkt::client(FAR_CLIENT, 1).to(VIP, 53).payload(b"abc").udp();
                f[38..40].copy_from_slice(&12u16.to_be_bytes());
                pad60(f)
            },
            CLIENT_PORT,
            DropReason::BadL4Header,
        ),
        (
            "client traffic on the backend-only port",
            Pkt::client(FAR_CLIENT, 40000)
                .dst_mac(BACKEND_PORT_MAC)
                .tcp(),
            BACKEND_PORT,
            DropReason::WrongPortRole,
        ),
    ];
    // Unknown ethertype to a multicast address (LLDP).
    let mut lldp = tcp.clone();
    lldp[0..6].copy_from_slice(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    cases.push(("LLDP", lldp, BACKEND_PORT, DropReason::UnknownEthertype));

    for (what, mut f, port, reason) in cases {
        let mut r = Rig::standard();
        let len = f.len() as u64;
        let before = f.clone();
        assert_eq!(r.process(&mut f, port, 0), Action::Drop(reason), "{what}");
        assert_eq!(f, before, "{what}: a dropped frame is not modified");
        let pc = &r.counters.ports[port as usize];
        assert_eq!(r.drops(port, reason), 1, "{what}");
        assert_eq!(r.all_drops(port), 1, "{what}: one drop in all");
        assert_eq!(pc.rx_packets.get(), 1, "{what}");
        assert_eq!(pc.rx_bytes.get(), len, "{what}");
        let other = 1 - port;
        assert_eq!(r.counters.ports[other as usize].rx_packets.get(), 0);
        assert_eq!(r.all_drops(other), 0, "{what}");
        match reason {
            DropReason::Ipv6NotForwarded | DropReason::BadIpv6Header => {
                assert_eq!(pc.rx_ipv6.get(), 1, "{what}");
                let icmp6 = u64::from(what == "ICMPv6");
                assert_eq!(pc.rx_icmpv6.get(), icmp6, "{what}");
            }
            DropReason::BadIpv4Header
            | DropReason::BadIpv4Checksum
            | DropReason::Ipv4Fragment
            | DropReason::NoService
            | DropReason::UnknownDestination
            | DropReason::Ipv4Multicast
            | DropReason::BadL4Header
            | DropReason::WrongPortRole => {
                assert_eq!(pc.rx_ipv4.get(), 1, "{what}");
                assert_eq!(pc.rx_ipv6.get(), 0, "{what}");
            }
            _ => {}
        }
        assert!(r.worker.flows().is_empty(), "{what}: no flow state");
    }
}

#[test]
fn dont_fragment_alone_is_not_a_fragment() {
    let mut r = Rig::standard();
    let mut f = with_ip(valid_tcp(), |h| h[6] = 0x40);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(BACKEND_PORT)
    );
    check(&f);
}

#[test]
fn unresolved_backend_drops_until_learned() {
    let mut cfg = Cfg::standard();
    for b in &mut cfg.vips[0].backends {
        b.mac = false;
    }
    let mut r = Rig::new(&cfg);
    let mut f = Pkt::client(FAR_CLIENT, 40000).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Drop(DropReason::BackendUnresolved)
    );
    assert_eq!(r.drops(CLIENT_PORT, DropReason::BackendUnresolved), 1);
    assert_eq!(r.counters.vips[WEB as usize].drops.get(), 1);
    for h in [11, 12, 13] {
        r.learn(BACKEND_PORT, backend_ip(h), [0x02, 0, 0, 0, 0x0b, h]);
    }
    let be = r.select(WEB, FAR_CLIENT, 40000, TCP).clone();
    let mut f = Pkt::client(FAR_CLIENT, 40000).tcp();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 1),
        Action::Forward(BACKEND_PORT)
    );
    let o = check(&f);
    assert_eq!(o.dst, be.addr.to_be_bytes());
    assert_eq!(o.dst_mac, [0x02, 0, 0, 0, 0x0b, be.addr.to_be_bytes()[3]]);
}

#[test]
fn unknown_input_port_is_refused_without_panic() {
    let mut r = Rig::standard();
    for port in [2, 15, 16, 1000, u16::MAX] {
        let mut f = valid_tcp();
        assert_eq!(
            r.process(&mut f, port, 0),
            Action::Drop(DropReason::WrongPortRole)
        );
    }
}

// ===========================================================================
// 9. VLAN
// ===========================================================================

#[test]
fn vlan_tagged_tcp_is_forwarded_with_its_tag() {
    let mut r = Rig::standard();
    // Built by etherparse: 802.1Q, VLAN 100.
    let mut f = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC, CLIENT_PORT_MAC)
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv4(FAR_CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut f, b"tagged")
        .unwrap();
    let before = f.clone();
    let be = r.select(WEB, FAR_CLIENT, 40000, TCP).clone();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(BACKEND_PORT)
    );
    assert_eq!(f[12..18], before[12..18], "tag and inner ethertype kept");
    let o = check(&f);
    assert_eq!(o.vlans.len(), 1);
    assert_eq!(o.vlans[0].1 & 0x0fff, 100);
    assert_eq!((o.dst, o.dport), (be.addr.to_be_bytes(), 8080));
    assert_eq!(o.ttl, 63);
    assert_eq!(o.payload, b"tagged");
    assert_eq!(Some(o.dst_mac), be.next_hop_mac);
    assert_only_changed(&before, &f, &nat_mutable(&before, true, TCP));

    // QinQ: 802.1ad outer, 802.1Q inner.
    let inner = add_vlan(
        &Pkt::client(FAR_CLIENT, 40001).to(VIP, 53).udp(),
        0x8100,
        0x0123,
    );
    let mut f = add_vlan(&inner, 0x88a8, 0x0fff);
    let before = f.clone();
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(BACKEND_PORT)
    );
    assert_eq!(f[12..22], before[12..22], "both tags kept");
    let o = check(&f);
    assert_eq!(o.vlans, vec![(0x88a8, 0x0fff), (0x8100, 0x0123)]);
    assert_only_changed(&before, &f, &nat_mutable(&before, true, UDP));

    // Tagged NAT reply and tagged echo request.
    let mut f = add_vlan(
        &Pkt::reply(be.addr.to_be_bytes(), 8080, FAR_CLIENT, 40000).tcp(),
        0x8100,
        5,
    );
    assert_eq!(
        r.process(&mut f, BACKEND_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    let o = check(&f);
    assert_eq!(o.vlans, vec![(0x8100, 5)]);
    assert_eq!((o.src, o.sport), (VIP, 80));
    let mut f = add_vlan(&icmp_echo(FAR_CLIENT, VIP, 3, 4, b"v"), 0x8100, 9);
    assert_eq!(
        r.process(&mut f, CLIENT_PORT, 0),
        Action::Forward(CLIENT_PORT)
    );
    let o = check(&f);
    assert_eq!(o.vlans, vec![(0x8100, 9)]);
    assert_eq!(o.icmp, Some((0, 0, 3, 4)));
}

// ===========================================================================
// 10. Robustness: nothing panics, every frame is accounted for
// ===========================================================================

/// Runs frames through a fresh standard rig (and a one-armed "both" rig on
/// its single port), checking per frame that the action matches the
/// counters and, at the end, that every frame is accounted for.
fn run_accounted(frames: &[(Vec<u8>, u16)]) -> Result<(), TestCaseError> {
    let mut two = Rig::with_capacity(&Cfg::standard(), 4096);
    let mut one_cfg = Cfg::standard();
    one_cfg.client_role = "both";
    one_cfg.backend_port = false;
    one_cfg.vips = vec![web(vec![b(11, Some(8080)), b(12, Some(8080))])];
    // One-armed: backends on the client subnet.
    for b in &mut one_cfg.vips[0].backends {
        b.host += 100;
    }
    let text = one_cfg.text().replace("198.18.2.1", "198.18.1.1");
    let config =
        firmware_config::parse_with(&text, "one.toml", &firmware_config::Environment { cpus: 2 })
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut one = Rig::with_capacity(&Cfg::standard(), 4096);
    one.app = Appliance::new(config, vec![CLIENT_PORT_MAC]);
    one.tables = one.app.build_tables();

    let mut two_actions = Vec::new();
    for (rig, nports) in [(&mut two, 2u16), (&mut one, 1u16)] {
        let mut forwarded = 0u64;
        let mut expect: HashMap<(u16, DropReason), u64> = HashMap::new();
        let mut n = 0u64;
        for (i, (frame, port)) in frames.iter().enumerate() {
            let port = port % nports;
            let mut f = frame.clone();
            let l4_before = l4_checksum_ok(&f);
            n += 1;
            let action = rig.process(&mut f, port, i as u32);
            if nports == 2 {
                two_actions.push((action, f.clone()));
            }
            match action {
                Action::Forward(out) => {
                    prop_assert!(out < nports);
                    prop_assert_eq!(f.len(), frame.len());
                    forwarded += 1;
                    // A rewrite never breaks a checksum that was right, and
                    // never repairs one that was wrong.
                    if u16::from_be_bytes([f[l3_of(&f) - 2], f[l3_of(&f) - 1]]) == 0x0800 {
                        let l3 = l3_of(&f);
                        let ihl = usize::from(f[l3] & 0x0f) * 4;
                        prop_assert_eq!(ref_fold(ref_sum(&f[l3..l3 + ihl])), 0xffff);
                        if let Some(ok) = l4_before {
                            prop_assert_eq!(l4_checksum_ok(&f), Some(ok));
                        }
                    }
                }
                Action::Drop(reason) => *expect.entry((port, reason)).or_default() += 1,
            }
        }
        let mut rx = 0;
        let mut dropped = 0;
        for port in 0..nports {
            let pc = &rig.counters.ports[port as usize];
            rx += pc.rx_packets.get();
            for &reason in DropReason::ALL.iter() {
                let got = rig.drops(port, reason);
                prop_assert_eq!(
                    got,
                    expect.get(&(port, reason)).copied().unwrap_or(0),
                    "port {} {:?}",
                    port,
                    reason
                );
                dropped += got;
            }
        }
        prop_assert_eq!(rx, n);
        prop_assert_eq!(forwarded + dropped, rx);
    }

    // The same frames in bursts (runs of one port) give the same results.
    let mut burst = Rig::with_capacity(&Cfg::standard(), 4096);
    let mut start = 0;
    while start < frames.len() {
        let port = frames[start].1 % 2;
        let mut end = start;
        while end < frames.len() && frames[end].1 % 2 == port {
            end += 1;
        }
        let mut pkts: Vec<Vec<u8>> = frames[start..end].iter().map(|f| f.0.clone()).collect();
        let mut actions = vec![Action::Drop(DropReason::RuntFrame); pkts.len()];
        // Same clock as the one-by-one run had for these frames: timeouts
        // are far longer than the 16 ms a case spans.
        burst
            .worker
            .process_burst(&mut pkts, port, start as u32, &burst.tables, &mut actions);
        for (k, (a, p)) in actions.into_iter().zip(pkts).enumerate() {
            prop_assert_eq!(&(a, p), &two_actions[start + k], "frame {}", start + k);
        }
        start = end;
    }
    Ok(())
}

/// Frames worth mutating: one of each kind the pipeline handles.
fn seeds() -> Vec<(Vec<u8>, u16)> {
    vec![
        (valid_tcp(), CLIENT_PORT),
        (
            Pkt::client(FAR_CLIENT, 1).to(VIP, 53).payload(b"q").udp(),
            CLIENT_PORT,
        ),
        (
            Pkt::client(FAR_CLIENT, 1).to(VIP_DR, 443).tcp(),
            CLIENT_PORT,
        ),
        (
            Pkt::reply(backend_ip(11), 8080, FAR_CLIENT, 40000)
                .payload(b"r")
                .tcp(),
            BACKEND_PORT,
        ),
        (
            Pkt::reply(backend_ip(21), 5353, FAR_CLIENT, 40000).udp(),
            BACKEND_PORT,
        ),
        (icmp_echo(FAR_CLIENT, VIP, 1, 1, b"ping"), CLIENT_PORT),
        (arp_request(REQUESTER_MAC, REQUESTER_IP, VIP), CLIENT_PORT),
        (add_vlan(&valid_tcp(), 0x8100, 10), CLIENT_PORT),
        (ipv6_frame(true), CLIENT_PORT),
    ]
}

fn arb_frame() -> impl Strategy<Value = (Vec<u8>, u16)> {
    (
        proptest::collection::vec(any::<u8>(), 0..300),
        0u16..2,
        // Optionally make it more plausible: our MAC or broadcast, and a
        // known ethertype.
        prop::option::of(prop::sample::select(vec![
            CLIENT_PORT_MAC,
            BACKEND_PORT_MAC,
            BROADCAST,
        ])),
        prop::option::of(prop::sample::select(vec![
            0x0800u16, 0x0806, 0x86dd, 0x8100, 0x88a8,
        ])),
    )
        .prop_map(|(mut f, port, mac, et)| {
            if let (Some(m), true) = (mac, f.len() >= 6) {
                f[0..6].copy_from_slice(&m);
            }
            if let (Some(e), true) = (et, f.len() >= 14) {
                f[12..14].copy_from_slice(&e.to_be_bytes());
            }
            (f, port)
        })
}

fn mutated_frame() -> impl Strategy<Value = (Vec<u8>, u16)> {
    (
        prop::sample::select(seeds()),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        prop::option::of(0usize..200),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((mut f, port), muts, cut, fix_ip, fix_l4)| {
            for (at, val) in muts {
                let i = at.index(f.len());
                f[i] = val;
            }
            if let Some(c) = cut {
                f.truncate(c.max(1));
            }
            // Keep the headers self-consistent now and then, so that the
            // mutations reach the later stages.
            let l3 = l3_of(&f);
            let ipv4 = l3 >= 2
                && l3 + 20 <= f.len()
                && u16::from_be_bytes([f[l3 - 2], f[l3 - 1]]) == 0x0800
                && f[l3] >> 4 == 4
                && usize::from(f[l3] & 0x0f) * 4 >= 20
                && l3 + usize::from(f[l3] & 0x0f) * 4 <= f.len();
            if ipv4 && fix_ip {
                fix_ip_checksum(&mut f, l3);
                if fix_l4 && l4_checksum_ok(&f).is_some() {
                    fix_l4_checksum(&mut f, l3);
                }
            }
            (f, port)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic_and_are_accounted_for(
        frames in proptest::collection::vec(arb_frame(), 1..16)
    ) {
        run_accounted(&frames)?;
    }

    #[test]
    fn mutated_frames_never_panic_and_are_accounted_for(
        frames in proptest::collection::vec(mutated_frame(), 1..16)
    ) {
        run_accounted(&frames)?;
    }
}

#[test]
fn seed_frames_are_accounted_for() {
    run_accounted(&seeds()).unwrap();
}

// ===========================================================================
// 11. Counters
// ===========================================================================

#[test]
fn vip_backend_and_port_counters_match_the_traffic() {
    let mut r = Rig::standard();
    let mut rng = Rng(11);
    // Per backend id: (packets, bytes, new flows).
    let mut tx: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    let (mut vip_pkts, mut vip_bytes) = (0u64, 0u64);
    let mut flows = Vec::new();
    for _ in 0..30 {
        let client = rng.client();
        let sport = (rng.next() % 60000) as u16 + 1024;
        let be = r.select(WEB, client, sport, TCP).id;
        let e = tx.entry(be).or_default();
        e.2 += 1;
        for (n, flags) in [SYN, ACK, ACK | PSH].into_iter().enumerate() {
            let mut f = Pkt::client(client, sport)
                .flags(flags)
                .payload(&vec![7u8; n * 100])
                .tcp();
            let len = f.len() as u64;
            assert_eq!(
                r.process(&mut f, CLIENT_PORT, 0),
                Action::Forward(BACKEND_PORT)
            );
            vip_pkts += 1;
            vip_bytes += len;
            let e = tx.get_mut(&be).unwrap();
            e.0 += 1;
            e.1 += len;
        }
        flows.push((client, sport, be));
    }
    let vc = &r.counters.vips[WEB as usize];
    assert_eq!(vc.packets.get(), vip_pkts);
    assert_eq!(vc.bytes.get(), vip_bytes);
    assert_eq!(vc.new_flows.get(), 30);
    assert_eq!(vc.drops.get(), 0);
    for id in 0..3u32 {
        let bc = &r.counters.backends[id as usize];
        let (p, b, n) = tx.get(&id).copied().unwrap_or_default();
        assert_eq!(bc.tx_packets.get(), p, "backend {id}");
        assert_eq!(bc.tx_bytes.get(), b, "backend {id}");
        assert_eq!(bc.new_flows.get(), n, "backend {id}");
    }
    assert_eq!(r.counters.flows.created.get(), 30);

    // Replies: backend rx and VIP reply counters.
    let mut rx: HashMap<u32, (u64, u64)> = HashMap::new();
    let (mut rp, mut rb) = (0u64, 0u64);
    for &(client, sport, be) in &flows {
        let addr = r.tables.backend(be).unwrap().addr.to_be_bytes();
        let mut f = Pkt::reply(addr, 8080, client, sport)
            .payload(&[1u8; 333])
            .tcp();
        let len = f.len() as u64;
        assert_eq!(
            r.process(&mut f, BACKEND_PORT, 1),
            Action::Forward(CLIENT_PORT)
        );
        let e = rx.entry(be).or_default();
        e.0 += 1;
        e.1 += len;
        rp += 1;
        rb += len;
    }
    let vc = &r.counters.vips[WEB as usize];
    assert_eq!(vc.reply_packets.get(), rp);
    assert_eq!(vc.reply_bytes.get(), rb);
    assert_eq!(vc.packets.get(), vip_pkts, "replies are not VIP packets");
    for id in 0..3u32 {
        let bc = &r.counters.backends[id as usize];
        let (p, b) = rx.get(&id).copied().unwrap_or_default();
        assert_eq!(bc.rx_packets.get(), p, "backend {id}");
        assert_eq!(bc.rx_bytes.get(), b, "backend {id}");
    }
    // Other VIPs untouched.
    for v in [DNS, DR] {
        let vc = &r.counters.vips[v as usize];
        assert_eq!((vc.packets.get(), vc.reply_packets.get()), (0, 0));
    }
    // Ports.
    let cp = &r.counters.ports[CLIENT_PORT as usize];
    let bp = &r.counters.ports[BACKEND_PORT as usize];
    assert_eq!(cp.rx_packets.get(), vip_pkts);
    assert_eq!(cp.rx_bytes.get(), vip_bytes);
    assert_eq!(cp.rx_ipv4.get(), vip_pkts);
    assert_eq!(bp.rx_packets.get(), rp);
    assert_eq!(bp.rx_bytes.get(), rb);
    // TX is counted by the caller after transmission.
    assert_eq!(cp.tx_packets.get(), 0);
    r.worker.count_tx(CLIENT_PORT, 3, 300);
    r.worker.count_drop(CLIENT_PORT, DropReason::TxQueueFull, 2);
    assert_eq!(cp.tx_packets.get(), 3);
    assert_eq!(cp.tx_bytes.get(), 300);
    assert_eq!(r.drops(CLIENT_PORT, DropReason::TxQueueFull), 2);

    // The appliance's stats reply sums the same counters.
    let stats = r
        .app
        .stats(&r.tables, &[r.counters.clone()], &[], 0, 65536, 1.0);
    assert_eq!(stats.vips[WEB as usize].packets, vip_pkts);
    assert_eq!(stats.vips[WEB as usize].reply_packets, rp);
    assert_eq!(stats.flows.created, 30);
    let total_tx: u64 = stats.backends.iter().map(|b| b.tx_packets).sum();
    assert_eq!(total_tx, vip_pkts);
}

#[test]
fn udp_and_dr_counters() {
    let mut r = Rig::standard();
    for sport in 0..10u16 {
        for _ in 0..2 {
            let mut f = Pkt::client(FAR_CLIENT, sport).to(VIP, 53).udp();
            r.process(&mut f, CLIENT_PORT, 0);
            let mut f = Pkt::client(FAR_CLIENT, sport).to(VIP_DR, 443).tcp();
            r.process(&mut f, CLIENT_PORT, 0);
        }
    }
    for v in [DNS, DR] {
        let vc = &r.counters.vips[v as usize];
        assert_eq!(vc.packets.get(), 20);
        assert_eq!(vc.new_flows.get(), 10);
    }
    let dns_tx: u64 = (3..5)
        .map(|i| r.counters.backends[i].tx_packets.get())
        .sum();
    let dr_tx: u64 = (5..7)
        .map(|i| r.counters.backends[i].tx_packets.get())
        .sum();
    assert_eq!((dns_tx, dr_tx), (20, 20));
    let web_tx: u64 = (0..3)
        .map(|i| r.counters.backends[i].tx_packets.get())
        .sum();
    assert_eq!(web_tx, 0);
}

#[test]
fn process_burst_matches_process() {
    let frames: Vec<(Vec<u8>, u16)> = seeds()
        .into_iter()
        .chain((0..20).map(|i| (Pkt::client(FAR_CLIENT, 100 + i).tcp(), CLIENT_PORT)))
        .filter(|(_, p)| *p == CLIENT_PORT)
        .collect();
    let mut a = Rig::standard();
    let mut b = Rig::standard();
    let mut one_by_one: Vec<Vec<u8>> = frames.iter().map(|f| f.0.clone()).collect();
    let actions_a: Vec<Action> = one_by_one
        .iter_mut()
        .map(|f| a.process(f, CLIENT_PORT, 5))
        .collect();
    let mut burst: Vec<Vec<u8>> = frames.iter().map(|f| f.0.clone()).collect();
    let mut actions_b = vec![Action::Drop(DropReason::RuntFrame); burst.len()];
    b.worker
        .process_burst(&mut burst, CLIENT_PORT, 5, &b.tables, &mut actions_b);
    assert_eq!(actions_a, actions_b);
    assert_eq!(one_by_one, burst);
    assert_eq!(
        a.counters.ports[0].rx_packets.get(),
        b.counters.ports[0].rx_packets.get()
    );
    assert_eq!(a.events(), b.events());
}

#[test]
fn a_half_full_event_ring_wakes_the_management_thread() {
    let mut r = Rig::standard();
    let half = r.events.capacity() / 2;
    // The management thread: sleeps until woken, then notes how full the
    // ring was (park may also return spuriously; only the count matters).
    let events = r.events.clone();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<usize>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let manager = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::park();
            let _ = seen_tx.send(events.len());
        }
    });
    r.worker.set_waker(manager.thread().clone());
    // New flows up to one short of half the ring.
    let mut sent = 0;
    for i in 0..half - 1 {
        let src = [198, 19, (i >> 8) as u8, i as u8];
        let mut f = Pkt::client(src, 40000 + (i >> 16) as u16).tcp();
        r.process(&mut f, CLIENT_PORT, 0);
        sent += 1;
    }
    assert_eq!(r.events.len(), sent);
    // The flow that fills it to half wakes the manager.
    let mut f = Pkt::client(FAR_CLIENT, 40000).tcp();
    r.process(&mut f, CLIENT_PORT, 0);
    assert_eq!(r.events.len(), half);
    let woke_at_half = (0..50).any(|_| {
        seen_rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_ok_and(|len| len >= half)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    manager.thread().unpark();
    manager.join().unwrap();
    assert!(
        woke_at_half,
        "the push that made the ring half full woke the manager"
    );
}
