//! The program's maps. Sizes here are defaults; the loader resizes them.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
    Global,
};
use lb_common::{
    flow::FlowKey,
    maps::{
        Affinity, AffinityKey, Backend, Flow, FlowBucket, HealthPath, Iface, NatKey, NatTarget, RateWindow,
        ReplyRoute, RingPair, Service, ServiceKey, Settings, TrafficStats, VipKey, ADDR_FILTER_WORDS,
        DEFAULT_AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_SERVICES,
        DEFAULT_RING_SIZE, HEALTH_MAX_PATHS, IFACE_SLOTS, RATE_SLOTS, REPLY_ROUTE_SLOTS,
    },
    stats::Counter,
};

/// Slots per Maglev ring; set by the loader.
#[no_mangle]
pub static RING_SIZE: Global<u32> = Global::new(DEFAULT_RING_SIZE);

/// Buckets per CPU in `FLOW_CACHE`; set by the loader.
#[no_mangle]
pub static FLOW_BUCKETS: Global<u32> = Global::new(1024);

/// The global counters, one record per CPU: a `u64` per
/// [`lb_common::stats::Counter`].
#[map(name = "XLB_STATS")]
pub static STATS: PerCpuArray<[u64; Counter::COUNT as usize]> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XLB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, Service> =
    HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

#[map(name = "XLB_BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Two rings per service, so the agent can fill one while packets read the
/// other, two slots to an element. Memory-mapped by the agent, which
/// writes a ring in one pass.
#[map(name = "XLB_RINGS")]
pub static RINGS: Array<RingPair> =
    Array::with_max_entries(DEFAULT_MAX_SERVICES * DEFAULT_RING_SIZE, BPF_F_MMAPABLE);

/// Every CPU's flow cache: see [`crate::cache`].
#[map(name = "XLB_FLOW_CACHE")]
pub static FLOW_CACHE: Array<FlowBucket> = Array::with_max_entries(1024, 0);

/// Jiffies of the last SYN per cache bucket index: see [`crate::cache::stale`].
#[map(name = "XLB_SYN_STAMPS")]
pub static SYN_STAMPS: Array<u32> = Array::with_max_entries(1024, 0);

/// Where a flow's packet on another CPU than its first finds its backend.
#[map(name = "XLB_FLOWS_SHARED")]
pub static FLOWS_SHARED: LruHashMap<FlowKey, Flow> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

#[map(name = "XLB_AFFINITY")]
pub static AFFINITY: LruHashMap<AffinityKey, Affinity> =
    LruHashMap::with_max_entries(DEFAULT_AFFINITY_ENTRIES, 0);

#[map(name = "XLB_NAT_REVERSE")]
pub static NAT_REVERSE: HashMap<NatKey, NatTarget> =
    HashMap::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Each CPU's recent FIB results for NAT replies: see [`crate::nat::reply`].
#[map(name = "XLB_REPLY_ROUTES")]
pub static REPLY_ROUTES: PerCpuArray<ReplyRoute> =
    PerCpuArray::with_max_entries(REPLY_ROUTE_SLOTS, 0);

#[map(name = "XLB_BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<TrafficStats> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

#[map(name = "XLB_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map(name = "XLB_VIPS")]
pub static VIPS: HashMap<VipKey, u8> = HashMap::with_max_entries(DEFAULT_MAX_SERVICES, 0);

#[map(name = "XLB_DECAP_VIPS")]
pub static DECAP_VIPS: HashMap<VipKey, u8> = HashMap::with_max_entries(256, 0);

#[map(name = "XLB_ADDR_FILTER")]
pub static ADDR_FILTER: Array<u64> = Array::with_max_entries(ADDR_FILTER_WORDS, 0);

/// The interfaces the program is attached to, by ifindex.
#[map(name = "XLB_IFACES")]
pub static IFACES: Array<Iface> = Array::with_max_entries(IFACE_SLOTS, 0);

#[map(name = "XLB_DECAP_SOURCES")]
pub static DECAP_SOURCES: HashMap<VipKey, u8> = HashMap::with_max_entries(1024, 0);

#[map(name = "XLB_RATES")]
pub static RATES: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(RATE_SLOTS, 0);

/// What the entry program hands its tail-called forwarder: the backend
/// and where the IP header starts. The forwarder reads the rest from the
/// packet (see [`crate::forward`]), so nothing is copied.
#[derive(Clone, Copy)]
pub struct Handoff {
    pub backend: u32,
    pub l3_off: u32,
}

#[map(name = "XLB_HANDOFF")]
pub static HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XLB_JUMPS")]
pub static JUMPS: ProgramArray = ProgramArray::with_max_entries(8, 0);

/// Health probes by socket mark: see [`crate::health`].
#[map(name = "XLB_HEALTH_PATHS")]
pub static HEALTH_PATHS: HashMap<u32, HealthPath> = HashMap::with_max_entries(HEALTH_MAX_PATHS, 0);
