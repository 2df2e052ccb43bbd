//! Interfaces: index, state and MAC address, from RTM_GETLINK.

use std::io;

use netlink_packet_route::link::{LinkFlags, LinkMessage};

use super::NetError;
use crate::net::rtnl::{self, Rtnl};

/// The interface's index.
pub fn ifindex(ifname: &str) -> Result<u32, NetError> {
    crate::net::ifindex(ifname).ok_or_else(|| NetError::Link {
        ifname: ifname.into(),
        error: io::Error::from_raw_os_error(libc::ENODEV),
    })
}

/// Whether the interface can pass traffic: administratively up (IFF_UP) and operationally up
/// (IFF_RUNNING, which the kernel derives from the operstate: UP, or UNKNOWN for drivers that do
/// not report one). A veth whose peer is down has no carrier and is not up.
pub fn link_up(ifname: &str) -> Result<bool, NetError> {
    read_link(ifname).map(|link| is_up(&link))
}

fn read_link(ifname: &str) -> Result<LinkMessage, NetError> {
    Rtnl::open()
        .and_then(|mut rtnl| rtnl.link(ifname))
        .map_err(|error| NetError::Link {
            ifname: ifname.into(),
            error,
        })
}

fn is_up(link: &LinkMessage) -> bool {
    link.header
        .flags
        .contains(LinkFlags::Up | LinkFlags::Running)
}

/// The index and MAC address of an Ethernet interface; other link types are an error.
pub(super) fn ether_link(rtnl: &mut Rtnl, ifname: &str) -> io::Result<(u32, [u8; 6])> {
    let link = rtnl.link(ifname)?;
    let mac = rtnl::ether_mac(&link).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "not an Ethernet interface (link type {})",
                link.header.link_layer_type
            ),
        )
    })?;
    Ok((link.header.index, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_needs_both_flags() {
        let mut link = LinkMessage::default();
        for (flags, up) in [
            (
                LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp,
                true,
            ),
            (LinkFlags::Up | LinkFlags::Running, true),
            // Up but without carrier, as a veth whose peer is down.
            (LinkFlags::Up | LinkFlags::Broadcast, false),
            (LinkFlags::empty(), false),
        ] {
            link.header.flags = flags;
            assert_eq!(is_up(&link), up, "{flags:?}");
        }
    }
}
