//! What the data plane counts and holds: counters, traffic, flows, and
//! what the last apply installed.

use super::*;

impl Dataplane {
    /// Whether the maps answer: one read of a counter.
    pub fn maps_answer(&self) -> bool {
        self.map(maps::MAP_STATS)
            .ok()
            .and_then(|map| PerCpuArray::<_, StatsRecord>::try_from(map).ok())
            .is_some_and(|stats| stats.get(&0, 0).is_ok())
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let stats = PerCpuArray::<_, StatsRecord>::try_from(self.map(maps::MAP_STATS)?).map_err(
            |source| DataplaneError::Map {
                map: maps::MAP_STATS,
                source,
            },
        )?;
        reader::counters(&stats)
    }

    /// Up to `limit` live flows, of `service` only if given, from the first
    /// `16 * limit` entries of the shared flow table (65536 at least).
    pub fn flows(
        &self,
        limit: usize,
        service: Option<maps::ServiceKey>,
    ) -> Result<Vec<FlowEntry>, DataplaneError> {
        let table = HashMap::<_, lb_common::flow::FlowKey, maps::Flow>::try_from(
            self.map(maps::MAP_FLOWS_SHARED)?,
        )
        .map_err(|source| DataplaneError::Map {
            map: maps::MAP_FLOWS_SHARED,
            source,
        })?;
        reader::flows(&table, &self.installed, limit, service)
    }

    /// Handles of its own on the shared flow table (and the backends its
    /// entries name), to walk it on another thread while this data plane
    /// goes on serving.
    pub fn flow_table(&self) -> Result<FlowTable, DataplaneError> {
        let flows = maps::MAP_FLOWS_SHARED;
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        let table = || HashMap::try_from(self.own_map(flows)?).map_err(map_err(flows));
        let backends = Array::try_from(self.own_map(maps::MAP_BACKENDS)?)
            .map_err(map_err(maps::MAP_BACKENDS))?;
        Ok(FlowTable::new(
            table()?,
            table()?,
            backends,
            self.options.flow_entries,
        ))
    }

    /// The map `name` through a new file descriptor.
    pub(super) fn own_map(&self, name: &'static str) -> Result<Map, DataplaneError> {
        let map_err = |source| DataplaneError::Map { map: name, source };
        let (Map::LruHashMap(data) | Map::Array(data) | Map::PerCpuArray(data)) = self.map(name)?
        else {
            return Err(DataplaneError::Missing {
                kind: "LRU hash map or array",
                name,
            });
        };
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
            map_err(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error,
            }))
        })?;
        let data = MapData::from_fd(fd).map_err(map_err)?;
        Map::from_map_data(data).map_err(map_err)
    }

    /// CPU `cpu`'s own entry for `key` in its flow cache, if it has one.
    pub fn cpu_flow(
        &self,
        key: &lb_common::flow::FlowKey,
        cpu: usize,
    ) -> Result<Option<maps::CachedFlow>, DataplaneError> {
        let name = maps::MAP_FLOW_CACHE;
        let map_err = |source| DataplaneError::Map { map: name, source };
        let cache = Array::<_, maps::FlowBucket>::try_from(self.map(name)?).map_err(map_err)?;
        let settings = Array::<_, maps::Settings>::try_from(self.map(maps::MAP_SETTINGS)?)
            .map_err(|source| DataplaneError::Map {
                map: maps::MAP_SETTINGS,
                source,
            })?
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: maps::MAP_SETTINGS,
                source,
            })?;
        let buckets = flow_buckets_per_cpu(&self.options)?;
        let index = lb_common::flow::cache_bucket(key, &settings.cache_keys, buckets);
        let bucket = cache
            .get(&(cpu as u32 * buckets + index), 0)
            .map_err(map_err)?;
        Ok(bucket.ways.into_iter().find(|way| way.key == *key))
    }

    /// The slot (id and generation) of a service's backend in the last
    /// applied set, which its flows carry.
    pub fn backend_slot(
        &self,
        service: &maps::ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Option<Slot> {
        self.installed.backend_slot(service, addr, port)
    }

    pub fn installed_service_count(&self) -> usize {
        self.installed.services.len()
    }

    /// The backends (address, port) of a service in the last applied set.
    pub fn installed_backends(
        &self,
        service: &maps::ServiceKey,
    ) -> std::collections::HashSet<(IpAddr, u16)> {
        self.installed.backends_of(service)
    }

    /// What the last apply installed, for readers that do not share this
    /// data plane (see [`Reader`]).
    pub fn layout(&self) -> Layout {
        Layout {
            installed: self.installed.clone(),
            retired: self.retired.clone(),
            max_backends: self.options.max_backends,
            attachments: self.attachments().cloned().collect(),
            maglev_builds: self.maglev_builds,
        }
    }

    /// Handles of its own on the counters, the backends' traffic and the
    /// shared flow table (see [`Reader`]).
    pub fn reader(&self) -> Result<Reader, DataplaneError> {
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        let stats = maps::MAP_STATS;
        let traffic = maps::MAP_BACKEND_STATS;
        let flows = maps::MAP_FLOWS_SHARED;
        Ok(Reader::new(
            PerCpuArray::try_from(self.own_map(stats)?).map_err(map_err(stats))?,
            PerCpuArray::try_from(self.own_map(traffic)?).map_err(map_err(traffic))?,
            HashMap::try_from(self.own_map(flows)?).map_err(map_err(flows))?,
        ))
    }

    /// Traffic of a service in the last applied set, summed over CPUs: its
    /// backends', and what the backends it no longer has carried.
    pub fn service_stats(
        &self,
        service: &maps::ServiceKey,
    ) -> Result<TrafficStats, DataplaneError> {
        let name = maps::MAP_BACKEND_STATS;
        let map = PerCpuArray::<_, TrafficStats>::try_from(self.map(name)?)
            .map_err(|source| DataplaneError::Map { map: name, source })?;
        reader::service_traffic(&map, &self.installed, &self.retired, service)
    }

    /// Traffic of one service's backend in the last applied set.
    pub fn service_backend_stats(
        &self,
        service: &maps::ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<TrafficStats, DataplaneError> {
        let id = self.backend_slot(service, addr, port).map(|slot| slot.id);
        self.traffic(id)
    }

    /// Traffic to a backend (address, port) in the last applied set, over
    /// all the services it serves.
    pub fn backend_stats(&self, addr: IpAddr, port: u16) -> Result<TrafficStats, DataplaneError> {
        let mut total = TrafficStats::default();
        for (&(_, a, p), slot) in &self.installed.backends {
            if (a, p) == (addr, port) {
                total += self.traffic(Some(slot.id))?;
            }
        }
        Ok(total)
    }

    /// Backend slot `id`'s traffic, summed over CPUs.
    pub(super) fn traffic(&self, id: Option<u32>) -> Result<TrafficStats, DataplaneError> {
        let name = maps::MAP_BACKEND_STATS;
        let map = PerCpuArray::<_, TrafficStats>::try_from(self.map(name)?)
            .map_err(|source| DataplaneError::Map { map: name, source })?;
        reader::traffic(&map, id)
    }
}
