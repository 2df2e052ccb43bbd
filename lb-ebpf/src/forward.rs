//! The forwarders `xlb` tail-calls with the backend and the IP header's
//! offset in `HANDOFF`: one small program per mode and family (but direct
//! routing, which `xlb` does itself), each verified on its own.
//!
//! Packets reaching them carry no IP options or extension headers and are
//! no fragments, so every header sits at a fixed distance from the IP
//! header, which starts after 14, 18 or 22 bytes of link header: each
//! forwarder reads the packet's facts there again
//! ([`parse::plain_at`]) rather than have them copied over. Each forwarder is built for each of
//! those as a constant: offsets the program reads from a map would reach the
//! verifier as unknown values, and LLVM recomputes such pointers after their
//! bounds checks, which the verifier then refuses.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    maps::{Backend, Settings},
    stats::Counter,
};

use crate::{
    ipip,
    maps::{Handoff, BACKENDS, HANDOFF, SETTINGS},
    nat,
    output::{self, Mac},
    parse,
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
    match parse::plain_at::<V6, L3>(ctx) {
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
    let Some(pkt) = parse::plain_at::<V6, L3>(ctx) else {
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
    nat::reply::<V6, L3>(ctx, &parse::plain_at::<V6, L3>(ctx)?)
}

/// To the kernel, counted as the entry program counts its own passes.
#[inline(always)]
fn pass() -> u32 {
    stats::inc(Counter::Pass);
    xdp_action::XDP_PASS
}
