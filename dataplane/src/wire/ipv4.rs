//! IPv4 headers (RFC 791), options allowed.

use super::{get_u16, get_u32, set_u16, set_u32, Field, WireError};
use crate::checksum;
use std::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = field::DST.end;
/// Length of an IPv4 header with the most options (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet: header (with options) and payload.
///
/// `new_checked` guarantees `20 <= header_len <= total_len <= buffer.len()`.
/// The buffer may extend past `total_len` (Ethernet padding, or an mbuf
/// whose data length was rounded up); [`Ipv4Packet::payload`] stops at
/// `total_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer`. Refuses: fewer than 20 bytes or fewer than the total
    /// length ([`WireError::Truncated`]); version not 4
    /// ([`WireError::BadVersion`]); IHL below 5
    /// ([`WireError::BadHeaderLength`]); total length below the header
    /// length ([`WireError::BadTotalLength`]). The checksum is not checked
    /// (see [`Ipv4Packet::verify_checksum`]): NICs usually do it already.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let ver_ihl = data[field::VER_IHL];
        if ver_ihl >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = usize::from(ver_ihl & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        let total_len = usize::from(get_u16(data, field::LENGTH));
        if total_len < header_len {
            return Err(WireError::BadTotalLength);
        }
        if total_len > data.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version: always 4 for a checked packet.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), 20 to 60.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length (header plus payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// True for any fragment, first included (MF set or offset non-zero):
    /// only the first fragment has the L4 ports, so a load balancer cannot
    /// hash fragments by 5-tuple.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (`IPPROTO_TCP`, `IPPROTO_UDP`, ...).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as found in the packet.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_addr_raw())
    }

    /// Source address as a host-order `u32` (`u32::from(src_addr())`).
    #[inline]
    pub fn src_addr_raw(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_addr_raw())
    }

    /// Destination address as a host-order `u32`.
    #[inline]
    pub fn dst_addr_raw(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::DST)
    }

    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The option bytes (empty for IHL 5), unparsed.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to `total_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[self.header_len()..usize::from(self.total_len())]
    }

    /// True if the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let h = self.header();
        // The common header without options: five 32-bit words, summed
        // without the general loop (this runs on every packet).
        if let Ok(w) = <&[u8; 20]>::try_from(h) {
            let word =
                |i: usize| u64::from(u32::from_ne_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]]));
            let sum = word(0) + word(4) + word(8) + word(12) + word(16);
            return checksum::fold(sum) == 0xffff;
        }
        checksum::fold(checksum::sum16(h)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Makes an IPv4 packet of exactly `buffer` (20 to 65535 bytes) for
    /// building with the setters: version 4, IHL 5, total length =
    /// `buffer.len()`, every other header field zero.
    #[inline]
    pub fn init(mut buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_mut();
        if data.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let Ok(total_len) = u16::try_from(data.len()) else {
            return Err(WireError::BadTotalLength);
        };
        data[..MIN_HEADER_LEN].fill(0);
        data[field::VER_IHL] = 0x45;
        set_u16(data, field::LENGTH, total_len);
        Ok(Ipv4Packet { buffer })
    }

    /// Sets the header length in bytes: a multiple of 4 from 20 to 60 and
    /// at most the total length, else [`WireError::BadHeaderLength`] and
    /// nothing changes. Option bytes are not touched.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) -> Result<(), WireError> {
        if !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&len)
            || len & 3 != 0
            || len > usize::from(self.total_len())
        {
            return Err(WireError::BadHeaderLength);
        }
        let data = self.buffer.as_mut();
        data[field::VER_IHL] = 0x40 | (len / 4) as u8;
        Ok(())
    }

    /// Sets the DSCP (low 6 bits used).
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let data = self.buffer.as_mut();
        data[field::DSCP_ECN] = (data[field::DSCP_ECN] & 0x03) | (dscp << 2);
    }

    /// Sets the ECN bits (low 2 bits used).
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let data = self.buffer.as_mut();
        data[field::DSCP_ECN] = (data[field::DSCP_ECN] & !0x03) | (ecn & 0x03);
    }

    /// Sets the total length: [`WireError::BadTotalLength`] below the header
    /// length, [`WireError::Truncated`] beyond the buffer; nothing changes
    /// on error.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) -> Result<(), WireError> {
        if usize::from(len) < self.header_len() {
            return Err(WireError::BadTotalLength);
        }
        if usize::from(len) > self.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        set_u16(self.buffer.as_mut(), field::LENGTH, len);
        Ok(())
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    #[inline]
    fn set_flg_off(&mut self, mask: u16, bits: u16) {
        let v = get_u16(self.buffer.as_ref(), field::FLG_OFF);
        set_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            (v & !mask) | (bits & mask),
        );
    }

    /// Sets the don't-fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, df: bool) {
        self.set_flg_off(FLAG_DF, if df { FLAG_DF } else { 0 });
    }

    /// Sets the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, mf: bool) {
        self.set_flg_off(FLAG_MF, if mf { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        self.set_flg_off(OFFSET_MASK, offset >> 3);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, cksum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, cksum);
    }

    /// Sets the source address (checksum untouched).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.set_src_addr_raw(u32::from(addr));
    }

    /// Sets the source address from a host-order `u32`.
    #[inline]
    pub fn set_src_addr_raw(&mut self, addr: u32) {
        set_u32(self.buffer.as_mut(), field::SRC, addr);
    }

    /// Sets the destination address (checksum untouched).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.set_dst_addr_raw(u32::from(addr));
    }

    /// Sets the destination address from a host-order `u32`.
    #[inline]
    pub fn set_dst_addr_raw(&mut self, addr: u32) {
        set_u32(self.buffer.as_mut(), field::DST, addr);
    }

    /// Computes the header checksum and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let cksum = checksum::internet_checksum(self.header());
        self.set_checksum(cksum);
    }

    /// Sets the source address and updates the header checksum
    /// incrementally (RFC 1624). Returns the old address, which the caller
    /// needs to adjust the TCP/UDP checksum
    /// (`TcpSegment::adjust_checksum_for_addr`).
    #[inline]
    pub fn rewrite_src_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr_raw();
        let new = u32::from(addr);
        self.set_src_addr_raw(new);
        self.set_checksum(checksum::update32(self.checksum(), old, new));
        Ipv4Addr::from(old)
    }

    /// Sets the destination address and updates the header checksum
    /// incrementally. Returns the old address.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr_raw();
        let new = u32::from(addr);
        self.set_dst_addr_raw(new);
        self.set_checksum(checksum::update32(self.checksum(), old, new));
        Ipv4Addr::from(old)
    }

    /// Swaps source and destination addresses (to answer a packet). The
    /// header checksum and L4 pseudo-header sums are unchanged, since a sum
    /// does not depend on the order of its terms.
    #[inline]
    pub fn swap_addrs(&mut self) {
        let src = self.src_addr_raw();
        let dst = self.dst_addr_raw();
        self.set_src_addr_raw(dst);
        self.set_dst_addr_raw(src);
    }

    /// The option bytes, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..hl]
    }

    /// The payload (header end to `total_len`), writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IPPROTO_TCP, IPPROTO_UDP};
    use super::*;
    use proptest::prelude::*;

    /// IGMPv3 report to 224.0.0.22 with the Router Alert option (IHL 6),
    /// followed by 4 bytes of Ethernet padding that are not part of it.
    const WITH_OPTIONS: [u8; 36] = [
        0x46, 0xc0, 0x00, 0x20, // v4, IHL 6, DSCP 48 (CS6), len 32
        0x00, 0x00, 0x40, 0x00, // ident 0, DF
        0x01, 0x02, 0x43, 0x58, // TTL 1, IGMP, checksum
        0xc0, 0xa8, 0x00, 0x01, // 192.168.0.1
        0xe0, 0x00, 0x00, 0x16, // 224.0.0.22
        0x94, 0x04, 0x00, 0x00, // Router Alert
        0x22, 0x00, 0xea, 0x03, 0x00, 0x00, 0x00, 0x00, // IGMP
        0xde, 0xad, 0xbe, 0xef, // padding
    ];

    /// A UDP packet header (no options), a fragment: MF set, offset 1480.
    const FRAGMENT: [u8; 20] = [
        0x45, 0x00, 0x00, 0x14, // len 20
        0x1c, 0x46, 0x20, 0xb9, // ident 0x1c46, MF, offset 185*8
        0x40, 0x11, 0x00, 0x00, // TTL 64, UDP, checksum (filled in test)
        0x0a, 0x01, 0x02, 0x03, //
        0x0a, 0x04, 0x05, 0x06, //
    ];

    #[test]
    fn parse_with_options() {
        let p = Ipv4Packet::new_checked(&WITH_OPTIONS[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp(), 48);
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.total_len(), 32);
        assert_eq!(p.ident(), 0);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 1);
        assert_eq!(p.protocol(), 2);
        assert_eq!(p.checksum(), 0x4358);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.src_addr_raw(), 0xc0a8_0001);
        assert_eq!(p.dst_addr(), Ipv4Addr::new(224, 0, 0, 22));
        assert_eq!(p.dst_addr_raw(), 0xe000_0016);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.header(), &WITH_OPTIONS[..24]);
        // Stops at total_len, not at the end of the buffer.
        assert_eq!(p.payload(), &WITH_OPTIONS[24..32]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn build_with_options() {
        let mut buf = [0xffu8; 36];
        let mut p = Ipv4Packet::init(&mut buf[..32]).unwrap();
        assert_eq!(p.set_header_len(26), Err(WireError::BadHeaderLength));
        p.set_header_len(24).unwrap();
        p.set_dscp(48);
        p.set_dont_frag(true);
        p.set_ttl(1);
        p.set_protocol(2);
        p.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(224, 0, 0, 22));
        p.options_mut().copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        p.payload_mut().copy_from_slice(&WITH_OPTIONS[24..32]);
        p.fill_checksum();
        buf[32..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf, WITH_OPTIONS);
    }

    #[test]
    fn fragment_fields() {
        let mut buf = FRAGMENT;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.more_frags());
        assert!(!p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert_eq!(p.protocol(), IPPROTO_UDP);
        assert!(p.payload().is_empty());
        // Last fragment: offset only.
        p.set_more_frags(false);
        assert!(p.is_fragment());
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
        p.set_more_frags(true);
        assert!(p.is_fragment());
        p.set_frag_offset(1480);
        p.set_ecn(3);
        p.set_dscp(0);
        assert_eq!(p.ecn(), 3);
        assert_eq!(p.dscp(), 0);
        p.set_ecn(0);
        assert_eq!(&buf[..10], &FRAGMENT[..10]);
    }

    #[test]
    fn bad_checksum_fails_verify() {
        let mut buf = FRAGMENT;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert!(!p.verify_checksum()); // checksum field still zero
        p.fill_checksum();
        assert!(p.verify_checksum());
        let good = p.checksum();
        p.set_checksum(good ^ 0x0100);
        assert!(!p.verify_checksum());
        p.set_checksum(good);
        // A flipped bit elsewhere in the header is caught too.
        p.set_ttl(63);
        assert!(!p.verify_checksum());
    }

    #[test]
    fn refused() {
        let mut b = WITH_OPTIONS;
        assert_eq!(Ipv4Packet::new_checked(&b[..19]), Err(WireError::Truncated));
        // Cut inside the payload: total_len says 32.
        assert_eq!(Ipv4Packet::new_checked(&b[..31]), Err(WireError::Truncated));
        assert!(Ipv4Packet::new_checked(&b[..32]).is_ok());
        b[0] = 0x66;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(WireError::BadHeaderLength)
        );
        // IHL 15 (60 bytes) with a total length of 32.
        b[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(WireError::BadTotalLength)
        );
        b[0] = 0x46;
        b[3] = 23; // total length below the 24-byte header
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]),
            Err(WireError::BadTotalLength)
        );
    }

    #[test]
    fn length_setters_keep_view_consistent() {
        let mut buf = WITH_OPTIONS;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.set_total_len(23), Err(WireError::BadTotalLength));
        assert_eq!(p.set_total_len(37), Err(WireError::Truncated));
        p.set_total_len(36).unwrap();
        assert_eq!(p.payload().len(), 12);
        p.set_total_len(24).unwrap();
        assert_eq!(p.set_header_len(28), Err(WireError::BadHeaderLength));
        assert_eq!(p.set_header_len(16), Err(WireError::BadHeaderLength));
        assert_eq!(p.set_header_len(64), Err(WireError::BadHeaderLength));
        p.set_header_len(20).unwrap();
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 4);
        assert_eq!(
            Ipv4Packet::init(&mut [0u8; 19][..]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Ipv4Packet::init(vec![0u8; 65536]),
            Err(WireError::BadTotalLength)
        );
    }

    #[test]
    fn rewrite_and_swap() {
        let mut buf = WITH_OPTIONS;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        let old = p.rewrite_dst_addr(Ipv4Addr::new(10, 9, 8, 7));
        assert_eq!(old, Ipv4Addr::new(224, 0, 0, 22));
        assert!(p.verify_checksum());
        let old = p.rewrite_src_addr(Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(old, Ipv4Addr::new(192, 168, 0, 1));
        assert!(p.verify_checksum());
        let cks = p.checksum();
        p.swap_addrs();
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 9, 8, 7));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(p.checksum(), cks);
        assert!(p.verify_checksum());
    }

    #[test]
    fn matches_etherparse() {
        let builder =
            etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1234, 80, 7, 512);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, b"payload").unwrap();
        let mut p = Ipv4Packet::new_checked(&mut pkt[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.protocol(), IPPROTO_TCP);
        let theirs = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), theirs);
    }

    fn arb_header() -> impl Strategy<Value = Vec<u8>> {
        (
            0usize..=10,
            any::<(u8, u8, u16, bool, bool, u16, u8, u8, u32, u32)>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(opt_words, f, payload)| {
                let (dscp, ecn, ident, df, mf, off, ttl, proto, src, dst) = f;
                let hl = 20 + 4 * opt_words;
                let mut buf = vec![0u8; hl + payload.len()];
                let mut p = Ipv4Packet::init(&mut buf[..]).unwrap();
                p.set_header_len(hl).unwrap();
                p.set_dscp(dscp);
                p.set_ecn(ecn);
                p.set_ident(ident);
                p.set_dont_frag(df);
                p.set_more_frags(mf);
                p.set_frag_offset(off);
                p.set_ttl(ttl);
                p.set_protocol(proto);
                p.set_src_addr_raw(src);
                p.set_dst_addr_raw(dst);
                // NOP options: etherparse accepts any bytes, so does this view.
                p.options_mut().fill(1);
                p.payload_mut().copy_from_slice(&payload);
                p.fill_checksum();
                buf
            })
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 4 {
                // Make the version and total length plausible so that the
                // accessors are exercised often, not just the refusals.
                data[0] = 0x40 | (data[0] & 0x0f);
                let len = (data.len() as u16).min(u16::from_be_bytes([data[2], data[3]]));
                data[2..4].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (
                    p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident(),
                    p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment(), p.ttl(),
                    p.protocol(), p.checksum(), p.src_addr(), p.dst_addr(), p.src_addr_raw(),
                    p.dst_addr_raw(), p.header(), p.options(), p.payload(), p.verify_checksum(),
                );
                prop_assert!(p.header_len() <= usize::from(p.total_len()));
                let mut copy = data.clone();
                let mut p = Ipv4Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                p.rewrite_dst_addr(Ipv4Addr::new(1, 2, 3, 4));
                prop_assert!(p.verify_checksum());
                let _ = p.set_header_len(60);
                let _ = p.set_total_len(0);
                let _ = p.set_total_len(u16::MAX);
                let _ = (p.options_mut().len(), p.payload_mut().len());
                prop_assert!(Ipv4Packet::new_checked(&copy[..]).is_ok());
            }
        }

        /// Our fields and checksum agree with etherparse on built headers.
        #[test]
        fn agrees_with_etherparse(buf in arb_header()) {
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            let (h, rest) = etherparse::Ipv4Header::from_slice(&buf).unwrap();
            prop_assert_eq!(h.calc_header_checksum(), p.checksum());
            prop_assert_eq!(h.header_checksum, p.checksum());
            prop_assert_eq!(h.header_len(), p.header_len());
            prop_assert_eq!(h.total_len, p.total_len());
            prop_assert_eq!(h.dscp.value(), p.dscp());
            prop_assert_eq!(h.ecn.value(), p.ecn());
            prop_assert_eq!(h.identification, p.ident());
            prop_assert_eq!(h.dont_fragment, p.dont_frag());
            prop_assert_eq!(h.more_fragments, p.more_frags());
            prop_assert_eq!(h.fragment_offset.value() * 8, p.frag_offset());
            prop_assert_eq!(h.time_to_live, p.ttl());
            prop_assert_eq!(h.protocol.0, p.protocol());
            prop_assert_eq!(Ipv4Addr::from(h.source), p.src_addr());
            prop_assert_eq!(Ipv4Addr::from(h.destination), p.dst_addr());
            prop_assert_eq!(h.options.as_slice(), p.options());
            prop_assert_eq!(rest, p.payload());
        }

        /// Incremental NAT of either address equals a full recomputation.
        #[test]
        fn rewrite_matches_fill(mut buf in arb_header(), new_src in any::<u32>(), new_dst in any::<u32>()) {
            let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
            p.rewrite_dst_addr(Ipv4Addr::from(new_dst));
            p.rewrite_src_addr(Ipv4Addr::from(new_src));
            let incremental = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(incremental, p.checksum());
        }
    }
}
