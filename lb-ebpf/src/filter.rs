//! The first question for an IP packet: could it concern a service at all?
//! Only if its destination may be a VIP or its source a NAT backend, by one
//! bit each in an array the agent keeps ([`lb_common::maps::MAP_ADDR_FILTER`]);
//! everything else passes without a hash lookup, and an untagged IPv4 or
//! IPv6 frame ([`unconcerned`]) before it is even parsed.

use aya_ebpf::programs::XdpContext;
use lb_common::maps::addr_filter_bit;

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6},
    maps::ADDR_FILTER,
    parse::Packet,
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
    let (src, dst) = if ether_type == ETH_P_IP {
        let word = |at: usize| unsafe { ((start + at) as *const u32).read_unaligned() };
        ([word(26), 0, 0, 0], [word(30), 0, 0, 0])
    } else if ether_type == ETH_P_IPV6 && start + 54 <= end {
        let addr = |at: usize| unsafe { ((start + at) as *const [u32; 4]).read_unaligned() };
        (addr(22), addr(38))
    } else {
        return None;
    };
    if marked(&dst) || marked(&src) {
        return None;
    }
    let byte = |at: usize| unsafe { *((start + at) as *const u8) };
    Some(if ether_type == ETH_P_IP {
        (4, byte(23))
    } else {
        (6, byte(20))
    })
}

#[inline(always)]
pub fn may_concern(pkt: &Packet) -> bool {
    marked(&pkt.dst) || marked(&pkt.src)
}

/// Whether `addr` may be a VIP or a NAT backend.
#[inline(always)]
pub fn marked(addr: &[u32; 4]) -> bool {
    let bit = addr_filter_bit(addr);
    ADDR_FILTER
        .get(bit / 64)
        .is_some_and(|word| word & (1 << (bit % 64)) != 0)
}
