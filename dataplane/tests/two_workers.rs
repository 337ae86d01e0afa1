//! The NAT reply path needs no per-worker state: with RSS, a backend's
//! reply reaches whichever worker the NIC picks, usually not the one whose
//! flow table holds the connection. Here worker B, whose flow table is
//! empty, translates the replies of connections that worker A dispatched.

use dataplane::appliance::Appliance;
use dataplane::counters::WorkerCounters;
use dataplane::events::{EventRing, HintRing};
use dataplane::pipeline::{timeouts_ms, Action, Worker};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use std::sync::Arc;

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0xfe];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

const CONFIG: &str = r#"
[eal]
main_core = 0
worker_cores = [1]
hugepages = false
[[port]]
name = "client"
vdev = "net_null0"
role = "client"
address = "198.18.1.254/24"
gateway = "198.18.1.1"
gateway_mac = "02:00:00:00:01:01"
[[port]]
name = "backend"
vdev = "net_null1"
role = "backend"
address = "198.18.2.254/24"
[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
mode = "nat"
[[vip.backend]]
address = "198.18.2.11"
port = 8080
mac = "02:00:00:00:02:11"
[[vip.backend]]
address = "198.18.2.12"
port = 8080
mac = "02:00:00:00:02:12"
"#;

fn worker(id: u16) -> Worker {
    Worker::new(
        id,
        4096,
        timeouts_ms(5, 300, 10, 30),
        Arc::new(WorkerCounters::default()),
        Arc::new(EventRing::new(1024)),
        Arc::new(HintRing::new(1024)),
    )
}

#[test]
fn replies_are_translated_by_a_worker_that_never_saw_the_flow() {
    let cfg =
        firmware_config::parse_with(CONFIG, "t.toml", &firmware_config::Environment { cpus: 2 })
            .unwrap();
    let mut app = Appliance::new(cfg, vec![CLIENT_MAC, BACKEND_MAC]);
    let tables = app.build_tables();
    let (mut a, mut b) = (worker(0), worker(1));
    for i in 0..50u16 {
        let client = [198, 19, 0, 1 + i as u8];
        let sport = 30000 + i;
        // Worker A dispatches the SYN.
        let mut syn = Vec::new();
        PacketBuilder::ethernet2(GW_MAC, CLIENT_MAC)
            .ipv4(client, [198, 18, 100, 1], 64)
            .tcp(sport, 80, 1, 1000)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        assert_eq!(a.process(&mut syn, 0, 1, &tables), Action::Forward(1));
        let s = SlicedPacket::from_ethernet(&syn).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        let backend = ip.header().destination();
        // Worker B gets the SYN-ACK.
        let mut reply = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 2, backend[3]], BACKEND_MAC)
            .ipv4(backend, client, 64)
            .tcp(8080, sport, 9, 1000)
            .syn()
            .ack(2)
            .write(&mut reply, b"")
            .unwrap();
        assert_eq!(
            b.process(&mut reply, 1, 1, &tables),
            Action::Forward(0),
            "flow {i}"
        );
        let s = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(
            ip.header().source(),
            [198, 18, 100, 1],
            "the VIP is the source"
        );
        assert_eq!(ip.header().destination(), client);
        let Some(TransportSlice::Tcp(t)) = &s.transport else {
            panic!()
        };
        assert_eq!((t.source_port(), t.destination_port()), (80, sport));
        let h = ip.header().to_header();
        assert_eq!(
            t.checksum(),
            t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap()
        );
        assert_eq!(&reply[0..6], &GW_MAC);
    }
    assert_eq!(a.flows().len(), 50);
    assert_eq!(b.flows().len(), 0, "worker B kept no state");
}

/// A client's ARP seen by worker A makes its MAC usable by worker B at
/// once, before the management thread publishes new tables: the first
/// reply to a brand-new on-link client is not lost.
#[test]
fn a_neighbour_learned_by_one_worker_serves_another_before_new_tables() {
    let cfg =
        firmware_config::parse_with(CONFIG, "t.toml", &firmware_config::Environment { cpus: 2 })
            .unwrap();
    let mut app = Appliance::new(cfg, vec![CLIENT_MAC, BACKEND_MAC]);
    let tables = app.build_tables();
    let (mut a, mut b) = (worker(0), worker(1));
    let client = [198, 18, 1, 7];
    let client_mac = [2, 0, 0, 0, 1, 7];
    let reply = || {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 2, 0x11], BACKEND_MAC)
            .ipv4([198, 18, 2, 11], client, 64)
            .tcp(8080, 40000, 9, 1000)
            .syn()
            .ack(2)
            .write(&mut f, b"")
            .unwrap();
        f
    };
    let mut before = reply();
    assert_eq!(
        b.process(&mut before, 1, 1, &tables),
        Action::Drop(dataplane::counters::DropReason::ClientUnresolved)
    );
    // The client ARPs for the dispatcher's address; worker A answers.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&client_mac);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&client_mac);
    arp.extend_from_slice(&client);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[198, 18, 1, 254]);
    arp.resize(60, 0);
    assert_eq!(a.process(&mut arp, 0, 1, &tables), Action::Forward(0));
    // Same snapshot: nothing was rebuilt.
    let mut after = reply();
    assert_eq!(b.process(&mut after, 1, 2, &tables), Action::Forward(0));
    assert_eq!(&after[0..6], &client_mac, "sent to the client's MAC");
}

/// Frames dropped before the pipeline (multi-segment mbufs) still count as
/// received, so received = forwarded + dropped holds per port.
#[test]
fn frames_dropped_before_the_pipeline_are_counted_as_received() {
    let w = worker(0);
    w.count_rx_dropped(1, dataplane::counters::DropReason::MultiSegment, 2, 18_000);
    let pc = &w.counters().ports[1];
    assert_eq!((pc.rx_packets.get(), pc.rx_bytes.get()), (2, 18_000));
    let reason = dataplane::counters::DropReason::MultiSegment as usize;
    assert_eq!(pc.drops[reason].get(), 2);
    // Out-of-range ports are ignored, not a panic.
    w.count_rx_dropped(999, dataplane::counters::DropReason::MultiSegment, 1, 1);
    w.count_drop(999, dataplane::counters::DropReason::TxQueueFull, 1);
}
