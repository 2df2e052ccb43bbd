//! What the agent's readers see: the running configuration, the next hops
//! and what the last apply installed, as of the last change, with live
//! handles on what moves between changes (each check's status, the
//! counters, the backends' traffic, the flows). The agent publishes a new
//! one after every change; a reader never waits for the agent.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    check_id,
    desired::{Desired, Health, NextHops},
    flood::FloodState,
    AgentError, Files, FlowCount, Reloads,
};
use crate::{
    dataplane::{DirectorSettings, Layout, NextHop, Reader},
    health::{CheckHandle, CheckId, CheckStatus},
    model::{Backend, Model, OperState, Service},
};

pub struct Snapshot {
    pub(super) model: Arc<Model>,
    pub(super) files: Files,
    pub(super) next_hops: NextHops,
    /// The running checks' statuses, live.
    pub(super) checks: HashMap<CheckId, CheckHandle>,
    /// States checks not yet running start from (see [`super::Agent`]).
    pub(super) initial_states: HashMap<CheckId, OperState>,
    pub(super) layout: Layout,
    pub(super) reader: Arc<Reader>,
    pub(super) flow_count: watch::Receiver<FlowCount>,
    pub(super) flood: watch::Receiver<FloodState>,
    pub(super) started: Instant,
    pub(super) health_transitions: u64,
    pub(super) applies: u64,
    pub(super) reloads: Reloads,
}

impl Snapshot {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The configuration and state files, and the file's model.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The changes made through the API, as the state file keeps them.
    pub fn runtime_state(&self) -> crate::config::RuntimeState {
        crate::config::RuntimeState::between(&self.files.file, &self.model)
    }

    /// Handles on the counters, the traffic and the flows.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// What the last apply installed in the data plane.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The next hop to `addr` as last resolved, or why it is not; `None`
    /// if it was not looked up.
    pub fn next_hop(&self, addr: IpAddr) -> Option<&Result<NextHop, String>> {
        self.next_hops.get(&addr)
    }

    /// What the health checks say of `backend` (up when `service` has none).
    pub fn oper_state(&self, service: &Service, backend: &Backend) -> OperState {
        self.state(service, backend)
    }

    /// The status of `backend`'s check, while one runs.
    pub fn check_status(&self, service: &Service, backend: &Backend) -> Option<CheckStatus> {
        self.checks
            .get(&check_id(service, backend))
            .map(CheckHandle::status)
    }

    /// The fallback takes `service`'s traffic: no backend takes new flows.
    pub fn fallback_active(&self, service: &Service) -> bool {
        service.fallback.is_some_and(|f| {
            self.desired()
                .serving(service)
                .iter()
                .any(|b| (b.addr, b.port) == (f.ip(), f.port()))
        })
    }

    /// The last walk of the flow table.
    pub fn flow_count(&self) -> watch::Ref<'_, FlowCount> {
        self.flow_count.borrow()
    }

    /// Whether the flood guard forwards new flows without state, as last
    /// looked.
    pub fn flood(&self) -> FloodState {
        *self.flood.borrow()
    }

    /// Since the agent started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Backend health changes since the agent started.
    pub fn health_transitions(&self) -> u64 {
        self.health_transitions
    }

    /// Writes of the data plane since the agent started.
    pub fn applies(&self) -> u64 {
        self.applies
    }

    /// Reloads since the agent started, by outcome.
    pub fn reloads(&self) -> Reloads {
        self.reloads
    }

    pub fn service(&self, name: &str) -> Result<&Service, AgentError> {
        self.model
            .services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| AgentError::not_found(format!("no service named {name:?}")))
    }

    pub fn backend<'a>(
        &self,
        service: &'a Service,
        addr: std::net::SocketAddr,
    ) -> Result<&'a Backend, AgentError> {
        service.backend(addr).ok_or_else(|| {
            AgentError::not_found(format!("service {:?} has no backend {addr}", service.name))
        })
    }

    /// The flood guard's cap in force: new flows per second one CPU records.
    pub fn flood_guard(&self) -> u32 {
        DirectorSettings::of(&self.model.agent, &self.model.tables).new_flows_per_cpu
    }

    pub(super) fn desired(&self) -> Desired<'_, Self> {
        Desired {
            health: self,
            next_hops: &self.next_hops,
        }
    }
}

impl Health for Snapshot {
    fn state(&self, service: &Service, backend: &Backend) -> OperState {
        let Some(check) = &service.health else {
            return OperState::Up;
        };
        let id = check_id(service, backend);
        self.checks
            .get(&id)
            .map(CheckHandle::state)
            .or_else(|| self.initial_states.get(&id).copied())
            .unwrap_or(check.initial)
    }
}
