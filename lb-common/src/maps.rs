//! Names, keys and values of the BPF maps, shared by the XDP program and
//! the agent; at the end, the names in the benchmarks' own object.
//! Addresses are packet bytes held as four native `u32` words (IPv4 in the
//! first word, the rest zero); ports are in host byte order.

/// The meaning of the maps' contents: raised when an entry's meaning
/// changes without its size, so an agent does not adopt a data plane it
/// would misread (sizes are stamped on their own, see the agent's pins).
pub const MAP_LAYOUT_VERSION: u32 = 1;

/// The load balancer's XDP entry point.
pub const PROG_XLB: &str = "xlb";
/// The real-server side of IP-in-IP: strips the outer header.
pub const PROG_DECAP: &str = "xlb_decap";

/// The forwarding programs `xlb` tail-calls once it has chosen a backend,
/// at these indices of [`MAP_JUMPS`]. Split so the verifier checks each on
/// its own instead of every path of every mode from every parse outcome.
/// (Direct routing, a MAC rewrite, stays in `xlb`.)
pub const JUMP_IPIP_V4: u32 = 0;
pub const JUMP_IPIP_V6: u32 = 1;
pub const JUMP_NAT_V4: u32 = 2;
pub const JUMP_NAT_V6: u32 = 3;
pub const JUMP_NAT_REPLY_V4: u32 = 4;
pub const JUMP_NAT_REPLY_V6: u32 = 5;
pub const FORWARDERS: [(u32, &str); 6] = [
    (JUMP_IPIP_V4, "xlb_fwd_ipip4"),
    (JUMP_IPIP_V6, "xlb_fwd_ipip6"),
    (JUMP_NAT_V4, "xlb_fwd_nat4"),
    (JUMP_NAT_V6, "xlb_fwd_nat6"),
    (JUMP_NAT_REPLY_V4, "xlb_nat_reply4"),
    (JUMP_NAT_REPLY_V6, "xlb_nat_reply6"),
];
/// Program array of the forwarders, indexed by the `JUMP_*` constants.
pub const MAP_JUMPS: &str = "XLB_JUMPS";

/// The director's tc egress program for health probes through the path
/// client traffic takes: packets whose mark is in [`MAP_HEALTH_PATHS`] are
/// wrapped in IP-in-IP to their backend, or sent to its MAC unchanged.
pub const PROG_HEALTH: &str = "xlb_health";
/// Hash: socket mark (`SO_MARK`) -> [`HealthPath`].
pub const MAP_HEALTH_PATHS: &str = "XLB_HEALTH_PATHS";
/// The marks of health probes: [`HEALTH_MARK_BASE`] | a slot below
/// [`HEALTH_MAX_PATHS`].
pub const HEALTH_MARK_BASE: u32 = 0x584c_0000;
pub const HEALTH_MARK_MASK: u32 = 0xffff_0000;
pub const HEALTH_MAX_PATHS: u32 = 4096;
/// [`HealthPath::how`]: wrap in IP-in-IP from `source` to `backend`.
pub const HEALTH_VIA_TUNNEL: u8 = 1;
/// [`HealthPath::how`]: send unchanged to `backend`'s MAC (direct routing).
pub const HEALTH_VIA_MAC: u8 = 2;

/// Where a marked health probe goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthPath {
    /// The backend's address: the outer destination, or the next hop.
    pub backend: [u32; 4],
    /// The outer source (the director's tunnel source).
    pub source: [u32; 4],
    /// The interface toward the backend.
    pub ifindex: u32,
    /// The family of `backend` and `source`.
    pub family: u8,
    /// [`HEALTH_VIA_TUNNEL`] or [`HEALTH_VIA_MAC`].
    pub how: u8,
    pub _pad: [u8; 2],
}

/// Per-CPU array of one record: a `u64` per [`crate::stats::Counter`], by
/// its index, so that a packet's counting costs one map lookup.
pub const MAP_STATS: &str = "XLB_STATS";
/// Hash: [`ServiceKey`] -> [`Service`].
pub const MAP_SERVICES: &str = "XLB_SERVICES";
/// Array: backend id -> [`Backend`]. Id 0 is never used.
pub const MAP_BACKENDS: &str = "XLB_BACKENDS";
/// Array of [`RingPair`]s: backend ids, slot `i` of the rings at element
/// `i / 2`, half `i % 2`; ring `r`'s slot for hash `h` is
/// `r * RING_SIZE + (h * RING_SIZE) >> 32`. Packed two to an element:
/// the kernel rounds an array's values up to 8 bytes.
pub const MAP_RINGS: &str = "XLB_RINGS";
/// Array of [`FlowBucket`]: each CPU's own flow table, a set-associative
/// cache of [`FLOW_WAYS`] ways per bucket. CPU `c` owns the buckets
/// `c * FLOW_BUCKETS .. (c + 1) * FLOW_BUCKETS` ([`GLOBAL_FLOW_BUCKETS`]);
/// a flow's bucket there is [`crate::flow::cache_bucket`]. Only that CPU
/// writes them.
pub const MAP_FLOW_CACHE: &str = "XLB_FLOW_CACHE";
/// Global set at load time: buckets per CPU in [`MAP_FLOW_CACHE`].
pub const GLOBAL_FLOW_BUCKETS: &str = "FLOW_BUCKETS";
/// Array of `FLOW_BUCKETS` `u32`: the low 32 bits of `jiffies` at the last
/// SYN whose flow hashed to each bucket index; a CPU's cached flow seen
/// before it is looked up again, as the SYN may have started a new
/// connection on its port on another CPU.
pub const MAP_SYN_STAMPS: &str = "XLB_SYN_STAMPS";
pub const FLOW_WAYS: usize = 4;
/// LRU hash: [`crate::flow::FlowKey`] -> [`Flow`], shared by all CPUs and
/// written lazily: a flow enters it when its handshake completes (or, for
/// UDP and other flows, on its first refresh) and when its marks change,
/// never on a SYN, so a flood of new flows does not churn it. A flow's
/// packet that reaches a CPU whose own cache lacks the flow (RSS changed,
/// or a virtual NIC) finds its backend here, so a ring change does not
/// move it; the agent lists and counts connections from it.
pub const MAP_FLOWS_SHARED: &str = "XLB_FLOWS_SHARED";
/// LRU hash: [`AffinityKey`] -> [`Affinity`], shared by all CPUs.
pub const MAP_AFFINITY: &str = "XLB_AFFINITY";
/// Hash: [`NatKey`] (a backend's address and port) -> [`NatTarget`] (its VIP).
pub const MAP_NAT_REVERSE: &str = "XLB_NAT_REVERSE";
/// Per-CPU array of [`REPLY_ROUTE_SLOTS`] [`ReplyRoute`]s, a slot per
/// client address hash: where this CPU last routed NAT replies to a client,
/// so that most replies skip the kernel's FIB lookup. A slot is trusted for
/// [`REPLY_ROUTE_JIFFIES`] and for packets no longer than one the lookup
/// passed (its MTU check), so a route or neighbour change reaches the
/// replies within that time.
pub const MAP_REPLY_ROUTES: &str = "XLB_REPLY_ROUTES";
pub const REPLY_ROUTE_SLOTS: u32 = 4096;
/// How long a [`ReplyRoute`] is trusted: 25 to 100 ms with `HZ` of 1000 to 250.
pub const REPLY_ROUTE_JIFFIES: u32 = 25;
/// Per-CPU array: backend id -> [`TrafficStats`]. A service's traffic is
/// its backends' (the agent keeps what removed backends carried).
pub const MAP_BACKEND_STATS: &str = "XLB_BACKEND_STATS";
/// Array with one [`Settings`] at index 0.
pub const MAP_SETTINGS: &str = "XLB_SETTINGS";
/// Hash: [`VipKey`] -> `u8` [`VIP_ANY_PORT_TCP`] | [`VIP_ANY_PORT_UDP`] for
/// every VIP served: one lookup tells VIP traffic (fragments included)
/// from the rest, and whether a port-0 service may match.
pub const MAP_VIPS: &str = "XLB_VIPS";
pub const VIP_ANY_PORT_TCP: u8 = 1;
pub const VIP_ANY_PORT_UDP: u8 = 2;
/// Hash: a local VIP's address ([`VipKey`]) -> `u8` 1, for `xlb_decap`.
pub const MAP_DECAP_VIPS: &str = "XLB_DECAP_VIPS";

/// Array of [`ADDR_FILTER_WORDS`] `u64`: a bitmap with the bit
/// [`addr_filter_bit`] of every VIP and every NAT backend address set. A
/// packet whose destination's and source's bits are both clear concerns no
/// service and passes at once, without a hash lookup.
pub const MAP_ADDR_FILTER: &str = "XLB_ADDR_FILTER";
pub const ADDR_FILTER_WORDS: u32 = 256;
const ADDR_FILTER_BITS_LOG2: u32 = 14;

/// An address's bit in [`MAP_ADDR_FILTER`] (of `64 * ADDR_FILTER_WORDS`).
#[inline(always)]
pub const fn addr_filter_bit(addr: &[u32; 4]) -> u32 {
    folded_filter_bit(addr[0] ^ addr[1] ^ addr[2] ^ addr[3])
}

/// [`addr_filter_bit`] of an address whose four words are already folded
/// into one by XOR.
#[inline(always)]
pub const fn folded_filter_bit(folded: u32) -> u32 {
    folded.wrapping_mul(0x9e37_79b1) >> (32 - ADDR_FILTER_BITS_LOG2)
}

/// Array of [`IFACE_SLOTS`] [`Iface`]s, at [`iface_slot`] of each
/// interface the program is attached to: the program balances only frames
/// addressed to that interface's MAC. (An array, not a hash: the lookup is
/// inlined.)
pub const MAP_IFACES: &str = "XLB_IFACES";
pub const IFACE_SLOTS: u32 = 1024;

/// Where interface `ifindex` sits in [`MAP_IFACES`].
#[inline(always)]
pub const fn iface_slot(ifindex: u32) -> u32 {
    ifindex % IFACE_SLOTS
}
/// Hash: an outer source address ([`VipKey`]) -> `u8` 1: the directors
/// `xlb_decap` accepts IP-in-IP from; anything else passes untouched.
pub const MAP_DECAP_SOURCES: &str = "XLB_DECAP_SOURCES";
/// Per-CPU array of [`RateWindow`], indexed by [`RATE_NEW_FLOWS`] and
/// [`RATE_ICMP`]: what this CPU did in the current one-second window.
pub const MAP_RATES: &str = "XLB_RATES";
pub const RATE_NEW_FLOWS: u32 = 0;
pub const RATE_ICMP: u32 = 1;
pub const RATE_SLOTS: u32 = 2;

/// Global set at load time: slots in each Maglev ring (a prime).
pub const GLOBAL_RING_SIZE: &str = "RING_SIZE";

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Default Maglev ring size: 65537 slots of 4 bytes, 256 KiB per ring
/// (two slots per 8-byte array element).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Default capacity: services (each has two rings, for flipping).
pub const DEFAULT_MAX_SERVICES: u32 = 64;
pub const DEFAULT_MAX_BACKENDS: u32 = 4096;
pub const DEFAULT_FLOW_ENTRIES: u32 = 262_144;
pub const DEFAULT_AFFINITY_ENTRIES: u32 = 65_536;
pub const DEFAULT_UDP_TIMEOUT_S: u32 = 30;

/// A backend id that names no backend: an empty ring slot.
pub const NO_BACKEND: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    /// 0 matches any port.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Direct routing: rewrite MACs, send on the same segment.
    Dr = 1,
    /// Encapsulate in IPv4 or IPv6 to the backend.
    Ipip = 2,
    /// Rewrite the destination to backend:port; replies come back through us.
    Nat = 3,
}

impl Mode {
    /// Its spelling in the configuration, the API and the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Dr => "dr",
            Mode::Ipip => "ipip",
            Mode::Nat => "nat",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Mode> {
        match v {
            1 => Some(Mode::Dr),
            2 => Some(Mode::Ipip),
            3 => Some(Mode::Nat),
            _ => None,
        }
    }
}

/// [`Service::flags`]: pick backends by source address only, and remember
/// the choice for `affinity_timeout_s` (IPVS `-p`, HAProxy `stick on src`).
pub const SERVICE_AFFINITY: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into the per-service stats; unique among live services.
    pub id: u32,
    /// Which ring (of `MAX_SERVICES * 2`) this service reads.
    pub ring: u32,
    /// A [`Mode`].
    pub mode: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    pub affinity_timeout_s: u32,
    /// Source address bits kept for affinity (IPVS `-M`), as packet words:
    /// a /24 mask groups a client's /24 on one backend.
    pub affinity_mask: [u32; 4],
}

/// [`Backend::flags`]: weight 0 or admin drain: no new flows, existing stay.
pub const BACKEND_DRAIN: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub family: u8,
    pub flags: u8,
    /// NAT: the port to rewrite the destination to.
    pub port: u16,
    /// Next hop's MAC (the backend itself on a shared segment).
    pub mac: [u8; 6],
    /// Our MAC on `ifindex`; unused when the frame leaves by the ingress interface.
    pub src_mac: [u8; 6],
    /// Interface toward the next hop; 0 sends back out the ingress interface.
    pub ifindex: u32,
    /// Changes whenever the id is given to another backend, so that flow and
    /// affinity entries made for the old one stop matching.
    pub generation: u32,
    /// The id of the service this entry belongs to: its traffic counts
    /// there, and an agent that restarts and adopts the maps reads it.
    pub service: u32,
    /// The service's [`Mode`], so that a flow-table hit forwards without
    /// looking the service up.
    pub mode: u8,
    pub _pad: u8,
    pub _pad2: u16,
    /// IP-in-IP to an IPv4 backend: [`tunnel_v4_partial_sum`] of its
    /// address, the outer header's checksum less what varies per packet.
    pub outer_sum: u32,
}

/// The outer IPv4 header of IP-in-IP: TTL, protocol, Don't Fragment.
pub const TUNNEL_TTL: u8 = 64;
pub const TUNNEL_PROTO_IPIP: u8 = 4;
pub const TUNNEL_FLAGS_DF: u16 = 0x4000;

/// The ones' complement sum (unfolded) of the parts of an outer IPv4
/// header to `dst` that are the same for every packet: version and header
/// length, flags, TTL and protocol, destination. Header words are summed as
/// loaded from the packet (native loads of network-order bytes), as the
/// program sums them.
pub const fn tunnel_v4_partial_sum(dst: u32) -> u32 {
    let [f0, f1] = TUNNEL_FLAGS_DF.to_be_bytes();
    let halves = [
        u16::from_ne_bytes([0x45, 0]),
        u16::from_ne_bytes([f0, f1]),
        u16::from_ne_bytes([TUNNEL_TTL, TUNNEL_PROTO_IPIP]),
        (dst & 0xffff) as u16,
        (dst >> 16) as u16,
    ];
    let mut sum = 0u32;
    let mut i = 0;
    while i < halves.len() {
        sum += halves[i] as u32;
        i += 1;
    }
    sum
}

/// Two Maglev ring slots (backend ids) in one array element.
pub type RingPair = [u32; 2];

/// [`Flow::flags`]: the client sent a TCP FIN or RST; a SYN on the flow
/// (the port reused) clears it.
pub const FLOW_CLOSING: u32 = 1;
/// [`Flow::flags`]: half-open, like IPVS's SYN_RECV: the flow began with a
/// SYN without ACK (or a SYN reused the port of a closing flow); the
/// client's next segment without SYN clears it, a FIN or RST too.
pub const FLOW_OPENING: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub backend: u32,
    /// The backend's [`Backend::generation`] when the flow was made.
    pub generation: u32,
    /// Service id, for per-service accounting on flow-table hits.
    pub service: u32,
    /// [`FLOW_OPENING`], [`FLOW_CLOSING`] or 0.
    pub flags: u32,
    /// Monotonic nanoseconds of the last packet (refreshed about once a
    /// second for UDP, every 4 s to 40 s for TCP).
    pub last_seen_ns: u64,
}

/// One way of a [`FlowBucket`]: a flow, the backend its packets go to and
/// its marks, 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedFlow {
    /// `key.family == 0`: an empty way.
    pub key: crate::flow::FlowKey,
    pub backend: u32,
    /// The backend's [`Backend::generation`] when the flow was made.
    pub generation: u32,
    /// [`FLOW_OPENING`], [`FLOW_CLOSING`] or 0.
    pub flags: u32,
    /// Low 32 bits of `jiffies` when `last_seen_ns` was last set: a hit
    /// reads the (cheap) jiffies counter, and the clock only now and then
    /// (UDP: about once a second), to refresh the entry and the shared one.
    pub seen_jiffies: u32,
    /// Monotonic nanoseconds of the last refresh or change of marks.
    pub last_seen_ns: u64,
}

/// A bucket of one CPU's flow cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBucket {
    pub ways: [CachedFlow; FLOW_WAYS],
}

/// Buckets per CPU for a flow table of `flow_entries` on `cpus` CPUs: the
/// CPUs' caches hold `flow_entries` flows together (a flow lives on the
/// CPU its packets arrive on), and each at least 4096.
pub const fn flow_buckets(flow_entries: u32, cpus: u32) -> u32 {
    let cpus = if cpus == 0 { 1 } else { cpus };
    let per_cpu = flow_entries.div_ceil(cpus).div_ceil(FLOW_WAYS as u32);
    if per_cpu < 1024 {
        1024
    } else {
        per_cpu
    }
}

/// An interface the program is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    /// Its own MAC: the only destination balanced, and the source of
    /// frames sent back out of it.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The interface's index; 0: a free slot.
    pub ifindex: u32,
}

/// One CPU's count of events in a one-second window, for rate limits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// Monotonic nanoseconds at which the window began.
    pub start_ns: u64,
    pub count: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub service: u32,
    pub family: u8,
    // Padding as a byte and a half-word, which BPF zeroes with two stores
    // (a 3-byte array would be a call to memset).
    pub _pad: u8,
    pub _pad2: u16,
    pub src: [u32; 4],
}

impl AffinityKey {
    pub const fn new(service: u32, family: u8, src: [u32; 4]) -> AffinityKey {
        AffinityKey {
            service,
            family,
            _pad: 0,
            _pad2: 0,
            src,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    pub backend: u32,
    /// The backend's [`Backend::generation`] when the entry was made.
    pub generation: u32,
    pub last_seen_ns: u64,
}

/// A NAT backend as its replies show it: source address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// What a NAT backend's reply source becomes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatTarget {
    pub vip: [u32; 4],
    pub vport: u16,
    pub _pad: [u8; 2],
}

/// One FIB result for NAT replies: see [`MAP_REPLY_ROUTES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyRoute {
    /// The client, the replies' destination.
    pub dst: [u32; 4],
    /// The VIP the replies come from after translation.
    pub src: [u32; 4],
    /// The interface the replies came in on.
    pub ingress: u32,
    /// The interface they leave by.
    pub ifindex: u32,
    /// The longest IP packet the lookup passed.
    pub max_len: u32,
    /// Low 32 bits of `jiffies` at the lookup.
    pub looked_up: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// [`FAMILY_V4`] or [`FAMILY_V6`]; 0 in an empty slot.
    pub family: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub family: u8,
    // As in [`AffinityKey`]: no 3-byte array to zero.
    pub _pad: u8,
    pub _pad2: u16,
}

impl VipKey {
    pub const fn new(addr: [u32; 4], family: u8) -> VipKey {
        VipKey {
            addr,
            family,
            _pad: 0,
            _pad2: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl core::ops::AddAssign for TrafficStats {
    fn add_assign(&mut self, other: Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
    }
}

/// The most bits of an IP-in-IP outer source that vary per flow (256
/// sources: plenty for RSS, and few enough for an exact allowlist).
pub const MAX_TUNNEL_SPREAD_BITS: u8 = 8;

/// [`Settings::tunnel_spread_v4`] / `_v6` for `bits` varying host bits:
/// the low bits of the address's last word, as a packet-order word.
pub const fn tunnel_spread_mask(bits: u8) -> u32 {
    let host = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    u32::from_ne_bytes(host.to_be_bytes())
}

/// The outer source of an IP-in-IP packet: `source`'s last word with its
/// `spread` bits taken from `flow` (any hash of the flow).
#[inline(always)]
pub const fn spread_source(source: u32, spread: u32, flow: u32) -> u32 {
    (source & !spread) | (flow & spread)
}

/// Director-wide settings, at index 0 of [`MAP_SETTINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Outer source addresses for IP-in-IP.
    pub tunnel_src_v4: [u32; 4],
    pub tunnel_src_v6: [u32; 4],
    /// Largest IP packet the path to backends carries; an encapsulated
    /// packet above it gets an ICMP "too big" back instead.
    pub mtu: u32,
    pub udp_timeout_s: u32,
    /// NAT backends configured; 0 skips the reply lookup for other traffic.
    pub nat_backends: u32,
    /// The last backend generation the agent handed out, for an agent that
    /// adopts the maps (the program does not read it).
    pub last_generation: u32,
    /// Seed of the flow and source hashes, the same on every director, so
    /// that clients cannot choose ports that aim at one backend.
    pub hash_seed: u32,
    /// The flood guard: new flows per second one CPU records; past it new
    /// flows are forwarded by the ring without state. 0: no limit.
    pub new_flows_per_cpu: u32,
    /// ICMP messages per second one CPU sends; past it they are dropped.
    pub icmp_per_cpu: u32,
    pub _pad: u32,
    /// The bits of the IP-in-IP outer source's last word (packet order)
    /// that vary per flow, so that a backend's NIC spreads tunnels over its
    /// queues (RSS); 0: every flow has the tunnel source itself.
    pub tunnel_spread_v4: u32,
    pub tunnel_spread_v6: u32,
    /// Keys of the flow cache's bucket hash, from [`crate::flow::cache_keys`].
    pub cache_keys: [u64; 5],
}

// The benchmarks' own object (`lb-ebpf-bench`), which the `xlb` binary does
// not carry: its programs, maps and global.

/// A bare XDP_TX, the floor that benchmarks compare against.
pub const PROG_TX_FLOOR: &str = "xlb_tx_floor";
/// The UDP benchmark's load generator, run with BPF_PROG_TEST_RUN in
/// live-frames mode: gives an Ethernet + IPv4 + UDP frame the next source
/// port of [`GLOBAL_GEN_FLOWS`] and sends it with XDP_TX.
pub const PROG_GEN: &str = "xlb_gen";
/// The UDP benchmark's receiver: counts frames in [`MAP_COUNT`], drops them.
pub const PROG_COUNT: &str = "xlb_count";
/// Per-CPU array of one `u64`: frames `xlb_gen` has sent on each CPU.
pub const MAP_GEN_SENT: &str = "XLB_GEN_SENT";
/// Per-CPU array of `u64`, indexed by [`COUNT_PACKETS`] and [`COUNT_BYTES`].
pub const MAP_COUNT: &str = "XLB_COUNT";
pub const COUNT_PACKETS: u32 = 0;
pub const COUNT_BYTES: u32 = 1;
/// Global set at load time: how many flows (source ports from
/// [`GEN_FIRST_PORT`] up) `xlb_gen` spreads its frames over, 1 to [`GEN_MAX_FLOWS`].
pub const GLOBAL_GEN_FLOWS: &str = "GEN_FLOWS";
pub const DEFAULT_GEN_FLOWS: u32 = 1;
pub const GEN_FIRST_PORT: u16 = 1024;
pub const GEN_MAX_FLOWS: u32 = 65536 - GEN_FIRST_PORT as u32;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    use crate::flow::FlowKey;

    // SAFETY: all are repr(C) plain data with explicit padding fields.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for HealthPath {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for Affinity {}
    unsafe impl aya::Pod for NatKey {}
    unsafe impl aya::Pod for NatTarget {}
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for TrafficStats {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for Iface {}
    unsafe impl aya::Pod for CachedFlow {}
    unsafe impl aya::Pod for FlowBucket {}
    unsafe impl aya::Pod for RateWindow {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn the_address_filter_has_a_bit_for_each_address() {
        assert_eq!(1 << ADDR_FILTER_BITS_LOG2, 64 * ADDR_FILTER_WORDS);
        let bit = |a: u32| addr_filter_bit(&[a, 0, 0, 0]);
        assert!((0..4096).all(|a| bit(a) < 64 * ADDR_FILTER_WORDS));
        // Neighbouring addresses spread: 256 of them take nearly 256 bits.
        let mut bits: [bool; 16384] = [false; 16384];
        for a in 0..256u32 {
            bits[bit(u32::from_ne_bytes([198, 18, 0, a as u8])) as usize] = true;
        }
        assert!(bits.iter().filter(|b| **b).count() > 250);
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<Service>(), 32);
        assert_eq!(size_of::<Backend>(), 52);
        assert_eq!(size_of::<CachedFlow>(), 64);
        assert_eq!(size_of::<FlowBucket>(), 64 * FLOW_WAYS);
        assert_eq!(size_of::<crate::flow::FlowKey>(), 40);
        assert_eq!(size_of::<Flow>(), 24);
        assert_eq!(size_of::<ReplyRoute>(), 64);
        assert_eq!(size_of::<AffinityKey>(), 24);
        assert_eq!(size_of::<Affinity>(), 16);
        assert_eq!(size_of::<NatKey>(), 20);
        assert_eq!(size_of::<NatTarget>(), 20);
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<Settings>(), 112);
        assert_eq!(size_of::<Iface>(), 12);
        assert_eq!(size_of::<RateWindow>(), 16);
    }
}
