//! Short-connection TCP load, as fast as the machine allows: a [`FixedServer`] for the
//! backends, and [`run`], which opens connection after connection from a client namespace and
//! measures how many complete per second and how long each one takes.
//!
//! The exchange is HTTP/1.0, so HAProxy in `mode http` can balance it too: the client sends a
//! request, the server answers `200 OK` with its name as the body and closes first. The server's
//! side therefore holds the TIME_WAIT state, and the client's ports are free again as soon as
//! each connection ends: a SYN that reuses one meets the server's TIME_WAIT entry, which Linux
//! accepts as a new connection thanks to TCP timestamps. [`tune_client`] widens the client's
//! port range all the same, so that reuse is rarer.
//!
//! Both sides run on tokio runtimes whose worker threads were started inside the namespace, with
//! nonblocking sockets driven by `readable`/`writable` readiness (tokio's `io-util` is not
//! needed). Every wait is bounded.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use serde::Serialize;
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::{self, Runtime},
    sync::oneshot,
    time,
};

use crate::netns::Netns;

/// Worker threads of a [`FixedServer`]'s runtime.
const SERVER_THREADS: usize = 2;
/// Worker threads of the client's runtime in [`run`].
const CLIENT_THREADS: usize = 2;
/// Listen backlog of a [`FixedServer`] (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: libc::c_int = 4096;
/// Longest request a [`FixedServer`] reads.
const MAX_REQUEST: usize = 4096;
/// Longest reply [`run`] accepts.
const MAX_REPLY: usize = 4096;
/// How long a [`FixedServer`] gives one connection to send its request and take the reply.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (such as EMFILE), so the accept loop cannot spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How many error messages a [`TcpResult`] keeps.
const MAX_ERRORS: usize = 5;
/// Longest backend name; names are printable ASCII without spaces.
const MAX_NAME: usize = 64;

/// Serves TCP on one address in one namespace with a fixed HTTP/1.0 reply naming the server;
/// stopped, and its thread joined, on drop.
///
/// Each connection: read the request, write
/// `HTTP/1.0 200 OK\r\nContent-Length: N\r\nConnection: close\r\n\r\n{name}`, close. A request
/// whose first line ends in `HTTP/1.x` is read up to its blank line (`\r\n\r\n` or `\n\n`), any
/// other up to its first `\n`, and either up to the client's end of stream; at most 4 KiB (a
/// longer one is closed unanswered, as is a connection that sends nothing, such as a health
/// check's). Reading all of the request matters: closing a socket with unread data sends a
/// reset, which can destroy the reply before the client reads it.
pub struct FixedServer {
    name: String,
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FixedServer {
    /// Binds `addr` inside `ns` (port 0 picks a free port; `[::]` takes IPv4 too) and serves
    /// until dropped, or for `limit` at most, on a runtime of two worker threads started in the
    /// namespace. `name` (printable ASCII, no spaces, at most 64 bytes) is the reply's body.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        name: &str,
        limit: Duration,
    ) -> anyhow::Result<FixedServer> {
        ensure!(
            is_name(name.as_bytes()),
            "server name `{name}` must be 1 to {MAX_NAME} printable ASCII characters without spaces"
        );
        let thread_name = format!("fixed-{name}");
        let (listener, runtime) = ns.run(|| listen(addr, &thread_name))??;
        let bound = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let reply: Arc<[u8]> = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
            name.len()
        )
        .into_bytes()
        .into();
        let counter = Arc::clone(&connections);
        let thread = thread::Builder::new().name(thread_name).spawn(move || {
            runtime.block_on(async move {
                // On a worker, so that accepting and answering share the workers' threads.
                let serving = tokio::spawn(serve(listener, reply, counter, stopped, limit));
                if let Err(e) = serving.await {
                    log::warn!("fixed server: {e}");
                }
            });
            // Dropping the runtime ends the connections still open.
        })?;
        Ok(FixedServer {
            name: name.to_owned(),
            addr: bound,
            connections,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it is bound to (with the actual port, if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far, answered or not.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        // The accept loop ends as soon as the sender is gone.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `addr` with a deep backlog, and starts the server's runtime; called inside the
/// namespace, so the runtime's threads are there too.
fn listen(addr: SocketAddr, thread_name: &str) -> anyhow::Result<(std::net::TcpListener, Runtime)> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    // Listening again on a listening socket only changes its backlog.
    // SAFETY: a plain system call on a socket this function owns.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error()).context("deepening the listen backlog");
    }
    let runtime = runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_THREADS)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    Ok((listener, runtime))
}

/// Accepts connections, each answered on a task of its own, until told to stop or `limit` has
/// passed.
async fn serve(
    listener: std::net::TcpListener,
    reply: Arc<[u8]>,
    connections: Arc<AtomicU64>,
    mut stopped: oneshot::Receiver<()>,
    limit: Duration,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::warn!("fixed server: registering the listener: {e}");
            return;
        }
    };
    let expired = time::sleep(limit);
    tokio::pin!(expired);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            () = &mut expired => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(answer(stream, Arc::clone(&reply)));
                }
                Err(e) => {
                    log::warn!("fixed server: accept: {e}");
                    time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Reads one request from `stream` and writes `reply`; the caller's drop closes the socket.
async fn answer(stream: TcpStream, reply: Arc<[u8]>) {
    let exchange = async {
        let mut request = [0; MAX_REQUEST];
        let mut len = 0;
        while !request_complete(&request[..len]) {
            if len == MAX_REQUEST {
                return Ok(());
            }
            match read_some(&stream, &mut request[len..]).await? {
                0 if len == 0 => return Ok(()),
                0 => break,
                n => len += n,
            }
        }
        write_all(&stream, &reply).await
    };
    if let Ok(Err(e)) = time::timeout(SERVER_TIMEOUT, exchange).await {
        log::debug!("fixed server: {e}");
    }
}

/// Whether `request` is whole: an HTTP request (its first line ends in `HTTP/1.x`) once its
/// header ends with a blank line, anything else once its first line has ended.
fn request_complete(request: &[u8]) -> bool {
    let Some(eol) = request.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = &request[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let http = line.len() >= 8 && line[line.len() - 8..].starts_with(b"HTTP/1.");
    !http || request.windows(2).any(|w| w == b"\n\n") || request.windows(3).any(|w| w == b"\n\r\n")
}

/// Suggested for the client's namespace before [`run`]: the widest ephemeral port range
/// (`net.ipv4.ip_local_port_range` 1024–65535), and `net.ipv4.tcp_tw_reuse=1` so that ports in
/// TIME_WAIT (left when the client closes first, as on errors) can be reused at once.
pub fn tune_client(ns: &Netns) -> anyhow::Result<()> {
    ns.set_sysctls(&[
        ("net.ipv4.ip_local_port_range", "1024 65535"),
        ("net.ipv4.tcp_tw_reuse", "1"),
    ])
}

/// What [`run`] does.
#[derive(Clone, Debug)]
pub struct TcpLoad {
    /// Connections in flight at once: one task each, making connections back to back.
    pub concurrency: usize,
    /// No connection starts after this much time.
    pub duration: Duration,
    /// No more than this many connections are attempted in all.
    pub max_connections: u64,
    /// How long a connect may take, and then again the request and the whole reply.
    pub connect_timeout: Duration,
    /// What each connection sends, such as `b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n"`.
    pub request: Vec<u8>,
}

/// What [`run`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct TcpResult {
    /// Connections that got a whole `200` reply naming a backend.
    pub completed: u64,
    /// Connections that did not: refused, timed out, reset, or a reply that is not `200` with a
    /// name.
    pub failed: u64,
    /// The first few error messages.
    pub errors: Vec<String>,
    /// From the start until the last connection ended.
    pub elapsed: Duration,
    /// Completed connections per second of `elapsed`.
    pub per_second: f64,
    /// Of completed connections, from the start of the connect to the end of the reply.
    pub latency_us: Percentiles,
    /// Completed connections per name in the reply's body.
    pub by_backend: BTreeMap<String, u64>,
}

/// Percentiles of a set of samples, exact (from the sorted samples, by nearest rank); all zero
/// for no samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    /// Sorts `samples` and takes their percentiles.
    pub fn of(samples: &mut [u32]) -> Percentiles {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Percentiles::default();
        }
        // Nearest rank: the smallest sample with at least `per_mille`/1000 of them at or below.
        let at = |per_mille: usize| u64::from(samples[(n * per_mille).div_ceil(1000) - 1]);
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Percentiles {
            p50: at(500),
            p90: at(900),
            p99: at(990),
            p999: at(999),
            max: at(1000),
            mean: sum as f64 / n as f64,
        }
    }
}

/// Runs `load` against `dst` from inside `ns`, on a runtime of two worker threads started
/// there: `load.concurrency` tasks each make connections back to back until `load.duration`
/// has passed or `load.max_connections` have been attempted in all. Each connection: connect,
/// write the request, read until the server closes, check that the reply is
/// `HTTP/1.x 200 ...` with a name as its body, close. Failures are counted, never fatal; the
/// run ends at most twice `load.connect_timeout` after `load.duration`. Errs only if the
/// namespace cannot be entered or the runtime cannot start.
///
/// Latencies are kept per connection (4 bytes each), which suits up to a few million. Call
/// [`tune_client`] on `ns` first for long or fast runs.
pub fn run(ns: &Netns, dst: SocketAddr, load: &TcpLoad) -> anyhow::Result<TcpResult> {
    ensure!(
        load.concurrency > 0,
        "a TCP load needs a concurrency of 1 or more"
    );
    ns.run(|| -> anyhow::Result<TcpResult> {
        let runtime = runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .thread_name("tcp-load")
            .enable_all()
            .build()
            .context("starting the client's runtime")?;
        runtime.block_on(drive(dst, load))
    })?
}

/// The body of [`run`], on the client's runtime.
async fn drive(dst: SocketAddr, load: &TcpLoad) -> anyhow::Result<TcpResult> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let attempts = Arc::new(AtomicU64::new(0));
    let request: Arc<[u8]> = load.request.as_slice().into();
    let tasks: Vec<_> = (0..load.concurrency)
        .map(|_| {
            let worker = Worker {
                dst,
                request: Arc::clone(&request),
                timeout: load.connect_timeout,
                deadline,
                attempts: Arc::clone(&attempts),
                max_connections: load.max_connections,
            };
            tokio::spawn(worker.run())
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut errors = Vec::new();
    let mut by_backend = BTreeMap::new();
    for task in tasks {
        let tally = task.await.context("a load task failed")?;
        latencies.extend(tally.latencies_us);
        failed += tally.failed;
        errors.extend(tally.errors);
        for (name, count) in tally.by_backend {
            *by_backend.entry(name).or_default() += count;
        }
    }
    let elapsed = start.elapsed();
    errors.truncate(MAX_ERRORS);
    let completed = latencies.len() as u64;
    Ok(TcpResult {
        completed,
        failed,
        errors,
        elapsed,
        per_second: completed as f64 / elapsed.as_secs_f64(),
        latency_us: Percentiles::of(&mut latencies),
        by_backend,
    })
}

/// One of [`run`]'s tasks.
struct Worker {
    dst: SocketAddr,
    request: Arc<[u8]>,
    timeout: Duration,
    deadline: Instant,
    /// Connections attempted by all tasks, shared.
    attempts: Arc<AtomicU64>,
    max_connections: u64,
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    failed: u64,
    errors: Vec<String>,
    by_backend: BTreeMap<String, u64>,
}

impl Worker {
    async fn run(self) -> Tally {
        let mut tally = Tally::default();
        let mut reply = Vec::with_capacity(MAX_REPLY);
        while Instant::now() < self.deadline
            && self.attempts.fetch_add(1, Ordering::Relaxed) < self.max_connections
        {
            let began = Instant::now();
            match self.connection(&mut reply).await {
                Ok(name) => {
                    let micros = began.elapsed().as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    match tally.by_backend.get_mut(name) {
                        Some(count) => *count += 1,
                        None => {
                            tally.by_backend.insert(name.to_owned(), 1);
                        }
                    }
                }
                Err(e) => {
                    tally.failed += 1;
                    if tally.errors.len() < MAX_ERRORS {
                        tally.errors.push(e);
                    }
                }
            }
        }
        tally
    }

    /// One connection: returns the name in the reply, which is read into `reply`.
    async fn connection<'r>(&self, reply: &'r mut Vec<u8>) -> Result<&'r str, String> {
        let (dst, timeout) = (self.dst, self.timeout);
        let stream = match time::timeout(timeout, TcpStream::connect(dst)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("connecting to {dst}: {e}")),
            Err(_) => return Err(format!("connecting to {dst}: no answer in {timeout:?}")),
        };
        reply.clear();
        let exchange = async {
            write_all(&stream, &self.request).await?;
            read_to_end(&stream, reply).await
        };
        match time::timeout(timeout, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("talking to {dst}: {e}")),
            Err(_) => {
                return Err(format!(
                    "talking to {dst}: no whole reply in {timeout:?} ({} bytes so far)",
                    reply.len()
                ))
            }
        }
        backend_name(reply).map_err(|e| format!("reply from {dst}: {e}"))
    }
}

/// The name in an HTTP/1.x `200` reply's body.
pub fn backend_name(reply: &[u8]) -> Result<&str, String> {
    let start = &reply[..reply.len().min(120)];
    let quoted = || format!("{:?}", String::from_utf8_lossy(start));
    let status = reply.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut fields = status.split(|&b| b == b' ');
    let version = fields.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") || fields.next() != Some(b"200") {
        return Err(format!("not an HTTP/1.x 200 reply: {}", quoted()));
    }
    let body = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| &reply[end + 4..])
        .ok_or_else(|| format!("no end of header: {}", quoted()))?;
    if !is_name(body) {
        return Err(format!("the body is not a backend's name: {}", quoted()));
    }
    // A name is ASCII.
    std::str::from_utf8(body).map_err(|e| e.to_string())
}

fn is_name(name: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&name.len()) && name.iter().all(u8::is_ascii_graphic)
}

/// Reads what is available (waiting for something); 0 at end of stream.
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await?,
            result => return result,
        }
    }
}

/// Reads until the peer closes, failing beyond [`MAX_REPLY`] bytes.
async fn read_to_end(stream: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0; 1024];
    loop {
        match read_some(stream, &mut buf).await? {
            0 => return Ok(()),
            n if out.len() + n > MAX_REPLY => {
                return Err(io::Error::other(format!(
                    "reply longer than {MAX_REPLY} bytes"
                )))
            }
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_end_where_expected() {
        assert!(!request_complete(b""));
        assert!(!request_complete(b"hello"));
        assert!(request_complete(b"hello\n"));
        assert!(request_complete(b"hello\r\n"));
        assert!(!request_complete(b"GET / HTTP/1.0\r\n"));
        assert!(!request_complete(b"GET / HTTP/1.0\r\nHost: vip\r\n"));
        assert!(request_complete(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n"));
        assert!(request_complete(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(request_complete(b"GET / HTTP/1.0\nHost: vip\n\n"));
    }

    #[test]
    fn replies_name_their_backend() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nb1";
        assert_eq!(backend_name(ok), Ok("b1"));
        assert_eq!(backend_name(b"HTTP/1.1 200 OK\r\n\r\nb2"), Ok("b2"));
        let unavailable = b"HTTP/1.1 503 Service Unavailable\r\n\r\n<html>No server</html>\n";
        assert!(backend_name(unavailable)
            .unwrap_err()
            .contains("not an HTTP/1.x 200"));
        assert!(backend_name(b"HTTP/1.0 200 OK\r\n\r\n")
            .unwrap_err()
            .contains("not a backend's name"));
        assert!(backend_name(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(backend_name(b"b1\n").is_err());
        assert!(backend_name(b"").is_err());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500, 900, 990, 999, 1000)
        );
        assert!((p.mean - 500.5).abs() < 1e-9);
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
        let one = Percentiles::of(&mut [7]);
        assert_eq!((one.p50, one.p999, one.max, one.mean), (7, 7, 7, 7.0));
    }
}
