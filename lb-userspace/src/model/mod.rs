//! The configuration once validated: what the agent runs from. Built by
//! [`crate::config::Config::validate`] from the file, or from API requests; turned
//! back into the file's form by [`crate::config::Config::from_model`].

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    path::PathBuf,
    time::Duration,
};

pub mod edit;
pub mod rules;

use lb_common::maps::{Mode, PROTO_TCP, PROTO_UDP};
use serde::Serialize;

/// The smallest MTUs xlb tunnels over: IPv4's and IPv6's minimum packet
/// plus the largest outer header.
pub const MIN_MTU_V4: u32 = 576 + 40;
pub const MIN_MTU_V6: u32 = 1280 + 40;

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub agent: AgentSettings,
    pub tables: Tables,
    /// In file order; names are unique.
    pub services: Vec<Service>,
    /// VRRP instances, in file order; names are unique.
    pub vrrp: Vec<VrrpInstance>,
    pub sync_groups: Vec<SyncGroup>,
}

/// The `[agent]` section: how this director runs (not the agent itself).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    /// Interfaces the XDP program is attached to (at least one).
    pub interfaces: Vec<String>,
    pub xdp_mode: AttachMode,
    pub api_listen: SocketAddr,
    /// The bearer token's file; required when `api_listen` is not loopback.
    pub api_token_file: Option<PathBuf>,
    /// The directory on a bpffs where maps, programs and links are pinned.
    pub pin_path: PathBuf,
    /// Where changes made through the API are kept; `None`: beside the
    /// configuration file (see `config::state_path`).
    pub state_file: Option<PathBuf>,
    /// Outer source addresses for IP-in-IP.
    pub tunnel_source_v4: Option<Ipv4Addr>,
    pub tunnel_source_v6: Option<Ipv6Addr>,
    /// Host bits of those sources that vary per flow (`ADDRESS/LENGTH`).
    pub tunnel_spread_v4: u8,
    pub tunnel_spread_v6: u8,
    /// The largest packet the backends' link carries (IP-in-IP too-big).
    pub mtu: u32,
    /// Idle time after which a UDP flow picks its backend again.
    pub udp_timeout: Duration,
    /// Seed of the flow hash; the same on every director (`xlb keygen`).
    pub hash_seed: u32,
    /// New flows per second one CPU records before the flood guard
    /// forwards new flows without state (0: off); `None`: sized from the
    /// flow table, see [`AgentSettings::new_flows_per_cpu`].
    pub flood_guard: Option<u32>,
    /// ICMP messages per second one CPU sends (0: no limit).
    pub icmp_rate: u32,
}

/// Data-plane sizes, fixed when the program is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    /// Maglev ring slots per service: a prime.
    pub maglev_size: u32,
    pub max_services: u32,
    pub max_backends: u32,
    pub flow_entries: u32,
    pub affinity_entries: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Unique; the API's handle for the service.
    pub name: String,
    pub vip: IpAddr,
    /// 0: every port of the VIP (DR and IP-in-IP only).
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    pub affinity: Option<Affinity>,
    /// Takes the traffic while no backend is up (the "sorry server").
    pub fallback: Option<SocketAddr>,
    pub health: Option<HealthCheck>,
    /// Unique by (address, port).
    pub backends: Vec<Backend>,
}

/// A service's transport protocol.
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

    /// "tcp" or "udp".
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How the XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// In the driver, before any socket buffer is allocated (fastest).
    #[default]
    Native,
    /// In the kernel stack, for drivers without XDP support (slower).
    Generic,
}

impl AttachMode {
    /// "native" or "generic".
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Source-address affinity (IPVS `-p TIMEOUT -M NETMASK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub timeout: Duration,
    /// Source bits that identify a client: 32 / 128 for one address.
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddr,
    /// NAT: where the backend listens. DR and IP-in-IP: the service's port.
    pub port: u16,
    /// 0..=65535, like `ipvsadm -w`; 0 takes no new flows.
    pub weight: u16,
    pub admin_state: AdminState,
    /// Where its health check probes instead of where the service's check
    /// says (keepalived's connect_ip/connect_port, HAProxy's addr/port).
    pub health: CheckOverride,
}

/// A backend's own health-check target: each part set replaces the
/// service's check `address` or `port` for that backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOverride {
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
}

impl CheckOverride {
    pub fn is_empty(&self) -> bool {
        self.address.is_none() && self.port.is_none()
    }
}

/// What the operator asked of a backend.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new flows by its weight.
    #[default]
    Ready,
    /// No new flows; established flows stay until they end.
    Drain,
    /// Out of service: no traffic, established flows move to other backends.
    Maint,
}

impl AdminState {
    /// Its spelling in the file and the API (as serde spells it).
    pub const fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// What the health checks found.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    #[default]
    Up,
    Down,
}

impl OperState {
    pub const fn name(self) -> &'static str {
        match self {
            OperState::Up => "up",
            OperState::Down => "down",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Probe this address instead of the backend's.
    pub address: Option<IpAddr>,
    /// Probe this port instead of the backend's.
    pub port: Option<u16>,
    /// The state before the first verdict.
    pub initial: OperState,
    /// Which way the probes go.
    pub via: HealthVia,
    /// For a probe through the data path: the socket mark and the source
    /// address. Set by the agent on the checks it runs, never by the file.
    pub route: Option<ProbeRoute>,
}

/// Which way a health probe goes (`[service.health] via`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HealthVia {
    /// To the backend's own address (or `address`), as any client would.
    #[default]
    Direct,
    /// IP-in-IP: to VIP:port, wrapped in IP-in-IP to the backend, as client
    /// traffic goes (the default for `mode = "ipip"`).
    Tunnel,
    /// Direct routing: to VIP:port, sent to the backend's MAC.
    Vip,
}

impl HealthVia {
    pub const fn name(self) -> &'static str {
        match self {
            HealthVia::Direct => "direct",
            HealthVia::Tunnel => "tunnel",
            HealthVia::Vip => "vip",
        }
    }

    /// What a check of `kind` in a service of `mode` does unless told.
    pub fn default_for(mode: Mode, kind: &CheckKind) -> HealthVia {
        match (mode, kind) {
            (_, CheckKind::Exec { .. }) => HealthVia::Direct,
            (Mode::Ipip, _) => HealthVia::Tunnel,
            _ => HealthVia::Direct,
        }
    }
}

/// How the agent sends a probe through the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeRoute {
    /// `SO_MARK` of the probe's socket: names its path in the tc program.
    pub mark: u32,
    /// The address the probe's socket binds to (the director's own).
    pub source: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP handshake completes.
    Tcp,
    /// `GET path` answers with a status in `status`, and `body` in the body
    /// if set; over TLS if `tls` is set (kind "https").
    Http {
        path: String,
        /// The Host header; the target address if unset.
        host: Option<String>,
        status: RangeInclusive<u16>,
        body: Option<String>,
        tls: Option<TlsCheck>,
    },
    /// `payload` sent gets a reply (that contains `expect`, if set).
    Udp {
        payload: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// A query for `name` of type `qtype` is answered with NOERROR, over
    /// `transport` (the service's protocol: TCP with RFC 1035's length prefix).
    Dns {
        name: String,
        qtype: u16,
        transport: Protocol,
    },
    /// The command exits 0. Run with XLB_BACKEND_ADDR and XLB_BACKEND_PORT set.
    Exec { command: Vec<String> },
}

/// How an https check speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCheck {
    /// The server name sent (SNI), and the name a verified certificate must
    /// carry; `None`: no SNI, and the certificate must carry the probed address.
    pub sni: Option<String>,
    /// The certificate must chain to a trusted root and name the server;
    /// `false` accepts any (keepalived's SSL_GET).
    pub verify: bool,
    /// PEM certificates trusted instead of the system's store.
    pub ca_file: Option<PathBuf>,
}

impl AgentSettings {
    /// The flood guard's cap: as configured, or by default the rate at
    /// which all `cpus` together fill the flow table no faster than the
    /// UDP timeout empties it (so a flood cannot flush established flows),
    /// and at least [`MIN_FLOOD_GUARD`].
    pub fn new_flows_per_cpu(&self, tables: &Tables, cpus: u32) -> u32 {
        self.flood_guard.unwrap_or_else(|| {
            let per_second = tables.flow_entries as u64 / self.udp_timeout.as_secs().max(1);
            (per_second / u64::from(cpus.max(1))).max(MIN_FLOOD_GUARD.into()) as u32
        })
    }
}

/// The smallest default flood-guard cap, per CPU per second.
pub const MIN_FLOOD_GUARD: u32 = 1000;

impl Service {
    pub fn backend(&self, addr: SocketAddr) -> Option<&Backend> {
        self.backends.iter().find(|b| b.socket_addr() == addr)
    }
}

impl HealthCheck {
    /// The check of `backend`: its own target, where it has one, over the
    /// service's.
    pub fn for_backend(&self, backend: &Backend) -> HealthCheck {
        HealthCheck {
            address: backend.health.address.or(self.address),
            port: backend.health.port.or(self.port),
            ..self.clone()
        }
    }
}

impl Backend {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// A VRRP instance (keepalived's `vrrp_instance`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpInstance {
    /// Unique among instances; the API's handle.
    pub name: String,
    pub interface: String,
    /// 1..=255, shared by the routers of one virtual router on a link.
    pub vrid: u8,
    /// 1..=255; 255 means this router owns the addresses.
    pub priority: u8,
    pub version: Version,
    /// v3: 10 ms to 40.95 s in centiseconds; v2: 1 s to 255 s in seconds.
    pub advert_interval: Duration,
    /// All of one family; IPv6 only with v3.
    pub virtual_addresses: Vec<IpAddr>,
    /// Take over from a lower-priority master.
    pub preempt: bool,
    /// Wait this long after start-up before preempting.
    pub preempt_delay: Duration,
    /// VRRPv2 simple password (up to 8 bytes).
    pub auth_pass: Option<String>,
    /// Send to these instead of the multicast group, and accept only them.
    pub unicast_peers: Vec<IpAddr>,
    pub v3_checksum: V3Checksum,
    /// Gratuitous ARPs / unsolicited NAs sent on becoming master, and the
    /// gap between them.
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// A master announces its addresses again this often (keepalived's
    /// garp_master_refresh); `None`: only on taking over.
    pub garp_refresh: Option<Duration>,
    pub track: Vec<Track>,
    /// Run like keepalived's: `COMMAND... INSTANCE NAME STATE PRIORITY`.
    pub notify: Option<Vec<String>>,
}

/// What an instance's priority follows (keepalived's track_interface and
/// track_script): `weight` > 0 is added while the object is up, < 0 is
/// subtracted while it is down, 0 puts the instance in FAULT while down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub object: Tracked,
    pub weight: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// An interface's link state.
    Interface(String),
    /// This director's data plane: program attached, maps answering.
    Dataplane,
    /// A service having at least one backend that takes new flows.
    Service(String),
}

/// Instances that change state together (keepalived's vrrp_sync_group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    pub instances: Vec<String>,
}

/// A VRRP version.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// RFC 3768: IPv4 only, whole-second intervals, optional PASS authentication.
    V2,
    /// RFC 5798: IPv4 and IPv6, intervals in centiseconds.
    #[default]
    V3,
}

impl Version {
    /// Its spelling in the API (as serde spells it).
    pub const fn name(self) -> &'static str {
        match self {
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }
}

/// How a VRRPv3 advertisement over IPv4 is checksummed (RFC 5798 includes
/// the IPv4 pseudo-header; some older implementations leave it out). IPv6
/// always includes it, VRRPv2 never does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum V3Checksum {
    /// With the pseudo-header: RFC 5798, keepalived, tcpdump.
    #[default]
    PseudoHeader,
    /// Over the VRRP message alone.
    MessageOnly,
}

/// A choice spelled one way in the file, the API, the metrics and the
/// CLI: each value's spelling comes from its type's own `name`.
pub trait Spelled: Copy + PartialEq + 'static {
    /// Every value with its spelling; the first is the default.
    const SPELLINGS: &'static [(&'static str, Self)];

    fn as_str(self) -> &'static str {
        Self::SPELLINGS
            .iter()
            .find(|(_, value)| *value == self)
            .map(|(name, _)| *name)
            .expect("every value is spelled")
    }
}

/// Serde by spelling, for a [`Spelled`] type from elsewhere:
/// `#[serde(with = "crate::model::spelled")]`.
pub mod spelled {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use super::Spelled;

    pub fn serialize<T: Spelled, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_str())
    }

    /// Its schema in the API's OpenAPI document: one of the spellings.
    pub fn schema<T: Spelled>() -> utoipa::openapi::schema::Object {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(T::SPELLINGS.iter().map(|(name, _)| *name)))
            .build()
    }

    pub fn deserialize<'de, T: Spelled, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let name = String::deserialize(d)?;
        T::SPELLINGS
            .iter()
            .find(|(spelling, _)| *spelling == name)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let names: Vec<&str> = T::SPELLINGS.iter().map(|(name, _)| *name).collect();
                D::Error::custom(format!("{name:?} is not one of: {}", names.join(", ")))
            })
    }
}

macro_rules! spelled {
    ($type:ty: $($value:expr),+) => {
        impl Spelled for $type {
            const SPELLINGS: &'static [(&'static str, Self)] = &[$(($value.name(), $value)),+];
        }
    };
}

spelled!(Mode: Mode::Dr, Mode::Ipip, Mode::Nat);
spelled!(Protocol: Protocol::Tcp, Protocol::Udp);
spelled!(AttachMode: AttachMode::Native, AttachMode::Generic);
spelled!(AdminState: AdminState::Ready, AdminState::Drain, AdminState::Maint);
spelled!(OperState: OperState::Up, OperState::Down);
spelled!(HealthVia: HealthVia::Direct, HealthVia::Tunnel, HealthVia::Vip);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each spelling names one value, and each value has one.
    fn spelled_once<T: Spelled + std::fmt::Debug>(all: &[T]) {
        let names: std::collections::HashSet<&str> =
            T::SPELLINGS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), T::SPELLINGS.len(), "{:?}", T::SPELLINGS);
        for value in all {
            assert_eq!(
                T::SPELLINGS.iter().filter(|(_, v)| v == value).count(),
                1,
                "{value:?}"
            );
        }
    }

    #[test]
    fn every_choice_is_spelled_once() {
        spelled_once(&[Mode::Dr, Mode::Ipip, Mode::Nat]);
        spelled_once(&[Protocol::Tcp, Protocol::Udp]);
        spelled_once(&[AttachMode::Native, AttachMode::Generic]);
        spelled_once(&[AdminState::Ready, AdminState::Drain, AdminState::Maint]);
        spelled_once(&[OperState::Up, OperState::Down]);
        spelled_once(&[HealthVia::Direct, HealthVia::Tunnel, HealthVia::Vip]);
        // The API's JSON spells the states as the file does.
        for (name, state) in AdminState::SPELLINGS {
            assert_eq!(serde_json::to_value(state).unwrap(), *name);
        }
        for (name, state) in OperState::SPELLINGS {
            assert_eq!(serde_json::to_value(state).unwrap(), *name);
        }
    }

    #[test]
    fn spelled_choices_serialize_as_spelled() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Choices {
            #[serde(with = "spelled")]
            mode: Mode,
            #[serde(with = "spelled")]
            protocol: Protocol,
        }
        let choices = Choices {
            mode: Mode::Ipip,
            protocol: Protocol::Udp,
        };
        let json = serde_json::to_value(&choices).unwrap();
        assert_eq!(json, serde_json::json!({"mode": "ipip", "protocol": "udp"}));
        assert_eq!(serde_json::from_value::<Choices>(json).unwrap(), choices);
        let unknown = serde_json::json!({"mode": "gre", "protocol": "tcp"});
        let error = serde_json::from_value::<Choices>(unknown).unwrap_err();
        assert_eq!(error.to_string(), r#""gre" is not one of: dr, ipip, nat"#);
    }
}
