//! IPv6 fixed headers (RFC 8200). Extension headers are not walked:
//! [`Ipv6Packet::next_header`] tells what follows and
//! [`Ipv6Packet::payload`] is everything after the fixed header.

use super::{get_array, get_u16, get_u32, set_u16, set_u32, Field, Rest, WireError};
use std::net::Ipv6Addr;

mod field {
    use super::{Field, Rest};
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
    pub const PAYLOAD: Rest = 40..;
}

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an IPv6 packet. `new_checked` guarantees
/// `40 + payload_len <= buffer.len()`; the buffer may be longer (Ethernet
/// padding) and [`Ipv6Packet::payload`] stops at `payload_len`. Jumbograms
/// (payload length 0 with a Jumbo Payload option) are not supported: their
/// payload reads as empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer`. Refuses: fewer than 40 bytes or fewer than the
    /// payload length says ([`WireError::Truncated`]); version not 6
    /// ([`WireError::BadVersion`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if data[0] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(get_u16(data, field::LENGTH)) > data.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    fn ver_tc_flow(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// IP version: always 6 for a checked packet.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP in the high 6 bits, ECN in the low 2).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Payload length: bytes after the fixed header, extension headers
    /// included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header: the first extension header or the upper-layer protocol
    /// (`IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_ICMPV6`, ...).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_addr_bytes())
    }

    /// Source address as bytes (network order).
    #[inline]
    pub fn src_addr_bytes(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_addr_bytes())
    }

    /// Destination address as bytes (network order).
    #[inline]
    pub fn dst_addr_bytes(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::DST)
    }

    /// The payload: `payload_len` bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Makes an IPv6 packet of exactly `buffer` (40 to 40 + 65535 bytes)
    /// for building with the setters: version 6, payload length =
    /// `buffer.len() - 40`, every other header field zero.
    #[inline]
    pub fn init(mut buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_mut();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let Ok(payload_len) = u16::try_from(data.len() - HEADER_LEN) else {
            return Err(WireError::BadLength);
        };
        data[..HEADER_LEN].fill(0);
        data[0] = 0x60;
        set_u16(data, field::LENGTH, payload_len);
        Ok(Ipv6Packet { buffer })
    }

    #[inline(always)]
    fn set_ver_tc_flow(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let v = (self.ver_tc_flow() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_ver_tc_flow(v);
    }

    /// Sets the flow label (low 20 bits used).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let v = (self.ver_tc_flow() & 0xfff0_0000) | (label & 0x000f_ffff);
        self.set_ver_tc_flow(v);
    }

    /// Sets the payload length: [`WireError::Truncated`] if `40 + len`
    /// exceeds the buffer, and nothing changes.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) -> Result<(), WireError> {
        if HEADER_LEN + usize::from(len) > self.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        set_u16(self.buffer.as_mut(), field::LENGTH, len);
        Ok(())
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = nh;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IPPROTO_ICMPV6, IPPROTO_TCP};
    use super::*;
    use proptest::prelude::*;

    /// ICMPv6 echo request 2001:db8::1 -> 2001:db8::2, traffic class 0xb8
    /// (EF), flow label 0x12345, hop limit 64, plus 2 bytes of padding.
    const ECHO_PACKET: [u8; 54] = [
        0x6b, 0x81, 0x23, 0x45, // v6, TC 0xb8, flow 0x12345
        0x00, 0x0c, 0x3a, 0x40, // payload 12, ICMPv6, hop limit 64
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // dst
        0x80, 0x00, 0x33, 0x3e, 0x12, 0x34, 0x00, 0x01, b'p', b'i', b'n', b'g', // ICMPv6
        0xaa, 0xbb, // padding
    ];

    #[test]
    fn parse() {
        let p = Ipv6Packet::new_checked(&ECHO_PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.next_header(), IPPROTO_ICMPV6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.src_addr_bytes()[15], 1);
        assert_eq!(p.dst_addr_bytes()[..2], [0x20, 0x01]);
        assert_eq!(p.payload(), &ECHO_PACKET[40..52]);
    }

    #[test]
    fn build() {
        let mut buf = [0xffu8; 54];
        let mut p = Ipv6Packet::init(&mut buf[..52]).unwrap();
        p.set_flow_label(0xf_ffff);
        p.set_traffic_class(0xb8);
        p.set_flow_label(0x12345);
        p.set_next_header(IPPROTO_ICMPV6);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        p.payload_mut().copy_from_slice(&ECHO_PACKET[40..52]);
        buf[52..].copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, ECHO_PACKET);
    }

    #[test]
    fn refused() {
        assert_eq!(
            Ipv6Packet::new_checked(&ECHO_PACKET[..39]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&ECHO_PACKET[..51]),
            Err(WireError::Truncated)
        );
        let mut bad = ECHO_PACKET;
        bad[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&bad[..]),
            Err(WireError::BadVersion)
        );
        let mut buf = ECHO_PACKET;
        let mut p = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.set_payload_len(15), Err(WireError::Truncated));
        p.set_payload_len(14).unwrap();
        assert_eq!(p.payload().len(), 14);
        assert_eq!(
            Ipv6Packet::init(vec![0u8; 40 + 65536]),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn matches_etherparse() {
        let builder = etherparse::PacketBuilder::ipv6([0x20; 16], [0xfe; 16], 7).tcp(1, 2, 3, 4);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, b"xyz").unwrap();
        let p = Ipv6Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.next_header(), IPPROTO_TCP);
        assert_eq!(p.hop_limit(), 7);
        assert_eq!(p.src_addr_bytes(), [0x20; 16]);
        assert_eq!(p.dst_addr_bytes(), [0xfe; 16]);
        assert_eq!(usize::from(p.payload_len()), 20 + 3);
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), len in 0u16..170) {
            if data.len() >= 6 {
                data[0] = 0x60 | (data[0] & 0x0f);
                data[4..6].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (
                    p.version(), p.traffic_class(), p.flow_label(), p.payload_len(),
                    p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr(), p.payload(),
                );
                let mut copy = data.clone();
                let mut p = Ipv6Packet::new_checked(&mut copy[..]).unwrap();
                p.set_traffic_class(0xff);
                p.set_flow_label(u32::MAX);
                let _ = p.set_payload_len(u16::MAX);
                let _ = p.payload_mut().len();
                prop_assert!(Ipv6Packet::new_checked(&copy[..]).is_ok());
            }
        }
    }
}
