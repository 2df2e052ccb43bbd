//! `ipvsadm -Sn` rules: `-A` services and their `-a` real servers.

use std::net::SocketAddr;

use super::{prefix_len, scheduler_change, service_name, Imported};
use crate::config::{BackendConfig, PersistenceConfig, ServiceConfig};

/// The options that take no value.
const FLAGS: &[&str] = &[
    "-g",
    "--gatewaying",
    "-i",
    "--ipip",
    "-m",
    "--masquerading",
    "-O",
    "--ops",
];

/// One rule's options with their values, in order.
fn options(words: &[&str]) -> Vec<(String, Option<String>)> {
    let mut options = Vec::new();
    let mut words = words.iter().peekable();
    while let Some(option) = words.next() {
        let takes_value = !FLAGS.contains(option)
            && words.peek().is_some_and(|next| {
                // `-p` may stand alone (the default timeout).
                !(matches!(*option, "-p" | "--persistent") && next.starts_with('-'))
            });
        let value = takes_value.then(|| words.next().map(|v| v.to_string()));
        options.push((option.to_string(), value.flatten()));
    }
    options
}

/// An `-A` or `-a` rule: its line and the service it names.
struct Rule<'a> {
    number: usize,
    line: &'a str,
    protocol: &'static str,
    endpoint: SocketAddr,
    options: &'a [(String, Option<String>)],
}

impl Rule<'_> {
    fn report(&self, out: &mut Imported, reason: impl Into<String>) {
        out.report(self.number, self.line, reason);
    }
}

/// A service as the rules so far made it: its endpoint and forwarding.
struct Known {
    protocol: &'static str,
    endpoint: SocketAddr,
    index: usize,
    mode: Option<&'static str>,
}

pub fn convert(text: &str) -> Imported {
    let mut out = Imported::default();
    let mut known: Vec<Known> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            None => {}
            Some(word) if word.starts_with('#') => {}
            Some(&kind @ ("-A" | "--add-service" | "-a" | "--add-server")) => {
                let options = options(&words[1..]);
                let (protocol, endpoint) = match endpoint(&options) {
                    Ok(found) => found,
                    Err(reason) => {
                        out.report(number, line, reason);
                        continue;
                    }
                };
                let rule = Rule {
                    number,
                    line,
                    protocol,
                    endpoint,
                    options: &options,
                };
                if matches!(kind, "-A" | "--add-service") {
                    add_service(&mut out, &mut known, &rule);
                } else {
                    add_server(&mut out, &mut known, &rule);
                }
            }
            Some(_) => out.report(
                number,
                line,
                "not a rule of `ipvsadm -S` (-A or -a): not carried over",
            ),
        }
    }
    out
}

/// The service an `-A` or `-a` rule names: protocol and endpoint, or why not.
fn endpoint(options: &[(String, Option<String>)]) -> Result<(&'static str, SocketAddr), String> {
    for (option, value) in options {
        let protocol = match option.as_str() {
            "-t" | "--tcp-service" => "tcp",
            "-u" | "--udp-service" => "udp",
            "-f" | "--fwmark-service" => {
                return Err(
                    "firewall-mark services: xlb matches VIP and port, not marks; \
                            not carried over"
                        .into(),
                )
            }
            "--sctp-service" => {
                return Err("SCTP: xlb balances TCP and UDP; not carried over".into())
            }
            _ => continue,
        };
        let value = value.as_deref().unwrap_or_default();
        return value.parse().map(|a| (protocol, a)).map_err(|_| {
            format!("{value:?} is not a numeric address and port (save with `ipvsadm -Sn`); not carried over")
        });
    }
    Err("no -t or -u service: not carried over".into())
}

fn add_service(out: &mut Imported, known: &mut Vec<Known>, rule: &Rule) {
    let (protocol, endpoint) = (rule.protocol, rule.endpoint);
    let mut service = ServiceConfig {
        name: service_name(protocol, endpoint.ip(), endpoint.port()),
        vip: endpoint.ip().to_string(),
        port: endpoint.port().into(),
        protocol: (protocol == "udp").then(|| protocol.to_owned()),
        ..ServiceConfig::default()
    };
    let mut netmask = None;
    for (option, value) in rule.options {
        let value = value.as_deref();
        match (option.as_str(), value) {
            ("-t" | "--tcp-service" | "-u" | "--udp-service", _) => {}
            ("-s" | "--scheduler", Some(scheduler)) => {
                if let Some(change) = scheduler_change(scheduler) {
                    rule.report(out, change);
                }
            }
            ("-p" | "--persistent", timeout) => {
                let timeout = timeout.unwrap_or("300");
                match timeout.parse::<u32>() {
                    Ok(seconds) => {
                        service.persistence = Some(PersistenceConfig {
                            timeout: Some(format!("{seconds}s")),
                            netmask: None,
                        })
                    }
                    Err(_) => rule.report(
                        out,
                        format!(
                            "-p {timeout}: not a number of seconds; persistence not carried over"
                        ),
                    ),
                }
            }
            ("-M" | "--netmask", Some(mask)) => netmask = Some(mask),
            _ => rule.report(out, unsupported(option, value)),
        }
    }
    if let Some(mask) = netmask {
        match (&mut service.persistence, prefix_len(mask)) {
            (Some(persistence), Some(len)) => {
                let full = if endpoint.is_ipv4() { 32 } else { 128 };
                persistence.netmask = (len != full).then_some(len);
            }
            (None, _) => rule.report(
                out,
                format!("-M {mask} without -p: IPVS ignores it too; not carried over"),
            ),
            (Some(_), None) => rule.report(
                out,
                format!("-M {mask} is not a netmask; persistence per client address"),
            ),
        }
    }
    if known
        .iter()
        .any(|k| k.protocol == protocol && k.endpoint == endpoint)
    {
        return rule.report(out, "the service is already defined: not carried over");
    }
    known.push(Known {
        protocol,
        endpoint,
        index: out.config.services.len(),
        mode: None,
    });
    out.config.services.push(service);
}

fn add_server(out: &mut Imported, known: &mut [Known], rule: &Rule) {
    let (protocol, endpoint) = (rule.protocol, rule.endpoint);
    let Some(service) = known
        .iter_mut()
        .find(|k| k.protocol == protocol && k.endpoint == endpoint)
    else {
        return rule.report(
            out,
            "no -A rule before it adds this service: not carried over",
        );
    };
    let mut server: Option<SocketAddr> = None;
    let mut mode = "dr";
    let mut weight = None;
    let mut ignored = Vec::new();
    for (option, value) in rule.options {
        let value = value.as_deref();
        match (option.as_str(), value) {
            ("-t" | "--tcp-service" | "-u" | "--udp-service", _) => {}
            ("-r" | "--real-server", Some(text)) => match text.parse() {
                Ok(addr) => server = Some(addr),
                Err(_) => {
                    return rule.report(
                        out,
                        format!("{text:?} is not a numeric address and port (save with `ipvsadm -Sn`); not carried over"),
                    )
                }
            },
            ("-g" | "--gatewaying", _) => mode = "dr",
            ("-i" | "--ipip", _) => mode = "ipip",
            ("-m" | "--masquerading", _) => mode = "nat",
            ("-w" | "--weight", Some(text)) => match text.parse::<u16>() {
                Ok(w) => weight = (w != 1).then_some(i64::from(w)),
                Err(_) => ignored.push(format!("-w {text}: not a weight 0-65535; weight 1")),
            },
            _ => ignored.push(unsupported(option, value)),
        }
    }
    let Some(server) = server else {
        return rule.report(out, "no -r real server: not carried over");
    };
    match service.mode {
        None => {
            service.mode = Some(mode);
            out.config.services[service.index].mode = Some(mode.to_owned());
        }
        Some(first) if first != mode => {
            return rule.report(
                out,
                format!("forwarding by {mode}, but the service's first server by {first}: an xlb service forwards one way; not carried over"),
            )
        }
        Some(_) => {}
    }
    let port = if server.port() == endpoint.port() {
        None
    } else if mode == "nat" {
        Some(server.port().into())
    } else {
        ignored.push(format!(
            "port {} ignored: {mode} keeps the VIP's port {} (as IPVS does)",
            server.port(),
            endpoint.port()
        ));
        None
    };
    for reason in ignored {
        rule.report(out, reason);
    }
    out.config.services[service.index]
        .backends
        .push(BackendConfig {
            address: server.ip().to_string(),
            port,
            weight,
            state: None,
            health: None,
        });
}

/// Why an option is left out.
fn unsupported(option: &str, value: Option<&str>) -> String {
    let what = match option {
        "-x" | "--u-threshold" | "-y" | "--l-threshold" => "connection thresholds: xlb has none",
        "-O" | "--ops" => "one-packet scheduling: xlb keeps a flow for each UDP 5-tuple",
        "-b" | "--sched-flags" => "scheduler flags: xlb's Maglev has none",
        "--pe" => "persistence engines: xlb's persistence is by client address",
        _ => "xlb has no such setting",
    };
    let spelled = match value {
        Some(value) => format!("{option} {value}"),
        None => option.to_owned(),
    };
    format!("{spelled}: {what}; not carried over")
}
