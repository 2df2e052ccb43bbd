//! Health probes through the data path (`[service.health] via = "tunnel"`
//! or `"vip"`): each such check gets a socket mark and a source address,
//! and `xlb_health` (a tc egress program on `lo` and the data plane's
//! interfaces) sends the marked probes to VIP:port the way client traffic
//! goes: wrapped in IP-in-IP to the backend, or to the backend's MAC.
//!
//! The backend answers from the VIP, which the director may hold itself:
//! IPv4 drops such packets as martians unless `accept_local` is on for the
//! interface they arrive on, so the agent turns it on for its interfaces.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use crate::{
    dataplane::health::{mark_of, HealthPaths, ProbeVia},
    health::CheckId,
    model::{HealthCheck, HealthVia, Model, ProbeRoute, Service},
    neigh, sysctl,
};

#[derive(Default)]
pub struct ProbePaths {
    /// Loaded with the first check through the data path.
    program: Option<HealthPaths>,
    /// Why the program could not be loaded, once said.
    failed: Option<String>,
    marks: HashMap<CheckId, u32>,
    accept_local: HashSet<String>,
}

impl ProbePaths {
    /// Gives each check through the data path its route (probing VIP:port),
    /// and forgets the marks of checks no longer wanted. A check whose path
    /// cannot be set up probes the backend directly, and says why.
    pub fn route(
        &mut self,
        model: &Model,
        checks: Vec<(CheckId, HealthCheck)>,
    ) -> Vec<(CheckId, HealthCheck)> {
        let services: HashMap<&str, &Service> = model
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut kept = HashSet::new();
        let routed = checks
            .into_iter()
            .map(|(id, mut check)| {
                if check.via == HealthVia::Direct {
                    return (id, check);
                }
                let service = services[id.service.as_str()];
                match self.route_one(model, service, &id, check.via) {
                    Ok(route) => {
                        kept.insert(id.clone());
                        check.address = Some(service.vip);
                        check.route = Some(route);
                    }
                    Err(e) => {
                        log::error!(
                            "service {}: backend {}: cannot probe {} {}: {e}; probing the \
                             backend's own address instead",
                            id.service,
                            id.backend,
                            service.vip,
                            match check.via {
                                HealthVia::Tunnel => "through the IP-in-IP tunnel",
                                _ => "at the backend's MAC",
                            }
                        );
                        check.via = HealthVia::Direct;
                    }
                }
                (id, check)
            })
            .collect();
        let gone: Vec<(CheckId, u32)> = self
            .marks
            .iter()
            .filter(|(id, _)| !kept.contains(*id))
            .map(|(id, mark)| (id.clone(), *mark))
            .collect();
        for (id, mark) in gone {
            self.marks.remove(&id);
            if let Some(program) = &mut self.program {
                if let Err(e) = program.remove(mark) {
                    log::warn!("removing probe path {mark:#x}: {e}");
                }
            }
        }
        routed
    }

    fn route_one(
        &mut self,
        model: &Model,
        service: &Service,
        id: &CheckId,
        via: HealthVia,
    ) -> Result<ProbeRoute, String> {
        let backend = id.backend.ip();
        if backend.is_ipv4() && service.vip.is_ipv6() {
            return Err("IPv6 inside IPv4 is not sent".into());
        }
        let (ifindex, route_source) = neigh::route_source(backend).map_err(|e| e.to_string())?;
        let (source, probe_via) = match via {
            HealthVia::Tunnel => {
                let source: IpAddr = match backend {
                    IpAddr::V4(_) => model.agent.tunnel_source_v4.map(IpAddr::V4),
                    IpAddr::V6(_) => model.agent.tunnel_source_v6.map(IpAddr::V6),
                }
                .ok_or("no tunnel source for its family")?;
                (source, ProbeVia::Tunnel { source })
            }
            _ => {
                let source = route_source
                    .ok_or_else(|| format!("the route to {backend} gives no source address"))?;
                (source, ProbeVia::Mac)
            }
        };
        // The probe's source is of the VIP's family.
        if source.is_ipv4() != service.vip.is_ipv4() {
            return Err(format!("the source {source} is not of the VIP's family"));
        }
        self.program(model)?;
        let mark = match self.marks.get(id) {
            Some(mark) => *mark,
            None => {
                let used: HashSet<u32> = self.marks.values().copied().collect();
                let mark = (0..)
                    .map_while(mark_of)
                    .find(|m| !used.contains(m))
                    .ok_or("every probe mark is taken")?;
                self.marks.insert(id.clone(), mark);
                mark
            }
        };
        self.program
            .as_mut()
            .expect("loaded above")
            .set(mark, backend, ifindex, probe_via)
            .map_err(|e| e.to_string())?;
        Ok(ProbeRoute { mark, source })
    }

    /// The program, loaded and attached to `lo` and the model's interfaces,
    /// with `accept_local` on there.
    fn program(&mut self, model: &Model) -> Result<&mut HealthPaths, String> {
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        if self.program.is_none() {
            match HealthPaths::load() {
                Ok(program) => self.program = Some(program),
                Err(e) => {
                    let e = format!(
                        "loading the tc program {}: {e}",
                        lb_common::maps::PROG_HEALTH
                    );
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        let program = self.program.as_mut().expect("loaded above");
        for iface in std::iter::once("lo").chain(model.agent.interfaces.iter().map(String::as_str))
        {
            program.attach(iface).map_err(|e| {
                format!("attaching {} to {iface}: {e}", lb_common::maps::PROG_HEALTH)
            })?;
            if iface != "lo" && self.accept_local.insert(iface.to_string()) {
                let key = sysctl::conf_key("ipv4", iface, "accept_local");
                match sysctl::set(&key, "1") {
                    Ok(before) if before != "1" => log::info!(
                        "set {key}=1 (was {before}): health probes through the data path are \
                         answered from VIPs this director may hold"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("{e}: IPv4 probes answered from a local VIP may be dropped")
                    }
                }
            }
        }
        Ok(program)
    }
}
