//! `cargo xtask`: installs the toolchain, builds, tests and demonstrates xlb.

mod demo;
mod setup;
mod shell;

use std::path::PathBuf;

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
    /// Set up, build, then run every test: unit, BPF (BPF_PROG_TEST_RUN) and namespace.
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Set up, build, then attach xlb in a namespace topology, send traffic
    /// through it and compare what it counted with what was sent (needs root).
    Demo {
        /// Seconds of traffic.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run()?;
            build_xlb(release).map(drop)
        }
        Command::Test { cargo_test_args } => {
            setup::run()?;
            let xlb = build_xlb(false)?;
            shell::step("running every test");
            shell::run(
                shell::cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .args(&cargo_test_args)
                    .env("XLB_BIN", &xlb),
            )
        }
        Command::Demo { seconds } => {
            setup::run()?;
            let xlb = build_xlb(false)?;
            demo::run(&xlb, seconds)
        }
    }
}

/// Builds the `xlb` binary and returns its path.
fn build_xlb(release: bool) -> anyhow::Result<PathBuf> {
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
