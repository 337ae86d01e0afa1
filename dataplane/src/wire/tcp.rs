//! TCP segments (RFC 9293), options allowed, with the IPv4 pseudo-header
//! checksum.

use super::{get_u16, get_u32, set_u16, set_u32, Field, WireError, IPPROTO_TCP};
use crate::checksum;
use std::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = field::URGENT.end;
/// Length of a TCP header with the most options (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// FIN flag bit of [`TcpSegment::flags`].
pub const FIN: u8 = 0x01;
/// SYN flag bit.
pub const SYN: u8 = 0x02;
/// RST flag bit.
pub const RST: u8 = 0x04;
/// PSH flag bit.
pub const PSH: u8 = 0x08;
/// ACK flag bit.
pub const ACK: u8 = 0x10;
/// URG flag bit.
pub const URG: u8 = 0x20;
/// ECE flag bit.
pub const ECE: u8 = 0x40;
/// CWR flag bit.
pub const CWR: u8 = 0x80;

/// A view of a TCP segment: header (with options) and payload. The buffer
/// is the whole segment and nothing else (for example
/// `Ipv4Packet::payload()`), since its length is the TCP length of the
/// pseudo-header and the payload runs to its end.
///
/// `new_checked` guarantees `20 <= header_len <= buffer.len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps `buffer`. Refuses: fewer than 20 bytes or fewer than the data
    /// offset says ([`WireError::Truncated`]); data offset below 5
    /// ([`WireError::BadHeaderLength`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(data[field::DATA_OFF] >> 4) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        if header_len > data.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpSegment { buffer })
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number (meaningful when [`ACK`] is set).
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4), 20 to 60.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The eight flag bits ([`FIN`] ... [`CWR`]) as one byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & FIN != 0
    }

    /// SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & SYN != 0
    }

    /// RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & RST != 0
    }

    /// PSH flag.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags() & PSH != 0
    }

    /// ACK flag (the acknowledgment number is [`TcpSegment::ack_number`]).
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & ACK != 0
    }

    /// URG flag.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags() & URG != 0
    }

    /// ECE flag.
    #[inline]
    pub fn ece(&self) -> bool {
        self.flags() & ECE != 0
    }

    /// CWR flag.
    #[inline]
    pub fn cwr(&self) -> bool {
        self.flags() & CWR != 0
    }

    /// Window size (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum as found in the segment.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The option bytes (empty for data offset 5), unparsed.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Partial sum of the pseudo-header and the whole segment.
    #[inline]
    fn sum_with_pseudo(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let data = self.buffer.as_ref();
        // The length cannot exceed u16 under IPv4; a longer buffer would
        // only get a wrong checksum, never a panic.
        let len = data.len() as u16;
        checksum::pseudo_header_v4(u32::from(src), u32::from(dst), IPPROTO_TCP, len)
            + checksum::sum16(data)
    }

    /// True if the checksum, with the IPv4 pseudo-header of `src` and
    /// `dst`, is correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::fold(self.sum_with_pseudo(src, dst)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    /// Makes a TCP segment of exactly `buffer` (at least 20 bytes) for
    /// building with the setters: data offset 5, every other header field
    /// zero.
    #[inline]
    pub fn init(mut buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_mut();
        if data.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        data[..MIN_HEADER_LEN].fill(0);
        data[field::DATA_OFF] = 5 << 4;
        Ok(TcpSegment { buffer })
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        set_u32(self.buffer.as_mut(), field::ACK_NUM, ack);
    }

    /// Sets the header length in bytes: a multiple of 4 from 20 to 60 and
    /// at most the buffer length, else [`WireError::BadHeaderLength`] and
    /// nothing changes. The reserved bits are kept; options are not touched.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) -> Result<(), WireError> {
        if !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&len)
            || len & 3 != 0
            || len > self.buffer.as_ref().len()
        {
            return Err(WireError::BadHeaderLength);
        }
        let data = self.buffer.as_mut();
        data[field::DATA_OFF] = (data[field::DATA_OFF] & 0x0f) | ((len / 4) as u8) << 4;
        Ok(())
    }

    /// Sets all eight flag bits at once (`SYN | ACK`, ...).
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, window: u16) {
        set_u16(self.buffer.as_mut(), field::WIN_SIZE, window);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, cksum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, cksum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, urgent: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT, urgent);
    }

    /// Computes the checksum with the IPv4 pseudo-header and stores it.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let cksum = !checksum::fold(self.sum_with_pseudo(src, dst));
        self.set_checksum(cksum);
    }

    /// Sets the source port and updates the checksum incrementally.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port();
        self.set_src_port(port);
        self.set_checksum(checksum::update16(self.checksum(), old, port));
    }

    /// Sets the destination port and updates the checksum incrementally.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        self.set_dst_port(port);
        self.set_checksum(checksum::update16(self.checksum(), old, port));
    }

    /// Updates the checksum incrementally for an IPv4 address of the
    /// pseudo-header that changed from `old` to `new` (after
    /// `Ipv4Packet::rewrite_src_addr` / `rewrite_dst_addr`, which return
    /// `old`). Assumes the checksum is a full one, not the pseudo-header
    /// partial sum that TX checksum offload expects.
    #[inline]
    pub fn adjust_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let cksum = checksum::update32(self.checksum(), u32::from(old), u32::from(new));
        self.set_checksum(cksum);
    }

    /// The option bytes, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..hl]
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Ipv4Packet;
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    /// A Linux SYN to port 80: MSS 1460, SACK permitted, timestamps, NOP,
    /// window scale 7.
    const SYN_SEGMENT: [u8; 40] = [
        0xc8, 0xd2, 0x00, 0x50, // 51410 -> 80
        0x3a, 0x6f, 0x1c, 0x2b, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // data offset 10, SYN, window 64240
        0xe8, 0x0e, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x9c, 0x4d, 0x1a, 0x00, 0x00, 0x00, 0x00, // timestamps
        0x01, // NOP
        0x03, 0x03, 0x07, // window scale 7
    ];

    #[test]
    fn parse_syn() {
        let s = TcpSegment::new_checked(&SYN_SEGMENT[..]).unwrap();
        assert_eq!(s.src_port(), 51410);
        assert_eq!(s.dst_port(), 80);
        assert_eq!(s.seq_number(), 0x3a6f_1c2b);
        assert_eq!(s.ack_number(), 0);
        assert_eq!(s.header_len(), 40);
        assert_eq!(s.flags(), SYN);
        assert!(s.syn());
        assert!(!(s.fin() || s.rst() || s.psh() || s.ack() || s.urg() || s.ece() || s.cwr()));
        assert_eq!(s.window_len(), 64240);
        assert_eq!(s.checksum(), 0xe80e);
        assert_eq!(s.urgent_at(), 0);
        assert_eq!(s.options(), &SYN_SEGMENT[20..]);
        assert!(s.payload().is_empty());
        assert!(s.verify_checksum(SRC, DST));
        assert!(!s.verify_checksum(DST, Ipv4Addr::new(93, 184, 216, 35)));
    }

    #[test]
    fn build_syn() {
        let mut buf = [0xaau8; 40];
        let mut s = TcpSegment::init(&mut buf[..]).unwrap();
        s.set_src_port(51410);
        s.set_dst_port(80);
        s.set_seq_number(0x3a6f_1c2b);
        s.set_header_len(40).unwrap();
        s.set_flags(SYN);
        s.set_window_len(64240);
        s.options_mut().copy_from_slice(&SYN_SEGMENT[20..]);
        s.fill_checksum(SRC, DST);
        assert_eq!(buf, SYN_SEGMENT);
    }

    #[test]
    fn flags_each() {
        let mut buf = SYN_SEGMENT;
        let mut s = TcpSegment::new_checked(&mut buf[..]).unwrap();
        let all = |s: &TcpSegment<&mut [u8]>| {
            [
                s.fin(),
                s.syn(),
                s.rst(),
                s.psh(),
                s.ack(),
                s.urg(),
                s.ece(),
                s.cwr(),
            ]
        };
        for (i, bit) in [FIN, SYN, RST, PSH, ACK, URG, ECE, CWR]
            .into_iter()
            .enumerate()
        {
            assert_eq!(bit, 1 << i);
            s.set_flags(bit);
            let mut want = [false; 8];
            want[i] = true;
            assert_eq!(all(&s), want);
            s.set_flags(!bit);
            assert_eq!(all(&s), want.map(|b| !b));
        }
        s.set_flags(SYN | ACK);
        s.set_ack_number(0x0102_0304);
        s.set_urgent_at(9);
        assert_eq!(
            (s.syn(), s.ack(), s.ack_number(), s.urgent_at()),
            (true, true, 0x0102_0304, 9)
        );
    }

    #[test]
    fn refused() {
        assert_eq!(
            TcpSegment::new_checked(&SYN_SEGMENT[..19]),
            Err(WireError::Truncated)
        );
        // Options cut off.
        assert_eq!(
            TcpSegment::new_checked(&SYN_SEGMENT[..39]),
            Err(WireError::Truncated)
        );
        let mut bad = SYN_SEGMENT;
        bad[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&bad[..]),
            Err(WireError::BadHeaderLength)
        );
        assert_eq!(
            TcpSegment::init(&mut [0u8; 19][..]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn header_len_setter() {
        let mut buf = SYN_SEGMENT;
        assert_eq!(
            TcpSegment::new_checked(&buf[..24]),
            Err(WireError::Truncated)
        );
        let mut s = TcpSegment::new_checked(&mut buf[..]).unwrap();
        assert_eq!(s.set_header_len(44), Err(WireError::BadHeaderLength));
        assert_eq!(s.set_header_len(22), Err(WireError::BadHeaderLength));
        assert_eq!(s.set_header_len(16), Err(WireError::BadHeaderLength));
        s.set_header_len(24).unwrap();
        assert_eq!(s.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert_eq!(s.payload().len(), 16);
        s.payload_mut()[0] = 0xff;
        assert_eq!(buf[24], 0xff);
    }

    #[test]
    fn matches_etherparse_with_payload() {
        let builder = etherparse::PacketBuilder::ipv4([10, 1, 2, 3], [10, 4, 5, 6], 64)
            .tcp(443, 50000, 123_456, 1000)
            .ack(654_321)
            .psh()
            .options_raw(&[1, 1, 1, 1])
            .unwrap();
        let mut pkt = Vec::new();
        builder.write(&mut pkt, b"an odd-length payload").unwrap();
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut seg = ip.payload().to_vec();
        let mut s = TcpSegment::new_checked(&mut seg[..]).unwrap();
        assert!(s.verify_checksum(src, dst));
        assert_eq!(s.flags(), ACK | PSH);
        assert_eq!(s.ack_number(), 654_321);
        assert_eq!(s.options(), &[1, 1, 1, 1]);
        assert_eq!(s.payload(), b"an odd-length payload");
        let theirs = s.checksum();
        s.fill_checksum(src, dst);
        assert_eq!(s.checksum(), theirs);
    }

    /// A random IPv4 + TCP packet with correct checksums.
    pub(crate) fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<(u32, u32, u16, u16, u32, u32, u8, u16)>(),
            0usize..=10,
            proptest::collection::vec(any::<u8>(), 0..100),
        )
            .prop_map(|(f, opt_words, payload)| {
                let (src, dst, sport, dport, seq, ack, flags, win) = f;
                let hl = 20 + 4 * opt_words;
                let mut buf = vec![0u8; 20 + hl + payload.len()];
                let mut ip = Ipv4Packet::init(&mut buf[..]).unwrap();
                ip.set_protocol(IPPROTO_TCP);
                ip.set_ttl(64);
                ip.set_src_addr_raw(src);
                ip.set_dst_addr_raw(dst);
                ip.fill_checksum();
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                let mut s = TcpSegment::init(ip.payload_mut()).unwrap();
                s.set_src_port(sport);
                s.set_dst_port(dport);
                s.set_seq_number(seq);
                s.set_ack_number(ack);
                s.set_flags(flags);
                s.set_window_len(win);
                s.set_header_len(hl).unwrap();
                s.options_mut().fill(1);
                s.payload_mut().copy_from_slice(&payload);
                s.fill_checksum(src, dst);
                buf
            })
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), off in 0u8..16) {
            if data.len() > 12 {
                // Spread the data offset over all values, not mostly > len.
                data[12] = (off << 4) | (data[12] & 0x0f);
            }
            let (a, b) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
            if let Ok(s) = TcpSegment::new_checked(&data[..]) {
                let _ = (
                    s.src_port(), s.dst_port(), s.seq_number(), s.ack_number(), s.header_len(),
                    s.flags(), s.fin(), s.syn(), s.rst(), s.psh(), s.ack(), s.urg(), s.ece(),
                    s.cwr(), s.window_len(), s.checksum(), s.urgent_at(), s.options(),
                    s.payload(), s.verify_checksum(a, b),
                );
                let mut copy = data.clone();
                let mut s = TcpSegment::new_checked(&mut copy[..]).unwrap();
                s.fill_checksum(a, b);
                prop_assert!(s.verify_checksum(a, b));
                s.rewrite_dst_port(1);
                s.rewrite_src_port(2);
                s.adjust_checksum_for_addr(b, a);
                prop_assert!(s.verify_checksum(a, a));
                let _ = s.set_header_len(60);
                let _ = (s.options_mut().len(), s.payload_mut().len());
                prop_assert!(TcpSegment::new_checked(&copy[..]).is_ok());
            }
        }

        /// NAT of destination address and port (and source, for SNAT) done
        /// incrementally gives the same checksums as full recomputation.
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
            let ip_incremental = ip.checksum();
            prop_assert!(ip.verify_checksum());
            ip.fill_checksum();
            prop_assert_eq!(ip_incremental, ip.checksum());

            let mut s = TcpSegment::new_checked(ip.payload_mut()).unwrap();
            s.adjust_checksum_for_addr(old_dst, dst);
            s.rewrite_dst_port(new_dport);
            if let Some(old_src) = old_src {
                s.adjust_checksum_for_addr(old_src, src);
                s.rewrite_src_port(new_sport);
            }
            let incremental = s.checksum();
            prop_assert!(s.verify_checksum(src, dst));
            s.fill_checksum(src, dst);
            prop_assert_eq!(incremental, s.checksum());
        }

        /// Raw update16/update32 on the TCP checksum for sequence and ack
        /// number changes (what a SYN-proxy or sequence translation does).
        #[test]
        fn seq_update_matches_fill(mut pkt in arb_packet(), seq in any::<u32>(), win in any::<u16>()) {
            let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let mut s = TcpSegment::new_checked(&mut pkt[20..]).unwrap();
            let c = checksum::update32(s.checksum(), s.seq_number(), seq);
            let c = checksum::update16(c, s.window_len(), win);
            s.set_seq_number(seq);
            s.set_window_len(win);
            s.fill_checksum(src, dst);
            prop_assert_eq!(c, s.checksum());
        }
    }
}
