//! ICMP for IPv4 (RFC 792).

use super::{get_u16, set_u16, Field, Rest, WireError};
use crate::checksum;

mod field {
    use super::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the ICMP header: type, code, checksum and the 4-byte
/// type-specific word (echo identifier and sequence number).
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// Type of an echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Type of a destination-unreachable message.
pub const DEST_UNREACHABLE: u8 = 3;
/// Type of an echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Type of a time-exceeded message.
pub const TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable code "fragmentation needed and DF set" (PMTU
/// discovery, RFC 1191; the next-hop MTU is in bytes 6..8).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// A view of an ICMPv4 message: the whole IPv4 payload, since the checksum
/// covers all of it. Any type is accepted; the echo accessors read the
/// type-specific word at bytes 4..8 whatever the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buffer`, refusing it if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type ([`ECHO_REQUEST`], [`ECHO_REPLY`], ...).
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

    /// Echo identifier (bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Everything after the 8-byte header (echo data, or the offending IP
    /// header for error messages).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// True if the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum16(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_SEQNO, seq);
    }

    /// Computes the checksum over the whole message and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let cksum = checksum::internet_checksum(self.buffer.as_ref());
        self.set_checksum(cksum);
    }

    /// Turns an echo request into its reply in place: type 8 becomes 0 and
    /// the checksum is updated incrementally (RFC 1624) rather than
    /// recomputed over the data, which may be large. Identifier, sequence
    /// number and data stay, as RFC 792 requires. The IPv4 addresses are
    /// the caller's (`Ipv4Packet::swap_addrs`). Returns
    /// [`WireError::Unsupported`], changing nothing, if the message is not
    /// an echo request.
    #[inline]
    pub fn make_echo_reply(&mut self) -> Result<(), WireError> {
        if self.msg_type() != ECHO_REQUEST {
            return Err(WireError::Unsupported);
        }
        // Type and code share the first 16-bit word of the checksum.
        let code = u16::from(self.code());
        let old = (u16::from(ECHO_REQUEST) << 8) | code;
        let new = (u16::from(ECHO_REPLY) << 8) | code;
        self.set_msg_type(ECHO_REPLY);
        let mut cksum = checksum::update16(self.checksum(), old, new);
        // RFC 1624 equation 3 yields 0x0000 where a full computation would
        // give 0xffff in exactly one case: a message that is all zero (a
        // reply with code, identifier, sequence and data all zero is
        // possible). Only then look at the data, so 1 in 65536 replies.
        if cksum == 0 && self.is_zero_but_checksum() {
            cksum = 0xffff;
        }
        self.set_checksum(cksum);
        Ok(())
    }

    /// True if every byte but the checksum field is zero.
    #[cold]
    fn is_zero_but_checksum(&self) -> bool {
        let data = self.buffer.as_ref();
        data[..field::CHECKSUM.start]
            .iter()
            .chain(&data[field::CHECKSUM.end..])
            .all(|&b| b == 0)
    }

    /// Everything after the 8-byte header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `ping -n` from Windows: identifier 1, sequence 42, the usual 32 bytes
    /// of alphabet.
    const ECHO_REQ: [u8; 40] = [
        0x08, 0x00, 0x4d, 0x31, // type 8, code 0, checksum
        0x00, 0x01, 0x00, 0x2a, // ident 1, seq 42
        b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h', b'i', b'j', b'k', b'l', b'm', b'n', b'o',
        b'p', b'q', b'r', b's', b't', b'u', b'v', b'w', b'a', b'b', b'c', b'd', b'e', b'f', b'g',
        b'h', b'i',
    ];

    #[test]
    fn parse_echo_request() {
        let p = Icmpv4Packet::new_checked(&ECHO_REQ[..]).unwrap();
        assert_eq!(p.msg_type(), ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x4d31);
        assert_eq!(p.echo_ident(), 1);
        assert_eq!(p.echo_seq_no(), 42);
        assert_eq!(p.payload(), b"abcdefghijklmnopqrstuvwabcdefghi");
        assert!(p.verify_checksum());
    }

    #[test]
    fn build_echo_request() {
        let mut buf = [0u8; 40];
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(1);
        p.set_echo_seq_no(42);
        p.payload_mut()
            .copy_from_slice(b"abcdefghijklmnopqrstuvwabcdefghi");
        p.fill_checksum();
        assert_eq!(buf, ECHO_REQ);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut buf = ECHO_REQ;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.make_echo_reply().unwrap();
        assert_eq!(p.msg_type(), ECHO_REPLY);
        assert_eq!(p.checksum(), 0x5531);
        assert!(p.verify_checksum());
        // A reply is not a request: refused, unchanged.
        assert_eq!(p.make_echo_reply(), Err(WireError::Unsupported));
        assert_eq!(p.checksum(), 0x5531);
        assert_eq!(buf[4..], ECHO_REQ[4..]);
    }

    #[test]
    fn all_zero_reply() {
        let mut buf = [0u8; 12];
        buf[0] = ECHO_REQUEST;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert_eq!(p.checksum(), 0xf7ff);
        p.make_echo_reply().unwrap();
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum());
    }

    #[test]
    fn bad_checksum() {
        let mut buf = ECHO_REQ;
        buf[39] ^= 1;
        assert!(!Icmpv4Packet::new_checked(&buf[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Icmpv4Packet::new_checked(&ECHO_REQ[..7]),
            Err(WireError::Truncated)
        );
        assert!(Icmpv4Packet::new_checked(&ECHO_REQ[..8])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn matches_etherparse() {
        let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(0xbeef, 7);
        let mut pkt = Vec::new();
        builder.write(&mut pkt, b"odd length!").unwrap();
        let mut p = Icmpv4Packet::new_checked(&mut pkt[20..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0xbeef, 7));
        let theirs = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), theirs);
        p.make_echo_reply().unwrap();

        let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_reply(0xbeef, 7);
        let mut reply = Vec::new();
        builder.write(&mut reply, b"odd length!").unwrap();
        assert_eq!(&pkt[20..], &reply[20..]);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (
                    p.msg_type(), p.code(), p.checksum(), p.echo_ident(), p.echo_seq_no(),
                    p.payload(), p.verify_checksum(),
                );
                let mut copy = data.clone();
                let mut p = Icmpv4Packet::new_checked(&mut copy[..]).unwrap();
                let _ = p.make_echo_reply();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                let _ = p.payload_mut();
            }
        }

        /// The incremental echo reply equals a full recomputation.
        #[test]
        fn echo_reply_matches_fill(
            code in any::<u8>(), ident in any::<u16>(), seq in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut buf = vec![0u8; HEADER_LEN + data.len()];
            let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
            p.set_msg_type(ECHO_REQUEST);
            p.set_code(code);
            p.set_echo_ident(ident);
            p.set_echo_seq_no(seq);
            p.payload_mut().copy_from_slice(&data);
            p.fill_checksum();
            p.make_echo_reply().unwrap();
            let incremental = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(incremental, p.checksum());
        }
    }
}
