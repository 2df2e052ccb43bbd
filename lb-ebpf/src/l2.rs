//! Moving the Ethernet header (and up to two VLAN tags) when the frame's
//! start moves for encapsulation, decapsulation or an ICMP reply.

use aya_ebpf::programs::XdpContext;
use lb_common::maps::iface_slot;

use crate::{
    maps::IFACES,
    parse::{load, ptr_at, ptr_at_mut, ParseError},
};

/// Whether the frame is addressed to the ingress interface's own MAC: not
/// broadcast, multicast, nor another host's frame seen by a bridge, a
/// promiscuous NIC or a flooding switch.
#[inline(always)]
pub fn addressed_to_us(ctx: &XdpContext) -> bool {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let (Ok(dst), Some(iface)) = (
        ptr_at::<[u8; 6]>(ctx, 0),
        IFACES
            .get(iface_slot(ingress))
            .filter(|iface| iface.ifindex == ingress),
    ) else {
        return false;
    };
    // As a word and a half-word, each one load.
    let dst = dst as usize;
    let own = iface.mac.as_ptr() as usize;
    unsafe { load::<u32>(dst) == load::<u32>(own) && load::<u16>(dst + 4) == load::<u16>(own + 4) }
}

/// The longest link header handled: Ethernet and two VLAN tags.
pub const MAX_L2: usize = 22;

/// After the frame grew by `grown` bytes at the front: moves the link
/// header (`l2_len` bytes, now at `grown`) back to the start and sets its
/// ethertype. It copies [`MAX_L2`] bytes whatever `l2_len` is, so the
/// verifier sees one path; the bytes past the header land where the caller
/// writes its new header next (`grown` >= 20 >= MAX_L2 - 14).
#[inline(always)]
pub fn move_to_front(
    ctx: &XdpContext,
    grown: usize,
    l2_len: usize,
    ether_type: u16,
) -> Result<(), ParseError> {
    copy_header::<MAX_L2>(ctx, grown, 0)?;
    set_ether_type(ctx, l2_len, ether_type)
}

/// Moves the `L2`-byte link header from the start to `to`, ahead of the
/// bytes about to be cut off the front, and sets its ethertype.
#[inline(always)]
pub fn move_forward<const L2: usize>(
    ctx: &XdpContext,
    to: usize,
    ether_type: u16,
) -> Result<(), ParseError> {
    copy_header::<L2>(ctx, 0, to)?;
    set_ether_type(ctx, to + L2, ether_type)
}

/// Copies the `N`-byte link header (14, 18 or 22: whole words, then a
/// half-word) from `from` to `to` through registers, every load before any
/// store, so the two may overlap, and word by word, so that no memmove is
/// called.
#[inline(always)]
fn copy_header<const N: usize>(ctx: &XdpContext, from: usize, to: usize) -> Result<(), ParseError> {
    let src = ptr_at::<[u8; N]>(ctx, from)? as *const u8;
    let dst = ptr_at_mut::<[u8; N]>(ctx, to)? as *mut u8;
    let word = |i: usize| unsafe { (src.add(4 * i) as *const u32).read() };
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let w3 = if N >= 18 { word(3) } else { 0 };
    let w4 = if N >= 22 { word(4) } else { 0 };
    let tail = unsafe { (src.add(N - 2) as *const u16).read() };
    let put = |i: usize, w: u32| unsafe { (dst.add(4 * i) as *mut u32).write(w) };
    put(0, w0);
    put(1, w1);
    put(2, w2);
    if N >= 18 {
        put(3, w3);
    }
    if N >= 22 {
        put(4, w4);
    }
    unsafe { (dst.add(N - 2) as *mut u16).write(tail) };
    Ok(())
}

/// Writes the ethertype that ends a link header of `end` bytes.
#[inline(always)]
fn set_ether_type(ctx: &XdpContext, end: usize, ether_type: u16) -> Result<(), ParseError> {
    let field = ptr_at_mut::<[u8; 2]>(ctx, end - 2)?;
    unsafe { *field = ether_type.to_be_bytes() };
    Ok(())
}

/// Swaps source and destination MACs, to answer the sender.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) -> Result<(), ParseError> {
    let macs = ptr_at_mut::<[u8; 12]>(ctx, 0)?;
    unsafe {
        let m = *macs;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&m[6..]);
        swapped[6..].copy_from_slice(&m[..6]);
        *macs = swapped;
    }
    Ok(())
}
