//! Where the data plane is pinned: a directory on a BPF filesystem.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use lb_common::maps::MAP_LAYOUT_VERSION;

use super::DataplaneError;

/// `statfs` f_type of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted by convention.
const BPF_FS_ROOT: &str = "/sys/fs/bpf";

/// Makes `dir` a directory on a bpffs, or says why it cannot be one.
///
/// Nothing is mounted here: a bpffs this process mounted in a mount
/// namespace of its own (as under `ip netns exec`, whose /sys is a fresh
/// sysfs) would go with that namespace when the process ends, and take the
/// pins with it.
pub fn prepare(dir: &Path) -> Result<(), DataplaneError> {
    let fail = |e: &dyn std::fmt::Display| {
        DataplaneError::Pins(format!(
            "preparing the pin directory {}: {e}",
            dir.display()
        ))
    };
    // Checked before creating anything, and again once created.
    let (existing, on_bpffs) = on_bpffs(dir).map_err(|e| fail(&e))?;
    if !on_bpffs {
        return Err(fail(&not_on_bpffs(&existing, dir)));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    if !is_bpffs(dir).map_err(|e| fail(&e))? {
        return Err(fail(&not_on_bpffs(dir, dir)));
    }
    Ok(())
}

/// The deepest of `dir` and its ancestors that exists, and whether it is on
/// a BPF filesystem in this process's mount namespace.
pub fn on_bpffs(dir: &Path) -> io::Result<(PathBuf, bool)> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    Ok((existing.to_path_buf(), is_bpffs(existing)?))
}

/// Why `existing` (`dir` or its nearest existing ancestor) cannot hold
/// `dir`'s pins, and the mount that would fix it.
pub fn not_on_bpffs(existing: &Path, dir: &Path) -> String {
    format!(
        "{} is not on a BPF filesystem in this mount namespace: {}",
        existing.display(),
        mount_bpffs_fix(dir)
    )
}

/// How to give `dir` a BPF filesystem that outlives the agent.
pub fn mount_bpffs_fix(dir: &Path) -> String {
    let root = Path::new(BPF_FS_ROOT);
    let mount_point = if dir.starts_with(root) { root } else { dir };
    format!(
        "mount one there (`mount -t bpf bpf {}`) where every agent's mount namespace sees it; \
         under `ip netns exec`, whose /sys is its own, use a pin path on a bpffs mounted \
         outside /sys",
        mount_point.display()
    )
}

/// Removes the pins in `dir`, its stamp, and `dir`.
pub fn remove(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The stamp of pins made from `object`: `layout-` and a hash of what an
/// adopting agent relies on, each map's name, type, key and value size,
/// and [`MAP_LAYOUT_VERSION`] for changes of meaning. Written as an empty
/// directory among the pins.
pub fn stamp(object: &[u8]) -> Result<String, DataplaneError> {
    let parsed = aya_obj::Object::parse(object)
        .map_err(|e| DataplaneError::Pins(format!("reading the BPF object: {e}")))?;
    let mut maps: Vec<_> = parsed.maps.iter().collect();
    maps.sort_by(|a, b| a.0.cmp(b.0));
    // FNV-1a, 64 bits: stable across builds and Rust versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    add(&MAP_LAYOUT_VERSION.to_le_bytes());
    for (name, map) in maps {
        add(name.as_bytes());
        for size in [map.map_type(), map.key_size(), map.value_size()] {
            add(&size.to_le_bytes());
        }
    }
    Ok(format!("{STAMP_PREFIX}{hash:016x}"))
}

const STAMP_PREFIX: &str = "layout-";

/// The stamp among the pins in `dir`, if there is one.
pub fn stamp_of(dir: &Path) -> io::Result<Option<String>> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAMP_PREFIX) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Stamps the pins in `dir` with `stamp`.
pub fn write_stamp(dir: &Path, stamp: &str) -> io::Result<()> {
    match std::fs::create_dir(dir.join(stamp)) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        done => done,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_mounts_the_conventional_root_or_the_directory() {
        let default = not_on_bpffs(Path::new("/sys/fs/bpf"), Path::new("/sys/fs/bpf/xlb"));
        assert!(
            default.starts_with("/sys/fs/bpf is not on a BPF filesystem in this mount namespace")
                && default.contains("`mount -t bpf bpf /sys/fs/bpf`"),
            "{default}"
        );
        let other = not_on_bpffs(Path::new("/run"), Path::new("/run/xlb/bpf"));
        assert!(other.contains("`mount -t bpf bpf /run/xlb/bpf`"), "{other}");
    }

    #[test]
    fn a_plain_directory_is_not_bpffs() {
        let (existing, bpffs) = on_bpffs(Path::new("/proc/no/such/dir")).unwrap();
        assert_eq!(existing, Path::new("/proc"));
        assert!(!bpffs);
    }
}
