//! The keys `config::keys` marks `restart` are those whose change a
//! reload refuses ([`super::restart_only`]); the rest a reload applies.

use std::collections::BTreeSet;

use super::restart_only;
use crate::config::{
    keys::{keys, Applies},
    Config,
};

/// A changed value for each key of `[agent]`, whose keys differ, and for
/// one key of each other section, whose keys apply alike.
const CHANGES: &[(&str, &str)] = &[
    ("agent.interfaces", r#"["eth0", "eth1", "eth2"]"#),
    ("agent.xdp_mode", r#""generic""#),
    ("agent.api_listen", r#""127.0.0.1:9181""#),
    ("agent.api_token_file", r#""/etc/xlb/token""#),
    ("agent.pin_path", r#""/sys/fs/bpf/xlb2""#),
    ("agent.tunnel_source_v4", r#""198.18.1.3/30""#),
    ("agent.tunnel_source_v6", r#""fd00:1::2""#),
    ("agent.mtu", "9000"),
    ("agent.udp_timeout", r#""60s""#),
    ("agent.hash_seed", r#""0x1234""#),
    ("agent.flood_guard", "5000"),
    ("agent.icmp_rate", "10"),
    ("tables.max_services", "32"),
    ("service.port", "81"),
    ("service.persistence.timeout", r#""60s""#),
    ("service.health.rise", "3"),
    ("service.backend.weight", "5"),
    ("service.backend.health.port", "8082"),
    ("vrrp.instance.priority", "100"),
    ("vrrp.instance.track.weight", "-10"),
    ("vrrp.sync_group.instances", r#"["VI_1"]"#),
];

/// Sets the key at `path` in `table`, in the first item of each array of
/// tables.
fn set(table: &mut toml::Table, path: &str, value: toml::Value) {
    let (parents, last) = path.rsplit_once('.').expect("a key in a section");
    let mut at = table;
    for name in parents.split('.') {
        let mut next = at
            .get_mut(name)
            .unwrap_or_else(|| panic!("{path}: no {name}"));
        if let toml::Value::Array(items) = next {
            next = &mut items[0];
        }
        at = next
            .as_table_mut()
            .unwrap_or_else(|| panic!("{path}: {name} is no table"));
    }
    // A key the example leaves out is added; one the file does not know fails to parse.
    at.insert(last.to_owned(), value);
}

#[test]
fn keys_marked_restart_are_those_a_reload_refuses() {
    let example = include_str!("../../../xlb.example.toml");
    let running = Config::parse(example).unwrap().validate().unwrap();
    let keys = keys();
    for (path, value) in CHANGES {
        let mut table: toml::Table = toml::from_str(example).unwrap();
        let value: toml::Table = toml::from_str(&format!("v = {value}")).unwrap();
        set(&mut table, path, value["v"].clone());
        let next = Config::parse(&toml::to_string(&table).unwrap())
            .and_then(|c| c.validate())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_ne!(running, next, "{path} changed nothing");
        let key = keys.iter().find(|k| k.path == *path).expect("a listed key");
        let refused = restart_only(&running, &next).is_err();
        assert_eq!(refused, key.applies == Applies::Restart, "{path}");
    }
    let changed: BTreeSet<&str> = CHANGES.iter().map(|(path, _)| *path).collect();
    for key in &keys {
        if key.path.starts_with("agent.") {
            assert!(changed.contains(key.path), "{}: add a change", key.path);
        } else {
            let section = key.path.rsplit_once('.').unwrap().0;
            let tried = CHANGES
                .iter()
                .find(|(path, _)| path.rsplit_once('.').unwrap().0 == section)
                .unwrap_or_else(|| panic!("no change in {section}"));
            let tried = keys.iter().find(|k| k.path == tried.0).unwrap();
            assert_eq!(
                key.applies, tried.applies,
                "{} applies as {}",
                key.path, tried.path
            );
        }
    }
}
