//! `xlb config dump` and `xlb reload`.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{
    http::{endpoint, Api, ApiArgs},
    print_json,
};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the running configuration, changes through the API included,
    /// as a file `xlb run --config` reads (like `ipvsadm -S`).
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn config(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Dump(args) = command;
    let text = Api::new(&args.api)?.get(&endpoint(&["config"]))?;
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
