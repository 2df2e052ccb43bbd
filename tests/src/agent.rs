//! The agent in the lab: `xlb run` in the director's namespace, configured by a file this harness
//! writes and driven through its HTTP API, with a client that keeps making connections.
//!
//! The agent pins its data plane on a BPF filesystem this harness mounts at
//! [`BPF_FS`] in the test's own mount namespace: a process spawned into a lab namespace gets a
//! private mount namespace (as with `ip netns exec`), and a bpffs it mounted there would vanish
//! with it, taking the pins, when it is killed.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use lb_common::maps::Mode;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{
    lab::{backend_port, Family, Testbed, Vips, VIP_PORT},
    netns::{ChildHandle, Netns, Topology},
    servers::{tcp_spread, Spread},
    xlb_bin,
};

/// Where the harness mounts the BPF filesystem the agents pin to.
pub const BPF_FS: &str = "/run/xlb-tests/bpf";
/// The API's address inside the director's namespace.
pub const API: &str = "127.0.0.1:9180";
/// How long the agent may take to load, apply and attach.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One director's agent: `xlb run` in the director's namespace, its files and its API.
pub struct AgentProcess {
    pub director_ns: Netns,
    /// The running `xlb run`, if any.
    pub process: Option<ChildHandle>,
    /// The config file and the token.
    pub dir: PathBuf,
    pub pins: PathBuf,
    /// Where the API listens, in the director's namespace.
    pub api: String,
    /// The agent's log of its last run, once it has stopped.
    last_logs: String,
    /// Environment variables `xlb run` gets, such as systemd's.
    pub env: Vec<(String, String)>,
    /// A shell command that ends by running its arguments (`exec "$@"`),
    /// to set up what a service manager would before `xlb run`.
    pub wrapper: Option<String>,
}

impl AgentProcess {
    fn new(director_ns: Netns, tag: &str, index: usize) -> anyhow::Result<AgentProcess> {
        let name = format!("{tag}-{index}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("xlb-agent-{name}"));
        std::fs::create_dir_all(&dir)?;
        Ok(AgentProcess {
            director_ns,
            process: None,
            dir,
            pins: Path::new(BPF_FS).join(name),
            api: API.to_string(),
            last_logs: String::new(),
            env: Vec::new(),
            wrapper: None,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("xlb.toml")
    }

    /// Starts `xlb run ARGS` in the namespace and waits until `/ready` answers.
    pub fn start(&mut self, topology: &mut Topology, args: &[&str]) -> anyhow::Result<()> {
        ensure!(self.process.is_none(), "the agent is already running");
        let mut cmd = match &self.wrapper {
            Some(script) => {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", script, "sh"]).arg(xlb_bin()?);
                cmd
            }
            None => Command::new(xlb_bin()?),
        };
        cmd.args(["--log-level", "info", "run", "--config"])
            .arg(self.config_path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.process = Some(topology.spawn(&self.director_ns, cmd)?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = self.request("GET", "/ready", None, None) {
                return Ok(());
            }
            let process = self.process.as_ref().expect("just started");
            if let Some(output) = process.wait_timeout(Duration::ZERO)? {
                self.process = None;
                bail!(
                    "the agent exited during start-up ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not become ready within {START_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the running agent logged so far, or the last one logged in all.
    pub fn logs(&self) -> String {
        match &self.process {
            Some(process) => String::from_utf8_lossy(&process.stderr_snapshot()).into_owned(),
            None => self.last_logs.clone(),
        }
    }

    /// SIGKILLs the agent and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let process = self.process.take().context("the agent is not running")?;
        process.signal(Signal::SIGKILL)?;
        let output = process
            .wait_timeout(Duration::from_secs(5))?
            .context("the agent outlived SIGKILL")?;
        self.last_logs = String::from_utf8_lossy(&output.stderr).into_owned();
        Ok(())
    }

    /// SIGTERMs the agent and returns what it logged; fails if it does not exit cleanly.
    pub fn stop(&mut self) -> anyhow::Result<String> {
        let process = self.process.take().context("the agent is not running")?;
        process.signal(Signal::SIGTERM)?;
        let output = process
            .wait_timeout(Duration::from_secs(10))?
            .context("the agent did not exit within 10 s of SIGTERM")?;
        let logs = String::from_utf8_lossy(&output.stderr).into_owned();
        self.last_logs = logs.clone();
        ensure!(
            output.status.success(),
            "the agent failed on SIGTERM ({}):\n{logs}",
            output.status
        );
        Ok(logs)
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        self.process
            .as_ref()
            .context("the agent is not running")?
            .signal(signal)
    }

    /// An HTTP request to the agent's API from inside its namespace: the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        request_in(&self.director_ns, &self.api, method, path, body, token)
    }

    /// `POST /api/v1/reload`, which must be refused with a 400 saying nothing was reloaded: the
    /// error body.
    pub fn refused_reload(&self) -> anyhow::Result<Value> {
        let (status, body) = self.request("POST", "/api/v1/reload", None, None)?;
        ensure!(status == 400, "the reload answered {status}: {body}");
        let error: Value = serde_json::from_str(&body).context("the error body")?;
        ensure!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("nothing was reloaded")),
            "the refusal does not say nothing was reloaded: {body}"
        );
        Ok(error)
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.request("GET", path, None, None)?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        serde_json::from_str(&body).with_context(|| format!("GET {path}: {body}"))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = process.signal(Signal::SIGKILL);
            let _ = process.wait_timeout(Duration::from_secs(5));
        }
        // Pins left by a killed agent keep its maps and links alive; the links go with the
        // namespaces' interfaces, the rest with the pins.
        if self.pins.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pins) {
                eprintln!("removing {}: {e}", self.pins.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A testbed whose directors balance with agents: one [`AgentProcess`] a director.
pub struct AgentTestbed {
    // Fields drop in order: the agents stop, then the namespaces go.
    pub agents: Vec<AgentProcess>,
    pub testbed: Testbed,
    pub family: Family,
    /// Slots per Maglev ring; small by default, so tests start fast.
    pub maglev_size: u32,
    /// Room for backends over all services.
    pub max_backends: u32,
    /// Room for services.
    pub max_services: u32,
}

impl AgentTestbed {
    /// `xlb ARGS` (a client command, `check`, ...) in the director's namespace: whether it
    /// exited 0, and its stdout then stderr.
    pub fn xlb(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let xlb = xlb_bin()?;
        let out = self
            .testbed
            .director_ns
            .exec(xlb.to_str().context("a UTF-8 path")?, args)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text))
    }

    /// Builds the testbed with `backends` backends and writes a configuration of the agent section
    /// followed by `services` (TOML `[[service]]` tables); the agent is not started yet.
    pub fn new(
        tag: &str,
        mode: Mode,
        family: Family,
        backends: usize,
        services: &str,
    ) -> anyhow::Result<AgentTestbed> {
        let agent_testbed = AgentTestbed::build(Testbed::new(tag, mode, backends)?, tag, family)?;
        agent_testbed.write_config(services)?;
        Ok(agent_testbed)
    }

    /// A testbed of `directors` directors that leave the VIPs to VRRP; write each one's config
    /// with [`AgentTestbed::write_config_of`].
    pub fn with_directors(
        tag: &str,
        mode: Mode,
        family: Family,
        backends: usize,
        directors: usize,
    ) -> anyhow::Result<AgentTestbed> {
        let testbed = Testbed::with_directors(tag, mode, backends, directors, Vips::Vrrp)?;
        AgentTestbed::build(testbed, tag, family)
    }

    fn build(testbed: Testbed, tag: &str, family: Family) -> anyhow::Result<AgentTestbed> {
        mount_bpffs()?;
        let agents = testbed
            .director_nss
            .iter()
            .enumerate()
            .map(|(k, ns)| AgentProcess::new(ns.clone(), tag, k))
            .collect::<anyhow::Result<_>>()?;
        Ok(AgentTestbed {
            agents,
            testbed,
            family,
            maglev_size: 4099,
            max_backends: 64,
            max_services: 8,
        })
    }

    /// The first director's agent.
    pub fn agent(&self) -> &AgentProcess {
        &self.agents[0]
    }

    /// The first director's agent, to start, stop or point at another API address.
    pub fn agent_mut(&mut self) -> &mut AgentProcess {
        &mut self.agents[0]
    }

    /// The first director's config: the agent section for this testbed, then `rest`.
    pub fn write_config(&self, rest: &str) -> anyhow::Result<()> {
        self.write_config_of(0, rest)
    }

    /// Director `k`'s config: the agent section for this testbed, then `rest`.
    pub fn write_config_of(&self, k: usize, rest: &str) -> anyhow::Result<()> {
        let agent = &self.agents[k];
        let host = 2 + k;
        let text = format!(
            "[agent]\ninterfaces = [\"eth0\"]\napi_listen = \"{API}\"\npin_path = \"{}\"\n\
             tunnel_source_v4 = \"198.18.1.{host}\"\ntunnel_source_v6 = \"fd00:1::{host}\"\n\n\
             [tables]\nmaglev_size = {}\nmax_services = {}\nmax_backends = {}\n\
             flow_entries = 262144\naffinity_entries = 1024\n\n{rest}",
            agent.pins.display(),
            self.maglev_size,
            self.max_services,
            self.max_backends,
        );
        std::fs::write(agent.config_path(), text).context("writing the agent's config")
    }

    /// Starts the first director's `xlb run` and waits until `/ready` answers.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_with(&[])
    }

    /// [`AgentTestbed::start`] with more arguments for `xlb run`.
    pub fn start_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.start_of(0, args)
    }

    /// Starts director `k`'s `xlb run ARGS`.
    pub fn start_of(&mut self, k: usize, args: &[&str]) -> anyhow::Result<()> {
        self.agents[k].start(&mut self.testbed.topology, args)
    }

    /// Where the first director's API listens, when its config was changed to another address.
    pub fn set_api(&mut self, addr: &str) {
        self.agent_mut().api = addr.to_string();
    }

    /// Adds `lines` (keys of the agent section) to the first director's config.
    pub fn add_agent_settings(&self, lines: &str) -> anyhow::Result<()> {
        let config_path = self.agent().config_path();
        let config = std::fs::read_to_string(&config_path)?;
        let added = config.replacen(
            "[tables]",
            &format!(
                "{lines}

[tables]"
            ),
            1,
        );
        ensure!(
            added != config,
            "the config has no tables section to add before"
        );
        std::fs::write(config_path, added).context("writing the agent's config")
    }

    /// Rewrites the first director's config so the API listens on `addr` (off loopback) and
    /// changes need `token`.
    pub fn open_api(&mut self, addr: &str, token: &str) -> anyhow::Result<()> {
        let config_path = self.agent().config_path();
        let config = std::fs::read_to_string(&config_path)?;
        let token_file = self.agent().dir.join("token");
        std::fs::write(&token_file, token)?;
        let open = config
            .replace(
                &format!("api_listen = \"{API}\""),
                &format!("api_listen = \"{addr}\""),
            )
            .replace(
                "[tables]",
                &format!("api_token_file = \"{}\"\n\n[tables]", token_file.display()),
            );
        ensure!(open != config, "the config has no agent section to open");
        std::fs::write(config_path, open)?;
        self.set_api(addr);
        Ok(())
    }

    /// A backend of a service as the first director's API shows it.
    pub fn backend(&self, service: &str, n: usize) -> anyhow::Result<Value> {
        self.backend_at(service, self.backend_addr(n))
    }

    /// The backend at `addr` of a service as the first director's API shows it.
    pub fn backend_at(&self, service: &str, addr: SocketAddr) -> anyhow::Result<Value> {
        self.agent().get(&format!(
            "/api/v1/services/{service}/backends/{}",
            encode(&addr.to_string())
        ))
    }

    /// Backend `n`'s address and port.
    pub fn backend_addr(&self, n: usize) -> SocketAddr {
        SocketAddr::new(self.family.backend(n), backend_port(self.testbed.mode))
    }

    pub fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.family.vip(), VIP_PORT)
    }

    /// Waits up to `timeout` for `pred` to hold of the backend's API view; returns the time it
    /// took.
    pub fn wait_backend(
        &self,
        service: &str,
        n: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let view = self.backend(service, n)?;
            if pred(&view) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "b{} of {service} not {what} within {timeout:?}: {view}",
                    n + 1
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A `[service.health]` body: a TCP connect every 200 ms (timeout 100 ms), down after 3 failures
/// in a row, up after 2 successes.
pub const TCP_CHECK: &str =
    "kind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 3";

/// One `[[service]]` table of the agent's config, for the lab's backends: build it with
/// [`ServiceConf::new`] and struct update syntax, write it with [`ServiceConf::toml`].
#[derive(Clone, Debug)]
pub struct ServiceConf<'a> {
    pub name: &'a str,
    pub mode: Mode,
    /// The VIP's and the backends' family.
    pub family: Family,
    /// `"tcp"` or `"udp"`.
    pub protocol: &'a str,
    /// The VIP's port.
    pub port: u16,
    /// Where the backends listen (written only in NAT mode, the only one that translates it).
    pub backend_port: u16,
    /// b1, b2, … in order, with these weights.
    pub weights: &'a [u16],
    /// The body of `[service.health]` (TOML lines), if the service is checked.
    pub health: Option<&'a str>,
    /// The backend (0 for b1, …) that is the service's fallback, if it has one.
    pub fallback: Option<usize>,
}

impl<'a> ServiceConf<'a> {
    /// A TCP service on the family's VIP at [`VIP_PORT`], to b1, b2 and b3 at weight 1 on the
    /// mode's backend port, unchecked.
    pub fn new(name: &'a str, mode: Mode, family: Family) -> ServiceConf<'a> {
        ServiceConf {
            name,
            mode,
            family,
            protocol: "tcp",
            port: VIP_PORT,
            backend_port: backend_port(mode),
            weights: &[1, 1, 1],
            health: None,
            fallback: None,
        }
    }

    pub fn toml(&self) -> String {
        let mode = match self.mode {
            Mode::Dr => "dr",
            Mode::Ipip => "ipip",
            Mode::Nat => "nat",
        };
        let quote = |addr: IpAddr| format!("\"{addr}\"");
        let mut text = format!(
            "[[service]]\nname = \"{}\"\nvip = {}\nport = {}\nprotocol = \"{}\"\nmode = \"{mode}\"\n",
            self.name,
            quote(self.family.vip()),
            self.port,
            self.protocol,
        );
        if let Some(n) = self.fallback {
            let port = match self.mode {
                Mode::Nat => self.backend_port,
                Mode::Dr | Mode::Ipip => self.port,
            };
            text += &format!(
                "fallback = \"{}\"\n",
                SocketAddr::new(self.family.backend(n), port)
            );
        }
        if let Some(health) = self.health {
            text += &format!("[service.health]\n{}\n", health.trim_end());
        }
        for (n, weight) in self.weights.iter().enumerate() {
            text += &format!(
                "[[service.backend]]\naddress = {}\nweight = {weight}\n",
                quote(self.family.backend(n))
            );
            if self.mode == Mode::Nat {
                text += &format!("port = {}\n", self.backend_port);
            }
        }
        text + "\n"
    }
}

/// An HTTP request to `addr` from inside `ns`.
pub fn request_in(
    ns: &Netns,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let url = format!("http://{addr}{path}");
    let body = body.map(str::to_string);
    let token = token.map(str::to_string);
    let method = method.to_string();
    ns.run(move || -> anyhow::Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(token) = &token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        let request = request.body(body.unwrap_or_default())?;
        let mut response = agent
            .run(request)
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((status, text))
    })?
}

/// Percent-encodes what a path segment cannot hold as is (`:`, `[`, `]`).
pub fn encode(segment: &str) -> String {
    segment
        .replace(':', "%3A")
        .replace('[', "%5B")
        .replace(']', "%5D")
}

/// Mounts a BPF filesystem at [`BPF_FS`] unless one is there.
pub fn mount_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts.lines().any(|l| l.split(' ').nth(1) == Some(BPF_FS)) {
        return Ok(());
    }
    std::fs::create_dir_all(BPF_FS)?;
    let out = Command::new("mount")
        .args(["-t", "bpf", "bpf", BPF_FS])
        .output()
        .context("running mount")?;
    ensure!(
        out.status.success(),
        "mounting bpffs on {BPF_FS}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A thread that runs until told to stop, then hands back what it gathered; stopped and
/// joined on drop too.
struct Background<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<T>>>,
}

impl<T: Send + 'static> Background<T> {
    /// Runs `body` on a new thread; `body` returns once the flag it is given is set.
    fn start(body: impl FnOnce(&AtomicBool) -> anyhow::Result<T> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || body(&stopping));
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns what it gathered; `what` names it if it panicked.
    fn finish(mut self, what: &str) -> anyhow::Result<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .map_err(|_| anyhow::anyhow!("{what} panicked"))?
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// New TCP connections from the client to the VIP, one batch after another, until stopped or
/// `limit` passes: a steady load whose every exchange is accounted for.
pub struct SteadyLoad(Background<Vec<Batch>>);

/// One batch of connections: when it started and ended, and who answered.
#[derive(Clone, Debug)]
pub struct Batch {
    pub started: Instant,
    pub ended: Instant,
    pub spread: Spread,
}

/// Connections per batch.
const BATCH: u64 = 5;

impl SteadyLoad {
    pub fn start(client: &Netns, vip: SocketAddr, limit: Duration) -> SteadyLoad {
        SteadyLoad::paced(client, vip, limit, Duration::from_millis(5))
    }

    /// [`SteadyLoad::start`] with `pause` between batches, for a lighter load over a long time
    /// (each connection leaves the client a port in TIME_WAIT for a minute).
    pub fn paced(client: &Netns, vip: SocketAddr, limit: Duration, pause: Duration) -> SteadyLoad {
        let client = client.clone();
        SteadyLoad(Background::start(move |stopping| {
            let until = Instant::now() + limit;
            let mut batches = Vec::new();
            while !stopping.load(Ordering::Relaxed) && Instant::now() < until {
                let started = Instant::now();
                let spread = tcp_spread(&client, vip, BATCH)?;
                batches.push(Batch {
                    started,
                    ended: Instant::now(),
                    spread,
                });
                std::thread::sleep(pause);
            }
            Ok(batches)
        }))
    }

    /// Stops the load and returns its batches.
    pub fn finish(self) -> anyhow::Result<Vec<Batch>> {
        self.0.finish("the load thread")
    }
}

/// All batches' answers and failures together.
pub fn total<'a>(batches: impl IntoIterator<Item = &'a Batch>) -> Spread {
    let mut sum = Spread::default();
    for b in batches {
        for (name, n) in &b.spread.by_backend {
            *sum.by_backend.entry(name.clone()).or_default() += n;
        }
        sum.failed += b.spread.failed;
        sum.errors.extend(
            b.spread
                .errors
                .iter()
                .take(5 - sum.errors.len().min(5))
                .cloned(),
        );
    }
    sum
}

pub const PROBE_EVERY: Duration = Duration::from_millis(5);
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(50);

/// One request: when it was sent and whether an answer came.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub sent: Instant,
    pub answered: bool,
}

/// What a run of probes saw around an event.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    /// From the last answered request before the event to the first answered one after it.
    pub gap: Duration,
    /// Requests unanswered in between.
    pub lost: usize,
}

/// The longest stretch without answers from the last request answered before `at` on: the gap
/// between the answered requests around it and the requests unanswered in between; `None`
/// without answers on both sides of `at`. It finds an outage that begins a little after `at`,
/// as when cutting a link takes a few milliseconds.
pub fn outage(probes: &[Probe], at: Instant) -> Option<Outage> {
    let start = probes.iter().rposition(|p| p.answered && p.sent <= at)?;
    let answered: Vec<usize> = (start..probes.len())
        .filter(|&i| probes[i].answered)
        .collect();
    answered
        .windows(2)
        .map(|w| Outage {
            gap: probes[w[1]].sent - probes[w[0]].sent,
            lost: w[1] - w[0] - 1,
        })
        .max_by_key(|o| o.gap)
}

/// UDP requests to a VIP every [`PROBE_EVERY`] from the client, each from a new socket and
/// without waiting for earlier answers (each has [`PROBE_TIMEOUT`]), until stopped or `limit`
/// passes: both ends of an outage are seen to within a period.
pub struct Prober(Background<Vec<Probe>>);

impl Prober {
    pub fn start(client: &Netns, vip: SocketAddr, limit: Duration) -> Prober {
        let client = client.clone();
        Prober(Background::start(move |stopping| {
            client.run(move || {
                let until = Instant::now() + limit;
                let mut probes: Vec<Probe> = Vec::new();
                // Unanswered requests younger than the timeout: their probe and socket.
                let mut waiting: Vec<(usize, UdpSocket)> = Vec::new();
                let mut next = Instant::now();
                while !stopping.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += PROBE_EVERY;
                    let sent = Instant::now();
                    probes.push(Probe {
                        sent,
                        answered: false,
                    });
                    // A request that cannot be sent counts as unanswered.
                    if let Ok(socket) = send_probe(vip) {
                        waiting.push((probes.len() - 1, socket));
                    }
                    check_answers(&mut probes, &mut waiting);
                }
                std::thread::sleep(PROBE_TIMEOUT);
                check_answers(&mut probes, &mut waiting);
                probes
            })
        }))
    }

    pub fn finish(self) -> anyhow::Result<Vec<Probe>> {
        self.0.finish("the prober")
    }
}

/// A request from a new non-blocking socket connected to `vip`.
fn send_probe(vip: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: std::net::IpAddr = match vip {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0))?;
    socket.connect(vip)?;
    socket.set_nonblocking(true)?;
    socket.send(b"probe")?;
    Ok(socket)
}

/// Marks the waiting requests that got their answer, and drops them and those past the timeout.
fn check_answers(probes: &mut [Probe], waiting: &mut Vec<(usize, UdpSocket)>) {
    let mut buf = [0; 256];
    waiting.retain(|(i, socket)| match socket.recv(&mut buf) {
        Ok(_) => {
            probes[*i].answered = true;
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            probes[*i].sent.elapsed() < PROBE_TIMEOUT
        }
        Err(_) => false,
    });
}
