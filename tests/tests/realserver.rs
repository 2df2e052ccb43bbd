//! `xlb realserver` run as an operator would (`ip netns exec`) in a real server's namespace: DR
//! and IP-in-IP set up, shown in the namespace's addresses, settings and XDP program, a second
//! run that changes nothing, and `--remove`; and a DR real server set up by it alone serving
//! real connections through the agent.

use std::path::Path;

use lb_common::maps::Mode;
use xlb_tests::{
    agent::{mount_bpffs, AgentTestbed, ServiceConf, BPF_FS},
    lab::{Family, VIP_V4, VIP_V6},
    netns::{Netns, Topology},
    require_privileged,
    servers::tcp_spread,
    xlb_bin,
};

/// `xlb realserver ARGS` in `ns`: its output, after asserting it succeeded.
fn realserver(ns: &Netns, args: &[&str]) -> String {
    let xlb = xlb_bin().unwrap();
    let out = ns
        .exec(xlb.to_str().unwrap(), &[&["realserver"], args].concat())
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "xlb realserver {args:?}: {text}");
    println!("$ xlb realserver {}\n{text}", args.join(" "));
    text
}

/// A real server's namespace with `eth0` (to a peer namespace), and every setting
/// `xlb realserver` may change at the kernel's default.
fn real_server(topology: &mut Topology) -> Netns {
    let rs = topology.add_ns("rs").unwrap();
    let peer = topology.add_ns("dir").unwrap();
    topology.link(&rs, "eth0", &peer, "eth0").unwrap();
    for name in ["all", "lo", "eth0"] {
        for setting in ["arp_ignore", "arp_announce", "rp_filter"] {
            rs.sysctl(&format!("net.ipv4.conf.{name}.{setting}"), "0")
                .unwrap();
        }
    }
    rs
}

/// Asserts that `out` has each of `lines` as a line of its own.
fn has_lines(out: &str, lines: &[&str]) {
    for line in lines {
        assert!(out.lines().any(|l| l == *line), "{line:?} in {out}");
    }
}

fn setting(ns: &Netns, key: &str) -> String {
    ns.read_sysctl(key).unwrap()
}

#[test]
fn dr_is_set_up_once_and_removed() {
    require_privileged!();
    let mut topology = Topology::new("rsdr").unwrap();
    let rs = real_server(&mut topology);
    let vip4 = VIP_V4.to_string();
    let vip6 = VIP_V6.to_string();
    let args = [
        "--mode", "dr", "--vip", &vip4, "--vip", &vip6, "--iface", "eth0",
    ];

    let out = realserver(&rs, &args);
    has_lines(
        &out,
        &[
            "set net.ipv4.conf.all.arp_ignore 0 -> 1",
            "set net.ipv4.conf.all.arp_announce 0 -> 2",
            "set net.ipv4.conf.lo.arp_ignore 0 -> 1",
            "set net.ipv4.conf.eth0.arp_announce 0 -> 2",
            "add 198.18.0.100/32 to lo",
            "add fd00::100/128 to lo (nodad)",
        ],
    );
    assert!(rs.has_addr("lo", &vip4).unwrap());
    assert!(rs.has_addr("lo", &vip6).unwrap());
    assert_eq!(setting(&rs, "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(setting(&rs, "net.ipv4.conf.eth0.arp_announce"), "2");

    let again = realserver(&rs, &args);
    assert_eq!(again.trim(), "nothing to change: already set up");

    let dry = realserver(&rs, &[&args[..], &["--remove", "--dry-run"]].concat());
    has_lines(&dry, &["would remove 198.18.0.100/32 from lo"]);
    assert!(
        rs.has_addr("lo", &vip4).unwrap(),
        "a dry run changes nothing"
    );

    let removed = realserver(&rs, &[&args[..], &["--remove"]].concat());
    has_lines(
        &removed,
        &[
            "remove 198.18.0.100/32 from lo",
            "remove fd00::100/128 from lo",
            "set net.ipv4.conf.all.arp_ignore 1 -> 0",
            "set net.ipv4.conf.eth0.arp_announce 2 -> 0",
        ],
    );
    assert!(!rs.has_addr("lo", &vip4).unwrap());
    assert!(!rs.has_addr("lo", &vip6).unwrap());
    assert_eq!(setting(&rs, "net.ipv4.conf.lo.arp_ignore"), "0");
    let again = realserver(&rs, &[&args[..], &["--remove"]].concat());
    assert_eq!(again.trim(), "nothing to change: already not set up");
}

#[test]
fn ipip_attaches_the_decapsulator_once_and_removes_it() {
    require_privileged!();
    mount_bpffs().unwrap();
    let mut topology = Topology::new("rsipip").unwrap();
    let rs = real_server(&mut topology);
    rs.sysctl("net.ipv4.conf.eth0.rp_filter", "1").unwrap();
    // On the tests' bpffs: under `ip netns exec`, /sys/fs/bpf is a plain sysfs directory.
    let pins = format!("{BPF_FS}/realserver-{}", std::process::id());
    let vip4 = VIP_V4.to_string();
    let args = [
        "--mode",
        "ipip",
        "--vip",
        &vip4,
        "--iface",
        "eth0",
        "--from",
        "198.18.1.2",
        "--pin-path",
        &pins,
    ];

    let out = realserver(&rs, &args);
    has_lines(
        &out,
        &[
            "set net.ipv4.conf.all.arp_ignore 0 -> 1",
            "set net.ipv4.conf.eth0.rp_filter 1 -> 2",
            "add 198.18.0.100/32 to lo",
            "attach xlb decap to eth0",
        ],
    );
    assert!(rs.xdp_prog_id("eth0").unwrap().is_some(), "{out}");
    assert!(Path::new(&pins).exists());
    assert_eq!(setting(&rs, "net.ipv4.conf.eth0.rp_filter"), "2");

    let again = realserver(&rs, &args);
    assert_eq!(again.trim(), "nothing to change: already set up");
    // Another director: the decapsulator is updated in place.
    let more = [&args[..], &["--from", "198.18.1.3"]].concat();
    let updated = realserver(&rs, &more);
    assert!(
        updated.starts_with("update the VIPs and directors of xlb decap on eth0\n")
            && updated.contains("directors: 198.18.1.2, 198.18.1.3 (were 198.18.1.2)"),
        "{updated}"
    );

    let removed = realserver(&rs, &[&more[..], &["--remove"]].concat());
    has_lines(
        &removed,
        &[
            "detach xlb decap from eth0",
            "remove 198.18.0.100/32 from lo",
        ],
    );
    assert_eq!(rs.xdp_prog_id("eth0").unwrap(), None);
    assert!(!Path::new(&pins).exists(), "pins left at {pins}");
    assert!(!rs.has_addr("lo", &vip4).unwrap());
}

#[test]
fn a_dr_real_server_set_up_by_xlb_realserver_serves_through_the_agent() {
    require_privileged!();
    let service = ServiceConf {
        weights: &[1],
        ..ServiceConf::new("web", Mode::Dr, Family::V4)
    };
    let mut lab = AgentTestbed::new("rsserve", Mode::Dr, Family::V4, 1, &service.toml()).unwrap();
    // Undo what the lab did for b1, then let `xlb realserver` do it.
    let b1 = lab.testbed.backends[0].clone();
    for cidr in [format!("{VIP_V4}/32"), format!("{VIP_V6}/128")] {
        b1.ip(&["addr", "del", &cidr, "dev", "lo"]).unwrap();
    }
    b1.set_sysctls(&[
        ("net.ipv4.conf.all.arp_ignore", "0"),
        ("net.ipv4.conf.all.arp_announce", "0"),
    ])
    .unwrap();
    let vip4 = VIP_V4.to_string();
    let out = realserver(&b1, &["--mode", "dr", "--vip", &vip4, "--iface", "eth0"]);
    has_lines(&out, &["add 198.18.0.100/32 to lo"]);

    lab.start().unwrap();
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 100).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}\n{}", lab.agent().logs());
    assert_eq!(spread.by_backend.len(), 1, "{spread:?}");
    lab.agent_mut().stop().unwrap();
}
