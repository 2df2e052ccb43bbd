//! Next-hop resolution: for a backend address, the interface the kernel routes it out of, that
//! interface's MAC and the MAC of the next hop (the backend itself when on-link, else the
//! gateway), as the XDP program needs them to rewrite the Ethernet header.
//!
//! Everything comes from the kernel over rtnetlink: the route (`ip route get`), the link and the
//! neighbour entry. A missing next hop is resolved by the kernel itself: an empty UDP datagram to
//! the address makes it send ARP requests or neighbour solicitations, and the neighbour table is
//! polled until the entry is usable. Nothing is cached here.

use std::{
    collections::HashMap,
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
    RouteNetlinkMessage,
};

use crate::{
    dataplane::NextHop,
    net::{
        rtnl::{self, family, Rtnl},
        sys,
    },
};

/// How often the neighbour table is read while the kernel resolves an entry.
const POLL: Duration = Duration::from_millis(10);
/// The discard service: where the datagram that starts resolution goes.
const DISCARD_PORT: u16 = 9;

/// Where frames for one address go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `ifindex` and `src_mac` are always filled.
    pub next_hop: NextHop,
    /// The gateway, or the address itself when it is on-link.
    pub via: IpAddr,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum NeighError {
    #[error("no route to {0}")]
    NoRoute(IpAddr),
    #[error("{0} is an address of this host")]
    Local(IpAddr),
    #[error("{addr} is routed as {kind}, not to a single host")]
    NotUnicast { addr: IpAddr, kind: String },
    #[error("{addr} via {ifname}: {ifname} has no Ethernet MAC address (link type {link_type})")]
    NoMac {
        addr: IpAddr,
        ifname: String,
        link_type: String,
    },
    #[error("{}: no {} within {timeout:?}", Hop(.addr, .via, .ifname), reply_name(.via))]
    Timeout {
        addr: IpAddr,
        via: IpAddr,
        ifname: String,
        timeout: Duration,
    },
    #[error("{}: sending the datagram that starts resolution: {error}", Hop(.addr, .via, .ifname))]
    Trigger {
        addr: IpAddr,
        via: IpAddr,
        ifname: String,
        error: Arc<io::Error>,
    },
    #[error("netlink: {context}: {error}")]
    Netlink {
        context: String,
        error: Arc<io::Error>,
    },
    #[error("next-hop resolver thread: {0}")]
    Thread(String),
}

impl NeighError {
    fn netlink(context: impl Into<String>, error: io::Error) -> NeighError {
        NeighError::Netlink {
            context: context.into(),
            error: Arc::new(error),
        }
    }
}

/// Shows the path to an address: `10.1.2.3 via eth1` on-link, `10.1.2.3 via 10.0.0.1 on eth1`
/// through a gateway.
struct Hop<'a>(&'a IpAddr, &'a IpAddr, &'a str);

impl fmt::Display for Hop<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Hop(addr, via, ifname) = self;
        if addr == via {
            write!(f, "{addr} via {ifname}")
        } else {
            write!(f, "{addr} via {via} on {ifname}")
        }
    }
}

/// What answers a resolution request for `via`.
fn reply_name(via: &IpAddr) -> &'static str {
    match via {
        IpAddr::V4(_) => "ARP reply",
        IpAddr::V6(_) => "neighbour advertisement",
    }
}

/// Resolves `addr`: the kernel's route for it (RTM_GETROUTE for that destination, like
/// `ip route get`), the egress interface's MAC, and the neighbour entry of the next hop
/// (RTM_GETNEIGH). When the neighbour is missing or not yet valid, an empty UDP datagram to
/// `addr`'s discard port, sent from a socket bound to the egress interface, makes the kernel
/// resolve it (ARP or neighbour solicitation); the neighbour table is then polled until the entry
/// is usable or `timeout` passes.
///
/// The work runs on a thread of its own, started from the thread that first polls the future, so
/// it happens in that thread's network namespace and needs no particular async runtime.
pub async fn resolve(addr: IpAddr, timeout: Duration) -> Result<Resolved, NeighError> {
    let mut results = resolve_all(&[addr], timeout).await;
    results
        .remove(&addr)
        .expect("resolve_all answers for every address")
}

/// Resolves many addresses at once, as [`resolve`] does: every missing neighbour is asked for
/// before any is waited for, so all of them together take at most about `timeout`.
pub async fn resolve_all(
    addrs: &[IpAddr],
    timeout: Duration,
) -> HashMap<IpAddr, Result<Resolved, NeighError>> {
    let mut addrs = addrs.to_vec();
    addrs.sort_unstable();
    addrs.dedup();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = thread::Builder::new().name("xlb-neigh".into()).spawn({
        let addrs = addrs.clone();
        // A send error means the caller stopped waiting.
        move || {
            let _ = tx.send(resolve_blocking(&addrs, timeout));
        }
    });
    let error = match spawned {
        Ok(_) => match rx.await {
            Ok(results) => return results,
            Err(_) => NeighError::Thread("panicked".into()),
        },
        Err(e) => NeighError::Thread(format!("could not start: {e}")),
    };
    addrs.into_iter().map(|a| (a, Err(error.clone()))).collect()
}

/// [`resolve_all`] on the calling thread, with blocking netlink requests.
fn resolve_blocking(
    addrs: &[IpAddr],
    timeout: Duration,
) -> HashMap<IpAddr, Result<Resolved, NeighError>> {
    let deadline = Instant::now() + timeout;
    let mut rtnl = match Rtnl::open() {
        Ok(rtnl) => rtnl,
        Err(e) => {
            let error = NeighError::netlink("opening a route socket", e);
            return addrs.iter().map(|&a| (a, Err(error.clone()))).collect();
        }
    };
    let mut results = HashMap::new();
    let mut waiting = Vec::new();
    for &addr in addrs {
        let started = Path::lookup(&mut rtnl, addr).and_then(|path| {
            Ok(match path.neighbour(&mut rtnl)? {
                Neigh::Valid(mac) => Some(path.resolved(mac)),
                Neigh::Pending | Neigh::Missing => {
                    path.trigger()?;
                    waiting.push(path);
                    None
                }
            })
        });
        if let Some(result) = started.transpose() {
            results.insert(addr, result);
        }
    }
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(POLL.min(left));
        waiting.retain(|path| {
            let done = match path.neighbour(&mut rtnl) {
                Ok(Neigh::Valid(mac)) => Ok(path.resolved(mac)),
                Ok(Neigh::Pending) => return true,
                // The kernel gave up (FAILED) or dropped the entry: ask again.
                Ok(Neigh::Missing) => match path.trigger() {
                    Ok(()) => return true,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            results.insert(path.addr, done);
            false
        });
    }
    for path in waiting {
        let error = NeighError::Timeout {
            addr: path.addr,
            via: path.via,
            ifname: path.ifname,
            timeout,
        };
        results.insert(path.addr, Err(error));
    }
    results
}

/// The route to an address and its egress interface.
struct Path {
    addr: IpAddr,
    via: IpAddr,
    ifindex: u32,
    ifname: String,
    src_mac: [u8; 6],
}

/// The interface the kernel sends to an address out of, and the next hop there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    pub ifname: String,
    /// The gateway, or the address itself when it is on-link.
    pub via: IpAddr,
}

/// The egress interface of each address, from the route and link alone (no neighbour is
/// looked up or resolved): what `ip route get` says. Blocking; runs in the calling thread's
/// network namespace.
pub fn egress_all(addrs: &[IpAddr]) -> HashMap<IpAddr, Result<Egress, NeighError>> {
    let mut rtnl = match Rtnl::open() {
        Ok(rtnl) => rtnl,
        Err(e) => {
            let error = NeighError::netlink("opening a route socket", e);
            return addrs.iter().map(|&a| (a, Err(error.clone()))).collect();
        }
    };
    addrs
        .iter()
        .map(|&addr| {
            let egress = route_link(&mut rtnl, addr).map(|(_, via, link)| Egress {
                ifname: link_name(&link),
                via,
            });
            (addr, egress)
        })
        .collect()
}

/// The interface the kernel sends to `addr` out of, and the source address
/// it would give a packet there (`ip route get ADDR`: `dev`, `src`).
/// Blocking; runs in the calling thread's network namespace.
pub fn route_source(addr: IpAddr) -> Result<(u32, Option<IpAddr>), NeighError> {
    let mut rtnl = Rtnl::open().map_err(|e| NeighError::netlink("opening a route socket", e))?;
    let route = match rtnl.get(route_request(addr)) {
        Ok(RouteNetlinkMessage::NewRoute(route)) => route,
        Ok(other) => return Err(unexpected(format!("route lookup for {addr}"), &other)),
        Err(e) => return Err(route_error(addr, e)),
    };
    let (ifindex, _) = next_hop(addr, &route)?;
    let source = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    Ok((ifindex, source))
}

/// The kernel's route to `addr`: the egress interface's index and link, and the next hop.
fn route_link(rtnl: &mut Rtnl, addr: IpAddr) -> Result<(u32, IpAddr, LinkMessage), NeighError> {
    let route = match rtnl.get(route_request(addr)) {
        Ok(RouteNetlinkMessage::NewRoute(route)) => route,
        Ok(other) => return Err(unexpected(format!("route lookup for {addr}"), &other)),
        Err(e) => return Err(route_error(addr, e)),
    };
    let (ifindex, via) = next_hop(addr, &route)?;
    match rtnl.get(link_request(ifindex)) {
        Ok(RouteNetlinkMessage::NewLink(link)) => Ok((ifindex, via, link)),
        Ok(other) => Err(unexpected(format!("interface {ifindex}"), &other)),
        Err(e) => Err(NeighError::netlink(format!("interface {ifindex}"), e)),
    }
}

impl Path {
    fn lookup(rtnl: &mut Rtnl, addr: IpAddr) -> Result<Path, NeighError> {
        let (ifindex, via, link) = route_link(rtnl, addr)?;
        let (ifname, src_mac) = link_mac(addr, &link)?;
        Ok(Path {
            addr,
            via,
            ifindex,
            ifname,
            src_mac,
        })
    }

    fn neighbour(&self, rtnl: &mut Rtnl) -> Result<Neigh, NeighError> {
        match rtnl.get(neighbour_request(self.ifindex, self.via)) {
            Ok(RouteNetlinkMessage::NewNeighbour(neigh)) => {
                let lladdr = neigh.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLocalAddress(lladdr) => Some(lladdr.as_slice()),
                    _ => None,
                });
                Ok(classify(neigh.header.state, lladdr))
            }
            Ok(other) => Err(unexpected(self.neighbour_context(), &other)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Neigh::Missing),
            Err(e) => Err(NeighError::netlink(self.neighbour_context(), e)),
        }
    }

    fn neighbour_context(&self) -> String {
        format!("neighbour {} on {}", self.via, self.ifname)
    }

    /// Sends an empty datagram to the address out of the egress interface; the kernel queues it
    /// on the next hop's neighbour entry and starts resolving that.
    fn trigger(&self) -> Result<(), NeighError> {
        log::debug!("{}: asking the kernel to resolve {}", self.addr, self.via);
        let any: IpAddr = match self.addr {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let sent = UdpSocket::bind((any, 0))
            .and_then(|socket| {
                sys::bind_to_device(&socket, &self.ifname)?;
                socket.send_to(&[], (self.addr, DISCARD_PORT))
            })
            .map(drop);
        sent.map_err(|e| NeighError::Trigger {
            addr: self.addr,
            via: self.via,
            ifname: self.ifname.clone(),
            error: Arc::new(e),
        })
    }

    fn resolved(&self, mac: [u8; 6]) -> Resolved {
        Resolved {
            next_hop: NextHop {
                mac,
                ifindex: self.ifindex,
                src_mac: self.src_mac,
            },
            via: self.via,
        }
    }
}

/// A neighbour entry, as far as forwarding is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Neigh {
    /// The kernel would send to this MAC now.
    Valid([u8; 6]),
    /// Being resolved (INCOMPLETE).
    Pending,
    /// Absent, NONE or FAILED: nothing resolves it until a packet needs it.
    Missing,
}

/// Sorts a neighbour entry by its NUD state bits and link-layer address.
fn classify(state: NeighbourState, lladdr: Option<&[u8]>) -> Neigh {
    const NUD_INCOMPLETE: u16 = 0x01;
    // The kernel's NUD_VALID: REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT.
    const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
    let bits = u16::from(state);
    let mac = lladdr.and_then(|a| <[u8; 6]>::try_from(a).ok());
    match mac {
        Some(mac) if bits & NUD_VALID != 0 => Neigh::Valid(mac),
        // A valid entry without an Ethernet address would not be resolved by asking again.
        None if bits & NUD_VALID != 0 => Neigh::Pending,
        _ if bits & NUD_INCOMPLETE != 0 => Neigh::Pending,
        _ => Neigh::Missing,
    }
}

/// The egress interface index and the next hop from the kernel's answer to a route lookup.
fn next_hop(addr: IpAddr, route: &RouteMessage) -> Result<(u32, IpAddr), NeighError> {
    match route.header.kind {
        RouteType::Unicast => {}
        RouteType::Local => return Err(NeighError::Local(addr)),
        RouteType::Unreachable | RouteType::BlackHole | RouteType::Prohibit | RouteType::Throw => {
            return Err(NeighError::NoRoute(addr))
        }
        kind => {
            return Err(NeighError::NotUnicast {
                addr,
                kind: format!("{kind:?}").to_lowercase(),
            })
        }
    }
    let mut oif = None;
    let mut via = addr;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Gateway(RouteAddress::Inet(gw))
            | RouteAttribute::Via(RouteVia::Inet(gw)) => via = IpAddr::V4(*gw),
            RouteAttribute::Gateway(RouteAddress::Inet6(gw))
            | RouteAttribute::Via(RouteVia::Inet6(gw)) => via = IpAddr::V6(*gw),
            _ => {}
        }
    }
    let oif = oif.ok_or_else(|| {
        NeighError::netlink(
            format!("route lookup for {addr}"),
            io::Error::other("the route has no output interface"),
        )
    })?;
    Ok((oif, via))
}

/// Errors of a route lookup: the kernel answers an unroutable destination with one of these.
fn route_error(addr: IpAddr, error: io::Error) -> NeighError {
    match error.raw_os_error() {
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES) => NeighError::NoRoute(addr),
        _ => NeighError::netlink(format!("route lookup for {addr}"), error),
    }
}

/// The interface's name (`interface N` if the kernel gave none).
fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("interface {}", link.header.index))
}

/// The interface's name and MAC; an interface without an Ethernet address is an error.
fn link_mac(addr: IpAddr, link: &LinkMessage) -> Result<(String, [u8; 6]), NeighError> {
    let ifname = link_name(link);
    match rtnl::ether_mac(link) {
        Some(mac) => Ok((ifname, mac)),
        None => Err(NeighError::NoMac {
            addr,
            ifname,
            link_type: link.header.link_layer_type.to_string(),
        }),
    }
}

fn unexpected(context: String, reply: &RouteNetlinkMessage) -> NeighError {
    let error = io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply {reply:?}"),
    );
    NeighError::netlink(context, error)
}

/// RTM_GETROUTE for one destination, as `ip route get ADDR` sends.
fn route_request(addr: IpAddr) -> RouteNetlinkMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = family(addr);
    route.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    route
        .attributes
        .push(RouteAttribute::Destination(addr.into()));
    RouteNetlinkMessage::GetRoute(route)
}

fn link_request(ifindex: u32) -> RouteNetlinkMessage {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    RouteNetlinkMessage::GetLink(link)
}

/// RTM_GETNEIGH for one entry (Linux 4.20 and later answer these without a dump).
fn neighbour_request(ifindex: u32, via: IpAddr) -> RouteNetlinkMessage {
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = family(via);
    neigh.header.ifindex = ifindex;
    let destination = match via {
        IpAddr::V4(a) => NeighbourAddress::from(a),
        IpAddr::V6(a) => NeighbourAddress::from(a),
    };
    neigh
        .attributes
        .push(NeighbourAttribute::Destination(destination));
    RouteNetlinkMessage::GetNeighbour(neigh)
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{
        link::{LinkHeader, LinkLayerType},
        AddressFamily,
    };

    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x2a];

    fn route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut route = RouteMessage::default();
        route.header.kind = kind;
        route.attributes = attributes;
        route
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn on_link_route_goes_to_the_address_itself() {
        let route = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Destination(ip("198.18.0.2").into()),
                RouteAttribute::Oif(3),
                RouteAttribute::PrefSource(ip("198.18.0.1").into()),
            ],
        );
        assert_eq!(
            next_hop(ip("198.18.0.2"), &route).unwrap(),
            (3, ip("198.18.0.2"))
        );
    }

    #[test]
    fn gateway_route_goes_to_the_gateway() {
        let v4 = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(4),
                RouteAttribute::Gateway(ip("198.18.1.2").into()),
            ],
        );
        assert_eq!(
            next_hop(ip("198.18.2.7"), &v4).unwrap(),
            (4, ip("198.18.1.2"))
        );
        let v6 = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Gateway(ip("fe80::1").into()),
                RouteAttribute::Oif(5),
            ],
        );
        assert_eq!(next_hop(ip("fd00:2::7"), &v6).unwrap(), (5, ip("fe80::1")));
        // An IPv4 route through an IPv6 gateway (RFC 5549).
        let via = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Via(RouteVia::Inet6("fe80::2".parse().unwrap())),
                RouteAttribute::Oif(6),
            ],
        );
        assert_eq!(
            next_hop(ip("198.18.2.7"), &via).unwrap(),
            (6, ip("fe80::2"))
        );
    }

    #[test]
    fn routes_that_do_not_reach_one_host_are_errors() {
        let addr = ip("198.18.0.1");
        let oif = vec![RouteAttribute::Oif(1)];
        let local = next_hop(addr, &route(RouteType::Local, oif.clone())).unwrap_err();
        assert_eq!(local.to_string(), "198.18.0.1 is an address of this host");
        for kind in [
            RouteType::Unreachable,
            RouteType::BlackHole,
            RouteType::Prohibit,
        ] {
            let err = next_hop(addr, &route(kind, oif.clone())).unwrap_err();
            assert_eq!(err.to_string(), "no route to 198.18.0.1");
        }
        let broadcast = next_hop(addr, &route(RouteType::Broadcast, oif)).unwrap_err();
        assert_eq!(
            broadcast.to_string(),
            "198.18.0.1 is routed as broadcast, not to a single host"
        );
        let no_oif = next_hop(addr, &route(RouteType::Unicast, vec![])).unwrap_err();
        assert!(matches!(no_oif, NeighError::Netlink { .. }), "{no_oif}");
    }

    #[test]
    fn unroutable_errnos_mean_no_route() {
        let addr = ip("fd00:99::1");
        for errno in [libc::ENETUNREACH, libc::EHOSTUNREACH, libc::EACCES] {
            let err = route_error(addr, io::Error::from_raw_os_error(errno));
            assert_eq!(err.to_string(), "no route to fd00:99::1");
        }
        let other = route_error(addr, io::Error::from_raw_os_error(libc::EINVAL));
        assert!(
            other
                .to_string()
                .starts_with("netlink: route lookup for fd00:99::1: "),
            "{other}"
        );
    }

    #[test]
    fn neighbour_states() {
        use NeighbourState as S;
        for state in [
            S::Reachable,
            S::Stale,
            S::Delay,
            S::Probe,
            S::Permanent,
            S::Noarp,
        ] {
            assert_eq!(classify(state, Some(&MAC)), Neigh::Valid(MAC), "{state}");
        }
        assert_eq!(classify(S::Incomplete, None), Neigh::Pending);
        assert_eq!(classify(S::Reachable, None), Neigh::Pending);
        assert_eq!(classify(S::Reachable, Some(&[1, 2, 3, 4])), Neigh::Pending);
        for state in [S::None, S::Failed] {
            assert_eq!(classify(state, None), Neigh::Missing, "{state}");
        }
        // State bits the crate has no name for, as the kernel may combine them.
        assert_eq!(
            classify(S::Other(0x02 | 0x80), Some(&MAC)),
            Neigh::Valid(MAC)
        );
    }

    fn link(kind: LinkLayerType, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index: 7,
            link_layer_type: kind,
            ..LinkHeader::default()
        };
        link.attributes = attributes;
        link
    }

    #[test]
    fn interface_mac() {
        let eth = link(
            LinkLayerType::Ether,
            vec![
                LinkAttribute::IfName("eth1".into()),
                LinkAttribute::Address(MAC.to_vec()),
            ],
        );
        assert_eq!(
            link_mac(ip("198.18.0.2"), &eth).unwrap(),
            ("eth1".into(), MAC)
        );
        let lo = link(
            LinkLayerType::Loopback,
            vec![
                LinkAttribute::IfName("lo".into()),
                LinkAttribute::Address(vec![0; 6]),
            ],
        );
        assert_eq!(
            link_mac(ip("198.18.3.1"), &lo).unwrap_err().to_string(),
            "198.18.3.1 via lo: lo has no Ethernet MAC address (link type LOOPBACK)"
        );
        let tun = link(
            LinkLayerType::None,
            vec![LinkAttribute::IfName("tun0".into())],
        );
        assert!(matches!(
            link_mac(ip("198.18.3.1"), &tun),
            Err(NeighError::NoMac { ifname, .. }) if ifname == "tun0"
        ));
    }

    #[test]
    fn timeout_messages_name_the_path() {
        let on_link = NeighError::Timeout {
            addr: ip("10.1.2.3"),
            via: ip("10.1.2.3"),
            ifname: "eth1".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            on_link.to_string(),
            "10.1.2.3 via eth1: no ARP reply within 1s"
        );
        let gateway = NeighError::Timeout {
            addr: ip("fd00:2::7"),
            via: ip("fd00:1::2"),
            ifname: "eth2".into(),
            timeout: Duration::from_millis(500),
        };
        assert_eq!(
            gateway.to_string(),
            "fd00:2::7 via fd00:1::2 on eth2: no neighbour advertisement within 500ms"
        );
    }

    #[test]
    fn requests_hold_what_the_kernel_expects() {
        let RouteNetlinkMessage::GetNeighbour(neigh) = neighbour_request(9, ip("fd00::2")) else {
            panic!("not a neighbour request");
        };
        assert_eq!(neigh.header.family, AddressFamily::Inet6);
        assert_eq!(neigh.header.ifindex, 9);
        assert_eq!(
            u16::from(neigh.header.state),
            0,
            "the kernel rejects a state in a get"
        );
        let RouteNetlinkMessage::GetRoute(route) = route_request(ip("198.18.0.2")) else {
            panic!("not a route request");
        };
        assert_eq!(route.header.destination_prefix_length, 32);
        assert_eq!(
            route.attributes,
            vec![RouteAttribute::Destination(ip("198.18.0.2").into())]
        );
    }
}
