//! Health checks through the data path and the pinned decapsulator: an IP-in-IP backend whose
//! decapsulation or VIP is broken goes DOWN though its own address still answers; a DR backend
//! checked at the VIP likewise; `xlb decap` leaves its program attached when it exits, until
//! `xlb decap --remove`. An https check (nginx with a throwaway CA's certificate) gives its verdicts
//! through the tunnel, at the VIP and directly, over IPv4 and IPv6.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use lb_common::maps::Mode;
use xlb_tests::{
    agent::{AgentTestbed, ServiceConf, BPF_FS},
    daemons::{https_server, TestCa},
    lab::{Family, VIP_V4},
    require_privileged,
    servers::tcp_spread,
    xlb_bin,
};

/// b1..b3 behind a TCP service in `mode`, checked every 200 ms (rise 2, fall 3), `via` as given.
fn service(mode: &str, via: Option<&str>) -> String {
    let mut text = format!(
        "[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\nmode = \"{mode}\"\n\
         [service.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
         rise = 2\nfall = 3\n"
    );
    if let Some(via) = via {
        text += &format!("via = \"{via}\"\n");
    }
    for n in 0..3 {
        text += &format!("[[service.backend]]\naddress = \"198.18.1.{}\"\n", 10 + n);
    }
    text
}

/// The TCP check of [`service`], for [`ServiceConf`].
const CHECK: &str = "kind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 3";

const WINDOW: Duration = Duration::from_millis(3 * 200 + 100 + 1000);

fn all_up(lab: &AgentTestbed) {
    for n in 0..3 {
        lab.wait_backend("web", n, Duration::from_secs(5), "up", |b| {
            b["oper_state"] == "up"
        })
        .unwrap();
    }
}

fn stays_up(lab: &AgentTestbed, n: usize) {
    let b = lab.backend("web", n).unwrap();
    assert_eq!(b["oper_state"], "up", "b{} went down: {b}", n + 1);
    assert_eq!(b["check"]["transitions"], 0, "b{} flapped: {b}", n + 1);
}

/// IP-in-IP checked through the tunnel (the default) in `family`: a backend without its
/// decapsulator, or without its VIP, goes DOWN while the others stay up.
fn ipip_checks_go_through_the_tunnel(tag: &str, family: Family) {
    let config = ServiceConf {
        health: Some(CHECK),
        ..ServiceConf::new("web", Mode::Ipip, family)
    }
    .toml();
    let mut lab = AgentTestbed::new(tag, Mode::Ipip, family, 3, &config).unwrap();
    lab.start().unwrap();
    all_up(&lab);
    std::thread::sleep(Duration::from_millis(1000));
    for n in 0..3 {
        stays_up(&lab, n);
    }
    let b1 = lab.backend("web", 0).unwrap();
    println!("b1 before: {b1}");

    // b1 stops decapsulating: its own address still answers on port 80.
    let decap = lab.testbed.decaps.remove(0);
    drop(decap);
    let took = lab
        .wait_backend("web", 0, WINDOW, "down", |b| b["oper_state"] == "down")
        .unwrap();
    println!("b1 DOWN {took:?} after its decapsulator went");
    for n in 1..3 {
        stays_up(&lab, n);
    }
    // Clients reach only b2 and b3.
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 30).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    assert!(!spread.by_backend.contains_key("b1"), "{spread:?}");

    // Decapsulating again, b1 comes back.
    let ns = lab.testbed.backends[0].clone();
    lab.testbed
        .decaps
        .insert(0, xlb_tests::lab::decapsulator(&ns).unwrap());
    lab.wait_backend("web", 0, WINDOW, "up", |b| b["oper_state"] == "up")
        .unwrap();

    // b2 loses its VIP: it decapsulates, but nothing answers for the VIP.
    let b2 = lab.testbed.backends[1].clone();
    let vip = match family {
        Family::V4 => format!("{}/32", family.vip()),
        Family::V6 => format!("{}/128", family.vip()),
    };
    let out = b2.exec("ip", &["addr", "del", &vip, "dev", "lo"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    lab.wait_backend("web", 1, WINDOW, "down", |b| b["oper_state"] == "down")
        .unwrap();
    stays_up(&lab, 2);
}

#[test]
fn ipip_checks_go_through_the_tunnel_and_a_broken_decapsulator_is_down_ipv4() {
    require_privileged!();
    ipip_checks_go_through_the_tunnel("hpipip4", Family::V4);
}

#[test]
fn ipip_checks_go_through_the_tunnel_and_a_broken_decapsulator_is_down_ipv6() {
    require_privileged!();
    ipip_checks_go_through_the_tunnel("hpipip6", Family::V6);
}

#[test]
fn ipip_checks_can_go_direct() {
    require_privileged!();
    let mut lab = AgentTestbed::new(
        "hpdirect",
        Mode::Ipip,
        Family::V4,
        3,
        &service("ipip", Some("direct")),
    )
    .unwrap();
    lab.start().unwrap();
    all_up(&lab);
    // Without its decapsulator b1 still answers at its own address: a direct check cannot tell.
    drop(lab.testbed.decaps.remove(0));
    std::thread::sleep(WINDOW);
    stays_up(&lab, 0);
}

#[test]
fn dr_checks_at_the_vip_find_a_backend_without_it() {
    require_privileged!();
    let mut lab = AgentTestbed::new(
        "hpdrvip",
        Mode::Dr,
        Family::V4,
        3,
        &service("dr", Some("vip")),
    )
    .unwrap();
    lab.start().unwrap();
    all_up(&lab);
    std::thread::sleep(Duration::from_millis(500));
    let b1 = lab.testbed.backends[0].clone();
    let out = b1
        .exec("ip", &["addr", "del", &format!("{VIP_V4}/32"), "dev", "lo"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    lab.wait_backend("web", 0, WINDOW, "down", |b| b["oper_state"] == "down")
        .unwrap();
    stays_up(&lab, 1);
    stays_up(&lab, 2);
}

/// `xlb decap ARGS` in backend b1's namespace, run to its end.
fn decap_cmd(lab: &mut AgentTestbed, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(xlb_bin().unwrap());
    cmd.arg("decap")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let ns = lab.testbed.backends[0].clone();
    let child = lab.testbed.topology.spawn(&ns, cmd).unwrap();
    let out = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("xlb decap exits");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn xlb_decap_stays_attached_after_it_exits_until_removed() {
    require_privileged!();
    let mut lab =
        AgentTestbed::new("hpdecap", Mode::Ipip, Family::V4, 3, &service("ipip", None)).unwrap();
    // b1's decapsulator is the command's, not the lab's.
    drop(lab.testbed.decaps.remove(0));
    // On the tests' bpffs: a child's /sys is its own, as under `ip netns exec`.
    let pins = format!("{BPF_FS}/decap-hpdecap-{}", std::process::id());
    let (ok, out) = decap_cmd(
        &mut lab,
        &[
            "--iface",
            "eth0",
            "--vip",
            "198.18.0.100",
            "--from",
            "198.18.1.9",
            "--pin-path",
            &pins,
        ],
    );
    assert!(ok, "{out}");
    println!("{out}");
    lab.start().unwrap();
    // The command has exited; b1 decapsulates only from 198.18.1.9, not from this director.
    lab.wait_backend("web", 0, WINDOW, "down", |b| b["oper_state"] == "down")
        .unwrap();
    // Updated in place: now from this director too.
    let (ok, out) = decap_cmd(
        &mut lab,
        &[
            "--iface",
            "eth0",
            "--vip",
            "198.18.0.100",
            "--from",
            "198.18.1.2",
            "--from",
            "198.18.1.9",
            "--pin-path",
            &pins,
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("already attached"), "{out}");
    lab.wait_backend("web", 0, WINDOW, "up", |b| b["oper_state"] == "up")
        .unwrap();
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 60).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    assert!(spread.by_backend.contains_key("b1"), "{spread:?}");

    // Errors change nothing.
    let (ok, out) = decap_cmd(
        &mut lab,
        &["--remove", "--iface", "lo", "--pin-path", &pins],
    );
    assert!(!ok && out.contains("not attached to lo"), "{out}");
    let (ok, out) = decap_cmd(
        &mut lab,
        &[
            "--iface",
            "eth0",
            "--mode",
            "generic",
            "--vip",
            "198.18.0.100",
            "--from",
            "198.18.1.2",
            "--pin-path",
            &pins,
        ],
    );
    assert!(!ok && out.contains("native mode"), "{out}");
    let (ok, out) = decap_cmd(
        &mut lab,
        &[
            "--iface",
            "eth0",
            "--vip",
            "198.18.0.100",
            "--from",
            "198.18.1.2",
            "--pin-path",
            "/tmp/xlb-not-bpffs",
        ],
    );
    assert!(!ok && out.contains("not on a BPF filesystem"), "{out}");
    assert!(!std::path::Path::new("/tmp/xlb-not-bpffs").exists());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(lab.backend("web", 0).unwrap()["oper_state"], "up");

    // Removed: b1 stops decapsulating and goes down.
    let (ok, out) = decap_cmd(
        &mut lab,
        &["--remove", "--iface", "eth0", "--pin-path", &pins],
    );
    assert!(ok, "{out}");
    println!("{out}");
    assert!(!std::path::Path::new(&pins).exists(), "pins left at {pins}");
    lab.wait_backend("web", 0, WINDOW, "down", |b| b["oper_state"] == "down")
        .unwrap();
    let (ok, out) = decap_cmd(
        &mut lab,
        &["--remove", "--iface", "eth0", "--pin-path", &pins],
    );
    assert!(!ok && out.contains("no decapsulator is pinned"), "{out}");
}

/// The https service `web` on port 443 in `mode` and `family`, checked every 300 ms (rise 1,
/// fall 1) at `/health` `via` as given, with `extra` check keys.
fn https_service(mode: Mode, family: Family, via: &str, extra: &str) -> String {
    let check = format!(
        "kind = \"https\"\npath = \"/health\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\n\
         rise = 1\nfall = 1\nvia = \"{via}\"\n{extra}"
    );
    ServiceConf {
        port: 443,
        backend_port: 443,
        health: Some(&check),
        ..ServiceConf::new("web", mode, family)
    }
    .toml()
}

/// Waits until every backend's last check passed (or failed) with `detail` in its reason, and
/// was made at `target(n)`.
fn https_verdict(
    lab: &AgentTestbed,
    case: &str,
    up: bool,
    detail: &str,
    target: &dyn Fn(usize) -> String,
) {
    for n in 0..3 {
        let at = SocketAddr::new(lab.family.backend(n), 443);
        let started = std::time::Instant::now();
        let b = loop {
            let b = lab.backend_at("web", at).unwrap();
            let last = &b["check"]["last"];
            if last["ok"] == up
                && last["detail"].as_str().is_some_and(|d| d.contains(detail))
                && b["oper_state"] == if up { "up" } else { "down" }
            {
                break b;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{case}: b{} not {} with {detail:?} within 5 s: {b}",
                n + 1,
                if up { "up" } else { "down" }
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(b["check"]["target"], target(n), "{case}: {b}");
    }
    println!("{case}: {detail}");
}

/// An https check of nginx on each backend (a certificate of a throwaway CA for the VIPs and the
/// backends' addresses) in `mode` and `family`, `via` as given: any certificate passes without
/// verification, the CA's with `ca_file`; without it the certificate is not trusted; a wrong
/// status or a body without the text fails.
fn https_checks(tag: &str, mode: Mode, family: Family, via: &str) {
    let ips: Vec<IpAddr> = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| [f.vip(), f.backend(0), f.backend(1), f.backend(2)])
        .collect();
    let ca = TestCa::new(tag, &ips, &["www.xlb.test"]).unwrap();
    let ca_file = format!("ca_file = \"{}\"", ca.path("ca.pem").display());
    let config = |extra: &str| https_service(mode, family, via, extra);
    let mut lab = AgentTestbed::new(tag, mode, family, 3, &config("verify = false")).unwrap();
    for n in 0..3 {
        let ns = lab.testbed.backends[n].clone();
        https_server(
            &mut lab.testbed.topology,
            &ns,
            &ca,
            &format!("b{}", n + 1),
            443,
        )
        .unwrap();
    }
    lab.start().unwrap();
    let target = |n: usize| match via {
        "direct" => SocketAddr::new(family.backend(n), 443).to_string(),
        _ => SocketAddr::new(family.vip(), 443).to_string(),
    };
    https_verdict(&lab, "verify = false", true, "HTTP 200 OK in ", &target);
    let cases = [
        (ca_file.clone(), true, "HTTP 200 OK in "),
        (
            "verify = true".to_owned(),
            false,
            "certificate not trusted: unknown issuer",
        ),
        (
            format!("{ca_file}\nstatus = \"204\""),
            false,
            "HTTP 200 OK (expected 204)",
        ),
        (
            format!("{ca_file}\nbody = \"sick\""),
            false,
            "HTTP 200 OK but the body lacks \"sick\"",
        ),
        (
            format!("{ca_file}\nsni = \"www.xlb.test\""),
            true,
            "HTTP 200 OK in ",
        ),
    ];
    for (extra, up, detail) in cases {
        lab.write_config(&config(&extra)).unwrap();
        let (status, body) = lab
            .agent()
            .request("POST", "/api/v1/reload", None, None)
            .unwrap();
        assert_eq!(status, 200, "{body}");
        https_verdict(&lab, &extra, up, detail, &target);
    }
}

#[test]
fn https_checks_through_the_tunnel_ipv4() {
    require_privileged!();
    https_checks("hptls4", Mode::Ipip, Family::V4, "tunnel");
}

#[test]
fn https_checks_through_the_tunnel_ipv6() {
    require_privileged!();
    https_checks("hptls6", Mode::Ipip, Family::V6, "tunnel");
}

#[test]
fn https_checks_at_the_vip_in_dr() {
    require_privileged!();
    https_checks("hptlsdr", Mode::Dr, Family::V4, "vip");
}

#[test]
fn https_checks_of_nat_backends_ipv4() {
    require_privileged!();
    https_checks("hptlsnat4", Mode::Nat, Family::V4, "direct");
}

#[test]
fn https_checks_of_nat_backends_ipv6() {
    require_privileged!();
    https_checks("hptlsnat6", Mode::Nat, Family::V6, "direct");
}
