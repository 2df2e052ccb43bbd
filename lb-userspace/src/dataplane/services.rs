//! Desired services and backends: checked as a whole ([`validate`]), then
//! turned into ids, rings and map entries ([`plan`]) for the data plane to
//! write in an order that never shows a packet a half-built service.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

/// The planner's maps and sets: keyed by the configuration, not by packets,
/// so a fast hash without flood resistance serves.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use lb_common::{
    maglev::{build_table, MaglevBackend},
    maps::{
        addr_filter_bit, tunnel_spread_mask, tunnel_v4_partial_sum, Backend, Flow, Mode, NatKey,
        NatTarget, Service, ServiceKey, Settings, VipKey, ADDR_FILTER_WORDS, BACKEND_DRAIN,
        FAMILY_V4, FAMILY_V6, SERVICE_AFFINITY, VIP_ANY_PORT_TCP, VIP_ANY_PORT_UDP,
    },
};

use super::spec::{BackendSpec, DirectorSettings, ServiceSpec, SpecError};
use crate::model::Protocol;

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
    bytes_to_words(bytes)
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
    bytes_to_words(bytes)
}

/// The address that packet words of `addr_family` hold.
pub fn addr_from_words(words: [u32; 4], addr_family: u8) -> IpAddr {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    if addr_family == FAMILY_V6 {
        IpAddr::from(bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

fn bytes_to_words(bytes: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

pub fn vip_key(addr: IpAddr) -> VipKey {
    VipKey::new(words(addr), family(addr))
}

pub fn service_key(spec: &ServiceSpec) -> ServiceKey {
    service_key_of(spec.vip, spec.port, spec.protocol)
}

/// The data plane's key of the service at `vip`:`port`/`protocol`.
pub fn service_key_of(vip: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey {
        addr: words(vip),
        port,
        proto: protocol.number(),
        family: family(vip),
    }
}

/// Checks that the maps can hold `services` as given: within capacity,
/// one entry per key, NAT replies traceable to one service, values in the
/// entries' ranges. The rules of a sound configuration are the model's
/// (`crate::model::rules`); this guards the maps from any caller.
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
    let mut keys = HashSet::default();
    let mut nat_owners: HashMap<(IpAddr, u16, Protocol), String> = HashMap::default();
    for spec in services {
        if !keys.insert(service_key(spec)) {
            return Err(fail(spec, "defined twice".into()));
        }
        if let Some(affinity) = spec.affinity {
            let bits = if family(spec.vip) == FAMILY_V6 {
                128
            } else {
                32
            };
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
            if spec.mode != Mode::Nat {
                continue;
            }
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
                        "NAT backend {}:{} already serves {owner}; replies could not be told \
                         apart",
                        b.addr, b.port
                    ),
                ));
            }
        }
    }
    let pairs: usize = services.iter().map(|s| s.backends.len()).sum();
    if pairs >= max_backends as usize {
        return Err(SpecError {
            service: "*".into(),
            problem: format!(
                "{pairs} backends over all services, the data plane holds {}",
                max_backends - 1
            ),
        });
    }
    let timeout = settings.udp_timeout;
    if timeout.as_secs() == 0 || timeout.as_secs() > u32::MAX as u64 || timeout.subsec_nanos() != 0
    {
        return Err(SpecError {
            service: "*".into(),
            problem: format!("UDP timeout {timeout:?} is not a whole number of seconds from 1"),
        });
    }
    Ok(())
}

/// A backend as one service has it. Each (service, backend) pair has its
/// own id, as an IPVS real server belongs to one virtual service: its drain
/// flag, next hop and stats are that service's, and removing it from one
/// service leaves the others alone.
pub type BackendKey = (ServiceKey, IpAddr, u16);

/// A backend id and the generation written with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub id: u32,
    pub generation: u32,
}

impl Slot {
    /// The slot a flow was made for.
    pub fn of(flow: &Flow) -> Slot {
        Slot {
            id: flow.backend,
            generation: flow.generation,
        }
    }
}

/// What the agent last wrote, to write only differences next time.
#[derive(Default, Clone)]
pub struct Installed {
    pub services: HashMap<ServiceKey, InstalledService>,
    pub backends: HashMap<BackendKey, Slot>,
    /// What each backend id's entry holds.
    pub entries: HashMap<u32, Backend>,
    pub nat: HashMap<NatKey, NatTarget>,
    pub vips: HashMap<VipKey, u8>,
    /// The last backend id handed out: new ids go round from here, so a
    /// freed id is reused late.
    pub last_backend_id: u32,
    /// The last generation handed out.
    pub last_generation: u32,
}

/// A Maglev table, shared between plans that keep it.
pub type Table = Arc<[u32]>;

#[derive(Clone)]
pub struct InstalledService {
    pub id: u32,
    /// The ring slot packets read, holding `table`.
    pub ring: u32,
    pub table: Table,
    /// What `table` was built from (`None` when adopted): an unchanged
    /// input needs no new build.
    pub ring_input: Option<Vec<MaglevBackend>>,
    /// What the other ring slot holds (empty if unknown): the next changed
    /// table is written there, only where the two differ.
    pub idle_table: Table,
    pub entry: Service,
}

impl Installed {
    /// The slot (id and generation) of a service's backend.
    pub fn backend_slot(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> Option<Slot> {
        self.backends.get(&(*service, addr, port)).copied()
    }

    /// The backends (address, port) of a service.
    pub fn backends_of(&self, service: &ServiceKey) -> std::collections::HashSet<(IpAddr, u16)> {
        self.backends
            .keys()
            .filter(|(s, _, _)| s == service)
            .map(|&(_, addr, port)| (addr, port))
            .collect()
    }

    /// How many of a service's ring slots each of its backends holds
    /// (backend ids are below `max_backends`).
    pub fn ring_shares(
        &self,
        service: &ServiceKey,
        max_backends: u32,
    ) -> std::collections::HashMap<(IpAddr, u16), u32> {
        let mut shares = std::collections::HashMap::new();
        let Some(installed) = self.services.get(service) else {
            return shares;
        };
        // Slots per id, counted in an array: a ring has tens of thousands.
        let mut per_id = vec![0u32; max_backends as usize];
        for &id in installed.table.iter() {
            if let Some(count) = per_id.get_mut(id as usize) {
                *count += 1;
            }
        }
        for (&(key, addr, port), slot) in &self.backends {
            if key == *service {
                let count = per_id.get(slot.id as usize).copied().unwrap_or(0);
                shares.insert((addr, port), count);
            }
        }
        shares
    }
}

/// The address filter for `installed`: the bits of its VIPs and NAT
/// backends (see [`lb_common::maps::MAP_ADDR_FILTER`]).
pub fn addr_filter(installed: &Installed) -> Vec<u64> {
    let mut words = vec![0u64; ADDR_FILTER_WORDS as usize];
    let vips = installed.vips.keys().map(|v| &v.addr);
    for addr in vips.chain(installed.nat.keys().map(|n| &n.addr)) {
        let bit = addr_filter_bit(addr);
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// What the maps of a running data plane hold, read back by an agent that
/// adopts them.
pub struct MapContents {
    pub settings: Settings,
    pub services: Vec<(ServiceKey, Service)>,
    /// The backend slots in use (family not 0).
    pub backends: Vec<(u32, Backend)>,
    /// The ring each service reads, by ring slot.
    pub rings: HashMap<u32, Vec<u32>>,
    pub nat: HashMap<NatKey, NatTarget>,
    pub vips: HashMap<VipKey, u8>,
}

/// The bookkeeping that wrote `maps`, so that the next [`plan`] keeps every
/// id and generation flows were made with. The idle rings are unknown and
/// will be written whole. Fails on entries this data plane cannot hold
/// (maps pinned by another program, or damaged).
pub fn recover(maps: MapContents, max_services: u32) -> Result<Installed, String> {
    let service_keys: HashMap<u32, ServiceKey> =
        maps.services.iter().map(|(key, s)| (s.id, *key)).collect();
    for (_, service) in &maps.services {
        if service.id >= max_services || service.ring / 2 != service.id {
            return Err(format!(
                "service id {} reads ring {}: not a ring of this data plane",
                service.id, service.ring
            ));
        }
    }
    let mut installed = Installed {
        nat: maps.nat,
        vips: maps.vips,
        last_generation: maps.settings.last_generation,
        ..Installed::default()
    };
    for (id, backend) in &maps.backends {
        installed.entries.insert(*id, *backend);
        installed.last_backend_id = installed.last_backend_id.max(*id);
        installed.last_generation = installed.last_generation.max(backend.generation);
        if let Some(service) = service_keys.get(&backend.service) {
            let addr = addr_from_words(backend.addr, backend.family);
            installed.backends.insert(
                (*service, addr, backend.port),
                Slot {
                    id: *id,
                    generation: backend.generation,
                },
            );
        }
    }
    for (key, entry) in maps.services {
        let table = maps
            .rings
            .get(&entry.ring)
            .map_or_else(Table::default, |t| t[..].into());
        installed.services.insert(
            key,
            InstalledService {
                id: entry.id,
                ring: entry.ring,
                table,
                ring_input: None,
                idle_table: Table::default(),
                entry,
            },
        );
    }
    Ok(installed)
}

/// What [`plan`] decided: the state to install and what to write for it.
pub struct Plan {
    pub installed: Installed,
    /// The backend entries that change.
    pub backend_entries: Vec<(u32, Backend)>,
    /// Backend ids given to a new owner (their stats start at zero).
    pub fresh_backends: Vec<u32>,
    /// Maglev tables built: one per service whose backends, ids or
    /// weights changed.
    pub rings_built: u32,
}

/// Ids, generations, rings and entries for `services` (already
/// validated), keeping what `installed` has for what stays.
pub fn plan(
    services: &[ServiceSpec],
    installed: &Installed,
    max_services: u32,
    max_backends: u32,
    maglev_size: u32,
) -> Plan {
    let wanted: Vec<(BackendKey, &BackendSpec)> = services
        .iter()
        .flat_map(|s| {
            let key = service_key(s);
            s.backends.iter().map(move |b| ((key, b.addr, b.port), b))
        })
        .collect();
    let kept: HashSet<u32> = wanted
        .iter()
        .filter_map(|(key, _)| installed.backends.get(key).map(|slot| slot.id))
        .collect();
    let freed: HashSet<u32> = installed
        .backends
        .values()
        .map(|slot| slot.id)
        .filter(|id| !kept.contains(id))
        .collect();
    let kept_services: HashSet<u32> = services
        .iter()
        .filter_map(|s| installed.services.get(&service_key(s)).map(|i| i.id))
        .collect();
    let mut service_ids: HashMap<ServiceKey, u32> = HashMap::default();
    for spec in services {
        let key = service_key(spec);
        let id = match installed.services.get(&key) {
            Some(p) => p.id,
            None => (0..max_services)
                .find(|id| !kept_services.contains(id) && !service_ids.values().any(|v| v == id))
                .expect("validate checked the service capacity"),
        };
        service_ids.insert(key, id);
    }
    let modes: HashMap<ServiceKey, Mode> = services
        .iter()
        .map(|spec| (service_key(spec), spec.mode))
        .collect();
    let mut next = Installed {
        last_backend_id: installed.last_backend_id,
        last_generation: installed.last_generation,
        ..Installed::default()
    };
    let mut fresh = Vec::new();
    let mut backend_entries = Vec::new();
    for (key, spec) in &wanted {
        let slot = match installed.backends.get(key) {
            Some(&slot) => slot,
            None => {
                // Round from the last id given; validate left room. An id
                // freed by this plan only when no other is free: rings still
                // point to it until they flip.
                let round = (0..max_backends - 1)
                    .map(|step| (next.last_backend_id + step) % (max_backends - 1) + 1);
                let free = |id: &u32| !kept.contains(id) && !fresh.contains(id);
                let id = round
                    .clone()
                    .find(|id| free(id) && !freed.contains(id))
                    .or_else(|| round.clone().find(free))
                    .expect("validate checked the backend capacity");
                next.last_backend_id = id;
                next.last_generation = next.last_generation.wrapping_add(1).max(1);
                fresh.push(id);
                Slot {
                    id,
                    generation: next.last_generation,
                }
            }
        };
        next.backends.insert(*key, slot);
        let entry = backend_entry(spec, slot.generation, service_ids[&key.0], modes[&key.0]);
        // Only what changed is written.
        if installed.entries.get(&slot.id) != Some(&entry) {
            backend_entries.push((slot.id, entry));
        }
        next.entries.insert(slot.id, entry);
    }
    let mut rings_built = 0;
    for spec in services {
        let key = service_key(spec);
        let previous = installed.services.get(&key);
        let id = service_ids[&key];
        let ring_input = ring_input(spec, &next.backends);
        let table = match previous {
            Some(p) if p.ring_input.as_ref() == Some(&ring_input) => p.table.clone(),
            _ => {
                rings_built += 1;
                build_table(&ring_input, maglev_size).into()
            }
        };
        // Slots 2*id and 2*id+1 belong to the service: a changed table goes
        // in the idle one.
        let (ring, idle_table) = match previous {
            Some(p) if Arc::ptr_eq(&p.table, &table) || p.table == table => {
                (p.ring, p.idle_table.clone())
            }
            Some(p) => (4 * id + 1 - p.ring, p.table.clone()),
            None => (2 * id, Table::default()),
        };
        let entry = service_entry(spec, id, ring);
        next.services.insert(
            key,
            InstalledService {
                id,
                ring,
                table,
                ring_input: Some(ring_input),
                idle_table,
                entry,
            },
        );
    }
    next.nat = services.iter().flat_map(nat_entries).collect();
    next.vips = vip_entries(services);
    Plan {
        installed: next,
        backend_entries,
        fresh_backends: fresh,
        rings_built,
    }
}

pub fn backend_entry(spec: &BackendSpec, generation: u32, service: u32, mode: Mode) -> Backend {
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
        service,
        mode: mode as u8,
        _pad: 0,
        _pad2: 0,
        outer_sum: match spec.addr {
            IpAddr::V4(_) => tunnel_v4_partial_sum(words(spec.addr)[0]),
            IpAddr::V6(_) => 0,
        },
    }
}

/// What a service's Maglev table is built from: its backends' ids, keys
/// and weights (0 when drained).
fn ring_input(spec: &ServiceSpec, ids: &HashMap<BackendKey, Slot>) -> Vec<MaglevBackend> {
    let service = service_key(spec);
    spec.backends
        .iter()
        .map(|b| {
            let w = words(b.addr);
            MaglevBackend {
                id: ids[&(service, b.addr, b.port)].id,
                key: [w[0], w[1], w[2], w[3], b.port as u32],
                weight: if b.drain { 0 } else { b.weight },
            }
        })
        .collect()
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

pub fn settings_entry(s: &DirectorSettings, installed: &Installed) -> Settings {
    Settings {
        tunnel_src_v4: s.tunnel_src_v4.map_or([0; 4], |a| words(IpAddr::V4(a))),
        tunnel_src_v6: s.tunnel_src_v6.map_or([0; 4], |a| words(IpAddr::V6(a))),
        mtu: s.mtu,
        udp_timeout_s: s.udp_timeout.as_secs() as u32,
        nat_backends: installed.nat.len() as u32,
        last_generation: installed.last_generation,
        hash_seed: s.hash_seed,
        new_flows_per_cpu: s.new_flows_per_cpu,
        icmp_per_cpu: s.icmp_per_cpu,
        _pad: 0,
        tunnel_spread_v4: tunnel_spread_mask(s.tunnel_spread_v4),
        tunnel_spread_v6: tunnel_spread_mask(s.tunnel_spread_v6),
        cache_keys: lb_common::flow::cache_keys(s.hash_seed),
    }
}

/// Every VIP with its flags (which protocols have a port-0 service).
pub fn vip_entries(services: &[ServiceSpec]) -> HashMap<VipKey, u8> {
    let mut vips = HashMap::default();
    for s in services {
        let flags = vips.entry(vip_key(s.vip)).or_insert(0u8);
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
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::Duration,
    };

    use super::*;
    use crate::dataplane::{AffinitySpec, NextHop};

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

    /// `plan` as `Dataplane::apply` runs it, then installs the result.
    fn replan(
        installed: &mut Installed,
        services: &[ServiceSpec],
        max_services: u32,
        max_backends: u32,
    ) -> Plan {
        check(services).unwrap();
        let plan = plan(services, installed, max_services, max_backends, 7);
        *installed = plan.installed.clone();
        plan
    }

    #[test]
    fn only_a_service_whose_backends_or_weights_changed_gets_a_new_ring() {
        let mut installed = Installed::default();
        let services = |weight: u16, drain: bool, next_hop_mac: u8| -> Vec<ServiceSpec> {
            (0..4)
                .map(|n| {
                    let mut b = backend(&format!("198.18.1.{}", n + 1), 80);
                    if n == 2 {
                        b.weight = weight;
                        b.drain = drain;
                        b.next_hop.mac = [2, 0, 0, 0, 0, next_hop_mac];
                    }
                    service(&format!("198.18.0.{}", 100 + n), 80, Mode::Dr, vec![b])
                })
                .collect()
        };
        assert_eq!(
            replan(&mut installed, &services(100, false, 1), 8, 16).rings_built,
            4
        );
        assert_eq!(
            replan(&mut installed, &services(100, false, 1), 8, 16).rings_built,
            0
        );
        let plan = replan(&mut installed, &services(3, false, 1), 8, 16);
        assert_eq!(plan.rings_built, 1, "a weight");
        assert!(
            plan.backend_entries.is_empty(),
            "a weight is the ring's only"
        );
        let third = &installed.services[&service_key(&services(3, false, 1)[2])];
        assert_eq!(
            third.table,
            Table::from(build_table(third.ring_input.as_ref().unwrap(), 7)),
            "the new table is the weight's"
        );
        assert_eq!(
            replan(&mut installed, &services(3, true, 1), 8, 16).rings_built,
            1,
            "a drain"
        );
        let plan = replan(&mut installed, &services(3, true, 2), 8, 16);
        assert_eq!(
            plan.rings_built, 0,
            "a next hop is the backend entry's, not the ring's"
        );
        let written: Vec<u32> = plan.backend_entries.iter().map(|(id, _)| *id).collect();
        let third = installed.backends[&(
            service_key(&services(3, true, 2)[2]),
            "198.18.1.3".parse().unwrap(),
            80,
        )];
        assert_eq!(
            written,
            [third.id],
            "only the entry that changed is written"
        );
    }

    #[test]
    fn replacing_at_full_capacity_reuses_what_was_freed() {
        let mut installed = Installed::default();
        let (b1, b2, b3) = (
            backend("198.18.1.1", 80),
            backend("198.18.1.2", 80),
            backend("198.18.1.3", 80),
        );
        // Three backend slots hold two backends (id 0 is never used).
        replan(
            &mut installed,
            &[service("198.18.0.100", 80, Mode::Dr, vec![b1.clone(), b2])],
            2,
            3,
        );
        let plan = replan(
            &mut installed,
            &[service("198.18.0.100", 80, Mode::Dr, vec![b1, b3])],
            2,
            3,
        );
        assert_eq!(plan.fresh_backends.len(), 1);
        let ids: HashSet<u32> = installed.backends.values().map(|slot| slot.id).collect();
        assert_eq!(ids, HashSet::from_iter([1, 2]));

        let one = |vip: &str| service(vip, 80, Mode::Dr, vec![]);
        replan(
            &mut installed,
            &[one("198.18.0.100"), one("198.18.0.101")],
            2,
            3,
        );
        replan(
            &mut installed,
            &[one("198.18.0.100"), one("198.18.0.102")],
            2,
            3,
        );
        let ids: HashSet<u32> = installed.services.values().map(|s| s.id).collect();
        assert_eq!(ids, HashSet::from_iter([0, 1]));
    }

    #[test]
    fn each_service_has_its_own_backend_ids() {
        let mut installed = Installed::default();
        let shared = backend("198.18.1.1", 80);
        let drained = BackendSpec {
            drain: true,
            ..shared.clone()
        };
        let plan = replan(
            &mut installed,
            &[
                service("198.18.0.100", 80, Mode::Dr, vec![shared]),
                service("198.18.0.101", 80, Mode::Dr, vec![drained]),
            ],
            8,
            16,
        );
        assert_eq!(installed.backends.len(), 2, "one id per service");
        let flags: Vec<u8> = plan.backend_entries.iter().map(|(_, b)| b.flags).collect();
        assert!(
            flags.contains(&0) && flags.contains(&BACKEND_DRAIN),
            "{flags:?}"
        );
    }

    #[test]
    fn generations_never_repeat() {
        let mut installed = Installed::default();
        let mut seen = HashSet::default();
        for round in 0..10u8 {
            let b = backend(&format!("198.18.1.{}", round + 1), 80);
            replan(
                &mut installed,
                &[service("198.18.0.100", 80, Mode::Dr, vec![b])],
                2,
                3,
            );
            let generation = installed.backends.values().next().unwrap().generation;
            assert!(
                seen.insert(generation),
                "generation {generation} handed out twice"
            );
        }
    }

    /// What the maps hold after `plan` was written.
    fn written(plan: &Plan) -> MapContents {
        let services = &plan.installed.services;
        MapContents {
            settings: settings_entry(&DirectorSettings::default(), &plan.installed),
            services: services.iter().map(|(k, s)| (*k, s.entry)).collect(),
            backends: plan
                .installed
                .entries
                .iter()
                .map(|(id, entry)| (*id, *entry))
                .collect(),
            rings: services
                .values()
                .map(|s| (s.ring, s.table.to_vec()))
                .collect(),
            nat: plan.installed.nat.clone(),
            vips: plan.installed.vips.clone(),
        }
    }

    #[test]
    fn an_adopting_agent_keeps_ids_generations_and_rings() {
        let mut installed = Installed::default();
        let web = service(
            "198.18.0.100",
            80,
            Mode::Dr,
            vec![backend("198.18.1.1", 80), backend("198.18.1.2", 80)],
        );
        let mut dns = service("fd00::53", 53, Mode::Nat, vec![backend("fd00:1::1", 5353)]);
        dns.protocol = Protocol::Udp;
        dns.backends[0].drain = true;
        // Some churn first, so ids and generations are not the first ones.
        replan(&mut installed, std::slice::from_ref(&web), 8, 16);
        replan(&mut installed, &[], 8, 16);
        let services = [dns.clone(), web.clone()];
        let plan = replan(&mut installed, &services, 8, 16);

        let recovered = recover(written(&plan), 8).unwrap();
        assert_eq!(recovered.backends, installed.backends);
        assert_eq!(recovered.nat, installed.nat);
        assert_eq!(recovered.vips, installed.vips);
        assert_eq!(recovered.last_generation, installed.last_generation);
        for (key, service) in &installed.services {
            let again = &recovered.services[key];
            assert_eq!(
                (again.id, again.ring, &again.table, again.entry),
                (service.id, service.ring, &service.table, service.entry)
            );
            assert!(again.idle_table.is_empty(), "the idle ring is unknown");
        }

        let again = plan_for(&services, &recovered);
        assert!(again.fresh_backends.is_empty(), "no backend got a new id");
        assert_eq!(again.installed.backends, installed.backends);
        for (key, service) in &installed.services {
            assert_eq!(again.installed.services[key].ring, service.ring, "no flip");
        }
    }

    fn plan_for(services: &[ServiceSpec], installed: &Installed) -> Plan {
        plan(services, installed, 8, 16, 7)
    }

    #[test]
    fn addresses_round_trip_through_words() {
        for addr in ["198.18.0.1", "fd00::1:2", "::ffff:198.18.0.1"] {
            let addr: IpAddr = addr.parse().unwrap();
            assert_eq!(addr_from_words(words(addr), family(addr)), addr);
        }
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
