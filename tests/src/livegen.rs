//! The load benchmarks' generator and counters, from their own object
//! ([`crate::bench_object`]): `xlb_gen` run by BPF_PROG_TEST_RUN in
//! live-frames mode (UDP flows for `udp`, spoofed TCP SYNs for `flood`), and
//! `xlb_count` on the receivers.
//!
//! In live-frames mode the kernel runs the program on the frame `repeat`
//! times, in batches, and sends each frame it returns XDP_TX for out of the
//! interface named by the context's `ingress_ifindex` (as a redirect to that
//! interface; the index is looked up in the caller's network namespace, so
//! the runs are made from threads inside it). No socket, skb or copy to user
//! space is involved, so one CPU sends millions of frames a second.
//!
//! On veth, the frames go straight into a ring of the sending interface's
//! peer, whose NAPI then runs on the sending CPU at the end of each batch,
//! with everything downstream that runs in it (a bridge, the next veth's XDP
//! program): a thread's rate is that of the whole path. What the peer needs:
//!
//! - NAPI on: GRO on (`ethtool -K PEER gro on`, as
//!   [`crate::netns::Switch::connect`] does for both ends) or an XDP program
//!   of its own (a [`Counter`], say). No program is needed on a GRO port:
//!   these frames arrive as a redirect, whose flush wakes the peer's NAPI by
//!   itself (unlike a driver's XDP_TX, for which the lab's director port
//!   needs [`crate::lab::pass_through`]). Without NAPI the frames vanish
//!   uncounted, which [`Generator::send`] reports as an error;
//! - a receive queue per generator thread: a frame goes to the peer's queue
//!   of the sending CPU's number, modulo its queue count. With one queue, the
//!   veth default, every thread fills the same ring and one CPU drains it: a
//!   second thread adds little but frames refused for a full ring
//!   ([`Sent::tx_dropped`]; most of its frames, into the lab's switch). Give
//!   the pair `numtxqueues N numrxqueues N`;
//! - room for the frame: a redirect drops frames longer than the MTU plus
//!   18 bytes (Ethernet header and a VLAN tag) uncounted, so
//!   [`Generator::send`] refuses them; and in live-frames mode the kernel
//!   takes no frame over a page less its headroom and tailroom (with 4 KB
//!   pages 3,000 bytes pass and 3,500 do not).

use std::{
    fs::File,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context};
use aya::{
    maps::PerCpuArray,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use lb_common::maps::{
    COUNT_BYTES, COUNT_PACKETS, DEFAULT_GEN_FLOWS, GEN_MAX_FLOWS, MAP_COUNT, MAP_GEN_SENT,
    PROG_COUNT, PROG_GEN,
};
use nix::sched::{unshare, CloneFlags};

use crate::{
    bench_object::{self, program},
    lab::pin_to_cpu,
    netns::Netns,
};

/// Frames per batch: the kernel's default, a driver's NAPI weight. Each
/// batch ends with a flush to the peer and a run of its NAPI.
pub const BATCH: u32 = 64;
/// Frames per BPF_PROG_TEST_RUN call; the time limit is checked between calls.
const CHUNK: u64 = 16_384;
/// Shortest frame `xlb_gen` sends: Ethernet, IPv4 without options, UDP.
const MIN_FRAME: usize = 14 + 20 + 8;
/// The only TCP frame `xlb_gen` sends: Ethernet, IPv4 and TCP without options
/// or payload (a SYN, whose source it randomizes).
const TCP_FRAME: usize = 14 + 20 + 20;
/// What a redirect allows a frame over the MTU: an Ethernet header and a VLAN tag.
const LINK_HEADER: usize = 14 + 4;

/// `xlb_gen`, loaded to spread its frames over `flows` flows: source ports
/// `GEN_FIRST_PORT`, `GEN_FIRST_PORT + 1`, … in turn, counted per CPU.
pub struct Generator {
    // Fields drop in order: the program detaches from its parking place,
    // then the namespace goes.
    ebpf: Ebpf,
    /// The namespace where the program is parked (see [`park`]).
    _parking: File,
    /// The online CPUs, whose first `threads` send.
    cpus: Vec<usize>,
    threads: usize,
}

/// What [`Generator::send`] sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Frames the program ran on and sent with XDP_TX.
    pub packets: u64,
    /// Of those, frames the sending interface counted as dropped: its peer's
    /// ring was full.
    pub tx_dropped: u64,
    pub elapsed: Duration,
}

impl Sent {
    pub fn rate(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64()
    }
}

impl Generator {
    /// Loads `xlb_gen` for `flows` flows (1 to `GEN_MAX_FLOWS`), to send from
    /// one thread per online CPU.
    pub fn load(flows: u32) -> anyhow::Result<Generator> {
        ensure!(
            (1..=GEN_MAX_FLOWS).contains(&flows),
            "{flows} flows: the generator spreads over 1 to {GEN_MAX_FLOWS}"
        );
        let mut ebpf = bench_object::load(flows)?;
        let program = program(&mut ebpf, PROG_GEN)?;
        program
            .load()
            .with_context(|| format!("loading {PROG_GEN}"))?;
        let parking = park(program)?;
        let cpus = online_cpus()?;
        Ok(Generator {
            ebpf,
            _parking: parking,
            threads: cpus.len(),
            cpus,
        })
    }

    /// Sends from `threads` threads (at least 1, at most the online CPUs),
    /// each pinned to its own CPU.
    pub fn set_threads(&mut self, threads: usize) -> anyhow::Result<()> {
        let cpus = self.cpus.len();
        ensure!(
            (1..=cpus).contains(&threads),
            "{threads} generator threads: 1 to {cpus} (one per online CPU)"
        );
        self.threads = threads;
        Ok(())
    }

    /// Sends from one thread on each of `cpus` (online CPUs), rather than
    /// from the first online CPUs.
    pub fn set_cpus(&mut self, cpus: &[usize]) -> anyhow::Result<()> {
        let online = online_cpus()?;
        ensure!(
            !cpus.is_empty() && cpus.iter().all(|cpu| online.contains(cpu)),
            "generator CPUs {cpus:?}: some of the online CPUs {online:?}"
        );
        self.cpus = cpus.to_vec();
        self.threads = cpus.len();
        Ok(())
    }

    /// How many threads [`Generator::send`] sends from.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Sends `frame` (Ethernet + IPv4 without options + UDP, source port
    /// rewritten, UDP checksum zeroed; or a bare TCP header, sent as SYNs
    /// from random addresses in the frame's source /16 and random ports,
    /// checksums recomputed) out of `ifname` in `ns` about `count`
    /// times, in live-frame batches from each thread, stopping early once
    /// `limit` has passed. Returns how many frames the program sent, from its
    /// per-CPU counts, and how long that took.
    pub fn send(
        &self,
        ns: &Netns,
        ifname: &str,
        frame: &[u8],
        count: u64,
        limit: Duration,
    ) -> anyhow::Result<Sent> {
        check_frame(frame)?;
        let ifindex = ns.ifindex(ifname)?;
        let ctx = xdp_md(frame.len(), ifindex);
        let program = self.program()?;
        let link = link_state(ns, ifname)?;
        ensure!(
            frame.len() <= link.mtu as usize + LINK_HEADER,
            "a {}-byte frame does not fit {ifname}'s MTU of {} plus {LINK_HEADER} bytes",
            frame.len(),
            link.mtu
        );
        let sent_before = self.sent()?;
        let left = AtomicU64::new(count);
        let start = Instant::now();
        let deadline = start + limit;
        thread::scope(|scope| {
            let workers: Vec<_> = self.cpus[..self.threads]
                .iter()
                .map(|&cpu| {
                    let (left, ctx) = (&left, &ctx);
                    scope.spawn(move || -> anyhow::Result<()> {
                        pin_to_cpu(cpu)?;
                        ns.run(|| send_chunks(program, frame, ctx, left, deadline))?
                            .with_context(|| format!("sending from CPU {cpu}"))
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| bail!("a generator thread panicked"))
            })
        })?;
        let elapsed = start.elapsed();
        let packets = self.sent()? - sent_before;
        let after = link_state(ns, ifname)?;
        // A veth counts the frames its peer took as transmitted; frames a
        // peer without NAPI cannot take vanish without a count.
        ensure!(
            packets == 0 || after.tx_packets > link.tx_packets,
            "{ifname} in {} transmitted none of {packets} frames: is its peer ready for XDP \
             frames (GRO on, or an XDP program)?",
            ns.name()
        );
        Ok(Sent {
            packets,
            tx_dropped: after.tx_dropped - link.tx_dropped,
            elapsed,
        })
    }

    fn program(&self) -> anyhow::Result<&Xdp> {
        self.ebpf
            .program(PROG_GEN)
            .context("the BPF object has no xlb_gen")?
            .try_into()
            .context("xlb_gen is not an XDP program")
    }

    /// Frames sent so far, summed over CPUs.
    fn sent(&self) -> anyhow::Result<u64> {
        per_cpu_sum(&self.ebpf, MAP_GEN_SENT, 0)
    }
}

/// Attaches `program` (generic mode) to the loopback of a new, empty
/// namespace, where it never runs, and returns that namespace's file, which
/// keeps it. An attached program stays in the kernel's XDP dispatcher; else
/// each BPF_PROG_TEST_RUN call would add it and remove it again, two updates
/// that each wait for an RCU grace period (about 25 ms together here, which
/// cut a lone thread's rate to a sixth).
fn park(program: &mut Xdp) -> anyhow::Result<File> {
    thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<File> {
                unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
                let ns = File::open("/proc/thread-self/ns/net")
                    .context("opening the new network namespace")?;
                program
                    .attach("lo", XdpMode::Skb)
                    .with_context(|| format!("parking {PROG_GEN} on a private lo"))?;
                Ok(ns)
            })
            .join()
            .unwrap_or_else(|_| bail!("the thread parking {PROG_GEN} panicked"))
    })
}

/// Runs chunks of `frame` until `left` is used up or `deadline` passes.
fn send_chunks(
    program: &Xdp,
    frame: &[u8],
    ctx: &[u8],
    left: &AtomicU64,
    deadline: Instant,
) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        let Ok(before) = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            (left > 0).then(|| left - left.min(CHUNK))
        }) else {
            return Ok(());
        };
        let repeat = before.min(CHUNK) as u32;
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            })
            .with_context(|| {
                format!(
                    "BPF_PROG_TEST_RUN in live-frames mode, a {}-byte frame",
                    frame.len()
                )
            })?;
    }
    Ok(())
}

/// `xlb_count` attached in native mode to an interface, with its per-CPU
/// totals. Detached on drop.
pub struct Counter {
    ebpf: Ebpf,
}

impl Counter {
    /// Loads `xlb_count` and attaches it to `ifname` in `ns`, in native mode
    /// (on veth this also turns on the interface's NAPI, so its peer can send
    /// it XDP frames).
    pub fn attach(ns: &Netns, ifname: &str) -> anyhow::Result<Counter> {
        let mut ebpf = bench_object::load(DEFAULT_GEN_FLOWS)?;
        let program = program(&mut ebpf, PROG_COUNT)?;
        program
            .load()
            .with_context(|| format!("loading {PROG_COUNT}"))?;
        ns.run(|| program.attach(ifname, XdpMode::Driver))?
            .with_context(|| format!("attaching {PROG_COUNT} to {ifname} in {}", ns.name()))?;
        Ok(Counter { ebpf })
    }

    /// Frames seen, summed over CPUs.
    pub fn packets(&self) -> anyhow::Result<u64> {
        per_cpu_sum(&self.ebpf, MAP_COUNT, COUNT_PACKETS)
    }

    /// Bytes of the frames seen (Ethernet header on, no FCS), summed over CPUs.
    pub fn bytes(&self) -> anyhow::Result<u64> {
        per_cpu_sum(&self.ebpf, MAP_COUNT, COUNT_BYTES)
    }
}

fn per_cpu_sum(ebpf: &Ebpf, map: &str, index: u32) -> anyhow::Result<u64> {
    let map = ebpf
        .map(map)
        .with_context(|| format!("the BPF object has no map {map}"))?;
    let array = PerCpuArray::<_, u64>::try_from(map)?;
    Ok(array.get(&index, 0)?.iter().sum())
}

/// What `xlb_gen` needs of a frame; it drops anything else.
fn check_frame(frame: &[u8]) -> anyhow::Result<()> {
    ensure!(
        frame.len() >= MIN_FRAME,
        "a {}-byte frame is too short for Ethernet + IPv4 + UDP",
        frame.len()
    );
    ensure!(
        frame[12..14] == [0x08, 0x00] && frame[14] == 0x45,
        "the generator sends untagged Ethernet + IPv4 without options frames only"
    );
    match frame[23] {
        17 => Ok(()),
        6 => {
            ensure!(
                frame.len() == TCP_FRAME && frame[46] >> 4 == 5,
                "the generator's TCP frames are bare headers ({TCP_FRAME} bytes, no options or \
                 payload), not {} bytes",
                frame.len()
            );
            Ok(())
        }
        proto => bail!("the generator sends UDP or TCP frames, not IP protocol {proto}"),
    }
}

/// A `struct xdp_md` for a frame of `len` bytes arriving on `ifindex`, queue 0.
fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let fields = [0, len as u32, 0, ifindex, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

struct LinkState {
    mtu: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

/// The interface's MTU and transmit counters, as `ip -s link` reports them.
fn link_state(ns: &Netns, ifname: &str) -> anyhow::Result<LinkState> {
    let link = ns.link_json(ifname, &["-s"])?;
    let field = |pointer: &str| {
        link.pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {pointer} for {ifname} in {}: {link}", ns.name()))
    };
    Ok(LinkState {
        mtu: field("/mtu")?,
        tx_packets: field("/stats64/tx/packets")?,
        tx_dropped: field("/stats64/tx/dropped")?,
    })
}

/// The CPUs online, from `/sys/devices/system/cpu/online`.
fn online_cpus() -> anyhow::Result<Vec<usize>> {
    let cpus = aya::util::online_cpus().map_err(|(path, e)| anyhow!("reading {path}: {e}"))?;
    Ok(cpus.into_iter().map(|cpu| cpu as usize).collect())
}
