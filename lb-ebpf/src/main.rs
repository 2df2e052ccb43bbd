//! xlb's XDP programs: `xlb`, the load balancer, with the forwarders it
//! tail-calls ([`forward`]), and `xlb_decap`, its real-server side for
//! IP-in-IP. The benchmarks' programs are an object of their own
//! (`bench_main.rs`).
#![no_std]
#![no_main]

mod balancer;
mod cache;
mod consts;
mod csum;
mod decap;
mod express;
mod filter;
mod forward;
mod health;
mod icmp;
mod ip;
mod ipip;
mod l2;
mod maps;
mod nat;
mod output;
mod parse;
mod rate;
mod select;
mod stats;
mod zero;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::{debug, trace};
use filter::Early;
use lb_common::{
    maps::{
        JUMP_IPIP_V4, JUMP_IPIP_V6, JUMP_NAT_REPLY_V4, JUMP_NAT_REPLY_V6, JUMP_NAT_V4, JUMP_NAT_V6,
    },
    stats::Counter,
};

use parse::{Packet, ParseError, L3, L4};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let Some(mut record) = stats::record() else {
        return xdp_action::XDP_ABORTED;
    };
    record.inc(Counter::RxPackets);
    record.add(Counter::RxBytes, len);
    let express = match filter::early(&ctx) {
        // Most of a director's own traffic: passed before any parsing.
        Early::Unconcerned { family, proto } => {
            record.inc(if family == 4 {
                Counter::Ipv4
            } else {
                Counter::Ipv6
            });
            record.inc(stats::protocol(proto));
            record.inc(Counter::Pass);
            return xdp_action::XDP_PASS;
        }
        Early::MayBeVipV4 => express::express_v4(&ctx, &mut record),
        Early::MayBeVipV6 => express::express_v6(&ctx, &mut record),
        Early::Parse => express::NOT_HANDLED,
    };
    let action = if express != express::NOT_HANDLED {
        express
    } else {
        full_path(&ctx, len)
    };
    if action >= balancer::JUMP_VERDICT {
        // Each forwarder by a constant index, which the kernel turns into a
        // direct jump. Returns only if the forwarder is missing.
        unsafe {
            match action - balancer::JUMP_VERDICT {
                JUMP_IPIP_V4 => maps::JUMPS.tail_call(&ctx, JUMP_IPIP_V4),
                JUMP_IPIP_V6 => maps::JUMPS.tail_call(&ctx, JUMP_IPIP_V6),
                JUMP_NAT_V4 => maps::JUMPS.tail_call(&ctx, JUMP_NAT_V4),
                JUMP_NAT_V6 => maps::JUMPS.tail_call(&ctx, JUMP_NAT_V6),
                JUMP_NAT_REPLY_V4 => maps::JUMPS.tail_call(&ctx, JUMP_NAT_REPLY_V4),
                JUMP_NAT_REPLY_V6 => maps::JUMPS.tail_call(&ctx, JUMP_NAT_REPLY_V6),
                _ => {}
            }
        }
        return xdp_action::XDP_ABORTED;
    }
    if action == xdp_action::XDP_PASS {
        stats::inc(Counter::Pass);
    }
    action
}

/// Parses the frame and balances it: everything the express lane left.
/// (A subprogram of its own, so that its stack and the express lane's are
/// never counted together.)
#[inline(never)]
fn full_path(ctx: &XdpContext, len: u64) -> u32 {
    let mut slot = MaybeUninit::uninit();
    let packet = Packet::init(&mut slot);
    match parse::parse(ctx, packet) {
        Ok(()) => {
            stats::count_packet(packet);
            log_packet(ctx, packet);
            match packet.l3 {
                L3::Ipv4 | L3::Ipv6 if !filter::may_concern(packet) => xdp_action::XDP_PASS,
                L3::Ipv4 | L3::Ipv6 if !l2::addressed_to_us(ctx) => {
                    stats::inc(Counter::ForeignMac);
                    xdp_action::XDP_PASS
                }
                L3::Ipv4 => balancer::balance_v4(ctx, packet),
                L3::Ipv6 => balancer::balance_v6(ctx, packet),
                L3::Arp | L3::Other => xdp_action::XDP_PASS,
            }
        }
        Err(ParseError::Truncated) => {
            stats::inc(Counter::Truncated);
            debug!(ctx, "truncated frame of {} bytes", len);
            xdp_action::XDP_PASS
        }
        Err(ParseError::Malformed) => {
            stats::inc(Counter::Malformed);
            debug!(ctx, "malformed frame of {} bytes", len);
            xdp_action::XDP_PASS
        }
        Err(ParseError::ZeroPayload) => {
            stats::inc(Counter::DropZeroPayload);
            xdp_action::XDP_DROP
        }
    }
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

/// Real-server side of IP-in-IP: see [`decap`].
#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    let mut slot = MaybeUninit::uninit();
    let packet = Packet::init(&mut slot);
    if parse::parse(&ctx, packet).is_err() {
        return xdp_action::XDP_PASS;
    }
    decap::decap(&ctx, packet)
}

/// The director's health probes through the path client traffic takes:
/// see [`health`].
#[classifier]
pub fn xlb_health(ctx: TcContext) -> i32 {
    health::health(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
