//! `cargo xtask bench`: the benchmarks live in `xlb-bench`, a binary of the
//! test harness, because they need the `xlb` crate and its BPF build,
//! which xtask itself must not depend on.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::{setup, shell};

#[derive(Subcommand)]
pub enum Bench {
    /// Nanoseconds per packet on each path through the XDP program, timed
    /// by the kernel with BPF_PROG_TEST_RUN (no traffic).
    Micro(Options),
    /// The agent's control plane: API change to data plane (p50/p99),
    /// Maglev builds, and the CPU of health-checking 1000 backends.
    Control(Options),
    /// VRRP failover: the backup's takeover, the outage, lost requests and
    /// broken connections for SIGKILL, a lost director and a clean stop,
    /// xlb against keepalived, at 1 s, 100 ms and 20 ms adverts.
    Failover(Options),
}

#[derive(Args)]
pub struct Options {
    /// Fewer and shorter batches: a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Where to write <benchmark>.json and <benchmark>.md [default: target/bench]
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    let (name, options) = match bench {
        Bench::Micro(options) => ("micro", options),
        Bench::Control(options) => ("control", options),
        Bench::Failover(options) => ("failover", options),
    };
    setup::run()?;
    // Release builds: the agent and the benchmark measure their own speed.
    let xlb = crate::build_xlb(true)?;
    // Absolute, as cargo runs the benchmark from the workspace root.
    let out = match options.out {
        Some(out) => std::path::absolute(out)?,
        None => shell::root().join("target").join("bench"),
    };
    shell::step(&format!("running the {name} benchmark"));
    let mut cmd = shell::harness_bin("xlb-bench", true);
    cmd.args([name, "--out"]).arg(&out).env("XLB_BIN", xlb);
    if options.quick {
        cmd.arg("--quick");
    }
    shell::run_foreground(&mut cmd)
}
