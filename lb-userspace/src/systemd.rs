//! The agent's side of a systemd `Type=notify` unit: readiness, reloads,
//! status lines, the watchdog, and whether a stop is part of a restart.
//! Outside systemd (no `NOTIFY_SOCKET`) the notifications do nothing.

use std::{future::Future, process::Command, time::Duration};

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("telling systemd: {e}");
    }
}

/// The agent serves: the data plane is attached and every service written.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins; [`ready`] ends it, whether it was applied or refused.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    // systemd 253 and later tie RELOADING=1 to the moment it was sent.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// A line for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// The agent is stopping.
pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often the watchdog wants to hear from the agent (half its
/// `WatchdogSec`), if the unit has one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Pings the watchdog every `every` for as long as `alive` answers `true`
/// within `every`; once it does not, stops pinging (so systemd restarts the
/// agent) and returns.
pub async fn keep_watchdog<F, A>(every: Duration, alive: A, ping: impl Fn())
where
    A: Fn() -> F,
    F: Future<Output = bool>,
{
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        match tokio::time::timeout(every, alive()).await {
            Ok(true) => ping(),
            Ok(false) => {
                log::error!("the agent's task is gone: no more watchdog pings");
                return;
            }
            Err(_) => {
                log::error!(
                    "the agent did not answer within {every:?}: no more watchdog pings, \
                     systemd will restart it"
                );
                return;
            }
        }
    }
}

pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog]);
}

/// Whether this process is stopping because systemd restarts its unit (a
/// `restart` job of the unit is under way), rather than stopping it.
pub fn restarting() -> bool {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    let Some(unit) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|cgroup| unit_of(&cgroup).map(str::to_owned))
    else {
        return false;
    };
    let jobs = Command::new("systemctl")
        .args(["list-jobs", "--no-legend", "--no-pager"])
        .output();
    match jobs {
        Ok(out) if out.status.success() => {
            restart_queued(&String::from_utf8_lossy(&out.stdout), &unit)
        }
        Ok(out) => {
            log::warn!(
                "systemctl list-jobs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            log::warn!("systemctl list-jobs: {e}");
            false
        }
    }
}

/// The service unit a `/proc/self/cgroup` names (cgroup v2 or v1).
fn unit_of(cgroup: &str) -> Option<&str> {
    cgroup
        .lines()
        .find_map(|line| line.rsplit('/').find(|part| part.ends_with(".service")))
}

/// Whether `systemctl list-jobs` output has a restart job for `unit`.
fn restart_queued(jobs: &str, unit: &str) -> bool {
    jobs.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_id, name, kind) = (fields.next(), fields.next(), fields.next());
        name == Some(unit) && kind.is_some_and(|k| k.contains("restart"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    #[test]
    fn the_unit_comes_from_the_cgroup() {
        assert_eq!(
            unit_of("0::/system.slice/xlb.service\n"),
            Some("xlb.service")
        );
        assert_eq!(
            unit_of(
                "12:pids:/system.slice/xlb.service\n1:name=systemd:/system.slice/xlb.service\n"
            ),
            Some("xlb.service")
        );
        assert_eq!(
            unit_of("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
    }

    #[test]
    fn only_a_restart_of_this_unit_counts() {
        let jobs = "1893 xlb.service restart running\n1894 other.service start waiting\n";
        assert!(restart_queued(jobs, "xlb.service"));
        assert!(!restart_queued(jobs, "other.service"));
        assert!(!restart_queued(
            "1893 xlb.service stop running\n",
            "xlb.service"
        ));
        assert!(restart_queued(
            "7 xlb.service try-restart running\n",
            "xlb.service"
        ));
        assert!(!restart_queued("", "xlb.service"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_fed_while_the_agent_answers_and_starves_once_it_stalls() {
        let answered = Arc::new(AtomicUsize::new(0));
        let pings = Arc::new(AtomicUsize::new(0));
        let (calls, pinged) = (answered.clone(), pings.clone());
        let every = Duration::from_secs(5);
        let watchdog = keep_watchdog(
            every,
            move || {
                let call = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if call >= 3 {
                        // The agent's loop stalls from the fourth question on.
                        std::future::pending::<()>().await;
                    }
                    true
                }
            },
            move || {
                pinged.fetch_add(1, Ordering::Relaxed);
            },
        );
        tokio::time::timeout(Duration::from_secs(60), watchdog)
            .await
            .expect("the watchdog gives up on a stalled agent");
        assert_eq!(pings.load(Ordering::Relaxed), 3);
        assert_eq!(answered.load(Ordering::Relaxed), 4);
    }
}
