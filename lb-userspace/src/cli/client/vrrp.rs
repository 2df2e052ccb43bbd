//! `xlb vrrp`: this director's VRRP instances, like keepalived's state dump.

use clap::Args;
use serde_json::Value;

use super::{
    format,
    http::{endpoint, Api, ApiArgs},
    print_json,
    table::Table,
};

#[derive(Debug, Args)]
#[command(
    after_help = "Table: NAME INTERFACE VRID VERSION STATE PRIORITY MASTER ADDRESSES TRANSITIONS LAST-CHANGE."
)]
pub struct VrrpArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(args: VrrpArgs) -> anyhow::Result<()> {
    let answer = Api::new(&args.api)?.get_json(&endpoint(&["vrrp"]))?;
    if args.api.json {
        return print_json(&answer);
    }
    let instances = answer.as_array().cloned().unwrap_or_default();
    if instances.is_empty() {
        println!("no VRRP instances");
        return Ok(());
    }
    print!("{}", table(&instances, format::now_unix_ms()));
    Ok(())
}

fn table(instances: &[Value], now_unix_ms: u64) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut table = Table::new(&[
        "NAME",
        "INTERFACE",
        "VRID",
        "VERSION",
        "STATE",
        "PRIORITY",
        "MASTER",
        "ADDRESSES",
        "TRANSITIONS",
        "LAST-CHANGE",
    ]);
    for i in instances {
        let priority = match (i["priority"].as_u64(), i["configured_priority"].as_u64()) {
            (Some(now), Some(configured)) if now != configured => format!("{now} ({configured})"),
            (Some(now), _) => now.to_string(),
            _ => "-".to_string(),
        };
        let addresses: Vec<String> = i["virtual_addresses"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        let last_change = i["last_change_unix_ms"]
            .as_u64()
            .map(|then| format::age(then, now_unix_ms))
            .unwrap_or_else(|| "-".to_string());
        table.row(vec![
            text(&i["name"]),
            text(&i["interface"]),
            text(&i["vrid"]),
            text(&i["version"]),
            text(&i["state"]).to_uppercase(),
            priority,
            text(&i["master"]),
            addresses.join(","),
            text(&i["transitions"]),
            last_change,
        ]);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shows_state_priority_and_master() {
        let instances = [json!({
            "name": "VI_1", "interface": "eth0", "vrid": 51, "version": "v3", "state": "master",
            "priority": 90, "configured_priority": 150, "master": "198.18.0.2",
            "virtual_addresses": ["198.18.0.100", "198.18.0.101"], "transitions": 2,
            "last_change_unix_ms": 1_000,
        })];
        let out = table(&instances, 3_500);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{out}");
        for cell in [
            "VI_1",
            "eth0",
            "51",
            "MASTER",
            "90 (150)",
            "198.18.0.2",
            "198.18.0.100,198.18.0.101",
        ] {
            assert!(lines[1].contains(cell), "{cell} missing: {out}");
        }
    }
}
