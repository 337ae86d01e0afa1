//! Zero-copy views of packet headers, in the style of smoltcp's `wire`.
//!
//! Each header type wraps a buffer `T: AsRef<[u8]>` (a `&[u8]`, a `&mut [u8]`
//! into an mbuf, a `Vec<u8>` in tests) and reads or writes fields in place,
//! in network byte order. Nothing is copied or allocated.
//!
//! The contract that keeps the fast path both cheap and panic-free:
//!
//! * `new_checked(buffer)` validates, once, every length the accessors rely
//!   on (fixed header present, variable header length in range and inside
//!   the buffer, length fields consistent with the buffer). On success all
//!   getters, setters and `payload()` index in bounds for any byte content.
//! * Setters of fields that other accessors use to compute offsets (IPv4 IHL
//!   and total length, TCP data offset, UDP length, IPv6 payload length) are
//!   checked and return `Result`, so a view can never be made inconsistent.
//!   All other setters are plain stores.
//! * There is no `new_unchecked`: to build a packet from scratch, use the
//!   `init` constructor of types whose `new_checked` needs non-zero fields
//!   (ARP, IPv4, TCP, UDP, IPv6); Ethernet, VLAN and ICMP accept a zeroed
//!   buffer directly.
//!
//! L4 views take the L4 message exactly (for example `ipv4.payload()`, which
//! honours the IPv4 total length and so drops Ethernet padding).

pub mod arp;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket};
pub use ethernet::{l3_offset, EthernetFrame, VlanTag};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpSegment;
pub use udp::UdpDatagram;

use core::fmt;

/// A byte range of a fixed-position header field (`start..end`).
pub type Field = core::ops::Range<usize>;
/// The byte range from a field to the end of the buffer (`start..`).
pub type Rest = core::ops::RangeFrom<usize>;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType (TPID) of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType (TPID) of an IEEE 802.1ad service (outer, "Q-in-Q") tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next-header number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// Why a buffer was refused by a `new_checked` / `init` constructor or a
/// checked setter. Small and `Copy` so the fast path can count drops per
/// reason with [`WireError::as_str`] as the counter name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the header, or than a length field claims.
    Truncated,
    /// The IP version field is not the one expected (4 or 6).
    BadVersion,
    /// A header length field (IPv4 IHL, TCP data offset) is out of range.
    BadHeaderLength,
    /// The IPv4 total length is smaller than the header.
    BadTotalLength,
    /// An L4 length field (UDP length) is smaller than the header, or a
    /// value given to a length setter does not fit the field.
    BadLength,
    /// A well-formed header of a kind this module does not handle (ARP for
    /// anything but Ethernet/IPv4, an ICMP type a helper does not apply to).
    Unsupported,
    /// More than two stacked VLAN tags.
    TooManyVlanTags,
    /// A checksum did not verify. Never returned by this module (the
    /// `verify_checksum` methods return `bool`); provided so that callers
    /// can count checksum drops alongside parse errors.
    BadChecksum,
}

impl WireError {
    /// Every variant, in declaration order (for registering counters).
    pub const ALL: [WireError; 8] = [
        WireError::Truncated,
        WireError::BadVersion,
        WireError::BadHeaderLength,
        WireError::BadTotalLength,
        WireError::BadLength,
        WireError::Unsupported,
        WireError::TooManyVlanTags,
        WireError::BadChecksum,
    ];

    /// A stable snake_case name, suitable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadVersion => "bad_version",
            WireError::BadHeaderLength => "bad_header_length",
            WireError::BadTotalLength => "bad_total_length",
            WireError::BadLength => "bad_length",
            WireError::Unsupported => "unsupported",
            WireError::TooManyVlanTags => "too_many_vlan_tags",
            WireError::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

// Field accessors shared by the header views. The ranges are constants, so
// after inlining the slice-to-array conversions are checked at compile time
// and only the bounds check of `data[f]` remains (which `new_checked` has
// made always-true, but the compiler cannot know that).

#[inline(always)]
pub(crate) fn get_u16(data: &[u8], f: Field) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&data[f]);
    u16::from_be_bytes(b)
}

#[inline(always)]
pub(crate) fn get_u32(data: &[u8], f: Field) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[f]);
    u32::from_be_bytes(b)
}

#[inline(always)]
pub(crate) fn get_array<const N: usize>(data: &[u8], f: Field) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&data[f]);
    b
}

#[inline(always)]
pub(crate) fn set_u16(data: &mut [u8], f: Field, v: u16) {
    data[f].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn set_u32(data: &mut [u8], f: Field, v: u32) {
    data[f].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_unique_snake_case() {
        let mut names: Vec<&str> = WireError::ALL.iter().map(|e| e.as_str()).collect();
        for n in &names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), WireError::ALL.len());
        assert_eq!(WireError::Truncated.to_string(), "truncated");
    }

    /// A full frame walked layer by layer, as the pipeline will do it.
    #[test]
    fn walk_layers() {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1, 1024)
            .syn();
        let mut frame = Vec::new();
        builder.write(&mut frame, b"hello").unwrap();
        // Ethernet padding must not leak into the TCP payload.
        frame.extend_from_slice(&[0; 6]);

        let (ethertype, off, vlan) = l3_offset(&frame).unwrap();
        assert_eq!((ethertype, off, vlan), (ETHERTYPE_IPV4, 18, Some(42)));
        let ip = Ipv4Packet::new_checked(&frame[off..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), IPPROTO_TCP);
        let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(tcp.syn());
        assert_eq!(tcp.payload(), b"hello");
    }
}
