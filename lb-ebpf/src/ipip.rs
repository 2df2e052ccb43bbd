//! IP-in-IP toward a backend: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6.
//! A packet that would outgrow the MTU once wrapped is answered with ICMP
//! "fragmentation needed" / "packet too big" instead.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    flow::tunnel_flow_hash,
    maps::{spread_source, Backend, Settings, FAMILY_V6, TUNNEL_TTL},
    stats::Counter,
};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_DF},
    icmp, ip, l2,
    output::{self, Mac},
    parse::{ptr_at, Packet},
    stats,
};

pub const OUTER_V4: usize = 20;
pub const OUTER_V6: usize = 40;

#[inline(always)]
pub fn encap<const INNER_V6: bool, const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    settings: &Settings,
) -> u32 {
    let outer_v6 = backend.family == FAMILY_V6;
    if INNER_V6 && !outer_v6 {
        // IPv6 inside IPv4 is refused by the agent; never send it.
        stats::inc(Counter::DropEncap);
        return xdp_action::XDP_DROP;
    }
    let outer = if outer_v6 { OUTER_V6 } else { OUTER_V4 };
    if pkt.ip_len + outer > settings.mtu as usize {
        // Only a sender that asked not to be fragmented, and whose packet
        // is no ICMP error itself, is told.
        if icmp::is_error(pkt) || (!INNER_V6 && !ipv4_df::<L3>(ctx)) {
            stats::inc(Counter::DropTooBig);
            return xdp_action::XDP_DROP;
        }
        return icmp::too_big::<INNER_V6, L3>(ctx, pkt, settings, settings.mtu - outer as u32);
    }
    let tos = if INNER_V6 { 0 } else { ipv4_tos::<L3>(ctx) };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        stats::inc(Counter::DropEncap);
        return xdp_action::XDP_DROP;
    }
    let ether_type = if outer_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    let inner_proto = if INNER_V6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    // The outer source varies per flow within the configured spread.
    let flow = tunnel_flow_hash(&pkt.src, pkt.sport, pkt.dport);
    let written = l2::move_to_front(ctx, outer, L3, ether_type).and_then(|()| {
        if outer_v6 {
            let mut source = settings.tunnel_src_v6;
            source[3] = spread_source(source[3], settings.tunnel_spread_v6, flow);
            ip::write_v6(
                ctx,
                L3,
                pkt.ip_len,
                inner_proto,
                TUNNEL_TTL,
                &source,
                &backend.addr,
            )
        } else {
            // IPv4 carries only IPv4 (IPPROTO_IPIP, as the backend's sum has it).
            let source = settings.tunnel_src_v4[0];
            ip::write_tunnel_v4(
                ctx,
                L3,
                pkt.ip_len + OUTER_V4,
                tos,
                spread_source(source, settings.tunnel_spread_v4, flow),
                backend,
            )
        }
    });
    if written.is_err() {
        return xdp_action::XDP_ABORTED;
    }
    output::send(
        ctx,
        Mac::of(&backend.mac),
        Mac::of(&backend.src_mac),
        backend.ifindex,
    )
}

/// Whether an IPv4 header sets Don't Fragment.
#[inline(always)]
fn ipv4_df<const L3: usize>(ctx: &XdpContext) -> bool {
    ptr_at::<[u8; 2]>(ctx, L3 + 6).is_ok_and(|f| u16::from_be_bytes(unsafe { *f }) & IPV4_DF != 0)
}

#[inline(always)]
fn ipv4_tos<const L3: usize>(ctx: &XdpContext) -> u8 {
    // Read with the version/IHL byte before it, as one word.
    ptr_at::<u16>(ctx, L3).map_or(0, |w| unsafe { w.read().to_ne_bytes()[1] })
}
