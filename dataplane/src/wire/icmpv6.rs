//! ICMPv6 (RFC 4443): the common 4-byte header, and the checksum with the
//! IPv6 pseudo-header.

use super::{get_u16, set_u16, Field, Rest, WireError, IPPROTO_ICMPV6};
use crate::checksum;
use std::net::Ipv6Addr;

mod field {
    use super::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const BODY: Rest = 4..;
}

/// Length of the common ICMPv6 header (type, code, checksum).
pub const HEADER_LEN: usize = field::BODY.start;

/// Type of a destination-unreachable message.
pub const DEST_UNREACHABLE: u8 = 1;
/// Type of a packet-too-big message (PMTU discovery).
pub const PACKET_TOO_BIG: u8 = 2;
/// Type of a time-exceeded message.
pub const TIME_EXCEEDED: u8 = 3;
/// Type of an echo request.
pub const ECHO_REQUEST: u8 = 128;
/// Type of an echo reply.
pub const ECHO_REPLY: u8 = 129;
/// Type of a router solicitation.
pub const ROUTER_SOLICIT: u8 = 133;
/// Type of a router advertisement.
pub const ROUTER_ADVERT: u8 = 134;
/// Type of a neighbor solicitation (the IPv6 ARP request).
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// Type of a neighbor advertisement (the IPv6 ARP reply).
pub const NEIGHBOR_ADVERT: u8 = 136;

/// A view of an ICMPv6 message: the whole upper-layer payload of the IPv6
/// packet, since the checksum covers all of it. Only the common header is
/// interpreted; the type-specific body is [`Icmpv6Packet::body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps `buffer`, refusing it if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv6Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type ([`ECHO_REQUEST`], [`NEIGHBOR_SOLICIT`], ...).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as found in the message.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The type-specific body: everything after the 4-byte header (for
    /// echo: identifier, sequence number, data).
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY]
    }

    /// Same as [`Icmpv6Packet::body`], named like the other views.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.body()
    }

    #[inline]
    fn sum_with_pseudo(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u32 {
        let data = self.buffer.as_ref();
        let len = data.len() as u32;
        checksum::pseudo_header_v6(&src.octets(), &dst.octets(), IPPROTO_ICMPV6, len)
            + checksum::sum16(data)
    }

    /// True if the checksum, with the IPv6 pseudo-header of `src` and
    /// `dst`, is correct. (ICMPv6, unlike ICMPv4, covers the addresses.)
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        checksum::fold(self.sum_with_pseudo(src, dst)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type (checksum untouched).
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Sets the message code (checksum untouched).
    #[inline]
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, cksum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, cksum);
    }

    /// Computes the checksum with the IPv6 pseudo-header and stores it.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let cksum = !checksum::fold(self.sum_with_pseudo(src, dst));
        self.set_checksum(cksum);
    }

    /// The body, writable.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY]
    }
}

#[cfg(test)]
mod tests {
    use super::super::ipv6::Ipv6Packet;
    use super::*;
    use proptest::prelude::*;

    /// Echo request 2001:db8::1 -> 2001:db8::2, identifier 0x1234, sequence
    /// 1, data "ping".
    const ECHO: [u8; 12] = [
        0x80, 0x00, 0x33, 0x3e, 0x12, 0x34, 0x00, 0x01, b'p', b'i', b'n', b'g',
    ];

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    }

    #[test]
    fn parse_echo() {
        let (src, dst) = addrs();
        let p = Icmpv6Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x333e);
        assert_eq!(p.body(), &ECHO[4..]);
        assert_eq!(p.payload(), p.body());
        assert!(p.verify_checksum(&src, &dst));
        assert!(!p.verify_checksum(&dst, &dst));
    }

    #[test]
    fn build_echo() {
        let (src, dst) = addrs();
        let mut buf = [0u8; 12];
        let mut p = Icmpv6Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(ECHO_REQUEST);
        p.set_code(0);
        p.body_mut().copy_from_slice(&ECHO[4..]);
        p.fill_checksum(&src, &dst);
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn in_ipv6_packet() {
        let (src, dst) = addrs();
        let mut buf = [0u8; 40 + 12];
        let mut ip = Ipv6Packet::init(&mut buf[..]).unwrap();
        ip.set_next_header(IPPROTO_ICMPV6);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.payload_mut().copy_from_slice(&ECHO);
        let ip = Ipv6Packet::new_checked(&buf[..]).unwrap();
        let p = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(
            Icmpv6Packet::new_checked(&ECHO[..3]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn matches_etherparse() {
        let (src, dst) = addrs();
        let builder = etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
            .icmpv6_echo_request(0x1234, 1);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, b"ping").unwrap();
        assert_eq!(&pkt[40..], &ECHO[..]);
        let mut p = Icmpv6Packet::new_checked(&mut pkt[40..]).unwrap();
        p.fill_checksum(&src, &dst);
        assert_eq!(p.checksum(), 0x333e);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (src, dst) = addrs();
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.body(), p.verify_checksum(&src, &dst));
                let mut copy = data.clone();
                let mut p = Icmpv6Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum(&src, &dst);
                prop_assert!(p.verify_checksum(&src, &dst));
                let _ = p.body_mut();
            }
        }
    }
}
