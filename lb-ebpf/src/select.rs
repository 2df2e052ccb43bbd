//! Service lookup and backend selection: this CPU's flow table, then the
//! shared one, then source affinity, then the service's Maglev ring.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    flow::{flow_hash, source_hash, FlowKey},
    maps::{
        Affinity, AffinityKey, Backend, Flow, Service, ServiceKey, Settings, BACKEND_DRAIN,
        FLOW_CLOSING, FLOW_OPENING, NO_BACKEND, PROTO_TCP, PROTO_UDP, RATE_NEW_FLOWS,
        SERVICE_AFFINITY,
    },
    stats::Counter,
};

use crate::{
    consts::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::{AFFINITY, BACKENDS, FLOWS, FLOWS_SHARED, RINGS, RING_SIZE, SERVICES, SETTINGS},
    rate, stats,
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

/// The backend of a flow-table entry, if the entry still holds: same
/// service, backend unchanged, and (UDP) not idle past the timeout.
#[inline(always)]
fn live(flow: &Flow, service: &Service, key: &FlowKey, now: u64) -> Option<&'static Backend> {
    let udp_expired =
        key.proto == PROTO_UDP && now.saturating_sub(flow.last_seen_ns) > udp_timeout_ns();
    if udp_expired || flow.service != service.id {
        return None;
    }
    backend(flow.backend, flow.generation)
}

/// Applies `signal` to a flow entry's marks; a change also sets the
/// last-seen time, so that the agent knows since when a flow is opening
/// or closing. Returns whether the marks changed.
#[inline(always)]
fn mark(flow: &mut Flow, signal: TcpSignal, now: u64) -> bool {
    let flags = signal.apply(flow.flags);
    let changed = flags != flow.flags;
    if changed {
        flow.flags = flags;
        flow.last_seen_ns = now;
    }
    changed
}

/// How long a SYN that finds a half-open flow counts as a retransmission
/// of its handshake (Linux retries a SYN for about a minute); any other
/// SYN that finds a flow reuses the port for a new connection.
const SYN_RETRY_NS: u64 = 60 * NS_PER_S;

/// Picks the backend for `key` of `service`. With `record`, a new choice
/// is remembered in the flow table (and the affinity table); ICMP errors
/// look up without recording. `signal` sets or clears the flow's marks,
/// writing the flow tables only where that changes them.
///
/// A SYN is a new connection, scheduled by the current ring, unless it
/// retransmits the handshake of the flow it finds: so a drained or
/// replaced backend gets no connection through a reused client port.
#[inline(always)]
pub fn choose(service: &Service, key: &FlowKey, signal: TcpSignal, record: bool) -> Option<Chosen> {
    // Coarse (a tick or so) is plenty for 1 s refreshes and 30 s timeouts.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let syn = signal == TcpSignal::Opening;
    let mut reused = false;
    if syn {
        // The shared entry decides: this CPU's copy may be older.
        if let Some(flow) = FLOWS_SHARED.get_ptr_mut(key) {
            let flow = unsafe { &mut *flow };
            if let Some(backend) = retransmitted(flow, service, key, now) {
                if record {
                    let _ = FLOWS.insert(key, &*flow, 0);
                }
                stats::inc(Counter::FlowHit);
                return Some(Chosen {
                    id: flow.backend,
                    backend,
                    new_flow: false,
                });
            }
            reused = true;
        }
    } else if let Some(chosen) = hit(service, key, signal, record, now) {
        return Some(chosen);
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
    if syn {
        // A new connection: every CPU's copy of an old flow on this port
        // goes, so that all of them find the new entry, or (without one)
        // the ring, as this SYN did.
        let _ = FLOWS.remove(key);
        if reused {
            stats::inc(Counter::ResetFlow);
            if !keep {
                let _ = FLOWS_SHARED.remove(key);
            }
        }
    }
    if keep {
        let flow = Flow {
            backend: id,
            generation: backend.generation,
            service: service.id,
            flags: signal.initial(),
            last_seen_ns: now,
        };
        // A full LRU evicts its oldest entry; insert fails only on a bad map.
        let _ = FLOWS.insert(key, &flow, 0);
        let _ = FLOWS_SHARED.insert(key, &flow, 0);
        if let (None, Some(akey)) = (remembered, &affinity) {
            let entry = Affinity {
                backend: id,
                generation: backend.generation,
                last_seen_ns: now,
            };
            let _ = AFFINITY.insert(akey, &entry, 0);
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

/// A flow-table hit for a segment other than a SYN: this CPU's table,
/// then the shared one.
#[inline(always)]
fn hit(
    service: &Service,
    key: &FlowKey,
    signal: TcpSignal,
    record: bool,
    now: u64,
) -> Option<Chosen> {
    if let Some(flow) = FLOWS.get_ptr_mut(key) {
        let flow = unsafe { &mut *flow };
        if let Some(backend) = live(flow, service, key, now) {
            // An established flow's segment costs a compare here: only a
            // change of this CPU's marks, or a FIN or RST, touches the
            // shared entry, where the agent counts.
            if mark(flow, signal, now) || signal.is_control() {
                match FLOWS_SHARED.get_ptr_mut(key) {
                    Some(shared) => {
                        mark(unsafe { &mut *shared }, signal, now);
                    }
                    // Evicted, or pruned by the agent: back in, to be counted.
                    None => {
                        let _ = FLOWS_SHARED.insert(key, &*flow, 0);
                    }
                }
            }
            if now.saturating_sub(flow.last_seen_ns) > REFRESH_NS {
                flow.last_seen_ns = now;
                // Keep the shared entry fresh too, for UDP timeouts, and
                // its marks in step with this CPU's segments.
                if let Some(shared) = FLOWS_SHARED.get_ptr_mut(key) {
                    let shared = unsafe { &mut *shared };
                    mark(shared, signal, now);
                    shared.last_seen_ns = now;
                }
            }
            stats::inc(Counter::FlowHit);
            return Some(Chosen {
                id: flow.backend,
                backend,
                new_flow: false,
            });
        }
    }
    // Not in this CPU's table: the flow may have started on another CPU.
    let flow = unsafe { &mut *FLOWS_SHARED.get_ptr_mut(key)? };
    let backend = live(flow, service, key, now)?;
    mark(flow, signal, now);
    if record {
        let _ = FLOWS.insert(key, &*flow, 0);
    }
    stats::inc(Counter::FlowHit);
    Some(Chosen {
        id: flow.backend,
        backend,
        new_flow: false,
    })
}

/// The backend of a half-open flow that a SYN retransmits the handshake
/// of, while that backend still takes new flows.
#[inline(always)]
fn retransmitted(
    flow: &Flow,
    service: &Service,
    key: &FlowKey,
    now: u64,
) -> Option<&'static Backend> {
    if flow.flags & FLOW_OPENING == 0 || now.saturating_sub(flow.last_seen_ns) > SYN_RETRY_NS {
        return None;
    }
    live(flow, service, key, now).filter(|b| b.flags & BACKEND_DRAIN == 0)
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
    let slot = service.ring.checked_mul(size)? + hash.checked_rem(size)?;
    match RINGS.get(slot) {
        Some(&id) if id != NO_BACKEND => Some(id),
        _ => None,
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
