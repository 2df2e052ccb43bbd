//! Desired services and backends, checked as a whole and then written to
//! the maps so that a packet never sees a half-built service: backends
//! first, then each changed Maglev ring into the service's idle ring slot,
//! then the service entry that flips to it, and last the removals.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use lb_common::{
    maglev::{build_table, MaglevBackend},
    maps::{
        Backend, Mode, NatKey, NatTarget, Service, ServiceKey, Settings, VipKey, BACKEND_DRAIN,
        FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, SERVICE_AFFINITY, VIP_ANY_PORT_TCP,
        VIP_ANY_PORT_UDP,
    },
};

/// The smallest MTU xlb accepts: IPv6's minimum plus room for an outer header.
pub const MIN_MTU: u32 = 1280 + 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

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
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
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
    pub mtu: u32,
    pub udp_timeout: Duration,
}

impl Default for DirectorSettings {
    fn default() -> Self {
        DirectorSettings {
            tunnel_src_v4: None,
            tunnel_src_v6: None,
            mtu: 1500,
            udp_timeout: Duration::from_secs(lb_common::maps::DEFAULT_UDP_TIMEOUT_S.into()),
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

pub fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

/// An address as the packet words the maps hold.
pub fn words(addr: IpAddr) -> [u32; 4] {
    let bytes = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    };
    let w = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Packet words of an address with only its first `prefix_len` bits.
pub fn mask_words(addr_family: u8, prefix_len: u8) -> [u32; 4] {
    let bits = if addr_family == FAMILY_V6 { 128 } else { 32 };
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let start = i as u32 * 8;
        let keep = (prefix_len as u32).saturating_sub(start).min(8);
        if start < bits {
            *byte = (0xff00u16 >> keep) as u8;
        }
    }
    let w = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

pub fn service_key(spec: &ServiceSpec) -> ServiceKey {
    ServiceKey {
        addr: words(spec.vip),
        port: spec.port,
        proto: spec.protocol.number(),
        family: family(spec.vip),
    }
}

/// Checks every service against the data plane's rules and capacity.
pub fn validate(
    services: &[ServiceSpec],
    settings: &DirectorSettings,
    max_services: u32,
    max_backends: u32,
) -> Result<(), SpecError> {
    let fail = |spec: &ServiceSpec, problem: String| SpecError {
        service: spec.name(),
        problem,
    };
    if services.len() > max_services as usize {
        return Err(SpecError {
            service: "*".into(),
            problem: format!(
                "{} services, the data plane holds {max_services}",
                services.len()
            ),
        });
    }
    let mut keys = HashSet::new();
    let mut nat_owners: HashMap<(IpAddr, u16, Protocol), String> = HashMap::new();
    let mut distinct_backends = BTreeSet::new();
    for spec in services {
        if !keys.insert(service_key(spec)) {
            return Err(fail(spec, "defined twice".into()));
        }
        let vip_family = family(spec.vip);
        if let Some(affinity) = spec.affinity {
            let bits = if vip_family == FAMILY_V6 { 128 } else { 32 };
            if affinity.prefix_len == 0 || affinity.prefix_len > bits {
                return Err(fail(
                    spec,
                    format!(
                        "affinity prefix /{} is not in 1..={bits}",
                        affinity.prefix_len
                    ),
                ));
            }
            if affinity.timeout.is_zero() || affinity.timeout.as_secs() > u32::MAX as u64 {
                return Err(fail(spec, "affinity timeout must be 1 s or more".into()));
            }
        }
        let mut seen = BTreeSet::new();
        for b in &spec.backends {
            if !seen.insert((b.addr, b.port)) {
                return Err(fail(
                    spec,
                    format!("backend {}:{} listed twice", b.addr, b.port),
                ));
            }
            distinct_backends.insert((b.addr, b.port));
            let b_family = family(b.addr);
            match spec.mode {
                Mode::Dr | Mode::Nat if b_family != vip_family => {
                    return Err(fail(
                        spec,
                        format!("backend {} is not of the VIP's address family", b.addr),
                    ));
                }
                Mode::Ipip if vip_family == FAMILY_V6 && b_family == FAMILY_V4 => {
                    return Err(fail(
                        spec,
                        format!("backend {}: IPv6 cannot be tunnelled in IPv4", b.addr),
                    ));
                }
                _ => {}
            }
            match spec.mode {
                Mode::Nat => {
                    if b.port == 0 {
                        return Err(fail(spec, format!("NAT backend {} needs a port", b.addr)));
                    }
                    if spec.port == 0 {
                        return Err(fail(spec, "NAT needs a service port (not 0)".into()));
                    }
                    let owner = nat_owners.entry((b.addr, b.port, spec.protocol));
                    let owner = owner.or_insert_with(|| spec.name());
                    if *owner != spec.name() {
                        return Err(fail(
                            spec,
                            format!(
                                "NAT backend {}:{} already serves {owner}; replies could not be \
                                 told apart",
                                b.addr, b.port
                            ),
                        ));
                    }
                }
                Mode::Dr | Mode::Ipip if b.port != spec.port => {
                    return Err(fail(
                        spec,
                        format!(
                            "backend {}:{}: only NAT translates ports; use port {}",
                            b.addr, b.port, spec.port
                        ),
                    ));
                }
                _ => {}
            }
            if spec.mode == Mode::Ipip {
                let has_src = match b_family {
                    FAMILY_V6 => settings.tunnel_src_v6.is_some(),
                    _ => settings.tunnel_src_v4.is_some(),
                };
                if !has_src {
                    return Err(fail(
                        spec,
                        format!(
                            "IP-in-IP to {} needs a tunnel source address of its family",
                            b.addr
                        ),
                    ));
                }
            }
        }
    }
    if distinct_backends.len() >= max_backends as usize {
        return Err(SpecError {
            service: "*".into(),
            problem: format!(
                "{} backends, the data plane holds {}",
                distinct_backends.len(),
                max_backends - 1
            ),
        });
    }
    if settings.mtu < MIN_MTU {
        return Err(SpecError {
            service: "*".into(),
            problem: format!("MTU {} is below {MIN_MTU}", settings.mtu),
        });
    }
    Ok(())
}

/// What the agent last wrote, to write only differences next time.
#[derive(Default)]
pub struct Installed {
    /// Service key -> (id, active ring slot, table written there).
    pub services: HashMap<ServiceKey, InstalledService>,
    /// (address, port) -> backend id.
    pub backends: BTreeMap<(IpAddr, u16), u32>,
    /// The last backend id handed out: new ids go round from here, so a
    /// freed id (which stale flow or affinity entries may still name) is
    /// reused as late as possible.
    pub last_backend_id: u32,
    /// Backend id -> the generation written with it.
    pub generations: BTreeMap<u32, u32>,
    /// The last generation handed out.
    pub last_generation: u32,
    pub nat: HashSet<NatKey>,
    pub vips: HashSet<VipKey>,
}

pub struct InstalledService {
    pub id: u32,
    pub ring: u32,
    pub table: Vec<u32>,
    pub entry: Service,
}

pub fn backend_entry(spec: &BackendSpec, generation: u32) -> Backend {
    Backend {
        addr: words(spec.addr),
        family: family(spec.addr),
        flags: if spec.drain || spec.weight == 0 {
            BACKEND_DRAIN
        } else {
            0
        },
        port: spec.port,
        mac: spec.next_hop.mac,
        src_mac: spec.next_hop.src_mac,
        ifindex: spec.next_hop.ifindex,
        generation,
    }
}

/// The Maglev table for a service, given the backend ids assigned.
pub fn table_for(spec: &ServiceSpec, ids: &BTreeMap<(IpAddr, u16), u32>, size: u32) -> Vec<u32> {
    let backends: Vec<MaglevBackend> = spec
        .backends
        .iter()
        .map(|b| {
            let w = words(b.addr);
            MaglevBackend {
                id: ids[&(b.addr, b.port)],
                key: [w[0], w[1], w[2], w[3], b.port as u32],
                weight: if b.drain { 0 } else { b.weight },
            }
        })
        .collect();
    build_table(&backends, size)
}

pub fn service_entry(spec: &ServiceSpec, id: u32, ring: u32) -> Service {
    let (flags, timeout, mask) = match spec.affinity {
        Some(a) => (
            SERVICE_AFFINITY,
            a.timeout.as_secs() as u32,
            mask_words(family(spec.vip), a.prefix_len),
        ),
        None => (0, 0, [0; 4]),
    };
    Service {
        id,
        ring,
        mode: spec.mode as u8,
        flags,
        _pad: [0; 2],
        affinity_timeout_s: timeout,
        affinity_mask: mask,
    }
}

pub fn settings_entry(s: &DirectorSettings, nat_backends: u32) -> Settings {
    Settings {
        tunnel_src_v4: s.tunnel_src_v4.map_or([0; 4], |a| words(IpAddr::V4(a))),
        tunnel_src_v6: s.tunnel_src_v6.map_or([0; 4], |a| words(IpAddr::V6(a))),
        mtu: s.mtu,
        udp_timeout_s: s.udp_timeout.as_secs() as u32,
        nat_backends,
    }
}

/// Every VIP with its flags (which protocols have a port-0 service).
pub fn vip_entries(services: &[ServiceSpec]) -> HashMap<VipKey, u8> {
    let mut vips = HashMap::new();
    for s in services {
        let key = VipKey {
            addr: words(s.vip),
            family: family(s.vip),
            _pad: [0; 3],
        };
        let flags = vips.entry(key).or_insert(0u8);
        if s.port == 0 {
            *flags |= match s.protocol {
                Protocol::Tcp => VIP_ANY_PORT_TCP,
                Protocol::Udp => VIP_ANY_PORT_UDP,
            };
        }
    }
    vips
}

pub fn nat_entries(spec: &ServiceSpec) -> impl Iterator<Item = (NatKey, NatTarget)> + '_ {
    spec.backends
        .iter()
        .filter(|_| spec.mode == Mode::Nat)
        .map(|b| {
            (
                NatKey {
                    addr: words(b.addr),
                    port: b.port,
                    proto: spec.protocol.number(),
                    family: family(b.addr),
                },
                NatTarget {
                    vip: words(spec.vip),
                    vport: spec.port,
                    _pad: [0; 2],
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn backend(addr: &str, port: u16) -> BackendSpec {
        BackendSpec {
            addr: addr.parse().unwrap(),
            port,
            weight: 100,
            drain: false,
            next_hop: NextHop::default(),
        }
    }

    fn service(vip: &str, port: u16, mode: Mode, backends: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            mode,
            affinity: None,
            backends,
        }
    }

    fn check(services: &[ServiceSpec]) -> Result<(), String> {
        let settings = DirectorSettings {
            tunnel_src_v4: Some(Ipv4Addr::new(198, 18, 0, 2)),
            ..Default::default()
        };
        validate(services, &settings, 8, 16).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_each_mode() {
        let services = [
            service(
                "198.18.0.100",
                80,
                Mode::Dr,
                vec![backend("198.18.1.10", 80)],
            ),
            service(
                "198.18.0.100",
                9000,
                Mode::Nat,
                vec![backend("198.18.1.10", 20000)],
            ),
            service(
                "198.18.0.101",
                0,
                Mode::Ipip,
                vec![backend("198.18.1.10", 0)],
            ),
        ];
        check(&services).unwrap();
    }

    #[test]
    fn refuses_with_the_reason() {
        let cases = [
            (
                vec![service(
                    "198.18.0.100",
                    80,
                    Mode::Dr,
                    vec![backend("198.18.1.10", 8080)],
                )],
                "only NAT translates ports",
            ),
            (
                vec![service(
                    "198.18.0.100",
                    80,
                    Mode::Dr,
                    vec![backend("fd00::10", 80)],
                )],
                "not of the VIP's address family",
            ),
            (
                vec![service(
                    "fd00::100",
                    80,
                    Mode::Ipip,
                    vec![backend("198.18.1.10", 80)],
                )],
                "IPv6 cannot be tunnelled in IPv4",
            ),
            (
                vec![service(
                    "fd00::100",
                    80,
                    Mode::Ipip,
                    vec![backend("fd00::10", 80)],
                )],
                "needs a tunnel source address",
            ),
            (
                vec![service(
                    "198.18.0.100",
                    80,
                    Mode::Nat,
                    vec![backend("198.18.1.10", 0)],
                )],
                "needs a port",
            ),
            (
                vec![service(
                    "198.18.0.100",
                    80,
                    Mode::Dr,
                    vec![backend("198.18.1.10", 80), backend("198.18.1.10", 80)],
                )],
                "listed twice",
            ),
            (
                vec![
                    service(
                        "198.18.0.100",
                        80,
                        Mode::Nat,
                        vec![backend("198.18.1.10", 8080)],
                    ),
                    service(
                        "198.18.0.101",
                        80,
                        Mode::Nat,
                        vec![backend("198.18.1.10", 8080)],
                    ),
                ],
                "already serves 198.18.0.100:80/tcp",
            ),
            (
                vec![
                    service("198.18.0.100", 80, Mode::Dr, vec![]),
                    service("198.18.0.100", 80, Mode::Dr, vec![]),
                ],
                "defined twice",
            ),
        ];
        for (services, expected) in cases {
            let err = check(&services).expect_err(expected);
            assert!(err.contains(expected), "{err} does not say {expected}");
        }
    }

    #[test]
    fn refuses_bad_affinity_and_capacity() {
        let mut s = service("198.18.0.100", 80, Mode::Dr, vec![]);
        s.affinity = Some(AffinitySpec {
            timeout: Duration::from_secs(300),
            prefix_len: 33,
        });
        assert!(check(&[s.clone()])
            .unwrap_err()
            .contains("/33 is not in 1..=32"));
        let many: Vec<_> = (0..9)
            .map(|p| service("198.18.0.100", p + 1, Mode::Dr, vec![]))
            .collect();
        assert!(check(&many)
            .unwrap_err()
            .contains("9 services, the data plane holds 8"));
    }

    #[test]
    fn words_keep_packet_byte_order() {
        let w = words(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(w[0].to_ne_bytes(), [198, 18, 0, 1]);
        assert_eq!(&w[1..], &[0, 0, 0]);
        let w = words(IpAddr::V6("fd00::1".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(w[0].to_ne_bytes(), [0xfd, 0, 0, 0]);
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 1]);
    }

    #[test]
    fn masks() {
        let m = mask_words(FAMILY_V4, 24);
        assert_eq!(m[0].to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!(&m[1..], &[0, 0, 0]);
        let m = mask_words(FAMILY_V6, 56);
        assert_eq!(m[1].to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!(m[2], 0);
        assert_eq!(mask_words(FAMILY_V4, 32)[0], u32::MAX);
    }
}
