//! Where the data plane is pinned: a directory on a BPF filesystem.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

use lb_common::maps::MAP_LAYOUT_VERSION;

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
