use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::maps::Mode;

use super::{Config, ConfigError};
use crate::{
    dataplane::DirectorSettings,
    model::{AdminState, AttachMode, CheckKind, Model, OperState, Protocol},
};

/// The error `toml` gets from parsing and validation.
fn err(toml: &str) -> ConfigError {
    Config::parse(toml)
        .and_then(|c| c.validate())
        .expect_err("the config is rejected")
}

/// The model `toml` validates to.
pub(crate) fn valid(toml: &str) -> Model {
    Config::parse(toml)
        .and_then(|c| c.validate())
        .expect("the config is valid")
}

pub(crate) fn error(field: &str, message: &str) -> ConfigError {
    ConfigError::new(field, message)
}

/// An `[agent]` section with one interface and `lines`.
fn agent(lines: &str) -> String {
    format!("[agent]\ninterfaces = [\"eth0\"]\n{lines}\n")
}

fn tables(lines: &str) -> String {
    format!("{}[tables]\n{lines}\n", agent(""))
}

/// A file with the service `web` (198.18.0.100:80/tcp) and `lines` after its
/// port; the agent has an IPv4 tunnel source.
fn web(lines: &str) -> String {
    format!(
        "{}[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\n{lines}\n",
        agent("tunnel_source_v4 = \"198.18.1.2\"")
    )
}

fn backend(lines: &str) -> String {
    format!("[[service.backend]]\naddress = \"198.18.1.10\"\n{lines}\n")
}

fn health(lines: &str) -> String {
    web(&format!("[service.health]\n{lines}"))
}

// Parsing.

#[test]
fn unknown_backend_key_names_the_key_and_line() {
    let text = web(&backend("weigth = 2"));
    assert_eq!(
        err(&text),
        error(
            "service[web].backend[0].weigth",
            "line 10: unknown field `weigth`, expected one of `address`, `port`, `weight`, `state`, `health`"
        )
    );
}

#[test]
fn unknown_section_names_the_key_and_line() {
    assert_eq!(
        err(&format!("{}[global]\nx = 1\n", agent(""))),
        error(
            "global",
            "line 4: unknown field `global`, expected one of `agent`, `tables`, `service`, `vrrp`"
        )
    );
}

#[test]
fn wrong_type_names_the_key() {
    assert_eq!(
        err(&web(&backend("weight = \"2\""))),
        error(
            "service[web].backend[0].weight",
            "line 10: invalid type: string \"2\", expected i64"
        )
    );
}

#[test]
fn parse_errors_name_keys_in_inline_tables_and_the_top_level() {
    let inline = web("backend = [{ address = \"198.18.1.10\" }, { address = 1 }]");
    assert_eq!(err(&inline).field, "service[web].backend[1].address");
    assert_eq!(err("debug = true\n").field, "debug");
}

#[test]
fn missing_required_key_names_its_table() {
    assert_eq!(
        err(&format!(
            "{}[[service]]\nname = \"web\"\nport = 80\n",
            agent("")
        )),
        error("service[web]", "line 4: missing field `vip`")
    );
}

#[test]
fn syntax_error_is_the_configs() {
    assert_eq!(
        err("[agent\n"),
        error("config", "line 1: invalid table header; expected `.`, `]`")
    );
}

#[test]
fn load_names_an_unreadable_file() {
    let e = Config::load(Path::new("/nonexistent/xlb.toml")).unwrap_err();
    assert_eq!(e.field, "config");
    assert!(
        e.message.starts_with("cannot read /nonexistent/xlb.toml: "),
        "{e}"
    );
}

// Defaults, the example and the round trip.

#[test]
fn defaults_apply() {
    let text = r#"
        [agent]
        interfaces = ["eth0"]

        [[service]]
        name = "web"
        vip = "198.18.0.100"
        port = 80
        [[service.backend]]
        address = "198.18.1.10"
    "#;
    let model = valid(text);
    let agent = &model.agent;
    assert_eq!(agent.xdp_mode, AttachMode::Native);
    assert_eq!(agent.api_listen, "127.0.0.1:9180".parse().unwrap());
    assert_eq!(agent.api_token_file, None);
    assert_eq!(agent.pin_path, PathBuf::from("/sys/fs/bpf/xlb"));
    assert_eq!(
        (agent.tunnel_source_v4, agent.tunnel_source_v6),
        (None, None)
    );
    assert_eq!(agent.mtu, 1500);
    assert_eq!(agent.udp_timeout, Duration::from_secs(30));
    assert_eq!(
        model.tables,
        crate::model::Tables {
            maglev_size: 65537,
            max_services: 64,
            max_backends: 4096,
            flow_entries: 262_144,
            affinity_entries: 65_536,
        }
    );
    let service = &model.services[0];
    assert_eq!(
        (
            service.protocol,
            service.mode,
            service.affinity,
            service.fallback
        ),
        (Protocol::Tcp, Mode::Dr, None, None)
    );
    assert_eq!(service.health, None);
    let backend = &service.backends[0];
    assert_eq!(
        (backend.port, backend.weight, backend.admin_state),
        (80, 1, AdminState::Ready)
    );
}

#[test]
fn health_defaults_apply() {
    let model = valid(&health("kind = \"http\""));
    let check = model.services[0].health.clone().unwrap();
    assert_eq!(
        check.kind,
        CheckKind::Http {
            path: "/".into(),
            host: None,
            status: 200..=399,
            body: None,
            tls: None,
        }
    );
    assert_eq!(
        (check.interval, check.timeout, check.rise, check.fall),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
    );
    assert_eq!(
        (check.address, check.port, check.initial),
        (None, None, OperState::Up)
    );
}

#[test]
fn example_validates() {
    let model = valid(include_str!("../../../xlb.example.toml"));
    let names: Vec<&str> = model.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "dns", "tomcat"]);
    let instances: Vec<&str> = model.vrrp.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(instances, ["VI_1", "VI_GW"]);
    assert_eq!(model.sync_groups[0].instances, ["VI_1", "VI_GW"]);
}

/// Every option away from its default.
const EVERYTHING: &str = r#"
[agent]
interfaces = ["eth0", "eth1"]
xdp_mode = "generic"
api_listen = "[fd00::1]:9000"
api_token_file = "/etc/xlb/token"
pin_path = "/sys/fs/bpf/xlb-test"
tunnel_source_v4 = "198.18.1.2/28"
tunnel_source_v6 = "fd00:1::2/124"
mtu = 9000
udp_timeout = "1m 30s"
hash_seed = "0x5eed1234"
flood_guard = 20000
icmp_rate = 100

[tables]
maglev_size = 251
max_services = 8
max_backends = 64
flow_entries = 1024
affinity_entries = 512

[[service]]
name = "web"
vip = "198.18.0.100"
port = 80
fallback = "198.18.1.99:80"
persistence = { timeout = "10m", netmask = 24 }
[service.health]
kind = "http"
interval = "500ms"
timeout = "250ms"
rise = 1
fall = 5
address = "fd00::50"
port = 8081
initial = "down"
path = "/healthz"
host = "www.example.com"
status = "204"
body = "OK"
[[service.backend]]
address = "198.18.1.10"
weight = 0
state = "drain"
[[service.backend]]
address = "198.18.1.11"
weight = 65535
state = "maint"

[[service]]
name = "dns"
vip = "fd00::53"
port = 53
protocol = "udp"
mode = "ipip"
persistence = {}
[service.health]
kind = "dns"
query = "example.com."
type = "AAAA"
[[service.backend]]
address = "fd00:2::10"

[[service]]
name = "dns-v4"
vip = "198.18.0.53"
port = 0
protocol = "udp"
mode = "ipip"
[service.health]
kind = "udp"
port = 53
payload = "ping"
expect = "pong"
[[service.backend]]
address = "198.18.2.10"
port = 0
[[service.backend]]
address = "fd00:2::11"

[[service]]
name = "tomcat"
vip = "198.18.0.101"
port = 80
mode = "nat"
fallback = "198.18.1.99:8080"
[service.health]
kind = "exec"
command = ["/usr/local/bin/check", "--quick"]
[[service.backend]]
address = "198.18.1.20"
port = 8080

[[service]]
name = "ssh"
vip = "198.18.0.101"
port = 22
mode = "nat"
[service.health]
kind = "tcp"
[[service.backend]]
address = "198.18.1.20"
"#;

#[test]
fn model_round_trips_through_toml() {
    let model = valid(EVERYTHING);
    let text = Config::from_model(&model).to_toml();
    let again = Config::parse(&text).unwrap();
    assert_eq!(again.validate().unwrap(), model, "{text}");
    assert_eq!(Config::parse(&again.to_toml()).unwrap(), again);
}

#[test]
fn from_model_leaves_out_defaults() {
    let model = valid(&web(&backend("")));
    let config = Config::from_model(&model);
    assert_eq!(
        config.to_toml(),
        "[agent]\ninterfaces = [\"eth0\"]\ntunnel_source_v4 = \"198.18.1.2\"\n\n\
         [[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\n\n\
         [[service.backend]]\naddress = \"198.18.1.10\"\n"
    );
}

// Agent.

#[test]
fn interfaces_are_required() {
    assert_eq!(
        err("[agent]\ninterfaces = []\n"),
        error("agent.interfaces", "at least one interface is required")
    );
}

#[test]
fn interface_name_must_be_valid() {
    assert_eq!(
        err("[agent]\ninterfaces = [\"eth0\", \"eth0:1\"]\n"),
        error(
            "agent.interfaces[1]",
            "\"eth0:1\" is not an interface name (1-15 characters, no '/', ':' or whitespace)"
        )
    );
}

#[test]
fn interface_is_listed_once() {
    assert_eq!(
        err("[agent]\ninterfaces = [\"eth0\", \"eth0\"]\n"),
        error("agent.interfaces[1]", "\"eth0\" is listed twice")
    );
}

#[test]
fn hash_seed_flood_guard_and_icmp_rate() {
    let model = valid(&agent(
        "hash_seed = \"0x00c0ffee\"\nflood_guard = 0\nicmp_rate = 10",
    ));
    assert_eq!(model.agent.hash_seed, 0x00c0_ffee);
    assert_eq!(model.agent.flood_guard, Some(0));
    assert_eq!(model.agent.icmp_rate, 10);
    let settings = DirectorSettings::of(&model.agent, &model.tables);
    assert_eq!(
        (
            settings.hash_seed,
            settings.new_flows_per_cpu,
            settings.icmp_per_cpu
        ),
        (0x00c0_ffee, 0, 10)
    );
    for bad in ["\"c0ffee\"", "\"0x\"", "\"0x123456789\"", "\"0xcoffee\""] {
        assert_eq!(
            err(&agent(&format!("hash_seed = {bad}"))),
            error(
                "agent.hash_seed",
                &format!("{bad} is not 0x and 1-8 hex digits (make one with `xlb keygen`)")
            )
        );
    }
    assert_eq!(err(&agent("flood_guard = -1")).field, "agent.flood_guard");
    assert_eq!(err(&agent("icmp_rate = -1")).field, "agent.icmp_rate");
}

#[test]
fn the_default_flood_guard_cannot_flush_the_flow_table() {
    // 262,144 entries and a 30 s UDP timeout: 8,738 new flows a second in
    // all, shared by the CPUs, and never under 1,000 per CPU.
    let model = valid(&agent(""));
    assert_eq!(model.agent.flood_guard, None);
    assert_eq!(model.agent.new_flows_per_cpu(&model.tables, 1), 8738);
    assert_eq!(model.agent.new_flows_per_cpu(&model.tables, 4), 2184);
    assert_eq!(model.agent.new_flows_per_cpu(&model.tables, 64), 1000);
    let configured = valid(&agent("flood_guard = 500"));
    assert_eq!(
        configured.agent.new_flows_per_cpu(&configured.tables, 4),
        500
    );
}

#[test]
fn xdp_mode_is_native_or_generic() {
    assert_eq!(
        err(&agent("xdp_mode = \"offload\"")),
        error(
            "agent.xdp_mode",
            "\"offload\" is not one of: native, generic"
        )
    );
}

#[test]
fn api_listen_is_an_address_and_port() {
    assert_eq!(
        err(&agent("api_listen = \"localhost:9180\"")),
        error(
            "agent.api_listen",
            "\"localhost:9180\" is not an address and port (like \"127.0.0.1:9180\" or \"[::1]:9180\")"
        )
    );
}

#[test]
fn non_loopback_api_needs_a_token() {
    assert_eq!(
        err(&agent("api_listen = \"0.0.0.0:9180\"")),
        error(
            "agent.api_token_file",
            "a non-loopback API needs a token (api_listen = \"0.0.0.0:9180\")"
        )
    );
}

#[test]
fn pin_path_is_absolute() {
    assert_eq!(
        err(&agent("pin_path = \"xlb\"")),
        error("agent.pin_path", "\"xlb\" is not an absolute path")
    );
}

#[test]
fn tunnel_sources_are_of_their_family() {
    assert_eq!(
        err(&agent("tunnel_source_v4 = \"fd00::2\"")),
        error(
            "agent.tunnel_source_v4",
            "\"fd00::2\" is not an IPv4 address"
        )
    );
    assert_eq!(
        err(&agent("tunnel_source_v6 = \"198.18.1.2\"")),
        error(
            "agent.tunnel_source_v6",
            "\"198.18.1.2\" is not an IPv6 address"
        )
    );
}

#[test]
fn a_tunnel_source_prefix_spreads_flows_over_its_host_bits() {
    let model = valid(&agent(
        "tunnel_source_v4 = \"198.18.1.2/28\"\ntunnel_source_v6 = \"fd00:1::2/120\"",
    ));
    let a = &model.agent;
    assert_eq!(
        (a.tunnel_source_v4, a.tunnel_spread_v4),
        (Some("198.18.1.2".parse().unwrap()), 4)
    );
    assert_eq!(
        (a.tunnel_source_v6, a.tunnel_spread_v6),
        (Some("fd00:1::2".parse().unwrap()), 8)
    );
    let settings = DirectorSettings::of(a, &model.tables);
    assert_eq!(
        (settings.tunnel_spread_v4, settings.tunnel_spread_v6),
        (4, 8)
    );
    for (line, field, message) in [
        (
            "tunnel_source_v4 = \"198.18.1.2/23\"",
            "agent.tunnel_source_v4",
            "\"198.18.1.2/23\": the prefix length must be 24 to 32 (at most 256 sources \
             a flow's outer address is chosen from)",
        ),
        (
            "tunnel_source_v6 = \"fd00:1::2/129\"",
            "agent.tunnel_source_v6",
            "\"fd00:1::2/129\": the prefix length must be 120 to 128 (at most 256 sources \
             a flow's outer address is chosen from)",
        ),
        (
            "tunnel_source_v4 = \"198.18.1.2/x\"",
            "agent.tunnel_source_v4",
            "\"198.18.1.2/x\": the prefix length must be 24 to 32 (at most 256 sources \
             a flow's outer address is chosen from)",
        ),
    ] {
        assert_eq!(err(&agent(line)), error(field, message));
    }
}

#[test]
fn mtu_is_in_range() {
    assert_eq!(
        err(&agent("mtu = 500")),
        error("agent.mtu", "500 is out of range 616-65535")
    );
}

#[test]
fn udp_timeout_is_a_duration() {
    assert_eq!(
        err(&agent("udp_timeout = \"30\"")),
        error(
            "agent.udp_timeout",
            "\"30\" is not a duration (like \"2s\", \"500ms\" or \"1m30s\")"
        )
    );
}

#[test]
fn udp_timeout_is_in_range() {
    assert_eq!(
        err(&agent("udp_timeout = \"2d\"")),
        error("agent.udp_timeout", "2days is out of range 1s-1day")
    );
}

#[test]
fn udp_timeout_is_whole_seconds() {
    assert_eq!(
        err(&agent("udp_timeout = \"1500ms\"")),
        error(
            "agent.udp_timeout",
            "1s 500ms is not a whole number of seconds"
        )
    );
}

// Tables.

#[test]
fn maglev_size_is_prime() {
    assert_eq!(
        err(&tables("maglev_size = 65536")),
        error("tables.maglev_size", "65536 is not prime")
    );
}

#[test]
fn maglev_size_is_in_range() {
    assert_eq!(
        err(&tables("maglev_size = 2")),
        error("tables.maglev_size", "2 is out of range 3-1048573")
    );
}

#[test]
fn max_services_is_in_range() {
    assert_eq!(
        err(&tables("max_services = 0")),
        error("tables.max_services", "0 is out of range 1-4096")
    );
}

#[test]
fn rings_fit_one_map() {
    assert_eq!(
        err(&tables("maglev_size = 1048573\nmax_services = 4096")),
        error(
            "tables.max_services",
            "4096 services with two rings of 1048573 slots each do not fit one map \
             (4294967295 slots); lower max_services or maglev_size"
        )
    );
}

#[test]
fn max_backends_is_in_range() {
    assert_eq!(
        err(&tables("max_backends = 1")),
        error("tables.max_backends", "1 is out of range 2-1048576")
    );
}

#[test]
fn flow_and_affinity_entries_are_in_range() {
    assert_eq!(
        err(&tables("flow_entries = 0")),
        error("tables.flow_entries", "0 is out of range 1-16777216")
    );
    assert_eq!(
        err(&tables("affinity_entries = 16777217")),
        error(
            "tables.affinity_entries",
            "16777217 is out of range 1-16777216"
        )
    );
}

// Services.

#[test]
fn service_name_is_valid() {
    assert_eq!(
        err(&format!(
            "{}[[service]]\nname = \"my web\"\nvip = \"198.18.0.100\"\nport = 80\n",
            agent("")
        )),
        error(
            "service[0].name",
            "\"my web\" is not a valid name (1-64 characters of A-Z a-z 0-9 _ . -)"
        )
    );
}

#[test]
fn service_name_is_unique() {
    assert_eq!(
        err(&web(
            "[[service]]\nname = \"web\"\nvip = \"198.18.0.101\"\nport = 80"
        )),
        error(
            "service[1].name",
            "\"web\" is already the name of service[0]"
        )
    );
}

#[test]
fn vip_is_an_ip_address() {
    assert_eq!(
        err(&format!(
            "{}[[service]]\nname = \"web\"\nvip = \"10.0.0.300\"\nport = 80\n",
            agent("")
        )),
        error("service[web].vip", "\"10.0.0.300\" is not an IP address")
    );
}

#[test]
fn service_port_is_in_range() {
    assert_eq!(
        err(&format!(
            "{}[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = -1\n",
            agent("")
        )),
        error("service[web].port", "-1 is out of range 0-65535")
    );
}

#[test]
fn nat_needs_a_service_port() {
    assert_eq!(
        err(&format!(
            "{}[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 0\nmode = \"nat\"\n",
            agent("")
        )),
        error(
            "service[web].port",
            "0 (every port) is for modes dr and ipip; nat needs a port"
        )
    );
}

#[test]
fn protocol_is_tcp_or_udp() {
    assert_eq!(
        err(&web("protocol = \"sctp\"")),
        error("service[web].protocol", "\"sctp\" is not one of: tcp, udp")
    );
}

#[test]
fn mode_is_dr_ipip_or_nat() {
    assert_eq!(
        err(&web("mode = \"masq\"")),
        error("service[web].mode", "\"masq\" is not one of: dr, ipip, nat")
    );
}

#[test]
fn scheduler_is_maglev() {
    assert_eq!(
        err(&web("scheduler = \"wrr\"")),
        error("service[web].scheduler", "\"wrr\" is not one of: maglev")
    );
}

#[test]
fn vip_port_and_protocol_are_one_service() {
    assert_eq!(
        err(&web(
            "[[service]]\nname = \"www\"\nvip = \"198.18.0.100\"\nport = 80"
        )),
        error(
            "service[www]",
            "198.18.0.100:80/tcp is already service[web]"
        )
    );
}

#[test]
fn ipv6_tunnels_need_an_ipv6_mtu() {
    let text = format!(
        "{}[[service]]\nname = \"v6\"\nvip = \"fd00::1\"\nport = 80\nmode = \"ipip\"\n",
        agent("mtu = 1280")
    );
    assert_eq!(
        err(&text),
        error(
            "agent.mtu",
            "1280 is below 1320, too small to tunnel IPv6 for service[v6]"
        )
    );
}

#[test]
fn persistence_timeout_is_in_range() {
    assert_eq!(
        err(&web("persistence = { timeout = \"0s\" }")),
        error(
            "service[web].persistence.timeout",
            "0s is out of range 1s-1day"
        )
    );
}

#[test]
fn persistence_netmask_fits_the_vip() {
    assert_eq!(
        err(&web("persistence = { netmask = 33 }")),
        error(
            "service[web].persistence.netmask",
            "33 is out of range 1-32"
        )
    );
}

#[test]
fn fallback_is_an_address_and_port() {
    assert_eq!(
        err(&web("fallback = \"198.18.1.99\"")),
        error(
            "service[web].fallback",
            "\"198.18.1.99\" is not an address and port (like \"198.18.1.99:80\" or \"[fd00::99]:80\")"
        )
    );
}

#[test]
fn fallback_keeps_the_service_port_in_dr() {
    assert_eq!(
        err(&web("fallback = \"198.18.1.99:8080\"")),
        error(
            "service[web].fallback",
            "\"198.18.1.99:8080\": port 8080 differs from the service port 80; only NAT translates ports"
        )
    );
}

#[test]
fn fallback_is_of_the_vips_family() {
    assert_eq!(
        err(&web("fallback = \"[fd00::99]:80\"")),
        error(
            "service[web].fallback",
            "fd00::99 is IPv6 but the VIP 198.18.0.100 is IPv4"
        )
    );
}

// Backends.

#[test]
fn backend_address_is_an_ip_address() {
    assert_eq!(
        err(&web("[[service.backend]]\naddress = \"backend1\"")),
        error(
            "service[web].backend[0].address",
            "\"backend1\" is not an IP address"
        )
    );
}

#[test]
fn dr_backend_keeps_the_service_port() {
    assert_eq!(
        err(&web(&backend("port = 8080"))),
        error(
            "service[web].backend[0].port",
            "8080 differs from the service port 80; only NAT translates ports"
        )
    );
}

#[test]
fn nat_backend_port_is_in_range() {
    assert_eq!(
        err(&web(&format!("mode = \"nat\"\n{}", backend("port = 0")))),
        error("service[web].backend[0].port", "0 is out of range 1-65535")
    );
}

#[test]
fn weight_is_in_range() {
    let text = web(&format!(
        "{}[[service.backend]]\naddress = \"198.18.1.11\"\nweight = 70000",
        backend("")
    ));
    assert_eq!(
        err(&text),
        error(
            "service[web].backend[1].weight",
            "70000 is out of range 0-65535"
        )
    );
}

#[test]
fn state_is_ready_drain_or_maint() {
    assert_eq!(
        err(&web(&backend("state = \"down\""))),
        error(
            "service[web].backend[0].state",
            "\"down\" is not one of: ready, drain, maint"
        )
    );
}

/// A file with the service `web` on `vip` (IPv4 or IPv6) and `lines`.
fn web_on(vip: &str, lines: &str) -> String {
    format!(
        "{}[[service]]\nname = \"web\"\nvip = \"{vip}\"\nport = 80\n{lines}\n",
        agent("")
    )
}

#[test]
fn vip_is_one_unicast_address() {
    let cases = [
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("255.255.255.255", "the broadcast address"),
        ("224.0.0.18", "a multicast address"),
        ("ff02::12", "a multicast address"),
        ("127.0.0.1", "a loopback address"),
        ("127.1.2.3", "a loopback address"),
        ("::1", "a loopback address"),
    ];
    for (vip, problem) in cases {
        assert_eq!(
            err(&web_on(vip, "")),
            error(
                "service[web].vip",
                &format!("{vip} is {problem}: a VIP must be a unicast address clients can reach")
            ),
            "{vip}"
        );
    }
    // Link-local works on its own link.
    valid(&web_on("fe80::100", ""));
    valid(&web_on("169.254.0.100", ""));
}

#[test]
fn backend_is_one_unicast_address() {
    let cases = [
        ("198.18.0.100", "0.0.0.0", "the unspecified address"),
        ("fd00::100", "::", "the unspecified address"),
        ("198.18.0.100", "255.255.255.255", "the broadcast address"),
        ("198.18.0.100", "239.1.1.1", "a multicast address"),
        ("fd00::100", "ff05::1", "a multicast address"),
        ("198.18.0.100", "127.0.0.1", "a loopback address"),
        ("fd00::100", "::1", "a loopback address"),
    ];
    for (vip, addr, problem) in cases {
        let message =
            format!("{addr} is {problem}: a backend must be a unicast address of another host");
        let text = web_on(vip, &format!("[[service.backend]]\naddress = \"{addr}\""));
        assert_eq!(
            err(&text),
            error("service[web].backend[0].address", &message),
            "{addr}"
        );
        let port_of = |a: &str| SocketAddr::new(a.parse().unwrap(), 80).to_string();
        let text = web_on(vip, &format!("fallback = \"{}\"", port_of(addr)));
        assert_eq!(
            err(&text),
            error("service[web].fallback", &message),
            "fallback {addr}"
        );
    }
    valid(&web_on(
        "fd00::100",
        "[[service.backend]]\naddress = \"fe80::10\"",
    ));
}

#[test]
fn backend_is_not_the_vip() {
    for mode in ["dr", "ipip", "nat"] {
        let text = web(&format!(
            "mode = \"{mode}\"\n[[service.backend]]\naddress = \"198.18.0.100\""
        ));
        assert_eq!(
            err(&text),
            error(
                "service[web].backend[0].address",
                "198.18.0.100 is the service's VIP: a backend must be another host's own address"
            ),
            "{mode}"
        );
    }
    assert_eq!(
        err(&web("fallback = \"198.18.0.100:80\"")),
        error(
            "service[web].fallback",
            "198.18.0.100 is the service's VIP: a backend must be another host's own address"
        )
    );
}

#[test]
fn backend_is_listed_once() {
    assert_eq!(
        err(&web(&format!("{}{}", backend(""), backend("weight = 2")))),
        error(
            "service[web].backend[1]",
            "198.18.1.10:80 is also backend[0]"
        )
    );
}

#[test]
fn backend_is_not_the_fallback() {
    assert_eq!(
        err(&web(&format!(
            "fallback = \"198.18.1.10:80\"\n{}",
            backend("")
        ))),
        error(
            "service[web].backend[0]",
            "198.18.1.10:80 is also the fallback"
        )
    );
}

#[test]
fn dr_backend_is_of_the_vips_family() {
    assert_eq!(
        err(&web("[[service.backend]]\naddress = \"fd00::10\"")),
        error(
            "service[web].backend[0]",
            "fd00::10 is IPv6 but the VIP 198.18.0.100 is IPv4"
        )
    );
}

#[test]
fn ipv6_vip_is_not_tunnelled_in_ipv4() {
    let text = format!(
        "{}[[service]]\nname = \"v6\"\nvip = \"fd00::1\"\nport = 80\nmode = \"ipip\"\n{}",
        agent("tunnel_source_v4 = \"198.18.1.2\""),
        backend("")
    );
    assert_eq!(
        err(&text),
        error(
            "service[v6].backend[0]",
            "198.18.1.10 is IPv4: an IPv6 VIP cannot be tunnelled in IPv4"
        )
    );
}

#[test]
fn ipip_needs_a_tunnel_source() {
    assert_eq!(
        err(&web(
            "mode = \"ipip\"\n[[service.backend]]\naddress = \"fd00::10\""
        )),
        error(
            "agent.tunnel_source_v6",
            "service[web] tunnels to fd00::10, which needs an IPv6 tunnel source"
        )
    );
}

#[test]
fn nat_backend_serves_one_nat_service() {
    let nat = |name: &str, port: u16| {
        format!(
            "[[service]]\nname = \"{name}\"\nvip = \"198.18.0.101\"\nport = {port}\nmode = \"nat\"\n\
             [[service.backend]]\naddress = \"198.18.1.20\"\nport = 8080\n"
        )
    };
    let text = format!("{}{}{}", agent(""), nat("a", 80), nat("b", 8080));
    assert_eq!(
        err(&text),
        error(
            "service[b].backend[0]",
            "198.18.1.20:8080/tcp already serves NAT service[a]; replies could not be told apart"
        )
    );
}

// Health checks.

#[test]
fn check_kind_is_known() {
    assert_eq!(
        err(&health("kind = \"ping\"")),
        error(
            "service[web].health.kind",
            "\"ping\" is not one of: tcp, http, https, udp, dns, exec"
        )
    );
}

#[test]
fn check_keys_belong_to_the_kind() {
    assert_eq!(
        err(&health("kind = \"tcp\"\npath = \"/\"")),
        error(
            "service[web].health.path",
            "applies only to kind \"http\" or \"https\", not \"tcp\""
        )
    );
}

#[test]
fn interval_is_in_range() {
    assert_eq!(
        err(&health("kind = \"tcp\"\ninterval = \"5ms\"")),
        error(
            "service[web].health.interval",
            "5ms is out of range 10ms-1h"
        )
    );
}

#[test]
fn timeout_is_more_than_zero() {
    assert_eq!(
        err(&health("kind = \"tcp\"\ntimeout = \"0s\"")),
        error("service[web].health.timeout", "0s must be more than 0")
    );
}

#[test]
fn timeout_is_within_the_interval() {
    assert_eq!(
        err(&health(
            "kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"1s\""
        )),
        error(
            "service[web].health.timeout",
            "1s is longer than the interval 500ms"
        )
    );
}

#[test]
fn an_unset_timeout_fits_a_short_interval() {
    let model = valid(&health("kind = \"tcp\"\ninterval = \"500ms\""));
    let check = model.services[0].health.as_ref().unwrap();
    assert_eq!(check.timeout, Duration::from_millis(500));
}

#[test]
fn rise_and_fall_are_in_range() {
    assert_eq!(
        err(&health("kind = \"tcp\"\nrise = 0")),
        error("service[web].health.rise", "0 is out of range 1-100")
    );
    assert_eq!(
        err(&health("kind = \"tcp\"\nfall = 101")),
        error("service[web].health.fall", "101 is out of range 1-100")
    );
}

#[test]
fn check_address_is_an_ip_address() {
    assert_eq!(
        err(&health("kind = \"tcp\"\naddress = \"db1\"")),
        error(
            "service[web].health.address",
            "\"db1\" is not an IP address"
        )
    );
}

#[test]
fn check_port_is_in_range() {
    assert_eq!(
        err(&health("kind = \"tcp\"\nport = 0")),
        error("service[web].health.port", "0 is out of range 1-65535")
    );
}

#[test]
fn every_port_service_check_needs_a_port() {
    let text = format!(
        "{}[[service]]\nname = \"all\"\nvip = \"198.18.0.100\"\nport = 0\n\
         [service.health]\nkind = \"tcp\"\n",
        agent("")
    );
    assert_eq!(
        err(&text),
        error(
            "service[all].health.port",
            "a tcp check of a service on every port (port = 0) needs a port"
        )
    );
}

#[test]
fn initial_is_up_or_down() {
    assert_eq!(
        err(&health("kind = \"tcp\"\ninitial = \"unknown\"")),
        error(
            "service[web].health.initial",
            "\"unknown\" is not one of: up, down"
        )
    );
}

#[test]
fn http_path_starts_with_a_slash() {
    assert_eq!(
        err(&health("kind = \"http\"\npath = \"healthz\"")),
        error(
            "service[web].health.path",
            "\"healthz\" does not start with '/'"
        )
    );
}

#[test]
fn http_status_is_a_code_or_range() {
    assert_eq!(
        err(&health("kind = \"http\"\nstatus = \"399-200\"")),
        error(
            "service[web].health.status",
            "\"399-200\" is not a status code or range of codes 100-599 (like \"200\" or \"200-399\")"
        )
    );
}

#[test]
fn udp_check_needs_a_payload() {
    assert_eq!(
        err(&health("kind = \"udp\"\nexpect = \"pong\"")),
        error(
            "service[web].health.payload",
            "kind \"udp\" needs a non-empty payload to send"
        )
    );
}

#[test]
fn dns_check_needs_a_query() {
    assert_eq!(
        err(&health("kind = \"dns\"")),
        error(
            "service[web].health.query",
            "kind \"dns\" needs a name to query"
        )
    );
}

#[test]
fn dns_query_is_a_name() {
    assert_eq!(
        err(&health("kind = \"dns\"\nquery = \"example..com\"")),
        error(
            "service[web].health.query",
            "\"example..com\" is not a DNS name"
        )
    );
}

#[test]
fn dns_type_is_known() {
    assert_eq!(
        err(&health(
            "kind = \"dns\"\nquery = \"example.com\"\ntype = \"AXFR\""
        )),
        error(
            "service[web].health.type",
            "\"AXFR\" is not one of: A, AAAA, NS, CNAME, SOA, PTR, MX, TXT, SRV, ANY"
        )
    );
}

#[test]
fn exec_check_needs_a_command() {
    assert_eq!(
        err(&health("kind = \"exec\"\ncommand = []")),
        error(
            "service[web].health.command",
            "kind \"exec\" needs a command to run"
        )
    );
}

#[test]
fn exec_command_is_an_absolute_path() {
    assert_eq!(
        err(&health("kind = \"exec\"\ncommand = [\"check\"]")),
        error(
            "service[web].health.command[0]",
            "\"check\" is not an absolute path"
        )
    );
}

// Capacity.

#[test]
fn services_fit_max_services() {
    let text = format!(
        "{}[tables]\nmax_services = 1\n\
         [[service]]\nname = \"a\"\nvip = \"198.18.0.100\"\nport = 80\n\
         [[service]]\nname = \"b\"\nvip = \"198.18.0.100\"\nport = 443\n",
        agent("")
    );
    assert_eq!(
        err(&text),
        error(
            "tables.max_services",
            "1 is fewer than the 2 services configured"
        )
    );
}

#[test]
fn backends_and_fallbacks_fit_max_backends() {
    let text = format!(
        "{}[tables]\nmax_backends = 2\n\
         [[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\nfallback = \"198.18.1.99:80\"\n{}",
        agent(""),
        backend("")
    );
    assert_eq!(
        err(&text),
        error(
            "tables.max_backends",
            "2 is too small for 2 backends, fallbacks included: it must be at least 3 (id 0 is reserved)"
        )
    );
}

#[test]
fn config_error_displays_field_and_message() {
    let e = error(
        "service[web].backend[1].weight",
        "70000 is out of range 0-65535",
    );
    assert_eq!(
        e.to_string(),
        "service[web].backend[1].weight: 70000 is out of range 0-65535"
    );
}

#[test]
fn service_config_is_the_api_body() {
    let json = r#"{"name": "web", "vip": "fd00::100", "port": 443,
                   "backend": [{"address": "fd00::10", "weight": 3}]}"#;
    let service: super::ServiceConfig = serde_json::from_str(json).unwrap();
    let config = Config {
        agent: super::AgentConfig {
            interfaces: vec!["eth0".into()],
            ..Default::default()
        },
        services: vec![service],
        ..Default::default()
    };
    let model = config.validate().unwrap();
    let web = &model.services[0];
    assert_eq!(web.vip, "fd00::100".parse::<IpAddr>().unwrap());
    assert_eq!(
        web.backends[0].socket_addr(),
        "[fd00::10]:443".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(super::ServiceConfig::from_model(web), config.services[0]);
}

// VRRP.

/// The service `web` and a VRRP instance `VI_1` with `lines`.
fn vrrp(lines: &str) -> String {
    format!(
        "{}\n[[vrrp.instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\n{lines}\n",
        web("")
    )
}

#[test]
fn a_vrrp_instance_gets_keepalived_like_defaults() {
    let model = valid(&vrrp(
        "vrid = 51\npriority = 150\nvirtual_addresses = [\"198.18.0.100\"]",
    ));
    let instance = &model.vrrp[0];
    assert_eq!(
        (instance.vrid, instance.priority, instance.version),
        (51, 150, crate::model::Version::V3)
    );
    assert_eq!(instance.advert_interval, Duration::from_secs(1));
    assert!(instance.preempt && instance.garp_refresh.is_none());
    assert_eq!(
        (instance.garp_count, instance.garp_interval),
        (3, Duration::from_millis(100))
    );
}

#[test]
fn vrrp_values_are_checked() {
    let cases = [
        ("vrid = 0\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]",
         "vrrp.instance[VI_1].vrid", "0 is out of range 1-255"),
        ("vrid = 1\npriority = 256\nvirtual_addresses = [\"198.18.0.100\"]",
         "vrrp.instance[VI_1].priority", "256 is out of range 1-255"),
        ("vrid = 1\npriority = 100\nversion = 4\nvirtual_addresses = [\"198.18.0.100\"]",
         "vrrp.instance[VI_1].version", "4 is not one of: 3, 2"),
        ("vrid = 1\npriority = 100\nadvert_interval = \"5ms\"\nvirtual_addresses = [\"198.18.0.100\"]",
         "vrrp.instance[VI_1].advert_interval", "5ms is out of range 10ms-40s 950ms"),
        ("vrid = 1\npriority = 100\nadvert_interval = \"25ms\"\nvirtual_addresses = [\"198.18.0.100\"]",
         "vrrp.instance[VI_1].advert_interval", "25ms is not a whole number of centiseconds"),
        ("vrid = 1\npriority = 100\nversion = 2\nadvert_interval = \"500ms\"\nvirtual_addresses = [\"198.18.0.100\"]",
         "vrrp.instance[VI_1].advert_interval", "500ms is out of range 1s-4m 15s"),
        ("vrid = 1\npriority = 100\nvirtual_addresses = []",
         "vrrp.instance[VI_1].virtual_addresses", "at least one virtual address is required"),
        ("vrid = 1\npriority = 100\nvirtual_addresses = [\"198.18.0.100\", \"fd00::100\"]",
         "vrrp.instance[VI_1].virtual_addresses[1]",
         "fd00::100 is not of the family of 198.18.0.100: one instance, one family"),
        ("vrid = 1\npriority = 100\nversion = 2\nvirtual_addresses = [\"fd00::100\"]",
         "vrrp.instance[VI_1].virtual_addresses[0]", "fd00::100: VRRPv2 carries IPv4 only"),
        ("vrid = 1\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]\nauth_pass = \"secret\"",
         "vrrp.instance[VI_1].auth_pass",
         "authentication is VRRPv2's (set version = 2); VRRPv3 has none"),
        ("vrid = 1\npriority = 100\nversion = 2\nvirtual_addresses = [\"198.18.0.100\"]\nauth_pass = \"123456789\"",
         "vrrp.instance[VI_1].auth_pass", "9 bytes: a VRRPv2 password has 1 to 8"),
        ("vrid = 1\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]\nunicast_peers = [\"fd00::2\"]",
         "vrrp.instance[VI_1].unicast_peers[0]",
         "fd00::2 is not of the virtual addresses' family"),
        ("vrid = 1\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]\ntrack = [{ service = \"nope\", weight = -10 }]",
         "vrrp.instance[VI_1].track[0].service", "no service is named \"nope\""),
        ("vrid = 1\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]\ntrack = [{ dataplane = true, interface = \"eth1\" }]",
         "vrrp.instance[VI_1].track[0]",
         "track exactly one of: interface = \"NAME\", dataplane = true, service = \"NAME\""),
        ("vrid = 1\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]\nnotify = [\"notify.sh\"]",
         "vrrp.instance[VI_1].notify", "the command must start with an absolute path"),
    ];
    for (lines, field, message) in cases {
        assert_eq!(err(&vrrp(lines)), error(field, message), "{lines}");
    }
}

#[test]
fn vrrp_instances_and_groups_do_not_overlap() {
    let two = |second: &str| {
        vrrp(&format!(
            "vrid = 51\npriority = 100\nvirtual_addresses = [\"198.18.0.100\"]\n\
             [[vrrp.instance]]\nname = \"VI_2\"\ninterface = \"eth0\"\npriority = 100\n{second}"
        ))
    };
    assert_eq!(
        err(&two("vrid = 51\nvirtual_addresses = [\"198.18.0.101\"]")),
        error(
            "vrrp.instance[VI_2].vrid",
            "51 on eth0 is already vrrp.instance[VI_1]"
        )
    );
    assert_eq!(
        err(&two("vrid = 52\nvirtual_addresses = [\"198.18.0.100\"]")),
        error(
            "vrrp.instance[VI_2].virtual_addresses",
            "198.18.0.100 is already an address of vrrp.instance[VI_1]"
        )
    );
    let group = |instances: &str| {
        two(&format!(
            "vrid = 52\nvirtual_addresses = [\"198.18.0.101\"]\n\
             [[vrrp.sync_group]]\nname = \"SG1\"\ninstances = [{instances}]"
        ))
    };
    assert_eq!(
        err(&group("\"VI_1\", \"VI_3\"")),
        error(
            "vrrp.sync_group[SG1].instances[1]",
            "no instance is named \"VI_3\""
        )
    );
    assert_eq!(
        err(&group("\"VI_1\", \"VI_1\"")),
        error(
            "vrrp.sync_group[SG1].instances[1]",
            "\"VI_1\" is listed twice"
        )
    );
    let model = valid(&group("\"VI_1\", \"VI_2\""));
    assert_eq!(model.sync_groups[0].instances, ["VI_1", "VI_2"]);
}

#[test]
fn vrrp_round_trips_through_the_file() {
    let text = vrrp(
        "vrid = 51\npriority = 150\nversion = 2\nadvert_interval = \"2s\"\n\
         virtual_addresses = [\"198.18.0.100\", \"198.18.0.101\"]\npreempt = false\n\
         preempt_delay = \"10s\"\ngarp_refresh = \"5s\"\nauth_pass = \"secret\"\n\
         unicast_peers = [\"198.18.0.3\"]\ngarp_count = 5\ngarp_interval = \"1s\"\n\
         track = [{ interface = \"eth1\", weight = -60 }, { dataplane = true }, { service = \"web\", weight = -20 }]\n\
         notify = [\"/usr/local/bin/notify\", \"--quiet\"]\n\
         [[vrrp.instance]]\nname = \"VI_6\"\ninterface = \"eth1\"\nvrid = 52\npriority = 100\n\
         advert_interval = \"20ms\"\nvirtual_addresses = [\"fd00::100\"]\nv3_checksum = \"message_only\"\n\
         [[vrrp.sync_group]]\nname = \"SG1\"\ninstances = [\"VI_1\", \"VI_6\"]",
    );
    let model = valid(&text);
    let again = valid(&Config::from_model(&model).to_toml());
    assert_eq!(again, model);
}

// Health checks through the data path.

/// `web` in `mode` with a health check of `lines`.
fn checked(mode: &str, lines: &str) -> String {
    web(&format!(
        "mode = \"{mode}\"\n[service.health]\n{lines}\n{}",
        backend("")
    ))
}

fn via_of(toml: &str) -> crate::model::HealthVia {
    valid(toml).services[0].health.as_ref().unwrap().via
}

#[test]
fn health_via_defaults_to_the_tunnel_for_ipip_only() {
    use crate::model::HealthVia;
    assert_eq!(
        via_of(&checked("ipip", "kind = \"tcp\"")),
        HealthVia::Tunnel
    );
    assert_eq!(via_of(&checked("dr", "kind = \"tcp\"")), HealthVia::Direct);
    assert_eq!(via_of(&checked("nat", "kind = \"tcp\"")), HealthVia::Direct);
    // A check of another address, or a command, goes direct.
    let other = "kind = \"tcp\"\naddress = \"198.18.1.50\"";
    assert_eq!(via_of(&checked("ipip", other)), HealthVia::Direct);
    let exec = "kind = \"exec\"\ncommand = [\"/bin/true\"]";
    assert_eq!(via_of(&checked("ipip", exec)), HealthVia::Direct);
    assert_eq!(
        via_of(&checked("ipip", "kind = \"tcp\"\nvia = \"direct\"")),
        HealthVia::Direct
    );
    assert_eq!(
        via_of(&checked("dr", "kind = \"tcp\"\nvia = \"vip\"")),
        HealthVia::Vip
    );
}

#[test]
fn health_via_refuses_what_cannot_work() {
    let field = "service[web].health.via";
    let e = err(&checked("dr", "kind = \"tcp\"\nvia = \"tunnel\""));
    assert_eq!(e.field, field);
    assert!(e.message.contains("IP-in-IP"), "{e}");
    let e = err(&checked("ipip", "kind = \"tcp\"\nvia = \"vip\""));
    assert!(e.message.contains("direct-routing"), "{e}");
    let e = err(&checked("nat", "kind = \"tcp\"\nvia = \"vip\""));
    assert_eq!(e.field, field);
    let e = err(&checked(
        "ipip",
        "kind = \"exec\"\ncommand = [\"/bin/true\"]\nvia = \"tunnel\"",
    ));
    assert!(e.message.contains("exec"), "{e}");
    let e = err(&checked(
        "ipip",
        "kind = \"tcp\"\naddress = \"198.18.1.50\"\nvia = \"tunnel\"",
    ));
    assert!(e.message.contains("address"), "{e}");
    let e = err(&checked("ipip", "kind = \"tcp\"\nvia = \"wire\""));
    assert_eq!(e.field, field);
}

#[test]
fn health_via_round_trips_and_defaults_go_unsaid() {
    for (mode, via, said) in [
        ("ipip", "tunnel", false),
        ("ipip", "direct", true),
        ("dr", "vip", true),
        ("dr", "direct", false),
    ] {
        let model = valid(&checked(mode, &format!("kind = \"tcp\"\nvia = \"{via}\"")));
        let text = Config::from_model(&model).to_toml();
        assert_eq!(text.contains("via ="), said, "{mode}/{via}: {text}");
        let again = Config::parse(&text).unwrap().validate().unwrap();
        assert_eq!(again, model);
    }
}

// https checks, DNS over the service's protocol, backends' own check targets.

fn tls_of(toml: &str) -> crate::model::TlsCheck {
    match &valid(toml).services[0].health.as_ref().unwrap().kind {
        CheckKind::Http { tls: Some(tls), .. } => tls.clone(),
        other => panic!("not an https check: {other:?}"),
    }
}

#[test]
fn https_checks_verify_by_default_and_send_the_host_as_sni() {
    use crate::model::TlsCheck;
    let plain = tls_of(&health("kind = \"https\""));
    assert_eq!(
        plain,
        TlsCheck {
            sni: None,
            verify: true,
            ca_file: None
        }
    );
    for host in ["www.example.test", "www.example.test:8443"] {
        let named = tls_of(&health(&format!("kind = \"https\"\nhost = \"{host}\"")));
        assert_eq!(named.sni.as_deref(), Some("www.example.test"), "{host}");
    }
    for host in ["198.18.1.10", "[fd00::10]:8443"] {
        let address = tls_of(&health(&format!("kind = \"https\"\nhost = \"{host}\"")));
        assert_eq!(address.sni, None, "{host}");
    }
    let set = tls_of(&health(
        "kind = \"https\"\nhost = \"www.example.test\"\nsni = \"api.example.test\"\n\
         ca_file = \"/etc/xlb/ca.pem\"",
    ));
    assert_eq!(
        set,
        TlsCheck {
            sni: Some("api.example.test".into()),
            verify: true,
            ca_file: Some("/etc/xlb/ca.pem".into())
        }
    );
    let none = tls_of(&health(
        "kind = \"https\"\nhost = \"www.example.test\"\nsni = \"\"\nverify = false",
    ));
    assert_eq!((none.sni, none.verify), (None, false));
    // The request is http's.
    let model = valid(&health(
        "kind = \"https\"\npath = \"/up\"\nstatus = \"200\"\nbody = \"ok\"",
    ));
    let CheckKind::Http {
        path, status, body, ..
    } = &model.services[0].health.as_ref().unwrap().kind
    else {
        panic!("not http");
    };
    assert_eq!(
        (path.as_str(), status, body.as_deref()),
        ("/up", &(200..=200), Some("ok"))
    );
}

#[test]
fn https_keys_are_checked() {
    let field = |key: &str| format!("service[web].health.{key}");
    assert_eq!(
        err(&health("kind = \"http\"\nsni = \"www.example.test\"")),
        error(
            &field("sni"),
            "applies only to kind \"https\", not \"http\""
        )
    );
    assert_eq!(
        err(&health("kind = \"tcp\"\nverify = false")),
        error(
            &field("verify"),
            "applies only to kind \"https\", not \"tcp\""
        )
    );
    let e = err(&health("kind = \"https\"\nsni = \"198.18.1.10\""));
    assert_eq!(e.field, field("sni"));
    assert!(e.message.contains("is not a DNS name"), "{e}");
    let e = err(&health("kind = \"https\"\nsni = \"no spaces.test\""));
    assert_eq!(e.field, field("sni"));
    assert_eq!(
        err(&health("kind = \"https\"\nca_file = \"ca.pem\"")),
        error(&field("ca_file"), "\"ca.pem\" is not an absolute path")
    );
    assert_eq!(
        err(&health(
            "kind = \"https\"\nverify = false\nca_file = \"/etc/xlb/ca.pem\""
        )),
        error(
            &field("ca_file"),
            "is for verifying certificates, and verify = false verifies none"
        )
    );
    let e = err(&health("kind = \"https\"\nverify = \"no\""));
    assert_eq!(e.field, field("verify"));
}

#[test]
fn https_checks_round_trip_and_defaults_go_unsaid() {
    for (lines, said) in [
        ("kind = \"https\"", &[][..]),
        (
            "kind = \"https\"\nhost = \"www.example.test\"",
            &["host ="][..],
        ),
        (
            "kind = \"https\"\nhost = \"www.example.test\"\nsni = \"\"",
            &["host =", "sni = \"\""][..],
        ),
        (
            "kind = \"https\"\nsni = \"api.example.test\"\nca_file = \"/etc/xlb/ca.pem\"",
            &["sni = \"api.example.test\"", "ca_file ="][..],
        ),
        ("kind = \"https\"\nverify = false", &["verify = false"][..]),
    ] {
        let model = valid(&health(lines));
        let text = Config::from_model(&model).to_toml();
        assert!(text.contains("kind = \"https\""), "{text}");
        for key in ["sni", "verify", "ca_file", "host"] {
            let expected = said.iter().any(|s| s.starts_with(key));
            assert_eq!(
                text.contains(&format!("{key} =")),
                expected,
                "{lines}: {text}"
            );
        }
        for s in said {
            assert!(text.contains(s), "{lines}: {text}");
        }
        assert_eq!(valid(&text), model, "{text}");
    }
}

#[test]
fn dns_checks_ask_over_the_service_protocol() {
    for (protocol, transport) in [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)] {
        let model = valid(&web(&format!(
            "protocol = \"{protocol}\"\n[service.health]\nkind = \"dns\"\nquery = \"example.com\""
        )));
        let kind = &model.services[0].health.as_ref().unwrap().kind;
        assert_eq!(
            kind,
            &CheckKind::Dns {
                name: "example.com".into(),
                qtype: 1,
                transport
            }
        );
        assert_eq!(valid(&Config::from_model(&model).to_toml()), model);
    }
}

/// The service `web` checked by `check`, its backend with `own` lines.
fn own_check(check: &str, own: &str) -> String {
    web(&format!(
        "[service.health]\n{check}\n[[service.backend]]\naddress = \"198.18.1.10\"\n{own}\n\
         [[service.backend]]\naddress = \"198.18.1.11\"\n"
    ))
}

#[test]
fn a_backend_may_have_its_own_check_target() {
    use crate::model::CheckOverride;
    let inline = valid(&own_check(
        "kind = \"tcp\"\nport = 9000",
        "health = { address = \"198.18.1.99\", port = 8081 }",
    ));
    let table = valid(&own_check(
        "kind = \"tcp\"\nport = 9000",
        "[service.backend.health]\naddress = \"198.18.1.99\"\nport = 8081",
    ));
    assert_eq!(inline, table);
    let web = &inline.services[0];
    assert_eq!(
        web.backends[0].health,
        CheckOverride {
            address: Some("198.18.1.99".parse().unwrap()),
            port: Some(8081)
        }
    );
    assert!(web.backends[1].health.is_empty());
    // Each backend's check: its own target over the service's.
    let check = web.health.as_ref().unwrap();
    let first = check.for_backend(&web.backends[0]);
    assert_eq!(
        (first.address, first.port),
        (Some("198.18.1.99".parse().unwrap()), Some(8081))
    );
    let second = check.for_backend(&web.backends[1]);
    assert_eq!((second.address, second.port), (None, Some(9000)));
    let port_only = valid(&own_check("kind = \"tcp\"", "health = { port = 8081 }"));
    let web = &port_only.services[0];
    let first = web.health.as_ref().unwrap().for_backend(&web.backends[0]);
    assert_eq!((first.address, first.port), (None, Some(8081)));
    // Written back as it was.
    for model in [&inline, &port_only] {
        let text = Config::from_model(model).to_toml();
        assert!(text.contains("[service.backend.health]"), "{text}");
        assert_eq!(valid(&text), *model, "{text}");
    }
}

#[test]
fn a_backends_own_check_target_is_checked() {
    let field = |key: &str| format!("service[web].backend[0].health{key}");
    let tcp = "kind = \"tcp\"";
    assert_eq!(
        err(&own_check(tcp, "health = { port = 0 }")),
        error(&field(".port"), "0 is out of range 1-65535")
    );
    assert_eq!(
        err(&own_check(tcp, "health = { port = 65536 }")),
        error(&field(".port"), "65536 is out of range 1-65535")
    );
    assert_eq!(
        err(&own_check(tcp, "health = { address = \"backend-1\" }")),
        error(&field(".address"), "\"backend-1\" is not an IP address")
    );
    assert_eq!(
        err(&own_check(tcp, "health = { address = \"fd00::99\" }")),
        error(
            &field(".address"),
            "fd00::99 is IPv6 but the backend 198.18.1.10 is IPv4"
        )
    );
    assert_eq!(
        err(&own_check(tcp, "health = {}")),
        error(
            &field(""),
            "sets neither address nor port: leave it out to probe as the service's check does"
        )
    );
    let e = err(&own_check(tcp, "health = { adress = \"198.18.1.99\" }"));
    assert_eq!(e.field, field(".adress"));
    assert!(e.message.contains("unknown field `adress`"), "{e}");
    // Of a service without a check.
    let unchecked = web(&backend("health = { port = 8081 }"));
    assert_eq!(
        err(&unchecked),
        error(
            &field(""),
            "the service has no health check ([service.health]) to aim elsewhere"
        )
    );
    // An address for a check that probes the VIP.
    let vip = web(&format!(
        "mode = \"dr\"\n[service.health]\nkind = \"tcp\"\nvia = \"vip\"\n{}",
        backend("health = { address = \"198.18.1.99\" }")
    ));
    assert_eq!(
        err(&vip),
        error(
            &field(".address"),
            "the service's check probes the VIP (via = \"vip\"): an address of the backend's \
             own needs via = \"direct\""
        )
    );
    // A port for one is fine: the VIP is probed at that port.
    let vip_port = web(&format!(
        "mode = \"dr\"\n[service.health]\nkind = \"tcp\"\nvia = \"vip\"\n{}",
        backend("health = { port = 8081 }")
    ));
    valid(&vip_port);
}
