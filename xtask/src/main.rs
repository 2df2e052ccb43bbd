//! `cargo xtask`: installs the toolchain, builds, tests and demonstrates xlb.

mod bench;
mod demo;
mod dist;
mod setup;
mod shell;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{self, Stdio},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build orchestration for xlb")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the BPF toolchain and test tools (idempotent; skips what is present).
    Setup,
    /// Set up, then build the xlb binary (the BPF object is embedded in it).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, then build the Debian package target/dist/xlb_VERSION_ARCH.deb:
    /// the release binary, its configuration, systemd unit, man pages and
    /// shell completions. Its path is printed on stdout.
    Dist {
        /// Package the debug build into target/dist-debug (for the tests).
        #[arg(long)]
        debug: bool,
    },
    /// Set up, build, then run every test: unit, BPF (BPF_PROG_TEST_RUN) and
    /// namespace; then, unless given test arguments, a smoke run of every
    /// benchmark (`bench all --quick`, into target/bench-smoke).
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Set up, build, then on a namespace lab run `xlb run` with a config it
    /// shows, balance real connections in each forwarding mode and show where
    /// they went, then drain a backend, kill one and bring it back through the
    /// agent's CLI and API, with `xlb status` along the way (needs root).
    Demo {
        /// Print the summary as one JSON object on stdout (the rest on stderr).
        #[arg(long)]
        json: bool,
        /// Leave the last lab and its agent running, and print how to reach
        /// the API and the status page, and how to tear them down.
        #[arg(long, conflicts_with = "json")]
        keep: bool,
        /// Tear down a lab left by `--keep`.
        #[arg(long, conflicts_with_all = ["json", "keep"])]
        down: bool,
    },
    /// Set up, then run a benchmark (needs root): a table on stdout, JSON
    /// and markdown in --out.
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run()?;
            build_xlb(release).map(drop)
        }
        Command::Dist { debug } => {
            setup::run()?;
            dist::run(debug).map(drop)
        }
        Command::Test { cargo_test_args } => {
            setup::run()?;
            let xlb = build_xlb(false)?;
            shell::step("running every test");
            let tested = run_tests(
                shell::cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .args(&cargo_test_args)
                    .env("XLB_BIN", &xlb),
            );
            let output = shell::target_dir().join("test-output");
            if output.is_dir() {
                println!("screenshots and other test output: {}", output.display());
            }
            tested?;
            // A filtered run is for one test, not the whole suite.
            if cargo_test_args.is_empty() {
                bench::smoke(&xlb)?;
            }
            Ok(())
        }
        Command::Demo { down: true, .. } => demo::down(),
        Command::Demo { json, keep, .. } => {
            setup::run()?;
            let xlb = build_xlb(false)?;
            demo::run(&xlb, json, keep)
        }
        Command::Bench { bench } => bench::run(bench),
    }
}

/// Runs `cargo test`, echoing its output, and closes with the sum of every
/// test binary's result line, so one line tells the whole run.
fn run_tests(cmd: &mut process::Command) -> anyhow::Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", shell::describe(cmd)))?;
    let mut totals = [0u64; 3];
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for (total, word) in totals.iter_mut().zip(["passed", "failed", "ignored"]) {
                *total += count_before(result, word);
            }
        }
    }
    let status = child.wait()?;
    let [passed, failed, ignored] = totals;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// The number before `word` in a line like `ok. 5 passed; 0 failed; 1 ignored`.
fn count_before(result: &str, word: &str) -> u64 {
    result
        .split(';')
        .filter_map(|part| part.trim().strip_suffix(word))
        .filter_map(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Builds the `xlb` binary and returns its path.
pub fn build_xlb(release: bool) -> anyhow::Result<PathBuf> {
    shell::step("building xlb (with its XDP object)");
    let mut cmd = shell::cargo();
    cmd.args(["build", "--package", "xlb", "--bin", "xlb"]);
    if release {
        cmd.arg("--release");
    }
    shell::run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(shell::target_dir().join(profile).join("xlb"))
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn sums_cargo_test_result_lines() {
        let line =
            "ok. 10 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.29s";
        assert_eq!(count_before(line, "passed"), 10);
        assert_eq!(count_before(line, "failed"), 2);
        assert_eq!(count_before(line, "ignored"), 1);
        assert_eq!(
            count_before("FAILED. 3 passed; 1 failed; 0 ignored", "passed"),
            3
        );
    }
}
