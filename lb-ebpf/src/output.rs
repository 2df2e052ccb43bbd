//! Putting a frame on the wire toward a next hop: MAC rewrite, then XDP_TX
//! out the ingress interface or XDP_REDIRECT out another.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use lb_common::stats::Counter;

use crate::{parse::ptr_at_mut, stats};

/// Sends the frame to `dst_mac`. `src_mac` is used when leaving by another
/// interface (`ifindex` not 0 nor the ingress one); otherwise the ingress
/// interface's own MAC is the source, which must be the frame's
/// destination.
#[inline(always)]
pub fn send(ctx: &XdpContext, dst_mac: [u8; 6], src_mac: [u8; 6], ifindex: u32) -> u32 {
    let Ok(eth) = ptr_at_mut::<[u8; 12]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let redirect = ifindex != 0 && ifindex != ingress;
    unsafe {
        let macs = &mut *eth;
        // Out the ingress interface, the source is its own MAC, which the
        // frame came addressed to (the program balances no other frame).
        let own = if redirect {
            src_mac
        } else {
            [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]]
        };
        macs[..6].copy_from_slice(&dst_mac);
        macs[6..].copy_from_slice(&own);
    }
    if redirect {
        stats::inc(Counter::Redirect);
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    } else {
        stats::inc(Counter::Tx);
        xdp_action::XDP_TX
    }
}
