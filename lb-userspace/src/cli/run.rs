//! `xlb run` and `xlb check`.

use std::path::PathBuf;

use clap::Args;
use log::LevelFilter;

use crate::{
    config, nat_routes,
    run::{self, RunOptions},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (see xlb.example.toml).
    #[arg(long, short, value_name = "FILE", default_value = "/etc/xlb/xlb.toml")]
    pub config: PathBuf,
    /// On SIGTERM, leave the program attached and its maps pinned, so
    /// traffic flows on and the next `xlb run` adopts them.
    #[arg(long)]
    pub keep_dataplane: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file to validate.
    #[arg(long, short, value_name = "FILE", default_value = "/etc/xlb/xlb.toml")]
    pub config: PathBuf,
    /// Do not look up the routes to NAT backends (for a file meant for
    /// another machine): by default they must leave through an interface
    /// of `[agent] interfaces`, as on the director.
    #[arg(long)]
    pub skip_routes: bool,
}

pub fn run(args: RunArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    run::run(RunOptions {
        config: args.config,
        keep_dataplane: args.keep_dataplane,
        bpf_log: log_level,
    })
}

pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let (file, applied) = config::load_effective(&args.config)?;
    let model = applied.model;
    if model != file {
        println!(
            "{}: changes made through the API apply over it",
            config::state_path(&args.config, &file).display()
        );
    }
    for note in &applied.notes {
        println!("warning: a change made through the API no longer applies: {note}");
    }
    let backends: usize = model.services.iter().map(|s| s.backends.len()).sum();
    println!(
        "{}: valid ({} services, {} backends, {} VRRP instances)",
        args.config.display(),
        model.services.len(),
        backends,
        model.vrrp.len()
    );
    if args.skip_routes {
        println!("routes to NAT backends not checked (--skip-routes)");
        return Ok(());
    }
    let found = nat_routes::check(&model, None)?;
    for (ifname, count) in &found.through {
        println!("routes: {count} NAT backends and fallbacks are reached through {ifname}");
    }
    for (target, error) in &found.unrouted {
        println!(
            "warning: {} ({}): {error}; the agent leaves it out until it has a route",
            target.field, target.target
        );
    }
    Ok(())
}
