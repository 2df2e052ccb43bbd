//! `cargo xtask demo`: xlb attached in a namespace topology, real traffic
//! through it, and what it counted set against what was sent.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use lb_common::stats::Counter;
use nix::sys::signal::Signal;
use xlb_tests::{
    netns::{ChildHandle, Topology},
    traffic::{self, Load},
};

use crate::shell;

const CLIENT: [&str; 2] = ["198.18.0.1/24", "fd00:18::1/64"];
const DIRECTOR: [&str; 2] = ["198.18.0.2/24", "fd00:18::2/64"];
const UDP_PER_SECOND: u64 = 2000;
const SYN_PER_SECOND: u64 = 20;

pub fn run(xlb: &Path, seconds: u64) -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!("the demo creates network namespaces and attaches XDP programs: run it as root");
    }
    shell::step("building the topology");
    let mut topology = Topology::new("demo")?;
    let client = topology.add_ns("client")?;
    let director = topology.add_ns("director")?;
    topology.link(&client, "eth0", &director, "eth0")?;
    for (ns, addrs) in [(&client, CLIENT), (&director, DIRECTOR)] {
        for addr in addrs {
            ns.add_addr("eth0", addr)?;
        }
    }
    println!(
        "    {:<9} eth0 {}  (sends traffic)",
        "client",
        CLIENT.join(" ")
    );
    println!(
        "    {:<9} eth0 {}  (xlb attached, native XDP)",
        "director",
        DIRECTOR.join(" ")
    );

    shell::step(&format!(
        "xlb attach --iface eth0, {seconds} s of traffic from the client"
    ));
    let mut cmd = Command::new(xlb);
    cmd.args([
        "attach",
        "--iface",
        "eth0",
        "--mode",
        "native",
        "--interval",
        "1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let xlb_run = topology.spawn(&director, cmd)?;
    wait_attached(&director, &xlb_run)?;

    let duration = Duration::from_secs(seconds);
    let udp = Load {
        count: UDP_PER_SECOND * seconds,
        per_second: UDP_PER_SECOND,
        max_duration: duration + Duration::from_secs(2),
    };
    let syn = Load {
        count: SYN_PER_SECOND * seconds,
        per_second: SYN_PER_SECOND,
        ..udp
    };
    let v4: SocketAddr = "198.18.0.2:5000".parse()?;
    let v6: SocketAddr = "[fd00:18::2]:5000".parse()?;
    let senders = [
        (client.clone(), v4, false, udp),
        (client.clone(), v6, false, udp),
        (client.clone(), SocketAddr::new(v4.ip(), 80), true, syn),
        (client.clone(), SocketAddr::new(v6.ip(), 80), true, syn),
    ]
    .map(|(ns, dst, tcp, load)| {
        thread::spawn(move || {
            if tcp {
                traffic::tcp_connects(&ns, dst, load)
            } else {
                traffic::udp(&ns, dst, 64, load)
            }
        })
    });

    let mut echoed = 0;
    while senders.iter().any(|s| !s.is_finished()) {
        echoed = echo_new_lines(&xlb_run, echoed);
        thread::sleep(Duration::from_millis(100));
    }
    let [udp4, udp6, syn4, syn6] = senders.map(|s| s.join().expect("sender thread panicked"));
    let (udp4, udp6, syn4, syn6) = (udp4?, udp6?, syn4?, syn6?);
    thread::sleep(Duration::from_millis(1100));

    xlb_run.signal(Signal::SIGINT)?;
    let out = xlb_run
        .wait_timeout(Duration::from_secs(10))?
        .context("xlb did not exit after SIGINT")?;
    echo_new_lines(&xlb_run, echoed);
    if !out.status.success() {
        bail!("xlb attach failed ({})", out.status);
    }
    if director.xdp_prog_id("eth0")?.is_some() {
        bail!("xlb left its program attached to eth0");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counted = totals(&stdout)?;

    shell::step("sent by the client vs counted by xlb");
    let rows = [
        (
            "UDP datagrams (IPv4 + IPv6)",
            udp4 + udp6,
            counted[Counter::Udp.name()],
        ),
        (
            "TCP SYNs (IPv4 + IPv6)",
            syn4 + syn6,
            counted[Counter::Tcp.name()],
        ),
        ("IPv4 packets", udp4 + syn4, counted[Counter::Ipv4.name()]),
    ];
    println!("    {:<28} {:>8} {:>8}", "", "sent", "counted");
    let mut all_match = true;
    for (what, sent, seen) in rows {
        let verdict = if sent == seen { "match" } else { "MISMATCH" };
        all_match &= sent == seen;
        println!("    {what:<28} {sent:>8} {seen:>8}  {verdict}");
    }
    println!(
        "    (IPv6 counted {} packets: the {} sent plus neighbour discovery and MLD)",
        counted[Counter::Ipv6.name()],
        udp6 + syn6
    );
    if !all_match {
        bail!("xlb's counters do not match the traffic sent");
    }
    drop(topology);
    shell::step("done: program detached, namespaces removed");
    Ok(())
}

fn wait_attached(director: &xlb_tests::netns::Netns, xlb: &ChildHandle) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while director.xdp_prog_id("eth0")?.is_none() {
        if xlb.wait_timeout(Duration::from_millis(50))?.is_some() || Instant::now() > deadline {
            bail!("xlb did not attach to eth0");
        }
    }
    Ok(())
}

/// Prints complete stdout lines after byte `from`; returns the new offset.
fn echo_new_lines(xlb: &ChildHandle, from: usize) -> usize {
    let stdout = xlb.stdout_snapshot();
    let end = stdout
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if end > from {
        print!("{}", String::from_utf8_lossy(&stdout[from..end]));
    }
    end.max(from)
}

/// The counters from `xlb attach`'s closing totals table.
fn totals(stdout: &str) -> anyhow::Result<HashMap<&str, u64>> {
    let table = stdout
        .split_once("totals on ")
        .context("xlb printed no totals")?
        .1;
    let totals: HashMap<&str, u64> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(char::is_whitespace)?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect();
    for counter in Counter::ALL {
        if !totals.contains_key(counter.name()) {
            bail!("xlb's totals lack {}", counter.name());
        }
    }
    Ok(totals)
}
