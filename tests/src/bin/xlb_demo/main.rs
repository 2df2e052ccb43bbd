//! `cargo xtask demo`: the real agent on the namespace lab of [`xlb_tests::lab`]. For each
//! forwarding mode it writes a config file and shows it, starts `xlb run` on the director, and
//! balances real TCP connections over three backends, showing where each went. On the last
//! lab it then works as an operator would, through the agent's CLI and API: it drains a
//! backend, kills a backend's server and brings it back, and shows `xlb status` along the way.
//! With `--keep` that lab and its agent stay up until `cargo xtask demo --down`.

use std::{
    collections::BTreeMap,
    net::{Ipv6Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use lb_common::{maps::Mode, stats::Counter};
use serde_json::{json, Value};
use xlb_tests::{
    agent::{total, AgentTestbed, Batch, ServiceConf, SteadyLoad, API, TCP_CHECK},
    lab::{backend_port, Family, CLIENT_V4},
    servers::{tcp_spread, IdentityServer, LongLived, Spread},
    xlb_bin,
};

#[derive(Parser)]
#[command(
    about = "Balance real connections through the xlb agent in each forwarding mode, \
    then drain a backend, kill one and bring it back through its API"
)]
struct Args {
    /// Print the summary as one JSON object on stdout; the rest goes to stderr.
    #[arg(long)]
    json: bool,
    /// TCP connections per mode, and after the drain.
    #[arg(long, default_value_t = 300)]
    connections: u64,
    /// Leave the last lab and its agent running, and print how to reach them and how to
    /// tear them down.
    #[arg(long, conflicts_with = "json")]
    keep: bool,
}

const MODES: [(&str, Mode, &str); 3] = [
    (
        "dr",
        Mode::Dr,
        "direct routing: MAC rewrite, backends answer the client directly",
    ),
    (
        "ipip",
        Mode::Ipip,
        "IP-in-IP: tunnelled to backends running xlb decap",
    ),
    (
        "nat",
        Mode::Nat,
        "NAT: VIP:80 to backend:8080, replies translated back",
    ),
];
const SERVICE: &str = "web";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches XDP programs: run it as root");
    }
    let out = Out { json: args.json };
    let xlb = xlb_bin()?;
    let mut summary = serde_json::Map::new();
    let mut failed = 0;
    let mut last = None;
    for (k, (name, mode, what)) in MODES.into_iter().enumerate() {
        eprintln!("==> {what}");
        let lab = start_agent(&out, &xlb, name, mode, k == 0)?;
        let spread = balance(&out, &lab, name, args.connections)?;
        failed += spread.failed;
        summary.insert(
            name.into(),
            json!({ "backends": backend_counts(&lab, &spread), "failed": spread.failed }),
        );
        last = Some(lab);
    }
    if failed > 0 {
        bail!("{failed} connections failed");
    }
    let mut lab = last.expect("three modes");
    eprintln!("==> operating the agent: drain, a dead server, its return");
    let drain = drain(&out, &lab, &xlb, args.connections)?;
    let kill = kill_and_revive(&out, &mut lab, &xlb)?;
    if args.json {
        println!(
            "{}",
            json!({ "modes": summary, "tour": { "mode": "nat", "drain": drain, "kill": kill } })
        );
    }
    if args.keep {
        keep(lab, &xlb);
    }
    Ok(())
}

/// Where the story goes: stdout, or stderr when stdout carries the JSON summary.
struct Out {
    json: bool,
}

impl Out {
    fn say(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// `$ COMMAND` and its output, indented.
    fn command(&self, line: &str, output: &str) {
        self.say(&format!("$ {line}"));
        for l in output.trim_end().lines() {
            self.say(&format!("    {l}"));
        }
    }
}

/// Builds the lab for `mode`, writes the agent's config and shows it (all of it, or the
/// service alone when `whole` is false), and starts `xlb run` on the director.
fn start_agent(
    out: &Out,
    xlb: &Path,
    name: &str,
    mode: Mode,
    whole: bool,
) -> anyhow::Result<AgentTestbed> {
    let service = ServiceConf {
        health: Some(TCP_CHECK),
        ..ServiceConf::new(SERVICE, mode, Family::V4)
    };
    let mut lab = AgentTestbed::new(
        &format!("demo_{name}"),
        mode,
        Family::V4,
        3,
        &service.toml(),
    )
    .with_context(|| format!("building the {name} lab"))?;
    let config_path = lab.agent().config_path();
    let config = std::fs::read_to_string(&config_path)?;
    if whole {
        out.say(&format!("{}:", config_path.display()));
        out.say(&indent(&config));
    } else {
        let service = config
            .find("[[service]]")
            .map_or(&*config, |at| &config[at..]);
        out.say(&format!(
            "{}: the same agent and tables, then:",
            config_path.display()
        ));
        out.say(&indent(service));
    }
    out.say(&format!(
        "$ ip netns exec {} {} --log-level info run --config {}",
        lab.testbed.director_ns.name(),
        xlb.display(),
        config_path.display()
    ));
    lab.start().context("starting xlb run")?;
    out.say("    ready\n");
    Ok(lab)
}

/// `count` TCP connections to the VIP, and the table of who answered them.
fn balance(out: &Out, lab: &AgentTestbed, name: &str, count: u64) -> anyhow::Result<Spread> {
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), count)?;
    let counters = &lab.agent().get("/api/v1/stats")?["counters"];
    let counter = |c: Counter| counters[c.name()].as_u64().unwrap_or(0);
    out.say(&format!(
        "{name}: {count} TCP connections to {}, three backends of equal weight",
        lab.vip()
    ));
    out.say(&table(&backend_counts(lab, &spread), count, spread.failed));
    out.say(&format!(
        "    director: {} new flows, {} flow-table hits, {} frames sent{}\n",
        counter(Counter::FlowMiss),
        counter(Counter::FlowHit),
        counter(Counter::Tx),
        if lab.testbed.mode == Mode::Nat {
            format!(", {} replies translated", counter(Counter::NatReply))
        } else {
            String::new()
        }
    ));
    Ok(spread)
}

/// Connections each backend answered, by its address.
fn backend_counts(lab: &AgentTestbed, spread: &Spread) -> BTreeMap<String, u64> {
    lab.testbed
        .servers
        .iter()
        .enumerate()
        .map(|(n, server)| {
            let answered = spread.by_backend.get(server.name()).copied().unwrap_or(0);
            (Family::V4.backend(n).to_string(), answered)
        })
        .collect()
}

fn table(backends: &BTreeMap<String, u64>, count: u64, failed: u64) -> String {
    let mut text = format!("    {:<14} {:>9} {:>7}\n", "backend", "answered", "share");
    for (backend, answered) in backends {
        let share = 100.0 * *answered as f64 / count as f64;
        text += &format!("    {backend:<14} {answered:>9} {share:>6.1}%\n");
    }
    text + &format!("    {:<14} {:>9}", "failed", failed)
}

/// Drains b1 with the CLI while 30 connections are open: new connections must not reach it
/// (counted by its server), and the open ones must still answer from their backend. Then makes
/// it ready again.
fn drain(out: &Out, lab: &AgentTestbed, xlb: &Path, count: u64) -> anyhow::Result<Value> {
    const DRAINED: usize = 0;
    const LONG_LIVED: usize = 30;
    /// How long the agent may take to count a backend's flows.
    const FLOWS_COUNTED_WITHIN: Duration = Duration::from_secs(5);
    let b1 = lab.backend_addr(DRAINED);
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), LONG_LIVED)?;
    let on_b1 = long_lived.backends().get("b1").copied().unwrap_or(0);
    out.say(&format!(
        "{LONG_LIVED} long-lived connections open to {}, {on_b1} of them on b1 ({b1})",
        lab.vip()
    ));
    cli(
        out,
        lab,
        xlb,
        &["backend", "set", SERVICE, &b1.to_string(), "--drain"],
    )?;
    // Counted at b1's server: the client's connections, not the health checks.
    let server = &lab.testbed.servers[DRAINED];
    let before = server.tcp_connections_from(CLIENT_V4.into());
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), count)?;
    let reached_b1 = server.tcp_connections_from(CLIENT_V4.into()) - before;
    let moved = long_lived.check()?;
    out.say(&format!("{count} new TCP connections with b1 drained:"));
    out.say(&table(&backend_counts(lab, &spread), count, spread.failed));
    out.say(&format!(
        "    b1's server accepted {reached_b1} new connections; of the {LONG_LIVED} long-lived \
         ones, {} still answer from their backend ({on_b1} from b1)\n",
        LONG_LIVED - moved.len()
    ));
    // The agent counts flows every 2 s or so: `xlb status` is shown once it has counted b1's.
    lab.wait_backend(SERVICE, DRAINED, FLOWS_COUNTED_WITHIN, "counted", |b| {
        b["flows"]["active"].as_u64() >= Some(on_b1 as u64)
    })?;
    cli(out, lab, xlb, &["status"])?;
    cli(
        out,
        lab,
        xlb,
        &["backend", "set", SERVICE, &b1.to_string(), "--ready"],
    )?;
    ensure!(
        spread.failed == 0,
        "connections failed with b1 drained: {spread:?}"
    );
    ensure!(
        reached_b1 == 0,
        "b1 took {reached_b1} new connections while drained"
    );
    ensure!(
        moved.is_empty(),
        "established connections moved or broke: {moved:?}"
    );
    Ok(json!({
        "backend": b1.to_string(),
        "backends": backend_counts(lab, &spread),
        "failed": spread.failed,
        "new_connections_at_drained": reached_b1,
        "long_lived": LONG_LIVED,
        "long_lived_on_drained": on_b1,
        "long_lived_moved_or_broken": moved.len(),
    }))
}

/// Under a steady load, kills b2's server: the health checks must take it out within 2 s, after
/// which no connection fails; restarts it: it must come back within 2 s and take connections
/// again.
fn kill_and_revive(out: &Out, lab: &mut AgentTestbed, xlb: &Path) -> anyhow::Result<Value> {
    const KILLED: usize = 1;
    /// How long the checks may take to see a server die or come back: fall (or rise) x
    /// interval + timeout, with room for scheduling.
    const NOTICE_WITHIN: Duration = Duration::from_secs(2);
    /// The most the load runs.
    const LOAD_LIMIT: Duration = Duration::from_secs(20);
    let b2 = lab.backend_addr(KILLED);
    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), LOAD_LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    drop(lab.testbed.servers.remove(KILLED));
    let killed_at = Instant::now();
    out.say(&format!(
        "b2's server ({b2}) killed under a steady load of new connections"
    ));
    let down_after = lab.wait_backend(SERVICE, KILLED, NOTICE_WITHIN, "down", |b| {
        b["oper_state"] == "down" && b["serving"] == false
    })?;
    let down_at = Instant::now();
    out.say(&format!(
        "    DOWN after {} ms (health check every 200 ms, fall 3)",
        down_after.as_millis()
    ));
    std::thread::sleep(Duration::from_millis(500));
    cli(out, lab, xlb, &["status"])?;
    let ns = lab.testbed.backends[KILLED].clone();
    let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), backend_port(lab.testbed.mode));
    let revived = IdentityServer::start(&ns, any, "b2")?;
    lab.testbed.servers.insert(KILLED, revived);
    let up_at = Instant::now();
    out.say("b2's server started again");
    let up_after = lab.wait_backend(SERVICE, KILLED, NOTICE_WITHIN, "up", |b| {
        b["oper_state"] == "up" && b["serving"] == true
    })?;
    out.say(&format!(
        "    UP after {} ms (rise 2)",
        up_after.as_millis()
    ));
    std::thread::sleep(Duration::from_millis(500));
    let batches = load.finish()?;
    let between = |from: Instant, to: Instant| {
        total(
            batches
                .iter()
                .filter(|b: &&Batch| b.ended > from && b.started < to),
        )
    };
    let noticing = between(killed_at, down_at);
    let while_down = total(
        batches
            .iter()
            .filter(|b| b.started >= down_at && b.ended <= up_at),
    );
    let back = total(batches.iter().filter(|b| b.started >= up_at + up_after));
    out.say(&format!(
        "    new connections failed: {} of {} while b2 was down, {} of {} once it was back \
         (b2 answered {});\n    before the checks noticed, b2's closed port refused {} of {} \
         (its share: drain a backend first to take it out without that)\n",
        while_down.failed,
        while_down.answered() + while_down.failed,
        back.failed,
        back.answered() + back.failed,
        back.by_backend.get("b2").copied().unwrap_or(0),
        noticing.failed,
        noticing.answered() + noticing.failed,
    ));
    cli(out, lab, xlb, &["status"])?;
    ensure!(
        while_down.answered() > 0 && while_down.failed == 0,
        "while b2 was down: {while_down:?}"
    );
    ensure!(
        !while_down.by_backend.contains_key("b2"),
        "b2 answered while down: {while_down:?}"
    );
    ensure!(
        back.failed == 0 && back.by_backend.contains_key("b2"),
        "once b2 was back: {back:?}"
    );
    Ok(json!({
        "backend": b2.to_string(),
        "down_after_ms": down_after.as_millis() as u64,
        "up_after_ms": up_after.as_millis() as u64,
        "failed_before_noticed": noticing.failed,
        "while_down": { "answered": while_down.answered(), "failed": while_down.failed },
        "after_up": {
            "answered": back.answered(),
            "failed": back.failed,
            "b2": back.by_backend.get("b2").copied().unwrap_or(0),
        },
    }))
}

/// Runs `xlb ARGS` in the director's namespace, as an operator on the director would, and
/// shows the command and its output.
fn cli(out: &Out, lab: &AgentTestbed, xlb: &Path, args: &[&str]) -> anyhow::Result<()> {
    let ns = &lab.testbed.director_ns;
    let program = xlb.to_str().context("the xlb binary's path is not UTF-8")?;
    let output = ns.exec(program, args)?;
    let line = format!("ip netns exec {} xlb {}", ns.name(), args.join(" "));
    ensure!(
        output.status.success(),
        "`{line}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    out.command(&line, &String::from_utf8_lossy(&output.stdout));
    out.say("");
    Ok(())
}

/// Prints how to reach the lab and its agent, then holds them until SIGTERM or Ctrl-C (whose
/// handler stops the agent and deletes the namespaces), with stdout and stderr let go so that
/// whoever started this can finish reading.
fn keep(lab: AgentTestbed, xlb: &Path) -> ! {
    let director = lab.testbed.director_ns.name();
    let client = lab.testbed.client.name();
    let agent = lab.agent().process.as_ref().map_or(0, |p| p.pid());
    println!(
        "The NAT lab and its agent keep running (demo pid {}, agent pid {agent}).\n\
         \n\
         API:          ip netns exec {director} curl -s http://{API}/api/v1/services\n\
         CLI:          ip netns exec {director} {} status\n\
         config:       {}\n\
         a connection: echo hello | ip netns exec {client} socat -t1 - TCP:{}   (answers with \
         the backend's name)\n\
         status page:  socat TCP-LISTEN:9180,bind=127.0.0.1,reuseaddr,fork \\\n\
         \x20                EXEC:'ip netns exec {director} socat STDIO \"TCP:{API}\"'\n\
         \x20             then http://127.0.0.1:9180/ here (from elsewhere: ssh -L 9180:127.0.0.1:9180 THIS-HOST)\n\
         tear down:    cargo xtask demo --down   (or: kill {})",
        std::process::id(),
        xlb.display(),
        lab.agent().config_path().display(),
        lab.vip(),
        std::process::id(),
    );
    release_stdio();
    loop {
        std::thread::park();
    }
}

/// Points stdout and stderr at /dev/null, so the reader of their pipes sees them end.
fn release_stdio() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 on open descriptors only replaces 1 and 2.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
