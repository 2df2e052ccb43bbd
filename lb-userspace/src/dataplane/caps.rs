//! Whether this process may load and attach XDP programs.

use super::DataplaneError;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Fails with the missing capabilities named, before the kernel would
/// answer with a bare EPERM.
pub fn check_privileges() -> Result<(), DataplaneError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing = missing_caps(effective);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DataplaneError::NotPermitted {
            missing: missing.join(" and "),
        })
    }
}

fn missing_caps(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(missing_caps(u64::MAX).is_empty());
    }

    #[test]
    fn sys_admin_stands_in_for_bpf() {
        assert!(missing_caps(1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN).is_empty());
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing_caps(0), ["CAP_BPF", "CAP_NET_ADMIN"]);
        assert_eq!(missing_caps(1 << CAP_BPF), ["CAP_NET_ADMIN"]);
        assert_eq!(missing_caps(1 << CAP_NET_ADMIN), ["CAP_BPF"]);
    }
}
