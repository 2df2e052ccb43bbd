//! A blocking rtnetlink socket, for next-hop resolution and VRRP: get requests, links by
//! name, an interface's addresses, and requests the kernel acknowledges.

use std::{io, net::IpAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkLayerType, LinkMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

pub(crate) struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    pub(crate) fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// The link named `ifname` (RTM_GETLINK by IFLA_IFNAME); ENODEV when there is none.
    pub(crate) fn link(&mut self, ifname: &str) -> io::Result<LinkMessage> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(ifname.into()));
        let reply = self.exchange(RouteNetlinkMessage::GetLink(link), NLM_F_REQUEST)?;
        match reply.into_iter().next() {
            Some(RouteNetlinkMessage::NewLink(link)) => Ok(link),
            other => Err(unexpected(&other)),
        }
    }

    /// The addresses on interface `ifindex`, in the kernel's order (RTM_GETADDR dump).
    pub(crate) fn addresses(&mut self, ifindex: u32) -> io::Result<Vec<AddressMessage>> {
        let replies = self.exchange(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut addresses = Vec::new();
        for reply in replies {
            match reply {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == ifindex => {
                    addresses.push(a)
                }
                RouteNetlinkMessage::NewAddress(_) => {}
                other => return Err(unexpected(&Some(other))),
            }
        }
        Ok(addresses)
    }

    /// Sends a get request and returns the kernel's one answer; an error
    /// answer becomes its errno.
    pub(crate) fn get(&mut self, request: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
        let reply = self.exchange(request, NLM_F_REQUEST)?;
        reply.into_iter().next().ok_or_else(|| unexpected(&None))
    }

    /// Sends a request the kernel acknowledges (NLM_F_ACK) with `flags` added; a negative
    /// acknowledgement becomes its errno.
    pub(crate) fn acked(&mut self, request: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(request, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(drop)
    }

    /// Sends `request` and collects the kernel's answers: everything up to NLMSG_DONE for a
    /// dump, up to the acknowledgement when one was asked for, else the one reply.
    fn exchange(
        &mut self,
        request: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let single = flags & (NLM_F_DUMP | NLM_F_ACK) == 0;
        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = datagram.as_slice();
            // A datagram holds one or more messages, each padded to 4 bytes.
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let len = (reply.header.length as usize).next_multiple_of(4);
                rest = rest.get(len..).unwrap_or_default();
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(message) => {
                        replies.push(message);
                        if single {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    // An acknowledgement is an error message without an error.
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }
}

/// The interface address an address message is about: IFA_LOCAL when present (on a
/// point-to-point link IFA_ADDRESS is the peer), else IFA_ADDRESS.
pub(crate) fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

/// The MAC address of an Ethernet link; `None` for any other link type.
pub(crate) fn ether_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    if link.header.link_layer_type != LinkLayerType::Ether {
        return None;
    }
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

pub(crate) fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn unexpected(reply: &Option<RouteNetlinkMessage>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected netlink reply {reply:?}"),
    )
}
