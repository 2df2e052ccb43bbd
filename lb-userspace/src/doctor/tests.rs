//! The checks' verdicts on facts made up here.

use std::{collections::BTreeMap, path::PathBuf};

use super::*;
use crate::{config::Config, nat_routes::NatRoutes};

/// A director with a NAT service (IPv4) and a DR one on `eth0`.
fn nat_model() -> Model {
    Config::parse(
        "[agent]\ninterfaces = [\"eth0\"]\n\
         [[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\n\
         [[service.backend]]\naddress = \"198.18.1.10\"\n\
         [[service]]\nname = \"tomcat\"\nvip = \"198.18.0.101\"\nport = 80\nmode = \"nat\"\n\
         [[service.backend]]\naddress = \"198.18.1.20\"\nport = 8080\n",
    )
    .and_then(|c| c.validate())
    .expect("the config is valid")
}

/// A host where everything is as it should be for [`nat_model`]: eth0 a veth whose peer runs
/// XDP, the VIPs on it.
fn healthy() -> Facts {
    let sysctls = [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.conf.all.forwarding", "1"),
        ("net.ipv4.conf.eth0.forwarding", "1"),
        ("net.ipv6.conf.eth0.forwarding", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.eth0.rp_filter", "1"),
        ("net.ipv4.conf.all.accept_local", "0"),
        ("net.ipv4.conf.eth0.accept_local", "1"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.eth0.send_redirects", "0"),
    ];
    let link = Link {
        driver: Some("veth".into()),
        rx_vlan_offload: Some(true),
        vlans: Vec::new(),
        addresses: ["198.18.0.2", "198.18.0.100", "198.18.0.101"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
        veth_peer: Some(Ok(Peer {
            name: "sw-d1".into(),
            xdp: true,
        })),
    };
    Facts {
        kernel: "6.18.44-fc".into(),
        links: BTreeMap::from([("eth0".to_string(), Ok(link))]),
        sysctls: sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        pin_dir: Ok((PathBuf::from("/sys/fs/bpf"), true)),
        nat_routes: Ok(NatRoutes {
            through: BTreeMap::from([("eth0".to_string(), 1)]),
            unrouted: Vec::new(),
        }),
        token: Ok(false),
    }
}

/// The findings of `facts` that are not ok, as (check, level), less the reminder every veth
/// gets.
fn problems(facts: &Facts) -> Vec<(&'static str, Level)> {
    diagnose(&nat_model(), facts)
        .into_iter()
        .filter(|f| f.level != Level::Ok && f.check != "veth_checksums")
        .map(|f| (f.check, f.level))
        .collect()
}

fn the_finding(facts: &Facts, check: &str) -> Finding {
    let found: Vec<Finding> = diagnose(&nat_model(), facts)
        .into_iter()
        .filter(|f| f.check == check)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn set(facts: &mut Facts, key: &str, value: &str) {
    facts.sysctls.insert(key.into(), value.into());
}

fn link(facts: &mut Facts) -> &mut Link {
    facts.links.get_mut("eth0").unwrap().as_mut().unwrap()
}

#[test]
fn a_healthy_veth_director_has_only_the_checksum_reminder() {
    assert_eq!(
        problems(&healthy()),
        [],
        "{:#?}",
        diagnose(&nat_model(), &healthy())
    );
    assert_eq!(the_finding(&healthy(), "veth_checksums").level, Level::Warn);
    let lines: Vec<String> = diagnose(&nat_model(), &healthy())
        .iter()
        .map(Finding::to_string)
        .collect();
    assert!(
        lines.contains(&"ok    eth0: native XDP (driver veth)".to_string()),
        "{lines:#?}"
    );
}

#[test]
fn each_problem_is_reported_alone() {
    let mut facts = healthy();
    set(&mut facts, "net.ipv4.ip_forward", "0");
    assert_eq!(problems(&facts), [("forwarding", Level::Fail)]);
    let forwarding = the_finding(&facts, "forwarding");
    assert_eq!(forwarding.level, Level::Fail);
    assert_eq!(
        forwarding.to_string(),
        "FAIL  ipv4 forwarding off (net.ipv4.ip_forward): NAT replies are not routed to the \
         clients -> fix: sysctl -w net.ipv4.ip_forward=1"
    );

    let mut facts = healthy();
    set(&mut facts, "net.ipv4.conf.eth0.accept_local", "0");
    assert_eq!(problems(&facts), [("accept_local", Level::Fail)]);

    let mut facts = healthy();
    set(&mut facts, "net.ipv4.conf.all.send_redirects", "1");
    let redirects = the_finding(&facts, "send_redirects");
    assert_eq!(redirects.level, Level::Warn);
    assert_eq!(
        redirects.fix.as_deref(),
        Some("sysctl -w net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0")
    );

    let mut facts = healthy();
    facts.pin_dir = Ok((PathBuf::from("/sys/fs/bpf"), false));
    let pins = the_finding(&facts, "pin_path");
    assert_eq!(pins.level, Level::Fail);
    assert!(
        pins.fix
            .as_deref()
            .unwrap()
            .contains("`mount -t bpf bpf /sys/fs/bpf`"),
        "{pins}"
    );

    let mut facts = healthy();
    link(&mut facts).veth_peer = Some(Ok(Peer {
        name: "sw-d1".into(),
        xdp: false,
    }));
    assert_eq!(problems(&facts), [("veth_peer", Level::Fail)]);

    let mut facts = healthy();
    facts.nat_routes = Err("service[tomcat].backend[0]: … is reached through eth1".into());
    assert_eq!(problems(&facts), [("nat_routes", Level::Fail)]);

    let mut facts = healthy();
    facts.kernel = "5.15.0-91-generic".into();
    let kernel = the_finding(&facts, "kernel");
    assert_eq!(
        kernel.detail,
        "kernel 5.15.0-91-generic lacks bpf_xdp_get_buff_len, for ICMP too-big answers (5.18)"
    );

    let mut facts = healthy();
    facts.token = Err("reading the API token from /etc/xlb/token: not found".into());
    assert_eq!(problems(&facts), [("api", Level::Fail)]);
}

#[test]
fn strict_rp_filter_fails_only_without_the_vips_on_the_interface() {
    let mut facts = healthy();
    let strict = the_finding(&facts, "rp_filter");
    assert_eq!(strict.level, Level::Ok, "{strict}");
    link(&mut facts)
        .addresses
        .retain(|a| a.to_string() != "198.18.0.101");
    let strict = the_finding(&facts, "rp_filter");
    assert_eq!(strict.level, Level::Fail, "{strict}");
    assert!(
        strict.detail.contains("198.18.0.101 is not on eth0"),
        "{strict}"
    );
    assert_eq!(
        strict.fix.as_deref(),
        Some("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2")
    );
    // Loose: the VIP may be anywhere.
    set(&mut facts, "net.ipv4.conf.eth0.rp_filter", "2");
    assert_eq!(the_finding(&facts, "rp_filter").level, Level::Ok);
}

#[test]
fn vlan_offload_matters_only_with_vlans() {
    let mut facts = healthy();
    link(&mut facts).vlans = vec!["eth0.100".into()];
    let vlan = the_finding(&facts, "vlan_offload");
    assert_eq!(vlan.level, Level::Fail);
    assert_eq!(vlan.fix.as_deref(), Some("ethtool -K eth0 rxvlan off"));
    link(&mut facts).rx_vlan_offload = Some(false);
    assert_eq!(the_finding(&facts, "vlan_offload").level, Level::Ok);
}

#[test]
fn an_unknown_driver_is_a_warning_unless_generic() {
    let mut facts = healthy();
    let eth0 = link(&mut facts);
    eth0.driver = Some("r8169".into());
    eth0.veth_peer = None;
    assert_eq!(problems(&facts), [("xdp", Level::Warn)]);
    let mut generic = nat_model();
    generic.agent.xdp_mode = AttachMode::Generic;
    let xdp = diagnose(&generic, &facts).remove(1);
    assert_eq!(
        xdp.to_string(),
        "ok    eth0: generic XDP (driver r8169; xdp_mode = \"generic\")"
    );
}

#[test]
fn without_nat_the_nat_settings_are_not_checked() {
    let mut model = nat_model();
    model.services.retain(|s| s.mode != Mode::Nat);
    let mut facts = healthy();
    set(&mut facts, "net.ipv4.ip_forward", "0");
    set(&mut facts, "net.ipv4.conf.eth0.rp_filter", "1");
    link(&mut facts).addresses.clear();
    let checks: Vec<&str> = diagnose(&model, &facts).iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            "kernel",
            "xdp",
            "vlan_offload",
            "veth_peer",
            "veth_checksums",
            "pin_path",
            "api"
        ]
    );
}

#[test]
fn findings_serialize_with_lowercase_levels() {
    let finding = Finding::fail("forwarding", "off", "sysctl -w net.ipv4.ip_forward=1");
    assert_eq!(
        serde_json::to_value(&finding).unwrap(),
        serde_json::json!({
            "check": "forwarding",
            "level": "fail",
            "detail": "off",
            "fix": "sysctl -w net.ipv4.ip_forward=1",
        })
    );
}
