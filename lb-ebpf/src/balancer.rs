//! The load balancer's flow for an IP packet: this CPU's cached flow, or
//! else a VIP's service and a backend for the flow; then the forwarding
//! mode (direct routing here,
//! the others by tail call to a forwarder).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    flow::FlowKey,
    maps::{
        Mode, VipKey, FAMILY_V4, FAMILY_V6, JUMP_IPIP_V4, JUMP_IPIP_V6, JUMP_NAT_REPLY_V4,
        JUMP_NAT_REPLY_V6, JUMP_NAT_V4, JUMP_NAT_V6, VIP_ANY_PORT_TCP, VIP_ANY_PORT_UDP,
    },
    stats::Counter,
};

use crate::{
    cache, csum, filter, icmp,
    maps::{HANDOFF, SETTINGS, VIPS},
    output::{self, Mac},
    parse::{ptr_at, Packet, L4},
    select::{self, Chosen, TcpSignal},
    stats,
};

/// Verdicts from here up are "tail-call forwarder `verdict - JUMP_VERDICT`".
pub const JUMP_VERDICT: u32 = 0x100;

/// The action for an IPv4 packet; XDP_PASS hands it to the kernel.
#[inline(never)]
pub fn balance_v4(ctx: &XdpContext, pkt: &Packet) -> u32 {
    balance::<false>(ctx, pkt).unwrap_or(xdp_action::XDP_PASS)
}

/// The action for an IPv6 packet; XDP_PASS hands it to the kernel.
#[inline(never)]
pub fn balance_v6(ctx: &XdpContext, pkt: &Packet) -> u32 {
    balance::<true>(ctx, pkt).unwrap_or(xdp_action::XDP_PASS)
}

/// Specialised per family, so the verifier walks one family's paths at a time.
#[inline(always)]
fn balance<const V6: bool>(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let family = family_of::<V6>();
    let vip = VipKey::new(pkt.dst, family);
    // Fragments carry no ports past the first, and options or extension
    // headers would shift every offset: for a VIP both are dropped and
    // counted (as Katran does).
    if pkt.fragment || pkt.ip_options || pkt.l4 == L4::Fragment {
        unsafe { VIPS.get(&vip) }?;
        let counter = if pkt.ip_options && !pkt.fragment {
            Counter::DropIpOptions
        } else {
            Counter::DropFragment
        };
        stats::inc(counter);
        return Some(xdp_action::XDP_DROP);
    }
    let any_port = match pkt.l4 {
        L4::Tcp => VIP_ANY_PORT_TCP,
        L4::Udp => VIP_ANY_PORT_UDP,
        L4::Icmp | L4::Icmpv6 => return icmp_error::<V6>(ctx, pkt),
        _ => return None,
    };
    // A destination the address filter leaves unmarked is no VIP.
    if !filter::marked(&pkt.dst) {
        return nat_reply::<V6>(pkt);
    }
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        family,
        _pad: [0; 2],
    };
    let signal = TcpSignal::of(pkt.tcp_flags);
    let index = cache::index(&key, SETTINGS.get(0)?);
    let probed = signal != TcpSignal::Opening;
    if probed {
        if let Some(action) = fast_path::<V6>(ctx, pkt, &key, index, signal) {
            stats::inc(Counter::FlowHit);
            return Some(action);
        }
    }
    // The exact service first, the VIP set only when that misses.
    let service = match select::service(&pkt.dst, pkt.dport, pkt.proto, family) {
        Some(service) => service,
        None => match unsafe { VIPS.get(&vip) } {
            Some(flags) if flags & any_port != 0 => {
                select::service(&pkt.dst, 0, pkt.proto, family)?
            }
            Some(_) => return None,
            None => return nat_reply::<V6>(pkt),
        },
    };
    if !V6 && service.mode == Mode::Nat as u8 && !v4_header_ok(ctx, pkt) {
        return Some(bad_checksum());
    }
    let Some(chosen) = select::choose(service, &key, index, signal, true, probed) else {
        stats::inc(Counter::DropNoBackend);
        return Some(xdp_action::XDP_DROP);
    };
    forward::<V6>(ctx, pkt, &chosen)
}

/// The fast path: a flow this CPU has cached, found before any service
/// lookup (its backend's entry says how to forward). A SYN always takes
/// the full path, which decides whether it starts a new connection. The
/// caller counts the hit.
#[inline(always)]
pub fn fast_path<const V6: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    index: u32,
    signal: TcpSignal,
) -> Option<u32> {
    let chosen = select::cached(key, index, signal)?;
    if !V6 && chosen.backend.mode == Mode::Nat as u8 && !v4_header_ok(ctx, pkt) {
        return Some(bad_checksum());
    }
    forward::<V6>(ctx, pkt, &chosen)
}

/// The kernel would drop it; a rewrite would launder the checksum.
#[inline(always)]
fn bad_checksum() -> u32 {
    stats::inc(Counter::DropBadChecksum);
    xdp_action::XDP_DROP
}

/// Counts the packet for its backend, and sends it on by the
/// service's mode (from the backend's entry): direct routing here, the
/// other modes through their forwarder.
#[inline(always)]
fn forward<const V6: bool>(ctx: &XdpContext, pkt: &Packet, chosen: &Chosen) -> Option<u32> {
    let b = chosen.backend;
    stats::account(chosen.id, pkt.ip_len as u64, chosen.new_flow);
    let jump = match Mode::from_u8(b.mode)? {
        // A MAC rewrite needs no handoff.
        Mode::Dr => return Some(output::send(ctx, Mac::of(&b.mac), Mac::of(&b.src_mac), b.ifindex)),
        Mode::Ipip if V6 => JUMP_IPIP_V6,
        Mode::Ipip => JUMP_IPIP_V4,
        Mode::Nat if V6 => JUMP_NAT_V6,
        Mode::Nat => JUMP_NAT_V4,
    };
    Some(hand_off(pkt, chosen.id, jump))
}

/// A NAT backend's reply (no VIP is its destination) goes to the NAT reply
/// forwarder when NAT services exist. (Fragments and packets with options
/// never get here: `balance` passes those to the kernel first.)
#[inline(always)]
fn nat_reply<const V6: bool>(pkt: &Packet) -> Option<u32> {
    let settings = SETTINGS.get(0)?;
    if settings.nat_backends == 0 {
        return None;
    }
    let jump = if V6 {
        JUMP_NAT_REPLY_V6
    } else {
        JUMP_NAT_REPLY_V4
    };
    Some(hand_off(pkt, 0, jump))
}

/// Leaves `backend` and where the packet's IP header starts for forwarder
/// `jump`, and returns the verdict that makes the entry program tail-call
/// it (tail calls from a subprogram would need BTF).
#[inline(always)]
fn hand_off(pkt: &Packet, backend: u32, jump: u32) -> u32 {
    match HANDOFF.get_ptr_mut(0) {
        Some(slot) => {
            unsafe {
                (*slot).backend = backend;
                (*slot).l3_off = pkt.l3_off as u32;
            }
            JUMP_VERDICT + jump
        }
        None => xdp_action::XDP_ABORTED,
    }
}

/// An ICMP error about a VIP flow goes where the flow goes (DR and
/// IP-in-IP); anything else, including errors about NAT flows, is the
/// kernel's.
#[inline(always)]
fn icmp_error<const V6: bool>(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let (service, key) = icmp::error_flow(ctx, pkt)?;
    if service.mode == Mode::Nat as u8 {
        return None;
    }
    let index = cache::index(&key, SETTINGS.get(0)?);
    let chosen = select::choose(service, &key, index, TcpSignal::None, false, false)?;
    forward::<V6>(ctx, pkt, &chosen)
}

#[inline(always)]
fn v4_header_ok(ctx: &XdpContext, pkt: &Packet) -> bool {
    ptr_at::<[u32; 5]>(ctx, pkt.l3_off)
        .is_ok_and(|header| csum::v4_header_ok(&unsafe { header.read() }))
}

#[inline(always)]
const fn family_of<const V6: bool>() -> u8 {
    if V6 {
        FAMILY_V6
    } else {
        FAMILY_V4
    }
}
