//! `cargo xtask dist`: the Debian package, made by cargo-deb from
//! `[package.metadata.deb]` in lb-userspace/Cargo.toml.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context};

use crate::shell;

/// Builds xlb and its generated files, then the package; returns its path.
/// `debug` packages the debug build into target/dist-debug instead, for
/// the tests: quicker when that build exists, and never shipped.
pub fn run(debug: bool) -> anyhow::Result<PathBuf> {
    let release = !debug;
    crate::build_xlb(release)?;
    let profile = if release { "release" } else { "debug" };
    // cargo-deb reads assets under target/release/ from the profile's own
    // directory, where these go.
    let generated = shell::target_dir().join(profile).join("package-files");
    if generated.exists() {
        fs::remove_dir_all(&generated)
            .with_context(|| format!("removing {}", generated.display()))?;
    }
    shell::step("writing the man pages and shell completions");
    let mut write = shell::cargo();
    write.args(["run", "--quiet", "--package", "xlb-dist"]);
    if release {
        write.arg("--release");
    }
    shell::run(write.arg("--").arg(&generated))?;
    // Debian ships man pages gzipped, and cargo-deb compresses only files
    // it did not find under target/.
    let pages = fs::read_dir(generated.join("man"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    shell::run(Command::new("gzip").args(["-9", "-n", "--"]).args(&pages))?;

    let out = shell::target_dir().join(if release { "dist" } else { "dist-debug" });
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    shell::step("packaging");
    let mut package = shell::cargo();
    package.args(["deb", "--package", "xlb", "--no-build", "--output"]);
    package.arg(&out);
    if debug {
        package.args(["--profile", "dev"]);
    }
    shell::run(&mut package)?;
    let debs: Vec<PathBuf> = fs::read_dir(&out)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let [deb] = debs.as_slice() else {
        bail!("cargo deb left {} files in {}", debs.len(), out.display());
    };
    println!("{}", deb.display());
    Ok(deb.clone())
}
