//! The agent's TOML configuration: the file as written ([`Config`]), checked
//! into the [`Model`] the agent runs from, and written back from a model
//! (`GET /api/v1/config`, to save and restore like `ipvsadm -S` / `-R`).
//!
//! Addresses, names and numbers stay strings and `i64` here, so that a bad
//! value is reported by [`Config::validate`] with its field and value
//! rather than by serde.

mod fields;
mod key_path;
pub mod keys;
mod state;
#[cfg(test)]
pub(crate) mod tests;
mod validate;
mod vrrp;

use std::{fs, net::IpAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use lb_common::maps::{
    Mode, DEFAULT_AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_BACKENDS,
    DEFAULT_MAX_SERVICES, DEFAULT_RING_SIZE,
};

use crate::model::{
    rules::Violation, AdminState, AttachMode, Backend, CheckKind, HealthCheck, HealthVia, Model,
    OperState, Protocol, Service, Spelled,
};
pub use state::{load_effective, state_path, Applied, BackendChanges, RuntimeState};
pub use vrrp::{InstanceConfig, SyncGroupConfig, TrackConfig, VrrpConfig};

/// The file as written: every key optional where a default exists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default, skip_serializing_if = "TablesConfig::is_default")]
    pub tables: TablesConfig,
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    #[serde(default, skip_serializing_if = "VrrpConfig::is_empty")]
    pub vrrp: VrrpConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_source_v4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_source_v6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood_guard: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_rate: Option<i64>,
}

/// Data-plane sizes, fixed when the program is loaded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maglev_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_services: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backends: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_entries: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_entries: Option<i64>,
}

/// A `[[service]]`; also the JSON body of `POST /api/v1/services`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    pub vip: String,
    #[schema(minimum = 0, maximum = 65535)]
    pub port: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    /// `[[service.backend]]` in TOML; JSON bodies may say `backends`.
    #[serde(
        default,
        rename = "backend",
        alias = "backends",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub backends: Vec<BackendConfig>,
}

/// A `[[service.backend]]`; also the JSON body of
/// `POST /api/v1/services/{name}/backends`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 65535)]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 65535)]
    pub weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Its own health-check target, over the service's check `address` and `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<BackendHealthConfig>,
}

/// `[service.backend.health]` (or `health = { ... }`): where this
/// backend's check probes (keepalived's connect_ip/connect_port, HAProxy's
/// `addr`/`port` on a server line).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendHealthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
}

/// `[service.health]`: the keys after `via` belong to some kinds only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// "direct", "tunnel" (IP-in-IP) or "vip" (direct routing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// http
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// https
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// udp
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// dns
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    /// exec
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// Source-address affinity (IPVS `-p TIMEOUT -M NETMASK`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// A prefix length: 24 keeps a client's /24 on one backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<i64>,
}

/// A configuration that cannot be used: the field (a key path like
/// `service[web].backend[1].weight`, or `config`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<Violation> for ConfigError {
    fn from(v: Violation) -> Self {
        ConfigError {
            field: v.path,
            message: v.message,
        }
    }
}

const DEFAULT_API_LISTEN: &str = "127.0.0.1:9180";
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xlb";
const DEFAULT_MTU: u32 = 1500;
/// ICMP messages one CPU sends per second (Linux's icmp_msgs_per_sec).
const DEFAULT_ICMP_RATE: u32 = 1000;

/// A hash seed as `xlb keygen` prints it and the file holds it.
pub fn format_hash_seed(seed: u32) -> String {
    format!("{seed:#010x}")
}
const DEFAULT_UDP_TIMEOUT: Duration =
    Duration::from_secs(lb_common::maps::DEFAULT_UDP_TIMEOUT_S as u64);
/// `ipvsadm -p`'s default.
const DEFAULT_PERSISTENCE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const DEFAULT_HTTP_PATH: &str = "/";
const DEFAULT_HTTP_STATUS: std::ops::RangeInclusive<u16> = 200..=399;
const DEFAULT_WEIGHT: u16 = 1;

/// The spelling of each choice the model does not spell itself, for
/// parsing and for writing back; the first is the default.
const SCHEDULERS: &[(&str, ())] = &[("maglev", ())];
const DNS_TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("AAAA", 28),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("SRV", 33),
    ("ANY", 255),
];

/// The spelling of `value` in `choices`.
fn spelling<T: PartialEq>(choices: &[(&'static str, T)], value: &T) -> Option<&'static str> {
    choices
        .iter()
        .find(|(_, v)| v == value)
        .map(|(name, _)| *name)
}

/// The spelling of an enum value (every variant is in its table).
fn spell<T: PartialEq>(choices: &[(&'static str, T)], value: &T) -> String {
    spelling(choices, value)
        .expect("every variant has a spelling")
        .to_owned()
}

/// `value`, or `None` when it is the default (to write compact files).
fn unless_default<T: PartialEq>(value: T, default: T) -> Option<T> {
    (value != default).then_some(value)
}

/// The prefix length of one address: persistence's default netmask.
fn full_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// Reads the TOML text: syntax, unknown keys and wrong types are
    /// reported here, values by [`Config::validate`].
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| key_path::error(text, &e))
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Model, ConfigError> {
        let text = fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Config::parse(&text)?.validate()
    }

    /// Checks every value and rule; the first error in file order wins.
    pub fn validate(&self) -> Result<Model, ConfigError> {
        validate::config(self)
    }

    /// The file that validates to `model`, leaving out defaults.
    pub fn from_model(model: &Model) -> Config {
        let agent = &model.agent;
        let tables = &model.tables;
        let table_size = |value: u32, default: u32| unless_default(value, default).map(i64::from);
        Config {
            agent: AgentConfig {
                interfaces: agent.interfaces.clone(),
                xdp_mode: unless_default(agent.xdp_mode, AttachMode::SPELLINGS[0].1)
                    .map(|m| spell(AttachMode::SPELLINGS, &m)),
                api_listen: Some(agent.api_listen.to_string())
                    .filter(|listen| listen != DEFAULT_API_LISTEN),
                api_token_file: agent
                    .api_token_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                pin_path: Some(agent.pin_path.to_string_lossy().into_owned())
                    .filter(|path| path != DEFAULT_PIN_PATH),
                state_file: agent
                    .state_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                tunnel_source_v4: agent
                    .tunnel_source_v4
                    .map(|a| with_spread(a.into(), agent.tunnel_spread_v4)),
                tunnel_source_v6: agent
                    .tunnel_source_v6
                    .map(|a| with_spread(a.into(), agent.tunnel_spread_v6)),
                mtu: unless_default(agent.mtu, DEFAULT_MTU).map(i64::from),
                udp_timeout: unless_default(agent.udp_timeout, DEFAULT_UDP_TIMEOUT)
                    .map(format_duration),
                hash_seed: unless_default(agent.hash_seed, 0).map(format_hash_seed),
                flood_guard: agent.flood_guard.map(i64::from),
                icmp_rate: unless_default(agent.icmp_rate, DEFAULT_ICMP_RATE).map(i64::from),
            },
            tables: TablesConfig {
                maglev_size: table_size(tables.maglev_size, DEFAULT_RING_SIZE),
                max_services: table_size(tables.max_services, DEFAULT_MAX_SERVICES),
                max_backends: table_size(tables.max_backends, DEFAULT_MAX_BACKENDS),
                flow_entries: table_size(tables.flow_entries, DEFAULT_FLOW_ENTRIES),
                affinity_entries: table_size(tables.affinity_entries, DEFAULT_AFFINITY_ENTRIES),
            },
            services: model
                .services
                .iter()
                .map(ServiceConfig::from_model)
                .collect(),
            vrrp: vrrp::from_model(&model.vrrp, &model.sync_groups),
        }
    }

    /// The file's text (defaults left out when made by [`Config::from_model`]).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config has only strings, integers and tables")
    }
}

impl TablesConfig {
    fn is_default(&self) -> bool {
        *self == TablesConfig::default()
    }
}

impl ServiceConfig {
    /// The service as the model has it, to be the model's `index`th; each
    /// value is checked, the rules between them are [`crate::model::rules`]'.
    pub fn to_model(&self, index: usize) -> Result<Service, ConfigError> {
        validate::service(self, index)
    }

    pub fn from_model(s: &Service) -> Self {
        ServiceConfig {
            name: s.name.clone(),
            vip: s.vip.to_string(),
            port: s.port.into(),
            protocol: unless_default(s.protocol, Protocol::SPELLINGS[0].1)
                .map(|p| spell(Protocol::SPELLINGS, &p)),
            mode: unless_default(s.mode, Mode::SPELLINGS[0].1).map(|m| spell(Mode::SPELLINGS, &m)),
            scheduler: None,
            fallback: s.fallback.map(|a| a.to_string()),
            persistence: s.affinity.map(|a| PersistenceConfig {
                timeout: unless_default(a.timeout, DEFAULT_PERSISTENCE_TIMEOUT)
                    .map(format_duration),
                netmask: unless_default(a.prefix_len, full_prefix(s.vip)).map(i64::from),
            }),
            health: s
                .health
                .as_ref()
                .map(|h| HealthConfig::from_model(h, s.mode)),
            backends: s
                .backends
                .iter()
                .map(|b| {
                    let mut backend = BackendConfig::from_model(b);
                    if b.port == s.port {
                        backend.port = None;
                    }
                    backend
                })
                .collect(),
        }
    }
}

impl BackendConfig {
    /// The backend (at key path `path`) of `service` as the model has it.
    pub fn to_model(&self, path: &str, service: &Service) -> Result<Backend, ConfigError> {
        validate::backend(self, path, service)
    }

    /// A backend's weight (at key path `field`), as the file takes it.
    pub fn weight(field: &str, value: i64) -> Result<u16, ConfigError> {
        validate::weight(field, Some(value))
    }

    /// The backend with its port spelled out (a service may leave it out
    /// when it is the service's).
    pub fn from_model(b: &Backend) -> Self {
        BackendConfig {
            address: b.addr.to_string(),
            port: Some(b.port.into()),
            weight: unless_default(b.weight, DEFAULT_WEIGHT).map(i64::from),
            state: unless_default(b.admin_state, AdminState::SPELLINGS[0].1)
                .map(|s| spell(AdminState::SPELLINGS, &s)),
            health: (!b.health.is_empty()).then(|| BackendHealthConfig {
                address: b.health.address.map(|a| a.to_string()),
                port: b.health.port.map(i64::from),
            }),
        }
    }
}

impl HealthConfig {
    fn from_model(h: &HealthCheck, mode: Mode) -> Self {
        let common = HealthConfig {
            kind: String::new(),
            interval: unless_default(h.interval, DEFAULT_INTERVAL).map(format_duration),
            timeout: unless_default(h.timeout, DEFAULT_TIMEOUT.min(h.interval))
                .map(format_duration),
            rise: unless_default(h.rise, DEFAULT_RISE).map(i64::from),
            fall: unless_default(h.fall, DEFAULT_FALL).map(i64::from),
            address: h.address.map(|a| a.to_string()),
            port: h.port.map(i64::from),
            initial: unless_default(h.initial, OperState::SPELLINGS[0].1)
                .map(|s| spell(OperState::SPELLINGS, &s)),
            via: unless_default(h.via, HealthVia::default_for(mode, &h.kind))
                .map(|v| spell(HealthVia::SPELLINGS, &v)),
            ..HealthConfig::default()
        };
        match &h.kind {
            CheckKind::Tcp => HealthConfig {
                kind: "tcp".into(),
                ..common
            },
            CheckKind::Http {
                path,
                host,
                status,
                body,
                tls,
            } => HealthConfig {
                kind: if tls.is_some() { "https" } else { "http" }.into(),
                path: Some(path.clone()).filter(|p| p != DEFAULT_HTTP_PATH),
                host: host.clone(),
                status: unless_default(status.clone(), DEFAULT_HTTP_STATUS).map(|s| {
                    if s.start() == s.end() {
                        s.start().to_string()
                    } else {
                        format!("{}-{}", s.start(), s.end())
                    }
                }),
                body: body.clone(),
                // "" says: no SNI, where `host` would give one.
                sni: tls.as_ref().and_then(|tls| {
                    (tls.sni != default_sni(host.as_deref()))
                        .then(|| tls.sni.clone().unwrap_or_default())
                }),
                verify: tls
                    .as_ref()
                    .and_then(|tls| unless_default(tls.verify, true)),
                ca_file: tls
                    .as_ref()
                    .and_then(|tls| tls.ca_file.as_ref())
                    .map(|p| p.to_string_lossy().into_owned()),
                ..common
            },
            CheckKind::Udp { payload, expect } => HealthConfig {
                kind: "udp".into(),
                payload: Some(String::from_utf8_lossy(payload).into_owned()),
                expect: expect
                    .as_ref()
                    .map(|e| String::from_utf8_lossy(e).into_owned()),
                ..common
            },
            CheckKind::Dns { name, qtype, .. } => HealthConfig {
                kind: "dns".into(),
                query: Some(name.clone()),
                query_type: unless_default(*qtype, DNS_TYPES[0].1)
                    .map(|t| spelling(DNS_TYPES, &t).map_or_else(|| t.to_string(), str::to_owned)),
                ..common
            },
            CheckKind::Exec { command } => HealthConfig {
                kind: "exec".into(),
                command: Some(command.clone()),
                ..common
            },
        }
    }
}

/// An https check's server name unless `sni` says: the `host` key's name
/// (less a port), if it is a DNS name rather than an address.
fn default_sni(host: Option<&str>) -> Option<String> {
    let host = host?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() && !name.contains(':') => name,
        _ => host,
    };
    (name.parse::<IpAddr>().is_err() && fields::is_dns_name(name))
        .then(|| name.trim_end_matches('.').to_owned())
}

/// A tunnel source as the file spells it: `ADDRESS`, or `ADDRESS/LENGTH`
/// when `spread` host bits vary per flow.
fn with_spread(addr: std::net::IpAddr, spread: u8) -> String {
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    match spread {
        0 => addr.to_string(),
        spread => format!("{addr}/{}", bits - spread),
    }
}
