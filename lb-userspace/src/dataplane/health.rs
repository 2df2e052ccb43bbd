//! `xlb_health`, the tc egress program that sends the agent's marked
//! health probes the way client traffic goes (see `lb-ebpf/src/health.rs`),
//! and its map of paths by mark. Loaded by the agent on its own (not part
//! of the pinned data plane): it serves the agent's probes only, and goes
//! with the agent.

use std::net::IpAddr;

use aya::{
    maps::HashMap,
    programs::{tc, SchedClassifier, TcAttachType},
    Ebpf,
};
use lb_common::maps::{self, HealthPath, HEALTH_MARK_BASE, HEALTH_MAX_PATHS};

use super::{object::load_object, services, DataplaneError, LoadOptions};

/// How a marked probe travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeVia {
    /// IP-in-IP from `source` to the backend.
    Tunnel { source: IpAddr },
    /// Unchanged, to the backend's MAC.
    Mac,
}

/// The probe paths the program knows, and where it is attached.
pub struct HealthPaths {
    ebpf: Ebpf,
    attached: Vec<String>,
}

impl HealthPaths {
    pub fn load() -> Result<Self, DataplaneError> {
        let mut ebpf = load_object(&LoadOptions::decap(log::LevelFilter::Off))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(maps::PROG_HEALTH)
            .ok_or(DataplaneError::Missing {
                kind: "program",
                name: maps::PROG_HEALTH,
            })?
            .try_into()
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        program
            .load()
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        Ok(HealthPaths {
            ebpf,
            attached: Vec::new(),
        })
    }

    /// Attaches at egress of `iface` (once); detached when this drops.
    pub fn attach(&mut self, iface: &str) -> Result<(), DataplaneError> {
        if self.attached.iter().any(|a| a == iface) {
            return Ok(());
        }
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(maps::PROG_HEALTH)
            .expect("loaded by HealthPaths::load")
            .try_into()
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        // TCX (Linux 6.6) needs no qdisc; older kernels need clsact.
        if let Err(first) = program.attach(iface, TcAttachType::Egress) {
            let _ = tc::qdisc_add_clsact(iface);
            program
                .attach(iface, TcAttachType::Egress)
                .map_err(|_| DataplaneError::Attach {
                    iface: iface.to_string(),
                    source: first,
                })?;
        }
        self.attached.push(iface.to_string());
        Ok(())
    }

    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Makes the probes marked `mark` go `via` to `backend` out of `ifindex`.
    pub fn set(
        &mut self,
        mark: u32,
        backend: IpAddr,
        ifindex: u32,
        via: ProbeVia,
    ) -> Result<(), DataplaneError> {
        let path = path_entry(backend, ifindex, via);
        self.map()?
            .insert(mark, path, 0)
            .map_err(|source| DataplaneError::Map {
                map: maps::MAP_HEALTH_PATHS,
                source,
            })
    }

    pub fn remove(&mut self, mark: u32) -> Result<(), DataplaneError> {
        match self.map()?.remove(&mark) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DataplaneError::Map {
                map: maps::MAP_HEALTH_PATHS,
                source,
            }),
        }
    }

    fn map(&mut self) -> Result<HashMap<&mut aya::maps::MapData, u32, HealthPath>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(maps::MAP_HEALTH_PATHS)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: maps::MAP_HEALTH_PATHS,
            })?;
        HashMap::try_from(map).map_err(|source| DataplaneError::Map {
            map: maps::MAP_HEALTH_PATHS,
            source,
        })
    }
}

/// The map entry for a path.
pub fn path_entry(backend: IpAddr, ifindex: u32, via: ProbeVia) -> HealthPath {
    let (how, source) = match via {
        ProbeVia::Tunnel { source } => (maps::HEALTH_VIA_TUNNEL, services::words(source)),
        ProbeVia::Mac => (maps::HEALTH_VIA_MAC, [0; 4]),
    };
    HealthPath {
        backend: services::words(backend),
        source,
        ifindex,
        family: services::family(backend),
        how,
        _pad: [0; 2],
    }
}

/// The mark of probe slot `slot`, if there is such a slot.
pub fn mark_of(slot: u32) -> Option<u32> {
    (slot < HEALTH_MAX_PATHS).then_some(HEALTH_MARK_BASE | slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_stay_in_their_range() {
        assert_eq!(mark_of(0), Some(0x584c_0000));
        assert_eq!(mark_of(HEALTH_MAX_PATHS - 1), Some(0x584c_0fff));
        assert_eq!(mark_of(HEALTH_MAX_PATHS), None);
        let mark = mark_of(7).unwrap();
        assert_eq!(mark & maps::HEALTH_MARK_MASK, HEALTH_MARK_BASE);
    }

    #[test]
    fn entries_say_how_and_where() {
        let backend: IpAddr = "198.18.1.10".parse().unwrap();
        let source: IpAddr = "198.18.1.2".parse().unwrap();
        let e = path_entry(backend, 3, ProbeVia::Tunnel { source });
        assert_eq!(e.how, maps::HEALTH_VIA_TUNNEL);
        assert_eq!(e.backend[0].to_ne_bytes(), [198, 18, 1, 10]);
        assert_eq!(e.source[0].to_ne_bytes(), [198, 18, 1, 2]);
        assert_eq!((e.ifindex, e.family), (3, maps::FAMILY_V4));
        let e = path_entry("fd00:1::10".parse().unwrap(), 4, ProbeVia::Mac);
        assert_eq!(e.how, maps::HEALTH_VIA_MAC);
        assert_eq!(e.source, [0; 4]);
        assert_eq!(e.family, maps::FAMILY_V6);
    }
}
