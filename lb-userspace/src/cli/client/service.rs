//! `xlb service list|show|add|del|set`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use super::{
    backend, format,
    http::{endpoint, Api, ApiArgs},
    print_json, read,
    table::{fields, Table},
};
use crate::{api::wire::Service, config::ServiceConfig};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// One line per service: NAME VIP PORT PROTO MODE BACKENDS PACKETS BYTES
    /// NEW-FLOWS.
    ///
    /// BACKENDS is "in service/total", where in service means new flows go
    /// to it (in the data plane, ready, weight above 0); a trailing `*`
    /// means none does and the fallback server takes the traffic.
    List(ListArgs),
    /// A service's settings, then its backends as `xlb backend list` shows them.
    Show(ShowArgs),
    /// Add a service from a file: the keys of one `[[service]]` table, in
    /// TOML (backends as `[[backend]]`, health as `[health]`) or JSON.
    #[command(after_help = "Example file (web.toml):\n  \
        name = \"web\"\n  \
        vip = \"198.18.0.100\"\n  \
        port = 80\n  \
        mode = \"dr\"\n  \
        [health]\n  \
        kind = \"http\"\n  \
        path = \"/healthz\"\n  \
        [[backend]]\n  \
        address = \"198.18.1.10\"\n  \
        weight = 2\n\n\
        xlb service add --file web.toml")]
    Add(AddArgs),
    /// Delete a service and its backends; its flows end.
    Del(DelArgs),
    /// Change a service with a JSON merge patch (RFC 7396) of its
    /// configuration: keys replace, `null` removes.
    #[command(after_help = "Examples:\n  \
        xlb service set web --patch '{\"mode\": \"nat\"}'\n  \
        xlb service set web --patch '{\"health\": null}'\n  \
        xlb service set web --patch '{\"persistence\": {\"timeout\": \"10m\"}}'")]
    Set(SetArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The service's name.
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The service: TOML (`.toml`) or JSON (`.json`); `-` reads standard input.
    /// Other names are read as JSON if they start with `{`, else as TOML.
    #[arg(long, short, value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// The service's name.
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The service's name.
    name: String,
    /// The merge patch, a JSON object (`--json` chooses the output).
    #[arg(long, short, value_name = "JSON")]
    patch: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::List(args) => {
            let answer = Api::new(&args.api)?.get_json(&endpoint(&["services"]))?;
            if args.api.json {
                return print_json(&answer);
            }
            let services: Vec<Service> = read(answer)?;
            print!("{}", list_table(&services));
            Ok(())
        }
        ServiceCommand::Show(args) => {
            let answer = Api::new(&args.api)?.get_json(&endpoint(&["services", &args.name]))?;
            print_service(&args.api, answer)
        }
        ServiceCommand::Add(args) => {
            let body = read_service_file(&args.file)?;
            let answer = Api::new(&args.api)?.post(&endpoint(&["services"]), Some(&body))?;
            print_service(&args.api, answer)
        }
        ServiceCommand::Del(args) => {
            Api::new(&args.api)?.delete(&endpoint(&["services", &args.name]))?;
            if !args.api.json {
                println!("service {} deleted", args.name);
            }
            Ok(())
        }
        ServiceCommand::Set(args) => {
            let patch = merge_patch(&args.patch)?;
            let answer =
                Api::new(&args.api)?.patch(&endpoint(&["services", &args.name]), &patch)?;
            print_service(&args.api, answer)
        }
    }
}

/// The agent's JSON, or the service's settings and backends.
fn print_service(api: &ApiArgs, answer: Value) -> anyhow::Result<()> {
    if api.json {
        return print_json(&answer);
    }
    let service: Service = read(answer)?;
    print!("{}", details(&service));
    println!();
    print!("{}", backend::table(&service.backends));
    print!("{}", backend::notes(&service.backends));
    Ok(())
}

/// `xlb service list`'s table and, if a fallback takes traffic, what `*` means.
pub fn list_table(services: &[Service]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "VIP",
        "PORT",
        "PROTO",
        "MODE",
        "BACKENDS",
        "PACKETS",
        "BYTES",
        "NEW-FLOWS",
    ]);
    for s in services {
        table.row(vec![
            s.name.clone(),
            s.vip.to_string(),
            s.port.to_string(),
            s.protocol.name().into(),
            s.mode.name().into(),
            backends_cell(s),
            format::count(s.stats.packets),
            format::bytes(s.stats.bytes),
            format::count(s.stats.new_flows),
        ]);
    }
    let mut text = table.to_string();
    if services.iter().any(|s| s.fallback_active) {
        text.push_str("* no backend takes new flows: the fallback server does\n");
    }
    text
}

/// `up/total` backends, with `*` when the fallback takes the traffic.
fn backends_cell(s: &Service) -> String {
    let marker = if s.fallback_active { "*" } else { "" };
    format!("{}/{}{marker}", s.in_service(), s.backends.len())
}

/// A service's settings as `key: value` lines.
fn details(s: &Service) -> String {
    let fallback = match s.fallback {
        Some(addr) if s.fallback_active => format!("{addr} (active: it takes the new flows)"),
        Some(addr) => format!("{addr} (standby)"),
        None => "none".into(),
    };
    fields(&[
        ("service", s.name.clone()),
        ("address", format!("{} {}", s.address(), s.protocol.name())),
        ("mode", s.mode.name().into()),
        ("scheduler", s.scheduler.clone()),
        ("persistence", settings(s.persistence.as_ref())),
        ("health", settings(s.health.as_ref())),
        ("fallback", fallback),
        (
            "backends",
            format!("{} of {} in service", s.in_service(), s.backends.len()),
        ),
        (
            "traffic",
            format!(
                "{} packets, {}, {} new flows",
                format::count(s.stats.packets),
                format::bytes(s.stats.bytes),
                format::count(s.stats.new_flows)
            ),
        ),
    ])
}

/// Settings (a service's health or persistence) as `key=value` words,
/// `kind` first; `none` if absent, `defaults` if empty.
pub fn settings(value: Option<&impl Serialize>) -> String {
    let Some(Ok(Value::Object(object))) = value.map(serde_json::to_value) else {
        return "none".into();
    };
    if object.is_empty() {
        return "defaults".into();
    }
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort_by_key(|k| (k.as_str() != "kind", k.as_str()));
    keys.iter()
        .map(|key| match &object[*key] {
            Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file's service as the JSON body of `POST /api/v1/services`, checked
/// for unknown keys and wrong types before it is sent.
fn read_service_file(path: &Path) -> anyhow::Result<Value> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the service from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let service = parse_service(path, &text)
        .with_context(|| format!("{} is not a service", path.display()))?;
    Ok(serde_json::to_value(service)?)
}

fn parse_service(path: &Path, text: &str) -> anyhow::Result<ServiceConfig> {
    let json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("toml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        return Ok(serde_json::from_str(text)?);
    }
    // toml's messages quote the line and end with a newline.
    let toml_error = |e: toml::de::Error| anyhow::anyhow!("{}", e.to_string().trim_end());
    // Syntax first, so a stray [[service]] gets its own hint.
    let table: toml::Table = toml::from_str(text).map_err(toml_error)?;
    if table.contains_key("service") {
        bail!(
            "it holds a [[service]] table: write the keys of one service at the top level, \
             its backends as [[backend]] and its checks as [health]"
        );
    }
    toml::from_str(text).map_err(toml_error)
}

/// `--patch`: a JSON object.
fn merge_patch(text: &str) -> anyhow::Result<Value> {
    let patch: Value =
        serde_json::from_str(text).context("--patch is not JSON (e.g. '{\"mode\": \"nat\"}')")?;
    if !patch.is_object() {
        bail!("--patch is not a JSON object (e.g. '{{\"mode\": \"nat\"}}')");
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const WEB_TOML: &str = r#"
name = "web"
vip = "198.18.0.100"
port = 80
mode = "dr"
persistence = { timeout = "300s", netmask = 24 }

[health]
kind = "http"
path = "/healthz"

[[backend]]
address = "198.18.1.10"
weight = 2

[[backend]]
address = "198.18.1.11"
port = 8080
state = "drain"
"#;

    #[test]
    fn a_toml_service_becomes_the_post_body() {
        let body =
            serde_json::to_value(parse_service(Path::new("web.toml"), WEB_TOML).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "name": "web", "vip": "198.18.0.100", "port": 80, "mode": "dr",
                "persistence": {"timeout": "300s", "netmask": 24},
                "health": {"kind": "http", "path": "/healthz"},
                "backend": [
                    {"address": "198.18.1.10", "weight": 2},
                    {"address": "198.18.1.11", "port": 8080, "state": "drain"}
                ]
            })
        );
    }

    #[test]
    fn json_services_are_read_by_extension_or_content() {
        let text = r#"{"name": "dns", "vip": "198.18.0.53", "port": 53, "protocol": "udp"}"#;
        for path in ["dns.json", "dns.txt", "-"] {
            let service = parse_service(Path::new(path), text).unwrap();
            assert_eq!(service.protocol.as_deref(), Some("udp"), "{path}");
        }
    }

    #[test]
    fn malformed_services_say_why() {
        let unknown = parse_service(
            Path::new("a.toml"),
            "name = \"a\"\nvip = \"1.2.3.4\"\nport = 80\nwieght = 1\n",
        );
        assert!(format!("{:#}", unknown.unwrap_err()).contains("wieght"));
        let wrapped = parse_service(Path::new("a.toml"), "[[service]]\nname = \"a\"\n");
        assert!(format!("{:#}", wrapped.unwrap_err()).contains("holds a [[service]] table"));
        let missing = parse_service(Path::new("a.json"), r#"{"name": "a"}"#);
        assert!(format!("{:#}", missing.unwrap_err()).contains("missing field `vip`"));
        assert!(parse_service(Path::new("a.toml"), "port = ").is_err());
    }

    #[test]
    fn patches_are_json_objects() {
        assert_eq!(
            merge_patch(r#"{"mode":"nat"}"#).unwrap(),
            json!({"mode": "nat"})
        );
        assert!(merge_patch("mode=nat")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(merge_patch("[1]")
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
    }

    #[test]
    fn settings_read_as_words_kind_first() {
        let health = json!({"path": "/healthz", "kind": "http", "rise": 3});
        assert_eq!(settings(Some(&health)), "kind=http path=/healthz rise=3");
        assert_eq!(settings(Some(&json!({}))), "defaults");
        assert_eq!(settings(None::<&Value>), "none");
    }

    fn service(name: &str, fallback_active: bool, backends: Value) -> Service {
        read(json!({
            "name": name, "vip": "198.18.0.100", "port": 80, "protocol": "tcp",
            "mode": "dr", "scheduler": "maglev", "fallback_active": fallback_active,
            "backends": backends,
            "stats": {"packets": 1_234_567, "bytes": 3_400_000_000u64, "new_flows": 12}
        }))
        .unwrap()
    }

    fn backend(address: &str, admin: &str, serving: bool) -> Value {
        json!({
            "address": address, "port": 80, "weight": 1, "admin_state": admin,
            "oper_state": "up", "serving": serving, "ring_share": 0.5,
            "flows": {"active": 0, "inactive": 0},
            "stats": {"packets": 0, "bytes": 0, "new_flows": 0}
        })
    }

    #[test]
    fn the_list_counts_backends_in_service_and_marks_the_fallback() {
        let services = [
            service(
                "web",
                false,
                json!([
                    backend("198.18.1.10", "ready", true),
                    backend("198.18.1.11", "drain", true),
                ]),
            ),
            service("api", true, json!([backend("198.18.1.12", "ready", false)])),
        ];
        assert_eq!(
            list_table(&services),
            "NAME  VIP           PORT  PROTO  MODE  BACKENDS  PACKETS  BYTES   NEW-FLOWS\n\
             web   198.18.0.100  80    tcp    dr    1/2       1.2M     3.4 GB  12\n\
             api   198.18.0.100  80    tcp    dr    0/1*      1.2M     3.4 GB  12\n\
             * no backend takes new flows: the fallback server does\n"
        );
    }
}
