//! Backends that say who they are, and clients that count who answered.
//!
//! An [`IdentityServer`] answers TCP and UDP with its name. It runs as threads of the test
//! process whose sockets were created inside the backend's namespace, so no extra binary is
//! needed. [`tcp_spread`], [`udp_spread`] and [`LongLived`] talk to it from a client namespace
//! and tally the names they get back; [`within`] compares a tally with weights.
//!
//! The protocol:
//!
//! - TCP: the client sends lines (`hello\n`); the server answers each with its name and `\n`,
//!   and keeps the connection open until the client closes it. A connection that opens with an
//!   HTTP/1.x request line (`GET / HTTP/1.1`) is answered once, after the request's header, with
//!   `HTTP/1.0 200 OK` and the name as the body, and then closed: so `curl` and the agent's
//!   `http` health checks get the same answer as the line protocol's clients.
//! - UDP: the server answers each datagram with its name (no newline), sent from the address the
//!   datagram was sent to. That makes replies from a direct-routing real server come from the VIP
//!   held on its `lo`, and lets clients use connected sockets.
//!
//! Every wait is bounded: exchanges time out after 1 s, and server threads notice a stop within
//! 100 ms.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, Read, Write},
    mem,
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
        UdpSocket,
    },
    os::fd::{AsRawFd, RawFd},
    ptr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};

use crate::netns::Netns;

/// How often server threads check whether they should stop.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How long a client waits to connect, and then for each answer.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an unexpected socket error in a server loop, so it cannot spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// What clients send: one TCP line, or one UDP datagram (without the newline).
const REQUEST: &[u8] = b"hello\n";
/// Longest line either side accepts before giving up on the connection.
const MAX_LINE: usize = 4096;
/// How many error messages a [`Spread`] keeps.
const MAX_ERRORS: usize = 5;

/// A TCP and a UDP server on one address in one namespace, answering with a name; stopped, and
/// its threads joined, on drop.
pub struct IdentityServer {
    name: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the server threads share.
struct Shared {
    stop: AtomicBool,
    tcp_connections: AtomicU64,
    /// TCP connections accepted so far by the client's address (IPv4 as such, not mapped).
    tcp_peers: Mutex<BTreeMap<IpAddr, u64>>,
    udp_datagrams: AtomicU64,
    /// One thread per TCP connection; finished ones are pruned as new ones start.
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl IdentityServer {
    /// Binds TCP and UDP on `addr` inside `ns` and starts serving, answering with `name` (see
    /// the [module docs](self) for the protocol).
    ///
    /// `addr` is usually `0.0.0.0:PORT` (IPv4 only) or `[::]:PORT`, which serves IPv6 and IPv4
    /// alike: namespaces made by [`Topology`](crate::netns::Topology) keep the kernel default
    /// `net.ipv6.bindv6only=0`, so the IPv6 sockets also take IPv4 traffic. With port 0, TCP
    /// gets a free port and UDP binds the same number ([`IdentityServer::addr`] tells which).
    ///
    /// TCP connections are served concurrently, one thread each.
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> anyhow::Result<IdentityServer> {
        let (listener, udp) = ns.run(move || -> anyhow::Result<(TcpListener, UdpSocket)> {
            let listener =
                TcpListener::bind(addr).with_context(|| format!("binding TCP on {addr}"))?;
            let addr = SocketAddr::new(addr.ip(), listener.local_addr()?.port());
            let udp = UdpSocket::bind(addr).with_context(|| format!("binding UDP on {addr}"))?;
            Ok((listener, udp))
        })??;
        let bound = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        udp.set_read_timeout(Some(STOP_POLL))?;
        enable_pktinfo(&udp).context("enabling packet info on the UDP socket")?;

        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            tcp_connections: AtomicU64::new(0),
            tcp_peers: Mutex::new(BTreeMap::new()),
            udp_datagrams: AtomicU64::new(0),
            handlers: Mutex::new(Vec::new()),
        });
        let mut server = IdentityServer {
            name: name.to_owned(),
            addr: bound,
            shared,
            threads: Vec::new(),
        };
        let line: Arc<[u8]> = format!("{name}\n").into_bytes().into();
        let datagram: Arc<[u8]> = name.as_bytes().into();
        // On an error here, dropping `server` stops the threads already started.
        let shared = Arc::clone(&server.shared);
        server.threads.push(
            thread::Builder::new()
                .name(format!("{name}-tcp"))
                .spawn(move || accept_loop(&listener, &line, &shared))?,
        );
        let shared = Arc::clone(&server.shared);
        server.threads.push(
            thread::Builder::new()
                .name(format!("{name}-udp"))
                .spawn(move || udp_loop(&udp, &datagram, &shared))?,
        );
        Ok(server)
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address both sockets are bound to (with the actual port, if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn tcp_connections(&self) -> u64 {
        self.shared.tcp_connections.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far from `peer`: a client's, not the health checks' from
    /// the director.
    pub fn tcp_connections_from(&self, peer: IpAddr) -> u64 {
        let peers = self
            .shared
            .tcp_peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        peers.get(&peer.to_canonical()).copied().unwrap_or(0)
    }

    /// UDP datagrams answered so far.
    pub fn udp_datagrams(&self) -> u64 {
        self.shared.udp_datagrams.load(Ordering::Relaxed)
    }
}

impl Drop for IdentityServer {
    /// Stops accepting, closes every connection (clients see end of stream) and joins all
    /// threads; takes at most about [`STOP_POLL`].
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The accept loop has ended, so no handler is added any more.
        let handlers = mem::take(
            &mut *self
                .shared
                .handlers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

/// Accepts connections until told to stop, serving each on a thread of its own.
fn accept_loop(listener: &TcpListener, line: &Arc<[u8]>, shared: &Arc<Shared>) {
    while !shared.stopping() {
        match wait_readable(listener.as_raw_fd(), STOP_POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                log::warn!("identity server: polling the listener: {e}");
                thread::sleep(ERROR_PAUSE);
                continue;
            }
        }
        let stream = match listener.accept() {
            Ok((stream, peer)) => {
                *shared
                    .tcp_peers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(peer.ip().to_canonical())
                    .or_default() += 1;
                stream
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Such as EMFILE; the client sees a timeout.
                log::warn!("identity server: accept: {e}");
                thread::sleep(ERROR_PAUSE);
                continue;
            }
        };
        shared.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let (line, handler_shared) = (Arc::clone(line), Arc::clone(shared));
        let handler = thread::Builder::new()
            .name("identity-conn".into())
            .spawn(move || serve_connection(stream, &line, &handler_shared));
        let mut handlers = shared
            .handlers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        handlers.retain(|h| !h.is_finished());
        match handler {
            Ok(handler) => handlers.push(handler),
            Err(e) => log::warn!("identity server: spawning a connection thread: {e}"),
        }
    }
}

/// Answers every line on `stream` with `line` until the client closes it or the server stops;
/// or, if the first line is an HTTP request's, answers it in HTTP and closes.
fn serve_connection(mut stream: TcpStream, line: &[u8], shared: &Shared) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(STOP_POLL)))
        .and_then(|()| stream.set_write_timeout(Some(EXCHANGE_TIMEOUT)));
    if let Err(e) = setup {
        log::warn!("identity server: setting up a connection: {e}");
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0; 1024];
    // Whether the connection speaks HTTP, once its first line has come.
    let mut http = None;
    while !shared.stopping() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_transient(&e) => continue,
            Err(_) => return,
        }
        if http.is_none() {
            if let Some(eol) = pending.iter().position(|&b| b == b'\n') {
                http = Some(is_http_request_line(&pending[..eol]));
            }
        }
        if http == Some(true) {
            if header_ended(&pending) {
                let name = line.strip_suffix(b"\n").unwrap_or(line);
                let _ = stream.write_all(&http_answer(name));
                return;
            }
            if pending.len() > MAX_LINE {
                return;
            }
            continue;
        }
        let complete = pending.iter().filter(|&&b| b == b'\n').count();
        if complete > 0 {
            let end = pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            pending.drain(..end);
            if stream.write_all(&line.repeat(complete)).is_err() {
                return;
            }
        }
        if pending.len() > MAX_LINE {
            return;
        }
    }
}

/// Whether `line` (without its `\n`) is an HTTP/1.x request line: `METHOD TARGET HTTP/1.x`.
fn is_http_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts[..], [method, target, version]
        if !method.is_empty()
            && method.iter().all(u8::is_ascii_uppercase)
            && !target.is_empty()
            && version.starts_with(b"HTTP/1."))
}

/// Whether an HTTP request's header has ended with its blank line.
fn header_ended(request: &[u8]) -> bool {
    request.windows(2).any(|w| w == b"\n\n") || request.windows(3).any(|w| w == b"\n\r\n")
}

/// The whole HTTP answer naming `name`; the server closes the connection after it.
fn http_answer(name: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        name.len()
    )
    .into_bytes();
    answer.extend_from_slice(name);
    answer
}

/// Answers every datagram with `reply`, from the address it was sent to, until told to stop.
fn udp_loop(socket: &UdpSocket, reply: &[u8], shared: &Shared) {
    let mut buf = [0; 2048];
    while !shared.stopping() {
        match recv_with_dst(socket, &mut buf) {
            Ok((_, peer, local)) => match send_from(socket, reply, peer, local) {
                Ok(_) => {
                    shared.udp_datagrams.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => log::warn!("identity server: answering {peer}: {e}"),
            },
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                log::warn!("identity server: receiving: {e}");
                thread::sleep(ERROR_PAUSE);
            }
        }
    }
}

/// Waits up to `timeout` for `fd` to become readable.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is one valid, writable entry for the duration of the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    match ready {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Asks the kernel to report each datagram's destination address (`IP_PKTINFO` or
/// `IPV6_RECVPKTINFO`; the latter also covers IPv4 datagrams on a dual-stack socket).
fn enable_pktinfo(socket: &UdpSocket) -> io::Result<()> {
    let (level, option) = match socket.local_addr()? {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    let on: libc::c_int = 1;
    // SAFETY: the option value is a c_int that lives across the call, and its size is passed.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            ptr::from_ref(&on).cast(),
            mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Control-message buffer, aligned for `cmsghdr`.
type ControlBuf = [u64; 16];

/// Receives one datagram: its length, its sender, and the local address it was sent to (if the
/// kernel reported one; see [`enable_pktinfo`]).
fn recv_with_dst(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut control: ControlBuf = [0; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::from_mut(&mut name).cast();
    msg.msg_namelen = mem::size_of_val(&name) as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` refers to a live buffer of the length given with it.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let peer = from_sockaddr(&name)?;
    let mut local = None;
    // SAFETY: the kernel filled `control` with `msg.msg_controllen` bytes of well-formed control
    // messages; the CMSG_* macros stay within them, and the payloads are read unaligned with the
    // type their level and type promise.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = ptr::read_unaligned(data.cast());
                    local = Some(IpAddr::V4(Ipv4Addr::from(
                        info.ipi_addr.s_addr.to_ne_bytes(),
                    )));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = ptr::read_unaligned(data.cast());
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((received as usize, peer, local))
}

/// Sends `data` to `to`, from the local address `from` if given (`IP_PKTINFO` or
/// `IPV6_PKTINFO`; an IPv4-mapped `from` works on a dual-stack socket).
fn send_from(
    socket: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    let (name, name_len) = to_sockaddr(to);
    let mut control: ControlBuf = [0; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::from_ref(&name).cast_mut().cast();
    msg.msg_namelen = name_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(from) = from {
        let (level, kind, len) = match from {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                mem::size_of::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                mem::size_of::<libc::in6_pktinfo>(),
            ),
        };
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE, CMSG_LEN and CMSG_FIRSTHDR only compute sizes and offsets; one
        // control message of `len` bytes fits in `control` (128 bytes), so the writes through
        // `cmsg` and its data stay within it.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(len as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
            let payload = libc::CMSG_DATA(cmsg);
            match from {
                IpAddr::V4(addr) => ptr::write_unaligned(
                    payload.cast(),
                    libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from_ne_bytes(addr.octets()),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    },
                ),
                IpAddr::V6(addr) => ptr::write_unaligned(
                    payload.cast(),
                    libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: addr.octets(),
                        },
                        ipi6_ifindex: 0,
                    },
                ),
            }
        }
    }
    // SAFETY: every pointer in `msg` refers to a live buffer of the length given with it.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let sin: libc::sockaddr_in = unsafe { ptr::read(ptr::from_ref(storage).cast()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { ptr::read(ptr::from_ref(storage).cast()) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::other(format!(
            "datagram from address family {family}"
        ))),
    }
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast(), sin) };
            mem::size_of_val(&sin)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast(), sin6) };
            mem::size_of_val(&sin6)
        }
    };
    (storage, len as libc::socklen_t)
}

/// Which backend answered how often, from [`tcp_spread`] or [`udp_spread`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    /// Answers per name.
    pub by_backend: BTreeMap<String, u64>,
    /// Exchanges that got no answer (refused, timed out, closed, over the time budget).
    pub failed: u64,
    /// The first few error messages (up to 5, plus one if the time budget ran out).
    pub errors: Vec<String>,
}

impl Spread {
    /// Exchanges that got an answer.
    pub fn answered(&self) -> u64 {
        self.by_backend.values().sum()
    }

    fn record(&mut self, outcome: Result<String, String>) {
        match outcome {
            Ok(name) => *self.by_backend.entry(name).or_default() += 1,
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(e);
                }
            }
        }
    }
}

/// Makes `count` short TCP connections to `dst` from inside `ns`, one after another: connect
/// (1 s timeout), send `hello\n`, read one line (1 s timeout), close. Tallies the names;
/// failures are counted, never fatal. Each connection gets a new source port from the kernel.
///
/// The whole run is bounded by 10 s plus 50 ms per connection; attempts left when that runs
/// out count as failed. Errs only if the namespace cannot be entered.
pub fn tcp_spread(ns: &Netns, dst: SocketAddr, count: u64) -> anyhow::Result<Spread> {
    ns.run(move || spread(count, || tcp_exchange(dst)))
}

/// Makes `count` UDP exchanges with `dst` from inside `ns`, each from a new socket (so a new
/// source port, a new flow): send `hello`, wait 1 s for the answer. The socket is connected to
/// `dst`, so only answers from `dst` itself count. Bounded in time like [`tcp_spread`].
pub fn udp_spread(ns: &Netns, dst: SocketAddr, count: u64) -> anyhow::Result<Spread> {
    ns.run(move || spread(count, || udp_exchange(dst)))
}

/// Runs `exchange` `count` times, or until the time budget runs out.
fn spread(count: u64, mut exchange: impl FnMut() -> Result<String, String>) -> Spread {
    let budget = Duration::from_millis(count.saturating_mul(50).saturating_add(10_000));
    let deadline = Instant::now() + budget;
    let mut spread = Spread::default();
    for done in 0..count {
        if Instant::now() >= deadline {
            let left = count - done;
            spread.failed += left;
            spread.errors.push(format!(
                "gave up on the last {left} of {count} exchanges after {budget:?}"
            ));
            break;
        }
        spread.record(exchange());
    }
    spread
}

fn tcp_exchange(dst: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&dst, EXCHANGE_TIMEOUT)
        .map_err(|e| format!("connecting to {dst}: {e}"))?;
    stream
        .set_write_timeout(Some(EXCHANGE_TIMEOUT))
        .and_then(|()| stream.write_all(REQUEST))
        .map_err(|e| format!("sending to {dst}: {e}"))?;
    read_line(
        &mut stream,
        &mut Vec::new(),
        Instant::now() + EXCHANGE_TIMEOUT,
    )
    .map_err(|e| format!("reading from {dst}: {e}"))
}

fn udp_exchange(dst: SocketAddr) -> Result<String, String> {
    let any: IpAddr = match dst {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0))
        .and_then(|s| s.connect(dst).map(|()| s))
        .map_err(|e| format!("opening a UDP socket to {dst}: {e}"))?;
    socket
        .set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .and_then(|()| socket.send(&REQUEST[..REQUEST.len() - 1]))
        .map_err(|e| format!("sending to {dst}: {e}"))?;
    let mut buf = [0; 2048];
    match socket.recv(&mut buf) {
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!("no answer from {dst} within {EXCHANGE_TIMEOUT:?}"))
        }
        Err(e) => Err(format!("receiving from {dst}: {e}")),
    }
}

/// Reads up to the next `\n` (returned without it, nor a `\r` before it), keeping what follows
/// in `pending`; gives up at `deadline`.
fn read_line(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    deadline: Instant,
) -> Result<String, String> {
    let mut buf = [0; 512];
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            return Ok(line.trim_end_matches('\r').to_owned());
        }
        if pending.len() > MAX_LINE {
            return Err(format!("no newline in {} bytes", pending.len()));
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or("timed out waiting for an answer")?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Err("connection closed without an answer".into()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for an answer".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Long-lived TCP connections opened from a client namespace and kept open; each remembers the
/// name it got first. The sockets stay in the client namespace wherever this is used; they are
/// closed on drop.
pub struct LongLived {
    dst: SocketAddr,
    conns: Vec<Conn>,
}

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    first: String,
    /// Why the connection is no longer usable, once it is not.
    broken: Option<String>,
}

impl LongLived {
    /// Opens `count` connections to `dst` from inside `ns`, one after another, each sending
    /// `hello\n` and reading its first name (1 s timeouts). Fails if any of them does not get
    /// an answer.
    pub fn open(ns: &Netns, dst: SocketAddr, count: usize) -> anyhow::Result<LongLived> {
        let conns = ns.run(move || {
            (0..count)
                .map(|i| {
                    let mut stream = TcpStream::connect_timeout(&dst, EXCHANGE_TIMEOUT)
                        .with_context(|| {
                            format!("long-lived connection {i}: connecting to {dst}")
                        })?;
                    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
                    stream
                        .write_all(REQUEST)
                        .with_context(|| format!("long-lived connection {i}: sending to {dst}"))?;
                    let mut pending = Vec::new();
                    let first =
                        read_line(&mut stream, &mut pending, Instant::now() + EXCHANGE_TIMEOUT)
                            .map_err(|e| {
                                anyhow!("long-lived connection {i}: reading from {dst}: {e}")
                            })?;
                    Ok(Conn {
                        stream,
                        pending,
                        first,
                        broken: None,
                    })
                })
                .collect::<anyhow::Result<Vec<Conn>>>()
        })??;
        Ok(LongLived { dst, conns })
    }

    /// Sends one more line on every connection and reads the answers (all within 2 s in
    /// total). Returns `(index, first_name, now)` for each connection that changed backend
    /// (`now` is the new name) or broke (`now` is `error: …`); empty means every connection
    /// still answers with its first name. A broken connection is not used again and is
    /// reported by every later check.
    pub fn check(&mut self) -> anyhow::Result<Vec<(usize, String, String)>> {
        for conn in self.conns.iter_mut().filter(|c| c.broken.is_none()) {
            if let Err(e) = conn.stream.write_all(REQUEST) {
                conn.broken = Some(format!("error: sending to {}: {e}", self.dst));
            }
        }
        let deadline = Instant::now() + 2 * EXCHANGE_TIMEOUT;
        let mut report = Vec::new();
        for (i, conn) in self.conns.iter_mut().enumerate() {
            if conn.broken.is_none() {
                match read_line(&mut conn.stream, &mut conn.pending, deadline) {
                    Ok(name) if name == conn.first => continue,
                    Ok(name) => {
                        report.push((i, conn.first.clone(), name));
                        continue;
                    }
                    Err(e) => {
                        conn.broken = Some(format!("error: reading from {}: {e}", self.dst));
                    }
                }
            }
            let why = conn.broken.clone().unwrap_or_default();
            report.push((i, conn.first.clone(), why));
        }
        Ok(report)
    }

    /// How many connections each backend answered first.
    pub fn backends(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for conn in &self.conns {
            *counts.entry(conn.first.clone()).or_default() += 1;
        }
        counts
    }
}

/// Checks that each backend's share of the answers in `spread` is within ±`tolerance`
/// (relative: 0.15 allows 28–38% for a one-third share) of its share of the total weight.
/// Backends that answered but have no weight count as weight 0, which allows no answers at
/// all. Failed exchanges do not count. The error lists expected against got for every backend.
pub fn within(
    spread: &Spread,
    weights: &BTreeMap<String, u64>,
    tolerance: f64,
) -> Result<(), String> {
    let answered = spread.answered();
    let total_weight: u64 = weights.values().sum();
    if answered == 0 {
        return Err(format!(
            "no answers to compare with the weights ({} failed; errors: {:?})",
            spread.failed, spread.errors
        ));
    }
    if total_weight == 0 {
        return Err(format!("the weights sum to 0: {weights:?}"));
    }
    let names: BTreeSet<&String> = weights.keys().chain(spread.by_backend.keys()).collect();
    let mut lines = Vec::new();
    let mut all_ok = true;
    for name in names {
        let weight = weights.get(name).copied().unwrap_or(0);
        let got = spread.by_backend.get(name).copied().unwrap_or(0);
        let expected = weight as f64 / total_weight as f64;
        let share = got as f64 / answered as f64;
        let ok = (share - expected).abs() <= tolerance * expected;
        all_ok &= ok;
        lines.push(format!(
            "  {} {name}: expected {:.1}% (weight {weight} of {total_weight}), got {:.1}% ({got} of {answered})",
            if ok { "ok  " } else { "BAD " },
            expected * 100.0,
            share * 100.0,
        ));
    }
    if all_ok {
        return Ok(());
    }
    Err(format!(
        "spread is not within ±{:.0}% of the weights ({} failed exchanges not counted):\n{}",
        tolerance * 100.0,
        spread.failed,
        lines.join("\n")
    ))
}

/// A read that timed out or was interrupted: try again.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_are_told_from_lines() {
        assert!(is_http_request_line(b"GET / HTTP/1.1"));
        assert!(is_http_request_line(b"GET /healthz HTTP/1.0\r"));
        assert!(is_http_request_line(b"HEAD / HTTP/1.1\r"));
        assert!(!is_http_request_line(b"hello"));
        assert!(!is_http_request_line(b"GET /"));
        assert!(!is_http_request_line(b"get / HTTP/1.1"));
        assert!(!is_http_request_line(b"GET / HTTP/2"));
        assert!(!header_ended(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(header_ended(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(header_ended(b"GET / HTTP/1.0\n\n"));
        assert_eq!(
            http_answer(b"b1"),
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
              Connection: close\r\n\r\nb1"
        );
    }
}
