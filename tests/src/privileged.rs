//! Run, skip, or fail: tests that need root, BPF and network namespaces call
//! [`require_privileged!`](crate::require_privileged) first. Without those privileges they are
//! skipped with a note on stderr, or fail when `XLB_REQUIRE_PRIVILEGED=1` (as in CI).

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// Returns true if this process can run privileged tests (root, BPF, network namespaces).
/// If it cannot: when env `XLB_REQUIRE_PRIVILEGED=1`, panics with "`{test}` needs privileges:
/// {reason}"; otherwise prints "SKIPPED `{test}`: {reason} …" to stderr and returns false.
pub fn check(test: &str) -> bool {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    let Err(reason) = PROBED.get_or_init(probe) else {
        return true;
    };
    if std::env::var_os("XLB_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("`{test}` needs privileges: {reason}");
    }
    eprintln!("SKIPPED `{test}`: {reason} (set XLB_REQUIRE_PRIVILEGED=1 to make this fatal)");
    false
}

/// Returns early from the calling test (skipping it) or panics, as [`check`] decides; the test is
/// named by its path, or by the string given. Works in tests returning `()` or `Result<(), E>`.
///
/// ```ignore
/// #[test]
/// fn attaches() -> anyhow::Result<()> {
///     xlb_tests::require_privileged!();
///     // …
/// }
/// ```
#[macro_export]
macro_rules! require_privileged {
    () => {{
        fn __here() {}
        let here = ::std::any::type_name_of_val(&__here);
        $crate::require_privileged!(here.strip_suffix("::__here").unwrap_or(here));
    }};
    ($test:expr) => {
        if !$crate::privileged::check($test) {
            return $crate::privileged::Skipped::skipped();
        }
    };
}

/// What a skipped test returns; implemented for the return types test functions have.
pub trait Skipped {
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<E> Skipped for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// Checks each privilege in turn; the error says which one is missing and why.
fn probe() -> Result<(), String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(format!("not running as root (effective uid {euid})"));
    }
    match Command::new("ip").arg("-V").stdin(Stdio::null()).output() {
        Err(e) => return Err(format!("`ip -V` could not start: {e}")),
        Ok(out) if !out.status.success() => {
            return Err(format!(
                "`ip -V` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Ok(_) => {}
    }
    create_bpf_map()
        .map_err(|e| format!("creating a BPF array map with bpf(BPF_MAP_CREATE) failed: {e}"))?;
    let name = format!("xlbt-probe-{}", std::process::id());
    crate::netns::ip(&["netns", "add", &name])
        .and_then(|_| crate::netns::ip(&["netns", "del", &name]))
        .map_err(|e| format!("network namespaces do not work: {e:#}"))?;
    Ok(())
}

/// Creates (and closes) a one-entry `BPF_MAP_TYPE_ARRAY` map with the raw bpf(2) syscall.
fn create_bpf_map() -> io::Result<()> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    /// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel zero-fills the rest.
    #[repr(C)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
    };
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from `attr`, which is initialised and lives
    // across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    Ok(())
}
