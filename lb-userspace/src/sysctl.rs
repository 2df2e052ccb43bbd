//! Kernel settings under `/proc/sys`, in the calling thread's network
//! namespace. Keys are written as sysctl(8) writes them: dotted, with a dot
//! inside one part (an interface like `eth0.100`) written as `/`.

use std::{fs, io, path::PathBuf};

/// The file of `key`: `net.ipv4.conf.eth0/100.send_redirects` is
/// `/proc/sys/net/ipv4/conf/eth0.100/send_redirects`.
pub fn path(key: &str) -> PathBuf {
    let mut path = PathBuf::from("/proc/sys");
    path.extend(key.split('.').map(|part| part.replace('/', ".")));
    path
}

/// The key of an interface's setting: `conf_key("ipv4", "eth0",
/// "send_redirects")` is `net.ipv4.conf.eth0.send_redirects`.
pub fn conf_key(family: &str, iface: &str, name: &str) -> String {
    format!("net.{family}.conf.{}.{name}", iface.replace('.', "/"))
}

/// The value of `key`, without its newline.
pub fn read(key: &str) -> io::Result<String> {
    let value = fs::read_to_string(path(key)).map_err(|e| context(key, "reading", e))?;
    Ok(value.trim_end().to_owned())
}

pub fn write(key: &str, value: &str) -> io::Result<()> {
    fs::write(path(key), value).map_err(|e| context(key, "writing", e))
}

/// Sets `key` to `value` unless it has that value already; returns the
/// value it had.
pub fn set(key: &str, value: &str) -> io::Result<String> {
    let before = read(key)?;
    if before != value {
        write(key, value)?;
    }
    Ok(before)
}

fn context(key: &str, doing: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path(key).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_files_as_sysctl_does() {
        assert_eq!(
            path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        let vlan = conf_key("ipv4", "eth0.100", "send_redirects");
        assert_eq!(vlan, "net.ipv4.conf.eth0/100.send_redirects");
        assert_eq!(
            path(&vlan),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/send_redirects")
        );
    }

    #[test]
    fn reads_a_setting() {
        // Present on every Linux host, and readable by anyone.
        let value = read("kernel.ostype").unwrap();
        assert_eq!(value, "Linux");
        let missing = read("net.ipv4.conf.no-such-if0.send_redirects").unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("reading /proc/sys/net/ipv4/conf/no-such-if0/send_redirects: "),
            "{missing}"
        );
    }
}
