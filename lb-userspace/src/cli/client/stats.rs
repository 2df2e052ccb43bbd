//! `xlb stats [--watch [SECONDS]]`.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    net::SocketAddr,
    time::{Duration, Instant},
};

use clap::Args;
use lb_common::stats::Counter;
use serde::Serialize;

use super::{
    format,
    http::{endpoint, Api, ApiArgs},
    print_json, read,
    table::Table,
};
use crate::api::wire::{Stats, Traffic};

#[derive(Debug, Args)]
#[command(
    after_help = "Tables: SERVICE BACKEND PACKETS BYTES NEW-FLOWS (BACKEND \"(all)\" is \
    the service's total), then COUNTER TOTAL; --watch adds PACKETS/S BYTES/S NEW-FLOWS/S and \
    PER-SECOND.\n\
    With --json --watch, each sample is a line: the agent's JSON plus \"rates\" (null on the \
    first line)."
)]
pub struct StatsArgs {
    /// Sample every SECONDS (default 1) and show per-second rates, until Ctrl-C.
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        default_missing_value = "1",
        value_parser = positive_secs
    )]
    watch: Option<f64>,
    #[command(flatten)]
    api: ApiArgs,
}

fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// The global counters shown, in this order.
const COUNTERS: [Counter; 28] = [
    Counter::RxPackets,
    Counter::RxBytes,
    Counter::Pass,
    Counter::Tx,
    Counter::Redirect,
    Counter::FlowHit,
    Counter::FlowMiss,
    Counter::ResetFlow,
    Counter::StatelessMiss,
    Counter::FloodStateless,
    Counter::ForeignMac,
    Counter::NatReply,
    Counter::NatRouteCached,
    Counter::NatToDirector,
    Counter::NatNoRoute,
    Counter::FibPass,
    Counter::IcmpTooBig,
    Counter::IcmpMismatch,
    Counter::IcmpRateLimited,
    Counter::DropNoBackend,
    Counter::DropFragment,
    Counter::DropEncap,
    Counter::DropTooBig,
    Counter::DropIpOptions,
    Counter::DropZeroPayload,
    Counter::DropBadChecksum,
    Counter::Truncated,
    Counter::Malformed,
];

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let path = endpoint(&["stats"]);
    let Some(secs) = args.watch else {
        let answer = api.get_json(&path)?;
        if args.api.json {
            return print_json(&answer);
        }
        print!("{}", render(&read(answer)?, None));
        return Ok(());
    };
    let interval = Duration::from_secs_f64(secs);
    let clear_screen = std::io::stdout().is_terminal() && !args.api.json;
    let mut previous: Option<Stats> = None;
    let mut reached = false;
    loop {
        let started = Instant::now();
        match api.get_json(&path) {
            Ok(answer) => {
                reached = true;
                let stats: Stats = read(answer.clone())?;
                let rates = previous.as_ref().and_then(|p| Rates::between(p, &stats));
                if args.api.json {
                    let mut line = answer;
                    line["rates"] = serde_json::to_value(&rates)?;
                    println!("{line}");
                } else {
                    if clear_screen {
                        print!("\x1b[H\x1b[2J");
                    }
                    println!("every {}, until Ctrl-C\n", format::duration(interval));
                    print!("{}", render(&stats, Some(rates.as_ref())));
                    println!();
                }
                previous = Some(stats);
            }
            // Once the agent has answered, ride out its restarts.
            Err(error) if reached => {
                eprintln!("xlb: {error:#} (trying again)");
                previous = None;
            }
            Err(error) => return Err(error),
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// Per-second rates between two samples, shaped like the samples.
#[derive(Debug, PartialEq, Serialize)]
struct Rates {
    interval_s: f64,
    counters: BTreeMap<String, f64>,
    services: Vec<ServiceRates>,
}

#[derive(Debug, PartialEq, Serialize)]
struct ServiceRates {
    name: String,
    stats: TrafficRates,
    backends: Vec<BackendRates>,
}

#[derive(Debug, PartialEq, Serialize)]
struct BackendRates {
    address: SocketAddr,
    stats: TrafficRates,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
struct TrafficRates {
    packets: f64,
    bytes: f64,
    new_flows: f64,
}

impl TrafficRates {
    fn between(before: &Traffic, after: &Traffic, secs: f64) -> Self {
        let rate = |b: u64, a: u64| a.saturating_sub(b) as f64 / secs;
        TrafficRates {
            packets: rate(before.packets, after.packets),
            bytes: rate(before.bytes, after.bytes),
            new_flows: rate(before.new_flows, after.new_flows),
        }
    }
}

impl Rates {
    /// The rates from `before` to `after`, timed by the agent's uptime;
    /// `None` if the agent restarted in between. Services and backends
    /// that `before` lacks have no rates yet.
    fn between(before: &Stats, after: &Stats) -> Option<Rates> {
        let secs = after
            .uptime
            .checked_sub(before.uptime)
            .filter(|elapsed| !elapsed.is_zero())?
            .as_secs_f64();
        let counters = after
            .counters
            .iter()
            .filter_map(|(counter, value)| {
                let earlier = before.counters.get(counter)?;
                Some((
                    counter.name().to_string(),
                    value.saturating_sub(earlier) as f64 / secs,
                ))
            })
            .collect();
        let services = after
            .services
            .iter()
            .filter_map(|service| {
                let earlier = before.services.iter().find(|s| s.name == service.name)?;
                let backends = service
                    .backends
                    .iter()
                    .filter_map(|backend| {
                        let was = earlier
                            .backends
                            .iter()
                            .find(|b| b.address == backend.address)?;
                        Some(BackendRates {
                            address: backend.address,
                            stats: TrafficRates::between(&was.stats, &backend.stats, secs),
                        })
                    })
                    .collect();
                Some(ServiceRates {
                    name: service.name.clone(),
                    stats: TrafficRates::between(&earlier.stats, &service.stats, secs),
                    backends,
                })
            })
            .collect();
        Some(Rates {
            interval_s: secs,
            counters,
            services,
        })
    }

    fn service(&self, name: &str) -> Option<&ServiceRates> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// `xlb VERSION, up UPTIME, interfaces: NAME, ...`: the first line of
/// `xlb stats` and `xlb status`.
pub fn headline(stats: &Stats) -> String {
    format!(
        "xlb {}, up {}, interfaces: {}",
        stats.version,
        format::duration(stats.uptime),
        stats.interfaces.join(", ")
    )
}

/// The tables; `watching` is `Some` (rates, or none yet) with --watch.
fn render(stats: &Stats, watching: Option<Option<&Rates>>) -> String {
    let mut text = format!("{}\n", headline(stats));
    let total = stats
        .services
        .iter()
        .fold(Traffic::default(), |sum, s| Traffic {
            packets: sum.packets.saturating_add(s.stats.packets),
            bytes: sum.bytes.saturating_add(s.stats.bytes),
            new_flows: sum.new_flows.saturating_add(s.stats.new_flows),
        });
    text.push_str(&format!(
        "total: {} packets, {}, {} new flows",
        format::count(total.packets),
        format::bytes(total.bytes),
        format::count(total.new_flows)
    ));
    if let Some(Some(rates)) = watching {
        let sum = rates
            .services
            .iter()
            .fold(TrafficRates::default(), |sum, s| TrafficRates {
                packets: sum.packets + s.stats.packets,
                bytes: sum.bytes + s.stats.bytes,
                new_flows: sum.new_flows + s.stats.new_flows,
            });
        text.push_str(&format!(
            "; {}, {}, {} new flows",
            format::count_rate(sum.packets),
            format::bytes_rate(sum.bytes),
            format::count_rate(sum.new_flows)
        ));
    }
    text.push_str("\n\n");

    let mut header = vec!["SERVICE", "BACKEND", "PACKETS", "BYTES", "NEW-FLOWS"];
    if watching.is_some() {
        header.extend(["PACKETS/S", "BYTES/S", "NEW-FLOWS/S"]);
    }
    let mut traffic = Table::new(&header);
    let row = |service: &str, backend: String, t: &Traffic, r: Option<Option<TrafficRates>>| {
        let mut cells = vec![
            service.to_string(),
            backend,
            format::count(t.packets),
            format::bytes(t.bytes),
            format::count(t.new_flows),
        ];
        match r {
            Some(Some(r)) => cells.extend([
                format::count_rate(r.packets),
                format::bytes_rate(r.bytes),
                format::count_rate(r.new_flows),
            ]),
            Some(None) => cells.extend(["-".into(), "-".into(), "-".into()]),
            None => {}
        }
        cells
    };
    for service in &stats.services {
        let rates = watching.map(|w| w.and_then(|r| r.service(&service.name)));
        traffic.row(row(
            &service.name,
            "(all)".into(),
            &service.stats,
            rates.map(|r| r.map(|r| r.stats)),
        ));
        for backend in &service.backends {
            let backend_rates = rates.map(|r| {
                r.and_then(|r| r.backends.iter().find(|b| b.address == backend.address))
                    .map(|b| b.stats)
            });
            traffic.row(row(
                &service.name,
                backend.address.to_string(),
                &backend.stats,
                backend_rates,
            ));
        }
    }
    text.push_str(&traffic.to_string());
    text.push('\n');

    let mut header = vec!["COUNTER", "TOTAL"];
    if watching.is_some() {
        header.push("PER-SECOND");
    }
    let mut counters = Table::new(&header);
    for counter in COUNTERS {
        let name = counter.name();
        let Some(total) = stats.counters.get(counter) else {
            continue;
        };
        let is_bytes = counter == Counter::RxBytes;
        let mut cells = vec![
            name.to_string(),
            if is_bytes {
                format::bytes(total)
            } else {
                format::count(total)
            },
        ];
        if let Some(rates) = watching {
            cells.push(match rates.and_then(|r| r.counters.get(name)) {
                Some(&rate) if is_bytes => format::bytes_rate(rate),
                Some(&rate) => format::count_rate(rate),
                None => "-".into(),
            });
        }
        counters.row(cells);
    }
    text.push_str(&counters.to_string());
    text
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn sample(uptime_s: f64, packets: u64, rx_packets: u64) -> Stats {
        let value: Value = json!({
            "version": "0.1.0", "uptime_s": uptime_s, "interfaces": ["eth0"],
            "health_transitions": 1, "applies": 2, "maglev_builds": 2,
            "counters": {"rx_packets": rx_packets, "rx_bytes": rx_packets * 100, "tx": 0},
            "flow_count": {"at_unix_ms": null, "took_ms": 0.0, "entries": 0, "pruned": 0},
            "flood_guard": {"new_flows_per_cpu": 1000, "active": false,
                            "active_since_unix_ms": null, "stateless_flows": 0},
            "changes_need_token": false,
            "services": [{
                "name": "web",
                "stats": {"packets": packets, "bytes": packets * 100, "new_flows": 4},
                "backends": [{"address": "198.18.1.10:80",
                              "stats": {"packets": packets, "bytes": packets * 100,
                                        "new_flows": 4}}]
            }]
        });
        read(value).unwrap()
    }

    #[test]
    fn rates_are_deltas_over_the_agents_uptime() {
        let rates = Rates::between(&sample(10.0, 1000, 5000), &sample(12.0, 3000, 9000)).unwrap();
        assert_eq!(rates.interval_s, 2.0);
        assert_eq!(rates.counters["rx_packets"], 2000.0);
        let web = rates.service("web").unwrap();
        assert_eq!(
            web.stats,
            TrafficRates {
                packets: 1000.0,
                bytes: 100_000.0,
                new_flows: 0.0
            }
        );
        assert_eq!(web.backends[0].stats.packets, 1000.0);
    }

    #[test]
    fn a_restarted_agent_gives_no_rates() {
        assert_eq!(
            Rates::between(&sample(12.0, 3000, 0), &sample(1.0, 10, 0)),
            None
        );
    }

    #[test]
    fn the_tables_show_totals_and_rates_when_watching() {
        let before = sample(10.0, 1000, 5000);
        let after = sample(12.0, 3000, 9000);
        let rates = Rates::between(&before, &after);
        assert_eq!(
            render(&after, Some(rates.as_ref())),
            "xlb 0.1.0, up 12s, interfaces: eth0\n\
             total: 3.0k packets, 300 kB, 4 new flows; 1.0k/s, 100 kB/s, 0/s new flows\n\
             \n\
             SERVICE  BACKEND         PACKETS  BYTES   NEW-FLOWS  PACKETS/S  BYTES/S   NEW-FLOWS/S\n\
             web      (all)           3.0k     300 kB  4          1.0k/s     100 kB/s  0/s\n\
             web      198.18.1.10:80  3.0k     300 kB  4          1.0k/s     100 kB/s  0/s\n\
             \n\
             COUNTER     TOTAL   PER-SECOND\n\
             rx_packets  9.0k    2.0k/s\n\
             rx_bytes    900 kB  200 kB/s\n\
             tx          0       0/s\n"
        );
        let first = render(&before, Some(None));
        assert!(
            first.contains("web      (all)           1.0k     100 kB  4          -"),
            "{first}"
        );
        let once = render(&before, None);
        assert!(once.contains("COUNTER     TOTAL\n"), "{once}");
    }

    #[test]
    fn watch_intervals_are_positive() {
        assert_eq!(positive_secs("0.5"), Ok(0.5));
        for bad in ["0", "-1", "soon", "inf"] {
            assert!(positive_secs(bad).is_err(), "{bad}");
        }
    }
}
