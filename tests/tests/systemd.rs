//! `xlb run` as a systemd `Type=notify` service sees it: the notify
//! protocol against a real `NOTIFY_SOCKET`, and the layout stamp that
//! keeps an agent from adopting a data plane it would misread.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use lb_common::maps::Mode;
use xlb_tests::{
    agent::{AgentTestbed, ServiceConf},
    lab::Family,
    require_privileged,
    servers::tcp_spread,
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

/// `xlb ARGS` in the director's namespace: its exit status and output.
fn xlb(lab: &AgentTestbed, args: &[&str]) -> (bool, String) {
    let xlb = xlb_tests::xlb_bin().unwrap();
    let out = lab
        .testbed
        .director_ns
        .exec(xlb.to_str().unwrap(), args)
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
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

    // A reload: RELOADING=1, then READY=1; `xlb reload` succeeds.
    lab.write_config(&services(4)).unwrap();
    let (ok, out) = xlb(&lab, &["reload"]);
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
    let (ok, out) = xlb(&lab, &["reload"]);
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
