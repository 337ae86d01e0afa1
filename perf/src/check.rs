//! Checks of frames that come back from the device under test: is it one
//! of ours, was it rewritten as the forwarding mode promises, are both
//! checksums right. Parsing is etherparse's and the checksums are computed
//! from scratch, so nothing here shares code with the dispatcher it checks
//! (nor with the generator, which builds its checksums with the
//! dataplane's `checksum` module).

use crate::gen::{mac_string, MacRange, Proto, Traffic};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The Internet checksum (RFC 1071) of `parts` taken as one byte string,
/// from scratch: what a receiver uses to verify.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in part.iter() {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum over an IPv4 pseudo-header and the TCP/UDP
/// segment `l4`: 0 for a segment whose checksum is right; over a segment
/// whose checksum field is zero, the value to put there.
pub fn transport_checksum(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src);
    pseudo[4..8].copy_from_slice(&dst);
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    internet_checksum(&[&pseudo, l4])
}

/// What the device under test is expected to do to each frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded as is (`testpmd` io).
    Unchanged,
    /// Source and destination MAC swapped (`testpmd` macswap).
    MacSwap,
    /// Direct routing: destination MAC of one of these backends, IP
    /// header and ports untouched.
    Dr(Vec<[u8; 6]>),
    /// NAT: destination address and port of one of these backends.
    Nat(Vec<(Ipv4Addr, u16)>),
}

impl Expect {
    pub fn name(&self) -> &'static str {
        match self {
            Expect::Unchanged => "unchanged",
            Expect::MacSwap => "macswap",
            Expect::Dr(_) => "dr",
            Expect::Nat(_) => "nat",
        }
    }

    fn backends(&self) -> Vec<String> {
        match self {
            Expect::Dr(b) => b.iter().map(mac_string).collect(),
            Expect::Nat(b) => b.iter().map(|(a, p)| format!("{a}:{p}")).collect(),
            _ => Vec::new(),
        }
    }
}

/// Results of the sampled checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckStats {
    /// Mode checked against.
    pub expect: String,
    /// Frames examined.
    pub sampled: u64,
    pub ok: u64,
    /// Not a frame the generator sent (unparsable, other protocol,
    /// source outside the generated range).
    pub foreign: u64,
    /// Rewritten other than expected.
    pub bad_rewrite: u64,
    /// IPv4 header or TCP/UDP checksum wrong.
    pub bad_checksum: u64,
    /// Sampled frames per backend (DR/NAT), in the order given.
    pub per_backend: Vec<(String, u64)>,
    /// The first few failures, described.
    pub examples: Vec<String>,
}

/// Checks a sample of the returning frames.
pub struct Checker {
    expect: Expect,
    proto: Proto,
    src_macs: MacRange,
    dst_mac: [u8; 6],
    src_first: u32,
    src_count: u32,
    vip: [u8; 4],
    vip_port: u16,
    pub stats: CheckStats,
}

const MAX_EXAMPLES: usize = 5;

impl Checker {
    pub fn new(traffic: &Traffic, expect: Expect) -> Checker {
        let per_backend = expect.backends().into_iter().map(|b| (b, 0)).collect();
        Checker {
            proto: traffic.proto,
            src_macs: traffic.src_macs,
            dst_mac: traffic.dst_mac,
            src_first: traffic.src_ips.first,
            src_count: traffic.src_ips.count,
            vip: traffic.dst_ip.to_be_bytes(),
            vip_port: traffic.dst_port,
            stats: CheckStats {
                expect: expect.name().to_string(),
                per_backend,
                ..CheckStats::default()
            },
            expect,
        }
    }

    fn fail(&mut self, what: &str, frame: &[u8]) {
        if self.stats.examples.len() < MAX_EXAMPLES {
            let head: Vec<String> = frame.iter().take(54).map(|b| format!("{b:02x}")).collect();
            self.stats
                .examples
                .push(format!("{what}; frame starts {}", head.join("")));
        }
    }

    /// Checks one frame and counts the outcome.
    pub fn check(&mut self, frame: &[u8]) {
        self.stats.sampled += 1;
        match self.verdict(frame) {
            Ok(backend) => {
                self.stats.ok += 1;
                if let Some(i) = backend {
                    self.stats.per_backend[i].1 += 1;
                }
            }
            Err(Failure::Foreign(why)) => {
                self.stats.foreign += 1;
                self.fail(&format!("foreign frame: {why}"), frame);
            }
            Err(Failure::Rewrite(why)) => {
                self.stats.bad_rewrite += 1;
                self.fail(&format!("bad rewrite: {why}"), frame);
            }
            Err(Failure::Checksum(why)) => {
                self.stats.bad_checksum += 1;
                self.fail(&format!("bad checksum: {why}"), frame);
            }
        }
    }

    /// Ok(index of the backend it went to, for DR/NAT) or why not.
    fn verdict(&self, frame: &[u8]) -> Result<Option<usize>, Failure> {
        let p = SlicedPacket::from_ethernet(frame)
            .map_err(|e| Failure::Foreign(format!("does not parse: {e}")))?;
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            return Err(Failure::Foreign("not IPv4".into()));
        };
        let h = ip.header();
        let src = u32::from_be_bytes(h.source());
        if src.wrapping_sub(self.src_first) >= self.src_count {
            return Err(Failure::Foreign(format!(
                "source {} outside the generated range",
                Ipv4Addr::from(src)
            )));
        }
        if internet_checksum(&[h.slice()]) != 0 {
            return Err(Failure::Checksum("IPv4 header".into()));
        }
        let l4 = ip.payload().payload;
        let dst_port = match (&p.transport, self.proto) {
            (Some(TransportSlice::Tcp(t)), Proto::Tcp) => t.destination_port(),
            (Some(TransportSlice::Udp(u)), Proto::Udp) => u.destination_port(),
            _ => return Err(Failure::Foreign("not the generated protocol".into())),
        };
        if transport_checksum(h.source(), h.destination(), h.protocol().0, l4) != 0 {
            return Err(Failure::Checksum(format!("{:?}", self.proto)));
        }
        let dst_mac: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
        let src_mac: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        let dst_ip = h.destination();
        let to_vip = dst_ip == self.vip && dst_port == self.vip_port;
        let rewrite = |why: String| Err(Failure::Rewrite(why));
        match &self.expect {
            Expect::Unchanged => {
                if dst_mac != self.dst_mac || !self.src_macs.contains(&src_mac) || !to_vip {
                    return rewrite("expected the frame unchanged".into());
                }
                Ok(None)
            }
            Expect::MacSwap => {
                if !self.src_macs.contains(&dst_mac) || src_mac != self.dst_mac || !to_vip {
                    return rewrite("expected only the MACs swapped".into());
                }
                Ok(None)
            }
            Expect::Dr(backends) => {
                if !to_vip {
                    return rewrite(format!(
                        "DR changed the destination to {}:{dst_port}",
                        Ipv4Addr::from(dst_ip)
                    ));
                }
                match backends.iter().position(|b| *b == dst_mac) {
                    Some(i) => Ok(Some(i)),
                    None => rewrite(format!(
                        "destination MAC {} is no backend's",
                        mac_string(&dst_mac)
                    )),
                }
            }
            Expect::Nat(backends) => {
                let to = (Ipv4Addr::from(dst_ip), dst_port);
                match backends.iter().position(|b| *b == to) {
                    Some(i) => Ok(Some(i)),
                    None => rewrite(format!("destination {}:{} is no backend", to.0, to.1)),
                }
            }
        }
    }
}

enum Failure {
    Foreign(String),
    Rewrite(String),
    Checksum(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{FrameBuilder, FrameSize};

    fn traffic(proto: Proto) -> Traffic {
        Traffic {
            proto,
            size: FrameSize::Fixed(64),
            flows: 100,
            syn_share: 0.0,
            src_macs: MacRange::single([2, 0, 0, 0, 0, 1]),
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ips: "198.18.0.0/24".parse().unwrap(),
            src_ports: "1024-65535".parse().unwrap(),
            dst_ip: u32::from(Ipv4Addr::new(198, 18, 100, 1)),
            dst_port: 80,
        }
    }

    fn frame(proto: Proto) -> Vec<u8> {
        let mut g = FrameBuilder::new(traffic(proto)).unwrap();
        let mut buf = vec![0u8; 64];
        let n = g.write_next(&mut buf, 99);
        buf.truncate(n);
        buf
    }

    /// Sum of 16-bit words as a real NAT would fix a checksum: full
    /// recomputation over the rewritten segment.
    fn nat(buf: &mut [u8], ip: [u8; 4], port: u16) {
        buf[30..34].copy_from_slice(&ip);
        buf[24..26].copy_from_slice(&[0, 0]);
        let ck = internet_checksum(&[&buf[14..34]]);
        buf[24..26].copy_from_slice(&ck.to_be_bytes());
        buf[36..38].copy_from_slice(&port.to_be_bytes());
        buf[50..52].copy_from_slice(&[0, 0]);
        let (src, dst) = (buf[26..30].try_into().unwrap(), ip);
        let ck = transport_checksum(src, dst, 6, &buf[34..]);
        buf[50..52].copy_from_slice(&ck.to_be_bytes());
    }

    #[test]
    fn a_source_mac_range_is_checked_as_a_range() {
        let mut t = traffic(Proto::Tcp);
        t.src_macs = "02:00:00:00:01:00-02:00:00:00:01:0f".parse().unwrap();
        let mut f = frame(Proto::Tcp);
        f[6..12].copy_from_slice(&t.src_macs.first);
        let mut c = Checker::new(&t, Expect::Unchanged);
        let mut other = f.clone();
        other[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 9]);
        c.check(&f);
        c.check(&other);
        other[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 0x10]);
        c.check(&other);
        assert_eq!((c.stats.ok, c.stats.bad_rewrite), (2, 1));
        let mut swapped = f.clone();
        swapped[0..6].copy_from_slice(&[2, 0, 0, 0, 1, 0xf]);
        swapped[6..12].copy_from_slice(&t.dst_mac);
        let mut c = Checker::new(&t, Expect::MacSwap);
        c.check(&swapped);
        swapped[0..6].copy_from_slice(&[2, 0, 0, 0, 2, 0]);
        c.check(&swapped);
        assert_eq!((c.stats.ok, c.stats.bad_rewrite), (1, 1));
    }

    #[test]
    fn each_mode_accepts_its_rewrite_and_refuses_others() {
        let t = traffic(Proto::Tcp);
        let f = frame(Proto::Tcp);
        let mut c = Checker::new(&t, Expect::Unchanged);
        c.check(&f);
        assert_eq!(c.stats.ok, 1);

        let mut swapped = f.clone();
        swapped[0..6].copy_from_slice(&t.src_macs.first);
        swapped[6..12].copy_from_slice(&t.dst_mac);
        let mut c = Checker::new(&t, Expect::MacSwap);
        c.check(&swapped);
        c.check(&f);
        assert_eq!((c.stats.ok, c.stats.bad_rewrite), (1, 1));

        let b = [[2, 0, 0, 0, 9, 1], [2, 0, 0, 0, 9, 2]];
        let mut dr = f.clone();
        dr[0..6].copy_from_slice(&b[1]);
        let mut c = Checker::new(&t, Expect::Dr(b.to_vec()));
        c.check(&dr);
        c.check(&f);
        assert_eq!((c.stats.ok, c.stats.bad_rewrite), (1, 1));
        assert_eq!(c.stats.per_backend[1].1, 1);
        assert_eq!(c.stats.examples.len(), 1);

        let backends = vec![(Ipv4Addr::new(198, 18, 2, 1), 8080)];
        let mut n = f.clone();
        nat(&mut n, [198, 18, 2, 1], 8080);
        let mut c = Checker::new(&t, Expect::Nat(backends.clone()));
        c.check(&n);
        let mut wrong_port = f.clone();
        nat(&mut wrong_port, [198, 18, 2, 1], 8081);
        c.check(&wrong_port);
        assert_eq!((c.stats.ok, c.stats.bad_rewrite), (1, 1));

        // A NAT that forgot the TCP checksum.
        let mut lazy = f.clone();
        lazy[30..34].copy_from_slice(&[198, 18, 2, 1]);
        lazy[24..26].copy_from_slice(&[0, 0]);
        let ck = internet_checksum(&[&lazy[14..34]]);
        lazy[24..26].copy_from_slice(&ck.to_be_bytes());
        c.check(&lazy);
        assert_eq!(c.stats.bad_checksum, 1);
    }

    #[test]
    fn foreign_and_broken_frames_are_counted_not_panicked_on() {
        let t = traffic(Proto::Udp);
        let mut c = Checker::new(&t, Expect::Unchanged);
        let f = frame(Proto::Udp);
        for n in 0..f.len() {
            c.check(&f[..n]);
        }
        c.check(&frame(Proto::Tcp));
        let mut other = f.clone();
        other[26..30].copy_from_slice(&[10, 0, 0, 1]);
        c.check(&other);
        let mut bad = f.clone();
        bad[22] ^= 0x01; // TTL: the IPv4 header checksum is now wrong
        c.check(&bad);
        assert_eq!(c.stats.ok, 0);
        assert_eq!(c.stats.sampled, f.len() as u64 + 3);
        assert!(c.stats.foreign >= f.len() as u64);
        assert!(c.stats.bad_checksum >= 1);
        assert_eq!(c.stats.examples.len(), MAX_EXAMPLES);
    }
}
