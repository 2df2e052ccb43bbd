//! The agent end to end: `xlb run` in the director's namespace of the lab, real backends, a
//! client making connections, and the HTTP API.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::{encode, total, AgentTestbed, ServiceConf, SteadyLoad, TCP_CHECK},
    lab::{backend_port, Family},
    require_privileged,
    servers::{tcp_spread, LongLived},
};

/// The health check of `services`: every 200 ms (rise 2, fall 3).
const HEALTH: &str = TCP_CHECK;

/// b1..b3 behind a TCP service checked by [`HEALTH`], and the same backends over UDP without
/// checks, in direct routing over IPv4.
fn services(weights: [u16; 3]) -> String {
    services_in(Mode::Dr, Family::V4, weights)
}

/// [`services`] in `mode` over `family`.
fn services_in(mode: Mode, family: Family, weights: [u16; 3]) -> String {
    let web = ServiceConf {
        weights: &weights,
        health: Some(HEALTH),
        ..ServiceConf::new("web", mode, family)
    };
    let udp = ServiceConf {
        protocol: "udp",
        ..ServiceConf::new("web-udp", mode, family)
    };
    web.toml() + &udp.toml()
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn serves_the_configured_services() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agserve", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 300).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}\n{}", lab.agent().logs());
    assert_eq!(spread.by_backend.len(), 3, "{spread:?}");
    let services = lab.agent().get("/api/v1/services").unwrap();
    assert_eq!(names(&services), ["web", "web-udp"]);
    let b1 = lab.backend("web", 0).unwrap();
    assert_eq!(b1["oper_state"], "up", "{b1}");
    assert_eq!(b1["serving"], true, "{b1}");
    assert!(b1["stats"]["new_flows"].as_u64().unwrap() > 50, "{b1}");
    let logs = lab.agent_mut().stop().unwrap();
    assert!(logs.contains("detached from eth0"), "{logs}");
    assert!(!lab.agent().pins.exists(), "SIGTERM leaves no pins");
    assert_eq!(lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(), None);
}

/// The running configuration as the API dumps it.
fn dump(lab: &AgentTestbed) -> String {
    let (status, body) = lab
        .agent()
        .request("GET", "/api/v1/config", None, None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// A POST of a service declaring a body of `length` bytes with `Expect: 100-continue`, sending
/// none: the agent's whole answer.
fn expecting_continue(lab: &AgentTestbed, length: usize) -> String {
    use std::io::{Read, Write};

    let api: std::net::SocketAddr = lab.agent().api.parse().unwrap();
    lab.agent()
        .director_ns
        .run(move || {
            let mut stream = std::net::TcpStream::connect(api).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            write!(
                stream,
                "POST /api/v1/services HTTP/1.1\r\nHost: {api}\r\n\
                 Content-Type: application/json\r\nContent-Length: {length}\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            // The agent closes the connection after refusing a body it did not read.
            let _ = stream.read_to_string(&mut answer);
            answer
        })
        .unwrap()
}

/// Sends a request that must be refused with `status`, naming `field` if given, and change
/// nothing.
fn refused(
    lab: &AgentTestbed,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
    field: Option<&str>,
) {
    let before = dump(lab);
    let (got, text) = lab.agent().request(method, path, body, None).unwrap();
    assert_eq!(got, status, "{method} {path} {body:?}: {text}");
    let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(!error["error"].as_str().unwrap_or("").is_empty(), "{text}");
    if let Some(field) = field {
        assert_eq!(error["field"], field, "{method} {path}: {text}");
    }
    assert_eq!(
        dump(lab),
        before,
        "{method} {path} changed the configuration"
    );
}

#[test]
fn api_reads_changes_and_refusals() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agapi", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 60).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");

    // Reads.
    assert_eq!(
        lab.agent().request("GET", "/healthz", None, None).unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        lab.agent().request("GET", "/ready", None, None).unwrap().0,
        200
    );
    let (status, page) = lab.agent().request("GET", "/", None, None).unwrap();
    assert_eq!(status, 200);
    assert!(
        page.starts_with("<!doctype html>") && page.contains("/api/v1/services"),
        "{page}"
    );
    let external = page.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !external.contains("http://") && !external.contains("https://"),
        "the status page must work offline: {page}"
    );
    let web = lab.agent().get("/api/v1/services/web").unwrap();
    assert_eq!(
        (web["vip"].as_str(), web["mode"].as_str()),
        (Some("198.18.0.100"), Some("dr"))
    );
    assert_eq!(
        lab.agent()
            .get("/api/v1/services/web/backends")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let stats = lab.agent().get("/api/v1/stats").unwrap();
    assert!(stats["counters"]["tx"].as_u64().unwrap() >= 60, "{stats}");
    let web_stats = &stats["services"][0];
    assert_eq!(web_stats["name"], "web");
    assert!(
        web_stats["stats"]["new_flows"].as_u64().unwrap() >= 60,
        "{stats}"
    );
    let flows = lab
        .agent()
        .get("/api/v1/flows?service=web&limit=10")
        .unwrap();
    let flows = flows.as_array().unwrap();
    assert_eq!(flows.len(), 10, "{flows:?}");
    for flow in flows {
        assert_eq!(flow["service"], "web");
        assert_eq!(flow["vip"], "198.18.0.100:80");
        assert!(
            flow["backend"].as_str().unwrap().starts_with("198.18.1.1"),
            "{flow}"
        );
    }
    let (status, metrics) = lab.agent().request("GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("xlb_backend_up{service=\"web\",backend=\"198.18.1.10:80\"} 1"),
        "{metrics}"
    );
    let config = dump(&lab);
    let saved = lab.agent().dir.join("saved.toml");
    std::fs::write(&saved, &config).unwrap();
    let check = std::process::Command::new(xlb_tests::xlb_bin().unwrap())
        .args(["check", "--config"])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the dumped config does not validate:\n{config}\n{check:?}"
    );

    // Refusals change nothing.
    let b1 = format!("/api/v1/services/web/backends/{}", encode("198.18.1.10:80"));
    refused(&lab, "POST", "/api/v1/services", Some("{"), 400, None);
    refused(&lab, "GET", "/api/v1/services/nope", None, 404, None);
    refused(&lab, "DELETE", "/api/v1/services/nope", None, 404, None);
    refused(
        &lab,
        "PATCH",
        &b1,
        Some(r#"{"weight": 70000}"#),
        400,
        Some("service[web].backend[0].weight"),
    );
    refused(&lab, "PATCH", &b1, Some(r#"{"colour": "red"}"#), 400, None);
    refused(
        &lab,
        "PATCH",
        &b1,
        Some(r#"{"admin_state": "asleep"}"#),
        400,
        Some("admin_state"),
    );
    refused(
        &lab,
        "PATCH",
        &b1,
        Some(r#"{"weight": "three"}"#),
        400,
        Some("weight"),
    );
    // Errors the handlers never see are JSON too: no such path or method, a body too large.
    refused(&lab, "GET", "/api/v1/nowhere", None, 404, None);
    refused(&lab, "PUT", "/api/v1/services", Some("{}"), 405, None);
    // A body declared too large is refused before the client sends it (curl waits for
    // `100 Continue` past 1 MiB); a client that sends it anyway may see the connection reset.
    let answer = expecting_continue(&lab, 3 << 20);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"error\":\"the body has 3145728 bytes"),
        "{answer}"
    );
    refused(
        &lab,
        "GET",
        "/api/v1/services/web/backends/nonsense",
        None,
        400,
        Some("addr"),
    );
    refused(
        &lab,
        "POST",
        "/api/v1/services/web/backends",
        Some(r#"{"address": "198.18.1.300"}"#),
        400,
        Some("service[web].backend[3].address"),
    );
    refused(
        &lab,
        "POST",
        "/api/v1/services",
        Some(r#"{"name": "web", "vip": "198.18.0.101", "port": 80}"#),
        409,
        Some("name"),
    );

    let exec = r#"{"name": "x", "vip": "198.18.0.101", "port": 80,
        "health": {"kind": "exec", "command": ["/bin/sh", "-c", "true"]}}"#;
    refused(
        &lab,
        "POST",
        "/api/v1/services",
        Some(exec),
        403,
        Some("service[x].health.kind"),
    );
    let before = dump(&lab);
    let director_ns = lab.testbed.director_ns.clone();
    let (status, body) = director_ns
        .run(|| {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = agent
                .patch(&format!("http://{}{b1}", xlb_tests::agent::API))
                .header("Content-Type", "text/plain")
                .send(r#"{"weight": 5}"#)
                .unwrap();
            (
                response.status().as_u16(),
                response.body_mut().read_to_string().unwrap(),
            )
        })
        .unwrap();
    assert_eq!(status, 415, "a change sent as text/plain: {body}");
    assert_eq!(dump(&lab), before);

    // Drain b1: established connections stay, new ones avoid it.
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 30).unwrap();
    assert!(
        long_lived.backends().contains_key("b1"),
        "{:?}",
        long_lived.backends()
    );
    let (status, body) = lab
        .agent()
        .request("PATCH", &b1, Some(r#"{"admin_state": "drain"}"#), None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["admin_state"], "drain");
    let after = tcp_spread(&lab.testbed.client, lab.vip(), 300).unwrap();
    assert_eq!(after.failed, 0, "{after:?}");
    assert!(
        !after.by_backend.contains_key("b1"),
        "a drained backend got new connections: {after:?}"
    );
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "established connections moved or broke"
    );

    // Add a service, see it, delete it.
    let (status, body) = lab
        .agent().request(
            "POST",
            "/api/v1/services",
            Some(r#"{"name": "alt", "vip": "198.18.0.100", "port": 8080, "backends": [{"address": "198.18.1.12"}]}"#),
            None,
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        names(&lab.agent().get("/api/v1/services").unwrap()),
        ["web", "web-udp", "alt"]
    );
    assert_eq!(
        lab.agent()
            .request("DELETE", "/api/v1/services/alt", None, None)
            .unwrap()
            .0,
        204
    );
    assert_eq!(
        names(&lab.agent().get("/api/v1/services").unwrap()),
        ["web", "web-udp"]
    );
}

/// How long healthy backends are watched before one is killed: ten checks.
const HEALTHY_FOR: Duration = Duration::from_secs(2);

/// Health checks in `mode` over `family`: healthy backends stay up without a single transition
/// (in NAT too, where the checks' replies come from a NAT backend's address and port); b1's
/// server dies and b1 leaves the ring within fall x interval; it restarts and comes back within
/// rise x interval; no new connection fails meanwhile, and only b1 changed state, twice.
fn dead_backend_out_and_back(tag: &str, mode: Mode, family: Family) {
    let mut lab =
        AgentTestbed::new(tag, mode, family, 3, &services_in(mode, family, [1, 1, 1])).unwrap();
    lab.start().unwrap();
    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    std::thread::sleep(HEALTHY_FOR);
    for n in 0..3 {
        let view = lab.backend("web", n).unwrap();
        assert!(
            view["oper_state"] == "up"
                && view["check"]["transitions"] == 0
                && view["check"]["checks"].as_u64().unwrap() >= 5,
            "b{} is healthy and must stay up, checked, with no transition: {view}\n{}",
            n + 1,
            lab.agent().logs()
        );
    }

    // b1's server dies: its port refuses connections.
    let b1 = lab.testbed.servers.remove(0);
    drop(b1);
    // fall x interval + timeout, plus the probe in flight and scheduling.
    let bound = Duration::from_millis(3 * 200 + 100);
    let took = lab
        .wait_backend("web", 0, bound + Duration::from_millis(500), "down", |b| {
            b["oper_state"] == "down" && b["serving"] == false
        })
        .unwrap();
    println!("b1 left the ring {took:?} after its server died (bound {bound:?} + margin)");
    let down_at = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(500));

    // Back after rise x interval.
    let ns = lab.testbed.backends[0].clone();
    let addr =
        std::net::SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), backend_port(mode));
    lab.testbed.servers.insert(
        0,
        xlb_tests::servers::IdentityServer::start(&ns, addr, "b1").unwrap(),
    );
    let up_at = std::time::Instant::now();
    let took = lab
        .wait_backend(
            "web",
            0,
            Duration::from_millis(2 * 200 + 100 + 500),
            "up",
            |b| b["oper_state"] == "up" && b["serving"] == true,
        )
        .unwrap();
    println!("b1 came back {took:?} after its server restarted");
    std::thread::sleep(Duration::from_millis(500));
    let batches = load.finish().unwrap();

    let while_down: Vec<_> = batches
        .iter()
        .filter(|b| b.started > down_at && b.ended < up_at)
        .collect();
    ensure_nonempty(&while_down);
    for batch in &while_down {
        assert_eq!(
            batch.spread.failed, 0,
            "a connection failed after b1 left: {batch:?}"
        );
        assert!(
            !batch.spread.by_backend.contains_key("b1"),
            "b1 answered while down: {batch:?}"
        );
    }
    let after: Vec<_> = batches
        .iter()
        .filter(|b| b.started > up_at + took)
        .collect();
    let back = total(after);
    assert_eq!(back.failed, 0, "{back:?}");
    assert!(
        back.by_backend.contains_key("b1"),
        "b1 takes connections again: {back:?}"
    );
    let transitions: Vec<u64> = (0..3)
        .map(|n| {
            lab.backend("web", n).unwrap()["check"]["transitions"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        transitions,
        [2, 0, 0],
        "b1 goes down and up once, the others never\n{}",
        lab.agent().logs()
    );
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back_dr_ipv4() {
    require_privileged!();
    dead_backend_out_and_back("aghdr4", Mode::Dr, Family::V4);
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back_dr_ipv6() {
    require_privileged!();
    dead_backend_out_and_back("aghdr6", Mode::Dr, Family::V6);
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back_ipip_ipv4() {
    require_privileged!();
    dead_backend_out_and_back("aghipip4", Mode::Ipip, Family::V4);
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back_ipip_ipv6() {
    require_privileged!();
    dead_backend_out_and_back("aghipip6", Mode::Ipip, Family::V6);
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back_nat_ipv4() {
    require_privileged!();
    dead_backend_out_and_back("aghnat4", Mode::Nat, Family::V4);
}

#[test]
fn health_checks_take_a_dead_backend_out_and_bring_it_back_nat_ipv6() {
    require_privileged!();
    dead_backend_out_and_back("aghnat6", Mode::Nat, Family::V6);
}

/// Each `web` backend's share of the ring, as the API shows it.
fn ring_shares(lab: &AgentTestbed) -> Vec<f64> {
    let backends = lab.agent().get("/api/v1/services/web/backends").unwrap();
    backends
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ring_share"].as_f64().unwrap())
        .collect()
}

fn ensure_nonempty<T>(items: &[T]) {
    assert!(!items.is_empty(), "the load made no batch in the window");
}

#[test]
fn a_killed_agent_leaves_traffic_flowing_and_its_successor_adopts_every_flow() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agkill", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 30).unwrap();
    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let program = lab.testbed.director_ns.xdp_prog_id("eth0").unwrap();
    assert!(program.is_some());
    let shares_before = ring_shares(&lab);

    lab.agent_mut().kill().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(),
        program,
        "still attached"
    );
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "connections broke while the agent was down"
    );

    lab.start().unwrap();
    assert!(
        lab.agent().logs().contains("adopted the data plane"),
        "{}",
        lab.agent().logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    let batches = load.finish().unwrap();
    let sum = total(&batches);
    println!(
        "{} new connections across the kill and restart, {} failed",
        sum.answered() + sum.failed,
        sum.failed
    );
    assert_eq!(
        sum.failed, 0,
        "connections failed across the kill and restart: {sum:?}"
    );
    assert_eq!(sum.by_backend.len(), 3, "{sum:?}");
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "the successor moved established connections"
    );
    assert_eq!(
        lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(),
        program,
        "the same program"
    );
    assert_eq!(ring_shares(&lab), shares_before, "the ring changed");
    lab.agent_mut().stop().unwrap();
    assert_eq!(
        lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(),
        None,
        "detached on SIGTERM"
    );
    assert!(!lab.agent().pins.exists());
}

#[test]
fn keep_dataplane_leaves_it_for_the_next_agent() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agkeep", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start_with(&["--keep-dataplane"]).unwrap();
    let program = lab.testbed.director_ns.xdp_prog_id("eth0").unwrap();
    let logs = lab.agent_mut().stop().unwrap();
    assert!(logs.contains("leaving the data plane running"), "{logs}");
    assert_eq!(
        lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(),
        program
    );
    assert!(lab.agent().pins.exists());
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 60).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    lab.start().unwrap();
    assert!(
        lab.agent().logs().contains("adopted the data plane"),
        "{}",
        lab.agent().logs()
    );
}

#[test]
fn reload_applies_only_the_difference() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agreload", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 30).unwrap();
    let udp_before = lab.agent().get("/api/v1/services/web-udp").unwrap();
    let web_flows = lab.agent().get("/api/v1/services/web").unwrap()["stats"]["new_flows"]
        .as_u64()
        .unwrap();

    // web: b1 weight 1 -> 4; web-udp untouched.
    lab.write_config(&services([4, 1, 1])).unwrap();
    lab.agent()
        .signal(nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    lab.wait_backend("web", 0, Duration::from_secs(5), "reweighted", |b| {
        b["weight"] == 4
    })
    .unwrap();
    assert!(
        lab.agent()
            .logs()
            .contains("0 services added, 0 removed, 1 changed, 1 unchanged"),
        "{}",
        lab.agent().logs()
    );
    let shares = ring_shares(&lab);
    assert!((shares[0] - 4.0 / 6.0).abs() < 0.01, "{shares:?}");
    let udp_after = lab.agent().get("/api/v1/services/web-udp").unwrap();
    assert_eq!(
        udp_after["backends"], udp_before["backends"],
        "the untouched service changed"
    );
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "a reweight moved established connections"
    );
    let web_after = lab.agent().get("/api/v1/services/web").unwrap()["stats"]["new_flows"]
        .as_u64()
        .unwrap();
    assert!(web_after >= web_flows, "counters were reset");

    // A broken file changes nothing.
    lab.write_config("[[service]]\nname = \"web\"\nvip = \"nonsense\"\nport = 80\n")
        .unwrap();
    let (status, body) = lab
        .agent()
        .request("POST", "/api/v1/reload", None, None)
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("service[web].vip") || body.contains("vip"),
        "{body}"
    );
    assert_eq!(lab.backend("web", 0).unwrap()["weight"], 4);
}

#[test]
fn off_loopback_the_api_needs_a_token() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agtoken", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    // Without a token file the agent refuses to start.
    let config = std::fs::read_to_string(lab.agent().config_path()).unwrap();
    let open = config.replace(
        "api_listen = \"127.0.0.1:9180\"",
        "api_listen = \"198.18.0.2:9180\"",
    );
    std::fs::write(lab.agent().config_path(), &open).unwrap();
    let refused = lab.start().unwrap_err().to_string();
    assert!(refused.contains("agent.api_token_file"), "{refused}");

    let token = "0123456789abcdef-token";
    lab.open_api("198.18.0.2:9180", token).unwrap();
    lab.start().unwrap();
    let client = lab.testbed.client.clone();
    let call = |method: &str, body: Option<&str>, token: Option<&str>| {
        let path = format!("/api/v1/services/web/backends/{}", encode("198.18.1.11:80"));
        xlb_tests::agent::request_in(&client, "198.18.0.2:9180", method, &path, body, token)
            .unwrap()
    };
    assert_eq!(call("GET", None, None).0, 200, "reads are open");
    let drain = Some(r#"{"admin_state": "drain"}"#);
    let (status, body) = call("PATCH", drain, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(call("PATCH", drain, Some("wrong-token-0123456")).0, 401);
    assert_eq!(
        lab.backend("web", 1).unwrap()["admin_state"],
        "ready",
        "nothing changed"
    );
    let (status, body) = call("PATCH", drain, Some(token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(lab.backend("web", 1).unwrap()["admin_state"], "drain");
}

#[test]
fn check_names_the_field_and_touches_nothing() {
    let dir = std::env::temp_dir().join(format!("xlb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[agent]\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\n\
         port = 80\n[[service.backend]]\naddress = \"198.18.1.10\"\nweight = 70000\n",
    )
    .unwrap();
    let out = std::process::Command::new(xlb_tests::xlb_bin().unwrap())
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .context("running xlb check")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr.contains("service[web].backend[0].weight"),
        "{stderr}"
    );
    assert!(stderr.contains("70000"), "{stderr}");
}

/// Runs `xlb ARGS` in the director's namespace (the API's default address); its stdout, or the
/// failure with stderr.
fn cli(lab: &AgentTestbed, args: &[&str]) -> Result<String, String> {
    let xlb = xlb_tests::xlb_bin().unwrap();
    let out = lab
        .testbed
        .director_ns
        .exec(xlb.to_str().unwrap(), args)
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.success() {
        true => Ok(stdout),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
fn the_cli_drives_the_agent() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agcli", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();

    let list = cli(&lab, &["service", "list"]).unwrap();
    let header = list.lines().next().unwrap();
    for column in ["NAME", "VIP", "PORT", "PROTO", "MODE", "BACKENDS"] {
        assert!(header.contains(column), "{list}");
    }
    let web = list
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        web.contains("198.18.0.100") && web.contains("3/3"),
        "{list}"
    );

    let set = cli(
        &lab,
        &[
            "backend",
            "set",
            "web",
            "198.18.1.11:80",
            "--drain",
            "--weight",
            "3",
        ],
    );
    assert!(set.is_ok(), "{set:?}");
    let b2 = lab.backend("web", 1).unwrap();
    assert_eq!(
        (b2["admin_state"].as_str(), b2["weight"].as_u64()),
        (Some("drain"), Some(3))
    );
    let backends = cli(&lab, &["backend", "list", "web"]).unwrap();
    let row = backends
        .lines()
        .find(|l| l.starts_with("198.18.1.11"))
        .unwrap();
    assert!(row.contains("drain"), "{backends}");

    let json: Value =
        serde_json::from_str(&cli(&lab, &["service", "list", "--json"]).unwrap()).unwrap();
    assert_eq!(names(&json), ["web", "web-udp"]);
    let dumped = cli(&lab, &["config", "dump"]).unwrap();
    assert!(dumped.contains("state = \"drain\""), "{dumped}");

    // Bad input is refused before anything is sent, or by the agent, with the reason.
    let bad = cli(&lab, &["backend", "set", "web", "198.18.1.11", "--ready"]).unwrap_err();
    assert!(bad.contains("198.18.1.11"), "{bad}");
    let unknown = cli(&lab, &["backend", "del", "nope", "198.18.1.11:80"]).unwrap_err();
    assert!(unknown.contains("no service named \"nope\""), "{unknown}");
    lab.agent_mut().stop().unwrap();
    let down = cli(&lab, &["status"]).unwrap_err();
    assert!(down.contains("cannot reach the xlb agent"), "{down}");
}

/// b1 and b2 checked every 100 ms, b3 their fallback: it takes every new connection once both
/// are down, in `mode`.
fn the_fallback_takes_over_when_no_backend_is_up(tag: &str, mode: Mode) {
    let config = ServiceConf {
        weights: &[1, 1],
        health: Some("kind = \"tcp\"\ninterval = \"100ms\"\nrise = 1\nfall = 1"),
        fallback: Some(2),
        ..ServiceConf::new("web", mode, Family::V4)
    }
    .toml();
    let mut lab = AgentTestbed::new(tag, mode, Family::V4, 3, &config).unwrap();
    lab.start().unwrap();
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 60).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    assert!(
        !spread.by_backend.contains_key("b3"),
        "the fallback is idle: {spread:?}"
    );
    assert_eq!(
        lab.agent().get("/api/v1/services/web").unwrap()["fallback_active"],
        false
    );

    // b1 and b2 die: b3, the fallback, takes every new connection.
    lab.testbed.servers.drain(..2);
    for n in 0..2 {
        lab.wait_backend("web", n, Duration::from_secs(2), "down", |b| {
            b["oper_state"] == "down"
        })
        .unwrap();
    }
    let web = lab.agent().get("/api/v1/services/web").unwrap();
    assert_eq!(web["fallback_active"], true, "{web}");
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 60).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    assert_eq!(
        spread.by_backend.keys().collect::<Vec<_>>(),
        ["b3"],
        "{spread:?}"
    );
}

#[test]
fn the_fallback_takes_over_when_no_backend_is_up_dr() {
    require_privileged!();
    the_fallback_takes_over_when_no_backend_is_up("agsorrydr", Mode::Dr);
}

#[test]
fn the_fallback_takes_over_when_no_backend_is_up_ipip() {
    require_privileged!();
    the_fallback_takes_over_when_no_backend_is_up("agsorryipip", Mode::Ipip);
}

#[test]
fn the_fallback_takes_over_when_no_backend_is_up_nat() {
    require_privileged!();
    the_fallback_takes_over_when_no_backend_is_up("agsorrynat", Mode::Nat);
}

/// Each backend's flows of the `web` service as `(active, inactive)`, and the service's.
fn flow_counts(lab: &AgentTestbed) -> (Vec<(u64, u64)>, (u64, u64)) {
    let web = lab.agent().get("/api/v1/services/web").unwrap();
    let pair = |v: &Value| {
        let count = |state: &str| v["flows"][state].as_u64().unwrap_or_else(|| panic!("{v}"));
        (count("active"), count("inactive"))
    };
    let backends = web["backends"].as_array().unwrap().iter().map(pair);
    (backends.collect(), pair(&web))
}

/// Polls the API until the `web` backends' flows are `expected`; returns how long that took.
fn wait_flow_counts(lab: &AgentTestbed, expected: &[(u64, u64)], what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (backends, service) = flow_counts(lab);
        if backends == expected {
            let sum = |pick: fn(&(u64, u64)) -> u64| expected.iter().map(pick).sum();
            assert_eq!(service, (sum(|c| c.0), sum(|c| c.1)), "the service's sum");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: expected {expected:?}, the API shows {backends:?}\n{}",
            lab.agent().logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The backends count their flows as `ipvsadm -L -n` counts connections: held (established) ones
/// as active on the backend each reached, closed ones (the client sent FIN) as inactive. The
/// service sums its backends; the CLI and the metrics show the same, and the stats say when the
/// flow table was last walked and how many entries it had.
#[test]
fn backends_count_active_and_inactive_flows() {
    require_privileged!();
    const HELD: usize = 20;
    let mut lab =
        AgentTestbed::new("agcount", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();
    let held = LongLived::open(&lab.testbed.client, lab.vip(), HELD).unwrap();
    let reached = held.backends();
    let reached: Vec<u64> = (1..=3)
        .map(|n| reached.get(&format!("b{n}")).copied().unwrap_or(0) as u64)
        .collect();
    assert_eq!(reached.iter().sum::<u64>(), HELD as u64);

    let open: Vec<(u64, u64)> = reached.iter().map(|&n| (n, 0)).collect();
    let took = wait_flow_counts(&lab, &open, "the held connections, active");
    println!("held connections counted in {took:?}: {open:?}");
    let backends = cli(&lab, &["backend", "list", "web"]).unwrap();
    let header = backends.lines().next().unwrap();
    assert!(header.contains(" ACTIVE  INACTIVE "), "{backends}");
    let (status, metrics) = lab.agent().request("GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
    let line = format!(
        "xlb_backend_flows{{service=\"web\",backend=\"198.18.1.10:80\",state=\"active\"}} {}",
        reached[0]
    );
    assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    assert!(
        metrics.contains("\nxlb_flow_count_timestamp_seconds "),
        "no walk time in\n{metrics}"
    );
    let walk = &lab.agent().get("/api/v1/stats").unwrap()["flow_count"];
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at_ms = walk["at_unix_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{walk}"));
    assert!(
        now_ms.abs_diff(at_ms) < 10_000,
        "a walk at {at_ms}, now {now_ms}: {walk}"
    );
    assert!(walk["entries"].as_u64().unwrap() >= HELD as u64, "{walk}");
    assert!(walk["took_ms"].as_f64().is_some(), "{walk}");
    assert!(walk["pruned"].as_u64().is_some(), "{walk}");

    drop(held);
    let closed: Vec<(u64, u64)> = reached.iter().map(|&n| (0, n)).collect();
    let took = wait_flow_counts(&lab, &closed, "the closed connections, inactive");
    println!("closed connections counted in {took:?}: {closed:?}");
    lab.agent_mut().stop().unwrap();
}

/// A NAT service on the VIP's port 80 to port 8080 of `backends`, without checks.
fn nat_service(backends: &[&str]) -> String {
    let mut text = String::from(
        "[[service]]\nname = \"tomcat\"\nvip = \"198.18.0.100\"\nport = 80\nmode = \"nat\"\n",
    );
    for addr in backends {
        text += &format!("[[service.backend]]\naddress = \"{addr}\"\nport = 8080\n");
    }
    text
}

#[test]
fn a_nat_agent_turns_icmp_redirects_off() {
    require_privileged!();
    let config = nat_service(&["198.18.1.10", "198.18.1.11"]);
    let mut lab = AgentTestbed::new("agredir", Mode::Nat, Family::V4, 2, &config).unwrap();
    let keys = [
        "net.ipv4.conf.all.send_redirects",
        "net.ipv4.conf.eth0.send_redirects",
    ];
    for key in keys {
        lab.testbed.director_ns.sysctl(key, "1").unwrap();
    }
    lab.start().unwrap();
    for key in keys {
        assert_eq!(
            lab.testbed.director_ns.read_sysctl(key).unwrap(),
            "0",
            "{key}"
        );
    }
    let logs = lab.agent().logs();
    assert!(
        logs.contains(
            "NAT: ICMP redirects off on all, eth0 (net.ipv4.conf.*.send_redirects = 0; it was 1 \
             on all, 1 on eth0)"
        ),
        "{logs}"
    );
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 60).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}\n{}", lab.agent().logs());
    assert_eq!(spread.by_backend.len(), 2, "{spread:?}");
    lab.agent_mut().stop().unwrap();
}

#[test]
fn nat_backends_behind_an_interface_not_attached_are_refused() {
    require_privileged!();
    let (good, behind) = ("198.18.1.10", "198.18.5.10");
    let mut lab =
        AgentTestbed::new("agnatif", Mode::Nat, Family::V4, 1, &nat_service(&[behind])).unwrap();
    // A second network on the director, on an interface the agent is not attached to.
    let director_ns = lab.testbed.director_ns.clone();
    director_ns
        .ip(&[
            "link", "add", "side0", "type", "veth", "peer", "name", "side1",
        ])
        .unwrap();
    for ifname in ["side0", "side1"] {
        director_ns.ip(&["link", "set", ifname, "up"]).unwrap();
    }
    director_ns.add_addr("side0", "198.18.5.1/24").unwrap();
    let refusal = "service[tomcat].backend[0]: 198.18.5.10:8080 is reached through side0, which \
                   agent.interfaces (eth0) does not include";

    // `xlb check` on the director refuses it, unless told the file is for another machine.
    let xlb = xlb_tests::xlb_bin().unwrap();
    let config = lab.agent().config_path();
    let check = |args: &[&str]| {
        let mut all = vec!["check", "--config", config.to_str().unwrap()];
        all.extend(args);
        director_ns.exec(xlb.to_str().unwrap(), &all).unwrap()
    };
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains(refusal), "{stderr}");
    assert!(
        stderr.contains("add \"side0\" to agent.interfaces"),
        "{stderr}"
    );
    let out = check(&["--skip-routes"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not checked (--skip-routes)"),
        "{out:?}"
    );

    // `xlb run` refuses to start, and attaches nothing.
    let error = format!("{:#}", lab.start().unwrap_err());
    assert!(error.contains(refusal), "{error}");
    assert_eq!(lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(), None);

    // A running agent refuses such a backend from a reload and from the API.
    lab.write_config(&nat_service(&[good])).unwrap();
    lab.start().unwrap();
    let out = check(&[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("routes: 1 NAT backends and fallbacks are reached through eth0"),
        "{out:?}"
    );
    lab.write_config(&nat_service(&[good, behind])).unwrap();
    let before = dump(&lab);
    let error = lab.agent().refused_reload().unwrap();
    assert_eq!(error["field"], "service[tomcat].backend[1]", "{error}");
    assert_eq!(dump(&lab), before, "the refused reload changed nothing");
    refused(
        &lab,
        "POST",
        "/api/v1/services/tomcat/backends",
        Some(r#"{"address": "198.18.5.11", "port": 8080}"#),
        400,
        Some("service[tomcat].backend[1]"),
    );
    lab.agent_mut().stop().unwrap();
}

/// Over its new-flow cap the data plane forwards new flows without state, every connection
/// still answered; the API and the metrics say the guard is active while it is, and the log
/// says when it starts.
#[test]
fn the_flood_guard_is_counted_and_shown() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("agflood", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.add_agent_settings("flood_guard = 20").unwrap();
    lab.start().unwrap();
    let guard =
        |lab: &AgentTestbed| lab.agent().get("/api/v1/stats").unwrap()["flood_guard"].clone();
    let quiet = guard(&lab);
    assert_eq!(quiet["new_flows_per_cpu"], 20, "{quiet}");
    assert_eq!(quiet["active"], false, "{quiet}");

    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), Duration::from_secs(4));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        let now = guard(&lab);
        if now["active"] == true {
            let (_, metrics) = lab.agent().request("GET", "/metrics", None, None).unwrap();
            seen = Some((now, metrics));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let spread = total(&load.finish().unwrap());
    let (active, metrics) = seen.unwrap_or_else(|| panic!("never active\n{}", lab.agent().logs()));
    assert!(active["stateless_flows"].as_u64().unwrap() > 0, "{active}");
    assert!(
        active["active_since_unix_ms"].as_u64().is_some(),
        "{active}"
    );
    assert!(metrics.contains("xlb_flood_guard_active 1"), "{metrics}");
    assert!(
        metrics.contains("xlb_flood_guard_new_flows_per_cpu 20"),
        "{metrics}"
    );
    assert_eq!(spread.failed, 0, "{spread:?}");
    assert_eq!(
        spread.by_backend.len(),
        3,
        "stateless flows spread by the ring: {spread:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while guard(&lab)["active"] == true && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(guard(&lab)["active"], false, "the guard ends with the load");
    let logs = lab.agent().logs();
    assert!(
        logs.contains("flood guard: over 20 new flows/s on a CPU"),
        "{logs}"
    );
    assert!(
        logs.contains("flood guard: new flows are recorded again"),
        "{logs}"
    );
}
