//! Virtual addresses on an interface (RTM_NEWADDR / RTM_DELADDR), and the address
//! advertisements leave from.

use std::{io, net::IpAddr, thread};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
    RouteNetlinkMessage,
};

use super::{host_prefix, Family, NetError};
use crate::net::rtnl::{self, Rtnl};

/// Adds `addr` to the interface as a single address (IPv4 /32, IPv6 /128). An IPv6 address skips
/// duplicate address detection (IFA_F_NODAD), so it is usable at once. Adding the same address
/// with the same prefix again is not an error.
pub async fn add_address(ifname: &str, addr: IpAddr) -> Result<(), NetError> {
    let added = on_link(ifname, move |rtnl, ifindex| {
        let request = RouteNetlinkMessage::NewAddress(address_message(ifindex, addr));
        match rtnl.acked(request, NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            done => done,
        }
    });
    added.await.map_err(|error| NetError::AddAddress {
        ifname: ifname.into(),
        addr,
        error,
    })
}

/// Removes the single address (`addr`/32 or `addr`/128) from the interface; the same address
/// with another prefix stays. Removing an address that is not there is not an error.
pub async fn remove_address(ifname: &str, addr: IpAddr) -> Result<(), NetError> {
    let removed = on_link(ifname, move |rtnl, ifindex| {
        let request = RouteNetlinkMessage::DelAddress(address_message(ifindex, addr));
        match rtnl.acked(request, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            done => done,
        }
    });
    removed.await.map_err(|error| NetError::RemoveAddress {
        ifname: ifname.into(),
        addr,
        error,
    })
}

/// Whether `addr` is on the interface, with whatever prefix length.
pub async fn has_address(ifname: &str, addr: IpAddr) -> Result<bool, NetError> {
    let found = on_link(ifname, move |rtnl, ifindex| {
        let addresses = rtnl.addresses(ifindex)?;
        Ok(addresses
            .iter()
            .any(|a| rtnl::local_address(a) == Some(addr)))
    });
    found.await.map_err(|error| NetError::ReadAddresses {
        ifname: ifname.into(),
        error,
    })
}

/// The address advertisements leave from: the interface's primary IPv4 address (the first that
/// is not secondary, as the kernel picks it), or its IPv6 link-local address that has passed
/// duplicate address detection.
pub(super) fn source_address(rtnl: &mut Rtnl, ifindex: u32, family: Family) -> io::Result<IpAddr> {
    let addresses = rtnl.addresses(ifindex)?;
    pick_source(&addresses, family).ok_or_else(|| {
        let what = match family {
            Family::V4 => "no primary IPv4 address",
            Family::V6 => "no usable IPv6 link-local address",
        };
        io::Error::new(io::ErrorKind::AddrNotAvailable, what)
    })
}

fn pick_source(addresses: &[AddressMessage], family: Family) -> Option<IpAddr> {
    addresses.iter().find_map(|message| {
        let addr = rtnl::local_address(message)?;
        // The flags that matter here are all in the header's byte.
        let flags = message.header.flags;
        let usable = match addr {
            IpAddr::V4(_) => family == Family::V4 && !flags.contains(AddressHeaderFlags::Secondary),
            IpAddr::V6(a) => {
                family == Family::V6
                    && a.is_unicast_link_local()
                    && !flags
                        .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed)
            }
        };
        usable.then_some(addr)
    })
}

/// The RTM_NEWADDR / RTM_DELADDR body for `addr` as a single address, as `ip addr add ADDR/32`
/// (or `/128 nodad`) sends it.
fn address_message(ifindex: u32, addr: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = rtnl::family(addr);
    message.header.prefix_len = host_prefix(&addr);
    message.header.scope = AddressScope::Universe;
    message.header.index = ifindex;
    message.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    if addr.is_ipv6() {
        message.header.flags = AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    message
}

/// Runs blocking netlink work on interface `ifname` (its index given) on a thread started from
/// the polling thread, so it happens in that thread's network namespace without holding up the
/// runtime.
async fn on_link<T: Send + 'static>(
    ifname: &str,
    work: impl FnOnce(&mut Rtnl, u32) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ifname = ifname.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    thread::Builder::new()
        .name("xlb-vrrp-net".into())
        .spawn(move || {
            let done = Rtnl::open().and_then(|mut rtnl| {
                let ifindex = rtnl.link(&ifname)?.header.index;
                work(&mut rtnl, ifindex)
            });
            // A send error means the caller stopped waiting.
            let _ = tx.send(done);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the netlink thread panicked"))?
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::AddressFamily;

    use super::*;

    fn address(addr: &str, flags: AddressHeaderFlags) -> AddressMessage {
        let addr: IpAddr = addr.parse().unwrap();
        let mut message = AddressMessage::default();
        message.header.flags = flags;
        message.attributes = vec![AddressAttribute::Address(addr)];
        if addr.is_ipv4() {
            message.attributes.push(AddressAttribute::Local(addr));
        }
        message
    }

    #[test]
    fn single_addresses_as_ip_addr_add_sends_them() {
        let v4 = address_message(3, "198.18.0.100".parse().unwrap());
        assert_eq!(v4.header.family, AddressFamily::Inet);
        assert_eq!(v4.header.prefix_len, 32);
        assert_eq!(v4.header.index, 3);
        assert_eq!(v4.header.flags, AddressHeaderFlags::empty());
        assert_eq!(
            v4.attributes,
            vec![
                AddressAttribute::Local("198.18.0.100".parse().unwrap()),
                AddressAttribute::Address("198.18.0.100".parse().unwrap()),
            ]
        );
        let v6 = address_message(4, "fd00::100".parse().unwrap());
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert_eq!(v6.header.prefix_len, 128);
        assert_eq!(v6.header.flags, AddressHeaderFlags::Nodad);
        assert!(v6
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
    }

    #[test]
    fn source_is_the_primary_or_the_link_local_address() {
        let addresses = [
            address("fd00::1", AddressHeaderFlags::Permanent),
            address("198.18.0.7", AddressHeaderFlags::Secondary),
            address("fe80::1", AddressHeaderFlags::Tentative),
            address("198.18.0.1", AddressHeaderFlags::Permanent),
            address("198.18.0.100", AddressHeaderFlags::Permanent),
            address("fe80::2", AddressHeaderFlags::Permanent),
        ];
        assert_eq!(
            pick_source(&addresses, Family::V4),
            Some("198.18.0.1".parse().unwrap())
        );
        assert_eq!(
            pick_source(&addresses, Family::V6),
            Some("fe80::2".parse().unwrap())
        );
        assert_eq!(pick_source(&addresses[..3], Family::V6), None);
        assert_eq!(pick_source(&addresses[..2], Family::V4), None);
    }
}
