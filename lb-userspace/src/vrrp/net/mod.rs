//! VRRP's interface work: the advertisement socket ([`VrrpSocket`]), the virtual addresses on
//! the interface, gratuitous ARP and unsolicited neighbour advertisements once they move here,
//! and the link state.
//!
//! Everything acts on the network namespace of the calling thread. The address functions work
//! on a thread of their own, started from the thread that first polls them, so they stay in that
//! namespace and need no particular runtime; the rest makes short blocking system calls on the
//! caller's thread (netlink requests, one send).

mod addr;
mod announce;
mod link;
mod socket;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub use addr::{add_address, has_address, remove_address};
pub use announce::{gratuitous_arp, unsolicited_na};
pub use link::{ifindex, link_up};
pub use socket::{Received, VrrpSocket};

/// The address family of a [`VrrpSocket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// What failed, on which interface, and the system's reason.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("reading interface {ifname}: {error}")]
    Link { ifname: String, error: io::Error },
    #[error("adding {addr}/{} to {ifname}: {error}", host_prefix(.addr))]
    AddAddress {
        ifname: String,
        addr: IpAddr,
        error: io::Error,
    },
    #[error("removing {addr}/{} from {ifname}: {error}", host_prefix(.addr))]
    RemoveAddress {
        ifname: String,
        addr: IpAddr,
        error: io::Error,
    },
    #[error("reading the addresses of {ifname}: {error}")]
    ReadAddresses { ifname: String, error: io::Error },
    #[error("sending a gratuitous ARP for {addr} on {ifname}: {error}")]
    GratuitousArp {
        ifname: String,
        addr: Ipv4Addr,
        error: io::Error,
    },
    #[error("sending an unsolicited neighbour advertisement for {addr} on {ifname}: {error}")]
    UnsolicitedNa {
        ifname: String,
        addr: Ipv6Addr,
        error: io::Error,
    },
}

/// The prefix length of a single address: 32 or 128.
fn host_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_operation_and_the_interface() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        let add = NetError::AddAddress {
            ifname: "eth0".into(),
            addr: "198.18.0.100".parse().unwrap(),
            error: eperm(),
        };
        assert_eq!(
            add.to_string(),
            "adding 198.18.0.100/32 to eth0: Operation not permitted (os error 1)"
        );
        let remove = NetError::RemoveAddress {
            ifname: "eth1".into(),
            addr: "fd00::100".parse().unwrap(),
            error: eperm(),
        };
        assert_eq!(
            remove.to_string(),
            "removing fd00::100/128 from eth1: Operation not permitted (os error 1)"
        );
        let na = NetError::UnsolicitedNa {
            ifname: "eth1".into(),
            addr: "fd00::100".parse().unwrap(),
            error: eperm(),
        };
        assert_eq!(
            na.to_string(),
            "sending an unsolicited neighbour advertisement for fd00::100 on eth1: \
             Operation not permitted (os error 1)"
        );
    }
}
