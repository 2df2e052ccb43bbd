//! IP-in-IP toward a backend: IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6.
//! A packet that would outgrow the MTU once wrapped is answered with ICMP
//! "fragmentation needed" / "packet too big" instead.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    maps::{Backend, Settings, FAMILY_V4, FAMILY_V6},
    stats::Counter,
};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6, IPV4_DF},
    csum, icmp, l2, output,
    parse::{ptr_at, ptr_at_mut, Packet},
    stats,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
pub const OUTER_V4: usize = 20;
pub const OUTER_V6: usize = 40;
const OUTER_TTL: u8 = 64;

#[inline(always)]
pub fn encap<const INNER_V6: bool, const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    settings: &Settings,
) -> u32 {
    let inner_v6 = INNER_V6;
    let outer_v6 = backend.family == FAMILY_V6;
    if inner_v6 && !outer_v6 {
        // IPv6 inside IPv4 is refused by the agent; never send it.
        stats::inc(Counter::DropEncap);
        return xdp_action::XDP_DROP;
    }
    let outer = if outer_v6 { OUTER_V6 } else { OUTER_V4 };
    if pkt.ip_len + outer > settings.mtu as usize {
        return icmp::too_big::<INNER_V6, L3>(ctx, pkt, settings.mtu - outer as u32);
    }
    let l2_len = L3;
    let tos = if INNER_V6 { 0 } else { ipv4_tos::<L3>(ctx) };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        stats::inc(Counter::DropEncap);
        return xdp_action::XDP_DROP;
    }
    let ether_type = if outer_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    let inner_proto = if inner_v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    let written = l2::move_to_front(ctx, outer, l2_len, ether_type).and_then(|()| {
        if outer_v6 {
            write_outer_v6(
                ctx,
                l2_len,
                pkt.ip_len,
                inner_proto,
                &settings.tunnel_src_v6,
                &backend.addr,
            )
        } else {
            write_outer_v4(
                ctx,
                l2_len,
                pkt.ip_len,
                inner_proto,
                tos,
                settings.tunnel_src_v4[0],
                backend.addr[0],
            )
        }
    });
    if written.is_err() {
        return xdp_action::XDP_ABORTED;
    }
    output::send(ctx, backend.mac, backend.src_mac, backend.ifindex)
}

#[inline(always)]
fn ipv4_tos<const L3: usize>(ctx: &XdpContext) -> u8 {
    // Two bytes (version/IHL, TOS): a one-byte read at a variable offset
    // gets a bounds check the verifier cannot use.
    ptr_at::<u16>(ctx, L3).map_or(0, |w| unsafe { w.read_unaligned().to_ne_bytes()[1] })
}

#[inline(always)]
fn write_outer_v4(
    ctx: &XdpContext,
    off: usize,
    inner_len: usize,
    proto: u8,
    tos: u8,
    src: u32,
    dst: u32,
) -> Result<(), crate::parse::ParseError> {
    let total = (inner_len + OUTER_V4) as u16;
    let [s0, s1, s2, s3] = src.to_ne_bytes();
    let [d0, d1, d2, d3] = dst.to_ne_bytes();
    let [t0, t1] = total.to_be_bytes();
    let [f0, f1] = IPV4_DF.to_be_bytes();
    let mut header: [u8; OUTER_V4] = [
        0x45, tos, t0, t1, 0, 0, f0, f1, OUTER_TTL, proto, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3,
    ];
    let mut words = [0u16; 10];
    let mut i = 0;
    while i < 10 {
        words[i] = u16::from_ne_bytes([header[2 * i], header[2 * i + 1]]);
        i += 1;
    }
    let check = !csum::fold(csum::sum16(&words));
    header[10..12].copy_from_slice(&check.to_ne_bytes());
    unsafe { *ptr_at_mut::<[u8; OUTER_V4]>(ctx, off)? = header };
    Ok(())
}

#[inline(always)]
fn write_outer_v6(
    ctx: &XdpContext,
    off: usize,
    inner_len: usize,
    next: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> Result<(), crate::parse::ParseError> {
    let hdr = ptr_at_mut::<[u32; 10]>(ctx, off)?;
    let [l0, l1] = (inner_len as u16).to_be_bytes();
    let words = [
        u32::from_ne_bytes([0x60, 0, 0, 0]),
        u32::from_ne_bytes([l0, l1, next, OUTER_TTL]),
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    unsafe { hdr.write_unaligned(words) };
    Ok(())
}

/// Whether the backend's family can carry this packet.
#[inline(always)]
pub fn supported(inner: u8, outer: u8) -> bool {
    inner == outer || (inner == FAMILY_V4 && outer == FAMILY_V6)
}
