//! `failover`: what the client sees when the master director goes, with
//! xlb's VRRP moving the VIP and with keepalived moving it in front of the
//! same xlb data plane, at advert intervals of 1 s, 100 ms and 20 ms: the
//! backup's takeover, the outage to the VIP, lost requests, and broken and
//! failed connections.

use std::{
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use lb_common::maps::Mode;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use xlb_tests::{
    agent::{
        outage, request_in, total, AgentTestbed, Outage, Prober, SteadyLoad, PROBE_EVERY,
        PROBE_TIMEOUT,
    },
    keepalived,
    lab::{Family, VIP_V4},
    netns::{ChildHandle, Netns},
    servers::{udp_spread, LongLived},
};

use crate::{
    micro::steps,
    plot,
    report::{verdict, Machine, Plot, Report, Table},
};

/// The goal from the issue: at 20 ms adverts, a SIGKILLed master costs less than 100 ms.
const GOAL_INTERVAL: Duration = Duration::from_millis(20);
const GOAL_OUTAGE: Duration = Duration::from_millis(100);
/// Director 1, then director 2: 1 is master whenever it runs.
const PRIORITIES: [u8; 2] = [150, 100];
/// Connections opened before each event and used again after it.
const LONG_LIVED: usize = 20;
/// Probing before the event, and after the takeover.
const BEFORE: Duration = Duration::from_millis(300);
const AFTER: Duration = Duration::from_secs(1);
/// How often the takeover is polled.
const POLL: Duration = Duration::from_millis(5);
/// Start-up and scheduling slack on top of the protocol's times.
const SLACK: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Xlb,
    Keepalived,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Xlb => "xlb",
            Contender::Keepalived => "keepalived",
        }
    }

    fn tag(self) -> char {
        match self {
            Contender::Xlb => 'x',
            Contender::Keepalived => 'k',
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The master's VRRP speaker is SIGKILLed; the host stays.
    Kill,
    /// The speaker is SIGKILLed and the host drops off the segment.
    Lost,
    /// The speaker gets SIGTERM.
    Stop,
}

const EVENTS: [Event; 3] = [Event::Kill, Event::Lost, Event::Stop];

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Kill => "SIGKILL",
            Event::Lost => "director lost",
            Event::Stop => "clean stop",
        }
    }
}

/// One event's measurements.
struct Row {
    contender: Contender,
    interval: Duration,
    event: Event,
    /// From the event until the backup was master; `None` if it never was.
    takeover: Option<Duration>,
    /// `None` without answered requests on both sides of the event.
    outage: Option<Outage>,
    /// Long-lived connections that broke or moved to another backend.
    broken: usize,
    failed_new: u64,
    new: u64,
}

pub fn run(quick: bool) -> anyhow::Result<Report> {
    let intervals: Vec<Duration> = if quick {
        vec![Duration::from_millis(100)]
    } else {
        [1000, 100, 20].map(Duration::from_millis).to_vec()
    };
    let contenders = [Contender::Xlb, Contender::Keepalived];
    let progress = steps((contenders.len() * intervals.len() * EVENTS.len()) as u64);
    let mut rows = Vec::new();
    for &contender in &contenders {
        for &interval in &intervals {
            let what = format!("{}, {} adverts", contender.name(), label(interval));
            progress.set_message(format!("{what}: building the lab"));
            let mut pair = Pair::new(contender, interval).with_context(|| what.clone())?;
            for event in EVENTS {
                progress.set_message(format!("{what}: {}", event.name()));
                rows.push(
                    pair.measure(event)
                        .with_context(|| format!("{what}: {}", event.name()))?,
                );
                progress.inc(1);
            }
        }
    }
    progress.finish_and_clear();
    Ok(report(
        &rows,
        *intervals.last().expect("an interval"),
        quick,
    ))
}

fn report(rows: &[Row], fastest: Duration, quick: bool) -> Report {
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    let table_rows = rows
        .iter()
        .map(|r| {
            vec![
                r.contender.name().to_string(),
                label(r.interval),
                r.event.name().to_string(),
                r.takeover.map_or("never".into(), ms),
                r.outage.map_or("no reply".into(), |o| ms(o.gap)),
                r.outage.map_or("-".into(), |o| o.lost.to_string()),
                format!("{}/{LONG_LIVED}", r.broken),
                format!("{}/{}", r.failed_new, r.new),
            ]
        })
        .collect();

    let find = |contender: Contender, event: Event| {
        rows.iter()
            .find(|r| r.contender == contender && r.interval == fastest && r.event == event)
            .expect("every event was measured")
    };
    let gap = |r: &Row| {
        r.outage
            .map_or("no reply".into(), |o| format!("{} ms", ms(o.gap)))
    };
    let (kill, lost) = (
        find(Contender::Xlb, Event::Kill),
        find(Contender::Xlb, Event::Lost),
    );
    let within = |r: &Row| r.outage.is_some_and(|o| o.gap < GOAL_OUTAGE) && r.broken == 0;
    let goal = verdict(
        &format!(
            "at {} adverts, SIGKILL (director lost) outage < {} ms and 0 broken connections: \
             director lost {}, SIGKILL {}; broken {} and {} of {LONG_LIVED}{}",
            label(GOAL_INTERVAL),
            GOAL_OUTAGE.as_millis(),
            gap(lost),
            gap(kill),
            lost.broken,
            kill.broken,
            if fastest == GOAL_INTERVAL {
                String::new()
            } else {
                format!(" (quick run: measured at {} adverts)", label(fastest))
            }
        ),
        within(kill) && within(lost),
    );
    let versus: Vec<String> = EVENTS
        .iter()
        .map(|&event| {
            let (x, k) = (
                find(Contender::Xlb, event),
                find(Contender::Keepalived, event),
            );
            let ratio = match (x.outage, k.outage) {
                (Some(x), Some(k)) => format!(
                    " (xlb / keepalived = {:.2})",
                    x.gap.as_secs_f64() / k.gap.as_secs_f64()
                ),
                _ => String::new(),
            };
            format!("{} {} vs {}{ratio}", event.name(), gap(x), gap(k))
        })
        .collect();
    let compare = format!(
        "vs keepalived at {} adverts, outage gap xlb vs keepalived: {}",
        label(fastest),
        versus.join("; ")
    );

    // Outage when the master is lost, a group of contenders per interval.
    let mut lost_outages: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for r in rows.iter().filter(|r| r.event == Event::Lost) {
        let interval = label(r.interval);
        let gap = r.outage.map_or(f64::NAN, |o| o.gap.as_secs_f64() * 1e3);
        let bar = (r.contender.name().to_string(), gap);
        match lost_outages.iter_mut().find(|(i, _)| *i == interval) {
            Some((_, bars)) => bars.push(bar),
            None => lost_outages.push((interval, vec![bar])),
        }
    }
    let plot = Plot::new(
        "failover.svg",
        "outage gap when the master director is lost, per advert interval, xlb vs keepalived",
        move |path| {
            plot::grouped_bars(
                path,
                "outage when the master director is lost, by advert interval",
                "outage gap (ms)",
                &lost_outages,
            )
        },
    );

    let machine = Machine::probe();
    let keepalived_version = keepalived_version();
    let json = json!({
        "machine": machine.json(),
        "keepalived": keepalived_version,
        "quick": quick,
        "probe_period_ms": PROBE_EVERY.as_secs_f64() * 1e3,
        "goal": {
            "met": within(kill) && within(lost),
            "advert_interval_ms": fastest.as_millis() as u64,
        },
        "runs": rows.iter().map(|r| json!({
            "contender": r.contender.name(),
            "advert_interval_ms": r.interval.as_millis() as u64,
            "event": r.event.name(),
            "takeover_ms": r.takeover.map(|d| d.as_secs_f64() * 1e3),
            "outage_gap_ms": r.outage.map(|o| o.gap.as_secs_f64() * 1e3),
            "lost_requests": r.outage.map(|o| o.lost),
            "broken_connections": r.broken,
            "long_lived_connections": LONG_LIVED,
            "failed_new_connections": r.failed_new,
            "new_connections": r.new,
        })).collect::<Vec<Value>>(),
    });
    Report {
        title: "xlb failover benchmark: VRRP takeover and outage, xlb vs keepalived".into(),
        about: vec![
            format!("machine: {}", machine.summary()),
            format!(
                "two directors running `xlb run` (DR to three backends) in a \
                 namespace lab; VRRPv3, director 1 priority {}, director 2 priority {}; \
                 keepalived: {keepalived_version}",
                PRIORITIES[0], PRIORITIES[1]
            ),
        ],
        table: Table {
            headers: vec![
                "contender",
                "advert interval",
                "event",
                "takeover (ms)",
                "outage gap (ms)",
                "lost requests",
                "broken connections",
                "failed new connections",
            ],
            right: vec![false, true, false, true, true, true, true, true],
            rows: table_rows,
        },
        tables: vec![],
        sections: vec![
            ("goals", vec![goal, compare]),
            (
                "method",
                vec![
                    "contenders: xlb's own VRRP instance in each director's `xlb run`; and \
                     keepalived (VRRPv3, `advert_int` in seconds) moving the VIP between the \
                     same directors, whose `xlb run` then has no VRRP and forwards whatever \
                     reaches it"
                        .into(),
                    "SIGKILL: the master's VRRP speaker is killed (xlb: the agent, whose pinned \
                     XDP data plane keeps forwarding; keepalived: its VRRP child and its \
                     parent), leaving the VIP on the host, which stays on the segment"
                        .into(),
                    "director lost: the master's speaker is killed as its switch port leaves the \
                     bridge (link still up), so only the backup's master-down timer (3 adverts \
                     plus skew) ends the outage. The switch floods no unknown unicast to the \
                     directors: a veth, unlike a NIC, has no MAC filter before XDP, and the \
                     other director's data plane would forward the frames flooded for the lost \
                     one's MAC"
                        .into(),
                    "clean stop: SIGTERM; the master resigns (priority 0) and releases the VIP"
                        .into(),
                    format!(
                        "outage: the client sends a UDP request to the VIP every {} ms, each \
                         from a new socket, without waiting for earlier answers ({} ms \
                         timeout); the gap is the longest between answered requests from the \
                         last one before the event on, so it is within {} ms, and one period \
                         means no outage; lost requests are those unanswered in it",
                        PROBE_EVERY.as_millis(),
                        PROBE_TIMEOUT.as_millis(),
                        PROBE_EVERY.as_millis()
                    ),
                    format!(
                        "takeover: from the event until director 2 reports master (xlb: \
                         /api/v1/vrrp) or holds the VIP (keepalived: `ip addr`), polled every \
                         {} ms",
                        POLL.as_millis()
                    ),
                    format!(
                        "broken connections: {LONG_LIVED} TCP connections opened before the \
                         event, each exchanging one more line after it (broken, or answered by \
                         another backend); failed new connections: new TCP connections, 5 at \
                         a time with 1 s timeouts, throughout the run"
                    ),
                    "each event starts from a settled pair: director 1 master, director 2 \
                     backup, the client's ARP entry for the VIP on director 1 and the VIP \
                     answering; afterwards the port rejoins and director 1's speaker restarts \
                     and preempts"
                        .into(),
                ],
            ),
        ],
        plots: vec![plot],
        json,
    }
}

/// `1 s`, `100 ms`, `20 ms`.
fn label(interval: Duration) -> String {
    if interval.subsec_millis() == 0 {
        format!("{} s", interval.as_secs())
    } else {
        format!("{} ms", interval.as_millis())
    }
}

fn keepalived_version() -> String {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            // It prints its version to stderr.
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// The two directors' services, and with xlb as the contender its VRRP instance.
fn config(contender: Contender, priority: u8, interval: Duration) -> String {
    let mut text = String::new();
    for (name, protocol) in [("web", "tcp"), ("web-udp", "udp")] {
        text += &format!(
            "[[service]]\nname = \"{name}\"\nvip = \"{VIP_V4}\"\nport = 80\n\
             protocol = \"{protocol}\"\n"
        );
        for n in 0..3 {
            let address = Family::V4.backend(n);
            text += &format!("[[service.backend]]\naddress = \"{address}\"\n");
        }
    }
    if contender == Contender::Xlb {
        text += &format!(
            "\n[[vrrp.instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\n\
             priority = {priority}\nadvert_interval = \"{}ms\"\n\
             virtual_addresses = [\"{VIP_V4}\"]\n",
            interval.as_millis()
        );
    }
    text
}

/// Two directors and a contender at one advert interval.
struct Pair {
    lab: AgentTestbed,
    contender: Contender,
    interval: Duration,
    /// keepalived on each director, while it runs.
    keepalived: [Option<ChildHandle>; 2],
}

impl Pair {
    fn new(contender: Contender, interval: Duration) -> anyhow::Result<Pair> {
        let tag = format!("bf{}{}", contender.tag(), interval.as_millis());
        let lab = AgentTestbed::with_directors(&tag, Mode::Dr, Family::V4, 3, 2)?;
        let mut pair = Pair {
            lab,
            contender,
            interval,
            keepalived: [None, None],
        };
        for (k, priority) in PRIORITIES.into_iter().enumerate() {
            pair.no_flood(k)?;
            pair.lab
                .write_config_of(k, &config(contender, priority, interval))?;
            pair.lab.start_of(k, &[])?;
            if contender == Contender::Keepalived {
                pair.start_keepalived(k)?;
            }
        }
        Ok(pair)
    }

    fn start_keepalived(&mut self, k: usize) -> anyhow::Result<()> {
        let agent = &self.lab.agents[k];
        let global = format!("router_id director{}\nvrrp_version 3", k + 1);
        let advert_int = self.interval.as_secs_f64().to_string();
        let instance = keepalived::instance(PRIORITIES[k], &advert_int, "");
        let handle = keepalived::spawn(
            &mut self.lab.testbed.topology,
            &agent.director_ns,
            &agent.dir,
            &global,
            &instance,
        )?;
        self.keepalived[k] = Some(handle);
        Ok(())
    }

    /// Director 2's master-down interval: 3 adverts and its skew.
    fn master_down(&self) -> Duration {
        self.interval * 3 + self.interval * (256 - u32::from(PRIORITIES[1])) / 256
    }

    /// One event from a settled pair, and the pair restored afterwards.
    fn measure(&mut self, event: Event) -> anyhow::Result<Row> {
        self.settle()?;
        let client = self.lab.testbed.client.clone();
        let vip = self.lab.vip();
        let mut long_lived = LongLived::open(&client, vip, LONG_LIVED)?;
        // Bounds for the threads, should this one fail before it stops them.
        let limit = BEFORE + self.master_down() + SLACK + AFTER + SLACK;
        let load = SteadyLoad::start(&client, vip, limit);
        let prober = Prober::start(&client, vip, limit);
        std::thread::sleep(BEFORE);

        let at = Instant::now();
        let watcher = self.watch_takeover(at);
        self.strike(event)?;
        let takeover = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the takeover watcher panicked"))??;
        std::thread::sleep(AFTER);

        let probes = prober.finish()?;
        let batches = load.finish()?;
        let new = total(&batches);
        let broken = long_lived.check()?.len();
        self.restore(event)?;
        Ok(Row {
            contender: self.contender,
            interval: self.interval,
            event,
            takeover,
            outage: outage(&probes, at),
            broken,
            failed_new: new.failed,
            new: new.answered() + new.failed,
        })
    }

    /// Waits until director 1 is master and the client's traffic flows through it.
    fn settle(&self) -> anyhow::Result<()> {
        let within = self.master_down() * 2 + SLACK * 2;
        let deadline = Instant::now() + within;
        loop {
            let Some(why) = self.unsettled()? else {
                return Ok(());
            };
            if Instant::now() > deadline {
                bail!(
                    "not settled within {within:?}: {why}\ndirector 1:\n{}\ndirector 2:\n{}",
                    self.speaker_logs(0),
                    self.speaker_logs(1)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What keeps the pair from being settled, if anything.
    fn unsettled(&self) -> anyhow::Result<Option<String>> {
        let [one, two] = [0, 1].map(|k| &self.lab.agents[k]);
        if self.contender == Contender::Xlb {
            let states = [
                vrrp_state(&one.director_ns, &one.api)?,
                vrrp_state(&two.director_ns, &two.api)?,
            ];
            if states != ["master", "backup"] {
                return Ok(Some(format!("VRRP states {states:?}")));
            }
        }
        if !holds_vip(&one.director_ns)? || holds_vip(&two.director_ns)? {
            return Ok(Some("the VIP is not on director 1 alone".into()));
        }
        let spread = udp_spread(&self.lab.testbed.client, self.lab.vip(), 3)?;
        if spread.failed > 0 {
            return Ok(Some(format!("the VIP does not answer: {spread:?}")));
        }
        let neigh = self
            .lab
            .testbed
            .client
            .ip(&["-j", "neigh", "show", &VIP_V4.to_string()])?;
        let mac = one.director_ns.mac("eth0")?;
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        if !neigh.contains(&mac.join(":")) {
            return Ok(Some(format!(
                "the client's ARP entry is not director 1's: {neigh}"
            )));
        }
        Ok(None)
    }

    /// What director `k`'s keepalived logged, or else its agent.
    fn speaker_logs(&self, k: usize) -> String {
        match &self.keepalived[k] {
            Some(keepalived) => {
                String::from_utf8_lossy(&keepalived.stdout_snapshot()).into_owned()
                    + &String::from_utf8_lossy(&keepalived.stderr_snapshot())
            }
            None => self.lab.agents[k].logs(),
        }
    }

    /// Polls director 2 from `at` until it is master, or its master-down interval and
    /// [`SLACK`] have passed.
    fn watch_takeover(&self, at: Instant) -> JoinHandle<anyhow::Result<Option<Duration>>> {
        let two = &self.lab.agents[1];
        let (ns, api, contender) = (two.director_ns.clone(), two.api.clone(), self.contender);
        let until = at + self.master_down() + SLACK;
        std::thread::spawn(move || loop {
            let master = match contender {
                Contender::Xlb => vrrp_state(&ns, &api)? == "master",
                Contender::Keepalived => holds_vip(&ns)?,
            };
            if master {
                return Ok(Some(at.elapsed()));
            }
            if Instant::now() > until {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        })
    }

    /// Director 1's port on the switch leaves the bridge (`cut`), or rejoins it as a new port,
    /// which floods until told not to.
    fn port(&self, cut: bool) -> anyhow::Result<()> {
        let switch = &self.lab.testbed.switch;
        let port = &self.lab.testbed.director_ports[0];
        if cut {
            switch
                .ip(&["link", "set", "dev", port, "nomaster"])
                .map(drop)
        } else {
            switch.ip(&["link", "set", "dev", port, "master", "br0"])?;
            self.no_flood(0)
        }
    }

    /// Keeps the switch from flooding director `k` with frames for MACs it has not learnt.
    /// A NIC drops frames for other hosts before XDP sees them, a veth does not: the frames
    /// for a lost director, flooded once its port leaves, would reach the other director's
    /// data plane, which forwards them, and hide the outage.
    fn no_flood(&self, k: usize) -> anyhow::Result<()> {
        let port = &self.lab.testbed.director_ports[k];
        self.lab
            .testbed
            .switch
            .ip(&[
                "link",
                "set",
                "dev",
                port,
                "type",
                "bridge_slave",
                "flood",
                "off",
            ])
            .map(drop)
    }

    fn strike(&mut self, event: Event) -> anyhow::Result<()> {
        if event == Event::Lost {
            self.port(true)?;
        }
        match self.contender {
            Contender::Xlb => match event {
                Event::Kill | Event::Lost => self.lab.agents[0].kill(),
                Event::Stop => self.lab.agents[0].stop().map(drop),
            },
            Contender::Keepalived => {
                let handle = self.keepalived[0]
                    .take()
                    .context("keepalived is not running on director 1")?;
                match event {
                    Event::Kill | Event::Lost => keepalived::kill(&handle, &self.lab.agents[0].dir),
                    Event::Stop => {
                        handle.signal(Signal::SIGTERM)?;
                        handle
                            .wait_timeout(Duration::from_secs(10))?
                            .context("keepalived did not stop within 10 s of SIGTERM")
                            .map(drop)
                    }
                }
            }
        }
    }

    /// Director 1 back on the segment with its speaker running.
    fn restore(&mut self, event: Event) -> anyhow::Result<()> {
        if event == Event::Lost {
            self.port(false)?;
        }
        match self.contender {
            Contender::Xlb => self.lab.start_of(0, &[]),
            Contender::Keepalived => self.start_keepalived(0),
        }
    }
}

/// The state of xlb's VI_1 as the agent at `api` in `ns` reports it.
fn vrrp_state(ns: &Netns, api: &str) -> anyhow::Result<String> {
    let (status, body) = request_in(ns, api, "GET", "/api/v1/vrrp", None, None)?;
    let all: Value = serde_json::from_str(&body)
        .with_context(|| format!("GET /api/v1/vrrp: {status} {body}"))?;
    all.as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "VI_1"))
        .and_then(|i| i["state"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no VI_1 state in {all}"))
}

fn holds_vip(ns: &Netns) -> anyhow::Result<bool> {
    ns.has_addr("eth0", &VIP_V4.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_groups_lost_outages_by_interval() {
        let mut rows = Vec::new();
        for contender in [Contender::Xlb, Contender::Keepalived] {
            for interval in [1000, 20].map(Duration::from_millis) {
                for event in EVENTS {
                    // keepalived at 20 ms never answered again.
                    let answered = contender == Contender::Xlb || interval.as_secs() == 1;
                    rows.push(Row {
                        contender,
                        interval,
                        event,
                        takeover: Some(interval * 3),
                        outage: answered.then(|| Outage {
                            gap: interval * 3 + Duration::from_millis(7),
                            lost: 3,
                        }),
                        broken: 0,
                        failed_new: 0,
                        new: 10,
                    });
                }
            }
        }
        let report = report(&rows, Duration::from_millis(20), false);
        assert_eq!(report.plots.len(), 1, "one plot");
        let svg = crate::report::drawn("failover", &report.plots);
        for text in ["1 s", "20 ms", "xlb", "keepalived", "3007", "67.0", "n/a"] {
            assert!(plot::has_text(&svg, text), "no {text:?} in {svg}");
        }
        assert!(report.markdown().contains("](failover.svg)"));
    }
}
