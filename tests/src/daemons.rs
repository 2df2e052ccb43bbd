//! Real servers for the health checks to probe, run in a lab's backend namespaces as children of
//! its [`Topology`] (so they stop with it): nginx serving HTTPS with a certificate of a throwaway
//! CA that [`TestCa`] makes with `openssl`, and dnsmasq answering DNS over UDP and TCP.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};

use crate::netns::{ChildHandle, Netns, Topology};

/// A CA and one server certificate it signed, with their keys, in a directory of their own that
/// goes when this drops.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// A CA (`ca.pem`) and a server certificate (`server.pem`, key `server.key`) for the IP
    /// addresses `ips` and the DNS names `names`, valid for two days.
    pub fn new(tag: &str, ips: &[IpAddr], names: &[&str]) -> anyhow::Result<TestCa> {
        let dir = std::env::temp_dir().join(format!("xlb-ca-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ca = TestCa { dir };
        let sans: Vec<String> = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain(names.iter().map(|name| format!("DNS:{name}")))
            .collect();
        std::fs::write(
            ca.path("san.cnf"),
            format!("subjectAltName={}\n", sans.join(",")),
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat()
            .into_iter()
            .chain(["-days", "2", "-subj", "/CN=xlb test CA"])
            .collect(),
            [
                &["req"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=xlb test backend"])
            .collect(),
            vec![
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
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(&ca.dir)
                .output()
                .context("running openssl")?;
            ensure!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(ca)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx in `ns` serving HTTPS on `port` (IPv4 and IPv6) with `ca`'s server certificate:
/// `GET /health` answers 200 `healthy`, anything else 404. Its files are named after `name` in
/// `ca`'s directory; returns once it listens.
pub fn https_server(
    topology: &mut Topology,
    ns: &Netns,
    ca: &TestCa,
    name: &str,
    port: u16,
) -> anyhow::Result<ChildHandle> {
    let dir = ca.dir.display();
    let temp = ca.path(&format!("{name}-temp"));
    std::fs::create_dir_all(&temp)?;
    let temp = temp.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {dir}/{name}.pid;\nerror_log {dir}/{name}-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {temp};\n  \
         fastcgi_temp_path {temp};\n  uwsgi_temp_path {temp};\n  scgi_temp_path {temp};\n  \
         server {{\n    listen {port} ssl;\n    listen [::]:{port} ssl;\n    \
         ssl_certificate {dir}/server.pem;\n    ssl_certificate_key {dir}/server.key;\n    \
         location = /health {{ return 200 \"healthy\\n\"; }}\n    location / {{ return 404; }}\n  \
         }}\n}}\n"
    );
    let config_path = ca.path(&format!("{name}.conf"));
    std::fs::write(&config_path, config)?;
    let mut cmd = Command::new(binary("nginx")?);
    cmd.args(["-e", &format!("{dir}/{name}-error.log"), "-c"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = topology.spawn(ns, cmd)?;
    wait_listening(ns, &child, "tcp", port, "nginx")?;
    Ok(child)
}

/// dnsmasq in `ns` answering on port 53 of `addrs`, over UDP and TCP, with `answer` (like
/// `/example.test/198.18.9.9`) for its names and REFUSED for others; it logs each query to
/// its stderr. Returns once it listens.
pub fn dns_server(
    topology: &mut Topology,
    ns: &Netns,
    addrs: &[IpAddr],
    answer: &str,
) -> anyhow::Result<ChildHandle> {
    let mut cmd = Command::new(binary("dnsmasq")?);
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--user=root",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--log-queries",
        "--log-facility=-",
        &format!("--address={answer}"),
    ]);
    for addr in addrs {
        cmd.arg(format!("--listen-address={addr}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = topology.spawn(ns, cmd)?;
    wait_listening(ns, &child, "tcp", 53, "dnsmasq")?;
    Ok(child)
}

/// `/usr/sbin/NAME` or `/usr/bin/NAME` (root's PATH has sbin, a test's may not).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .with_context(|| format!("{name} is not installed (cargo xtask setup installs it)"))
}

/// Waits up to 5 s until something listens on `port` of `protocol` in `ns`.
fn wait_listening(
    ns: &Netns,
    child: &ChildHandle,
    protocol: &str,
    port: u16,
    what: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let out = ns.exec("ss", &["-Hln", &format!("-{}", &protocol[..1])])?;
        let listening = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line.contains(&format!(":{port} ")));
        if listening {
            return Ok(());
        }
        if let Some(out) = child.wait_timeout(Duration::ZERO)? {
            bail!(
                "{what} exited: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if started.elapsed() > Duration::from_secs(5) {
            bail!("{what} does not listen on {protocol} port {port} after 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
