//! Ethernet II frames and IEEE 802.1Q / 802.1ad VLAN tags.

use super::{get_array, get_u16, set_u16, Field, Rest, WireError};
use super::{ETHERTYPE_QINQ, ETHERTYPE_VLAN};

mod field {
    use super::{Field, Rest};
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// Length of an Ethernet II header (no VLAN tag, no FCS).
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an Ethernet II frame: destination MAC, source MAC, EtherType,
/// payload. The payload is everything after the header, including any
/// padding (the L3 length field says where the packet really ends); the FCS
/// is assumed stripped by the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer`, refusing it if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length: always [`HEADER_LEN`] (VLAN tags count as payload).
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::DST)
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::SRC)
    }

    /// EtherType (or VLAN TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Where the L3 header starts, skipping VLAN tags: see [`l3_offset`].
    #[inline]
    pub fn l3_offset(&self) -> Result<(u16, usize, Option<u16>), WireError> {
        l3_offset(self.buffer.as_ref())
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    /// Swaps source and destination MAC addresses (to send a frame back).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let data = self.buffer.as_mut();
        let (dst, rest) = data.split_at_mut(field::SRC.start);
        dst.swap_with_slice(&mut rest[..6]);
    }

    /// Everything after the 14-byte header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

mod vlan_field {
    use super::{Field, Rest};
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
    pub const PAYLOAD: Rest = 4..;
}

/// Length of one VLAN tag as seen after the TPID: TCI plus inner EtherType.
pub const VLAN_TAG_LEN: usize = vlan_field::PAYLOAD.start;

/// A view of one 802.1Q / 802.1ad tag, starting right after the TPID
/// (`0x8100` / `0x88a8`) that announced it: the 16-bit TCI (priority code
/// point, drop eligible indicator, VLAN id) and the inner EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps `buffer`, refusing it if it is shorter than [`VLAN_TAG_LEN`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(VlanTag { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw tag control information.
    #[inline]
    pub fn tci(&self) -> u16 {
        get_u16(self.buffer.as_ref(), vlan_field::TCI)
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The EtherType of what follows the tag (possibly another TPID).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), vlan_field::ETHERTYPE)
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[vlan_field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the raw tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        set_u16(self.buffer.as_mut(), vlan_field::TCI, tci);
    }

    /// Sets the priority code point (low 3 bits of `pcp` are used).
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp & 0x7) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        let tci = (self.tci() & !0x1000) | (u16::from(dei) << 12);
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier (low 12 bits of `vid` are used).
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(tci);
    }

    /// Sets the inner EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        set_u16(self.buffer.as_mut(), vlan_field::ETHERTYPE, ethertype);
    }

    /// Everything after the tag, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[vlan_field::PAYLOAD]
    }
}

#[inline(always)]
fn is_vlan_tpid(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

/// Finds the L3 header of an Ethernet frame, skipping up to two VLAN tags
/// (802.1Q `0x8100` or 802.1ad `0x88a8`, in any order).
///
/// Returns `(inner ethertype, offset of the L3 header, outer VLAN id)`; the
/// VLAN id is that of the first (outermost) tag, `None` for untagged frames.
/// Offsets are 14, 18 or 22. A third tag gives
/// [`WireError::TooManyVlanTags`]; a frame cut inside the header or a tag
/// gives [`WireError::Truncated`]. The L3 header itself is not checked.
#[inline]
pub fn l3_offset(frame: &[u8]) -> Result<(u16, usize, Option<u16>), WireError> {
    // Written with `get` rather than through the views: this is called on
    // every frame and should cost two or three compares for the common case.
    let Some(&[a, b]) = frame.get(field::ETHERTYPE) else {
        return Err(WireError::Truncated);
    };
    let ethertype = u16::from_be_bytes([a, b]);
    if !is_vlan_tpid(ethertype) {
        return Ok((ethertype, HEADER_LEN, None));
    }
    let Some(&[t0, t1, e0, e1]) = frame.get(HEADER_LEN..HEADER_LEN + VLAN_TAG_LEN) else {
        return Err(WireError::Truncated);
    };
    let vid = u16::from_be_bytes([t0, t1]) & 0x0fff;
    let ethertype = u16::from_be_bytes([e0, e1]);
    let off = HEADER_LEN + VLAN_TAG_LEN;
    if !is_vlan_tpid(ethertype) {
        return Ok((ethertype, off, Some(vid)));
    }
    let Some(&[_, _, e0, e1]) = frame.get(off..off + VLAN_TAG_LEN) else {
        return Err(WireError::Truncated);
    };
    let ethertype = u16::from_be_bytes([e0, e1]);
    if is_vlan_tpid(ethertype) {
        return Err(WireError::TooManyVlanTags);
    }
    Ok((ethertype, off + VLAN_TAG_LEN, Some(vid)))
}

#[cfg(test)]
mod tests {
    use super::super::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    use super::*;
    use proptest::prelude::*;

    /// Broadcast ARP request header, as captured (payload cut after 2 bytes).
    const ARP_FRAME_START: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
        0x00, 0x01, // (ARP htype)
    ];

    /// VLAN 100 (PCP 5, DEI 0) carrying IPv4, first bytes of the IP header.
    const VLAN_FRAME: [u8; 20] = [
        0x00, 0x1b, 0x21, 0x3a, 0x4c, 0x5d, // dst
        0x00, 0x1b, 0x21, 0x3a, 0x4c, 0x5e, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // PCP 5, DEI 0, VID 100
        0x08, 0x00, // IPv4
        0x45, 0x00, // (IPv4 header starts)
    ];

    #[test]
    fn parse_ethernet() {
        let f = EthernetFrame::new_checked(&ARP_FRAME_START[..]).unwrap();
        assert_eq!(f.dst_addr(), [0xff; 6]);
        assert_eq!(f.src_addr(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload(), &[0x00, 0x01]);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.l3_offset(), Ok((ETHERTYPE_ARP, 14, None)));
    }

    #[test]
    fn build_ethernet() {
        let mut buf = [0u8; 16];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr([0xff; 6]);
        f.set_src_addr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        f.set_ethertype(ETHERTYPE_ARP);
        f.payload_mut().copy_from_slice(&[0x00, 0x01]);
        assert_eq!(buf, ARP_FRAME_START);
    }

    #[test]
    fn swap_addrs() {
        let mut buf = ARP_FRAME_START;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.swap_addrs();
        assert_eq!(f.src_addr(), [0xff; 6]);
        assert_eq!(f.dst_addr(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
    }

    #[test]
    fn ethernet_truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&ARP_FRAME_START[..13]),
            Err(WireError::Truncated)
        );
        assert!(EthernetFrame::new_checked(&ARP_FRAME_START[..14]).is_ok());
        assert_eq!(l3_offset(&ARP_FRAME_START[..13]), Err(WireError::Truncated));
    }

    #[test]
    fn parse_vlan() {
        let f = EthernetFrame::new_checked(&VLAN_FRAME[..]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_VLAN);
        let tag = VlanTag::new_checked(f.payload()).unwrap();
        assert_eq!(tag.tci(), 0xa064);
        assert_eq!(tag.pcp(), 5);
        assert!(!tag.dei());
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(tag.payload(), &[0x45, 0x00]);
        assert_eq!(l3_offset(&VLAN_FRAME), Ok((ETHERTYPE_IPV4, 18, Some(100))));
    }

    #[test]
    fn build_vlan() {
        let mut buf = [0u8; 20];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr([0x00, 0x1b, 0x21, 0x3a, 0x4c, 0x5d]);
        f.set_src_addr([0x00, 0x1b, 0x21, 0x3a, 0x4c, 0x5e]);
        f.set_ethertype(ETHERTYPE_VLAN);
        let mut tag = VlanTag::new_checked(f.payload_mut()).unwrap();
        tag.set_dei(true);
        tag.set_vid(0xf064); // high bits must be ignored
        tag.set_pcp(5);
        tag.set_dei(false);
        tag.set_ethertype(ETHERTYPE_IPV4);
        tag.payload_mut().copy_from_slice(&[0x45, 0x00]);
        assert_eq!(buf, VLAN_FRAME);
    }

    #[test]
    fn qinq() {
        // 802.1ad outer tag VID 10 (DEI set), 802.1Q inner VID 20, then IPv6.
        let frame = [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, // MACs
            0x88, 0xa8, 0x10, 0x0a, // S-tag: DEI, VID 10
            0x81, 0x00, 0x00, 0x14, // C-tag: VID 20
            0x86, 0xdd, // IPv6
            0x60, 0, // (IPv6 header starts)
        ];
        assert_eq!(l3_offset(&frame), Ok((ETHERTYPE_IPV6, 22, Some(10))));
        let outer = VlanTag::new_checked(&frame[14..]).unwrap();
        assert!(outer.dei());
        assert_eq!(outer.vid(), 10);
        let inner = VlanTag::new_checked(outer.payload()).unwrap();
        assert_eq!(inner.vid(), 20);
        assert_eq!(inner.ethertype(), ETHERTYPE_IPV6);
        // Cut inside either tag.
        assert_eq!(l3_offset(&frame[..17]), Err(WireError::Truncated));
        assert_eq!(l3_offset(&frame[..21]), Err(WireError::Truncated));
        // Nothing after the inner ethertype is still a valid offset.
        assert_eq!(l3_offset(&frame[..22]), Ok((ETHERTYPE_IPV6, 22, Some(10))));
    }

    #[test]
    fn three_tags_refused() {
        let frame = [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, // MACs
            0x88, 0xa8, 0x00, 0x01, // tag 1
            0x81, 0x00, 0x00, 0x02, // tag 2
            0x81, 0x00, 0x00, 0x03, // tag 3
            0x08, 0x00,
        ];
        assert_eq!(l3_offset(&frame), Err(WireError::TooManyVlanTags));
    }

    #[test]
    fn matches_etherparse_double_vlan() {
        let builder =
            etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
                .double_vlan(
                    etherparse::VlanId::try_new(300).unwrap(),
                    etherparse::VlanId::try_new(4000).unwrap(),
                )
                .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 3)
                .udp(1, 2);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[]).unwrap();
        let (et, off, vid) = l3_offset(&frame).unwrap();
        assert_eq!((et, off, vid), (ETHERTYPE_IPV4, 22, Some(300)));
        let f = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(f.dst_addr(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.src_addr(), [1, 2, 3, 4, 5, 6]);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = l3_offset(&data);
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload(), f.l3_offset());
                let mut copy = data.clone();
                let mut f = EthernetFrame::new_checked(&mut copy[..]).unwrap();
                f.swap_addrs();
                f.set_ethertype(1);
                let _ = f.payload_mut();
            }
            if let Ok(t) = VlanTag::new_checked(&data[..]) {
                let _ = (t.tci(), t.pcp(), t.dei(), t.vid(), t.ethertype(), t.payload());
                let mut copy = data.clone();
                let mut t = VlanTag::new_checked(&mut copy[..]).unwrap();
                t.set_pcp(0xff);
                t.set_dei(true);
                t.set_vid(0xffff);
                t.set_ethertype(0);
                let _ = t.payload_mut();
            }
        }

        #[test]
        fn l3_offset_in_bounds(
            mut data in proptest::collection::vec(any::<u8>(), 0..40),
            tags in proptest::collection::vec(prop::sample::select(vec![ETHERTYPE_VLAN, ETHERTYPE_QINQ, ETHERTYPE_IPV4]), 3),
        ) {
            // Put TPIDs where tags would announce themselves, so that every
            // nesting depth and every cut is reached.
            for (tpid, at) in tags.iter().zip([12usize, 16, 20]) {
                if let Some(b) = data.get_mut(at..at + 2) {
                    b.copy_from_slice(&tpid.to_be_bytes());
                }
            }
            let depth = tags.iter().take_while(|&&t| t != ETHERTYPE_IPV4).count();
            match l3_offset(&data) {
                Ok((et, off, vid)) => {
                    prop_assert!(off <= data.len());
                    prop_assert_eq!(off, 14 + 4 * depth);
                    prop_assert_eq!(vid.is_some(), depth > 0);
                    prop_assert!(et != ETHERTYPE_VLAN && et != ETHERTYPE_QINQ);
                }
                Err(WireError::TooManyVlanTags) => prop_assert_eq!(depth, 3),
                Err(e) => {
                    prop_assert_eq!(e, WireError::Truncated);
                    prop_assert!(data.len() < 14 + 4 * depth.min(2) + 2 || data.len() < 14);
                }
            }
        }
    }
}
