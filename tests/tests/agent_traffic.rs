//! The agent under real traffic, end to end: NAT backends health-checked on their service port
//! while clients use them, and a drain while one client reuses its source ports.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use lb_common::{maps::Mode, stats::Counter};
use xlb_tests::{
    agent::{encode, total, AgentTestbed, ServiceConf, SteadyLoad},
    lab::{backend_port, pin_to_cpu, Family, NAT_PORT, VIP_PORT},
    loadgen::{self, FixedServer, TcpLoad},
    require_privileged,
    servers::{IdentityServer, LongLived},
};

/// Held by each test here while it runs: the lab pins its traffic to CPU 0, and one test's
/// 20,000 connections must not starve another's health checks into false failures.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long NAT backends are watched under load (the issue's 60 s).
const STEADY: Duration = Duration::from_secs(60);
/// How often, within [`STEADY`], `curl`, the long-lived connections and the checks' views are
/// looked at.
const ROUND: Duration = Duration::from_secs(10);
/// The second VIP port, and where the backends serve it.
const VIP_PORT_2: u16 = 81;
const NAT_PORT_2: u16 = 8081;
/// Long-lived connections per service.
const LONG_LIVED: usize = 5;
/// Pause between the steady loads' batches of five connections.
const PAUSE: Duration = Duration::from_millis(50);

/// One NAT service of the steady test: its name, family, VIP port, backend port and check kind.
struct Nat {
    name: &'static str,
    family: Family,
    port: u16,
    backend_port: u16,
    kind: &'static str,
}

/// TCP and HTTP checks over IPv4 and IPv6, each on its own backend address and port: a NAT
/// backend address and port serves one service.
const NAT_SERVICES: [Nat; 4] = [
    Nat {
        name: "tcp4",
        family: Family::V4,
        port: VIP_PORT,
        backend_port: NAT_PORT,
        kind: "tcp",
    },
    Nat {
        name: "http4",
        family: Family::V4,
        port: VIP_PORT_2,
        backend_port: NAT_PORT_2,
        kind: "http",
    },
    Nat {
        name: "http6",
        family: Family::V6,
        port: VIP_PORT,
        backend_port: NAT_PORT,
        kind: "http",
    },
    Nat {
        name: "tcp6",
        family: Family::V6,
        port: VIP_PORT_2,
        backend_port: NAT_PORT_2,
        kind: "tcp",
    },
];

impl Nat {
    fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.family.vip(), self.port)
    }

    fn backend(&self, n: usize) -> SocketAddr {
        SocketAddr::new(self.family.backend(n), self.backend_port)
    }

    /// Its table: checked on the backends' own address and port, every 300 ms, rise 2, fall 3.
    fn toml(&self) -> String {
        let http = match self.kind {
            "http" => "path = \"/healthz\"\nstatus = \"200\"\n",
            _ => "",
        };
        let health = format!(
            "kind = \"{}\"\n{http}interval = \"300ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 3",
            self.kind
        );
        ServiceConf {
            port: self.port,
            backend_port: self.backend_port,
            health: Some(&health),
            ..ServiceConf::new(self.name, Mode::Nat, self.family)
        }
        .toml()
    }
}

/// What went wrong, by kind.
#[derive(Default)]
struct Problems(BTreeMap<&'static str, Vec<String>>);

impl Problems {
    fn add(&mut self, kind: &'static str, what: String) {
        self.0.entry(kind).or_default().push(what);
    }

    fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// Each kind with how often it went wrong, and its first few cases.
    fn report(&self) -> String {
        let mut text = String::new();
        for (kind, cases) in &self.0 {
            text += &format!("{kind}: {} problems; the first:\n", cases.len());
            for case in cases.iter().take(3) {
                text += &format!("  {case}\n");
            }
        }
        text
    }
}

/// `curl` from the director's own namespace to `addr`: the body, or why it failed.
fn curl_from_director(lab: &AgentTestbed, addr: SocketAddr) -> Result<String, String> {
    let url = format!("http://{addr}/");
    let out = lab
        .testbed
        .director_ns
        .exec(
            "curl",
            &[
                "-sS",
                "-g",
                "--connect-timeout",
                "1",
                "--max-time",
                "2",
                &url,
            ],
        )
        .map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// NAT backends checked on their service port (TCP and HTTP checks, IPv4 and IPv6) stay up for
/// [`STEADY`] under load with zero transitions (the API's check views and the agent's log);
/// long-lived connections through the VIPs all survive; `curl` from the director to every
/// backend gets that backend's answer; and the clients' connections to the VIPs are still
/// translated: all answered, by every backend, which counted them.
#[test]
fn nat_health_checks_on_the_service_port_hold_steady_under_load() {
    require_privileged!();
    let _alone = one_at_a_time();
    let config: String = NAT_SERVICES.iter().map(Nat::toml).collect();
    let mut lab = AgentTestbed::new("agnatsteady", Mode::Nat, Family::V4, 3, &config).unwrap();
    // The lab's identity servers serve 8080; these serve 8081.
    let second: Vec<IdentityServer> = lab
        .testbed
        .backends
        .iter()
        .enumerate()
        .map(|(n, ns)| {
            let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), NAT_PORT_2);
            IdentityServer::start(ns, any, &format!("b{}", n + 1))
        })
        .collect::<anyhow::Result<_>>()
        .unwrap();
    lab.start().unwrap();
    let started_ms = |lab: &AgentTestbed, s: &Nat, n: usize| {
        lab.backend_at(s.name, s.backend(n)).unwrap()["check"]["since_unix_ms"].as_u64()
    };
    let since: Vec<Vec<Option<u64>>> = NAT_SERVICES
        .iter()
        .map(|s| (0..3).map(|n| started_ms(&lab, s, n)).collect())
        .collect();

    // Look every round, note what is wrong, and judge at the end.
    let mut problems = Problems::default();
    let mut long_lived: Vec<Option<LongLived>> = NAT_SERVICES
        .iter()
        .map(
            |s| match LongLived::open(&lab.testbed.client, s.vip(), LONG_LIVED) {
                Ok(conns) => Some(conns),
                Err(e) => {
                    problems.add(
                        "long-lived connections",
                        format!("{}: opening long-lived connections: {e:#}", s.name),
                    );
                    None
                }
            },
        )
        .collect();
    let loads: Vec<SteadyLoad> = NAT_SERVICES
        .iter()
        .map(|s| SteadyLoad::paced(&lab.testbed.client, s.vip(), STEADY + ROUND, PAUSE))
        .collect();

    let mut curls = 0;
    let began = Instant::now();
    while began.elapsed() < STEADY {
        std::thread::sleep(ROUND.min(STEADY.saturating_sub(began.elapsed())));
        let at = began.elapsed().as_secs();
        for s in &NAT_SERVICES {
            for n in 0..3 {
                let view = lab.backend_at(s.name, s.backend(n)).unwrap();
                let check = &view["check"];
                if view["oper_state"] != "up" || check["transitions"] != 0 {
                    problems.add(
                        "health checks",
                        format!(
                            "at {at} s, {} b{} is {} after {} transitions: {check}",
                            s.name,
                            n + 1,
                            view["oper_state"],
                            check["transitions"]
                        ),
                    );
                }
            }
        }
        for s in &NAT_SERVICES {
            for n in 0..3 {
                curls += 1;
                match curl_from_director(&lab, s.backend(n)) {
                    Ok(body) if body == format!("b{}", n + 1) => {}
                    got => problems.add(
                        "curl from the director",
                        format!(
                            "at {at} s, curl from the director to {}: {got:?}",
                            s.backend(n)
                        ),
                    ),
                }
            }
        }
        for (s, conns) in NAT_SERVICES.iter().zip(&mut long_lived) {
            let Some(conns) = conns else { continue };
            let broken = conns.check().unwrap();
            if !broken.is_empty() {
                problems.add(
                    "long-lived connections",
                    format!(
                        "at {at} s, {} long-lived connections broke or moved: {broken:?}",
                        s.name
                    ),
                );
            }
        }
    }
    let batches: Vec<_> = loads.into_iter().map(|l| l.finish().unwrap()).collect();

    for ((s, batches), since) in NAT_SERVICES.iter().zip(&batches).zip(&since) {
        let spread = total(batches);
        if spread.failed > 0 || spread.by_backend.len() != 3 {
            problems.add(
                "client connections",
                format!(
                    "{}: the clients' connections to {} were not all answered by b1, b2 and b3: \
                 {spread:?}",
                    s.name,
                    s.vip()
                ),
            );
        }
        for (n, since) in since.iter().enumerate() {
            let name = format!("b{}", n + 1);
            let answered = spread.by_backend.get(&name).copied().unwrap_or(0);
            let view = lab.backend_at(s.name, s.backend(n)).unwrap();
            let new_flows = view["stats"]["new_flows"].as_u64().unwrap();
            if new_flows < answered {
                problems.add(
                    "new-flow counts",
                    format!(
                        "{}: {name} answered {answered} connections, xlb counted {new_flows} new \
                     flows to it",
                        s.name
                    ),
                );
            }
            if view["check"]["since_unix_ms"].as_u64() != *since {
                problems.add(
                    "health checks",
                    format!("{}: {name}'s check changed state: {view}", s.name),
                );
            }
        }
    }
    // Counted at the backends: each server took at least the connections its clients saw it
    // answer (more: the checks and curl too).
    for (port, servers) in [(NAT_PORT, &lab.testbed.servers), (NAT_PORT_2, &second)] {
        for (n, server) in servers.iter().enumerate() {
            let seen: u64 = NAT_SERVICES
                .iter()
                .zip(&batches)
                .filter(|(s, _)| s.backend_port == port)
                .map(|(_, b)| total(b).by_backend.get(server.name()).copied().unwrap_or(0))
                .sum();
            if server.tcp_connections() < seen {
                problems.add(
                    "counted at the backends",
                    format!(
                    "b{} on port {port} accepted {} connections, its clients saw {seen} answers",
                    n + 1,
                    server.tcp_connections()
                ),
                );
            }
        }
    }
    let stats = lab.agent().get("/api/v1/stats").unwrap();
    if stats["counters"]["nat_reply"].as_u64().unwrap_or(0) == 0 {
        problems.add("NAT replies", format!("no NAT reply translated: {stats}"));
    }
    let logs = lab.agent().logs();
    let flaps: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" is DOWN") || l.contains(" is UP"))
        .take(10)
        .collect();
    if !flaps.is_empty() {
        problems.add(
            "agent log",
            format!("the agent logged transitions: {flaps:#?}"),
        );
    }
    let answered: u64 = batches.iter().map(|b| total(b).answered()).sum();
    println!(
        "{} s of NAT under load: {answered} connections through the VIPs, {curls} curls, \
         {} long-lived connections, {} problems",
        began.elapsed().as_secs(),
        LONG_LIVED * NAT_SERVICES.len(),
        problems.count()
    );
    assert!(
        problems.0.is_empty(),
        "NAT with checks on the service port:\n{}",
        problems.report()
    );
    drop(second);
}

/// Short connections of the drain test, at least the issue's 20,000.
const SHORT_CONNECTIONS: u64 = 20_000;
const CONCURRENCY: usize = 50;
/// The client's ephemeral ports: 1,000, of which `connect` uses about half, so each port is
/// reused some 40 times in [`SHORT_CONNECTIONS`].
const CLIENT_PORTS: &str = "20000 20999";
/// Connections the backends accept before the drain.
const BEFORE_DRAIN: u64 = 8_000;
/// Time for connections whose handshake began before the drain to be accepted.
const SETTLE: Duration = Duration::from_millis(500);
/// Upper bound of the load's run.
const LOAD_LIMIT: Duration = Duration::from_secs(120);

/// Connections each backend accepted so far.
fn accepted(servers: &[FixedServer]) -> Vec<u64> {
    servers.iter().map(FixedServer::connections).collect()
}

/// One client address making [`SHORT_CONNECTIONS`] short connections at [`CONCURRENCY`] from a
/// range of 1,000 ports (reused many times: the servers close first and keep the TIME_WAIT),
/// across a drain of b1 through the API partway: after the drain b1 accepts no new connection,
/// counted at b1 itself; every connection, those established on b1 included, finishes; each
/// backend accepted exactly the connections the client saw it answer and xlb counted as new
/// flows to it.
fn drain_under_port_reuse(tag: &str, mode: Mode, family: Family) {
    let _alone = one_at_a_time();
    let config = ServiceConf::new("web", mode, family).toml();
    let mut lab = AgentTestbed::new(tag, mode, family, 3, &config).unwrap();
    // Servers that close first, so the client's ports are free again at once.
    lab.testbed.servers.clear();
    let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), backend_port(mode));
    let servers: Vec<FixedServer> = lab
        .testbed
        .backends
        .iter()
        .enumerate()
        .map(|(n, ns)| FixedServer::start(ns, any, &format!("b{}", n + 1), LOAD_LIMIT + ROUND))
        .collect::<anyhow::Result<_>>()
        .unwrap();
    lab.testbed
        .client
        .set_sysctls(&[
            ("net.ipv4.ip_local_port_range", CLIENT_PORTS),
            ("net.ipv4.tcp_tw_reuse", "1"),
        ])
        .unwrap();
    lab.start().unwrap();

    let (client, vip) = (lab.testbed.client.clone(), lab.vip());
    let load = std::thread::spawn(move || {
        loadgen::run(
            &client,
            vip,
            &TcpLoad {
                concurrency: CONCURRENCY,
                duration: LOAD_LIMIT,
                max_connections: SHORT_CONNECTIONS,
                connect_timeout: Duration::from_secs(2),
                request: b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n".to_vec(),
            },
        )
    });
    let deadline = Instant::now() + LOAD_LIMIT;
    while accepted(&servers).iter().sum::<u64>() < BEFORE_DRAIN
        && Instant::now() < deadline
        && !load.is_finished()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = accepted(&servers);
    let b1 = format!(
        "/api/v1/services/web/backends/{}",
        encode(&lab.backend_addr(0).to_string())
    );
    let drained = lab
        .agent()
        .request("PATCH", &b1, Some(r#"{"admin_state": "drain"}"#), None);
    std::thread::sleep(SETTLE);
    let at_drain = accepted(&servers);
    let result = load.join().expect("the load thread panicked").unwrap();
    std::thread::sleep(SETTLE);
    let after = accepted(&servers);
    let new_flows: Vec<u64> = (0..3)
        .map(|n| {
            lab.backend("web", n).unwrap()["stats"]["new_flows"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let answered: Vec<u64> = (1..=3)
        .map(|n| {
            result
                .by_backend
                .get(&format!("b{n}"))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    println!(
        "{mode:?}: {} connections in {:?} ({:.0}/s), {} failed; accepted before the drain \
         {before:?}, at it {at_drain:?}, in all {after:?}; the client saw {answered:?}; xlb \
         counted {new_flows:?} new flows",
        result.completed, result.elapsed, result.per_second, result.failed
    );

    eprintln!(
        "DEBUG counters {}",
        lab.agent().get("/api/v1/stats").unwrap()["counters"]
    );
    let (status, body) = drained.unwrap();
    assert_eq!(status, 200, "draining b1: {body}");
    assert!(
        before[0] > 0 && before.iter().sum::<u64>() >= BEFORE_DRAIN,
        "the drain came too early: {before:?}"
    );
    let after_drain: u64 = after.iter().sum::<u64>() - at_drain.iter().sum::<u64>();
    assert!(
        after_drain >= SHORT_CONNECTIONS / 4,
        "only {after_drain} connections after the drain"
    );
    assert_eq!(
        after[0] - at_drain[0],
        0,
        "the drained b1 accepted {} of the {after_drain} new connections made after the drain \
         (b1, b2, b3 accepted {at_drain:?} by the drain, {after:?} in all)",
        after[0] - at_drain[0]
    );
    assert_eq!(
        (result.completed, result.failed),
        (SHORT_CONNECTIONS, 0),
        "every connection finishes, those established on b1 too: {:?}",
        result.errors
    );
    assert_eq!(
        answered, after,
        "each backend answered every connection it accepted"
    );
    assert_eq!(
        new_flows, after,
        "xlb's new flows per backend are the connections each accepted"
    );
}

#[test]
fn drain_under_port_reuse_dr() {
    require_privileged!();
    drain_under_port_reuse("agdraindr4", Mode::Dr, Family::V4);
}

#[test]
fn drain_under_port_reuse_dr_ipv6() {
    require_privileged!();
    drain_under_port_reuse("agdraindr6", Mode::Dr, Family::V6);
}

#[test]
fn drain_under_port_reuse_ipip() {
    require_privileged!();
    drain_under_port_reuse("agdrainipip4", Mode::Ipip, Family::V4);
}

#[test]
fn drain_under_port_reuse_ipip_ipv6() {
    require_privileged!();
    drain_under_port_reuse("agdrainipip6", Mode::Ipip, Family::V6);
}

#[test]
fn drain_under_port_reuse_nat() {
    require_privileged!();
    drain_under_port_reuse("agdrainnat4", Mode::Nat, Family::V4);
}

#[test]
fn drain_under_port_reuse_nat_ipv6() {
    require_privileged!();
    drain_under_port_reuse("agdrainnat6", Mode::Nat, Family::V6);
}

/// Client ports of the port-reuse test: few, so that each is reused often.
const REUSED_PORTS: &str = "20000 20099";
/// Connections in each round of the port-reuse test: every port of [`REUSED_PORTS`] thrice.
const REUSE_ROUND: usize = 300;
/// Longer than the agent keeps a closed flow in the shared table (120 s), with room for a walk.
const PRUNED_AFTER: Duration = Duration::from_secs(130);

/// Connects from CPU `connect_on` (the handshake meets the director there), then sends the
/// request from CPU `send_on`, `count` times; the answering backends' names, and the failures.
fn connections_across_cpus(
    lab: &AgentTestbed,
    count: usize,
    connect_on: usize,
    send_on: usize,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let vip = lab.vip();
    let exchange = move || -> Result<String, String> {
        pin_to_cpu(connect_on).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
            .map_err(|e| format!("connecting: {e}"))?;
        pin_to_cpu(send_on).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            .map_err(|e| format!("sending: {e}"))?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .map_err(|e| format!("reading: {e} after {} bytes", reply.len()))?;
        loadgen::backend_name(&reply).map(str::to_string)
    };
    lab.testbed
        .client
        .run(move || {
            let mut answered = BTreeMap::new();
            let mut failures = Vec::new();
            for _ in 0..count {
                match exchange() {
                    Ok(name) => *answered.entry(name).or_default() += 1,
                    Err(e) => failures.push(e),
                }
            }
            (answered, failures)
        })
        .unwrap()
}

/// Short connections from one client address reusing its ports, across a ring change (a weight
/// set through the API) and more than two minutes without traffic (the agent prunes the closed
/// flows from the shared table, while CPU 1 keeps its copies): when each connection's handshake
/// meets the director on CPU 0 and its request on CPU 1, no connection breaks, so all of a
/// connection's packets reach one backend, and the backends accepted what the client saw and
/// xlb counted.
#[test]
fn port_reuse_across_a_ring_change_keeps_each_connection_on_one_backend() {
    require_privileged!();
    let _alone = one_at_a_time();
    let config = ServiceConf::new("web", Mode::Dr, Family::V4).toml();
    let mut lab = AgentTestbed::new("agreuse", Mode::Dr, Family::V4, 3, &config).unwrap();
    lab.testbed.servers.clear();
    // The servers' threads on CPU 1, so that their answers, and the client's ACKs of them, leave
    // CPU 0 untouched until the handshakes of the second round.
    let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), backend_port(Mode::Dr));
    let backends = lab.testbed.backends.clone();
    let servers: Vec<FixedServer> = std::thread::spawn(move || {
        pin_to_cpu(1)?;
        backends
            .iter()
            .enumerate()
            .map(|(n, ns)| {
                let limit = PRUNED_AFTER + Duration::from_secs(60);
                FixedServer::start(ns, any, &format!("b{}", n + 1), limit)
            })
            .collect::<anyhow::Result<_>>()
    })
    .join()
    .expect("starting the servers")
    .unwrap();
    lab.testbed
        .client
        .set_sysctls(&[
            ("net.ipv4.ip_local_port_range", REUSED_PORTS),
            ("net.ipv4.tcp_tw_reuse", "1"),
        ])
        .unwrap();
    lab.start().unwrap();

    // Every port's flow on CPU 1 only, by the first ring.
    let (first, failures) = connections_across_cpus(&lab, REUSE_ROUND, 1, 1);
    assert!(failures.is_empty(), "before the change: {failures:?}");
    let b1 = format!(
        "/api/v1/services/web/backends/{}",
        encode(&lab.backend_addr(0).to_string())
    );
    let (status, body) = lab
        .agent()
        .request("PATCH", &b1, Some(r#"{"weight": 5}"#), None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(PRUNED_AFTER);
    // The agent's walks pruned every closed flow from the shared table (this CPU's copies stay).
    let walked = lab.agent().get("/api/v1/stats").unwrap()["flow_count"].clone();
    assert_eq!(walked["entries"], 0, "{walked}");

    // The same ports again: handshakes on CPU 0, requests on CPU 1.
    let (second, failures) = connections_across_cpus(&lab, REUSE_ROUND, 0, 1);
    let accepted: u64 = accepted(&servers).iter().sum();
    let new_flows: u64 = (0..3)
        .map(|n| {
            lab.backend("web", n).unwrap()["stats"]["new_flows"]
                .as_u64()
                .unwrap()
        })
        .sum();
    println!(
        "before the change {first:?}; after it and {PRUNED_AFTER:?} idle {second:?}, {} failed; \
         accepted {accepted}, xlb counted {new_flows} new flows",
        failures.len()
    );
    assert!(failures.is_empty(), "after the change: {failures:?}");
    assert_eq!(accepted, 2 * REUSE_ROUND as u64, "accepted by the backends");
    assert_eq!(
        new_flows, accepted,
        "xlb's new flows are the accepted connections"
    );
}

/// Connections from the client to the VIP, each `timeout` at most to
/// connect: how many were answered by a backend.
fn answered_connections(lab: &AgentTestbed, count: usize, timeout: Duration) -> usize {
    let vip = lab.vip();
    lab.testbed
        .client
        .run(move || {
            (0..count)
                .filter(|_| {
                    let Ok(mut stream) = TcpStream::connect_timeout(&vip, timeout) else {
                        return false;
                    };
                    let mut reply = Vec::new();
                    stream.set_read_timeout(Some(timeout)).is_ok()
                        && stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                        && stream.read_to_end(&mut reply).is_ok()
                        && loadgen::backend_name(&reply).is_ok()
                })
                .count()
        })
        .unwrap()
}

/// IP-in-IP packets the backends' decapsulators passed untouched, their
/// source not allowed.
fn foreign_tunnels(lab: &AgentTestbed) -> u64 {
    lab.testbed
        .decaps
        .iter()
        .map(|d| d.counters().unwrap().get(Counter::DecapForeign))
        .sum()
}

/// A director whose `tunnel_source_v4`/`_v6` is a prefix (`/30`, `/126`)
/// sends each flow's tunnel from an address of it: backends whose
/// decapsulators accept only the one address take some connections and
/// pass the other flows' tunnels untouched (`decap_foreign`), so the
/// sources differ per flow; once they accept the prefix (what `xlb decap
/// --from ADDR/LEN` loads), every connection goes through. The agent's
/// health checks keep the one address, and the backends stay up.
fn tunnel_source_prefix(tag: &str, family: Family) {
    let _alone = one_at_a_time();
    let config = ServiceConf::new("web", Mode::Ipip, family).toml();
    let mut lab = AgentTestbed::new(tag, Mode::Ipip, family, 3, &config).unwrap();
    let path = lab.agent().config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"198.18.1.2\"", "\"198.18.1.2/30\"")
        .replace("\"fd00:1::2\"", "\"fd00:1::2/126\"");
    std::fs::write(&path, text).unwrap();
    let prefix: Vec<IpAddr> = match family {
        Family::V4 => (0..4).map(|n| IpAddr::from([198, 18, 1, n])).collect(),
        Family::V6 => (0..4)
            .map(|n| IpAddr::from([0xfd00, 1, 0, 0, 0, 0, 0, n]))
            .collect(),
    };
    let configured = prefix[2];
    for decap in &mut lab.testbed.decaps {
        decap.replace_decap_sources(&[configured]).unwrap();
    }
    lab.start().unwrap();
    for n in 0..3 {
        lab.wait_backend("web", n, Duration::from_secs(10), "up", |b| {
            b["oper_state"] == "up" && b["serving"] == true
        })
        .unwrap();
    }

    let answered = answered_connections(&lab, 24, Duration::from_millis(300));
    let foreign = foreign_tunnels(&lab);
    println!("{family:?}, one source accepted: {answered} of 24 answered, {foreign} foreign");
    assert!(
        answered > 0 && answered < 24 && foreign > 0,
        "with one source accepted: {answered} of 24 answered, {foreign} tunnels passed as foreign"
    );

    for decap in &mut lab.testbed.decaps {
        decap.replace_decap_sources(&prefix).unwrap();
    }
    let answered = answered_connections(&lab, 100, Duration::from_secs(2));
    assert_eq!(answered, 100, "with the prefix accepted");
    assert_eq!(foreign_tunnels(&lab), foreign, "no foreign tunnel");
}

#[test]
fn tunnel_source_prefix_spreads_flows_ipv4() {
    require_privileged!();
    tunnel_source_prefix("agspread4", Family::V4);
}

#[test]
fn tunnel_source_prefix_spreads_flows_ipv6() {
    require_privileged!();
    tunnel_source_prefix("agspread6", Family::V6);
}
