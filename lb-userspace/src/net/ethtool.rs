//! What the ethtool ioctl (SIOCETHTOOL) says of an interface: its driver,
//! and whether it strips VLAN tags on receive.

use std::{io, mem, os::fd::AsRawFd};

use super::sys;

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GFLAGS: u32 = 0x25;
/// rx-vlan-offload (NETIF_F_HW_VLAN_CTAG_RX) among ETHTOOL_GFLAGS' flags.
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DriverInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ethtool_value`.
#[repr(C)]
struct Value {
    cmd: u32,
    data: u32,
}

/// The name of `ifname`'s driver, as `ethtool -i` prints it.
pub fn driver(ifname: &str) -> io::Result<String> {
    // SAFETY: an all-zero ethtool_drvinfo is valid.
    let mut info: DriverInfo = unsafe { mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    ethtool(ifname, &mut info)?;
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

/// Whether `ifname` strips VLAN tags on receive (rx-vlan-offload), which
/// hides them from an XDP program.
pub fn rx_vlan_offload(ifname: &str) -> io::Result<bool> {
    let mut value = Value {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    ethtool(ifname, &mut value)?;
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

/// SIOCETHTOOL on `ifname` with `data`, a `struct ethtool_*` starting with its command.
fn ethtool<T>(ifname: &str, data: &mut T) -> io::Result<()> {
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // SAFETY: an all-zero ifreq is valid.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    if ifname.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} is longer than an interface name"),
        ));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(ifname.bytes()) {
        *to = from as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (data as *mut T).cast();
    // SAFETY: the request names the interface and points at `data`, which the kernel reads and
    // writes as the structure its command names; both live across the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL as _, &mut request) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_a_driver_name_of_its_own() {
        // lo answers ETHTOOL_GDRVINFO in every network namespace, unprivileged.
        match driver("lo") {
            Ok(name) => assert!(!name.is_empty()),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
        }
        assert!(driver("no-such-if0").is_err());
    }
}
