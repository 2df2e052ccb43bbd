//! What the data plane is asked to serve: services and backends as specs,
//! the director-wide settings, and how each is made from the model.

use std::{net::IpAddr, time::Duration};

use lb_common::maps::Mode;

use crate::model::{self, AdminState, Protocol};

use super::LoadOptions;

/// Source-IP affinity (IPVS `-p TIMEOUT -M NETMASK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinitySpec {
    pub timeout: Duration,
    /// Source bits that identify a client: 32 / 128 for one address.
    pub prefix_len: u8,
}

/// Where frames for a backend go on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub mac: [u8; 6],
    /// 0: back out the interface the packet came in on.
    pub ifindex: u32,
    /// Our MAC on `ifindex` (unused when `ifindex` is 0).
    pub src_mac: [u8; 6],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: IpAddr,
    /// NAT: the port to translate to. DR and IP-in-IP: the service's port.
    pub port: u16,
    /// 0..=65535; 0 drains like `drain`.
    pub weight: u16,
    /// No new flows; established flows stay.
    pub drain: bool,
    pub next_hop: NextHop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub vip: IpAddr,
    /// 0 serves every port of the VIP.
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    pub affinity: Option<AffinitySpec>,
    pub backends: Vec<BackendSpec>,
}

impl ServiceSpec {
    pub fn name(&self) -> String {
        let proto = self.protocol.name();
        match self.vip {
            IpAddr::V4(a) => format!("{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}/{proto}", self.port),
        }
    }
}

/// Director-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectorSettings {
    /// Outer source addresses for IP-in-IP.
    pub tunnel_src_v4: Option<std::net::Ipv4Addr>,
    pub tunnel_src_v6: Option<std::net::Ipv6Addr>,
    /// Low bits of those sources that vary per flow (0 to
    /// [`lb_common::maps::MAX_TUNNEL_SPREAD_BITS`]).
    pub tunnel_spread_v4: u8,
    pub tunnel_spread_v6: u8,
    pub mtu: u32,
    pub udp_timeout: Duration,
    /// Seed of the flow and source hashes; the same on every director.
    pub hash_seed: u32,
    /// The flood guard: new flows per second one CPU records (0: no limit).
    pub new_flows_per_cpu: u32,
    /// ICMP messages per second one CPU sends (0: no limit).
    pub icmp_per_cpu: u32,
}

impl Default for DirectorSettings {
    fn default() -> Self {
        DirectorSettings {
            tunnel_src_v4: None,
            tunnel_src_v6: None,
            tunnel_spread_v4: 0,
            tunnel_spread_v6: 0,
            mtu: 1500,
            udp_timeout: Duration::from_secs(lb_common::maps::DEFAULT_UDP_TIMEOUT_S.into()),
            hash_seed: 0,
            new_flows_per_cpu: 0,
            icmp_per_cpu: 0,
        }
    }
}

/// A configuration the data plane cannot take; nothing was written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("service {service}: {problem}")]
pub struct SpecError {
    pub service: String,
    pub problem: String,
}

impl ServiceSpec {
    /// The data plane's view of `service`, serving `backends`.
    pub fn of(service: &model::Service, backends: Vec<BackendSpec>) -> Self {
        ServiceSpec {
            vip: service.vip,
            port: service.port,
            protocol: service.protocol,
            mode: service.mode,
            affinity: service.affinity.map(|a| AffinitySpec {
                timeout: a.timeout,
                prefix_len: a.prefix_len,
            }),
            backends,
        }
    }
}

impl BackendSpec {
    /// The data plane's view of `backend` (which must not be in maintenance).
    pub fn of(backend: &model::Backend, next_hop: NextHop) -> Self {
        BackendSpec {
            addr: backend.addr,
            port: backend.port,
            weight: backend.weight,
            drain: backend.admin_state == AdminState::Drain,
            next_hop,
        }
    }
}

impl DirectorSettings {
    /// The settings `agent` asks for, with the flood guard sized by `tables`.
    pub fn of(agent: &model::AgentSettings, tables: &model::Tables) -> Self {
        DirectorSettings {
            tunnel_src_v4: agent.tunnel_source_v4,
            tunnel_src_v6: agent.tunnel_source_v6,
            tunnel_spread_v4: agent.tunnel_spread_v4,
            tunnel_spread_v6: agent.tunnel_spread_v6,
            mtu: agent.mtu,
            udp_timeout: agent.udp_timeout,
            hash_seed: agent.hash_seed,
            new_flows_per_cpu: agent.new_flows_per_cpu(tables, cpus()),
            icmp_per_cpu: agent.icmp_rate,
        }
    }
}

/// CPUs that may run the XDP program.
fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

impl LoadOptions {
    /// The balancer with maps of the sizes `tables` asks for.
    pub fn of(tables: &model::Tables) -> Self {
        LoadOptions {
            maglev_size: tables.maglev_size,
            max_services: tables.max_services,
            max_backends: tables.max_backends,
            flow_entries: tables.flow_entries,
            affinity_entries: tables.affinity_entries,
            ..LoadOptions::default()
        }
    }
}
