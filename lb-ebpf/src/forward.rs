//! The forwarders `xlb` tail-calls with the packet's facts in `HANDOFF`:
//! one small program per mode and family (but direct routing, which `xlb`
//! does itself), each verified on its own.
//!
//! Packets reaching them carry no IP options or extension headers, so every
//! header sits at a fixed distance from the IP header, which starts after
//! 14, 18 or 22 bytes of link header. Each forwarder is built for each of
//! those as a constant: offsets the program reads from a map would reach the
//! verifier as unknown values, and LLVM recomputes such pointers after their
//! bounds checks, which the verifier then refuses.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{maps::Backend, stats::Counter};

use crate::{
    ipip,
    maps::{Handoff, BACKENDS, HANDOFF, SETTINGS},
    nat, output,
    parse::Packet,
    stats,
};

#[inline(always)]
fn handoff() -> Option<(&'static Handoff, &'static Backend)> {
    let handoff = unsafe { &*HANDOFF.get_ptr(0)? };
    // A slot the agent zeroed since the backend was chosen names nobody.
    let backend = BACKENDS.get(handoff.backend).filter(|b| b.family != 0)?;
    Some((handoff, backend))
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
    let (Some((h, b)), Some(s)) = (handoff(), SETTINGS.get(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    match h.pkt.l3_off {
        14 => ipip::encap::<V6, 14>(ctx, &h.pkt, b, s),
        18 => ipip::encap::<V6, 18>(ctx, &h.pkt, b, s),
        22 => ipip::encap::<V6, 22>(ctx, &h.pkt, b, s),
        _ => xdp_action::XDP_ABORTED,
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
    let Some((h, b)) = handoff() else {
        return xdp_action::XDP_ABORTED;
    };
    match h.pkt.l3_off {
        14 => nat_forward_at::<V6, 14>(ctx, &h.pkt, b),
        18 => nat_forward_at::<V6, 18>(ctx, &h.pkt, b),
        22 => nat_forward_at::<V6, 22>(ctx, &h.pkt, b),
        _ => xdp_action::XDP_ABORTED,
    }
}

#[inline(always)]
fn nat_forward_at<const V6: bool, const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    b: &Backend,
) -> u32 {
    // An expiring TTL goes to the kernel, which answers it.
    if nat::decrement_ttl::<V6, L3>(ctx).is_err() {
        return pass();
    }
    if nat::forward::<V6, L3>(ctx, pkt, b).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    output::send(ctx, b.mac, b.src_mac, b.ifindex)
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
    let Some(handoff) = HANDOFF.get_ptr(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let pkt = unsafe { &(*handoff).pkt };
    let translated = match pkt.l3_off {
        14 => nat::reply::<V6, 14>(ctx, pkt),
        18 => nat::reply::<V6, 18>(ctx, pkt),
        22 => nat::reply::<V6, 22>(ctx, pkt),
        _ => None,
    };
    translated.unwrap_or_else(pass)
}

/// To the kernel, counted as the entry program counts its own passes.
#[inline(always)]
fn pass() -> u32 {
    stats::inc(Counter::Pass);
    xdp_action::XDP_PASS
}
