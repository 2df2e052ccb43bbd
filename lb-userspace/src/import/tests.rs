//! Each fixture converted and compared line by line with its expected
//! TOML and report; each expected TOML validates.

use std::net::IpAddr;

use super::{ipvsadm, keepalived, Imported};
use crate::config::Config;

/// A fixture: its file name, text, converter, `xlb import`'s
/// `--interface` and `--tunnel-source` values, expected TOML and report.
struct Fixture {
    file: &'static str,
    input: &'static str,
    convert: fn(&str) -> Imported,
    interfaces: &'static [&'static str],
    tunnel_sources: &'static [&'static str],
    toml: &'static str,
    reported: &'static str,
}

macro_rules! fixture {
    ($format:literal, $name:literal, $ext:literal, $convert:expr, $interfaces:expr, $tunnel_sources:expr) => {
        Fixture {
            file: concat!($name, ".", $ext),
            input: include_str!(concat!(
                "../../../tests/fixtures/import/",
                $format,
                "/",
                $name,
                ".",
                $ext
            )),
            convert: $convert,
            interfaces: $interfaces,
            tunnel_sources: $tunnel_sources,
            toml: include_str!(concat!(
                "../../../tests/fixtures/import/",
                $format,
                "/",
                $name,
                ".toml"
            )),
            reported: include_str!(concat!(
                "../../../tests/fixtures/import/",
                $format,
                "/",
                $name,
                ".dropped"
            )),
        }
    };
}

fn fixtures() -> Vec<Fixture> {
    vec![
        fixture!(
            "ipvsadm",
            "three-modes",
            "rules",
            ipvsadm::convert,
            &["eth0"],
            &["192.0.2.1"]
        ),
        fixture!(
            "ipvsadm",
            "nat-gateway",
            "rules",
            ipvsadm::convert,
            &["eth0"],
            &[]
        ),
        fixture!(
            "keepalived",
            "director-a",
            "conf",
            keepalived::convert,
            &["enp0s3", "enp0s8"],
            &[]
        ),
        fixture!(
            "keepalived",
            "director-b",
            "conf",
            keepalived::convert,
            &["enp0s3", "enp0s8"],
            &[]
        ),
        fixture!(
            "keepalived",
            "four-services",
            "conf",
            keepalived::convert,
            &["eth0", "eth1"],
            &["192.168.1.10"]
        ),
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
        let mut imported = (fixture.convert)(fixture.input);
        let sources: Vec<IpAddr> = fixture
            .tunnel_sources
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let interfaces: Vec<String> = fixture.interfaces.iter().map(|i| i.to_string()).collect();
        imported.set_agent(&interfaces, &sources);
        assert_lines(fixture.file, &imported.config.to_toml(), fixture.toml);
        assert_lines(
            &format!("{} report", fixture.file),
            &imported.report_lines(fixture.file).join("\n"),
            fixture.reported,
        );
        if let Err(e) = Config::parse(fixture.toml).and_then(|c| c.validate()) {
            panic!("{}: the expected TOML does not validate: {e}", fixture.file);
        }
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
