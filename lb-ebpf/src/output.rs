//! Putting a frame on the wire toward a next hop: MAC rewrite, then XDP_TX
//! out the ingress interface or XDP_REDIRECT out another.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use lb_common::stats::Counter;

use crate::{
    parse::{load, ptr_at_mut, store},
    stats,
};

/// A MAC address as a word and a half-word, as it is written to a frame.
#[derive(Clone, Copy)]
pub struct Mac(u32, u16);

impl Mac {
    /// From a map value: two loads (the kernel allows them misaligned
    /// there, as in packets).
    #[inline(always)]
    pub fn of(mac: &[u8; 6]) -> Mac {
        let at = mac.as_ptr() as usize;
        unsafe { Mac(load(at), load(at + 4)) }
    }

    /// Into a map value: two stores, as [`Mac::of`] loads.
    #[inline(always)]
    pub fn store_into(self, mac: &mut [u8; 6]) {
        let at = mac.as_mut_ptr() as usize;
        unsafe {
            store(at, self.0);
            store(at + 4, self.1);
        }
    }

    /// From bytes on the stack, where loads must be aligned.
    #[inline(always)]
    pub fn from_bytes(m: [u8; 6]) -> Mac {
        Mac(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]),
            u16::from_ne_bytes([m[4], m[5]]),
        )
    }
}

/// Sends the frame to `dst`. `src` is used when leaving by another
/// interface (`ifindex` not 0 nor the ingress one); otherwise the ingress
/// interface's own MAC is the source, which must be the frame's
/// destination (the program balances no other frame).
#[inline(always)]
pub fn send(ctx: &XdpContext, dst: Mac, src: Mac, ifindex: u32) -> u32 {
    let Ok(eth) = ptr_at_mut::<[u8; 12]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let redirect = ifindex != 0 && ifindex != ingress;
    let at = eth as usize;
    let src = if redirect {
        src
    } else {
        unsafe { Mac(load(at), load(at + 4)) }
    };
    unsafe {
        store(at, dst.0);
        store(at + 4, dst.1);
        store(at + 6, src.0);
        store(at + 10, src.1);
    }
    if redirect {
        stats::inc(Counter::Redirect);
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    } else {
        stats::inc(Counter::Tx);
        xdp_action::XDP_TX
    }
}
