//! What the API shows: services, backends, flows and counters, read from
//! the running configuration, the health checks and the data plane.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use lb_common::maps::{ServiceKey, TrafficStats};
use serde::Serialize;

use super::{
    check_id, desired::Health, mac, service_key_of, snapshot::Snapshot, AgentError, FlowCount,
};
use crate::{
    config::{HealthConfig, PersistenceConfig, ServiceConfig},
    dataplane::{services::Slot, Counters, DataplaneError, FlowCounts, FlowCountsBySlot},
    health::{monitor::unix_ms, CheckHandle, CheckStatus},
    model::{AdminState, Backend, OperState, Service},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TrafficView {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl From<TrafficStats> for TrafficView {
    fn from(s: TrafficStats) -> Self {
        TrafficView {
            packets: s.packets,
            bytes: s.bytes,
            new_flows: s.new_flows,
        }
    }
}

/// Flows in the flow table, as `ipvsadm -L -n` counts connections.
pub type FlowCountView = FlowCounts;

/// A backend's counts from the last walk of the flow table: those of the
/// slot it holds now (flows of an earlier holder of its id do not count),
/// none when it is not in the data plane.
fn backend_flows(slot: Option<Slot>, counts: &FlowCountsBySlot) -> FlowCountView {
    slot.and_then(|slot| counts.get(&slot))
        .copied()
        .unwrap_or_default()
}

/// Traffic as read from the data plane, none if it could not be.
fn traffic(stats: Result<TrafficStats, DataplaneError>) -> TrafficView {
    stats.map(TrafficView::from).unwrap_or_default()
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
    /// A backend's share of the Maglev ring, 0 to 1.
    fn ring_share(&self, backend: &Backend) -> f64 {
        match self.shares.get(&(backend.addr, backend.port)) {
            Some(&share) if self.slots > 0 => share as f64 / self.slots as f64,
            _ => 0.0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub mode: &'static str,
    pub scheduler: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<SocketAddr>,
    /// The fallback takes the traffic: no backend takes new flows.
    pub fallback_active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    pub backends: Vec<BackendView>,
    /// The sum over its backends.
    pub flows: FlowCountView,
    pub stats: TrafficView,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendView {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub admin_state: AdminState,
    pub oper_state: OperState,
    /// In the data plane: takes new flows by its weight, or (drained) keeps
    /// its established ones.
    pub serving: bool,
    /// Its share of the Maglev ring, 0 to 1.
    pub ring_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<NextHopView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckStatus>,
    pub flows: FlowCountView,
    pub stats: TrafficView,
}

#[derive(Clone, Debug, Serialize)]
pub struct NextHopView {
    pub mac: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowView {
    pub service: String,
    pub protocol: &'static str,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub backend: SocketAddr,
    pub idle_ms: u64,
}

/// The flood guard: its cap and whether it is forwarding new flows without
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FloodGuardView {
    /// New flows per second one CPU records (0: no limit).
    pub new_flows_per_cpu: u32,
    pub active: bool,
    /// Since when it has been active; null while it is not.
    pub active_since_unix_ms: Option<u64>,
    /// New flows forwarded without state since the data plane was loaded.
    pub stateless_flows: u64,
}

/// The last walk of the flow table, which the flow counts come from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FlowWalkView {
    /// When it ended; null before the first.
    pub at_unix_ms: Option<u64>,
    pub took_ms: f64,
    /// Entries read.
    pub entries: u64,
    /// Entries deleted: done, expired, or of removed backends.
    pub pruned: u64,
}

impl From<&FlowCount> for FlowWalkView {
    fn from(c: &FlowCount) -> Self {
        FlowWalkView {
            at_unix_ms: c.at.map(unix_ms),
            took_ms: c.took.as_secs_f64() * 1000.0,
            entries: c.walk.entries,
            pruned: c.walk.pruned,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StatsView {
    pub version: &'static str,
    pub uptime_s: f64,
    pub interfaces: Vec<String>,
    pub health_transitions: u64,
    pub applies: u64,
    /// Maglev tables built since the agent started.
    pub maglev_builds: u64,
    pub counters: Counters,
    pub flow_count: FlowWalkView,
    pub flood_guard: FloodGuardView,
    pub services: Vec<ServiceStatsView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceStatsView {
    pub name: String,
    pub stats: TrafficView,
    pub backends: Vec<BackendStatsView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendStatsView {
    pub address: SocketAddr,
    pub stats: TrafficView,
}

impl Snapshot {
    pub fn services_view(&self) -> Vec<ServiceView> {
        self.model
            .services
            .iter()
            .map(|s| self.service_view(s))
            .collect()
    }

    pub fn service_view(&self, service: &Service) -> ServiceView {
        let config = ServiceConfig::from_model(service);
        let in_dataplane = self.in_dataplane(service);
        let fallback_active = service.fallback.is_some_and(|f| {
            self.desired()
                .serving(service)
                .iter()
                .any(|b| (b.addr, b.port) == (f.ip(), f.port()))
        });
        let backends: Vec<BackendView> = service
            .backends
            .iter()
            .map(|b| self.backend_view_in(&in_dataplane, service, b))
            .collect();
        ServiceView {
            name: service.name.clone(),
            vip: service.vip,
            port: service.port,
            protocol: service.protocol.name(),
            mode: service.mode.name(),
            scheduler: "maglev",
            persistence: config.persistence,
            fallback: service.fallback,
            fallback_active,
            health: config.health,
            flows: backends.iter().map(|b| b.flows).sum(),
            backends,
            stats: traffic(self.reader.service_stats(&self.layout, &in_dataplane.key)),
        }
    }

    pub fn backend_view(&self, service: &Service, backend: &Backend) -> BackendView {
        self.backend_view_in(&self.in_dataplane(service), service, backend)
    }

    /// What the data plane holds of `service`, read once for all its
    /// backends' views: the ring is read whole for the shares.
    fn in_dataplane(&self, service: &Service) -> InDataplane {
        let key = service_key_of(service);
        let shares = self.layout.ring_shares(&key);
        InDataplane {
            slots: shares.values().sum(),
            shares,
            installed: self.layout.installed_backends(&key),
            key,
        }
    }

    fn backend_view_in(
        &self,
        in_dataplane: &InDataplane,
        service: &Service,
        backend: &Backend,
    ) -> BackendView {
        let key = &in_dataplane.key;
        let (next_hop, next_hop_error) = match self.next_hops.get(&backend.addr) {
            Some(Ok(hop)) => (
                Some(NextHopView {
                    mac: mac(&hop.mac),
                    ifindex: hop.ifindex,
                }),
                None,
            ),
            Some(Err(e)) => (None, Some(e.clone())),
            None => (None, None),
        };
        BackendView {
            address: backend.addr,
            port: backend.port,
            weight: backend.weight,
            admin_state: backend.admin,
            oper_state: self.state(service, backend),
            serving: in_dataplane
                .installed
                .contains(&(backend.addr, backend.port)),
            ring_share: in_dataplane.ring_share(backend),
            next_hop,
            next_hop_error,
            check: self
                .checks
                .get(&check_id(service, backend))
                .map(CheckHandle::status),
            flows: backend_flows(
                self.layout.backend_slot(key, backend.addr, backend.port),
                &self.flow_count.borrow().walk.counts,
            ),
            stats: traffic(self.reader.backend_stats(
                &self.layout,
                key,
                backend.addr,
                backend.port,
            )),
        }
    }

    /// Up to `limit` live flows, of the named service only if given.
    pub fn flows_view(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FlowView>, AgentError> {
        let key = match service {
            Some(name) => Some(service_key_of(self.service(name)?)),
            None => None,
        };
        let names: HashMap<_, _> = self
            .model
            .services
            .iter()
            .map(|s| (service_key_of(s), s.name.clone()))
            .collect();
        Ok(self
            .reader
            .flows(&self.layout, limit, key)?
            .into_iter()
            .map(|f| FlowView {
                service: names.get(&f.service).cloned().unwrap_or_default(),
                protocol: f.protocol.name(),
                client: f.client,
                vip: f.vip,
                backend: f.backend,
                idle_ms: f.idle.as_millis() as u64,
            })
            .collect())
    }

    pub fn stats_view(&self) -> Result<StatsView, AgentError> {
        let services = self
            .model
            .services
            .iter()
            .map(|s| {
                let key = service_key_of(s);
                ServiceStatsView {
                    name: s.name.clone(),
                    stats: traffic(self.reader.service_stats(&self.layout, &key)),
                    backends: s
                        .backends
                        .iter()
                        .map(|b| BackendStatsView {
                            address: b.socket_addr(),
                            stats: traffic(self.reader.backend_stats(
                                &self.layout,
                                &key,
                                b.addr,
                                b.port,
                            )),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(StatsView {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs_f64(),
            interfaces: self
                .layout
                .attachments
                .iter()
                .map(|a| a.iface.clone())
                .collect(),
            health_transitions: self.health_transitions,
            applies: self.applies,
            maglev_builds: self.layout.maglev_builds,
            counters: self.reader.counters()?,
            flow_count: FlowWalkView::from(&*self.flow_count.borrow()),
            flood_guard: {
                let flood = *self.flood.borrow();
                FloodGuardView {
                    new_flows_per_cpu: self.flood_guard(),
                    active: flood.active_since.is_some(),
                    active_since_unix_ms: flood.active_since.map(unix_ms),
                    stateless_flows: flood.stateless_flows,
                }
            },
            services,
        })
    }
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
        let flows: Vec<FlowCountView> = backends
            .iter()
            .map(|s| backend_flows(*s, &by_slot))
            .collect();
        let view = |active, inactive| FlowCountView { active, inactive };
        assert_eq!(flows, [view(3, 1), view(2, 0), view(0, 0)]);
        assert_eq!(flows.into_iter().sum::<FlowCountView>(), view(5, 1));
    }
}
