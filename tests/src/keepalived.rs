//! keepalived in a lab namespace, as a peer of xlb's VRRP and its yardstick.
//!
//! keepalived runs as two processes: the parent, which [`spawn`] returns, and the VRRP child it
//! forks, which speaks the protocol. The child stops cleanly (priority 0, addresses released)
//! when its parent dies, and the parent restarts a child that dies, so a crash takes [`kill`].

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context};
use nix::{
    sys::signal::{kill as send, Signal},
    unistd::Pid,
};

use crate::netns::{ChildHandle, Netns, Topology};

/// keepalived in the foreground in `ns`, configured by `global` (lines of `global_defs`) and
/// `instance`, with its config and pid files in `dir`, one keepalived per directory; stopped with
/// the topology at the latest.
pub fn spawn(
    topology: &mut Topology,
    ns: &Netns,
    dir: &Path,
    global: &str,
    instance: &str,
) -> anyhow::Result<ChildHandle> {
    let conf = dir.join("keepalived.conf");
    let global: String = global.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(&conf, format!("global_defs {{\n{global}}}\n{instance}\n"))
        .context("writing keepalived.conf")?;
    // So that a pid read later is this run's.
    for pid in ["keepalived.pid", "vrrp.pid"] {
        let _ = std::fs::remove_file(dir.join(pid));
    }
    let mut cmd = Command::new("keepalived");
    cmd.args([
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--vrrp",
        "--use-file",
    ])
    .arg(&conf)
    .arg("--pid")
    .arg(dir.join("keepalived.pid"))
    .arg("--vrrp_pid")
    .arg(dir.join("vrrp.pid"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    topology.spawn(ns, cmd)
}

/// A VRRP instance VI_1 (VRID 51) for 198.18.0.100 on `eth0`, starting as backup, with
/// `advert_int` in seconds and `auth` lines.
pub fn instance(priority: u8, advert_int: &str, auth: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n\
         priority {priority}\n  advert_int {advert_int}\n{auth}\n\
         virtual_ipaddress {{\n    198.18.0.100/32\n  }}\n}}"
    )
}

/// Crashes the keepalived started by [`spawn`] with `dir`: SIGKILLs its VRRP child while the
/// parent is stopped, so that nothing resigns, releases or respawns, then the parent.
pub fn kill(keepalived: &ChildHandle, dir: &Path) -> anyhow::Result<()> {
    let pid_file = dir.join("vrrp.pid");
    let text = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?;
    let child: i32 = text
        .trim()
        .parse()
        .context("parsing the VRRP child's pid")?;
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat"))
        .with_context(|| format!("keepalived's VRRP child {child}"))?;
    // The parent pid is the second field after the command name, which is in parentheses.
    let parent = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .context("malformed stat")?;
    ensure!(
        parent == keepalived.pid().to_string(),
        "{child} is not keepalived {}'s child",
        keepalived.pid()
    );
    keepalived.signal(Signal::SIGSTOP)?;
    send(Pid::from_raw(child), Signal::SIGKILL).context("killing keepalived's VRRP child")?;
    keepalived.signal(Signal::SIGKILL)?;
    keepalived
        .wait_timeout(Duration::from_secs(5))?
        .context("keepalived outlived SIGKILL")?;
    Ok(())
}
