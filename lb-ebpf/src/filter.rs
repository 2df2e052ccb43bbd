//! The first question for an IP packet: could it concern a service at all?
//! Only if its destination may be a VIP or its source a NAT backend, by one
//! bit each in an array the agent keeps ([`lb_common::maps::MAP_ADDR_FILTER`]);
//! everything else passes without a hash lookup, and an untagged IPv4 or
//! IPv6 frame ([`early`]) before it is even parsed.

use aya_ebpf::programs::XdpContext;
use lb_common::maps::{addr_filter_bit, folded_filter_bit};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6},
    maps::ADDR_FILTER,
    parse::{load, Packet},
};

/// What the address filter says of a frame before any parsing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// An untagged IP packet whose addresses concern no service: pass it,
    /// counted by family (4 or 6) and IP protocol field (IPv6: the first
    /// next header).
    Unconcerned { family: u8, proto: u8 },
    /// An untagged IPv4 or IPv6 packet to an address that may be a VIP:
    /// the express lane's.
    MayBeVipV4,
    MayBeVipV6,
    /// Anything else (a NAT backend's packet, other ethertypes, VLAN tags,
    /// short frames): for the parser.
    Parse,
}

/// Reads the frame's addresses at their fixed offsets, each folded into a
/// word as it is read (no copy on the stack), and looks their bits up.
#[inline(always)]
pub fn early(ctx: &XdpContext) -> Early {
    let (start, end) = (ctx.data(), ctx.data_end());
    // Ethernet and an IPv4 header.
    if start + 34 > end {
        return Early::Parse;
    }
    let ether_type = u16::from_be(unsafe { load::<u16>(start + 12) });
    let word = |at: usize| unsafe { load::<u32>(start + at) };
    let v6 = ether_type == ETH_P_IPV6;
    let (src, dst) = if ether_type == ETH_P_IP {
        (word(26), word(30))
    } else if v6 && start + 54 <= end {
        let fold = |at: usize| word(at) ^ word(at + 4) ^ word(at + 8) ^ word(at + 12);
        (fold(22), fold(38))
    } else {
        return Early::Parse;
    };
    if marked_bit(folded_filter_bit(dst)) {
        return if v6 {
            Early::MayBeVipV6
        } else {
            Early::MayBeVipV4
        };
    }
    if marked_bit(folded_filter_bit(src)) {
        return Early::Parse;
    }
    let byte = |at: usize| unsafe { *((start + at) as *const u8) };
    if v6 {
        Early::Unconcerned {
            family: 6,
            proto: byte(20),
        }
    } else {
        Early::Unconcerned {
            family: 4,
            proto: byte(23),
        }
    }
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
