//! `xlb attach` for real: a client namespace sends traffic over a veth to a
//! director namespace where xlb is attached; xlb's counters must match what
//! was sent, and detaching must leave nothing attached.

use std::{
    net::SocketAddr,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use serde_json::Value;
use xlb_tests::{
    netns::{ChildHandle, Netns, Topology},
    require_privileged,
    traffic::{self, Load},
    xlb_bin,
};

const DIRECTOR_V4: &str = "198.18.0.2";
const DIRECTOR_V6: &str = "fd00:18::2";

/// A client and a director joined by a veth, `eth0` on both sides.
struct VethTestbed {
    topology: Topology,
    client: Netns,
    director_ns: Netns,
}

fn testbed(tag: &str) -> anyhow::Result<VethTestbed> {
    let mut topology = Topology::new(tag)?;
    let client = topology.add_ns("client")?;
    let director_ns = topology.add_ns("director")?;
    topology.link(&client, "eth0", &director_ns, "eth0")?;
    client.add_addr("eth0", "198.18.0.1/24")?;
    client.add_addr("eth0", "fd00:18::1/64")?;
    director_ns.add_addr("eth0", &format!("{DIRECTOR_V4}/24"))?;
    director_ns.add_addr("eth0", &format!("{DIRECTOR_V6}/64"))?;
    Ok(VethTestbed {
        topology,
        client,
        director_ns,
    })
}

fn xlb(args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(xlb_bin()?);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(cmd)
}

/// Waits until an XDP program is attached to `iface` in `ns`.
fn wait_attached(ns: &Netns, iface: &str, xlb: &ChildHandle) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(id) = ns.xdp_prog_id(iface)? {
            return Ok(id);
        }
        if let Some(out) = xlb.wait_timeout(Duration::from_millis(50))? {
            bail!(
                "xlb exited before attaching: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    bail!("no XDP program on {iface} after 10 s")
}

/// Sends `signal` and returns xlb's output once it has exited.
fn stop(xlb: &ChildHandle, signal: Signal) -> anyhow::Result<Output> {
    xlb.signal(signal)?;
    xlb.wait_timeout(Duration::from_secs(10))?
        .context("xlb did not exit within 10 s of the signal")
}

/// The JSON lines xlb printed: interval lines, then the final totals.
fn json_lines(out: &Output) -> anyhow::Result<(Vec<Value>, Value)> {
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("xlb --json printed a line that is not JSON")?;
    let last = lines.pop().context("xlb printed nothing")?;
    Ok((lines, last))
}

fn total(totals: &Value, name: &str) -> u64 {
    totals["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {totals}"))
}

fn counts_traffic(mode: &str) -> anyhow::Result<()> {
    let mut testbed = testbed(mode)?;
    let cmd = xlb(&[
        "attach",
        "--iface",
        "eth0",
        "--mode",
        mode,
        "--json",
        "--interval",
        "0.2",
    ])?;
    let xlb = testbed.topology.spawn(&testbed.director_ns, cmd)?;
    wait_attached(&testbed.director_ns, "eth0", &xlb)?;

    let load = Load {
        count: 300,
        per_second: 2000,
        max_duration: Duration::from_secs(10),
    };
    let udp4 = traffic::udp(
        &testbed.client,
        format!("{DIRECTOR_V4}:9999").parse()?,
        64,
        load,
    )?;
    let udp6 = traffic::udp(
        &testbed.client,
        format!("[{DIRECTOR_V6}]:9999").parse()?,
        64,
        load,
    )?;
    let syn_load = Load { count: 20, ..load };
    let tcp4 = traffic::tcp_connects(
        &testbed.client,
        format!("{DIRECTOR_V4}:80").parse()?,
        syn_load,
    )?;
    let tcp6_addr: SocketAddr = format!("[{DIRECTOR_V6}]:80").parse()?;
    let tcp6 = traffic::tcp_connects(&testbed.client, tcp6_addr, syn_load)?;
    assert_eq!(
        (udp4, udp6, tcp4, tcp6),
        (300, 300, 20, 20),
        "the senders stopped early"
    );
    // Let the last interval line come out.
    std::thread::sleep(Duration::from_millis(400));

    let out = stop(&xlb, Signal::SIGINT)?;
    assert!(
        out.status.success(),
        "xlb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (intervals, totals) = json_lines(&out)?;

    assert_eq!(totals["detached"], "eth0");
    assert_eq!(total(&totals, "udp"), udp4 + udp6, "{totals}");
    // Each refused connect is one SYN (the RST answers it at once).
    assert_eq!(total(&totals, "tcp"), tcp4 + tcp6, "{totals}");
    // The client sends nothing else over IPv4; over IPv6 neighbour discovery
    // and MLD add packets of their own.
    assert_eq!(total(&totals, "ipv4"), udp4 + tcp4, "{totals}");
    assert!(total(&totals, "ipv6") >= udp6 + tcp6, "{totals}");
    assert_eq!(
        total(&totals, "pass"),
        total(&totals, "rx_packets"),
        "{totals}"
    );
    assert_eq!(
        total(&totals, "truncated") + total(&totals, "malformed"),
        0,
        "{totals}"
    );
    assert!(
        total(&totals, "rx_bytes") >= (udp4 + udp6) * (14 + 8 + 64),
        "{totals}"
    );

    assert!(!intervals.is_empty(), "no interval lines");
    let peak_udp_rate = intervals
        .iter()
        .filter_map(|line| line["rates"]["udp"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        peak_udp_rate > 0.0,
        "no interval showed a UDP rate: {intervals:?}"
    );

    assert_eq!(
        testbed.director_ns.xdp_prog_id("eth0")?,
        None,
        "still attached after SIGINT"
    );
    Ok(())
}

#[test]
fn attach_native_counts_traffic_from_peer_namespace() -> anyhow::Result<()> {
    require_privileged!();
    counts_traffic("native")
}

#[test]
fn attach_generic_counts_traffic_from_peer_namespace() -> anyhow::Result<()> {
    require_privileged!();
    counts_traffic("generic")
}

#[test]
fn attach_detaches_on_sigterm() -> anyhow::Result<()> {
    require_privileged!();
    let mut testbed = testbed("sigterm")?;
    let xlb_run = testbed
        .topology
        .spawn(&testbed.director_ns, xlb(&["attach", "--iface", "eth0"])?)?;
    let id = wait_attached(&testbed.director_ns, "eth0", &xlb_run)?;
    assert!(id > 0);
    let out = stop(&xlb_run, Signal::SIGTERM)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("totals on eth0"),
        "no totals table: {stdout}"
    );
    assert_eq!(testbed.director_ns.xdp_prog_id("eth0")?, None);
    Ok(())
}

/// Runs xlb to completion inside `ns` and returns (exit code, stderr).
fn run_xlb(testbed: &mut VethTestbed, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let child = testbed.topology.spawn(&testbed.director_ns, xlb(args)?)?;
    let out = child
        .wait_timeout(Duration::from_secs(10))?
        .context("xlb did not exit")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn attach_errors_name_the_problem_and_change_nothing() -> anyhow::Result<()> {
    require_privileged!();
    let mut testbed = testbed("errors")?;

    let (code, err) = run_xlb(&mut testbed, &["attach", "--iface", "nope0"])?;
    assert_eq!(code, 1);
    assert!(err.contains("no such network interface: nope0"), "{err}");

    let (code, err) = run_xlb(
        &mut testbed,
        &["attach", "--iface", "lo", "--mode", "native"],
    )?;
    assert_eq!(code, 1);
    assert!(
        err.contains("lo does not support native XDP; try --mode generic"),
        "{err}"
    );
    assert_eq!(testbed.director_ns.xdp_prog_id("lo")?, None);

    // A program already on the interface is left alone.
    let first = testbed
        .topology
        .spawn(&testbed.director_ns, xlb(&["attach", "--iface", "eth0"])?)?;
    let id = wait_attached(&testbed.director_ns, "eth0", &first)?;
    let (code, err) = run_xlb(&mut testbed, &["attach", "--iface", "eth0"])?;
    assert_eq!(code, 1);
    assert!(
        err.contains("an XDP program is already attached to eth0"),
        "{err}"
    );
    assert_eq!(
        testbed.director_ns.xdp_prog_id("eth0")?,
        Some(id),
        "the first program was replaced"
    );
    stop(&first, Signal::SIGINT)?;

    let (code, err) = run_xlb(
        &mut testbed,
        &["attach", "--iface", "eth0", "--interval", "0"],
    )?;
    assert_eq!(code, 2, "usage errors exit 2");
    assert!(
        err.contains("`0` is not a positive number of seconds"),
        "{err}"
    );
    Ok(())
}

#[test]
fn attach_without_privileges_says_which_are_missing() -> anyhow::Result<()> {
    require_privileged!();
    let mut testbed = testbed("unpriv")?;
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ])
    .arg(xlb_bin()?)
    .args(["attach", "--iface", "eth0"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = testbed.topology.spawn(&testbed.director_ns, cmd)?;
    let out = child
        .wait_timeout(Duration::from_secs(10))?
        .context("xlb did not exit")?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs root, or CAP_BPF and CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(err.contains("lacks CAP_BPF and CAP_NET_ADMIN"), "{err}");
    assert_eq!(testbed.director_ns.xdp_prog_id("eth0")?, None);
    Ok(())
}
