//! `xlb run` as a systemd `Type=notify` service sees it: the notify
//! protocol against a real `NOTIFY_SOCKET`, and the layout stamp that
//! keeps an agent from adopting a data plane it would misread.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use lb_common::maps::Mode;
use xlb_tests::{
    agent::{total, AgentTestbed, ServiceConf, SteadyLoad},
    lab::Family,
    require_privileged,
    servers::{tcp_spread, LongLived},
};

fn services(weight: u16) -> String {
    let weights = [weight, 1, 1];
    ServiceConf {
        weights: &weights,
        ..ServiceConf::new("web", Mode::Dr, Family::V4)
    }
    .toml()
}

/// What systemd would read on its notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(tag: &str) -> NotifySocket {
        let path = std::env::temp_dir().join(format!("xlb-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket { socket, path }
    }

    /// Every message that arrives within `window`, with its arrival.
    fn read_for(&self, window: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + window;
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                messages.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        messages
    }

    /// Messages until one holds `line`, within `limit`; the last is that one.
    fn read_until(&self, line: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = message.lines().any(|l| l == line);
                messages.push(message);
                if done {
                    return messages;
                }
            }
        }
        panic!("no {line} within {limit:?}; got {messages:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn has(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[test]
fn the_agent_tells_systemd_when_it_is_ready_reloading_alive_and_stopping() {
    require_privileged!();
    let mut lab = AgentTestbed::new("sdnotify", Mode::Dr, Family::V4, 3, &services(1)).unwrap();
    let notify = NotifySocket::bind("notify");
    lab.agent_mut().env = vec![
        ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
        // A 1 s WatchdogSec: a ping every 500 ms.
        ("WATCHDOG_USEC".into(), "1000000".into()),
    ];
    lab.start().unwrap();

    // READY=1 once the program is attached and the services written.
    let messages = notify.read_until("READY=1", Duration::from_secs(10));
    assert!(
        lab.testbed.director_ns.xdp_prog_id("eth0").is_ok(),
        "READY=1 before the program was attached"
    );
    let ready = messages.last().unwrap();
    assert!(
        has(
            ready,
            "STATUS=serving 1 services; API on http://127.0.0.1:9180"
        ),
        "{ready}"
    );

    // The watchdog hears from the agent's loop every 500 ms.
    let pings: Vec<Instant> = notify
        .read_for(Duration::from_millis(2600))
        .into_iter()
        .filter(|(_, m)| has(m, "WATCHDOG=1"))
        .map(|(at, _)| at)
        .collect();
    assert!((4..=6).contains(&pings.len()), "{} pings", pings.len());
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap > Duration::from_millis(300) && gap < Duration::from_millis(900),
            "{gap:?} between pings"
        );
    }

    // An API change is logged with its fields after the message.
    let (ok, out) = lab
        .xlb(&["backend", "set", "web", "198.18.1.11:80", "--weight", "2"])
        .unwrap();
    assert!(ok, "{out}");
    let logs = lab.agent().logs();
    let line = logs
        .lines()
        .find(|l| l.contains("API: changed backend 198.18.1.11:80 of web"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        line.contains(" service=web backend=198.18.1.11:80 caller=127.0.0.1:"),
        "{line}"
    );

    // A reload: RELOADING=1, then READY=1; `xlb reload` succeeds.
    lab.write_config(&services(4)).unwrap();
    let (ok, out) = lab.xlb(&["reload"]).unwrap();
    assert!(ok, "{out}");
    let reload = notify.read_until("READY=1", Duration::from_secs(5));
    let reloading = reload.iter().position(|m| has(m, "RELOADING=1"));
    assert!(
        reloading.is_some_and(|at| at + 1 < reload.len()),
        "{reload:?}"
    );
    assert!(
        has(
            reload.last().unwrap(),
            "STATUS=serving 1 services; reloaded"
        ),
        "{reload:?}"
    );
    assert_eq!(lab.backend("web", 0).unwrap()["weight"], 4);

    // A refused reload: `xlb reload` exits non-zero and says why; READY=1
    // again with the refusal in the status, and nothing changed.
    std::fs::write(lab.agent().config_path(), "this is not toml").unwrap();
    let (ok, out) = lab.xlb(&["reload"]).unwrap();
    assert!(!ok, "a refused reload exited 0: {out}");
    assert!(out.contains("nothing was reloaded"), "{out}");
    let refused = notify.read_until("READY=1", Duration::from_secs(5));
    assert!(refused.iter().any(|m| has(m, "RELOADING=1")), "{refused:?}");
    assert!(
        refused
            .last()
            .unwrap()
            .contains("STATUS=serving 1 services; the last reload was refused"),
        "{refused:?}"
    );
    assert_eq!(lab.backend("web", 0).unwrap()["weight"], 4);

    // SIGTERM: STOPPING=1.
    lab.write_config(&services(4)).unwrap();
    lab.agent_mut().stop().unwrap();
    let stopping = notify.read_until("STOPPING=1", Duration::from_secs(5));
    assert!(
        stopping.last().unwrap().contains("STATUS=stopping"),
        "{stopping:?}"
    );
}

#[test]
fn a_data_plane_of_another_layout_is_left_forwarding_not_adopted() {
    require_privileged!();
    let mut lab = AgentTestbed::new("sdlayout", Mode::Dr, Family::V4, 3, &services(1)).unwrap();
    lab.start_with(&["--keep-dataplane"]).unwrap();
    let program = lab.testbed.director_ns.xdp_prog_id("eth0").unwrap();
    lab.agent_mut().stop().unwrap();

    // As if another xlb had pinned it: its stamp names another layout.
    let pins = lab.agent().pins.clone();
    let stamp = std::fs::read_dir(&pins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("layout-"))
        .expect("the pins carry a layout stamp");
    let other = pins.join("layout-0000000000000000");
    std::fs::rename(pins.join(&stamp), &other).unwrap();

    let refused = lab
        .start()
        .expect_err("adopted a data plane of another layout");
    let message = format!("{refused:#}");
    assert!(
        message.contains("has another map layout (layout-0000000000000000)")
            && message.contains("left forwarding")
            && message.contains(&format!("rm -r {}", pins.display())),
        "{message}"
    );
    assert_eq!(
        lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(),
        program
    );
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 30).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");

    // With its own stamp back, the next agent adopts it.
    std::fs::rename(&other, pins.join(&stamp)).unwrap();
    lab.start().unwrap();
    assert!(
        lab.agent().logs().contains("adopted the data plane"),
        "{}",
        lab.agent().logs()
    );
}

/// A stand-in for systemd's view of a unit: a cgroup named like the
/// unit that the agent is moved into, and a `systemctl` on the agent's
/// PATH whose `list-jobs` shows a job of `kind` for it.
struct FakeUnit {
    cgroup: std::path::PathBuf,
    bin: std::path::PathBuf,
    unit: String,
}

impl FakeUnit {
    fn new(tag: &str, kind: &str) -> FakeUnit {
        let unit = format!("xlb-{tag}-{}.service", std::process::id());
        // A hierarchy that takes new groups: cgroup v2, or v1's pids.
        let root = [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup",
        ]
        .into_iter()
        .map(std::path::Path::new)
        .find(|root| root.join("cgroup.procs").exists())
        .expect("a cgroup hierarchy");
        let cgroup = root.join(&unit);
        std::fs::create_dir_all(&cgroup).unwrap();
        let bin = std::env::temp_dir().join(format!("xlb-fakebin-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("systemctl");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"1893 {unit} {kind} running\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeUnit { cgroup, bin, unit }
    }

    /// The environment systemd gives the unit's main process.
    fn env(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_default();
        vec![
            ("INVOCATION_ID".into(), "0123456789abcdef".into()),
            ("PATH".into(), format!("{}:{path}", self.bin.display())),
        ]
    }

    fn adopt(&self, pid: u32) {
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string()).unwrap();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(&self.unit), "{cgroup}");
    }
}

impl Drop for FakeUnit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bin);
        // Empty once the agent has exited.
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

#[test]
fn a_systemd_restart_keeps_every_flow_and_a_stop_detaches() {
    require_privileged!();
    let mut lab = AgentTestbed::new("sdrestart", Mode::Dr, Family::V4, 3, &services(1)).unwrap();
    let restart = FakeUnit::new("restart", "restart");
    lab.agent_mut().env = restart.env();
    lab.start().unwrap();
    restart.adopt(lab.agent().process.as_ref().unwrap().pid());
    let program = lab.testbed.director_ns.xdp_prog_id("eth0").unwrap();
    assert!(program.is_some());
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 30).unwrap();
    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));

    // SIGTERM during a restart job, as systemd sends it; then the new agent.
    let logs = lab.agent_mut().stop().unwrap();
    assert!(logs.contains("leaving the data plane running"), "{logs}");
    assert_eq!(
        lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(),
        program
    );
    let stop = FakeUnit::new("stop", "stop");
    lab.agent_mut().env = stop.env();
    lab.start().unwrap();
    assert!(
        lab.agent().logs().contains("adopted the data plane"),
        "{}",
        lab.agent().logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    let sum = total(&load.finish().unwrap());
    assert_eq!(
        sum.failed, 0,
        "connections failed across the restart: {sum:?}"
    );
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "established connections moved or broke across the restart"
    );

    // SIGTERM during a stop job: detached, pins gone.
    stop.adopt(lab.agent().process.as_ref().unwrap().pid());
    lab.agent_mut().stop().unwrap();
    assert_eq!(lab.testbed.director_ns.xdp_prog_id("eth0").unwrap(), None);
    assert!(!lab.agent().pins.exists());
}

/// journald's socket, which the test stands in for.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The fields of one native-protocol journal entry: `KEY=value\n`, or
/// `KEY\n`, a little-endian u64 length, the value and `\n`.
fn journal_fields(mut entry: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    while !entry.is_empty() {
        let end = entry
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(entry.len());
        let line = &entry[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            entry = &entry[(end + 1).min(entry.len())..];
        } else {
            let rest = &entry[(end + 1).min(entry.len())..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            entry = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

#[test]
fn logs_reach_the_journal_with_priorities_and_fields() {
    require_privileged!();
    let journal_dir = std::path::Path::new(JOURNAL_SOCKET).parent().unwrap();
    assert!(
        !std::path::Path::new(JOURNAL_SOCKET).exists(),
        "{JOURNAL_SOCKET} exists (a journald runs here): this test stands in for journald \
         and cannot run beside one"
    );
    std::fs::create_dir_all(journal_dir).unwrap();
    let journal = UnixDatagram::bind(JOURNAL_SOCKET).unwrap();
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(JOURNAL_SOCKET);
            // The directories too, where this test made them (only if empty).
            let _ = std::fs::remove_dir("/run/systemd/journal");
            let _ = std::fs::remove_dir("/run/systemd");
        }
    }
    let _remove = Remove;
    journal
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let weights = [1, 1, 1];
    let health = "kind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 3";
    let config = ServiceConf {
        weights: &weights,
        health: Some(health),
        ..ServiceConf::new("web", Mode::Dr, Family::V4)
    }
    .toml();
    let mut lab = AgentTestbed::new("sdjournal", Mode::Dr, Family::V4, 3, &config).unwrap();
    // As systemd does: stderr is the journal's stream, and JOURNAL_STREAM says which.
    lab.agent_mut().wrapper =
        Some("JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$@\"".to_string());
    lab.start().unwrap();
    let (ok, out) = lab
        .xlb(&["backend", "set", "web", "198.18.1.11:80", "--weight", "2"])
        .unwrap();
    assert!(ok, "{out}");
    drop(lab.testbed.servers.remove(0));

    let mut entries = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(n) = journal.recv(&mut buf) {
            let fields = journal_fields(&buf[..n]);
            let down = fields.get("MESSAGE").is_some_and(|m| m.contains("is DOWN"));
            entries.push(fields);
            if down {
                break;
            }
        }
    }
    let find = |text: &str| {
        entries
            .iter()
            .find(|e| e.get("MESSAGE").is_some_and(|m| m.contains(text)))
            .unwrap_or_else(|| panic!("no entry with {text:?} in {entries:#?}"))
    };
    let down = find("backend 198.18.1.10:80 is DOWN");
    let field = |entry: &std::collections::HashMap<String, String>, key: &str| {
        entry.get(key).cloned().unwrap_or_default()
    };
    assert_eq!(
        [
            "PRIORITY",
            "SERVICE",
            "BACKEND",
            "FROM",
            "TO",
            "SYSLOG_IDENTIFIER"
        ]
        .map(|k| field(down, k)),
        ["4", "web", "198.18.1.10:80", "up", "down", "xlb"],
        "{down:#?}"
    );
    assert!(!field(down, "REASON").is_empty(), "{down:#?}");
    let change = find("API: changed backend 198.18.1.11:80 of web");
    // Info is notice (5): warnings (4) and errors (3) stand out above it.
    assert_eq!(field(change, "PRIORITY"), "5", "{change:#?}");
    assert!(
        field(change, "CALLER").starts_with("127.0.0.1:"),
        "{change:#?}"
    );
    // Nothing went to stderr as plain lines.
    lab.agent_mut().stop().unwrap();
    assert!(
        !lab.agent().logs().contains("is DOWN"),
        "{}",
        lab.agent().logs()
    );
}
