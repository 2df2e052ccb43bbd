//! Service lookup and backend selection: the flow table first, then
//! source affinity, then the service's Maglev ring.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    flow::{flow_hash, source_hash, FlowKey},
    maps::{
        Affinity, AffinityKey, Backend, Flow, Service, ServiceKey, BACKEND_DRAIN, NO_BACKEND,
        PROTO_UDP, SERVICE_AFFINITY,
    },
    stats::Counter,
};

use crate::{
    maps::{AFFINITY, BACKENDS, FLOWS, RINGS, RING_SIZE, SERVICES, SETTINGS},
    stats,
};

const NS_PER_S: u64 = 1_000_000_000;
/// Flow entries refresh their last-seen time at most this often.
const REFRESH_NS: u64 = NS_PER_S;

/// The service for exactly `dst:port/proto` (port 0: the any-port service).
#[inline(always)]
pub fn service(dst: &[u32; 4], port: u16, proto: u8, family: u8) -> Option<&'static Service> {
    let key = ServiceKey {
        addr: *dst,
        port,
        proto,
        family,
    };
    unsafe { SERVICES.get(&key) }
}

/// A backend id and its entry, read in place in the map.
#[derive(Clone, Copy)]
pub struct Chosen {
    pub id: u32,
    pub backend: &'static Backend,
    pub new_flow: bool,
}

/// Backend `id` if it is still the one of `generation` (ids are reused; a
/// removed backend's slot is zeroed).
#[inline(always)]
fn backend(id: u32, generation: u32) -> Option<&'static Backend> {
    let backend = BACKENDS.get(id)?;
    (backend.family != 0 && backend.generation == generation).then_some(backend)
}

/// Picks the backend for `key` of `service`. With `record`, a new choice
/// is remembered in the flow table (and the affinity table); ICMP errors
/// look up without recording.
#[inline(always)]
pub fn choose(service: &Service, key: &FlowKey, record: bool) -> Option<Chosen> {
    // Coarse (a tick or so) is plenty for 1 s refreshes and 30 s timeouts.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(flow) = FLOWS.get_ptr_mut(key) {
        let flow = unsafe { &mut *flow };
        let udp_expired = key.proto == PROTO_UDP && now - flow.last_seen_ns > udp_timeout_ns();
        if !udp_expired && flow.service == service.id {
            if let Some(backend) = backend(flow.backend, flow.generation) {
                if now - flow.last_seen_ns > REFRESH_NS {
                    flow.last_seen_ns = now;
                }
                stats::inc(Counter::FlowHit);
                return Some(Chosen {
                    id: flow.backend,
                    backend,
                    new_flow: false,
                });
            }
        }
    }
    stats::inc(Counter::FlowMiss);

    let id = if service.flags & SERVICE_AFFINITY != 0 {
        by_affinity(service, key, now, record)?
    } else {
        from_ring(service, flow_hash(key))?
    };
    let backend = BACKENDS.get(id).filter(|b| b.family != 0)?;
    if record {
        let flow = Flow {
            backend: id,
            generation: backend.generation,
            service: service.id,
            _pad: 0,
            last_seen_ns: now,
        };
        // A full LRU evicts its oldest entry; insert fails only on a bad map.
        let _ = FLOWS.insert(key, &flow, 0);
    }
    Some(Chosen {
        id,
        backend,
        new_flow: true,
    })
}

#[inline(always)]
fn udp_timeout_ns() -> u64 {
    match SETTINGS.get(0) {
        Some(s) if s.udp_timeout_s != 0 => s.udp_timeout_s as u64 * NS_PER_S,
        _ => lb_common::maps::DEFAULT_UDP_TIMEOUT_S as u64 * NS_PER_S,
    }
}

#[inline(always)]
fn from_ring(service: &Service, hash: u32) -> Option<u32> {
    let size = RING_SIZE.load();
    let slot = service.ring.checked_mul(size)? + hash.checked_rem(size)?;
    match RINGS.get(slot) {
        Some(&id) if id != NO_BACKEND => Some(id),
        _ => None,
    }
}

/// Source affinity: the client's last backend while it is fresh and still
/// takes new flows, else the ring's choice for the client's masked address.
#[inline(always)]
fn by_affinity(service: &Service, key: &FlowKey, now: u64, record: bool) -> Option<u32> {
    let src = masked(&key.src, &service.affinity_mask);
    let akey = AffinityKey {
        service: service.id,
        family: key.family,
        _pad: [0; 3],
        src,
    };
    let timeout = service.affinity_timeout_s as u64 * NS_PER_S;
    if let Some(entry) = AFFINITY.get_ptr_mut(&akey) {
        let entry = unsafe { &mut *entry };
        if now - entry.last_seen_ns <= timeout {
            if let Some(b) = backend(entry.backend, entry.generation) {
                if b.flags & BACKEND_DRAIN == 0 {
                    if record {
                        entry.last_seen_ns = now;
                    }
                    return Some(entry.backend);
                }
            }
        }
    }
    let id = from_ring(service, source_hash(&src, key.family))?;
    if record {
        let generation = BACKENDS.get(id).map_or(0, |b| b.generation);
        let entry = Affinity {
            backend: id,
            generation,
            last_seen_ns: now,
        };
        let _ = AFFINITY.insert(&akey, &entry, 0);
    }
    Some(id)
}

#[inline(always)]
fn masked(addr: &[u32; 4], mask: &[u32; 4]) -> [u32; 4] {
    [
        addr[0] & mask[0],
        addr[1] & mask[1],
        addr[2] & mask[2],
        addr[3] & mask[3],
    ]
}
