//! The short-connection TCP load and its fixed-reply server, without a load balancer: a client
//! and a server namespace joined by a veth.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use anyhow::{ensure, Context};
use xlb_tests::{
    loadgen::{self, FixedServer, TcpLoad},
    netns::{Netns, Topology},
    require_privileged,
};

const SERVER: &str = "198.18.0.2";
/// How long a test's server may live.
const LIMIT: Duration = Duration::from_secs(60);

/// A client (198.18.0.1/24) and a server (198.18.0.2/24), each on its `eth0`.
fn pair(tag: &str) -> anyhow::Result<(Topology, Netns, Netns)> {
    let mut topology = Topology::new(tag)?;
    let client = topology.add_ns("client")?;
    let server = topology.add_ns("server")?;
    topology.link(&client, "eth0", &server, "eth0")?;
    client.add_addr("eth0", "198.18.0.1/24")?;
    server.add_addr("eth0", &format!("{SERVER}/24"))?;
    loadgen::tune_client(&client)?;
    Ok((topology, client, server))
}

fn server_addr(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER.parse().unwrap(), port)
}

fn http_load(duration: Duration, max_connections: u64) -> TcpLoad {
    TcpLoad {
        concurrency: 32,
        duration,
        max_connections,
        connect_timeout: Duration::from_secs(1),
        request: b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n".to_vec(),
    }
}

#[test]
fn short_connections_at_full_speed() -> anyhow::Result<()> {
    require_privileged!();
    let (_topology, client, server_ns) = pair("loadgen")?;
    let server = FixedServer::start(&server_ns, server_addr(8080), "s1", LIMIT)?;
    let result = loadgen::run(
        &client,
        server.addr(),
        &http_load(Duration::from_secs(1), 10_000_000),
    )?;
    let l = result.latency_us;
    println!(
        "{:.0} connections/s ({} in {:?}); latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.0}",
        result.per_second, result.completed, result.elapsed, l.p50, l.p90, l.p99, l.p999, l.max,
        l.mean
    );
    ensure!(
        result.failed == 0,
        "{} connections failed: {:?}",
        result.failed,
        result.errors
    );
    ensure!(
        result.completed > 1000,
        "only {} connections",
        result.completed
    );
    ensure!(
        result.by_backend.len() == 1 && result.by_backend.get("s1") == Some(&result.completed),
        "replies by name: {:?}",
        result.by_backend
    );
    ensure!(
        l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max && l.p50 > 0,
        "latency percentiles out of order: {l:?}"
    );
    ensure!(
        (l.p50 as f64 / 2.0) <= l.mean && l.mean <= l.max as f64,
        "mean latency beside the percentiles: {l:?}"
    );
    ensure!(
        server.connections() >= result.completed,
        "the server accepted {} connections, the client completed {}",
        server.connections(),
        result.completed
    );
    Ok(())
}

#[test]
fn a_closed_port_fails_every_attempt() -> anyhow::Result<()> {
    require_privileged!();
    let (_topology, client, _server_ns) = pair("loadgen_closed")?;
    let result = loadgen::run(
        &client,
        server_addr(8081),
        &http_load(Duration::from_secs(5), 200),
    )?;
    ensure!(
        result.completed == 0 && result.failed == 200,
        "{} completed, {} failed of 200",
        result.completed,
        result.failed
    );
    ensure!(
        !result.errors.is_empty()
            && result.errors.iter().all(|e| e.contains(&format!(
                "connecting to {}: Connection refused",
                server_addr(8081)
            ))),
        "errors: {:?}",
        result.errors
    );
    ensure!(result.by_backend.is_empty() && result.latency_us == Default::default());
    Ok(())
}

/// A plain line is a whole request too, and the reply is exactly the HTTP/1.0 response.
#[test]
fn the_server_answers_lines_and_http() -> anyhow::Result<()> {
    require_privileged!();
    let (_topology, client, server_ns) = pair("loadgen_reply")?;
    let server = FixedServer::start(&server_ns, "[::]:0".parse()?, "b2", LIMIT)?;
    let dst = server_addr(server.addr().port());
    let expected = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nb2";
    for request in ["hello\n", "GET / HTTP/1.0\r\nHost: vip\r\n\r\n"] {
        let reply = client.run(|| -> anyhow::Result<String> {
            let mut stream = TcpStream::connect_timeout(&dst, Duration::from_secs(1))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(request.as_bytes())?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        })??;
        ensure!(reply == expected, "{request:?} got {reply:?}");
    }
    ensure!(
        server.connections() == 2,
        "{} connections",
        server.connections()
    );
    Ok(())
}

/// A server stops by itself once its limit has passed: its port is closed afterwards.
#[test]
fn the_server_stops_at_its_limit() -> anyhow::Result<()> {
    require_privileged!();
    let (_topology, client, server_ns) = pair("loadgen_limit")?;
    let server = FixedServer::start(
        &server_ns,
        server_addr(8080),
        "s1",
        Duration::from_millis(300),
    )?;
    let connect = || {
        client.run(|| TcpStream::connect_timeout(&server.addr(), Duration::from_secs(1)).map(drop))
    };
    connect()?.context("before the limit")?;
    thread::sleep(Duration::from_millis(600));
    let after = connect()?;
    ensure!(
        after
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "after the limit: {after:?}"
    );
    Ok(())
}
