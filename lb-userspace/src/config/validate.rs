//! From [`Config`] to [`Model`]: each value checked under its field's
//! name ([`super::fields`]), then the whole model by [`rules::check`].

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{
    maglev::is_prime,
    maps::{
        Mode, DEFAULT_AFFINITY_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_BACKENDS,
        DEFAULT_MAX_SERVICES, DEFAULT_RING_SIZE,
    },
};

use super::{
    default_sni,
    fields::{
        choice, duration, duration_in, hash_seed, integer, ip, is_dns_name, is_interface_name,
        not_one_of, parsed, seconds, status_range, tunnel_source,
    },
    format_duration, full_prefix, AgentConfig, BackendConfig, BackendHealthConfig, Config,
    ConfigError, HealthConfig, PersistenceConfig, ServiceConfig, TablesConfig, DEFAULT_API_LISTEN,
    DEFAULT_FALL, DEFAULT_HTTP_PATH, DEFAULT_HTTP_STATUS, DEFAULT_ICMP_RATE, DEFAULT_INTERVAL,
    DEFAULT_MTU, DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_PIN_PATH, DEFAULT_RISE, DEFAULT_TIMEOUT,
    DEFAULT_UDP_TIMEOUT, DEFAULT_WEIGHT, DNS_TYPES, SCHEDULERS,
};
use crate::model::{
    rules, AdminState, Affinity, AgentSettings, AttachMode, Backend, CheckKind, CheckOverride,
    HealthCheck, HealthVia, Model, OperState, Protocol, Service, Spelled, Tables, TlsCheck,
    MIN_MTU_V4,
};

pub(super) const CHECK_KINDS: &[&str] = &["tcp", "http", "https", "udp", "dns", "exec"];

pub(super) fn config(config: &Config) -> Result<Model, ConfigError> {
    let agent = agent(&config.agent)?;
    let tables = tables(&config.tables)?;
    let services = config
        .services
        .iter()
        .enumerate()
        .map(|(index, raw)| service(raw, index))
        .collect::<Result<_, _>>()?;
    let (vrrp, sync_groups) = super::vrrp::validate(&config.vrrp)?;
    let model = Model {
        agent,
        tables,
        services,
        vrrp,
        sync_groups,
    };
    rules::check(&model)?;
    Ok(model)
}

fn agent(raw: &AgentConfig) -> Result<AgentSettings, ConfigError> {
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
    let state_file = raw.state_file.as_deref().map(PathBuf::from);
    if let Some(path) = state_file.as_ref().filter(|p| !p.is_absolute()) {
        return Err(ConfigError::new(
            "agent.state_file",
            format!("{:?} is not an absolute path", path.display()),
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
    Ok(AgentSettings {
        interfaces: raw.interfaces.clone(),
        xdp_mode,
        api_listen,
        api_token_file: raw.api_token_file.as_ref().map(PathBuf::from),
        pin_path: PathBuf::from(pin_path),
        state_file,
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

/// The service at `index` in the file, each value in its own form; the
/// rules between them are [`rules::check`]'s.
pub(super) fn service(raw: &ServiceConfig, index: usize) -> Result<Service, ConfigError> {
    let name = &raw.name;
    if !rules::is_service_name(name) {
        return Err(ConfigError::new(
            format!("service[{index}].name"),
            format!("{name:?} is not a valid name (1-64 characters of A-Z a-z 0-9 _ . -)"),
        ));
    }
    let path = format!("service[{name}]");
    let at = |key: &str| format!("{path}.{key}");
    let vip = ip(&at("vip"), &raw.vip)?;
    let mut service = Service {
        name: name.clone(),
        vip,
        port: integer(&at("port"), Some(raw.port), 0, 0..=65535)?,
        protocol: choice(
            &at("protocol"),
            raw.protocol.as_deref(),
            Protocol::SPELLINGS,
        )?,
        mode: choice(&at("mode"), raw.mode.as_deref(), Mode::SPELLINGS)?,
        affinity: None,
        fallback: None,
        health: None,
        backends: Vec::with_capacity(raw.backends.len()),
    };
    choice(&at("scheduler"), raw.scheduler.as_deref(), SCHEDULERS)?;
    service.affinity = raw
        .persistence
        .as_ref()
        .map(|p| affinity(p, &at("persistence"), vip))
        .transpose()?;
    if let Some(fallback) = &raw.fallback {
        service.fallback = Some(parsed(
            &at("fallback"),
            fallback,
            "an address and port (like \"198.18.1.99:80\" or \"[fd00::99]:80\")",
        )?);
    }
    service.health = raw
        .health
        .as_ref()
        .map(|h| health(h, &at("health"), &service))
        .transpose()?;
    for (index, raw) in raw.backends.iter().enumerate() {
        let backend = backend(raw, &format!("{path}.backend[{index}]"), &service)?;
        service.backends.push(backend);
    }
    Ok(service)
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

/// The backend at `path` of `service`, each value in its own form.
pub(super) fn backend(
    raw: &BackendConfig,
    path: &str,
    service: &Service,
) -> Result<Backend, ConfigError> {
    let port = match raw.port {
        Some(port) => u16::try_from(port).map_err(|_| {
            let problem = rules::port_problem(port, service).expect("not a port");
            ConfigError::new(format!("{path}.port"), problem)
        })?,
        None => service.port,
    };
    Ok(Backend {
        addr: ip(&format!("{path}.address"), &raw.address)?,
        port,
        weight: weight(&format!("{path}.weight"), raw.weight)?,
        admin_state: choice(
            &format!("{path}.state"),
            raw.state.as_deref(),
            AdminState::SPELLINGS,
        )?,
        health: raw
            .health
            .as_ref()
            .map(|own| check_override(own, &format!("{path}.health")))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// A backend's own check target at `path`; the rules between it and the
/// service's check are [`rules::check`]'s.
fn check_override(raw: &BackendHealthConfig, path: &str) -> Result<CheckOverride, ConfigError> {
    let at = |key: &str| format!("{path}.{key}");
    let own = CheckOverride {
        address: raw
            .address
            .as_deref()
            .map(|a| ip(&at("address"), a))
            .transpose()?,
        port: raw
            .port
            .map(|p| integer(&at("port"), Some(p), 0, 1..=65535))
            .transpose()?,
    };
    if own.is_empty() {
        return Err(ConfigError::new(
            path,
            "sets neither address nor port: leave it out to probe as the service's check does",
        ));
    }
    Ok(own)
}

/// A backend's weight, like `ipvsadm -w`.
pub(super) fn weight(field: &str, value: Option<i64>) -> Result<u16, ConfigError> {
    integer(field, value, DEFAULT_WEIGHT, 0..=65535)
}

/// The health check at `path` of `service` (its backends not yet read).
fn health(raw: &HealthConfig, path: &str, service: &Service) -> Result<HealthCheck, ConfigError> {
    let (service_port, mode, protocol) = (service.port, service.mode, service.protocol);
    let at = |key: &str| format!("{path}.{key}");
    let kind = raw.kind.as_str();
    if !CHECK_KINDS.contains(&kind) {
        return Err(not_one_of(&at("kind"), kind, CHECK_KINDS.iter().copied()));
    }
    // The keys only some kinds take: (key, set, kinds).
    const HTTP: &[&str] = &["http", "https"];
    let kind_keys: [(&str, bool, &[&str]); 12] = [
        ("path", raw.path.is_some(), HTTP),
        ("host", raw.host.is_some(), HTTP),
        ("status", raw.status.is_some(), HTTP),
        ("body", raw.body.is_some(), HTTP),
        ("sni", raw.sni.is_some(), &["https"]),
        ("verify", raw.verify.is_some(), &["https"]),
        ("ca_file", raw.ca_file.is_some(), &["https"]),
        ("payload", raw.payload.is_some(), &["udp"]),
        ("expect", raw.expect.is_some(), &["udp"]),
        ("query", raw.query.is_some(), &["dns"]),
        ("type", raw.query_type.is_some(), &["dns"]),
        ("command", raw.command.is_some(), &["exec"]),
    ];
    if let Some((key, _, owners)) = kind_keys
        .iter()
        .find(|(_, set, owners)| *set && !owners.contains(&kind))
    {
        let owners: Vec<String> = owners.iter().map(|o| format!("{o:?}")).collect();
        return Err(ConfigError::new(
            at(key),
            format!(
                "applies only to kind {}, not \"{kind}\"",
                owners.join(" or ")
            ),
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
        "http" => http_check(raw, &at, None)?,
        "https" => {
            let tls = tls_check(raw, &at)?;
            http_check(raw, &at, Some(tls))?
        }
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
                transport: protocol,
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

/// An https check's TLS: `sni` a DNS name ("" for none; unset, the `host`
/// key's name), `ca_file` an absolute path.
fn tls_check(raw: &HealthConfig, at: &dyn Fn(&str) -> String) -> Result<TlsCheck, ConfigError> {
    let sni = match raw.sni.as_deref() {
        None => default_sni(raw.host.as_deref()),
        Some("") => None,
        Some(name) if is_dns_name(name) && name.parse::<IpAddr>().is_err() => {
            Some(name.trim_end_matches('.').to_owned())
        }
        Some(name) => {
            return Err(ConfigError::new(
                at("sni"),
                format!(
                "{name:?} is not a DNS name (an address is verified without SNI; \"\" sends none)"
            ),
            ))
        }
    };
    let ca_file = match raw.ca_file.as_deref() {
        Some(path) if !Path::new(path).is_absolute() => {
            return Err(ConfigError::new(
                at("ca_file"),
                format!("{path:?} is not an absolute path"),
            ))
        }
        path => path.map(PathBuf::from),
    };
    let verify = raw.verify.unwrap_or(true);
    if !verify && ca_file.is_some() {
        return Err(ConfigError::new(
            at("ca_file"),
            "is for verifying certificates, and verify = false verifies none",
        ));
    }
    Ok(TlsCheck {
        sni,
        verify,
        ca_file,
    })
}

fn http_check(
    raw: &HealthConfig,
    at: &dyn Fn(&str) -> String,
    tls: Option<TlsCheck>,
) -> Result<CheckKind, ConfigError> {
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
        tls,
    })
}
