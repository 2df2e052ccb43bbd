//! The few system calls the VRRP and next-hop sockets need, as safe functions
//! over `libc`.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr,
};

/// Room for the control messages of one datagram, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct ControlBuffer([u8; 128]);

/// One control message as received: its level, type and data.
pub struct ControlMessage {
    pub level: libc::c_int,
    pub kind: libc::c_int,
    pub data: Vec<u8>,
}

/// socket(2); the descriptor is close-on-exec.
pub fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setsockopt(2) with `value` as the option's value, passed by address and size.
pub fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes from `value`, which lives across the call.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret)
}

/// An integer socket option, the type most of them take.
pub fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// SO_BINDTODEVICE: the socket sends out of and receives from `ifname` only.
pub(crate) fn bind_to_device(fd: &impl AsRawFd, ifname: &str) -> io::Result<()> {
    // SAFETY: the option value is `ifname`'s bytes, valid for the given length during the call;
    // the kernel does not need a terminating NUL.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    };
    check(ret)
}

/// sendto(2) of one datagram to a `sockaddr_*` value.
pub fn send_to<A>(fd: &OwnedFd, data: &[u8], addr: &A) -> io::Result<()> {
    // SAFETY: `data` and `addr` are valid for the lengths given and live across the call.
    let ret = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            0,
            (addr as *const A).cast(),
            mem::size_of::<A>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// sendmsg(2) of one datagram to `to` (a `sockaddr_*` value) with one control message, whose
/// data is `value`.
pub fn send_msg<A, C: Copy>(
    fd: &OwnedFd,
    data: &[u8],
    to: &A,
    level: libc::c_int,
    kind: libc::c_int,
    value: &C,
) -> io::Result<()> {
    let mut control = ControlBuffer([0; 128]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        let size = mem::size_of::<C>() as libc::c_uint;
        (
            libc::CMSG_SPACE(size) as usize,
            libc::CMSG_LEN(size) as usize,
        )
    };
    assert!(space <= control.0.len(), "control message too large");
    // SAFETY: an all-zero msghdr is valid: null pointers and zero lengths.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::from_ref(to).cast_mut().cast();
    msg.msg_namelen = mem::size_of::<A>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is aligned for cmsghdr and holds `space` bytes, room for the
    // header and the value; CMSG_FIRSTHDR is therefore not null. sendmsg reads the name, the
    // payload and the control buffer, all alive across the call, and writes nothing.
    let ret = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = len as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<C>(), *value);
        libc::sendmsg(fd.as_raw_fd(), &msg, 0)
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// recvmsg(2) of one datagram into `buf`: its length, the sender's address and the control
/// messages.
pub fn recv_msg(
    fd: &OwnedFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<IpAddr>, Vec<ControlMessage>)> {
    let mut control = ControlBuffer([0; 128]);
    // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
    let mut from: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as in `send_msg`.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::from_mut(&mut from).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: the kernel writes at most the given lengths into `from`, `buf` and `control`, all
    // alive across the call.
    let len = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut messages = Vec::new();
    // SAFETY: the kernel has filled `msg_controllen` bytes of the control buffer with complete
    // control messages; CMSG_FIRSTHDR and CMSG_NXTHDR stay within them, and each message's data
    // lies within its `cmsg_len`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = ptr::read_unaligned(cmsg);
            let data_len = (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            let data = std::slice::from_raw_parts(libc::CMSG_DATA(cmsg), data_len);
            messages.push(ControlMessage {
                level: header.cmsg_level,
                kind: header.cmsg_type,
                data: data.to_vec(),
            });
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((len as usize, ip_of(&from), messages))
}

/// The address in a `sockaddr_in` or `sockaddr_in6` the kernel filled in.
fn ip_of(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Some(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            Some(Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

pub fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: in_addr(addr),
        sin_zero: [0; 8],
    }
}

/// An IPv6 socket address; `scope_id` names the link of a link-local address.
pub fn sockaddr_in6(addr: Ipv6Addr, scope_id: u32) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: in6_addr(addr),
        sin6_scope_id: scope_id,
    }
}

pub fn in_addr(addr: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(addr.octets()),
    }
}

pub fn in6_addr(addr: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: addr.octets(),
    }
}

/// Turns a system call's result (0, or -1 with errno set) into an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
