//! The runtime state file: what was changed through the API (services
//! added, replaced or removed; backends added or removed; a backend's
//! weight or admin state), kept beside the configuration and applied over
//! it at every start and reload, so that a drain or a weight outlives both
//! (HAProxy's `server-state-file`).
//!
//! It holds the difference between the file's model and the running one,
//! in the file's own spelling ([`RuntimeState::between`]); applying it to a
//! model of the file ([`RuntimeState::apply`]) gives the running model back.
//! What no longer applies to the file (a backend or service the file has
//! dropped) is left out with a note, and dropped from the state when it is
//! next written.

use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{key_path, BackendConfig, Config, ConfigError, ServiceConfig};
use crate::model::{rules, Backend, Model, Service};

/// The state file's first lines.
const HEADER: &str = "# Changes made through xlb's API, applied over the configuration file at \
                      every start and reload.\n# Written by the agent: see them with `xlb state`, \
                      drop them with `xlb state clear`.\n";

/// The changes, in the file's spelling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeState {
    /// Services the file does not have as they run: added, or replaced
    /// whole (`PUT`), with their backends.
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    /// Services of the file removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_services: Vec<String>,
    /// Backend changes of services otherwise as the file has them.
    #[serde(default, rename = "backends", skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendChanges>,
}

/// What changed among one service's backends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendChanges {
    pub service: String,
    /// Backends added, or of the file with another check target, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<BackendConfig>,
    /// Backends of the file with the fields that differ (`weight`,
    /// `state`) set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<BackendConfig>,
    /// Backends of the file removed, as `ADDRESS:PORT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl BackendChanges {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The running model with the state applied, and what of the state no
/// longer applied to the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub model: Model,
    pub notes: Vec<String>,
}

/// Where the state of the agent run with `config` is kept: `state_file`
/// of `[agent]`, or the file's path with the extension `state`.
pub fn state_path(config: &Path, model: &Model) -> PathBuf {
    model
        .agent
        .state_file
        .clone()
        .unwrap_or_else(|| config.with_extension("state"))
}

impl RuntimeState {
    pub fn is_empty(&self) -> bool {
        *self == RuntimeState::default()
    }

    /// How many changes: services added or replaced, services removed, and
    /// backends added, changed or removed.
    pub fn len(&self) -> usize {
        let backends: usize = self
            .backends
            .iter()
            .map(|b| b.added.len() + b.changed.len() + b.removed.len())
            .sum();
        self.services.len() + self.removed_services.len() + backends
    }

    /// What turns `file` into `running` (which differ only in services).
    pub fn between(file: &Model, running: &Model) -> RuntimeState {
        let mut state = RuntimeState::default();
        for service in &running.services {
            match file.services.iter().find(|s| s.name == service.name) {
                None => state.services.push(ServiceConfig::from_model(service)),
                Some(base) if !same_but_backends(base, service) => {
                    state.services.push(ServiceConfig::from_model(service))
                }
                Some(base) => {
                    let changes = backend_changes(base, service);
                    if !changes.is_empty() {
                        state.backends.push(changes);
                    }
                }
            }
        }
        state.removed_services = file
            .services
            .iter()
            .filter(|s| !running.services.iter().any(|r| r.name == s.name))
            .map(|s| s.name.clone())
            .collect();
        state
    }

    /// `file` with the changes made, checked against every rule. Changes
    /// of services or backends `file` does not have are left out, each
    /// with a note.
    pub fn apply(&self, file: &Model) -> Result<Applied, ConfigError> {
        let mut model = file.clone();
        let mut notes = Vec::new();
        for name in &self.removed_services {
            if model.services.iter().any(|s| &s.name == name) {
                model.services.retain(|s| &s.name != name);
            } else {
                notes.push(format!(
                    "removed_services: the file has no service {name:?} any more"
                ));
            }
        }
        for (index, raw) in self.services.iter().enumerate() {
            let service = raw.to_model(index).map_err(in_state)?;
            match model.services.iter_mut().find(|s| s.name == service.name) {
                Some(existing) => *existing = service,
                None => model.services.push(service),
            }
        }
        for changes in &self.backends {
            let at = format!("backends[{}]", changes.service);
            let Some(service) = model
                .services
                .iter_mut()
                .find(|s| s.name == changes.service)
            else {
                notes.push(format!(
                    "{at}: the file has no service {:?} any more",
                    changes.service
                ));
                continue;
            };
            for removed in &changes.removed {
                let addr: SocketAddr = removed.parse().map_err(|_| {
                    ConfigError::new(
                        format!("state: {at}.removed"),
                        format!("{removed:?} is not an ADDRESS:PORT"),
                    )
                })?;
                if service.backend(addr).is_some() {
                    service.backends.retain(|b| b.socket_addr() != addr);
                } else {
                    notes.push(format!("{at}: the file has no backend {addr} any more"));
                }
            }
            for (index, raw) in changes.added.iter().enumerate() {
                let backend = raw
                    .to_model(&format!("{at}.added[{index}]"), service)
                    .map_err(in_state)?;
                let addr = backend.socket_addr();
                match service
                    .backends
                    .iter_mut()
                    .find(|b| b.socket_addr() == addr)
                {
                    Some(existing) => *existing = backend,
                    None => service.backends.push(backend),
                }
            }
            for (index, raw) in changes.changed.iter().enumerate() {
                let given = raw
                    .to_model(&format!("{at}.changed[{index}]"), service)
                    .map_err(in_state)?;
                let addr = given.socket_addr();
                let Some(backend) = service
                    .backends
                    .iter_mut()
                    .find(|b| b.socket_addr() == addr)
                else {
                    notes.push(format!("{at}: the file has no backend {addr} any more"));
                    continue;
                };
                if raw.weight.is_some() {
                    backend.weight = given.weight;
                }
                if raw.state.is_some() {
                    backend.admin_state = given.admin_state;
                }
            }
        }
        rules::check(&model).map_err(|v| in_state(v.into()))?;
        Ok(Applied { model, notes })
    }

    /// Reads the state at `path`; no file is no change.
    pub fn load(path: &Path) -> Result<RuntimeState, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RuntimeState::default()),
            Err(e) => {
                return Err(ConfigError::new(
                    "state",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        toml::from_str(&text).map_err(|e| {
            let e = key_path::error(&text, &e);
            ConfigError::new(format!("state {}: {}", path.display(), e.field), e.message)
        })
    }

    /// Writes the state to `path` (through a file beside it, renamed over
    /// it), or removes the file when there is no change to keep.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if self.is_empty() {
            return match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let text = toml::to_string_pretty(self).expect("a state has only strings and tables");
        let mut partial = path.as_os_str().to_owned();
        partial.push(".new");
        fs::write(&partial, format!("{HEADER}\n{text}"))?;
        fs::rename(&partial, path)
    }
}

/// The file at `config` with the state beside it applied: the model the
/// agent runs from.
pub fn load_effective(config: &Path) -> Result<(Model, Applied), ConfigError> {
    let file = Config::load(config)?;
    let path = state_path(config, &file);
    let applied = RuntimeState::load(&path)?
        .apply(&file)
        .map_err(|e| ConfigError {
            message: format!(
                "{}; the state in {} does not apply to the file: fix the file, or drop the \
             changes with `rm {}`",
                e.message,
                path.display(),
                path.display()
            ),
            ..e
        })?;
    Ok((file, applied))
}

/// `running` and `file` differ at most in their backends.
fn same_but_backends(file: &Service, running: &Service) -> bool {
    Service {
        backends: Vec::new(),
        ..file.clone()
    } == Service {
        backends: Vec::new(),
        ..running.clone()
    }
}

/// The backends of `running` added or changed since `file`, and those of
/// `file` removed.
fn backend_changes(file: &Service, running: &Service) -> BackendChanges {
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for backend in &running.backends {
        match file.backend(backend.socket_addr()) {
            None => added.push(BackendConfig::from_model(backend)),
            Some(before) if before != backend => {
                let same_but_weight_and_state = Backend {
                    weight: before.weight,
                    admin_state: before.admin_state,
                    ..backend.clone()
                } == *before;
                if same_but_weight_and_state {
                    changed.push(changed_fields(before, backend));
                } else {
                    // Its check target changed too: kept whole.
                    added.push(BackendConfig::from_model(backend));
                }
            }
            Some(_) => {}
        }
    }
    let removed = file
        .backends
        .iter()
        .filter(|b| running.backend(b.socket_addr()).is_none())
        .map(|b| b.socket_addr().to_string())
        .collect();
    BackendChanges {
        service: running.name.clone(),
        added,
        changed,
        removed,
    }
}

/// `after` as a change of `before`: its address and port, and each field
/// that differs, even where `after` has the default.
fn changed_fields(before: &Backend, after: &Backend) -> BackendConfig {
    BackendConfig {
        weight: (before.weight != after.weight).then_some(after.weight.into()),
        state: (before.admin_state != after.admin_state)
            .then(|| after.admin_state.name().to_owned()),
        health: None,
        ..BackendConfig::from_model(&Backend {
            weight: before.weight,
            admin_state: before.admin_state,
            ..after.clone()
        })
    }
}

/// An error found in the state rather than the file.
fn in_state(e: ConfigError) -> ConfigError {
    ConfigError::new(format!("state: {}", e.field), e.message)
}

#[cfg(test)]
mod tests;
