//! `GET /metrics`: Prometheus text exposition, built fresh from the agent's
//! state on each scrape.

use std::sync::atomic::AtomicU64;

use axum::{extract::State, http::header, response::IntoResponse};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{views, ApiError, ApiState};
use crate::{
    model::{AdminState, OperState, Spelled},
    vrrp::State as VrrpState,
};

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

pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let snapshot = state.agent.snapshot();
    let stats = views::stats(&snapshot, state.token.is_some())?;
    let services = views::services(&snapshot);
    let vrrp = super::vrrp_status(&state).await;

    let mut registry = Registry::with_prefix("xlb");
    let packets = counter_family(
        &mut registry,
        "dataplane_packets",
        "Packets the XDP program counted, by counter",
    );
    for (counter, total) in stats.counters.iter() {
        packets
            .get_or_create(&vec![("counter", counter.name().to_string())])
            .inc_by(total);
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
        }
    }
    let transitions = counter_family(
        &mut registry,
        "health_transitions",
        "Backend health state changes",
    );
    transitions
        .get_or_create(&Vec::new())
        .inc_by(stats.health_transitions);
    counter_family(
        &mut registry,
        "maglev_builds",
        "Maglev tables built: one per service whose backends or weights changed",
    )
    .get_or_create(&Vec::new())
    .inc_by(stats.maglev_builds);
    let uptime = gauge_family(
        &mut registry,
        "uptime_seconds",
        "Seconds since the agent started",
    );
    uptime
        .get_or_create(&Vec::new())
        .set(stats.uptime.as_secs() as i64);
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
        let walked = Gauge::<f64, AtomicU64>::default();
        walked.set(at_ms as f64 / 1000.0);
        registry.register(
            "flow_count_timestamp_seconds",
            "When the walk of the flow table that xlb_backend_flows comes from ended",
            walked,
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
        let labels = vec![("instance", instance.name.clone())];
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
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
