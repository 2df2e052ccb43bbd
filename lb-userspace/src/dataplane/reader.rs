//! Reading the data plane without it: a [`Reader`] holds handles of its own
//! on the maps the agent reports from (counters, backend traffic, the
//! shared flow table), and a [`Layout`] is what the last apply installed.
//! Together they answer what the API and the metrics show, on any task,
//! while the data plane's owner goes on writing.

use std::{
    borrow::Borrow,
    collections::{HashMap as StdHashMap, HashSet},
    net::IpAddr,
};

use aya::maps::{HashMap, MapData, PerCpuArray};
use lb_common::{
    flow::FlowKey,
    maps::{self, Flow, ServiceKey, TrafficStats},
    stats::Counter,
};

use super::{
    flows::{self, FlowEntry},
    services::{Installed, Slot},
    Attachment, Counters, DataplaneError, StatsRecord,
};

/// The most entries a flow listing reads, at least.
const MIN_FLOWS_READ: usize = 65_536;

/// Handles of its own on the maps the agent reports from.
pub struct Reader {
    stats: PerCpuArray<MapData, StatsRecord>,
    traffic: PerCpuArray<MapData, TrafficStats>,
    flows: HashMap<MapData, FlowKey, Flow>,
}

/// What the last apply installed: each service's backends and their slots,
/// its ring, and what its removed backends carried; where the program is
/// attached; the Maglev tables built so far.
#[derive(Clone, Default)]
pub struct Layout {
    pub(super) installed: std::sync::Arc<Installed>,
    pub(super) retired: StdHashMap<ServiceKey, TrafficStats>,
    pub(super) max_backends: u32,
    pub attachments: Vec<Attachment>,
    pub maglev_builds: u64,
}

impl Reader {
    pub(super) fn new(
        stats: PerCpuArray<MapData, StatsRecord>,
        traffic: PerCpuArray<MapData, TrafficStats>,
        flows: HashMap<MapData, FlowKey, Flow>,
    ) -> Reader {
        Reader {
            stats,
            traffic,
            flows,
        }
    }

    /// The per-CPU counters, summed.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        counters(&self.stats)
    }

    /// Traffic of a service in `layout`, summed over CPUs: its backends',
    /// and what the backends it no longer has carried.
    pub fn service_stats(
        &self,
        layout: &Layout,
        service: &ServiceKey,
    ) -> Result<TrafficStats, DataplaneError> {
        service_traffic(&self.traffic, &layout.installed, &layout.retired, service)
    }

    /// Traffic of one service's backend in `layout`.
    pub fn backend_stats(
        &self,
        layout: &Layout,
        service: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<TrafficStats, DataplaneError> {
        let id = layout
            .installed
            .backend_slot(service, addr, port)
            .map(|s| s.id);
        traffic(&self.traffic, id)
    }

    /// Up to `limit` flows of the shared table whose backend `layout` still
    /// has, of `service` only if given.
    pub fn flows(
        &self,
        layout: &Layout,
        limit: usize,
        service: Option<ServiceKey>,
    ) -> Result<Vec<FlowEntry>, DataplaneError> {
        flows(&self.flows, &layout.installed, limit, service)
    }
}

impl Layout {
    /// The slot (id and generation) of a service's backend, which its
    /// flows carry.
    pub fn backend_slot(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> Option<Slot> {
        self.installed.backend_slot(service, addr, port)
    }

    /// The backends (address, port) of a service.
    pub fn installed_backends(&self, service: &ServiceKey) -> HashSet<(IpAddr, u16)> {
        self.installed.backends_of(service)
    }

    /// How many of a service's ring slots each of its backends holds.
    pub fn ring_shares(&self, service: &ServiceKey) -> StdHashMap<(IpAddr, u16), u32> {
        self.installed.ring_shares(service, self.max_backends)
    }
}

/// The per-CPU counters of `stats`, summed.
pub(super) fn counters<T: Borrow<MapData>>(
    stats: &PerCpuArray<T, StatsRecord>,
) -> Result<Counters, DataplaneError> {
    let map_err = |source| DataplaneError::Map {
        map: maps::MAP_STATS,
        source,
    };
    let per_cpu = stats.get(&0, 0).map_err(map_err)?;
    let mut counters = Counters::default();
    for counter in Counter::ALL {
        let i = counter.index() as usize;
        counters.set(counter, per_cpu.iter().map(|record| record[i]).sum());
    }
    Ok(counters)
}

/// Backend slot `id`'s traffic, summed over CPUs (none without an id).
pub(super) fn traffic<T: Borrow<MapData>>(
    map: &PerCpuArray<T, TrafficStats>,
    id: Option<u32>,
) -> Result<TrafficStats, DataplaneError> {
    let Some(id) = id else {
        return Ok(TrafficStats::default());
    };
    let map_err = |source| DataplaneError::Map {
        map: maps::MAP_BACKEND_STATS,
        source,
    };
    let values = map.get(&id, 0).map_err(map_err)?;
    let mut total = TrafficStats::default();
    for value in values.iter() {
        total += *value;
    }
    Ok(total)
}

/// Traffic of a service of `installed`: its backends', and what the
/// backends it no longer has carried (`retired`).
pub(super) fn service_traffic<T: Borrow<MapData>>(
    map: &PerCpuArray<T, TrafficStats>,
    installed: &Installed,
    retired: &StdHashMap<ServiceKey, TrafficStats>,
    service: &ServiceKey,
) -> Result<TrafficStats, DataplaneError> {
    let mut total = retired.get(service).copied().unwrap_or_default();
    for (&(key, _, _), slot) in &installed.backends {
        if key == *service {
            total += traffic(map, Some(slot.id))?;
        }
    }
    Ok(total)
}

/// Up to `limit` flows of `table` whose backend `installed` still has, of
/// `service` only if given.
pub(super) fn flows<T: Borrow<MapData>>(
    table: &HashMap<T, FlowKey, Flow>,
    installed: &Installed,
    limit: usize,
    service: Option<ServiceKey>,
) -> Result<Vec<FlowEntry>, DataplaneError> {
    let by_slot: StdHashMap<Slot, (ServiceKey, std::net::SocketAddr)> = installed
        .backends
        .iter()
        .map(|(&(service, addr, port), &slot)| (slot, (service, (addr, port).into())))
        .collect();
    let now = flows::monotonic_ns();
    let mut entries = Vec::new();
    // The walk is bounded, even when few flows match the filter.
    let most_read = limit.saturating_mul(16).max(MIN_FLOWS_READ);
    for item in table.iter().take(most_read) {
        if entries.len() >= limit {
            break;
        }
        // An entry evicted while we walk is skipped, not an error.
        let Ok((key, flow)) = item else { continue };
        let found = flows::entry(&key, &flow, now, |slot| by_slot.get(&slot).copied());
        if let Some(entry) = found.filter(|e| service.is_none_or(|s| s == e.service)) {
            entries.push(entry);
        }
    }
    Ok(entries)
}
