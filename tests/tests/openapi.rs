//! The API against its OpenAPI document: the document a live agent serves
//! lists every route, no answer shows a secret to a caller without the
//! token, and schemathesis (`cargo xtask setup` installs it) finds no
//! failure with all its checks.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Instant,
};

use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::{AgentProcess, AgentTestbed, ServiceConf, API, TCP_CHECK},
    lab::Family,
    require_privileged,
};

/// Where `cargo xtask setup` installs schemathesis.
const SCHEMATHESIS: &str = "/opt/xlb-tools/schemathesis/bin/schemathesis";
const TOKEN: &str = "openapi-test-token-0123456789";
const PASSWORD: &str = "vrrpPw42";
const HASH_SEED: &str = "0x5eed1234";

/// Every operation of the router, as `METHOD PATH`. utoipa-axum registers a
/// route only with its documentation; this list is what a reader of the API
/// has, and the document must name each.
const ROUTES: &[&str] = &[
    "GET /",
    "GET /healthz",
    "GET /ready",
    "GET /metrics",
    "GET /api/v1/services",
    "POST /api/v1/services",
    "GET /api/v1/services/{name}",
    "PATCH /api/v1/services/{name}",
    "DELETE /api/v1/services/{name}",
    "GET /api/v1/services/{name}/backends",
    "POST /api/v1/services/{name}/backends",
    "GET /api/v1/services/{name}/backends/{addr}",
    "PATCH /api/v1/services/{name}/backends/{addr}",
    "DELETE /api/v1/services/{name}/backends/{addr}",
    "GET /api/v1/flows",
    "GET /api/v1/stats",
    "POST /api/v1/reload",
    "GET /api/v1/config",
    "GET /api/v1/state",
    "DELETE /api/v1/state",
    "GET /api/v1/vrrp",
    "GET /api/v1/openapi.json",
];

/// Several services over the lab's VIP (DR over TCP and UDP, NAT with port
/// translation, a fallback, persistence, checks) and a VRRPv2 instance with
/// a password that holds the VIP.
fn config(lab: &AgentTestbed) -> String {
    let web = ServiceConf {
        weights: &[1, 1],
        health: Some(TCP_CHECK),
        fallback: Some(2),
        ..ServiceConf::new("web", Mode::Dr, Family::V4)
    };
    let dns = ServiceConf {
        protocol: "udp",
        port: 53,
        weights: &[2, 1, 1],
        ..ServiceConf::new("dns", Mode::Dr, Family::V4)
    };
    let app = ServiceConf {
        port: 9000,
        backend_port: 20000,
        weights: &[1, 3],
        ..ServiceConf::new("app", Mode::Nat, Family::V4)
    };
    let vip = lab.vip().ip();
    format!(
        "{}{}\n[service.persistence]\ntimeout = \"1000s\"\n\n{}\
         [[vrrp.instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\n\
         version = 2\nadvert_interval = \"1s\"\nauth_pass = \"{PASSWORD}\"\n\
         virtual_addresses = [\"{vip}\"]\n",
        web.toml(),
        dns.toml().trim_end(),
        app.toml(),
    )
}

#[test]
fn schemathesis_finds_nothing_against_a_live_agent() {
    require_privileged!();
    let mut lab = AgentTestbed::with_directors("openapi", Mode::Dr, Family::V4, 3, 1).unwrap();
    lab.write_config(&config(&lab)).unwrap();
    lab.open_api(API, TOKEN).unwrap();
    lab.add_agent_settings(&format!("hash_seed = \"{HASH_SEED}\""))
        .unwrap();
    lab.start().unwrap();
    let agent = lab.agent();

    // The document: JSON, OpenAPI 3, every route of the router.
    let document = agent.get("/api/v1/openapi.json").unwrap();
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi {version:?}");
    let documented: BTreeSet<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let routes: BTreeSet<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        documented, routes,
        "the document's operations against the router's"
    );
    // Each documented operation is routed: not the fallback's 404 or 405
    // (with the token, which a change is asked for first; on a service that
    // does not exist, so nothing changes).
    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{name}", "no-such-service")
            .replace("{addr}", "198.18.1.10%3A80");
        let (status, body) = agent.request(method, &path, None, Some(TOKEN)).unwrap();
        assert!(
            !body.contains("no such path in this API") && status != 405,
            "{route}: {status} {body}"
        );
    }

    secrets_stay_with_the_token(&lab);
    errors_past_the_router_are_json(agent);

    // schemathesis in the director's namespace, where the API listens.
    assert!(
        Path::new(SCHEMATHESIS).exists(),
        "{SCHEMATHESIS} is missing: run `cargo xtask setup`"
    );
    let settings = agent.dir.join("schemathesis.toml");
    std::fs::write(&settings, SCHEMATHESIS_CONFIG).unwrap();
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", agent.director_ns.name(), SCHEMATHESIS])
        .arg("--config-file")
        .arg(&settings)
        .args(["run", &format!("http://{API}/api/v1/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--max-time",
            "90",
        ])
        .args(["--seed", "1", "--workers", "2", "--no-color"])
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .current_dir(&agent.dir)
        .output()
        .expect("running schemathesis");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis ({}, {:?}):\n{printed}\n{}",
        out.status,
        started.elapsed(),
        agent.logs()
    );
    eprintln!("schemathesis in {:?}:\n{printed}", started.elapsed());
    // Whatever it sent, the agent is still running and whole.
    let (status, body) = agent.request("GET", "/ready", None, None).unwrap();
    assert_eq!(status, 200, "{body}\n{}", agent.logs());
    assert!(!agent.logs().contains("panicked"), "{}", agent.logs());
}

/// schemathesis' settings. A request the document describes can still
/// break a rule of the configuration that a schema cannot say (a VIP or a
/// backend address:port that must parse, backends of the VIP's family,
/// ports per mode, a health check's keys per kind): the API refuses those
/// with 400 naming the field, which `positive_data_acceptance` is told is
/// an answer to valid data (its default list and 400).
const SCHEMATHESIS_CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
"#;

/// No answer shows the VRRP password, the hash seed or the token to a caller
/// without the token; `GET /api/v1/config` shows the password and the seed
/// to one that presents it.
fn secrets_stay_with_the_token(lab: &AgentTestbed) {
    let agent = lab.agent();
    let secrets = [PASSWORD, HASH_SEED, TOKEN];
    let reads = [
        "/",
        "/metrics",
        "/api/v1/services",
        "/api/v1/services/web",
        "/api/v1/services/web/backends",
        "/api/v1/flows",
        "/api/v1/stats",
        "/api/v1/config",
        "/api/v1/state",
        "/api/v1/vrrp",
        "/api/v1/openapi.json",
    ];
    for path in reads {
        let (status, body) = agent.request("GET", path, None, None).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        for secret in secrets {
            assert!(!body.contains(secret), "{path} shows {secret}:\n{body}");
        }
    }
    let (_, config) = agent.request("GET", "/api/v1/config", None, None).unwrap();
    assert!(
        config.contains("auth_pass of the VRRP instances is left out")
            && config.contains("agent.hash_seed is left out"),
        "{config}"
    );
    // A wrong token is no token.
    let (_, config) = agent
        .request("GET", "/api/v1/config", None, Some("not-the-token"))
        .unwrap();
    assert!(!config.contains(PASSWORD), "{config}");
    let (_, config) = agent
        .request("GET", "/api/v1/config", None, Some(TOKEN))
        .unwrap();
    assert!(
        config.contains(&format!("auth_pass = \"{PASSWORD}\""))
            && config.contains(&format!("hash_seed = \"{HASH_SEED}\"")),
        "{config}"
    );
    // The VRRP instance is shown, without its password.
    let vrrp: Value = agent.get("/api/v1/vrrp").unwrap();
    assert_eq!(vrrp[0]["name"], "VI_1", "{vrrp}");
}

/// What the agent answers `request` (raw HTTP/1.1) with: the head and the body.
fn raw(agent: &AgentProcess, request: String) -> (String, String) {
    agent
        .director_ns
        .run(move || {
            let mut stream = TcpStream::connect(API).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            (head.to_string(), body.to_string())
        })
        .unwrap()
}

/// The errors answered before or beside the handlers (the request-head
/// limits, an unknown method; a body over the limit is agent.rs') are the
/// JSON error body, as the document says.
fn errors_past_the_router_are_json(agent: &AgentProcess) {
    let get = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {API}\r\n{headers}Connection: close\r\n\r\n")
    };
    let long_uri = format!("/api/v1/services/{}", "a".repeat(9000));
    let many_headers: String = (0..70).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "b".repeat(17000));
    let cases = [
        (get(&long_uri, ""), "414"),
        (get("/api/v1/stats", &many_headers), "431"),
        (get("/api/v1/stats", &big_header), "431"),
        (
            // With the token: a change without it is refused first, whatever its method.
            format!(
                "PUT /api/v1/stats HTTP/1.1\r\nHost: {API}\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Connection: close\r\n\r\n"
            ),
            "405",
        ),
    ];
    for (request, status) in cases {
        let (head, body) = raw(agent, request);
        let status_line = head.lines().next().unwrap_or_default();
        assert!(
            status_line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status_line}: {body}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let error: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(error["error"].is_string(), "{body}");
        if status == "405" {
            assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
        }
    }
}
