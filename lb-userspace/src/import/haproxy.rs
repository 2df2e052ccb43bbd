//! haproxy.cfg: `frontend`/`backend`/`listen` sections with `bind`,
//! `server` lines and source stick tables. HAProxy is a proxy: its
//! servers see the director's address and answer it, so each service
//! becomes NAT (addresses rewritten both ways, ports translated).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use super::{own_target, service_name, without_target, Imported};
use crate::config::{BackendConfig, HealthConfig, PersistenceConfig, ServiceConfig};

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "cache",
    "mailers",
    "program",
    "http-errors",
    "ring",
];

/// One line: its number, text and words (comments left out).
struct Line<'a> {
    number: usize,
    text: &'a str,
    words: Vec<&'a str>,
}

struct Section<'a> {
    header: Line<'a>,
    lines: Vec<Line<'a>>,
}

impl Section<'_> {
    fn kind(&self) -> &str {
        self.header.words[0]
    }

    fn name(&self) -> &str {
        self.header.words.get(1).copied().unwrap_or_default()
    }
}

/// What a `backend` or `listen` section gives its services.
#[derive(Default, Clone)]
struct Pool {
    backends: Vec<BackendConfig>,
    /// The first `backup` server: its address, and its port if given.
    fallback: Option<(IpAddr, Option<u16>)>,
    health: Option<HealthConfig>,
    persistence: Option<PersistenceConfig>,
}

/// Settings of `defaults` that later sections start from.
#[derive(Default, Clone)]
struct Defaults {
    server: Vec<String>,
    check_timeout: Option<String>,
}

fn sections<'a>(out: &mut Imported, text: &'a str) -> Vec<Section<'a>> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, text) in text.lines().enumerate() {
        let code = text.split('#').next().unwrap_or_default();
        let words: Vec<&str> = code.split_whitespace().collect();
        let line = Line {
            number: index + 1,
            text,
            words,
        };
        match line.words.first() {
            None => {}
            Some(word) if SECTIONS.contains(word) => sections.push(Section {
                header: line,
                lines: Vec::new(),
            }),
            Some(_) => match sections.last_mut() {
                Some(section) => section.lines.push(line),
                None => out.report(line.number, text, "outside any section: not carried over"),
            },
        }
    }
    sections
}

pub fn convert(text: &str) -> Imported {
    let mut out = Imported::default();
    let sections = sections(&mut out, text);
    let mut defaults = Defaults::default();
    // The defaults each section starts from, and the backends by name
    // (frontends name them before or after).
    let mut in_effect = Vec::with_capacity(sections.len());
    let mut pools: HashMap<&str, Pool> = HashMap::new();
    for section in &sections {
        in_effect.push(defaults.clone());
        match section.kind() {
            "defaults" => defaults = read_defaults(&mut out, section),
            "backend" => {
                let pool = pool(&mut out, section, &defaults, &mut unsupported);
                pools.insert(section.name(), pool);
            }
            _ => {}
        }
    }
    let mut used = Vec::new();
    for (section, defaults) in sections.iter().zip(&in_effect) {
        match section.kind() {
            "defaults" | "backend" => {}
            "frontend" => {
                if let Some(name) = frontend(&mut out, section, &pools) {
                    used.push(name);
                }
            }
            "listen" => listen(&mut out, section, defaults),
            kind => {
                let reason =
                    format!("`{kind}` section: xlb has no such settings; not carried over");
                report(&mut out, &section.header, &reason);
                for line in &section.lines {
                    report(&mut out, line, &reason);
                }
            }
        }
    }
    for section in &sections {
        if section.kind() == "backend" && !used.contains(&section.name()) {
            let reason = "no frontend's default_backend: its servers are not carried over";
            report(&mut out, &section.header, reason);
            for line in section.lines.iter().filter(|l| l.words[0] == "server") {
                report(&mut out, line, reason);
            }
        }
    }
    out
}

fn report(out: &mut Imported, line: &Line, reason: impl Into<String>) {
    out.report(line.number, line.text, reason);
}

fn unsupported(out: &mut Imported, line: &Line) {
    let reason = match line.words[0] {
        "stats" => "the stats page: xlb's status page is served by its API; not carried over",
        "timeout" | "maxconn" | "retries" | "log" | "option" => {
            "proxy settings: xlb forwards packets and has none; not carried over"
        }
        _ => "xlb has no such setting; not carried over",
    };
    report(out, line, reason);
}

/// `mode`: tcp as it is, http reported (xlb balances connections).
fn mode(out: &mut Imported, line: &Line) {
    if line.words.get(1) == Some(&"http") {
        report(
            out,
            line,
            "xlb balances connections (layer 4): HTTP processing is not carried over; served as TCP",
        );
    }
}

fn read_defaults(out: &mut Imported, section: &Section) -> Defaults {
    let mut defaults = Defaults::default();
    for line in &section.lines {
        match line.words.as_slice() {
            ["mode", ..] => mode(out, line),
            ["default-server", options @ ..] => {
                defaults.server = options.iter().map(|o| o.to_string()).collect()
            }
            ["timeout", "check", value] => defaults.check_timeout = Some(duration(value)),
            ["balance", algorithm, ..] => balance(out, line, algorithm),
            _ => unsupported(out, line),
        }
    }
    defaults
}

fn balance(out: &mut Imported, line: &Line, algorithm: &str) {
    let reason = match algorithm {
        "source" => "balance source mapped to maglev, which hashes each connection, not only \
                     the client address: add a stick table on src to keep a client on one server"
            .to_owned(),
        other => format!(
            "balance {other} mapped to maglev with the weights: connections are spread by hash"
        ),
    };
    report(out, line, reason);
}

/// A HAProxy time (`2s`, `500ms`, or a bare number of milliseconds).
fn duration(value: &str) -> String {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        format!("{value}ms")
    } else {
        value.to_owned()
    }
}

/// The servers, check and stick table of a `backend` or `listen`; lines it
/// does not know go to `other`.
fn pool(
    out: &mut Imported,
    section: &Section,
    defaults: &Defaults,
    other: &mut dyn FnMut(&mut Imported, &Line),
) -> Pool {
    let mut pool = Pool::default();
    let mut http_check: Option<String> = None;
    let mut status = None;
    let mut check_timeout = defaults.check_timeout.clone();
    let mut stick_table = None;
    let mut stick_on_src = None;
    let mut default_server = defaults.server.clone();
    let mut servers = Vec::new();
    for line in &section.lines {
        match line.words.as_slice() {
            ["balance", algorithm, ..] => balance(out, line, algorithm),
            ["mode", ..] => mode(out, line),
            ["option", "httpchk", .., uri] if uri.starts_with('/') => {
                http_check = Some(uri.to_string())
            }
            ["option", "httpchk"] => http_check = Some("/".into()),
            ["http-check", "expect", "status", code] => status = Some(code.to_string()),
            ["timeout", "check", value] => check_timeout = Some(duration(value)),
            ["default-server", options @ ..] => {
                default_server = options.iter().map(|o| o.to_string()).collect()
            }
            ["stick-table", ..] => stick_table = Some(line),
            ["stick", "on", "src", ..] => stick_on_src = Some(line),
            ["server", ..] => servers.push(line),
            _ => other(out, line),
        }
    }
    let expire = stick_table.and_then(|line| {
        let words = &line.words;
        let is_ip = words
            .windows(2)
            .any(|w| w == ["type", "ip"] || w == ["type", "ipv6"]);
        let expire = words
            .windows(2)
            .find(|w| w[0] == "expire")
            .map(|w| duration(w[1]));
        if !is_ip || expire.is_none() {
            report(out, line, "not `type ip ... expire TIME`: not carried over");
            return None;
        }
        if line.words.contains(&"peers") {
            report(
                out,
                line,
                "peers: xlb's directors share no persistence table; each keeps its own",
            );
        }
        expire
    });
    match (expire, stick_on_src) {
        (Some(timeout), Some(_)) => {
            pool.persistence = Some(PersistenceConfig {
                timeout: Some(timeout),
                netmask: None,
            })
        }
        (Some(_), None) => {
            let line = stick_table.expect("an expiry comes from a table");
            report(out, line, "no `stick on src`: not carried over");
        }
        (None, Some(line)) => report(
            out,
            line,
            "no `stick-table type ip ... expire`: not carried over",
        ),
        (None, None) => {}
    }
    let mut first_check: Option<HealthConfig> = None;
    for line in servers {
        let Some((backend, check, backup)) = server(out, line, &default_server) else {
            continue;
        };
        let target = (
            backend
                .address
                .parse()
                .expect("server() made it from an IpAddr"),
            backend.port.and_then(|p| u16::try_from(p).ok()),
        );
        let mut backend = backend;
        if let Some(mut check) = check {
            match &http_check {
                Some(path) => {
                    if check.kind == "tcp" {
                        check.kind = "http".into();
                    }
                    check.path = Some(path.clone()).filter(|p| p != "/");
                    check.status = status.clone();
                }
                None if check.kind == "https" => {
                    report(
                        out,
                        line,
                        "check-ssl without `option httpchk` checks a TLS handshake alone: \
                         checked by a TCP connection",
                    );
                    check = HealthConfig {
                        kind: "tcp".into(),
                        verify: None,
                        ca_file: None,
                        sni: None,
                        ..check
                    };
                }
                None => {}
            }
            check.timeout = check_timeout.clone();
            match &first_check {
                None => first_check = Some(check),
                Some(first) if without_target(first) != without_target(&check) => report(
                    out,
                    line,
                    "its check differs from the first server's: xlb checks every backend of a \
                     service alike; the first one's is used",
                ),
                // Alike but for where it probes (`addr`, `port`): its own target.
                Some(first) => match own_target(first, &check, &backend.address, backend.port) {
                    Ok(own) => backend.health = own,
                    Err(()) => report(
                        out,
                        line,
                        "its check probes the port the server is reached on, which the line \
                         does not give, unlike the first server's `port`: not carried over",
                    ),
                },
            }
        }
        if backup {
            match &pool.fallback {
                None => {
                    pool.fallback = Some(target);
                    continue;
                }
                Some(_) => report(
                    out,
                    line,
                    "a second backup server: xlb has one fallback; served as a normal server",
                ),
            }
        }
        pool.backends.push(backend);
    }
    pool.health = first_check;
    pool
}

/// A `server NAME ADDR[:PORT] OPTIONS...` line (after `default-server`'s
/// options): the backend, its check if `check` is on, and whether it is
/// a `backup`.
fn server(
    out: &mut Imported,
    line: &Line,
    defaults: &[String],
) -> Option<(BackendConfig, Option<HealthConfig>, bool)> {
    let target = line.words.get(2).copied().unwrap_or_default();
    let (address, port) = match target.parse::<SocketAddr>() {
        Ok(addr) => (addr.ip(), Some(i64::from(addr.port()))),
        Err(_) => match target.parse::<IpAddr>() {
            Ok(ip) => (ip, None),
            Err(_) => {
                report(out, line, "not a numeric address: not carried over");
                return None;
            }
        },
    };
    let mut backend = BackendConfig {
        address: address.to_string(),
        port,
        ..BackendConfig::default()
    };
    let mut check = None;
    let mut health = HealthConfig {
        kind: "tcp".into(),
        ..HealthConfig::default()
    };
    let mut backup = false;
    let options: Vec<&str> = defaults
        .iter()
        .map(String::as_str)
        .chain(line.words[3..].iter().copied())
        .collect();
    let mut options = options.into_iter();
    let mut ignored = Vec::new();
    while let Some(option) = options.next() {
        match option {
            "check" => check = Some(()),
            // The check over TLS (HAProxy's check-ssl): verified as `verify`
            // says, against `ca-file`, for `check-sni`'s name.
            "check-ssl" => health.kind = "https".into(),
            "verify" | "ca-file" | "check-sni" => {
                let Some(value) = options.next() else { break };
                match option {
                    "verify" => health.verify = Some(value != "none"),
                    "ca-file" => health.ca_file = Some(value.to_owned()),
                    _ => health.sni = Some(value.to_owned()),
                }
            }
            "backup" => backup = true,
            "disabled" => backend.state = Some("maint".into()),
            "inter" | "rise" | "fall" | "weight" | "port" | "addr" => {
                let Some(value) = options.next() else { break };
                let number = value.parse::<i64>().ok();
                match option {
                    "inter" => health.interval = Some(duration(value)),
                    "rise" => health.rise = number,
                    "fall" => health.fall = number,
                    "weight" => backend.weight = number.filter(|&w| w != 1),
                    "port" => health.port = number,
                    _ => health.address = Some(value.to_owned()),
                }
            }
            "maxconn" | "minconn" | "maxqueue" | "slowstart" | "downinter" | "fastinter"
            | "cookie" | "on-error" | "on-marked-down" | "resolvers" | "init-addr" => {
                ignored.push(format!("{option} {}", options.next().unwrap_or_default()))
            }
            other => ignored.push(other.to_owned()),
        }
    }
    if health.kind != "https" {
        // Options of a check over TLS, for one that is not.
        let verifying = [
            health
                .verify
                .take()
                .map(|v| format!("verify {}", if v { "required" } else { "none" })),
            health.ca_file.take().map(|f| format!("ca-file {f}")),
            health.sni.take().map(|n| format!("check-sni {n}")),
        ];
        ignored.extend(verifying.into_iter().flatten());
    }
    if !ignored.is_empty() {
        report(
            out,
            line,
            format!(
                "{}: xlb has no such server settings; not carried over",
                ignored.join(", ")
            ),
        );
    }
    Some((backend, check.map(|()| health), backup))
}

/// The addresses `words` bind (`ADDR:PORT[,ADDR:PORT...] [OPTIONS]`) on
/// `line`; each one left out is reported.
fn binds(out: &mut Imported, line: &Line, words: &[&str]) -> Vec<(IpAddr, u16)> {
    let mut found = Vec::new();
    let targets = words.first().copied().unwrap_or_default();
    for target in targets.split(',') {
        match target.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_unspecified() => found.push((addr.ip(), addr.port())),
            _ => report(
                out,
                line,
                format!("{target}: xlb needs a VIP and one port (not *, a range or a name); not carried over"),
            ),
        }
    }
    if words.len() > 1 {
        report(
            out,
            line,
            "bind options (TLS, interface...): not carried over",
        );
    }
    found
}

/// The services of `section`'s `binds`, each served by `pool`, as NAT.
fn services(out: &mut Imported, section: &Section, binds: &[(&Line, IpAddr, u16)], pool: &Pool) {
    if binds.is_empty() && (!pool.backends.is_empty() || pool.fallback.is_some()) {
        let reason = "no bind to a VIP and port: its servers are not carried over";
        report(out, &section.header, reason);
    }
    for (index, (line, vip, port)) in binds.iter().enumerate() {
        let taken = out.config.services.iter().find(|s| {
            s.backends.iter().any(|b| {
                pool.backends.iter().any(|p| {
                    p.address == b.address
                        && p.port.unwrap_or(i64::from(*port)) == b.port.unwrap_or(s.port)
                })
            })
        });
        if let Some(owner) = taken {
            let reason = format!(
                "its servers already serve NAT service {}, and replies could not be told apart: \
                 not carried over",
                owner.name
            );
            report(out, line, reason);
            continue;
        }
        report(
            out,
            line,
            "HAProxy proxies: served as mode = \"nat\" (the servers must route replies through \
             the director)",
        );
        let name = match index {
            0 => section.name().to_owned(),
            _ => service_name("tcp", *vip, *port),
        };
        out.config.services.push(ServiceConfig {
            name,
            vip: vip.to_string(),
            port: (*port).into(),
            mode: Some("nat".into()),
            fallback: pool
                .fallback
                .map(|(ip, p)| SocketAddr::new(ip, p.unwrap_or(*port)).to_string()),
            persistence: pool.persistence.clone(),
            health: pool.health.clone(),
            backends: pool
                .backends
                .iter()
                .map(|b| BackendConfig {
                    port: b.port.filter(|&p| p != i64::from(*port)),
                    ..b.clone()
                })
                .collect(),
            ..ServiceConfig::default()
        });
    }
}

/// A frontend's services; returns the name of the backend it uses.
fn frontend<'a>(
    out: &mut Imported,
    section: &Section<'a>,
    pools: &HashMap<&str, Pool>,
) -> Option<&'a str> {
    let mut found = Vec::new();
    let mut backend = None;
    for line in &section.lines {
        match line.words.as_slice() {
            ["bind", ..] => {
                for (vip, port) in binds(out, line, &line.words[1..]) {
                    found.push((line, vip, port));
                }
            }
            ["mode", ..] => mode(out, line),
            ["default_backend", name] => backend = Some((line, *name)),
            _ => unsupported(out, line),
        }
    }
    let pool = match backend {
        Some((line, name)) => match pools.get(name) {
            Some(pool) => pool.clone(),
            None => {
                report(out, line, "no backend of that name: no servers");
                Pool::default()
            }
        },
        None => {
            report(out, &section.header, "no default_backend: no servers");
            Pool::default()
        }
    };
    services(out, section, &found, &pool);
    backend.map(|(_, name)| name)
}

fn listen(out: &mut Imported, section: &Section, defaults: &Defaults) {
    let mut found = Vec::new();
    // `listen NAME ADDR:PORT` binds in its header.
    if section.header.words.len() > 2 {
        for (vip, port) in binds(out, &section.header, &section.header.words[2..]) {
            found.push((&section.header, vip, port));
        }
    }
    let mut binds_found = Vec::new();
    let pool = pool(
        out,
        section,
        defaults,
        &mut |out, line| match line.words[0] {
            "bind" => binds_found.push(line.number),
            _ => unsupported(out, line),
        },
    );
    for line in section
        .lines
        .iter()
        .filter(|l| binds_found.contains(&l.number))
    {
        for (vip, port) in binds(out, line, &line.words[1..]) {
            found.push((line, vip, port));
        }
    }
    services(out, section, &found, &pool);
}
