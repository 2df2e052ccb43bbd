//! `xlb-dist DIR`: writes into DIR the files of the package that are made
//! from xlb's code, so they cannot drift from it: `man/` holds xlb(1), a
//! page for each subcommand and xlb.toml(5); `completions/` the bash, zsh
//! and fish completions.

mod config_page;

use std::{fs, path::PathBuf};

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;
use xlb::cli::Cli;

/// The completion files, named as each shell looks them up.
const COMPLETIONS: &[(Shell, &str)] = &[
    (Shell::Bash, "xlb"),
    (Shell::Zsh, "_xlb"),
    (Shell::Fish, "xlb.fish"),
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        bail!("usage: xlb-dist DIR");
    };
    let dir = PathBuf::from(dir);
    let man = dir.join("man");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    clap_mangen::generate_to(Cli::command(), &man).context("writing the man pages")?;
    let page = man.join("xlb.toml.5");
    fs::write(&page, config_page::render(env!("CARGO_PKG_VERSION")))
        .with_context(|| format!("writing {}", page.display()))?;

    let completions = dir.join("completions");
    fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for (shell, name) in COMPLETIONS {
        let path = completions.join(name);
        let mut file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(*shell, &mut Cli::command(), "xlb", &mut file);
    }
    Ok(())
}
