//! `xlb doctor`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::{
    config::Config,
    doctor::{self, Level},
};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The configuration the director is to run.
    #[arg(long, short, value_name = "FILE", default_value = "/etc/xlb/xlb.toml")]
    pub config: PathBuf,
    /// Print the findings as one JSON object
    /// (`{"findings": [{"check", "level", "detail", "fix"}]}`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let model = Config::load(&args.config)?;
    let findings = doctor::diagnose(&model, &doctor::gather(&model));
    if args.json {
        println!("{}", serde_json::json!({ "findings": findings }));
    } else {
        for finding in &findings {
            println!("{finding}");
        }
    }
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", findings.len());
    }
    Ok(())
}
