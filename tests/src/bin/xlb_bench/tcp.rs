//! `tcp`: short TCP connections (connect, a small request, the reply,
//! close) through each contender, from a load generator in the client's
//! namespace to fixed-reply servers on the backends: connections per
//! second, latency, failures, and the CPU each connection costs the machine.

use std::{net::SocketAddr, time::Duration};

use lb_common::maps::Mode;
use serde_json::json;
use xlb_tests::loadgen::{self, FixedServer, TcpLoad, TcpResult};

use crate::{
    contenders::{cpu_busy, measure_each, result_of, skipped, Contender, Measured, Rig},
    plot,
    report::{verdict, Machine, Plot, Report, Table},
};

/// Connections in flight at once.
const CONCURRENCY: usize = 64;

const HEADERS: [&str; 8] = [
    "contender",
    "conn/s",
    "x HAProxy tcp",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "failed",
    "CPU us/conn",
];

pub fn run(quick: bool) -> anyhow::Result<Report> {
    let duration = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let measured = measure_each(false, |contender| measure(contender, duration));
    Ok(report(&measured, duration))
}

/// One contender under load for `duration`; the result and the busy CPU.
fn measure(contender: Contender, duration: Duration) -> anyhow::Result<(TcpResult, Duration)> {
    let tag = format!("btcp{}", contender.tag());
    let mut rig = Rig::new(&tag, contender)?;
    let port = rig.backend_port;
    let testbed = rig.testbed_mut();
    testbed.servers.clear();
    let limit = duration + Duration::from_secs(30);
    let mut servers = Vec::new();
    for (n, ns) in testbed.backends.iter().enumerate() {
        let addr = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
        servers.push(FixedServer::start(ns, addr, &format!("b{}", n + 1), limit)?);
    }
    loadgen::tune_client(&testbed.client)?;
    let load = TcpLoad {
        concurrency: CONCURRENCY,
        duration,
        max_connections: 10_000_000,
        connect_timeout: Duration::from_secs(1),
        request: b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n".to_vec(),
    };
    let before = cpu_busy()?;
    let result = loadgen::run(&rig.testbed().client, rig.target, &load)?;
    let cpu = cpu_busy()? - before;
    drop(servers);
    Ok((result, cpu))
}

fn report(measured: &[Measured<(TcpResult, Duration)>], duration: Duration) -> Report {
    let ok = |c: Contender| result_of(measured, c);
    let haproxy = ok(Contender::HaproxyTcp).map(|(r, _)| r);
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut bars = Vec::new();
    for m in measured {
        match &m.result {
            Ok((r, cpu)) => {
                let cpu_us = cpu.as_secs_f64() * 1e6 / r.completed.max(1) as f64;
                let ratio = haproxy
                    .map(|h| format!("{:.2}", r.per_second / h.per_second.max(f64::EPSILON)))
                    .unwrap_or_else(|| "-".into());
                rows.push(vec![
                    m.contender.name().to_string(),
                    format!("{:.0}", r.per_second),
                    ratio,
                    format!("{:.2}", r.latency_us.p50 as f64 / 1e3),
                    format!("{:.2}", r.latency_us.p99 as f64 / 1e3),
                    format!("{:.2}", r.latency_us.p999 as f64 / 1e3),
                    format!("{}/{}", r.failed, r.completed + r.failed),
                    format!("{cpu_us:.1}"),
                ]);
                bars.push((m.contender.name().to_string(), r.per_second));
                results.push(json!({
                    "contender": m.contender.name(),
                    "connections_per_s": r.per_second,
                    "completed": r.completed,
                    "failed": r.failed,
                    "latency_ms": {
                        "p50": r.latency_us.p50 as f64 / 1e3, "p90": r.latency_us.p90 as f64 / 1e3,
                        "p99": r.latency_us.p99 as f64 / 1e3, "p99_9": r.latency_us.p999 as f64 / 1e3,
                        "max": r.latency_us.max as f64 / 1e3,
                    },
                    "cpu_us_per_connection": cpu_us,
                    "by_backend": r.by_backend,
                }));
            }
            Err(why) => {
                let (row, json) = skipped(m.contender, why, HEADERS.len());
                rows.push(row);
                results.push(json);
            }
        }
    }
    let mut goals = Vec::new();
    match (ok(Contender::Xlb(Mode::Dr)), haproxy) {
        (Some((xlb, _)), Some(h)) => {
            let ratio = xlb.per_second / h.per_second.max(f64::EPSILON);
            let met = ratio >= 2.0 && xlb.latency_us.p99 < h.latency_us.p99;
            let line = format!(
                "xlb DR >= 2x HAProxy tcp in connections/s with a lower p99: {:.0} vs {:.0}/s \
                 ({ratio:.2}x), p99 {:.2} vs {:.2} ms",
                xlb.per_second,
                h.per_second,
                xlb.latency_us.p99 as f64 / 1e3,
                h.latency_us.p99 as f64 / 1e3
            );
            goals.push(verdict(&line, met));
        }
        _ => goals.push("MISSED: xlb DR or HAProxy tcp did not run, so no comparison".into()),
    }
    if let (Some((base, _)), Some((xlb, _)), Some(h)) = (
        ok(Contender::Baseline),
        ok(Contender::Xlb(Mode::Dr)),
        haproxy,
    ) {
        goals.push(format!(
            "why: with no director at all this topology makes {:.0} connections/s, {:.2}x \
             HAProxy tcp: the client and the backends share the machine's CPUs with the \
             director, so the ceiling of any ratio is that; xlb DR reaches {:.0}% of it",
            base.per_second,
            base.per_second / h.per_second.max(f64::EPSILON),
            100.0 * xlb.per_second / base.per_second.max(f64::EPSILON)
        ));
    }
    let machine = Machine::probe();
    Report {
        title: "xlb tcp benchmark: short connections through each contender".into(),
        about: vec![
            format!("machine: {}", machine.summary()),
            format!(
                "{CONCURRENCY} connections in flight for {:.0} s per contender; each connects, \
                 sends a 30-byte HTTP/1.0 request, reads a ~60-byte reply, closes",
                duration.as_secs_f64()
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
                    "client, director and three backends in network namespaces on one virtual \
                     switch (veth); the client and backends run in this process's threads, so \
                     all contenders share the same 2 CPUs with them"
                        .into(),
                    "CPU us/conn: busy time of all CPUs (/proc/stat) over the run divided by \
                     completed connections: the client's, the backends' and the director's work \
                     together, so differences between rows are the director's"
                        .into(),
                    "xlb: the XDP program in DR, IP-in-IP or NAT mode; nftables: DNAT in \
                     prerouting to a random backend, with conntrack; HAProxy: round robin, \
                     `mode tcp` and `mode http`, 2 threads; no director: the client straight to \
                     one backend"
                        .into(),
                ],
            ),
        ],
        json: json!({ "machine": machine.json(), "results": results }),
        plots: vec![Plot::new(
            "tcp.svg",
            "short TCP connections per second, by contender",
            move |path| {
                plot::bars(
                    path,
                    "Short TCP connections per second",
                    "connections/s",
                    &bars,
                )
            },
        )],
    }
}
