//! Service lookup and backend selection: this CPU's flow cache, then the
//! shared flow table, then source affinity, then the service's Maglev ring.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    flow::{flow_hash, ring_slot, source_hash, FlowKey},
    maps::{
        Affinity, AffinityKey, Backend, CachedFlow, Flow, Service, ServiceKey, Settings,
        BACKEND_DRAIN, FLOW_CLOSING, FLOW_OPENING, NO_BACKEND, PROTO_TCP, PROTO_UDP,
        RATE_NEW_FLOWS, SERVICE_AFFINITY,
    },
    stats::Counter,
};

use crate::{
    cache,
    consts::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{AFFINITY, BACKENDS, FLOWS_SHARED, RINGS, RING_SIZE, SERVICES, SETTINGS},
    rate, stats,
};

const NS_PER_S: u64 = 1_000_000_000;

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
    /// A new connection (a TCP SYN) or flow (UDP), counted in `new_flows`.
    pub new_flow: bool,
}

/// What a client's segment does to its flow's marks ([`FLOW_OPENING`],
/// [`FLOW_CLOSING`]), as IPVS's TCP states follow the client's side.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TcpSignal {
    /// Leaves the marks: ICMP errors, and a SYN with ACK.
    None,
    /// No SYN, FIN or RST (an ACK, data; every UDP datagram): the
    /// handshake is done.
    Segment,
    /// SYN without ACK: a new connection, the port reused, or a
    /// retransmission of a handshake.
    Opening,
    /// FIN or RST: the client is closing.
    Closing,
}

impl TcpSignal {
    /// From a TCP flags byte (0 for other protocols).
    #[inline(always)]
    pub fn of(tcp_flags: u8) -> TcpSignal {
        if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            TcpSignal::Closing
        } else if tcp_flags & TCP_SYN == 0 {
            TcpSignal::Segment
        } else if tcp_flags & TCP_ACK == 0 {
            TcpSignal::Opening
        } else {
            TcpSignal::None
        }
    }

    /// FIN or RST (a SYN never reaches a hit): rare, and able to change the
    /// shared entry's marks where this CPU's stay (another CPU may have
    /// seen other segments).
    #[inline(always)]
    fn is_control(self) -> bool {
        self == TcpSignal::Closing
    }

    /// A flow's flags after this signal.
    #[inline(always)]
    fn apply(self, flags: u32) -> u32 {
        match self {
            // A SYN never marks a flow: it finds its handshake's or makes one.
            TcpSignal::None | TcpSignal::Opening => flags,
            TcpSignal::Segment => flags & !FLOW_OPENING,
            // During the handshake the client retries its SYN after a RST
            // (its answer to a server's ACK from TIME_WAIT): still opening.
            TcpSignal::Closing if flags & FLOW_OPENING != 0 => flags,
            TcpSignal::Closing => flags | FLOW_CLOSING,
        }
    }

    /// A new flow's flags.
    #[inline(always)]
    fn initial(self) -> u32 {
        match self {
            TcpSignal::Opening => FLOW_OPENING,
            TcpSignal::Closing => FLOW_CLOSING,
            TcpSignal::None | TcpSignal::Segment => 0,
        }
    }
}

/// Backend `id` if it is still the one of `generation` (ids are reused; a
/// removed backend's slot is zeroed).
#[inline(always)]
fn backend(id: u32, generation: u32) -> Option<&'static Backend> {
    let backend = BACKENDS.get(id)?;
    (backend.family != 0 && backend.generation == generation).then_some(backend)
}

/// The backend of a shared flow-table entry, if the entry still holds:
/// same service, backend unchanged, and (UDP) not idle past the timeout.
#[inline(always)]
fn live(flow: &Flow, service: &Service, key: &FlowKey, now: u64) -> Option<&'static Backend> {
    if expired(key, flow.last_seen_ns, now) || flow.service != service.id {
        return None;
    }
    backend(flow.backend, flow.generation)
}

/// A UDP flow idle past the timeout: the next datagram is a new flow.
#[inline(always)]
fn expired(key: &FlowKey, last_seen_ns: u64, now: u64) -> bool {
    key.proto == PROTO_UDP && now.saturating_sub(last_seen_ns) > udp_timeout_ns()
}

/// Applies `signal` to a shared entry's marks; a change also sets the
/// last-seen time, so that the agent knows since when a flow is opening
/// or closing.
#[inline(always)]
fn mark(flow: &mut Flow, signal: TcpSignal, now: u64) {
    let flags = signal.apply(flow.flags);
    if flags != flow.flags {
        flow.flags = flags;
        flow.last_seen_ns = now;
    }
}

/// How long a SYN that finds a half-open flow counts as a retransmission
/// of its handshake (Linux retries a SYN for about a minute); any other
/// SYN that finds a flow reuses the port for a new connection.
const SYN_RETRY_NS: u64 = 60 * NS_PER_S;

/// A cached UDP flow's last-seen time is refreshed, and the clock read,
/// once this many jiffies have passed (at most a second at any HZ): its
/// timeout is counted from it.
const REFRESH_JIFFIES: u32 = 100;
/// Other flows' (TCP's), whose time only tells the agent how long they
/// have been idle (an established connection stays active for 900 s):
/// 4 s to 40 s, by HZ. A long-lived connection's packets then touch the
/// shared table that seldom.
const REFRESH_JIFFIES_TCP: u32 = 4000;

/// The fast path: a segment other than a SYN of a flow in this CPU's
/// cache, whose backend is still the one it was made with and that no
/// later SYN may have replaced on another CPU. Reads the
/// clock and touches the shared table only on a FIN or RST, when the
/// flow's marks change, or now and then (UDP: about once a second) to
/// refresh (and so lazily write) its shared entry. `None`: a miss, for [`choose`]; the caller
/// counts a hit.
#[inline(always)]
pub fn cached(key: &FlowKey, index: u32, signal: TcpSignal) -> Option<Chosen> {
    let way = cache::find(key, index)?;
    if cache::stale(way, index) {
        return None;
    }
    let backend = backend(way.backend, way.generation)?;
    let jiffies = cache::jiffies();
    let flags = signal.apply(way.flags);
    let changed = flags != way.flags;
    let every = if key.proto == PROTO_UDP {
        REFRESH_JIFFIES
    } else {
        REFRESH_JIFFIES_TCP
    };
    let refresh = jiffies.wrapping_sub(way.seen_jiffies) >= every;
    if changed || refresh || signal.is_control() {
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if expired(key, way.last_seen_ns, now) {
            return None;
        }
        if changed || refresh {
            way.flags = flags;
            way.seen_jiffies = jiffies;
            way.last_seen_ns = now;
        }
        share(key, way, signal, now, refresh);
    }
    Some(Chosen {
        id: way.backend,
        backend,
        new_flow: false,
    })
}

/// Writes a cached flow's state to the shared table, where the agent
/// counts it and a packet of the flow on another CPU finds its backend:
/// `signal`'s marks, and with `refresh` the last-seen time `now`. A flow
/// the table lacks (new, evicted, or pruned by the agent) goes in.
#[inline(always)]
fn share(key: &FlowKey, way: &CachedFlow, signal: TcpSignal, now: u64, refresh: bool) {
    if let Some(shared) = FLOWS_SHARED.get_ptr_mut(key) {
        let shared = unsafe { &mut *shared };
        if shared.backend == way.backend && shared.generation == way.generation {
            mark(shared, signal, now);
            if refresh {
                shared.last_seen_ns = now;
            }
            return;
        }
    }
    let Some(service) = BACKENDS.get(way.backend).map(|b| b.service) else {
        return;
    };
    let flow = Flow {
        backend: way.backend,
        generation: way.generation,
        service,
        flags: way.flags,
        last_seen_ns: way.last_seen_ns,
    };
    // A full LRU evicts its oldest entry; insert fails only on a bad map.
    let _ = FLOWS_SHARED.insert(key, &flow, 0);
}

/// Picks the backend for `key` of `service` when the fast path missed (or
/// was not tried: a SYN, an ICMP error, `probed` false). With `record`, a
/// new choice is remembered in this CPU's cache (and the affinity table);
/// ICMP errors look up without recording. `signal` sets or clears the
/// flow's marks.
///
/// A SYN is a new connection, scheduled by the current ring, unless it
/// retransmits the handshake of the flow it finds: so a drained or
/// replaced backend gets no connection through a reused client port.
#[inline(always)]
pub fn choose(
    service: &Service,
    key: &FlowKey,
    index: u32,
    signal: TcpSignal,
    record: bool,
    probed: bool,
) -> Option<Chosen> {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let jiffies = cache::jiffies();
    let syn = signal == TcpSignal::Opening;
    let mut reused = false;
    if syn {
        if record {
            cache::stamp_syn(index, jiffies);
        }
        // The shared entry decides (another CPU may have seen the
        // handshake complete), else this CPU's.
        if let Some(flow) = FLOWS_SHARED.get_ptr_mut(key) {
            let flow = unsafe { &*flow };
            let current = || live(flow, service, key, now);
            if let Some(backend) = retried(flow.flags, flow.last_seen_ns, now, current) {
                if record {
                    adopt(key, index, flow, jiffies);
                }
                return Some(found(flow.backend, backend));
            }
            reused = true;
        } else if let Some(way) = cache::find(key, index) {
            let current = || backend(way.backend, way.generation);
            if let Some(backend) = retried(way.flags, way.last_seen_ns, now, current) {
                // Still trusted after this SYN's own stamp.
                way.seen_jiffies = jiffies;
                return Some(found(way.backend, backend));
            }
            reused = true;
        }
    } else {
        if !probed {
            if let Some(chosen) = cached(key, index, signal) {
                stats::inc(Counter::FlowHit);
                return Some(chosen);
            }
        }
        // Not in this CPU's cache: the flow may have started on another CPU.
        if let Some(flow) = FLOWS_SHARED.get_ptr_mut(key) {
            let flow = unsafe { &mut *flow };
            if let Some(backend) = live(flow, service, key, now) {
                if record {
                    mark(flow, signal, now);
                    adopt(key, index, flow, jiffies);
                }
                return Some(found(flow.backend, backend));
            }
        }
    }
    stats::inc(Counter::FlowMiss);

    // With affinity, a fresh entry names the backend; else the ring picks
    // (by the client's masked address with affinity, by the flow without).
    let settings = SETTINGS.get(0)?;
    let affinity = (service.flags & SERVICE_AFFINITY != 0).then(|| affinity_key(service, key));
    let remembered = affinity
        .as_ref()
        .and_then(|akey| remembered(service, akey, now, record));
    let seed = settings.hash_seed;
    let id = match (remembered, &affinity) {
        (Some(id), _) => id,
        (None, Some(akey)) => from_ring(service, source_hash(&akey.src, key.family, seed))?,
        (None, None) => from_ring(service, flow_hash(key, seed))?,
    };
    let backend = BACKENDS.get(id).filter(|b| b.family != 0)?;
    let keep = record && keeps_state(signal, key, settings, now);
    if syn && reused {
        // A new connection on a known flow's port: the shared entry may not
        // send its segments to the old backend (other CPUs' entries are
        // stale by the SYN's stamp).
        stats::inc(Counter::ResetFlow);
        let _ = FLOWS_SHARED.remove(key);
    }
    if keep {
        let entry = cache::Entry {
            backend: id,
            generation: backend.generation,
            flags: signal.initial(),
            seen_jiffies: jiffies,
            last_seen_ns: now,
        };
        cache::insert(key, index, &entry);
        if !syn && key.proto == PROTO_TCP {
            // A connection picked up mid-stream (evicted, or another
            // director's before a failover) is shared at once: rare, and
            // the one a ring change would otherwise move.
            let flow = Flow {
                backend: id,
                generation: backend.generation,
                service: service.id,
                flags: entry.flags,
                last_seen_ns: now,
            };
            let _ = FLOWS_SHARED.insert(key, &flow, 0);
        }
        if let (None, Some(akey)) = (remembered, &affinity) {
            let entry = Affinity {
                backend: id,
                generation: backend.generation,
                last_seen_ns: now,
            };
            let _ = AFFINITY.insert(akey, &entry, 0);
        }
    } else {
        // Whatever this CPU cached for the flow no longer holds.
        if let Some(way) = cache::find(key, index) {
            cache::clear(way);
        }
    }
    // A TCP segment other than a SYN belongs to a connection made
    // before (evicted, or another director's): no new connection.
    Some(Chosen {
        id,
        backend,
        new_flow: syn || key.proto != PROTO_TCP,
    })
}

/// Caches a flow found in the shared table on this CPU.
#[inline(always)]
fn adopt(key: &FlowKey, index: u32, flow: &Flow, jiffies: u32) {
    let entry = cache::Entry {
        backend: flow.backend,
        generation: flow.generation,
        flags: flow.flags,
        seen_jiffies: jiffies,
        last_seen_ns: flow.last_seen_ns,
    };
    cache::insert(key, index, &entry);
}

/// The backend of the flow a SYN found (with `flags`, last seen at
/// `last_seen_ns`, its backend from `current`) if the SYN retransmits that
/// flow's handshake: the flow is opening, recently, and its backend is
/// still there and takes new flows.
#[inline(always)]
fn retried(
    flags: u32,
    last_seen_ns: u64,
    now: u64,
    current: impl FnOnce() -> Option<&'static Backend>,
) -> Option<&'static Backend> {
    if flags & FLOW_OPENING == 0 || now.saturating_sub(last_seen_ns) > SYN_RETRY_NS {
        return None;
    }
    current().filter(|b| b.flags & BACKEND_DRAIN == 0)
}

/// A flow found in a table: a hit, counted.
#[inline(always)]
fn found(id: u32, backend: &'static Backend) -> Chosen {
    stats::inc(Counter::FlowHit);
    Chosen {
        id,
        backend,
        new_flow: false,
    }
}

/// Whether a new flow is recorded: never for a RST or FIN that found no
/// flow (its connection is gone or never was), and not while this CPU is
/// over its new-flow rate (the flood guard), when the ring alone forwards.
#[inline(always)]
fn keeps_state(signal: TcpSignal, key: &FlowKey, settings: &Settings, now: u64) -> bool {
    if key.proto == PROTO_TCP && signal == TcpSignal::Closing {
        stats::inc(Counter::StatelessMiss);
        return false;
    }
    if rate::over(RATE_NEW_FLOWS, settings.new_flows_per_cpu, now) {
        stats::inc(Counter::FloodStateless);
        return false;
    }
    true
}

#[inline(always)]
fn udp_timeout_ns() -> u64 {
    // The agent always sets it (1 s at least) before any service exists.
    SETTINGS.get(0).map_or(0, |s| s.udp_timeout_s) as u64 * NS_PER_S
}

#[inline(always)]
fn from_ring(service: &Service, hash: u32) -> Option<u32> {
    let size = RING_SIZE.load();
    let slot = service.ring.checked_mul(size)?.checked_add(ring_slot(hash, size))?;
    let pair = RINGS.get(slot / 2)?;
    match pair[(slot % 2) as usize] {
        NO_BACKEND => None,
        id => Some(id),
    }
}

/// The affinity table's key for the client of `key`: its address under the
/// service's mask (IPVS `-M`).
#[inline(always)]
fn affinity_key(service: &Service, key: &FlowKey) -> AffinityKey {
    AffinityKey::new(
        service.id,
        key.family,
        masked(&key.src, &service.affinity_mask),
    )
}

/// The client's remembered backend while the entry is fresh and the
/// backend is still there (refreshing it with `record`).
#[inline(always)]
fn remembered(service: &Service, akey: &AffinityKey, now: u64, record: bool) -> Option<u32> {
    let entry = unsafe { &mut *AFFINITY.get_ptr_mut(akey)? };
    let timeout = service.affinity_timeout_s as u64 * NS_PER_S;
    if now.saturating_sub(entry.last_seen_ns) > timeout {
        return None;
    }
    // A drained backend keeps the clients stuck to it (HAProxy's drain);
    // maintenance removes the backend, and so the entry's generation.
    backend(entry.backend, entry.generation)?;
    if record {
        entry.last_seen_ns = now;
    }
    Some(entry.backend)
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
