//! `micro`: what one packet costs on each path through `xlb`, set against a
//! bare XDP_TX (`xlb_tx_floor`, from the benchmarks' own object), timed by
//! the kernel with BPF_PROG_TEST_RUN. Nothing is attached and nothing is
//! sent; the runs happen in a network namespace of the benchmark's own,
//! whose routes and neighbour let a NAT reply's FIB lookup succeed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use indicatif::{ProgressBar, ProgressStyle};
use lb_common::{
    maps::{Mode, DEFAULT_GEN_FLOWS, PROG_TX_FLOOR},
    stats::Counter,
};
use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::Pid,
};
use serde_json::json;
use xlb::dataplane::{
    BackendSpec, Dataplane, DirectorSettings, LoadOptions, NextHop, Protocol, ServiceSpec,
};
use xlb_tests::{
    bench_object,
    netns::Topology,
    packet::{Frame, DIRECTOR_MAC},
    testrun::{self, accept_test_frames, XdpAction},
};

use crate::report::{met, Machine, Report, Table};

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DIRECTOR4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const VIP_DR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP_IPIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const VIP_NAT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
/// The first backend of the NAT service, whose replies the program translates.
const NAT_BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 10);
const NAT_BACKEND_PORT: u16 = 8080;
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100);
/// New flows come from 10.0.0.0/8, one source address each.
const NEW_FLOW_NET: u32 = 0x0a00_0000;
const NEW_FLOW_LIMIT: u32 = 1 << 24;

const NOT_FOR_A_VIP: &str = "not for a VIP";
const NOT_FOR_A_VIP_PATH: &str = "UDP to no VIP nor NAT backend, NAT services installed: XDP_PASS";
const HIT: &str = "flow-table hit";
const DR_TCP: &str = "DR, IPv4 TCP";
const DR6_TCP: &str = "DR, IPv6 TCP";
const IPIP_TCP: &str = "IP-in-IP, IPv4 in IPv4 TCP";
const NAT_TCP: &str = "NAT, IPv4 TCP";
const NAT_REPLY: &str = "NAT reply";
const NAT_REPLY_PATH: &str =
    "IPv4 TCP from a NAT backend: translated, routed as the FIB said, redirected";
const NEW_FLOW: &str = "new flow";
const NEW_FLOW_PATH: &str = "DR, IPv4 TCP SYN, full flow table";
/// Issue 13's goals: (row, case, path, most allowed multiple of the floor).
const GOALS: [(&str, &str, &str, f64); 7] = [
    (
        "not for a VIP (NAT services configured)",
        NOT_FOR_A_VIP,
        NOT_FOR_A_VIP_PATH,
        1.5,
    ),
    ("DR hit, IPv4", HIT, DR_TCP, 2.5),
    ("DR hit, IPv6", HIT, DR6_TCP, 2.5),
    ("IP-in-IP hit", HIT, IPIP_TCP, 3.0),
    ("NAT hit", HIT, NAT_TCP, 3.0),
    ("NAT reply", NAT_REPLY, NAT_REPLY_PATH, 3.0),
    ("new flow, full table", NEW_FLOW, NEW_FLOW_PATH, 8.0),
];

struct Size {
    runs: u32,
    batches: usize,
}

/// How a case's runs reach the kernel.
#[derive(Clone)]
enum Runs {
    /// One call runs the frame `runs` times; the kernel reports the mean.
    /// The program runs again on the frame it left, so only for frames it
    /// leaves on the same path (checked).
    Repeat(Vec<u8>),
    /// One call per run, each with this frame.
    OneShot(Vec<u8>),
    /// One call per run, each a flow never seen.
    NewFlows,
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    path: &'static str,
    runs: Runs,
    action: XdpAction,
    /// Moves by one per run, checked for every batch (the floor counts nothing).
    counter: Option<Counter>,
}

impl Case {
    fn method(&self) -> &'static str {
        match self.runs {
            Runs::Repeat(_) => "repeat",
            Runs::OneShot(_) | Runs::NewFlows => "one-shot",
        }
    }

    /// The same case timed one call per run.
    fn one_shot(&self) -> Case {
        let runs = match &self.runs {
            Runs::Repeat(frame) => Runs::OneShot(frame.clone()),
            other => other.clone(),
        };
        Case {
            runs,
            ..self.clone()
        }
    }
}

/// What a case is timed on.
enum Timed<'a> {
    /// `xlb_tx_floor`, from the benchmarks' own object: it counts nothing.
    Floor(&'a Xdp),
    /// The balancer, whose counters check every batch.
    Balancer(&'a mut Dataplane),
}

impl Timed<'_> {
    fn program(&mut self) -> &Xdp {
        match self {
            Timed::Floor(program) => program,
            Timed::Balancer(dataplane) => dataplane.program(),
        }
    }

    /// The balancer, whose counters a counted case reads.
    fn balancer(&self) -> anyhow::Result<&Dataplane> {
        match self {
            Timed::Floor(_) => bail!("the floor counts nothing"),
            Timed::Balancer(dataplane) => Ok(dataplane),
        }
    }
}

/// A case's result: the kernel's mean ns per run of each batch.
struct Measured {
    case: Case,
    batches: Vec<f64>,
}

impl Measured {
    fn median(&self) -> f64 {
        median(&self.batches)
    }
}

/// Frames of flows never seen: one source address each.
struct NewFlows {
    next: u32,
    /// The flow table's size: filled before new flows are timed.
    table: u32,
}

impl NewFlows {
    fn frame(&mut self) -> anyhow::Result<Vec<u8>> {
        ensure!(
            self.next < NEW_FLOW_LIMIT,
            "out of new-flow source addresses"
        );
        let src = Ipv4Addr::from(NEW_FLOW_NET + self.next);
        self.next += 1;
        Ok(Frame::ipv4(src, VIP_DR).tcp_syn(40000, 80))
    }
}

/// The DR IPv4 TCP hit timed both ways: one-shot figures are reported
/// relative to it.
#[derive(Clone, Copy)]
struct Reference {
    repeat: f64,
    one_shot: f64,
}

/// What the timing thread hands back.
struct Run {
    cpu: usize,
    results: Vec<Measured>,
    reference: Reference,
    flow_table: u32,
}

pub fn run(quick: bool) -> anyhow::Result<Report> {
    run_only(quick, None)
}

/// [`run`], timing only the cases whose name or path contains `only`, with
/// the floor and the DR hit they are set against.
pub fn run_only(quick: bool, only: Option<&str>) -> anyhow::Result<Report> {
    let size = match quick {
        true => Size {
            runs: 10_000,
            batches: 3,
        },
        false => Size {
            runs: 1_000_000,
            batches: 5,
        },
    };
    // BPF_PROG_TEST_RUN frames arrive on the loopback device of the caller's
    // namespace, and a NAT reply is routed from there: in this namespace the
    // client's address is on-link with a neighbour entry, so the FIB lookup
    // succeeds and the reply leaves by the veth (XDP_REDIRECT). Dropping the
    // topology deletes both namespaces, also on an error.
    let mut topology = Topology::new("micro")?;
    let director = topology.add_ns("director")?;
    let client = topology.add_ns("client")?;
    topology.link(&director, "eth0", &client, "eth0")?;
    director.add_addr("eth0", &format!("{DIRECTOR4}/24"))?;
    director.add_neigh("eth0", &CLIENT4.to_string(), client.mac("eth0")?)?;
    director.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    let run = director.run(|| measure_all(&size, only))??;
    Ok(report(quick, &size, &run))
}

/// Times the floor and every case on a thread pinned to one CPU (the flow
/// table is per CPU) in the caller's network namespace.
fn measure_all(size: &Size, only: Option<&str>) -> anyhow::Result<Run> {
    let cpu = pin_to_one_cpu()?;
    let options = LoadOptions {
        bpf_log: log::LevelFilter::Off,
        maglev_size: 65537,
        ..Default::default()
    };
    let mut flows = NewFlows {
        next: 0,
        table: options.flow_entries,
    };

    let floor = {
        // xlb_gen's flows do not matter here.
        let mut object = bench_object::load(DEFAULT_GEN_FLOWS)?;
        let program = bench_object::program(&mut object, PROG_TX_FLOOR)?;
        program.load().context("loading xlb_tx_floor")?;
        let floor = Case {
            name: "floor",
            path: "bare XDP_TX (xlb_tx_floor)",
            runs: Runs::Repeat(frame_to(VIP_DR, Protocol::Tcp)),
            action: XdpAction::Tx,
            counter: None,
        };
        measure(&mut Timed::Floor(program), floor, size, &mut flows)?
    };

    let mut dataplane = Dataplane::load(&options).context("loading xlb")?;
    accept_test_frames(&mut dataplane)?;
    let settings = DirectorSettings {
        tunnel_src_v4: Some(DIRECTOR4),
        ..Default::default()
    };
    let services = services();
    check_not_for_a_vip(&services)?;
    dataplane
        .apply(&services, &settings)
        .context("installing the services")?;
    let mut balancer = Timed::Balancer(&mut dataplane);
    let mut results = vec![floor];
    let mut dr_one_shot = None;
    let chosen = |case: &Case| {
        only.is_none_or(|text| {
            case.path == DR_TCP || case.name.contains(text) || case.path.contains(text)
        })
    };
    for case in balancer_cases().into_iter().filter(chosen) {
        if case.path == DR_TCP {
            dr_one_shot = Some(measure(&mut balancer, case.one_shot(), size, &mut flows)?);
        }
        results.push(measure(&mut balancer, case, size, &mut flows)?);
    }

    let reference = Reference {
        repeat: find(&results, HIT, DR_TCP)
            .expect("the DR hit is always timed")
            .median(),
        one_shot: dr_one_shot.expect("the cases include the DR hit").median(),
    };
    Ok(Run {
        cpu,
        results,
        reference,
        flow_table: flows.table,
    })
}

fn balancer_cases() -> Vec<Case> {
    let hit = |path, runs| Case {
        name: HIT,
        path,
        runs,
        action: XdpAction::Tx,
        counter: Some(Counter::FlowHit),
    };
    vec![
        Case {
            name: NOT_FOR_A_VIP,
            path: NOT_FOR_A_VIP_PATH,
            runs: Runs::Repeat(Frame::ipv4(CLIENT4, NOT_A_VIP).udp(40000, 53, b"xlb")),
            action: XdpAction::Pass,
            counter: Some(Counter::Pass),
        },
        hit(DR_TCP, Runs::Repeat(frame_to(VIP_DR, Protocol::Tcp))),
        hit(
            "DR, IPv4 UDP",
            Runs::Repeat(frame_to(VIP_DR, Protocol::Udp)),
        ),
        hit(
            DR6_TCP,
            Runs::Repeat(Frame::ipv6(CLIENT6, VIP6).tcp_data(40000, 80, 1, 1, b"xlb")),
        ),
        hit(IPIP_TCP, Runs::OneShot(frame_to(VIP_IPIP, Protocol::Tcp))),
        hit(NAT_TCP, Runs::OneShot(frame_to(VIP_NAT, Protocol::Tcp))),
        // The translated reply comes from the VIP, which no rule matches:
        // timed one-shot.
        Case {
            name: NAT_REPLY,
            path: NAT_REPLY_PATH,
            runs: Runs::OneShot(Frame::ipv4(NAT_BACKEND, CLIENT4).tcp_data(
                NAT_BACKEND_PORT,
                40000,
                1,
                1,
                b"xlb",
            )),
            action: XdpAction::Redirect,
            counter: Some(Counter::NatReply),
        },
        Case {
            name: NEW_FLOW,
            path: NEW_FLOW_PATH,
            runs: Runs::NewFlows,
            action: XdpAction::Tx,
            counter: Some(Counter::FlowMiss),
        },
    ]
}

fn frame_to(vip: Ipv4Addr, protocol: Protocol) -> Vec<u8> {
    let frame = Frame::ipv4(CLIENT4, vip);
    match protocol {
        Protocol::Tcp => frame.tcp_data(40000, 80, 1, 1, b"xlb"),
        Protocol::Udp => frame.udp(40000, 53, b"xlb"),
    }
}

/// A backend at weight 100 behind the director's own MAC: the program
/// balances only frames to it, and a repeated run sees the frame the last
/// one left.
pub(crate) fn backend_behind_director(addr: IpAddr, port: u16) -> BackendSpec {
    BackendSpec {
        addr,
        port,
        weight: 100,
        drain: false,
        next_hop: NextHop {
            mac: DIRECTOR_MAC,
            ifindex: 0,
            src_mac: [0; 6],
        },
    }
}

/// DR (TCP, UDP, IPv6), IP-in-IP and NAT services of three backends each.
fn services() -> Vec<ServiceSpec> {
    let service = |vip: IpAddr, port, protocol, mode, backends: [IpAddr; 3], backend_port| {
        let backends = backends
            .iter()
            .map(|&addr| backend_behind_director(addr, backend_port))
            .collect();
        ServiceSpec {
            vip,
            port,
            protocol,
            mode,
            affinity: None,
            backends,
        }
    };
    let v4 =
        |c: u8| -> [IpAddr; 3] { [10, 11, 12].map(|d| IpAddr::V4(Ipv4Addr::new(198, 18, c, d))) };
    let v6: [IpAddr; 3] =
        [0x10, 0x11, 0x12].map(|d| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 1, 0, 0, 0, 0, d)));
    vec![
        service(VIP_DR.into(), 80, Protocol::Tcp, Mode::Dr, v4(1), 80),
        service(VIP_DR.into(), 53, Protocol::Udp, Mode::Dr, v4(1), 53),
        service(VIP6.into(), 80, Protocol::Tcp, Mode::Dr, v6, 80),
        service(VIP_IPIP.into(), 80, Protocol::Tcp, Mode::Ipip, v4(2), 80),
        service(
            VIP_NAT.into(),
            80,
            Protocol::Tcp,
            Mode::Nat,
            v4(3),
            NAT_BACKEND_PORT,
        ),
    ]
}

/// The not-for-a-VIP case is timed with the NAT-reply path armed: at least
/// one NAT service, and neither of its frame's addresses a VIP or a NAT
/// backend.
fn check_not_for_a_vip(services: &[ServiceSpec]) -> anyhow::Result<()> {
    let nat = services.iter().any(|s| s.mode == Mode::Nat);
    ensure!(nat, "the not-for-a-VIP case needs a NAT service installed");
    for addr in [CLIENT4, NOT_A_VIP].map(IpAddr::V4) {
        let known = services.iter().any(|s| {
            s.vip == addr || (s.mode == Mode::Nat && s.backends.iter().any(|b| b.addr == addr))
        });
        ensure!(!known, "{addr} is a VIP or a NAT backend");
    }
    Ok(())
}

/// Times `case` on `timed` in batches; the flow table is per CPU, so the
/// caller is pinned to one.
fn measure(
    timed: &mut Timed,
    case: Case,
    size: &Size,
    flows: &mut NewFlows,
) -> anyhow::Result<Measured> {
    let label = format!("{} ({}, {})", case.name, case.path, case.method());
    prepare(timed.program(), &case, flows).with_context(|| label.clone())?;

    let bar = progress(&label, u64::from(size.runs) * size.batches as u64);
    let mut batches = Vec::with_capacity(size.batches);
    for _ in 0..size.batches {
        let before = match case.counter {
            Some(counter) => Some((counter, timed.balancer()?.counters()?.get(counter))),
            None => None,
        };
        let program = timed.program();
        let ns = match &case.runs {
            Runs::Repeat(frame) => {
                let ns = repeated(program, frame, size.runs, case.action)?;
                bar.inc(u64::from(size.runs));
                ns
            }
            Runs::OneShot(_) | Runs::NewFlows => {
                let mut total = Duration::ZERO;
                for _ in 0..size.runs {
                    let fresh;
                    let frame = match &case.runs {
                        Runs::OneShot(frame) => frame,
                        _ => {
                            fresh = flows.frame()?;
                            &fresh
                        }
                    };
                    total += one_shot(program, frame, case.action)?;
                    bar.inc(1);
                }
                total.as_nanos() as f64 / f64::from(size.runs)
            }
        };
        if let Some((counter, before)) = before {
            moved_once_per_run(timed.balancer()?, counter, before, size.runs.into(), &label)?;
        }
        batches.push(ns);
    }
    let measured = Measured { case, batches };
    bar.finish_with_message(format!("{:.1} ns raw", measured.median()));
    Ok(measured)
}

/// Checks the case's verdict once (which also records its flow) and, for
/// new flows, fills the flow table.
fn prepare(program: &Xdp, case: &Case, flows: &mut NewFlows) -> anyhow::Result<()> {
    match &case.runs {
        Runs::Repeat(frame) => check_repeatable(program, frame, case.action),
        Runs::OneShot(frame) => expect(testrun::run(program, frame)?.0, case.action),
        Runs::NewFlows => {
            // Timed against a full table, as on a busy director: every new
            // flow also evicts the least recently used one.
            let entries = u64::from(flows.table);
            let bar = progress("filling the flow table", entries);
            for _ in 0..entries {
                one_shot(program, &flows.frame()?, case.action)?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            expect(testrun::run(program, &flows.frame()?)?.0, case.action)
        }
    }
}

/// The kernel's mean ns per run over `repeat` runs of `frame` in one call.
pub(crate) fn repeated(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
    action: XdpAction,
) -> anyhow::Result<f64> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    expect(XdpAction::from_return(result.return_value)?, action)?;
    Ok(result.duration.as_nanos() as f64)
}

/// One run of `frame`, as the kernel timed it.
pub(crate) fn one_shot(program: &Xdp, frame: &[u8], action: XdpAction) -> anyhow::Result<Duration> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    expect(XdpAction::from_return(result.return_value)?, action)?;
    Ok(result.duration)
}

/// Fails the bench unless `counter` moved by exactly `runs` since `before`:
/// every run took the path meant.
pub(crate) fn moved_once_per_run(
    dataplane: &Dataplane,
    counter: Counter,
    before: u64,
    runs: u64,
    label: &str,
) -> anyhow::Result<()> {
    let moved = dataplane.counters()?.get(counter) - before;
    ensure!(
        moved == runs,
        "{label}: {} moved by {moved} in {runs} runs: not the path meant",
        counter.name()
    );
    Ok(())
}

fn expect(got: XdpAction, action: XdpAction) -> anyhow::Result<()> {
    ensure!(
        got == action,
        "the program returned {got:?}, not {action:?}"
    );
    Ok(())
}

/// A repeated run sees the frame the previous run left: sound only if that
/// frame takes the same path, with the same verdict and the same bytes past
/// the MAC addresses (which a forward rewrites).
pub(crate) fn check_repeatable(
    program: &Xdp,
    frame: &[u8],
    action: XdpAction,
) -> anyhow::Result<()> {
    let (first, once) = testrun::run(program, frame)?;
    expect(first, action)?;
    let (second, twice) = testrun::run(program, &once)?;
    ensure!(
        second == first && twice.get(12..) == once.get(12..),
        "the program changes the frame so that a repeat takes another path; time it one-shot"
    );
    Ok(())
}

/// The named case's result; `None` if `--only` left it out.
fn find<'a>(results: &'a [Measured], name: &str, path: &str) -> Option<&'a Measured> {
    results
        .iter()
        .find(|m| m.case.name == name && m.case.path == path)
}

fn report(quick: bool, size: &Size, run: &Run) -> Report {
    let Run {
        cpu,
        ref results,
        reference,
        flow_table,
    } = *run;
    let floor = results[0].median();
    // A one-shot case: the DR hit repeated, plus what the case takes over
    // the DR hit when both are timed one-shot.
    let shift = reference.one_shot - reference.repeat;
    let net = |m: &Measured, ns: f64| match m.case.runs {
        Runs::Repeat(_) => ns,
        Runs::OneShot(_) | Runs::NewFlows => ns - shift,
    };
    let machine = Machine::probe();

    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for m in results {
        let ns = net(m, m.median());
        let batches: Vec<f64> = m.batches.iter().map(|&b| net(m, b)).collect();
        let low = batches.iter().copied().fold(f64::INFINITY, f64::min);
        let high = batches.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        rows.push(vec![
            m.case.name.to_string(),
            m.case.path.to_string(),
            m.case.method().to_string(),
            format!("{ns:.1}"),
            format!("{:.2}", ns / floor),
            format!("{low:.1}-{high:.1}"),
        ]);
        cases.push(json!({
            "case": m.case.name,
            "path": m.case.path,
            "method": m.case.method(),
            "ns_per_packet": ns,
            "ratio_to_floor": ns / floor,
            "batches_ns": batches,
        }));
    }

    let mut goal_rows = vec![vec![
        "floor: bare XDP_TX".to_string(),
        format!("{floor:.1}"),
        "1.00".to_string(),
        String::new(),
        String::new(),
    ]];
    let mut goals = Vec::new();
    for (row, name, path, limit) in GOALS {
        let Some(m) = find(results, name, path) else {
            continue;
        };
        let ns = net(m, m.median());
        let ratio = ns / floor;
        let is_met = ratio <= limit;
        goal_rows.push(vec![
            row.to_string(),
            format!("{ns:.1}"),
            format!("{ratio:.2}"),
            format!("<= {limit}x"),
            met(is_met).to_string(),
        ]);
        goals.push(json!({
            "path": row,
            "case": format!("{name}: {path}"),
            "ns": ns,
            "ratio": ratio,
            "goal": limit,
            "met": is_met,
        }));
    }

    let method = vec![
        "repeat: one BPF_PROG_TEST_RUN call runs the frame N times and the kernel reports \
         the mean, in whole ns. The program runs again on the frame it left behind, so \
         this is used only where that frame takes the same path (checked before timing)."
            .to_string(),
        format!(
            "one-shot: one call per run, each timed by the kernel on its own (the syscall \
             excluded). A lone run costs more than one of many in a row (clock reads, no \
             XDP dispatcher, caches and branch predictors the syscall has disturbed), so \
             the DR IPv4 TCP hit is timed both ways ({:.1} ns repeated, {:.1} ns one-shot) \
             and a one-shot case is shown as the repeated hit plus what the case takes \
             over the one-shot hit: its extra work, timed under the same conditions. This \
             errs high, as the extra work also runs cold.",
            reference.repeat, reference.one_shot
        ),
        format!(
            "new flow: each run is a TCP SYN from a source address not seen before, into a \
             flow table already full ({flow_table} entries), so each new flow also evicts \
             the least recently used one, as on a busy director."
        ),
        "IP-in-IP and NAT rewrite the frame a repeat would run again, so they are \
         timed one-shot too."
            .to_string(),
        "NAT reply: a TCP segment from a NAT backend's address and port to a client, which \
         the program translates to the VIP, routes by the kernel's FIB (the benchmark's \
         namespace has the client on-link, with a neighbour entry; after the first run, \
         and again every 25 jiffies, by the CPU's copy of that lookup's result) and \
         redirects out of that namespace's veth."
            .to_string(),
        "every batch is checked against the program's counters: each run took the path \
         meant (hits hit the flow table, new flows missed it, the not-for-a-VIP frame \
         passed, NAT replies were translated)."
            .to_string(),
        format!(
            "goals (issue 13): each path's ns/packet as a multiple of the floor measured in \
             the same run ({floor:.1} ns)."
        ),
    ];

    let about = vec![
        format!("machine: {}; timed on CPU {cpu}", machine.summary()),
        format!(
            "{} batches of {} runs per case{}; the median batch is shown",
            size.batches,
            size.runs,
            if quick { " (--quick)" } else { "" }
        ),
    ];
    let json = json!({
        "benchmark": "micro",
        "quick": quick,
        "machine": machine.json(),
        "cpu_timed_on": cpu,
        "batches": size.batches,
        "runs_per_batch": size.runs,
        "floor_ns": floor,
        "one_shot_reference": {
            "path": DR_TCP,
            "repeat_ns": reference.repeat,
            "one_shot_ns": reference.one_shot,
        },
        "flow_table_entries": flow_table,
        "cases": cases,
        "goals": goals,
        "method": method,
    });
    Report {
        title: "xlb micro benchmark: ns per packet, timed by the kernel (BPF_PROG_TEST_RUN)".into(),
        about,
        table: Table {
            headers: vec![
                "case",
                "path",
                "method",
                "ns/packet",
                "x floor",
                "batch range",
            ],
            right: vec![false, false, false, true, true, true],
            rows,
        },
        tables: vec![(
            "goals",
            Table {
                headers: vec!["path", "ns/packet", "x floor", "goal", "verdict"],
                right: vec![false, true, true, true, false],
                rows: goal_rows,
            },
        )],
        sections: vec![("method", method)],
        plots: vec![],
        json,
    }
}

pub(crate) fn progress(label: &str, runs: u64) -> ProgressBar {
    let bar = ProgressBar::new(runs).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {human_pos}/{human_len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// A bar of `len` steps, each named by the bar's message.
pub(crate) fn steps(len: u64) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("valid template"),
    )
}

/// Pins this thread to the last CPU it may use, and returns that CPU.
pub(crate) fn pin_to_one_cpu() -> anyhow::Result<usize> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    let cpu = (0..CpuSet::count())
        .rev()
        .find(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .context("no CPU to run on")?;
    let mut only = CpuSet::new();
    only.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &only).context("sched_setaffinity")?;
    Ok(cpu)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() % 2 {
        1 => sorted[mid],
        _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
    }
}
