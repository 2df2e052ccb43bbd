//! `GET /metrics`: Prometheus exposition, built fresh from the agent's
//! state on each scrape: OpenMetrics for a scraper that asks for it (as
//! Prometheus does), the classic text format (0.0.4) otherwise.
//!
//! Names follow Prometheus conventions: counters end in `_total`, units are
//! in the name in base units (`_seconds`, `_bytes`), bytes are apart from
//! packets. The label names (`service`, `backend`, `state`, `counter`,
//! `vrrp_instance`, `result`, `version`) are stable.

use std::{
    sync::atomic::AtomicU64,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::IntoResponse,
};
use lb_common::stats::Counter as DataplaneCounter;
use prometheus_client::{
    encoding::{text::encode, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType},
    registry::Registry,
};

use super::{views, ApiError, ApiState};
use crate::{
    health::state::{ProbeDurations, DURATION_BUCKETS},
    model::{AdminState, OperState, Spelled},
    vrrp::State as VrrpState,
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn float_gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(name, help, family.clone());
    family
}

/// `labels` and one more.
fn with(labels: &Labels, key: &'static str, value: &str) -> Labels {
    let mut labels = labels.clone();
    labels.push((key, value.to_string()));
    labels
}

/// One gauge per state, labelled `state`: 1 for `current`, 0 for the rest.
fn one_hot<T: PartialEq>(
    family: &Family<Labels, Gauge>,
    labels: &Labels,
    states: &[(&str, T)],
    current: &T,
) {
    for (name, state) in states {
        family
            .get_or_create(&with(labels, "state", name))
            .set((state == current) as i64);
    }
}

/// Each backend's probe durations, as one histogram family.
#[derive(Debug, Default)]
struct CheckDurations(Vec<(Labels, ProbeDurations)>);

impl EncodeMetric for CheckDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, durations) in &self.0 {
            let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(durations.counts)
                .collect();
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    durations.sum_seconds,
                    durations.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Seconds since the Unix epoch, with the milliseconds.
fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// A counter without labels.
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn float_gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = Gauge::<f64, AtomicU64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// OpenMetrics as the classic text format: a counter's family takes the
/// `_total` its samples have, and the `# UNIT` and `# EOF` lines go.
fn text_0_0_4(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(described.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

/// The metrics in Prometheus' text format, or OpenMetrics when asked for.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "The metrics", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text"),
    )),
    (status = 500, description = "The agent's figures could not be read", body = super::wire::ErrorBody),
))]
pub async fn metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let snapshot = state.agent.snapshot();
    let stats = views::stats(&snapshot, state.token.is_some())?;
    let services = views::services(&snapshot);
    let vrrp = super::vrrp_status(&state).await;

    let mut registry = Registry::with_prefix("xlb");
    gauge_family(
        &mut registry,
        "build_info",
        "Always 1: the agent's version in its label",
    )
    .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
    .set(1);
    let packets = counter_family(
        &mut registry,
        "dataplane_packets",
        "Packets the XDP program counted, by counter",
    );
    for (dataplane_counter, total) in stats.counters.iter() {
        if dataplane_counter == DataplaneCounter::RxBytes {
            counter(
                &mut registry,
                "dataplane_rx_bytes",
                "Bytes of every frame the XDP program saw, Ethernet header included",
                total,
            );
        } else {
            packets
                .get_or_create(&vec![("counter", dataplane_counter.name().to_string())])
                .inc_by(total);
        }
    }
    let service_packets = counter_family(
        &mut registry,
        "service_packets",
        "Packets forwarded for a service",
    );
    let service_bytes = counter_family(
        &mut registry,
        "service_bytes",
        "Bytes forwarded for a service",
    );
    let service_flows =
        counter_family(&mut registry, "service_new_flows", "New flows of a service");
    let backend_packets = counter_family(
        &mut registry,
        "backend_packets",
        "Packets forwarded to a backend",
    );
    let backend_bytes = counter_family(
        &mut registry,
        "backend_bytes",
        "Bytes forwarded to a backend",
    );
    let backend_flows = counter_family(
        &mut registry,
        "backend_new_flows",
        "New flows sent to a backend",
    );
    let backend_up = gauge_family(
        &mut registry,
        "backend_up",
        "1 if the backend's health checks pass",
    );
    let backend_serving = gauge_family(
        &mut registry,
        "backend_serving",
        "1 if the backend is in the data plane",
    );
    let backend_weight = gauge_family(&mut registry, "backend_weight", "The backend's weight");
    let backend_admin = gauge_family(
        &mut registry,
        "backend_admin_state",
        "1 for the backend's admin state",
    );
    let backend_flow_counts = gauge_family(
        &mut registry,
        "backend_flows",
        "Flows to the backend in the flow table: active, or inactive (half-open or closing)",
    );
    let check_failures = counter_family(
        &mut registry,
        "health_check_failures",
        "Failed health check probes of the backend",
    );
    let mut check_durations = CheckDurations::default();
    let check_completed = float_gauge_family(
        &mut registry,
        "health_check_last_completed_timestamp_seconds",
        "When the backend's last health check probe ended (none before the first)",
    );
    let check_interval = float_gauge_family(
        &mut registry,
        "health_check_interval_seconds",
        "Time between two health checks of the backend",
    );
    let intervals: std::collections::HashMap<&str, f64> = snapshot
        .model()
        .services
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.health.as_ref()?.interval.as_secs_f64())))
        .collect();
    let fallback = gauge_family(
        &mut registry,
        "service_fallback_active",
        "1 while the fallback server takes the traffic",
    );
    for service in &services {
        let labels = vec![("service", service.name.clone())];
        service_packets
            .get_or_create(&labels)
            .inc_by(service.stats.packets);
        service_bytes
            .get_or_create(&labels)
            .inc_by(service.stats.bytes);
        service_flows
            .get_or_create(&labels)
            .inc_by(service.stats.new_flows);
        fallback
            .get_or_create(&labels)
            .set(service.fallback_active as i64);
        for backend in &service.backends {
            let labels = vec![
                ("service", service.name.clone()),
                (
                    "backend",
                    std::net::SocketAddr::new(backend.address, backend.port).to_string(),
                ),
            ];
            backend_packets
                .get_or_create(&labels)
                .inc_by(backend.stats.packets);
            backend_bytes
                .get_or_create(&labels)
                .inc_by(backend.stats.bytes);
            backend_flows
                .get_or_create(&labels)
                .inc_by(backend.stats.new_flows);
            backend_up
                .get_or_create(&labels)
                .set((backend.oper_state == OperState::Up) as i64);
            backend_serving
                .get_or_create(&labels)
                .set(backend.serving as i64);
            backend_weight
                .get_or_create(&labels)
                .set(backend.weight as i64);
            for (state, count) in [
                ("active", backend.flows.active),
                ("inactive", backend.flows.inactive),
            ] {
                backend_flow_counts
                    .get_or_create(&with(&labels, "state", state))
                    .set(count as i64);
            }
            one_hot(
                &backend_admin,
                &labels,
                AdminState::SPELLINGS,
                &backend.admin_state,
            );
            if let Some(check) = &backend.check {
                check_failures
                    .get_or_create(&labels)
                    .inc_by(check.failures_total);
                check_durations
                    .0
                    .push((labels.clone(), check.durations.clone()));
                if let Some(last) = &check.last {
                    check_completed
                        .get_or_create(&labels)
                        .set(last.completed_unix_ms() as f64 / 1000.0);
                }
                if let Some(interval) = intervals.get(service.name.as_str()) {
                    check_interval.get_or_create(&labels).set(*interval);
                }
            }
        }
    }
    registry.register(
        "health_check_duration_seconds",
        "How long the backend's health check probes took",
        check_durations,
    );
    counter(
        &mut registry,
        "health_transitions",
        "Backend health state changes",
        stats.health_transitions,
    );
    counter(
        &mut registry,
        "maglev_builds",
        "Maglev tables built: one per service whose backends or weights changed",
        stats.maglev_builds,
    );
    float_gauge(
        &mut registry,
        "uptime_seconds",
        "Seconds since the agent started",
        stats.uptime.as_secs_f64(),
    );
    for (name, help, value) in [
        (
            "flood_guard_active",
            "1 while the flood guard forwards new flows without flow state",
            i64::from(stats.flood_guard.active),
        ),
        (
            "flood_guard_new_flows_per_cpu",
            "New flows per second one CPU records before the flood guard acts (0: no limit)",
            i64::from(stats.flood_guard.new_flows_per_cpu),
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    if let Some(at_ms) = stats.flow_count.at_unix_ms {
        float_gauge(
            &mut registry,
            "flow_count_timestamp_seconds",
            "When the walk of the flow table that xlb_backend_flows comes from ended",
            at_ms as f64 / 1000.0,
        );
        let walk = &snapshot.flow_count().walk;
        let entries = Gauge::<i64>::default();
        entries.set(walk.entries.saturating_sub(walk.pruned) as i64);
        registry.register(
            "flow_table_entries",
            "Entries in the flow table after its last walk (expired ones pruned)",
            entries,
        );
    }
    let capacity = Gauge::<i64>::default();
    capacity.set(snapshot.model().tables.flow_entries.into());
    registry.register(
        "flow_table_capacity",
        "Entries the flow table holds before the kernel evicts the least recently used",
        capacity,
    );
    let reloads = snapshot.reloads();
    let reload_results = counter_family(
        &mut registry,
        "reloads",
        "Reloads of the configuration file, by result",
    );
    for (result, count) in [("success", reloads.succeeded), ("failure", reloads.failed)] {
        reload_results
            .get_or_create(&vec![("result", result.to_string())])
            .inc_by(count);
    }
    if let Some(at) = reloads.last_success {
        float_gauge(
            &mut registry,
            "last_reload_success_timestamp_seconds",
            "When the last successful reload ended",
            unix_seconds(at),
        );
    }

    let vrrp_state = gauge_family(
        &mut registry,
        "vrrp_state",
        "1 for the VRRP instance's state",
    );
    let vrrp_priority = gauge_family(
        &mut registry,
        "vrrp_priority",
        "The instance's priority after tracking",
    );
    let vrrp_transitions = counter_family(
        &mut registry,
        "vrrp_transitions",
        "The instance's changes of state",
    );
    let vrrp_sent = counter_family(&mut registry, "vrrp_adverts_sent", "Advertisements sent");
    let vrrp_received = counter_family(
        &mut registry,
        "vrrp_adverts_received",
        "Advertisements accepted",
    );
    let vrrp_discarded = counter_family(
        &mut registry,
        "vrrp_adverts_discarded",
        "Advertisements dropped as invalid",
    );
    for instance in &vrrp {
        // Not `instance`: Prometheus gives every scraped sample that label,
        // the target's.
        let labels = vec![("vrrp_instance", instance.name.clone())];
        one_hot(&vrrp_state, &labels, VrrpState::SPELLINGS, &instance.state);
        vrrp_priority
            .get_or_create(&labels)
            .set(instance.priority.into());
        vrrp_transitions
            .get_or_create(&labels)
            .inc_by(instance.transitions);
        vrrp_sent
            .get_or_create(&labels)
            .inc_by(instance.adverts_sent);
        vrrp_received
            .get_or_create(&labels)
            .inc_by(instance.adverts_received);
        vrrp_discarded
            .get_or_create(&labels)
            .inc_by(instance.adverts_discarded);
    }

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
    })?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text)
    } else {
        ([(header::CONTENT_TYPE, TEXT_0_0_4)], text_0_0_4(&text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counter_families_by_their_samples() {
        let openmetrics = "# HELP xlb_reloads Reloads.\n# TYPE xlb_reloads counter\n\
                           xlb_reloads_total{result=\"success\"} 1\n\
                           # HELP xlb_uptime_seconds Up.\n# TYPE xlb_uptime_seconds gauge\n\
                           # UNIT xlb_uptime_seconds seconds\nxlb_uptime_seconds 5\n# EOF\n";
        assert_eq!(
            text_0_0_4(openmetrics),
            "# HELP xlb_reloads_total Reloads.\n# TYPE xlb_reloads_total counter\n\
             xlb_reloads_total{result=\"success\"} 1\n\
             # HELP xlb_uptime_seconds Up.\n# TYPE xlb_uptime_seconds gauge\n\
             xlb_uptime_seconds 5\n"
        );
    }

    /// The metric names `text` mentions: `xlb_` and what follows of
    /// lowercase letters and underscores.
    fn names_in(text: &str) -> Vec<&str> {
        let mut names: Vec<&str> = text
            .match_indices("xlb_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Whether this file registers `name`: its family (the name less
    /// `xlb_` and a sample suffix) is a string literal here.
    fn registered(name: &str) -> bool {
        let source = include_str!("metrics.rs");
        let family = name.strip_prefix("xlb_").unwrap_or(name);
        std::iter::once(family)
            .chain(
                ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|suffix| family.strip_suffix(suffix)),
            )
            .any(|family| source.contains(&format!("\"{family}\",")))
    }

    #[test]
    fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
        for (file, text) in [
            (
                "deploy/grafana/xlb.json",
                include_str!("../../../deploy/grafana/xlb.json"),
            ),
            (
                "deploy/prometheus/xlb-alerts.yml",
                include_str!("../../../deploy/prometheus/xlb-alerts.yml"),
            ),
        ] {
            let names = names_in(text);
            assert!(names.len() > 5, "{file}: {names:?}");
            for name in names {
                assert!(
                    registered(name),
                    "{file} uses {name}, which xlb does not export"
                );
            }
        }
        assert!(!registered("xlb_backend_nonsense_total"));
        serde_json::from_str::<serde_json::Value>(include_str!("../../../deploy/grafana/xlb.json"))
            .expect("the dashboard is JSON");
    }
}
