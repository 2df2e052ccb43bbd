//! The xlb agent: loads the XDP data plane, keeps its maps current and
//! serves the operator's tools.
//!
//! What the binary, the test harness and the benchmarks use is public: the
//! command line ([`cli`]), the configuration ([`config`]) and the model it
//! validates to ([`model`]), the data plane ([`dataplane`]), next-hop
//! resolution ([`neigh`]), VRRP ([`vrrp`]) and the Linux plumbing under
//! them ([`net`], [`sysctl`]). The agent, its API and its health checks
//! stay inside.

mod agent;
mod api;
pub mod cli;
pub mod config;
pub mod dataplane;
mod doctor;
mod health;
pub mod import;
pub mod logs;
pub mod model;
mod nat_routes;
pub mod neigh;
pub mod net;
mod run;
pub mod sysctl;
mod systemd;
pub mod vrrp;

#[cfg(test)]
mod layering;
