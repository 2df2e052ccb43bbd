//! Typed changes to a running model, as the API asks for them: applied to
//! a copy, and kept only if the whole copy keeps [`rules`].

use std::net::SocketAddr;

use super::{
    rules::{self, Violation},
    AdminState, Backend, Model, Service,
};

/// One change to the services. Services are named, backends by their
/// address and port within their service.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    AddService(Service),
    /// The service `name` becomes `service`, which may rename it.
    ReplaceService {
        name: String,
        service: Service,
    },
    RemoveService {
        name: String,
    },
    AddBackend {
        service: String,
        backend: Backend,
    },
    SetWeight {
        service: String,
        backend: SocketAddr,
        weight: u16,
    },
    SetAdminState {
        service: String,
        backend: SocketAddr,
        admin: AdminState,
    },
    RemoveBackend {
        service: String,
        backend: SocketAddr,
    },
}

/// Why edits were refused; the model is as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// No such service or backend.
    #[error("{0}")]
    NotFound(String),
    /// Adding what exists already.
    #[error("{}", .0.message)]
    Exists(Violation),
    /// The result would break a rule.
    #[error("{}: {}", .0.path, .0.message)]
    Broken(Violation),
}

/// `model` with `edits` made in order, if the result keeps every rule.
pub fn apply(model: &Model, edits: impl IntoIterator<Item = Edit>) -> Result<Model, EditError> {
    let mut next = model.clone();
    for edit in edits {
        edit.make(&mut next)?;
    }
    rules::check(&next).map_err(EditError::Broken)?;
    Ok(next)
}

impl Edit {
    fn make(self, model: &mut Model) -> Result<(), EditError> {
        match self {
            Edit::AddService(service) => {
                if model.services.iter().any(|s| s.name == service.name) {
                    return Err(EditError::Exists(Violation::new(
                        "name",
                        format!(
                            "a service named {:?} exists; PATCH it instead",
                            service.name
                        ),
                    )));
                }
                model.services.push(service);
            }
            Edit::ReplaceService { name, service } => *service_mut(model, &name)? = service,
            Edit::RemoveService { name } => {
                service_mut(model, &name)?;
                model.services.retain(|s| s.name != name);
            }
            Edit::AddBackend { service, backend } => {
                service_mut(model, &service)?.backends.push(backend)
            }
            Edit::SetWeight {
                service,
                backend,
                weight,
            } => backend_mut(model, &service, backend)?.weight = weight,
            Edit::SetAdminState {
                service,
                backend,
                admin,
            } => backend_mut(model, &service, backend)?.admin_state = admin,
            Edit::RemoveBackend { service, backend } => {
                backend_mut(model, &service, backend)?;
                service_mut(model, &service)?
                    .backends
                    .retain(|b| b.socket_addr() != backend);
            }
        }
        Ok(())
    }
}

/// The service `name`, or why there is none.
pub fn service<'m>(model: &'m Model, name: &str) -> Result<&'m Service, EditError> {
    model
        .services
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| EditError::NotFound(format!("no service named {name:?}")))
}

/// The backend `addr` of the service `name` with its index, or why there is none.
pub fn backend<'m>(
    model: &'m Model,
    name: &str,
    addr: SocketAddr,
) -> Result<(usize, &'m Backend), EditError> {
    service(model, name)?
        .backends
        .iter()
        .enumerate()
        .find(|(_, b)| b.socket_addr() == addr)
        .ok_or_else(|| EditError::NotFound(format!("service {name:?} has no backend {addr}")))
}

fn service_mut<'m>(model: &'m mut Model, name: &str) -> Result<&'m mut Service, EditError> {
    service(model, name)?;
    Ok(model
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .expect("found above"))
}

fn backend_mut<'m>(
    model: &'m mut Model,
    name: &str,
    addr: SocketAddr,
) -> Result<&'m mut Backend, EditError> {
    let (index, _) = backend(model, name, addr)?;
    Ok(&mut service_mut(model, name)?.backends[index])
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use lb_common::maps::Mode;

    use super::*;
    use crate::model::{AgentSettings, AttachMode, Protocol, Tables};

    fn model() -> Model {
        let backend = |addr: &str| Backend {
            addr: addr.parse().unwrap(),
            port: 80,
            weight: 1,
            admin_state: AdminState::Ready,
            health: Default::default(),
        };
        Model {
            agent: AgentSettings {
                interfaces: vec!["eth0".into()],
                xdp_mode: AttachMode::Native,
                api_listen: "127.0.0.1:9180".parse().unwrap(),
                api_token_file: None,
                pin_path: PathBuf::from("/sys/fs/bpf/xlb"),
                state_file: None,
                tunnel_source_v4: None,
                tunnel_source_v6: None,
                tunnel_spread_v4: 0,
                tunnel_spread_v6: 0,
                mtu: 1500,
                udp_timeout: Duration::from_secs(300),
                hash_seed: 0,
                flood_guard: None,
                icmp_rate: 1000,
            },
            tables: Tables {
                maglev_size: 65537,
                max_services: 8,
                max_backends: 8,
                flow_entries: 1024,
                affinity_entries: 1024,
            },
            services: vec![Service {
                name: "web".into(),
                vip: "198.18.0.100".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                mode: Mode::Dr,
                affinity: None,
                fallback: None,
                health: None,
                backends: vec![backend("198.18.1.10"), backend("198.18.1.11")],
            }],
            vrrp: Vec::new(),
            sync_groups: Vec::new(),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn edits_change_only_what_they_name() {
        let before = model();
        let after = apply(
            &before,
            [
                Edit::SetWeight {
                    service: "web".into(),
                    backend: addr("198.18.1.11:80"),
                    weight: 3,
                },
                Edit::SetAdminState {
                    service: "web".into(),
                    backend: addr("198.18.1.10:80"),
                    admin: AdminState::Drain,
                },
            ],
        )
        .unwrap();
        let mut expected = before.clone();
        expected.services[0].backends[1].weight = 3;
        expected.services[0].backends[0].admin_state = AdminState::Drain;
        assert_eq!(after, expected);

        let removed = apply(
            &after,
            [Edit::RemoveBackend {
                service: "web".into(),
                backend: addr("198.18.1.10:80"),
            }],
        )
        .unwrap();
        assert_eq!(
            removed.services[0].backends,
            after.services[0].backends[1..]
        );
        let gone = apply(&removed, [Edit::RemoveService { name: "web".into() }]).unwrap();
        assert!(gone.services.is_empty());
    }

    #[test]
    fn a_refused_edit_says_why_and_changes_nothing() {
        let before = model();
        let web = before.services[0].clone();
        let cases = [
            (
                Edit::SetWeight {
                    service: "nope".into(),
                    backend: addr("198.18.1.10:80"),
                    weight: 3,
                },
                EditError::NotFound("no service named \"nope\"".into()),
            ),
            (
                Edit::RemoveBackend {
                    service: "web".into(),
                    backend: addr("198.18.1.99:80"),
                },
                EditError::NotFound("service \"web\" has no backend 198.18.1.99:80".into()),
            ),
            (
                Edit::AddService(web.clone()),
                EditError::Exists(Violation::new(
                    "name",
                    "a service named \"web\" exists; PATCH it instead",
                )),
            ),
            (
                Edit::AddBackend {
                    service: "web".into(),
                    backend: web.backends[0].clone(),
                },
                EditError::Broken(Violation::new(
                    "service[web].backend[2]",
                    "198.18.1.10:80 is also backend[0]",
                )),
            ),
            (
                Edit::AddBackend {
                    service: "web".into(),
                    backend: Backend {
                        port: 8080,
                        ..web.backends[0].clone()
                    },
                },
                EditError::Broken(Violation::new(
                    "service[web].backend[2].port",
                    "8080 differs from the service port 80; only NAT translates ports",
                )),
            ),
        ];
        for (edit, expected) in cases {
            assert_eq!(apply(&before, [edit.clone()]), Err(expected), "{edit:?}");
        }
        assert_eq!(before, model());
    }

    #[test]
    fn edits_are_checked_together() {
        // Renamed, then a backend added under the new name: one change.
        let before = model();
        let mut renamed = before.services[0].clone();
        renamed.name = "www".into();
        let extra = Backend {
            addr: "198.18.1.12".parse().unwrap(),
            ..renamed.backends[0].clone()
        };
        let after = apply(
            &before,
            [
                Edit::ReplaceService {
                    name: "web".into(),
                    service: renamed,
                },
                Edit::AddBackend {
                    service: "www".into(),
                    backend: extra,
                },
            ],
        )
        .unwrap();
        assert_eq!(after.services[0].name, "www");
        assert_eq!(after.services[0].backends.len(), 3);
    }
}
