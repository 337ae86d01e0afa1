//! Header parsing with the zero-copy `dataplane::wire` views, as the
//! pipeline's second pass does it for an IPv4 TCP/UDP packet: Ethernet view
//! and L3 offset (VLAN tags skipped), `Ipv4Packet::new_checked`, the IPv4
//! header-checksum check (`verify_checksum`) and the fragment check, then
//! `TcpSegment::new_checked` / `UdpDatagram::new_checked` on the IPv4
//! payload and the ports (and TCP flags). The TCP/UDP checksum is not
//! verified (the pipeline leaves that to the NIC; see the `checksum`
//! benchmark for its cost).
//!
//! Frames of 64 and 1518 bytes (FCS excluded), already in cache, taken in
//! bursts of 32 from a pool of 1024 distinct frames; figures are per frame.
//! `tcp_no_ipv4_checksum` skips the IPv4 checksum check, to show its share;
//! `mixed` takes TCP and UDP frames in a random order (branch mispredicts).
//! The pipeline's first pass (`peek_flow`) is private to `dataplane`, so it
//! is measured only as part of the `pipeline` benchmark.
//!
//! Run: `cargo bench -p perf --bench parser`.

mod common;

use common::frame;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::wire::{
    EthernetFrame, Ipv4Packet, TcpSegment, UdpDatagram, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP,
};
use std::hint::black_box;

const BURST: usize = 32;
const POOL: usize = 1024;

/// What the pipeline takes out of a packet's headers.
#[derive(Clone, Copy)]
struct Parsed {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    flags: u8,
}

impl Parsed {
    /// All fields mixed into one word, so that none is optimised away.
    #[inline(always)]
    fn digest(&self) -> u32 {
        let ports = (u32::from(self.sport) << 16) | u32::from(self.dport);
        let kind = (u32::from(self.proto) << 8) | u32::from(self.flags);
        self.src ^ self.dst.rotate_left(7) ^ ports ^ kind
    }
}

/// Parses one frame; `None` where the pipeline would drop it.
#[inline(always)]
fn parse(frame: &[u8], verify_ipv4_checksum: bool) -> Option<Parsed> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (ethertype, l3, _vlan) = eth.l3_offset().ok()?;
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(frame.get(l3..)?).ok()?;
    if verify_ipv4_checksum && !ip.verify_checksum() {
        return None;
    }
    if ip.is_fragment() {
        return None;
    }
    let (src, dst, proto) = (ip.src_addr_raw(), ip.dst_addr_raw(), ip.protocol());
    let (sport, dport, flags) = match proto {
        IPPROTO_TCP => {
            let t = TcpSegment::new_checked(ip.payload()).ok()?;
            (t.src_port(), t.dst_port(), t.flags())
        }
        IPPROTO_UDP => {
            let u = UdpDatagram::new_checked(ip.payload()).ok()?;
            (u.src_port(), u.dst_port(), 0)
        }
        _ => return None,
    };
    Some(Parsed {
        src,
        dst,
        sport,
        dport,
        proto,
        flags,
    })
}

/// Parses bursts of `BURST` frames walking through `pool`.
fn bench_pool(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    pool: &[Vec<u8>],
    verify: bool,
) {
    // Every frame of the pool parses: a benchmark of the accept path.
    assert!(pool.iter().all(|f| parse(f, true).is_some()));
    g.bench_function(id, |b| {
        let mut at = 0usize;
        b.iter(|| {
            let mut acc = 0u32;
            for f in &pool[at..at + BURST] {
                if let Some(p) = parse(black_box(f), verify) {
                    acc = acc.wrapping_add(p.digest());
                }
            }
            at = (at + BURST) % pool.len();
            black_box(acc)
        })
    });
}

fn parser(c: &mut Criterion) {
    let mut g = c.benchmark_group("parser");
    g.throughput(Throughput::Elements(BURST as u64));
    for len in [64usize, 1518] {
        let tcp: Vec<Vec<u8>> = (0..POOL as u32)
            .map(|i| frame(len, IPPROTO_TCP, i))
            .collect();
        let udp: Vec<Vec<u8>> = (0..POOL as u32)
            .map(|i| frame(len, IPPROTO_UDP, i))
            .collect();
        bench_pool(&mut g, BenchmarkId::new("tcp", len), &tcp, true);
        bench_pool(&mut g, BenchmarkId::new("udp", len), &udp, true);
        if len == 64 {
            bench_pool(
                &mut g,
                BenchmarkId::new("tcp_no_ipv4_checksum", len),
                &tcp,
                false,
            );
            // TCP or UDP at random (xorshift), same frames otherwise.
            let mut x = 0x2545_f491u32;
            let mixed: Vec<Vec<u8>> = (0..POOL)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x & 1 == 0 {
                        tcp[i].clone()
                    } else {
                        udp[i].clone()
                    }
                })
                .collect();
            bench_pool(&mut g, BenchmarkId::new("mixed", len), &mixed, true);
        }
    }
    g.finish();
}

criterion_group!(benches, parser);
criterion_main!(benches);
