//! What the API shows: services, backends, flows and counters, read from
//! the agent's snapshot (the running configuration, the health checks and
//! the data plane) into the [`wire`] types.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use lb_common::maps::{ServiceKey, TrafficStats};

use super::wire;
use crate::{
    agent::{service_key_of, AgentError, Snapshot},
    config::{BackendConfig, ServiceConfig},
    dataplane::{services::Slot, DataplaneError, FlowCounts, FlowCountsBySlot},
    health::monitor::unix_ms,
    model::{Backend, Service},
    net::mac,
};

/// A backend's counts from the last walk of the flow table: those of the
/// slot it holds now (flows of an earlier holder of its id do not count),
/// none when it is not in the data plane.
fn backend_flows(slot: Option<Slot>, counts: &FlowCountsBySlot) -> FlowCounts {
    slot.and_then(|slot| counts.get(&slot))
        .copied()
        .unwrap_or_default()
}

/// Traffic as read from the data plane, none if it could not be.
fn traffic(stats: Result<TrafficStats, DataplaneError>) -> wire::Traffic {
    stats.map(wire::Traffic::from).unwrap_or_default()
}

/// A service as the data plane holds it: its spec (for the map keys), its
/// ring slots per backend, and its backends in the data plane.
struct InDataplane {
    key: ServiceKey,
    shares: HashMap<(IpAddr, u16), u32>,
    /// The ring slots its backends hold.
    slots: u32,
    installed: HashSet<(IpAddr, u16)>,
}

impl InDataplane {
    /// What the data plane holds of `service`, read once for all its
    /// backends' views: the ring is read whole for the shares.
    fn of(snapshot: &Snapshot, service: &Service) -> InDataplane {
        let key = service_key_of(service);
        let shares = snapshot.layout().ring_shares(&key);
        InDataplane {
            slots: shares.values().sum(),
            shares,
            installed: snapshot.layout().installed_backends(&key),
            key,
        }
    }

    /// A backend's share of the Maglev ring, 0 to 1.
    fn ring_share(&self, backend: &Backend) -> f64 {
        match self.shares.get(&(backend.addr, backend.port)) {
            Some(&share) if self.slots > 0 => share as f64 / self.slots as f64,
            _ => 0.0,
        }
    }
}

pub fn services(snapshot: &Snapshot) -> Vec<wire::Service> {
    snapshot
        .model()
        .services
        .iter()
        .map(|s| service(snapshot, s))
        .collect()
}

pub fn service(snapshot: &Snapshot, service: &Service) -> wire::Service {
    let config = ServiceConfig::from_model(service);
    let in_dataplane = InDataplane::of(snapshot, service);
    let backends: Vec<wire::Backend> = service
        .backends
        .iter()
        .map(|b| backend_in(snapshot, &in_dataplane, service, b))
        .collect();
    wire::Service {
        name: service.name.clone(),
        vip: service.vip,
        port: service.port,
        protocol: service.protocol,
        mode: service.mode,
        scheduler: "maglev".into(),
        persistence: config.persistence,
        fallback: service.fallback,
        fallback_active: snapshot.fallback_active(service),
        health: config.health,
        flows: backends.iter().map(|b| b.flows).sum(),
        backends,
        stats: traffic(
            snapshot
                .reader()
                .service_stats(snapshot.layout(), &in_dataplane.key),
        ),
    }
}

pub fn backend(snapshot: &Snapshot, service: &Service, backend: &Backend) -> wire::Backend {
    backend_in(
        snapshot,
        &InDataplane::of(snapshot, service),
        service,
        backend,
    )
}

fn backend_in(
    snapshot: &Snapshot,
    in_dataplane: &InDataplane,
    service: &Service,
    backend: &Backend,
) -> wire::Backend {
    let key = &in_dataplane.key;
    let (next_hop, next_hop_error) = match snapshot.next_hop(backend.addr) {
        Some(Ok(hop)) => (
            Some(wire::NextHop {
                mac: mac(&hop.mac),
                ifindex: hop.ifindex,
            }),
            None,
        ),
        Some(Err(e)) => (None, Some(e.clone())),
        None => (None, None),
    };
    let layout = snapshot.layout();
    let check = snapshot.check_status(service, backend);
    let now_unix_ms = unix_ms(std::time::SystemTime::now());
    wire::Backend {
        address: backend.addr,
        port: backend.port,
        weight: backend.weight,
        admin_state: backend.admin_state,
        oper_state: snapshot.oper_state(service, backend),
        serving: in_dataplane
            .installed
            .contains(&(backend.addr, backend.port)),
        ring_share: in_dataplane.ring_share(backend),
        next_hop,
        next_hop_error,
        health: BackendConfig::from_model(backend).health,
        last_check_age_ms: check
            .as_ref()
            .and_then(|c| c.last.as_ref())
            .map(|last| now_unix_ms.saturating_sub(last.completed_unix_ms())),
        check,
        flows: backend_flows(
            layout.backend_slot(key, backend.addr, backend.port),
            &snapshot.flow_count().walk.counts,
        ),
        stats: traffic(
            snapshot
                .reader()
                .backend_stats(layout, key, backend.addr, backend.port),
        ),
    }
}

/// Up to `limit` live flows, of the named service only if given.
pub fn flows(
    snapshot: &Snapshot,
    service: Option<&str>,
    limit: usize,
) -> Result<Vec<wire::Flow>, AgentError> {
    let key = match service {
        Some(name) => Some(service_key_of(snapshot.service(name)?)),
        None => None,
    };
    let names: HashMap<_, _> = snapshot
        .model()
        .services
        .iter()
        .map(|s| (service_key_of(s), s.name.clone()))
        .collect();
    Ok(snapshot
        .reader()
        .flows(snapshot.layout(), limit, key)?
        .into_iter()
        .map(|f| wire::Flow {
            service: names.get(&f.service).cloned().unwrap_or_default(),
            protocol: f.protocol,
            client: f.client,
            vip: f.vip,
            backend: f.backend,
            idle: f.idle,
        })
        .collect())
}

/// The agent's figures; `changes_need_token` says whether an API token is set.
pub fn stats(snapshot: &Snapshot, changes_need_token: bool) -> Result<wire::Stats, AgentError> {
    let reader = snapshot.reader();
    let layout = snapshot.layout();
    let services = snapshot
        .model()
        .services
        .iter()
        .map(|s| {
            let key = service_key_of(s);
            wire::ServiceStats {
                name: s.name.clone(),
                stats: traffic(reader.service_stats(layout, &key)),
                backends: s
                    .backends
                    .iter()
                    .map(|b| wire::BackendStats {
                        address: b.socket_addr(),
                        stats: traffic(reader.backend_stats(layout, &key, b.addr, b.port)),
                    })
                    .collect(),
            }
        })
        .collect();
    let flow_count = {
        let count = snapshot.flow_count();
        wire::FlowWalk {
            at_unix_ms: count.at.map(unix_ms),
            took: count.took,
            entries: count.walk.entries,
            pruned: count.walk.pruned,
        }
    };
    let flood = snapshot.flood();
    Ok(wire::Stats {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime: snapshot.uptime(),
        interfaces: layout.attachments.iter().map(|a| a.iface.clone()).collect(),
        health_transitions: snapshot.health_transitions(),
        applies: snapshot.applies(),
        maglev_builds: layout.maglev_builds,
        counters: wire::Counters::from(&reader.counters()?),
        flow_count,
        flood_guard: wire::FloodGuard {
            new_flows_per_cpu: snapshot.flood_guard(),
            active: flood.active_since.is_some(),
            active_since_unix_ms: flood.active_since.map(unix_ms),
            stateless_flows: flood.stateless_flows,
        },
        services,
        changes_need_token,
        api_changes: snapshot.runtime_state().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_sums_the_flows_of_its_backends_current_slots() {
        let counts = |active, inactive| FlowCounts { active, inactive };
        let slot = |id, generation| Slot { id, generation };
        let by_slot = FlowCountsBySlot::from([
            (slot(1, 7), counts(3, 1)),
            // Made for an earlier backend with id 1.
            (slot(1, 5), counts(40, 40)),
            (slot(2, 8), counts(2, 0)),
            // A backend of another service.
            (slot(3, 9), counts(500, 500)),
        ]);
        let backends = [Some(slot(1, 7)), Some(slot(2, 8)), None];
        let flows: Vec<FlowCounts> = backends
            .iter()
            .map(|s| backend_flows(*s, &by_slot))
            .collect();
        assert_eq!(flows, [counts(3, 1), counts(2, 0), counts(0, 0)]);
        assert_eq!(flows.into_iter().sum::<FlowCounts>(), counts(5, 1));
    }
}
