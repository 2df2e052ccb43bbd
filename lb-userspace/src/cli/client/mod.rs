//! The operator's commands: clients of the agent's HTTP API (`xlb run`
//! serves it). Each prints aligned tables, or the agent's JSON with
//! `--json`; `--api`, `--token` and `--token-file` say where the agent is
//! and how to change things on it. Table columns are separated by at
//! least two spaces, and their names are stable.

mod agent;
mod backend;
mod flows;
mod format;
mod http;
mod service;
mod stats;
mod status;
mod table;
mod vrrp;

use clap::Subcommand;
use serde::de::DeserializeOwned;
use serde_json::Value;

use agent::{ConfigCommand, ReloadArgs, StateArgs};
use backend::BackendCommand;
use flows::FlowsArgs;
use service::ServiceCommand;
use stats::StatsArgs;
use status::StatusArgs;
use vrrp::VrrpArgs;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List, show, add, change and delete services (virtual servers).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List, add, change and delete a service's backends (real servers).
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Traffic per service and backend, and the data plane's counters.
    Stats(StatsArgs),
    /// The connections the data plane tracks.
    Flows(FlowsArgs),
    /// The agent and every service with its backends on one screen.
    Status(StatusArgs),
    /// The running configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The changes made through the API that the agent keeps over its
    /// file (weights, drains, added and removed backends and services):
    /// they outlive reloads and restarts until cleared.
    State(StateArgs),
    /// Make the agent read its configuration file again and apply what
    /// changed; changes made through the API stay applied over it.
    Reload(ReloadArgs),
    /// This director's VRRP instances: state, priority, master.
    Vrrp(VrrpArgs),
}

pub fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Service(command) => service::run(command),
        ClientCommand::Backend(command) => backend::run(command),
        ClientCommand::Stats(args) => stats::run(args),
        ClientCommand::Flows(args) => flows::run(args),
        ClientCommand::Status(args) => status::run(args),
        ClientCommand::Config(command) => agent::config(command),
        ClientCommand::State(args) => agent::state(args),
        ClientCommand::Reload(args) => agent::reload(args),
        ClientCommand::Vrrp(args) => vrrp::run(args),
    }
}

/// The agent's JSON, indented.
fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `value` read as `T`, or an error that says what the agent sent instead.
fn read<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("unexpected answer from the agent: {e}"))
}
