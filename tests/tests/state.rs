//! Changes made through the API outlive a reload and a restart: the agent keeps them in the
//! state file beside its configuration and applies them over the file, and `xlb state` shows
//! and clears them. In every forwarding mode, over IPv4 and IPv6, with real connections counted
//! at the backends.

use std::time::Duration;

use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::{encode, AgentTestbed, ServiceConf, TCP_CHECK},
    lab::Family,
    require_privileged,
    servers::tcp_spread,
};

/// b1..b3 behind `web`, health-checked, with these weights.
fn config(mode: Mode, family: Family, weights: [u16; 3]) -> String {
    ServiceConf {
        weights: &weights,
        health: Some(TCP_CHECK),
        ..ServiceConf::new("web", mode, family)
    }
    .toml()
}

fn patch(lab: &AgentTestbed, n: usize, body: &str) {
    let path = format!(
        "/api/v1/services/web/backends/{}",
        encode(&lab.backend_addr(n).to_string())
    );
    let (status, answer) = lab
        .agent()
        .request("PATCH", &path, Some(body), None)
        .unwrap();
    assert_eq!(status, 200, "PATCH {body}: {answer}");
}

/// The backends' admin states and weights as the API reports them.
fn backends(lab: &AgentTestbed) -> Vec<(String, u64)> {
    (0..3)
        .map(|n| {
            let b = lab.backend("web", n).unwrap();
            (
                b["admin_state"].as_str().unwrap().to_owned(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// New connections reach b2 and b3 only: the drained b1 gets none.
fn b1_gets_nothing(lab: &AgentTestbed, when: &str) {
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 150).unwrap();
    assert_eq!(
        spread.failed,
        0,
        "{when}: {spread:?}\n{}",
        lab.agent().logs()
    );
    assert!(
        !spread.by_backend.contains_key("b1"),
        "{when}: the drained b1 got new connections: {spread:?}"
    );
    assert!(
        spread.by_backend.contains_key("b2") && spread.by_backend.contains_key("b3"),
        "{when}: {spread:?}"
    );
}

fn survives_reload_and_restart(tag: &str, mode: Mode, family: Family) {
    let mut lab =
        AgentTestbed::new(tag, mode, family, 3, &config(mode, family, [1, 1, 1])).unwrap();
    let state_file = lab.agent().config_path().with_extension("state");
    lab.start().unwrap();
    lab.wait_backend("web", 0, Duration::from_secs(5), "up", |b| {
        b["oper_state"] == "up"
    })
    .unwrap();
    assert_eq!(
        lab.agent().get("/api/v1/state").unwrap()["changes"],
        serde_json::json!({}),
        "a fresh agent keeps no changes"
    );

    patch(&lab, 0, r#"{"admin_state": "drain"}"#);
    patch(&lab, 1, r#"{"weight": 3}"#);
    let kept = std::fs::read_to_string(&state_file).expect("the state file is written");
    assert!(
        kept.contains("state = \"drain\"") && kept.contains("weight = 3"),
        "{kept}"
    );
    let state = lab.agent().get("/api/v1/state").unwrap();
    assert_eq!(state["path"], state_file.display().to_string(), "{state}");
    assert_eq!(
        state["changes"]["backends"][0]["changed"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{state}"
    );
    let (ok, out) = lab.xlb(&["status"]).unwrap();
    assert!(
        ok && out.contains("changes made through the API kept over the file: 2"),
        "{out}"
    );
    let changed = vec![
        ("drain".into(), 1),
        ("ready".into(), 3),
        ("ready".into(), 1),
    ];
    assert_eq!(backends(&lab), changed);
    b1_gets_nothing(&lab, "after the drain");

    // The file changes b3's weight; a reload applies it and keeps the API's changes.
    lab.write_config(&config(mode, family, [1, 1, 2])).unwrap();
    let (ok, out) = lab.xlb(&["reload"]).unwrap();
    assert!(ok, "{out}");
    let reloaded = vec![
        ("drain".into(), 1),
        ("ready".into(), 3),
        ("ready".into(), 2),
    ];
    assert_eq!(backends(&lab), reloaded, "after the reload");
    b1_gets_nothing(&lab, "after the reload");

    // A restart (stop, detach, start afresh) starts from the file and the state.
    lab.agent_mut().stop().unwrap();
    lab.start().unwrap();
    assert_eq!(backends(&lab), reloaded, "after the restart");
    lab.wait_backend("web", 2, Duration::from_secs(5), "up", |b| {
        b["oper_state"] == "up"
    })
    .unwrap();
    b1_gets_nothing(&lab, "after the restart");
    let (ok, out) = lab.xlb(&["state"]).unwrap();
    assert!(ok && out.contains("state = \"drain\""), "{out}");
    let (ok, out) = lab
        .xlb(&[
            "config",
            "dump",
            "--config",
            &lab.agent().config_path().display().to_string(),
        ])
        .unwrap();
    assert!(
        ok && out.contains("state = \"drain\"") && out.contains("weight = 3"),
        "{out}"
    );

    // Cleared, the file runs as written and the state file is gone.
    let (ok, out) = lab.xlb(&["state", "clear"]).unwrap();
    assert!(ok && out.contains("dropped"), "{out}");
    let file = vec![
        ("ready".into(), 1),
        ("ready".into(), 1),
        ("ready".into(), 2),
    ];
    assert_eq!(backends(&lab), file, "after clearing");
    assert!(!state_file.exists(), "the state file outlived the clear");
    let (ok, out) = lab.xlb(&["state"]).unwrap();
    assert!(
        ok && out.contains("no changes made through the API"),
        "{out}"
    );
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 150).unwrap();
    assert!(
        spread.by_backend.contains_key("b1"),
        "b1 ready again gets none: {spread:?}"
    );
}

#[test]
fn api_changes_survive_reload_and_restart_in_dr() {
    require_privileged!();
    survives_reload_and_restart("stdr4", Mode::Dr, Family::V4);
    survives_reload_and_restart("stdr6", Mode::Dr, Family::V6);
}

#[test]
fn api_changes_survive_reload_and_restart_in_ipip() {
    require_privileged!();
    survives_reload_and_restart("stipip4", Mode::Ipip, Family::V4);
    survives_reload_and_restart("stipip6", Mode::Ipip, Family::V6);
}

#[test]
fn api_changes_survive_reload_and_restart_in_nat() {
    require_privileged!();
    survives_reload_and_restart("stnat4", Mode::Nat, Family::V4);
    survives_reload_and_restart("stnat6", Mode::Nat, Family::V6);
}

#[test]
fn a_state_that_no_longer_fits_the_file_refuses_the_start_and_the_reload() {
    require_privileged!();
    let (mode, family) = (Mode::Dr, Family::V4);
    let mut lab =
        AgentTestbed::new("stbad", mode, family, 3, &config(mode, family, [1, 1, 1])).unwrap();
    let state_file = lab.agent().config_path().with_extension("state");
    // A service added through the API on the VIP and port `web` has.
    std::fs::write(
        &state_file,
        format!(
            "[[service]]\nname = \"web2\"\nvip = \"{}\"\nport = {}\n",
            lab.vip().ip(),
            lab.vip().port()
        ),
    )
    .unwrap();
    let (ok, out) = lab
        .xlb(&[
            "check",
            "--skip-routes",
            "--config",
            &lab.agent().config_path().display().to_string(),
        ])
        .unwrap();
    assert!(!ok && out.contains("state: "), "{out}");
    let refused = format!("{:#}", lab.start().unwrap_err());
    assert!(
        refused.contains(&state_file.display().to_string()),
        "{refused}"
    );

    std::fs::remove_file(&state_file).unwrap();
    lab.start().unwrap();
    patch(&lab, 0, r#"{"weight": 5}"#);
    // A file that drops b1 leaves its change out, and says so.
    let without_b1 = config(mode, family, [1, 1, 1]);
    let b1 = format!(
        "[[service.backend]]\naddress = \"{}\"\nweight = 1\n",
        lab.backend_addr(0).ip()
    );
    assert!(without_b1.contains(&b1), "{without_b1}");
    lab.write_config(&without_b1.replacen(&b1, "", 1)).unwrap();
    let (ok, out) = lab.xlb(&["reload"]).unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("no longer apply, dropped: backends[web]: the file has no backend"),
        "{out}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !lab.agent().logs().contains("no longer applies") {
        assert!(
            std::time::Instant::now() < deadline,
            "no note of the change left out:\n{}",
            lab.agent().logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lab.agent().get("/api/v1/state").unwrap()["changes"],
        serde_json::json!({})
    );
    let _: Value = lab.agent().get("/api/v1/services/web").unwrap();
}
