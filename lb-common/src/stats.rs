//! Global data-plane counters: one per-CPU `u64` slot per [`Counter`].

/// What the XDP program counts. The discriminant is the slot index in the
/// stats map; append new counters at the end so old agents keep reading the
/// right slots.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Every frame the program saw.
    RxPackets = 0,
    /// Bytes of every frame the program saw (Ethernet header included).
    RxBytes,
    /// Frames carrying one or two 802.1Q / 802.1ad tags.
    Vlan,
    Arp,
    /// Ethertypes other than IPv4, IPv6 and ARP.
    OtherEthertype,
    Ipv4,
    Ipv6,
    /// IPv4 with options or IPv6 with extension headers that were skipped
    /// (counted for parsed frames: see [`Counter::Tcp`]).
    IpOptions,
    /// Non-first IP fragments: no transport header to parse (parsed
    /// frames only).
    Fragment,
    /// The transport counters (TCP to other). A frame the address filter
    /// passes before parsing (nothing in it concerns a service) counts by
    /// its IP protocol field alone: a fragment under its protocol, an IPv6
    /// extension header as other.
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// VRRP adverts (IP protocol 112).
    Vrrp,
    /// Other transport protocols, and IPv6 extension chains too long to follow.
    OtherProto,
    /// A header ran past the end of the frame.
    Truncated,
    /// A header had impossible field values (version, header length).
    Malformed,
    /// Frames handed to the kernel stack unchanged.
    Pass,
    /// Packets for a VIP (or ICMP errors about a VIP flow) whose flow was
    /// in this CPU's flow table.
    FlowHit,
    /// Packets for a VIP (or ICMP errors about a VIP flow) whose flow was
    /// not: new flows, expired ones, and flows whose backend went away.
    FlowMiss,
    /// Frames sent back out the interface they came in on.
    Tx,
    /// Frames sent out another interface.
    Redirect,
    /// ICMP "fragmentation needed" / "packet too big" sent to clients.
    IcmpTooBig,
    /// NAT replies whose source was rewritten back to the VIP.
    NatReply,
    /// Dropped: the service has no backend that takes new flows.
    DropNoBackend,
    /// Dropped: an IP fragment for a VIP (xlb does not reassemble).
    DropFragment,
    /// Dropped: IP-in-IP could not be built (the frame could not be grown,
    /// or the backend's family cannot carry the packet's).
    DropEncap,
    /// NAT replies passed to the kernel: no route or neighbour entry yet.
    FibPass,
    /// IP-in-IP packets for a local VIP, outer header stripped (`xlb_decap`).
    Decap,
    /// Dropped: IPv4 options or IPv6 extension headers on a packet for a VIP.
    DropIpOptions,
    /// IP frames not addressed to the ingress interface's own MAC
    /// (broadcast, multicast, other hosts'): passed to the kernel untouched.
    ForeignMac,
    /// A NAT backend's packet for the director itself (a health check's
    /// answer, an operator's connection): passed untouched.
    NatToDirector,
    /// A NAT backend's packet with no route to its destination: passed untouched.
    NatNoRoute,
    /// TCP segments with RST or FIN that matched no flow: forwarded by the
    /// ring without creating flow state.
    StatelessMiss,
    /// New flows forwarded by the ring without flow state because this CPU
    /// was over its new-flow rate (the flood guard).
    FloodStateless,
    /// ICMP errors whose outer destination is not the VIP that sent the
    /// quoted packet: passed to the kernel, not forwarded.
    IcmpMismatch,
    /// Dropped: an ICMP message this CPU would have sent over its rate limit.
    IcmpRateLimited,
    /// Dropped: a packet too big for the tunnel that may not be answered
    /// with ICMP (IPv4 without DF, or an ICMP error itself).
    DropTooBig,
    /// Dropped: IPv6 with payload length 0 and no hop-by-hop header (no jumbogram).
    DropZeroPayload,
    /// Dropped: a packet for a NAT VIP with a bad IPv4 header checksum.
    DropBadChecksum,
    /// IP-in-IP from a source not allowed to tunnel to this host: passed untouched (`xlb_decap`).
    DecapForeign,
    /// SYNs that reused the port of a flow that was not opening: scheduled
    /// anew by the ring and counted as new flows.
    ResetFlow,
    /// NAT replies routed by this CPU's recent FIB result for their
    /// client, without a lookup of their own.
    NatRouteCached,
}

impl Counter {
    pub const ALL: [Counter; 43] = [
        Counter::RxPackets,
        Counter::RxBytes,
        Counter::Vlan,
        Counter::Arp,
        Counter::OtherEthertype,
        Counter::Ipv4,
        Counter::Ipv6,
        Counter::IpOptions,
        Counter::Fragment,
        Counter::Tcp,
        Counter::Udp,
        Counter::Icmp,
        Counter::Icmpv6,
        Counter::Vrrp,
        Counter::OtherProto,
        Counter::Truncated,
        Counter::Malformed,
        Counter::Pass,
        Counter::FlowHit,
        Counter::FlowMiss,
        Counter::Tx,
        Counter::Redirect,
        Counter::IcmpTooBig,
        Counter::NatReply,
        Counter::DropNoBackend,
        Counter::DropFragment,
        Counter::DropEncap,
        Counter::FibPass,
        Counter::Decap,
        Counter::DropIpOptions,
        Counter::ForeignMac,
        Counter::NatToDirector,
        Counter::NatNoRoute,
        Counter::StatelessMiss,
        Counter::FloodStateless,
        Counter::IcmpMismatch,
        Counter::IcmpRateLimited,
        Counter::DropTooBig,
        Counter::DropZeroPayload,
        Counter::DropBadChecksum,
        Counter::DecapForeign,
        Counter::ResetFlow,
        Counter::NatRouteCached,
    ];

    /// Number of slots in the stats map.
    pub const COUNT: u32 = Counter::ALL.len() as u32;

    /// The stable name used in CLI output, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::RxPackets => "rx_packets",
            Counter::RxBytes => "rx_bytes",
            Counter::Vlan => "vlan",
            Counter::Arp => "arp",
            Counter::OtherEthertype => "other_ethertype",
            Counter::Ipv4 => "ipv4",
            Counter::Ipv6 => "ipv6",
            Counter::IpOptions => "ip_options",
            Counter::Fragment => "fragment",
            Counter::Tcp => "tcp",
            Counter::Udp => "udp",
            Counter::Icmp => "icmp",
            Counter::Icmpv6 => "icmpv6",
            Counter::Vrrp => "vrrp",
            Counter::OtherProto => "other_proto",
            Counter::Truncated => "truncated",
            Counter::Malformed => "malformed",
            Counter::Pass => "pass",
            Counter::FlowHit => "flow_hit",
            Counter::FlowMiss => "flow_miss",
            Counter::Tx => "tx",
            Counter::Redirect => "redirect",
            Counter::IcmpTooBig => "icmp_too_big",
            Counter::NatReply => "nat_reply",
            Counter::DropNoBackend => "drop_no_backend",
            Counter::DropFragment => "drop_fragment",
            Counter::DropEncap => "drop_encap",
            Counter::FibPass => "fib_pass",
            Counter::Decap => "decap",
            Counter::DropIpOptions => "drop_ip_options",
            Counter::ForeignMac => "foreign_mac",
            Counter::NatToDirector => "nat_to_director",
            Counter::NatNoRoute => "nat_no_route",
            Counter::StatelessMiss => "stateless_miss",
            Counter::FloodStateless => "flood_stateless",
            Counter::IcmpMismatch => "icmp_mismatch",
            Counter::IcmpRateLimited => "icmp_rate_limited",
            Counter::DropTooBig => "drop_too_big",
            Counter::DropZeroPayload => "drop_zero_payload",
            Counter::DropBadChecksum => "drop_bad_checksum",
            Counter::DecapForeign => "decap_foreign",
            Counter::ResetFlow => "reset_flow",
            Counter::NatRouteCached => "nat_route_cached",
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn all_lists_every_slot_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i, "{} is out of order", c.name());
        }
    }

    #[test]
    fn names_are_unique() {
        for a in Counter::ALL {
            for b in Counter::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
    }
}
