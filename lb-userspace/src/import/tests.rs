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
