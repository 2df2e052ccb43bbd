//! `xlb import`: another balancer's configuration as an xlb file.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::import::{haproxy, ipvsadm, keepalived};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// keepalived.conf: vrrp_instance, vrrp_sync_group, virtual_server.
    Keepalived,
    /// haproxy.cfg: frontend, backend and listen sections, served as NAT.
    Haproxy,
    /// The rules `ipvsadm -Sn` saves.
    Ipvsadm,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What FILE is.
    #[arg(value_enum)]
    pub format: Format,
    /// The file to convert.
    pub file: PathBuf,
    /// An interface for `[agent] interfaces` (repeat for several).
    #[arg(long = "interface", value_name = "IF", required = true)]
    pub interfaces: Vec<String>,
    /// The IP-in-IP tunnel source, needed by ipip services (at most one
    /// IPv4 and one IPv6 address).
    #[arg(long = "tunnel-source", value_name = "ADDR")]
    pub tunnel_sources: Vec<IpAddr>,
}

/// Prints the TOML, and on stderr each line not carried over as it was.
/// Fails if the result does not validate (after printing both).
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let file = args.file.display().to_string();
    let (mut imported, reports) = match args.format {
        Format::Keepalived => {
            let inlined = keepalived::inline(&args.file, &text, &read_includes);
            let imported = keepalived::convert_inlined(&inlined);
            let reports = imported.report_lines_at(|line| inlined.origin(line));
            (imported, reports)
        }
        Format::Haproxy => {
            let imported = haproxy::convert(&text);
            let reports = imported.report_lines(&file);
            (imported, reports)
        }
        Format::Ipvsadm => {
            let imported = ipvsadm::convert(&text);
            let reports = imported.report_lines(&file);
            (imported, reports)
        }
    };
    imported.set_agent(&args.interfaces, &args.tunnel_sources);
    let toml = imported.config.to_toml();
    print!("{toml}");
    for line in reports {
        eprintln!("{line}");
    }
    if let Err(e) = crate::config::Config::parse(&toml).and_then(|c| c.validate()) {
        bail!("the converted configuration does not validate: {e}; edit it before use");
    }
    Ok(())
}

/// The files a keepalived `include` names, as keepalived finds them: a
/// relative pattern from the including file's directory, wildcards
/// (`*`, `?`, `[...]`) matched in name order, and a pattern that matches
/// nothing an error unless it has a wildcard.
fn read_includes(pattern: &str, base: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let full = base.join(pattern);
    let full = full.to_string_lossy();
    let paths = glob::glob(&full).map_err(|e| format!("not a pattern ({e})"))?;
    let mut found = Vec::new();
    for path in paths {
        let path = path.map_err(|e| e.to_string())?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        found.push((path, text));
    }
    if found.is_empty() && !pattern.contains(['*', '?', '[']) {
        return Err(format!("{full}: no such file"));
    }
    Ok(found)
}
