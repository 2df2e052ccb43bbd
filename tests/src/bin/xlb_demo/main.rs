//! `cargo xtask demo`: real TCP connections balanced by xlb over three
//! backends in each forwarding mode, on the namespace lab of
//! [`xlb_tests::lab`], with where each connection went.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::Parser;
use lb_common::{maps::Mode, stats::Counter};
use serde_json::json;
use xlb_tests::{
    lab::{Family, InProcessTestbed, Member},
    servers::tcp_spread,
};

#[derive(Parser)]
#[command(about = "Balance real connections through xlb in each forwarding mode")]
struct Args {
    /// Print the summary as one JSON object on stdout; progress goes to stderr.
    #[arg(long)]
    json: bool,
    /// TCP connections per mode.
    #[arg(long, default_value_t = 300)]
    connections: u64,
}

const MODES: [(&str, Mode, &str); 3] = [
    (
        "dr",
        Mode::Dr,
        "direct routing: MAC rewrite, backends answer the client directly",
    ),
    (
        "ipip",
        Mode::Ipip,
        "IP-in-IP: tunnelled to backends running xlb decap",
    ),
    (
        "nat",
        Mode::Nat,
        "NAT: VIP:80 to backend:8080, replies translated back",
    ),
];
const EQUAL: [Member; 3] = [Member::new(0, 1), Member::new(1, 1), Member::new(2, 1)];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches XDP programs: run it as root");
    }
    let mut summary = serde_json::Map::new();
    let mut failed = 0;
    for (name, mode, what) in MODES {
        eprintln!("==> {what}");
        let lab = InProcessTestbed::new(
            &format!("demo_{name}"),
            mode,
            Family::V4,
            EQUAL.len(),
            &EQUAL,
        )
        .with_context(|| format!("building the {name} lab"))?;
        let spread = tcp_spread(&lab.testbed.client, lab.vip(), args.connections)?;
        let backends: BTreeMap<String, u64> = lab
            .testbed
            .servers
            .iter()
            .enumerate()
            .map(|(n, server)| {
                let answered = spread.by_backend.get(server.name()).copied().unwrap_or(0);
                (Family::V4.backend(n).to_string(), answered)
            })
            .collect();
        let counters = lab.balancer.counters()?;
        if !args.json {
            println!(
                "{name}: {} TCP connections to {}, three backends of equal weight",
                args.connections,
                lab.vip()
            );
            println!("    {:<14} {:>9} {:>7}", "backend", "answered", "share");
            for (backend, answered) in &backends {
                let share = 100.0 * *answered as f64 / args.connections as f64;
                println!("    {backend:<14} {answered:>9} {share:>6.1}%");
            }
            println!("    {:<14} {:>9}", "failed", spread.failed);
            println!(
                "    director: {} new flows, {} flow-table hits, {} frames sent{}\n",
                counters.get(Counter::FlowMiss),
                counters.get(Counter::FlowHit),
                counters.get(Counter::Tx),
                if mode == Mode::Nat {
                    format!(", {} replies translated", counters.get(Counter::NatReply))
                } else {
                    String::new()
                }
            );
        }
        failed += spread.failed;
        summary.insert(
            name.into(),
            json!({ "backends": backends, "failed": spread.failed }),
        );
    }
    if args.json {
        println!("{}", json!({ "modes": summary }));
    }
    if failed > 0 {
        bail!("{failed} connections failed");
    }
    Ok(())
}
