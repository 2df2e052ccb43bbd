//! Per-CPU counters, read and summed by the agent: the global ones in one
//! record per CPU ([`STATS`]), so a path that counts several things looks
//! it up once ([`record`]), and traffic per backend.

use lb_common::{maps::TrafficStats, stats::Counter};

use crate::{
    consts::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_VRRP},
    maps::{BACKEND_STATS, STATS},
    parse::{Packet, L3, L4},
};

/// This CPU's global counters.
pub struct Record(&'static mut [u64; Counter::COUNT as usize]);

impl Record {
    #[inline(always)]
    pub fn add(&mut self, counter: Counter, value: u64) {
        // Per-CPU: no other writer while this program runs here.
        self.0[counter.index() as usize] += value;
    }

    #[inline(always)]
    pub fn inc(&mut self, counter: Counter) {
        self.add(counter, 1)
    }
}

#[inline(always)]
pub fn record() -> Option<Record> {
    STATS.get_ptr_mut(0).map(|r| Record(unsafe { &mut *r }))
}

/// Counts a forwarded packet of `bytes` for its backend (the agent sums a
/// service's from its backends'): one record.
#[inline(always)]
pub fn account(backend: u32, bytes: u64, new_flow: bool) {
    if let Some(stats) = BACKEND_STATS.get_ptr_mut(backend) {
        let stats: &mut TrafficStats = unsafe { &mut *stats };
        stats.packets += 1;
        stats.bytes += bytes;
        stats.new_flows += new_flow as u64;
    }
}

#[inline(always)]
pub fn add(counter: Counter, value: u64) {
    if let Some(mut record) = record() {
        record.add(counter, value)
    }
}

#[inline(always)]
pub fn inc(counter: Counter) {
    add(counter, 1)
}

/// Counts what the parser found, in one lookup.
#[inline(always)]
pub fn count_packet(packet: &Packet) {
    let Some(mut record) = record() else {
        return;
    };
    if packet.vlan_tagged {
        record.inc(Counter::Vlan);
    }
    match packet.l3 {
        L3::Arp => return record.inc(Counter::Arp),
        L3::Other => return record.inc(Counter::OtherEthertype),
        L3::Ipv4 => record.inc(Counter::Ipv4),
        L3::Ipv6 => record.inc(Counter::Ipv6),
    }
    if packet.ip_options {
        record.inc(Counter::IpOptions);
    }
    record.inc(match packet.l4 {
        L4::Tcp => Counter::Tcp,
        L4::Udp => Counter::Udp,
        L4::Icmp => Counter::Icmp,
        L4::Icmpv6 => Counter::Icmpv6,
        L4::Vrrp => Counter::Vrrp,
        L4::Fragment => Counter::Fragment,
        L4::None | L4::Other => Counter::OtherProto,
    });
}

/// The counter of IP protocol `proto`, for a frame passed unparsed.
#[inline(always)]
pub fn protocol(proto: u8) -> Counter {
    match proto {
        IPPROTO_TCP => Counter::Tcp,
        IPPROTO_UDP => Counter::Udp,
        IPPROTO_ICMP => Counter::Icmp,
        IPPROTO_ICMPV6 => Counter::Icmpv6,
        IPPROTO_VRRP => Counter::Vrrp,
        _ => Counter::OtherProto,
    }
}
