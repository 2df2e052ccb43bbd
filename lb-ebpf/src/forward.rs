//! The forwarders `xlb` tail-calls with the backend and the IP header's
//! offset in `HANDOFF`: one small program per mode and family (but direct
//! routing, which `xlb` does itself), each verified on its own.
//!
//! Packets reaching them carry no IP options or extension headers and are
//! no fragments, so every header sits at a fixed distance from the IP
//! header, which starts after 14, 18 or 22 bytes of link header: each
//! forwarder reads the packet's facts there again ([`packet_at`]) rather
//! than have them copied over. Each forwarder is built for each of
//! those as a constant: offsets the program reads from a map would reach the
//! verifier as unknown values, and LLVM recomputes such pointers after their
//! bounds checks, which the verifier then refuses.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    maps::{Backend, Settings},
    stats::Counter,
};

use crate::{
    consts::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    ipip,
    maps::{Handoff, BACKENDS, HANDOFF, SETTINGS},
    nat,
    output::{self, Mac},
    parse::{self, load, Packet, L4},
    stats,
};

/// Calls `$f::<$v6, L3>($args)` with the packet's link-header length as
/// the constant `L3`, or yields `$other` for a length the parser never gives.
macro_rules! at_l3 {
    ($l3:expr, $($f:ident)::+, $v6:ident, ($($arg:expr),*), $other:expr) => {
        match $l3 {
            14 => $($f)::+::<$v6, 14>($($arg),*),
            18 => $($f)::+::<$v6, 18>($($arg),*),
            22 => $($f)::+::<$v6, 22>($($arg),*),
            _ => $other,
        }
    };
}

#[inline(always)]
fn handoff() -> Option<&'static Handoff> {
    HANDOFF.get_ptr(0).map(|h| unsafe { &*h })
}

/// The handoff and its backend, unless the agent zeroed the backend's slot
/// since it was chosen.
#[inline(always)]
fn handoff_to_backend() -> Option<(&'static Handoff, &'static Backend)> {
    let handoff = handoff()?;
    let backend = BACKENDS.get(handoff.backend).filter(|b| b.family != 0)?;
    Some((handoff, backend))
}

/// The facts of a forwarded packet (see the module's notes), read at
/// their fixed offsets.
#[inline(always)]
fn packet_at<const V6: bool, const L3: usize>(ctx: &XdpContext) -> Option<Packet> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let l4_off = L3 + if V6 { 40 } else { 20 };
    // Up to the ports, or an ICMP message's type and code.
    if start + l4_off + 4 > end {
        return None;
    }
    let byte = |at: usize| unsafe { load::<u8>(start + at) };
    let be16 = |at: usize| u16::from_be(unsafe { load::<u16>(start + at) });
    let (proto, ip_len, src, dst) = if V6 {
        let addr = |at: usize| unsafe { load::<[u32; 4]>(start + at) };
        let len = 40 + be16(L3 + 4) as usize;
        (byte(L3 + 6), len, addr(L3 + 8), addr(L3 + 24))
    } else {
        let word = |at: usize| unsafe { load::<u32>(start + at) };
        let (src, dst) = ([word(L3 + 12), 0, 0, 0], [word(L3 + 16), 0, 0, 0]);
        (byte(L3 + 9), be16(L3 + 2) as usize, src, dst)
    };
    let l4 = match proto {
        IPPROTO_TCP => L4::Tcp,
        IPPROTO_UDP => L4::Udp,
        IPPROTO_ICMP if !V6 => L4::Icmp,
        IPPROTO_ICMPV6 if V6 => L4::Icmpv6,
        _ => L4::Other,
    };
    let ported = l4 == L4::Tcp || l4 == L4::Udp;
    let (sport, dport) = if ported {
        (be16(l4_off), be16(l4_off + 2))
    } else {
        (0, 0)
    };
    let tcp_flags = if l4 == L4::Tcp && start + l4_off + 14 <= end {
        byte(l4_off + 13)
    } else {
        0
    };
    let icmp_type = if ported { 0 } else { byte(l4_off) };
    Some(Packet {
        vlan_tagged: L3 > 14,
        l3: if V6 {
            parse::L3::Ipv6
        } else {
            parse::L3::Ipv4
        },
        ip_options: false,
        fragment: false,
        l4,
        proto,
        sport,
        dport,
        tcp_flags,
        icmp_type,
        l3_off: L3,
        l4_off,
        ip_len,
        src,
        dst,
    })
}

#[xdp]
pub fn xlb_fwd_ipip4(ctx: XdpContext) -> u32 {
    encap::<false>(&ctx)
}

#[xdp]
pub fn xlb_fwd_ipip6(ctx: XdpContext) -> u32 {
    encap::<true>(&ctx)
}

#[inline(always)]
fn encap<const V6: bool>(ctx: &XdpContext) -> u32 {
    let (Some((h, b)), Some(s)) = (handoff_to_backend(), SETTINGS.get(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    at_l3!(h.l3_off, encap_at, V6, (ctx, b, s), xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn encap_at<const V6: bool, const L3: usize>(ctx: &XdpContext, b: &Backend, s: &Settings) -> u32 {
    match packet_at::<V6, L3>(ctx) {
        Some(pkt) => ipip::encap::<V6, L3>(ctx, &pkt, b, s),
        None => xdp_action::XDP_ABORTED,
    }
}

#[xdp]
pub fn xlb_fwd_nat4(ctx: XdpContext) -> u32 {
    nat_forward::<false>(&ctx)
}

#[xdp]
pub fn xlb_fwd_nat6(ctx: XdpContext) -> u32 {
    nat_forward::<true>(&ctx)
}

#[inline(always)]
fn nat_forward<const V6: bool>(ctx: &XdpContext) -> u32 {
    let Some((h, b)) = handoff_to_backend() else {
        return xdp_action::XDP_ABORTED;
    };
    at_l3!(h.l3_off, nat_forward_at, V6, (ctx, b), xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn nat_forward_at<const V6: bool, const L3: usize>(ctx: &XdpContext, b: &Backend) -> u32 {
    let Some(pkt) = packet_at::<V6, L3>(ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let pkt = &pkt;
    // An expiring TTL goes to the kernel, which answers it.
    if nat::decrement_ttl::<V6, L3>(ctx).is_err() {
        return pass();
    }
    if nat::forward::<V6, L3>(ctx, pkt, b).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    output::send(ctx, Mac::of(&b.mac), Mac::of(&b.src_mac), b.ifindex)
}

#[xdp]
pub fn xlb_nat_reply4(ctx: XdpContext) -> u32 {
    nat_reply::<false>(&ctx)
}

#[xdp]
pub fn xlb_nat_reply6(ctx: XdpContext) -> u32 {
    nat_reply::<true>(&ctx)
}

#[inline(always)]
fn nat_reply<const V6: bool>(ctx: &XdpContext) -> u32 {
    let Some(h) = handoff() else {
        return xdp_action::XDP_ABORTED;
    };
    at_l3!(h.l3_off, reply_at, V6, (ctx), None).unwrap_or_else(pass)
}

#[inline(always)]
fn reply_at<const V6: bool, const L3: usize>(ctx: &XdpContext) -> Option<u32> {
    nat::reply::<V6, L3>(ctx, &packet_at::<V6, L3>(ctx)?)
}

/// To the kernel, counted as the entry program counts its own passes.
#[inline(always)]
fn pass() -> u32 {
    stats::inc(Counter::Pass);
    xdp_action::XDP_PASS
}
