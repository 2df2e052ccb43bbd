//! xlb's XDP program: parse every frame, count it, pass it on.
#![no_std]
#![no_main]

mod consts;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::{debug, trace};
use lb_common::stats::Counter;

use parse::{Packet, ParseError, L3, L4};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    stats::inc(Counter::RxPackets);
    stats::add(Counter::RxBytes, len);

    let mut packet = Packet::new();
    match parse::parse(&ctx, &mut packet) {
        Ok(()) => {
            stats::count_packet(&packet);
            log_packet(&ctx, &packet);
        }
        Err(ParseError::Truncated) => {
            stats::inc(Counter::Truncated);
            debug!(&ctx, "truncated frame of {} bytes", len);
        }
        Err(ParseError::Malformed) => {
            stats::inc(Counter::Malformed);
            debug!(&ctx, "malformed frame of {} bytes", len);
        }
    }

    stats::inc(Counter::Pass);
    xdp_action::XDP_PASS
}

/// One trace line per frame; costs a single load while trace is off.
#[inline(always)]
fn log_packet(ctx: &XdpContext, packet: &Packet) {
    match packet.l3 {
        L3::Arp => return trace!(ctx, "arp"),
        L3::Other => return trace!(ctx, "non-ip frame"),
        L3::Ipv4 | L3::Ipv6 => {}
    }
    match packet.l4 {
        L4::Tcp => trace!(ctx, "tcp {} -> {}", packet.sport, packet.dport),
        L4::Udp => trace!(ctx, "udp {} -> {}", packet.sport, packet.dport),
        L4::Fragment => trace!(ctx, "non-first fragment, protocol {}", packet.proto),
        _ => trace!(ctx, "ip protocol {}", packet.proto),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
