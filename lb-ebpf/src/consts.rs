//! Wire constants, host byte order.

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_MH: u8 = 135;
pub const IPPROTO_VRRP: u8 = 112;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// VLAN tags followed before giving up (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before the packet is passed unparsed.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

pub const IPV4_OFFSET_MASK: u16 = 0x1fff;
pub const IPV4_MF_OFFSET_MASK: u16 = 0x3fff;
pub const IPV4_DF: u16 = 0x4000;
pub const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;

/// No header we read starts further into a frame than this.
pub const MAX_HEADER_OFFSET: usize = 0x3fff;
