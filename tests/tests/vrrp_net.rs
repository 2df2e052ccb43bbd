//! VRRP's interface work between two namespaces joined by a veth: advertisements to the group and
//! to a peer, virtual addresses, gratuitous ARP and unsolicited neighbour advertisements, and the
//! link state.

use std::{
    future::Future,
    net::{IpAddr, Ipv6Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use tokio::runtime::Runtime;
use xlb::vrrp::{
    net::{self, Family, Received, VrrpSocket},
    GROUP_V4, GROUP_V6, IPPROTO_VRRP,
};
use xlb_tests::{
    netns::{Netns, Topology},
    packet::ones_complement_sum,
    require_privileged,
};

/// Generous for a veth, where everything here takes well under a millisecond.
const TIMEOUT: Duration = Duration::from_secs(2);
const A_IF: &str = "a-b";
const B_IF: &str = "b-a";
/// What B's neighbour entries point at before an announcement.
const OTHER_MAC: &str = "02:00:00:00:00:99";

/// A VRRPv3 advertisement for VRID 51, priority 100, interval 1 s, one address; checksum zero.
const ADVERT: [u8; 12] = [0x31, 51, 100, 1, 0, 100, 0, 0, 198, 18, 0, 100];

/// Namespaces `a` and `b` joined by `a-b`/`b-a`, with 198.18.0.1 and .2 in /24 and fd00::1 and
/// ::2 in /64, and a runtime for the sockets opened in them.
struct Pair {
    _topo: Topology,
    a: Netns,
    b: Netns,
    rt: Runtime,
}

impl Pair {
    fn new(tag: &str) -> anyhow::Result<Pair> {
        let mut topo = Topology::new(tag)?;
        let a = topo.add_ns("a")?;
        let b = topo.add_ns("b")?;
        topo.link(&a, A_IF, &b, B_IF)?;
        for (ns, ifname, host) in [(&a, A_IF, 1), (&b, B_IF, 2)] {
            ns.add_addr(ifname, &format!("198.18.0.{host}/24"))?;
            ns.add_addr(ifname, &format!("fd00::{host}/64"))?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        Ok(Pair {
            _topo: topo,
            a,
            b,
            rt,
        })
    }

    /// Runs `future` to completion on a thread inside `ns`, where the address functions start
    /// their own threads.
    fn block_on<T: Send>(
        &self,
        ns: &Netns,
        future: impl Future<Output = T> + Send,
    ) -> anyhow::Result<T> {
        ns.run(|| self.rt.block_on(future))
    }

    /// Opens a VRRP socket inside `ns`, registered with the runtime; it stays in `ns`.
    fn socket(&self, ns: &Netns, ifname: &str, family: Family) -> anyhow::Result<VrrpSocket> {
        let socket = ns.run(|| {
            let _runtime = self.rt.enter();
            VrrpSocket::open(ifname, family)
        })?;
        Ok(socket?)
    }
}

fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap()
}

/// Polls `done` until it holds; fails after [`TIMEOUT`], naming `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !done()? {
        if Instant::now() >= deadline {
            bail!("no {what} within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The interface's IPv6 link-local address, once it has left duplicate address detection.
fn link_local(ns: &Netns, ifname: &str) -> anyhow::Result<Ipv6Addr> {
    let mut found = None;
    wait_for(&format!("link-local address on {ifname}"), || {
        let out = ns.ip(&["-j", "-6", "addr", "show", "dev", ifname, "scope", "link"])?;
        let links: Value = serde_json::from_str(&out)?;
        // iproute2 lists the addresses the filter leaves out as `{}`.
        found = links[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a.get("tentative").is_none())
            .find_map(|a| a["local"].as_str()?.parse().ok());
        Ok(found.is_some())
    })?;
    Ok(found.expect("found"))
}

/// The entry for `addr` in `ip -j addr show dev IFNAME`, if there is one.
fn listed_address(ns: &Netns, ifname: &str, addr: IpAddr) -> anyhow::Result<Option<Value>> {
    let out = ns.ip(&["-j", "addr", "show", "dev", ifname])?;
    let links: Value = serde_json::from_str(&out)?;
    let addresses = links[0]["addr_info"].as_array().context("no addr_info")?;
    Ok(addresses
        .iter()
        .find(|a| a["local"].as_str() == Some(&addr.to_string()))
        .cloned())
}

/// The link-layer address of `ns`'s neighbour entry for `addr` on `ifname`.
fn neighbour_mac(ns: &Netns, ifname: &str, addr: IpAddr) -> anyhow::Result<Option<String>> {
    let out = ns.ip(&[
        "-j",
        "neigh",
        "show",
        "to",
        &addr.to_string(),
        "dev",
        ifname,
    ])?;
    let entries: Value = serde_json::from_str(&out)?;
    Ok(entries[0]["lladdr"].as_str().map(str::to_owned))
}

async fn recv(socket: &VrrpSocket) -> anyhow::Result<Received> {
    let received = tokio::time::timeout(TIMEOUT, socket.recv())
        .await
        .context("nothing received")??;
    Ok(received)
}

/// Whether `message` carries a valid checksum over the IPv6 pseudo-header (RFC 5798 5.2.8).
fn ipv6_checksum_ok(src: IpAddr, dst: IpAddr, message: &[u8]) -> bool {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else {
        return false;
    };
    // The pseudo-header: addresses, upper-layer length, next header.
    let length = u32::try_from(message.len()).unwrap().to_be_bytes();
    let pseudo = [
        &src.octets()[..],
        &dst.octets(),
        &length,
        &[0, 0, 0, IPPROTO_VRRP],
    ]
    .concat();
    ones_complement_sum(&[&pseudo, message]) == 0xffff
}

#[test]
fn ipv4_advertisements_reach_the_peer() -> anyhow::Result<()> {
    require_privileged!();
    let pair = Pair::new("vrrpnet4")?;
    let b = pair.socket(&pair.b, B_IF, Family::V4)?;
    let a = pair.socket(&pair.a, A_IF, Family::V4)?;
    assert_eq!(a.local_address(), ip("198.18.0.1"));
    pair.rt.block_on(async {
        a.send(&ADVERT, GROUP_V4.into()).await?;
        assert_eq!(
            recv(&b).await?,
            Received {
                payload: ADVERT.to_vec(),
                src: ip("198.18.0.1"),
                dst: GROUP_V4.into(),
                ttl: 255,
            }
        );
        a.send(&ADVERT, ip("198.18.0.2")).await?;
        let unicast = recv(&b).await?;
        assert_eq!((unicast.dst, unicast.ttl), (ip("198.18.0.2"), 255));
        // Multicast loop is off: A does not hear itself.
        let own = tokio::time::timeout(Duration::from_millis(200), a.recv()).await;
        ensure!(own.is_err(), "A received its own advertisement: {own:?}");
        let wrong_family = a.send(&ADVERT, GROUP_V6.into()).await.unwrap_err();
        assert_eq!(wrong_family.kind(), std::io::ErrorKind::InvalidInput);
        anyhow::Ok(())
    })?;
    let missing = pair.socket(&pair.a, "nope0", Family::V4).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "VRRP socket on nope0: reading the interface: No such device (os error 19)"
    );
    Ok(())
}

#[test]
fn ipv6_advertisements_come_from_the_link_local_address() -> anyhow::Result<()> {
    require_privileged!();
    let pair = Pair::new("vrrpnet6")?;
    let a_link_local = IpAddr::V6(link_local(&pair.a, A_IF)?);
    link_local(&pair.b, B_IF)?;
    let b = pair.socket(&pair.b, B_IF, Family::V6)?;
    let a = pair.socket(&pair.a, A_IF, Family::V6)?;
    assert_eq!(a.local_address(), a_link_local);
    pair.rt.block_on(async {
        for dst in [IpAddr::V6(GROUP_V6), ip("fd00::2")] {
            a.send(&ADVERT, dst).await?;
            let received = recv(&b).await?;
            assert_eq!(
                (received.src, received.dst, received.ttl),
                (a_link_local, dst, 255)
            );
            // The kernel filled in the checksum the message was sent without.
            assert_eq!(received.payload[..6], ADVERT[..6]);
            assert_eq!(received.payload[8..], ADVERT[8..]);
            ensure!(
                ipv6_checksum_ok(received.src, received.dst, &received.payload),
                "bad checksum in {:02x?}",
                received.payload
            );
        }
        anyhow::Ok(())
    })
}

#[test]
fn single_addresses_come_and_go() -> anyhow::Result<()> {
    require_privileged!();
    let pair = Pair::new("vrrpnetaddr")?;
    let a = &pair.a;
    for (addr, prefix) in [(ip("198.18.0.100"), 32), (ip("fd00::100"), 128)] {
        assert!(!pair.block_on(a, net::has_address(A_IF, addr))??);
        // Adding twice is fine.
        for _ in 0..2 {
            pair.block_on(a, net::add_address(A_IF, addr))??;
        }
        assert!(pair.block_on(a, net::has_address(A_IF, addr))??);
        let listed = listed_address(a, A_IF, addr)?.context("not listed")?;
        assert_eq!(listed["prefixlen"], prefix, "{listed}");
        assert!(listed.get("tentative").is_none(), "{listed}");
        // Removing twice is fine.
        for _ in 0..2 {
            pair.block_on(a, net::remove_address(A_IF, addr))??;
        }
        assert!(!pair.block_on(a, net::has_address(A_IF, addr))??);
        assert_eq!(listed_address(a, A_IF, addr)?, None);
    }
    // Only the single address is removed: the /24 of the same address stays.
    let primary = ip("198.18.0.1");
    pair.block_on(a, net::remove_address(A_IF, primary))??;
    assert!(pair.block_on(a, net::has_address(A_IF, primary))??);
    let missing = pair
        .block_on(a, net::add_address("nope0", ip("198.18.0.100")))?
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "adding 198.18.0.100/32 to nope0: No such device (os error 19)"
    );
    Ok(())
}

#[test]
fn announcements_repoint_the_peers_neighbour_entry() -> anyhow::Result<()> {
    require_privileged!();
    let pair = Pair::new("vrrpnetannounce")?;
    let a_mac = xlb::net::mac(&pair.a.mac(A_IF)?);
    for vip in [ip("198.18.0.100"), ip("fd00::100")] {
        let vip_text = vip.to_string();
        pair.b.ip(&[
            "neigh", "replace", &vip_text, "lladdr", OTHER_MAC, "dev", B_IF, "nud", "stale",
        ])?;
        assert_eq!(
            neighbour_mac(&pair.b, B_IF, vip)?.as_deref(),
            Some(OTHER_MAC)
        );
        pair.block_on(&pair.a, net::add_address(A_IF, vip))??;
        pair.a.run(|| match vip {
            IpAddr::V4(v4) => net::gratuitous_arp(A_IF, v4),
            IpAddr::V6(v6) => net::unsolicited_na(A_IF, v6),
        })??;
        wait_for(&format!("entry for {vip} pointing at {a_mac}"), || {
            Ok(neighbour_mac(&pair.b, B_IF, vip)?.as_deref() == Some(a_mac.as_str()))
        })?;
    }
    let missing = pair
        .a
        .run(|| net::gratuitous_arp("nope0", "198.18.0.100".parse().unwrap()))?
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "sending a gratuitous ARP for 198.18.0.100 on nope0: No such device (os error 19)"
    );
    Ok(())
}

#[test]
fn link_state_follows_the_veth() -> anyhow::Result<()> {
    require_privileged!();
    let pair = Pair::new("vrrpnetlink")?;
    let link_up = |ns: &Netns, ifname: &str| -> anyhow::Result<bool> {
        Ok(ns.run(|| net::link_up(ifname))??)
    };
    assert_eq!(pair.a.run(|| net::ifindex(A_IF))??, pair.a.ifindex(A_IF)?);
    assert!(link_up(&pair.a, A_IF)?);
    assert!(link_up(&pair.b, B_IF)?);
    pair.a.ip(&["link", "set", "dev", A_IF, "down"])?;
    assert!(!link_up(&pair.a, A_IF)?);
    // B's end loses its carrier.
    wait_for("carrier loss on b-a", || Ok(!link_up(&pair.b, B_IF)?))?;
    pair.a.ip(&["link", "set", "dev", A_IF, "up"])?;
    wait_for("a-b up again", || link_up(&pair.a, A_IF))?;
    wait_for("b-a up again", || link_up(&pair.b, B_IF))?;
    let missing = pair.a.run(|| net::link_up("nope0"))?.unwrap_err();
    assert_eq!(
        missing.to_string(),
        "reading interface nope0: No such device (os error 19)"
    );
    Ok(())
}
