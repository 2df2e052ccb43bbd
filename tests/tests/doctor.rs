//! `xlb doctor` on the lab's director, run as an operator would (`ip netns exec`): a clean lab
//! fails no check, and each problem introduced in turn is reported by its own check alone. (VLAN
//! offload needs a VLAN device, which a kernel without 8021q cannot make: its verdicts are unit
//! tests of the doctor module.)

use std::collections::BTreeSet;

use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::{AgentTestbed, ServiceConf},
    lab::{Family, VIP_V4},
    netns::Netns,
    require_privileged, xlb_bin,
};

/// `xlb doctor --json` in the director's namespace: its findings and whether it exited 0.
fn doctor(lab: &AgentTestbed) -> (Vec<Value>, bool) {
    let xlb = xlb_bin().unwrap();
    let config = lab.agent().config_path();
    let out = lab
        .testbed
        .director_ns
        .exec(
            xlb.to_str().unwrap(),
            &["doctor", "--json", "--config", config.to_str().unwrap()],
        )
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let findings = json["findings"].as_array().cloned().unwrap();
    (findings, out.status.success())
}

/// The checks with a finding at `level`.
fn at(findings: &[Value], level: &str) -> BTreeSet<String> {
    findings
        .iter()
        .filter(|f| f["level"] == level)
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect()
}

/// Runs the doctor with a problem made by `introduce` (and undone by `undo`): the failing checks,
/// and those that warn, beyond the clean lab's, must be `fails` and `warns`.
fn reports(
    lab: &AgentTestbed,
    problem: &str,
    introduce: impl FnOnce(&Netns),
    undo: impl FnOnce(&Netns),
    fails: &[&str],
    warns: &[&str],
) {
    let (clean, _) = doctor(lab);
    introduce(&lab.testbed.director_ns);
    let (findings, ok) = doctor(lab);
    undo(&lab.testbed.director_ns);
    let new = |level| -> Vec<String> {
        at(&findings, level)
            .difference(&at(&clean, level))
            .cloned()
            .collect()
    };
    assert_eq!(new("fail"), fails, "{problem}: {findings:#?}");
    assert_eq!(new("warn"), warns, "{problem}: {findings:#?}");
    assert_eq!(ok, fails.is_empty(), "{problem}: the exit status");
    for f in findings.iter().filter(|f| f["level"] != "ok") {
        println!(
            "{problem}: {} {}: {} -> {}",
            f["level"], f["check"], f["detail"], f["fix"]
        );
    }
}

fn sysctls(ns: &Netns, settings: &[(&str, &str)]) {
    ns.set_sysctls(settings).unwrap();
}

/// A testbed of one director and one backend, b1, with a TCP service in `mode`.
fn testbed(tag: &str, mode: Mode) -> AgentTestbed {
    let service = ServiceConf {
        weights: &[1],
        ..ServiceConf::new("web", mode, Family::V4)
    };
    AgentTestbed::new(tag, mode, Family::V4, 1, &service.toml()).unwrap()
}

/// [`reports`] of the director's settings changed: (key, value, the value to restore).
fn reports_of_settings(
    lab: &AgentTestbed,
    problem: &str,
    settings: &[(&str, &str, &str)],
    fails: &[&str],
    warns: &[&str],
) {
    let set: Vec<(&str, &str)> = settings.iter().map(|&(k, v, _)| (k, v)).collect();
    let restore: Vec<(&str, &str)> = settings.iter().map(|&(k, _, v)| (k, v)).collect();
    reports(
        lab,
        problem,
        |ns| sysctls(ns, &set),
        |ns| sysctls(ns, &restore),
        fails,
        warns,
    );
}

/// [`reports`] of the configuration edited by `edit`.
fn reports_of_config(
    lab: &AgentTestbed,
    problem: &str,
    edit: impl FnOnce(&str) -> String,
    fails: &[&str],
) {
    let path = lab.agent().config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let edited = edit(&config);
    assert_ne!(edited, config, "{problem}: the edit changes nothing");
    reports(
        lab,
        problem,
        |_| std::fs::write(&path, edited).unwrap(),
        |_| std::fs::write(&path, &config).unwrap(),
        fails,
        &[],
    );
}

#[test]
fn doctor_reports_each_problem_of_a_nat_director_alone() {
    require_privileged!();
    let lab = testbed("doctor", Mode::Nat);
    let director = &lab.testbed.director_ns;
    // What the agent would set itself, set beforehand so that the clean lab warns of nothing
    // but the veth checksums.
    sysctls(
        director,
        &[
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
        ],
    );
    let (clean, ok) = doctor(&lab);
    assert!(ok, "{clean:#?}");
    assert_eq!(at(&clean, "fail"), BTreeSet::new(), "{clean:#?}");
    assert_eq!(
        at(&clean, "warn"),
        BTreeSet::from(["veth_checksums".to_string()]),
        "{clean:#?}"
    );
    let vip = format!("{VIP_V4}/32");

    reports(
        &lab,
        "strict rp_filter without the VIP on eth0",
        |ns| {
            sysctls(ns, &[("net.ipv4.conf.eth0.rp_filter", "1")]);
            ns.ip(&["addr", "del", &vip, "dev", "eth0"]).unwrap();
        },
        |ns| {
            sysctls(ns, &[("net.ipv4.conf.eth0.rp_filter", "0")]);
            ns.add_addr("eth0", &vip).unwrap();
        },
        &["rp_filter"],
        &[],
    );
    reports_of_settings(
        &lab,
        "forwarding off",
        &[("net.ipv4.ip_forward", "0", "1")],
        &["forwarding"],
        &[],
    );
    reports_of_settings(
        &lab,
        "accept_local off",
        &[
            ("net.ipv4.conf.all.accept_local", "0", "1"),
            ("net.ipv4.conf.eth0.accept_local", "0", "1"),
        ],
        &["accept_local"],
        &[],
    );
    reports_of_settings(
        &lab,
        "ICMP redirects on",
        &[("net.ipv4.conf.eth0.send_redirects", "1", "0")],
        &[],
        &["send_redirects"],
    );
    // The backend, b1, routed through an interface the program is not attached to.
    let b1 = Family::V4.backend(0).to_string();
    reports(
        &lab,
        "a NAT backend behind an unattached interface",
        |ns| {
            ns.ip(&[
                "link", "add", "name", "side0", "type", "veth", "peer", "name", "side1",
            ])
            .unwrap();
            ns.ip(&["link", "set", "dev", "side0", "up"]).unwrap();
            ns.ip(&["link", "set", "dev", "side1", "up"]).unwrap();
            ns.ip(&["route", "add", &format!("{b1}/32"), "dev", "side0"])
                .unwrap();
        },
        |ns| {
            ns.ip(&["link", "del", "side0"]).unwrap();
        },
        &["nat_routes"],
        &[],
    );

    // Under `ip netns exec` /sys is a fresh sysfs: the default pin path has no bpffs.
    let pins = lab.agent().pins.display().to_string();
    reports_of_config(
        &lab,
        "the pin path not on a bpffs",
        |config| config.replace(&pins, "/sys/fs/bpf/xlb-doctor"),
        &["pin_path"],
    );
}

#[test]
fn doctor_reports_a_veth_peer_without_xdp() {
    require_privileged!();
    let mut lab = testbed("doctorpeer", Mode::Dr);
    // A second port of the director, to the client, whose end runs no XDP program.
    let director = lab.testbed.director_ns.clone();
    let client = lab.testbed.client.clone();
    lab.testbed
        .topology
        .link(&director, "eth1", &client, "eth1")
        .unwrap();
    let (clean, ok) = doctor(&lab);
    assert!(ok, "{clean:#?}");
    assert_eq!(at(&clean, "fail"), BTreeSet::new(), "{clean:#?}");
    reports_of_config(
        &lab,
        "a veth peer without XDP",
        |config| {
            config.replace(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\", \"eth1\"]",
            )
        },
        &["veth_peer"],
    );
}

#[test]
fn xlb_run_refuses_a_pin_path_not_on_bpffs_before_loading() {
    require_privileged!();
    let mut lab = testbed("doctorpins", Mode::Dr);
    // The default pin path: under `ip netns exec` /sys/fs/bpf is a directory of a fresh sysfs,
    // and a bpffs mounted there would go with the agent's mount namespace.
    let config = std::fs::read_to_string(lab.agent().config_path()).unwrap();
    let pins = lab.agent().pins.display().to_string();
    std::fs::write(
        lab.agent().config_path(),
        config.replace(&pins, "/sys/fs/bpf/xlb"),
    )
    .unwrap();
    let e = lab.start().unwrap_err().to_string();
    assert!(
        e.contains(
            "cannot pin the data plane at /sys/fs/bpf/xlb: /sys/fs/bpf is not on a BPF \
             filesystem in this mount namespace: mount one there (`mount -t bpf bpf /sys/fs/bpf`)"
        ),
        "{e}"
    );
    assert_eq!(lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(), None);
}
