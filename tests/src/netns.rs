//! Network namespaces, veth links and processes that clean up after themselves.
//!
//! A [`Topology`] owns the namespaces it creates and the processes it spawns in them. Dropping it
//! (also while unwinding from a panic) stops those processes and deletes the namespaces, which
//! destroys their veths. Two more nets catch what a drop cannot:
//!
//! - Ctrl-C (SIGINT) or SIGTERM: the first `Topology::new` installs a `ctrlc` handler that stops
//!   every live child, deletes every live namespace and exits with status 130. If the program has
//!   already set a `ctrlc` handler of its own, that one stays and must clean up itself.
//! - SIGKILL: `Topology::new` deletes namespaces left by processes that no longer run, found by
//!   the pid in their names (`xlbt-{tag}-{pid}-{n}-{role}`).
//!
//! A [`Switch`] is a namespace whose bridge joins the hosts connected to it into one Ethernet
//! segment; it goes with its topology like any other namespace.
//!
//! Nothing is created in the caller's own network namespace.

use std::{
    ffi::{CStr, CString},
    fs::{self, File},
    io::{self, Read},
    os::{
        fd::{AsRawFd, BorrowedFd, RawFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    ptr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Condvar, Mutex, MutexGuard, Once, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use nix::{
    errno::Errno,
    sched::{setns, unshare, CloneFlags},
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use serde_json::Value;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Every namespace this crate creates has a name starting with this.
const PREFIX: &str = "xlbt";
/// How long a child gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a child's pipes to close after it has exited.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// Polling interval while waiting for processes.
const POLL: Duration = Duration::from_millis(10);
/// The bridge in a namespace made by [`Topology::add_switch`].
const BRIDGE: &str = "br0";
/// Interface names are at most this long, including the terminating NUL.
const IFNAMSIZ: usize = 16;

/// Namespaces and child pids that exist right now, for the Ctrl-C handler.
static LIVE: Mutex<Live> = Mutex::new(Live {
    namespaces: Vec::new(),
    pids: Vec::new(),
});

#[derive(Default)]
struct Live {
    namespaces: Vec<String>,
    pids: Vec<Pid>,
}

fn live() -> MutexGuard<'static, Live> {
    lock(&LIVE)
}

/// Locks a mutex, ignoring poisoning: cleanup must run even after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `ip ARGS` to completion and returns its stdout; fails unless it exits with status 0.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<String> {
    let line = format!("ip {}", args.join(" "));
    log::debug!("{line}");
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("`{line}` could not start"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8"))
}

/// Namespaces, and the processes running in them, that are removed when this is dropped.
pub struct Topology {
    /// `xlbt-{tag}-{pid}-{n}`; each namespace is named `{prefix}-{role}`.
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Arc<Tracked>>,
}

impl Topology {
    /// Starts an empty topology. `tag` (letters, digits, `_`) names the test or tool using it;
    /// namespace names also carry the pid and a per-process counter, so they never clash.
    pub fn new(tag: &str) -> anyhow::Result<Topology> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        check_word("tag", tag)?;
        install_signal_handlers();
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(Topology {
            prefix: format!("{PREFIX}-{tag}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
        })
    }

    /// Creates the namespace `{prefix}-{role}` with loopback up and IPv6 duplicate address
    /// detection off, so addresses are usable as soon as they are added.
    pub fn add_ns(&mut self, role: &str) -> anyhow::Result<Netns> {
        check_word("role", role)?;
        let ns = Netns {
            name: format!("{}-{role}", self.prefix),
        };
        // Registered first, so an interrupt during setup still deletes it.
        live().namespaces.push(ns.name.clone());
        self.namespaces.push(ns.name.clone());
        ip(&["netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// Connects `a` and `b` with a veth pair whose ends, `a_if` in `a` and `b_if` in `b`, are
    /// created directly in those namespaces and brought up.
    pub fn link(&mut self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
        self.link_with(a, a_if, b, b_if, &[])
    }

    /// [`Topology::link`] with `queues` transmit and receive queues on each end (a veth has one
    /// by default).
    pub fn link_queues(
        &mut self,
        a: &Netns,
        a_if: &str,
        b: &Netns,
        b_if: &str,
        queues: usize,
    ) -> anyhow::Result<()> {
        let queues = queues.to_string();
        let per_end = ["numtxqueues", &queues, "numrxqueues", &queues];
        self.link_with(a, a_if, b, b_if, &per_end)
    }

    /// [`Topology::link`] with `per_end` options of `ip link add` for each end.
    fn link_with(
        &mut self,
        a: &Netns,
        a_if: &str,
        b: &Netns,
        b_if: &str,
        per_end: &[&str],
    ) -> anyhow::Result<()> {
        ip(&[
            &["link", "add", "name", a_if, "netns", &a.name],
            per_end,
            &["type", "veth", "peer", "name", b_if, "netns", &b.name],
            per_end,
        ]
        .concat())?;
        a.ip(&["link", "set", "dev", a_if, "up"])?;
        b.ip(&["link", "set", "dev", b_if, "up"])?;
        Ok(())
    }

    /// Creates the namespace `{prefix}-{role}` holding a Linux bridge `br0` that acts as an
    /// Ethernet switch: up, no STP, forward delay 0, no multicast snooping (so IPv6 neighbour
    /// discovery is simply flooded) and no IP address (IPv6 is disabled in the namespace, so not
    /// even a link-local one). Connect hosts with [`Switch::connect`].
    pub fn add_switch(&mut self, role: &str) -> anyhow::Result<Switch> {
        let ns = self.add_ns(role)?;
        ns.set_sysctls(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        ns.ip(&[
            "link",
            "add",
            "name",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ns.ip(&["link", "set", "dev", BRIDGE, "up"])?;
        Ok(Switch {
            ns,
            ports: Vec::new(),
        })
    }

    /// Spawns `cmd` inside `ns`, keeping everything configured on it (stdio, environment, working
    /// directory). Piped stdout and stderr are read continuously by the returned handle. The
    /// process is stopped and reaped when the topology drops, unless it has exited before.
    ///
    /// The child enters the namespace the way `ip netns exec` does: it joins the network
    /// namespace, then gets a private mount namespace with `/sys` remounted to show this
    /// namespace's interfaces. As with `ip netns exec`, namespaces it creates with
    /// `ip netns add` are not visible outside it.
    pub fn spawn(&mut self, ns: &Netns, mut cmd: Command) -> anyhow::Result<ChildHandle> {
        let ns_file =
            File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
        let ns_fd = ns_file.as_raw_fd();
        let sysfs_source = CString::new(ns.name.as_str())?;
        // SAFETY: the hook only makes system calls, which are async-signal-safe, and `ns_file`
        // stays open until `spawn` below has returned.
        unsafe {
            cmd.pre_exec(move || enter_like_ip_netns_exec(ns_fd, &sysfs_source));
        }
        let line = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {line} in {}", ns.name))?;
        drop(ns_file);
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        live().pids.push(pid);
        let tracked = Arc::new(Tracked {
            pid,
            stdout: child.stdout.take().map(Capture::start),
            stderr: child.stderr.take().map(Capture::start),
            child: Mutex::new(child),
        });
        self.children.push(Arc::clone(&tracked));
        Ok(ChildHandle(tracked))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let running: Vec<Pid> = self
            .children
            .iter()
            .filter(|c| matches!(c.try_wait(), Ok(None)))
            .map(|c| c.pid)
            .collect();
        terminate(&running, |pid| {
            self.children
                .iter()
                .find(|c| c.pid == pid)
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
        });
        for child in &self.children {
            child.reap();
        }
        for name in &self.namespaces {
            kill_all_in(name);
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("xlb-tests: {e:#}");
            }
        }
        live()
            .namespaces
            .retain(|name| !self.namespaces.contains(name));
    }
}

/// A network namespace made by [`Topology::add_ns`]. Cloning it copies the name only; the
/// namespace lives as long as its topology.
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME ARGS` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        ip(&[&["-n", &self.name], args].concat())
    }

    /// Adds an address (`198.18.0.1/24`, `fd00::1/64`); IPv6 ones skip duplicate address detection.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> anyhow::Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// Whether `addr` (any prefix length) is on `ifname`, as `ip -j addr` shows.
    pub fn has_addr(&self, ifname: &str, addr: &str) -> anyhow::Result<bool> {
        let out = self.ip(&["-j", "addr", "show", "dev", ifname])?;
        Ok(out.contains(&format!("\"{addr}\"")))
    }

    /// Puts an address on `lo`, as a direct-routing real server holds its VIP (`198.18.2.1/32`,
    /// `fd00:2::1/128`). For an IPv4 address it also sets `net.ipv4.conf.all.arp_ignore=1` and
    /// `arp_announce=2`, so the namespace neither answers ARP for the VIP on its other interfaces
    /// nor uses it as the source of its own ARP requests: otherwise every real server on the
    /// segment would claim the VIP. (IPv6 neighbour discovery only answers for addresses on the
    /// interface asked, so IPv6 needs no such setting.)
    pub fn add_lo_addr(&self, cidr: &str) -> anyhow::Result<()> {
        if !cidr.contains(':') {
            self.set_sysctls(&[
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
            ])?;
        }
        self.add_addr("lo", cidr)
    }

    /// Adds a route, `ip route add DEST via VIA` (`198.18.2.0/24` via `198.18.1.2`; IPv6 alike).
    pub fn add_route(&self, dest_cidr: &str, via: &str) -> anyhow::Result<()> {
        self.ip(&["route", "add", dest_cidr, "via", via]).map(drop)
    }

    /// Sets several sysctls in order, as [`Netns::sysctl`] does; stops at the first failure.
    pub fn set_sysctls(&self, settings: &[(&str, &str)]) -> anyhow::Result<()> {
        settings
            .iter()
            .try_for_each(|(key, value)| self.sysctl(key, value))
    }

    /// Runs `ethtool ARGS` inside the namespace and returns its stdout; fails unless it exits
    /// with status 0 (also when ethtool is not installed).
    pub fn ethtool(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.exec("ethtool", args)?;
        if !out.status.success() {
            bail!(
                "`ethtool {}` in {} failed ({}; is ethtool installed?): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("ethtool printed non-UTF-8")
    }

    /// Whether generic receive offload is on for the interface (`ethtool -k`).
    pub fn gro_enabled(&self, ifname: &str) -> anyhow::Result<bool> {
        let out = self.ethtool(&["-k", ifname])?;
        let state = out
            .lines()
            .find_map(|line| line.trim().strip_prefix("generic-receive-offload:"))
            .with_context(|| {
                format!("no generic-receive-offload in `ethtool -k {ifname}`: {out}")
            })?;
        Ok(state.trim_start().starts_with("on"))
    }

    /// The role this namespace was created with (the last part of its name).
    fn role(&self) -> &str {
        self.name.rsplit('-').next().unwrap_or(&self.name)
    }

    /// Sets a sysctl of this namespace; `key` is dotted (`net.ipv4.ip_forward`), as
    /// [`xlb::sysctl`] takes it.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run(|| xlb::sysctl::write(key, value))?
            .with_context(|| format!("setting {key} in {}", self.name))
    }

    /// A sysctl of this namespace, as [`xlb::sysctl::read`] reads it.
    pub fn read_sysctl(&self, key: &str) -> anyhow::Result<String> {
        self.run(|| xlb::sysctl::read(key))?
            .with_context(|| format!("reading {key} in {}", self.name))
    }

    /// Runs `program ARGS` to completion inside the namespace (`ip netns exec`) and returns its
    /// output, whatever its exit status; fails only if it cannot start.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("`ip netns exec {} {program}` could not start", self.name))
    }

    /// Runs `f` on a new thread that has joined this network namespace, so sockets it creates
    /// belong to the namespace (and stay there when returned). A panic in `f` becomes an error.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let ns_file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        thread::scope(|scope| {
            let thread =
                scope.spawn(move || setns(&ns_file, CloneFlags::CLONE_NEWNET).map(|()| f()));
            match thread.join() {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(errno)) => Err(anyhow!("setns into {}: {errno}", self.name)),
                Err(panic) => Err(anyhow!(
                    "closure run in {} panicked: {}",
                    self.name,
                    panic_message(panic.as_ref())
                )),
            }
        })
    }

    /// The interface's index, as `ip -j link` reports it.
    pub fn ifindex(&self, ifname: &str) -> anyhow::Result<u32> {
        let link = self.link_json(ifname, &[])?;
        link["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("no ifindex for {ifname} in {}: {link}", self.name))
    }

    /// The interface's MAC address, as `ip -j link` reports it.
    pub fn mac(&self, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let link = self.link_json(ifname, &[])?;
        link["address"]
            .as_str()
            .and_then(parse_mac)
            .with_context(|| format!("no MAC address for {ifname} in {}: {link}", self.name))
    }

    /// The id of the XDP program attached to the interface, if any.
    pub fn xdp_prog_id(&self, ifname: &str) -> anyhow::Result<Option<u32>> {
        let link = self.link_json(ifname, &["-d"])?;
        let Some(xdp) = link.get("xdp") else {
            return Ok(None);
        };
        // iproute2 6.1 prints {"mode":1,"prog":{"id":7,..},"attached":[{"mode":1,"prog":{"id":7,..}}]};
        // with programs in several modes at once only "attached" lists them.
        let id_of = |v: &Value| v.pointer("/prog/id").and_then(Value::as_u64);
        let id = id_of(xdp).or_else(|| xdp.get("attached")?.as_array()?.iter().find_map(id_of));
        match id {
            Some(id) => Ok(Some(u32::try_from(id)?)),
            None => bail!(
                "no program id in the XDP state of {ifname} in {}: {xdp}",
                self.name
            ),
        }
    }

    /// Adds (or replaces) a permanent neighbour entry, so traffic does not wait for ARP or ND.
    pub fn add_neigh(&self, ifname: &str, addr: &str, mac: [u8; 6]) -> anyhow::Result<()> {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ])
        .map(drop)
    }

    /// The interface's entry in `ip -j OPTIONS link show` (OPTIONS such as `-d` for details,
    /// `-s` for statistics).
    pub fn link_json(&self, ifname: &str, options: &[&str]) -> anyhow::Result<Value> {
        let args = [&["-j"], options, &["link", "show", "dev", ifname]].concat();
        let out = self.ip(&args)?;
        let mut links: Vec<Value> = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -n {} {}`: {out}", self.name, args.join(" ")))?;
        if links.len() != 1 {
            bail!(
                "expected one link named {ifname} in {}, got: {out}",
                self.name
            );
        }
        Ok(links.remove(0))
    }
}

/// A namespace made by [`Topology::add_switch`], whose bridge `br0` joins the hosts connected
/// to it into one Ethernet segment. It lives as long as its topology.
#[derive(Debug)]
pub struct Switch {
    ns: Netns,
    /// The switch-side ports, in the order they were connected.
    ports: Vec<String>,
}

impl Switch {
    /// The switch's namespace, where `br0` and the switch-side veth ends live.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The switch-side port names, in the order they were connected.
    pub fn ports(&self) -> &[String] {
        &self.ports
    }

    /// Connects `host` to the switch with a veth pair: `host_if` in `host`, and a port
    /// `p-{role}` (the host's role, cut to 15 characters; `p{n}-{role}` if that name is taken)
    /// enslaved to `br0` in the switch. Both ends are brought up and get GRO enabled
    /// (`ethtool -K IF gro on`), which turns on the NAPI a veth needs to take frames its peer's
    /// XDP program sends with `XDP_TX`. That is not enough on its own: the driver only wakes
    /// that NAPI when the port has an XDP program too (see [`crate::lab::pass_through`]).
    /// Returns the switch-side port name.
    pub fn connect(
        &mut self,
        topology: &mut Topology,
        host: &Netns,
        host_if: &str,
    ) -> anyhow::Result<String> {
        let role = host.role();
        let port = std::iter::once(format!("p-{role}"))
            .chain((self.ports.len()..).map(|n| format!("p{n}-{role}")))
            .map(|name| name.chars().take(IFNAMSIZ - 1).collect::<String>())
            .find(|name| !self.ports.contains(name))
            .context("no free port name")?;
        topology.link(host, host_if, &self.ns, &port)?;
        self.ns
            .ip(&["link", "set", "dev", &port, "master", BRIDGE])?;
        host.ethtool(&["-K", host_if, "gro", "on"])?;
        self.ns.ethtool(&["-K", &port, "gro", "on"])?;
        self.ports.push(port.clone());
        Ok(port)
    }
}

/// A process started by [`Topology::spawn`]. The topology stops it on drop if it still runs;
/// the handle stays usable afterwards.
pub struct ChildHandle(Arc<Tracked>);

impl ChildHandle {
    pub fn pid(&self) -> u32 {
        // Pids are positive.
        self.0.pid.as_raw() as u32
    }

    /// Sends `signal`; fails if the process has already exited.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        // Holding the lock keeps the process from being reaped, so the pid stays its own.
        let mut child = lock(&self.0.child);
        if let Some(status) = self.0.try_wait_locked(&mut child)? {
            bail!("process {} has already exited ({status})", self.0.pid);
        }
        kill(self.0.pid, signal).with_context(|| format!("sending {signal} to {}", self.0.pid))
    }

    /// Waits up to `timeout` for the process to exit. Returns its status and everything it wrote
    /// to piped stdout and stderr (empty if not piped), or `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> anyhow::Result<Option<Output>> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.0.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL);
        };
        // The pipes close once the process, and anything it started, has gone.
        let drained = deadline.max(Instant::now() + DRAIN_GRACE);
        let collect = |capture: &Option<Arc<Capture>>| {
            capture
                .as_ref()
                .map(|c| c.wait_until(drained, |s| s.eof).bytes.clone())
                .unwrap_or_default()
        };
        Ok(Some(Output {
            status,
            stdout: collect(&self.0.stdout),
            stderr: collect(&self.0.stderr),
        }))
    }

    /// Everything the process has written to piped stdout so far (empty if not piped).
    pub fn stdout_snapshot(&self) -> Vec<u8> {
        snapshot(&self.0.stdout)
    }

    /// Everything the process has written to piped stderr so far (empty if not piped).
    pub fn stderr_snapshot(&self) -> Vec<u8> {
        snapshot(&self.0.stderr)
    }

    /// Waits up to `timeout` for a complete stdout line for which `pred` holds, and returns it
    /// without its newline. Fails if stdout is not piped, or on timeout or end of output, quoting
    /// what the process printed.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<String> {
        let stdout = self.0.stdout.as_ref().context("stdout is not piped")?;
        let mut found = None;
        let state = stdout.wait_until(Instant::now() + timeout, |s| {
            let complete = &s.bytes[..s
                .bytes
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)];
            found = String::from_utf8_lossy(complete)
                .lines()
                .find(|line| pred(line))
                .map(str::to_owned);
            found.is_some() || s.eof
        });
        if let Some(line) = found {
            return Ok(line);
        }
        let why = if state.eof {
            "closed its stdout"
        } else {
            "timed out"
        };
        let stderr = self
            .0
            .stderr
            .as_ref()
            .map(|c| String::from_utf8_lossy(&lock(&c.state).bytes).into_owned())
            .unwrap_or_default();
        bail!(
            "process {} {why} before printing the expected line; stdout:\n{}\nstderr:\n{stderr}",
            self.0.pid,
            String::from_utf8_lossy(&state.bytes)
        )
    }
}

fn snapshot(capture: &Option<Arc<Capture>>) -> Vec<u8> {
    capture
        .as_ref()
        .map(|c| lock(&c.state).bytes.clone())
        .unwrap_or_default()
}

/// A spawned process, shared by its topology and its handle.
struct Tracked {
    pid: Pid,
    child: Mutex<Child>,
    stdout: Option<Arc<Capture>>,
    stderr: Option<Arc<Capture>>,
}

impl Tracked {
    fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.try_wait_locked(&mut lock(&self.child))
    }

    /// Reaps the process if it has exited; once reaped, its pid leaves the live registry.
    fn try_wait_locked(&self, child: &mut Child) -> io::Result<Option<ExitStatus>> {
        let status = child.try_wait()?;
        if status.is_some() {
            live().pids.retain(|&p| p != self.pid);
        }
        Ok(status)
    }

    /// Waits for the process to exit (it has been told to) and reaps it.
    fn reap(&self) {
        if let Err(e) = lock(&self.child).wait() {
            eprintln!("xlb-tests: waiting for process {}: {e}", self.pid);
        }
        live().pids.retain(|&p| p != self.pid);
    }
}

/// Everything read so far from one of a child's pipes, filled by a reader thread.
#[derive(Default)]
struct Capture {
    state: Mutex<CaptureState>,
    grew: Condvar,
}

#[derive(Default)]
struct CaptureState {
    bytes: Vec<u8>,
    eof: bool,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Arc<Capture> {
        let capture = Arc::new(Capture::default());
        let filler = Arc::clone(&capture);
        thread::spawn(move || {
            let mut buf = [0; 4096];
            loop {
                let read = match pipe.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(n) => n,
                    Err(_) => 0,
                };
                let mut state = lock(&filler.state);
                state.bytes.extend_from_slice(&buf[..read]);
                state.eof = read == 0;
                filler.grew.notify_all();
                if state.eof {
                    break;
                }
            }
        });
        capture
    }

    /// Waits until `done` holds for the captured state or `deadline` passes.
    fn wait_until(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&CaptureState) -> bool,
    ) -> MutexGuard<'_, CaptureState> {
        let mut state = lock(&self.state);
        while !done(&state) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state
    }
}

/// What `ip netns exec` does before running its command: join the network namespace, then
/// unshare the mount namespace and remount `/sys` so it shows the namespace's interfaces. Runs in
/// the forked child before exec, so it only makes system calls.
fn enter_like_ip_netns_exec(ns_fd: RawFd, ns_name: &CStr) -> io::Result<()> {
    // SAFETY: the parent keeps the fd open until the child has been spawned.
    setns(
        unsafe { BorrowedFd::borrow_raw(ns_fd) },
        CloneFlags::CLONE_NEWNET,
    )?;
    unshare(CloneFlags::CLONE_NEWNS)?;
    let check = |ret: libc::c_int| {
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: every pointer is a NUL-terminated string, or null where mount(2) allows it.
    unsafe {
        // Keep the sysfs mount below from propagating back to the parent's mount namespace.
        check(libc::mount(
            ptr::null(),
            c"/".as_ptr(),
            ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            ptr::null(),
        ))?;
        // This fails if no sysfs is mounted there, and mounting over /sys works all the same.
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        check(libc::mount(
            ns_name.as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            ptr::null(),
        ))
    }
}

/// Sends SIGTERM to `pids`, waits up to [`KILL_GRACE`] for `exited` to report each of them gone,
/// then sends SIGKILL to the rest.
fn terminate(pids: &[Pid], mut exited: impl FnMut(Pid) -> bool) {
    for &pid in pids {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + KILL_GRACE;
    let mut left = pids.to_vec();
    loop {
        left.retain(|&pid| !exited(pid));
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL);
    }
    for pid in left {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Installs, once per process, the SIGINT/SIGTERM handler that removes everything live and exits
/// with status 130.
fn install_signal_handlers() {
    static ONCE: Once = Once::new();
    // An error means the program set its own handler, which then cleans up itself.
    ONCE.call_once(|| drop(ctrlc::set_handler(clean_up_and_exit)));
}

/// The Ctrl-C handler: stops live children, deletes live namespaces, exits with status 130.
fn clean_up_and_exit() {
    let Live { namespaces, pids } = std::mem::take(&mut *live());
    terminate(&pids, |pid| {
        !matches!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
    for name in &namespaces {
        kill_all_in(name);
        if let Err(e) = ip(&["netns", "del", name]) {
            eprintln!("xlb-tests: {e:#}");
        }
    }
    eprintln!(
        "xlb-tests: interrupted; stopped {} processes and deleted {} namespaces",
        pids.len(),
        namespaces.len()
    );
    std::process::exit(130);
}

/// Deletes namespaces `xlbt-{word}-{pid}[-…]` whose pid is no longer running (left behind by a
/// killed run), after killing any process still inside them.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let mut fields = name.split('-');
        if fields.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = fields.nth(1).and_then(|p| p.parse().ok()) else {
            continue;
        };
        if kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
            continue;
        }
        kill_all_in(&name);
        match ip(&["netns", "del", &name]) {
            Ok(_) => eprintln!("xlb-tests: deleted stale namespace {name}"),
            // Another process or thread may have swept it meanwhile.
            Err(e) if Path::new(NETNS_DIR).join(&name).exists() => eprintln!("xlb-tests: {e:#}"),
            Err(_) => {}
        }
    }
}

/// SIGKILLs every process left in the namespace, such as what a spawned child started: a
/// namespace outlives `ip netns del` while any process is inside.
fn kill_all_in(name: &str) {
    let pids = ip(&["netns", "pids", name]).unwrap_or_default();
    for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Tags and roles become parts of namespace names, split on `-` by [`sweep_stale`].
fn check_word(what: &str, word: &str) -> anyhow::Result<()> {
    if word.is_empty() || !word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("namespace {what} `{word}` must be letters, digits and `_`");
    }
    Ok(())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic)")
}
