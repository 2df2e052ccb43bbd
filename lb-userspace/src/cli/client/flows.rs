//! `xlb flows`: the connections the data plane tracks, like `ipvsadm -L -c`.

use clap::Args;

use super::{
    format,
    http::{endpoint, with_query, Api, ApiArgs},
    print_json, read,
    table::Table,
};
use crate::api::wire::Flow;

#[derive(Debug, Args)]
#[command(after_help = "Table: PRO CLIENT VIP BACKEND SERVICE IDLE.")]
pub struct FlowsArgs {
    /// Only this service's flows.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// At most this many flows.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: usize,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(service) = &args.service {
        query.push(("service", service.clone()));
    }
    let answer = Api::new(&args.api)?.get_json(&with_query(endpoint(&["flows"]), &query))?;
    if args.api.json {
        return print_json(&answer);
    }
    let flows: Vec<Flow> = read(answer)?;
    print!("{}", table(&flows));
    if flows.len() >= args.limit {
        println!("(the first {} flows; --limit shows more)", args.limit);
    }
    Ok(())
}

fn table(flows: &[Flow]) -> String {
    let mut table = Table::new(&["PRO", "CLIENT", "VIP", "BACKEND", "SERVICE", "IDLE"]);
    for flow in flows {
        table.row(vec![
            flow.protocol.name().to_uppercase(),
            flow.client.to_string(),
            flow.vip.to_string(),
            flow.backend.to_string(),
            flow.service.clone(),
            format::duration(flow.idle),
        ]);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flows_read_like_ipvsadm_connections() {
        let flows: Vec<Flow> = read(json!([
            {"service": "web", "protocol": "tcp", "client": "203.0.113.7:50123",
             "vip": "198.18.0.100:80", "backend": "198.18.1.10:80", "idle_ms": 1250},
            {"service": "dns", "protocol": "udp", "client": "[2001:db8::7]:5353",
             "vip": "[fd00::53]:53", "backend": "[fd00::1:10]:53", "idle_ms": 45000}
        ]))
        .unwrap();
        assert_eq!(
            table(&flows),
            "PRO  CLIENT              VIP              BACKEND          SERVICE  IDLE\n\
             TCP  203.0.113.7:50123   198.18.0.100:80  198.18.1.10:80   web      1.2s\n\
             UDP  [2001:db8::7]:5353  [fd00::53]:53    [fd00::1:10]:53  dns      45s\n"
        );
    }
}
