//! The pure part of `sluice-pktgen`: what traffic to send and how each
//! frame is built, free of DPDK so it is tested on its own.
//!
//! A flow is a number `f`; its source address is
//! `src_ip_lo + f / n_ports` and its source port `src_port_lo + f % n_ports`.
//! Established traffic walks flows `0..flows` with a stride coprime with
//! `flows`, so consecutive packets belong to unrelated flows (as on a busy
//! link). New connections (a share of the packets, `syn_share`) are SYNs
//! from flow numbers above `flows`, cycling through the rest of the source
//! range, so each one is a connection the dispatcher has not seen lately.
//!
//! Frames are built in place from a header template: per packet only the
//! source address and port, the TCP flags, the lengths, a 48-bit TSC
//! timestamp at the start of the payload and the two checksums change, and
//! the checksums are finished from sums precomputed per frame size (the
//! payload after the timestamp is zero), so building a 1518-byte frame
//! costs no more than a 64-byte one.

use dataplane::checksum::{fold, pseudo_header_v4, sum16};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Bytes of the Ethernet frame check sequence: frame sizes include it (as
/// RFC 2544 counts them), the bytes a port sends do not.
pub const FCS: usize = 4;
/// Smallest and largest frame sizes (with FCS).
pub const MIN_FRAME: u16 = 64;
pub const MAX_FRAME: u16 = 1518;
/// Simple IMIX: 7 × 64, 4 × 594, 1 × 1518 bytes, interleaved.
pub const IMIX_PATTERN: [u16; 12] = [64, 594, 64, 64, 594, 64, 1518, 64, 594, 64, 64, 594];
/// Largest number of flows.
pub const MAX_FLOWS: u32 = 10_000_000;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const TCP_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Bytes of the timestamp written at the start of the payload.
pub const STAMP_LEN: usize = 6;
const STAMP_MASK: u64 = (1 << 48) - 1;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// Transport protocol of the generated traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Proto::Tcp => TCP_LEN,
            Proto::Udp => UDP_LEN,
        }
    }

    /// Offset of the payload (and the timestamp) in the frame.
    pub fn payload_offset(self) -> usize {
        ETH_LEN + IP_LEN + self.header_len()
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("protocol {s:?}: expected tcp or udp")),
        }
    }
}

/// Frame size: one size, or the IMIX mix. Written `64` or `imix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FrameSize {
    Fixed(u16),
    Imix,
}

impl FrameSize {
    /// The sizes sent, in order, repeated.
    pub fn pattern(self) -> Vec<u16> {
        match self {
            FrameSize::Fixed(n) => vec![n],
            FrameSize::Imix => IMIX_PATTERN.to_vec(),
        }
    }

    /// Mean frame size (with FCS) of the pattern.
    pub fn mean(self) -> f64 {
        let p = self.pattern();
        p.iter().map(|&s| f64::from(s)).sum::<f64>() / p.len() as f64
    }
}

impl FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        let n: u16 = s
            .parse()
            .map_err(|_| format!("frame size {s:?}: expected {MIN_FRAME}..{MAX_FRAME} or imix"))?;
        if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
            return Err(format!(
                "frame size {n}: must be {MIN_FRAME}..{MAX_FRAME} bytes (with FCS) or imix"
            ));
        }
        Ok(FrameSize::Fixed(n))
    }
}

impl TryFrom<String> for FrameSize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<FrameSize> for String {
    fn from(s: FrameSize) -> String {
        s.to_string()
    }
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

/// An inclusive range of IPv4 addresses (`a.b.c.d-e.f.g.h`, a CIDR, or one
/// address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Range {
    pub first: u32,
    pub count: u32,
}

fn parse_ip(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<std::net::Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

impl FromStr for Ipv4Range {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (parse_ip(a)?, parse_ip(b)?);
            if b < a {
                return Err(format!("address range {s:?} ends before it starts"));
            }
            let count = (b - a)
                .checked_add(1)
                .ok_or_else(|| format!("address range {s:?} is too large"))?;
            return Ok(Ipv4Range { first: a, count });
        }
        if let Some((a, len)) = s.split_once('/') {
            let a = parse_ip(a)?;
            let len: u32 = len
                .parse()
                .ok()
                .filter(|l| (8..=32).contains(l))
                .ok_or_else(|| format!("prefix length in {s:?} must be 8..32"))?;
            let count = 1u32 << (32 - len);
            return Ok(Ipv4Range {
                first: a & !(count - 1),
                count,
            });
        }
        Ok(Ipv4Range {
            first: parse_ip(s)?,
            count: 1,
        })
    }
}

/// An inclusive range of ports (`1024-65535` or one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub count: u32,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = |x: &str| {
            x.trim()
                .parse::<u16>()
                .map_err(|_| format!("{x:?} is not a port number"))
        };
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (p(a)?, p(b)?),
            None => (p(s)?, p(s)?),
        };
        if b < a {
            return Err(format!("port range {s:?} ends before it starts"));
        }
        Ok(PortRange {
            first: a,
            count: u32::from(b - a) + 1,
        })
    }
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(mac)
}

/// Formats a MAC address.
pub fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Most MAC addresses in a [`MacRange`].
pub const MAX_MACS: u32 = 1 << 24;

/// An inclusive range of unicast MAC addresses, read as 48-bit numbers
/// (`02:00:00:00:01:01-02:00:00:00:01:ff`, or one address): the client-side
/// hosts or routers the traffic comes from. Flow `f` is sent from address
/// `f mod count`, so consecutive flows come from consecutive addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacRange {
    pub first: [u8; 6],
    pub count: u32,
}

fn mac_number(m: &[u8; 6]) -> u64 {
    m.iter().fold(0u64, |n, &b| n << 8 | u64::from(b))
}

fn number_mac(n: u64) -> [u8; 6] {
    let b = n.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl MacRange {
    /// One address.
    pub fn single(mac: [u8; 6]) -> MacRange {
        MacRange {
            first: mac,
            count: 1,
        }
    }

    /// The `i`-th address of the range (`i < count`).
    #[inline]
    pub fn nth(&self, i: u32) -> [u8; 6] {
        number_mac(mac_number(&self.first) + u64::from(i))
    }

    /// Whether `mac` lies in the range.
    pub fn contains(&self, mac: &[u8; 6]) -> bool {
        mac_number(mac).wrapping_sub(mac_number(&self.first)) < u64::from(self.count)
    }
}

impl FromStr for MacRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (parse_mac(a.trim())?, parse_mac(b.trim())?),
            None => (parse_mac(s.trim())?, parse_mac(s.trim())?),
        };
        let (na, nb) = (mac_number(&a), mac_number(&b));
        if nb < na {
            return Err(format!("MAC range {s:?} ends before it starts"));
        }
        if a[0] & 1 != 0 || na >> 40 != nb >> 40 {
            return Err(format!(
                "MAC range {s:?}: source addresses must be unicast (first byte even) and share their first byte"
            ));
        }
        if nb - na >= u64::from(MAX_MACS) {
            return Err(format!(
                "MAC range {s:?} has more than {MAX_MACS} addresses"
            ));
        }
        Ok(MacRange {
            first: a,
            count: (nb - na + 1) as u32,
        })
    }
}

impl std::fmt::Display for MacRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = mac_string(&self.first);
        if self.count == 1 {
            f.write_str(&first)
        } else {
            write!(f, "{first}-{}", mac_string(&self.nth(self.count - 1)))
        }
    }
}

/// What to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Traffic {
    pub proto: Proto,
    pub size: FrameSize,
    /// Established flows (1..=10M).
    pub flows: u32,
    /// Share of packets that open a new connection (0..=1).
    pub syn_share: f64,
    pub src_macs: MacRange,
    pub dst_mac: [u8; 6],
    pub src_ips: Ipv4Range,
    pub src_ports: PortRange,
    pub dst_ip: u32,
    pub dst_port: u16,
}

/// Per-frame-size constants: lengths and checksum sums of everything that
/// does not change from packet to packet.
#[derive(Debug, Clone, Copy)]
struct SizeClass {
    /// Bytes handed to the port (frame size without FCS).
    len: u16,
    ip_total: u16,
    /// One's-complement sum of the IPv4 header without source address and
    /// checksum.
    ip_sum: u32,
    /// One's-complement sum of pseudo-header, L4 header and payload without
    /// the source address, source port, TCP flags and timestamp.
    l4_sum: u32,
}

/// Builds frames of a [`Traffic`] in place.
#[derive(Debug)]
pub struct FrameBuilder {
    traffic: Traffic,
    /// Ethernet + IPv4 + L4 header with zeroed per-packet fields.
    header: [u8; 64],
    header_len: usize,
    classes: Vec<SizeClass>,
    pattern: Vec<u8>,
    pattern_at: usize,
    stride: u32,
    next_established: u32,
    /// Flow numbers above `flows` available for new connections.
    new_span: u32,
    next_new: u32,
    /// SYN pacing: every packet adds `syn_per_2_32`; an overflow sends a SYN.
    syn_step: u64,
    syn_acc: u64,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A stride close to 61.8% of `n` that is coprime with it, so walking
/// `i * stride mod n` visits every flow once per round in a scattered order.
fn coprime_stride(n: u32) -> u32 {
    if n <= 2 {
        return 1;
    }
    let mut s = ((u64::from(n) * 618_034) / 1_000_000) as u32 | 1;
    while gcd(s, n) != 1 {
        s += 2;
        if s >= n {
            s = 1;
        }
    }
    s
}

impl FrameBuilder {
    pub fn new(traffic: Traffic) -> Result<FrameBuilder, String> {
        if traffic.flows == 0 || traffic.flows > MAX_FLOWS {
            return Err(format!("flows {}: must be 1..{MAX_FLOWS}", traffic.flows));
        }
        if !(0.0..=1.0).contains(&traffic.syn_share) {
            return Err(format!(
                "SYN share {}: must be between 0 and 1",
                traffic.syn_share
            ));
        }
        if traffic.src_macs.count == 0 || traffic.src_macs.count > MAX_MACS {
            return Err(format!(
                "{} source MACs: must be 1..{MAX_MACS}",
                traffic.src_macs.count
            ));
        }
        if traffic.syn_share > 0.0 && traffic.proto != Proto::Tcp {
            return Err("new connections (SYN share) need --proto tcp".into());
        }
        let space = u64::from(traffic.src_ips.count) * u64::from(traffic.src_ports.count);
        if space < u64::from(traffic.flows) {
            return Err(format!(
                "{} flows need {} source address/port pairs but the ranges give {space}: widen --src-ip or --src-ports",
                traffic.flows, traffic.flows
            ));
        }
        let new_span = (space - u64::from(traffic.flows)).min(u64::from(u32::MAX)) as u32;
        if traffic.syn_share > 0.0 && new_span == 0 {
            return Err(
                "no source address/port pairs left for new connections: widen --src-ip or --src-ports".into(),
            );
        }
        let proto = traffic.proto;
        let header_len = proto.payload_offset();
        let mut h = [0u8; 64];
        h[0..6].copy_from_slice(&traffic.dst_mac);
        h[6..12].copy_from_slice(&traffic.src_macs.first);
        h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut h[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = proto.number();
        ip[16..20].copy_from_slice(&traffic.dst_ip.to_be_bytes());
        let l4 = &mut h[ETH_LEN + IP_LEN..header_len];
        l4[2..4].copy_from_slice(&traffic.dst_port.to_be_bytes());
        if proto == Proto::Tcp {
            l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
            l4[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack
            l4[12] = 5 << 4;
            l4[14..16].copy_from_slice(&0xffffu16.to_be_bytes()); // window
        }
        let mut sizes: Vec<u16> = traffic.size.pattern();
        let pattern_sizes = sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        let classes: Vec<SizeClass> = sizes
            .iter()
            .map(|&frame| {
                let len = frame - FCS as u16;
                let ip_total = len - ETH_LEN as u16;
                let l4_len = ip_total - IP_LEN as u16;
                let mut ip = [0u8; IP_LEN];
                ip.copy_from_slice(&h[ETH_LEN..ETH_LEN + IP_LEN]);
                ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
                let ip_sum = sum16(&ip);
                let mut l4 = [0u8; TCP_LEN];
                let hl = proto.header_len();
                l4[..hl].copy_from_slice(&h[ETH_LEN + IP_LEN..header_len]);
                if proto == Proto::Udp {
                    l4[4..6].copy_from_slice(&l4_len.to_be_bytes());
                }
                // Pseudo-header without the source address (added per
                // packet), then the L4 header.
                let sum =
                    pseudo_header_v4(0, traffic.dst_ip, proto.number(), l4_len) + sum16(&l4[..hl]);
                SizeClass {
                    len,
                    ip_total,
                    ip_sum,
                    l4_sum: sum,
                }
            })
            .collect();
        let pattern = pattern_sizes
            .iter()
            .map(|s| sizes.iter().position(|x| x == s).unwrap_or(0) as u8)
            .collect();
        let syn_step = (traffic.syn_share * (1u64 << 32) as f64) as u64;
        Ok(FrameBuilder {
            stride: coprime_stride(traffic.flows),
            traffic,
            header: h,
            header_len,
            classes,
            pattern,
            pattern_at: 0,
            next_established: 0,
            new_span,
            next_new: 0,
            syn_step,
            syn_acc: 0,
        })
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Largest frame, without FCS: the data room each buffer needs.
    pub fn max_len(&self) -> usize {
        self.classes
            .iter()
            .map(|c| c.len as usize)
            .max()
            .unwrap_or(0)
    }

    /// Source address and port of flow `f`.
    pub fn flow_source(&self, f: u32) -> (u32, u16) {
        let n = self.traffic.src_ports.count;
        let ip = self.traffic.src_ips.first.wrapping_add(f / n);
        let port = (u32::from(self.traffic.src_ports.first) + f % n) as u16;
        (ip, port)
    }

    /// Writes the first packet of flow `f` (a SYN for TCP), the one that
    /// makes the dispatcher pin the flow, into `buf`; returns its length.
    /// `buf` holds the previous frame written into it or zeros.
    pub fn write_opening(&mut self, buf: &mut [u8], f: u32, tsc: u64) -> usize {
        let class = self.next_class();
        self.write(buf, f, TCP_SYN, class, tsc)
    }

    /// Writes the next packet of the traffic mix into `buf` and returns
    /// its length.
    #[inline]
    pub fn write_next(&mut self, buf: &mut [u8], tsc: u64) -> usize {
        let class = self.next_class();
        self.syn_acc += self.syn_step;
        if self.syn_acc >= 1 << 32 {
            self.syn_acc -= 1 << 32;
            let f = self.traffic.flows + self.next_new;
            self.next_new += 1;
            if self.next_new >= self.new_span {
                self.next_new = 0;
            }
            return self.write(buf, f, TCP_SYN, class, tsc);
        }
        let f = self.next_established;
        self.next_established += self.stride;
        if self.next_established >= self.traffic.flows {
            self.next_established -= self.traffic.flows;
        }
        self.write(buf, f, TCP_ACK, class, tsc)
    }

    #[inline]
    fn next_class(&mut self) -> SizeClass {
        let c = self.classes[self.pattern[self.pattern_at] as usize];
        self.pattern_at += 1;
        if self.pattern_at == self.pattern.len() {
            self.pattern_at = 0;
        }
        c
    }

    /// Builds one frame: header from the template, per-packet fields, the
    /// timestamp and both checksums. The payload after the timestamp must
    /// be zero in `buf` (buffers are zeroed once and only ever get headers
    /// and stamps written).
    #[inline]
    fn write(&self, buf: &mut [u8], f: u32, flags: u8, c: SizeClass, tsc: u64) -> usize {
        let len = c.len as usize;
        let hl = self.header_len;
        let buf = &mut buf[..len];
        buf[..hl].copy_from_slice(&self.header[..hl]);
        let macs = &self.traffic.src_macs;
        if macs.count > 1 {
            buf[6..12].copy_from_slice(&macs.nth(f % macs.count));
        }
        let (src_ip, src_port) = self.flow_source(f);
        let ip_words = (src_ip >> 16) + (src_ip & 0xffff);
        // IPv4 header.
        let ip = ETH_LEN;
        buf[ip + 2..ip + 4].copy_from_slice(&c.ip_total.to_be_bytes());
        buf[ip + 12..ip + 16].copy_from_slice(&src_ip.to_be_bytes());
        let ip_ck = !fold(c.ip_sum + ip_words);
        buf[ip + 10..ip + 12].copy_from_slice(&ip_ck.to_be_bytes());
        // L4 header and timestamp.
        let l4 = ETH_LEN + IP_LEN;
        buf[l4..l4 + 2].copy_from_slice(&src_port.to_be_bytes());
        let stamp = tsc & STAMP_MASK;
        let s = hl;
        buf[s..s + 2].copy_from_slice(&((stamp >> 32) as u16).to_be_bytes());
        buf[s + 2..s + 6].copy_from_slice(&(stamp as u32).to_be_bytes());
        let stamp_words =
            (stamp >> 32) as u32 + ((stamp >> 16) & 0xffff) as u32 + (stamp & 0xffff) as u32;
        let mut sum = c.l4_sum + ip_words + u32::from(src_port) + stamp_words;
        match self.traffic.proto {
            Proto::Tcp => {
                buf[l4 + 13] = flags;
                // The template's flags byte is zero: the flags add as the
                // low byte of their word.
                sum += u32::from(flags);
                let ck = !fold(sum);
                buf[l4 + 16..l4 + 18].copy_from_slice(&ck.to_be_bytes());
            }
            Proto::Udp => {
                buf[l4 + 4..l4 + 6].copy_from_slice(&(c.ip_total - IP_LEN as u16).to_be_bytes());
                let ck = match !fold(sum) {
                    0 => 0xffff,
                    x => x,
                };
                buf[l4 + 6..l4 + 8].copy_from_slice(&ck.to_be_bytes());
            }
        }
        len
    }
}

/// Reads the 48-bit timestamp of a generated frame; None when the frame is
/// too short.
#[inline]
pub fn read_stamp(frame: &[u8], proto: Proto) -> Option<u64> {
    let s = proto.payload_offset();
    let b = frame.get(s..s + STAMP_LEN)?;
    Some(
        (u64::from(u16::from_be_bytes([b[0], b[1]])) << 32)
            | u64::from(u32::from_be_bytes([b[2], b[3], b[4], b[5]])),
    )
}

/// Cycles between a 48-bit stamp and the TSC now (wrapping).
#[inline]
pub fn stamp_age(stamp: u64, now_tsc: u64) -> u64 {
    (now_tsc & STAMP_MASK).wrapping_sub(stamp) & STAMP_MASK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{internet_checksum, transport_checksum};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn traffic(proto: Proto, size: FrameSize, flows: u32, syn: f64) -> Traffic {
        Traffic {
            proto,
            size,
            flows,
            syn_share: syn,
            src_macs: MacRange::single([2, 0, 0, 0, 0, 1]),
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ips: "198.18.0.0/16".parse().unwrap(),
            src_ports: "1024-65535".parse().unwrap(),
            dst_ip: u32::from(std::net::Ipv4Addr::new(198, 18, 100, 1)),
            dst_port: 80,
        }
    }

    /// Parses a frame with etherparse and checks both checksums from
    /// scratch; returns (src ip, src port, tcp flags or 0, length).
    fn verify(frame: &[u8]) -> (u32, u16, u8) {
        let p = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        let h = ip.header();
        assert_eq!(
            internet_checksum(&[h.slice()]),
            0,
            "IPv4 header checksum is valid"
        );
        let l4 = ip.payload().payload;
        assert_eq!(
            transport_checksum(h.source(), h.destination(), h.protocol().0, l4),
            0,
            "TCP/UDP checksum is valid"
        );
        let (port, flags) = match p.transport {
            Some(TransportSlice::Tcp(t)) => (t.source_port(), t.slice()[13]),
            Some(TransportSlice::Udp(u)) => (u.source_port(), 0),
            _ => panic!("no transport"),
        };
        (u32::from_be_bytes(h.source()), port, flags)
    }

    #[test]
    fn frames_have_valid_checksums_for_every_size_and_protocol() {
        for proto in [Proto::Tcp, Proto::Udp] {
            for size in [64u16, 65, 128, 594, 1517, 1518] {
                let mut g =
                    FrameBuilder::new(traffic(proto, FrameSize::Fixed(size), 1000, 0.0)).unwrap();
                let mut buf = vec![0u8; 2048];
                for i in 0..50u64 {
                    let tsc = 0x1234_5678_9abc_def0u64.wrapping_mul(i + 1);
                    let n = g.write_next(&mut buf, tsc);
                    assert_eq!(n, size as usize - FCS);
                    verify(&buf[..n]);
                    assert_eq!(read_stamp(&buf[..n], proto), Some(tsc & STAMP_MASK));
                }
            }
        }
    }

    #[test]
    fn established_traffic_visits_every_flow_once_per_round() {
        for flows in [1u32, 2, 3, 10, 1000, 65536, 100_003] {
            let mut g =
                FrameBuilder::new(traffic(Proto::Tcp, FrameSize::Fixed(64), flows, 0.0)).unwrap();
            let mut buf = [0u8; 64];
            let mut seen = std::collections::HashSet::new();
            for _ in 0..flows {
                let n = g.write_next(&mut buf, 0);
                let (ip, port, flags) = verify(&buf[..n]);
                assert_eq!(flags, TCP_ACK);
                assert!(seen.insert((ip, port)), "a flow repeats within a round");
            }
            assert_eq!(seen.len(), flows as usize);
        }
    }

    #[test]
    fn syn_share_opens_new_flows_outside_the_established_ones() {
        let flows = 1000;
        let mut g =
            FrameBuilder::new(traffic(Proto::Tcp, FrameSize::Fixed(64), flows, 0.25)).unwrap();
        let established: std::collections::HashSet<(u32, u16)> =
            (0..flows).map(|f| g.flow_source(f)).collect();
        let mut buf = [0u8; 64];
        let (mut syns, mut new) = (0, std::collections::HashSet::new());
        for _ in 0..10_000 {
            let n = g.write_next(&mut buf, 0);
            let (ip, port, flags) = verify(&buf[..n]);
            if flags == TCP_SYN {
                syns += 1;
                assert!(!established.contains(&(ip, port)));
                new.insert((ip, port));
            } else {
                assert!(established.contains(&(ip, port)));
            }
        }
        assert_eq!(syns, 2500);
        assert_eq!(new.len(), 2500, "each SYN is a new connection");
    }

    #[test]
    fn imix_follows_its_pattern_and_mean() {
        let mut g = FrameBuilder::new(traffic(Proto::Udp, FrameSize::Imix, 10, 0.0)).unwrap();
        let mut buf = vec![0u8; 2048];
        let lens: Vec<usize> = (0..24).map(|_| g.write_next(&mut buf, 0) + FCS).collect();
        assert_eq!(lens.iter().filter(|&&l| l == 64).count(), 14);
        assert_eq!(lens.iter().filter(|&&l| l == 594).count(), 8);
        assert_eq!(lens.iter().filter(|&&l| l == 1518).count(), 2);
        assert!((FrameSize::Imix.mean() - (7.0 * 64.0 + 4.0 * 594.0 + 1518.0) / 12.0).abs() < 1e-9);
        // A short frame written over a long one still verifies (payload after
        // the stamp is the zeros of the longer frame).
        let n = g.write_next(&mut buf, 7);
        verify(&buf[..n]);
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        let mut t = traffic(Proto::Tcp, FrameSize::Fixed(64), 0, 0.0);
        assert!(FrameBuilder::new(t.clone()).unwrap_err().contains("flows"));
        t.flows = 10;
        t.src_ips = "198.18.0.1".parse().unwrap();
        t.src_ports = "1000-1004".parse().unwrap();
        assert!(FrameBuilder::new(t.clone()).unwrap_err().contains("widen"));
        t.flows = 5;
        t.syn_share = 0.1;
        assert!(FrameBuilder::new(t.clone())
            .unwrap_err()
            .contains("new connections"));
        t.proto = Proto::Udp;
        assert!(FrameBuilder::new(t.clone()).unwrap_err().contains("tcp"));
        t.syn_share = 0.0;
        t.src_macs.count = 0;
        assert!(FrameBuilder::new(t).unwrap_err().contains("source MACs"));
        assert!("63".parse::<FrameSize>().is_err());
        assert!("1519".parse::<FrameSize>().is_err());
        assert!("imix".parse::<FrameSize>().is_ok());
        assert!("198.18.0.9-198.18.0.1".parse::<Ipv4Range>().is_err());
        assert_eq!(
            "198.18.0.7/24".parse::<Ipv4Range>().unwrap(),
            Ipv4Range {
                first: u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)),
                count: 256
            }
        );
        assert!(parse_mac("02:00:00:00:00").is_err());
    }

    #[test]
    fn a_mac_range_gives_consecutive_flows_consecutive_source_macs() {
        let mut t = traffic(Proto::Tcp, FrameSize::Fixed(64), 10, 0.0);
        t.src_macs = "02:00:00:00:01:fe-02:00:00:00:02:01".parse().unwrap();
        assert_eq!(t.src_macs.count, 4);
        assert_eq!(
            t.src_macs.to_string(),
            "02:00:00:00:01:fe-02:00:00:00:02:01"
        );
        let mut g = FrameBuilder::new(t).unwrap();
        let mut buf = [0u8; 64];
        let mut seen = Vec::new();
        for _ in 0..10 {
            let n = g.write_next(&mut buf, 0);
            let (ip, port, _) = verify(&buf[..n]);
            let f = (0..10).find(|&f| g.flow_source(f) == (ip, port)).unwrap();
            let mac: [u8; 6] = buf[6..12].try_into().unwrap();
            assert_eq!(mac, g.traffic().src_macs.nth(f % 4), "flow {f}");
            seen.push(mac);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen,
            [
                [2, 0, 0, 0, 1, 0xfe],
                [2, 0, 0, 0, 1, 0xff],
                [2, 0, 0, 0, 2, 0],
                [2, 0, 0, 0, 2, 1]
            ]
        );
        let one: MacRange = "02:00:00:00:01:01".parse().unwrap();
        assert_eq!(
            (one.count, one.to_string().as_str()),
            (1, "02:00:00:00:01:01")
        );
        assert!(one.contains(&[2, 0, 0, 0, 1, 1]) && !one.contains(&[2, 0, 0, 0, 1, 2]));
        for bad in [
            "02:00:00:00:01:09-02:00:00:00:01:01",
            "03:00:00:00:00:01",
            "02:00:00:00:00:01-04:00:00:00:00:01",
            "02:00:00:00:00:00-02:00:01:00:00:00",
            "02:00:00:00:00",
        ] {
            assert!(bad.parse::<MacRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stamp_age_wraps_at_48_bits() {
        assert_eq!(stamp_age(STAMP_MASK - 1, 1u64 << 48 | 3), 5);
        assert_eq!(stamp_age(10, 25), 15);
    }

    #[test]
    fn ten_million_flows_fit_the_default_ranges() {
        let g = FrameBuilder::new(traffic(Proto::Tcp, FrameSize::Fixed(64), MAX_FLOWS, 0.01));
        assert!(g.is_ok());
    }
}
