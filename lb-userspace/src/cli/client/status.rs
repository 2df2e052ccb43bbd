//! `xlb status`: the agent and every service on one screen, like `ipvsadm -L -n`.

use clap::Args;
use serde_json::json;

use super::{
    backend, format,
    http::{endpoint, Api, ApiArgs},
    print_json, read,
    service::settings,
    stats::headline,
    table::Table,
};
use crate::api::wire::{Service, Stats};

#[derive(Debug, Args)]
#[command(after_help = "Each service is a line \
    `PROTO VIP:PORT NAME mode MODE backends IN-SERVICE/TOTAL [fallback ADDR active|standby] \
    [persistence ...]`, then its backends as `  -> ADDRESS WEIGHT ADMIN OPER SERVING SHARE% \
    ACTIVE INACTIVE LAST-CHECK` (ACTIVE and INACTIVE as ipvsadm's ActiveConn and InActConn).\n\
    With --json: {\"stats\": GET /api/v1/stats, \"services\": GET /api/v1/services}.")]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let stats = api.get_json(&endpoint(&["stats"]))?;
    let services = api.get_json(&endpoint(&["services"]))?;
    if args.api.json {
        return print_json(&json!({ "stats": stats, "services": services }));
    }
    let services: Vec<Service> = read(services)?;
    print!(
        "{}",
        render(&read(stats)?, &services, format::now_unix_ms())
    );
    Ok(())
}

fn render(stats: &Stats, services: &[Service], now_unix_ms: u64) -> String {
    let backends: usize = services.iter().map(|s| s.backends.len()).sum();
    let in_service: usize = services.iter().map(Service::in_service).sum();
    let mut text = format!(
        "{}\n\
         services: {}, backends in service: {in_service} of {backends}, \
         health transitions: {}, data-plane updates: {}\n",
        headline(stats),
        services.len(),
        stats.health_transitions,
        stats.applies,
    );
    if stats.api_changes > 0 {
        text.push_str(&format!(
            "changes made through the API kept over the file: {} (`xlb state` lists them)\n",
            stats.api_changes
        ));
    }
    for service in services {
        text.push('\n');
        text.push_str(&service_line(service));
        text.push_str(&backend_lines(service, now_unix_ms));
        for note in backend::notes(&service.backends).lines() {
            text.push_str(&format!("  {note}\n"));
        }
    }
    text
}

fn service_line(s: &Service) -> String {
    let mut line = format!(
        "{}  {}  {}  mode {}  backends {}/{}",
        s.protocol.name().to_uppercase(),
        s.address(),
        s.name,
        s.mode.name(),
        s.in_service(),
        s.backends.len()
    );
    if let Some(fallback) = s.fallback {
        let state = if s.fallback_active {
            "active"
        } else {
            "standby"
        };
        line.push_str(&format!("  fallback {fallback} {state}"));
    }
    if s.persistence.is_some() {
        line.push_str(&format!(
            "  persistence {}",
            settings(s.persistence.as_ref())
        ));
    }
    line.push('\n');
    line
}

fn backend_lines(s: &Service, now_unix_ms: u64) -> String {
    if s.backends.is_empty() {
        return "  (no backends)\n".into();
    }
    let mut table = Table::new(&[
        "ADDRESS",
        "WEIGHT",
        "ADMIN",
        "OPER",
        "SERVING",
        "SHARE%",
        "ACTIVE",
        "INACTIVE",
        "LAST-CHECK",
    ]);
    for b in &s.backends {
        table.row(vec![
            b.socket_addr().to_string(),
            b.weight.to_string(),
            b.admin_state.name().into(),
            b.oper_state.name().into(),
            if b.serving { "yes" } else { "no" }.into(),
            format::percent(b.ring_share),
            format::count(b.flows.active),
            format::count(b.flows.inactive),
            backend::last_check(b, now_unix_ms),
        ]);
    }
    table
        .lines()
        .iter()
        .map(|line| format!("  -> {line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn status_is_one_block_per_service() {
        let stats: Stats = read(json!({
            "version": "0.1.0", "uptime_s": 7500.0, "interfaces": ["eth0", "eth1"],
            "health_transitions": 3, "applies": 5, "maglev_builds": 5, "counters": {},
            "flow_count": {"at_unix_ms": null, "took_ms": 0.0, "entries": 0, "pruned": 0},
            "flood_guard": {"new_flows_per_cpu": 1000, "active": false,
                            "active_since_unix_ms": null, "stateless_flows": 0},
            "services": [], "changes_need_token": false, "api_changes": 2
        }))
        .unwrap();
        let services: Vec<Service> = read(json!([
            {
                "name": "web", "vip": "198.18.0.100", "port": 80, "protocol": "tcp",
                "mode": "dr", "scheduler": "maglev", "fallback": "198.18.2.1:80",
                "fallback_active": false, "persistence": {"netmask": 24},
                "stats": {"packets": 0, "bytes": 0, "new_flows": 0},
                "backends": [{
                    "address": "198.18.1.10", "port": 80, "weight": 2,
                    "admin_state": "ready", "oper_state": "up", "serving": true,
                    "ring_share": 1.0,
                    "check": {"state": "up", "target": "198.18.1.10:80", "progress": "0 of 3 failures",
                              "since_unix_ms": 0, "transitions": 0, "checks": 4,
                              "failures_total": 0,
                              "last": {"ok": true, "detail": "ok", "at_unix_ms": 1000,
                                       "took_ms": 0.3}},
                    "flows": {"active": 27, "inactive": 4},
                    "stats": {"packets": 0, "bytes": 0, "new_flows": 0}
                }, {
                    "address": "198.18.1.11", "port": 80, "weight": 1,
                    "admin_state": "drain", "oper_state": "down", "serving": false,
                    "ring_share": 0.0,
                    "check": {"state": "down", "target": "198.18.1.11:80", "progress": "0 of 2 successes",
                              "since_unix_ms": 0, "transitions": 1, "checks": 4,
                              "failures_total": 3,
                              "last": {"ok": false, "detail": "connection refused",
                                       "at_unix_ms": 2000, "took_ms": 0.3}},
                    "flows": {"active": 0, "inactive": 0},
                    "stats": {"packets": 0, "bytes": 0, "new_flows": 0}
                }]
            },
            {
                "name": "dns", "vip": "fd00::53", "port": 53, "protocol": "udp",
                "mode": "ipip", "scheduler": "maglev", "fallback_active": false,
                "stats": {"packets": 0, "bytes": 0, "new_flows": 0}, "backends": []
            }
        ]))
        .unwrap();
        assert_eq!(
            render(&stats, &services, 2500),
            "xlb 0.1.0, up 2h5m, interfaces: eth0, eth1\n\
             services: 2, backends in service: 1 of 2, health transitions: 3, \
             data-plane updates: 5\n\
             changes made through the API kept over the file: 2 (`xlb state` lists them)\n\
             \n\
             TCP  198.18.0.100:80  web  mode dr  backends 1/2  fallback 198.18.2.1:80 standby  \
             persistence netmask=24\n  \
             -> ADDRESS         WEIGHT  ADMIN  OPER  SERVING  SHARE%  ACTIVE  INACTIVE  LAST-CHECK\n  \
             -> 198.18.1.10:80  2       ready  up    yes      100.0   27      4         ok 1.5s ago\n  \
             -> 198.18.1.11:80  1       drain  down  no       0.0     0       0         failed 500ms ago\n  \
             198.18.1.11:80: last check failed: connection refused (0 of 2 successes)\n\
             \n\
             UDP  [fd00::53]:53  dns  mode ipip  backends 0/0\n  \
             (no backends)\n"
        );
    }
}
