//! The first question for an IP packet: could it concern a service at all?
//! Only if its destination may be a VIP or its source a NAT backend, by one
//! bit each in an array the agent keeps ([`lb_common::maps::MAP_ADDR_FILTER`]);
//! everything else passes without a hash lookup.

use lb_common::maps::addr_filter_bit;

use crate::{maps::ADDR_FILTER, parse::Packet};

#[inline(always)]
pub fn may_concern(pkt: &Packet) -> bool {
    marked(&pkt.dst) || marked(&pkt.src)
}

#[inline(always)]
fn marked(addr: &[u32; 4]) -> bool {
    let bit = addr_filter_bit(addr);
    ADDR_FILTER
        .get(bit / 64)
        .is_some_and(|word| word & (1 << (bit % 64)) != 0)
}
