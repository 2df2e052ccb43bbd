//! End to end through the XDP load balancer, in the namespace lab of
//! [`xlb_tests::lab`]: short TCP connections and UDP exchanges to the VIP must
//! all be answered and spread by the backends' weights, and long-lived
//! connections must keep their backend when the Maglev ring changes. Direct
//! routing, IP-in-IP and NAT, over IPv4 and IPv6.

use anyhow::{ensure, Context};
use lb_common::maps::Mode;
use xlb_tests::{
    lab::{Family, InProcessTestbed, Member},
    require_privileged,
    servers::{tcp_spread, udp_spread, LongLived},
};

/// Short connections, and UDP exchanges, per spread with weights 1:1:1: a backend's count then
/// has a standard deviation of 2.9% of its share, so the tolerance is five of them.
const EVEN_EXCHANGES: u64 = 2400;
/// The same for weights 1:2:3, where b1's sixth needs more exchanges for the same margin.
const WEIGHTED_EXCHANGES: u64 = 6000;
/// Long-lived connections opened before the ring changes.
const LONG_LIVED: usize = 30;
/// New connections made after the ring has changed.
const AFTER_CHANGE: u64 = 300;

/// b1, b2 and b3 with `weights`: every short TCP connection and UDP exchange to the VIP is
/// answered, spread by the weights.
fn spreads(
    tag: &str,
    mode: Mode,
    family: Family,
    weights: [u16; 3],
    count: u64,
) -> anyhow::Result<()> {
    let members: Vec<Member> = (0..3).map(|n| Member::new(n, weights[n])).collect();
    let lab = InProcessTestbed::new(tag, mode, family, 3, &members)?;
    lab.probe()?;
    let tcp = tcp_spread(&lab.testbed.client, lab.vip(), count)?;
    lab.check_spread("TCP", &tcp, count, &weights)?;
    let udp = udp_spread(&lab.testbed.client, lab.vip(), count)?;
    lab.check_spread("UDP", &udp, count, &weights)?;
    lab.check_counters()
        .with_context(|| format!("after TCP {tcp:?} and UDP {udp:?}"))
}

/// Long-lived connections to b1, b2 and b3 keep answering from their first backend when the
/// ring changes to add b4 and drain b1; new connections then go to b2, b3 and b4 only.
fn ring_change(tag: &str, mode: Mode, family: Family) -> anyhow::Result<()> {
    let mut lab = InProcessTestbed::new(
        tag,
        mode,
        family,
        4,
        &[Member::new(0, 1), Member::new(1, 1), Member::new(2, 1)],
    )?;
    lab.probe()?;
    let mut conns = LongLived::open(&lab.testbed.client, lab.vip(), LONG_LIVED)?;
    let first = conns.backends();
    ensure!(
        first.contains_key("b1") && !first.contains_key("b4"),
        "{LONG_LIVED} connections should reach b1 and not b4: {first:?}"
    );
    let changed = conns.check()?;
    ensure!(changed.is_empty(), "before the ring change: {changed:?}");

    lab.apply(&[
        Member::new(0, 1).drained(),
        Member::new(1, 1),
        Member::new(2, 1),
        Member::new(3, 1),
    ])?;
    let changed = conns.check()?;
    ensure!(
        changed.is_empty(),
        "connections that lost their backend (index, first, now) when the ring changed: \
         {changed:?}; first backends: {first:?}"
    );

    let fresh = tcp_spread(&lab.testbed.client, lab.vip(), AFTER_CHANGE)?;
    ensure!(
        fresh.failed == 0 && fresh.answered() == AFTER_CHANGE,
        "after the ring change, {} of {AFTER_CHANGE} new connections answered; errors: {:?}",
        fresh.answered(),
        fresh.errors
    );
    ensure!(
        !fresh.by_backend.contains_key("b1") && fresh.by_backend.contains_key("b4"),
        "new connections should reach b4 and not the drained b1: {:?}",
        fresh.by_backend
    );
    let changed = conns.check()?;
    ensure!(changed.is_empty(), "after the new connections: {changed:?}");
    lab.check_counters()
}

#[test]
fn e2e_dr_ipv4_spreads_evenly() -> anyhow::Result<()> {
    require_privileged!();
    spreads("dr4", Mode::Dr, Family::V4, [1, 1, 1], EVEN_EXCHANGES)
}

#[test]
fn e2e_dr_ipv4_spreads_by_weight() -> anyhow::Result<()> {
    require_privileged!();
    spreads("dr4w", Mode::Dr, Family::V4, [1, 2, 3], WEIGHTED_EXCHANGES)
}

#[test]
fn e2e_dr_ipv6_spreads_evenly() -> anyhow::Result<()> {
    require_privileged!();
    spreads("dr6", Mode::Dr, Family::V6, [1, 1, 1], EVEN_EXCHANGES)
}

#[test]
fn e2e_ipip_ipv4_spreads_evenly() -> anyhow::Result<()> {
    require_privileged!();
    spreads("ipip4", Mode::Ipip, Family::V4, [1, 1, 1], EVEN_EXCHANGES)
}

#[test]
fn e2e_ipip_ipv6_spreads_evenly() -> anyhow::Result<()> {
    require_privileged!();
    spreads("ipip6", Mode::Ipip, Family::V6, [1, 1, 1], EVEN_EXCHANGES)
}

#[test]
fn e2e_nat_ipv4_spreads_evenly() -> anyhow::Result<()> {
    require_privileged!();
    spreads("nat4", Mode::Nat, Family::V4, [1, 1, 1], EVEN_EXCHANGES)
}

#[test]
fn e2e_nat_ipv6_spreads_evenly() -> anyhow::Result<()> {
    require_privileged!();
    spreads("nat6", Mode::Nat, Family::V6, [1, 1, 1], EVEN_EXCHANGES)
}

#[test]
fn e2e_dr_ipv4_long_lived_connections_survive_ring_change() -> anyhow::Result<()> {
    require_privileged!();
    ring_change("dr4ring", Mode::Dr, Family::V4)
}

#[test]
fn e2e_dr_ipv6_long_lived_connections_survive_ring_change() -> anyhow::Result<()> {
    require_privileged!();
    ring_change("dr6ring", Mode::Dr, Family::V6)
}

#[test]
fn e2e_ipip_ipv4_long_lived_connections_survive_ring_change() -> anyhow::Result<()> {
    require_privileged!();
    ring_change("ipip4ring", Mode::Ipip, Family::V4)
}

#[test]
fn e2e_ipip_ipv6_long_lived_connections_survive_ring_change() -> anyhow::Result<()> {
    require_privileged!();
    ring_change("ipip6ring", Mode::Ipip, Family::V6)
}

#[test]
fn e2e_nat_ipv4_long_lived_connections_survive_ring_change() -> anyhow::Result<()> {
    require_privileged!();
    ring_change("nat4ring", Mode::Nat, Family::V4)
}

#[test]
fn e2e_nat_ipv6_long_lived_connections_survive_ring_change() -> anyhow::Result<()> {
    require_privileged!();
    ring_change("nat6ring", Mode::Nat, Family::V6)
}
