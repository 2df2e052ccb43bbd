//! Builds one of the XDP objects in `lb-ebpf` for `bpfel-unknown-none`, for
//! the build script of a crate that embeds it: `xlb` embeds the load
//! balancer's (`lb-ebpf`), xlb-tests the benchmarks' (`lb-ebpf-bench`).
//!
//! Toolchain, first found wins (`cargo xtask setup` installs the first):
//! 1. Debian's rustc-web + rust-web-src (`/usr/bin/rustc`, core source in
//!    `/usr/lib/rustlib/src`), run with `RUSTC_BOOTSTRAP=1` for `-Z build-std`;
//! 2. a rustup `nightly` toolchain with the `rust-src` component.
//!
//! Either needs `bpf-linker` on PATH or in `$CARGO_HOME/bin`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{exit, Command},
};

const BPF_TARGET: &str = "bpfel-unknown-none";

struct Toolchain {
    cargo: PathBuf,
    rustc: PathBuf,
    bootstrap: bool,
}

/// Leaves lb-ebpf's binary `bin` at `$OUT_DIR/{bin}.o`: built, or copied
/// from the file the environment variable `prebuilt` names if it is set.
/// Exits the build script with an error if it cannot.
pub fn object(bin: &str, prebuilt: &str) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join(format!("{bin}.o"));
    println!("cargo:rerun-if-env-changed={prebuilt}");

    if let Some(path) = env::var_os(prebuilt) {
        let path = PathBuf::from(path);
        println!("cargo:rerun-if-changed={}", path.display());
        if let Err(e) = fs::copy(&path, &object) {
            fail(&format!("{prebuilt}={}: {e}", path.display()));
        }
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let ebpf_dir = root.join("lb-ebpf");
    for watched in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join(".cargo/config.toml"),
        ebpf_dir.join("tools"),
        root.join("lb-common/src"),
        root.join("lb-common/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    let toolchain = find_toolchain().unwrap_or_else(|missing| {
        fail(&format!(
            "the BPF toolchain is missing: {missing}.\n\
             Run `cargo xtask setup` once (installs Debian's rustc-web, rust-web-src, \
             llvm-22-dev and bpf-linker), or see README.md, \"Building\"."
        ))
    });
    let linker_dir = find_bpf_linker().unwrap_or_else(|| {
        fail(
            "bpf-linker was not found on PATH or in $CARGO_HOME/bin.\n\
             Run `cargo xtask setup` once to install it.",
        )
    });

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bpf");

    let mut cmd = Command::new(&toolchain.cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "--target",
            BPF_TARGET,
            "-Z",
            "build-std=core",
            "--bin",
            bin,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's settings are for the host build, not this one.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME"
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("RUSTC", &toolchain.rustc);
    if toolchain.bootstrap {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.env("PATH", prepend_path(&linker_dir));

    let output = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("could not run {}: {e}", toolchain.cargo.display())));
    if !output.status.success() {
        fail(&format!(
            "building lb-ebpf's {bin} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // Surface the BPF side's warnings, which the nested build would hide.
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        if let Some(warning) = line.strip_prefix("warning: ") {
            if !warning.contains("generated") {
                println!("cargo:warning={bin}: {warning}");
            }
        }
    }
    let built = target_dir.join(BPF_TARGET).join("release").join(bin);
    if let Err(e) = fs::copy(&built, &object) {
        fail(&format!("copying {}: {e}", built.display()));
    }
}

fn find_toolchain() -> Result<Toolchain, String> {
    let debian_rustc = Path::new("/usr/bin/rustc");
    let debian_cargo = Path::new("/usr/bin/cargo");
    if debian_rustc.exists()
        && debian_cargo.exists()
        && Path::new("/usr/lib/rustlib/src/rust/library/core").is_dir()
    {
        return Ok(Toolchain {
            cargo: debian_cargo.into(),
            rustc: debian_rustc.into(),
            bootstrap: true,
        });
    }
    let nightly = |tool: &str| -> Option<PathBuf> {
        let out = Command::new("rustup")
            .args(["which", "--toolchain", "nightly", tool])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    if let (Some(cargo), Some(rustc)) = (nightly("cargo"), nightly("rustc")) {
        let sysroot = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if sysroot.is_some_and(|s| s.join("lib/rustlib/src/rust/library/core").is_dir()) {
            return Ok(Toolchain {
                cargo,
                rustc,
                bootstrap: false,
            });
        }
    }
    Err(
        "neither Debian's rustc-web with rust-web-src nor a rustup nightly with rust-src \
         is installed"
            .into(),
    )
}

fn cargo_home_bin() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"))
}

fn find_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(cargo_home_bin())
        .find(|dir| dir.join("bpf-linker").is_file())
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let path = env::var_os("PATH").unwrap_or_default();
    env::join_paths(std::iter::once(dir.to_path_buf()).chain(env::split_paths(&path)))
        .expect("PATH entries contain no separator")
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
