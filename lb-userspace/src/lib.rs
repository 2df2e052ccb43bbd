//! The xlb agent: loads the XDP data plane, keeps its maps current and
//! serves the operator's tools.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod health;
pub mod model;
pub mod neigh;
mod net;
pub mod run;
pub mod sysctl;
pub mod vrrp;

#[cfg(test)]
mod layering;
