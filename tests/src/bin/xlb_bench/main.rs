//! `xlb-bench`: xlb's benchmarks, run by `cargo xtask bench`. Each prints
//! its table to stdout and writes `<name>.json` and `<name>.md` to `--out`.

mod control;
mod failover;
mod micro;
mod report;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use report::Report;

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
    Micro(Options),
    /// The agent's control plane: API change to data plane, Maglev builds,
    /// CPU of health checks.
    Control(Options),
    /// VRRP failover: takeover and outage for SIGKILL, a lost director and
    /// a clean stop, xlb against keepalived, at 1 s, 100 ms and 20 ms adverts.
    Failover(Options),
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

fn main() -> anyhow::Result<()> {
    type Run = fn(bool) -> anyhow::Result<Report>;
    let (name, options, run): (&str, Options, Run) = match Cli::parse().bench {
        Bench::Micro(options) => ("micro", options, micro::run),
        Bench::Control(options) => ("control", options, control::run),
        Bench::Failover(options) => ("failover", options, failover::run),
    };
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "xlb-bench loads XDP programs and builds namespaces: run it as root \
             (`sudo cargo xtask bench {name}`)"
        );
    }
    let report = run(options.quick)?;
    write(&report, name, &options.out)
}

/// Prints the report and writes it as JSON and markdown under `out`.
fn write(report: &Report, name: &str, out: &Path) -> anyhow::Result<()> {
    print!("{}", report.text());
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join(format!("{name}.json"));
    let md = out.join(format!("{name}.md"));
    fs::write(&json, serde_json::to_string_pretty(&report.json)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    println!("\nwrote {} and {}", json.display(), md.display());
    Ok(())
}
