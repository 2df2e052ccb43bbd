//! Bounds-checked parsing of Ethernet, VLAN, IPv4, IPv6 (with extension
//! headers), TCP, UDP, ICMP, ICMPv6 and VRRP.
//!
//! Every read goes through [`ptr_at`], which checks the header lies inside
//! the frame; nothing here writes to the packet.
//!
//! Packet memory, here and wherever the programs read or rewrite headers,
//! is accessed with plain word loads and stores (`read`/`write`, [`load`]),
//! though a field may sit at any offset: the kernel allows misaligned
//! packet access on the CPUs xlb runs on (x86-64, arm64), and LLVM would
//! turn `read_unaligned`/`write_unaligned` into a load or store per byte.

use core::mem::{self, MaybeUninit};

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::consts::*;

#[derive(Clone, Copy)]
pub enum ParseError {
    /// A header runs past the end of the frame.
    Truncated,
    /// A header holds values no valid packet has.
    Malformed,
    /// IPv6 with payload length 0 and no hop-by-hop header, where a
    /// jumbogram would say its length: no valid packet.
    ZeroPayload,
}

/// What [`parse`] found. Plain fields and fieldless enums only: data-carrying
/// enums get packed into registers with undefined bits, which the verifier
/// rejects when those bits come from a packet pointer.
#[derive(Clone, Copy)]
pub struct Packet {
    pub vlan_tagged: bool,
    pub l3: L3,
    /// IPv4 options or IPv6 extension headers were present and skipped.
    pub ip_options: bool,
    /// Any fragment, first or later (IPv4 MF or offset, IPv6 fragment header).
    pub fragment: bool,
    pub l4: L4,
    /// IP protocol (after IPv6 extension headers); 0 when not IP.
    pub proto: u8,
    /// TCP/UDP ports in host byte order; 0 for other protocols.
    pub sport: u16,
    pub dport: u16,
    /// The TCP header's flags byte (`TCP_FIN`, `TCP_SYN`, ...); 0 for other
    /// protocols.
    pub tcp_flags: u8,
    /// ICMP or ICMPv6 message type.
    pub icmp_type: u8,
    /// Offsets from the frame start of the IP and transport headers.
    pub l3_off: usize,
    pub l4_off: usize,
    /// The IP packet's length from its header (IPv6: 40 + payload length).
    pub ip_len: usize,
    /// Addresses as packet words, IPv4 in the first word.
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

impl Packet {
    /// A packet with nothing found yet (not IP, no transport header), made
    /// in `slot`, where it stays: moving it would cost a memset.
    #[inline(always)]
    pub fn init(slot: &mut MaybeUninit<Packet>) -> &mut Packet {
        // SAFETY: bools, integers and fieldless enums whose 0 is a variant.
        let packet = unsafe { crate::zero::zero(slot) };
        packet.l3 = L3::Other;
        packet.l4 = L4::None;
        packet
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Arp,
    Other,
    Ipv4,
    Ipv6,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// Not an IP packet.
    None,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Vrrp,
    /// A non-first fragment: the transport header is in another packet.
    Fragment,
    /// Any other protocol, or an IPv6 extension chain too long to follow.
    Other,
}

/// Returns a pointer to a `T` at `offset`, or `Truncated` if it would end
/// past the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    // An explicit bound: offsets passed between functions reach the
    // verifier as unknown scalars, and it refuses unbounded packet math.
    if offset > MAX_HEADER_OFFSET || start + offset + mem::size_of::<T>() > end {
        return Err(ParseError::Truncated);
    }
    Ok((start + offset) as *const T)
}

/// Like [`ptr_at`], for writing.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ParseError> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}

/// Reads a `T` from packet memory at `addr` with word loads (see the
/// module's notes).
///
/// # Safety
/// `addr .. addr + size_of::<T>()` must lie within the bounds checked.
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    unsafe { (addr as *const T).read() }
}

/// Writes `value` to packet memory at `addr` with word stores, as [`load`]
/// reads.
///
/// # Safety
/// `addr .. addr + size_of::<T>()` must lie within the bounds checked.
#[inline(always)]
pub unsafe fn store<T: Copy>(addr: usize, value: T) {
    unsafe { (addr as *mut T).write(value) }
}

#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// The facts of a packet with its IP header at `AT`, no IPv4 options or
/// IPv6 extension headers, and no fragment, read at their fixed offsets:
/// for the express lane (which checks the packet is such) and the
/// forwarders (to which only such packets are handed).
#[inline(always)]
pub fn plain_at<const V6: bool, const AT: usize>(ctx: &XdpContext) -> Option<Packet> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let l4_off = AT + if V6 { 40 } else { 20 };
    // Up to the ports, or an ICMP message's type and code.
    if start + l4_off + 4 > end {
        return None;
    }
    let byte = |at: usize| unsafe { load::<u8>(start + at) };
    let be16 = |at: usize| u16::from_be(unsafe { load::<u16>(start + at) });
    let (proto, ip_len, src, dst) = if V6 {
        let addr = |at: usize| unsafe { load::<[u32; 4]>(start + at) };
        let len = 40 + be16(AT + 4) as usize;
        (byte(AT + 6), len, addr(AT + 8), addr(AT + 24))
    } else {
        let word = |at: usize| unsafe { load::<u32>(start + at) };
        let (src, dst) = ([word(AT + 12), 0, 0, 0], [word(AT + 16), 0, 0, 0]);
        (byte(AT + 9), be16(AT + 2) as usize, src, dst)
    };
    let l4 = match proto {
        IPPROTO_TCP => L4::Tcp,
        IPPROTO_UDP => L4::Udp,
        IPPROTO_ICMP if !V6 => L4::Icmp,
        IPPROTO_ICMPV6 if V6 => L4::Icmpv6,
        _ => L4::Other,
    };
    let ported = l4 == L4::Tcp || l4 == L4::Udp;
    let (sport, dport) = if ported {
        (be16(l4_off), be16(l4_off + 2))
    } else {
        (0, 0)
    };
    let tcp_flags = if l4 == L4::Tcp && start + l4_off + 14 <= end {
        byte(l4_off + 13)
    } else {
        0
    };
    let icmp_type = if ported { 0 } else { byte(l4_off) };
    Some(Packet {
        vlan_tagged: AT > 14,
        l3: if V6 { L3::Ipv6 } else { L3::Ipv4 },
        ip_options: false,
        fragment: false,
        l4,
        proto,
        sport,
        dport,
        tcp_flags,
        icmp_type,
        l3_off: AT,
        l4_off,
        ip_len,
        src,
        dst,
    })
}

/// Fills `packet` from the frame in `ctx`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, packet: &mut Packet) -> Result<(), ParseError> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut off = EthHdr::LEN;

    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // TCI (2 bytes) then the encapsulated ethertype.
        let tag: *const [u8; 4] = ptr_at(ctx, off)?;
        let tag = unsafe { *tag };
        ether_type = be16([tag[2], tag[3]]);
        off += 4;
        packet.vlan_tagged = true;
    }

    match ether_type {
        ETH_P_IP => {
            packet.l3 = L3::Ipv4;
            parse_ipv4(ctx, off, packet)
        }
        ETH_P_IPV6 => {
            packet.l3 = L3::Ipv6;
            parse_ipv6(ctx, off, packet)
        }
        ETH_P_ARP => {
            packet.l3 = L3::Arp;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3_off: usize, packet: &mut Packet) -> Result<(), ParseError> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3_off)?;
    let (vihl, tot_len, frags, proto) = unsafe {
        (
            (*ip).vihl,
            be16((*ip).tot_len),
            be16((*ip).frags),
            (*ip).proto,
        )
    };
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < Ipv4Hdr::LEN || (tot_len as usize) < ihl {
        return Err(ParseError::Malformed);
    }
    // Frames may carry Ethernet padding after the packet, never less than it.
    if l3_off + tot_len as usize > frame_len(ctx) {
        return Err(ParseError::Truncated);
    }
    packet.ip_options = ihl > Ipv4Hdr::LEN;
    packet.proto = proto;
    packet.l3_off = l3_off;
    packet.ip_len = tot_len as usize;
    packet.src[0] = unsafe { u32::from_ne_bytes((*ip).src_addr) };
    packet.dst[0] = unsafe { u32::from_ne_bytes((*ip).dst_addr) };
    packet.fragment = frags & IPV4_MF_OFFSET_MASK != 0;
    if frags & IPV4_OFFSET_MASK != 0 {
        packet.l4 = L4::Fragment;
        return Ok(());
    }
    parse_l4(ctx, l3_off + ihl, packet)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3_off: usize, packet: &mut Packet) -> Result<(), ParseError> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3_off)?;
    let (version, payload_len, mut next) =
        unsafe { ((*ip).vcf[0] >> 4, be16((*ip).payload_len), (*ip).next_hdr) };
    if version != 6 {
        return Err(ParseError::Malformed);
    }
    // A zero payload length announces a jumbogram, whose real length is in
    // a hop-by-hop option; without one it is invalid.
    if payload_len == 0 && next != IPPROTO_HOPOPTS {
        return Err(ParseError::ZeroPayload);
    }
    if payload_len != 0 && l3_off + Ipv6Hdr::LEN + payload_len as usize > frame_len(ctx) {
        return Err(ParseError::Truncated);
    }

    packet.l3_off = l3_off;
    packet.ip_len = Ipv6Hdr::LEN + payload_len as usize;
    packet.src = unsafe { words((*ip).src_addr) };
    packet.dst = unsafe { words((*ip).dst_addr) };

    let mut off = l3_off + Ipv6Hdr::LEN;
    // One pass per extension header, plus the one that finds the transport.
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        let ext_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                let hdr: *const [u8; 2] = ptr_at(ctx, off)?;
                let hdr = unsafe { *hdr };
                next = hdr[0];
                (hdr[1] as usize + 1) * 8
            }
            IPPROTO_AH => {
                let hdr: *const [u8; 2] = ptr_at(ctx, off)?;
                let hdr = unsafe { *hdr };
                next = hdr[0];
                (hdr[1] as usize + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let hdr: *const [u8; 8] = ptr_at(ctx, off)?;
                let hdr = unsafe { *hdr };
                next = hdr[0];
                packet.fragment = true;
                if be16([hdr[2], hdr[3]]) & IPV6_FRAG_OFFSET_MASK != 0 {
                    packet.ip_options = true;
                    packet.proto = next;
                    packet.l4 = L4::Fragment;
                    return Ok(());
                }
                8
            }
            _ => {
                packet.proto = next;
                return parse_l4(ctx, off, packet);
            }
        };
        off += ext_len;
        packet.ip_options = true;
    }
    // Chain longer than we follow: pass it on without a transport header.
    packet.proto = next;
    packet.l4 = L4::Other;
    Ok(())
}

/// An IPv6 address as packet words.
#[inline(always)]
pub fn words(addr: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// Parses the transport header at `off`, which must lie inside the IP
/// packet, not only the frame (Ethernet padding is no header).
#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, packet: &mut Packet) -> Result<(), ParseError> {
    packet.l4_off = off;
    let ip_end = packet.l3_off + packet.ip_len;
    let within = |len: usize| {
        if off + len > ip_end {
            Err(ParseError::Malformed)
        } else {
            Ok(())
        }
    };
    match packet.proto {
        IPPROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(ctx, off)?;
            let (sport, dport, doff_flags, tcp_flags) = unsafe {
                (
                    be16((*tcp).source),
                    be16((*tcp).dest),
                    *(tcp as *const u8).add(12),
                    *(tcp as *const u8).add(13),
                )
            };
            let doff = ((doff_flags >> 4) as usize) * 4;
            if doff < TcpHdr::LEN {
                return Err(ParseError::Malformed);
            }
            if off + doff > frame_len(ctx) {
                return Err(ParseError::Truncated);
            }
            within(doff)?;
            packet.l4 = L4::Tcp;
            packet.sport = sport;
            packet.dport = dport;
            packet.tcp_flags = tcp_flags;
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(ctx, off)?;
            let (sport, dport, len) =
                unsafe { (be16((*udp).src), be16((*udp).dst), be16((*udp).len)) };
            if (len as usize) < UdpHdr::LEN {
                return Err(ParseError::Malformed);
            }
            within(UdpHdr::LEN)?;
            packet.l4 = L4::Udp;
            packet.sport = sport;
            packet.dport = dport;
        }
        IPPROTO_ICMP => {
            // Type, code, checksum and the 4-byte rest-of-header every message has.
            let icmp: *const [u8; 8] = ptr_at(ctx, off)?;
            within(8)?;
            packet.icmp_type = unsafe { (*icmp)[0] };
            packet.l4 = L4::Icmp;
        }
        IPPROTO_ICMPV6 => {
            let icmp: *const [u8; 4] = ptr_at(ctx, off)?;
            within(4)?;
            packet.icmp_type = unsafe { (*icmp)[0] };
            packet.l4 = L4::Icmpv6;
        }
        IPPROTO_VRRP => {
            ptr_at::<[u8; 8]>(ctx, off)?;
            packet.l4 = L4::Vrrp;
        }
        _ => packet.l4 = L4::Other,
    }
    Ok(())
}
