//! The agent's state: the running configuration, what the health checks
//! found, the backends' next hops, and the data plane made to match them.
//! Every change goes through [`Agent::install`]: validated as a whole
//! first, so a rejected change leaves everything as it was.

mod desired;
pub(crate) mod flood;
mod handle;
mod probes;
#[cfg(test)]
mod restart_keys;
mod snapshot;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use lb_common::maps::{Mode, ServiceKey};
use tokio::sync::watch;

use crate::{
    config::{Config, ConfigError, RuntimeState},
    dataplane::{
        services, Dataplane, DataplaneError, DirectorSettings, NextHop, Reader, ServiceSpec, Walk,
    },
    health::{CheckId, Monitor, Transition},
    model::{
        edit::{self, Edit, EditError},
        AdminState, Backend, Model, OperState, Service,
    },
    nat_routes, neigh, sysctl, systemd,
    vrrp::{self, Tracking, Vrrp},
};

use desired::{Desired, Health, NextHops};
pub use handle::{spawn, AgentHandle};
pub use snapshot::Snapshot;

/// The last walk of the flow table: what it found, when it ended (`None`
/// before the first) and how long it took.
#[derive(Clone, Debug, Default)]
pub struct FlowCount {
    pub walk: Walk,
    pub at: Option<SystemTime>,
    pub took: Duration,
}

/// The reloads since the agent started, by outcome.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
    /// When the last successful one ended.
    pub last_success: Option<SystemTime>,
}

/// How long a next-hop resolution may take before the backend is left out.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the agent refused a change or a lookup, or could not carry it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub kind: ErrorKind,
    pub message: String,
    /// The configuration field at fault, if one is.
    pub field: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such service or backend.
    NotFound,
    /// The change is not valid; nothing changed.
    Invalid,
    /// An addition of what exists; nothing changed.
    Exists,
    /// A valid change the system could not make.
    Failed,
}

impl AgentError {
    pub fn not_found(message: impl Into<String>) -> Self {
        AgentError {
            kind: ErrorKind::NotFound,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(message: impl Into<String>, field: Option<String>) -> Self {
        AgentError {
            kind: ErrorKind::Invalid,
            message: message.into(),
            field,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        AgentError {
            kind: ErrorKind::Failed,
            message: message.into(),
            field: None,
        }
    }
}

impl From<ConfigError> for AgentError {
    fn from(e: ConfigError) -> Self {
        AgentError::invalid(e.message, Some(e.field))
    }
}

impl From<EditError> for AgentError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::NotFound(message) => AgentError::not_found(message),
            EditError::Exists(v) => AgentError {
                kind: ErrorKind::Exists,
                message: v.message,
                field: Some(v.path),
            },
            EditError::Broken(v) => AgentError::invalid(v.message, Some(v.path)),
        }
    }
}

impl From<DataplaneError> for AgentError {
    fn from(e: DataplaneError) -> Self {
        AgentError::failed(format!("the data plane refused the change: {e}"))
    }
}

/// The configuration file the agent runs from, and the state file that
/// keeps the changes made through the API over it.
#[derive(Clone, Debug)]
pub struct Files {
    pub config: PathBuf,
    pub state: PathBuf,
    /// The file's model as last read: the running model less the state.
    pub file: Arc<Model>,
}

pub struct Agent {
    /// Shared with the snapshots: replaced, not changed.
    model: Arc<Model>,
    dataplane: Dataplane,
    monitor: Monitor,
    /// Resolved next hops, or why resolution failed, by backend address.
    next_hops: NextHops,
    /// States to start checks in instead of their configured `initial`:
    /// after adopting a data plane, what it was serving.
    initial_states: HashMap<CheckId, OperState>,
    files: Files,
    started: Instant,
    health_transitions: u64,
    /// Writes of the data plane: configuration changes, health and next-hop
    /// changes.
    applies: u64,
    reloads: Reloads,
    /// Each backend slot's active and inactive flows, from the last walk of
    /// the flow table.
    flow_count: watch::Receiver<FlowCount>,
    /// Whether the flood guard forwards new flows without state.
    flood: watch::Receiver<flood::FloodState>,
    /// The interfaces ICMP redirects were turned off on, for NAT.
    redirects_off: Vec<String>,
    /// Health probes through the data path.
    probe_paths: probes::ProbePaths,
    /// What VRRP instances may track, published as it changes.
    tracking: watch::Sender<Tracking>,
    /// The running VRRP instances, once started, for reloads to change.
    vrrp: Option<Arc<Vrrp>>,
    /// Handles of its own on what the data plane counts.
    reader: Arc<Reader>,
    /// What readers see, published after every change.
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// The last status line systemd was given.
    status: String,
}

impl Agent {
    pub fn new(
        model: Model,
        dataplane: Dataplane,
        monitor: Monitor,
        files: Files,
        flow_count: watch::Receiver<FlowCount>,
        flood: watch::Receiver<flood::FloodState>,
    ) -> Result<Self, DataplaneError> {
        let reader = Arc::new(dataplane.reader()?);
        let started = Instant::now();
        let model = Arc::new(model);
        let first = Snapshot {
            model: model.clone(),
            files: files.clone(),
            next_hops: NextHops::new(),
            checks: HashMap::new(),
            initial_states: HashMap::new(),
            layout: dataplane.layout(),
            reader: reader.clone(),
            flow_count: flow_count.clone(),
            flood: flood.clone(),
            started,
            health_transitions: 0,
            applies: 0,
            reloads: Reloads::default(),
        };
        Ok(Agent {
            model,
            dataplane,
            monitor,
            next_hops: HashMap::new(),
            initial_states: HashMap::new(),
            files,
            started,
            health_transitions: 0,
            applies: 0,
            reloads: Reloads::default(),
            flow_count,
            flood,
            redirects_off: Vec::new(),
            probe_paths: probes::ProbePaths::default(),
            tracking: watch::Sender::new(Tracking::default()),
            vrrp: None,
            reader,
            snapshot: watch::Sender::new(Arc::new(first)),
            status: String::new(),
        })
    }

    /// What readers see, as of the last change.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// Publishes what readers and VRRP instances see after a change, and
    /// the status line `systemctl status` shows.
    pub fn publish(&mut self) {
        self.snapshot.send_replace(Arc::new(self.take_snapshot()));
        self.publish_tracking();
        let status = self.status_line();
        if status != self.status {
            systemd::status(&status);
            self.status = status;
        }
    }

    /// "serving 2 services; 5 of 6 backends up".
    fn status_line(&self) -> String {
        let backends = self
            .model
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(move |b| (s, b)));
        let (up, all) = backends.fold((0, 0), |(up, all), (s, b)| {
            let is_up = self.oper_state(s, b) == OperState::Up;
            (up + usize::from(is_up), all + 1)
        });
        format!(
            "serving {} services; {up} of {all} backends up",
            self.model.services.len()
        )
    }

    fn take_snapshot(&self) -> Snapshot {
        Snapshot {
            model: self.model.clone(),
            files: self.files.clone(),
            next_hops: self.next_hops.clone(),
            checks: self.monitor.handles(),
            initial_states: self.initial_states.clone(),
            layout: self.dataplane.layout(),
            reader: self.reader.clone(),
            flow_count: self.flow_count.clone(),
            flood: self.flood.clone(),
            started: self.started,
            health_transitions: self.health_transitions,
            applies: self.applies,
            reloads: self.reloads,
        }
    }

    /// What VRRP instances may track, current from the last change of the
    /// data plane, the health checks or the next hops.
    pub fn tracking_updates(&self) -> watch::Receiver<Tracking> {
        self.tracking.subscribe()
    }

    /// Publishes what VRRP instances may track, if it changed.
    fn publish_tracking(&self) {
        let now = self.tracking();
        self.tracking.send_if_modified(|seen| {
            let changed = *seen != now;
            *seen = now;
            changed
        });
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The VRRP instances started for the running model, which reloads change.
    pub fn set_vrrp(&mut self, vrrp: Arc<Vrrp>) {
        self.vrrp = Some(vrrp);
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    /// Starts each check of a backend the adopted data plane serves as up,
    /// and of any other as down, so that a restart moves no flow.
    pub fn start_from_adopted(&mut self) {
        for service in &self.model.services {
            if service.health.is_none() {
                continue;
            }
            let installed = self.dataplane.installed_backends(&service_key_of(service));
            for backend in &service.backends {
                let state = if installed.contains(&(backend.addr, backend.port)) {
                    OperState::Up
                } else {
                    OperState::Down
                };
                self.initial_states
                    .insert(check_id(service, backend), state);
            }
        }
    }

    /// Makes `model` the running configuration: next hops of new backends
    /// resolved, the data plane written, the health checks reconciled. On
    /// error the configuration and the data plane are as they were.
    pub async fn install(&mut self, model: Model) -> Result<(), AgentError> {
        self.nat_redirects_off(&model)?;
        self.resolve(&model, Resolve::New).await;
        let specs = self.specs(&model);
        self.dataplane
            .apply(&specs, &DirectorSettings::of(&model.agent, &model.tables))?;
        self.applies += 1;
        let checks = self.checks(&model);
        let checks = self.probe_paths.route(&model, checks);
        self.monitor.reconcile(checks);
        self.initial_states.clear();
        self.model = Arc::new(model);
        Ok(())
    }

    /// With a NAT service, turns ICMP redirects off on `model`'s interfaces
    /// (once for each set of them). The kernel forwards the replies the data
    /// plane passes to it, back out of the interface they came in by; a
    /// redirect would then tell the backend to bypass this director.
    fn nat_redirects_off(&mut self, model: &Model) -> Result<(), AgentError> {
        let interfaces = &model.agent.interfaces;
        if !model.services.iter().any(|s| s.mode == Mode::Nat) || self.redirects_off == *interfaces
        {
            return Ok(());
        }
        let keys = redirect_keys(interfaces);
        let mut previous = Vec::with_capacity(keys.len());
        for (name, key) in &keys {
            let before = sysctl::set(key, "0").map_err(|e| {
                let all: Vec<String> = keys.iter().map(|(_, key)| format!("{key}=0")).collect();
                AgentError::failed(
                    format!(
                        "NAT needs ICMP redirects off, and they could not be turned off: {e};                          run `sysctl -w {}` and try again",
                        all.join(" ")
                    ),
                )
            })?;
            previous.push((name.as_str(), before));
        }
        log::info!("{}", redirects_message(&previous));
        self.redirects_off = interfaces.clone();
        Ok(())
    }

    /// Applies the running configuration again, after health or next hops
    /// changed.
    pub async fn refresh(&mut self) -> Result<(), AgentError> {
        let model = Model::clone(&self.model);
        self.install(model).await
    }

    /// Health checks changed state.
    pub async fn on_transitions(&mut self, transitions: &[Transition]) {
        self.health_transitions += transitions.len() as u64;
        if let Err(e) = self.refresh().await {
            for t in transitions {
                log::error!(
                    "service {}: applying {} going {:?}: {e}",
                    t.id.service,
                    t.id.backend,
                    t.state
                );
            }
        }
    }

    /// Resolves the next hops of `model`'s backends that `which` says.
    /// Applies nothing; true if a next hop changed.
    async fn resolve(&mut self, model: &Model, which: Resolve) -> bool {
        let todo = self.unresolved(model, which);
        if todo.is_empty() {
            return false;
        }
        let results = resolve_next_hops(&todo).await;
        self.record_next_hops(model, results)
    }

    /// The addresses among `model`'s backends and fallbacks whose next hops
    /// `which` says to resolve; forgets those of addresses it no longer has.
    fn unresolved(&mut self, model: &Model, which: Resolve) -> Vec<IpAddr> {
        let wanted = next_hop_addresses(model);
        self.next_hops.retain(|addr, _| wanted.contains(addr));
        wanted
            .into_iter()
            .filter(|a| match (which, self.next_hops.get(a)) {
                (Resolve::All, _) | (_, None) => true,
                (Resolve::Failed, Some(known)) => known.is_err(),
                (Resolve::New, Some(_)) => false,
            })
            .collect()
    }

    /// Keeps what resolution found for the addresses `model` still has,
    /// logging what changed; true if a next hop changed.
    fn record_next_hops(&mut self, model: &Model, results: NextHopResults) -> bool {
        let wanted = next_hop_addresses(model);
        let mut changed = false;
        for (addr, result) in results.into_iter().filter(|(a, _)| wanted.contains(a)) {
            match (&result, self.next_hops.get(&addr)) {
                (Err(e), Some(Ok(_)) | None) => log::warn!("backend {addr}: {e}"),
                (Ok(hop), Some(Err(_)) | None) => {
                    log::info!(
                        "backend {addr}: next hop {} on ifindex {}",
                        mac(&hop.mac),
                        hop.ifindex
                    )
                }
                _ => {}
            }
            changed |= self.next_hops.get(&addr) != Some(&result);
            self.next_hops.insert(addr, result);
        }
        changed
    }

    /// The next hops to resolve again: those `which` says, of the running
    /// configuration. Resolve them with [`resolve_next_hops`], which needs
    /// no agent, and hand the results to [`Agent::next_hops_resolved`].
    pub fn next_hops_to_resolve(&mut self, which: Resolve) -> Vec<IpAddr> {
        let model = self.model.clone();
        self.unresolved(&model, which)
    }

    /// Takes what [`resolve_next_hops`] found, and re-applies if a next hop
    /// changed (a backend's MAC moved, or one that failed now resolves).
    pub async fn next_hops_resolved(&mut self, results: NextHopResults) {
        let model = self.model.clone();
        if self.record_next_hops(&model, results) {
            if let Err(e) = self.refresh().await {
                log::error!("applying changed next hops: {e}");
            }
        }
    }

    fn checks(&self, model: &Model) -> Vec<(CheckId, crate::model::HealthCheck)> {
        let mut checks = Vec::new();
        for service in &model.services {
            let Some(check) = &service.health else {
                continue;
            };
            for backend in service
                .backends
                .iter()
                .filter(|b| b.admin_state != AdminState::Maint)
            {
                let id = check_id(service, backend);
                let mut check = check.for_backend(backend);
                // A check that restarts (its settings changed) goes on from
                // where it was; one new to an adopted data plane starts from
                // what that served.
                if let Some(state) = self
                    .monitor
                    .state(&id)
                    .or(self.initial_states.get(&id).copied())
                {
                    check.initial = state;
                }
                checks.push((id, check));
            }
        }
        checks
    }

    /// What the health checks say of `backend` (up when it has none).
    pub fn oper_state(&self, service: &Service, backend: &Backend) -> OperState {
        let Some(check) = &service.health else {
            return OperState::Up;
        };
        let id = check_id(service, backend);
        self.monitor
            .state(&id)
            .or_else(|| self.initial_states.get(&id).copied())
            .unwrap_or(check.initial)
    }

    /// The running inputs of the data plane and of VRRP tracking.
    fn desired(&self) -> Desired<'_, Self> {
        Desired {
            health: self,
            next_hops: &self.next_hops,
        }
    }

    fn specs(&self, model: &Model) -> Vec<ServiceSpec> {
        self.desired().specs(model)
    }

    /// Makes the edits `change` decides on from the running model, if the
    /// result keeps the model's rules. `change` may refuse with an error of
    /// its caller's own.
    pub async fn edit<T, E: From<AgentError>>(
        &mut self,
        change: impl FnOnce(&Model) -> Result<(Vec<Edit>, T), E>,
    ) -> Result<T, E> {
        let (edits, outcome) = change(&self.model)?;
        let model = edit::apply(&self.model, edits).map_err(AgentError::from)?;
        nat_routes::check(&model, Some(&self.model)).map_err(AgentError::from)?;
        let before = Model::clone(&self.model);
        self.install(model).await?;
        if let Err(e) = self.save_state() {
            // What runs is what is kept.
            if let Err(undo) = self.install(before).await {
                log::error!("undoing a change that could not be kept: {undo}");
            }
            return Err(AgentError::failed(format!(
                "the change could not be kept in {}: {e}; nothing changed",
                self.files.state.display()
            ))
            .into());
        }
        Ok(outcome)
    }

    /// The changes made through the API: the running services less the file's.
    pub fn runtime_state(&self) -> RuntimeState {
        RuntimeState::between(&self.files.file, &self.model)
    }

    /// Writes [`Agent::runtime_state`] to the state file (removed when empty).
    fn save_state(&self) -> std::io::Result<()> {
        self.runtime_state().save(&self.files.state)
    }

    /// Drops the changes made through the API: the file, as last read,
    /// runs again. Returns what was dropped.
    pub async fn clear_state(&mut self) -> Result<RuntimeState, AgentError> {
        let dropped = self.runtime_state();
        let file = Model::clone(&self.files.file);
        nat_routes::check(&file, Some(&self.model)).map_err(AgentError::from)?;
        self.install(file).await?;
        self.save_state().map_err(|e| {
            AgentError::failed(format!(
                "the file's configuration runs again, but {} could not be removed: {e}",
                self.files.state.display()
            ))
        })?;
        log::info!(
            "dropped the changes made through the API ({})",
            self.files.state.display()
        );
        Ok(dropped)
    }

    /// Reads the configuration file again and applies what changed,
    /// telling systemd when it begins and ends.
    pub async fn reload(&mut self) -> Result<String, AgentError> {
        systemd::reloading();
        let reloaded = self.reload_file().await;
        match reloaded {
            Ok(_) => {
                self.reloads.succeeded += 1;
                self.reloads.last_success = Some(SystemTime::now());
            }
            Err(_) => self.reloads.failed += 1,
        }
        let services = self.model.services.len();
        systemd::ready(&match &reloaded {
            Ok(_) => format!("serving {services} services; reloaded"),
            Err(e) => format!("serving {services} services; the last reload was refused: {e}"),
        });
        reloaded
    }

    async fn reload_file(&mut self) -> Result<String, AgentError> {
        let path = self.files.config.clone();
        let state = self.runtime_state();
        let (file, applied) = Config::load(&path)
            .and_then(|file| state.apply(&file).map(|applied| (file, applied)))
            .and_then(|(file, applied)| {
                nat_routes::check(&applied.model, Some(&self.model))?;
                Ok((file, applied))
            })
            .map_err(|e| {
                AgentError::invalid(
                    format!("{}; nothing was reloaded", e.message),
                    Some(e.field),
                )
            })?;
        let model = applied.model;
        let vrrp_changes = restart_only(&self.model, &model)?;
        if !vrrp_changes.is_empty() && self.vrrp.is_none() {
            return Err(AgentError::failed(
                "VRRP is still starting; reload again in a moment (nothing was reloaded)",
            ));
        }
        let before = self.model.clone();
        self.install(model.clone()).await?;
        self.attach_interfaces(&model).map_err(|e| AgentError {
            message: format!(
                "the services were reloaded, but not the interfaces: {}",
                e.message
            ),
            ..e
        })?;
        if let (Some(vrrp), false) = (&self.vrrp, vrrp_changes.is_empty()) {
            vrrp.reconfigure(model.vrrp.clone()).await.map_err(|e| {
                AgentError::failed(format!("the services were reloaded, but not VRRP: {e}"))
            })?;
        }
        self.files.file = Arc::new(file);
        for note in &applied.notes {
            log::warn!("reload: a change made through the API no longer applies: {note}");
        }
        if let Err(e) = self.save_state() {
            log::warn!(
                "reload: writing the changes made through the API to {}: {e}",
                self.files.state.display()
            );
        }
        let mut summary = summarize(&before, &self.model);
        if !vrrp_changes.is_empty() {
            summary.push_str(&format!("; vrrp {}", vrrp_changes.join("; ")));
        }
        if !applied.notes.is_empty() {
            summary.push_str(&format!(
                "; changes made through the API that no longer apply, dropped: {}",
                applied.notes.join("; ")
            ));
        }
        log::info!("reloaded {}: {summary}", path.display());
        Ok(summary)
    }

    /// Attaches to the interfaces `model` lists and detaches from the rest.
    pub fn attach_interfaces(&mut self, model: &Model) -> Result<(), AgentError> {
        let wanted = &model.agent.interfaces;
        let attached: Vec<String> = self
            .dataplane
            .attachments()
            .map(|a| a.iface.clone())
            .collect();
        for iface in wanted.iter().filter(|i| !attached.contains(i)) {
            self.dataplane.attach(iface, model.agent.xdp_mode)?;
            log::info!("attached to {iface} ({} mode)", model.agent.xdp_mode);
        }
        for iface in attached.iter().filter(|i| !wanted.contains(i)) {
            self.dataplane.detach_from(iface)?;
            log::info!("detached from {iface}");
        }
        Ok(())
    }

    /// What VRRP instances may track: the data plane attached and its maps
    /// answering, and the services with a backend that takes new flows.
    fn tracking(&self) -> Tracking {
        let dataplane_ok =
            self.dataplane.attachments().next().is_some() && self.dataplane.maps_answer();
        let services_up = self.desired().services_up(&self.model);
        Tracking {
            dataplane_ok,
            services_up,
        }
    }

    pub fn stop_checks(&mut self) {
        self.monitor.stop_all();
    }
}

impl Health for Agent {
    fn state(&self, service: &Service, backend: &Backend) -> OperState {
        self.oper_state(service, backend)
    }
}

/// What resolving next hops found, by address: the next hop, or why not.
pub type NextHopResults = Vec<(IpAddr, Result<NextHop, String>)>;

/// Resolves the next hops of `addrs`, together taking at most
/// [`RESOLVE_TIMEOUT`].
pub async fn resolve_next_hops(addrs: &[IpAddr]) -> NextHopResults {
    neigh::resolve_all(addrs, RESOLVE_TIMEOUT)
        .await
        .into_iter()
        .map(|(addr, result)| (addr, result.map(|r| r.next_hop).map_err(|e| e.to_string())))
        .collect()
}

/// Every address of `model`'s backends and fallbacks.
fn next_hop_addresses(model: &Model) -> HashSet<IpAddr> {
    model
        .services
        .iter()
        .flat_map(|s| {
            s.backends
                .iter()
                .map(|b| b.addr)
                .chain(s.fallback.map(|f| f.ip()))
        })
        .collect()
}

/// Which next hops to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// Those of backends not seen before.
    New,
    /// Those, and those that failed.
    Failed,
    /// All of them.
    All,
}

/// The data plane's key of `service`.
pub fn service_key_of(service: &Service) -> ServiceKey {
    services::service_key_of(service.vip, service.port, service.protocol)
}

pub fn check_id(service: &Service, backend: &Backend) -> CheckId {
    CheckId {
        service: service.name.clone(),
        backend: SocketAddr::new(backend.addr, backend.port),
    }
}

/// Refuses a reload that changes what only a restart can, naming each such
/// change; else, the VRRP instances' changes a reload applies.
fn restart_only(running: &Model, next: &Model) -> Result<Vec<String>, AgentError> {
    let (a, b) = (&running.agent, &next.agent);
    let vrrp = vrrp::reload_plan(
        &running.vrrp,
        &running.sync_groups,
        &next.vrrp,
        &next.sync_groups,
    );
    let fixed = [
        ("tables", running.tables != next.tables),
        ("agent.api_listen", a.api_listen != b.api_listen),
        ("agent.api_token_file", a.api_token_file != b.api_token_file),
        ("agent.pin_path", a.pin_path != b.pin_path),
        ("agent.state_file", a.state_file != b.state_file),
        ("agent.xdp_mode", a.xdp_mode != b.xdp_mode),
    ];
    let mut restart: Vec<String> = fixed
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(field, _)| field.to_string())
        .collect();
    let live = vrrp.unwrap_or_else(|fields| {
        restart.extend(fields);
        Vec::new()
    });
    match restart.as_slice() {
        [] => Ok(live),
        [field] => Err(AgentError::invalid(
            format!("{field} changed: it takes effect only on restart; nothing was reloaded"),
            Some(field.clone()),
        )),
        [first, ..] => Err(AgentError::invalid(
            format!(
                "{} changed: they take effect only on restart; nothing was reloaded",
                restart.join(", ")
            ),
            Some(first.clone()),
        )),
    }
}

/// What a reload changed, for the log and the API.
fn summarize(before: &Model, after: &Model) -> String {
    let names = |m: &Model| -> HashMap<String, Service> {
        m.services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect()
    };
    let (old, new) = (names(before), names(after));
    let added = new.keys().filter(|n| !old.contains_key(*n)).count();
    let removed = old.keys().filter(|n| !new.contains_key(*n)).count();
    let changed = new
        .iter()
        .filter(|(n, s)| old.get(*n).is_some_and(|o| o != *s))
        .count();
    let unchanged = new.len() - added - changed;
    format!("{added} services added, {removed} removed, {changed} changed, {unchanged} unchanged")
}

/// The interfaces (`all` first) and keys of the sysctls that turn ICMP
/// redirects off on `interfaces`: the kernel sends one if `all` or the
/// interface allows it.
fn redirect_keys(interfaces: &[String]) -> Vec<(String, String)> {
    std::iter::once("all")
        .chain(interfaces.iter().map(String::as_str))
        .map(|name| {
            let key = sysctl::conf_key("ipv4", name, "send_redirects");
            (name.to_owned(), key)
        })
        .collect()
}

/// The log line of [`Agent::nat_redirects_off`]: which interfaces, and
/// each one's value before.
fn redirects_message(previous: &[(&str, String)]) -> String {
    let names: Vec<&str> = previous.iter().map(|(name, _)| *name).collect();
    let before: Vec<String> = previous
        .iter()
        .map(|(name, value)| format!("{value} on {name}"))
        .collect();
    format!(
        "NAT: ICMP redirects off on {} (net.ipv4.conf.*.send_redirects = 0; it was {}), so \
         the kernel never tells a backend to bypass this director",
        names.join(", "),
        before.join(", ")
    )
}

pub use crate::net::mac;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_go_off_on_all_and_each_interface() {
        let keys = redirect_keys(&["eth0".into(), "bond0.100".into()]);
        assert_eq!(
            keys,
            [
                ("all".into(), "net.ipv4.conf.all.send_redirects".into()),
                ("eth0".into(), "net.ipv4.conf.eth0.send_redirects".into()),
                (
                    "bond0.100".into(),
                    "net.ipv4.conf.bond0/100.send_redirects".into()
                ),
            ]
        );
        assert_eq!(
            redirects_message(&[("all", "1".into()), ("eth0", "0".into())]),
            "NAT: ICMP redirects off on all, eth0 (net.ipv4.conf.*.send_redirects = 0; it was 1 \
             on all, 0 on eth0), so the kernel never tells a backend to bypass this director"
        );
    }
}
