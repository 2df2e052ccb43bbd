//! ICMP the balancer sends (too big) and ICMP errors it forwards: an error
//! about a VIP flow goes to that flow's backend, found from the quoted header.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_csum_diff, bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_get_buff_len,
    },
    programs::XdpContext,
};
use lb_common::{
    flow::FlowKey,
    maps::{Service, Settings, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, RATE_ICMP},
    stats::Counter,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6},
    csum, ip, l2,
    parse::{ptr_at, ptr_at_mut, words, Packet, ParseError, L4},
    rate, select, stats,
};

/// Bytes of the offending packet quoted back: IPv4 asks for the header and
/// 8 bytes at least; IPv6 for as much as fits in 1280.
const QUOTE_V4: usize = 64;
const QUOTE_V6: usize = 128;
const ICMP_HDR: usize = 8;

/// Turns the packet into an ICMP "fragmentation needed" (IPv4) or "packet
/// too big" (IPv6) to its sender, announcing `mtu`, and sends it back.
#[inline(never)]
pub fn too_big<const V6: bool, const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    settings: &Settings,
    mtu: u32,
) -> u32 {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if rate::over(RATE_ICMP, settings.icmp_per_cpu, now) {
        stats::inc(Counter::IcmpRateLimited);
        return xdp_action::XDP_DROP;
    }
    let (quote, ip_hdr) = if V6 {
        (QUOTE_V6, Ipv6Hdr::LEN)
    } else {
        (QUOTE_V4, Ipv4Hdr::LEN)
    };
    // Only below the MTU the agent accepts could a packet be this short.
    if pkt.ip_len < quote {
        stats::inc(Counter::DropEncap);
        return xdp_action::XDP_DROP;
    }
    // From a helper: LLVM would turn `end - data` arithmetic into math on
    // the end pointer, which the verifier refuses.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    let cut = (L3 + quote) as i32 - frame_len;
    let grow = (ip_hdr + ICMP_HDR) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, cut) } != 0
        || unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0
    {
        stats::inc(Counter::DropEncap);
        return xdp_action::XDP_DROP;
    }
    let built = if V6 {
        l2::move_to_front(ctx, grow as usize, L3, ETH_P_IPV6)
            .and_then(|()| write_v6(ctx, L3, pkt, mtu))
    } else {
        l2::move_to_front(ctx, grow as usize, L3, ETH_P_IP)
            .and_then(|()| write_v4(ctx, L3, pkt, mtu))
    };
    if built.and_then(|()| l2::swap_macs(ctx)).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    stats::inc(Counter::IcmpTooBig);
    stats::inc(Counter::Tx);
    xdp_action::XDP_TX
}

#[inline(always)]
fn write_v4(ctx: &XdpContext, off: usize, pkt: &Packet, mtu: u32) -> Result<(), ParseError> {
    const LEN: usize = Ipv4Hdr::LEN + ICMP_HDR + QUOTE_V4;
    let header = ip::v4_header(LEN, 0, 0, 64, IPPROTO_ICMP, pkt.dst[0], pkt.src[0]);
    unsafe { ptr_at_mut::<[u32; 5]>(ctx, off)?.write(header) };

    let [m0, m1] = (mtu as u16).to_be_bytes();
    let header = [3u8, 4, 0, 0, 0, 0, m0, m1];
    let icmp_off = off + Ipv4Hdr::LEN;
    unsafe { *ptr_at_mut::<[u8; ICMP_HDR]>(ctx, icmp_off)? = header };
    let check = !csum::fold(sum_packet::<{ ICMP_HDR + QUOTE_V4 }>(ctx, icmp_off)?);
    unsafe { ptr_at_mut::<u16>(ctx, icmp_off + 2)?.write(check) };
    Ok(())
}

#[inline(always)]
fn write_v6(ctx: &XdpContext, off: usize, pkt: &Packet, mtu: u32) -> Result<(), ParseError> {
    const PAYLOAD: usize = ICMP_HDR + QUOTE_V6;
    let (src, dst) = (pkt.dst, pkt.src);
    ip::write_v6(ctx, off, PAYLOAD, IPPROTO_ICMPV6, 255, &src, &dst)?;

    let [m0, m1, m2, m3] = mtu.to_be_bytes();
    let header = [2u8, 0, 0, 0, m0, m1, m2, m3];
    let icmp_off = off + Ipv6Hdr::LEN;
    unsafe { *ptr_at_mut::<[u8; ICMP_HDR]>(ctx, icmp_off)? = header };
    let mut sum = csum::sum_v6(csum::sum_v6(0, &src), &dst);
    sum += (PAYLOAD as u16).to_be() as u64 + (IPPROTO_ICMPV6 as u16).to_be() as u64;
    let check = !csum::fold(sum + sum_packet::<PAYLOAD>(ctx, icmp_off)?);
    unsafe { ptr_at_mut::<u16>(ctx, icmp_off + 2)?.write(check) };
    Ok(())
}

/// Ones' complement sum of the `N` packet bytes at `off` (`N` a multiple
/// of 4), by the kernel: a loop here would be walked by the verifier once
/// for every state that reaches it.
#[inline(always)]
fn sum_packet<const N: usize>(ctx: &XdpContext, off: usize) -> Result<u64, ParseError> {
    let bytes = ptr_at_mut::<[u8; N]>(ctx, off)?;
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, bytes as *mut u32, N as u32, 0) };
    if sum < 0 {
        return Err(ParseError::Malformed);
    }
    Ok(sum as u64)
}

/// Whether the packet is an ICMP or ICMPv6 error message.
#[inline(always)]
pub fn is_error(pkt: &Packet) -> bool {
    match pkt.l4 {
        L4::Icmpv6 => (1..=4).contains(&pkt.icmp_type),
        L4::Icmp => matches!(pkt.icmp_type, 3 | 11 | 12),
        _ => false,
    }
}

/// For an ICMP error about a TCP or UDP packet a VIP sent (quoted inside
/// it) and addressed to that VIP: the service and the flow key of the
/// client's side of that flow. A quoted IPv6 packet with extension
/// headers is not followed.
#[inline(always)]
pub fn error_flow(ctx: &XdpContext, pkt: &Packet) -> Option<(&'static Service, FlowKey)> {
    if !is_error(pkt) {
        return None;
    }
    let v6 = pkt.l4 == L4::Icmpv6;
    let inner = pkt.l4_off + ICMP_HDR;
    let (family, proto, src, dst, ports_off) = if v6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, inner).ok()?;
        let (proto, src, dst) = unsafe { ((*ip).next_hdr, (*ip).src_addr, (*ip).dst_addr) };
        (
            FAMILY_V6,
            proto,
            words(src),
            words(dst),
            inner + Ipv6Hdr::LEN,
        )
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, inner).ok()?;
        let (vihl, proto, src, dst) =
            unsafe { ((*ip).vihl, (*ip).proto, (*ip).src_addr, (*ip).dst_addr) };
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if ihl < Ipv4Hdr::LEN {
            return None;
        }
        let w = |a: [u8; 4]| [u32::from_ne_bytes(a), 0, 0, 0];
        (FAMILY_V4, proto, w(src), w(dst), inner + ihl)
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    if !same_addr(&src, &pkt.dst) {
        stats::inc(Counter::IcmpMismatch);
        return None;
    }
    let ports = unsafe { *ptr_at::<[u8; 4]>(ctx, ports_off).ok()? };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    // The quoted packet went VIP:vport -> client; the flow is its reverse.
    let service = select::service(&src, sport, proto, family)
        .or_else(|| select::service(&src, 0, proto, family))?;
    let key = FlowKey {
        src: dst,
        dst: src,
        sport: dport,
        dport: sport,
        proto,
        family,
        _pad: [0; 2],
    };
    Some((service, key))
}

/// Address equality word by word (an array compare may become a call).
#[inline(always)]
fn same_addr(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}
