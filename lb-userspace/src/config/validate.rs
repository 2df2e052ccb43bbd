//! From [`Config`] to [`Model`]: each value checked under its field's
//! name, then the rules between fields and services, then the data plane's
//! own check as a backstop.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use lb_common::{
    maglev::is_prime,
    maps::{
        Mode, DEFAULT_AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_BACKENDS,
        DEFAULT_MAX_SERVICES, DEFAULT_RING_SIZE, MAX_TUNNEL_SPREAD_BITS,
    },
};

use super::{
    format_duration, full_prefix, spell, AgentConfig, BackendConfig, Config, ConfigError,
    HealthConfig, PersistenceConfig, ServiceConfig, TablesConfig, DEFAULT_API_LISTEN, DEFAULT_FALL,
    DEFAULT_HTTP_PATH, DEFAULT_HTTP_STATUS, DEFAULT_ICMP_RATE, DEFAULT_INTERVAL, DEFAULT_MTU,
    DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_PIN_PATH, DEFAULT_RISE, DEFAULT_TIMEOUT,
    DEFAULT_UDP_TIMEOUT, DEFAULT_WEIGHT, DNS_TYPES, SCHEDULERS,
};
use crate::dataplane::{
    services::{self, MIN_MTU_V4, MIN_MTU_V6},
    AttachMode, NextHop, Protocol, ServiceSpec,
};
use crate::model::{
    AdminState, Affinity, Agent, Backend, CheckKind, HealthCheck, HealthVia, Model, OperState,
    Service, Spelled, Tables,
};

const CHECK_KINDS: &[&str] = &["tcp", "http", "udp", "dns", "exec"];

const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) fn config(config: &Config) -> Result<Model, ConfigError> {
    let agent = agent(&config.agent)?;
    let tables = tables(&config.tables)?;
    let mut services = Vec::with_capacity(config.services.len());
    for (index, raw) in config.services.iter().enumerate() {
        let service = service(raw, index, &services, &agent)?;
        services.push(service);
    }
    capacity(&tables, &services)?;
    let (vrrp, sync_groups) = super::vrrp::validate(&config.vrrp, &services)?;
    let model = Model {
        agent,
        tables,
        services,
        vrrp,
        sync_groups,
    };
    data_plane_check(&model)?;
    Ok(model)
}

/// 1-64 characters of `A-Z a-z 0-9 _ . -`: safe in URLs and key paths.
pub(super) fn is_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn agent(raw: &AgentConfig) -> Result<Agent, ConfigError> {
    if raw.interfaces.is_empty() {
        return Err(ConfigError::new(
            "agent.interfaces",
            "at least one interface is required",
        ));
    }
    for (index, name) in raw.interfaces.iter().enumerate() {
        let field = format!("agent.interfaces[{index}]");
        if !is_interface_name(name) {
            return Err(ConfigError::new(
                field,
                format!("{name:?} is not an interface name (1-15 characters, no '/', ':' or whitespace)"),
            ));
        }
        if raw.interfaces[..index].contains(name) {
            return Err(ConfigError::new(field, format!("{name:?} is listed twice")));
        }
    }
    let xdp_mode = choice(
        "agent.xdp_mode",
        raw.xdp_mode.as_deref(),
        AttachMode::SPELLINGS,
    )?;
    let api_listen: SocketAddr = parsed(
        "agent.api_listen",
        raw.api_listen.as_deref().unwrap_or(DEFAULT_API_LISTEN),
        "an address and port (like \"127.0.0.1:9180\" or \"[::1]:9180\")",
    )?;
    if raw.api_token_file.is_none() && !api_listen.ip().is_loopback() {
        return Err(ConfigError::new(
            "agent.api_token_file",
            format!("a non-loopback API needs a token (api_listen = \"{api_listen}\")"),
        ));
    }
    let pin_path = raw.pin_path.as_deref().unwrap_or(DEFAULT_PIN_PATH);
    if !Path::new(pin_path).is_absolute() {
        return Err(ConfigError::new(
            "agent.pin_path",
            format!("{pin_path:?} is not an absolute path"),
        ));
    }
    let (tunnel_source_v4, tunnel_spread_v4) = tunnel_source::<Ipv4Addr>(
        "agent.tunnel_source_v4",
        raw.tunnel_source_v4.as_deref(),
        32,
        "an IPv4",
    )?;
    let (tunnel_source_v6, tunnel_spread_v6) = tunnel_source::<Ipv6Addr>(
        "agent.tunnel_source_v6",
        raw.tunnel_source_v6.as_deref(),
        128,
        "an IPv6",
    )?;
    Ok(Agent {
        interfaces: raw.interfaces.clone(),
        xdp_mode,
        api_listen,
        api_token_file: raw.api_token_file.as_ref().map(PathBuf::from),
        pin_path: PathBuf::from(pin_path),
        tunnel_source_v4,
        tunnel_source_v6,
        tunnel_spread_v4,
        tunnel_spread_v6,
        mtu: integer(
            "agent.mtu",
            raw.mtu,
            DEFAULT_MTU,
            i64::from(MIN_MTU_V4)..=65535,
        )?,
        udp_timeout: seconds(
            "agent.udp_timeout",
            raw.udp_timeout.as_deref(),
            DEFAULT_UDP_TIMEOUT,
        )?,
        hash_seed: raw
            .hash_seed
            .as_deref()
            .map(hash_seed)
            .transpose()?
            .unwrap_or(0),
        flood_guard: raw
            .flood_guard
            .map(|n| integer("agent.flood_guard", Some(n), 0, 0..=100_000_000))
            .transpose()?,
        icmp_rate: integer(
            "agent.icmp_rate",
            raw.icmp_rate,
            DEFAULT_ICMP_RATE,
            0..=1_000_000,
        )?,
    })
}

/// `0x` and 1-8 hex digits, as `xlb keygen` prints.
fn hash_seed(text: &str) -> Result<u32, ConfigError> {
    text.strip_prefix("0x")
        .filter(|hex| (1..=8).contains(&hex.len()))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            ConfigError::new(
                "agent.hash_seed",
                format!("{text:?} is not 0x and 1-8 hex digits (make one with `xlb keygen`)"),
            )
        })
}

/// What Linux takes as a network interface name.
pub(super) fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn tables(raw: &TablesConfig) -> Result<Tables, ConfigError> {
    let maglev_size = integer(
        "tables.maglev_size",
        raw.maglev_size,
        DEFAULT_RING_SIZE,
        3..=1_048_573,
    )?;
    if !is_prime(maglev_size) {
        return Err(ConfigError::new(
            "tables.maglev_size",
            format!("{maglev_size} is not prime"),
        ));
    }
    let max_services = integer(
        "tables.max_services",
        raw.max_services,
        DEFAULT_MAX_SERVICES,
        1..=4096,
    )?;
    if u64::from(max_services) * 2 * u64::from(maglev_size) > u64::from(u32::MAX) {
        return Err(ConfigError::new(
            "tables.max_services",
            format!(
                "{max_services} services with two rings of {maglev_size} slots each do not fit \
                 one map ({} slots); lower max_services or maglev_size",
                u32::MAX
            ),
        ));
    }
    Ok(Tables {
        maglev_size,
        max_services,
        max_backends: integer(
            "tables.max_backends",
            raw.max_backends,
            DEFAULT_MAX_BACKENDS,
            2..=1_048_576,
        )?,
        flow_entries: integer(
            "tables.flow_entries",
            raw.flow_entries,
            DEFAULT_FLOW_ENTRIES,
            1..=16_777_216,
        )?,
        affinity_entries: integer(
            "tables.affinity_entries",
            raw.affinity_entries,
            DEFAULT_AFFINITY_ENTRIES,
            1..=16_777_216,
        )?,
    })
}

/// The service at `index` in the file, checked against the `earlier` ones.
fn service(
    raw: &ServiceConfig,
    index: usize,
    earlier: &[Service],
    agent: &Agent,
) -> Result<Service, ConfigError> {
    let name = &raw.name;
    if !is_service_name(name) {
        return Err(ConfigError::new(
            format!("service[{index}].name"),
            format!("{name:?} is not a valid name (1-64 characters of A-Z a-z 0-9 _ . -)"),
        ));
    }
    if let Some(other) = earlier.iter().position(|s| s.name == *name) {
        return Err(ConfigError::new(
            format!("service[{index}].name"),
            format!("{name:?} is already the name of service[{other}]"),
        ));
    }
    let path = format!("service[{name}]");
    let at = |key: &str| format!("{path}.{key}");
    let vip = ip(&at("vip"), &raw.vip)?;
    if let Some(problem) = unusable(vip) {
        return Err(ConfigError::new(
            at("vip"),
            format!("{vip} is {problem}: a VIP must be a unicast address clients can reach"),
        ));
    }
    let port: u16 = integer(&at("port"), Some(raw.port), 0, 0..=65535)?;
    let protocol = choice(
        &at("protocol"),
        raw.protocol.as_deref(),
        Protocol::SPELLINGS,
    )?;
    let mode = choice(&at("mode"), raw.mode.as_deref(), Mode::SPELLINGS)?;
    if port == 0 && mode == Mode::Nat {
        return Err(ConfigError::new(
            at("port"),
            "0 (every port) is for modes dr and ipip; nat needs a port",
        ));
    }
    choice(&at("scheduler"), raw.scheduler.as_deref(), SCHEDULERS)?;
    let endpoint = format!(
        "{}/{}",
        SocketAddr::new(vip, port),
        spell_protocol(protocol)
    );
    if let Some(other) = earlier
        .iter()
        .find(|s| (s.vip, s.port, s.protocol) == (vip, port, protocol))
    {
        return Err(ConfigError::new(
            path.as_str(),
            format!("{endpoint} is already service[{}]", other.name),
        ));
    }
    if mode == Mode::Ipip && vip.is_ipv6() && agent.mtu < MIN_MTU_V6 {
        return Err(ConfigError::new(
            "agent.mtu",
            format!(
                "{} is below {MIN_MTU_V6}, too small to tunnel IPv6 for {path}",
                agent.mtu
            ),
        ));
    }
    let mut service = Service {
        name: name.clone(),
        vip,
        port,
        protocol,
        mode,
        affinity: raw
            .persistence
            .as_ref()
            .map(|p| affinity(p, &at("persistence"), vip))
            .transpose()?,
        fallback: None,
        health: None,
        backends: Vec::with_capacity(raw.backends.len()),
    };
    if let Some(fallback) = &raw.fallback {
        let field = at("fallback");
        let addr: SocketAddr = parsed(
            &field,
            fallback,
            "an address and port (like \"198.18.1.99:80\" or \"[fd00::99]:80\")",
        )?;
        if let Some(problem) = port_problem(addr.port().into(), &service) {
            return Err(ConfigError::new(
                field,
                format!("{fallback:?}: port {problem}"),
            ));
        }
        target_address(&field, addr.ip(), &service)?;
        target_rules(&field, addr, &service, earlier, agent)?;
        service.fallback = Some(addr);
    }
    service.health = raw
        .health
        .as_ref()
        .map(|h| health(h, &at("health"), port, service.mode))
        .transpose()?;
    for (index, raw) in raw.backends.iter().enumerate() {
        let backend = backend(
            raw,
            &format!("{path}.backend[{index}]"),
            &service,
            earlier,
            agent,
        )?;
        service.backends.push(backend);
    }
    Ok(service)
}

fn spell_protocol(protocol: Protocol) -> String {
    spell(Protocol::SPELLINGS, &protocol)
}

fn affinity(raw: &PersistenceConfig, path: &str, vip: IpAddr) -> Result<Affinity, ConfigError> {
    let full_prefix = full_prefix(vip);
    Ok(Affinity {
        timeout: seconds(
            &format!("{path}.timeout"),
            raw.timeout.as_deref(),
            DEFAULT_PERSISTENCE_TIMEOUT,
        )?,
        prefix_len: integer(
            &format!("{path}.netmask"),
            raw.netmask,
            full_prefix,
            1..=i64::from(full_prefix),
        )?,
    })
}

/// The backend at `path`, checked against the `service`'s backends so far.
fn backend(
    raw: &BackendConfig,
    path: &str,
    service: &Service,
    earlier: &[Service],
    agent: &Agent,
) -> Result<Backend, ConfigError> {
    let addr = ip(&format!("{path}.address"), &raw.address)?;
    target_address(&format!("{path}.address"), addr, service)?;
    let port = match raw.port {
        Some(port) => match port_problem(port, service) {
            Some(problem) => return Err(ConfigError::new(format!("{path}.port"), problem)),
            None => port as u16,
        },
        None => service.port,
    };
    let backend = Backend {
        addr,
        port,
        weight: integer(
            &format!("{path}.weight"),
            raw.weight,
            DEFAULT_WEIGHT,
            0..=65535,
        )?,
        admin: choice(
            &format!("{path}.state"),
            raw.state.as_deref(),
            AdminState::SPELLINGS,
        )?,
    };
    let target = backend.socket_addr();
    if let Some(other) = service
        .backends
        .iter()
        .position(|b| b.socket_addr() == target)
    {
        return Err(ConfigError::new(
            path,
            format!("{target} is also backend[{other}]"),
        ));
    }
    if service.fallback == Some(target) {
        return Err(ConfigError::new(
            path,
            format!("{target} is also the fallback"),
        ));
    }
    target_rules(path, target, service, earlier, agent)?;
    Ok(backend)
}

/// Why `addr` cannot be one host's address, if it cannot. Link-local
/// addresses are allowed: they work on the link they belong to.
fn unusable(addr: IpAddr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("the unspecified address")
    } else if addr.is_loopback() {
        Some("a loopback address")
    } else if addr.is_multicast() {
        Some("a multicast address")
    } else if addr == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast address")
    } else {
        None
    }
}

/// The address of a backend or fallback (at `field`): one other host.
fn target_address(field: &str, addr: IpAddr, service: &Service) -> Result<(), ConfigError> {
    if let Some(problem) = unusable(addr) {
        return Err(ConfigError::new(
            field,
            format!("{addr} is {problem}: a backend must be a unicast address of another host"),
        ));
    }
    if addr == service.vip {
        return Err(ConfigError::new(
            field,
            format!("{addr} is the service's VIP: a backend must be another host's own address"),
        ));
    }
    Ok(())
}

/// What is wrong with `port` for a backend or fallback of `service`.
fn port_problem(port: i64, service: &Service) -> Option<String> {
    if service.mode == Mode::Nat {
        (!(1..=65535).contains(&port)).then(|| format!("{port} is out of range 1-65535"))
    } else {
        (port != i64::from(service.port)).then(|| {
            format!(
                "{port} differs from the service port {}; only NAT translates ports",
                service.port
            )
        })
    }
}

/// The rules a backend or fallback `target` (at `field`) must meet:
/// address family, tunnel source, and one NAT service per address.
fn target_rules(
    field: &str,
    target: SocketAddr,
    service: &Service,
    earlier: &[Service],
    agent: &Agent,
) -> Result<(), ConfigError> {
    let addr = target.ip();
    let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    match service.mode {
        Mode::Dr | Mode::Nat if addr.is_ipv4() != service.vip.is_ipv4() => {
            return Err(ConfigError::new(
                field,
                format!(
                    "{addr} is {} but the VIP {} is {}",
                    family(addr),
                    service.vip,
                    family(service.vip)
                ),
            ));
        }
        Mode::Ipip if service.vip.is_ipv6() && addr.is_ipv4() => {
            return Err(ConfigError::new(
                field,
                format!("{addr} is IPv4: an IPv6 VIP cannot be tunnelled in IPv4"),
            ));
        }
        _ => {}
    }
    if service.mode == Mode::Ipip {
        let (source_field, has_source) = match addr {
            IpAddr::V4(_) => ("agent.tunnel_source_v4", agent.tunnel_source_v4.is_some()),
            IpAddr::V6(_) => ("agent.tunnel_source_v6", agent.tunnel_source_v6.is_some()),
        };
        if !has_source {
            return Err(ConfigError::new(
                source_field,
                format!(
                    "service[{}] tunnels to {addr}, which needs an {} tunnel source",
                    service.name,
                    family(addr)
                ),
            ));
        }
    }
    if service.mode == Mode::Nat {
        let owner = earlier.iter().find(|s| {
            s.mode == Mode::Nat
                && s.protocol == service.protocol
                && (s.fallback == Some(target) || s.backend(target).is_some())
        });
        if let Some(owner) = owner {
            return Err(ConfigError::new(
                field,
                format!(
                    "{target}/{} already serves NAT service[{}]; replies could not be told apart",
                    spell_protocol(service.protocol),
                    owner.name
                ),
            ));
        }
    }
    Ok(())
}

/// The health check at `path` of a service on `service_port`.
fn health(
    raw: &HealthConfig,
    path: &str,
    service_port: u16,
    mode: Mode,
) -> Result<HealthCheck, ConfigError> {
    let at = |key: &str| format!("{path}.{key}");
    let kind = raw.kind.as_str();
    if !CHECK_KINDS.contains(&kind) {
        return Err(not_one_of(&at("kind"), kind, CHECK_KINDS.iter().copied()));
    }
    // The keys only one kind takes: (key, set, kind).
    let kind_keys = [
        ("path", raw.path.is_some(), "http"),
        ("host", raw.host.is_some(), "http"),
        ("status", raw.status.is_some(), "http"),
        ("body", raw.body.is_some(), "http"),
        ("payload", raw.payload.is_some(), "udp"),
        ("expect", raw.expect.is_some(), "udp"),
        ("query", raw.query.is_some(), "dns"),
        ("type", raw.query_type.is_some(), "dns"),
        ("command", raw.command.is_some(), "exec"),
    ];
    if let Some((key, _, owner)) = kind_keys
        .iter()
        .find(|(_, set, owner)| *set && *owner != kind)
    {
        return Err(ConfigError::new(
            at(key),
            format!("applies only to kind \"{owner}\", not \"{kind}\""),
        ));
    }
    let interval = duration_in(
        &at("interval"),
        raw.interval.as_deref(),
        DEFAULT_INTERVAL,
        Duration::from_millis(10)..=Duration::from_secs(3600),
    )?;
    // Unset, the timeout is 1 s or the interval if that is shorter.
    let timeout = duration(
        &at("timeout"),
        raw.timeout.as_deref(),
        DEFAULT_TIMEOUT.min(interval),
    )?;
    if timeout.is_zero() {
        return Err(ConfigError::new(at("timeout"), "0s must be more than 0"));
    }
    if timeout > interval {
        return Err(ConfigError::new(
            at("timeout"),
            format!(
                "{} is longer than the interval {}",
                format_duration(timeout),
                format_duration(interval)
            ),
        ));
    }
    let rise = integer(&at("rise"), raw.rise, DEFAULT_RISE, 1..=100)?;
    let fall = integer(&at("fall"), raw.fall, DEFAULT_FALL, 1..=100)?;
    let address = raw
        .address
        .as_deref()
        .map(|a| ip(&at("address"), a))
        .transpose()?;
    let port = raw
        .port
        .map(|p| integer(&at("port"), Some(p), 0, 1..=65535))
        .transpose()?;
    if port.is_none() && service_port == 0 && kind != "exec" {
        return Err(ConfigError::new(
            at("port"),
            format!("a {kind} check of a service on every port (port = 0) needs a port"),
        ));
    }
    let initial = choice(&at("initial"), raw.initial.as_deref(), OperState::SPELLINGS)?;
    let kind = match kind {
        "tcp" => CheckKind::Tcp,
        "http" => http_check(raw, &at)?,
        "udp" => match raw.payload.as_deref() {
            Some(payload) if !payload.is_empty() => CheckKind::Udp {
                payload: payload.as_bytes().to_vec(),
                expect: raw.expect.as_ref().map(|e| e.as_bytes().to_vec()),
            },
            _ => {
                return Err(ConfigError::new(
                    at("payload"),
                    "kind \"udp\" needs a non-empty payload to send",
                ))
            }
        },
        "dns" => {
            let Some(name) = &raw.query else {
                return Err(ConfigError::new(
                    at("query"),
                    "kind \"dns\" needs a name to query",
                ));
            };
            if !is_dns_name(name) {
                return Err(ConfigError::new(
                    at("query"),
                    format!("{name:?} is not a DNS name"),
                ));
            }
            CheckKind::Dns {
                name: name.clone(),
                qtype: choice(&at("type"), raw.query_type.as_deref(), DNS_TYPES)?,
            }
        }
        _ => {
            let command = raw.command.clone().unwrap_or_default();
            let Some(program) = command.first() else {
                return Err(ConfigError::new(
                    at("command"),
                    "kind \"exec\" needs a command to run",
                ));
            };
            if !Path::new(program).is_absolute() {
                return Err(ConfigError::new(
                    at("command[0]"),
                    format!("{program:?} is not an absolute path"),
                ));
            }
            CheckKind::Exec { command }
        }
    };
    let via = health_via(raw, &at("via"), mode, &kind, address)?;
    Ok(HealthCheck {
        kind,
        interval,
        timeout,
        rise,
        fall,
        address,
        port,
        initial,
        via,
        route: None,
    })
}

/// `via`: the mode's default unless set; a tunnel for IP-in-IP only, the
/// VIP for direct routing only, neither for exec checks or with `address`.
fn health_via(
    raw: &HealthConfig,
    field: &str,
    mode: Mode,
    kind: &CheckKind,
    address: Option<IpAddr>,
) -> Result<HealthVia, ConfigError> {
    let Some(spelled) = raw.via.as_deref() else {
        return Ok(if address.is_some() {
            HealthVia::Direct
        } else {
            HealthVia::default_for(mode, kind)
        });
    };
    let via = choice(field, Some(spelled), HealthVia::SPELLINGS)?;
    let refuse = |why: &str| Err(ConfigError::new(field, format!("\"{spelled}\" {why}")));
    match via {
        HealthVia::Direct => return Ok(via),
        HealthVia::Tunnel if mode != Mode::Ipip => {
            return refuse("is for IP-in-IP services (mode = \"ipip\"); use \"direct\"")
        }
        HealthVia::Vip if mode != Mode::Dr => {
            return refuse("is for direct-routing services (mode = \"dr\"); use \"direct\"")
        }
        _ => {}
    }
    if matches!(kind, CheckKind::Exec { .. }) {
        return refuse("does not apply to kind \"exec\", which runs a command; use \"direct\"");
    }
    if address.is_some() {
        return refuse("probes the VIP, not `address`; use \"direct\" to probe an address");
    }
    Ok(via)
}

fn http_check(raw: &HealthConfig, at: &dyn Fn(&str) -> String) -> Result<CheckKind, ConfigError> {
    let path = raw.path.as_deref().unwrap_or(DEFAULT_HTTP_PATH);
    if !path.starts_with('/') {
        return Err(ConfigError::new(
            at("path"),
            format!("{path:?} does not start with '/'"),
        ));
    }
    let status = match raw.status.as_deref() {
        None => DEFAULT_HTTP_STATUS,
        Some(status) => status_range(status).ok_or_else(|| {
            ConfigError::new(
                at("status"),
                format!("{status:?} is not a status code or range of codes 100-599 (like \"200\" or \"200-399\")"),
            )
        })?,
    };
    Ok(CheckKind::Http {
        path: path.to_owned(),
        host: raw.host.clone(),
        status,
        body: raw.body.clone(),
    })
}

/// "200" or "200-399", codes 100-599.
fn status_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u16 = low.parse().ok()?;
    let high: u16 = high.parse().ok()?;
    let codes = 100..=599;
    (codes.contains(&low) && codes.contains(&high) && low <= high).then_some(low..=high)
}

/// Labels of 1-63 letters, digits, '-' or '_', 253 characters at most,
/// with or without the root's final dot.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn capacity(tables: &Tables, services: &[Service]) -> Result<(), ConfigError> {
    if services.len() > tables.max_services as usize {
        return Err(ConfigError::new(
            "tables.max_services",
            format!(
                "{} is fewer than the {} services configured",
                tables.max_services,
                services.len()
            ),
        ));
    }
    let backends: usize = services
        .iter()
        .map(|s| s.backends.len() + usize::from(s.fallback.is_some()))
        .sum();
    if backends >= tables.max_backends as usize {
        return Err(ConfigError::new(
            "tables.max_backends",
            format!(
                "{} is too small for {backends} backends, fallbacks included: it must be at \
                 least {} (id 0 is reserved)",
                tables.max_backends,
                backends + 1
            ),
        ));
    }
    Ok(())
}

/// The data plane's own check of what it will be given.
fn data_plane_check(model: &Model) -> Result<(), ConfigError> {
    let specs: Vec<ServiceSpec> = model
        .services
        .iter()
        .map(|s| {
            s.spec(
                s.backends
                    .iter()
                    .filter(|b| b.admin != AdminState::Maint)
                    .map(|b| b.spec(NextHop::default()))
                    .collect(),
            )
        })
        .collect();
    services::validate(
        &specs,
        &model.agent.director_settings(&model.tables),
        model.tables.max_services,
        model.tables.max_backends,
    )
    .map_err(|e| {
        let field = model
            .services
            .iter()
            .zip(&specs)
            .find(|(_, spec)| spec.name() == e.service)
            .map_or_else(
                || "service".to_owned(),
                |(s, _)| format!("service[{}]", s.name),
            );
        ConfigError::new(field, e.problem)
    })
}

/// `value` (or `default` when unset) as a `T` within `range`.
pub(super) fn integer<T: TryFrom<i64>>(
    field: &str,
    value: Option<i64>,
    default: T,
    range: RangeInclusive<i64>,
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    range
        .contains(&value)
        .then(|| T::try_from(value).ok())
        .flatten()
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("{value} is out of range {}-{}", range.start(), range.end()),
            )
        })
}

pub(super) fn ip(field: &str, value: &str) -> Result<IpAddr, ConfigError> {
    parsed(field, value, "an IP address")
}

/// `value` parsed as a `T`, or "`value` is not `what`".
/// A tunnel source, `ADDRESS` or `ADDRESS/LENGTH`: with a length, the
/// outer source of client packets varies per flow over the prefix's host
/// bits (at most [`MAX_TUNNEL_SPREAD_BITS`] of them); returns the address,
/// if set, and those bits.
fn tunnel_source<A: FromStr>(
    field: &str,
    text: Option<&str>,
    bits: u8,
    family: &str,
) -> Result<(Option<A>, u8), ConfigError> {
    let Some(text) = text else {
        return Ok((None, 0));
    };
    let what = format!("{family} address");
    let Some((addr, len)) = text.split_once('/') else {
        return Ok((Some(parsed(field, text, &what)?), 0));
    };
    let addr = parsed(field, addr, &what)?;
    let shortest = bits - MAX_TUNNEL_SPREAD_BITS;
    match len.parse::<u8>() {
        Ok(len) if (shortest..=bits).contains(&len) => Ok((Some(addr), bits - len)),
        _ => Err(ConfigError::new(
            field,
            format!(
                "{text:?}: the prefix length must be {shortest} to {bits} (at most {} \
                 sources a flow's outer address is chosen from)",
                1u32 << MAX_TUNNEL_SPREAD_BITS
            ),
        )),
    }
}

fn parsed<T: FromStr>(field: &str, value: &str, what: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(field, format!("{value:?} is not {what}")))
}

/// The value spelled `value` in `choices`; the first choice when unset.
pub(super) fn choice<T: Copy>(
    field: &str,
    value: Option<&str>,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(choices[0].1);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| not_one_of(field, value, choices.iter().map(|(name, _)| *name)))
}

fn not_one_of<'a>(field: &str, value: &str, names: impl Iterator<Item = &'a str>) -> ConfigError {
    let names: Vec<&str> = names.collect();
    ConfigError::new(
        field,
        format!("{value:?} is not one of: {}", names.join(", ")),
    )
}

fn duration(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    humantime::parse_duration(value).map_err(|_| {
        ConfigError::new(
            field,
            format!("{value:?} is not a duration (like \"2s\", \"500ms\" or \"1m30s\")"),
        )
    })
}

pub(super) fn duration_in(
    field: &str,
    value: Option<&str>,
    default: Duration,
    range: RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let duration = duration(field, value, default)?;
    if !range.contains(&duration) {
        return Err(ConfigError::new(
            field,
            format!(
                "{} is out of range {}-{}",
                format_duration(duration),
                format_duration(*range.start()),
                format_duration(*range.end())
            ),
        ));
    }
    Ok(duration)
}

/// A whole number of seconds from 1 s to a day.
fn seconds(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let seconds = duration_in(field, value, default, Duration::from_secs(1)..=ONE_DAY)?;
    if seconds.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            field,
            format!(
                "{} is not a whole number of seconds",
                format_duration(seconds)
            ),
        ));
    }
    Ok(seconds)
}
