//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the ones'-complement of the ones'-complement sum of the
//! data taken as big-endian 16-bit words (an odd trailing byte is padded with
//! a zero low byte). The building blocks here are split so that a caller can
//! add several partial sums (pseudo-header, header, payload) and fold once:
//!
//! * [`sum16`] returns a partial sum of some bytes, already reduced to 16 bits
//!   but kept in a `u32` so that several of them can be added without care;
//! * [`pseudo_header_v4`] / [`pseudo_header_v6`] return the partial sum of the
//!   TCP/UDP/ICMPv6 pseudo-header;
//! * [`fold`] reduces any such accumulation to 16 bits (not complemented);
//! * [`internet_checksum`] is `!fold(sum16(data))`, the value to put on the
//!   wire when the checksum field was zero while summing.
//!
//! # Zero and `0xffff`
//!
//! Ones'-complement arithmetic has two zeros, `0x0000` and `0xffff`. Summing
//! data that is not all zero always folds to a value in `1..=0xffff`, so a
//! computed checksum is in `0..=0xfffe`: a full computation produces `0x0000`
//! and never `0xffff` (unless every summed byte is zero, which no IPv4 or
//! TCP/UDP packet can be since the version or protocol number is non-zero).
//!
//! UDP over IPv4 gives `0x0000` in the checksum field the meaning "no
//! checksum". A sender whose computed checksum is `0x0000` therefore transmits
//! `0xffff` instead (RFC 768), which is the same number in ones'-complement.
//! Two consequences for code that edits UDP datagrams:
//!
//! * if the field is `0x0000` the sender did not compute a checksum: leave it
//!   alone, do not incrementally update it (the result would be garbage);
//! * after an incremental update ([`update16`] / [`update32`]) a result of
//!   `0x0000` must be written as `0xffff`.
//!
//! [`crate::wire::UdpDatagram`] does both. A receiver verifies by summing the
//! whole message including the checksum field: the folded sum is `0xffff` for
//! a correct message, whichever of the two zeros the sender used.
//!
//! With those rules the incremental update gives bit-for-bit the value a full
//! recomputation gives, for any message that is not all zero (see the
//! property tests at the bottom of this file and in `wire`).

/// Ones'-complement sum of `data` as big-endian 16-bit words, reduced to
/// 16 bits (returned in a `u32` so that partial sums can be added directly).
///
/// An odd trailing byte counts as the high byte of a last word whose low byte
/// is zero, as RFC 1071 requires; so only the last piece of a message split
/// into several calls may have an odd length.
#[inline]
pub fn sum16(data: &[u8]) -> u32 {
    // Each 8-byte chunk adds less than 2^33 to a u64 accumulator, so a
    // block of 1 GiB (2^27 chunks) cannot overflow it. Packets are far
    // smaller and take the straight path, kept free of the outer loop that
    // would otherwise stand in the way of unrolling.
    const BLOCK: usize = 1 << 30;
    let total = if data.len() <= BLOCK {
        sum_block_ne(data)
    } else {
        sum_blocks_ne(data, BLOCK)
    };
    // The words were read in native byte order. Ones'-complement addition
    // commutes with byte swapping (RFC 1071 section 2(B)), so the native sum
    // becomes the big-endian one by swapping the folded result once.
    u32::from(u16::from_be(fold(total)))
}

/// [`sum_block_ne`] of `data` cut in blocks of `block` bytes (even, so
/// that words stay aligned), each folded before they are added.
#[cold]
fn sum_blocks_ne(data: &[u8], block: usize) -> u64 {
    data.chunks(block)
        .map(|b| u64::from(fold(sum_block_ne(b))))
        .sum()
}

/// Sum of `data` as native-endian 32-bit words (zero padded at the end).
/// Not folded: the caller folds. 8 bytes per step, added as two 32-bit
/// halves so that no carry is lost and the loop vectorizes; the tail is
/// handled without a variable-length copy (which would call `memcpy` and
/// cost more than the whole sum of a 20-byte header).
#[inline(always)]
fn sum_block_ne(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    let mut rest = chunks.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        acc += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = tail;
    }
    // Zero padding after the last bytes is exactly the RFC 1071 rule for
    // an odd trailing byte once the words are read big-endian.
    let last = match *rest {
        [a] => [a, 0, 0, 0],
        [a, b] => [a, b, 0, 0],
        [a, b, c] => [a, b, c, 0],
        _ => [0; 4],
    };
    acc + u64::from(u32::from_ne_bytes(last))
}

/// Folds an accumulated ones'-complement sum to 16 bits (end-around carry).
/// Not complemented. Accepts `u16`, `u32` or `u64` accumulations.
#[inline]
pub fn fold(sum: impl Into<u64>) -> u16 {
    let mut s: u64 = sum.into();
    s = (s & 0xffff_ffff) + (s >> 32); // < 2^33
    s = (s & 0xffff) + (s >> 16); // < 2^18
    s = (s & 0xffff) + (s >> 16); // <= 0xffff + 3
    s = (s & 0xffff) + (s >> 16); // <= 0xffff
    s as u16
}

/// The Internet checksum of `data`: `!fold(sum16(data))`. To checksum a
/// message in place, zero its checksum field first. To verify, sum the whole
/// message including the field and compare [`fold`] with `0xffff` (this is
/// what the `verify_checksum` methods of [`crate::wire`] do).
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum16(data))
}

/// Partial sum of the IPv4 pseudo-header used by TCP and UDP checksums
/// (RFC 793 / RFC 768): source address, destination address, zero byte,
/// protocol, and the L4 length (header plus payload). Addresses are the
/// host-order `u32` of the address (`u32::from(Ipv4Addr)`). Not folded; add
/// it to [`sum16`] of the L4 message and [`fold`].
#[inline]
pub fn pseudo_header_v4(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + u32::from(proto) + u32::from(len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source and
/// destination addresses, 32-bit upper-layer length, next header. Not folded.
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u32 {
    sum16(src) + sum16(dst) + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// RFC 1624 incremental update: the new checksum after a 16-bit word of the
/// covered data changed from `old` to `new`, given the old checksum
/// `old_cksum`. Computes `HC' = ~(~HC + ~m + m')` (equation 3), which, unlike
/// RFC 1141's `HC + m - m'`, never yields `0xffff` for non-zero data and so
/// matches a full recomputation exactly (see the module docs for UDP).
///
/// The word must be 16-bit aligned within the checksummed data (true of every
/// port, address and length field of IPv4, TCP and UDP).
#[inline]
pub fn update16(old_cksum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!old_cksum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// [`update16`] for a 32-bit field (an IPv4 address, a sequence number)
/// changed from `old` to `new` (host-order values of the big-endian field).
/// One fold for both halves.
#[inline]
pub fn update32(old_cksum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!old_cksum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!old as u16)
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: one big-endian word at a time.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these bytes is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&data)), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_lengths_and_empty() {
        assert_eq!(sum16(&[]), 0);
        assert_eq!(internet_checksum(&[]), 0xffff);
        assert_eq!(sum16(&[0xab]), 0xab00);
        assert_eq!(sum16(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        // Every tail length of the 8-byte loop, with and without a word.
        for n in 0..16 {
            let data: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
            assert_eq!(fold(sum16(&data)), reference_sum(&data), "len {n}");
        }
    }

    #[test]
    fn blocked_sum_matches() {
        // The path for buffers over 1 GiB, exercised with small blocks.
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 131 + 7) as u8).collect();
        for block in [2, 4, 8, 10, 64, 1000] {
            assert_eq!(
                u16::from_be(fold(sum_blocks_ne(&data, block))),
                reference_sum(&data),
                "block {block}"
            );
        }
    }

    #[test]
    fn fold_edges() {
        assert_eq!(fold(0u32), 0);
        assert_eq!(fold(0xffffu32), 0xffff);
        assert_eq!(fold(0x1_0000u32), 1);
        assert_eq!(fold(0x1_fffeu32), 0xffff);
        assert_eq!(fold(u32::MAX), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0xffff_0000_0000u64), 0xffff);
    }

    #[test]
    fn ipv4_header_example() {
        // A classic example header (Wikipedia "IPv4 header checksum"):
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(fold(sum16(&h)), 0xffff);
    }

    #[test]
    fn pseudo_header_v4_matches_bytes() {
        let src = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1));
        let dst = u32::from(std::net::Ipv4Addr::new(192, 168, 255, 254));
        let bytes = [10, 0, 0, 1, 192, 168, 255, 254, 0, 6, 0x05, 0xdc];
        assert_eq!(
            fold(pseudo_header_v4(src, dst, 6, 1500)),
            fold(sum16(&bytes))
        );
    }

    #[test]
    fn pseudo_header_v6_matches_bytes() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0xff, 0xfe, 0, 2,
        ];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&70_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(
            fold(pseudo_header_v6(&src, &dst, 58, 70_000)),
            fold(sum16(&bytes))
        );
    }

    #[test]
    fn update_known_values() {
        // RFC 1624 section 4 example: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285
        // gives HC' = 0x0000 by equation 3 (equation 2 would give 0xffff).
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        // No change leaves a checksum of non-zero data unchanged.
        assert_eq!(update16(0x1234, 0xabcd, 0xabcd), 0x1234);
        assert_eq!(update32(0x1234, 0xdead_beef, 0xdead_beef), 0x1234);
    }

    proptest! {
        #[test]
        fn sum16_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(fold(sum16(&data)), reference_sum(&data));
        }

        #[test]
        fn split_sums_add_up(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..150) {
            // Partial sums of an even-length prefix plus the rest add up.
            let cut = (cut * 2).min(data.len()) & !1;
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(fold(sum16(a) + sum16(b)), fold(sum16(&data)));
        }

        /// update16/update32 on arbitrary (not all-zero) data equal a full
        /// recomputation after the change.
        #[test]
        fn incremental_matches_full(
            mut data in proptest::collection::vec(any::<u8>(), 6..200),
            word in any::<prop::sample::Index>(),
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            // A fixed non-zero first word, as every real header has, keeps
            // the data from being all zero (the one case where the two
            // methods pick different zeros).
            data[0] = 0x45;
            // Any aligned word but the first.
            let at = 2 * (1 + word.index(data.len() / 2 - 1));
            let cks = internet_checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            prop_assert_eq!(update16(cks, old, new16), internet_checksum(&data));

            let cks = internet_checksum(&data);
            let old = u32::from_be_bytes([data[2], data[3], data[4], data[5]]);
            data[2..6].copy_from_slice(&new32.to_be_bytes());
            prop_assert_eq!(update32(cks, old, new32), internet_checksum(&data));
        }
    }
}

/// RFC 1624 for several changed 16-bit words at once: `(old, new)` pairs
/// are summed and folded once, which is what `update16` applied pair by
/// pair computes, with one fold instead of one per pair.
#[inline(always)]
pub fn update_many<const N: usize>(old_cksum: u16, changes: [(u16, u16); N]) -> u16 {
    let mut s = u32::from(!old_cksum);
    for (old, new) in changes {
        s += u32::from(!old) + u32::from(new);
    }
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[cfg(test)]
mod update_many_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn equals_pairwise_updates(ck: u16, a: (u16, u16), b: (u16, u16), c: (u16, u16)) {
            let pairwise = update16(update16(update16(ck, a.0, a.1), b.0, b.1), c.0, c.1);
            let many = update_many(ck, [a, b, c]);
            // Both are ones'-complement results of the same sum: equal as
            // values, or the two representations of zero.
            prop_assert!(many == pairwise || (many | pairwise == 0xffff && many & pairwise == 0),
                "{many:#x} vs {pairwise:#x}");
        }
    }
}
