//! What the data plane should hold and what VRRP may track, as pure
//! functions of the running configuration, what the health checks say and
//! the backends' next hops: no kernel, no data plane, no I/O.

use std::{collections::HashMap, net::IpAddr};

use crate::{
    dataplane::{BackendSpec, NextHop, ServiceSpec},
    model::{AdminState, Backend, Model, OperState, Service},
};

/// The backends' next hops by address, or why one did not resolve.
pub type NextHops = HashMap<IpAddr, Result<NextHop, String>>;

/// What the health checks say of a backend (up when its service has none).
pub trait Health {
    fn state(&self, service: &Service, backend: &Backend) -> OperState;
}

/// The inputs the data plane and VRRP tracking follow.
pub struct Desired<'a, H: Health> {
    pub health: &'a H,
    pub next_hops: &'a NextHops,
}

impl<H: Health> Desired<'_, H> {
    fn next_hop(&self, addr: IpAddr) -> Option<NextHop> {
        self.next_hops
            .get(&addr)
            .and_then(|r| r.as_ref().ok())
            .copied()
    }

    /// The backends `service` serves now: neither in maintenance nor down,
    /// with a next hop; and the fallback, when it has a next hop and none
    /// of them takes new flows (drained ones keep their established flows).
    pub fn serving(&self, service: &Service) -> Vec<BackendSpec> {
        let mut backends: Vec<BackendSpec> = service
            .backends
            .iter()
            .filter(|b| b.admin_state != AdminState::Maint)
            .filter(|b| self.health.state(service, b) == OperState::Up)
            .filter_map(|b| Some(BackendSpec::of(b, self.next_hop(b.addr)?)))
            .collect();
        let takes_new_flows = backends.iter().any(|b| !b.drain && b.weight > 0);
        let fallback = service.fallback.filter(|_| !takes_new_flows);
        if let Some((fallback, next_hop)) = fallback.and_then(|f| Some((f, self.next_hop(f.ip())?)))
        {
            backends.push(BackendSpec {
                addr: fallback.ip(),
                port: fallback.port(),
                weight: 1,
                drain: false,
                next_hop,
            });
        }
        backends
    }

    /// Every service of `model` as the data plane should hold it.
    pub fn specs(&self, model: &Model) -> Vec<ServiceSpec> {
        model
            .services
            .iter()
            .map(|s| ServiceSpec::of(s, self.serving(s)))
            .collect()
    }

    /// The services VRRP counts as up: those with a backend that takes new
    /// flows (ready, weighted, up, with a next hop). A fallback does not count.
    pub fn services_up(&self, model: &Model) -> Vec<String> {
        model
            .services
            .iter()
            .filter(|s| {
                s.backends.iter().any(|b| {
                    b.admin_state == AdminState::Ready
                        && b.weight > 0
                        && self.health.state(s, b) == OperState::Up
                        && self.next_hop(b.addr).is_some()
                })
            })
            .map(|s| s.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::SocketAddr};

    use super::*;
    use crate::config::Config;

    /// Backends named by address are down; every other is up.
    struct Down(HashSet<SocketAddr>);

    impl Health for Down {
        fn state(&self, _: &Service, backend: &Backend) -> OperState {
            match self.0.contains(&backend.socket_addr()) {
                true => OperState::Down,
                false => OperState::Up,
            }
        }
    }

    fn model(backends: &str) -> Model {
        let text = format!(
            "[agent]\ninterfaces = [\"eth0\"]\n\
             [[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\n\
             fallback = \"198.18.1.99:80\"\n{backends}"
        );
        Config::parse(&text)
            .and_then(|c| c.validate())
            .expect("a valid configuration")
    }

    fn backend(n: u8, lines: &str) -> String {
        format!("[[service.backend]]\naddress = \"198.18.1.{n}\"\n{lines}\n")
    }

    fn addr(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 1, n])
    }

    fn hop(n: u8) -> NextHop {
        NextHop {
            mac: [2, 0, 0, 0, 0, n],
            ifindex: 2,
            src_mac: [2, 0, 0, 0, 0xee, 1],
        }
    }

    /// Next hops for the addresses `resolved`; the others failed.
    fn hops(resolved: &[u8], failed: &[u8]) -> NextHops {
        let ok = resolved.iter().map(|&n| (addr(n), Ok(hop(n))));
        let err = failed
            .iter()
            .map(|&n| (addr(n), Err("no answer".to_string())));
        ok.chain(err).collect()
    }

    /// The served backends' last address bytes, weights and drain marks.
    fn served(model: &Model, health: &Down, next_hops: &NextHops) -> Vec<(u8, u16, bool)> {
        let desired = Desired { health, next_hops };
        desired
            .serving(&model.services[0])
            .iter()
            .map(|b| match b.addr {
                IpAddr::V4(a) => (a.octets()[3], b.weight, b.drain),
                IpAddr::V6(_) => unreachable!("IPv4 only here"),
            })
            .collect()
    }

    fn up() -> Down {
        Down(HashSet::new())
    }

    fn down(n: u8) -> Down {
        Down([SocketAddr::new(addr(n), 80)].into())
    }

    #[test]
    fn a_backend_serves_unless_in_maintenance_down_or_without_a_next_hop() {
        let model = model(
            &[
                backend(10, ""),
                backend(11, "weight = 3"),
                backend(12, "state = \"maint\""),
                backend(13, ""),
                backend(14, ""),
            ]
            .concat(),
        );
        let next_hops = hops(&[10, 11, 12, 13, 99], &[14]);
        assert_eq!(
            served(&model, &down(13), &next_hops),
            [(10, 1, false), (11, 3, false)]
        );
        // A backend without an entry at all (not resolved yet) is left out too.
        let next_hops = hops(&[11], &[]);
        assert_eq!(served(&model, &up(), &next_hops), [(11, 3, false)]);
    }

    #[test]
    fn drained_backends_serve_their_flows_beside_the_fallback() {
        let model = model(&[backend(10, "state = \"drain\""), backend(11, "weight = 0")].concat());
        let next_hops = hops(&[10, 11, 99], &[]);
        assert_eq!(
            served(&model, &up(), &next_hops),
            [(10, 1, true), (11, 0, false), (99, 1, false)]
        );
    }

    #[test]
    fn the_fallback_serves_only_when_no_backend_takes_new_flows() {
        let model = model(&[backend(10, ""), backend(11, "")].concat());
        let next_hops = hops(&[10, 11, 99], &[]);
        assert_eq!(
            served(&model, &down(11), &next_hops),
            [(10, 1, false)],
            "one backend up: no fallback"
        );
        let both = Down([10, 11].map(|n| SocketAddr::new(addr(n), 80)).into());
        assert_eq!(served(&model, &both, &next_hops), [(99, 1, false)]);
        assert_eq!(
            served(&model, &both, &hops(&[10, 11], &[99])),
            [],
            "a fallback without a next hop is left out too"
        );
    }

    #[test]
    fn a_service_is_up_for_vrrp_with_a_backend_that_takes_new_flows() {
        let desired_up = |model: &Model, health: &Down, next_hops: &NextHops| {
            Desired { health, next_hops }.services_up(model)
        };
        let all = hops(&[10, 11, 99], &[]);
        let ready = model(&backend(10, ""));
        assert_eq!(desired_up(&ready, &up(), &all), ["web"]);
        assert!(desired_up(&ready, &down(10), &all).is_empty(), "down");
        assert!(
            desired_up(&ready, &up(), &hops(&[99], &[10])).is_empty(),
            "no next hop"
        );
        for lines in ["state = \"drain\"", "state = \"maint\"", "weight = 0"] {
            let model = model(&backend(10, lines));
            assert!(
                desired_up(&model, &up(), &all).is_empty(),
                "{lines}: the fallback serving does not make the service up"
            );
        }
    }
}
