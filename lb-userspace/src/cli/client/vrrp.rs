//! `xlb vrrp`: this director's VRRP instances, like keepalived's state dump.

use clap::Args;

use super::{
    format,
    http::{endpoint, Api, ApiArgs},
    print_json, read,
    table::Table,
};
use crate::api::wire::InstanceStatus;

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
    let instances: Vec<InstanceStatus> = read(answer)?;
    if instances.is_empty() {
        println!("no VRRP instances");
        return Ok(());
    }
    print!("{}", table(&instances, format::now_unix_ms()));
    Ok(())
}

fn table(instances: &[InstanceStatus], now_unix_ms: u64) -> String {
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
        let priority = if i.priority == i.configured_priority {
            i.priority.to_string()
        } else {
            format!("{} ({})", i.priority, i.configured_priority)
        };
        let addresses: Vec<String> = i.virtual_addresses.iter().map(|a| a.to_string()).collect();
        let last_change = i
            .last_change_unix_ms
            .map(|then| format::age(then, now_unix_ms))
            .unwrap_or_else(|| "-".to_string());
        table.row(vec![
            i.name.clone(),
            i.interface.clone(),
            i.vrid.to_string(),
            i.version.name().into(),
            i.state.name().to_uppercase(),
            priority,
            i.master.map_or_else(|| "-".to_string(), |m| m.to_string()),
            addresses.join(","),
            i.transitions.to_string(),
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
        let instances: Vec<InstanceStatus> = read(json!([{
            "name": "VI_1", "interface": "eth0", "vrid": 51, "version": "v3", "state": "master",
            "priority": 90, "configured_priority": 150, "advert_interval_ms": 1000.0,
            "master_down_interval_ms": 3414.0, "master": "198.18.0.2",
            "virtual_addresses": ["198.18.0.100", "198.18.0.101"], "sync_group": null,
            "transitions": 2, "last_change_unix_ms": 1_000, "last_reason": "preempted",
            "adverts_sent": 40, "adverts_received": 3, "adverts_discarded": 0,
        }]))
        .unwrap();
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
