//! Tests of the test harness itself: namespaces, links, processes and their cleanup.

use std::{
    env,
    ffi::CString,
    fs::{self, File},
    io::{self, BufRead, BufReader},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{
            fs::MetadataExt,
            process::{CommandExt, ExitStatusExt},
        },
    },
    panic::{self, AssertUnwindSafe},
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use nix::{
    sched::{setns, unshare, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use xlb_tests::{
    netns::{Netns, Topology},
    require_privileged,
};

/// Names in `ip netns list` (each line is `NAME` or `NAME (id: N)`).
fn netns_list() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    ensure!(out.status.success(), "`ip netns list` failed: {out:?}");
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The interface's index in the calling thread's network namespace, 0 if there is none.
fn if_nametoindex(ifname: &str) -> u32 {
    let ifname = CString::new(ifname).unwrap();
    // SAFETY: `ifname` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(ifname.as_ptr()) }
}

/// Whether the process exists and has not exited (a zombie waiting to be reaped has).
fn alive(pid: u32) -> bool {
    // `/proc/PID/stat` is `PID (COMM) STATE …`.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|s| s.starts_with(['Z', 'X']))
    })
}

/// Two namespaces joined by `veth-c` (198.18.0.1/24, fd00::1/64) and `veth-s` (.2, ::2).
fn client_server(tag: &str) -> anyhow::Result<(Topology, Netns, Netns)> {
    let mut topo = Topology::new(tag)?;
    let client = topo.add_ns("client")?;
    let server = topo.add_ns("server")?;
    topo.link(&client, "veth-c", &server, "veth-s")?;
    for (ns, ifname, last) in [(&client, "veth-c", 1), (&server, "veth-s", 2)] {
        ns.add_addr(ifname, &format!("198.18.0.{last}/24"))?;
        ns.add_addr(ifname, &format!("fd00::{last}/64"))?;
    }
    Ok((topo, client, server))
}

#[test]
fn udp_crosses_the_veth_over_ipv4_and_ipv6() -> anyhow::Result<()> {
    require_privileged!();
    let (_topo, client, server) = client_server("udp")?;
    for (src, dst) in [("198.18.0.1", "198.18.0.2"), ("fd00::1", "fd00::2")] {
        let (src, dst): (IpAddr, IpAddr) = (src.parse()?, dst.parse()?);
        // Made in the server namespace, used from this thread.
        let receiver = server.run(|| UdpSocket::bind((dst, 0)))??;
        receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
        let to = receiver.local_addr()?;
        let payload = format!("hello {to}");
        let sent_from = client.run(|| -> io::Result<SocketAddr> {
            let sender = UdpSocket::bind((src, 0))?;
            sender.send_to(payload.as_bytes(), to)?;
            sender.local_addr()
        })??;

        let mut buf = [0; 256];
        let (len, from) = receiver
            .recv_from(&mut buf)
            .with_context(|| format!("receiving on {to}"))?;
        assert_eq!(&buf[..len], payload.as_bytes());
        assert_eq!(from, sent_from);
        // The client's namespace is another one: the server's address does not exist there.
        let err = client.run(|| UdpSocket::bind((dst, 0)))?.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
    }
    Ok(())
}

#[test]
fn drop_deletes_namespaces_and_veths() -> anyhow::Result<()> {
    require_privileged!();
    let (topo, client, server) = client_server("drop")?;
    let names = [client.name().to_owned(), server.name().to_owned()];
    assert!(names.iter().all(|n| netns_list().unwrap().contains(n)));
    // An open namespace file keeps the namespace alive after `ip netns del`, to look inside.
    let server_ns = File::open(server.path())?;

    drop(topo);
    let listed = netns_list()?;
    for name in &names {
        assert!(!listed.contains(name), "{name} still listed: {listed:?}");
        assert!(!Path::new("/run/netns").join(name).exists());
    }
    // The client's namespace went away with its veth end, and the pair with it.
    let veth_gone = thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<bool> {
            setns(&server_ns, CloneFlags::CLONE_NEWNET)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if if_nametoindex("veth-s") == 0 {
                    return Ok(true);
                }
                thread::sleep(Duration::from_millis(20));
            }
            Ok(false)
        })
        .join()
        .unwrap()
    })?;
    assert!(veth_gone, "veth-s outlived its peer's namespace");
    Ok(())
}

#[test]
fn drop_while_panicking_cleans_up() -> anyhow::Result<()> {
    require_privileged!();
    let names = Mutex::new(Vec::new());
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut topo = Topology::new("panic").unwrap();
        for role in ["a", "b"] {
            let ns = topo.add_ns(role).unwrap();
            names.lock().unwrap().push(ns.name().to_owned());
        }
        panic!("deliberate panic while a topology is live");
    }));
    assert!(result.is_err());
    let names = names.into_inner()?;
    assert_eq!(names.len(), 2);
    let listed = netns_list()?;
    assert!(names.iter().all(|n| !listed.contains(n)), "{listed:?}");
    Ok(())
}

#[test]
fn spawned_children_run_in_the_namespace_and_die_with_the_topology() -> anyhow::Result<()> {
    require_privileged!();
    let mut topo = Topology::new("kill")?;
    let ns = topo.add_ns("box")?;
    let mut sleep = Command::new("sleep");
    sleep.arg("30");
    let child = topo.spawn(&ns, sleep)?;
    let pid = child.pid();
    let child_ns = fs::metadata(format!("/proc/{pid}/ns/net"))?;
    let ns_file = fs::metadata(ns.path())?;
    assert_eq!(
        (child_ns.dev(), child_ns.ino()),
        (ns_file.dev(), ns_file.ino())
    );
    // A child that leaves a process of its own behind when it gets SIGTERM.
    let mut sh = Command::new("sh");
    sh.args(["-c", "sleep 30 & echo $!; wait"])
        .stdout(Stdio::piped());
    let sh = topo.spawn(&ns, sh)?;
    let grandchild: u32 = sh
        .wait_for_line(Duration::from_secs(5), |_| true)?
        .parse()?;
    assert!(alive(grandchild));

    let started = Instant::now();
    drop(topo);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "sleep ignored SIGTERM?"
    );
    assert!(!alive(pid), "pid {pid} outlived its topology");
    let out = child
        .wait_timeout(Duration::ZERO)?
        .context("the topology reaped the child, so its status is known")?;
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    // The orphaned grandchild was SIGKILLed; dying takes a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(grandchild) {
        assert!(
            Instant::now() < deadline,
            "pid {grandchild} outlived its topology"
        );
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn child_handle_signals_waits_and_captures_output() -> anyhow::Result<()> {
    require_privileged!();
    let mut topo = Topology::new("handle")?;
    let ns = topo.add_ns("box")?;
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        "ls /sys/class/net; echo ready; echo to-stderr >&2
         trap 'echo got-usr1; exit 3' USR1
         while :; do sleep 0.05; done",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = topo.spawn(&ns, sh)?;

    let line = child.wait_for_line(Duration::from_secs(5), |l| l.starts_with("rea"))?;
    assert_eq!(line, "ready");
    assert!(child.wait_timeout(Duration::from_millis(50))?.is_none());
    child.signal(Signal::SIGUSR1)?;
    let out = child
        .wait_timeout(Duration::from_secs(5))?
        .context("sh did not exit on SIGUSR1")?;
    assert_eq!(out.status.code(), Some(3));
    // /sys shows the namespace's own interfaces: a fresh namespace has only lo.
    assert_eq!(String::from_utf8(out.stdout)?, "lo\nready\ngot-usr1\n");
    assert_eq!(String::from_utf8(out.stderr)?, "to-stderr\n");
    assert!(child.signal(Signal::SIGUSR1).is_err(), "it has exited");
    assert!(child
        .wait_for_line(Duration::from_secs(1), |l| l == "never")
        .is_err());
    Ok(())
}

/// Loads `return XDP_PASS` and attaches it with a BPF link to `ifindex` in the calling thread's
/// namespace. Returns the link, whose closing detaches the program, and the program's id.
fn attach_xdp_pass(ifindex: u32) -> io::Result<(OwnedFd, u32)> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
        // SAFETY: `attr` is a live `union bpf_attr` prefix of the right size for `cmd`; the
        // kernel zero-fills the rest.
        let ret =
            unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: for the commands used with this, a non-negative return is a new fd that
        // nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
    }

    // r0 = 2 (XDP_PASS); exit
    let insns: [u64; 2] = [0x0000_0002_0000_00b7, 0x95];
    let license = c"GPL";
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    let prog = bpf(
        BPF_PROG_LOAD,
        &mut ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
        },
    )?;

    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // The first fields of `struct bpf_prog_info`: type, id.
    let mut info = [0u32; 2];
    let mut get_info = GetInfo {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: 8,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: as in `bpf`; this command returns 0 on success, not an fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut get_info as *mut GetInfo,
            std::mem::size_of::<GetInfo>(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }

    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }
    let link = bpf(
        BPF_LINK_CREATE,
        &mut LinkCreate {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: 0,
        },
    )?;
    Ok((link, info[1]))
}

#[test]
fn xdp_prog_id_follows_attach_and_detach() -> anyhow::Result<()> {
    require_privileged!();
    let (_topo, client, _server) = client_server("xdp")?;
    assert_eq!(client.xdp_prog_id("veth-c")?, None);
    assert_eq!(client.xdp_prog_id("lo")?, None);

    let ifindex = client.ifindex("veth-c")?;
    let (link, id) = client.run(|| attach_xdp_pass(ifindex))??;
    assert_ne!(id, 0);
    assert_eq!(client.xdp_prog_id("veth-c")?, Some(id));
    drop(link);
    assert_eq!(client.xdp_prog_id("veth-c")?, None);
    Ok(())
}

#[test]
fn mac_and_ifindex_match_the_kernel() -> anyhow::Result<()> {
    require_privileged!();
    let (_topo, client, server) = client_server("addr")?;
    client.ip(&[
        "link",
        "set",
        "dev",
        "veth-c",
        "address",
        "02:00:5e:10:00:01",
    ])?;
    assert_eq!(client.mac("veth-c")?, [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
    let index = client.run(|| if_nametoindex("veth-c"))?;
    assert_ne!(index, 0);
    assert_eq!(client.ifindex("veth-c")?, index);

    // The server end has a random MAC: compare with ip's one-line text output,
    // `N: veth-s@ifM: <…> … link/ether MAC brd …`.
    let text = server.ip(&["-o", "link", "show", "dev", "veth-s"])?;
    let index: u32 = text.split(':').next().unwrap().trim().parse()?;
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC in {text}"))?;
    assert_eq!(server.ifindex("veth-s")?, index);
    let reported = server.mac("veth-s")?;
    assert_eq!(
        reported.map(|b| format!("{b:02x}")).join(":"),
        mac.to_lowercase()
    );
    Ok(())
}

#[test]
fn namespaces_come_configured() -> anyhow::Result<()> {
    require_privileged!();
    let (_topo, client, _server) = client_server("conf")?;
    let lo = client.ip(&["-j", "link", "show", "dev", "lo"])?;
    let lo: serde_json::Value = serde_json::from_str(&lo)?;
    assert!(lo[0]["flags"].as_array().unwrap().contains(&"UP".into()));
    for conf in ["all", "default", "veth-c"] {
        let dad = client
            .run(|| fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{conf}/accept_dad")))??;
        assert_eq!(dad.trim(), "0", "accept_dad of {conf}");
    }

    client.sysctl("net.ipv4.ip_forward", "1")?;
    let out = client.exec("cat", &["/proc/sys/net/ipv4/ip_forward"])?;
    assert_eq!(String::from_utf8(out.stdout)?.trim(), "1");
    let out = client.exec("sh", &["-c", "exit 7"])?;
    assert_eq!(out.status.code(), Some(7), "exec reports the exit status");
    assert!(!client.exec("/nonexistent/program", &[])?.status.success());

    let mac = [0x02, 0, 0x5e, 0x10, 0, 0x42];
    client.add_neigh("veth-c", "198.18.0.42", mac)?;
    let neigh = client.ip(&["-j", "neigh", "show", "dev", "veth-c", "to", "198.18.0.42"])?;
    let neigh: serde_json::Value = serde_json::from_str(&neigh)?;
    assert_eq!(neigh[0]["lladdr"], "02:00:5e:10:00:42");
    assert_eq!(neigh[0]["state"], serde_json::json!(["PERMANENT"]));
    Ok(())
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() -> anyhow::Result<()> {
    require_privileged!();
    let mut dead = Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    let stale = format!("xlbt-stale-{dead_pid}-0-x");
    let ip = |args: &[&str]| Command::new("ip").args(args).status();
    // A process in a namespace of its own, which is then named like a dead run's: any test's
    // `Topology::new` may sweep it from this point on.
    let mut inside = Command::new("sleep");
    inside.arg("30");
    // SAFETY: unshare(2) is async-signal-safe.
    unsafe { inside.pre_exec(|| Ok(unshare(CloneFlags::CLONE_NEWNET)?)) };
    let mut inside = inside.spawn()?;
    if !ip(&["netns", "attach", &stale, &inside.id().to_string()])?.success() {
        let _ = inside.kill();
        let _ = inside.wait();
        bail!("`ip netns attach {stale}` failed");
    }

    let mut live = Topology::new("live")?;
    let kept = live.add_ns("kept")?;
    let _sweeper = Topology::new("sweep")?;
    let listed = netns_list()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        match inside.try_wait()? {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => break None,
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    if listed.contains(&stale) || status.is_none() {
        let _ = inside.kill();
        let _ = inside.wait();
        let _ = ip(&["netns", "del", &stale]);
        bail!("{stale} not swept ({listed:?}) or its process not killed ({status:?})");
    }
    assert_eq!(status.unwrap().signal(), Some(libc::SIGKILL));
    assert!(
        listed.iter().any(|n| n == kept.name()),
        "a live process's namespace was swept"
    );
    Ok(())
}

/// Set for the copy of this binary that `signals_clean_up` starts.
const SIGNAL_CHILD: &str = "XLB_HARNESS_SIGNAL_CHILD";

#[test]
#[ignore = "run as a child process by `signals_clean_up`"]
fn signal_cleanup_child() {
    if env::var_os(SIGNAL_CHILD).is_none() {
        return;
    }
    require_privileged!();
    let mut topo = Topology::new("signal").unwrap();
    let ns = topo.add_ns("box").unwrap();
    let mut sleep = Command::new("sleep");
    sleep.arg("30");
    let sleeper = topo.spawn(&ns, sleep).unwrap();
    println!("ready {} {}", ns.name(), sleeper.pid());
    thread::sleep(Duration::from_secs(30));
}

#[test]
fn signals_clean_up() -> anyhow::Result<()> {
    require_privileged!();
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let mut child = Command::new(env::current_exe()?)
            .args([
                "--ignored",
                "--exact",
                "signal_cleanup_child",
                "--nocapture",
            ])
            .env(SIGNAL_CHILD, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Kept open until the child exits, so its writes never fail.
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = stdout
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("ready ").map(str::to_owned));
        let Some(ready) = ready else {
            let out = child.wait_with_output()?;
            bail!("the child never got ready: {out:?}");
        };
        let (name, pid) = ready.split_once(' ').context("malformed ready line")?;
        assert!(netns_list()?.iter().any(|n| n == name));
        assert!(alive(pid.parse()?));

        kill(Pid::from_raw(i32::try_from(child.id())?), signal)?;
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "after {signal}: {stderr}");
        assert!(
            !netns_list()?.iter().any(|n| n == name),
            "{name} left after {signal}"
        );
        assert!(!alive(pid.parse()?), "sleep left after {signal}");
    }
    Ok(())
}
