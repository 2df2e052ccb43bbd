//! Runs the checks: one tokio task per checked backend, probing every
//! interval and reporting each change of state.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::mpsc::UnboundedSender,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{
    probe::Prober,
    random::random_u64,
    state::{ProbeDurations, ProbeOutcome, Tracker},
};
use crate::model::{CheckKind, HealthCheck, HealthVia, OperState};

/// Which backend of which service a check is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckId {
    pub service: String,
    pub backend: SocketAddr,
}

/// A check's verdict changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub id: CheckId,
    pub state: OperState,
    /// The detail of the probe that decided it.
    pub reason: String,
}

/// A check as the status page shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckStatus {
    pub state: OperState,
    /// Where the probes go: the backend, its own check target, or the VIP
    /// for a check through the data path.
    #[schema(value_type = String)]
    pub target: SocketAddr,
    /// `None` until the first probe ends.
    pub last: Option<LastProbe>,
    /// The streak toward the other state: "1 of 3 failures".
    pub progress: String,
    /// Since when the backend has been in `state`: its last transition, or
    /// the start of the check.
    pub since_unix_ms: u64,
    pub transitions: u64,
    pub checks: u64,
    pub failures_total: u64,
    /// For the metrics only: not part of the API.
    #[serde(skip)]
    pub durations: ProbeDurations,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LastProbe {
    pub ok: bool,
    pub detail: String,
    pub at_unix_ms: u64,
    pub took_ms: f64,
}

impl LastProbe {
    /// When it ended, in milliseconds since the Unix epoch.
    pub fn completed_unix_ms(&self) -> u64 {
        self.at_unix_ms + self.took_ms.round() as u64
    }
}

/// The running checks. Dropping it stops them all.
pub struct Monitor {
    events: UnboundedSender<Transition>,
    checks: HashMap<CheckId, RunningCheck>,
}

struct RunningCheck {
    config: HealthCheck,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

/// A running check's status as its task keeps it (see [`Monitor::handles`]).
#[derive(Clone)]
pub struct CheckHandle(Arc<Mutex<Shared>>);

impl CheckHandle {
    pub fn status(&self) -> CheckStatus {
        lock(&self.0).status.clone()
    }

    pub fn state(&self) -> OperState {
        lock(&self.0).status.state
    }
}

/// What a check's task and the monitor share.
struct Shared {
    status: CheckStatus,
    /// Set when the monitor stops the check: the task reports nothing more.
    stopped: bool,
}

impl Drop for RunningCheck {
    fn drop(&mut self) {
        // Under the lock, so no transition is sent once this returns.
        lock(&self.shared).stopped = true;
        self.task.abort();
    }
}

impl Monitor {
    /// Transitions of every check are sent to `events`.
    pub fn new(events: UnboundedSender<Transition>) -> Monitor {
        Monitor {
            events,
            checks: HashMap::new(),
        }
    }

    /// Makes the running checks exactly `wanted`: starts new ones, stops
    /// removed ones, restarts (from its initial state) one whose check
    /// changed. An unchanged one keeps running with its state, whatever
    /// its `initial` now says. Must be called within a tokio runtime.
    ///
    /// Once this returns, stopped checks send no more transitions; ones
    /// they sent before may still be queued.
    pub fn reconcile(&mut self, wanted: Vec<(CheckId, HealthCheck)>) {
        let wanted: HashMap<CheckId, HealthCheck> = wanted.into_iter().collect();
        // `initial` only says how a check starts: a running one keeps going.
        let same = |a: &HealthCheck, b: &HealthCheck| {
            HealthCheck {
                initial: b.initial,
                ..a.clone()
            } == *b
        };
        self.checks
            .retain(|id, running| wanted.get(id).is_some_and(|w| same(w, &running.config)));
        for (id, config) in wanted {
            if !self.checks.contains_key(&id) {
                let running = self.start(id.clone(), config);
                self.checks.insert(id, running);
            }
        }
    }

    pub fn state(&self, id: &CheckId) -> Option<OperState> {
        let running = self.checks.get(id)?;
        Some(lock(&running.shared).status.state)
    }

    /// A handle on each running check's status, which its task keeps
    /// current: for readers that do not share the monitor.
    pub fn handles(&self) -> HashMap<CheckId, CheckHandle> {
        self.checks
            .iter()
            .map(|(id, running)| (id.clone(), CheckHandle(running.shared.clone())))
            .collect()
    }

    pub fn stop_all(&mut self) {
        self.checks.clear();
    }

    fn start(&self, id: CheckId, config: HealthCheck) -> RunningCheck {
        let tracker = Tracker::new(config.rise, config.fall, config.initial);
        let target = SocketAddr::new(
            config.address.unwrap_or(id.backend.ip()),
            config.port.unwrap_or(id.backend.port()),
        );
        log::info!(
            "service {}: backend {} starts {} ({} check of {target}{} every {}, rise {}, fall {})",
            id.service,
            id.backend,
            state_name(tracker.state()),
            kind_name(&config.kind),
            via_name(config.via),
            humantime::format_duration(config.interval),
            tracker.rise(),
            tracker.fall(),
        );
        let started = SystemTime::now();
        let shared = Arc::new(Mutex::new(Shared {
            status: status_of(&tracker, target, None, started),
            stopped: false,
        }));
        let task = tokio::spawn(run_check(
            id,
            config.clone(),
            target,
            tracker,
            started,
            shared.clone(),
            self.events.clone(),
        ));
        RunningCheck {
            config,
            shared,
            task,
        }
    }
}

async fn run_check(
    id: CheckId,
    config: HealthCheck,
    target: SocketAddr,
    mut tracker: Tracker,
    mut since: SystemTime,
    shared: Arc<Mutex<Shared>>,
    events: UnboundedSender<Transition>,
) {
    // A zero interval would make tokio panic; probe back to back instead.
    let interval = config.interval.max(Duration::from_millis(1));
    let mut ticks =
        tokio::time::interval_at(Instant::now() + first_probe_offset(interval), interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let prober = Prober::new(&config.kind);
    loop {
        ticks.tick().await;
        let outcome = prober
            .probe(target, config.timeout, id.backend, config.route)
            .await;
        let flipped = tracker.record(&outcome);
        if flipped.is_some() {
            since = outcome.at;
        }
        {
            let mut shared = lock(&shared);
            if shared.stopped {
                return;
            }
            shared.status = status_of(&tracker, target, Some(&outcome), since);
            if let Some(state) = flipped {
                // With no receiver left, the status still tells.
                let _ = events.send(Transition {
                    id: id.clone(),
                    state,
                    reason: outcome.detail.clone(),
                });
            }
        }
        match flipped {
            Some(OperState::Down) => log::warn!(
                service = id.service.as_str(),
                backend:% = id.backend,
                from = "up",
                to = "down",
                reason = outcome.detail.as_str();
                "service {}: backend {} is DOWN ({} of {} failed; last: {})",
                id.service,
                id.backend,
                tracker.fall(),
                tracker.fall(),
                outcome.detail
            ),
            Some(OperState::Up) => log::info!(
                service = id.service.as_str(),
                backend:% = id.backend,
                from = "down",
                to = "up",
                reason = outcome.detail.as_str();
                "service {}: backend {} is UP ({} of {} succeeded; last: {})",
                id.service,
                id.backend,
                tracker.rise(),
                tracker.rise(),
                outcome.detail
            ),
            None => {}
        }
    }
}

/// When the first probe goes, after the check starts: soon, but spread so
/// that many checks started together do not probe at the same instant.
fn first_probe_offset(interval: Duration) -> Duration {
    let spread = interval.min(Duration::from_secs(1)).as_nanos() as u64;
    Duration::from_nanos(random_u64() % spread.max(1))
}

fn status_of(
    tracker: &Tracker,
    target: SocketAddr,
    last: Option<&ProbeOutcome>,
    since: SystemTime,
) -> CheckStatus {
    CheckStatus {
        state: tracker.state(),
        target,
        last: last.map(|outcome| LastProbe {
            ok: outcome.ok,
            detail: outcome.detail.clone(),
            at_unix_ms: unix_ms(outcome.at),
            took_ms: outcome.took.as_secs_f64() * 1e3,
        }),
        progress: tracker.progress().to_string(),
        since_unix_ms: unix_ms(since),
        transitions: tracker.transitions(),
        checks: tracker.checks(),
        failures_total: tracker.failures_total(),
        durations: tracker.durations().clone(),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Nothing panics while holding it; a poisoned one is still consistent.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn state_name(state: OperState) -> &'static str {
    match state {
        OperState::Up => "UP",
        OperState::Down => "DOWN",
    }
}

fn via_name(via: HealthVia) -> &'static str {
    match via {
        HealthVia::Direct => "",
        HealthVia::Tunnel => " through the IP-in-IP tunnel",
        HealthVia::Vip => " sent to the backend's MAC",
    }
}

fn kind_name(kind: &CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http { tls: None, .. } => "http",
        CheckKind::Http { tls: Some(_), .. } => "https",
        CheckKind::Udp { .. } => "udp",
        CheckKind::Dns { .. } => "dns",
        CheckKind::Exec { .. } => "exec",
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        net::TcpListener,
        sync::mpsc::{self, error::TryRecvError, UnboundedReceiver},
    };

    use super::*;

    /// A running check's status, as readers see it.
    fn status_of_check(monitor: &Monitor, id: &CheckId) -> Option<CheckStatus> {
        monitor.handles().get(id).map(CheckHandle::status)
    }

    /// Long enough for any transition in these tests.
    const WAIT: Duration = Duration::from_secs(2);

    fn tcp_check(rise: u32, fall: u32, initial: OperState) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            rise,
            fall,
            address: None,
            port: None,
            initial,
            via: Default::default(),
            route: None,
        }
    }

    async fn listen() -> (TcpListener, CheckId) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let id = CheckId {
            service: "web".into(),
            backend: listener.local_addr().unwrap(),
        };
        (listener, id)
    }

    async fn next(events: &mut UnboundedReceiver<Transition>) -> Transition {
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("no transition in time")
            .expect("events closed")
    }

    /// Waits until `id`'s status satisfies `done`, and returns it.
    async fn status_when(
        monitor: &Monitor,
        id: &CheckId,
        done: impl Fn(&CheckStatus) -> bool,
    ) -> CheckStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = status_of_check(monitor, id).expect("check not running");
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "status stuck at {status:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn down_then_up() {
        let (listener, id) = listen().await;
        let (events, mut received) = mpsc::unbounded_channel();
        let mut monitor = Monitor::new(events);
        monitor.reconcile(vec![(id.clone(), tcp_check(2, 3, OperState::Up))]);
        let fresh = status_of_check(&monitor, &id).unwrap();
        assert_eq!(
            (fresh.state, fresh.last, fresh.checks),
            (OperState::Up, None, 0)
        );
        assert_eq!(fresh.progress, "0 of 3 failures");

        let status = status_when(&monitor, &id, |s| s.last.is_some()).await;
        let last = status.last.unwrap();
        assert!(
            last.ok && last.detail.starts_with("connected in "),
            "{last:?}"
        );

        drop(listener);
        let down = next(&mut received).await;
        assert_eq!(
            down,
            Transition {
                id: id.clone(),
                state: OperState::Down,
                reason: "connection refused".into()
            }
        );
        let status = status_of_check(&monitor, &id).unwrap();
        assert_eq!(status.state, OperState::Down);
        assert_eq!(status.last.as_ref().unwrap().detail, "connection refused");
        assert!(status.failures_total >= 3, "{status:?}");
        assert_eq!(status.transitions, 1);
        assert_eq!(monitor.state(&id), Some(OperState::Down));

        let _listener = TcpListener::bind(id.backend).await.unwrap();
        let up = next(&mut received).await;
        assert_eq!(up.state, OperState::Up);
        assert!(up.reason.starts_with("connected in "), "{up:?}");
        let status = status_of_check(&monitor, &id).unwrap();
        assert_eq!((status.state, status.transitions), (OperState::Up, 2));
    }

    #[tokio::test]
    async fn down_then_up_current_thread() {
        down_then_up().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn down_then_up_multi_thread() {
        down_then_up().await;
    }

    #[tokio::test]
    async fn removed_checks_stop_reporting() {
        let (listener, id) = listen().await;
        let (kept_listener, kept) = listen().await;
        let (events, mut received) = mpsc::unbounded_channel();
        let mut monitor = Monitor::new(events);
        let check = tcp_check(1, 1, OperState::Up);
        monitor.reconcile(vec![
            (id.clone(), check.clone()),
            (kept.clone(), check.clone()),
        ]);
        status_when(&monitor, &id, |s| s.checks > 0).await;

        monitor.reconcile(vec![(kept.clone(), check)]);
        assert_eq!(status_of_check(&monitor, &id), None);
        assert_eq!(monitor.state(&id), None);
        // With fall 1, a running check would report this within a probe or two.
        drop(listener);
        drop(kept_listener);
        let down = next(&mut received).await;
        assert_eq!((down.id, down.state), (kept.clone(), OperState::Down));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(received.try_recv(), Err(TryRecvError::Empty));

        monitor.stop_all();
        assert_eq!(monitor.state(&kept), None);
        // Every task, and the sender it held, is gone.
        drop(monitor);
        assert_eq!(tokio::time::timeout(WAIT, received.recv()).await, Ok(None));
    }

    #[tokio::test]
    async fn reconcile_keeps_unchanged_and_restarts_changed() {
        let (_listener, id) = listen().await;
        let (events, mut received) = mpsc::unbounded_channel();
        let mut monitor = Monitor::new(events);
        let check = tcp_check(1, 3, OperState::Down);
        monitor.reconcile(vec![(id.clone(), check.clone())]);
        assert_eq!(monitor.state(&id), Some(OperState::Down));
        assert_eq!(next(&mut received).await.state, OperState::Up);

        monitor.reconcile(vec![(id.clone(), check.clone())]);
        let kept = status_of_check(&monitor, &id).unwrap();
        assert_eq!((kept.state, kept.transitions), (OperState::Up, 1));
        assert!(kept.checks >= 1);

        let other_start = HealthCheck {
            initial: OperState::Up,
            ..check.clone()
        };
        monitor.reconcile(vec![(id.clone(), other_start)]);
        let kept = status_of_check(&monitor, &id).unwrap();
        assert_eq!(
            (kept.state, kept.transitions),
            (OperState::Up, 1),
            "not restarted"
        );

        let changed = HealthCheck {
            interval: Duration::from_millis(60),
            ..check
        };
        monitor.reconcile(vec![(id.clone(), changed)]);
        let restarted = status_of_check(&monitor, &id).unwrap();
        assert_eq!(
            (restarted.state, restarted.checks, restarted.last),
            (OperState::Down, 0, None)
        );
        assert_eq!(next(&mut received).await.state, OperState::Up);
    }

    #[tokio::test]
    async fn probes_the_configured_target() {
        let (_listener, target) = listen().await;
        let (events, _received) = mpsc::unbounded_channel();
        let mut monitor = Monitor::new(events);
        let id = CheckId {
            service: "web".into(),
            backend: "127.0.0.1:1".parse().unwrap(),
        };
        let check = HealthCheck {
            port: Some(target.backend.port()),
            ..tcp_check(1, 1, OperState::Down)
        };
        monitor.reconcile(vec![(id.clone(), check)]);
        let status = status_when(&monitor, &id, |s| s.checks > 0).await;
        assert_eq!(status.state, OperState::Up, "{status:?}");
    }

    #[test]
    fn first_probes_come_soon_and_spread() {
        let offsets: Vec<Duration> = (0..100)
            .map(|_| first_probe_offset(Duration::from_secs(30)))
            .collect();
        assert!(offsets
            .iter()
            .all(|offset| *offset < Duration::from_secs(1)));
        assert!(offsets.iter().any(|offset| *offset != offsets[0]));
        assert!(first_probe_offset(Duration::from_millis(50)) < Duration::from_millis(50));
    }

    #[test]
    fn status_serializes_for_the_status_page() {
        let mut tracker = Tracker::new(2, 3, OperState::Up);
        let outcome = ProbeOutcome {
            ok: false,
            detail: "HTTP 503".into(),
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            took: Duration::from_micros(1500),
        };
        tracker.record(&outcome);
        let started = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let target = "198.18.1.10:8081".parse().unwrap();
        let json =
            serde_json::to_value(status_of(&tracker, target, Some(&outcome), started)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "state": "up",
                "target": "198.18.1.10:8081",
                "last": {"ok": false, "detail": "HTTP 503", "at_unix_ms": 1_700_000_000_123u64, "took_ms": 1.5},
                "progress": "1 of 3 failures",
                "since_unix_ms": 1_700_000_000_000u64,
                "transitions": 0,
                "checks": 1,
                "failures_total": 1,
            })
        );
    }
}
