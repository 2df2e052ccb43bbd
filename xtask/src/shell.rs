//! Running commands with their command line echoed and failures named.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// Progress goes to stderr, so that stdout carries only results (JSON).
pub fn step(what: &str) {
    eprintln!("==> {what}");
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The cargo that runs this xtask, in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// `cargo run` of one of the harness's binaries (the benchmarks),
/// which need the BPF build that xtask itself must not link; its own
/// arguments follow.
pub fn harness_bin(name: &str, release: bool) -> Command {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--package", "xlb-tests", "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--");
    cmd
}

/// Runs a preparation step, its output on stderr; fails naming the command.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    run_foreground(cmd.stdout(std::io::stderr()))
}

/// Runs the command whose output is the result, stdout and all.
pub fn run_foreground(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its trimmed stdout if it succeeded.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
