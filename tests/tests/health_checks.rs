//! Health checks against real servers in the lab: a `dns` check asks dnsmasq over TCP for a TCP
//! service and over UDP for a UDP one; a backend's own check target (`[service.backend.health]`)
//! sends its probes there while the others probe themselves; and each backend's
//! `last_check_age_ms` and `xlb_health_check_last_completed_timestamp_seconds` tell when its
//! last check completed.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::AgentTestbed,
    daemons::dns_server,
    lab::{Family, DIRECTOR_V4, VIP_V4},
    netns::Netns,
    require_privileged,
    servers::IdentityServer,
};

/// Waits up to 5 s until `pred` holds of the view of backend `addr` of `service`, and returns it.
fn backend_when(
    lab: &AgentTestbed,
    service: &str,
    addr: SocketAddr,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let b = lab.backend_at(service, addr).unwrap();
        if pred(&b) {
            return b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{service} {addr} not {what} within 5 s: {b}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend's last check ended `ok` with `detail` in its reason, and its state says so.
fn checked(b: &Value, ok: bool, detail: &str) -> bool {
    let last = &b["check"]["last"];
    last["ok"] == ok
        && last["detail"].as_str().is_some_and(|d| d.contains(detail))
        && b["oper_state"] == if ok { "up" } else { "down" }
}

/// `nft ARGS` in `ns`, which must succeed.
fn nft(ns: &Netns, args: &[&str]) {
    let out = ns.exec("nft", args).unwrap();
    assert!(out.status.success(), "nft {args:?}: {out:?}");
}

/// Drops (or, for TCP, resets) what comes to port 53 over `protocol` in `ns`.
fn block_dns_over(ns: &Netns, protocol: &str) {
    nft(ns, &["add", "table", "inet", "xlbtest"]);
    nft(
        ns,
        &[
            "add",
            "chain",
            "inet",
            "xlbtest",
            "input",
            "{ type filter hook input priority 0 ; }",
        ],
    );
    let verdict: &[&str] = match protocol {
        "tcp" => &["reject", "with", "tcp", "reset"],
        _ => &["drop"],
    };
    let rule = [
        &[
            "add", "rule", "inet", "xlbtest", "input", protocol, "dport", "53",
        ][..],
        verdict,
    ]
    .concat();
    nft(ns, &rule);
}

/// A DNS service on the VIP's port 53 over `protocol`, to b1 and b2 by direct routing, checked
/// every 300 ms by a query for example.test (rise 1, fall 1, down until a check passes).
fn dns_service(protocol: &str) -> String {
    let mut text = format!(
        "[[service]]\nname = \"dns-{protocol}\"\nvip = \"{VIP_V4}\"\nport = 53\n\
         protocol = \"{protocol}\"\nmode = \"dr\"\n[service.health]\nkind = \"dns\"\n\
         query = \"example.test\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 1\n\
         initial = \"down\"\n"
    );
    for n in 0..2 {
        text += &format!(
            "[[service.backend]]\naddress = \"{}\"\n",
            Family::V4.backend(n)
        );
    }
    text + "\n"
}

#[test]
fn dns_checks_ask_over_tcp_for_a_tcp_service_and_over_udp_for_a_udp_one() {
    require_privileged!();
    let config = dns_service("tcp") + &dns_service("udp");
    let mut lab = AgentTestbed::new("hcdns", Mode::Dr, Family::V4, 2, &config).unwrap();
    // b1 answers over TCP only, b2 over UDP only.
    for (n, blocked) in [(0, "udp"), (1, "tcp")] {
        let ns = lab.testbed.backends[n].clone();
        dns_server(
            &mut lab.testbed.topology,
            &ns,
            &[Family::V4.backend(n)],
            "/example.test/198.18.9.9",
        )
        .unwrap();
        block_dns_over(&ns, blocked);
    }
    lab.start().unwrap();
    let at = |n: usize| SocketAddr::new(Family::V4.backend(n), 53);
    let tcp_b1 = backend_when(&lab, "dns-tcp", at(0), "up over TCP", |b| {
        checked(b, true, "NOERROR (1 answers) in ")
    });
    let tcp_b2 = backend_when(&lab, "dns-tcp", at(1), "refused over TCP", |b| {
        checked(b, false, "connection refused")
    });
    let udp_b1 = backend_when(&lab, "dns-udp", at(0), "unanswered over UDP", |b| {
        checked(b, false, "timeout after 250ms waiting for a DNS reply")
    });
    let udp_b2 = backend_when(&lab, "dns-udp", at(1), "up over UDP", |b| {
        checked(b, true, "NOERROR (1 answers) in ")
    });
    for b in [&tcp_b1, &tcp_b2, &udp_b1, &udp_b2] {
        println!("{}", b["check"]);
    }
    assert_eq!(tcp_b1["check"]["target"], at(0).to_string());
}

/// `web` on the VIP's port 80 by direct routing to b1..b3, checked by TCP every 200 ms
/// (rise 1, fall 1); b1 checked at its port 8081, b2 at b3's port 8082.
fn own_targets() -> String {
    let [b1, b2, b3] = [0, 1, 2].map(|n| Family::V4.backend(n));
    format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP_V4}\"\nport = 80\nmode = \"dr\"\n\
         [service.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
         rise = 1\nfall = 1\n\
         [[service.backend]]\naddress = \"{b1}\"\nhealth = {{ port = 8081 }}\n\
         [[service.backend]]\naddress = \"{b2}\"\n[service.backend.health]\n\
         address = \"{b3}\"\nport = 8082\n\
         [[service.backend]]\naddress = \"{b3}\"\n\n"
    )
}

#[test]
fn a_backends_own_check_target_gets_its_probes() {
    require_privileged!();
    let mut lab = AgentTestbed::new("hcown", Mode::Dr, Family::V4, 3, &own_targets()).unwrap();
    let [b1, b2, b3] = [0, 1, 2].map(|n| Family::V4.backend(n));
    let b1_health = IdentityServer::start(
        &lab.testbed.backends[0],
        SocketAddr::new(b1, 8081),
        "b1-health",
    )
    .unwrap();
    let b3_for_b2 = IdentityServer::start(
        &lab.testbed.backends[2],
        SocketAddr::new(b3, 8082),
        "b3-for-b2",
    )
    .unwrap();
    lab.start().unwrap();
    for (n, target) in [(0, (b1, 8081)), (1, (b3, 8082)), (2, (b3, 80))] {
        let b = backend_when(&lab, "web", lab.backend_addr(n), "up", |b| {
            checked(b, true, "connected in ")
        });
        assert_eq!(
            b["check"]["target"],
            SocketAddr::from(target).to_string(),
            "{b}"
        );
    }
    let b1_view = lab.backend("web", 0).unwrap();
    assert_eq!(b1_view["health"], serde_json::json!({"port": 8081}));
    assert!(lab.backend("web", 2).unwrap()["health"].is_null());
    std::thread::sleep(Duration::from_millis(1000));
    // Counted at the targets: the director's probes of b1 and b2 went to their own targets,
    // b3's to b3 itself.
    let director = IpAddr::from(DIRECTOR_V4);
    let own = |n: usize| lab.testbed.servers[n].tcp_connections_from(director);
    let (at_b1_health, at_b3_for_b2) = (
        b1_health.tcp_connections_from(director),
        b3_for_b2.tcp_connections_from(director),
    );
    println!(
        "probes: b1:80 {}, b1:8081 {at_b1_health}, b2:80 {}, b3:8082 {at_b3_for_b2}, b3:80 {}",
        own(0),
        own(1),
        own(2)
    );
    assert!(at_b1_health >= 3, "b1:8081 got {at_b1_health} probes");
    assert!(at_b3_for_b2 >= 3, "b3:8082 got {at_b3_for_b2} probes");
    assert!(own(2) >= 3, "b3:80 got {} probes", own(2));
    assert_eq!(
        (own(0), own(1)),
        (0, 0),
        "b1 or b2 was probed at its own address"
    );

    // b1's target stops answering: b1 goes down though its service port still answers.
    drop(b1_health);
    backend_when(&lab, "web", lab.backend_addr(0), "down", |b| {
        checked(b, false, "connection refused")
    });
    backend_when(&lab, "web", lab.backend_addr(2), "up", |b| {
        checked(b, true, "connected in ")
    });

    // Through the API: b2 added again with its own target, and a target of the wrong family
    // refused with the key at fault.
    let path = format!(
        "/api/v1/services/web/backends/{}",
        encode(lab.backend_addr(1))
    );
    let (status, body) = lab.agent().request("DELETE", &path, None, None).unwrap();
    assert!(status < 300, "{status} {body}");
    let wrong = format!(r#"{{"address": "{b2}", "health": {{"address": "fd00::1"}}}}"#);
    let (status, body) = lab
        .agent()
        .request("POST", "/api/v1/services/web/backends", Some(&wrong), None)
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error["field"], "service[web].backend[2].health.address",
        "{body}"
    );
    let (b2_text, b3_text) = (b2.to_string(), b3.to_string());
    let added = cli(
        &lab,
        &[
            "backend",
            "add",
            "web",
            &b2_text,
            "--check-address",
            &b3_text,
            "--check-port",
            "80",
        ],
    );
    assert!(added.contains("added to web"), "{added}");
    let b = backend_when(&lab, "web", lab.backend_addr(1), "up", |b| {
        checked(b, true, "connected in ")
    });
    assert_eq!(b["check"]["target"], SocketAddr::new(b3, 80).to_string());
    assert_eq!(
        b["health"],
        serde_json::json!({"address": b3.to_string(), "port": 80})
    );
    assert_eq!(own(1), 0, "b2 was probed at its own address");
    let listed = cli(&lab, &["backend", "list", "web"]);
    let note = format!(
        "{}: checked at {b3}:80, its own check target",
        lab.backend_addr(1)
    );
    assert!(listed.contains(&note), "{listed}");
}

/// `xlb ARGS` in the director's namespace (the API's default address): its stdout, which it
/// must exit 0 with.
fn cli(lab: &AgentTestbed, args: &[&str]) -> String {
    let xlb = xlb_tests::xlb_bin().unwrap();
    let out = lab
        .testbed
        .director_ns
        .exec(xlb.to_str().unwrap(), args)
        .unwrap();
    assert!(out.status.success(), "xlb {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path segment for the API: `:` of an address and port escaped.
fn encode(addr: SocketAddr) -> String {
    xlb_tests::agent::encode(&addr.to_string())
}

/// The value of the series `series` (`name{labels}`) in a scrape, if it has it.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_age_of_the_last_check_is_null_before_it_and_grows_after() {
    require_privileged!();
    // One probe an hour, each taking 3 s: the first ends 3 to 4 s after the start.
    let config = format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP_V4}\"\nport = 80\nmode = \"dr\"\n\
         [service.health]\nkind = \"exec\"\ncommand = [\"/bin/sleep\", \"3\"]\n\
         interval = \"1h\"\ntimeout = \"5s\"\n\
         [[service.backend]]\naddress = \"{}\"\n\n",
        Family::V4.backend(0)
    );
    let mut lab = AgentTestbed::new("hcage", Mode::Dr, Family::V4, 1, &config).unwrap();
    lab.start().unwrap();
    let b1 = lab.backend_addr(0);
    let series = format!(
        "xlb_health_check_last_completed_timestamp_seconds{{service=\"web\",backend=\"{b1}\"}}"
    );
    let interval = format!("xlb_health_check_interval_seconds{{service=\"web\",backend=\"{b1}\"}}");
    let scrape = || {
        let (status, body) = lab.agent().request("GET", "/metrics", None, None).unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };

    let before = lab.backend_at("web", b1).unwrap();
    assert!(before["check"]["last"].is_null(), "{before}");
    assert!(before["last_check_age_ms"].is_null(), "{before}");
    let metrics = scrape();
    assert_eq!(sample(&metrics, &series), None, "{metrics}");
    assert_eq!(sample(&metrics, &interval), Some(3600.0));

    let after = backend_when(&lab, "web", b1, "checked", |b| {
        b["last_check_age_ms"].is_u64()
    });
    let age = after["last_check_age_ms"].as_u64().unwrap();
    assert!(age < 1000, "{after}");
    let completed = sample(&scrape(), &series).expect("the completion time once checked");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - completed).abs() < 2.0,
        "completed at {completed}, now {now}"
    );

    // No check until the next hour: the age grows.
    std::thread::sleep(Duration::from_millis(1500));
    let later = lab.backend_at("web", b1).unwrap();
    let later_age = later["last_check_age_ms"].as_u64().unwrap();
    assert!(later_age >= age + 1400, "{age} ms, then {later}");
    assert_eq!(later["check"]["checks"], 1, "{later}");
    assert_eq!(sample(&scrape(), &series), Some(completed));
}
