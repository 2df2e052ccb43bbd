//! The NAT route check. The XDP program translates a NAT backend's reply
//! back to the VIP only if the reply arrives on an interface it is attached
//! to, so every NAT backend and fallback must be reached through one of
//! `agent.interfaces`. Unlike the rest of validation this asks the kernel
//! (`ip route get`), so it holds only on the director itself.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use lb_common::maps::Mode;

use super::ConfigError;
use crate::model::Model;
use crate::neigh::{self, Egress, NeighError};

/// A NAT backend or fallback: its key path and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatTarget {
    pub field: String,
    pub target: SocketAddr,
}

/// What the check found, for `xlb check` to report.
#[derive(Debug, Default)]
pub struct NatRoutes {
    /// How many targets each attached interface reaches.
    pub through: BTreeMap<String, usize>,
    /// Targets without a route now: the agent leaves them out, and tries
    /// again, until they have one.
    pub unrouted: Vec<(NatTarget, NeighError)>,
}

/// Looks the routes of `model`'s NAT targets up and checks them; with
/// `running`, only targets it does not already have (all of them if the
/// interfaces change).
pub fn check_nat_routes(model: &Model, running: Option<&Model>) -> Result<NatRoutes, ConfigError> {
    let targets = nat_targets(model, running);
    let addrs: Vec<IpAddr> = targets.iter().map(|t| t.target.ip()).collect();
    let egress = if addrs.is_empty() {
        HashMap::new()
    } else {
        neigh::egress_all(&addrs)
    };
    check(model, &targets, &egress)
}

/// The NAT backends and fallbacks of `model`, in file order, less those
/// `running` has in the same service with the same interfaces.
pub(super) fn nat_targets(model: &Model, running: Option<&Model>) -> Vec<NatTarget> {
    let known = |name: &str, target: SocketAddr| {
        running.is_some_and(|r| {
            r.agent.interfaces == model.agent.interfaces
                && r.services.iter().any(|s| {
                    s.name == name
                        && s.mode == Mode::Nat
                        && (s.fallback == Some(target) || s.backend(target).is_some())
                })
        })
    };
    let mut targets = Vec::new();
    for service in model.services.iter().filter(|s| s.mode == Mode::Nat) {
        let path = format!("service[{}]", service.name);
        let backends = service
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("{path}.backend[{i}]"), b.socket_addr()));
        let fallback = service.fallback.map(|f| (format!("{path}.fallback"), f));
        targets.extend(
            backends
                .chain(fallback)
                .filter(|(_, target)| !known(&service.name, *target))
                .map(|(field, target)| NatTarget { field, target }),
        );
    }
    targets
}

/// Checks each target's egress interface (from `egress`, by address)
/// against the interfaces the program is attached to.
pub(super) fn check(
    model: &Model,
    targets: &[NatTarget],
    egress: &HashMap<IpAddr, Result<Egress, NeighError>>,
) -> Result<NatRoutes, ConfigError> {
    let interfaces = &model.agent.interfaces;
    let mut found = NatRoutes::default();
    for t in targets {
        let addr = t.target.ip();
        let route = egress.get(&addr).cloned().unwrap_or_else(|| {
            Err(NeighError::Thread(format!(
                "no route lookup was made for {addr}"
            )))
        });
        match route {
            Ok(Egress { ifname, .. }) if interfaces.contains(&ifname) => {
                *found.through.entry(ifname).or_default() += 1;
            }
            Ok(Egress { ifname, via }) => {
                let gateway = if via == addr {
                    String::new()
                } else {
                    format!(" via {via}")
                };
                return Err(ConfigError::new(
                    &t.field,
                    format!(
                        "{} is reached through {ifname}{gateway}, which agent.interfaces ({}) \
                         does not include: its replies would not pass through the XDP program \
                         and would never be translated back to the VIP; add \"{ifname}\" to \
                         agent.interfaces, or route {addr} through an attached interface",
                        t.target,
                        interfaces.join(", ")
                    ),
                ));
            }
            Err(NeighError::Local(_)) => {
                return Err(ConfigError::new(
                    &t.field,
                    format!(
                        "{} is an address of this host: a NAT backend must be another host",
                        t.target
                    ),
                ));
            }
            Err(e) => found.unrouted.push((t.clone(), e)),
        }
    }
    Ok(found)
}
