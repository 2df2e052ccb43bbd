//! The keys `config::keys` marks `restart` are those whose change a
//! reload refuses ([`super::restart_only`]); the rest a reload applies.

use std::collections::BTreeSet;

use super::restart_only;
use crate::config::{
    keys::{keys, Applies},
    Config,
};

/// A changed value for each key of `[agent]` and `[[vrrp.instance]]`,
/// whose keys differ, and for one key of each other section, whose keys
/// apply alike.
const CHANGES: &[(&str, &str)] = &[
    ("agent.interfaces", r#"["eth0", "eth1", "eth2"]"#),
    ("agent.xdp_mode", r#""generic""#),
    ("agent.api_listen", r#""127.0.0.1:9181""#),
    ("agent.api_token_file", r#""/etc/xlb/token""#),
    ("agent.pin_path", r#""/sys/fs/bpf/xlb2""#),
    ("agent.state_file", r#""/var/lib/xlb/state""#),
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
    ("vrrp.instance.interface", r#""eth2""#),
    ("vrrp.instance.vrid", "61"),
    ("vrrp.instance.priority", "100"),
    ("vrrp.instance.advert_interval", r#""2s""#),
    (
        "vrrp.instance.virtual_addresses",
        r#"["198.18.0.53", "198.18.0.102"]"#,
    ),
    ("vrrp.instance.preempt", "false"),
    ("vrrp.instance.preempt_delay", r#""5s""#),
    ("vrrp.instance.unicast_peers", r#"["198.18.0.2"]"#),
    ("vrrp.instance.v3_checksum", r#""message_only""#),
    ("vrrp.instance.garp_count", "5"),
    ("vrrp.instance.garp_interval", r#""200ms""#),
    ("vrrp.instance.garp_refresh", r#""60s""#),
    ("vrrp.instance.notify", r#"["/usr/local/bin/xlb-notify"]"#),
    ("vrrp.instance.track.weight", "-10"),
    ("vrrp.sync_group.instances", r#"["VI_1"]"#),
];

/// Sections each of whose keys has a change of its own in [`CHANGES`].
const EACH_KEY: &[&str] = &["agent", "vrrp.instance"];

/// Keys of those sections that cannot change alone in the example (a
/// renamed instance is one removed and one added; VRRPv2 needs whole
/// seconds between advertisements, and has the only password):
/// `vrrp::reload`'s tests cover them.
const NOT_ALONE: &[&str] = &[
    "vrrp.instance.name",
    "vrrp.instance.version",
    "vrrp.instance.auth_pass",
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
        let section = key.path.rsplit_once('.').unwrap().0;
        if NOT_ALONE.contains(&key.path) {
            continue;
        } else if EACH_KEY.contains(&section) {
            assert!(changed.contains(key.path), "{}: add a change", key.path);
        } else {
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
