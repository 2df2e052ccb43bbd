//! The agent end to end: `xlb run` in the director's namespace of the lab, real backends, a
//! client making connections, and the HTTP API.

use std::time::Duration;

use anyhow::{ensure, Context};
use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::{encode, total, AgentLab, SteadyLoad},
    lab::Family,
    require_privileged,
    servers::tcp_spread,
};

/// b1..b3 behind a TCP service checked every 200 ms (rise 2, fall 3), and the same backends
/// over UDP without checks.
fn services(weights: [u16; 3]) -> String {
    let mut text = String::from(
        "[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\nmode = \"dr\"\n\
         [service.health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
         rise = 2\nfall = 3\n",
    );
    for (n, w) in weights.iter().enumerate() {
        text += &format!(
            "[[service.backend]]\naddress = \"198.18.1.{}\"\nweight = {w}\n",
            10 + n
        );
    }
    text += "\n[[service]]\nname = \"web-udp\"\nvip = \"198.18.0.100\"\nport = 80\n\
             protocol = \"udp\"\n";
    for n in 0..3 {
        text += &format!("[[service.backend]]\naddress = \"198.18.1.{}\"\n", 10 + n);
    }
    text
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn serves_the_configured_services() {
    require_privileged!();
    let mut lab = AgentLab::new("agserve", Mode::Dr, Family::V4, 3, &services([1, 1, 1])).unwrap();
    lab.start().unwrap();
    let spread = tcp_spread(&lab.net.client, lab.vip(), 300).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}\n{}", lab.logs());
    assert_eq!(spread.by_backend.len(), 3, "{spread:?}");
    let services = lab.get("/api/v1/services").unwrap();
    assert_eq!(names(&services), ["web", "web-udp"]);
    let b1 = lab.backend("web", 0).unwrap();
    assert_eq!(b1["oper_state"], "up", "{b1}");
    assert_eq!(b1["serving"], true, "{b1}");
    assert!(b1["stats"]["new_flows"].as_u64().unwrap() > 50, "{b1}");
    let logs = lab.stop().unwrap();
    assert!(logs.contains("detached from eth0"), "{logs}");
    assert!(!lab.pins.exists(), "SIGTERM leaves no pins");
    assert_eq!(lab.net.director.xdp_prog_id("eth0").unwrap(), None);
}
