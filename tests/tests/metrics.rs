//! The agent's metrics as Prometheus takes them: a live scrape passes
//! `promtool check metrics`, the alert rules pass `promtool check rules`,
//! and the values move with what happens (a reload, a failing check).

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use lb_common::maps::Mode;
use nix::sys::signal::Signal;
use xlb_tests::{
    agent::{AgentTestbed, ServiceConf, TCP_CHECK},
    lab::Family,
    require_privileged,
};

/// A file of the repository, from its root.
fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// promtool with `args`, `input` on its stdin: whether it passed, and what
/// it printed.
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package: cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

/// The value of the sample `series` (name and labels as exposed), if the
/// scrape has it.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

fn scrape(lab: &AgentTestbed) -> String {
    let (status, metrics) = lab.agent().request("GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200, "{metrics}");
    metrics
}

/// Scrapes until `done` holds of the scrape, for up to 10 s.
fn scrape_until(lab: &AgentTestbed, what: &str, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let metrics = scrape(lab);
        if done(&metrics) {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "not {what} within 10 s:\n{}\n{}",
        scrape(lab),
        lab.agent().logs()
    );
}

#[test]
fn the_alert_rules_pass_promtool() {
    let rules = repo_file("deploy/prometheus/xlb-alerts.yml");
    let (passed, printed) = promtool(&["check", "rules", rules.to_str().unwrap()], "");
    assert!(passed, "{printed}");
    assert!(printed.contains("SUCCESS"), "{printed}");
}

#[test]
fn a_live_scrape_passes_promtool_and_counts_reloads_and_check_failures() {
    require_privileged!();
    let web = ServiceConf {
        weights: &[1, 1],
        health: Some(TCP_CHECK),
        ..ServiceConf::new("web", Mode::Dr, Family::V4)
    };
    // Probes of port 1, where no backend listens: every one fails.
    let dead_check = format!("{TCP_CHECK}\nport = 1");
    let dead = ServiceConf {
        port: 81,
        weights: &[1],
        health: Some(&dead_check),
        ..ServiceConf::new("dead", Mode::Dr, Family::V4)
    };
    let config = web.toml() + &dead.toml();
    let mut lab = AgentTestbed::new("agmetric", Mode::Dr, Family::V4, 2, &config).unwrap();
    lab.start().unwrap();
    let b1 = lab.backend_addr(0);
    // In direct routing a backend's port is its service's.
    let dead_b1 = std::net::SocketAddr::new(b1.ip(), 81);
    let failures =
        format!("xlb_health_check_failures_total{{service=\"dead\",backend=\"{dead_b1}\"}}");
    let web_probes =
        format!("xlb_health_check_duration_seconds_count{{service=\"web\",backend=\"{b1}\"}}");
    let dead_up = format!("xlb_backend_up{{service=\"dead\",backend=\"{dead_b1}\"}}");
    let metrics = scrape_until(&lab, "checked and walked", |m| {
        sample(m, &dead_up) == Some(0.0)
            && sample(m, &web_probes).is_some_and(|n| n > 0.0)
            && m.contains("\nxlb_flow_table_entries ")
    });
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("xlb_build_info{version=\"") && l.ends_with("\"} 1")),
        "{metrics}"
    );
    // Down after 3 failures (fall 3).
    assert!(
        sample(&metrics, &failures).is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "xlb_flow_table_capacity"),
        Some(262144.0),
        "{metrics}"
    );
    let reloads = |result: &str| format!("xlb_reloads_total{{result=\"{result}\"}}");
    assert_eq!(sample(&metrics, &reloads("success")), Some(0.0));
    assert!(!metrics.contains("rx_bytes\""), "bytes are not packets");
    assert!(sample(&metrics, "xlb_dataplane_rx_bytes_total").is_some());

    // A reload that succeeds, then one that is refused, on SIGHUP as
    // `systemctl reload` sends it.
    lab.agent().signal(Signal::SIGHUP).unwrap();
    scrape_until(&lab, "reloaded", |m| {
        sample(m, &reloads("success")) == Some(1.0)
    });
    lab.write_config("[[service]]\nname = \"web\"\nvip = \"nonsense\"\n")
        .unwrap();
    lab.agent().signal(Signal::SIGHUP).unwrap();
    let metrics = scrape_until(&lab, "refused a reload", |m| {
        sample(m, &reloads("failure")) == Some(1.0)
    });
    assert_eq!(
        sample(&metrics, &reloads("success")),
        Some(1.0),
        "{metrics}"
    );
    let reloaded_at = sample(&metrics, "xlb_last_reload_success_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - reloaded_at).abs() < 60.0, "{reloaded_at} vs {now}");

    let (passed, printed) = promtool(&["check", "metrics"], &metrics);
    assert!(passed && printed.trim().is_empty(), "{printed}\n{metrics}");

    // What the dashboard and the alerts chart, but VRRP's (the lab has no
    // instance), is in the scrape.
    for file in [
        "deploy/grafana/xlb.json",
        "deploy/prometheus/xlb-alerts.yml",
    ] {
        let text = std::fs::read_to_string(repo_file(file)).unwrap();
        for (at, _) in text.match_indices("xlb_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.starts_with("xlb_vrrp_") {
                assert!(
                    metrics.contains(&format!("\n{name}")),
                    "{file} uses {name}, not in the scrape:\n{metrics}"
                );
            }
        }
    }
}
