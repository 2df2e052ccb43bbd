//! The live connection table, as `ipvsadm -L -c` shows it, and its
//! active and inactive flows per backend, as `ipvsadm -L -n` counts them.

use std::{
    collections::HashMap,
    iter::Sum,
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError};
use lb_common::{
    flow::FlowKey,
    maps::{Backend, Flow, ServiceKey, FLOW_CLOSING, FLOW_OPENING, PROTO_TCP, PROTO_UDP},
};

use super::{
    services::{addr_from_words, Slot},
    Protocol,
};

/// A flow the data plane has a backend for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub service: ServiceKey,
    pub backend: SocketAddr,
    /// Since the last packet (the program refreshes it about once a second
    /// for UDP, every 4 s to 40 s for TCP).
    pub idle: Duration,
}

/// The flow entry for `key` and `flow`, if its backend is still the one
/// the flow was made with; `backend` finds (service, address) by id and
/// generation.
pub fn entry(
    key: &FlowKey,
    flow: &Flow,
    now_ns: u64,
    backend: impl Fn(Slot) -> Option<(ServiceKey, SocketAddr)>,
) -> Option<FlowEntry> {
    let (service, backend) = backend(Slot::of(flow))?;
    Some(FlowEntry {
        client: SocketAddr::new(addr_from_words(key.src, key.family), key.sport),
        vip: SocketAddr::new(addr_from_words(key.dst, key.family), key.dport),
        protocol: if key.proto == PROTO_TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
        service,
        backend,
        idle: idle(flow, now_ns),
    })
}

/// How long `flow` has seen no packet at `now_ns` (the program's clock).
fn idle(flow: &Flow, now_ns: u64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(flow.last_seen_ns))
}

/// CLOCK_MONOTONIC_COARSE, the clock `bpf_ktime_get_coarse_ns` reads: the
/// program stamps entries with it.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// IPVS's timeout for an established TCP connection.
const TCP_ACTIVE_LIMIT: Duration = Duration::from_secs(900);
/// IPVS's SYN_RECV timeout.
const OPENING_LIMIT: Duration = Duration::from_secs(60);
/// IPVS's FIN_WAIT timeout.
const CLOSING_LIMIT: Duration = Duration::from_secs(120);

/// Where a flow-table entry counts, like IPVS's ActiveConn and InActConn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    Active,
    Inactive,
    /// Established TCP idle for 900 s or more: counted in neither, and
    /// kept, as the data plane still sends it to its backend.
    Idle,
    /// UDP idle for `udp_timeout` (the data plane ignores it), or opening
    /// or closing past its limit: counted in neither, and pruned.
    Expired,
}

/// Inactive: closing (the client sent FIN or RST) and idle less than 120 s
/// (IPVS's FIN_WAIT timeout), or opening (half-open, IPVS's SYN_RECV) and
/// idle less than 60 s. Active: neither, and idle less than its limit
/// (UDP: `udp_timeout`; TCP: 900 s, IPVS's established timeout).
pub fn classify(flags: u32, proto: u8, idle: Duration, udp_timeout: Duration) -> FlowState {
    use FlowState::*;
    let (limit, state, after) = if flags & FLOW_CLOSING != 0 {
        (CLOSING_LIMIT, Inactive, Expired)
    } else if flags & FLOW_OPENING != 0 {
        (OPENING_LIMIT, Inactive, Expired)
    } else if proto == PROTO_UDP {
        (udp_timeout, Active, Expired)
    } else {
        (TCP_ACTIVE_LIMIT, Active, Idle)
    };
    if idle < limit {
        state
    } else {
        after
    }
}

/// Whether a walk deletes an entry: its backend slot is gone (the data
/// plane ignores the entry), or it expired. Established TCP flows stay
/// however idle: the data plane keeps them on their backend.
pub fn prunable(state: FlowState, slot_live: bool) -> bool {
    !slot_live || state == FlowState::Expired
}

/// A backend's active and inactive flows: `ipvsadm -L -n`'s ActiveConn and
/// InActConn (half-open or closing).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct FlowCounts {
    pub active: u64,
    pub inactive: u64,
}

impl Sum for FlowCounts {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(FlowCounts::default(), |total, c| FlowCounts {
            active: total.active + c.active,
            inactive: total.inactive + c.inactive,
        })
    }
}

/// Flow counts by the backend slot (id and generation) the flows were made for.
pub type FlowCountsBySlot = HashMap<Slot, FlowCounts>;

/// What a walk of the flow table found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub counts: FlowCountsBySlot,
    /// Entries read.
    pub entries: u64,
    /// Entries deleted.
    pub pruned: u64,
}

impl Walk {
    /// Counts an entry read at `now_ns` (the program's clock); returns
    /// whether to prune it.
    fn add(
        &mut self,
        key: &FlowKey,
        flow: &Flow,
        now_ns: u64,
        udp_timeout: Duration,
        slot_live: bool,
    ) -> bool {
        self.entries += 1;
        let state = classify(flow.flags, key.proto, idle(flow, now_ns), udp_timeout);
        if slot_live {
            let slot = Slot::of(flow);
            match state {
                FlowState::Active => self.counts.entry(slot).or_default().active += 1,
                FlowState::Inactive => self.counts.entry(slot).or_default().inactive += 1,
                FlowState::Idle | FlowState::Expired => {}
            }
        }
        prunable(state, slot_live)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("stopped")]
    Stopped,
    #[error("walking the flow table: {0}")]
    Map(#[from] MapError),
}

/// Entries read between two looks at the stop flag.
const STOP_CHECK_EVERY: u64 = 1024;

/// The shared flow table through file descriptors of its own, so that a
/// thread can walk it without the [`super::Dataplane`].
pub struct FlowTable {
    map: BpfHashMap<MapData, FlowKey, Flow>,
    /// A second handle on the same table, to delete behind the first's walk.
    pruner: BpfHashMap<MapData, FlowKey, Flow>,
    backends: Array<MapData, Backend>,
    capacity: usize,
}

impl FlowTable {
    pub(super) fn new(
        map: BpfHashMap<MapData, FlowKey, Flow>,
        pruner: BpfHashMap<MapData, FlowKey, Flow>,
        backends: Array<MapData, Backend>,
        capacity: u32,
    ) -> Self {
        FlowTable {
            map,
            pruner,
            backends,
            capacity: capacity as usize,
        }
    }

    /// Walks the table, counts its flows by backend slot and deletes the
    /// [`prunable`] entries. Entries evicted during the walk are skipped.
    /// Returns early, with [`WalkError::Stopped`], once `stop` is set.
    pub fn walk(&mut self, udp_timeout: Duration, stop: &AtomicBool) -> Result<Walk, WalkError> {
        // Taken first: entries stamped during the walk look no older than 0.
        let now = monotonic_ns();
        let mut walk = Walk::default();
        let mut slots = HashMap::new();
        let mut doomed = None;
        // At most the capacity: a key evicted under the walk makes the
        // kernel start over from the first, so a flow may be counted twice.
        for item in self.map.iter().take(self.capacity) {
            let (key, flow) = item?;
            // The kernel finds the next key from the one before: an entry
            // is deleted once the walk is past it.
            if let Some(doomed) = doomed.take() {
                walk.pruned += delete(&mut self.pruner, &doomed)?;
            }
            if walk.entries % STOP_CHECK_EVERY == 0 && stop.load(Ordering::Relaxed) {
                return Err(WalkError::Stopped);
            }
            let slot = Slot::of(&flow);
            let live = *slots
                .entry(slot)
                .or_insert_with(|| slot_live(&self.backends, slot));
            if walk.add(&key, &flow, now, udp_timeout, live) {
                doomed = Some(key);
            }
        }
        if let Some(doomed) = doomed {
            walk.pruned += delete(&mut self.pruner, &doomed)?;
        }
        Ok(walk)
    }

    /// The entry for `key`, if the table holds one.
    pub fn get(&self, key: &FlowKey) -> Option<Flow> {
        self.map.get(key, 0).ok()
    }
}

/// Whether `slot` is its id's current backend, as the program checks it.
/// Once not, never again: the entry naming it was read before this look,
/// so the slot was written before, and generations are not reused. A
/// slot that cannot be read is kept.
fn slot_live(backends: &Array<MapData, Backend>, slot: Slot) -> bool {
    backends
        .get(&slot.id, 0)
        .map_or(true, |b| b.family != 0 && b.generation == slot.generation)
}

/// Deletes `key` (1), or finds it gone already (0).
///
/// The program may have refreshed, marked or replaced the entry since the
/// walk read it, and that update is lost with it. That is acceptable for
/// what is pruned (dead, expired, or done opening or closing), in the
/// microseconds between read and delete: the flow's CPU keeps its own
/// entry, so its packets there keep their backend, and a TCP flow's next
/// SYN, FIN, RST or change of marks puts the shared entry back (until then
/// it goes uncounted); only a flow that moves to another CPU meanwhile is
/// balanced afresh.
fn delete(map: &mut BpfHashMap<MapData, FlowKey, Flow>, key: &FlowKey) -> Result<u64, MapError> {
    match map.remove(key) {
        Ok(()) => Ok(1),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const UDP_TIMEOUT: Duration = Duration::from_secs(30);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn established_flows_are_active_until_their_protocols_limit() {
        let classify_open = |proto, idle| classify(0, proto, idle, UDP_TIMEOUT);
        assert_eq!(classify_open(PROTO_TCP, secs(0)), FlowState::Active);
        assert_eq!(classify_open(PROTO_TCP, secs(899)), FlowState::Active);
        assert_eq!(classify_open(PROTO_TCP, secs(900)), FlowState::Idle);
        assert_eq!(classify_open(PROTO_TCP, secs(100_000)), FlowState::Idle);
        assert_eq!(classify_open(PROTO_UDP, secs(29)), FlowState::Active);
        assert_eq!(classify_open(PROTO_UDP, secs(30)), FlowState::Expired);
        assert_eq!(
            classify(0, PROTO_UDP, secs(100), secs(120)),
            FlowState::Active,
            "the agent's udp_timeout"
        );
    }

    #[test]
    fn closing_flows_are_inactive_for_120s() {
        let classify_closing = |idle| classify(FLOW_CLOSING, PROTO_TCP, idle, UDP_TIMEOUT);
        assert_eq!(classify_closing(secs(0)), FlowState::Inactive);
        assert_eq!(classify_closing(secs(119)), FlowState::Inactive);
        assert_eq!(classify_closing(secs(120)), FlowState::Expired);
    }

    #[test]
    fn half_open_flows_are_inactive_for_60s() {
        let classify_opening = |idle| classify(FLOW_OPENING, PROTO_TCP, idle, UDP_TIMEOUT);
        assert_eq!(classify_opening(secs(0)), FlowState::Inactive);
        assert_eq!(classify_opening(secs(59)), FlowState::Inactive);
        assert_eq!(classify_opening(secs(60)), FlowState::Expired);
    }

    #[test]
    fn pruning_deletes_dead_and_expired_entries_and_keeps_established_ones() {
        let prune = |flags, proto, idle_s, slot_live| {
            prunable(classify(flags, proto, secs(idle_s), UDP_TIMEOUT), slot_live)
        };
        assert!(!prune(0, PROTO_TCP, 5, true), "active");
        assert!(
            !prune(0, PROTO_TCP, 100_000, true),
            "established TCP, however idle"
        );
        assert!(!prune(FLOW_CLOSING, PROTO_TCP, 119, true), "closing");
        assert!(prune(FLOW_CLOSING, PROTO_TCP, 120, true), "closed");
        assert!(!prune(FLOW_OPENING, PROTO_TCP, 59, true), "half-open");
        assert!(prune(FLOW_OPENING, PROTO_TCP, 60, true), "never opened");
        assert!(!prune(0, PROTO_UDP, 29, true), "UDP");
        assert!(prune(0, PROTO_UDP, 30, true), "UDP past udp_timeout");
        assert!(prune(0, PROTO_TCP, 5, false), "a removed backend's flow");
    }

    fn entry(proto: u8, backend: u32, generation: u32, flags: u32, idle_s: u64) -> (FlowKey, Flow) {
        let key = FlowKey {
            proto,
            ..FlowKey::default()
        };
        let flow = Flow {
            backend,
            generation,
            flags,
            last_seen_ns: 10_000 * S - idle_s * S,
            ..Flow::default()
        };
        (key, flow)
    }

    #[test]
    fn a_walk_counts_each_live_slot_and_prunes_what_is_done() {
        let entries = [
            (entry(PROTO_TCP, 1, 1, 0, 5), true, false),
            (entry(PROTO_TCP, 1, 1, 0, 1000), true, false),
            (entry(PROTO_TCP, 1, 1, FLOW_CLOSING, 60), true, false),
            (entry(PROTO_TCP, 1, 1, FLOW_CLOSING, 200), true, true),
            (entry(PROTO_TCP, 1, 1, FLOW_OPENING, 10), true, false),
            (entry(PROTO_TCP, 1, 1, FLOW_OPENING, 70), true, true),
            (entry(PROTO_UDP, 1, 2, 0, 10), true, false),
            (entry(PROTO_UDP, 2, 1, 0, 40), true, true),
            (entry(PROTO_TCP, 3, 1, 0, 5), false, true),
        ];
        let mut walk = Walk::default();
        for ((key, flow), live, pruned) in entries {
            assert_eq!(
                walk.add(&key, &flow, 10_000 * S, UDP_TIMEOUT, live),
                pruned,
                "{flow:?}"
            );
        }
        let slot = |id, generation| Slot { id, generation };
        let counts = |active, inactive| FlowCounts { active, inactive };
        assert_eq!(
            walk.counts,
            FlowCountsBySlot::from([(slot(1, 1), counts(1, 2)), (slot(1, 2), counts(1, 0))])
        );
        assert_eq!(walk.entries, 9);
    }
}
