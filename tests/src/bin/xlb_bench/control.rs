//! `control`: the agent's control plane. How long an API change takes to
//! reach the data plane, how long a Maglev table takes to build, and what
//! health-checking a thousand backends costs the agent in CPU.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use lb_common::maglev::{build_table, MaglevBackend};
use lb_common::maps::Mode;
use serde_json::json;
use xlb_tests::{
    agent::{encode, AgentTestbed, API},
    lab::{Family, DIRECTOR_V6},
};

use crate::{
    micro::steps,
    plot,
    report::{verdict, Machine, Plot, Report, Table},
};

const RING: u32 = 65537;
/// Goals from the issue: p99 of an API change, a 1000-backend build, health-check CPU.
const API_P99_GOAL_MS: f64 = 10.0;
const BUILD_GOAL_MS: f64 = 20.0;
const HEALTH_CPU_GOAL: f64 = 0.05;

/// The services and backends per service of the API at scale.
const SCALE_SERVICES: usize = 64;
const SCALE_BACKENDS: usize = 64;
/// A backend no host answers for: its next hop never resolves.
const SILENT_BACKEND: usize = 9;
/// How often the API is called beside it.
const PACE: Duration = Duration::from_millis(20);

struct Size {
    api_calls: usize,
    /// How long the API is called beside a backend whose next hop never
    /// resolves: the agent tries it again every 5 s.
    silent_window: Duration,
    builds: usize,
    cpu_window: Duration,
    checked: usize,
}

pub fn run(quick: bool) -> anyhow::Result<Report> {
    let size = if quick {
        Size {
            api_calls: 20,
            silent_window: Duration::from_secs(6),
            builds: 2,
            cpu_window: Duration::from_secs(3),
            checked: 100,
        }
    } else {
        Size {
            api_calls: 300,
            silent_window: Duration::from_secs(16),
            builds: 10,
            cpu_window: Duration::from_secs(20),
            checked: 1000,
        }
    };
    let progress = steps(5);
    progress.set_message("Maglev builds");
    let builds = maglev_builds(size.builds);
    progress.inc(1);
    progress.set_message("API changes");
    let mut api = api_latency(size.api_calls).context("timing API changes")?;
    progress.inc(1);
    progress.set_message("the API beside a next hop that never resolves");
    api.extend(api_beside_a_silent_backend(size.silent_window).context("timing the API")?);
    progress.inc(1);
    progress.set_message(format!(
        "API changes among {SCALE_SERVICES} services of {SCALE_BACKENDS} backends"
    ));
    let (scale, builds_per_change) = api_at_scale(size.api_calls).context("timing the API")?;
    api.push(scale);
    progress.inc(1);
    progress.set_message(format!("health-checking {} backends", size.checked));
    let cpu = health_cpu(size.checked, size.cpu_window).context("measuring health checks")?;
    progress.finish_and_clear();

    let mut rows = Vec::new();
    let mut goals = Vec::new();
    for (what, samples) in &api {
        let (p50, p99, max) = (
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            percentile(samples, 1.0),
        );
        rows.push(vec![
            format!("API {what}"),
            format!("{p50:.2} ms"),
            format!("{p99:.2} ms"),
            format!("{max:.2} ms"),
            samples.len().to_string(),
        ]);
        goals.push(verdict(
            &format!("API {what}: p99 {p99:.2} ms, goal < {API_P99_GOAL_MS} ms"),
            p99 < API_P99_GOAL_MS,
        ));
    }
    goals.push(verdict(
        &format!(
            "Maglev tables built per weight change among {SCALE_SERVICES} services: \
             {builds_per_change:.2}, goal exactly 1"
        ),
        builds_per_change == 1.0,
    ));
    for (backends, samples) in &builds {
        let (p50, max) = (percentile(samples, 0.5), percentile(samples, 1.0));
        rows.push(vec![
            format!("Maglev build, {backends} backends, M = {RING}"),
            format!("{p50:.2} ms"),
            "-".into(),
            format!("{max:.2} ms"),
            samples.len().to_string(),
        ]);
        if *backends == 1000 {
            goals.push(verdict(
                &format!("Maglev build of 1000 backends: {p50:.2} ms, goal < {BUILD_GOAL_MS} ms"),
                p50 < BUILD_GOAL_MS,
            ));
        }
    }
    rows.push(vec![
        format!("health checks, {} TCP backends at 1 s", size.checked),
        format!("{:.2}% of a core", cpu.share * 100.0),
        "-".into(),
        "-".into(),
        format!("{:.0} s", size.cpu_window.as_secs_f64()),
    ]);
    rows.push(vec![
        format!(
            "floor: a bare loop making the same {} connects/s",
            size.checked
        ),
        format!("{:.2}% of a core", cpu.floor * 100.0),
        "-".into(),
        "-".into(),
        format!("{:.0} s", size.cpu_window.as_secs_f64()),
    ]);
    goals.push(verdict(
        &format!(
            "health checks of {} backends at 1 s: {:.2}% of a core ({:.2}% user, {:.2}% system; \
             a bare connect loop costs {:.2}%), goal < {:.0}%{}",
            size.checked,
            cpu.share * 100.0,
            cpu.user * 100.0,
            cpu.system * 100.0,
            cpu.floor * 100.0,
            HEALTH_CPU_GOAL * 100.0,
            if size.checked < 1000 {
                " (quick run: fewer backends)"
            } else {
                ""
            }
        ),
        cpu.share < HEALTH_CPU_GOAL,
    ));

    let plots = plots(&api, &builds, &cpu, size.checked);
    let machine = Machine::probe();
    let json = json!({
        "machine": machine.json(),
        "api_ms": api.iter().map(|(what, s)| json!({
            "change": what, "p50": percentile(s, 0.5), "p99": percentile(s, 0.99),
            "max": percentile(s, 1.0), "samples": s.len(),
        })).collect::<Vec<_>>(),
        "maglev_build_ms": builds.iter().map(|(n, s)| json!({
            "backends": n, "ring": RING, "p50": percentile(s, 0.5), "max": percentile(s, 1.0),
        })).collect::<Vec<_>>(),
        "health_cpu": {
            "backends": size.checked, "interval_s": 1, "window_s": size.cpu_window.as_secs_f64(),
            "share_of_a_core": cpu.share, "user": cpu.user, "system": cpu.system,
            "all_up": cpu.all_up, "bare_connect_loop_share": cpu.floor,
        },
    });
    Ok(Report {
        title: "xlb control benchmark: the agent's API, Maglev builds and health checks".into(),
        about: vec![
            format!("machine: {}", machine.summary()),
            "the agent is the release `xlb run` in a namespace lab; API calls come over HTTP \
             from the director's namespace, each answered after the maps are written"
                .into(),
        ],
        table: Table {
            headers: vec!["what", "p50", "p99", "max", "samples"],
            right: vec![false, true, true, true, true],
            rows,
        },
        tables: vec![],
        sections: vec![
            ("goals", goals),
            (
                "method",
                vec![
                    format!(
                        "API: PATCH a backend's weight (1 <-> 2) or admin state (ready <-> \
                         drain), {} times each, M = {RING}; the response comes after the \
                         ring's changed slots and the service entry are written",
                        size.api_calls
                    ),
                    format!(
                        "API at scale: {SCALE_SERVICES} services of {SCALE_BACKENDS} backends \
                         each (M = {RING}), one backend's weight PATCHed (1 <-> 2) {} times; \
                         the Maglev tables built per change are the agent's count \
                         (maglev_builds in /api/v1/stats) over the run",
                        size.api_calls
                    ),
                    format!(
                        "API beside a next hop that never resolves: a service with a fourth \
                         backend no host answers for (the agent tries its next hop again every \
                         5 s, for up to 1 s); a GET of the service and a PATCH of a weight in \
                         turn, one due every {} ms for {:.0} s, each timed from when it was due",
                        PACE.as_millis(),
                        size.silent_window.as_secs_f64()
                    ),
                    "Maglev: lb_common::maglev::build_table, equal weights, in this process \
                     (release build)"
                        .into(),
                    format!(
                        "health: CPU time of the agent process (utime + stime from \
                         /proc/PID/stat) over {:.0} s, after a warm-up. A veth delivers a \
                         packet in its sender's context, so the system time includes the \
                         backends' side of each probe's handshake, which real backends pay \
                         themselves",
                        size.cpu_window.as_secs_f64()
                    ),
                ],
            ),
        ],
        plots,
        json,
    })
}

/// API latency per change, Maglev build time against backends, and the CPU
/// of health-checking `checked` backends against the bare loop.
fn plots(
    api: &[(&str, Vec<f64>)],
    builds: &[(usize, Vec<f64>)],
    cpu: &Cpu,
    checked: usize,
) -> Vec<Plot> {
    let latency: Vec<(String, Vec<(String, f64)>)> = api
        .iter()
        .map(|(what, s)| {
            let quantiles = [("p50", 0.5), ("p99", 0.99), ("max", 1.0)];
            let bars = quantiles.map(|(name, q)| (name.to_string(), percentile(s, q)));
            (what.to_string(), bars.to_vec())
        })
        .collect();
    let build: Vec<(f64, f64)> = builds
        .iter()
        .map(|(n, s)| (*n as f64, percentile(s, 0.5)))
        .collect();
    let health = vec![
        ("the agent".to_string(), cpu.share * 100.0),
        ("bare connect loop".to_string(), cpu.floor * 100.0),
    ];
    vec![
        Plot::new(
            "control-api.svg",
            "API change to data plane written, p50, p99 and max",
            move |path| {
                plot::grouped_bars(path, "API change to data plane written", "ms", &latency)
            },
        ),
        Plot::new(
            "control-maglev.svg",
            "Maglev build time (p50) against backends",
            move |path| {
                plot::lines(
                    path,
                    &format!("Maglev build, M = {RING}"),
                    "backends",
                    "p50 (ms)",
                    true,
                    &[("build_table".to_string(), build.clone())],
                )
            },
        ),
        Plot::new(
            "control-health.svg",
            "CPU of the agent's health checks against a bare loop making the same connections",
            move |path| {
                let title = format!("CPU of TCP health checks, {checked} backends at 1 s");
                plot::bars(path, &title, "% of a core", &health)
            },
        ),
    ]
}

/// The `q` quantile of `samples` (0.5: median, 1: max).
fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

fn maglev_builds(runs: usize) -> Vec<(usize, Vec<f64>)> {
    [3, 100, 1000]
        .into_iter()
        .map(|n| {
            let backends: Vec<MaglevBackend> = (0..n as u32)
                .map(|i| MaglevBackend {
                    id: i + 1,
                    key: [0xc612_0000 | i, 0, 0, 0, 80],
                    weight: 1,
                })
                .collect();
            let samples = (0..runs)
                .map(|_| {
                    let started = Instant::now();
                    std::hint::black_box(build_table(&backends, RING));
                    started.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            (n, samples)
        })
        .collect()
}

fn services(count: usize, health: bool) -> String {
    let mut text = String::from("[[service]]\nname = \"web\"\nvip = \"fd00::100\"\nport = 80\n");
    if health {
        text += "[service.health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n";
    }
    for i in 0..count {
        text += &format!("[[service.backend]]\naddress = \"{}\"\n", backend(i));
    }
    text
}

/// Backend `i`'s address: b1..b3 for the first three, then addresses b1
/// takes behind it.
fn backend(i: usize) -> IpAddr {
    match i {
        0..3 => Family::V6.backend(i),
        _ => Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, i as u16).into(),
    }
}

/// PATCHes a backend `calls` times per kind of change, timing each round trip.
fn api_latency(calls: usize) -> anyhow::Result<Vec<(&'static str, Vec<f64>)>> {
    let mut lab = AgentTestbed::new("bctlapi", Mode::Dr, Family::V6, 3, &services(3, false))?;
    lab.maglev_size = RING;
    lab.write_config(&services(3, false))?;
    lab.start()?;
    let path = format!(
        "/api/v1/services/web/backends/{}",
        encode(&SocketAddr::new(backend(0), 80).to_string())
    );
    let changes: [(&'static str, [&str; 2]); 2] = [
        (
            "weight change -> data plane written",
            [r#"{"weight": 2}"#, r#"{"weight": 1}"#],
        ),
        (
            "drain / ready -> data plane written",
            [r#"{"admin_state": "drain"}"#, r#"{"admin_state": "ready"}"#],
        ),
    ];
    let url = format!("http://{API}{path}");
    lab.testbed.director_ns.run(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut results = Vec::new();
        for (what, bodies) in changes {
            let mut samples = Vec::with_capacity(calls);
            for i in 0..calls {
                samples.push(timed_patch(&agent, &url, bodies[i % 2])?);
            }
            results.push((what, samples));
        }
        Ok(results)
    })?
}

/// Reads a service and PATCHes a weight through the API, in turn, one call
/// due every [`PACE`] for `window`, while one backend's next hop never
/// resolves. Each call's latency counts from when it was due, so a call
/// held up also counts against those due behind it.
fn api_beside_a_silent_backend(window: Duration) -> anyhow::Result<Vec<(&'static str, Vec<f64>)>> {
    let silent = Family::V6.backend(SILENT_BACKEND);
    let text = services(3, false) + &format!("[[service.backend]]\naddress = \"{silent}\"\n");
    let mut lab = AgentTestbed::new("bctlhop", Mode::Dr, Family::V6, 3, &text)?;
    lab.write_config(&text)?;
    lab.start()?;
    let read = format!("http://{API}/api/v1/services/web");
    let write = format!(
        "{read}/backends/{}",
        encode(&SocketAddr::new(backend(0), 80).to_string())
    );
    let calls = (window.as_millis() / PACE.as_millis()) as u32;
    lab.testbed.director_ns.run(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        let started = Instant::now();
        for i in 0..calls {
            let due = started + PACE * i;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let status = if i % 2 == 0 {
                agent
                    .get(&read)
                    .call()
                    .with_context(|| format!("GET {read}"))?
                    .status()
            } else {
                let body = [r#"{"weight": 2}"#, r#"{"weight": 1}"#][(i / 2 % 2) as usize];
                agent
                    .patch(&write)
                    .header("Content-Type", "application/json")
                    .send(body)
                    .with_context(|| format!("PATCH {write}"))?
                    .status()
            };
            ensure!(status == 200, "API call {i}: {status}");
            let ms = due.elapsed().as_secs_f64() * 1e3;
            if i % 2 == 0 {
                reads.push(ms)
            } else {
                writes.push(ms)
            }
        }
        Ok(vec![
            ("read, a next hop never resolving", reads),
            ("weight change, a next hop never resolving", writes),
        ])
    })?
}

/// PATCHes one backend's weight `calls` times among [`SCALE_SERVICES`]
/// services of [`SCALE_BACKENDS`] backends each, timing each round trip;
/// with the Maglev tables the agent built per change (from its stats).
fn api_at_scale(calls: usize) -> anyhow::Result<((&'static str, Vec<f64>), f64)> {
    let mut text = String::new();
    for s in 0..SCALE_SERVICES {
        text += &format!(
            "[[service]]\nname = \"web{s}\"\nvip = \"fd00::100\"\nport = {}\n",
            1000 + s
        );
        for b in 0..SCALE_BACKENDS {
            let addr = backend(3 + s * SCALE_BACKENDS + b);
            text += &format!("[[service.backend]]\naddress = \"{addr}\"\n");
        }
    }
    let mut lab = AgentTestbed::new("bctlscale", Mode::Dr, Family::V6, 3, &text)?;
    lab.maglev_size = RING;
    lab.max_services = SCALE_SERVICES as u32;
    lab.max_backends = (SCALE_SERVICES * SCALE_BACKENDS) as u32 + 1;
    lab.write_config(&text)?;
    // The backends are addresses of fd00:2::/64 behind b1: one neighbour.
    let (b1, src) = (Family::V6.backend(0).to_string(), DIRECTOR_V6.to_string());
    lab.testbed
        .director_ns
        .ip(&["-6", "route", "add", "fd00:2::/64", "via", &b1, "src", &src])?;
    lab.start()?;
    let service = format!("/api/v1/services/web{}", SCALE_SERVICES / 2);
    let view = lab.agent().get(&service)?;
    let serving = view["backends"].as_array().map_or(0, |backends| {
        backends.iter().filter(|b| b["serving"] == true).count()
    });
    ensure!(
        serving == SCALE_BACKENDS,
        "{serving} of {SCALE_BACKENDS} backends of {service} serve: {view}"
    );
    let builds = |lab: &AgentTestbed| -> anyhow::Result<f64> {
        let stats = lab.agent().get("/api/v1/stats")?;
        stats["maglev_builds"]
            .as_f64()
            .with_context(|| format!("no maglev_builds in the stats: {stats}"))
    };
    let before = builds(&lab)?;
    let url = format!(
        "http://{API}{service}/backends/{}",
        encode(
            &SocketAddr::new(
                backend(3 + SCALE_SERVICES / 2 * SCALE_BACKENDS),
                1000 + SCALE_SERVICES as u16 / 2
            )
            .to_string()
        )
    );
    let samples = lab.testbed.director_ns.run(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut samples = Vec::with_capacity(calls);
        for i in 0..calls {
            let body = [r#"{"weight": 2}"#, r#"{"weight": 1}"#][i % 2];
            samples.push(timed_patch(&agent, &url, body)?);
        }
        anyhow::Ok(samples)
    })??;
    let per_change = (builds(&lab)? - before) / calls as f64;
    let what = "weight change, 64 services x 64 backends -> data plane written";
    Ok(((what, samples), per_change))
}

/// `PATCH url` with the JSON `body`, which must answer 200: its round
/// trip in ms.
fn timed_patch(agent: &ureq::Agent, url: &str, body: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let response = agent
        .patch(url)
        .header("Content-Type", "application/json")
        .send(body)
        .with_context(|| format!("PATCH {url}"))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    ensure!(
        response.status() == 200,
        "PATCH {url}: {}",
        response.status()
    );
    Ok(ms)
}

struct Cpu {
    share: f64,
    user: f64,
    system: f64,
    all_up: bool,
    /// The same connections from a bare loop.
    floor: f64,
}

/// The agent's CPU while it health-checks `count` backends every second.
fn health_cpu(count: usize, window: Duration) -> anyhow::Result<Cpu> {
    let mut lab = AgentTestbed::new("bctlhc", Mode::Dr, Family::V6, 3, &services(count, true))?;
    lab.max_backends = 2 * count as u32 + 2;
    lab.write_config(&services(count, true))?;
    // b1 takes every address of fd00:2::/64 (a local route, as with AnyIP)
    // and the director reaches them through it: one neighbour entry, not
    // a thousand.
    lab.testbed.backends[0].ip(&["-6", "route", "add", "local", "fd00:2::/64", "dev", "lo"])?;
    // From the director's address on that link: b1 holds the VIP itself.
    let (b1, src) = (Family::V6.backend(0).to_string(), DIRECTOR_V6.to_string());
    lab.testbed
        .director_ns
        .ip(&["-6", "route", "add", "fd00:2::/64", "via", &b1, "src", &src])?;
    // b1's identity server gives way to a plain acceptor with room for
    // a thousand handshakes a second.
    drop(lab.testbed.servers.remove(0));
    let _acceptor = Acceptor::start(
        &lab.testbed.backends[0],
        window * 4 + Duration::from_secs(60),
    )?;
    let floor = bare_connects(&lab, count, window)?;
    lab.start()?;
    // Every backend up (rise 2 at 1 s), then a settled window.
    let deadline = Instant::now() + Duration::from_secs(20);
    let up = |lab: &AgentTestbed| -> anyhow::Result<usize> {
        let backends = lab.agent().get("/api/v1/services/web/backends")?;
        Ok(backends
            .as_array()
            .map(|a| a.iter().filter(|b| b["oper_state"] == "up").count())
            .unwrap_or(0))
    };
    while up(&lab)? < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = lab.agent().process.as_ref().context("agent running")?.pid();
    let before = cpu_times(pid)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let after = cpu_times(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    let all_up = up(&lab)? == count;
    let user = (after.0 - before.0) / elapsed;
    let system = (after.1 - before.1) / elapsed;
    Ok(Cpu {
        share: user + system,
        user,
        system,
        all_up,
        floor,
    })
}

/// The CPU share of a bare loop making the same connections (one a second
/// to each backend, closed with a reset) from one thread: what the kernel
/// charges on this topology whoever makes them.
fn bare_connects(lab: &AgentTestbed, count: usize, window: Duration) -> anyhow::Result<f64> {
    let targets: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::new(backend(i), 80))
        .collect();
    lab.testbed
        .director_ns
        .run(move || -> anyhow::Result<f64> {
            let before = thread_cpu()?;
            let started = Instant::now();
            // Spread over each second, as the agent spreads its checks.
            let step = Duration::from_secs(1) / targets.len() as u32;
            let mut next = Instant::now();
            while started.elapsed() < window {
                for target in &targets {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += step;
                    let stream =
                        std::net::TcpStream::connect_timeout(target, Duration::from_millis(500))
                            .with_context(|| format!("connecting to {target}"))?;
                    reset_on_close(&stream)?;
                }
            }
            Ok((thread_cpu()? - before) / started.elapsed().as_secs_f64())
        })?
}

/// Makes closing `stream` send a reset, as the agent's TCP checks do.
fn reset_on_close(stream: &std::net::TcpStream) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    Ok(())
}

/// CPU seconds (user and system) of the calling thread.
fn thread_cpu() -> anyhow::Result<f64> {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    ensure!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0,
        "getrusage: {}",
        std::io::Error::last_os_error()
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

/// User and system CPU seconds of process `pid`.
fn cpu_times(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()? / ticks)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Ok((field(11)?, field(12)?))
}

/// Accepts and drops TCP connections on port 80 of a namespace, with a deep
/// accept queue, until dropped or `limit` passes.
struct Acceptor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(ns: &xlb_tests::netns::Netns, limit: Duration) -> anyhow::Result<Acceptor> {
        use std::os::fd::AsRawFd;
        let listener = ns.run(|| std::net::TcpListener::bind("[::]:80"))??;
        // SAFETY: listening again on a bound socket only resizes its queue.
        ensure!(
            unsafe { libc::listen(listener.as_raw_fd(), 4096) } == 0,
            "listen"
        );
        listener.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + limit;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Ok(Acceptor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_draw() {
        let api = [("weight change", vec![0.4, 0.5, 2.0])];
        let builds = [(3, vec![0.1]), (100, vec![1.0]), (1000, vec![9.0])];
        let cpu = Cpu {
            share: 0.02,
            user: 0.01,
            system: 0.01,
            all_up: true,
            floor: 0.015,
        };
        let svgs = crate::report::drawn("control", &plots(&api, &builds, &cpu, 1000));
        for text in [
            "weight change",
            "p99",
            "2.00",
            "backends",
            "1k",
            "the agent",
            "1.50",
        ] {
            assert!(plot::has_text(&svgs, text), "no {text:?}");
        }
    }
}
