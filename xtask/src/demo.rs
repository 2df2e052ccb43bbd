//! `cargo xtask demo`: runs the `xlb-demo` harness binary with the `xlb` just built; with
//! `--keep` leaves it running, holding its lab, and `--down` ends such a kept demo.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::shell;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The demo's namespaces: `xlbt-demo_{mode}-{pid}-…` (the harness's `xlbt-{tag}-{pid}-…`).
const NAMESPACE_PREFIX: &str = "xlbt-demo_";
/// How long a kept demo gets to stop its agent and delete its namespaces after SIGTERM.
const DOWN_WITHIN: Duration = Duration::from_secs(15);

/// Runs the demo with `xlb` (`--json` or `--keep` passed on). A kept demo holds its lab
/// until `--down`: this returns once it has printed how to reach it.
pub fn run(xlb: &Path, json: bool, keep: bool) -> anyhow::Result<()> {
    let demo = build_demo()?;
    shell::step("running the demo");
    let mut cmd = Command::new(&demo);
    cmd.env("XLB_BIN", xlb);
    if json {
        cmd.arg("--json");
    }
    if !keep {
        return shell::run_foreground(&mut cmd);
    }
    cmd.arg("--keep").stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", shell::describe(&cmd)))?;
    // The demo lets go of its stdout once it holds the lab, or exits.
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        println!("{}", line?);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the demo failed ({status})");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Builds the demo binary and returns its path.
fn build_demo() -> anyhow::Result<PathBuf> {
    shell::step("building the demo");
    shell::run(shell::cargo().args(["build", "--package", "xlb-tests", "--bin", "xlb-demo"]))?;
    Ok(shell::target_dir().join("debug").join("xlb-demo"))
}

/// Ends every kept demo, found by its namespaces' names: SIGTERM, on which it stops its agent
/// and deletes its namespaces; then deletes any namespace still there and the agent's files.
pub fn down() -> anyhow::Result<()> {
    let namespaces = demo_namespaces()?;
    if namespaces.is_empty() {
        println!("no demo lab is running");
        return Ok(());
    }
    let pids: BTreeSet<i32> = namespaces.iter().map(|(_, pid)| *pid).collect();
    for &pid in &pids {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "xlb-demo" {
            println!("stopping the demo (pid {pid})");
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + DOWN_WITHIN;
    while Instant::now() < deadline && !demo_namespaces()?.is_empty() {
        thread::sleep(Duration::from_millis(100));
    }
    for (name, _) in demo_namespaces()? {
        println!("deleting namespace {name}");
        shell::run(Command::new("ip").args(["netns", "del", &name]))?;
    }
    for pid in &pids {
        let agent_dirs = fs::read_dir(std::env::temp_dir())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("xlb-agent-demo_") && n.ends_with(&format!("-{pid}"))
                })
            });
        for dir in agent_dirs {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    println!("the demo lab is gone");
    Ok(())
}

/// The demo's namespaces and the pid of the demo that made each.
fn demo_namespaces() -> anyhow::Result<Vec<(String, i32)>> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(NAMESPACE_PREFIX))
        .filter_map(|name| {
            let pid = name.split('-').nth(2)?.parse().ok()?;
            Some((name, pid))
        })
        .collect())
}
