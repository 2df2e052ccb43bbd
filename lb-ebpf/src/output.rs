//! Putting a frame on the wire toward a next hop: MAC rewrite, then XDP_TX
//! out the ingress interface or XDP_REDIRECT out another.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use lb_common::stats::Counter;

use crate::{l2, parse::ptr_at_mut, stats};

/// Sends the frame to `dst_mac`. `src_mac` is used when leaving by another
/// interface (`ifindex` not 0 nor the ingress one); otherwise the ingress
/// interface's own MAC is the source.
#[inline(always)]
pub fn send(ctx: &XdpContext, dst_mac: [u8; 6], src_mac: [u8; 6], ifindex: u32) -> u32 {
    let Ok(eth) = ptr_at_mut::<[u8; 12]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let redirect = ifindex != 0 && ifindex != ingress;
    let own = if redirect {
        src_mac
    } else {
        // The program balances only frames to an interface it knows.
        let Some(own) = l2::own_mac(ctx) else {
            return xdp_action::XDP_ABORTED;
        };
        own
    };
    unsafe {
        let macs = &mut *eth;
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
