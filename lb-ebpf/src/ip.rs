//! Writing the IP headers the balancer builds: tunnels' outer headers and
//! the ICMP errors it sends.

use aya_ebpf::programs::XdpContext;

use lb_common::maps::{Backend, TUNNEL_FLAGS_DF, TUNNEL_PROTO_IPIP, TUNNEL_TTL};

use crate::{
    csum,
    parse::{ptr_at_mut, ParseError},
};

/// The words of an IPv4 header (no options, id 0) with its checksum, as
/// packet-order words (like [`v6_header`]'s).
#[inline(always)]
pub fn v4_header(
    total_len: usize,
    tos: u8,
    flags: u16,
    ttl: u8,
    proto: u8,
    src: u32,
    dst: u32,
) -> [u32; 5] {
    let [t0, t1] = (total_len as u16).to_be_bytes();
    let [f0, f1] = flags.to_be_bytes();
    let mut words = [
        u32::from_ne_bytes([0x45, tos, t0, t1]),
        u32::from_ne_bytes([0, 0, f0, f1]),
        u32::from_ne_bytes([ttl, proto, 0, 0]),
        src,
        dst,
    ];
    let sum: u64 = words
        .iter()
        .map(|&w| (w & 0xffff) as u64 + (w >> 16) as u64)
        .sum();
    let [c0, c1] = (!csum::fold(sum)).to_ne_bytes();
    words[2] = u32::from_ne_bytes([ttl, proto, c0, c1]);
    words
}

/// The outer IPv4 header of IP-in-IP from `src` to `backend`, at `off`:
/// written a word at a time, its checksum finished from the backend's
/// precomputed sum with only what varies per packet.
#[inline(always)]
pub fn write_tunnel_v4(
    ctx: &XdpContext,
    off: usize,
    total_len: usize,
    tos: u8,
    src: u32,
    backend: &Backend,
) -> Result<(), ParseError> {
    let [t0, t1] = (total_len as u16).to_be_bytes();
    let [f0, f1] = TUNNEL_FLAGS_DF.to_be_bytes();
    let varying = u16::from_ne_bytes([0, tos]) as u64
        + u16::from_ne_bytes([t0, t1]) as u64
        + (src & 0xffff) as u64
        + (src >> 16) as u64;
    let [c0, c1] = (!csum::fold(backend.outer_sum as u64 + varying)).to_ne_bytes();
    let words = [
        u32::from_ne_bytes([0x45, tos, t0, t1]),
        u32::from_ne_bytes([0, 0, f0, f1]),
        u32::from_ne_bytes([TUNNEL_TTL, TUNNEL_PROTO_IPIP, c0, c1]),
        src,
        backend.addr[0],
    ];
    unsafe { ptr_at_mut::<[u32; 5]>(ctx, off)?.write(words) };
    Ok(())
}

/// An IPv6 header (no extension headers), at `off`.
#[inline(always)]
pub fn write_v6(
    ctx: &XdpContext,
    off: usize,
    payload_len: usize,
    next: u8,
    hop_limit: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> Result<(), ParseError> {
    let words = v6_header(payload_len, next, hop_limit, src, dst);
    unsafe { ptr_at_mut::<[u32; 10]>(ctx, off)?.write(words) };
    Ok(())
}

/// The words of an IPv6 header (no extension headers, flow label 0).
#[inline(always)]
pub fn v6_header(
    payload_len: usize,
    next: u8,
    hop_limit: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> [u32; 10] {
    let [l0, l1] = (payload_len as u16).to_be_bytes();
    [
        u32::from_ne_bytes([0x60, 0, 0, 0]),
        u32::from_ne_bytes([l0, l1, next, hop_limit]),
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ]
}
