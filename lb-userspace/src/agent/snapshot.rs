//! What the agent's readers see: the running configuration, the next hops
//! and what the last apply installed, as of the last change, with live
//! handles on what moves between changes (each check's status, the
//! counters, the backends' traffic, the flows). The agent publishes a new
//! one after every change; a reader never waits for the agent.

use std::{collections::HashMap, sync::Arc, time::Instant};

use tokio::sync::watch;

use super::{
    check_id,
    desired::{Desired, Health, NextHops},
    flood::FloodState,
    AgentError, FlowCount,
};
use crate::{
    dataplane::{DirectorSettings, Layout, Reader},
    health::{CheckHandle, CheckId},
    model::{Backend, Model, OperState, Service},
};

pub struct Snapshot {
    pub(super) model: Arc<Model>,
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
}

impl Snapshot {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Handles on the counters, the traffic and the flows.
    pub fn reader(&self) -> &Reader {
        &self.reader
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
