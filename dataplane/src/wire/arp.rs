//! ARP (RFC 826) for Ethernet and IPv4 only.

use super::{get_array, get_u16, get_u32, set_u16, Field, WireError, ETHERTYPE_IPV4};
use std::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

/// ARP hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Who has `target_proto_addr`? (1)
    Request,
    /// `sender_proto_addr` is at `sender_hw_addr`. (2)
    Reply,
    /// Any other code (RARP and friends).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    #[inline]
    fn from(op: ArpOperation) -> u16 {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP packet (hardware type 1, protocol type
/// 0x0800, address lengths 6 and 4). The buffer may be longer than
/// [`PACKET_LEN`] (Ethernet padding); the extra bytes are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer`: [`WireError::Truncated`] if shorter than
    /// [`PACKET_LEN`], [`WireError::Unsupported`] unless it is Ethernet/IPv4
    /// ARP (other hardware or protocol types would move every later field).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_ref();
        if data.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if get_u16(data, field::HTYPE) != HTYPE_ETHERNET
            || get_u16(data, field::PTYPE) != ETHERTYPE_IPV4
            || data[field::HLEN] != 6
            || data[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(ArpPacket { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation as a raw code.
    #[inline]
    pub fn operation_raw(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        self.operation_raw().into()
    }

    /// Sender hardware (MAC) address.
    #[inline]
    pub fn sender_hw_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::SHA)
    }

    /// Sender protocol (IPv4) address.
    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.sender_proto_addr_raw())
    }

    /// Sender protocol address as a host-order `u32`.
    #[inline]
    pub fn sender_proto_addr_raw(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SPA)
    }

    /// Target hardware (MAC) address (zero in requests).
    #[inline]
    pub fn target_hw_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::THA)
    }

    /// Target protocol (IPv4) address.
    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.target_proto_addr_raw())
    }

    /// Target protocol address as a host-order `u32`.
    #[inline]
    pub fn target_proto_addr_raw(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Makes an Ethernet/IPv4 ARP packet of `buffer` (at least
    /// [`PACKET_LEN`] bytes): writes the fixed type and length fields and
    /// zeroes the rest of the 28 bytes, for building with the setters.
    #[inline]
    pub fn init(mut buffer: T) -> Result<Self, WireError> {
        let data = buffer.as_mut();
        if data.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        data[..PACKET_LEN].fill(0);
        set_u16(data, field::HTYPE, HTYPE_ETHERNET);
        set_u16(data, field::PTYPE, ETHERTYPE_IPV4);
        data[field::HLEN] = 6;
        data[field::PLEN] = 4;
        Ok(ArpPacket { buffer })
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: ArpOperation) {
        set_u16(self.buffer.as_mut(), field::OPER, op.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hw_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_proto_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_proto_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }

    /// Turns a request into the reply that answers it, in place: the old
    /// sender becomes the target, the sender becomes `our_mac` at the
    /// requested IP address, and the operation becomes Reply. The caller
    /// decides beforehand whether to answer (operation is Request, target
    /// address is one of ours); this does not look. The Ethernet header is
    /// the caller's too (destination = old sender, source = `our_mac`).
    #[inline]
    pub fn make_reply_in_place(&mut self, our_mac: [u8; 6]) {
        let sha = self.sender_hw_addr();
        let spa: [u8; 4] = get_array(self.buffer.as_ref(), field::SPA);
        let tpa: [u8; 4] = get_array(self.buffer.as_ref(), field::TPA);
        let data = self.buffer.as_mut();
        data[field::THA].copy_from_slice(&sha);
        data[field::TPA].copy_from_slice(&spa);
        data[field::SHA].copy_from_slice(&our_mac);
        data[field::SPA].copy_from_slice(&tpa);
        set_u16(data, field::OPER, ArpOperation::Reply.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// "Who has 10.0.0.1? Tell 10.0.0.2", as captured after the Ethernet
    /// header, with the 18 bytes of padding a 60-byte minimum frame carries.
    const REQUEST: [u8; 46] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // request
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // sha
        0x0a, 0x00, 0x00, 0x02, // spa 10.0.0.2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        0x0a, 0x00, 0x00, 0x01, // tpa 10.0.0.1
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    /// The reply 10.0.0.1 (at 02:00:00:00:00:01) sends back.
    const REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, //
        0x00, 0x02, // reply
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha: ours
        0x0a, 0x00, 0x00, 0x01, // spa 10.0.0.1
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // tha: requester
        0x0a, 0x00, 0x00, 0x02, // tpa 10.0.0.2
    ];

    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn parse_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(p.operation_raw(), 1);
        assert_eq!(p.sender_hw_addr(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.sender_proto_addr_raw(), 0x0a00_0002);
        assert_eq!(p.target_hw_addr(), [0; 6]);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_proto_addr_raw(), 0x0a00_0001);
    }

    #[test]
    fn build_request() {
        let mut buf = [0xeeu8; 28];
        let mut p = ArpPacket::init(&mut buf[..]).unwrap();
        p.set_operation(ArpOperation::Request);
        p.set_sender_hw_addr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        p.set_sender_proto_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.set_target_proto_addr(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(buf[..], REQUEST[..28]);
    }

    #[test]
    fn reply_in_place() {
        let mut buf = REQUEST;
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        p.make_reply_in_place(OUR_MAC);
        assert_eq!(p.operation(), ArpOperation::Reply);
        assert_eq!(buf[..28], REPLY);
        // Padding untouched.
        assert!(buf[28..].iter().all(|&b| b == 0));

        // The same reply built field by field.
        let mut built = [0u8; 28];
        let mut p = ArpPacket::init(&mut built[..]).unwrap();
        p.set_operation(ArpOperation::Reply);
        p.set_sender_hw_addr(OUR_MAC);
        p.set_sender_proto_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_target_hw_addr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        p.set_target_proto_addr(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(built, REPLY);
    }

    #[test]
    fn refused() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]),
            Err(WireError::Truncated)
        );
        for (i, v) in [(1, 6u8), (3, 0xdd), (4, 16), (5, 16)] {
            let mut bad = REQUEST;
            bad[i] = v;
            assert_eq!(
                ArpPacket::new_checked(&bad[..]),
                Err(WireError::Unsupported),
                "byte {i}"
            );
        }
        assert_eq!(
            ArpPacket::init(&mut [0u8; 27][..]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn operation_codes() {
        for v in [0u16, 1, 2, 3, 0xffff] {
            assert_eq!(u16::from(ArpOperation::from(v)), v);
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>()) {
            if fix && data.len() >= 6 {
                // Random bytes almost never pass the type checks.
                data[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            }
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = (
                    p.operation(),
                    p.sender_hw_addr(),
                    p.sender_proto_addr(),
                    p.target_hw_addr(),
                    p.target_proto_addr(),
                    p.target_proto_addr_raw(),
                );
                let mut copy = data.clone();
                let mut p = ArpPacket::new_checked(&mut copy[..]).unwrap();
                p.make_reply_in_place([1; 6]);
                prop_assert!(ArpPacket::new_checked(&copy[..]).is_ok());
            }
        }
    }
}
