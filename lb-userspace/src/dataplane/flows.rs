//! The live connection table, as `ipvsadm -L -c` shows it, and its
//! active and inactive flows per backend, as `ipvsadm -L -n` counts them.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use aya::maps::{HashMap as BpfHashMap, MapData};
use lb_common::{
    flow::FlowKey,
    maps::{Flow, ServiceKey, FLOW_CLOSING, PROTO_TCP, PROTO_UDP},
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
    /// Since the last packet (the program refreshes about once a second).
    pub idle: Duration,
}

/// The flow entry for `key` and `flow`, if its backend is still the one
/// the flow was made with; `backend` finds (service, address) by id and
/// generation.
pub fn entry(
    key: &FlowKey,
    flow: &Flow,
    now_ns: u64,
    backend: impl Fn(u32, u32) -> Option<(ServiceKey, SocketAddr)>,
) -> Option<FlowEntry> {
    let (service, backend) = backend(flow.backend, flow.generation)?;
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
        idle: Duration::from_nanos(now_ns.saturating_sub(flow.last_seen_ns)),
    })
}

/// CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// IPVS's timeout for an established TCP connection.
const TCP_ACTIVE_LIMIT: Duration = Duration::from_secs(900);
/// IPVS's FIN_WAIT timeout.
const CLOSING_LIMIT: Duration = Duration::from_secs(120);

/// Where a flow-table entry counts, like IPVS's ActiveConn and InActConn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    Active,
    Inactive,
    /// Left in the LRU table: counted in neither.
    Stale,
}

/// Active: not closing, and idle less than its limit (UDP: `udp_timeout`;
/// TCP: 900 s, IPVS's established timeout). Inactive: closing (the client
/// sent FIN or RST) and idle less than 120 s (IPVS's FIN_WAIT timeout).
/// Anything else is stale.
pub fn classify(flags: u32, proto: u8, idle: Duration, udp_timeout: Duration) -> FlowState {
    let (limit, state) = match (flags & FLOW_CLOSING != 0, proto) {
        (true, _) => (CLOSING_LIMIT, FlowState::Inactive),
        (false, PROTO_UDP) => (udp_timeout, FlowState::Active),
        (false, _) => (TCP_ACTIVE_LIMIT, FlowState::Active),
    };
    if idle < limit {
        state
    } else {
        FlowState::Stale
    }
}

/// A backend's active and inactive flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub active: u64,
    pub inactive: u64,
}

/// Flow counts by the backend slot (id and generation) the flows were made for.
pub type FlowCountsBySlot = HashMap<Slot, FlowCounts>;

/// Counts `entries` by backend slot; `now_ns` is on the program's clock.
pub fn tally(
    entries: impl IntoIterator<Item = (FlowKey, Flow)>,
    now_ns: u64,
    udp_timeout: Duration,
) -> FlowCountsBySlot {
    let mut counts = FlowCountsBySlot::new();
    for (key, flow) in entries {
        let idle = Duration::from_nanos(now_ns.saturating_sub(flow.last_seen_ns));
        let slot = Slot {
            id: flow.backend,
            generation: flow.generation,
        };
        match classify(flow.flags, key.proto, idle, udp_timeout) {
            FlowState::Active => counts.entry(slot).or_default().active += 1,
            FlowState::Inactive => counts.entry(slot).or_default().inactive += 1,
            FlowState::Stale => {}
        }
    }
    counts
}

/// The shared flow table through a file descriptor of its own, so that a
/// thread can walk it without the [`super::Dataplane`].
pub struct FlowTable {
    map: BpfHashMap<MapData, FlowKey, Flow>,
    capacity: usize,
}

impl FlowTable {
    pub(super) fn new(map: BpfHashMap<MapData, FlowKey, Flow>, capacity: u32) -> Self {
        FlowTable {
            map,
            capacity: capacity as usize,
        }
    }

    /// Walks the table and counts its flows by backend slot. Entries evicted
    /// during the walk are skipped; at most the table's capacity is read, as
    /// a key evicted under the walk makes the kernel start over.
    pub fn count(&self, udp_timeout: Duration) -> FlowCountsBySlot {
        let entries = self.map.iter().take(self.capacity).filter_map(Result::ok);
        tally(entries, monotonic_ns(), udp_timeout)
    }

    /// The entry for `key`, if the table holds one.
    pub fn get(&self, key: &FlowKey) -> Option<Flow> {
        self.map.get(key, 0).ok()
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
    fn flows_are_active_until_their_protocols_limit() {
        let classify_open = |proto, idle| classify(0, proto, idle, UDP_TIMEOUT);
        assert_eq!(classify_open(PROTO_TCP, secs(0)), FlowState::Active);
        assert_eq!(classify_open(PROTO_TCP, secs(899)), FlowState::Active);
        assert_eq!(classify_open(PROTO_TCP, secs(900)), FlowState::Stale);
        assert_eq!(classify_open(PROTO_UDP, secs(29)), FlowState::Active);
        assert_eq!(classify_open(PROTO_UDP, secs(30)), FlowState::Stale);
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
        assert_eq!(classify_closing(secs(120)), FlowState::Stale);
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
    fn a_tally_counts_each_slot_and_leaves_out_stale_entries() {
        let entries = [
            entry(PROTO_TCP, 1, 1, 0, 5),
            entry(PROTO_TCP, 1, 1, 0, 1000),
            entry(PROTO_TCP, 1, 1, FLOW_CLOSING, 60),
            entry(PROTO_TCP, 1, 1, FLOW_CLOSING, 200),
            entry(PROTO_UDP, 1, 2, 0, 10),
            entry(PROTO_UDP, 2, 1, 0, 40),
        ];
        let slot = |id, generation| Slot { id, generation };
        let counts = |active, inactive| FlowCounts { active, inactive };
        assert_eq!(
            tally(entries, 10_000 * S, UDP_TIMEOUT),
            FlowCountsBySlot::from([(slot(1, 1), counts(1, 1)), (slot(1, 2), counts(1, 0))])
        );
    }
}
