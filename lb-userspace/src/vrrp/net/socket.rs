//! The advertisement socket: raw IP, protocol 112, one interface, one address family.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::OwnedFd,
};

use tokio::io::{unix::AsyncFd, Interest};

use super::{addr::source_address, Family};
use crate::net::rtnl::Rtnl;
use crate::net::sys;
use crate::vrrp::{GROUP_V4, GROUP_V6, IPPROTO_VRRP, TTL};

/// Where the checksum sits in a VRRP message (RFC 5798 5.1).
const CHECKSUM_OFFSET: libc::c_int = 6;
/// The longest IP datagram; a buffer this size never truncates one.
const MAX_DATAGRAM: usize = 65535;

/// A raw socket for VRRP advertisements on one interface, for IPv4 or IPv6.
///
/// It receives every VRRP packet that reaches the interface for this host: to the group
/// (224.0.0.18 / ff02::12, joined on the interface) or to one of its unicast addresses, but not
/// its own multicast sends. It sends with TTL / hop limit 255 (RFC 5798 5.1.1.3) from
/// [`VrrpSocket::local_address`].
///
/// For IPv6 the kernel computes the VRRPv3 checksum of every message sent (over the IPv6
/// pseudo-header, at offset 6), overwriting whatever the encoder put there, and drops received
/// messages whose checksum is wrong before they reach [`VrrpSocket::recv`]. For IPv4 messages go
/// out and come in as they are: the caller computes and checks the checksum.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    local: IpAddr,
}

/// One received VRRP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The VRRP message, without IP header.
    pub payload: Vec<u8>,
    pub src: IpAddr,
    /// The group, or this host's unicast address.
    pub dst: IpAddr,
    /// The TTL or hop limit it arrived with; RFC 5798 discards anything but 255.
    pub ttl: u8,
}

impl VrrpSocket {
    /// Opens the socket on `ifname` (SO_BINDTODEVICE) and joins the VRRP group there. The source
    /// address is read now: the interface's primary IPv4 address, or its IPv6 link-local one (RFC
    /// 5798 5.1.2.1), which must exist. Receiving records the TTL from the IPv4 header, or asks
    /// for the hop limit and destination (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO).
    ///
    /// The socket belongs to the network namespace of the calling thread, and must be opened
    /// within a Tokio runtime (with I/O enabled), which then drives it; outside one this panics.
    pub fn open(ifname: &str, family: Family) -> io::Result<VrrpSocket> {
        let context = |what: &'static str| {
            move |e: io::Error| {
                io::Error::new(e.kind(), format!("VRRP socket on {ifname}: {what}: {e}"))
            }
        };
        let mut rtnl = Rtnl::open().map_err(context("opening a netlink socket"))?;
        let ifindex = rtnl
            .link(ifname)
            .map_err(context("reading the interface"))?
            .header
            .index;
        let local = source_address(&mut rtnl, ifindex, family)
            .map_err(context("finding the source address"))?;
        let domain = match family {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        };
        let fd = sys::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            libc::c_int::from(IPPROTO_VRRP),
        )
        .map_err(context("creating it"))?;
        sys::bind_to_device(&fd, ifname).map_err(context("SO_BINDTODEVICE"))?;
        let ttl = libc::c_int::from(TTL);
        match family {
            Family::V4 => {
                let group = libc::ip_mreqn {
                    imr_multiaddr: sys::in_addr(GROUP_V4),
                    imr_address: sys::in_addr(Ipv4Addr::UNSPECIFIED),
                    imr_ifindex: ifindex as libc::c_int,
                };
                sys::setsockopt(&fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &group)
                    .map_err(context("joining 224.0.0.18"))?;
                for (name, value, what) in [
                    (libc::IP_MULTICAST_TTL, ttl, "IP_MULTICAST_TTL"),
                    (libc::IP_MULTICAST_LOOP, 0, "IP_MULTICAST_LOOP"),
                    (libc::IP_TTL, ttl, "IP_TTL"),
                ] {
                    sys::set_int(&fd, libc::IPPROTO_IP, name, value).map_err(context(what))?;
                }
            }
            Family::V6 => {
                let group = libc::ipv6_mreq {
                    ipv6mr_multiaddr: sys::in6_addr(GROUP_V6),
                    ipv6mr_interface: ifindex,
                };
                sys::setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &group)
                    .map_err(context("joining ff02::12"))?;
                for (name, value, what) in [
                    (libc::IPV6_MULTICAST_HOPS, ttl, "IPV6_MULTICAST_HOPS"),
                    (libc::IPV6_MULTICAST_LOOP, 0, "IPV6_MULTICAST_LOOP"),
                    (libc::IPV6_UNICAST_HOPS, ttl, "IPV6_UNICAST_HOPS"),
                    (libc::IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT"),
                    (libc::IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO"),
                    (libc::IPV6_CHECKSUM, CHECKSUM_OFFSET, "IPV6_CHECKSUM"),
                ] {
                    sys::set_int(&fd, libc::IPPROTO_IPV6, name, value).map_err(context(what))?;
                }
            }
        }
        // SAFETY: an OwnedFd holds one open descriptor, returns it from as_raw_fd and closes it
        // only when dropped, which the AsyncFd does.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| context("registering it with the runtime")(e.into()))?;
        Ok(VrrpSocket { fd, ifindex, local })
    }

    /// Sends one VRRP message (the kernel adds the IP header) to `dst`, the group or a unicast
    /// peer of the socket's family, from [`VrrpSocket::local_address`] out of the interface
    /// (IP_PKTINFO / IPV6_PKTINFO).
    pub async fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| self.send_now(fd, payload, dst))
            .await
    }

    fn send_now(&self, fd: &OwnedFd, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        match (self.local, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: self.ifindex as libc::c_int,
                    ipi_spec_dst: sys::in_addr(src),
                    ipi_addr: sys::in_addr(Ipv4Addr::UNSPECIFIED),
                };
                let to = sys::sockaddr_in(dst);
                sys::send_msg(fd, payload, &to, libc::IPPROTO_IP, libc::IP_PKTINFO, &info)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: sys::in6_addr(src),
                    ipi6_ifindex: self.ifindex,
                };
                let to = sys::sockaddr_in6(dst, self.ifindex);
                sys::send_msg(
                    fd,
                    payload,
                    &to,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    &info,
                )
            }
            (local, dst) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {dst} from {local}"),
            )),
        }
    }

    /// Receives one VRRP packet.
    pub async fn recv(&self) -> io::Result<Received> {
        let mut buf = vec![0; MAX_DATAGRAM];
        let (len, from, control) = self
            .fd
            .async_io(Interest::READABLE, |fd| sys::recv_msg(fd, &mut buf))
            .await?;
        let datagram = &buf[..len];
        match self.local {
            // An IPv4 raw socket receives the IP header with the message.
            IpAddr::V4(_) => strip_ipv4_header(datagram),
            IpAddr::V6(_) => {
                let src = from.ok_or_else(|| invalid("no source address"))?;
                let (dst, ttl) = ipv6_destination_and_hop_limit(&control)?;
                Ok(Received {
                    payload: datagram.to_vec(),
                    src,
                    dst: dst.into(),
                    ttl,
                })
            }
        }
    }

    /// The address advertisements leave from: the interface's primary IPv4 address or its IPv6
    /// link-local address, as it was when the socket was opened.
    pub fn local_address(&self) -> IpAddr {
        self.local
    }
}

/// Splits a received IPv4 datagram into its header's addresses and TTL and the message after the
/// header, however long the header is (IHL).
fn strip_ipv4_header(datagram: &[u8]) -> io::Result<Received> {
    let header_len = match datagram.first() {
        Some(byte) if byte >> 4 == 4 => usize::from(byte & 0x0f) * 4,
        _ => return Err(invalid("not an IPv4 datagram")),
    };
    if header_len < 20 || datagram.len() < header_len {
        return Err(invalid("truncated IPv4 header"));
    }
    let address = |at: usize| -> IpAddr {
        let octets: [u8; 4] = datagram[at..at + 4].try_into().expect("4 bytes");
        Ipv4Addr::from(octets).into()
    };
    Ok(Received {
        payload: datagram[header_len..].to_vec(),
        src: address(12),
        dst: address(16),
        ttl: datagram[8],
    })
}

/// The destination (IPV6_PKTINFO) and hop limit (IPV6_HOPLIMIT) among a datagram's control
/// messages.
fn ipv6_destination_and_hop_limit(control: &[sys::ControlMessage]) -> io::Result<(Ipv6Addr, u8)> {
    let mut dst = None;
    let mut hop_limit = None;
    for message in control.iter().filter(|m| m.level == libc::IPPROTO_IPV6) {
        match message.kind {
            // in6_pktinfo: the address, then the interface index.
            libc::IPV6_PKTINFO => {
                dst = message
                    .data
                    .get(..16)
                    .map(|a| Ipv6Addr::from(<[u8; 16]>::try_from(a).expect("16 bytes")));
            }
            // An int.
            libc::IPV6_HOPLIMIT => {
                hop_limit = message
                    .data
                    .get(..4)
                    .map(|b| libc::c_int::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .and_then(|h| u8::try_from(h).ok());
            }
            _ => {}
        }
    }
    match (dst, hop_limit) {
        (Some(dst), Some(hop_limit)) => Ok((dst, hop_limit)),
        (None, _) => Err(invalid("no IPV6_PKTINFO with the datagram")),
        (_, None) => Err(invalid("no IPV6_HOPLIMIT with the datagram")),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_stripped_by_its_length() {
        #[rustfmt::skip]
        let mut datagram = vec![
            0x46, 0, 0, 36, 0, 0, 0x40, 0, 255, 112, 0, 0,
            198, 18, 0, 1,
            224, 0, 0, 18,
            // Router alert, as some implementations send it.
            0x94, 0x04, 0, 0,
        ];
        datagram.extend_from_slice(&[0x31, 1, 100, 1, 0, 100, 0xab, 0xcd]);
        let received = strip_ipv4_header(&datagram).unwrap();
        assert_eq!(
            received,
            Received {
                payload: vec![0x31, 1, 100, 1, 0, 100, 0xab, 0xcd],
                src: "198.18.0.1".parse().unwrap(),
                dst: "224.0.0.18".parse().unwrap(),
                ttl: 255,
            }
        );
        datagram[0] = 0x45;
        assert_eq!(strip_ipv4_header(&datagram).unwrap().payload.len(), 12);
    }

    #[test]
    fn malformed_ipv4_headers_are_errors() {
        for datagram in [&[][..], &[0x60; 40], &[0x44; 40], &[0x4f; 40]] {
            assert_eq!(
                strip_ipv4_header(datagram).unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
        }
    }

    #[test]
    fn ipv6_control_messages() {
        let group = GROUP_V6.octets().to_vec();
        let pktinfo = sys::ControlMessage {
            level: libc::IPPROTO_IPV6,
            kind: libc::IPV6_PKTINFO,
            data: [group, 7u32.to_ne_bytes().to_vec()].concat(),
        };
        let hop_limit = sys::ControlMessage {
            level: libc::IPPROTO_IPV6,
            kind: libc::IPV6_HOPLIMIT,
            data: 255i32.to_ne_bytes().to_vec(),
        };
        assert_eq!(
            ipv6_destination_and_hop_limit(&[hop_limit, pktinfo]).unwrap(),
            (GROUP_V6, 255)
        );
        let err = ipv6_destination_and_hop_limit(&[]).unwrap_err();
        assert_eq!(err.to_string(), "no IPV6_PKTINFO with the datagram");
    }
}
