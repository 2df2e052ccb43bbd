//! `cargo xtask demo`, as CI runs it: its JSON summary says every connection of every mode was
//! answered by all three backends, and that the tour through the agent's API held: a drained
//! backend took no new connections and kept its established ones, a killed server was taken
//! out and brought back in time, without failures meanwhile.

use std::process::Command;

use serde_json::Value;
use xlb_tests::require_privileged;

/// Connections per mode: fewer than the demo's default, enough for three backends.
const CONNECTIONS: u64 = 150;

#[test]
fn the_demo_balances_every_mode_and_operates_the_agent() {
    require_privileged!();
    let out = Command::new(env!("CARGO_BIN_EXE_xlb-demo"))
        .args(["--json", "--connections", &CONNECTIONS.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed: {stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    for mode in ["dr", "ipip", "nat"] {
        let result = &summary["modes"][mode];
        assert_eq!(result["failed"], 0, "{mode}: {result}");
        let backends = result["backends"].as_object().unwrap();
        let answered: Vec<u64> = backends.values().map(|n| n.as_u64().unwrap()).collect();
        assert_eq!(answered.len(), 3, "{mode}: {result}");
        assert!(answered.iter().all(|&n| n > 0), "{mode}: {result}");
        assert_eq!(
            answered.iter().sum::<u64>(),
            CONNECTIONS,
            "{mode}: {result}"
        );
    }

    let drain = &summary["tour"]["drain"];
    assert_eq!(drain["failed"], 0, "{drain}");
    assert_eq!(drain["new_connections_at_drained"], 0, "{drain}");
    assert_eq!(
        drain["backends"][drain["backend"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()],
        0,
        "{drain}"
    );
    assert!(
        drain["long_lived_on_drained"].as_u64().unwrap() > 0,
        "{drain}"
    );
    assert_eq!(drain["long_lived_moved_or_broken"], 0, "{drain}");

    let kill = &summary["tour"]["kill"];
    assert!(kill["down_after_ms"].as_u64().unwrap() <= 2000, "{kill}");
    assert!(kill["up_after_ms"].as_u64().unwrap() <= 2000, "{kill}");
    assert_eq!(kill["while_down"]["failed"], 0, "{kill}");
    assert!(
        kill["while_down"]["answered"].as_u64().unwrap() > 0,
        "{kill}"
    );
    assert_eq!(kill["after_up"]["failed"], 0, "{kill}");
    assert!(kill["after_up"]["b2"].as_u64().unwrap() > 0, "{kill}");
}
