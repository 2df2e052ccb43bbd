//! Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624).
//!
//! Values are used exactly as loaded from the packet (native loads of
//! network-order bytes): ones' complement sums give the same bytes back
//! whichever order they are summed in, as long as it is one order.

#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[inline(always)]
fn add32(sum: u64, v: u32) -> u64 {
    sum + (v & 0xffff) as u64 + (v >> 16) as u64
}

/// The checksum after a 16-bit field changed from `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u64 + !old as u64 + new as u64)
}

/// The checksum after an IPv4 address changed.
#[inline(always)]
pub fn replace_v4(check: u16, old: u32, new: u32) -> u16 {
    !fold(add32(add32(!check as u64, !old), new))
}

/// The checksum after an IPv6 address changed.
#[inline(always)]
pub fn replace_v6(check: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut sum = !check as u64;
    sum = add32(add32(sum, !old[0]), new[0]);
    sum = add32(add32(sum, !old[1]), new[1]);
    sum = add32(add32(sum, !old[2]), new[2]);
    sum = add32(add32(sum, !old[3]), new[3]);
    !fold(sum)
}

/// Adds an IPv6 address to a running sum.
#[inline(always)]
pub fn sum_v6(sum: u64, addr: &[u32; 4]) -> u64 {
    add32(add32(add32(add32(sum, addr[0]), addr[1]), addr[2]), addr[3])
}

/// Whether the 20-byte IPv4 header `words` (options are never balanced)
/// sums to all ones, as a header with a correct checksum does.
#[inline(always)]
pub fn v4_header_ok(words: &[u32; 5]) -> bool {
    let sum = add32(
        add32(
            add32(add32(add32(0, words[0]), words[1]), words[2]),
            words[3],
        ),
        words[4],
    );
    fold(sum) == 0xffff
}
