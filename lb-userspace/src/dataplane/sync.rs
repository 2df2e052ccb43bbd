//! Writing services to the maps: an apply plans (see [`super::services`])
//! and writes only what changed, in an order packets never see half made.

use super::*;

impl Dataplane {
    /// Makes the maps serve exactly `services`, after checking all of them:
    /// a rejected set changes nothing. Unchanged rings are not rewritten.
    pub fn apply(
        &mut self,
        services: &[ServiceSpec],
        settings: &DirectorSettings,
    ) -> Result<(), DataplaneError> {
        let opts = self.options.clone();
        services::validate(services, settings, opts.max_services, opts.max_backends)?;
        let plan = services::plan(
            services,
            &self.installed,
            opts.max_services,
            opts.max_backends,
            opts.maglev_size,
        );
        // Never hand out a generation twice, even if a write below fails.
        std::sync::Arc::make_mut(&mut self.installed).last_generation =
            plan.installed.last_generation;
        let retired = self.retired_after(&plan.installed)?;
        if let Err(e) = self.write(settings, &plan) {
            // The maps may hold some of the plan: write whole rings and
            // every entry next time.
            for service in std::sync::Arc::make_mut(&mut self.installed)
                .services
                .values_mut()
            {
                service.idle_table = services::Table::default();
            }
            self.resync = true;
            return Err(e);
        }
        self.resync = false;
        log::debug!(
            "applied {} services, {} new backends",
            services.len(),
            plan.fresh_backends.len()
        );
        self.installed = std::sync::Arc::new(plan.installed);
        self.retired = retired;
        self.maglev_builds += u64::from(plan.rings_built);
        Ok(())
    }

    /// Maglev tables built so far: an apply builds one for each service
    /// whose backends, their ids or their weights changed, and no other.
    pub fn maglev_builds(&self) -> u64 {
        self.maglev_builds
    }

    /// The traffic each service's removed backends carried once `next` is
    /// installed: what it was, plus the backends `next` takes away (read
    /// now, before their slots are cleared or reused), for services `next`
    /// still has.
    pub(super) fn retired_after(
        &self,
        next: &services::Installed,
    ) -> Result<std::collections::HashMap<maps::ServiceKey, TrafficStats>, DataplaneError> {
        let mut retired = self.retired.clone();
        for (key, slot) in &self.installed.backends {
            if next.backends.get(key) != Some(slot) {
                *retired.entry(key.0).or_default() += self.traffic(Some(slot.id))?;
            }
        }
        retired.retain(|service, _| next.services.contains_key(service));
        Ok(retired)
    }

    /// Writes `plan`: removed services, NAT replies and VIPs first, then
    /// backends, NAT replies and VIPs, then each service's idle ring and its
    /// entry, which flips to that ring; last the backends no ring holds any
    /// more are cleared.
    pub(super) fn write(
        &mut self,
        settings: &DirectorSettings,
        plan: &services::Plan,
    ) -> Result<(), DataplaneError> {
        let map_err = |map: &'static str| move |source| DataplaneError::Map { map, source };
        let (old, new) = (&self.installed, &plan.installed);
        // The address filter lets the old and the new addresses through
        // while the maps change, then only the new ones.
        let (old_filter, new_filter) = (services::addr_filter(old), services::addr_filter(new));
        let both: Vec<u64> = old_filter
            .iter()
            .zip(&new_filter)
            .map(|(o, n)| o | n)
            .collect();
        let gone_services: Vec<_> = old
            .services
            .keys()
            .filter(|k| !new.services.contains_key(k))
            .copied()
            .collect();
        let gone_nat: Vec<_> = old
            .nat
            .keys()
            .filter(|k| !new.nat.contains_key(k))
            .copied()
            .collect();
        let gone_vips: Vec<_> = old
            .vips
            .keys()
            .filter(|v| !new.vips.contains_key(v))
            .copied()
            .collect();
        // Only entries that change are written (all after a failed write).
        let all = self.resync;
        let changed_nat: Vec<_> = new
            .nat
            .iter()
            .filter(|(key, target)| all || old.nat.get(key) != Some(target))
            .map(|(key, target)| (*key, *target))
            .collect();
        let changed_vips: Vec<_> = new
            .vips
            .iter()
            .filter(|(vip, flags)| all || old.vips.get(vip) != Some(flags))
            .map(|(vip, flags)| (*vip, *flags))
            .collect();
        let backend_entries: Vec<(u32, Backend)> = match all {
            true => new
                .entries
                .iter()
                .map(|(id, entry)| (*id, *entry))
                .collect(),
            false => plan.backend_entries.clone(),
        };
        let kept: std::collections::HashSet<u32> = new.backends.values().map(|s| s.id).collect();
        let gone_backends: Vec<u32> = old
            .backends
            .values()
            .map(|s| s.id)
            .filter(|id| !kept.contains(id))
            .collect();

        self.array::<maps::Settings>(maps::MAP_SETTINGS)?
            .set(0, services::settings_entry(settings, new), 0)
            .map_err(map_err(maps::MAP_SETTINGS))?;
        self.write_filter(&old_filter, &both)?;

        let mut service_map = self.hash::<maps::ServiceKey, maps::Service>(maps::MAP_SERVICES)?;
        for key in &gone_services {
            service_map
                .remove(key)
                .map_err(map_err(maps::MAP_SERVICES))?;
        }
        let mut nat_map = self.hash::<maps::NatKey, maps::NatTarget>(maps::MAP_NAT_REVERSE)?;
        for key in &gone_nat {
            nat_map
                .remove(key)
                .map_err(map_err(maps::MAP_NAT_REVERSE))?;
        }
        let mut vip_map = self.hash::<VipKey, u8>(maps::MAP_VIPS)?;
        for vip in &gone_vips {
            vip_map.remove(vip).map_err(map_err(maps::MAP_VIPS))?;
        }
        self.zero_traffic(maps::MAP_BACKEND_STATS, &plan.fresh_backends)?;
        let mut backend_map = self.array::<Backend>(maps::MAP_BACKENDS)?;
        for (id, entry) in &backend_entries {
            backend_map
                .set(*id, entry, 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
        }
        let mut nat_map = self.hash::<maps::NatKey, maps::NatTarget>(maps::MAP_NAT_REVERSE)?;
        for (key, target) in &changed_nat {
            nat_map
                .insert(key, target, 0)
                .map_err(map_err(maps::MAP_NAT_REVERSE))?;
        }
        let mut vip_map = self.hash::<VipKey, u8>(maps::MAP_VIPS)?;
        for (vip, flags) in &changed_vips {
            vip_map
                .insert(vip, flags, 0)
                .map_err(map_err(maps::MAP_VIPS))?;
        }

        let maglev_size = self.options.maglev_size;
        for (key, service) in &new.services {
            let previous = self.installed.services.get(key).cloned();
            let same_table = |p: &services::InstalledService| {
                std::sync::Arc::ptr_eq(&p.table, &service.table) || p.table == service.table
            };
            if !previous.as_ref().is_some_and(same_table) {
                // The slot being written is the one that was idle: only the
                // slots where its table differs from the new one change.
                let written = previous.as_ref().map_or(&[][..], |p| &p.idle_table[..]);
                self.rings_mut()?
                    .write(service.ring * maglev_size, &service.table, written);
            }
            if previous.is_none_or(|p| p.entry != service.entry) {
                self.hash::<maps::ServiceKey, maps::Service>(maps::MAP_SERVICES)?
                    .insert(key, service.entry, 0)
                    .map_err(map_err(maps::MAP_SERVICES))?;
            }
        }
        // Last, once no ring points to them: zeroed, so flows and
        // affinities on them pick again.
        let mut backend_map = self.array::<Backend>(maps::MAP_BACKENDS)?;
        for id in &gone_backends {
            backend_map
                .set(*id, Backend::default(), 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
        }
        self.write_filter(&both, &new_filter)
    }

    /// Marks every address in the address filter, so that the program
    /// parses every IP frame (until the next [`Dataplane::apply`]): for
    /// tests of the parser.
    pub fn parse_every_frame(&mut self) -> Result<(), DataplaneError> {
        let words = maps::ADDR_FILTER_WORDS as usize;
        self.write_filter(&vec![0; words], &vec![u64::MAX; words])
    }

    /// Writes the address-filter words of `to` that differ from `from`,
    /// what the map holds.
    pub(super) fn write_filter(&mut self, from: &[u64], to: &[u64]) -> Result<(), DataplaneError> {
        let mut filter = self.array::<u64>(maps::MAP_ADDR_FILTER)?;
        for (index, (was, word)) in (0u32..).zip(from.iter().zip(to)) {
            if was != word {
                filter
                    .set(index, word, 0)
                    .map_err(|source| DataplaneError::Map {
                        map: maps::MAP_ADDR_FILTER,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Clears the per-CPU traffic counters of ids being given to new owners.
    pub(super) fn zero_traffic(
        &mut self,
        name: &'static str,
        ids: &[u32],
    ) -> Result<(), DataplaneError> {
        let map_err = |source| DataplaneError::Map { map: name, source };
        let mut map =
            PerCpuArray::<_, TrafficStats>::try_from(self.map_mut(name)?).map_err(map_err)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Options(e.to_string()))?;
        let zeros = vec![TrafficStats::default(); cpus];
        for id in ids {
            let values = aya::maps::PerCpuValues::try_from(zeros.clone())
                .map_err(|e| DataplaneError::Options(e.to_string()))?;
            map.set(*id, values, 0).map_err(map_err)?;
        }
        Ok(())
    }
}
