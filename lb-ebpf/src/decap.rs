//! `xlb_decap`, for real servers behind IP-in-IP: strips the outer header
//! of packets whose inner destination is one of this host's VIPs and hands
//! the inner packet to the kernel, which needs no ipip module for it.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    maps::{VipKey, FAMILY_V4, FAMILY_V6},
    stats::Counter,
};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6},
    l2,
    maps::DECAP_VIPS,
    parse::{ptr_at, Packet, L4},
    stats,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// XDP_PASS in every case: decapsulated, or untouched if not for us.
#[inline(always)]
pub fn decap(ctx: &XdpContext, pkt: &Packet) -> u32 {
    if pkt.l4 != L4::Other || (pkt.proto != IPPROTO_IPIP && pkt.proto != IPPROTO_IPV6) {
        return xdp_action::XDP_PASS;
    }
    let inner = pkt.l4_off;
    let key = if pkt.proto == IPPROTO_IPIP {
        match ptr_at::<[u8; 20]>(ctx, inner) {
            Ok(ip) => {
                let ip = unsafe { *ip };
                let dst = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
                VipKey {
                    addr: [dst, 0, 0, 0],
                    family: FAMILY_V4,
                    _pad: [0; 3],
                }
            }
            Err(_) => return xdp_action::XDP_PASS,
        }
    } else {
        match ptr_at::<[u32; 10]>(ctx, inner) {
            Ok(ip) => {
                let ip = unsafe { ip.read_unaligned() };
                VipKey {
                    addr: [ip[6], ip[7], ip[8], ip[9]],
                    family: FAMILY_V6,
                    _pad: [0; 3],
                }
            }
            Err(_) => return xdp_action::XDP_PASS,
        }
    };
    if unsafe { DECAP_VIPS.get(&key) }.is_none() {
        return xdp_action::XDP_PASS;
    }
    let outer = inner - pkt.l3_off;
    let ether_type = if key.family == FAMILY_V6 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    if l2::move_forward(ctx, outer, pkt.l3_off, ether_type).is_err()
        || unsafe { bpf_xdp_adjust_head(ctx.ctx, outer as i32) } != 0
    {
        return xdp_action::XDP_PASS;
    }
    stats::inc(Counter::Decap);
    xdp_action::XDP_PASS
}
