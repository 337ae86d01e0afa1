//! Golden tests: the real `sluiced` on DPDK's pcap driver. Crafted input
//! captures go in on the client and backend ports; the output captures are
//! checked field by field (MACs, addresses, ports, TTL, checksums, the
//! chosen backend) and the counters are checked over the control socket.

use dataplane::appliance::Appliance;
use dataplane::flow::FlowKey;
use etherparse::{IpNumber, Ipv4Header, PacketBuilder, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use sluice_tests::*;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

const CLIENT_PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0xfe];
const BACKEND_PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0xfe];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const VIP: [u8; 4] = [198, 18, 100, 1];
const DR_VIP: [u8; 4] = [198, 18, 100, 2];
const GATEWAY: [u8; 4] = [198, 18, 1, 1];

fn backend_mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, last]
}

fn config(dir: &Path, prefix: &str) -> String {
    let d = dir.display();
    let head = eal_and_control(prefix, &dir.join("sluiced.sock"));
    format!(
        r#"{head}
[flows]
capacity_per_worker = 65536

[[port]]
name = "client"
vdev = "net_pcap0,rx_pcap={d}/in_client.pcap,tx_pcap={d}/out_client.pcap"
role = "client"
address = "198.18.1.254/24"
mac = "02:00:00:00:01:fe"
gateway = "198.18.1.1"
gateway_mac = "02:00:00:00:01:01"

[[port]]
name = "backend"
vdev = "net_pcap1,rx_pcap={d}/in_backend.pcap,tx_pcap={d}/out_backend.pcap"
role = "backend"
address = "198.18.2.254/24"
mac = "02:00:00:00:02:fe"

[[vip]]
name = "web"
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
[[vip.backend]]
address = "198.18.2.13"
port = 8080
mac = "02:00:00:00:02:13"

[[vip]]
name = "dns"
address = "198.18.100.1"
port = 53
protocol = "udp"
mode = "nat"
[[vip.backend]]
address = "198.18.2.11"
port = 5353
mac = "02:00:00:00:02:11"
[[vip.backend]]
address = "198.18.2.12"
port = 5353
mac = "02:00:00:00:02:12"

[[vip]]
name = "direct"
address = "198.18.100.2"
port = 80
protocol = "tcp"
mode = "dr"
[[vip.backend]]
address = "198.18.2.21"
mac = "02:00:00:00:02:21"
[[vip.backend]]
address = "198.18.2.22"
mac = "02:00:00:00:02:22"
"#
    )
}

/// What must happen to an input frame.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// NAT to the backend Maglev picks for (vip index, client, port, proto).
    Nat {
        vip: u32,
    },
    /// Direct routing: only MACs change.
    Dr {
        vip: u32,
    },
    /// Answered back out the client port.
    ArpReply,
    EchoReply,
    /// A backend's reply translated back to the VIP.
    NatReply {
        vip_port: u16,
    },
    Drop(&'static str),
}

struct Input {
    frame: Vec<u8>,
    expect: Expect,
}

fn tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    ttl: u8,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GATEWAY_MAC, CLIENT_PORT_MAC).ipv4(src, dst, ttl);
    let mut b = b.tcp(sport, dport, 1000, 64240);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    if flags.contains('P') {
        b = b.psh();
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn arp_request(sender_mac: [u8; 6], sender: [u8; 4], target: [u8; 4], op: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

fn ipv4_fix_checksum(frame: &mut [u8], l3: usize) {
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    let ck = dataplane::checksum::internet_checksum(&frame[l3..l3 + ihl]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
}

fn client_inputs() -> Vec<Input> {
    let mut v = Vec::new();
    let mut push = |frame: Vec<u8>, expect: Expect| v.push(Input { frame, expect });
    // ARP for the VIP from the gateway, ping to the VIP.
    push(arp_request(GATEWAY_MAC, GATEWAY, VIP, 1), Expect::ArpReply);
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(GATEWAY_MAC, CLIENT_PORT_MAC)
        .ipv4([198, 19, 0, 5], VIP, 61)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, b"sluice-ping-payload")
        .unwrap();
    push(ping, Expect::EchoReply);
    // A whole TCP connection: handshake, data, FIN.
    let c = [198, 19, 0, 10];
    for (flags, data) in [
        ("S", &b""[..]),
        ("A", b""),
        ("AP", b"GET / HTTP/1.0\r\n\r\n"),
        ("AF", b""),
    ] {
        push(
            tcp(c, 40000, VIP, 80, 64, flags, data),
            Expect::Nat { vip: 0 },
        );
    }
    // Many new connections: each to its Maglev backend.
    for i in 0..60u16 {
        let src = [198, 19, 1 + (i % 7) as u8, (i * 13 % 250) as u8 + 1];
        push(
            tcp(src, 20000 + i * 17, VIP, 80, 64, "S", b""),
            Expect::Nat { vip: 0 },
        );
    }
    // UDP to the NAT DNS service.
    push(
        udp(
            GATEWAY_MAC,
            CLIENT_PORT_MAC,
            [198, 19, 0, 20],
            5000,
            VIP,
            53,
            b"dns-query",
        ),
        Expect::Nat { vip: 1 },
    );
    // VLAN-tagged SYN: forwarded with its tag.
    let mut tagged = Vec::new();
    PacketBuilder::ethernet2(GATEWAY_MAC, CLIENT_PORT_MAC)
        .single_vlan(100.try_into().unwrap())
        .ipv4([198, 19, 0, 30], VIP, 64)
        .tcp(41000, 80, 5, 1000)
        .syn()
        .write(&mut tagged, &[])
        .unwrap();
    push(tagged, Expect::Nat { vip: 0 });
    // Direct routing.
    for i in 0..6u16 {
        push(
            tcp(
                [198, 19, 2, i as u8 + 1],
                30000 + i,
                DR_VIP,
                80,
                64,
                "S",
                b"x",
            ),
            Expect::Dr { vip: 2 },
        );
    }
    // Traffic for no VIP, and for a VIP address on a port without service.
    push(
        tcp([198, 19, 0, 40], 40001, [198, 18, 100, 9], 80, 64, "S", b""),
        Expect::Drop("unknown_destination"),
    );
    push(
        tcp([198, 19, 0, 41], 40002, VIP, 8080, 64, "S", b""),
        Expect::Drop("no_service"),
    );
    // TTL would expire when forwarding (NAT).
    push(
        tcp([198, 19, 0, 42], 40003, VIP, 80, 1, "S", b""),
        Expect::Drop("ttl_expired"),
    );
    // Truncated and malformed frames.
    push(vec![0x02; 10], Expect::Drop("runt_frame"));
    let good = tcp([198, 19, 0, 43], 40004, VIP, 80, 64, "S", b"");
    let mut bad_len = good.clone();
    bad_len[16..18].copy_from_slice(&2000u16.to_be_bytes());
    ipv4_fix_checksum(&mut bad_len, 14);
    push(bad_len, Expect::Drop("bad_ipv4_header"));
    let mut bad_ck = good.clone();
    bad_ck[24] ^= 0x55;
    push(bad_ck, Expect::Drop("bad_ipv4_checksum"));
    let mut bad_ver = good.clone();
    bad_ver[14] = 0x65;
    push(bad_ver, Expect::Drop("bad_ipv4_header"));
    let mut cut_tcp = good.clone();
    cut_tcp.truncate(14 + 20 + 10);
    cut_tcp[16..18].copy_from_slice(&30u16.to_be_bytes());
    ipv4_fix_checksum(&mut cut_tcp, 14);
    push(cut_tcp, Expect::Drop("bad_l4_header"));
    // Fragments: first (MF) and a later one (offset > 0).
    let mut first = tcp([198, 19, 0, 44], 40005, VIP, 80, 64, "AP", &[7u8; 64]);
    first[20] |= 0x20;
    ipv4_fix_checksum(&mut first, 14);
    push(first, Expect::Drop("ipv4_fragment"));
    let mut later = tcp([198, 19, 0, 44], 40005, VIP, 80, 64, "AP", &[7u8; 64]);
    later[20..22].copy_from_slice(&(185u16).to_be_bytes());
    ipv4_fix_checksum(&mut later, 14);
    push(later, Expect::Drop("ipv4_fragment"));
    // IPv6 (ICMPv6 echo): parsed and counted, not forwarded yet.
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(GATEWAY_MAC, CLIENT_PORT_MAC)
        .ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .icmpv6_echo_request(1, 1)
        .write(&mut v6, b"six")
        .unwrap();
    push(v6, Expect::Drop("ipv6_not_forwarded"));
    // Unknown ethertype, and a unicast frame for another MAC.
    let mut other = good.clone();
    other[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    push(other, Expect::Drop("unknown_ethertype"));
    let mut foreign = good.clone();
    foreign[0..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
    push(foreign, Expect::Drop("foreign_mac"));
    // ARP for somebody else.
    push(
        arp_request(GATEWAY_MAC, GATEWAY, [198, 18, 1, 77], 1),
        Expect::Drop("arp_not_for_us"),
    );
    v
}

fn backend_inputs() -> Vec<Input> {
    let mut v = Vec::new();
    // The SYN-ACK of the connection above, from whichever backend it is
    // sent by: every NAT backend's reply is translated.
    for last in [11u8, 12, 13] {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(backend_mac(last), BACKEND_PORT_MAC)
            .ipv4([198, 18, 2, last], [198, 19, 0, 10], 64)
            .tcp(8080, 40000, 777, 65000)
            .syn()
            .ack(1001)
            .write(&mut f, b"")
            .unwrap();
        v.push(Input {
            frame: f,
            expect: Expect::NatReply { vip_port: 80 },
        });
    }
    v.push(Input {
        frame: udp(
            backend_mac(12),
            BACKEND_PORT_MAC,
            [198, 18, 2, 12],
            5353,
            [198, 19, 0, 20],
            5000,
            b"dns-answer",
        ),
        expect: Expect::NatReply { vip_port: 53 },
    });
    // A reply from an address that is no NAT backend.
    v.push(Input {
        frame: udp(
            backend_mac(99),
            BACKEND_PORT_MAC,
            [198, 18, 2, 99],
            5353,
            [198, 19, 0, 20],
            5000,
            b"stray",
        ),
        expect: Expect::Drop("unknown_destination"),
    });
    // ARP reply from a backend: learned and consumed.
    v.push(Input {
        frame: arp_request(backend_mac(11), [198, 18, 2, 11], [198, 18, 2, 254], 2),
        expect: Expect::Drop("arp_reply_consumed"),
    });
    v
}

fn write_pcap(path: &Path, inputs: &[Input]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(f).unwrap();
    for (i, inp) in inputs.iter().enumerate() {
        let ts = Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(ts, inp.frame.len() as u32, &inp.frame))
            .unwrap();
    }
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = PcapReader::new(f).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// IPv4 and L4 checksums of a frame, recomputed independently (etherparse).
fn assert_checksums_valid(frame: &[u8], what: &str) {
    let s = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("{what}: unparsable output: {e:?}"));
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        panic!("{what}: not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "{what}: IPv4 header checksum"
    );
    match &s.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "{what}: TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                assert_eq!(u.checksum(), want, "{what}: UDP checksum");
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let want = i.header().icmp_type.calc_checksum(i.payload());
            assert_eq!(i.checksum(), want, "{what}: ICMP checksum");
        }
        other => panic!("{what}: unexpected transport {other:?}"),
    }
}

struct L34 {
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpNumber,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
    vlan: Option<u16>,
}

fn l34(frame: &[u8]) -> L34 {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let vlan = match &s.vlan {
        Some(etherparse::VlanSlice::SingleVlan(v)) => Some(v.vlan_identifier().value()),
        _ => None,
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    let h: Ipv4Header = ip.header().to_header();
    let (sport, dport, payload) = match &s.transport {
        Some(TransportSlice::Tcp(t)) => {
            (t.source_port(), t.destination_port(), t.payload().to_vec())
        }
        Some(TransportSlice::Udp(u)) => {
            (u.source_port(), u.destination_port(), u.payload().to_vec())
        }
        _ => (0, 0, Vec::new()),
    };
    L34 {
        ttl: h.time_to_live,
        src: Ipv4Addr::from(h.source),
        dst: Ipv4Addr::from(h.destination),
        proto: h.protocol,
        sport,
        dport,
        payload,
        vlan,
    }
}

#[test]
fn golden_pcap_nat_dr_arp_icmp_and_drops() {
    let Some(_one_dpdk) = system_test() else {
        return;
    };
    let dir = Scratch::new("golden");
    let prefix = format!("slg{}", std::process::id());
    let cfg_text = config(&dir.0, &prefix);
    std::fs::write(dir.path("sluice.toml"), &cfg_text).unwrap();
    let client_in = client_inputs();
    let backend_in = backend_inputs();
    write_pcap(&dir.path("in_client.pcap"), &client_in);
    write_pcap(&dir.path("in_backend.pcap"), &backend_in);

    // The expected backend of every flow comes from the same pure code the
    // daemon runs, built from the same configuration.
    let cfg = firmware_config::parse_with(
        &cfg_text,
        "sluice.toml",
        &firmware_config::Environment { cpus: 2 },
    )
    .expect("test config is valid");
    let mut app = Appliance::new(cfg, vec![CLIENT_PORT_MAC, BACKEND_PORT_MAC]);
    let tables = app.build_tables();

    let mut sluiced = Sluiced::start(
        &dir.path("sluice.toml"),
        &dir.path("sluiced.sock"),
        &dir.path("sluiced.log"),
        None,
    )
    .expect("sluiced starts");
    let (nc, nb) = (client_in.len() as u64, backend_in.len() as u64);
    let mut stats = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(20), || {
        stats = sluiced.stats().unwrap_or_default();
        counter(&stats, "/ports/0/rx_packets") == nc && counter(&stats, "/ports/1/rx_packets") == nb
    });
    assert!(
        done,
        "sluiced did not consume the captures: {stats:#}\n{}",
        sluiced.log_text()
    );
    let vips = ctl(&sluiced.socket, &["vip", "list", "--json"]).unwrap();
    let status = ctl(&sluiced.socket, &["status", "--json"]).unwrap();
    assert_eq!(
        sluiced.stop().unwrap(),
        0,
        "clean exit on SIGTERM:\n{}",
        sluiced.log_text()
    );
    assert!(
        !dir.path("sluiced.sock").exists(),
        "control socket removed at exit"
    );

    // ---- counters over the control socket
    assert_eq!(status["ports"][0]["mac"], "02:00:00:00:01:fe");
    assert_eq!(vips["vips"].as_array().unwrap().len(), 3);
    for p in 0..2 {
        assert_eq!(
            counter(&stats, &format!("/ports/{p}/nic/rx_nombuf")),
            0,
            "no mbuf shortage"
        );
    }
    let mut want_drops: [BTreeMap<String, u64>; 2] = Default::default();
    for (port, inputs) in [(0, &client_in), (1, &backend_in)] {
        for i in inputs.iter() {
            if let Expect::Drop(r) = i.expect {
                *want_drops[port].entry(r.to_string()).or_default() += 1;
            }
        }
    }
    for (port, want) in want_drops.iter().enumerate() {
        let got: BTreeMap<String, u64> = port_drops(&stats, port).into_iter().collect();
        assert_eq!(&got, want, "drops by reason on port {port}");
    }
    assert_eq!(counter(&stats, "/ports/0/rx_ipv6"), 1);
    assert_eq!(counter(&stats, "/ports/0/rx_icmpv6"), 1);
    assert_eq!(counter(&stats, "/ports/0/arp_replies_sent"), 1);
    assert_eq!(counter(&stats, "/ports/0/icmp_echo_replies_sent"), 1);

    // ---- backend side: every forwarded frame, in order
    let out_backend = read_pcap(&dir.path("out_backend.pcap"));
    let to_backend: Vec<&Input> = client_in
        .iter()
        .filter(|i| matches!(i.expect, Expect::Nat { .. } | Expect::Dr { .. }))
        .collect();
    assert_eq!(
        out_backend.len(),
        to_backend.len(),
        "frames forwarded to backends"
    );
    let mut per_backend: HashMap<u32, u64> = HashMap::new();
    let mut flow_backend: HashMap<(Ipv4Addr, u16), Ipv4Addr> = HashMap::new();
    for (k, (inp, out)) in to_backend.iter().zip(&out_backend).enumerate() {
        let what = format!("backend frame {k}");
        let a = l34(&inp.frame);
        let b = l34(out);
        let proto = u8::from(a.proto);
        let vip = match inp.expect {
            Expect::Nat { vip } | Expect::Dr { vip } => vip,
            _ => unreachable!(),
        };
        let key = FlowKey {
            client_ip: u32::from(a.src),
            vip,
            client_port: a.sport,
            proto,
        };
        let id = tables.vips[vip as usize]
            .select(key.hash())
            .expect("a backend");
        let be = tables.backend(id).unwrap();
        *per_backend.entry(id).or_default() += 1;
        assert_eq!(
            &out[0..6],
            &be.next_hop_mac.unwrap(),
            "{what}: dst MAC = chosen backend"
        );
        assert_eq!(
            &out[6..12],
            &BACKEND_PORT_MAC,
            "{what}: src MAC = backend port"
        );
        assert_eq!(b.src, a.src, "{what}: client address kept");
        assert_eq!(b.sport, a.sport, "{what}: client port kept");
        assert_eq!(b.payload, a.payload, "{what}: payload untouched");
        assert_eq!(b.vlan, a.vlan, "{what}: VLAN tag kept");
        match inp.expect {
            Expect::Nat { .. } => {
                assert_eq!(b.dst, Ipv4Addr::from(be.addr), "{what}: NAT dst address");
                assert_eq!(b.dport, be.port, "{what}: NAT dst port");
                assert_eq!(b.ttl, a.ttl - 1, "{what}: TTL decremented");
            }
            _ => {
                assert_eq!(
                    &out[12..],
                    &inp.frame[12..],
                    "{what}: DR leaves IP and L4 bytes alone"
                );
            }
        }
        assert_checksums_valid(out, &what);
        let pinned = flow_backend.entry((a.src, a.sport)).or_insert(b.dst);
        assert_eq!(*pinned, b.dst, "{what}: a flow stays on its backend");
    }
    // Every NAT backend of "web" got some of the 60+ connections.
    for id in &tables.vips[0].backend_ids {
        assert!(
            per_backend.get(id).copied().unwrap_or(0) > 5,
            "backend {id} got {:?}",
            per_backend.get(id)
        );
    }
    for b in stats["backends"].as_array().unwrap() {
        let id = b["id"].as_u64().unwrap() as u32;
        assert_eq!(
            b["tx_packets"].as_u64().unwrap(),
            per_backend.get(&id).copied().unwrap_or(0),
            "backend {id} tx_packets counter agrees with the capture"
        );
    }
    assert_eq!(
        counter(&stats, "/vips/0/new_flows"),
        1 + 60 + 1,
        "web: connection + 60 SYNs + tagged"
    );
    assert_eq!(counter(&stats, "/vips/1/new_flows"), 1);
    assert_eq!(counter(&stats, "/vips/2/new_flows"), 6);
    assert_eq!(
        counter(&stats, "/flows/closed"),
        1,
        "the FIN closed one flow"
    );

    // ---- client side: ARP reply, echo reply, NAT replies (any order)
    let out_client = read_pcap(&dir.path("out_client.pcap"));
    let want_client = client_in
        .iter()
        .chain(&backend_in)
        .filter(|i| {
            matches!(
                i.expect,
                Expect::ArpReply | Expect::EchoReply | Expect::NatReply { .. }
            )
        })
        .count();
    assert_eq!(out_client.len(), want_client, "frames sent toward clients");
    let (mut arp, mut echo, mut nat) = (0, 0, 0);
    for (k, out) in out_client.iter().enumerate() {
        let what = format!("client frame {k}");
        assert_eq!(
            &out[6..12],
            &CLIENT_PORT_MAC,
            "{what}: src MAC = client port"
        );
        assert_eq!(&out[0..6], &GATEWAY_MAC, "{what}: to the gateway");
        if out[12..14] == [0x08, 0x06] {
            arp += 1;
            assert_eq!(&out[20..22], &[0, 2], "{what}: ARP reply");
            assert_eq!(&out[22..28], &CLIENT_PORT_MAC, "{what}: sender MAC");
            assert_eq!(&out[28..32], &VIP, "{what}: sender IP = VIP");
            assert_eq!(&out[32..38], &GATEWAY_MAC, "{what}: target MAC");
            assert_eq!(&out[38..42], &GATEWAY, "{what}: target IP");
            continue;
        }
        assert_checksums_valid(out, &what);
        let p = l34(out);
        assert_eq!(p.src, Ipv4Addr::from(VIP), "{what}: the VIP is the source");
        if p.proto == IpNumber::ICMP {
            echo += 1;
            assert_eq!(p.dst, Ipv4Addr::new(198, 19, 0, 5));
            assert_eq!(out[34], 0, "{what}: echo reply type");
            assert!(
                out.ends_with(b"sluice-ping-payload"),
                "{what}: payload echoed"
            );
        } else {
            nat += 1;
            assert!(
                p.sport == 80 || p.sport == 53,
                "{what}: source port = VIP port"
            );
            assert_eq!(p.ttl, 63, "{what}: TTL decremented");
        }
    }
    assert_eq!((arp, echo, nat), (1, 1, 4));
    let reply_pkts: u64 = stats["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["rx_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(reply_pkts, 4, "NAT replies counted per backend");
}
