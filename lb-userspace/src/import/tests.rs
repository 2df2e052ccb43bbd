//! Each fixture converted and compared line by line with its expected
//! TOML and report; each expected TOML validates.

use std::net::IpAddr;

use super::{haproxy, ipvsadm, keepalived, Imported};
use crate::config::Config;

/// A fixture: its file name, text, converter, expected TOML and report.
/// The expected `[agent]` holds `xlb import`'s `--interface` and
/// `--tunnel-source` values.
struct Fixture {
    file: &'static str,
    input: &'static str,
    convert: fn(&str) -> Imported,
    toml: &'static str,
    reported: &'static str,
}

macro_rules! fixture {
    ($convert:ident, $name:literal, $ext:literal) => {
        Fixture {
            file: concat!($name, ".", $ext),
            input: include_str!(concat!(
                "../../../tests/fixtures/import/",
                stringify!($convert),
                "/",
                $name,
                ".",
                $ext
            )),
            convert: $convert::convert,
            toml: include_str!(concat!(
                "../../../tests/fixtures/import/",
                stringify!($convert),
                "/",
                $name,
                ".toml"
            )),
            reported: include_str!(concat!(
                "../../../tests/fixtures/import/",
                stringify!($convert),
                "/",
                $name,
                ".dropped"
            )),
        }
    };
}

fn fixtures() -> Vec<Fixture> {
    vec![
        fixture!(ipvsadm, "three-modes", "rules"),
        fixture!(ipvsadm, "nat-gateway", "rules"),
        fixture!(keepalived, "director-a", "conf"),
        fixture!(keepalived, "director-b", "conf"),
        fixture!(keepalived, "four-services", "conf"),
        fixture!(haproxy, "prescriptions", "cfg"),
        fixture!(haproxy, "four-services", "cfg"),
    ]
}

fn assert_lines(what: &str, actual: &str, expected: &str) {
    let actual: Vec<&str> = actual.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{what}, line {}", index + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{what}: number of lines");
}

#[test]
fn fixtures_convert_to_their_expected_toml_and_report() {
    for fixture in fixtures() {
        let expected = match Config::parse(fixture.toml) {
            Ok(config) => config,
            Err(e) => panic!("{}: the expected TOML does not parse: {e}", fixture.file),
        };
        if let Err(e) = expected.validate() {
            panic!("{}: the expected TOML does not validate: {e}", fixture.file);
        }
        let agent = &expected.agent;
        let sources: Vec<IpAddr> = [&agent.tunnel_source_v4, &agent.tunnel_source_v6]
            .into_iter()
            .flatten()
            .map(|s| s.parse().expect("a tunnel source address"))
            .collect();
        let mut imported = (fixture.convert)(fixture.input);
        imported.set_agent(&agent.interfaces, &sources);
        assert_lines(fixture.file, &imported.config.to_toml(), fixture.toml);
        assert_lines(
            &format!("{} report", fixture.file),
            &imported.report_lines(fixture.file).join("\n"),
            fixture.reported,
        );
    }
}

#[test]
fn netmasks_and_prefix_lengths_are_prefix_lengths() {
    assert_eq!(super::prefix_len("255.255.255.0"), Some(24));
    assert_eq!(super::prefix_len("255.255.255.255"), Some(32));
    assert_eq!(super::prefix_len("64"), Some(64));
    assert_eq!(super::prefix_len("255.0.255.0"), None);
    assert_eq!(super::prefix_len("0.0.0.0"), None);
}

#[test]
fn keepalived_blocks_open_on_the_next_line_and_quotes_keep_words_together() {
    let imported = keepalived::convert(
        "vrrp_instance VI_1\n{\n    interface eth0 # uplink\n    virtual_router_id 7\n    \
         priority 100\n    virtual_ipaddress { 192.0.2.7 }\n    \
         notify \"/usr/local/bin/notify --all\"\n}\n",
    );
    assert_eq!(imported.reported, []);
    let instance = &imported.config.vrrp.instances[0];
    assert_eq!(
        (
            instance.interface.as_str(),
            instance.vrid,
            instance.priority
        ),
        ("eth0", 7, 100)
    );
    assert_eq!(instance.virtual_addresses, ["192.0.2.7"]);
    assert_eq!(
        instance.notify.as_deref(),
        Some(&["/usr/local/bin/notify".to_owned(), "--all".to_owned()][..])
    );
}

#[test]
fn ipvsadm_rules_with_names_are_reported_not_guessed() {
    let imported = ipvsadm::convert("-A -t www.example.org:http -s wlc\n");
    assert!(imported.config.services.is_empty());
    assert_eq!(
        imported.report_lines("rules"),
        ["rules:1: -A -t www.example.org:http -s wlc: \"www.example.org:http\" is not a numeric \
          address and port (save with `ipvsadm -Sn`); not carried over"]
    );
}

#[test]
fn keepalived_connect_ip_of_a_tunnelled_server_is_probed_directly() {
    let imported = keepalived::convert(
        "virtual_server 192.0.2.1 80 {\n    lb_kind TUN\n    \
         real_server 10.0.0.1 80 {\n        TCP_CHECK { connect_timeout 3 }\n    }\n    \
         real_server 10.0.0.2 80 {\n        TCP_CHECK {\n            connect_timeout 3\n            \
         connect_ip 10.0.0.102\n        }\n    }\n}\n",
    );
    let service = &imported.config.services[0];
    let check = service.health.as_ref().unwrap();
    assert_eq!(
        (check.address.as_deref(), check.via.as_deref()),
        (None, Some("direct"))
    );
    assert_eq!(service.backends[0].health, None);
    let own = service.backends[1].health.as_ref().unwrap();
    assert_eq!(
        (own.address.as_deref(), own.port),
        (Some("10.0.0.102"), None)
    );
    assert!(imported.reported.is_empty(), "{:?}", imported.reported);
}

#[test]
fn haproxy_check_ssl_needs_httpchk_to_be_an_https_check() {
    let imported = haproxy::convert(
        "listen app 192.0.2.1:443\n    server a 10.0.0.1:443 check check-ssl verify none\n",
    );
    let check = imported.config.services[0].health.as_ref().unwrap();
    assert_eq!((check.kind.as_str(), check.verify), ("tcp", None));
    let reports = imported.report_lines("cfg");
    assert!(
        reports
            .iter()
            .any(|r| r.contains("check-ssl without `option httpchk`")),
        "{reports:?}"
    );
    let imported = haproxy::convert(
        "listen app 192.0.2.1:443\n    option httpchk GET /up\n    \
         server a 10.0.0.1:443 check check-ssl ca-file /etc/ssl/app.pem check-sni app.test\n",
    );
    let check = imported.config.services[0].health.as_ref().unwrap();
    assert_eq!(
        (
            check.kind.as_str(),
            check.ca_file.as_deref(),
            check.sni.as_deref()
        ),
        ("https", Some("/etc/ssl/app.pem"), Some("app.test"))
    );
}

#[test]
fn haproxy_check_port_of_a_server_without_a_port_is_reported() {
    let imported = haproxy::convert(
        "listen app 192.0.2.1:80\n    server a 10.0.0.1:80 check port 9000\n    \
         server b 10.0.0.2 check\n",
    );
    let service = &imported.config.services[0];
    assert_eq!(service.backends[1].health, None);
    let reports = imported.report_lines("cfg");
    assert!(
        reports
            .iter()
            .any(|r| r.starts_with("cfg:3: server b 10.0.0.2 check: its check probes the port")),
        "{reports:?}"
    );
}

#[test]
fn keepalived_includes_are_inlined_where_they_stand_and_reported_from_their_own_files() {
    use std::path::{Path, PathBuf};

    let main =
        "global_defs {\n    router_id LB_A\n}\ninclude conf.d/*.conf\ninclude missing.conf\n";
    let services = "virtual_server 192.0.2.10 80 {\n    lb_kind DR\n    frobnicate yes\n    \
                    real_server 192.0.2.21 80 {\n    }\n}\n";
    let vrrp = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    \
                priority 100\n    virtual_ipaddress {\n        192.0.2.10\n    }\n    \
                include /etc/keepalived/loop.conf\n}\n";
    let read = |pattern: &str, base: &Path| -> Result<Vec<(PathBuf, String)>, String> {
        match (pattern, base.to_str().unwrap()) {
            ("conf.d/*.conf", "/etc/keepalived") => Ok(vec![
                ("/etc/keepalived/conf.d/a.conf".into(), services.to_owned()),
                ("/etc/keepalived/conf.d/b.conf".into(), vrrp.to_owned()),
            ]),
            // Includes itself: followed until the depth runs out.
            ("/etc/keepalived/loop.conf", _) => Ok(vec![(
                "/etc/keepalived/loop.conf".into(),
                "include /etc/keepalived/loop.conf\n".to_owned(),
            )]),
            (other, _) => Err(format!("{other}: no such file")),
        }
    };
    let inlined = keepalived::inline(Path::new("/etc/keepalived/keepalived.conf"), main, &read);
    let imported = keepalived::convert_inlined(&inlined);
    assert_eq!(imported.config.services.len(), 1);
    assert_eq!(imported.config.vrrp.instances[0].name, "VI_1");
    let reports = imported.report_lines_at(|line| inlined.origin(line));
    assert_eq!(
        reports,
        [
            "/etc/keepalived/keepalived.conf:2: router_id LB_A: global settings (router id, \
             mail, scripts): xlb has none; not carried over",
            "/etc/keepalived/conf.d/a.conf:3: frobnicate yes: frobnicate: xlb has no such \
             setting; not carried over",
            "/etc/keepalived/loop.conf:1: include /etc/keepalived/loop.conf: includes nested \
             deeper than 8; not followed",
            "/etc/keepalived/keepalived.conf:5: include missing.conf: missing.conf: no such \
             file; not followed",
        ]
    );
}
