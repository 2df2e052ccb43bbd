//! The rules a whole model keeps, between fields, services and sections:
//! the one check the file, the API's edits and reloads all go through.
//! Each value's own form (a number in range, an address that parses) is
//! the file's concern and already held when a model exists.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb_common::maps::Mode;

use super::{
    AgentSettings, Backend, HealthVia, Model, Service, Spelled, Tables, Tracked, MIN_MTU_V6,
};

/// A rule a model breaks: where, as the file's key path, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            message: message.into(),
        }
    }
}

type Checked = Result<(), Violation>;

/// The first rule `model` breaks, in file order.
pub fn check(model: &Model) -> Checked {
    for (index, service) in model.services.iter().enumerate() {
        service_rules(service, index, &model.services[..index], &model.agent)?;
    }
    capacity(&model.tables, &model.services)?;
    tracked_services(model)
}

/// 1-64 characters of `A-Z a-z 0-9 _ . -`: safe in URLs and key paths.
pub fn is_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What is wrong with `port` for a backend or fallback of `service`.
pub fn port_problem(port: i64, service: &Service) -> Option<String> {
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

/// The service at `index`, against the `earlier` ones.
fn service_rules(
    service: &Service,
    index: usize,
    earlier: &[Service],
    agent: &AgentSettings,
) -> Checked {
    let name = &service.name;
    if !is_service_name(name) {
        return Err(Violation::new(
            format!("service[{index}].name"),
            format!("{name:?} is not a valid name (1-64 characters of A-Z a-z 0-9 _ . -)"),
        ));
    }
    if let Some(other) = earlier.iter().position(|s| s.name == *name) {
        return Err(Violation::new(
            format!("service[{index}].name"),
            format!("{name:?} is already the name of service[{other}]"),
        ));
    }
    let path = format!("service[{name}]");
    let at = |key: &str| format!("{path}.{key}");
    let vip = service.vip;
    if let Some(problem) = unusable(vip) {
        return Err(Violation::new(
            at("vip"),
            format!("{vip} is {problem}: a VIP must be a unicast address clients can reach"),
        ));
    }
    if service.port == 0 && service.mode == Mode::Nat {
        return Err(Violation::new(
            at("port"),
            "0 (every port) is for modes dr and ipip; nat needs a port",
        ));
    }
    let endpoint = (vip, service.port, service.protocol);
    if let Some(other) = earlier
        .iter()
        .find(|s| (s.vip, s.port, s.protocol) == endpoint)
    {
        return Err(Violation::new(
            path.as_str(),
            format!(
                "{}/{} is already service[{}]",
                SocketAddr::new(vip, service.port),
                service.protocol.as_str(),
                other.name
            ),
        ));
    }
    if service.mode == Mode::Ipip && vip.is_ipv6() && agent.mtu < MIN_MTU_V6 {
        return Err(Violation::new(
            "agent.mtu",
            format!(
                "{} is below {MIN_MTU_V6}, too small to tunnel IPv6 for {path}",
                agent.mtu
            ),
        ));
    }
    if let Some(fallback) = service.fallback {
        let field = at("fallback");
        if let Some(problem) = port_problem(fallback.port().into(), service) {
            return Err(Violation::new(
                field,
                format!("\"{fallback}\": port {problem}"),
            ));
        }
        target_address(&|| field.clone(), fallback.ip(), service)?;
        target_rules(&|| field.clone(), fallback, service, earlier, agent)?;
    }
    // Each backend's first index, to name the earlier of two alike.
    let mut first = std::collections::HashMap::with_capacity(service.backends.len());
    for (index, backend) in service.backends.iter().enumerate() {
        // Made only for a message: a model has thousands of backends.
        let path = || format!("{path}.backend[{index}]");
        target_address(&|| format!("{}.address", path()), backend.addr, service)?;
        if let Some(problem) = port_problem(backend.port.into(), service) {
            return Err(Violation::new(format!("{}.port", path()), problem));
        }
        let target = backend.socket_addr();
        if let Some(other) = first.insert(target, index) {
            return Err(Violation::new(
                path(),
                format!("{target} is also backend[{other}]"),
            ));
        }
        if service.fallback == Some(target) {
            return Err(Violation::new(
                path(),
                format!("{target} is also the fallback"),
            ));
        }
        target_rules(&path, target, service, earlier, agent)?;
        check_override_rules(&|| format!("{}.health", path()), backend, service)?;
    }
    Ok(())
}

/// A backend's own check target (at `field()`): of a service with a
/// check; its address of the backend's family, and only for a check that
/// probes addresses (not the VIP through the data path).
fn check_override_rules(
    field: &dyn Fn() -> String,
    backend: &Backend,
    service: &Service,
) -> Checked {
    let own = backend.health;
    if own.is_empty() {
        return Ok(());
    }
    let Some(check) = &service.health else {
        return Err(Violation::new(
            field(),
            "the service has no health check ([service.health]) to aim elsewhere",
        ));
    };
    let Some(address) = own.address else {
        return Ok(());
    };
    let field = format!("{}.address", field());
    let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    if address.is_ipv4() != backend.addr.is_ipv4() {
        return Err(Violation::new(
            field,
            format!(
                "{address} is {} but the backend {} is {}",
                family(address),
                backend.addr,
                family(backend.addr)
            ),
        ));
    }
    if check.via != HealthVia::Direct {
        return Err(Violation::new(
            field,
            format!(
                "the service's check probes the VIP (via = \"{}\"): an address of the \
                 backend's own needs via = \"direct\"",
                check.via.name()
            ),
        ));
    }
    Ok(())
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

/// The address of a backend or fallback (at `field()`): one other host.
fn target_address(field: &dyn Fn() -> String, addr: IpAddr, service: &Service) -> Checked {
    if let Some(problem) = unusable(addr) {
        return Err(Violation::new(
            field(),
            format!("{addr} is {problem}: a backend must be a unicast address of another host"),
        ));
    }
    if addr == service.vip {
        return Err(Violation::new(
            field(),
            format!("{addr} is the service's VIP: a backend must be another host's own address"),
        ));
    }
    Ok(())
}

/// The rules a backend or fallback `target` (at `field()`) must meet:
/// address family, tunnel source, and one NAT service per address.
fn target_rules(
    field: &dyn Fn() -> String,
    target: SocketAddr,
    service: &Service,
    earlier: &[Service],
    agent: &AgentSettings,
) -> Checked {
    let addr = target.ip();
    let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    match service.mode {
        Mode::Dr | Mode::Nat if addr.is_ipv4() != service.vip.is_ipv4() => {
            return Err(Violation::new(
                field(),
                format!(
                    "{addr} is {} but the VIP {} is {}",
                    family(addr),
                    service.vip,
                    family(service.vip)
                ),
            ));
        }
        Mode::Ipip if service.vip.is_ipv6() && addr.is_ipv4() => {
            return Err(Violation::new(
                field(),
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
            return Err(Violation::new(
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
            return Err(Violation::new(
                field(),
                format!(
                    "{target}/{} already serves NAT service[{}]; replies could not be told apart",
                    service.protocol.as_str(),
                    owner.name
                ),
            ));
        }
    }
    Ok(())
}

/// The data plane's maps hold every service and backend.
fn capacity(tables: &Tables, services: &[Service]) -> Checked {
    if services.len() > tables.max_services as usize {
        return Err(Violation::new(
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
        return Err(Violation::new(
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

/// VRRP tracks only services that exist.
fn tracked_services(model: &Model) -> Checked {
    for instance in &model.vrrp {
        for (index, track) in instance.track.iter().enumerate() {
            let Tracked::Service(name) = &track.object else {
                continue;
            };
            if !model.services.iter().any(|s| &s.name == name) {
                return Err(Violation::new(
                    format!("vrrp.instance[{}].track[{index}].service", instance.name),
                    format!("no service is named {name:?}"),
                ));
            }
        }
    }
    Ok(())
}
