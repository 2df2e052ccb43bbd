//! keepalived.conf: `vrrp_instance`, `vrrp_sync_group` and
//! `virtual_server` blocks, with `include` files inlined ([`inline`]).

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use super::{
    own_addresses, own_target, prefix_len, scheduler_change, service_name, without_target, Imported,
};
use crate::config::{
    BackendConfig, HealthConfig, InstanceConfig, PersistenceConfig, ServiceConfig, SyncGroupConfig,
    TrackConfig,
};

/// A statement: its line, its words, and the block it opens if any.
#[derive(Debug)]
struct Node {
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    fn arg(&self, index: usize) -> Option<&str> {
        self.words.get(index + 1).map(String::as_str)
    }

    /// The arguments as a command line: a quoted one split at blanks.
    fn command(&self) -> Vec<String> {
        self.words[1..]
            .iter()
            .flat_map(|w| w.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }
}

/// The statements of `text`: words split at blanks, quotes kept together,
/// `#` and `!` comments left out, `{` and `}` opening and closing blocks.
fn parse(text: &str) -> Vec<Node> {
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    for (index, line) in text.lines().enumerate() {
        let mut words: Vec<String> = Vec::new();
        let mut chars = line.chars().peekable();
        let finish = |words: &mut Vec<String>, stack: &mut Vec<Vec<Node>>| {
            if !words.is_empty() {
                let list = stack.last_mut().expect("the top level stays");
                list.push(Node {
                    line: index + 1,
                    words: std::mem::take(words),
                    block: None,
                });
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' => break,
                '{' => {
                    // `{` alone on a line opens the previous statement's block.
                    finish(&mut words, &mut stack);
                    stack.push(Vec::new());
                }
                '}' => {
                    finish(&mut words, &mut stack);
                    if stack.len() > 1 {
                        let block = stack.pop().expect("more than one");
                        let list = stack.last_mut().expect("the top level stays");
                        if let Some(owner) = list.last_mut() {
                            owner.block = Some(block);
                        }
                    }
                }
                '"' => {
                    let quoted: String = chars.by_ref().take_while(|&c| c != '"').collect();
                    words.push(quoted);
                }
                c if c.is_whitespace() => {}
                c => {
                    let mut word = String::from(c);
                    while let Some(&next) = chars.peek() {
                        if next.is_whitespace() || matches!(next, '{' | '}' | '"' | '#' | '!') {
                            break;
                        }
                        word.push(next);
                        chars.next();
                    }
                    words.push(word);
                }
            }
        }
        finish(&mut words, &mut stack);
    }
    stack.swap_remove(0)
}

/// keepalived's defaults for what a file leaves out.
const DEFAULT_DELAY_LOOP: u64 = 60;
const DEFAULT_CONNECT_TIMEOUT: u64 = 5;
const DEFAULT_RETRY: i64 = 1;

struct Converter<'a> {
    out: Imported,
    lines: Vec<&'a str>,
    /// `vrrp_version` of `global_defs`: keepalived's default is 2.
    version: i64,
}

impl Converter<'_> {
    fn report(&mut self, node: &Node, reason: impl Into<String>) {
        let text = self.lines[node.line - 1];
        self.out.report(node.line, text, reason);
    }

    /// Reports `node` and every statement inside it.
    fn drop_all(&mut self, node: &Node, reason: &str) {
        self.report(node, reason);
        for child in node.children() {
            self.drop_all(child, reason);
        }
    }

    fn unknown(&mut self, node: &Node) {
        let reason = format!("{}: xlb has no such setting; not carried over", node.key());
        self.drop_all(node, &reason);
    }

    fn number(&mut self, node: &Node) -> Option<i64> {
        let value = node.arg(0).and_then(|v| v.parse().ok());
        if value.is_none() {
            self.report(node, "not a whole number: not carried over");
        }
        value
    }

    /// Seconds, whole or not, as a duration xlb reads (`2s`, `500ms`).
    fn seconds(&mut self, node: &Node) -> Option<String> {
        match node.arg(0).and_then(|v| v.parse::<f64>().ok()) {
            Some(s) if s >= 0.0 && s.fract() == 0.0 => Some(format!("{s}s")),
            Some(s) if s >= 0.0 => Some(format!("{}ms", (s * 1000.0).round())),
            _ => {
                self.report(node, "not a number of seconds: not carried over");
                None
            }
        }
    }
}

/// How deep includes may nest, against a file that includes itself.
const MAX_INCLUDE_DEPTH: usize = 8;

/// A keepalived.conf with its `include` files inlined, and where each line
/// came from.
#[derive(Debug, Default)]
pub struct Inlined {
    pub text: String,
    /// Each line's file and line number there.
    origins: Vec<(PathBuf, usize)>,
    /// `include` lines not followed: the line in `text`, and why.
    problems: Vec<(usize, String)>,
}

/// Reads what an `include` names: its pattern and the including file's
/// directory in; each file it matches, in order, with its text out.
pub type ReadIncludes<'a> = dyn Fn(&str, &Path) -> Result<Vec<(PathBuf, String)>, String> + 'a;

impl Inlined {
    /// `FILE:LINE` of a line of [`Inlined::text`] (numbered from 1).
    pub fn origin(&self, line: usize) -> String {
        match self.origins.get(line.wrapping_sub(1)) {
            Some((file, at)) => format!("{}:{at}", file.display()),
            None => format!("?:{line}"),
        }
    }
}

/// `text` (read from `file`) with each `include PATTERN` line replaced by
/// the files `read` finds for it, as keepalived reads them: at any depth of
/// blocks, nested up to [`MAX_INCLUDE_DEPTH`].
pub fn inline(file: &Path, text: &str, read: &ReadIncludes) -> Inlined {
    let mut inlined = Inlined::default();
    inline_into(&mut inlined, file, text, read, 0);
    inlined
}

fn inline_into(out: &mut Inlined, file: &Path, text: &str, read: &ReadIncludes, depth: usize) {
    for (index, line) in text.lines().enumerate() {
        let words: Vec<&str> = line
            .split(['#', '!'])
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        out.text.push_str(line);
        out.text.push('\n');
        out.origins.push((file.to_owned(), index + 1));
        let ["include", pattern] = words.as_slice() else {
            continue;
        };
        let at = out.origins.len();
        let pattern = pattern.trim_matches('"');
        if depth == MAX_INCLUDE_DEPTH {
            let why = format!("includes nested deeper than {MAX_INCLUDE_DEPTH}; not followed");
            out.problems.push((at, why));
            continue;
        }
        let base = file.parent().unwrap_or(Path::new("."));
        match read(pattern, base) {
            Ok(files) => {
                // The include line stays, blank to the parser.
                out.text.truncate(out.text.len() - line.len() - 1);
                out.text.push('\n');
                for (included, text) in files {
                    inline_into(out, &included, &text, read, depth + 1);
                }
            }
            Err(why) => out.problems.push((at, format!("{why}; not followed"))),
        }
    }
}

/// [`convert`] of an inlined file, with the includes not followed reported.
pub fn convert_inlined(inlined: &Inlined) -> Imported {
    let mut imported = convert(&inlined.text);
    let lines: Vec<&str> = inlined.text.lines().collect();
    // An include not followed stays in the text, reported as unknown: its reason replaces that.
    imported
        .reported
        .retain(|r| !inlined.problems.iter().any(|(line, _)| *line == r.line));
    for (line, why) in &inlined.problems {
        imported.report(*line, lines[line - 1], why.clone());
    }
    imported
}

pub fn convert(text: &str) -> Imported {
    let nodes = parse(text);
    let mut c = Converter {
        out: Imported::default(),
        lines: text.lines().collect(),
        version: 2,
    };
    for node in &nodes {
        match node.key() {
            "global_defs" => global_defs(&mut c, node),
            "vrrp_instance" => instance(&mut c, node),
            "vrrp_sync_group" => sync_group(&mut c, node),
            "virtual_server" => virtual_server(&mut c, node),
            "vrrp_script" => c.drop_all(
                node,
                "tracking scripts: xlb tracks interfaces, its data plane and services; not carried over",
            ),
            _ => c.unknown(node),
        }
    }
    c.out
}

fn global_defs(c: &mut Converter, node: &Node) {
    for child in node.children() {
        match child.key() {
            "vrrp_version" => {
                if let Some(version) = c.number(child) {
                    c.version = version;
                }
            }
            _ => c.drop_all(
                child,
                "global settings (router id, mail, scripts): xlb has none; not carried over",
            ),
        }
    }
}

fn instance(c: &mut Converter, node: &Node) {
    let mut instance = InstanceConfig {
        name: node.arg(0).unwrap_or_default().to_owned(),
        version: Some(c.version),
        ..InstanceConfig::default()
    };
    for child in node.children() {
        match child.key() {
            "state" => c.report(
                child,
                "xlb has no initial state: each instance starts as backup and priorities decide",
            ),
            "interface" => instance.interface = child.arg(0).unwrap_or_default().to_owned(),
            "virtual_router_id" => instance.vrid = c.number(child).unwrap_or_default(),
            "priority" => instance.priority = c.number(child).unwrap_or_default(),
            "version" => instance.version = c.number(child),
            "advert_int" => instance.advert_interval = c.seconds(child),
            "nopreempt" => instance.preempt = Some(false),
            "preempt_delay" => instance.preempt_delay = c.seconds(child),
            "authentication" => {
                for auth in child.children() {
                    match (auth.key(), auth.arg(0)) {
                        ("auth_type", Some("PASS")) => {}
                        ("auth_pass", Some(pass)) if pass.len() <= 8 => {
                            instance.auth_pass = Some(pass.to_owned())
                        }
                        ("auth_pass", Some(pass)) => {
                            c.report(
                                auth,
                                "longer than 8 bytes: cut to the 8 that keepalived sends",
                            );
                            instance.auth_pass = Some(pass[..8].to_owned());
                        }
                        _ => c.drop_all(
                            auth,
                            "only PASS authentication is carried over (AH is not supported)",
                        ),
                    }
                }
            }
            "virtual_ipaddress" => {
                for vip in child.children() {
                    virtual_address(c, vip, &mut instance.virtual_addresses);
                }
            }
            "unicast_peer" => {
                for peer in child.children() {
                    instance.unicast_peers.push(peer.key().to_owned());
                    if peer.words.len() > 1 {
                        c.report(peer, "peer options: not carried over");
                    }
                }
            }
            "track_interface" => {
                for tracked in child.children() {
                    let weight = match (tracked.arg(0), tracked.arg(1)) {
                        (Some("weight"), Some(w)) => w.parse().ok(),
                        _ => None,
                    };
                    if tracked.words.len() > 1 && weight.is_none() {
                        c.report(tracked, "not `IF weight N`: tracked without a weight");
                    }
                    instance.track.push(TrackConfig {
                        interface: Some(tracked.key().to_owned()),
                        weight,
                        ..TrackConfig::default()
                    });
                }
            }
            "notify" => instance.notify = Some(child.command()),
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => c.report(
                child,
                "xlb runs one `notify` command with the new state as its third argument; \
                 not carried over",
            ),
            _ => c.unknown(child),
        }
    }
    // keepalived speaks VRRPv3 for IPv6 whatever the version.
    if instance
        .virtual_addresses
        .first()
        .is_some_and(|a| a.contains(':'))
    {
        instance.version = Some(3);
    }
    if instance.version == Some(3) {
        instance.version = None;
        if instance.auth_pass.take().is_some() {
            c.report(
                node,
                "VRRPv3 has no authentication: auth_pass not carried over",
            );
        }
    }
    c.out.config.vrrp.instances.push(instance);
}

/// One line of `virtual_ipaddress`: `ADDR[/LEN] [dev IF] [label L] ...`.
fn virtual_address(c: &mut Converter, node: &Node, addresses: &mut Vec<String>) {
    let (addr, len) = match node.key().split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (node.key(), None),
    };
    let Ok(parsed) = addr.parse::<IpAddr>() else {
        return c.report(node, "not an address: not carried over");
    };
    let host = if parsed.is_ipv4() { "32" } else { "128" };
    if len.is_some_and(|len| len != host) || node.words.len() > 1 {
        c.report(
            node,
            "xlb adds a virtual address alone on the instance's interface: prefix length \
             and options not carried over",
        );
    }
    addresses.push(parsed.to_string());
}

fn sync_group(c: &mut Converter, node: &Node) {
    let mut group = SyncGroupConfig {
        name: node.arg(0).unwrap_or_default().to_owned(),
        instances: Vec::new(),
    };
    for child in node.children() {
        match child.key() {
            "group" => {
                for member in child.children() {
                    group.instances.extend(member.words.iter().cloned());
                }
            }
            key if key.starts_with("notify") => c.report(
                child,
                "xlb notifies per instance (`notify` of each instance); not carried over",
            ),
            _ => c.unknown(child),
        }
    }
    c.out.config.vrrp.sync_groups.push(group);
}

fn virtual_server(c: &mut Converter, node: &Node) {
    let endpoint = match (node.arg(0), node.arg(1)) {
        (Some(ip), Some(port)) => ip.parse::<IpAddr>().ok().zip(port.parse::<u16>().ok()),
        _ => None,
    };
    let Some((vip, port)) = endpoint else {
        return c.drop_all(
            node,
            "only `virtual_server IP PORT` is carried over (not fwmark or group services)",
        );
    };
    let mut service = ServiceConfig {
        vip: vip.to_string(),
        port: port.into(),
        // keepalived's default lb_kind (IPVS's masquerading is its zero).
        mode: Some("nat".into()),
        ..ServiceConfig::default()
    };
    let mut interval = format!("{DEFAULT_DELAY_LOOP}s");
    let mut netmask = None;
    let mut checks = Vec::new();
    let mut real_servers = Vec::new();
    for child in node.children() {
        match child.key() {
            "delay_loop" => interval = c.seconds(child).unwrap_or(interval),
            "lb_algo" | "lvs_sched" => {
                if let Some(change) = scheduler_change(child.arg(0).unwrap_or_default()) {
                    c.report(child, change);
                }
            }
            "lb_kind" | "lvs_method" => match child.arg(0) {
                Some("DR") => service.mode = Some("dr".into()),
                Some("TUN") => service.mode = Some("ipip".into()),
                Some("NAT") => service.mode = Some("nat".into()),
                _ => c.report(child, "not DR, TUN or NAT: NAT, keepalived's default"),
            },
            "protocol" => match child.arg(0) {
                Some("TCP") => {}
                Some("UDP") => service.protocol = Some("udp".into()),
                _ => c.report(child, "xlb balances TCP and UDP: TCP"),
            },
            "persistence_timeout" => {
                if let Some(seconds) = c.number(child) {
                    service.persistence = Some(PersistenceConfig {
                        timeout: Some(format!("{seconds}s")),
                        netmask: None,
                    });
                }
            }
            "persistence_granularity" => netmask = Some(child),
            "sorry_server" => match (child.arg(0), child.arg(1)) {
                (Some(ip), Some(port)) => match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
                    (Ok(ip), Ok(port)) => {
                        service.fallback = Some(SocketAddr::new(ip, port).to_string())
                    }
                    _ => c.report(child, "not an address and port: not carried over"),
                },
                _ => c.report(child, "not an address and port: not carried over"),
            },
            // After the loop: whether ports translate depends on lb_kind.
            "real_server" => real_servers.push(child),
            _ => c.unknown(child),
        }
    }
    for child in real_servers {
        real_server(c, child, &mut service, &mut checks);
    }
    if let Some(node) = netmask {
        let full = if vip.is_ipv4() { 32 } else { 128 };
        match (&mut service.persistence, node.arg(0).and_then(prefix_len)) {
            (Some(persistence), Some(len)) => persistence.netmask = (len != full).then_some(len),
            _ => c.report(
                node,
                "needs persistence_timeout and a netmask: not carried over",
            ),
        }
    }
    service.name = service_name(service.protocol.as_deref().unwrap_or("tcp"), vip, port);
    // xlb checks every backend of a service alike, the first check deciding,
    // but for where each probes (connect_ip, connect_port): a backend's own.
    let mut checks = checks.into_iter();
    if let Some((_, _, first)) = checks.next() {
        for (node, index, other) in checks {
            if without_target(&other) != without_target(&first) {
                c.drop_all(
                    node,
                    "differs from the first real server's check: xlb checks every backend of \
                     a service alike; not carried over",
                );
                continue;
            }
            let backend = &mut service.backends[index];
            let port = Some(backend.port.unwrap_or(service.port));
            backend.health = own_target(&first, &other, &backend.address, port)
                .expect("a keepalived real server's port is known");
        }
        let mut check = HealthConfig {
            interval: Some(interval.clone()),
            timeout: first.timeout.map(|t| min_duration(&t, &interval)),
            ..first
        };
        // keepalived probes a connect_ip directly, not through the tunnel.
        if service.mode.as_deref() == Some("ipip") && own_addresses(&service.backends) {
            check.via = Some("direct".into());
        }
        service.health = Some(check);
    }
    c.out.config.services.push(service);
}

/// The shorter of two durations as xlb writes them (a check's timeout
/// must not exceed its interval).
fn min_duration(a: &str, b: &str) -> String {
    let parse = |d: &str| humantime::parse_duration(d).unwrap_or_default();
    if parse(a) <= parse(b) {
        a.to_owned()
    } else {
        b.to_owned()
    }
}

/// Adds the real server at `node` to `service`, and its checks, with the
/// index of its backend, to `checks`.
fn real_server<'n>(
    c: &mut Converter,
    node: &'n Node,
    service: &mut ServiceConfig,
    checks: &mut Vec<(&'n Node, usize, HealthConfig)>,
) {
    let target = match (node.arg(0), node.arg(1)) {
        (Some(ip), Some(port)) => ip.parse::<IpAddr>().ok().zip(port.parse::<u16>().ok()),
        _ => None,
    };
    let Some((addr, port)) = target else {
        return c.drop_all(node, "not `real_server IP PORT`: not carried over");
    };
    let mut backend = BackendConfig {
        address: addr.to_string(),
        ..BackendConfig::default()
    };
    if i64::from(port) != service.port {
        if service.mode.as_deref() == Some("nat") {
            backend.port = Some(port.into());
        } else {
            c.report(
                node,
                "only NAT translates ports: the real server gets the VIP's port (as IPVS does)",
            );
        }
    }
    for child in node.children() {
        match child.key() {
            "weight" => {
                backend.weight = c.number(child).filter(|&w| w != 1);
            }
            "inhibit_on_failure" => c.report(
                child,
                "xlb takes a failed backend out rather than setting its weight to 0",
            ),
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "DNS_CHECK" => {
                if let Some(check) = check(c, child) {
                    checks.push((child, service.backends.len(), check));
                }
            }
            "SMTP_CHECK" | "UDP_CHECK" | "PING_CHECK" | "BFD_CHECK" | "FILE_CHECK" => c.drop_all(
                child,
                "xlb checks by tcp, http, https, udp, dns or exec; not carried over",
            ),
            _ => c.unknown(child),
        }
    }
    service.backends.push(backend);
}

/// A checker block as an xlb check (without the interval, which is the
/// virtual server's `delay_loop`).
fn check(c: &mut Converter, node: &Node) -> Option<HealthConfig> {
    let mut health = HealthConfig {
        kind: match node.key() {
            "TCP_CHECK" => "tcp",
            "HTTP_GET" => "http",
            "SSL_GET" => "https",
            "MISC_CHECK" => "exec",
            _ => "dns",
        }
        .into(),
        timeout: Some(format!("{DEFAULT_CONNECT_TIMEOUT}s")),
        rise: Some(1),
        fall: Some(DEFAULT_RETRY + 1),
        // SSL_GET takes any certificate.
        verify: (node.key() == "SSL_GET").then_some(false),
        ..HealthConfig::default()
    };
    for child in node.children() {
        match child.key() {
            "connect_timeout" | "misc_timeout" => health.timeout = c.seconds(child),
            "connect_port" => health.port = c.number(child),
            "connect_ip" => health.address = child.arg(0).map(str::to_owned),
            "retry" | "nb_get_retry" => {
                if let Some(retry) = c.number(child) {
                    health.fall = Some(retry + 1);
                }
            }
            "url" => {
                for part in child.children() {
                    match part.key() {
                        "path" => health.path = part.arg(0).map(str::to_owned),
                        "status_code" => health.status = part.arg(0).map(str::to_owned),
                        _ => c.unknown(part),
                    }
                }
            }
            "virtualhost" => health.host = child.arg(0).map(str::to_owned),
            "misc_path" => health.command = Some(child.command()),
            "name" => health.query = child.arg(0).map(str::to_owned),
            "type" => health.query_type = child.arg(0).map(str::to_owned),
            "delay_before_retry" => c.report(
                child,
                "xlb retries at the check interval: delay_before_retry not carried over",
            ),
            _ => c.unknown(child),
        }
    }
    if health.kind == "dns" && health.query.is_none() {
        health.query = Some(".".into());
    }
    if health.kind == "exec" && health.command.is_none() {
        c.report(node, "MISC_CHECK without misc_path: not carried over");
        return None;
    }
    Some(health)
}
