//! `cargo xtask bench`: the benchmarks live in `xlb-bench`, a binary of the
//! test harness, because they need the `xlb` crate and its BPF build,
//! which xtask itself must not depend on.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::{setup, shell};

#[derive(Subcommand)]
pub enum Bench {
    /// Nanoseconds per packet on each path through the XDP program, timed
    /// by the kernel with BPF_PROG_TEST_RUN (no traffic).
    Micro(MicroOptions),
    /// The agent's control plane: API change to data plane (p50/p99),
    /// Maglev builds, and the CPU of health-checking 1000 backends.
    Control(Options),
    /// VRRP failover: the backup's takeover, the outage, lost requests and
    /// broken connections for SIGKILL, a lost director and a clean stop,
    /// xlb against keepalived, at 1 s, 100 ms and 20 ms adverts.
    Failover(Options),
    /// Short TCP connections through xlb (DR, IP-in-IP, NAT), nftables DNAT,
    /// HAProxy (tcp, http) and no director: connections/s, latency p50 to
    /// p99.9, failures, CPU per connection.
    Tcp(Options),
    /// Small UDP packets over many flows, generated with XDP live frames,
    /// through xlb (DR, IP-in-IP, NAT), nftables DNAT and no director:
    /// delivered packets/s and CPU-ns per delivered packet.
    Udp(Options),
    /// A spoofed-source SYN flood at the generator's full rate against a
    /// VIP while 1,000 established connections exchange data through it:
    /// their delivery ratio, the director's CPU and the flood's rate, for
    /// xlb with the flood guard on and off and nftables DNAT.
    Flood(Options),
    /// How xlb's cost per packet grows with 1 to 1M flows, 3 to 1000
    /// backends and 1 to 512 services (BPF_PROG_TEST_RUN).
    Scale(Options),
    /// Every benchmark in turn; fails at the end naming those that failed.
    All(Options),
}

#[derive(Args)]
pub struct Options {
    /// Fewer and shorter batches: a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Where to write <benchmark>.json, <benchmark>.md and the charts (SVG)
    /// [default: target/bench]
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct MicroOptions {
    #[command(flatten)]
    options: Options,
    /// Time only the cases whose name or path contains TEXT (and the floor
    /// and the DR hit they are set against), to profile one path with
    /// `perf record -a -g`.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    let mut extra = Vec::new();
    let (name, options) = match bench {
        Bench::Micro(MicroOptions { options, only }) => {
            if let Some(only) = only {
                extra = vec!["--only".to_string(), only];
            }
            ("micro", options)
        }
        Bench::Control(options) => ("control", options),
        Bench::Failover(options) => ("failover", options),
        Bench::Tcp(options) => ("tcp", options),
        Bench::Udp(options) => ("udp", options),
        Bench::Flood(options) => ("flood", options),
        Bench::Scale(options) => ("scale", options),
        Bench::All(options) => ("all", options),
    };
    setup::run()?;
    // Release builds: the agent and the benchmark measure their own speed.
    let xlb = crate::build_xlb(true)?;
    // Absolute, as cargo runs the benchmark from the workspace root.
    let out = match options.out {
        Some(out) => std::path::absolute(out)?,
        None => shell::root().join("target").join("bench"),
    };
    harness(name, options.quick, &out, true, &xlb, &extra)
}

/// Runs `xlb-bench <name>` (a benchmark or `all`) with the `xlb` binary at
/// `xlb`, writing its files into `out`, an absolute path, with the
/// benchmark's own arguments `extra`.
fn harness(
    name: &str,
    quick: bool,
    out: &Path,
    release: bool,
    xlb: &Path,
    extra: &[String],
) -> anyhow::Result<()> {
    shell::step(&match name {
        "all" => "running every benchmark".to_string(),
        _ => format!("running the {name} benchmark"),
    });
    let mut cmd = shell::harness_bin("xlb-bench", release);
    cmd.args([name, "--out"]).arg(out).env("XLB_BIN", xlb);
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(extra);
    shell::run_foreground(&mut cmd)
}

/// The benchmarks `all` runs: every subcommand but `all` itself.
fn names() -> Vec<String> {
    Bench::augment_subcommands(clap::Command::new("bench"))
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| name != "all")
        .collect()
}

/// `cargo xtask test`'s smoke run of every benchmark: `all --quick` on the
/// debug builds the tests used, into `target/bench-smoke`. It asserts no
/// speed, only that each benchmark completes and writes its JSON and
/// markdown. Needs root, like the namespace tests: without it, skipped,
/// or failed with `XLB_REQUIRE_PRIVILEGED=1`.
pub fn smoke(xlb: &Path) -> anyhow::Result<()> {
    if !shell::is_root() {
        if std::env::var_os("XLB_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
            bail!("the benchmark smoke run needs root");
        }
        eprintln!(
            "SKIPPED the benchmark smoke run: not root (set XLB_REQUIRE_PRIVILEGED=1 to make \
             this fatal)"
        );
        return Ok(());
    }
    let out = shell::target_dir().join("bench-smoke");
    // Only this run's files count.
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let started = Instant::now();
    let run = harness("all", true, &out, false, xlb, &[]);
    eprintln!(
        "    benchmark smoke run: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    run?;
    let missing: Vec<String> = names()
        .iter()
        .flat_map(|name| [format!("{name}.json"), format!("{name}.md")])
        .filter(|file| !out.join(file).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the benchmark smoke run wrote no {} in {}",
            missing.join(", "),
            out.display()
        );
    }
    eprintln!("    every benchmark wrote its files to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn all_runs_every_other_subcommand() {
        let names = names();
        assert!(names.iter().any(|n| n == "micro"), "{names:?}");
        assert!(!names.iter().any(|n| n == "all"), "{names:?}");
    }
}
