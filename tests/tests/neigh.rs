//! Next-hop resolution against real namespaces: ARP and neighbour discovery over a veth, a
//! backend behind a gateway, and the errors an operator sees.

use std::{
    future::Future,
    net::IpAddr,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
    thread::{self, Thread},
    time::{Duration, Instant},
};

use anyhow::ensure;
use xlb::{
    dataplane::NextHop,
    neigh::{self, NeighError, Resolved},
};
use xlb_tests::{
    netns::{Netns, Topology},
    require_privileged,
};

/// Generous for a veth, where ARP and neighbour discovery take well under a millisecond.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Polls a future to completion on this thread. `xlb::neigh` works on a thread it starts from the
/// polling thread, so it needs no runtime and stays in the namespace this thread has entered.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// `lb`, where resolution runs, linked to `peer` by `lb-peer`/`peer-lb` (198.18.0.1 and .2 in
/// /24, fd00::1 and ::2 in /64) and to `gw` by `lb-gw`/`gw-lb` (198.18.1.1 and .2, fd00:1::1 and
/// ::2). `gw` is `lb`'s gateway to 198.18.2.0/24 and fd00:2::/64.
struct ResolverTestbed {
    _topology: Topology,
    lb: Netns,
    peer: Netns,
    gw: Netns,
}

impl ResolverTestbed {
    fn new(tag: &str) -> anyhow::Result<ResolverTestbed> {
        let mut topology = Topology::new(tag)?;
        let lb = topology.add_ns("lb")?;
        let peer = topology.add_ns("peer")?;
        let gw = topology.add_ns("gw")?;
        topology.link(&lb, "lb-peer", &peer, "peer-lb")?;
        topology.link(&lb, "lb-gw", &gw, "gw-lb")?;
        for (lb_if, other, other_if, v4, v6) in [
            ("lb-peer", &peer, "peer-lb", "198.18.0", "fd00:"),
            ("lb-gw", &gw, "gw-lb", "198.18.1", "fd00:1:"),
        ] {
            lb.add_addr(lb_if, &format!("{v4}.1/24"))?;
            lb.add_addr(lb_if, &format!("{v6}:1/64"))?;
            other.add_addr(other_if, &format!("{v4}.2/24"))?;
            other.add_addr(other_if, &format!("{v6}:2/64"))?;
        }
        lb.add_route("198.18.2.0/24", "198.18.1.2")?;
        lb.add_route("fd00:2::/64", "fd00:1::2")?;
        Ok(ResolverTestbed {
            _topology: topology,
            lb,
            peer,
            gw,
        })
    }

    /// Runs `neigh::resolve` in `lb`.
    fn resolve(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> anyhow::Result<Result<Resolved, NeighError>> {
        let addr: IpAddr = addr.parse()?;
        self.lb.run(|| block_on(neigh::resolve(addr, timeout)))
    }

    /// What `lb` should resolve `addr` to when it goes out of `lb_if` to `via` on `other_if`.
    fn expected(
        &self,
        lb_if: &str,
        other: &Netns,
        other_if: &str,
        via: &str,
    ) -> anyhow::Result<Resolved> {
        Ok(Resolved {
            next_hop: NextHop {
                mac: other.mac(other_if)?,
                ifindex: self.lb.ifindex(lb_if)?,
                src_mac: self.lb.mac(lb_if)?,
            },
            via: via.parse()?,
        })
    }

    /// Fails if `lb` has a neighbour entry for `addr`, in any state.
    fn ensure_no_neighbour(&self, addr: &str) -> anyhow::Result<()> {
        let entry = self.lb.ip(&["neigh", "show", "to", addr])?;
        ensure!(
            entry.trim().is_empty(),
            "lb already has a neighbour entry: {entry}"
        );
        Ok(())
    }
}

#[test]
fn resolves_on_link_neighbours_from_an_empty_cache() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = ResolverTestbed::new("neigh_onlink")?;
    for addr in ["198.18.0.2", "fd00::2"] {
        testbed.ensure_no_neighbour(addr)?;
        let resolved = testbed.resolve(addr, TIMEOUT)??;
        assert_eq!(
            resolved,
            testbed.expected("lb-peer", &testbed.peer, "peer-lb", addr)?,
            "{addr}"
        );
    }
    Ok(())
}

#[test]
fn resolves_a_backend_behind_a_gateway_to_the_gateway() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = ResolverTestbed::new("neigh_gateway")?;
    for (addr, gateway) in [("198.18.2.7", "198.18.1.2"), ("fd00:2::7", "fd00:1::2")] {
        testbed.ensure_no_neighbour(gateway)?;
        let resolved = testbed.resolve(addr, TIMEOUT)??;
        assert_eq!(
            resolved,
            testbed.expected("lb-gw", &testbed.gw, "gw-lb", gateway)?,
            "{addr}"
        );
    }
    Ok(())
}

#[test]
fn a_permanent_entry_counts_as_resolved() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = ResolverTestbed::new("neigh_static")?;
    // Nobody has this address, so only the static entry can answer.
    let mac = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];
    testbed.lb.add_neigh("lb-peer", "198.18.0.50", mac)?;
    let resolved = testbed.resolve("198.18.0.50", TIMEOUT)??;
    assert_eq!(resolved.next_hop.mac, mac);
    assert_eq!(resolved.next_hop.ifindex, testbed.lb.ifindex("lb-peer")?);
    Ok(())
}

#[test]
fn errors_name_the_address_and_the_reason() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = ResolverTestbed::new("neigh_errors")?;
    testbed
        .lb
        .ip(&["route", "add", "198.18.3.0/24", "dev", "lo"])?;
    for (addr, message) in [
        ("198.18.200.1", "no route to 198.18.200.1"),
        ("fd00:99::1", "no route to fd00:99::1"),
        ("198.18.0.1", "198.18.0.1 is an address of this host"),
        ("fd00::1", "fd00::1 is an address of this host"),
        ("127.0.0.1", "127.0.0.1 is an address of this host"),
        (
            "198.18.3.1",
            "198.18.3.1 via lo: lo has no Ethernet MAC address (link type LOOPBACK)",
        ),
    ] {
        let err = testbed.resolve(addr, TIMEOUT)?.unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    Ok(())
}

#[test]
fn times_out_together_when_nobody_answers() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = ResolverTestbed::new("neigh_timeout")?;
    let timeout = Duration::from_millis(800);
    let addrs: Vec<IpAddr> = ["198.18.0.99", "fd00::99", "198.18.0.2"]
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (results, elapsed) = testbed.lb.run(|| {
        let start = Instant::now();
        let results = block_on(neigh::resolve_all(&addrs, timeout));
        (results, start.elapsed())
    })?;
    // Resolved side by side: all of them within one timeout.
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
        "took {elapsed:?}"
    );
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[&addrs[2]].as_ref().unwrap(),
        &testbed.expected("lb-peer", &testbed.peer, "peer-lb", "198.18.0.2")?
    );
    for (addr, message) in [
        (
            addrs[0],
            "198.18.0.99 via lb-peer: no ARP reply within 800ms",
        ),
        (
            addrs[1],
            "fd00::99 via lb-peer: no neighbour advertisement within 800ms",
        ),
    ] {
        let err = results[&addr].as_ref().unwrap_err();
        assert!(matches!(err, NeighError::Timeout { .. }), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
    Ok(())
}
