//! `xlb-bench`: xlb's benchmarks, run by `cargo xtask bench`. Each prints
//! its table to stdout and writes `<name>.json`, `<name>.md` and its charts
//! (SVG) to `--out`.

mod contenders;
mod control;
mod failover;
mod flood;
mod micro;
mod plot;
mod report;
mod scale;
mod tcp;
mod udp;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use report::Report;

type Run = fn(bool) -> anyhow::Result<Report>;

/// Every benchmark, in the order `all` runs them.
const BENCHES: &[(&str, Run)] = &[
    ("micro", micro::run),
    ("control", control::run),
    ("failover", failover::run),
    ("tcp", tcp::run),
    ("udp", udp::run),
    ("flood", flood::run),
    ("scale", scale::run),
];

#[derive(Parser)]
#[command(name = "xlb-bench", about = "xlb's benchmarks (need root)")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Nanoseconds per packet on each path through the XDP program, timed
    /// by the kernel with BPF_PROG_TEST_RUN (no traffic).
    Micro(MicroOptions),
    /// The agent's control plane: API change to data plane, Maglev builds,
    /// CPU of health checks.
    Control(Options),
    /// VRRP failover: takeover and outage for SIGKILL, a lost director and
    /// a clean stop, xlb against keepalived, at 1 s, 100 ms and 20 ms adverts.
    Failover(Options),
    /// Short TCP connections through xlb, nftables DNAT, HAProxy and no
    /// director: connections/s, latency, CPU per connection.
    Tcp(Options),
    /// Small UDP packets over many flows through xlb, nftables DNAT and no
    /// director: delivered packets/s and CPU-ns per packet.
    Udp(Options),
    /// A spoofed SYN flood against the VIP while 1,000 established
    /// connections exchange data: their delivery ratio, the CPU and the
    /// flood's rate, xlb with the flood guard on and off and nftables DNAT.
    Flood(Options),
    /// How the cost per packet grows with flows, backends and services,
    /// timed by the kernel with BPF_PROG_TEST_RUN (no traffic).
    Scale(Options),
    /// Every benchmark in turn, each writing its own files; the run fails at
    /// the end if any benchmark failed, naming them.
    All(Options),
}

#[derive(Args)]
struct Options {
    /// Fewer and shorter batches: a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Where to write the results.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct MicroOptions {
    #[command(flatten)]
    options: Options,
    /// Time only the cases whose name or path contains TEXT (and the floor
    /// and the DR hit they are set against): to profile one path, as in
    /// `perf record -a -g -- xlb-bench micro --only "NAT reply" --out DIR`.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let (name, options) = match Cli::parse().bench {
        Bench::Micro(MicroOptions {
            options,
            only: Some(only),
        }) => {
            let report = micro::run_only(options.quick, Some(&only))?;
            return write(&report, "micro", &options.out);
        }
        Bench::Micro(MicroOptions { options, .. }) => ("micro", options),
        Bench::Control(options) => ("control", options),
        Bench::Failover(options) => ("failover", options),
        Bench::Tcp(options) => ("tcp", options),
        Bench::Udp(options) => ("udp", options),
        Bench::Flood(options) => ("flood", options),
        Bench::Scale(options) => ("scale", options),
        Bench::All(options) => ("all", options),
    };
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "xlb-bench loads XDP programs and builds namespaces: run it as root \
             (`sudo cargo xtask bench {name}`)"
        );
    }
    if name != "all" {
        let (_, run) = BENCHES
            .iter()
            .find(|(bench, _)| *bench == name)
            .expect("every subcommand is in BENCHES");
        let report = run(options.quick)?;
        return write(&report, name, &options.out);
    }
    let mut failed = Vec::new();
    for (name, run) in BENCHES {
        eprintln!("==> the {name} benchmark");
        let done = run(options.quick).and_then(|report| write(&report, name, &options.out));
        if let Err(e) = done {
            eprintln!("the {name} benchmark failed: {e:#}\n");
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Prints the report and writes it as JSON and markdown, and its charts, under `out`.
fn write(report: &Report, name: &str, out: &Path) -> anyhow::Result<()> {
    print!("{}", report.text());
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join(format!("{name}.json"));
    let md = out.join(format!("{name}.md"));
    fs::write(&json, serde_json::to_string_pretty(&report.json)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    println!("\nwrote {} and {}", json.display(), md.display());
    for plot in &report.plots {
        let path = out.join(&plot.file);
        (plot.draw)(&path).with_context(|| format!("drawing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
