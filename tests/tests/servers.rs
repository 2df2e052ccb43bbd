//! Tests of the load-balancing test infrastructure without a load balancer: a switch joining a
//! client and three backends, identity servers on the backends, and the client drivers talking
//! to each backend directly.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::ensure;
use xlb_tests::{
    netns::{Netns, Switch, Topology},
    require_privileged,
    servers::{self, tcp_spread, udp_spread, IdentityServer, LongLived, Spread},
};

/// A client (`eth0`: 198.18.1.1/24, fd00:1::1/64) and backends b1, b2, b3 (`eth0`:
/// 198.18.1.10/11/12, fd00:1::10/11/12), all on one switch.
struct SwitchTestbed {
    topology: Topology,
    switch: Switch,
    client: Netns,
    backends: Vec<Netns>,
}

const NAMES: [&str; 3] = ["b1", "b2", "b3"];

fn v4(backend: usize, port: u16) -> SocketAddr {
    SocketAddr::new([198, 18, 1, 10 + backend as u8].into(), port)
}

fn v6(backend: usize, port: u16) -> SocketAddr {
    format!("[fd00:1::{}]:{port}", 10 + backend)
        .parse()
        .unwrap()
}

fn testbed(tag: &str) -> anyhow::Result<SwitchTestbed> {
    let mut topology = Topology::new(tag)?;
    let mut switch = topology.add_switch("sw")?;
    let client = topology.add_ns("client")?;
    switch.connect(&mut topology, &client, "eth0")?;
    client.add_addr("eth0", "198.18.1.1/24")?;
    client.add_addr("eth0", "fd00:1::1/64")?;
    let mut backends = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let ns = topology.add_ns(name)?;
        switch.connect(&mut topology, &ns, "eth0")?;
        ns.add_addr("eth0", &format!("{}/24", v4(i, 0).ip()))?;
        ns.add_addr("eth0", &format!("{}/64", v6(i, 0).ip()))?;
        backends.push(ns);
    }
    Ok(SwitchTestbed {
        topology,
        switch,
        client,
        backends,
    })
}

/// An identity server named b1, b2, b3 on each backend, on `[::]:{port}` (both families).
fn serve(testbed: &SwitchTestbed, port: u16) -> anyhow::Result<Vec<IdentityServer>> {
    testbed
        .backends
        .iter()
        .zip(NAMES)
        .map(|(ns, name)| IdentityServer::start(ns, format!("[::]:{port}").parse()?, name))
        .collect()
}

fn only(name: &str, count: u64) -> Spread {
    Spread {
        by_backend: BTreeMap::from([(name.to_owned(), count)]),
        ..Spread::default()
    }
}

/// `read`'s value once it has stopped changing (servers count on their own threads), or after 2 s.
fn settle<T: PartialEq + Copy>(read: impl Fn() -> T) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut last = read();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Every backend answers every TCP connection and UDP exchange sent to its own address.
fn each_backend_answers(tag: &str, addr: fn(usize, u16) -> SocketAddr) -> anyhow::Result<()> {
    let testbed = testbed(tag)?;
    let servers = serve(&testbed, 8080)?;
    for (i, name) in NAMES.iter().enumerate() {
        let tcp = tcp_spread(&testbed.client, addr(i, 8080), 50)?;
        assert_eq!(tcp, only(name, 50), "TCP to {}", addr(i, 8080));
        let udp = udp_spread(&testbed.client, addr(i, 8080), 50)?;
        assert_eq!(udp, only(name, 50), "UDP to {}", addr(i, 8080));
        let counted = settle(|| (servers[i].tcp_connections(), servers[i].udp_datagrams()));
        assert_eq!(
            counted,
            (50, 50),
            "{name}: connections and datagrams it counted"
        );
    }
    Ok(())
}

#[test]
fn each_backend_answers_with_its_name_over_ipv4() -> anyhow::Result<()> {
    require_privileged!();
    each_backend_answers("srv4", v4)
}

#[test]
fn each_backend_answers_with_its_name_over_ipv6() -> anyhow::Result<()> {
    require_privileged!();
    each_backend_answers("srv6", v6)
}

/// `curl` gets each backend's name in HTTP over both families, and the line protocol still
/// works on the same server.
#[test]
fn each_backend_answers_curl_in_http() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("srvhttp")?;
    let _servers = serve(&testbed, 8080)?;
    for (i, name) in NAMES.iter().enumerate() {
        for addr in [v4(i, 8080), v6(i, 8080)] {
            let url = format!("http://{addr}/healthz");
            let out = testbed
                .client
                .exec("curl", &["-sS", "-g", "-i", "--max-time", "2", &url])?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success() && text.starts_with("HTTP/1.0 200 OK\r\n"),
                "curl {url}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ensure!(
                text.ends_with(&format!("\r\n\r\n{name}")),
                "curl {url}: {text}"
            );
        }
        assert_eq!(tcp_spread(&testbed.client, v4(i, 8080), 5)?, only(name, 5));
    }
    Ok(())
}

#[test]
fn ipv4_only_server_on_another_port() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("srvport")?;
    let server = IdentityServer::start(&testbed.backends[0], "0.0.0.0:0".parse()?, "b1")?;
    let port = server.addr().port();
    assert_ne!(port, 0);
    assert_eq!(tcp_spread(&testbed.client, v4(0, port), 5)?, only("b1", 5));
    assert_eq!(udp_spread(&testbed.client, v4(0, port), 5)?, only("b1", 5));
    // Not listening on IPv6: refused at once, counted, not fatal.
    let refused = tcp_spread(&testbed.client, v6(0, port), 3)?;
    assert_eq!((refused.answered(), refused.failed), (0, 3), "{refused:?}");
    assert!(
        refused.errors.iter().all(|e| e.contains("refused")),
        "{refused:?}"
    );
    let refused = udp_spread(&testbed.client, v6(0, port), 3)?;
    assert_eq!((refused.answered(), refused.failed), (0, 3), "{refused:?}");
    Ok(())
}

#[test]
fn long_lived_connections_keep_their_backend_until_it_stops() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("longlived")?;
    let mut servers = serve(&testbed, 80)?;
    let mut conns = LongLived::open(&testbed.client, v4(1, 80), 10)?;
    assert_eq!(conns.backends(), BTreeMap::from([("b2".to_owned(), 10)]));
    assert_eq!(conns.check()?, vec![]);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(conns.check()?, vec![]);
    assert_eq!(servers[1].tcp_connections(), 10);

    let started = Instant::now();
    drop(servers.remove(1));
    let stopped_in = started.elapsed();
    ensure!(
        stopped_in < Duration::from_secs(1),
        "stopping a server with 10 open connections took {stopped_in:?}"
    );
    let broken = conns.check()?;
    assert_eq!(broken.len(), 10, "{broken:?}");
    for (i, (index, first, now)) in broken.iter().enumerate() {
        assert_eq!((*index, first.as_str()), (i, "b2"));
        assert!(now.starts_with("error: "), "{now}");
    }
    // Still reported, without waiting again.
    assert_eq!(conns.check()?.len(), 10);
    Ok(())
}

#[test]
fn many_connections_at_once() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("many")?;
    let servers = serve(&testbed, 80)?;
    let mut conns = LongLived::open(&testbed.client, v6(2, 80), 50)?;
    assert_eq!(
        tcp_spread(&testbed.client, v4(2, 80), 300)?,
        only("b3", 300)
    );
    assert_eq!(conns.check()?, vec![]);
    assert_eq!(servers[2].tcp_connections(), 350);
    Ok(())
}

/// A direct-routing real server holds the VIP on `lo`; the client reaches it by a route, and
/// UDP answers come from the VIP (the client's connected socket accepts nothing else).
#[test]
fn vip_on_lo_answers_from_the_vip() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("vip")?;
    let servers = serve(&testbed, 80)?;
    for ns in &testbed.backends {
        ns.add_lo_addr("198.18.2.100/32")?;
        ns.add_lo_addr("fd00:2::100/128")?;
    }
    let backend = &testbed.backends[1];
    let arp_ignore = backend.exec("sysctl", &["-n", "net.ipv4.conf.all.arp_ignore"])?;
    assert_eq!(String::from_utf8_lossy(&arp_ignore.stdout).trim(), "1");
    testbed
        .client
        .add_route("198.18.2.100/32", &v4(1, 0).ip().to_string())?;
    testbed
        .client
        .add_route("fd00:2::100/128", &v6(1, 0).ip().to_string())?;
    for vip in ["198.18.2.100:80", "[fd00:2::100]:80"] {
        let vip: SocketAddr = vip.parse()?;
        assert_eq!(
            tcp_spread(&testbed.client, vip, 10)?,
            only("b2", 10),
            "{vip}"
        );
        assert_eq!(
            udp_spread(&testbed.client, vip, 10)?,
            only("b2", 10),
            "{vip}"
        );
    }
    assert_eq!(servers[1].udp_datagrams(), 20);
    Ok(())
}

#[test]
fn gro_is_on_at_both_ends_of_every_switch_port() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("gro")?;
    assert_eq!(testbed.switch.ports(), ["p-client", "p-b1", "p-b2", "p-b3"]);
    for port in testbed.switch.ports() {
        assert!(
            testbed.switch.netns().gro_enabled(port)?,
            "GRO off on {port}"
        );
        let master = testbed
            .switch
            .netns()
            .ip(&["-j", "link", "show", "dev", port])?;
        assert!(master.contains(r#""master":"br0""#), "{master}");
    }
    for ns in testbed.backends.iter().chain([&testbed.client]) {
        assert!(ns.gro_enabled("eth0")?, "GRO off on eth0 in {}", ns.name());
    }
    Ok(())
}

#[test]
fn port_names_stay_unique_and_short() -> anyhow::Result<()> {
    require_privileged!();
    let mut topology = Topology::new("ports")?;
    let mut switch = topology.add_switch("sw")?;
    let host = topology.add_ns("a_rather_long_role_name")?;
    let first = switch.connect(&mut topology, &host, "eth0")?;
    let second = switch.connect(&mut topology, &host, "eth1")?;
    assert_eq!(first, "p-a_rather_long");
    assert_eq!(second, "p1-a_rather_lon");
    assert_eq!(switch.ports(), [first, second]);
    Ok(())
}

#[test]
fn switch_namespace_goes_with_the_topology() -> anyhow::Result<()> {
    require_privileged!();
    let testbed = testbed("swdrop")?;
    let switch_ns = testbed.switch.netns().path();
    assert!(switch_ns.exists());
    let bridge = testbed
        .switch
        .netns()
        .ip(&["-d", "link", "show", "dev", "br0"])?;
    assert!(bridge.contains("stp_state 0"), "{bridge}");
    assert!(bridge.contains("forward_delay 0"), "{bridge}");
    let addrs = testbed.switch.netns().ip(&["addr", "show", "dev", "br0"])?;
    assert!(!addrs.contains("inet"), "br0 has an address: {addrs}");
    let all: Vec<_> = testbed
        .backends
        .iter()
        .chain([&testbed.client])
        .map(Netns::path)
        .chain([switch_ns.clone()])
        .collect();
    drop(testbed.topology);
    for path in &all {
        assert!(
            !Path::new(path).exists(),
            "{} outlived its topology",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn within_compares_shares_with_weights() {
    let spread = |counts: &[(&str, u64)]| Spread {
        by_backend: counts.iter().map(|&(n, c)| (n.to_owned(), c)).collect(),
        failed: 2,
        errors: vec![],
    };
    let weights = |ws: &[(&str, u64)]| -> BTreeMap<String, u64> {
        ws.iter().map(|&(n, w)| (n.to_owned(), w)).collect()
    };
    let equal = weights(&[("b1", 1), ("b2", 1), ("b3", 1)]);
    let weighted = weights(&[("b1", 1), ("b2", 2), ("b3", 1)]);

    assert_eq!(
        servers::within(
            &spread(&[("b1", 100), ("b2", 100), ("b3", 100)]),
            &equal,
            0.15
        ),
        Ok(())
    );
    assert_eq!(
        servers::within(
            &spread(&[("b1", 90), ("b2", 110), ("b3", 100)]),
            &equal,
            0.15
        ),
        Ok(())
    );
    assert_eq!(
        servers::within(
            &spread(&[("b1", 100), ("b2", 205), ("b3", 95)]),
            &weighted,
            0.1
        ),
        Ok(())
    );

    let err = servers::within(
        &spread(&[("b1", 60), ("b2", 140), ("b3", 100)]),
        &equal,
        0.15,
    )
    .unwrap_err();
    assert!(err.contains("BAD  b1: expected 33.3%"), "{err}");
    assert!(err.contains("got 20.0% (60 of 300)"), "{err}");
    assert!(err.contains("BAD  b2"), "{err}");
    assert!(err.contains("ok   b3"), "{err}");
    assert!(err.contains("2 failed"), "{err}");

    // A missing backend, and one that should not answer at all.
    let err = servers::within(&spread(&[("b1", 150), ("b2", 150)]), &equal, 0.15).unwrap_err();
    assert!(err.contains("BAD  b3: expected 33.3%"), "{err}");
    assert!(err.contains("got 0.0% (0 of 300)"), "{err}");
    let err = servers::within(
        &spread(&[("b1", 100), ("b2", 100), ("b4", 1)]),
        &weights(&[("b1", 1), ("b2", 1)]),
        0.15,
    )
    .unwrap_err();
    assert!(
        err.contains("BAD  b4: expected 0.0% (weight 0 of 2)"),
        "{err}"
    );
    // Weight 0 with no answers is fine.
    assert_eq!(
        servers::within(
            &spread(&[("b1", 100), ("b2", 100)]),
            &weights(&[("b1", 1), ("b2", 1), ("b3", 0)]),
            0.15
        ),
        Ok(())
    );
    assert!(servers::within(&spread(&[]), &equal, 0.15)
        .unwrap_err()
        .contains("no answers"));
}
