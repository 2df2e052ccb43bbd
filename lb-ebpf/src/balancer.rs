//! The load balancer's flow for an IP packet: a VIP's service, a backend
//! for the flow, then the service's forwarding mode.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    flow::FlowKey,
    maps::{Mode, Service, VipKey, FAMILY_V4, FAMILY_V6},
    stats::Counter,
};

use crate::{
    icmp, ipip,
    maps::{SETTINGS, VIPS},
    nat, output,
    parse::{Packet, L4},
    select::{self, Chosen},
    stats,
};

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
    // Fragments carry no ports past the first, and options or extension
    // headers would shift every offset: for a VIP, both are dropped and
    // counted (as Katran does); anything else is the kernel's.
    if pkt.fragment || pkt.ip_options || pkt.l4 == L4::Fragment {
        let vip = VipKey {
            addr: pkt.dst,
            family,
            _pad: [0; 3],
        };
        unsafe { VIPS.get(&vip) }?;
        let counter = if pkt.ip_options && !pkt.fragment {
            Counter::DropIpOptions
        } else {
            Counter::DropFragment
        };
        stats::inc(counter);
        return Some(xdp_action::XDP_DROP);
    }
    match pkt.l4 {
        L4::Tcp | L4::Udp => {}
        L4::Icmp | L4::Icmpv6 => return icmp_error::<V6>(ctx, pkt),
        _ => return None,
    }
    let Some(service) = select::service(&pkt.dst, pkt.dport, pkt.proto, family) else {
        return nat::reply::<V6>(ctx, pkt);
    };
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        family,
        _pad: [0; 2],
    };
    let Some(chosen) = select::choose(service, &key, true) else {
        stats::inc(Counter::DropNoBackend);
        return Some(xdp_action::XDP_DROP);
    };
    stats::account(service.id, chosen.id, pkt.ip_len as u64, chosen.new_flow);
    forward::<V6>(ctx, pkt, service, &chosen)
}

#[inline(always)]
fn forward<const V6: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    service: &Service,
    chosen: &Chosen,
) -> Option<u32> {
    let b = chosen.backend;
    match Mode::from_u8(service.mode)? {
        Mode::Dr => Some(output::send(ctx, b.mac, b.src_mac, b.ifindex)),
        Mode::Ipip => {
            if !ipip::supported(family_of::<V6>(), b.family) {
                stats::inc(Counter::DropEncap);
                return Some(xdp_action::XDP_DROP);
            }
            let settings = SETTINGS.get(0)?;
            Some(ipip::encap::<V6>(ctx, pkt, b, settings))
        }
        Mode::Nat => {
            // An expiring TTL goes to the kernel, which answers it.
            nat::decrement_ttl::<V6>(ctx, pkt).ok()?;
            if nat::forward::<V6>(ctx, pkt, b).is_err() {
                return Some(xdp_action::XDP_ABORTED);
            }
            Some(output::send(ctx, b.mac, b.src_mac, b.ifindex))
        }
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
    let chosen = select::choose(&service, &key, false)?;
    stats::account(service.id, chosen.id, pkt.ip_len as u64, false);
    forward::<V6>(ctx, pkt, service, &chosen)
}

#[inline(always)]
const fn family_of<const V6: bool>() -> u8 {
    if V6 {
        FAMILY_V6
    } else {
        FAMILY_V4
    }
}
