//! The Debian package, as an operator gets it: `cargo xtask dist --debug`
//! builds it (the release package differs only in the binary's profile),
//! dpkg installs it into a minimal Debian root that has no Rust toolchain
//! (debootstrap, kept in the target directory between runs), and there the
//! binary runs and checks the shipped configuration, every man page
//! renders, the completions are where the shells look, the configuration is
//! a conffile, the unit is neither enabled nor started, and systemd accepts
//! the unit. The package is purged again, with the state file the agent keeps
//! beside its configuration, so the root stays as made. No
//! mounts are made: the chroot needs none for these commands.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{bail, ensure, Context};
use clap::CommandFactory;
use xlb_tests::{require_privileged, target_dir};

/// What the root holds beyond minbase: `man` for the pages, systemd for its
/// units that `systemd-analyze verify` resolves the unit's dependencies in.
const EXTRA_PACKAGES: &str = "man-db,systemd";
/// Written last by [`debian_root`]: a root without it is incomplete.
const ROOT_READY: &str = "xlb-test-root-ready";

#[test]
fn package_installs_into_a_debian_root_and_works() -> anyhow::Result<()> {
    require_privileged!();
    let deb = build_package()?;
    let root = debian_root()?;
    let installed = install(&root, &deb);
    let checked = installed.and_then(|()| check_installed(&root));
    // The agent's state beside the configuration, as an API change leaves it.
    let state = root.join("etc/xlb/xlb.state");
    let purged = fs::write(&state, "removed_services = [\"web\"]\n")
        .context("writing a state file")
        .and_then(|()| chroot(&root, &["dpkg", "--purge", "xlb"]))
        .and_then(|_| {
            ensure!(
                !root.join("etc/xlb/xlb.toml").exists()
                    && !root.join("usr/bin/xlb").exists()
                    && !state.exists(),
                "dpkg --purge left xlb's files"
            );
            Ok(())
        });
    checked?;
    purged
}

/// `cargo xtask dist --debug`, with the cargo that runs the tests; the
/// package's path is its stdout.
fn build_package() -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["xtask", "dist", "--debug"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo xtask dist --debug")?;
    ensure!(
        output.status.success(),
        "cargo xtask dist --debug failed ({})",
        output.status
    );
    let deb = PathBuf::from(String::from_utf8(output.stdout)?.trim());
    ensure!(deb.is_file(), "{} is not a file", deb.display());
    Ok(deb)
}

/// A minbase root of the host's Debian release, from the mirror the host's
/// apt uses, made once into `target/debroot`.
fn debian_root() -> anyhow::Result<PathBuf> {
    let root = target_dir()?.join("debroot");
    if root.join(ROOT_READY).is_file() {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let release = host_release()?;
    let mirror = apt_mirror(&release)?;
    eprintln!(
        "making a Debian {release} root in {} (once, about two minutes)",
        root.display()
    );
    let made = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={EXTRA_PACKAGES}")])
        .arg(&release)
        .arg(&root)
        .arg(&mirror)
        .status()
        .context("debootstrap could not start: run `cargo xtask setup`, which installs it")?;
    ensure!(
        made.success(),
        "debootstrap {release} from {mirror} failed ({made})"
    );
    fs::write(root.join(ROOT_READY), "")?;
    Ok(root)
}

/// The host's Debian codename (`bookworm`), from /etc/os-release.
fn host_release() -> anyhow::Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME")
}

/// The URL of the archive that holds `release`'s main component, as
/// `apt-cache policy` lists the host's sources (`500 URL release/main amd64 Packages`).
fn apt_mirror(release: &str) -> anyhow::Result<String> {
    let policy = run(Command::new("apt-cache").arg("policy"))?;
    let component = format!("{release}/main");
    String::from_utf8_lossy(&policy.stdout)
        .lines()
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.get(2) == Some(&component.as_str())).then(|| words[1].to_owned())
        })
        .with_context(|| format!("apt's sources hold no {component}"))
}

/// Installs the package in the root with dpkg, from a copy in its /tmp.
fn install(root: &Path, deb: &Path) -> anyhow::Result<()> {
    let inside = Path::new("/tmp").join(deb.file_name().context("a file name")?);
    let copy = root.join(inside.strip_prefix("/")?);
    fs::copy(deb, &copy).with_context(|| format!("copying {} into the root", deb.display()))?;
    let installed = chroot(
        root,
        &["dpkg", "-i", inside.to_str().context("a UTF-8 path")?],
    );
    fs::remove_file(&copy)?;
    installed.map(drop)
}

fn check_installed(root: &Path) -> anyhow::Result<()> {
    let version = chroot(root, &["xlb", "--version"])?;
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("xlb {}", env!("CARGO_PKG_VERSION"))
    );

    let check = chroot(
        root,
        &[
            "xlb",
            "check",
            "--skip-routes",
            "--config",
            "/etc/xlb/xlb.toml",
        ],
    )?;
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.starts_with("/etc/xlb/xlb.toml: valid"), "{said}");

    let conffiles = chroot(root, &["dpkg-query", "-W", "-f", "${Conffiles}", "xlb"])?;
    let conffiles = String::from_utf8_lossy(&conffiles.stdout);
    assert!(conffiles.contains("/etc/xlb/xlb.toml "), "{conffiles}");

    check_man_pages(root)?;

    for (path, names) in [
        ("usr/share/bash-completion/completions/xlb", "_xlb()"),
        ("usr/share/zsh/vendor-completions/_xlb", "#compdef xlb"),
        (
            "usr/share/fish/vendor_completions.d/xlb.fish",
            "complete -c xlb",
        ),
    ] {
        let text = fs::read_to_string(root.join(path)).with_context(|| format!("/{path}"))?;
        assert!(text.contains(names), "/{path} has no {names:?}");
    }
    chroot(
        root,
        &["bash", "-n", "/usr/share/bash-completion/completions/xlb"],
    )?;

    let unit = "usr/lib/systemd/system/xlb.service";
    assert!(root.join(unit).is_file(), "/{unit} is missing");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/xlb.service");
    assert!(!wants.exists(), "the package enabled the unit");
    // The host's systemd-analyze resolves the unit's commands and
    // dependencies in the root, and its Documentation= pages through man
    // with the root's pages; what it only warns of (an unknown key) it
    // prints on stderr.
    let verified = run(Command::new("systemd-analyze")
        .args(["verify", "--root"])
        .arg(root)
        .arg(Path::new("/").join(unit))
        .env("MANPATH", root.join("usr/share/man")))?;
    let warned = String::from_utf8_lossy(&verified.stderr);
    assert!(warned.trim().is_empty(), "systemd-analyze verify: {warned}");
    Ok(())
}

/// A page for `xlb` and each of its subcommands, and xlb.toml(5): each
/// installed and rendered by the root's `man` without a warning.
fn check_man_pages(root: &Path) -> anyhow::Result<()> {
    let mut expected = BTreeSet::from(["man5/xlb.toml.5.gz".to_owned()]);
    let mut commands = vec![("xlb".to_owned(), xlb::cli::Cli::command())];
    while let Some((name, command)) = commands.pop() {
        expected.insert(format!("man1/{name}.1.gz"));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            commands.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
    }
    let mut installed = BTreeSet::new();
    for section in ["man1", "man5"] {
        for entry in fs::read_dir(root.join("usr/share/man").join(section))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("xlb") {
                installed.insert(format!("{section}/{name}"));
            }
        }
    }
    assert_eq!(installed, expected);
    for page in &installed {
        let path = format!("/usr/share/man/{page}");
        let shown = chroot_env(
            root,
            &["man", "--warnings", "-P", "cat", "-l", &path],
            &[("MANWIDTH", "80")],
        )?;
        let stderr = String::from_utf8_lossy(&shown.stderr);
        assert!(stderr.trim().is_empty(), "{path}: {stderr}");
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            text.contains("NAME") && text.contains("xlb"),
            "{path}:\n{text}"
        );
    }
    let config_page = chroot_env(
        root,
        &[
            "man",
            "-P",
            "cat",
            "-l",
            "/usr/share/man/man5/xlb.toml.5.gz",
        ],
        &[("MANWIDTH", "200")],
    )?;
    let text = String::from_utf8_lossy(&config_page.stdout);
    for line in [
        "Default: 1500. Applies on: reload.",
        "Default: \"/sys/fs/bpf/xlb\". Applies on: restart.",
    ] {
        assert!(text.contains(line), "xlb.toml(5) has no {line:?}:\n{text}");
    }
    Ok(())
}

fn chroot(root: &Path, args: &[&str]) -> anyhow::Result<Output> {
    chroot_env(root, args, &[])
}

/// `args` run in `root` with a clean environment plus `env`.
fn chroot_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .envs(env.iter().copied());
    run(&mut cmd)
}

/// Runs `cmd`; fails with its output unless it succeeds.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let output = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}
