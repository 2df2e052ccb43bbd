use std::net::SocketAddr;

use super::*;
use crate::{
    config::tests::valid,
    model::{
        edit::{apply as edit, Edit},
        AdminState, CheckOverride,
    },
};

const FILE: &str = r#"
[agent]
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "198.18.0.10"
port = 80
[[service.backend]]
address = "198.18.1.1"
[[service.backend]]
address = "198.18.1.2"
weight = 3

[[service]]
name = "dns"
vip = "198.18.0.10"
port = 53
protocol = "udp"
[[service.backend]]
address = "198.18.1.5"
"#;

fn at(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The file's model with `edits` made, as the API makes them.
fn edited(edits: Vec<Edit>) -> (Model, Model) {
    let file = valid(FILE);
    let running = edit(&file, edits).unwrap();
    (file, running)
}

fn backend(address: &str, weight: u16) -> Backend {
    Backend {
        addr: address.parse().unwrap(),
        port: 80,
        weight,
        admin_state: AdminState::Ready,
        health: CheckOverride::default(),
    }
}

#[test]
fn no_change_is_an_empty_state() {
    let file = valid(FILE);
    assert!(RuntimeState::between(&file, &file).is_empty());
}

#[test]
fn a_drain_and_a_weight_are_kept_as_the_fields_that_differ() {
    let (file, running) = edited(vec![
        Edit::SetAdminState {
            service: "web".into(),
            backend: at("198.18.1.1:80"),
            admin: AdminState::Drain,
        },
        // Back to the default weight: still a change of the file's 3.
        Edit::SetWeight {
            service: "web".into(),
            backend: at("198.18.1.2:80"),
            weight: 1,
        },
    ]);
    let state = RuntimeState::between(&file, &running);
    assert_eq!(
        state,
        RuntimeState {
            backends: vec![BackendChanges {
                service: "web".into(),
                changed: vec![
                    BackendConfig {
                        address: "198.18.1.1".into(),
                        port: Some(80),
                        weight: None,
                        state: Some("drain".into()),
                        health: None,
                    },
                    BackendConfig {
                        address: "198.18.1.2".into(),
                        port: Some(80),
                        weight: Some(1),
                        state: None,
                        health: None,
                    },
                ],
                ..BackendChanges::default()
            }],
            ..RuntimeState::default()
        }
    );
    assert_eq!(state.apply(&file).unwrap().model, running);
}

#[test]
fn only_changed_fields_override_a_file_that_changed_since() {
    let (file, running) = edited(vec![Edit::SetAdminState {
        service: "web".into(),
        backend: at("198.18.1.1:80"),
        admin: AdminState::Drain,
    }]);
    let state = RuntimeState::between(&file, &running);
    // The operator then gives the drained backend weight 5 in the file.
    let next_file = valid(&FILE.replace(
        "address = \"198.18.1.1\"",
        "address = \"198.18.1.1\"\nweight = 5",
    ));
    let applied = state.apply(&next_file).unwrap();
    let drained = applied.model.services[0]
        .backend(at("198.18.1.1:80"))
        .unwrap();
    assert_eq!(
        (drained.weight, drained.admin_state),
        (5, AdminState::Drain)
    );
    assert!(applied.notes.is_empty());
}

#[test]
fn added_removed_and_replaced_services_and_backends_round_trip() {
    let file = valid(FILE);
    let mut replaced = file.services[1].clone();
    replaced.fallback = Some(at("198.18.1.9:53"));
    let mut added = file.services[0].clone();
    added.name = "web2".into();
    added.vip = "198.18.0.11".parse().unwrap();
    let running = edit(
        &file,
        vec![
            Edit::AddBackend {
                service: "web".into(),
                backend: backend("198.18.1.3", 2),
            },
            Edit::RemoveBackend {
                service: "web".into(),
                backend: at("198.18.1.2:80"),
            },
            Edit::ReplaceService {
                name: "dns".into(),
                service: replaced,
            },
            Edit::AddService(added),
        ],
    )
    .unwrap();
    let state = RuntimeState::between(&file, &running);
    assert_eq!(
        state
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["dns", "web2"]
    );
    assert_eq!(state.backends[0].removed, ["198.18.1.2:80"]);
    assert_eq!(state.backends[0].added[0].weight, Some(2));
    assert_eq!(state.len(), 4);
    // Through the file's text and back.
    let path = std::env::temp_dir().join(format!("xlb-state-test-{}", std::process::id()));
    state.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# Changes made through xlb's API"),
        "{text}"
    );
    let read = RuntimeState::load(&path).unwrap();
    assert_eq!(read, state);
    assert_eq!(read.apply(&file).unwrap().model, running);
    // An empty state removes the file.
    RuntimeState::default().save(&path).unwrap();
    assert!(!path.exists());
    assert!(RuntimeState::load(&path).unwrap().is_empty());
}

#[test]
fn a_removed_service_goes_and_its_removal_stays_noted_once_the_file_drops_it() {
    let (file, running) = edited(vec![Edit::RemoveService { name: "dns".into() }]);
    let state = RuntimeState::between(&file, &running);
    assert_eq!(state.removed_services, ["dns"]);
    assert_eq!(state.apply(&file).unwrap().model, running);
    let without_dns = valid(FILE.split("[[service]]\nname = \"dns\"").next().unwrap());
    let applied = state.apply(&without_dns).unwrap();
    assert_eq!(applied.model, without_dns);
    assert_eq!(
        applied.notes,
        ["removed_services: the file has no service \"dns\" any more"]
    );
    assert!(RuntimeState::between(&without_dns, &applied.model).is_empty());
}

#[test]
fn changes_of_what_the_file_dropped_are_noted_and_left_out() {
    let (file, running) = edited(vec![
        Edit::SetWeight {
            service: "dns".into(),
            backend: at("198.18.1.5:53"),
            weight: 7,
        },
        Edit::SetAdminState {
            service: "web".into(),
            backend: at("198.18.1.2:80"),
            admin: AdminState::Maint,
        },
        Edit::RemoveBackend {
            service: "web".into(),
            backend: at("198.18.1.1:80"),
        },
    ]);
    let state = RuntimeState::between(&file, &running);
    // The file drops dns, and both of web's changed backends; adds another.
    let next_file = valid(
        &FILE
            .split("[[service]]\nname = \"dns\"")
            .next()
            .unwrap()
            .replace("198.18.1.1", "198.18.1.4")
            .replace(
                "[[service.backend]]\naddress = \"198.18.1.2\"\nweight = 3\n",
                "",
            ),
    );
    let applied = state.apply(&next_file).unwrap();
    assert_eq!(applied.model, next_file);
    assert_eq!(
        applied.notes,
        [
            "backends[web]: the file has no backend 198.18.1.1:80 any more",
            "backends[web]: the file has no backend 198.18.1.2:80 any more",
            "backends[dns]: the file has no service \"dns\" any more",
        ]
    );
}

#[test]
fn a_state_that_breaks_a_rule_over_the_file_is_refused_naming_the_state() {
    // A service added through the API whose VIP and port the file now uses.
    let mut added = valid(FILE).services[0].clone();
    added.name = "web2".into();
    let state = RuntimeState {
        services: vec![ServiceConfig::from_model(&added)],
        ..RuntimeState::default()
    };
    let e = state.apply(&valid(FILE)).unwrap_err();
    assert!(e.field.starts_with("state: "), "{e}");
    assert!(e.message.contains("198.18.0.10"), "{e}");
    let bad = RuntimeState {
        backends: vec![BackendChanges {
            service: "web".into(),
            changed: vec![BackendConfig {
                address: "198.18.1.1".into(),
                port: Some(80),
                weight: Some(70000),
                state: None,
                health: None,
            }],
            ..BackendChanges::default()
        }],
        ..RuntimeState::default()
    };
    let e = bad.apply(&valid(FILE)).unwrap_err();
    assert_eq!(e.field, "state: backends[web].changed[0].weight");
}

#[test]
fn a_broken_state_file_is_refused_with_its_path_and_key() {
    let path = std::env::temp_dir().join(format!("xlb-state-broken-{}", std::process::id()));
    std::fs::write(&path, "[[backends]]\nservice = \"web\"\nwieght = 3\n").unwrap();
    let e = RuntimeState::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        e.field.starts_with(&format!("state {}", path.display())),
        "{e}"
    );
    assert!(e.message.contains("wieght"), "{e}");
}

#[test]
fn the_state_lives_beside_the_file_unless_placed() {
    let file = valid(FILE);
    assert_eq!(
        state_path(Path::new("/etc/xlb/xlb.toml"), &file),
        Path::new("/etc/xlb/xlb.state")
    );
    let placed = valid(&FILE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nstate_file = \"/var/lib/xlb/state\"",
    ));
    assert_eq!(
        state_path(Path::new("/etc/xlb/xlb.toml"), &placed),
        Path::new("/var/lib/xlb/state")
    );
}

#[test]
fn a_backend_whose_check_target_changed_is_kept_whole() {
    let file = valid(&FILE.replace(
        "[[service]]\nname = \"web\"\nvip = \"198.18.0.10\"\nport = 80\n",
        "[[service]]\nname = \"web\"\nvip = \"198.18.0.10\"\nport = 80\n\
         [service.health]\nkind = \"tcp\"\n",
    ));
    let mut running = file.clone();
    let backend = &mut running.services[0].backends[0];
    backend.health.port = Some(8081);
    backend.admin_state = AdminState::Drain;
    let state = RuntimeState::between(&file, &running);
    assert_eq!(state.backends[0].added.len(), 1, "{state:?}");
    assert!(state.backends[0].changed.is_empty(), "{state:?}");
    let applied = state.apply(&file).unwrap();
    assert_eq!(applied.model, running, "replaced in place, order kept");
}
