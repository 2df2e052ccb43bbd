//! The express lane: most of a director's VIP traffic is untagged IPv4
//! without options or IPv6 without extension headers, TCP or UDP, of a
//! flow this CPU has cached. Such a frame is read at fixed offsets (no
//! parse loop, no `Packet` to zero) and forwarded from the cache; anything
//! else, a miss included, takes the full path from the start, which then
//! counts it. A SYN always takes the full path.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    flow::FlowKey,
    maps::{FAMILY_V4, FAMILY_V6},
    stats::Counter,
};

use crate::{
    balancer, cache,
    consts::{IPPROTO_TCP, IPPROTO_UDP, IPV4_MF_OFFSET_MASK, TCP_SYN},
    l2,
    maps::SETTINGS,
    parse::{load, plain_at, L4},
    select::TcpSignal,
    stats::Record,
};

/// Returned when the frame is not the express lane's: take the full path.
pub const NOT_HANDLED: u32 = u32::MAX;

const L3_OFF: usize = 14;

/// An IPv4 frame's action, or [`NOT_HANDLED`]; counted in `record`.
#[inline(never)]
pub fn express_v4(ctx: &XdpContext, record: &mut Record) -> u32 {
    express::<false>(ctx, record).unwrap_or(NOT_HANDLED)
}

/// An IPv6 frame's action, or [`NOT_HANDLED`]; counted in `record`.
#[inline(never)]
pub fn express_v6(ctx: &XdpContext, record: &mut Record) -> u32 {
    express::<true>(ctx, record).unwrap_or(NOT_HANDLED)
}

/// The frame's destination may be a VIP (the address filter said so).
#[inline(always)]
fn express<const V6: bool>(ctx: &XdpContext, record: &mut Record) -> Option<u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let l4_off = if V6 { L3_OFF + 40 } else { L3_OFF + 20 };
    // The IP header and a UDP header's worth, at least.
    if start + l4_off + 8 > end {
        return None;
    }
    let byte = |at: usize| unsafe { *((start + at) as *const u8) };
    let be16 = |at: usize| u16::from_be(unsafe { load::<u16>(start + at) });
    let frame_len = end - start;
    let (proto, ip_len) = if V6 {
        let payload_len = be16(L3_OFF + 4) as usize;
        if byte(L3_OFF) >> 4 != 6 || payload_len == 0 {
            return None;
        }
        (byte(L3_OFF + 6), 40 + payload_len)
    } else {
        // Version 4, no options, not a fragment.
        if byte(L3_OFF) != 0x45 || be16(L3_OFF + 6) & IPV4_MF_OFFSET_MASK != 0 {
            return None;
        }
        (byte(L3_OFF + 9), be16(L3_OFF + 2) as usize)
    };
    let header = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    // The transport header within the IP packet, the packet within the frame.
    let ip_header = l4_off - L3_OFF;
    if ip_len < ip_header + header || L3_OFF + ip_len > frame_len {
        return None;
    }
    let pkt = plain_at::<V6, L3_OFF>(ctx)?;
    if pkt.tcp_flags & TCP_SYN != 0 || !l2::addressed_to_us(ctx) {
        return None;
    }
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto,
        family: if V6 { FAMILY_V6 } else { FAMILY_V4 },
        _pad: [0; 2],
    };
    let index = cache::index(&key, SETTINGS.get(0)?);
    let signal = TcpSignal::of(pkt.tcp_flags);
    let action = balancer::fast_path::<V6>(ctx, &pkt, &key, index, signal)?;
    // What the parser would have counted, and the hit.
    record.inc(if V6 { Counter::Ipv6 } else { Counter::Ipv4 });
    record.inc(if pkt.l4 == L4::Tcp {
        Counter::Tcp
    } else {
        Counter::Udp
    });
    record.inc(Counter::FlowHit);
    Some(action)
}
