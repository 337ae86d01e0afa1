//! Test frames shared by the `parser` and `checksum` benchmarks (not a
//! benchmark itself: cargo only picks up `benches/*.rs` and
//! `benches/*/main.rs`). Frames are built with `dataplane::wire`'s own
//! constructors and carry correct IPv4 and TCP/UDP checksums.

// Each benchmark uses only part of this module.
#![allow(dead_code)]

use dataplane::wire::{
    ethernet, EthernetFrame, Ipv4Packet, TcpSegment, UdpDatagram, ETHERTYPE_IPV4, IPPROTO_TCP,
    IPPROTO_UDP,
};
use std::net::Ipv4Addr;

/// Offset of the IPv4 header in the untagged frames built here.
pub const L3: usize = ethernet::HEADER_LEN;
/// Offset of the L4 header (IPv4 without options).
pub const L4: usize = L3 + 20;

/// The VIP every frame is addressed to.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The VIP port every frame is addressed to.
pub const VIP_PORT: u16 = 80;

/// Client address of frame `i`.
pub fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff))
}

/// A `len`-byte untagged Ethernet/IPv4 frame from client `i` to the VIP,
/// carrying a TCP ACK (`proto` = 6) or a UDP datagram (`proto` = 17) whose
/// payload fills the rest of the frame (no padding: the IPv4 total length is
/// `len - 14`). `len` is the frame as the NIC hands it over, FCS excluded.
pub fn frame(len: usize, proto: u8, i: u32) -> Vec<u8> {
    let mut f = vec![0u8; len];
    {
        let mut eth = EthernetFrame::new_checked(&mut f[..]).expect("room for Ethernet");
        eth.set_dst_addr([0x02, 0, 0, 0, 0, 0x01]);
        eth.set_src_addr([0x02, 0, 0, 0, 0, 0x02]);
        eth.set_ethertype(ETHERTYPE_IPV4);
    }
    let (src, dst) = (client(i), VIP);
    {
        let mut ip = Ipv4Packet::init(&mut f[L3..]).expect("room for IPv4");
        ip.set_ident(i as u16);
        ip.set_dont_frag(true);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let sport = 1024 + (i % 60_000) as u16;
    match proto {
        IPPROTO_TCP => {
            let mut tcp = TcpSegment::init(&mut f[L4..]).expect("room for TCP");
            tcp.set_src_port(sport);
            tcp.set_dst_port(VIP_PORT);
            tcp.set_seq_number(0x1000_0000 ^ i);
            tcp.set_ack_number(0x2000_0000 ^ i);
            tcp.set_flags(dataplane::wire::tcp::ACK);
            tcp.set_window_len(0xffff);
            fill_payload(tcp.payload_mut(), i);
            tcp.fill_checksum(src, dst);
        }
        IPPROTO_UDP => {
            let mut udp = UdpDatagram::init(&mut f[L4..]).expect("room for UDP");
            udp.set_src_port(sport);
            udp.set_dst_port(VIP_PORT);
            fill_payload(udp.payload_mut(), i);
            udp.fill_checksum(src, dst);
        }
        _ => panic!("TCP or UDP only"),
    }
    f
}

/// Arbitrary but deterministic payload bytes.
fn fill_payload(p: &mut [u8], seed: u32) {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    for b in p {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
}
