//! `xlb doctor`: whether this host can run a configuration as a director.
//! The facts are gathered first ([`gather`]), then judged by pure
//! functions, one per check, into [`Finding`]s.

mod facts;

use std::{fmt, net::IpAddr};

use lb_common::maps::Mode;
use serde::Serialize;

use crate::{
    dataplane::{mount_bpffs_fix, AttachMode},
    model::Model,
    sysctl,
};

pub use facts::{gather, Facts, Link, Peer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's verdict on one thing (an interface, a setting, a path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub detail: String,
    /// What to do about it, unless the level is ok.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warn,
            fix: Some(fix.into()),
            ..Finding::ok(check, detail)
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Fail,
            ..Finding::warn(check, detail, fix)
        }
    }
}

/// `ok    eth0: native XDP (driver veth)`, `FAIL  … -> fix: …`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{level:<6}{}", self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, " -> fix: {fix}")?;
        }
        Ok(())
    }
}

/// Every check of `model` against `facts`, in the order they print.
pub fn diagnose(model: &Model, facts: &Facts) -> Vec<Finding> {
    let mut findings = vec![kernel(&facts.kernel)];
    for name in &model.agent.interfaces {
        let link = facts
            .links
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("no facts were gathered about {name}")));
        match link {
            Ok(link) => findings.extend(interface(model, name, &link)),
            Err(e) => findings.push(Finding::fail(
                "xdp",
                format!("{name}: {e}"),
                "list existing interfaces in agent.interfaces",
            )),
        }
    }
    if facts
        .links
        .values()
        .any(|l| l.as_ref().is_ok_and(Link::is_veth))
    {
        findings.push(veth_checksums());
    }
    findings.extend(rp_filter(model, facts));
    findings.extend(nat_settings(model, facts));
    findings.push(pin_path(model, facts));
    findings.extend(nat_routes(model, facts));
    findings.push(api(model, facts));
    findings
}

/// Features xlb uses, by the kernel release that brought them.
const KERNEL_FEATURES: [((u32, u32), &str); 4] = [
    ((5, 9), "XDP links, which keep a pinned program attached"),
    (
        (5, 10),
        "bpf_redirect_neigh, for health probes through the data path",
    ),
    ((5, 11), "bpf_ktime_get_coarse_ns, the flows' clock"),
    ((5, 18), "bpf_xdp_get_buff_len, for ICMP too-big answers"),
];
/// Where the health program attaches with TCX rather than a clsact qdisc.
const TCX: (u32, u32) = (6, 6);

fn kernel(release: &str) -> Finding {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (numbers.next(), numbers.next()) else {
        return Finding::warn(
            "kernel",
            format!("kernel {release:?}: not a version xlb can read"),
            "run Linux 5.18 or later",
        );
    };
    let version = (major, minor);
    let missing: Vec<String> = KERNEL_FEATURES
        .iter()
        .filter(|(since, _)| version < *since)
        .map(|((a, b), what)| format!("{what} ({a}.{b})"))
        .collect();
    if !missing.is_empty() {
        return Finding::fail(
            "kernel",
            format!("kernel {release} lacks {}", missing.join(", ")),
            "run Linux 5.18 or later",
        );
    }
    let health = if version >= TCX {
        "TCX"
    } else {
        "a clsact qdisc (TCX from 6.6)"
    };
    Finding::ok(
        "kernel",
        format!(
            "kernel {release}: every feature xlb uses (5.18 and later); the health program \
             attaches with {health}"
        ),
    )
}

/// Drivers that run XDP programs natively (in the driver, before a socket
/// buffer is allocated), as `ethtool -i` names them.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "veth",
    "virtio_net",
    "tun",
    "bonding",
    "hv_netvsc",
    "mana",
    "ena",
    "gve",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "ice",
    "igb",
    "igc",
    "mlx4_en",
    "mlx5_core",
    "bnxt_en",
    "nfp",
    "qede",
    "sfc",
    "mvneta",
    "mvpp2",
    "netsec",
    "fec",
];

/// The checks of one attached interface.
fn interface(model: &Model, name: &str, link: &Link) -> Vec<Finding> {
    let mut findings = vec![xdp_driver(name, link, model.agent.xdp_mode)];
    findings.push(vlan_offload(name, link));
    if let Some(peer) = &link.veth_peer {
        findings.push(veth_peer(name, peer));
    }
    findings
}

fn xdp_driver(name: &str, link: &Link, mode: AttachMode) -> Finding {
    let Some(driver) = &link.driver else {
        return Finding::warn(
            "xdp",
            format!("{name}: its driver is unknown, so native XDP support is too"),
            "if `xlb run` cannot attach, set xdp_mode = \"generic\" (slower)",
        );
    };
    if mode == AttachMode::Generic {
        return Finding::ok(
            "xdp",
            format!("{name}: generic XDP (driver {driver}; xdp_mode = \"generic\")"),
        );
    }
    if NATIVE_XDP_DRIVERS.contains(&driver.as_str()) {
        Finding::ok("xdp", format!("{name}: native XDP (driver {driver})"))
    } else {
        Finding::warn(
            "xdp",
            format!("{name}: driver {driver} is not known to run XDP natively"),
            "if `xlb run` cannot attach, set xdp_mode = \"generic\" (slower)",
        )
    }
}

fn vlan_offload(name: &str, link: &Link) -> Finding {
    match link.rx_vlan_offload {
        None => Finding::warn(
            "vlan_offload",
            format!("{name}: rx-vlan-offload could not be read"),
            format!("check `ethtool -k {name}`: with VLANs, rx-vlan-offload must be off"),
        ),
        Some(true) if !link.vlans.is_empty() => Finding::fail(
            "vlan_offload",
            format!(
                "{name}: rx-vlan-offload strips the tags of {} before XDP sees them, so \
                 their frames leave untagged",
                link.vlans.join(", ")
            ),
            format!("ethtool -K {name} rxvlan off"),
        ),
        Some(true) => Finding::ok(
            "vlan_offload",
            format!("{name}: no VLANs on it (rx-vlan-offload on would hide their tags)"),
        ),
        Some(false) => Finding::ok("vlan_offload", format!("{name}: rx-vlan-offload off")),
    }
}

fn veth_peer(name: &str, peer: &Result<Peer, String>) -> Finding {
    match peer {
        Ok(Peer {
            name: peer,
            xdp: true,
        }) => Finding::ok(
            "veth_peer",
            format!("{name}: its veth peer {peer} runs XDP, so XDP_TX frames are delivered"),
        ),
        Ok(Peer {
            name: peer,
            xdp: false,
        }) => Finding::fail(
            "veth_peer",
            format!(
                "{name}: its veth peer {peer} runs no XDP program, so the frames xlb sends \
                 back out (XDP_TX) wait in its ring undelivered"
            ),
            format!(
                "attach a native XDP program that passes every frame to {peer}, in its \
                 namespace (e.g. `xlb attach --iface {peer}` while xlb runs)"
            ),
        ),
        Err(e) => Finding::warn(
            "veth_peer",
            format!("{name}: its veth peer could not be inspected: {e}"),
            "make sure the peer runs a native XDP program, or XDP_TX frames are not delivered",
        ),
    }
}

/// A condition on the other hosts, which no check here can see.
fn veth_checksums() -> Finding {
    Finding::warn(
        "veth_checksums",
        "veth: a client or NAT backend that sends over veth leaves its checksums for the \
         receiver to finish, and a frame xlb sends back out (XDP_TX) loses that note",
        "on each client and NAT backend behind a veth: ethtool -K IFACE tx off",
    )
}

/// An integer setting, or the finding that it could not be read.
fn setting(facts: &Facts, check: &'static str, key: &str) -> Result<u32, Finding> {
    facts
        .sysctls
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Finding::warn(
                check,
                format!("{key} could not be read"),
                format!("check `sysctl {key}`"),
            )
        })
}

/// `sysctl -w K=V …` for `keys`.
fn sysctl_w(keys: &[String], value: u32) -> String {
    let settings: Vec<String> = keys.iter().map(|k| format!("{k}={value}")).collect();
    format!("sysctl -w {}", settings.join(" "))
}

fn conf(family: &str, iface: &str, name: &str) -> String {
    sysctl::conf_key(family, iface, name)
}

/// With NAT or IP-in-IP, answers from a VIP (health probes through the
/// tunnel, NAT replies the program leaves to the kernel) arrive on the
/// interfaces; strict reverse-path filtering drops them unless the VIP is
/// on that interface.
fn rp_filter(model: &Model, facts: &Facts) -> Vec<Finding> {
    let vips: Vec<IpAddr> = model
        .services
        .iter()
        .filter(|s| matches!(s.mode, Mode::Nat | Mode::Ipip) && s.vip.is_ipv4())
        .map(|s| s.vip)
        .collect();
    if vips.is_empty() {
        return Vec::new();
    }
    let all_key = conf("ipv4", "all", "rp_filter");
    let mut findings = Vec::new();
    for name in &model.agent.interfaces {
        let key = conf("ipv4", name, "rp_filter");
        let values = setting(facts, "rp_filter", &all_key)
            .and_then(|all| Ok((all, setting(facts, "rp_filter", &key)?)));
        let (all, own) = match values {
            Ok(values) => values,
            Err(finding) => {
                findings.push(finding);
                continue;
            }
        };
        // The kernel applies the larger of the two.
        let strict = all.max(own) == 1;
        let addresses = facts
            .links
            .get(name)
            .and_then(|l| l.as_ref().ok())
            .map(|l| l.addresses.as_slice())
            .unwrap_or_default();
        let elsewhere: Vec<String> = vips
            .iter()
            .filter(|v| !addresses.contains(v))
            .map(IpAddr::to_string)
            .collect();
        let finding = if !strict {
            Finding::ok(
                "rp_filter",
                format!("{name}: rp_filter {} (not strict)", all.max(own)),
            )
        } else if elsewhere.is_empty() {
            Finding::ok(
                "rp_filter",
                format!("{name}: rp_filter strict, with the VIPs on {name}"),
            )
        } else {
            let verb = if elsewhere.len() > 1 { "are" } else { "is" };
            Finding::fail(
                "rp_filter",
                format!(
                    "{name}: rp_filter is strict and {} {verb} not on {name}, so answers from \
                     a VIP (tunnelled health probes, NAT replies left to the kernel) are dropped",
                    elsewhere.join(", ")
                ),
                sysctl_w(&[all_key.clone(), key], 2),
            )
        };
        findings.push(finding);
    }
    findings
}

/// Forwarding, local sources and ICMP redirects, for NAT services.
fn nat_settings(model: &Model, facts: &Facts) -> Vec<Finding> {
    let nat = || model.services.iter().filter(|s| s.mode == Mode::Nat);
    if nat().next().is_none() {
        return Vec::new();
    }
    let interfaces = &model.agent.interfaces;
    let mut findings = Vec::new();
    // bpf_fib_lookup answers only for an interface that forwards, and the
    // kernel forwards the replies the program leaves to it.
    for (family, global, has) in [
        (
            "ipv4",
            "net.ipv4.ip_forward",
            nat().any(|s| s.vip.is_ipv4()),
        ),
        (
            "ipv6",
            "net.ipv6.conf.all.forwarding",
            nat().any(|s| s.vip.is_ipv6()),
        ),
    ] {
        if !has {
            continue;
        }
        let keys = std::iter::once(global.to_string())
            .chain(interfaces.iter().map(|i| conf(family, i, "forwarding")));
        let mut off = Vec::new();
        for key in keys {
            match setting(facts, "forwarding", &key) {
                Ok(1) => {}
                Ok(_) => off.push(key),
                Err(finding) => findings.push(finding),
            }
        }
        findings.push(if off.is_empty() {
            Finding::ok("forwarding", format!("{family} forwarding on"))
        } else {
            Finding::fail(
                "forwarding",
                format!(
                    "{family} forwarding off ({}): NAT replies are not routed to the clients",
                    off.join(", ")
                ),
                sysctl_w(&off, 1),
            )
        });
    }
    if nat().any(|s| s.vip.is_ipv4()) {
        let all = setting(facts, "accept_local", &conf("ipv4", "all", "accept_local"));
        for name in interfaces {
            let key = conf("ipv4", name, "accept_local");
            // Either one allows it.
            let finding = match (all.clone(), setting(facts, "accept_local", &key)) {
                (Ok(1), _) | (_, Ok(1)) => {
                    Finding::ok("accept_local", format!("{name}: accept_local on"))
                }
                (Ok(_), Ok(_)) => Finding::fail(
                    "accept_local",
                    format!(
                        "{name}: accept_local off, so a NAT reply left to the kernel, whose \
                         source is already the VIP, is dropped as a martian"
                    ),
                    sysctl_w(&[key], 1),
                ),
                (Err(finding), _) | (_, Err(finding)) => finding,
            };
            findings.push(finding);
        }
        findings.push(send_redirects(interfaces, facts));
    }
    findings
}

/// ICMP redirects, which the agent turns off itself when it starts with a
/// NAT service.
fn send_redirects(interfaces: &[String], facts: &Facts) -> Finding {
    let keys: Vec<String> = std::iter::once("all")
        .chain(interfaces.iter().map(String::as_str))
        .map(|name| conf("ipv4", name, "send_redirects"))
        .collect();
    let mut on = Vec::new();
    for key in &keys {
        match setting(facts, "send_redirects", key) {
            Ok(0) => {}
            Ok(_) => on.push(key.clone()),
            Err(finding) => return finding,
        }
    }
    if on.is_empty() {
        return Finding::ok("send_redirects", "ICMP redirects off");
    }
    Finding::warn(
        "send_redirects",
        format!(
            "ICMP redirects on ({}): a redirect would tell NAT backends to bypass this \
             director; the agent turns them off when it starts",
            on.join(", ")
        ),
        sysctl_w(&keys, 0),
    )
}

fn pin_path(model: &Model, facts: &Facts) -> Finding {
    let dir = &model.agent.pin_path;
    match &facts.pin_dir {
        Ok((_, true)) => Finding::ok(
            "pin_path",
            format!("pin path {}: on a BPF filesystem", dir.display()),
        ),
        Ok((existing, false)) => Finding::fail(
            "pin_path",
            format!(
                "pin path {}: {} is not on a BPF filesystem in this mount namespace, so \
                 `xlb run` refuses to start",
                dir.display(),
                existing.display()
            ),
            mount_bpffs_fix(dir),
        ),
        Err(e) => Finding::fail(
            "pin_path",
            format!("pin path {}: {e}", dir.display()),
            "make pin_path a directory on a bpffs",
        ),
    }
}

fn nat_routes(model: &Model, facts: &Facts) -> Vec<Finding> {
    if !model.services.iter().any(|s| s.mode == Mode::Nat) {
        return Vec::new();
    }
    let found = match &facts.nat_routes {
        Ok(found) => found,
        Err(e) => {
            return vec![Finding::fail(
                "nat_routes",
                e.clone(),
                "route the NAT backends through an interface of agent.interfaces",
            )]
        }
    };
    let mut findings: Vec<Finding> = found
        .through
        .iter()
        .map(|(ifname, count)| {
            Finding::ok(
                "nat_routes",
                format!("{count} NAT backends and fallbacks are reached through {ifname}"),
            )
        })
        .collect();
    findings.extend(found.unrouted.iter().map(|(target, e)| {
        Finding::warn(
            "nat_routes",
            format!(
                "{} ({}): {e}; the agent leaves it out until it has a route",
                target.field, target.target
            ),
            format!(
                "route {} through an interface of agent.interfaces",
                target.target.ip()
            ),
        )
    }));
    findings
}

fn api(model: &Model, facts: &Facts) -> Finding {
    let listen = model.agent.api_listen;
    match (&facts.token, &model.agent.api_token_file) {
        (Ok(true), Some(file)) => Finding::ok(
            "api",
            format!(
                "API on {listen}; changes need the token in {}",
                file.display()
            ),
        ),
        (Ok(_), _) => Finding::ok(
            "api",
            format!("API on {listen}, loopback only, without a token"),
        ),
        (Err(e), _) => Finding::fail(
            "api",
            format!("API on {listen}: {e}"),
            "set agent.api_token_file to a file holding a token of 16 characters or more",
        ),
    }
}

#[cfg(test)]
mod tests;
