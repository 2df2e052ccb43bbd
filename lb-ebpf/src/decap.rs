//! `xlb_decap`, for real servers behind IP-in-IP: strips the outer header
//! of packets from an allowed director whose inner destination is one of
//! this host's VIPs and hands the inner packet to the kernel, which needs
//! no ipip module for it.
//!
//! Outer headers are the director's: no IPv4 options or IPv6 extension
//! headers, so offsets are constants per link-header length (as in
//! [`crate::forward`]); anything else passes untouched.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    maps::{VipKey, FAMILY_V4, FAMILY_V6},
    stats::Counter,
};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6},
    l2,
    maps::{DECAP_SOURCES, DECAP_VIPS},
    parse::{ptr_at, Packet, L3, L4},
    stats,
};

/// XDP_PASS in every case: decapsulated, or untouched if not for us.
#[inline(always)]
pub fn decap(ctx: &XdpContext, pkt: &Packet) -> u32 {
    if pkt.l4 != L4::Other
        || pkt.ip_options
        || (pkt.proto != IPPROTO_IPIP && pkt.proto != IPPROTO_IPV6)
    {
        return xdp_action::XDP_PASS;
    }
    let inner_v6 = pkt.proto == IPPROTO_IPV6;
    match (pkt.l3_off, pkt.l3 == L3::Ipv6) {
        (14, false) => strip::<14, 20>(ctx, pkt, inner_v6),
        (18, false) => strip::<18, 20>(ctx, pkt, inner_v6),
        (22, false) => strip::<22, 20>(ctx, pkt, inner_v6),
        (14, true) => strip::<14, 40>(ctx, pkt, inner_v6),
        (18, true) => strip::<18, 40>(ctx, pkt, inner_v6),
        (22, true) => strip::<22, 40>(ctx, pkt, inner_v6),
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn strip<const L2: usize, const OUTER: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    inner_v6: bool,
) -> u32 {
    let inner = L2 + OUTER;
    let source = VipKey::new(pkt.src, if OUTER == 40 { FAMILY_V6 } else { FAMILY_V4 });
    if unsafe { DECAP_SOURCES.get(&source) }.is_none() {
        stats::inc(Counter::DecapForeign);
        return xdp_action::XDP_PASS;
    }
    let key = if inner_v6 {
        match ptr_at::<[u32; 10]>(ctx, inner) {
            Ok(ip) => {
                let ip = unsafe { ip.read() };
                VipKey::new([ip[6], ip[7], ip[8], ip[9]], FAMILY_V6)
            }
            Err(_) => return xdp_action::XDP_PASS,
        }
    } else {
        match ptr_at::<[u32; 5]>(ctx, inner) {
            Ok(ip) => {
                let dst = unsafe { ip.read() }[4];
                VipKey::new([dst, 0, 0, 0], FAMILY_V4)
            }
            Err(_) => return xdp_action::XDP_PASS,
        }
    };
    if unsafe { DECAP_VIPS.get(&key) }.is_none() {
        return xdp_action::XDP_PASS;
    }
    let ether_type = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    if l2::move_forward::<L2>(ctx, OUTER, ether_type).is_err()
        || unsafe { bpf_xdp_adjust_head(ctx.ctx, OUTER as i32) } != 0
    {
        return xdp_action::XDP_PASS;
    }
    stats::inc(Counter::Decap);
    xdp_action::XDP_PASS
}
