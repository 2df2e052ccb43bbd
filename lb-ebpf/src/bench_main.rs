//! The benchmarks' XDP programs, an object of their own that only the
//! benchmarks load (the `xlb` binary embeds `main.rs`'s): `xlb_tx_floor`,
//! the floor the per-packet costs are set against, and the load benchmarks'
//! `xlb_gen` and `xlb_count` ([`bench`]).
#![no_std]
#![no_main]

mod bench;
// Shared with the balancer, which uses the rest.
#[allow(dead_code)]
mod consts;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The cost floor for benchmarks: bounce the frame untouched.
#[xdp]
pub fn xlb_tx_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// The UDP benchmark's load generator: see [`bench`].
#[xdp]
pub fn xlb_gen(ctx: XdpContext) -> u32 {
    bench::generate(&ctx)
}

/// The UDP benchmark's backend counter: see [`bench`].
#[xdp]
pub fn xlb_count(ctx: XdpContext) -> u32 {
    bench::count(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
