//! Every key of the file, with its default and whether a reload applies a
//! change of it: the one list `xlb.toml(5)` is written from. The tests
//! check it against the file's structs and against what a reload refuses.

use std::time::Duration;

use lb_common::maps::{
    Mode, DEFAULT_AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_BACKENDS,
    DEFAULT_MAX_SERVICES, DEFAULT_RING_SIZE,
};

use super::{
    format_duration,
    validate::CHECK_KINDS,
    vrrp::{
        CHECKSUMS, DEFAULT_ADVERT_INTERVAL, DEFAULT_GARP_COUNT, DEFAULT_GARP_INTERVAL, VERSIONS,
    },
    DEFAULT_API_LISTEN, DEFAULT_FALL, DEFAULT_HTTP_PATH, DEFAULT_HTTP_STATUS, DEFAULT_ICMP_RATE,
    DEFAULT_INTERVAL, DEFAULT_MTU, DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_PIN_PATH, DEFAULT_RISE,
    DEFAULT_TIMEOUT, DEFAULT_UDP_TIMEOUT, DEFAULT_WEIGHT, DNS_TYPES, SCHEDULERS,
};
use crate::model::{AdminState, AttachMode, OperState, Protocol, Spelled, MIN_FLOOD_GUARD};

/// When a changed value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// `xlb reload` (SIGHUP, `systemctl reload xlb`) applies it.
    Reload,
    /// A reload that changes it is refused; `xlb run` must start again.
    Restart,
}

impl Applies {
    pub fn as_str(self) -> &'static str {
        match self {
            Applies::Reload => "reload",
            Applies::Restart => "restart",
        }
    }
}

/// One key of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Its path without indices: `agent.mtu`, `service.backend.weight`.
    pub path: &'static str,
    /// The value when it is left out, as TOML (`1500`, `"2s"`), or in words
    /// (`required`, `unset`, `the service's port`).
    pub default: String,
    pub applies: Applies,
    /// What it sets, in one or two sentences.
    pub about: String,
}

/// The tables of the file, in the order [`keys`] lists them, with what
/// each holds.
pub const SECTIONS: &[(&str, &str)] = &[
    ("agent", "[agent]: the director"),
    (
        "tables",
        "[tables]: data-plane sizes, fixed when the program is loaded",
    ),
    ("service", "[[service]]: a virtual server"),
    (
        "service.persistence",
        "service.persistence: source-address affinity",
    ),
    (
        "service.health",
        "[service.health]: the backends' health check",
    ),
    ("service.backend", "[[service.backend]]: a real server"),
    (
        "service.backend.health",
        "[service.backend.health]: where this backend's check probes",
    ),
    (
        "vrrp.instance",
        "[[vrrp.instance]]: addresses that fail over by VRRP",
    ),
    (
        "vrrp.instance.track",
        "vrrp.instance.track: what lowers the priority",
    ),
    (
        "vrrp.sync_group",
        "[[vrrp.sync_group]]: instances that change state together",
    ),
];

/// Every key, section by section as [`SECTIONS`] orders them.
pub fn keys() -> Vec<Key> {
    use Applies::{Reload, Restart};
    let required = || "required".to_owned();
    let unset = || "unset".to_owned();
    let quoted = |text: &str| format!("{text:?}");
    let duration = |d: Duration| quoted(&format_duration(d));
    let key = |path, default, applies, about: &str| Key {
        path,
        default,
        applies,
        about: about.to_owned(),
    };
    vec![
        key("agent.interfaces", required(), Reload,
            "Interfaces the XDP program is attached to: where the VIPs' traffic arrives, and where \
             NAT backends' replies arrive."),
        key("agent.xdp_mode", quoted(AttachMode::SPELLINGS[0].0), Restart,
            &format!("{} \"native\" runs in the driver, \"generic\" with any driver, slower.",
                one_of(AttachMode::SPELLINGS))),
        key("agent.api_listen", quoted(DEFAULT_API_LISTEN), Restart,
            "Address and port of the HTTP API; a non-loopback address needs api_token_file."),
        key("agent.api_token_file", unset(), Restart,
            "A file holding the token that API changes need."),
        key("agent.pin_path", quoted(DEFAULT_PIN_PATH), Restart,
            "Directory on a bpffs where the program and its maps are pinned."),
        key("agent.state_file", "the file's path with the extension .state".to_owned(), Restart,
            "Where changes made through the API (weights, drains, added and removed services \
             and backends) are kept; they are applied over this file at every start and reload."),
        key("agent.tunnel_source_v4", unset(), Reload,
            "Outer IPv4 source of IP-in-IP packets; with a prefix length (/24 to /32) each flow \
             leaves from an address of the prefix."),
        key("agent.tunnel_source_v6", unset(), Reload,
            "Outer IPv6 source of IP-in-IP packets; with a prefix length (/120 to /128) each flow \
             leaves from an address of the prefix."),
        key("agent.mtu", DEFAULT_MTU.to_string(), Reload,
            "The largest packet the backends' link carries."),
        key("agent.udp_timeout", duration(DEFAULT_UDP_TIMEOUT), Reload,
            "A UDP flow idle this long may go to another backend."),
        key("agent.hash_seed", quoted(&super::format_hash_seed(0)), Reload,
            "Seed of the flow hash, the same on every director (xlb keygen makes one)."),
        key("agent.flood_guard",
            format!("sized from tables.flow_entries and udp_timeout, at least {MIN_FLOOD_GUARD}"),
            Reload,
            "New flows one CPU records per second; past it new flows are forwarded without flow \
             state. 0 turns it off."),
        key("agent.icmp_rate", DEFAULT_ICMP_RATE.to_string(), Reload,
            "ICMP \"too big\" answers one CPU sends per second (0: no limit)."),
        key("tables.maglev_size", DEFAULT_RING_SIZE.to_string(), Restart,
            "Slots of each service's consistent-hash ring: a prime, much larger than the number \
             of backends."),
        key("tables.max_services", DEFAULT_MAX_SERVICES.to_string(), Restart,
            "The most services at once."),
        key("tables.max_backends", DEFAULT_MAX_BACKENDS.to_string(), Restart,
            "The most backends over all services, fallbacks included."),
        key("tables.flow_entries", DEFAULT_FLOW_ENTRIES.to_string(), Restart,
            "Connections tracked at once."),
        key("tables.affinity_entries", DEFAULT_AFFINITY_ENTRIES.to_string(), Restart,
            "Clients remembered for persistence."),
        key("service.name", required(), Reload,
            "The service's name: 1-64 characters of A-Z a-z 0-9 _ . -."),
        key("service.vip", required(), Reload, "The virtual IP address, IPv4 or IPv6."),
        key("service.port", required(), Reload,
            "The virtual port; 0 takes every port."),
        key("service.protocol", quoted(Protocol::SPELLINGS[0].0), Reload,
            &one_of(Protocol::SPELLINGS)),
        key("service.mode", quoted(Mode::SPELLINGS[0].0), Reload,
            &format!("{} Direct routing, IP-in-IP or NAT.", one_of(Mode::SPELLINGS))),
        key("service.scheduler", quoted(SCHEDULERS[0].0), Reload,
            &format!("{} Consistent hashing (Maglev).", one_of(SCHEDULERS))),
        key("service.fallback", unset(), Reload,
            "An address and port that takes the traffic while no backend is up."),
        key("service.persistence.timeout", duration(DEFAULT_PERSISTENCE_TIMEOUT), Reload,
            "A client stays on its backend until idle this long (whole seconds)."),
        key("service.persistence.netmask", "the VIP's full prefix (32 or 128)".to_owned(), Reload,
            "A prefix length: clients in one such prefix share a backend."),
        key("service.health.kind", required(), Reload,
            &format!("{} The keys after via belong to the kinds they name (https takes \
                those of http too).", names(CHECK_KINDS))),
        key("service.health.interval", duration(DEFAULT_INTERVAL), Reload,
            "Time between two checks of a backend."),
        key("service.health.timeout",
            format!("{} or the interval if shorter", duration(DEFAULT_TIMEOUT)), Reload,
            "How long a check may take."),
        key("service.health.rise", DEFAULT_RISE.to_string(), Reload,
            "Good checks in a row that bring a backend up."),
        key("service.health.fall", DEFAULT_FALL.to_string(), Reload,
            "Failed checks in a row that take a backend down."),
        key("service.health.address", "the backend's address".to_owned(), Reload,
            "The address probed instead of the backend's."),
        key("service.health.port", "the backend's port".to_owned(), Reload,
            "The port probed instead of the backend's."),
        key("service.health.initial", quoted(OperState::SPELLINGS[0].0), Reload,
            &format!("{} A new backend's state before its first check.",
                one_of(OperState::SPELLINGS))),
        key("service.health.via", "\"tunnel\" for ipip services, else \"direct\"".to_owned(),
            Reload,
            "\"direct\" probes the backend's address, \"tunnel\" the VIP through IP-in-IP, \
             \"vip\" the VIP by direct routing."),
        key("service.health.path", quoted(DEFAULT_HTTP_PATH), Reload,
            "http, https: the path asked for."),
        key("service.health.host", "the probed address and port".to_owned(), Reload,
            "http, https: the Host header."),
        key("service.health.status",
            quoted(&format!("{}-{}", DEFAULT_HTTP_STATUS.start(), DEFAULT_HTTP_STATUS.end())),
            Reload, "http, https: the status codes that pass, a code or a range."),
        key("service.health.body", unset(), Reload,
            "http, https: text the answer must contain to pass."),
        key("service.health.sni", "the host key's name, if it is a DNS name".to_owned(), Reload,
            "https: the server name sent (SNI) and verified; \"\" sends none, and a verified \
             certificate must then name the probed address."),
        key("service.health.verify", "true".to_owned(), Reload,
            "https: the certificate must chain to a trusted CA and name the server; false accepts \
             any (keepalived's SSL_GET)."),
        key("service.health.ca_file", "the system's store (/etc/ssl/certs)".to_owned(), Reload,
            "https: a PEM file of the CA certificates trusted instead (absolute path)."),
        key("service.health.payload", "required by this kind".to_owned(), Reload,
            "udp: the datagram sent."),
        key("service.health.expect", unset(), Reload,
            "udp: text the answer must contain; unset, any answer passes."),
        key("service.health.query", "required by this kind".to_owned(), Reload,
            "dns: the name asked for, over the service's protocol (TCP with a length prefix, or \
             UDP)."),
        key("service.health.type", quoted(DNS_TYPES[0].0), Reload,
            &format!("dns: the query type. {}", one_of(DNS_TYPES))),
        key("service.health.command", "required by this kind".to_owned(), Reload,
            "exec: a program (absolute path) and its arguments; exit status 0 passes."),
        key("service.backend.address", required(), Reload, "The real server's address."),
        key("service.backend.port", "the service's port".to_owned(), Reload,
            "The real server's port (NAT may map the service's port to another)."),
        key("service.backend.weight", DEFAULT_WEIGHT.to_string(), Reload,
            "Its share of new connections; 0 takes none."),
        key("service.backend.state", quoted(AdminState::SPELLINGS[0].0), Reload,
            &format!("{} \"drain\" takes no new connections, \"maint\" no traffic.",
                one_of(AdminState::SPELLINGS))),
        key("service.backend.health.address", "the service's check address".to_owned(), Reload,
            "This backend's check probes this address (of its family) instead: keepalived's \
             connect_ip, HAProxy's addr. Only for checks with via = \"direct\"."),
        key("service.backend.health.port", "the service's check port".to_owned(), Reload,
            "This backend's check probes this port instead: keepalived's connect_port, HAProxy's \
             port."),
        key("vrrp.instance.name", required(), Restart, "The instance's name."),
        key("vrrp.instance.interface", required(), Restart,
            "The interface advertisements are sent and received on."),
        key("vrrp.instance.vrid", required(), Restart, "The virtual router id, 1-255."),
        key("vrrp.instance.priority", required(), Reload,
            "1-255; the highest becomes master, 255 owns the addresses (a change to or from 255 \
             needs a restart)."),
        key("vrrp.instance.version", VERSIONS[0].0.to_string(), Restart,
            &format!("The VRRP version. {}", names(VERSIONS.iter().map(|(v, _)| v)))),
        key("vrrp.instance.advert_interval", duration(DEFAULT_ADVERT_INTERVAL), Restart,
            "Time between two advertisements of the master."),
        key("vrrp.instance.virtual_addresses", required(), Reload,
            "The addresses that move with the master, of one family (a change of family needs a \
             restart). A reload adds and removes them on a master without a failover."),
        key("vrrp.instance.preempt", "true".to_owned(), Restart,
            "Take the addresses back from a master of lower priority."),
        key("vrrp.instance.preempt_delay", duration(Duration::ZERO), Restart,
            "How long to wait before preempting."),
        key("vrrp.instance.auth_pass", unset(), Reload,
            "VRRPv2's password, 1-8 bytes."),
        key("vrrp.instance.unicast_peers", "[] (multicast)".to_owned(), Reload,
            "Peers advertisements are sent to instead of the multicast group."),
        key("vrrp.instance.v3_checksum", quoted(CHECKSUMS[0].0), Restart,
            "VRRPv3 over IPv4: \"pseudo_header\" (RFC 5798) or \"message_only\" (some older \
             implementations)."),
        key("vrrp.instance.garp_count", DEFAULT_GARP_COUNT.to_string(), Reload,
            "Gratuitous ARPs (or neighbour advertisements) sent on becoming master."),
        key("vrrp.instance.garp_interval", duration(DEFAULT_GARP_INTERVAL), Reload,
            "Time between them."),
        key("vrrp.instance.garp_refresh", unset(), Reload,
            "Repeat them this often while master."),
        key("vrrp.instance.notify", unset(), Reload,
            "A command run on each state change, with INSTANCE, the name, the state and the \
             priority appended."),
        key("vrrp.instance.track.interface", unset(), Reload,
            "Track this interface: down, the priority changes by weight."),
        key("vrrp.instance.track.dataplane", unset(), Reload,
            "true: track the data plane (attached and its maps answering)."),
        key("vrrp.instance.track.service", unset(), Reload,
            "Track this service: down while no backend takes new flows."),
        key("vrrp.instance.track.weight", "0".to_owned(), Reload,
            "Above 0, added to the priority while the object is up; below 0, subtracted while it \
             is down; 0 puts the instance in FAULT while it is down."),
        key("vrrp.sync_group.name", required(), Restart, "The group's name."),
        key("vrrp.sync_group.instances", required(), Restart,
            "Instances that are master together or not at all."),
    ]
}

/// "One of: a, b, c." for a key's choices.
fn one_of<T>(choices: &[(&str, T)]) -> String {
    names(choices.iter().map(|(name, _)| name))
}

fn names<T: std::fmt::Display>(names: impl IntoIterator<Item = T>) -> String {
    let names: Vec<String> = names.into_iter().map(|name| name.to_string()).collect();
    format!("One of: {}.", names.join(", "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{keys, SECTIONS};
    use crate::config::{
        AgentConfig, BackendConfig, BackendHealthConfig, Config, HealthConfig, InstanceConfig,
        PersistenceConfig, ServiceConfig, SyncGroupConfig, TablesConfig, TrackConfig, VrrpConfig,
    };

    /// A file with every key set (no `..Default::default()`, so that a new
    /// field fails to compile here until it is listed).
    fn every_key() -> Config {
        let text = || String::from("x");
        Config {
            agent: AgentConfig {
                interfaces: vec![text()],
                xdp_mode: Some(text()),
                api_listen: Some(text()),
                api_token_file: Some(text()),
                pin_path: Some(text()),
                state_file: Some(text()),
                tunnel_source_v4: Some(text()),
                tunnel_source_v6: Some(text()),
                mtu: Some(1),
                udp_timeout: Some(text()),
                hash_seed: Some(text()),
                flood_guard: Some(1),
                icmp_rate: Some(1),
            },
            tables: TablesConfig {
                maglev_size: Some(1),
                max_services: Some(1),
                max_backends: Some(1),
                flow_entries: Some(1),
                affinity_entries: Some(1),
            },
            services: vec![ServiceConfig {
                name: text(),
                vip: text(),
                port: 1,
                protocol: Some(text()),
                mode: Some(text()),
                scheduler: Some(text()),
                fallback: Some(text()),
                persistence: Some(PersistenceConfig {
                    timeout: Some(text()),
                    netmask: Some(1),
                }),
                health: Some(HealthConfig {
                    kind: text(),
                    interval: Some(text()),
                    timeout: Some(text()),
                    rise: Some(1),
                    fall: Some(1),
                    address: Some(text()),
                    port: Some(1),
                    initial: Some(text()),
                    via: Some(text()),
                    path: Some(text()),
                    host: Some(text()),
                    status: Some(text()),
                    body: Some(text()),
                    sni: Some(text()),
                    verify: Some(true),
                    ca_file: Some(text()),
                    payload: Some(text()),
                    expect: Some(text()),
                    query: Some(text()),
                    query_type: Some(text()),
                    command: Some(vec![text()]),
                }),
                backends: vec![BackendConfig {
                    address: text(),
                    port: Some(1),
                    weight: Some(1),
                    state: Some(text()),
                    health: Some(BackendHealthConfig {
                        address: Some(text()),
                        port: Some(1),
                    }),
                }],
            }],
            vrrp: VrrpConfig {
                instances: vec![InstanceConfig {
                    name: text(),
                    interface: text(),
                    vrid: 1,
                    priority: 1,
                    version: Some(1),
                    advert_interval: Some(text()),
                    virtual_addresses: vec![text()],
                    preempt: Some(true),
                    preempt_delay: Some(text()),
                    auth_pass: Some(text()),
                    unicast_peers: vec![text()],
                    v3_checksum: Some(text()),
                    garp_count: Some(1),
                    garp_interval: Some(text()),
                    garp_refresh: Some(text()),
                    track: vec![TrackConfig {
                        interface: Some(text()),
                        dataplane: Some(true),
                        service: Some(text()),
                        weight: Some(1),
                    }],
                    notify: Some(vec![text()]),
                }],
                sync_groups: vec![SyncGroupConfig {
                    name: text(),
                    instances: vec![text()],
                }],
            },
        }
    }

    /// The paths of the values in `table`: into tables and arrays of
    /// tables, not into arrays of values.
    fn leaves(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (name, value) in table {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => leaves(&path, inner, out),
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                    for item in items {
                        leaves(&path, item.as_table().expect("a table"), out);
                    }
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn every_key_of_the_file_is_listed_once() {
        let written: toml::Table = toml::from_str(&every_key().to_toml()).unwrap();
        let mut in_file = BTreeSet::new();
        leaves("", &written, &mut in_file);
        let listed: Vec<&str> = keys().iter().map(|k| k.path).collect();
        let listed_set: BTreeSet<String> = listed.iter().map(|p| p.to_string()).collect();
        assert_eq!(listed.len(), listed_set.len(), "a key is listed twice");
        assert_eq!(listed_set, in_file);
    }

    #[test]
    fn keys_come_section_by_section() {
        let section_of = |path: &str| path.rsplit_once('.').expect("in a section").0.to_owned();
        let order: Vec<String> = keys().iter().map(|k| section_of(k.path)).collect();
        let mut sections: Vec<String> = order.clone();
        sections.dedup();
        let named: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(sections, named);
    }
}
