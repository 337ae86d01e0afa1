//! Checksum maintenance for a NAT rewrite: the RFC 1624 incremental updates
//! of `dataplane::checksum` (`update16`, `update32`, `update_many`) versus a
//! full recomputation (RFC 1071 sum, `internet_checksum` / `fill_checksum`).
//!
//! * `checksum_ipv4_header`: the IPv4 part of a NAT rewrite (TTL changed,
//!   destination address changed), the header checksum then brought up to
//!   date by `fill_checksum` (full: 20 bytes summed), by the views'
//!   `update16` (TTL word) + `rewrite_dst_addr` (`update32`), or by one
//!   `update_many` of three words as the pipeline's `nat_rewrite` does.
//! * `checksum_tcp`: the TCP part (destination address of the pseudo-header
//!   and destination port changed) in 64- and 1518-byte frames (TCP
//!   segments of 30 and 1484 bytes): `TcpSegment::fill_checksum` (full:
//!   pseudo-header plus the whole segment summed) versus `rewrite_dst_port`
//!   (`update16`) + `adjust_checksum_for_addr` (`update32`), and versus one
//!   `update_many` of three words.
//!
//! Each iteration rewrites a burst of 32 frames in cache (the address and
//! port alternate between two values); figures are per frame. Before and
//! after it is measured, each variant is checked to leave a correct checksum
//! (the IPv4 one, or the TCP one).
//!
//! Run: `cargo bench -p perf --bench checksum`.

mod common;

use common::{frame, L3, L4};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::checksum::{update16, update_many};
use dataplane::wire::{Ipv4Packet, TcpSegment, IPPROTO_TCP};
use std::hint::black_box;
use std::net::Ipv4Addr;

const BURST: usize = 32;

/// The two backends a destination alternates between (`addr ^ FLIP_ADDR`).
const BACKEND: u32 = 0x0a01_0002; // 10.1.0.2
const FLIP_ADDR: u32 = 0x0000_0101;
/// Port alternation (8080 <-> 80) and TTL alternation (64 <-> 63).
const FLIP_PORT: u16 = 80 ^ 8080;
const FLIP_TTL: u8 = 64 ^ 63;

/// A burst of TCP frames of `len` bytes whose destination is a backend.
fn burst(len: usize) -> Vec<Vec<u8>> {
    (0..BURST as u32)
        .map(|i| {
            let mut f = frame(len, IPPROTO_TCP, i);
            let mut ip = Ipv4Packet::new_checked(&mut f[L3..]).unwrap();
            ip.set_dst_addr_raw(BACKEND);
            ip.fill_checksum();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            TcpSegment::new_checked(&mut f[L4..])
                .unwrap()
                .fill_checksum(src, dst);
            f
        })
        .collect()
}

/// Whether the IPv4 header checksum of frame `f` verifies.
fn ipv4_ok(f: &[u8]) -> bool {
    Ipv4Packet::new_checked(&f[L3..]).is_ok_and(|ip| ip.verify_checksum())
}

/// Whether the TCP checksum of frame `f` verifies (with the addresses of
/// its IPv4 header, whose own checksum is not looked at).
fn tcp_ok(f: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(&f[L3..]) else {
        return false;
    };
    TcpSegment::new_checked(ip.payload())
        .is_ok_and(|tcp| tcp.verify_checksum(ip.src_addr(), ip.dst_addr()))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

// IPv4 header rewrites: TTL and destination address change.

/// Full recomputation of the header checksum.
#[inline(always)]
fn ip_full(f: &mut [u8]) {
    let mut ip = Ipv4Packet::new_checked(&mut f[L3..]).unwrap();
    ip.set_ttl(ip.ttl() ^ FLIP_TTL);
    ip.set_dst_addr_raw(ip.dst_addr_raw() ^ FLIP_ADDR);
    ip.fill_checksum();
}

/// The views' incremental updates: `update16` for the TTL/protocol word,
/// `update32` (in `rewrite_dst_addr`) for the address.
#[inline(always)]
fn ip_update16_32(f: &mut [u8]) {
    let mut ip = Ipv4Packet::new_checked(&mut f[L3..]).unwrap();
    let (ttl, proto) = (ip.ttl(), ip.protocol());
    ip.set_ttl(ttl ^ FLIP_TTL);
    let ck = update16(
        ip.checksum(),
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([ttl ^ FLIP_TTL, proto]),
    );
    ip.set_checksum(ck);
    let new = Ipv4Addr::from(ip.dst_addr_raw() ^ FLIP_ADDR);
    ip.rewrite_dst_addr(new);
}

/// One `update_many` of three words, on raw bytes as `nat_rewrite` does.
#[inline(always)]
fn ip_update_many(f: &mut [u8]) {
    let ip = &mut f[L3..L3 + 20];
    let (ttl, proto) = (ip[8], ip[9]);
    let new_ttl = ttl ^ FLIP_TTL;
    let old = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let new = old ^ FLIP_ADDR;
    let ck = update_many(
        be16(ip, 10),
        [
            (
                u16::from_be_bytes([ttl, proto]),
                u16::from_be_bytes([new_ttl, proto]),
            ),
            ((old >> 16) as u16, (new >> 16) as u16),
            (old as u16, new as u16),
        ],
    );
    ip[8] = new_ttl;
    ip[16..20].copy_from_slice(&new.to_be_bytes());
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
}

// TCP rewrites: destination address (pseudo-header) and port change. The
// new address is stored in the IPv4 header without updating its checksum
// (that is the benchmark above); only the TCP checksum is measured.

/// Stores the alternated destination address, returns (src, old, new).
#[inline(always)]
fn flip_dst(f: &mut [u8]) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    let mut ip = Ipv4Packet::new_checked(&mut f[L3..]).unwrap();
    let old = ip.dst_addr();
    let new = Ipv4Addr::from(u32::from(old) ^ FLIP_ADDR);
    ip.set_dst_addr(new);
    (ip.src_addr(), old, new)
}

/// Full recomputation: pseudo-header plus the whole segment.
#[inline(always)]
fn tcp_full(f: &mut [u8]) {
    let (src, _, new) = flip_dst(f);
    let mut tcp = TcpSegment::new_checked(&mut f[L4..]).unwrap();
    tcp.set_dst_port(tcp.dst_port() ^ FLIP_PORT);
    tcp.fill_checksum(src, new);
}

/// The views' incremental updates: `update16` for the port, `update32` for
/// the address.
#[inline(always)]
fn tcp_update16_32(f: &mut [u8]) {
    let (_, old, new) = flip_dst(f);
    let mut tcp = TcpSegment::new_checked(&mut f[L4..]).unwrap();
    tcp.rewrite_dst_port(tcp.dst_port() ^ FLIP_PORT);
    tcp.adjust_checksum_for_addr(old, new);
}

/// One `update_many` of three words, on raw bytes as `nat_rewrite` does.
#[inline(always)]
fn tcp_update_many(f: &mut [u8]) {
    let (_, old, new) = flip_dst(f);
    let (old, new) = (u32::from(old), u32::from(new));
    let seg = &mut f[L4..L4 + 20];
    let old_port = be16(seg, 2);
    let new_port = old_port ^ FLIP_PORT;
    let ck = update_many(
        be16(seg, 16),
        [
            ((old >> 16) as u16, (new >> 16) as u16),
            (old as u16, new as u16),
            (old_port, new_port),
        ],
    );
    seg[2..4].copy_from_slice(&new_port.to_be_bytes());
    seg[16..18].copy_from_slice(&ck.to_be_bytes());
}

/// Benchmarks `rewrite` on a burst of `len`-byte frames. Generic (not a
/// function pointer) so that the rewrite is inlined as in the pipeline.
fn bench_rewrite(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    len: usize,
    rewrite: impl Fn(&mut [u8]),
    valid: fn(&[u8]) -> bool,
) {
    let mut frames = burst(len);
    // Once and twice (back to the start): the checksum stays correct.
    for _ in 0..2 {
        frames.iter_mut().for_each(|f| rewrite(f));
        assert!(
            frames.iter().all(|f| valid(f)),
            "{name}/{len}: bad checksum"
        );
    }
    g.bench_function(BenchmarkId::new(name, len), |b| {
        b.iter(|| {
            for f in frames.iter_mut() {
                rewrite(black_box(f));
            }
        })
    });
    assert!(
        frames.iter().all(|f| valid(f)),
        "{name}/{len}: bad checksum"
    );
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum_ipv4_header");
    g.throughput(Throughput::Elements(BURST as u64));
    bench_rewrite(&mut g, "full_recompute", 64, ip_full, ipv4_ok);
    bench_rewrite(&mut g, "update16_update32", 64, ip_update16_32, ipv4_ok);
    bench_rewrite(&mut g, "update_many3", 64, ip_update_many, ipv4_ok);
    g.finish();

    let mut g = c.benchmark_group("checksum_tcp");
    g.throughput(Throughput::Elements(BURST as u64));
    for len in [64, 1518] {
        bench_rewrite(&mut g, "full_recompute", len, tcp_full, tcp_ok);
        bench_rewrite(&mut g, "update16_update32", len, tcp_update16_32, tcp_ok);
        bench_rewrite(&mut g, "update_many3", len, tcp_update_many, tcp_ok);
    }
    g.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);
