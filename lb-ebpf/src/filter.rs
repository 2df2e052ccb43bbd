//! The first question for an IP packet: could it concern a service at all?
//! Only if its destination may be a VIP or its source a NAT backend, by one
//! bit each in an array the agent keeps ([`lb_common::maps::MAP_ADDR_FILTER`]);
//! everything else passes without a hash lookup, and an untagged IPv4 or
//! IPv6 frame ([`unconcerned`]) before it is even parsed.

use aya_ebpf::programs::XdpContext;
use lb_common::maps::{addr_filter_bit, folded_filter_bit};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6},
    maps::ADDR_FILTER,
    parse::{load, Packet},
};

/// The frame's family and IP protocol field (IPv6: the first next-header)
/// if it is an untagged IPv4 or IPv6 packet whose addresses concern no
/// service: read at their fixed offsets, with no parsing. Anything else
/// (other ethertypes, VLAN tags, short frames) is left to the parser.
#[inline(always)]
pub fn unconcerned(ctx: &XdpContext) -> Option<(u8, u8)> {
    let (start, end) = (ctx.data(), ctx.data_end());
    // Ethernet and an IPv4 header.
    if start + 34 > end {
        return None;
    }
    let ether_type = u16::from_be(unsafe { *((start + 12) as *const u16) });
    // Each address folded into a word as it is read: no copy on the stack.
    let word = |at: usize| unsafe { load::<u32>(start + at) };
    let (src, dst) = if ether_type == ETH_P_IP {
        (word(26), word(30))
    } else if ether_type == ETH_P_IPV6 && start + 54 <= end {
        let fold = |at: usize| word(at) ^ word(at + 4) ^ word(at + 8) ^ word(at + 12);
        (fold(22), fold(38))
    } else {
        return None;
    };
    if marked_bit(folded_filter_bit(dst)) || marked_bit(folded_filter_bit(src)) {
        return None;
    }
    let byte = |at: usize| unsafe { *((start + at) as *const u8) };
    Some(if ether_type == ETH_P_IP {
        (4, byte(23))
    } else {
        (6, byte(20))
    })
}

/// The frame's ethertype, untagged, if it has an Ethernet header.
#[inline(always)]
pub fn ether_type(ctx: &XdpContext) -> Option<u16> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 > end {
        return None;
    }
    Some(u16::from_be(unsafe { *((start + 12) as *const u16) }))
}

#[inline(always)]
pub fn may_concern(pkt: &Packet) -> bool {
    marked(&pkt.dst) || marked(&pkt.src)
}

/// Whether `addr` may be a VIP or a NAT backend.
#[inline(always)]
pub fn marked(addr: &[u32; 4]) -> bool {
    marked_bit(addr_filter_bit(addr))
}

#[inline(always)]
fn marked_bit(bit: u32) -> bool {
    ADDR_FILTER
        .get(bit / 64)
        .is_some_and(|word| word & (1 << (bit % 64)) != 0)
}
