//! `xlb backend list|add|del|set`.

use std::net::{IpAddr, SocketAddr};

use clap::{ArgGroup, Args, Subcommand};
use serde_json::Value;

use super::{
    format,
    http::{endpoint, Api, ApiArgs},
    print_json, read,
    table::Table,
};
use crate::{
    api::wire::{Backend, BackendPatch},
    config::{BackendConfig, BackendHealthConfig},
    model::AdminState,
};

#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// One line per backend of a service: ADDRESS PORT WEIGHT ADMIN OPER
    /// SERVING SHARE% NEXT-HOP LAST-CHECK ACTIVE INACTIVE PACKETS BYTES
    /// NEW-FLOWS.
    ///
    /// ADMIN is what the operator set (ready, drain, maint), OPER what the
    /// health checks found (up, down); SERVING says whether the data plane
    /// has it, SHARE% is its share of the Maglev ring. ACTIVE and INACTIVE
    /// count its flows like ipvsadm's ActiveConn and InActConn: inactive
    /// ones are half-open or closing (the client sent FIN or RST). Failed checks and
    /// unresolved next hops are explained below the table.
    List(ListArgs),
    /// Add a backend to a service (like `ipvsadm -a`).
    #[command(after_help = "Examples:\n  \
        xlb backend add web 198.18.1.12\n  \
        xlb backend add web 198.18.1.12:8080 --weight 3\n  \
        xlb backend add web '[fd00::12]:80' --drain\n  \
        xlb backend add web 198.18.1.12 --check-address 198.18.1.99 --check-port 8081")]
    Add(AddArgs),
    /// Remove a backend from a service (like `ipvsadm -d`); its flows move
    /// to the other backends.
    Del(DelArgs),
    /// Change a backend's weight or state (like `ipvsadm -e`, or HAProxy's
    /// `set server ... state drain`).
    #[command(after_help = "Examples:\n  \
        xlb backend set web 198.18.1.12:80 --drain\n  \
        xlb backend set web 198.18.1.12:80 --weight 3 --ready")]
    Set(SetArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The service's name.
    service: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The service's name.
    service: String,
    /// The backend; without a port it uses the service's.
    #[arg(value_name = "ADDR[:PORT]", value_parser = address_and_port)]
    address: (IpAddr, Option<u16>),
    /// Its share of new flows relative to the others (default 1; 0 takes none).
    #[arg(long, value_name = "N")]
    weight: Option<u16>,
    /// Add it drained: no new flows.
    #[arg(long, conflicts_with = "maint")]
    drain: bool,
    /// Add it in maintenance: no traffic.
    #[arg(long)]
    maint: bool,
    /// Probe this address instead of the service's check address (or the
    /// backend's own): keepalived's connect_ip, HAProxy's `addr`.
    #[arg(long, value_name = "ADDR")]
    check_address: Option<IpAddr>,
    /// Probe this port instead of the service's check port (or the
    /// backend's own): keepalived's connect_port, HAProxy's `port`.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    check_port: Option<u16>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// The service's name.
    service: String,
    /// The backend, e.g. 198.18.1.10:80 or [fd00::1]:80.
    #[arg(value_name = "ADDR:PORT", value_parser = socket_addr)]
    address: SocketAddr,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(["weight", "drain", "maint", "ready"])))]
#[command(group(ArgGroup::new("state").args(["drain", "maint", "ready"])))]
pub struct SetArgs {
    /// The service's name.
    service: String,
    /// The backend, e.g. 198.18.1.10:80 or [fd00::1]:80.
    #[arg(value_name = "ADDR:PORT", value_parser = socket_addr)]
    address: SocketAddr,
    /// Its share of new flows relative to the others (0 takes none).
    #[arg(long, value_name = "N")]
    weight: Option<u16>,
    /// No new flows; established ones stay until they end.
    #[arg(long)]
    drain: bool,
    /// No traffic: established flows move to other backends.
    #[arg(long)]
    maint: bool,
    /// Back in service: new flows by its weight.
    #[arg(long)]
    ready: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(command: BackendCommand) -> anyhow::Result<()> {
    match command {
        BackendCommand::List(args) => {
            let path = endpoint(&["services", &args.service, "backends"]);
            let answer = Api::new(&args.api)?.get_json(&path)?;
            if args.api.json {
                return print_json(&answer);
            }
            let backends: Vec<Backend> = read(answer)?;
            print!("{}{}", table(&backends), notes(&backends));
            Ok(())
        }
        BackendCommand::Add(args) => {
            let body = serde_json::to_value(new_backend(&args))?;
            let path = endpoint(&["services", &args.service, "backends"]);
            let answer = Api::new(&args.api)?.post(&path, Some(&body))?;
            print_backend(&args.api, answer, "added to", &args.service)
        }
        BackendCommand::Del(args) => {
            let address = args.address.to_string();
            let path = endpoint(&["services", &args.service, "backends", &address]);
            Api::new(&args.api)?.delete(&path)?;
            if !args.api.json {
                println!("backend {address} deleted from {}", args.service);
            }
            Ok(())
        }
        BackendCommand::Set(args) => {
            let patch = backend_patch(&args);
            let address = args.address.to_string();
            let path = endpoint(&["services", &args.service, "backends", &address]);
            let answer = Api::new(&args.api)?.patch(&path, &serde_json::to_value(patch)?)?;
            print_backend(&args.api, answer, "changed in", &args.service)
        }
    }
}

/// The agent's JSON, or what was done and the backend's row.
fn print_backend(api: &ApiArgs, answer: Value, done: &str, service: &str) -> anyhow::Result<()> {
    if api.json {
        return print_json(&answer);
    }
    let backend: Backend = read(answer)?;
    println!("backend {} {done} {service}", backend.socket_addr());
    let backends = [backend];
    print!("{}{}", table(&backends), notes(&backends));
    Ok(())
}

/// `ADDR[:PORT]`: an IPv4 or IPv6 address (IPv6 in brackets when a port follows).
fn address_and_port(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return nonzero_port(addr).map(|addr| (addr.ip(), Some(addr.port())));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        format!(
            "{text:?} is not an address or address:port \
             (e.g. 198.18.1.10, 198.18.1.10:8080, fd00::1, [fd00::1]:8080)"
        )
    })
}

/// `ADDR:PORT`, IPv6 in brackets.
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not an address:port (e.g. 198.18.1.10:80, [fd00::1]:80)"))
        .and_then(nonzero_port)
}

fn nonzero_port(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() == 0 {
        return Err(format!("{addr}: port 0 is not a backend port"));
    }
    Ok(addr)
}

/// The state the flags ask for; clap lets at most one be set.
fn admin_state(drain: bool, maint: bool, ready: bool) -> Option<AdminState> {
    match (drain, maint, ready) {
        (true, _, _) => Some(AdminState::Drain),
        (_, true, _) => Some(AdminState::Maint),
        (_, _, true) => Some(AdminState::Ready),
        _ => None,
    }
}

/// The body of `POST /api/v1/services/{name}/backends`.
fn new_backend(args: &AddArgs) -> BackendConfig {
    let (address, port) = args.address;
    BackendConfig {
        address: address.to_string(),
        port: port.map(i64::from),
        weight: args.weight.map(i64::from),
        state: admin_state(args.drain, args.maint, false).map(|s| s.name().to_owned()),
        health: (args.check_address.is_some() || args.check_port.is_some()).then(|| {
            BackendHealthConfig {
                address: args.check_address.map(|a| a.to_string()),
                port: args.check_port.map(i64::from),
            }
        }),
    }
}

/// The body of `PATCH /api/v1/services/{name}/backends/{addr}`.
fn backend_patch(args: &SetArgs) -> BackendPatch {
    BackendPatch {
        weight: args.weight.map(i64::from),
        admin_state: admin_state(args.drain, args.maint, args.ready),
    }
}

/// The backends' table, ages counted to this host's clock.
pub fn table(backends: &[Backend]) -> String {
    table_at(backends, format::now_unix_ms())
}

fn table_at(backends: &[Backend], now_unix_ms: u64) -> String {
    let mut table = Table::new(&[
        "ADDRESS",
        "PORT",
        "WEIGHT",
        "ADMIN",
        "OPER",
        "SERVING",
        "SHARE%",
        "NEXT-HOP",
        "LAST-CHECK",
        "ACTIVE",
        "INACTIVE",
        "PACKETS",
        "BYTES",
        "NEW-FLOWS",
    ]);
    for b in backends {
        table.row(vec![
            b.address.to_string(),
            b.port.to_string(),
            b.weight.to_string(),
            b.admin_state.name().into(),
            b.oper_state.name().into(),
            if b.serving { "yes" } else { "no" }.into(),
            format::percent(b.ring_share),
            next_hop(b),
            last_check(b, now_unix_ms),
            format::count(b.flows.active),
            format::count(b.flows.inactive),
            format::count(b.stats.packets),
            format::bytes(b.stats.bytes),
            format::count(b.stats.new_flows),
        ]);
    }
    table.to_string()
}

/// `MAC@ifINDEX`, `unresolved` (see the notes), or `-` when not looked up.
fn next_hop(b: &Backend) -> String {
    match (&b.next_hop, &b.next_hop_error) {
        (Some(hop), _) => format!("{}@if{}", hop.mac, hop.ifindex),
        (None, Some(_)) => "unresolved".into(),
        (None, None) => "-".into(),
    }
}

/// `ok 1.2s ago`, `failed 3s ago`, `pending` before the first probe, `-` unchecked.
pub fn last_check(b: &Backend, now_unix_ms: u64) -> String {
    let Some(check) = &b.check else {
        return "-".into();
    };
    match &check.last {
        None => "pending".into(),
        Some(last) => format!(
            "{} {}",
            if last.ok { "ok" } else { "failed" },
            format::age(last.at_unix_ms, now_unix_ms)
        ),
    }
}

/// Why backends are out (failed checks and unresolved next hops), and
/// where a backend with a check target of its own is probed, a line each.
pub fn notes(backends: &[Backend]) -> String {
    let mut notes = String::new();
    for b in backends {
        if let (Some(_), Some(check)) = (&b.health, &b.check) {
            notes.push_str(&format!(
                "{}: checked at {}, its own check target\n",
                b.socket_addr(),
                check.target
            ));
        }
        if let Some(error) = &b.next_hop_error {
            notes.push_str(&format!(
                "{}: next hop unresolved: {error}\n",
                b.socket_addr()
            ));
        }
        if let Some(check) = &b.check {
            if let Some(last) = check.last.as_ref().filter(|last| !last.ok) {
                notes.push_str(&format!(
                    "{}: last check failed: {} ({})\n",
                    b.socket_addr(),
                    last.detail,
                    check.progress
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::api::wire::FlowCounts;

    #[test]
    fn addresses_take_an_optional_port() {
        let v4: IpAddr = "198.18.1.10".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(address_and_port("198.18.1.10"), Ok((v4, None)));
        assert_eq!(address_and_port("198.18.1.10:8080"), Ok((v4, Some(8080))));
        assert_eq!(address_and_port("fd00::1"), Ok((v6, None)));
        assert_eq!(address_and_port("[fd00::1]"), Ok((v6, None)));
        assert_eq!(address_and_port("[fd00::1]:80"), Ok((v6, Some(80))));
        for bad in [
            "",
            "web1",
            "198.18.1.10:",
            "198.18.1.10:99999",
            "fd00::1:80:x",
            "[fd00::1]:",
        ] {
            let error = address_and_port(bad).unwrap_err();
            assert!(error.contains("is not an address"), "{bad}: {error}");
        }
        assert!(address_and_port("198.18.1.10:0")
            .unwrap_err()
            .contains("port 0"));
    }

    #[test]
    fn socket_addresses_need_a_port_and_brackets() {
        assert_eq!(
            socket_addr("[fd00::1]:80"),
            Ok("[fd00::1]:80".parse().unwrap())
        );
        for bad in ["198.18.1.10", "fd00::1:80", "fd00::1", "x:80"] {
            let error = socket_addr(bad).unwrap_err();
            assert!(error.contains("is not an address:port"), "{bad}: {error}");
        }
    }

    /// The `backend` subcommands alone, to parse command lines in tests.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BackendCommand,
    }

    fn parse(line: &str) -> Result<BackendCommand, clap::Error> {
        Cli::try_parse_from(line.split_whitespace()).map(|cli| cli.command)
    }

    fn patch_body(line: &str) -> String {
        let Ok(BackendCommand::Set(args)) = parse(line) else {
            panic!("{line} is not a backend set");
        };
        serde_json::to_string(&backend_patch(&args)).unwrap()
    }

    #[test]
    fn set_sends_only_what_changes() {
        assert_eq!(
            patch_body("xlb set web 198.18.1.10:80 --drain --weight 3"),
            r#"{"weight":3,"admin_state":"drain"}"#
        );
        assert_eq!(
            patch_body("xlb set web [fd00::1]:80 --maint"),
            r#"{"admin_state":"maint"}"#
        );
        assert_eq!(
            patch_body("xlb set web 198.18.1.10:80 --ready"),
            r#"{"admin_state":"ready"}"#
        );
        assert_eq!(
            patch_body("xlb set web 198.18.1.10:80 --weight 0"),
            r#"{"weight":0}"#
        );
    }

    #[test]
    fn set_needs_one_change_and_one_state_at_most() {
        use clap::error::ErrorKind;
        let kind = |line| parse(line).unwrap_err().kind();
        assert_eq!(
            kind("xlb set web 198.18.1.10:80"),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind("xlb set web 198.18.1.10:80 --drain --ready"),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind("xlb set web 198.18.1.10:80 --weight 65536"),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind("xlb set web 198.18.1.10:80 --weight -1"),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind("xlb set web 198.18.1.10 --drain"),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind("xlb add web 198.18.1.10 --drain --maint"),
            ErrorKind::ArgumentConflict
        );
    }

    fn add_body(line: &str) -> String {
        let Ok(BackendCommand::Add(args)) = parse(line) else {
            panic!("{line} is not a backend add");
        };
        serde_json::to_string(&new_backend(&args)).unwrap()
    }

    #[test]
    fn add_leaves_out_the_port_it_was_not_given() {
        assert_eq!(
            add_body("xlb add web 198.18.1.12"),
            r#"{"address":"198.18.1.12"}"#
        );
        assert_eq!(
            add_body("xlb add web [fd00::12]:8080 --weight 3 --maint"),
            r#"{"address":"fd00::12","port":8080,"weight":3,"state":"maint"}"#
        );
        assert_eq!(
            add_body("xlb add web 198.18.1.12 --check-address 198.18.1.99 --check-port 8081"),
            r#"{"address":"198.18.1.12","health":{"address":"198.18.1.99","port":8081}}"#
        );
        assert_eq!(
            add_body("xlb add web 198.18.1.12 --check-port 8081"),
            r#"{"address":"198.18.1.12","health":{"port":8081}}"#
        );
        assert!(parse("xlb add web 198.18.1.12 --check-port 0").is_err());
    }

    fn backend(overrides: Value) -> Backend {
        read(backend_value(overrides)).unwrap()
    }

    /// A backend as the API shows it, with `overrides`.
    fn backend_value(overrides: Value) -> Value {
        let mut value = json!({
            "address": "198.18.1.10", "port": 80, "weight": 2, "admin_state": "ready",
            "oper_state": "up", "serving": true, "ring_share": 0.6667,
            "next_hop": {"mac": "52:54:00:12:34:56", "ifindex": 3},
            "check": {"state": "up", "target": "198.18.1.10:80",
                      "progress": "0 of 3 failures", "since_unix_ms": 90_000,
                      "transitions": 0, "checks": 9, "failures_total": 0,
                      "last": {"ok": true, "detail": "HTTP 200", "at_unix_ms": 100_000,
                               "took_ms": 0.4}},
            "flows": {"active": 12, "inactive": 3},
            "stats": {"packets": 1500, "bytes": 2_000_000, "new_flows": 42}
        });
        let object = value.as_object_mut().unwrap();
        for (key, field) in overrides.as_object().unwrap() {
            object.insert(key.clone(), field.clone());
        }
        value
    }

    #[test]
    fn an_agent_without_flow_counts_shows_zeros() {
        let mut value = backend_value(json!({}));
        value.as_object_mut().unwrap().remove("flows");
        let backend: Backend = read(value).unwrap();
        assert_eq!(backend.flows, FlowCounts::default());
    }

    #[test]
    fn the_table_shows_state_checks_and_traffic() {
        let backends = [
            backend(json!({})),
            backend(json!({
                "address": "fd00::11", "weight": 1, "oper_state": "down", "serving": false,
                "ring_share": 0.0, "next_hop": null, "next_hop_error": "no route to fd00::11",
                "health": {"address": "fd00::99", "port": 8081},
                "check": {"state": "down", "target": "[fd00::99]:8081",
                          "progress": "1 of 2 successes",
                          "since_unix_ms": 95_000, "transitions": 1, "checks": 10,
                          "failures_total": 4,
                          "last": {"ok": false, "detail": "connection refused",
                                   "at_unix_ms": 101_000, "took_ms": 0.2}},
                "flows": {"active": 0, "inactive": 1},
                "stats": {"packets": 0, "bytes": 0, "new_flows": 0}
            })),
        ];
        assert_eq!(
            table_at(&backends, 101_200),
            "ADDRESS      PORT  WEIGHT  ADMIN  OPER  SERVING  SHARE%  NEXT-HOP               LAST-CHECK        ACTIVE  INACTIVE  PACKETS  BYTES   NEW-FLOWS\n\
             198.18.1.10  80    2       ready  up    yes      66.7    52:54:00:12:34:56@if3  ok 1.2s ago       12      3         1.5k     2.0 MB  42\n\
             fd00::11     80    1       ready  down  no       0.0     unresolved             failed 200ms ago  0       1         0        0 B     0\n"
        );
        assert_eq!(
            notes(&backends),
            "[fd00::11]:80: checked at [fd00::99]:8081, its own check target\n\
             [fd00::11]:80: next hop unresolved: no route to fd00::11\n\
             [fd00::11]:80: last check failed: connection refused (1 of 2 successes)\n"
        );
    }
}
