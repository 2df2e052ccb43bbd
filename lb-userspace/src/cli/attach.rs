//! `xlb attach`: load, attach, count, detach.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use lb_common::stats::Counter;
use log::LevelFilter;
use serde_json::json;

use crate::dataplane::{AttachMode, Counters, Dataplane, LoadOptions};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    xlb attach --iface eth0\n  \
    xlb attach --iface veth1 --mode generic --interval 5\n  \
    xlb attach --iface eth0 --json --duration 10 > counters.jsonl")]
pub struct AttachArgs {
    /// Network interface to attach to.
    #[arg(short, long, value_name = "IFACE")]
    pub iface: String,

    /// Where the program runs: in the driver (native) or in the kernel stack (generic).
    #[arg(short, long, value_enum, default_value_t = AttachMode::Native)]
    pub mode: AttachMode,

    /// Seconds between counter lines.
    #[arg(long, default_value_t = 1.0, value_name = "SECS", value_parser = positive_secs)]
    pub interval: f64,

    /// Detach after this many seconds instead of waiting for SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub duration: Option<f64>,

    /// Print one JSON object per line (rates and totals) instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

pub fn run(args: AttachArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    super::block_on(attach(args, log_level))
}

async fn attach(args: AttachArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    let mut shutdown = super::Shutdown::new()?;
    let mut dataplane = Dataplane::load(&LoadOptions {
        bpf_log: log_level,
        ..LoadOptions::default()
    })?;
    let log_forwarder = dataplane
        .spawn_log_forwarder()
        .context("forwarding the XDP program's log")?;
    let attachment = dataplane.attach(&args.iface, args.mode)?.clone();
    log::info!(
        "attached to {} (ifindex {}) in {} mode; Ctrl-C detaches",
        attachment.iface,
        attachment.ifindex,
        attachment.mode
    );

    let started = Instant::now();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    ticker.tick().await;
    let mut out = Output::new(args.json);
    let mut previous = (started, dataplane.counters()?);

    loop {
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let counters = dataplane.counters()?;
                out.interval(started.elapsed(), &counters, &previous.1, now - previous.0)?;
                previous = (now, counters);
            }
            _ = shutdown.recv() => break,
            _ = until_deadline => break,
        }
    }

    dataplane.detach()?;
    log_forwarder.abort();
    let totals = dataplane.counters()?;
    log::info!(
        "detached from {} after {:.1}s",
        attachment.iface,
        started.elapsed().as_secs_f64()
    );
    out.totals(&attachment.iface, started.elapsed(), &totals)?;
    Ok(())
}

/// The table or JSON lines written to stdout.
struct Output {
    json: bool,
    lines: usize,
    stdout: std::io::Stdout,
}

/// Table columns: heading and the counters summed into it.
const COLUMNS: [(&str, &[Counter]); 9] = [
    ("ipv4/s", &[Counter::Ipv4]),
    ("ipv6/s", &[Counter::Ipv6]),
    ("tcp/s", &[Counter::Tcp]),
    ("udp/s", &[Counter::Udp]),
    ("icmp/s", &[Counter::Icmp, Counter::Icmpv6]),
    ("arp/s", &[Counter::Arp]),
    ("vrrp/s", &[Counter::Vrrp]),
    (
        "other/s",
        &[
            Counter::OtherEthertype,
            Counter::OtherProto,
            Counter::Fragment,
        ],
    ),
    ("bad/s", &[Counter::Truncated, Counter::Malformed]),
];

const HEADER_EVERY: usize = 20;

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            lines: 0,
            stdout: std::io::stdout(),
        }
    }

    fn interval(
        &mut self,
        elapsed: Duration,
        now: &Counters,
        before: &Counters,
        span: Duration,
    ) -> std::io::Result<()> {
        let rates = now.rates_since(before, span);
        let mut out = self.stdout.lock();
        if self.json {
            let line = json!({ "elapsed_s": elapsed.as_secs_f64(), "rates": rates, "totals": now });
            return writeln!(out, "{line}");
        }
        if self.lines.is_multiple_of(HEADER_EVERY) {
            write!(out, "{:>8} {:>10} {:>9}", "time", "pkt/s", "Mbit/s")?;
            for (heading, _) in COLUMNS {
                write!(out, " {heading:>9}")?;
            }
            writeln!(out)?;
        }
        self.lines += 1;
        let secs = elapsed.as_secs();
        write!(
            out,
            "{:02}:{:02}:{:02} {:>10.0} {:>9.2}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            rates.get(Counter::RxPackets),
            rates.get(Counter::RxBytes) * 8.0 / 1e6
        )?;
        for (_, counters) in COLUMNS {
            let rate: f64 = counters.iter().map(|c| rates.get(*c)).sum();
            write!(out, " {rate:>9.0}")?;
        }
        writeln!(out)
    }

    fn totals(&mut self, iface: &str, elapsed: Duration, totals: &Counters) -> std::io::Result<()> {
        let mut out = self.stdout.lock();
        if self.json {
            let line =
                json!({ "detached": iface, "elapsed_s": elapsed.as_secs_f64(), "totals": totals });
            return writeln!(out, "{line}");
        }
        writeln!(out, "totals on {iface} over {:.1}s:", elapsed.as_secs_f64())?;
        for counter in Counter::ALL {
            writeln!(out, "  {:<16} {:>14}", counter.name(), totals.get(counter))?;
        }
        Ok(())
    }
}
