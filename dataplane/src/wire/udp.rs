//! UDP datagrams (RFC 768) with the IPv4 pseudo-header checksum.
//!
//! Over IPv4 a checksum field of 0 means "not computed": verification
//! passes, and the incremental rewrite helpers leave it at 0. A computed
//! checksum of 0 is sent as `0xffff` (see [`crate::checksum`]).

use super::{get_u16, set_u16, Field, Rest, WireError, IPPROTO_UDP};
use crate::checksum;
use std::net::Ipv4Addr;

mod field {
    use super::{Field, Rest};
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of a UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of a UDP datagram. `new_checked` guarantees
/// `8 <= length <= buffer.len()`; the datagram (and the checksum) ends at
/// `length`, whatever follows in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

/// The value to store after an incremental update of a UDP checksum: 0 is
/// reserved for "no checksum", so a computed 0 goes out as its other
/// ones'-complement spelling.
#[inline(always)]
fn nonzero(cksum: u16) -> u16 {
    if cksum == 0 {
        0xffff
    } else {
        cksum
    }
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Wraps `buffer`. Refuses: fewer than 8 bytes or fewer than the length
    /// field says ([`WireError::Truncated`]); length field below 8
    /// ([`WireError::BadLength`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(get_u16(data, field::LENGTH));
        if len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if len > data.len() {
            return Err(WireError::Truncated);
        }
        Ok(UdpDatagram { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header plus payload, in bytes.
    #[inline]
    pub fn length(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum as found in the datagram (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload: from byte 8 to `length`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.length())]
    }

    /// Partial sum of the pseudo-header and the datagram.
    #[inline]
    fn sum_with_pseudo(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let len = self.length();
        checksum::pseudo_header_v4(u32::from(src), u32::from(dst), IPPROTO_UDP, len)
            + checksum::sum16(&self.buffer.as_ref()[..usize::from(len)])
    }

    /// True if the checksum, with the IPv4 pseudo-header of `src` and
    /// `dst`, is correct, or absent (0).
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::fold(self.sum_with_pseudo(src, dst)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    /// Makes a UDP datagram of exactly `buffer` (8 to 65535 bytes) for
    /// building with the setters: length = `buffer.len()`, ports and
    /// checksum zero.
    #[inline]
    pub fn init(mut buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_mut();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let Ok(len) = u16::try_from(data.len()) else {
            return Err(WireError::BadLength);
        };
        data[..HEADER_LEN].fill(0);
        set_u16(data, field::LENGTH, len);
        Ok(UdpDatagram { buffer })
    }

    /// Sets the source port (checksum untouched).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port (checksum untouched).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field: [`WireError::BadLength`] below 8,
    /// [`WireError::Truncated`] beyond the buffer; nothing changes on error.
    #[inline]
    pub fn set_length(&mut self, len: u16) -> Result<(), WireError> {
        if usize::from(len) < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if usize::from(len) > self.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        set_u16(self.buffer.as_mut(), field::LENGTH, len);
        Ok(())
    }

    /// Sets the checksum field (0: none).
    #[inline]
    pub fn set_checksum(&mut self, cksum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, cksum);
    }

    /// Computes the checksum with the IPv4 pseudo-header and stores it,
    /// as `0xffff` if it computes to 0.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let cksum = !checksum::fold(self.sum_with_pseudo(src, dst));
        self.set_checksum(nonzero(cksum));
    }

    /// Incremental update of a 16-bit word, keeping "no checksum" as is.
    #[inline(always)]
    fn update_checksum16(&mut self, old: u16, new: u16) {
        let cksum = self.checksum();
        if cksum != 0 {
            self.set_checksum(nonzero(checksum::update16(cksum, old, new)));
        }
    }

    /// Sets the source port and updates the checksum incrementally (if
    /// there is one).
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port();
        self.set_src_port(port);
        self.update_checksum16(old, port);
    }

    /// Sets the destination port and updates the checksum incrementally (if
    /// there is one).
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        self.set_dst_port(port);
        self.update_checksum16(old, port);
    }

    /// Updates the checksum incrementally (if there is one) for an IPv4
    /// address of the pseudo-header that changed from `old` to `new` (see
    /// `Ipv4Packet::rewrite_dst_addr`, which returns `old`).
    #[inline]
    pub fn adjust_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let cksum = self.checksum();
        if cksum != 0 {
            let c = checksum::update32(cksum, u32::from(old), u32::from(new));
            self.set_checksum(nonzero(c));
        }
    }

    /// The payload (byte 8 to `length`), writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Ipv4Packet;
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    /// DNS query "example.com A" from port 54321 to 53 (odd length: 37).
    const DNS_QUERY: [u8; 37] = [
        0xd4, 0x31, 0x00, 0x35, // 54321 -> 53
        0x00, 0x25, 0x95, 0xed, // length 37, checksum
        0xab, 0xcd, 0x01, 0x00, // id, flags RD
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1 question
        0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', // "example"
        0x03, b'c', b'o', b'm', 0x00, // "com"
        0x00, 0x01, 0x00, 0x01, // A, IN
    ];

    #[test]
    fn parse_dns() {
        let d = UdpDatagram::new_checked(&DNS_QUERY[..]).unwrap();
        assert_eq!(d.src_port(), 54321);
        assert_eq!(d.dst_port(), 53);
        assert_eq!(d.length(), 37);
        assert_eq!(d.checksum(), 0x95ed);
        assert_eq!(d.payload(), &DNS_QUERY[8..]);
        assert!(d.verify_checksum(SRC, DST));
        assert!(!d.verify_checksum(SRC, Ipv4Addr::new(8, 8, 4, 4)));
    }

    #[test]
    fn build_dns() {
        let mut buf = [0x55u8; 37];
        let mut d = UdpDatagram::init(&mut buf[..]).unwrap();
        d.set_src_port(54321);
        d.set_dst_port(53);
        d.payload_mut().copy_from_slice(&DNS_QUERY[8..]);
        d.fill_checksum(SRC, DST);
        assert_eq!(buf, DNS_QUERY);
    }

    #[test]
    fn length_bounds_payload() {
        // Trailing bytes after `length` are neither payload nor summed.
        let mut buf = [0u8; 41];
        buf[..37].copy_from_slice(&DNS_QUERY);
        buf[37..].copy_from_slice(&[1, 2, 3, 4]);
        let mut d = UdpDatagram::new_checked(&mut buf[..]).unwrap();
        assert_eq!(d.payload().len(), 29);
        assert!(d.verify_checksum(SRC, DST));
        assert_eq!(d.set_length(7), Err(WireError::BadLength));
        assert_eq!(d.set_length(42), Err(WireError::Truncated));
        d.set_length(41).unwrap();
        assert_eq!(d.payload_mut().len(), 33);
        assert!(!d.verify_checksum(SRC, DST));
    }

    #[test]
    fn refused() {
        assert_eq!(
            UdpDatagram::new_checked(&DNS_QUERY[..7]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            UdpDatagram::new_checked(&DNS_QUERY[..36]),
            Err(WireError::Truncated)
        );
        let mut bad = DNS_QUERY;
        bad[5] = 7;
        assert_eq!(
            UdpDatagram::new_checked(&bad[..]),
            Err(WireError::BadLength)
        );
        assert_eq!(
            UdpDatagram::init(vec![0u8; 65536]),
            Err(WireError::BadLength)
        );
        assert_eq!(
            UdpDatagram::init(&mut [0u8; 7][..]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn no_checksum() {
        let mut buf = DNS_QUERY;
        let mut d = UdpDatagram::new_checked(&mut buf[..]).unwrap();
        d.set_checksum(0);
        assert!(d.verify_checksum(SRC, Ipv4Addr::new(1, 1, 1, 1)));
        d.rewrite_dst_port(5353);
        d.adjust_checksum_for_addr(DST, SRC);
        assert_eq!(d.checksum(), 0);
        assert_eq!(d.dst_port(), 5353);
    }

    #[test]
    fn zero_checksum_sent_as_ffff() {
        // Pick the last two payload bytes so that the sum is 0xffff and the
        // checksum computes to 0: pseudo-header + header + payload.
        let mut buf = [0u8; 10];
        let mut d = UdpDatagram::init(&mut buf[..]).unwrap();
        d.set_src_port(1);
        d.set_dst_port(2);
        let partial = checksum::fold(d.sum_with_pseudo(SRC, DST));
        d.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        assert_eq!(checksum::fold(d.sum_with_pseudo(SRC, DST)), 0xffff);
        d.fill_checksum(SRC, DST);
        assert_eq!(d.checksum(), 0xffff);
        assert!(d.verify_checksum(SRC, DST));

        // An incremental update that lands on 0 must also give 0xffff:
        // start from a datagram whose port change makes the sum 0xffff.
        let mut buf = [0u8; 10];
        let mut d = UdpDatagram::init(&mut buf[..]).unwrap();
        d.set_src_port(1);
        d.set_dst_port(2);
        d.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        d.set_dst_port(3); // one more than the 0xffff case
        d.fill_checksum(SRC, DST);
        assert_ne!(d.checksum(), 0xffff);
        d.rewrite_dst_port(2);
        assert_eq!(d.checksum(), 0xffff);
        assert!(d.verify_checksum(SRC, DST));
    }

    #[test]
    fn matches_etherparse() {
        let builder =
            etherparse::PacketBuilder::ipv4([10, 0, 0, 5], [8, 8, 8, 8], 64).udp(54321, 53);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, &DNS_QUERY[8..]).unwrap();
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(ip.payload(), &DNS_QUERY[..]);
        let mut bytes = ip.payload().to_vec();
        let mut d = UdpDatagram::new_checked(&mut bytes[..]).unwrap();
        d.fill_checksum(SRC, DST);
        assert_eq!(d.checksum(), 0x95ed);
    }

    /// A random IPv4 + UDP packet with correct checksums (UDP checksum 0 =
    /// none in a quarter of the cases).
    fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<(u32, u32, u16, u16)>(),
            0u8..4,
            proptest::collection::vec(any::<u8>(), 0..100),
        )
            .prop_map(|((src, dst, sport, dport), no_cksum, payload)| {
                let mut buf = vec![0u8; 28 + payload.len()];
                let mut ip = Ipv4Packet::init(&mut buf[..]).unwrap();
                ip.set_protocol(IPPROTO_UDP);
                ip.set_ttl(64);
                ip.set_src_addr_raw(src);
                ip.set_dst_addr_raw(dst);
                ip.fill_checksum();
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                let mut d = UdpDatagram::init(ip.payload_mut()).unwrap();
                d.set_src_port(sport);
                d.set_dst_port(dport);
                d.payload_mut().copy_from_slice(&payload);
                if no_cksum != 0 {
                    d.fill_checksum(src, dst);
                }
                buf
            })
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), len in 0u16..210) {
            let mut data = data;
            if data.len() >= 6 {
                // Often a plausible length, so the accessors get exercised.
                data[4..6].copy_from_slice(&len.to_be_bytes());
            }
            let (a, b) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
            if let Ok(d) = UdpDatagram::new_checked(&data[..]) {
                let _ = (
                    d.src_port(), d.dst_port(), d.length(), d.checksum(), d.payload(),
                    d.verify_checksum(a, b),
                );
                let mut copy = data.clone();
                let mut d = UdpDatagram::new_checked(&mut copy[..]).unwrap();
                d.fill_checksum(a, b);
                prop_assert!(d.checksum() != 0);
                prop_assert!(d.verify_checksum(a, b));
                d.rewrite_dst_port(1);
                d.rewrite_src_port(2);
                d.adjust_checksum_for_addr(b, a);
                prop_assert!(d.verify_checksum(a, a));
                let _ = d.set_length(0);
                let _ = d.set_length(u16::MAX);
                let _ = d.payload_mut().len();
                prop_assert!(UdpDatagram::new_checked(&copy[..]).is_ok());
            }
        }

        /// NAT of destination address and port (and source) done
        /// incrementally gives the same checksum as a full recomputation,
        /// and "no checksum" stays "no checksum".
        #[test]
        fn nat_rewrite_matches_fill(
            mut pkt in arb_packet(),
            new_dst in any::<u32>(), new_dport in any::<u16>(),
            new_src in any::<u32>(), new_sport in any::<u16>(),
            snat in any::<bool>(),
        ) {
            let mut ip = Ipv4Packet::new_checked(&mut pkt[..]).unwrap();
            let old_dst = ip.rewrite_dst_addr(Ipv4Addr::from(new_dst));
            let old_src = snat.then(|| ip.rewrite_src_addr(Ipv4Addr::from(new_src)));
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            prop_assert!(ip.verify_checksum());

            let mut d = UdpDatagram::new_checked(ip.payload_mut()).unwrap();
            let had_checksum = d.checksum() != 0;
            d.adjust_checksum_for_addr(old_dst, dst);
            d.rewrite_dst_port(new_dport);
            if let Some(old_src) = old_src {
                d.adjust_checksum_for_addr(old_src, src);
                d.rewrite_src_port(new_sport);
            }
            let incremental = d.checksum();
            prop_assert!(d.verify_checksum(src, dst));
            if had_checksum {
                d.fill_checksum(src, dst);
                prop_assert_eq!(incremental, d.checksum());
            } else {
                prop_assert_eq!(incremental, 0);
            }
        }
    }
}
