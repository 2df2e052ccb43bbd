//! The live connection table, as `ipvsadm -L -c` shows it.

use std::{net::SocketAddr, time::Duration};

use lb_common::{
    flow::FlowKey,
    maps::{Flow, ServiceKey, PROTO_TCP},
};

use super::{services::addr_from_words, Protocol};

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
