//! The Linux plumbing that next-hop resolution, VRRP and the data plane
//! share: a blocking rtnetlink socket and the few socket system calls.

pub mod ethtool;
pub(crate) mod rtnl;
pub(crate) mod sys;

/// The index of the interface named `name` in the calling thread's network
/// namespace; `None` if it has none by that name.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
