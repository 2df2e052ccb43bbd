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

use crate::{
    config::ConfigError,
    model::Model,
    neigh::{self, Egress, NeighError},
};

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
pub fn check(model: &Model, running: Option<&Model>) -> Result<NatRoutes, ConfigError> {
    let targets = nat_targets(model, running);
    let addrs: Vec<IpAddr> = targets.iter().map(|t| t.target.ip()).collect();
    let egress = if addrs.is_empty() {
        HashMap::new()
    } else {
        neigh::egress_all(&addrs)
    };
    check_against(model, &targets, &egress)
}

/// The NAT backends and fallbacks of `model`, in file order, less those
/// `running` has in the same service with the same interfaces.
fn nat_targets(model: &Model, running: Option<&Model>) -> Vec<NatTarget> {
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
fn check_against(
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

/// The NAT route check, with routing tables made up here.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::tests::{error, valid};

    /// A routing table: (address, egress interface, gateway or "").
    fn table(routes: &[(&str, &str, &str)]) -> HashMap<IpAddr, Result<Egress, NeighError>> {
        routes
            .iter()
            .map(|&(addr, ifname, gateway)| {
                let addr: IpAddr = addr.parse().unwrap();
                let via = if gateway.is_empty() {
                    addr
                } else {
                    gateway.parse().unwrap()
                };
                let egress = Egress {
                    ifname: ifname.into(),
                    via,
                };
                (addr, Ok(egress))
            })
            .collect()
    }

    /// The route check of every NAT target of `model` against `table`.
    fn nat_routes(
        model: &Model,
        table: &HashMap<IpAddr, Result<Egress, NeighError>>,
    ) -> Result<NatRoutes, ConfigError> {
        check_against(model, &nat_targets(model, None), table)
    }

    /// A NAT service with two backends (the second behind a router) and a
    /// fallback, on an agent attached to `interfaces`.
    fn nat_on(interfaces: &str) -> Model {
        valid(&format!(
            "[agent]\ninterfaces = [{interfaces}]\n\
             [[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\n\
             [[service.backend]]\naddress = \"198.18.3.10\"\n\
             [[service]]\nname = \"tomcat\"\nvip = \"198.18.0.101\"\nport = 80\nmode = \"nat\"\n\
             fallback = \"198.18.1.99:8080\"\n\
             [[service.backend]]\naddress = \"198.18.1.20\"\nport = 8080\n\
             [[service.backend]]\naddress = \"198.18.2.21\"\nport = 8080\n"
        ))
    }

    #[test]
    fn nat_targets_are_backends_and_fallbacks_of_nat_services() {
        let model = nat_on("\"eth0\"");
        let targets = nat_targets(&model, None);
        let target = |field: &str, addr: &str| NatTarget {
            field: field.into(),
            target: addr.parse().unwrap(),
        };
        assert_eq!(
            targets,
            [
                target("service[tomcat].backend[0]", "198.18.1.20:8080"),
                target("service[tomcat].backend[1]", "198.18.2.21:8080"),
                target("service[tomcat].fallback", "198.18.1.99:8080"),
            ]
        );
        // A running agent checks only what is new to it, unless the interfaces change.
        assert_eq!(nat_targets(&model, Some(&model)), []);
        let other = nat_on("\"eth0\", \"eth1\"");
        assert_eq!(nat_targets(&model, Some(&other)), targets);
    }

    #[test]
    fn nat_backends_are_reached_through_attached_interfaces() {
        let routes = table(&[
            ("198.18.1.20", "eth1", ""),
            ("198.18.2.21", "eth1", "198.18.1.1"),
            ("198.18.1.99", "eth1", ""),
        ]);
        let found = nat_routes(&nat_on("\"eth0\", \"eth1\""), &routes).unwrap();
        assert_eq!(
            found.through.into_iter().collect::<Vec<_>>(),
            [("eth1".to_string(), 3)]
        );
        assert!(found.unrouted.is_empty());
        assert_eq!(
            nat_routes(&nat_on("\"eth0\""), &routes).unwrap_err(),
            error(
                "service[tomcat].backend[0]",
                "198.18.1.20:8080 is reached through eth1, which agent.interfaces (eth0) does not \
                 include: its replies would not pass through the XDP program and would never be \
                 translated back to the VIP; add \"eth1\" to agent.interfaces, or route 198.18.1.20 \
                 through an attached interface"
            )
        );
        // Through a gateway, and a fallback.
        let routes = table(&[
            ("198.18.1.20", "eth0", ""),
            ("198.18.2.21", "eth2", "198.18.1.1"),
            ("198.18.1.99", "eth2", ""),
        ]);
        let e = nat_routes(&nat_on("\"eth0\", \"eth1\""), &routes).unwrap_err();
        assert_eq!(e.field, "service[tomcat].backend[1]");
        assert!(
            e.message.starts_with(
                "198.18.2.21:8080 is reached through eth2 via 198.18.1.1, which agent.interfaces \
                 (eth0, eth1) does not include"
            ),
            "{e}"
        );
        let routes = table(&[
            ("198.18.1.20", "eth0", ""),
            ("198.18.2.21", "eth0", "198.18.1.1"),
            ("198.18.1.99", "eth2", ""),
        ]);
        let e = nat_routes(&nat_on("\"eth0\""), &routes).unwrap_err();
        assert_eq!(e.field, "service[tomcat].fallback");
    }

    #[test]
    fn a_nat_backend_without_a_route_is_reported_not_refused() {
        let mut routes = table(&[("198.18.1.20", "eth0", ""), ("198.18.1.99", "eth0", "")]);
        let addr: IpAddr = "198.18.2.21".parse().unwrap();
        routes.insert(addr, Err(NeighError::NoRoute(addr)));
        let found = nat_routes(&nat_on("\"eth0\""), &routes).unwrap();
        assert_eq!(found.through["eth0"], 2);
        let (target, why) = &found.unrouted[0];
        assert_eq!(target.field, "service[tomcat].backend[1]");
        assert_eq!(why.to_string(), "no route to 198.18.2.21");
        // An address of this host is refused.
        routes.insert(addr, Err(NeighError::Local(addr)));
        assert_eq!(
            nat_routes(&nat_on("\"eth0\""), &routes).unwrap_err(),
            error(
                "service[tomcat].backend[1]",
                "198.18.2.21:8080 is an address of this host: a NAT backend must be another host"
            )
        );
    }

    #[test]
    fn example_nat_backends_are_behind_an_attached_interface() {
        // The example's networks: the VIPs on eth0, the backends (198.18.1.0/24,
        // where VI_GW is their gateway) on eth1.
        let model = valid(include_str!("../../xlb.example.toml"));
        let routes = table(&[
            ("198.18.1.20", "eth1", ""),
            ("198.18.1.21", "eth1", ""),
            ("198.18.1.99", "eth1", ""),
        ]);
        let found = nat_routes(&model, &routes).unwrap();
        assert_eq!(found.through["eth1"], 3);
    }
}
