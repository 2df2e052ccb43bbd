//! `udp`: small UDP packets over many flows, generated in the kernel (XDP
//! live frames) on the client's veth, through each contender to backends
//! that count them with an XDP program: delivered packets per second, and
//! the CPU time each delivered packet costs the machine.

use std::time::Duration;

use lb_common::{maps::Mode, stats::Counter as DataplaneCounter};
use serde_json::json;
use xlb_tests::{
    lab::CLIENT_V4,
    livegen::{Counter, Generator},
    packet::Frame,
};

use crate::{
    contenders::{cpu_busy, measure_each, result_of, skipped, Contender, Measured, Rig},
    plot,
    report::{verdict, Machine, Plot, Report, Table},
};

/// Distinct flows (source ports) in the load.
const FLOWS: u32 = 4096;
/// UDP payload: with the headers, a 60-byte frame (64 on the wire with the FCS).
const PAYLOAD: [u8; 18] = *b"xlb-bench-udp-load";

const HEADERS: [&str; 6] = [
    "contender",
    "delivered pkt/s",
    "x nftables",
    "CPU ns/pkt",
    "pkts per CPU-s",
    "delivered/sent",
];

struct Delivered {
    sent: u64,
    delivered: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Delivered {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn cpu_ns_per_packet(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.delivered.max(1) as f64
    }

    /// Delivered packets per second of CPU time: the same measurement as
    /// [`Delivered::cpu_ns_per_packet`], turned over.
    fn per_cpu_second(&self) -> f64 {
        self.delivered as f64 / self.cpu.as_secs_f64().max(f64::EPSILON)
    }
}

pub fn run(quick: bool) -> anyhow::Result<Report> {
    let (count, limit) = if quick {
        (200_000, Duration::from_secs(2))
    } else {
        (5_000_000, Duration::from_secs(10))
    };
    let mut generator = Generator::load(FLOWS)?;
    // The lab's veths have one queue: a second thread would only be refused.
    generator.set_threads(1)?;
    let measured = measure_each(true, |contender| {
        measure(&generator, contender, count, limit)
    });
    Ok(report(&measured, count, generator.threads()))
}

fn measure(
    generator: &Generator,
    contender: Contender,
    count: u64,
    limit: Duration,
) -> anyhow::Result<Delivered> {
    let tag = format!("budp{}", contender.tag());
    let mut rig = Rig::new(&tag, contender)?;
    // No answers: the backends only count.
    rig.testbed_mut().servers.clear();
    let testbed = rig.testbed();
    let ipip = contender == Contender::Xlb(Mode::Ipip);
    // With IP-in-IP the backends' decapsulator counts; elsewhere a counter
    // program takes the frames.
    // The counters drop ARP too: a kernel director must know the backends'
    // MACs beforehand.
    for (n, ns) in testbed.backends.iter().enumerate() {
        let addr = xlb_tests::lab::Family::V4.backend(n).to_string();
        testbed
            .director_ns
            .add_neigh("eth0", &addr, ns.mac("eth0")?)?;
    }
    let counters: Vec<Counter> = if ipip {
        Vec::new()
    } else {
        testbed
            .backends
            .iter()
            .map(|ns| Counter::attach(ns, "eth0"))
            .collect::<anyhow::Result<_>>()?
    };
    let next_hop = match contender {
        Contender::Baseline => testbed.backends[0].mac("eth0")?,
        _ => testbed.director_ns.mac("eth0")?,
    };
    let std::net::IpAddr::V4(dst) = rig.target.ip() else {
        anyhow::bail!("the UDP load is IPv4");
    };
    let frame = Frame::ipv4(CLIENT_V4, dst)
        .macs(testbed.client.mac("eth0")?, next_hop)
        .udp(1024, rig.target.port(), &PAYLOAD);
    let delivered_now = || -> anyhow::Result<u64> {
        if ipip {
            let mut total = 0;
            for decap in &testbed.decaps {
                total += decap.counters()?.get(DataplaneCounter::Decap);
            }
            Ok(total)
        } else {
            counters.iter().map(|c| c.packets()).sum()
        }
    };
    let before = (delivered_now()?, cpu_busy()?);
    let sent = generator.send(&testbed.client, "eth0", &frame, count, limit)?;
    // Let the last batch drain through the path.
    std::thread::sleep(Duration::from_millis(200));
    let after = (delivered_now()?, cpu_busy()?);
    Ok(Delivered {
        sent: sent.packets,
        delivered: after.0 - before.0,
        elapsed: sent.elapsed,
        cpu: after.1 - before.1,
    })
}

fn report(measured: &[Measured<Delivered>], count: u64, threads: usize) -> Report {
    let find = |c: Contender| result_of(measured, c);
    let nft = find(Contender::Nftables);
    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut bars = Vec::new();
    for m in measured {
        match &m.result {
            Ok(d) => {
                let vs_nft = nft
                    .map(|n| format!("{:.2}", d.rate() / n.rate().max(f64::EPSILON)))
                    .unwrap_or_else(|| "-".into());
                rows.push(vec![
                    m.contender.name().to_string(),
                    format!("{:.0}", d.rate()),
                    vs_nft,
                    format!("{:.0}", d.cpu_ns_per_packet()),
                    format!("{:.0}", d.per_cpu_second()),
                    format!(
                        "{}/{} ({:.1}%)",
                        d.delivered,
                        d.sent,
                        100.0 * d.delivered as f64 / d.sent.max(1) as f64
                    ),
                ]);
                bars.push((m.contender.name().to_string(), d.rate()));
                results.push(json!({
                    "contender": m.contender.name(),
                    "delivered_per_s": d.rate(),
                    "sent": d.sent,
                    "delivered": d.delivered,
                    "elapsed_s": d.elapsed.as_secs_f64(),
                    "cpu_ns_per_delivered_packet": d.cpu_ns_per_packet(),
                    "delivered_per_cpu_second": d.per_cpu_second(),
                    "cpu_s": d.cpu.as_secs_f64(),
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
    match (find(Contender::Xlb(Mode::Dr)), nft) {
        (Some(x), Some(n)) => {
            let ratio = x.rate() / n.rate().max(f64::EPSILON);
            let cpu = x.cpu_ns_per_packet() / n.cpu_ns_per_packet().max(f64::EPSILON);
            let line = format!(
                "xlb DR >= 5x nftables DNAT in delivered packets/s: {:.0} vs {:.0} ({ratio:.2}x)",
                x.rate(),
                n.rate()
            );
            goals.push(verdict(&line, ratio >= 5.0));
            let line = format!(
                "xlb DR at <= 1/5 of nftables' CPU-ns per delivered packet: {:.0} vs {:.0} ns \
                 ({cpu:.2}x)",
                x.cpu_ns_per_packet(),
                n.cpu_ns_per_packet()
            );
            goals.push(verdict(&line, cpu <= 0.2));
        }
        _ => goals.push("MISSED: xlb DR or nftables did not run, so no comparison".into()),
    }
    // What the director adds per packet, over the same path without one.
    if let Some(base) = find(Contender::Baseline) {
        let added = |d: &Delivered| d.cpu_ns_per_packet() - base.cpu_ns_per_packet();
        let mut shares: Vec<String> = Vec::new();
        for c in [Contender::Xlb(Mode::Dr), Contender::Nftables] {
            if let Some(d) = find(c) {
                shares.push(format!("{} {:.0} ns", c.name(), added(d)));
            }
        }
        goals.push(format!(
            "why: the no-director path costs {:.0} ns per packet here (generator, two veth hops, \
             the bridge, the backend's counter, all in one softirq); a director adds a veth \
             hop and a bridge pass of its own besides its work: {}. The XDP program itself \
             takes a few hundred ns per packet at most (`cargo xtask bench micro` times each \
             path), so most of xlb's added cost is the extra hop through the virtual switch, \
             which a NIC would not have",
            base.cpu_ns_per_packet(),
            shares.join(", ")
        ));
    }
    let per_cpu_second: Vec<String> = measured
        .iter()
        .filter_map(|m| {
            let d = m.result.as_ref().ok()?;
            Some(format!("{} {:.0}", m.contender.name(), d.per_cpu_second()))
        })
        .collect();
    goals.push(format!(
        "delivered packets per CPU-second: {}",
        per_cpu_second.join(", ")
    ));
    goals.push(
        "not measured: xlb >= 20x HAProxy in packets/s, since HAProxy does not balance UDP".into(),
    );
    let machine = Machine::probe();
    Report {
        title: "xlb udp benchmark: small packets over many flows through each contender".into(),
        about: vec![
            format!("machine: {}", machine.summary()),
            format!(
                "{count} frames of 60 bytes over {FLOWS} flows per contender, generated by \
                 {threads} thread(s) with XDP live frames on the client's veth"
            ),
        ],
        table: Table {
            headers: HEADERS.to_vec(),
            right: vec![false, true, true, true, true, true],
            rows,
        },
        tables: vec![],
        sections: vec![
            ("goals", goals),
            (
                "method",
                vec![
                    "the generator (`xlb_gen`, BPF_PROG_TEST_RUN in live-frames mode) rewrites \
                     each frame's source port over the flows and transmits it from the client's \
                     veth; every hop after it (the switch, the director, the backends' XDP \
                     counter) runs in the same softirq on the sending CPU, so the rate is that \
                     of the whole path on one CPU"
                        .into(),
                    "delivered: frames counted by `xlb_count` on the three backends (dropped \
                     there), or decapsulated by `xlb_decap` with IP-in-IP"
                        .into(),
                    "CPU ns/pkt: busy time of all CPUs (/proc/stat) during the run divided by \
                     delivered packets: generator, director and backends together; pkts per \
                     CPU-s: the same two figures the other way up, delivered packets per second \
                     of that busy time"
                        .into(),
                ],
            ),
        ],
        json: json!({ "machine": machine.json(), "results": results }),
        plots: vec![Plot::new(
            "udp.svg",
            "delivered UDP packets per second, by contender",
            move |path| plot::bars(path, "Delivered UDP packets per second", "packets/s", &bars),
        )],
    }
}
