//! Where the data plane is pinned: a directory on a BPF filesystem.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

use super::DataplaneError;

/// `statfs` f_type of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted by convention.
const BPF_FS_ROOT: &str = "/sys/fs/bpf";

/// Makes `dir` a directory on a bpffs, mounting one at /sys/fs/bpf first
/// when that is where `dir` lives and nothing is mounted there.
pub fn prepare(dir: &Path) -> Result<(), DataplaneError> {
    let fail = |e: &dyn std::fmt::Display| {
        DataplaneError::Pins(format!(
            "preparing the pin directory {}: {e}",
            dir.display()
        ))
    };
    let root = Path::new(BPF_FS_ROOT);
    if dir.starts_with(root) && !is_bpffs(root).map_err(|e| fail(&e))? {
        mount_bpffs(root).map_err(|e| fail(&format!("mounting bpffs on {BPF_FS_ROOT}: {e}")))?;
        log::info!("mounted a BPF filesystem on {BPF_FS_ROOT}");
    }
    // Checked before creating anything, and again once created.
    let existing = dir.ancestors().find(|a| a.exists());
    let on_bpffs = |path: &Path| is_bpffs(path).map_err(|e| fail(&e));
    if let Some(existing) = existing {
        if !on_bpffs(existing)? {
            return Err(fail(&"not on a BPF filesystem (mount -t bpf bpf DIR)"));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    if !on_bpffs(dir)? {
        return Err(fail(&"not on a BPF filesystem (mount -t bpf bpf DIR)"));
    }
    Ok(())
}

/// Removes the pins in `dir`, and `dir`.
pub fn remove(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    std::fs::remove_dir(dir)
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statfs to fill.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(root: &Path) -> io::Result<()> {
    let target = CString::new(root.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid C strings; no mount data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
