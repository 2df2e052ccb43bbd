//! NAT with port translation (for packets without IP options or
//! extension headers, whose IP header starts at `L3`): client -> VIP:vport
//! becomes client -> backend:port; the backend's reply, routed back through the director,
//! becomes VIP:vport -> client. The reverse needs no per-flow state: each
//! NAT backend address:port belongs to one VIP:port (the agent enforces it).

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{
    flow::address_slot,
    maps::{Backend, NatKey, NatTarget, FAMILY_V4, FAMILY_V6, REPLY_ROUTE_JIFFIES, REPLY_ROUTE_SLOTS},
    stats::Counter,
};

use crate::{
    cache, csum,
    maps::{NAT_REVERSE, REPLY_ROUTES},
    output::{self, Mac},
    parse::{ptr_at_mut, Packet, ParseError, L4},
    stats, zero,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Rewrites the destination to `backend`'s address and port.
#[inline(always)]
pub fn forward<const V6: bool, const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
) -> Result<(), ParseError> {
    rewrite::<V6, L3, false>(ctx, pkt, &pkt.dst, &backend.addr, pkt.dport, backend.port)
}

/// Translates a NAT backend's reply back to its VIP and routes it to the
/// client; `None` (the kernel's, untouched) if the packet is no NAT reply,
/// is for the director itself (the agent's health checks, an operator's
/// connection, a VRRP peer), or has no route to its client.
///
/// The route is this CPU's recent FIB result for the client when it has
/// one (see [`lb_common::maps::MAP_REPLY_ROUTES`]), else the FIB's.
#[inline(always)]
pub fn reply<const V6: bool, const L3: usize>(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let family = if V6 { FAMILY_V6 } else { FAMILY_V4 };
    let key = NatKey {
        addr: pkt.src,
        port: pkt.sport,
        proto: pkt.proto,
        family,
    };
    let target = unsafe { NAT_REVERSE.get(&key) }?;
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let jiffies = cache::jiffies();
    let route = REPLY_ROUTES.get_ptr_mut(address_slot(&pkt.dst, REPLY_ROUTE_SLOTS))?;
    // SAFETY: this CPU's own slot, written only here.
    let route = unsafe { &mut *route };
    let len = pkt.ip_len as u32;
    let known = route.family == family
        && route.ingress == ingress
        && same::<V6>(&route.dst, &pkt.dst)
        && same::<V6>(&route.src, &target.vip)
        && jiffies.wrapping_sub(route.looked_up) < REPLY_ROUTE_JIFFIES;
    let (dmac, smac, ifindex) = if known && len <= route.max_len {
        stats::inc(Counter::NatRouteCached);
        (Mac::of(&route.dmac), Mac::of(&route.smac), route.ifindex)
    } else {
        let mut slot = MaybeUninit::<FibParams>::uninit();
        // SAFETY: plain integers, 64 bytes.
        let fib = unsafe { zero::zero(&mut slot) };
        if !fib_lookup::<V6>(ctx, pkt, &target.vip, ingress, fib)? {
            // No neighbour entry yet: the kernel forwards this one
            // (translated) and resolves the neighbour for the next.
            return match translate::<V6, L3>(ctx, pkt, target) {
                Ok(()) => {
                    stats::inc(Counter::FibPass);
                    None
                }
                Err(_) => Some(xdp_action::XDP_ABORTED),
            };
        }
        // The longest packet the lookup passed, while the route holds.
        route.max_len = if known { len.max(route.max_len) } else { len };
        copy::<V6>(&mut route.dst, &pkt.dst);
        copy::<V6>(&mut route.src, &target.vip);
        route.ingress = ingress;
        route.ifindex = fib.ifindex;
        route.looked_up = jiffies;
        let (dmac, smac) = (Mac::from_bytes(fib.dmac), Mac::from_bytes(fib.smac));
        dmac.store_into(&mut route.dmac);
        smac.store_into(&mut route.smac);
        route.family = family;
        (dmac, smac, fib.ifindex)
    };
    if translate::<V6, L3>(ctx, pkt, target).is_err() {
        return Some(xdp_action::XDP_ABORTED);
    }
    if decrement_ttl::<V6, L3>(ctx).is_err() {
        // Not to be forwarded (the kernel answers it with ICMP).
        stats::inc(Counter::FibPass);
        return None;
    }
    Some(output::send(ctx, dmac, smac, ifindex))
}

/// Rewrites a reply's source to its VIP and counts it.
#[inline(always)]
fn translate<const V6: bool, const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    target: &NatTarget,
) -> Result<(), ParseError> {
    rewrite::<V6, L3, true>(ctx, pkt, &pkt.src, &target.vip, pkt.sport, target.vport)?;
    stats::inc(Counter::NatReply);
    Ok(())
}

/// Whether two addresses are one, word by word (a 16-byte compare would be
/// a call to `bcmp`).
#[inline(always)]
fn same<const V6: bool>(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] == b[0] && (!V6 || (a[1] == b[1] && a[2] == b[2] && a[3] == b[3]))
}

/// Copies an address word by word (a 16-byte copy would be a `memmove`).
#[inline(always)]
fn copy<const V6: bool>(to: &mut [u32; 4], from: &[u32; 4]) {
    to[0] = from[0];
    if V6 {
        to[1] = from[1];
        to[2] = from[2];
        to[3] = from[3];
    }
}

/// Looks up the route to the reply's client into `fib` (zeroed), from the
/// VIP as the reply will be: `None` (counted) if the reply is not to be
/// forwarded, `Some(false)` if the neighbour is not known yet.
#[inline(always)]
fn fib_lookup<const V6: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    vip: &[u32; 4],
    ingress: u32,
    fib: &mut FibParams,
) -> Option<bool> {
    fib.family = if V6 { AF_INET6 } else { AF_INET };
    fib.l4_protocol = pkt.proto;
    fib.ifindex = ingress;
    fib.__bindgen_anon_1.tot_len = pkt.ip_len as u16;
    if V6 {
        fib.__bindgen_anon_3.ipv6_src = *vip;
        fib.__bindgen_anon_4.ipv6_dst = pkt.dst;
    } else {
        fib.__bindgen_anon_3.ipv4_src = vip[0];
        fib.__bindgen_anon_4.ipv4_dst = pkt.dst[0];
    }
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            fib as *mut FibParams,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => Some(true),
        BPF_FIB_LKUP_RET_NO_NEIGH => Some(false),
        BPF_FIB_LKUP_RET_NOT_FWDED => {
            // A local destination: the director itself is the peer.
            stats::inc(Counter::NatToDirector);
            None
        }
        _ => {
            stats::inc(Counter::NatNoRoute);
            None
        }
    }
}

/// Replaces the source (`SRC`) or destination address and port, updating
/// the IPv4 header and the transport checksums incrementally.
#[inline(always)]
fn rewrite<const V6: bool, const L3: usize, const SRC: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    old_addr: &[u32; 4],
    new_addr: &[u32; 4],
    old_port: u16,
    new_port: u16,
) -> Result<(), ParseError> {
    if V6 {
        let addr = ptr_at_mut::<[u32; 4]>(ctx, L3 + if SRC { 8 } else { 24 })? as *mut u32;
        // Word by word: a 16-byte copy from a map value would be a memmove.
        for (i, word) in new_addr.iter().enumerate() {
            unsafe { addr.add(i).write(*word) };
        }
    } else {
        let check = ptr_at_mut::<u16>(ctx, L3 + 10)?;
        let addr = ptr_at_mut::<u32>(ctx, L3 + if SRC { 12 } else { 16 })?;
        unsafe {
            check.write(csum::replace_v4(
                check.read(),
                old_addr[0],
                new_addr[0],
            ));
            addr.write(new_addr[0]);
        }
    }

    let (old_be, new_be) = (old_port.to_be(), new_port.to_be());
    let udp = pkt.l4 == L4::Udp;
    let l4 = L3 + if V6 { 40 } else { 20 };
    let check_off = l4 + if udp { 6 } else { 16 };
    let check = ptr_at_mut::<u16>(ctx, check_off)?;
    let port = ptr_at_mut::<u16>(ctx, l4 + if SRC { 0 } else { 2 })?;
    unsafe {
        let old_check = check.read();
        // An IPv4 UDP checksum of 0 means "none" and stays so.
        if V6 || !udp || old_check != 0 {
            let mut c = if V6 {
                csum::replace_v6(old_check, old_addr, new_addr)
            } else {
                csum::replace_v4(old_check, old_addr[0], new_addr[0])
            };
            c = csum::replace16(c, old_be, new_be);
            if udp && c == 0 {
                c = 0xffff;
            }
            check.write(c);
        }
        port.write(new_be);
    }
    Ok(())
}

/// Forwarding hop: IPv4 TTL (with its checksum) or IPv6 hop limit minus
/// one. Fails, leaving the packet to the kernel, when it would reach 0.
#[inline(always)]
pub fn decrement_ttl<const V6: bool, const L3: usize>(ctx: &XdpContext) -> Result<(), ParseError> {
    if V6 {
        // Next header and hop limit, as one word like IPv4's TTL and protocol.
        let field = ptr_at_mut::<u16>(ctx, L3 + 6)?;
        unsafe {
            let mut bytes = field.read().to_ne_bytes();
            if bytes[1] <= 1 {
                return Err(ParseError::Malformed);
            }
            bytes[1] -= 1;
            field.write(u16::from_ne_bytes(bytes));
        }
        return Ok(());
    }
    let ttl_proto = ptr_at_mut::<u16>(ctx, L3 + 8)?;
    let check = ptr_at_mut::<u16>(ctx, L3 + 10)?;
    unsafe {
        let old = ttl_proto.read();
        let mut bytes = old.to_ne_bytes();
        if bytes[0] <= 1 {
            return Err(ParseError::Malformed);
        }
        bytes[0] -= 1;
        let new = u16::from_ne_bytes(bytes);
        ttl_proto.write(new);
        check.write(csum::replace16(check.read(), old, new));
    }
    Ok(())
}
