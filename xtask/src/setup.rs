//! `cargo xtask setup`: everything a fresh machine needs to build and test
//! xlb, installed once and skipped when present.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

use crate::shell;

/// Debian's rustc 1.96 built on LLVM 22, with the `core` source needed by
/// `-Z build-std=core`; the LLVM that bpf-linker links against.
const COMPILER_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
const LLVM_PACKAGE: &str = "llvm-22-dev";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Network namespaces, veth links and `ip -j` for the tests and the demo;
/// ethtool sets the test veths' offloads (GRO for XDP_TX into a veth,
/// checksums completed by the sender); keepalived is the VRRP peer of the
/// interoperability tests; haproxy, nftables and ipvsadm (IPVS, where the
/// kernel has it) are contenders of
/// `cargo xtask bench udp|tcp`; headless Chromium, driven by chromedriver,
/// tests the status page (the fonts are for its screenshots); dpkg-dev's
/// dpkg-shlibdeps gives the package its dependencies, and debootstrap
/// makes the Debian root its test installs it into; prometheus gives
/// promtool, which checks a live scrape of `/metrics` and the alert rules;
/// nginx (over HTTPS, with a CA openssl makes) and dnsmasq (dnsmasq-base:
/// the program without a service) are what the health checks' tests probe,
/// and ca-certificates the trust store the https check verifies against;
/// python3-venv makes schemathesis' virtual environment.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "keepalived",
    "haproxy",
    "nftables",
    "ipvsadm",
    "chromium",
    "chromium-driver",
    "fonts-liberation",
    "dpkg-dev",
    "debootstrap",
    // `cargo xtask demo --keep` prints socat commands to reach the kept lab.
    "socat",
    "prometheus",
    "nginx",
    "dnsmasq-base",
    "openssl",
    "ca-certificates",
    "python3-venv",
];
/// Services the test packages start and enable that nothing should leave
/// running: the benchmarks run their own haproxy in namespaces, the health
/// checks' tests their own nginx, and only promtool is wanted of prometheus.
const QUIET_SERVICES: &[&str] = &["haproxy", "prometheus", "nginx"];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Makes the Debian package (`cargo xtask dist`).
const CARGO_DEB_VERSION: &str = "3.8.0";
/// Tests the API against its OpenAPI document (tests/tests/openapi.rs),
/// installed from PyPI into a virtual environment of its own, outside the
/// repository, with Debian's python3.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const SCHEMATHESIS_VENV: &str = "/opt/xlb-tools/schemathesis";
const PYTHON: &str = "/usr/bin/python3";

pub fn run() -> anyhow::Result<()> {
    shell::step("checking the BPF toolchain");
    let mut wanted: Vec<&str> = Vec::new();
    if nightly_has_rust_src() {
        eprintln!("    compiler: rustup nightly with rust-src");
    } else {
        wanted.extend(COMPILER_PACKAGES);
    }
    let linker_ok = installed_version("bpf-linker").as_deref() == Some(BPF_LINKER_VERSION);
    if !linker_ok {
        wanted.push(LLVM_PACKAGE);
    }
    wanted.extend(TEST_PACKAGES);
    install_packages(&wanted)?;

    if linker_ok {
        eprintln!("    bpf-linker {BPF_LINKER_VERSION}: present");
    } else {
        shell::step(&format!(
            "installing bpf-linker {BPF_LINKER_VERSION} (about a minute)"
        ));
        let path = env::join_paths(
            std::iter::once(PathBuf::from(LLVM_BIN))
                .chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
        )?;
        shell::run(
            cargo_install()
                .args(["bpf-linker", "--version", BPF_LINKER_VERSION, "--locked"])
                .args(["--no-default-features", "--features", "llvm-22", "--force"])
                .env("PATH", path),
        )?;
    }
    if installed_version("cargo-deb").as_deref() == Some(CARGO_DEB_VERSION) {
        eprintln!("    cargo-deb {CARGO_DEB_VERSION}: present");
    } else {
        shell::step(&format!(
            "installing cargo-deb {CARGO_DEB_VERSION} (about two minutes)"
        ));
        shell::run(cargo_install().args([
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
            "--force",
        ]))?;
    }
    install_schemathesis()?;
    eprintln!("    toolchain ready");
    Ok(())
}

/// schemathesis at [`SCHEMATHESIS_VERSION`] in [`SCHEMATHESIS_VENV`],
/// unless it is there.
fn install_schemathesis() -> anyhow::Result<()> {
    let venv = Path::new(SCHEMATHESIS_VENV);
    let bin = venv.join("bin/schemathesis");
    let printed = shell::output(Command::new(&bin).arg("--version"));
    if printed.as_deref() == Some(&format!("schemathesis, version {SCHEMATHESIS_VERSION}")) {
        eprintln!("    schemathesis {SCHEMATHESIS_VERSION}: present");
        return Ok(());
    }
    shell::step(&format!(
        "installing schemathesis {SCHEMATHESIS_VERSION} into {SCHEMATHESIS_VENV} (under a minute)"
    ));
    if !shell::is_root() {
        bail!("installing schemathesis into {SCHEMATHESIS_VENV} needs root: run `sudo cargo xtask setup`");
    }
    std::fs::create_dir_all(venv).with_context(|| format!("creating {SCHEMATHESIS_VENV}"))?;
    shell::run(Command::new(PYTHON).args(["-m", "venv"]).arg(venv))?;
    shell::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")),
    )
}

fn install_packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("    packages present: {}", wanted.join(" "));
        return Ok(());
    }
    if shell::output(Command::new("apt-get").arg("--version")).is_none() {
        bail!(
            "missing {} and apt-get is not available: install a nightly Rust with rust-src, \
             LLVM 22 and bpf-linker {BPF_LINKER_VERSION} by hand (see README.md, \"Building\")",
            missing.join(", ")
        );
    }
    if !shell::is_root() {
        bail!(
            "installing {} needs root: run `sudo cargo xtask setup`",
            missing.join(", ")
        );
    }
    shell::step(&format!("installing {}", missing.join(" ")));
    shell::run(Command::new("apt-get").args(["update", "-q"]))?;
    shell::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install")?;
    for service in QUIET_SERVICES.iter().filter(|s| missing.contains(s)) {
        quiet_service(service)?;
    }
    Ok(())
}

/// Stops and disables the service that `service`'s package starts and
/// enables (unless a policy-rc.d forbids it, as in Docker images).
fn quiet_service(service: &str) -> anyhow::Result<()> {
    shell::step(&format!("stopping and disabling the {service} service"));
    if Path::new("/run/systemd/system").is_dir() {
        shell::run(Command::new("systemctl").args([
            "disable",
            "--now",
            &format!("{service}.service"),
        ]))
    } else {
        shell::run(Command::new("update-rc.d").args([service, "disable"]))?;
        shell::run(Command::new(format!("/etc/init.d/{service}")).arg("stop"))
    }
}

fn dpkg_installed(package: &str) -> bool {
    shell::output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_some_and(|status| status == "installed")
}

fn nightly_has_rust_src() -> bool {
    shell::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).is_some_and(
        |sysroot| {
            PathBuf::from(sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        },
    )
}

/// `cargo install`, with the cargo that runs this xtask.
fn cargo_install() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.arg("install");
    cmd
}

/// The version an installed cargo tool prints (`NAME VERSION`), looked up
/// on PATH and in ~/.cargo/bin.
fn installed_version(name: &str) -> Option<String> {
    let cargo_bin = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?
        .join("bin")
        .join(name);
    [PathBuf::from(name), cargo_bin]
        .iter()
        .find_map(|bin| shell::output(Command::new(bin).arg("--version")))
        .and_then(|v| v.strip_prefix(&format!("{name} ")).map(str::to_string))
}
