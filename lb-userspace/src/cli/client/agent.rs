//! `xlb config dump`, `xlb state` and `xlb reload`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{
    http::{endpoint, Api, ApiArgs},
    print_json, read,
};
use crate::{
    api::wire::StateView,
    config::{self, Config, RuntimeState},
};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, changes through the API included,
    /// as a file `xlb run --config` reads (like `ipvsadm -S`): the running
    /// agent's, or with --config, what that file and its state file give
    /// (what the agent would run if started now).
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Read this configuration file and the state file beside it instead
    /// of asking the agent.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    command: Option<StateCommand>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the changes made through the API that the agent keeps over
    /// its file (the default).
    Show,
    /// Drop them: the file, as last read, runs again.
    Clear,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn config(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Dump(args) = command;
    let text = match &args.config {
        Some(path) => effective(path)?,
        None => Api::new(&args.api)?.get(&endpoint(&["config"]))?,
    };
    if args.api.json {
        let config: toml::Table = toml::from_str(&text).context("the agent's TOML")?;
        return print_json(&serde_json::to_value(config)?);
    }
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

pub fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let answer = Api::new(&args.api)?.post(&endpoint(&["reload"]), None)?;
    if args.api.json {
        return print_json(&answer);
    }
    match answer["reloaded"].as_str() {
        Some(summary) => println!("reloaded: {summary}"),
        None => println!("reloaded"),
    }
    Ok(())
}

/// The file at `path` with its state applied, as a file, headed by what the
/// state changed.
fn effective(path: &std::path::Path) -> anyhow::Result<String> {
    let (file, applied) = config::load_effective(path)?;
    let state = RuntimeState::between(&file, &applied.model);
    let mut text = String::new();
    if !state.is_empty() {
        text.push_str(&format!(
            "# {} with the changes made through the API kept in {}\n",
            path.display(),
            config::state_path(path, &file).display()
        ));
    }
    for note in &applied.notes {
        text.push_str(&format!("# no longer applies, left out: {note}\n"));
    }
    text.push_str(&Config::from_model(&applied.model).to_toml());
    Ok(text)
}

pub fn state(args: StateArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let path = endpoint(&["state"]);
    let (answer, verb) = match args.command.unwrap_or(StateCommand::Show) {
        StateCommand::Show => (api.get_json(&path)?, "kept"),
        StateCommand::Clear => (api.delete_json(&path)?, "dropped"),
    };
    if args.api.json {
        return print_json(&answer);
    }
    let view: StateView = read(answer)?;
    if view.changes.is_empty() {
        println!("no changes made through the API are {verb} ({})", view.path);
        return Ok(());
    }
    println!("# changes made through the API, {verb} ({})", view.path);
    print!(
        "{}",
        toml::to_string_pretty(&view.changes).context("the changes as TOML")?
    );
    Ok(())
}
