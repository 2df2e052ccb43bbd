//! One probe of one backend, of any [`CheckKind`], bounded by a timeout.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::{fd::AsRawFd, unix::process::ExitStatusExt},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpSocket, TcpStream, UdpSocket},
    process::Command,
};
use tokio_rustls::TlsConnector;

use super::{dns, random::random_u64, state::ProbeOutcome, tls};
use crate::model::{CheckKind, ProbeRoute, Protocol};

/// The most of an HTTP response that is read.
const HTTP_RESPONSE_CAP: usize = 64 * 1024;
/// The longest line of a command's output quoted in a detail.
const QUOTED_LINE_CAP: usize = 200;

/// A check's kind ready to probe with: an https check's TLS client is
/// made once, not per probe.
pub struct Prober {
    kind: CheckKind,
    /// An https check's client, or why it could not be made (each probe
    /// fails with that).
    tls: Option<Result<TlsConnector, String>>,
}

impl Prober {
    pub fn new(kind: &CheckKind) -> Prober {
        let tls = match kind {
            CheckKind::Http { tls: Some(tls), .. } => Some(tls::connector(tls)),
            _ => None,
        };
        Prober {
            kind: kind.clone(),
            tls,
        }
    }

    /// Probes `target` (on behalf of `backend`, which exec checks are told
    /// about) and says what happened; the whole probe takes at most `timeout`.
    pub async fn probe(
        &self,
        target: SocketAddr,
        timeout: Duration,
        backend: SocketAddr,
        route: Option<ProbeRoute>,
    ) -> ProbeOutcome {
        let at = SystemTime::now();
        let started = Instant::now();
        let mut stage = "while connecting";
        let result = tokio::time::timeout(
            timeout,
            run(self, target, backend, route, started, &mut stage),
        )
        .await;
        let (ok, detail) = match result {
            Ok(Ok(detail)) => (true, detail),
            Ok(Err(detail)) => (false, detail),
            Err(_) => (
                false,
                format!(
                    "timeout after {} {stage}",
                    humantime::format_duration(timeout)
                ),
            ),
        };
        ProbeOutcome {
            ok,
            detail,
            at,
            took: started.elapsed(),
        }
    }
}

/// Ok or Err, the detail; sets `stage` to what it waits for (for the
/// timeout's detail).
async fn run(
    prober: &Prober,
    target: SocketAddr,
    backend: SocketAddr,
    route: Option<ProbeRoute>,
    started: Instant,
    stage: &mut &'static str,
) -> Result<String, String> {
    match &prober.kind {
        CheckKind::Tcp => {
            let stream = connect_tcp(target, route).await?;
            let took = started.elapsed();
            // Close with a reset, as HAProxy does: no FIN exchange, and no
            // TIME_WAIT socket per probe.
            stream.set_zero_linger().map_err(|e| describe(&e))?;
            Ok(format!("connected in {}", millis(took)))
        }
        CheckKind::Http {
            path,
            host,
            status,
            body,
            tls,
        } => {
            let stream = connect_tcp(target, route).await?;
            let host = host.clone().unwrap_or_else(|| host_header(target));
            let path = if path.is_empty() { "/" } else { path };
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: xlb-health\r\nAccept: */*\r\n\r\n"
            );
            let response = match (tls, &prober.tls) {
                (Some(settings), Some(connector)) => {
                    let connector = connector.as_ref().map_err(Clone::clone)?;
                    *stage = "during the TLS handshake";
                    let mut stream = connector
                        .connect(tls::server_name(settings, target.ip()), stream)
                        .await
                        .map_err(|e| tls::handshake_failure(&e, describe))?;
                    exchange(&mut stream, request.as_bytes(), stage).await?
                }
                _ => {
                    let mut stream = stream;
                    exchange(&mut stream, request.as_bytes(), stage).await?
                }
            };
            let verdict = judge_http(&response, status, body.as_deref());
            verdict.map(|summary| format!("{summary} in {}", millis(started.elapsed())))
        }
        CheckKind::Udp { payload, expect } => {
            let socket = connected_udp(target, route).await?;
            socket.send(payload).await.map_err(|e| describe(&e))?;
            *stage = "waiting for a reply";
            let mut reply = vec![0; 65535];
            let len = socket.recv(&mut reply).await.map_err(|e| describe(&e))?;
            let reply = &reply[..len];
            if let Some(expect) = expect {
                if !contains(reply, expect) {
                    return Err(format!(
                        "reply of {len} bytes lacks {:?}",
                        String::from_utf8_lossy(expect)
                    ));
                }
            }
            Ok(format!(
                "reply of {len} bytes in {}",
                millis(started.elapsed())
            ))
        }
        CheckKind::Dns {
            name,
            qtype,
            transport,
        } => {
            let id = random_u64() as u16;
            let query = dns::encode_query(id, name, *qtype).map_err(|e| e.to_string())?;
            let header = match transport {
                Protocol::Udp => dns_over_udp(target, route, id, &query, stage).await?,
                Protocol::Tcp => dns_over_tcp(target, route, id, &query, stage).await?,
            };
            judge_dns(&header).map(|summary| format!("{summary} in {}", millis(started.elapsed())))
        }
        CheckKind::Exec { command } => {
            *stage = "waiting for the command";
            run_command(command, target, backend).await?;
            Ok(format!("exit 0 in {}", millis(started.elapsed())))
        }
    }
}

/// Sends `request` and reads the response to it.
async fn exchange(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    request: &[u8],
    stage: &mut &'static str,
) -> Result<Vec<u8>, String> {
    *stage = "while sending the request";
    send(stream, request)
        .await
        .map_err(|e| format!("{} while sending the request", describe(&e)))?;
    *stage = "waiting for the response";
    read_response(stream).await
}

/// The header of the answer to `query` (of `id`) over UDP: datagrams of
/// other ids are strays, skipped.
async fn dns_over_udp(
    target: SocketAddr,
    route: Option<ProbeRoute>,
    id: u16,
    query: &[u8],
    stage: &mut &'static str,
) -> Result<dns::Header, String> {
    let socket = connected_udp(target, route).await?;
    socket.send(query).await.map_err(|e| describe(&e))?;
    *stage = "waiting for a DNS reply";
    let mut reply = [0; 512];
    loop {
        let len = socket.recv(&mut reply).await.map_err(|e| describe(&e))?;
        let Some(header) = dns::decode_header(&reply[..len]) else {
            return Err(format!("malformed DNS reply of {len} bytes"));
        };
        if header.id == id {
            return Ok(header);
        }
    }
}

/// The header of the answer to `query` (of `id`) over TCP, each message
/// after its two-byte length (RFC 1035 4.2.2).
async fn dns_over_tcp(
    target: SocketAddr,
    route: Option<ProbeRoute>,
    id: u16,
    query: &[u8],
    stage: &mut &'static str,
) -> Result<dns::Header, String> {
    let mut stream = connect_tcp(target, route).await?;
    *stage = "while sending the query";
    send(&mut stream, &dns::tcp_message(query))
        .await
        .map_err(|e| format!("{} while sending the query", describe(&e)))?;
    *stage = "waiting for a DNS reply";
    let closed = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => "connection closed without a DNS reply".to_owned(),
        _ => format!("{} while reading the DNS reply", describe(&e)),
    };
    let mut length = [0; 2];
    stream.read_exact(&mut length).await.map_err(closed)?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut reply).await.map_err(closed)?;
    let Some(header) = dns::decode_header(&reply) else {
        return Err(format!("malformed DNS reply of {} bytes", reply.len()));
    };
    if header.id != id {
        return Err(format!(
            "the reply is to another query (id {}, not {id})",
            header.id
        ));
    }
    Ok(header)
}

/// A TCP connection to `target`, through `route` if given.
async fn connect_tcp(target: SocketAddr, route: Option<ProbeRoute>) -> Result<TcpStream, String> {
    let Some(route) = route else {
        return TcpStream::connect(target).await.map_err(|e| describe(&e));
    };
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("cannot open a TCP socket: {}", describe(&e)))?;
    routed(&socket, route)?;
    socket
        .bind(SocketAddr::new(route.source, 0))
        .map_err(|e| format!("cannot bind to {}: {}", route.source, describe(&e)))?;
    socket.connect(target).await.map_err(|e| describe(&e))
}

async fn connected_udp(target: SocketAddr, route: Option<ProbeRoute>) -> Result<UdpSocket, String> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let local = route.map_or(any, |r| r.source);
    let socket = std::net::UdpSocket::bind((local, 0))
        .map_err(|e| format!("cannot open a UDP socket: {}", describe(&e)))?;
    if let Some(route) = route {
        routed(&socket, route)?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot open a UDP socket: {}", describe(&e)))?;
    let socket = UdpSocket::from_std(socket)
        .map_err(|e| format!("cannot open a UDP socket: {}", describe(&e)))?;
    socket.connect(target).await.map_err(|e| describe(&e))?;
    Ok(socket)
}

/// Marks the socket's packets with the route's mark, which the director's
/// tc program (`xlb_health`) sends through the data path.
fn routed(socket: &impl AsRawFd, route: ProbeRoute) -> Result<(), String> {
    let mark = route.mark;
    // SAFETY: an open socket and a u32 option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(format!("cannot mark the probe's socket: {}", describe(&e)));
    }
    Ok(())
}

fn judge_dns(header: &dns::Header) -> Result<String, String> {
    if !header.response {
        return Err("the reply is a query (QR=0), not a response".to_owned());
    }
    let rcode = dns::rcode_name(header.rcode);
    if header.rcode != 0 {
        return Err(rcode);
    }
    let truncated = if header.truncated { ", truncated" } else { "" };
    Ok(format!("{rcode} ({} answers{truncated})", header.answers))
}

async fn run_command(
    command: &[String],
    target: SocketAddr,
    backend: SocketAddr,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no command to run".to_owned());
    };
    let output = Command::new(program)
        .args(args)
        .env("XLB_BACKEND_ADDR", backend.ip().to_string())
        .env("XLB_BACKEND_PORT", backend.port().to_string())
        .env("XLB_TARGET_ADDR", target.ip().to_string())
        .env("XLB_TARGET_PORT", target.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timeout drops the future and with it the child.
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {}", describe(&e)))?;
    if output.status.success() {
        return Ok(());
    }
    let ended = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => output.status.to_string(),
    };
    // What the command said: stderr, or stdout if it said nothing there.
    let said = first_line(&output.stderr).or_else(|| first_line(&output.stdout));
    Err(match said {
        Some(line) => format!("{ended}: {line}"),
        None => ended,
    })
}

/// The first non-blank line of `output`, trimmed and shortened.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|line| !line.is_empty())?;
    let mut quoted: String = line.chars().take(QUOTED_LINE_CAP).collect();
    if quoted.len() < line.len() {
        quoted.push('…');
    }
    Some(quoted)
}

async fn send(stream: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> io::Result<()> {
    stream.write_all(data).await?;
    stream.flush().await
}

/// Reads the response until the server closes, its Content-Length is
/// reached, or [`HTTP_RESPONSE_CAP`] bytes have come.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, String> {
    let mut response = Vec::new();
    let mut head_read = false;
    // Where the response ends, if its head tells.
    let mut end = None;
    loop {
        if !head_read {
            match parse_head(&response) {
                Ok(None) => {}
                Ok(Some(head)) => {
                    head_read = true;
                    end = head.body_len.map(|len| head.body_start.saturating_add(len));
                }
                // Nothing more to learn: the verdict reports it.
                Err(_) => return Ok(response),
            }
        }
        if response.len() >= HTTP_RESPONSE_CAP || end.is_some_and(|end| response.len() >= end) {
            return Ok(response);
        }
        let filled = response.len();
        response.resize((filled + 8192).min(HTTP_RESPONSE_CAP), 0);
        match stream.read(&mut response[filled..]).await {
            Ok(0) => {
                response.truncate(filled);
                return Ok(response);
            }
            Ok(read) => response.truncate(filled + read),
            // A reset (or a TLS close without close_notify) after the head
            // still leaves a status to judge.
            Err(_) if head_read => {
                response.truncate(filled);
                return Ok(response);
            }
            Err(e) => {
                return Err(format!("{} while reading the response", describe(&e)));
            }
        }
    }
}

/// A response's status line and framing.
#[derive(Debug, PartialEq, Eq)]
struct Head<'a> {
    status: u16,
    reason: &'a str,
    body_start: usize,
    /// Known from Content-Length, or empty by the status; else until EOF.
    body_len: Option<usize>,
}

/// The head of `response`, `Ok(None)` while its headers are incomplete.
fn parse_head(response: &[u8]) -> Result<Option<Head<'_>>, String> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&response[..end])
        .map_err(|_| "malformed response: headers are not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let malformed = || format!("malformed status line {:?}", quote(status_line));
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed());
    }
    let status: u16 = code.parse().map_err(|_| malformed())?;
    let mut body_len = match status {
        100..=199 | 204 | 304 => Some(0),
        _ => None,
    };
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") && body_len.is_none() {
                body_len = value.trim().parse().ok();
            }
        }
    }
    Ok(Some(Head {
        status,
        reason: parts.next().unwrap_or_default().trim(),
        body_start: end + 4,
        body_len,
    }))
}

/// The verdict on a complete (or capped) response.
fn judge_http(
    response: &[u8],
    wanted: &std::ops::RangeInclusive<u16>,
    wanted_body: Option<&str>,
) -> Result<String, String> {
    let head = match parse_head(response)? {
        Some(head) => head,
        None if response.is_empty() => return Err("connection closed without a response".into()),
        None if response.len() >= HTTP_RESPONSE_CAP => {
            return Err("response headers longer than 64 KiB".into());
        }
        None => return Err("connection closed in the response headers".into()),
    };
    let summary = format!("HTTP {} {}", head.status, head.reason);
    let summary = summary.trim_end();
    if !wanted.contains(&head.status) {
        let expected = if wanted.start() == wanted.end() {
            wanted.start().to_string()
        } else {
            format!("{}-{}", wanted.start(), wanted.end())
        };
        return Err(format!("{summary} (expected {expected})"));
    }
    if let Some(wanted_body) = wanted_body {
        let body = &response[head.body_start..];
        let body = &body[..head.body_len.unwrap_or(body.len()).min(body.len())];
        if !contains(body, wanted_body.as_bytes()) {
            let read = if response.len() >= HTTP_RESPONSE_CAP {
                " (read the first 64 KiB)"
            } else {
                ""
            };
            return Err(format!(
                "{summary} but the body lacks {wanted_body:?}{read}"
            ));
        }
    }
    Ok(summary.to_owned())
}

/// A status line shortened for a detail.
fn quote(line: &str) -> String {
    line.chars().take(QUOTED_LINE_CAP).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The Host header naming `target`: the port is left out when it is 80.
fn host_header(target: SocketAddr) -> String {
    let ip = match target.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    if target.port() == 80 {
        ip
    } else {
        format!("{ip}:{}", target.port())
    }
}

/// An I/O error as an operator reads it: "connection refused", without the
/// "(os error 111)".
fn describe(error: &io::Error) -> String {
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", error.kind()),
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use tokio::{net::TcpListener, sync::mpsc};

    use super::*;

    /// Ample for a probe that should succeed, or fail fast.
    const TIMEOUT: Duration = Duration::from_secs(1);
    /// For probes that should time out.
    const SHORT: Duration = Duration::from_millis(300);
    /// Slack for scheduling beyond a probe's timeout.
    const MARGIN: Duration = Duration::from_millis(200);
    const BACKEND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8080);

    async fn run_probe(kind: &CheckKind, target: SocketAddr) -> ProbeOutcome {
        let outcome = Prober::new(kind)
            .probe(target, TIMEOUT, BACKEND, None)
            .await;
        assert!(outcome.took <= TIMEOUT + MARGIN, "took {:?}", outcome.took);
        outcome
    }

    async fn assert_times_out(kind: &CheckKind, target: SocketAddr, stage: &str) {
        let outcome = Prober::new(kind).probe(target, SHORT, BACKEND, None).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, format!("timeout after 300ms {stage}"));
        assert!(
            (SHORT..SHORT + MARGIN).contains(&outcome.took),
            "took {:?}",
            outcome.took
        );
    }

    /// An address nothing listens on.
    async fn closed_tcp_port(ip: IpAddr) -> SocketAddr {
        TcpListener::bind((ip, 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn http(status: std::ops::RangeInclusive<u16>, body: Option<&str>) -> CheckKind {
        CheckKind::Http {
            path: "/health".into(),
            host: None,
            status,
            body: body.map(Into::into),
            tls: None,
        }
    }

    /// Reads a request's head from `stream`.
    async fn read_request(stream: &TcpStream) -> String {
        let mut request = Vec::new();
        let mut buf = [0; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            stream.readable().await.unwrap();
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(request).unwrap()
    }

    /// Answers every request with `response` (none if `None`), then closes
    /// unless `keep_open`; sends each request's head to the returned channel.
    async fn http_server(
        response: Option<&'static str>,
        keep_open: bool,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let requests = requests.clone();
                tokio::spawn(async move {
                    requests.send(read_request(&stream).await).unwrap();
                    if let Some(response) = response {
                        send(&mut stream, response.as_bytes()).await.unwrap();
                    }
                    if keep_open || response.is_none() {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                });
            }
        });
        (addr, received)
    }

    #[tokio::test]
    async fn tcp_connects() {
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let listener = TcpListener::bind((ip, 0)).await.unwrap();
            let outcome = run_probe(&CheckKind::Tcp, listener.local_addr().unwrap()).await;
            assert!(outcome.ok, "{outcome:?}");
            assert!(
                outcome.detail.starts_with("connected in "),
                "{}",
                outcome.detail
            );
            assert!(outcome.detail.ends_with(" ms"), "{}", outcome.detail);
        }
    }

    #[tokio::test]
    async fn tcp_refused() {
        let target = closed_tcp_port(Ipv4Addr::LOCALHOST.into()).await;
        let outcome = run_probe(&CheckKind::Tcp, target).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "connection refused");
        assert!(outcome.took < TIMEOUT);
    }

    #[tokio::test]
    async fn http_ok_sends_a_proper_request() {
        let (addr, mut requests) = http_server(
            Some("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"),
            false,
        )
        .await;
        let outcome = run_probe(&http(200..=299, Some("OK")), addr).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(
            outcome.detail.starts_with("HTTP 200 OK in "),
            "{}",
            outcome.detail
        );
        assert_eq!(
            requests.recv().await.unwrap(),
            format!(
                "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
                 User-Agent: xlb-health\r\nAccept: */*\r\n\r\n",
                addr.port()
            )
        );
    }

    #[tokio::test]
    async fn http_host_header_as_configured() {
        let (addr, mut requests) =
            http_server(Some("HTTP/1.0 204 No Content\r\n\r\n"), false).await;
        let kind = CheckKind::Http {
            path: String::new(),
            host: Some("www.example.test".into()),
            status: 200..=299,
            body: None,
            tls: None,
        };
        let outcome = run_probe(&kind, addr).await;
        assert!(outcome.ok, "{outcome:?}");
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("GET / HTTP/1.1\r\nHost: www.example.test\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn http_content_length_ends_the_response() {
        // The server keeps the connection open: the length must end it.
        let (addr, _requests) = http_server(
            Some("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nhealthy"),
            true,
        )
        .await;
        let outcome = run_probe(&http(200..=200, Some("healthy")), addr).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(outcome.took < TIMEOUT);
    }

    #[tokio::test]
    async fn http_body_until_eof() {
        let response =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nhealthy\r\n0\r\n\r\n";
        let (addr, _requests) = http_server(Some(response), false).await;
        let outcome = run_probe(&http(200..=200, Some("healthy")), addr).await;
        assert!(outcome.ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn http_bad_status() {
        let (addr, _requests) = http_server(
            Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
            false,
        )
        .await;
        let outcome = run_probe(&http(200..=299, None), addr).await;
        assert!(!outcome.ok);
        assert_eq!(
            outcome.detail,
            "HTTP 503 Service Unavailable (expected 200-299)"
        );
    }

    #[tokio::test]
    async fn http_body_lacks_the_text() {
        let (addr, _requests) = http_server(
            Some("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsick"),
            false,
        )
        .await;
        let outcome = run_probe(&http(200..=200, Some("OK")), addr).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "HTTP 200 OK but the body lacks \"OK\"");
    }

    #[tokio::test]
    async fn http_garbage() {
        let (addr, _requests) = http_server(Some("SSH-2.0-OpenSSH_9.6\r\n\r\n"), false).await;
        let outcome = run_probe(&http(200..=200, None), addr).await;
        assert_eq!(
            outcome.detail,
            "malformed status line \"SSH-2.0-OpenSSH_9.6\""
        );
        let (addr, _requests) = http_server(Some(""), false).await;
        let outcome = run_probe(&http(200..=200, None), addr).await;
        assert_eq!(outcome.detail, "connection closed without a response");
    }

    #[tokio::test]
    async fn http_no_answer_times_out() {
        let (addr, _requests) = http_server(None, false).await;
        assert_times_out(&http(200..=200, None), addr, "waiting for the response").await;
    }

    #[tokio::test]
    async fn http_refused() {
        let target = closed_tcp_port(Ipv6Addr::LOCALHOST.into()).await;
        let outcome = run_probe(&http(200..=200, None), target).await;
        assert_eq!(outcome.detail, "connection refused");
    }

    #[test]
    fn host_headers() {
        assert_eq!(host_header("192.0.2.1:80".parse().unwrap()), "192.0.2.1");
        assert_eq!(
            host_header("192.0.2.1:8080".parse().unwrap()),
            "192.0.2.1:8080"
        );
        assert_eq!(
            host_header("[2001:db8::1]:80".parse().unwrap()),
            "[2001:db8::1]"
        );
        assert_eq!(host_header("[::1]:8443".parse().unwrap()), "[::1]:8443");
    }

    #[test]
    fn io_errors_read_plainly() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe(&io::Error::from_raw_os_error(111)),
            "connection refused"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(113)),
            "no route to host"
        );
        assert_eq!(describe(&refused), "connection refused");
    }

    /// Echoes every datagram; with `reply` false, reads and drops them.
    async fn udp_server(reply: bool) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0; 2048];
            loop {
                let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
                if reply {
                    socket.send_to(&buf[..len], peer).await.unwrap();
                }
            }
        });
        addr
    }

    fn udp(expect: Option<&[u8]>) -> CheckKind {
        CheckKind::Udp {
            payload: b"ping".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
        }
    }

    #[tokio::test]
    async fn udp_reply() {
        let addr = udp_server(true).await;
        let outcome = run_probe(&udp(None), addr).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(
            outcome.detail.starts_with("reply of 4 bytes in "),
            "{}",
            outcome.detail
        );
        assert!(run_probe(&udp(Some(b"in")), addr).await.ok);
        let outcome = run_probe(&udp(Some(b"pong")), addr).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "reply of 4 bytes lacks \"pong\"");
    }

    #[tokio::test]
    async fn udp_no_reply_times_out() {
        let addr = udp_server(false).await;
        assert_times_out(&udp(None), addr, "waiting for a reply").await;
    }

    #[tokio::test]
    async fn udp_port_unreachable_is_refused() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed = socket.local_addr().unwrap();
        drop(socket);
        let outcome = run_probe(&udp(None), closed).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "connection refused");
        assert!(outcome.took < TIMEOUT);
    }

    /// Answers each query with the datagrams `answer` makes of it, and
    /// sends each query to the returned channel.
    async fn dns_server(
        answer: fn(&[u8]) -> Vec<Vec<u8>>,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
        let socket = UdpSocket::bind("[::1]:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (queries, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0; 512];
            loop {
                let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
                for reply in answer(&buf[..len]) {
                    socket.send_to(&reply, peer).await.unwrap();
                }
                queries.send(buf[..len].to_vec()).unwrap();
            }
        });
        (addr, received)
    }

    /// A reply to `query` with `flags`, one answer, no records after the header.
    fn reply(query: &[u8], flags: u16) -> Vec<u8> {
        let mut reply = query[..2].to_vec();
        reply.extend_from_slice(&flags.to_be_bytes());
        reply.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
        reply
    }

    const DNS: CheckKind = CheckKind::Dns {
        name: String::new(),
        qtype: 1,
        transport: Protocol::Udp,
    };

    fn dns_check(name: &str) -> CheckKind {
        CheckKind::Dns {
            name: name.into(),
            qtype: 28,
            transport: Protocol::Udp,
        }
    }

    #[tokio::test]
    async fn dns_noerror() {
        let (addr, mut queries) = dns_server(|query| vec![reply(query, 0x8180)]).await;
        let outcome = run_probe(&dns_check("www.example.test"), addr).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(
            outcome.detail.starts_with("NOERROR (1 answers) in "),
            "{}",
            outcome.detail
        );
        let query = queries.recv().await.unwrap();
        let id = u16::from_be_bytes([query[0], query[1]]);
        assert_eq!(
            query,
            dns::encode_query(id, "www.example.test", 28).unwrap()
        );
    }

    #[tokio::test]
    async fn dns_truncated_noerror_is_ok() {
        let (addr, _queries) = dns_server(|query| vec![reply(query, 0x8380)]).await;
        let outcome = run_probe(&DNS, addr).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(
            outcome
                .detail
                .starts_with("NOERROR (1 answers, truncated) in "),
            "{}",
            outcome.detail
        );
    }

    #[tokio::test]
    async fn dns_error_rcodes() {
        let (addr, _queries) = dns_server(|query| vec![reply(query, 0x8183)]).await;
        let outcome = run_probe(&dns_check("nowhere.test"), addr).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "NXDOMAIN");
        let (addr, _queries) = dns_server(|query| vec![reply(query, 0x8105)]).await;
        assert_eq!(run_probe(&DNS, addr).await.detail, "REFUSED");
    }

    #[tokio::test]
    async fn dns_ignores_other_ids() {
        let (addr, _queries) = dns_server(|query| {
            let mut stray = reply(query, 0x8182);
            stray[0] ^= 0xff;
            vec![stray, reply(query, 0x8180)]
        })
        .await;
        assert!(run_probe(&DNS, addr).await.ok);
    }

    #[tokio::test]
    async fn dns_echo_is_not_an_answer() {
        let addr = udp_server(true).await;
        let outcome = run_probe(&DNS, addr).await;
        assert_eq!(
            outcome.detail,
            "the reply is a query (QR=0), not a response"
        );
    }

    #[tokio::test]
    async fn dns_no_reply_times_out() {
        let (addr, _queries) = dns_server(|_| Vec::new()).await;
        assert_times_out(&DNS, addr, "waiting for a DNS reply").await;
    }

    #[tokio::test]
    async fn dns_bad_name() {
        let outcome = run_probe(&dns_check("a..b"), "127.0.0.1:53".parse().unwrap()).await;
        assert_eq!(outcome.detail, "empty label in DNS name \"a..b\"");
    }

    /// Answers each query over TCP with the messages `answer` makes of it,
    /// each after its length, the length and the message in separate
    /// writes; then closes.
    async fn dns_tcp_server(answer: fn(&[u8]) -> Vec<Vec<u8>>) -> SocketAddr {
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut length = [0; 2];
                stream.read_exact(&mut length).await.unwrap();
                let mut query = vec![0; usize::from(u16::from_be_bytes(length))];
                stream.read_exact(&mut query).await.unwrap();
                for reply in answer(&query) {
                    let framed = dns::tcp_message(&reply);
                    send(&mut stream, &framed[..2]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    send(&mut stream, &framed[2..]).await.unwrap();
                }
            }
        });
        addr
    }

    fn dns_over_tcp(name: &str) -> CheckKind {
        CheckKind::Dns {
            name: name.into(),
            qtype: 1,
            transport: Protocol::Tcp,
        }
    }

    #[tokio::test]
    async fn dns_over_tcp_frames_the_query_and_the_reply() {
        let addr = dns_tcp_server(|query| {
            // The whole query, as the UDP check sends it, after its length.
            let id = u16::from_be_bytes([query[0], query[1]]);
            assert_eq!(query, dns::encode_query(id, "example.com", 1).unwrap());
            vec![reply(query, 0x8180)]
        })
        .await;
        let outcome = run_probe(&dns_over_tcp("example.com"), addr).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(
            outcome.detail.starts_with("NOERROR (1 answers) in "),
            "{}",
            outcome.detail
        );
        // Nothing listens on UDP there: the check did not ask over UDP.
        let over_udp = CheckKind::Dns {
            name: "example.com".into(),
            qtype: 1,
            transport: Protocol::Udp,
        };
        assert!(!run_probe(&over_udp, addr).await.ok);
    }

    #[tokio::test]
    async fn dns_over_tcp_judges_the_reply() {
        let addr = dns_tcp_server(|query| vec![reply(query, 0x8182)]).await;
        assert_eq!(
            run_probe(&dns_over_tcp("a.test"), addr).await.detail,
            "SERVFAIL"
        );
        let addr = dns_tcp_server(|query| {
            let mut other = reply(query, 0x8180);
            other[0] ^= 0xff;
            vec![other]
        })
        .await;
        let detail = run_probe(&dns_over_tcp("a.test"), addr).await.detail;
        assert!(
            detail.starts_with("the reply is to another query (id "),
            "{detail}"
        );
        let addr = dns_tcp_server(|_| Vec::new()).await;
        assert_eq!(
            run_probe(&dns_over_tcp("a.test"), addr).await.detail,
            "connection closed without a DNS reply"
        );
        let refused = closed_tcp_port(Ipv6Addr::LOCALHOST.into()).await;
        assert_eq!(
            run_probe(&dns_over_tcp("a.test"), refused).await.detail,
            "connection refused"
        );
    }

    /// A throwaway CA and a server certificate it signed for 127.0.0.1
    /// and www.example.test, made by openssl in a directory of their own.
    struct Certs {
        dir: std::path::PathBuf,
    }

    impl Certs {
        fn new() -> Certs {
            let dir = std::env::temp_dir().join(format!("xlb-tls-{}", random_u64()));
            std::fs::create_dir(&dir).unwrap();
            let san = dir.join("san.cnf");
            std::fs::write(&san, "subjectAltName=IP:127.0.0.1,DNS:www.example.test\n").unwrap();
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            let steps: [&[&str]; 3] = [
                &[
                    &["req", "-x509"],
                    &ec[..],
                    &[
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.pem",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=xlb test CA",
                    ],
                ]
                .concat(),
                &[
                    &["req"],
                    &ec[..],
                    &[
                        "-keyout",
                        "server.key",
                        "-out",
                        "server.csr",
                        "-subj",
                        "/CN=backend",
                    ],
                ]
                .concat(),
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "san.cnf",
                ],
            ];
            for args in steps {
                let out = std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .output()
                    .expect("openssl runs");
                assert!(out.status.success(), "openssl {args:?}: {out:?}");
            }
            Certs { dir }
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.join(name)
        }
    }

    impl Drop for Certs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// An https server on 127.0.0.1 with `certs`' server certificate that
    /// answers every request with `response`.
    async fn https_server(certs: &Certs, response: &'static str) -> SocketAddr {
        use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        use tokio_rustls::{rustls, TlsAcceptor};
        let chain = CertificateDer::pem_file_iter(certs.path("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake.
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = send(&mut stream, response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        addr
    }

    fn https(
        status: std::ops::RangeInclusive<u16>,
        body: Option<&str>,
        tls: crate::model::TlsCheck,
    ) -> CheckKind {
        CheckKind::Http {
            path: "/health".into(),
            host: None,
            status,
            body: body.map(Into::into),
            tls: Some(tls),
        }
    }

    fn tls(
        sni: Option<&str>,
        verify: bool,
        ca_file: Option<std::path::PathBuf>,
    ) -> crate::model::TlsCheck {
        crate::model::TlsCheck {
            sni: sni.map(Into::into),
            verify,
            ca_file,
        }
    }

    const HEALTHY: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhealthy";

    #[tokio::test]
    async fn https_verdicts() {
        let certs = Certs::new();
        let addr = https_server(&certs, HEALTHY).await;
        let ca = Some(certs.path("ca.pem"));
        let passes = [
            // Any certificate, as keepalived's SSL_GET takes it.
            tls(None, false, None),
            // Signed by the CA, for the address probed.
            tls(None, true, ca.clone()),
            // Signed by the CA, for the name sent.
            tls(Some("www.example.test"), true, ca.clone()),
        ];
        for settings in passes {
            let outcome =
                run_probe(&https(200..=399, Some("healthy"), settings.clone()), addr).await;
            assert!(outcome.ok, "{settings:?}: {outcome:?}");
            assert!(
                outcome.detail.starts_with("HTTP 200 OK in "),
                "{}",
                outcome.detail
            );
        }
        let fails = [
            // The system's store does not know the throwaway CA.
            (
                tls(None, true, None),
                "certificate not trusted: unknown issuer (not signed by a trusted CA)".to_owned(),
            ),
            (
                tls(Some("other.example.test"), true, ca.clone()),
                "certificate not trusted: certificate not valid for name \"other.example.test\"; \
                 certificate is only valid for IpAddress(127.0.0.1) or DnsName(\"www.example.test\")"
                    .to_owned(),
            ),
            // Trusting the server's own certificate is not trusting a CA.
            (
                tls(None, true, Some(certs.path("server.pem"))),
                "certificate not trusted: unknown issuer (not signed by a trusted CA)".to_owned(),
            ),
            (
                tls(None, true, Some("/nonexistent/ca.pem".into())),
                "ca_file /nonexistent/ca.pem: ".to_owned(),
            ),
        ];
        for (settings, reason) in fails {
            let outcome = run_probe(&https(200..=399, None, settings.clone()), addr).await;
            assert!(!outcome.ok, "{settings:?}: {outcome:?}");
            assert!(
                outcome.detail.starts_with(&reason),
                "{settings:?}: {}",
                outcome.detail
            );
        }
        // The answer is judged as http's.
        let outcome = run_probe(
            &https(200..=200, Some("sick"), tls(None, false, None)),
            addr,
        )
        .await;
        assert_eq!(outcome.detail, "HTTP 200 OK but the body lacks \"sick\"");
        let outcome = run_probe(&https(204..=204, None, tls(None, true, ca)), addr).await;
        assert_eq!(outcome.detail, "HTTP 200 OK (expected 204)");
    }

    #[tokio::test]
    async fn https_to_a_plain_server_fails_the_handshake() {
        // It answers the hello as a plain HTTP server does: 400 and close.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut hello = [0; 512];
            let _ = stream.read(&mut hello).await;
            let _ = send(&mut stream, b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let outcome = run_probe(&https(200..=399, None, tls(None, false, None)), addr).await;
        assert!(!outcome.ok);
        assert!(
            outcome.detail.starts_with("TLS handshake: "),
            "{}",
            outcome.detail
        );
        // A server that never answers the hello.
        let (addr, _requests) = http_server(None, false).await;
        assert_times_out(
            &https(200..=399, None, tls(None, false, None)),
            addr,
            "during the TLS handshake",
        )
        .await;
    }

    fn exec(command: &[&str]) -> CheckKind {
        CheckKind::Exec {
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    const TARGET: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9000);

    #[tokio::test]
    async fn exec_exit_status() {
        let outcome = run_probe(&exec(&["/bin/true"]), TARGET).await;
        assert!(outcome.ok, "{outcome:?}");
        assert!(
            outcome.detail.starts_with("exit 0 in "),
            "{}",
            outcome.detail
        );
        let outcome = run_probe(&exec(&["/bin/false"]), TARGET).await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "exit status 1");
    }

    #[tokio::test]
    async fn exec_sees_the_addresses() {
        let port_is_8080 = exec(&["/bin/sh", "-c", r#"test "$XLB_BACKEND_PORT" = 8080"#]);
        assert!(run_probe(&port_is_8080, TARGET).await.ok);
        let outcome = Prober::new(&port_is_8080)
            .probe(TARGET, TIMEOUT, "10.0.0.1:9090".parse().unwrap(), None)
            .await;
        assert!(!outcome.ok);
        let all = exec(&[
            "/bin/sh",
            "-c",
            r#"test "$XLB_BACKEND_ADDR $XLB_BACKEND_PORT $XLB_TARGET_ADDR $XLB_TARGET_PORT" = "10.0.0.1 8080 ::1 9000""#,
        ]);
        assert!(run_probe(&all, TARGET).await.ok);
    }

    #[tokio::test]
    async fn exec_failure_quotes_the_command() {
        let said = exec(&[
            "/bin/sh",
            "-c",
            "echo checking; echo '\n  no pid file  \nmore' >&2; exit 3",
        ]);
        assert_eq!(
            run_probe(&said, TARGET).await.detail,
            "exit status 3: no pid file"
        );
        let stdout_only = exec(&["/bin/sh", "-c", "echo not ready; exit 2"]);
        assert_eq!(
            run_probe(&stdout_only, TARGET).await.detail,
            "exit status 2: not ready"
        );
        let killed = exec(&["/bin/sh", "-c", "kill -TERM $$"]);
        assert_eq!(
            run_probe(&killed, TARGET).await.detail,
            "killed by signal 15"
        );
        let missing = exec(&["/nonexistent/check"]);
        assert_eq!(
            run_probe(&missing, TARGET).await.detail,
            "cannot run /nonexistent/check: no such file or directory"
        );
        assert_eq!(
            run_probe(&exec(&[]), TARGET).await.detail,
            "no command to run"
        );
    }

    #[tokio::test]
    async fn exec_timeout_kills_the_command() {
        let marker = std::env::temp_dir().join(format!("xlb-health-{}", random_u64()));
        let script = format!("sleep 0.5; touch {}", marker.display());
        let sleeper = exec(&["/bin/sh", "-c", &script]);
        assert_times_out(&sleeper, TARGET, "waiting for the command").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!marker.exists(), "the command ran on after its timeout");
    }

    #[test]
    fn heads() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(
            head,
            Some(Head {
                status: 200,
                reason: "OK",
                body_start: 38,
                body_len: Some(5)
            })
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let head = parse_head(b"HTTP/1.1 304 Not Modified\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body_len, Some(0));
        let head = parse_head(b"HTTP/1.1 500\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status, head.reason, head.body_len), (500, "", None));
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 +20 OK\r\n\r\n").is_err());
    }

    #[test]
    fn capped_responses() {
        let mut huge = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        huge.resize(HTTP_RESPONSE_CAP, b'x');
        assert_eq!(
            judge_http(&huge, &(200..=200), Some("ok")),
            Err("HTTP 200 OK but the body lacks \"ok\" (read the first 64 KiB)".into())
        );
        let endless_head = vec![b'x'; HTTP_RESPONSE_CAP];
        assert_eq!(
            judge_http(&endless_head, &(200..=200), None),
            Err("response headers longer than 64 KiB".into())
        );
    }
}
