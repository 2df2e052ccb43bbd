//! `flood`: a spoofed-source SYN flood at the generator's full rate against the VIP while 1,000
//! established TCP connections exchange requests and replies through it, for xlb with its flood
//! guard on, xlb with the guard off, and nftables DNAT: how many of the established
//! connections' exchanges still complete, the CPU the flood costs, and the flood's rate.
//!
//! Each round has a quiet period and a flood period of equal length; halfway through each the
//! service's weights change (three backends at 1:1:1, then 2:1:1 in the quiet period, then 1:1:2
//! in the flood), as a health check or an operator changes them at any time. Established
//! connections must keep their backend across a change: a balancer that lost a connection's
//! state sends its next segment where the new weights say, and that backend resets it. With
//! the guard off the flood's new flows push the established ones out of xlb's flow tables (a
//! small table here, so within a second); with the guard on the flood's flows go statelessly
//! by the ring and the established entries stay.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use lb_common::{maps::Mode, stats::Counter};
use serde_json::{json, Value};
use tokio::{
    net::TcpStream,
    runtime::{self, Runtime},
    sync::Semaphore,
    time,
};
use xlb::{
    config::Config,
    dataplane::{DirectorSettings, LoadOptions},
};
use xlb_tests::{
    lab::{pin_to_cpu, Member, CLIENT_V4, VIP_V4},
    livegen::Generator,
    netns::Netns,
    packet::Frame,
};

use crate::{
    contenders::{cpu_time, nftables_dnat, run as run_in, Contender, Rig},
    micro::steps,
    plot,
    report::{verdict, Machine, Plot, Report, Table},
};

/// Established connections.
const CONNECTIONS: usize = 1000;
/// How often each established connection makes an exchange (a line, and the backend's name
/// back): 1,000 exchanges a second in all.
const PACE: Duration = Duration::from_secs(1);
/// An exchange not answered within this fails, and its connection counts as broken.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections opened at once.
const OPENING: usize = 32;
/// The flow table: small, so that a flood fills it within a second.
const FLOW_ENTRIES: u32 = 16_384;
/// The flood's sources: 198.19.0.0/16 (random address and port per SYN).
const FLOOD_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
const FLOOD_CIDR: &str = "198.19.0.0/16";
/// The weights of b1, b2, b3: at the start of each round, from halfway through the quiet
/// period, and from halfway through the flood.
const WEIGHTS: [[u16; 3]; 3] = [[1, 1, 1], [2, 1, 1], [1, 1, 2]];
/// The delivery ratio the established connections must keep.
const GOAL: f64 = 0.99;

const HEADERS: [&str; 8] = [
    "contender",
    "delivery ratio",
    "broken conns",
    "flood SYN/s sent",
    "SYN/s at backends",
    "sys+softirq cores quiet -> flood",
    "CPU ns/SYN",
    "stateless new flows",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// xlb NAT with the flood guard at this many new flows per second per CPU.
    Guard(u32),
    /// xlb NAT with `flood_guard = 0`.
    NoGuard,
    Nftables,
}

impl Setup {
    fn name(self) -> String {
        match self {
            Setup::Guard(cap) => format!("xlb NAT, guard on ({cap}/s per CPU)"),
            Setup::NoGuard => "xlb NAT, guard off".into(),
            Setup::Nftables => "nftables DNAT".into(),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Setup::Guard(_) => "bflg",
            Setup::NoGuard => "bfln",
            Setup::Nftables => "bflt",
        }
    }
}

/// One round's figures.
#[derive(Clone, Debug)]
struct Round {
    /// Exchanges completed in the quiet period, and in the flood period.
    quiet: u64,
    flood: u64,
    /// Connections alive at the round's start, and those of them that broke in it.
    started: usize,
    broken: usize,
    /// Connections that, in the flood period, completed fewer than 99% of the exchanges they
    /// completed in the quiet period.
    short: usize,
    /// SYNs the generator made, and of those the ones the client's link took (the rest found
    /// its peer's ring full).
    made: u64,
    syns: u64,
    at_backends: u64,
    /// Packets the kernel dropped for a full backlog queue (/proc/net/softnet_stat, all CPUs).
    backlog_drops: u64,
    elapsed: Duration,
    /// System and softirq CPU time (all CPUs) in each period.
    cpu_quiet: Duration,
    cpu_flood: Duration,
    /// How long each period lasted (the flood's may overrun its length by a batch of SYNs).
    quiet_time: Duration,
    flood_time: Duration,
    /// xlb's `flood_stateless` counter over the flood period.
    stateless: Option<u64>,
    errors: Vec<String>,
}

impl Round {
    /// Exchanges per second in the flood period over those in the quiet period.
    fn ratio(&self) -> f64 {
        let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(f64::EPSILON);
        rate(self.flood, self.flood_time) / rate(self.quiet.max(1), self.quiet_time)
    }

    fn syn_rate(&self) -> f64 {
        self.syns as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn backend_rate(&self) -> f64 {
        self.at_backends as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn cores(cpu: Duration, period: Duration) -> f64 {
        cpu.as_secs_f64() / period.as_secs_f64().max(f64::EPSILON)
    }

    /// Kernel CPU time the flood added (per second, over the quiet period's), per SYN sent.
    fn ns_per_syn(&self) -> f64 {
        let added = (Round::cores(self.cpu_flood, self.flood_time)
            - Round::cores(self.cpu_quiet, self.quiet_time))
            * self.flood_time.as_secs_f64();
        added.max(0.0) * 1e9 / self.syns.max(1) as f64
    }
}

pub fn run(quick: bool) -> anyhow::Result<Report> {
    let (period, rounds) = if quick {
        (Duration::from_secs(2), 1)
    } else {
        (Duration::from_secs(6), 3)
    };
    let cap = auto_cap()?;
    let setups = [Setup::Guard(cap), Setup::NoGuard, Setup::Nftables];
    let cpus = aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("{path}: {e}"))?;
    // The flood on the last CPU, the established connections (client, backends' servers) on
    // CPU 0, as a NIC's RSS would spread them.
    let flood_cpu = *cpus.last().context("no online CPU")? as usize;
    let mut generator = Generator::load(1)?;
    generator.set_cpus(&[flood_cpu])?;
    let progress = steps(setups.len() as u64);
    let mut measured = Vec::new();
    for setup in setups {
        progress.set_message(setup.name());
        let result = measure(&generator, setup, period, rounds).map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            eprintln!("{}: {e}", setup.name());
        }
        measured.push((setup, result));
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(report(&measured, period, rounds, flood_cpu))
}

/// The guard's default cap for a table of [`FLOW_ENTRIES`], as the agent sizes it from a
/// config without `flood_guard` on this machine.
fn auto_cap() -> anyhow::Result<u32> {
    let toml =
        format!("[agent]\ninterfaces = [\"eth0\"]\n[tables]\nflow_entries = {FLOW_ENTRIES}\n");
    let model = Config::parse(&toml)
        .and_then(|c| c.validate())
        .map_err(|e| anyhow::anyhow!("the benchmark's config: {e:?}"))?;
    Ok(DirectorSettings::of(&model.agent, &model.tables).new_flows_per_cpu)
}

fn rig(setup: Setup) -> anyhow::Result<Rig> {
    let options = LoadOptions {
        bpf_log: log::LevelFilter::Off,
        max_services: 4,
        max_backends: 16,
        flow_entries: FLOW_ENTRIES,
        ..LoadOptions::default()
    };
    let settings = |new_flows_per_cpu| DirectorSettings {
        new_flows_per_cpu,
        ..DirectorSettings::default()
    };
    match setup {
        Setup::Guard(cap) => Rig::xlb_tuned(setup.tag(), Mode::Nat, &options, settings(cap)),
        Setup::NoGuard => Rig::xlb_tuned(setup.tag(), Mode::Nat, &options, settings(0)),
        Setup::Nftables => Rig::new(setup.tag(), Contender::Nftables),
    }
}

/// Gives the service `weights` (b1, b2, b3).
fn reweight(rig: &mut Rig, weights: [u16; 3]) -> anyhow::Result<()> {
    match rig.xlb_mut() {
        Some(lab) => {
            let members: Vec<_> = weights
                .iter()
                .enumerate()
                .map(|(n, &w)| Member::new(n, w))
                .collect();
            lab.apply(&members)
        }
        None => nftables_dnat(&rig.testbed().director_ns, &weights),
    }
}

fn stateless(rig: &mut Rig) -> anyhow::Result<Option<u64>> {
    match rig.xlb_mut() {
        Some(lab) => Ok(Some(lab.balancer.counters()?.get(Counter::FloodStateless))),
        None => Ok(None),
    }
}

fn measure(
    generator: &Generator,
    setup: Setup,
    period: Duration,
    rounds: usize,
) -> anyhow::Result<Vec<Round>> {
    let mut rig = rig(setup)?;
    let testbed = rig.testbed();
    // The flood's sources are routable from the director (through the client, as the Internet
    // is through a default route), so the kernel's NAT forwards and tracks them; the backends
    // have no route back and drop the SYNs unanswered, whoever forwards them.
    testbed
        .director_ns
        .ip(&["route", "add", FLOOD_CIDR, "via", &CLIENT_V4.to_string()])?;
    for ns in &testbed.backends {
        count_flood(ns)?;
    }
    // The flood comes from a host of its own on the switch: from the client's link it would
    // fill that link's one ring and drop the client's own packets before any director saw them.
    let director_mac = testbed.director_ns.mac("eth0")?;
    let switch = testbed.switch.clone();
    let topology = &mut rig.testbed_mut().topology;
    let attacker = topology.add_ns("attacker")?;
    topology.link(&attacker, "eth0", &switch, "p-attacker")?;
    switch.ip(&["link", "set", "dev", "p-attacker", "master", "br0"])?;
    attacker.ethtool(&["-K", "eth0", "gro", "on"])?;
    switch.ethtool(&["-K", "p-attacker", "gro", "on"])?;
    let frame = Frame::ipv4(FLOOD_NET, VIP_V4)
        .macs(attacker.mac("eth0")?, director_mac)
        .tcp_syn(32768, rig.target.port());
    let testbed = rig.testbed();
    let conns = Established::open(&testbed.client, rig.target)?;
    let mut done: Vec<Round> = Vec::new();
    for _ in 0..rounds {
        reweight(&mut rig, WEIGHTS[0])?;
        // After a flood the kernel's NAT may refuse new connections (a full conntrack table):
        // a round goes on with the connections that opened.
        if let Err(e) = conns.reopen(false) {
            // No connection opens any more (the kernel's NAT after a flood): the rounds so far
            // stand, with why there are no more.
            let Some(last) = done.last_mut() else {
                return Err(e);
            };
            last.errors.push(format!("no further round: {e:#}"));
            break;
        }
        done.push(round(
            generator, &mut rig, &attacker, &conns, &frame, period,
        )?);
    }
    conns.stop();
    Ok(done)
}

fn round(
    generator: &Generator,
    rig: &mut Rig,
    attacker: &Netns,
    conns: &Established,
    frame: &[u8],
    period: Duration,
) -> anyhow::Result<Round> {
    let alive = conns.alive();
    conns.take_counts(Phase::Idle);
    // Quiet.
    conns.set_phase(Phase::Quiet);
    let began = Instant::now();
    let cpu = cpu_kernel()?;
    thread::sleep(period / 2);
    reweight(rig, WEIGHTS[1])?;
    thread::sleep(period / 2);
    let cpu_quiet = cpu_kernel()? - cpu;
    conns.set_phase(Phase::Idle);
    let quiet_time = began.elapsed();
    let quiet = conns.take_counts(Phase::Quiet);
    // Flood.
    let testbed = rig.testbed();
    let backends = testbed.backends.clone();
    let at_backends = flood_counts(&backends)?;
    let stateless_before = stateless(rig)?;
    conns.set_phase(Phase::Flood);
    let began = Instant::now();
    let cpu = cpu_kernel()?;
    let backlog = backlog_drops()?;
    let sent = thread::scope(|scope| {
        let flood = scope.spawn(|| generator.send(attacker, "eth0", frame, u64::MAX / 2, period));
        thread::sleep(period / 2);
        let changed = reweight(rig, WEIGHTS[2]);
        let sent = flood
            .join()
            .unwrap_or_else(|_| bail!("the flood's thread panicked"));
        changed.and(sent)
    })?;
    let cpu_flood = cpu_kernel()? - cpu;
    let backlog_drops = backlog_drops()? - backlog;
    conns.set_phase(Phase::Idle);
    let flood_time = began.elapsed();
    let flood = conns.take_counts(Phase::Flood);
    let at_backends = flood_counts(&backends)? - at_backends;
    let stateless = match (stateless_before, stateless(rig)?) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    // Exchanges under way at the end may yet break a connection.
    thread::sleep(EXCHANGE_TIMEOUT);
    let broken = alive.saturating_sub(conns.alive());
    let short = quiet
        .iter()
        .zip(&flood)
        .filter(|(&q, &f)| {
            let scale = flood_time.as_secs_f64() / quiet_time.as_secs_f64().max(f64::EPSILON);
            q > 0 && (f as f64) < GOAL * scale * q as f64
        })
        .count();
    Ok(Round {
        quiet: quiet.iter().sum(),
        flood: flood.iter().sum(),
        started: alive,
        broken,
        short,
        made: sent.packets,
        syns: sent.packets - sent.tx_dropped,
        at_backends,
        backlog_drops,
        elapsed: sent.elapsed,
        cpu_quiet,
        cpu_flood,
        quiet_time,
        flood_time,
        stateless,
        errors: conns.errors(),
    })
}

/// Counts, in a backend's prerouting, the packets from the flood's sources.
fn count_flood(ns: &Netns) -> anyhow::Result<()> {
    run_in(ns, "nft", &["add", "table", "ip", "xlbflood"])?;
    run_in(
        ns,
        "nft",
        &["add chain ip xlbflood pre { type filter hook prerouting priority raw; }"],
    )?;
    run_in(
        ns,
        "nft",
        &[
            "add", "rule", "ip", "xlbflood", "pre", "ip", "saddr", FLOOD_CIDR, "counter",
        ],
    )
}

/// The flood's packets the backends have received, in all.
fn flood_counts(backends: &[Netns]) -> anyhow::Result<u64> {
    let mut total = 0;
    for ns in backends {
        let out = ns.exec("nft", &["list", "chain", "ip", "xlbflood", "pre"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let packets = text
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("no flood counter in {}: {text}", ns.name()))?;
        total += packets;
    }
    Ok(total)
}

/// Packets dropped for a full backlog queue, all CPUs: /proc/net/softnet_stat's second column
/// (hexadecimal).
fn backlog_drops() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat")?;
    Ok(stat
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|drops| u64::from_str_radix(drops, 16).ok())
        .sum())
}

/// System, interrupt and softirq time of all CPUs, from /proc/stat: the kernel's side of the
/// traffic, where XDP, the switch, conntrack and the TCP stacks run.
fn cpu_kernel() -> anyhow::Result<Duration> {
    cpu_time(&[2, 5, 6])
}

#[derive(Clone, Copy)]
enum Phase {
    Idle = 0,
    Quiet = 1,
    Flood = 2,
}

/// The established connections: tasks on a runtime in the client's namespace, each keeping
/// one connection to the VIP and making an exchange every [`PACE`].
struct Established {
    runtime: Runtime,
    shared: Arc<Shared>,
    dst: SocketAddr,
}

struct Shared {
    phase: AtomicUsize,
    stop: AtomicBool,
    slots: Vec<Slot>,
    opening: Semaphore,
}

#[derive(Default)]
struct Slot {
    /// Exchanges completed while the phase was quiet, and while it was flood.
    done: [AtomicU64; 3],
    alive: AtomicBool,
    /// A task is running for the slot (connecting, or connected).
    running: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Established {
    /// Opens [`CONNECTIONS`] connections to `dst` from `client`, [`OPENING`] at a time; the
    /// runtime's one worker runs on CPU 0.
    fn open(client: &Netns, dst: SocketAddr) -> anyhow::Result<Established> {
        let runtime = client.run(|| {
            runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("flood-conns")
                .on_thread_start(|| {
                    let _ = pin_to_cpu(0);
                })
                .enable_all()
                .build()
        })??;
        let shared = Arc::new(Shared {
            phase: AtomicUsize::new(Phase::Idle as usize),
            stop: AtomicBool::new(false),
            slots: (0..CONNECTIONS).map(|_| Slot::default()).collect(),
            opening: Semaphore::new(OPENING),
        });
        let conns = Established {
            runtime,
            shared,
            dst,
        };
        conns.reopen(true)?;
        Ok(conns)
    }

    /// Starts a connection in every slot without one, retrying those that fail, until all
    /// are up or the time is over (30 s with `all`, which then fails; else 10 s, after which the
    /// connections that opened go on, if any did).
    fn reopen(&self, all: bool) -> anyhow::Result<()> {
        let wait = if all { 30 } else { 10 };
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            self.start_missing();
            thread::sleep(Duration::from_millis(100));
            let up = self.alive();
            if up == CONNECTIONS {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if !all && up > 0 {
                    return Ok(());
                }
                bail!(
                    "{up} of {CONNECTIONS} established connections open after {wait} s: {:?}",
                    self.errors()
                );
            }
        }
    }

    /// Starts a task for every slot that has none.
    fn start_missing(&self) {
        for (i, slot) in self.shared.slots.iter().enumerate() {
            if slot.running.swap(true, Ordering::SeqCst) {
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let dst = self.dst;
            self.runtime.spawn(async move {
                let result = keep(&shared, i, dst).await;
                let slot = &shared.slots[i];
                slot.alive.store(false, Ordering::SeqCst);
                if let Err(e) = result {
                    *slot.error.lock().unwrap() = Some(e);
                }
                slot.running.store(false, Ordering::SeqCst);
            });
        }
    }

    fn alive(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter(|s| s.alive.load(Ordering::SeqCst))
            .count()
    }

    fn set_phase(&self, phase: Phase) {
        self.shared.phase.store(phase as usize, Ordering::SeqCst);
    }

    /// Each connection's exchanges completed in `phase` since the last call; zeroes the counts
    /// of every phase.
    fn take_counts(&self, phase: Phase) -> Vec<u64> {
        self.shared
            .slots
            .iter()
            .map(|s| {
                let counts = s.done.each_ref().map(|d| d.swap(0, Ordering::SeqCst));
                counts[phase as usize]
            })
            .collect()
    }

    /// A few of the connections' errors.
    fn errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .shared
            .slots
            .iter()
            .filter_map(|s| s.error.lock().unwrap().clone())
            .collect();
        errors.sort();
        errors.dedup();
        errors.truncate(3);
        errors
    }

    fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// One connection: open it (one of [`OPENING`] at a time), then an exchange every [`PACE`],
/// counted under the phase it completes in, until told to stop or the connection fails.
async fn keep(shared: &Shared, i: usize, dst: SocketAddr) -> Result<(), String> {
    let (stream, first) = {
        let _permit = shared.opening.acquire().await.map_err(|e| e.to_string())?;
        let stream = time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(dst))
            .await
            .map_err(|_| format!("connecting to {dst}: timed out"))?
            .map_err(|e| format!("connecting to {dst}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let first = exchange(&stream).await?;
        (stream, first)
    };
    let slot = &shared.slots[i];
    slot.alive.store(true, Ordering::SeqCst);
    // Spread the connections' exchanges evenly over the pace.
    let offset = PACE * i as u32 / CONNECTIONS as u32;
    let mut next = time::Instant::now() + offset;
    while !shared.stop.load(Ordering::Relaxed) {
        time::sleep_until(next).await;
        next += PACE;
        // Late (a slow exchange): no burst to catch up.
        let now = time::Instant::now();
        if next < now {
            next = now + PACE;
        }
        let name = exchange(&stream).await?;
        if name != first {
            return Err(format!("answered by {name} rather than {first}"));
        }
        let phase = shared.phase.load(Ordering::SeqCst);
        slot.done[phase].fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Sends a line and reads the backend's name back, within [`EXCHANGE_TIMEOUT`].
async fn exchange(stream: &TcpStream) -> Result<String, String> {
    let work = async {
        let mut sent = 0;
        let line = b"hello\n";
        while sent < line.len() {
            stream.writable().await.map_err(|e| e.to_string())?;
            match stream.try_write(&line[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("sending: {e}")),
            }
        }
        let mut reply = Vec::new();
        let mut buf = [0; 256];
        loop {
            stream.readable().await.map_err(|e| e.to_string())?;
            match stream.try_read(&mut buf) {
                Ok(0) => return Err("closed by the peer".into()),
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(format!("receiving: {e}")),
            }
            if let Some(end) = reply.iter().position(|&b| b == b'\n') {
                return Ok(String::from_utf8_lossy(&reply[..end]).into_owned());
            }
            if reply.len() > 1024 {
                return Err("no newline in the answer".into());
            }
        }
    };
    time::timeout(EXCHANGE_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer within {EXCHANGE_TIMEOUT:?}"))?
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn report(
    measured: &[(Setup, Result<Vec<Round>, String>)],
    period: Duration,
    rounds: usize,
    flood_cpu: usize,
) -> Report {
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut bars = Vec::new();
    let mut goals = Vec::new();
    for (setup, result) in measured {
        let name = setup.name();
        let rounds = match result {
            Ok(rounds) if !rounds.is_empty() => rounds,
            Ok(_) => continue,
            Err(why) => {
                let mut row = vec![name.clone(), format!("failed: {why}")];
                row.resize(HEADERS.len(), "-".into());
                rows.push(row);
                results.push(json!({ "contender": name, "failed": why }));
                continue;
            }
        };
        let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        let ratio = med(&|r| r.ratio());
        let broken: usize = rounds.iter().map(|r| r.broken).sum();
        let cores_quiet = med(&|r| Round::cores(r.cpu_quiet, r.quiet_time));
        let cores_flood = med(&|r| Round::cores(r.cpu_flood, r.flood_time));
        let stateless = rounds.iter().map(|r| r.stateless).sum::<Option<u64>>();
        let syns: u64 = rounds.iter().map(|r| r.syns).sum();
        rows.push(vec![
            name.clone(),
            format!("{:.2}%", 100.0 * ratio),
            format!(
                "{broken} of {}",
                rounds.iter().map(|r| r.started).sum::<usize>()
            ),
            format!("{:.0}", med(&|r| r.syn_rate())),
            format!("{:.0}", med(&|r| r.backend_rate())),
            format!("{cores_quiet:.2} -> {cores_flood:.2}"),
            format!("{:.0}", med(&|r| r.ns_per_syn())),
            stateless.map_or("-".into(), |s| format!("{s} of {syns}")),
        ]);
        bars.push((name.clone(), 100.0 * ratio));
        let per_round: Vec<Value> = rounds
            .iter()
            .map(|r| {
                json!({
                    "exchanges_quiet": r.quiet,
                    "exchanges_flood": r.flood,
                    "quiet_s": r.quiet_time.as_secs_f64(),
                    "flood_s": r.flood_time.as_secs_f64(),
                    "delivery_ratio": r.ratio(),
                    "connections_at_start": r.started,
                    "broken_connections": r.broken,
                    "connections_below_99_percent": r.short,
                    "flood_syns_made": r.made,
                    "flood_syns_sent": r.syns,
                    "backlog_drops": r.backlog_drops,
                    "flood_seconds": r.elapsed.as_secs_f64(),
                    "flood_syns_per_s": r.syn_rate(),
                    "flood_syns_at_backends": r.at_backends,
                    "kernel_cpu_s_quiet": r.cpu_quiet.as_secs_f64(),
                    "kernel_cpu_s_flood": r.cpu_flood.as_secs_f64(),
                    "cpu_ns_per_syn": r.ns_per_syn(),
                    "flood_stateless": r.stateless,
                    "errors": r.errors,
                })
            })
            .collect();
        results.push(json!({
            "contender": name,
            "median_delivery_ratio": ratio,
            "broken_connections": broken,
            "median_flood_syns_per_s": med(&|r| r.syn_rate()),
            "median_flood_syns_at_backends_per_s": med(&|r| r.backend_rate()),
            "median_kernel_cores_quiet": cores_quiet,
            "median_kernel_cores_flood": cores_flood,
            "median_cpu_ns_per_syn": med(&|r| r.ns_per_syn()),
            "rounds": per_round,
        }));
        let short: usize = rounds.iter().map(|r| r.short).sum();
        let line = format!(
            "{name}: established connections' delivery ratio >= {:.0}%: {:.2}% (median of {} \
             rounds), {broken} broken, {short} connection-rounds below 99% of their quiet count",
            100.0 * GOAL,
            100.0 * ratio,
            rounds.len()
        );
        match setup {
            Setup::Guard(_) => goals.push(verdict(&line, ratio >= GOAL && broken == 0)),
            _ => goals.push(format!("for comparison: {line}")),
        }
        for r in rounds.iter().filter(|r| !r.errors.is_empty()).take(1) {
            goals.push(format!("{name}: errors seen: {}", r.errors.join("; ")));
        }
    }
    let machine = Machine::probe();
    Report {
        title: "xlb flood benchmark: established connections through a spoofed SYN flood".into(),
        about: vec![
            format!("machine: {}", machine.summary()),
            format!(
                "{CONNECTIONS} established connections, one exchange each every {} ms; {rounds} \
                 round(s) of a {:.0} s quiet period and a {:.0} s flood period per contender; \
                 the flood from CPU {flood_cpu}, the established connections on CPU 0; xlb in \
                 NAT mode with a {FLOW_ENTRIES}-entry flow table",
                PACE.as_millis(),
                period.as_secs_f64(),
                period.as_secs_f64()
            ),
        ],
        table: Table {
            headers: HEADERS.to_vec(),
            right: vec![false, true, true, true, true, true, true, true],
            rows,
        },
        tables: vec![],
        sections: vec![
            ("goals", goals),
            (
                "method",
                vec![
                    format!(
                        "the flood: `xlb_gen` (XDP live frames, one thread) sends bare TCP SYNs \
                         to the VIP from random addresses in {FLOOD_CIDR} and random ports, \
                         at the rate the one CPU reaches through the whole path (SYN/s sent: \
                         those its link took; the generator makes more, which find the link's \
                         ring full), from a host of its own on the switch; the director routes {FLOOD_CIDR} back through the client, the backends do not \
                         (they drop the SYNs unanswered, counted in their prerouting: SYN/s at \
                         backends)"
                    ),
                    "established: 1,000 TCP connections from the client to the VIP, to the \
                     identity servers of three backends (NAT, port 8080), each sending a line \
                     and reading the backend's name back; an exchange that takes over 2 s, a \
                     reset or an answer from another backend breaks the connection, which is \
                     reopened before the next round"
                        .into(),
                    "each round: the service at weights 1:1:1, a quiet period with a change to \
                     2:1:1 halfway, then a flood period of the same length with a change to \
                     1:1:2 halfway (xlb: `Dataplane::apply`; nftables: the DNAT map replaced, \
                     conntrack keeping its connections)"
                        .into(),
                    "delivery ratio: exchanges completed per second in the flood period / \
                     exchanges completed per second in the quiet period, all connections \
                     together (median over rounds; with one exchange a second per connection \
                     it moves by a few percent either way); broken conns: summed over rounds, \
                     of the connections open at each round's start"
                        .into(),
                    "sys+softirq cores: system, irq and softirq time of all CPUs (/proc/stat) \
                     per second of each period, where XDP, the virtual switch, conntrack and \
                     the TCP stacks run; the director has no CPUs of its own here, so the \
                     generator's, the switch's and the backends' shares are in it, equal for \
                     every row. CPU ns/SYN: the kernel time per second the flood period \
                     adds over the quiet one, per SYN sent"
                        .into(),
                    "stateless new flows: xlb's `flood_stateless` counter over the flood \
                     periods, of the SYNs sent"
                        .into(),
                ],
            ),
        ],
        json: json!({
            "machine": machine.json(),
            "connections": CONNECTIONS,
            "pace_ms": PACE.as_millis() as u64,
            "period_s": period.as_secs_f64(),
            "rounds": rounds,
            "flow_entries": FLOW_ENTRIES,
            "results": results,
        }),
        plots: vec![Plot::new(
            "flood.svg",
            "established connections' delivery ratio during a SYN flood, by contender",
            move |path| {
                plot::bars(
                    path,
                    "Delivery ratio of established connections under a SYN flood",
                    "% of the quiet period's exchanges",
                    &bars,
                )
            },
        )],
    }
}
