//! Per-CPU counters, read and summed by the agent.

use lb_common::{maps::TrafficStats, stats::Counter};

use crate::{
    maps::{BACKEND_STATS, SERVICE_STATS, STATS},
    parse::{Packet, L3, L4},
};

/// Counts a forwarded packet of `bytes` for its service and backend.
#[inline(always)]
pub fn account(service: u32, backend: u32, bytes: u64, new_flow: bool) {
    for slot in [
        SERVICE_STATS.get_ptr_mut(service),
        BACKEND_STATS.get_ptr_mut(backend),
    ] {
        if let Some(stats) = slot {
            let stats: &mut TrafficStats = unsafe { &mut *stats };
            stats.packets += 1;
            stats.bytes += bytes;
            stats.new_flows += new_flow as u64;
        }
    }
}

#[inline(always)]
pub fn add(counter: Counter, value: u64) {
    if let Some(slot) = STATS.get_ptr_mut(counter.index()) {
        // Per-CPU slot: no other writer while this program runs here.
        unsafe { *slot += value }
    }
}

#[inline(always)]
pub fn inc(counter: Counter) {
    add(counter, 1)
}

#[inline(always)]
pub fn count_packet(packet: &Packet) {
    if packet.vlan_tagged {
        inc(Counter::Vlan);
    }
    match packet.l3 {
        L3::Arp => return inc(Counter::Arp),
        L3::Other => return inc(Counter::OtherEthertype),
        L3::Ipv4 => inc(Counter::Ipv4),
        L3::Ipv6 => inc(Counter::Ipv6),
    }
    if packet.ip_options {
        inc(Counter::IpOptions);
    }
    inc(match packet.l4 {
        L4::Tcp => Counter::Tcp,
        L4::Udp => Counter::Udp,
        L4::Icmp => Counter::Icmp,
        L4::Icmpv6 => Counter::Icmpv6,
        L4::Vrrp => Counter::Vrrp,
        L4::Fragment => Counter::Fragment,
        L4::None | L4::Other => Counter::OtherProto,
    });
}
