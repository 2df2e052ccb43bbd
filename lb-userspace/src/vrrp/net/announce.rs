//! Telling the segment that an address has moved here: a gratuitous ARP request for IPv4, an
//! unsolicited neighbour advertisement for IPv6. Hosts that already have a neighbour entry for the
//! address point it at this interface's MAC.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{link::ether_link, NetError};
use crate::net::rtnl::Rtnl;
use crate::net::sys;

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// All nodes on the link, where unsolicited advertisements go (RFC 4861 7.2.6).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Neighbour discovery is only believed from hop limit 255, so it cannot come from off-link.
const ND_HOP_LIMIT: libc::c_int = 255;

/// Broadcasts a gratuitous ARP request for `addr` out of `ifname`: sender and target address
/// both `addr`, sender MAC the interface's (RFC 5227's ARP announcement). Sent as a whole
/// Ethernet frame over an AF_PACKET socket.
pub fn gratuitous_arp(ifname: &str, addr: Ipv4Addr) -> Result<(), NetError> {
    let sent = Rtnl::open()
        .and_then(|mut rtnl| ether_link(&mut rtnl, ifname))
        .and_then(|(ifindex, mac)| {
            // Protocol 0: the socket sends only and receives nothing.
            let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
            let mut sll_addr = [0; 8];
            sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
            let to = libc::sockaddr_ll {
                sll_family: libc::AF_PACKET as u16,
                sll_protocol: (libc::ETH_P_ARP as u16).to_be(),
                sll_ifindex: ifindex as libc::c_int,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 6,
                sll_addr,
            };
            sys::send_to(&fd, &arp_announcement(mac, addr), &to)
        });
    sent.map_err(|error| NetError::GratuitousArp {
        ifname: ifname.into(),
        addr,
        error,
    })
}

/// Sends an unsolicited neighbour advertisement for `addr` to all nodes (ff02::1) on `ifname`:
/// Override set, Solicited and Router clear, the interface's MAC as the target link-layer
/// address, hop limit 255. The kernel picks the source (the link-local address) and computes the
/// ICMPv6 checksum, as it does for every raw ICMPv6 socket.
pub fn unsolicited_na(ifname: &str, addr: Ipv6Addr) -> Result<(), NetError> {
    let sent = Rtnl::open()
        .and_then(|mut rtnl| ether_link(&mut rtnl, ifname))
        .and_then(|(ifindex, mac)| {
            let fd = sys::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
            sys::bind_to_device(&fd, ifname)?;
            sys::set_int(
                &fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                ND_HOP_LIMIT,
            )?;
            // This host has no use for its own advertisement.
            sys::set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)?;
            let to = sys::sockaddr_in6(ALL_NODES, ifindex);
            sys::send_to(&fd, &neighbour_advertisement(mac, addr), &to)
        });
    sent.map_err(|error| NetError::UnsolicitedNa {
        ifname: ifname.into(),
        addr,
        error,
    })
}

/// The Ethernet frame of an ARP announcement: a broadcast request whose sender and target
/// protocol addresses are both `addr`, target hardware address zero.
fn arp_announcement(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 42] {
    const ETHERTYPE_ARP: u16 = 0x0806;
    const HTYPE_ETHERNET: u16 = 1;
    const PTYPE_IPV4: u16 = 0x0800;
    const OPER_REQUEST: u16 = 1;
    let mut frame = [0; 42];
    frame[0..6].copy_from_slice(&BROADCAST_MAC);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    frame[16..18].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&OPER_REQUEST.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&addr.octets());
    // Target hardware address 32..38 stays zero.
    frame[38..42].copy_from_slice(&addr.octets());
    frame
}

/// The ICMPv6 message of an unsolicited neighbour advertisement (RFC 4861 4.4), checksum zero for
/// the kernel to fill in.
fn neighbour_advertisement(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
    const FLAG_OVERRIDE: u8 = 0x20;
    const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
    let mut message = [0; 32];
    message[0] = TYPE_NEIGHBOR_ADVERTISEMENT;
    // The code (byte 1) and the checksum (bytes 2 and 3) stay zero.
    message[4] = FLAG_OVERRIDE;
    message[8..24].copy_from_slice(&target.octets());
    message[24] = OPTION_TARGET_LINK_LAYER_ADDRESS;
    // The option's length, in units of 8 bytes.
    message[25] = 1;
    message[26..32].copy_from_slice(&mac);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn arp_announcement_bytes() {
        let frame = arp_announcement(MAC, Ipv4Addr::new(198, 18, 0, 100));
        #[rustfmt::skip]
        let expected = [
            // Ethernet: broadcast, from the interface, ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,
            0x08, 0x06,
            // Ethernet/IPv4, address lengths 6 and 4, request.
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // Sender: the interface's MAC and the address.
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 198, 18, 0, 100,
            // Target: no MAC, the same address.
            0, 0, 0, 0, 0, 0, 198, 18, 0, 100,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn neighbour_advertisement_bytes() {
        let message = neighbour_advertisement(MAC, "fd00::100".parse().unwrap());
        #[rustfmt::skip]
        let expected = [
            // Type 136, code 0, checksum left to the kernel.
            136, 0, 0, 0,
            // Override; Router and Solicited clear.
            0x20, 0, 0, 0,
            // Target address.
            0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            // Target link-layer address option, 8 bytes long.
            2, 1, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,
        ];
        assert_eq!(message, expected);
    }
}
