//! What the load benchmarks compare, each on the same namespace topology
//! (a client, a director and three backends on one switch): xlb in each
//! forwarding mode, the kernel's NAT with conntrack (nftables DNAT),
//! HAProxy in `mode tcp` and `mode http`, IPVS when the kernel has it, and
//! no director at all (the client straight to one backend), the ceiling of
//! the topology.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use lb_common::maps::Mode;
use serde_json::{json, Value};
use xlb::dataplane::{DirectorSettings, LoadOptions};
use xlb_tests::{
    lab::{backend_port, Family, InProcessTestbed, Member, Testbed, NAT_PORT, VIP_PORT, VIP_V4},
    netns::{ChildHandle, Netns},
};

use crate::micro::steps;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// The client straight to one backend.
    Baseline,
    Xlb(Mode),
    /// DNAT to a random backend in the director's kernel, with conntrack.
    Nftables,
    HaproxyTcp,
    HaproxyHttp,
    Ipvs,
}

impl Contender {
    /// Every contender, in the order the load benchmarks report them.
    pub const ALL: [Contender; 8] = [
        Contender::Baseline,
        Contender::Xlb(Mode::Dr),
        Contender::Xlb(Mode::Ipip),
        Contender::Xlb(Mode::Nat),
        Contender::Nftables,
        Contender::HaproxyTcp,
        Contender::HaproxyHttp,
        Contender::Ipvs,
    ];

    /// A short word for namespace names.
    pub fn tag(self) -> &'static str {
        match self {
            Contender::Baseline => "base",
            Contender::Xlb(Mode::Dr) => "dr",
            Contender::Xlb(Mode::Ipip) => "ipip",
            Contender::Xlb(Mode::Nat) => "nat",
            Contender::Nftables => "nft",
            Contender::HaproxyTcp => "hat",
            Contender::HaproxyHttp => "hah",
            Contender::Ipvs => "ipvs",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Contender::Baseline => "no director",
            Contender::Xlb(Mode::Dr) => "xlb DR",
            Contender::Xlb(Mode::Ipip) => "xlb IP-in-IP",
            Contender::Xlb(Mode::Nat) => "xlb NAT",
            Contender::Nftables => "nftables DNAT",
            Contender::HaproxyTcp => "HAProxy tcp",
            Contender::HaproxyHttp => "HAProxy http",
            Contender::Ipvs => "IPVS",
        }
    }

    /// Why this contender cannot run here, if it cannot.
    pub fn unavailable(self, udp: bool) -> Option<String> {
        match self {
            Contender::Ipvs if !std::path::Path::new("/proc/net/ip_vs").exists() => {
                Some("not available: this kernel has no IPVS (CONFIG_IP_VS)".into())
            }
            Contender::HaproxyTcp | Contender::HaproxyHttp if udp => {
                Some("not applicable: HAProxy does not balance UDP".into())
            }
            _ => None,
        }
    }
}

/// A contender set up on its testbed.
pub struct Rig {
    /// Where the client sends.
    pub target: SocketAddr,
    /// Where the backends listen.
    pub backend_port: u16,
    // Fields drop in order: HAProxy stops, then the testbed goes.
    _haproxy: Option<ChildHandle>,
    testbed: RigTestbed,
}

/// A testbed balanced by xlb in this process, or by the director's kernel (or HAProxy).
enum RigTestbed {
    Xlb(Box<InProcessTestbed>),
    Kernel(Box<Testbed>),
}

impl Rig {
    /// Builds the testbed for `contender`. The testbed pins the calling thread
    /// to CPU 0 for its tests; the load runs on every CPU, so this undoes it.
    pub fn new(tag: &str, contender: Contender) -> anyhow::Result<Rig> {
        let rig = Rig::build(tag, contender)?;
        every_cpu()?;
        Ok(rig)
    }

    /// xlb in `mode` over three backends of weight 1, its program loaded with `options` and
    /// given `settings` (table sizes, the flood guard).
    pub fn xlb_tuned(
        tag: &str,
        mode: Mode,
        options: &LoadOptions,
        settings: DirectorSettings,
    ) -> anyhow::Result<Rig> {
        let members: Vec<_> = (0..3).map(|n| Member::new(n, 1)).collect();
        let lab = InProcessTestbed::tuned(tag, mode, Family::V4, 3, &members, options, settings)?;
        every_cpu()?;
        Ok(Rig {
            target: SocketAddr::new(VIP_V4.into(), VIP_PORT),
            backend_port: backend_port(mode),
            _haproxy: None,
            testbed: RigTestbed::Xlb(Box::new(lab)),
        })
    }

    fn build(tag: &str, contender: Contender) -> anyhow::Result<Rig> {
        let vip = SocketAddr::new(VIP_V4.into(), VIP_PORT);
        match contender {
            Contender::Xlb(mode) => {
                let members: Vec<_> = (0..3).map(|n| Member::new(n, 1)).collect();
                let lab = InProcessTestbed::new(tag, mode, Family::V4, 3, &members)?;
                Ok(Rig {
                    target: vip,
                    backend_port: backend_port(mode),
                    _haproxy: None,
                    testbed: RigTestbed::Xlb(Box::new(lab)),
                })
            }
            Contender::Baseline => {
                let testbed = Testbed::new(tag, Mode::Dr, 3)?;
                // The client reaches the backends' subnet on the segment.
                testbed
                    .client
                    .ip(&["route", "add", "198.18.1.0/24", "dev", "eth0"])?;
                Ok(Rig {
                    target: SocketAddr::new(Family::V4.backend(0), VIP_PORT),
                    backend_port: VIP_PORT,
                    _haproxy: None,
                    testbed: RigTestbed::Kernel(Box::new(testbed)),
                })
            }
            // The director's kernel or HAProxy, to the backends' NAT port.
            Contender::Nftables
            | Contender::HaproxyTcp
            | Contender::HaproxyHttp
            | Contender::Ipvs => {
                if let Some(why) = contender.unavailable(false) {
                    bail!("{why}");
                }
                let mut testbed = Testbed::new(tag, Mode::Nat, 3)?;
                let haproxy = match contender {
                    Contender::HaproxyTcp => Some(haproxy(&mut testbed, "tcp", vip)?),
                    Contender::HaproxyHttp => Some(haproxy(&mut testbed, "http", vip)?),
                    Contender::Ipvs => {
                        ipvs_masquerade(&testbed.director_ns)?;
                        None
                    }
                    _nftables => {
                        nftables_dnat(&testbed.director_ns, &[1, 1, 1])?;
                        None
                    }
                };
                Ok(Rig {
                    target: vip,
                    backend_port: NAT_PORT,
                    _haproxy: haproxy,
                    testbed: RigTestbed::Kernel(Box::new(testbed)),
                })
            }
        }
    }

    pub fn testbed(&self) -> &Testbed {
        match &self.testbed {
            RigTestbed::Xlb(lab) => &lab.testbed,
            RigTestbed::Kernel(testbed) => testbed,
        }
    }

    /// xlb's testbed, for a contender that is xlb.
    pub fn xlb_mut(&mut self) -> Option<&mut InProcessTestbed> {
        match &mut self.testbed {
            RigTestbed::Xlb(lab) => Some(lab),
            RigTestbed::Kernel(_) => None,
        }
    }

    pub fn testbed_mut(&mut self) -> &mut Testbed {
        match &mut self.testbed {
            RigTestbed::Xlb(lab) => &mut lab.testbed,
            RigTestbed::Kernel(testbed) => testbed,
        }
    }
}

/// DNAT of the VIP's TCP and UDP port 80 to a random backend's 8080, backend `n` drawn in
/// proportion to `weights[n]`; replaces the rules of an earlier call (atomically, one
/// transaction), which leaves conntrack's established connections where they are.
pub fn nftables_dnat(director_ns: &Netns, weights: &[u16]) -> anyhow::Result<()> {
    let slots: Vec<String> = weights
        .iter()
        .enumerate()
        .flat_map(|(n, &w)| std::iter::repeat_n(Family::V4.backend(n), w.into()))
        .enumerate()
        .map(|(slot, addr)| format!("{slot} : {addr}"))
        .collect();
    let (map, count) = (slots.join(", "), slots.len());
    let ruleset = format!(
        "table ip xlbbench {{}}\nflush table ip xlbbench\n\
         table ip xlbbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   ip daddr {VIP_V4} tcp dport {VIP_PORT} dnat to numgen random mod {count} map {{ {map} }} : {NAT_PORT}\n\
         \x20   ip daddr {VIP_V4} udp dport {VIP_PORT} dnat to numgen random mod {count} map {{ {map} }} : {NAT_PORT}\n\
         \x20 }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("xlb-bench-{}.nft", director_ns.name()));
    std::fs::write(&path, ruleset)?;
    let result = run(
        director_ns,
        "nft",
        &["-f", path.to_str().context("temp path")?],
    );
    let _ = std::fs::remove_file(&path);
    result
}

/// IPVS virtual services for the VIP's TCP and UDP port 80, round robin,
/// masquerading to the backends' 8080 (`ipvsadm -m`).
fn ipvs_masquerade(director_ns: &Netns) -> anyhow::Result<()> {
    let vip = format!("{VIP_V4}:{VIP_PORT}");
    for proto in ["-t", "-u"] {
        run(director_ns, "ipvsadm", &["-A", proto, &vip, "-s", "rr"])?;
        for n in 0..3 {
            let real = format!("{}:{NAT_PORT}", Family::V4.backend(n));
            run(
                director_ns,
                "ipvsadm",
                &["-a", proto, &vip, "-r", &real, "-m"],
            )?;
        }
    }
    Ok(())
}

/// Runs `program` in `ns`; its stderr is the error if it fails.
pub fn run(ns: &Netns, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = ns.exec(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {} in {}: {}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// HAProxy in the director, balancing round robin over the backends; waits
/// until it listens.
fn haproxy(testbed: &mut Testbed, mode: &str, vip: SocketAddr) -> anyhow::Result<ChildHandle> {
    let servers: String = (0..3)
        .map(|n| format!("  server b{} {}:{NAT_PORT}\n", n + 1, Family::V4.backend(n)))
        .collect();
    let config = format!(
        "global\n  maxconn 8000\n  nbthread 2\n\
         defaults\n  mode {mode}\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend vip\n  bind {vip}\n  default_backend real\n\
         backend real\n  balance roundrobin\n{servers}"
    );
    let path = std::env::temp_dir().join(format!(
        "xlb-bench-{}.haproxy.cfg",
        testbed.director_ns.name()
    ));
    std::fs::write(&path, config)?;
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let director_ns = testbed.director_ns.clone();
    let handle = testbed.topology.spawn(&director_ns, cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = director_ns.run(move || {
            std::net::TcpStream::connect_timeout(&vip, Duration::from_millis(200)).is_ok()
        })?;
        if up {
            return Ok(handle);
        }
        if let Some(out) = handle.wait_timeout(Duration::ZERO)? {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let alert = stderr
                .lines()
                .find(|l| l.contains("[ALERT]"))
                .unwrap_or(&stderr);
            bail!("haproxy exited: {}", alert.trim());
        }
        if Instant::now() > deadline {
            bail!("haproxy does not listen on {vip} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A contender's result, or why it has none.
pub struct Measured<T> {
    pub contender: Contender,
    pub result: Result<T, String>,
}

/// Runs `measure` on every contender in turn (of a UDP load if `udp`),
/// keeping why those that cannot run here or fail have no result.
pub fn measure_each<T>(
    udp: bool,
    mut measure: impl FnMut(Contender) -> anyhow::Result<T>,
) -> Vec<Measured<T>> {
    let progress = steps(Contender::ALL.len() as u64);
    let mut measured = Vec::new();
    for contender in Contender::ALL {
        progress.set_message(contender.name());
        let result = match contender.unavailable(udp) {
            Some(why) => Err(why),
            None => measure(contender).map_err(|e| failure(&e)),
        };
        measured.push(Measured { contender, result });
        progress.inc(1);
    }
    progress.finish_and_clear();
    measured
}

/// `contender`'s result, if it has one.
pub fn result_of<T>(measured: &[Measured<T>], contender: Contender) -> Option<&T> {
    measured
        .iter()
        .find(|m| m.contender == contender)
        .and_then(|m| m.result.as_ref().ok())
}

/// The table row (`why`, then `-` up to `columns`) and the JSON of a
/// contender without a result.
pub fn skipped(contender: Contender, why: &str, columns: usize) -> (Vec<String>, Value) {
    let mut row = vec![contender.name().to_string(), why.to_string()];
    row.resize(columns, "-".into());
    let json = json!({ "contender": contender.name(), "skipped": why });
    (row, json)
}

/// Why a contender's run failed, on one line for the report's table.
fn failure(e: &anyhow::Error) -> String {
    format!("failed: {}", format!("{e:#}").replace('\n', " "))
}

/// Lets the calling thread, and the threads it starts, run on every CPU.
fn every_cpu() -> anyhow::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut cpus = CpuSet::new();
    // Not available_parallelism: that counts the CPUs this thread may use.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    for cpu in 0..count.min(CpuSet::count()) {
        cpus.set(cpu)?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).context("unpinning the benchmark")
}

/// CPU time all CPUs spent busy (user, system, interrupts), from /proc/stat.
pub fn cpu_busy() -> anyhow::Result<Duration> {
    // user nice system idle iowait irq softirq steal ...
    cpu_time(&[0, 1, 2, 5, 6])
}

/// CPU time all CPUs spent in the given columns of /proc/stat's `cpu` line
/// (0 user, 1 nice, 2 system, 3 idle, 4 iowait, 5 irq, 6 softirq, ...).
pub fn cpu_time(columns: &[usize]) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks: u64 = columns.iter().filter_map(|&i| fields.get(i)).sum();
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}
