//! `xlb_health`, the director's tc egress program for health probes that
//! take the path client traffic takes. The agent's probe sockets carry a
//! mark (`SO_MARK`) naming a [`HealthPath`]; this program, attached at
//! egress to `lo` (the director may hold the VIP, and a probe to a local
//! address leaves through `lo`) and to the data plane's interfaces:
//!
//! - IP-in-IP: wraps the probe (to VIP:port) in an outer header from the
//!   director's tunnel source to the backend, as `xlb` does client packets;
//! - direct routing: leaves it as it is;
//!
//! and sends it to the backend's interface with the backend's MAC (for
//! IP-in-IP, the next hop toward the backend). Unmarked packets, and marks
//! the map does not hold, go on untouched. The mark is cleared first, so a
//! redirected probe passes the program's copy on its way out untouched.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::bpf_redirect_neigh,
    programs::TcContext,
};
use lb_common::maps::{
    HealthPath, FAMILY_V6, HEALTH_MARK_BASE, HEALTH_MARK_MASK, HEALTH_VIA_MAC, HEALTH_VIA_TUNNEL,
};

use crate::{
    consts::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_DF},
    ip,
    maps::HEALTH_PATHS,
};

const ETH_HLEN: usize = 14;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const OUTER_TTL: u8 = 64;

#[inline(always)]
pub fn health(ctx: &TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let mark = unsafe { (*skb).mark };
    if mark & HEALTH_MARK_MASK != HEALTH_MARK_BASE {
        return TC_ACT_OK as i32;
    }
    let Some(path) = (unsafe { HEALTH_PATHS.get(&mark) }) else {
        return TC_ACT_OK as i32;
    };
    let path = *path;
    let inner_v6 = match u16::from_be(unsafe { (*skb).protocol } as u16) {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        _ => return TC_ACT_OK as i32,
    };
    ctx.set_mark(0);
    match path.how {
        HEALTH_VIA_TUNNEL => {
            if encap(ctx, &path, inner_v6).is_err() {
                return TC_ACT_SHOT as i32;
            }
            redirect(&path, false)
        }
        HEALTH_VIA_MAC => redirect(&path, true),
        _ => TC_ACT_OK as i32,
    }
}

/// To the backend's interface; with `next_hop`, to the backend's MAC
/// whatever the packet's destination, else to the next hop toward the
/// (outer) destination.
#[inline(always)]
fn redirect(path: &HealthPath, next_hop: bool) -> i32 {
    let rc = if next_hop {
        // The whole 16-byte address field written (an IPv4 next hop in its
        // first word), so nothing is left for a memset to zero.
        let (nh_family, address) = if path.family == FAMILY_V6 {
            (AF_INET6, path.backend)
        } else {
            (AF_INET, [path.backend[0], 0, 0, 0])
        };
        let mut params = bpf_redir_neigh {
            nh_family,
            __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv6_nh: address },
        };
        unsafe {
            bpf_redirect_neigh(
                path.ifindex,
                &mut params,
                core::mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        }
    } else {
        unsafe { bpf_redirect_neigh(path.ifindex, core::ptr::null_mut(), 0, 0) }
    };
    rc as i32
}

/// Inserts the outer header after the Ethernet header.
#[inline(always)]
fn encap(ctx: &TcContext, path: &HealthPath, inner_v6: bool) -> Result<(), i64> {
    let outer_v6 = path.family == FAMILY_V6;
    if inner_v6 && !outer_v6 {
        return Err(0);
    }
    let (inner_len, tos, df) = if inner_v6 {
        let head: [u8; 6] = ctx.load(ETH_HLEN)?;
        (u16::from_be_bytes([head[4], head[5]]) as usize + 40, 0, 0)
    } else {
        let head: [u8; 8] = ctx.load(ETH_HLEN)?;
        let frag = u16::from_be_bytes([head[6], head[7]]);
        (
            u16::from_be_bytes([head[2], head[3]]) as usize,
            head[1],
            frag & IPV4_DF,
        )
    };
    let proto = if inner_v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    if outer_v6 {
        ctx.adjust_room(40, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 as u64)?;
        let header = ip::v6_header(inner_len, proto, OUTER_TTL, &path.source, &path.backend);
        ctx.store(ETH_HLEN, &header, 0)?;
        if !inner_v6 {
            ctx.store(12, &ETH_P_IPV6.to_be_bytes(), 0)?;
        }
    } else {
        ctx.adjust_room(20, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64)?;
        let header = ip::v4_header(
            inner_len + 20,
            tos,
            df,
            OUTER_TTL,
            proto,
            path.source[0],
            path.backend[0],
        );
        ctx.store(ETH_HLEN, &header, 0)?;
    }
    Ok(())
}
