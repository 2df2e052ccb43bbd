//! The VRRP state machine: RFC 9568 §6 (VRRPv3, which obsoletes RFC 5798
//! and clarifies it) and RFC 3768 §6 for VRRPv2's timers, with keepalived's
//! behaviour where the RFCs are silent (preempt_delay, tracking, FAULT).
//!
//! It is sans-IO with an explicit clock: the caller passes the current time
//! (a [`Duration`] since any origin it likes) with every input and tick, and
//! carries out the [`Action`]s returned. Sockets, timers and addresses live
//! outside; nothing here reads a clock.

use std::{net::IpAddr, time::Duration};

use super::{State, Version};

/// The priority of the router that owns the virtual addresses.
const OWNER: u8 = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub vrid: u8,
    /// Configured priority 1..=255 (255 = address owner).
    pub priority: u8,
    pub version: Version,
    /// This router's Advertisement_Interval.
    pub advert_interval: Duration,
    pub preempt: bool,
    /// No preemption until this long after Startup (keepalived preempt_delay).
    pub preempt_delay: Duration,
    /// This router's primary address on the interface: the source of its
    /// advertisements, compared with a peer's when priorities tie.
    pub local_address: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Startup,
    /// Stop: a master sends priority 0 and releases (RFC 5798 6.4.3 Shutdown).
    Shutdown,
    /// A valid advertisement for our VRID (already checked by the caller: TTL, auth, checksum, version).
    Advert {
        from: IpAddr,
        priority: u8,
        interval: Duration,
    },
    /// The effective priority changed (tracking weights applied by the caller), 1..=254 (never applies to an owner, whose priority stays 255).
    Priority(u8),
    /// A weight-0 tracked object went down (true) or came back (false).
    Fault(bool),
    /// Forced by a sync group: become Master / Backup now (a master
    /// resigns with priority 0).
    Force(State),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0 on shutdown).
    SendAdvert { priority: u8 },
    /// Became master: add the virtual addresses, announce them (GARP / unsolicited NA), serve.
    TakeOver,
    /// Left master: remove the virtual addresses, stop serving.
    Release,
    /// For logs, notify hooks, API and metrics.
    Changed {
        from: State,
        to: State,
        reason: String,
    },
}

/// The last advertisement heard as a backup.
#[derive(Clone, Copy, Debug)]
struct Heard {
    from: IpAddr,
    priority: u8,
    /// Lower than ours and discarded, so that the Master_Down_Timer runs
    /// out and we preempt (RFC 9568 §6.4.2).
    discarded: bool,
}

/// One virtual router (VRID and address family) on one interface.
///
/// Inputs go to [`Instance::handle`]; the caller calls [`Instance::tick`]
/// once `now` reaches [`Instance::next_deadline`]. When an instance leaves
/// Master it releases before the `Changed`; when it becomes Master the
/// order is `SendAdvert`, `TakeOver`, `Changed` (RFC 9568 §6.4.2: send an
/// advertisement, then announce the addresses).
///
/// Beyond the RFC:
/// - A fault reported before Startup holds the instance in Fault, and
///   `Fault(false)` starts it; Startup only starts an instance in Initialize.
///   Leaving Fault restarts the preempt_delay, like Startup.
/// - On `Priority`, a backup that may preempt and whose new priority is above
///   the last advertisement heard takes over at once instead of waiting for
///   the Master_Down_Timer. A master whose priority falls keeps serving
///   until a better advertisement arrives.
#[derive(Clone, Debug)]
pub struct Instance {
    params: Params,
    state: State,
    /// The effective priority: the configured one with tracking applied.
    priority: u8,
    master_adver_interval: Duration,
    /// Adver_Timer as master, Master_Down_Timer as backup, none otherwise.
    deadline: Option<Duration>,
    /// When the Master_Down_Timer was last started by an accepted
    /// advertisement or by entering Backup.
    heard_at: Duration,
    heard: Option<Heard>,
    /// When preempt_delay started counting: the last Startup or fault cleared.
    started_at: Duration,
}

impl Instance {
    pub fn new(params: Params) -> Instance {
        Instance {
            state: State::Initialize,
            priority: params.priority,
            master_adver_interval: params.advert_interval,
            deadline: None,
            heard_at: Duration::ZERO,
            heard: None,
            started_at: Duration::ZERO,
            params,
        }
    }

    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Action> {
        match (self.state, input) {
            (State::Initialize, Input::Startup) => self.start(now, "startup"),
            (State::Fault, Input::Fault(false)) => {
                self.start(now, "fault cleared: tracked object up")
            }
            (State::Initialize, Input::Shutdown) | (State::Fault, Input::Fault(true)) => Vec::new(),
            (_, Input::Shutdown) => self.stop(State::Initialize, "shutdown"),
            (_, Input::Fault(true)) => self.stop(State::Fault, "fault: tracked object down"),
            (
                State::Backup,
                Input::Advert {
                    from,
                    priority,
                    interval,
                },
            ) => {
                self.backup_receives(now, from, priority, interval);
                Vec::new()
            }
            (
                State::Master,
                Input::Advert {
                    from,
                    priority,
                    interval,
                },
            ) => self.master_receives(now, from, priority, interval),
            (_, Input::Priority(priority)) => self.set_priority(now, priority),
            (State::Backup, Input::Force(State::Master)) => {
                self.become_master(now, "sync group".into())
            }
            // Resigning (priority 0) lets the peer take over in its skew
            // time, so the group's other addresses are not left alone there.
            (State::Master, Input::Force(State::Backup)) => vec![
                Action::SendAdvert { priority: 0 },
                Action::Release,
                self.enter_backup(now, "sync group".into()),
            ],
            _ => Vec::new(),
        }
    }

    /// Fires due timers (Adver_Timer as master: SendAdvert; Master_Down_Timer as backup: become master). Call when `now >= next_deadline()`.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        if self.deadline.is_none_or(|deadline| now < deadline) {
            return Vec::new();
        }
        match self.state {
            // RFC 9568 §6.4.3: send an advertisement, reset the Adver_Timer.
            State::Master => {
                self.deadline = Some(now + self.params.advert_interval);
                vec![Action::SendAdvert {
                    priority: self.priority,
                }]
            }
            State::Backup => {
                let reason = self.master_down_reason(now);
                self.become_master(now, reason)
            }
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadline
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// VRRPv3 learns it from the master's advertisements; VRRPv2 has no such
    /// thing and uses our own Advertisement_Interval.
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// v3 (RFC 9568 §6.1): ((256 - Priority) * Master_Adver_Interval) / 256.
    /// v2 (RFC 3768 §6.1): (256 - Priority) / 256 seconds.
    pub fn skew_time(&self) -> Duration {
        let unit = match self.params.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => Duration::from_secs(1),
        };
        unit * (256 - u32::from(self.priority)) / 256
    }

    /// 3 * Master_Adver_Interval + Skew_Time (in v2 the Master_Adver_Interval
    /// is our own Advertisement_Interval).
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// The current master's address as last seen (None when we are master or know none).
    pub fn master(&self) -> Option<IpAddr> {
        self.heard
            .filter(|heard| heard.priority != 0)
            .map(|heard| heard.from)
    }

    /// RFC 9568 §6.4.1: the owner becomes master at once, others backup.
    fn start(&mut self, now: Duration, reason: &str) -> Vec<Action> {
        self.started_at = now;
        self.master_adver_interval = self.params.advert_interval;
        if self.params.priority == OWNER {
            self.become_master(now, "address owner".into())
        } else {
            vec![self.enter_backup(now, reason.into())]
        }
    }

    /// Shutdown (RFC 9568 §6.4.2, §6.4.3) or fault: a master resigns with
    /// priority 0 so that a backup takes over after its Skew_Time.
    fn stop(&mut self, to: State, reason: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Master {
            actions.extend([Action::SendAdvert { priority: 0 }, Action::Release]);
        }
        self.deadline = None;
        self.heard = None;
        actions.push(self.change(to, reason.into()));
        actions
    }

    /// RFC 9568 §6.4.2, an ADVERTISEMENT received as backup.
    fn backup_receives(&mut self, now: Duration, from: IpAddr, priority: u8, interval: Duration) {
        let discarded = priority != 0 && priority < self.priority && self.may_preempt(now);
        self.heard = Some(Heard {
            from,
            priority,
            discarded,
        });
        if priority == 0 {
            // The master resigned: the highest backup (shortest skew) goes first.
            self.deadline = Some(now + self.skew_time());
        } else if !discarded {
            // Not preempting, or the master is at least as good as we are
            // (RFC 9568: an equal priority is not lower, whatever the addresses).
            self.learn_interval(interval);
            self.start_master_down_timer(now);
        }
    }

    /// RFC 9568 §6.4.3, an ADVERTISEMENT received as master.
    fn master_receives(
        &mut self,
        now: Duration,
        from: IpAddr,
        priority: u8,
        interval: Duration,
    ) -> Vec<Action> {
        if priority == 0 {
            // Another master resigned: answer at once so the backups see us.
            self.deadline = Some(now + self.params.advert_interval);
            return vec![Action::SendAdvert {
                priority: self.priority,
            }];
        }
        let reason = if priority > self.priority {
            format!("higher priority {priority} from {from}")
        } else if priority == self.priority && from > self.params.local_address {
            // Two masters with equal priority: the higher primary address
            // wins (unsigned comparison in network byte order).
            format!("equal priority {priority} from higher address {from}")
        } else {
            return Vec::new();
        };
        self.learn_interval(interval);
        self.heard = Some(Heard {
            from,
            priority,
            discarded: false,
        });
        vec![Action::Release, self.enter_backup(now, reason)]
    }

    fn set_priority(&mut self, now: Duration, priority: u8) -> Vec<Action> {
        if self.params.priority == OWNER {
            return Vec::new();
        }
        self.priority = priority.clamp(1, OWNER - 1);
        match self.heard {
            Some(Heard {
                from,
                priority: master_priority,
                ..
            }) if self.state == State::Backup
                && master_priority != 0
                && master_priority < self.priority
                && self.may_preempt(now) =>
            {
                self.become_master(
                    now,
                    format!("preempting lower priority {master_priority} from {from}"),
                )
            }
            _ => Vec::new(),
        }
    }

    /// Preempt_Mode, held off for preempt_delay after startup.
    fn may_preempt(&self, now: Duration) -> bool {
        self.params.preempt && now >= self.started_at + self.params.preempt_delay
    }

    fn learn_interval(&mut self, interval: Duration) {
        if self.params.version == Version::V3 {
            self.master_adver_interval = interval;
        }
    }

    fn start_master_down_timer(&mut self, now: Duration) {
        self.heard_at = now;
        self.deadline = Some(now + self.master_down_interval());
    }

    fn master_down_reason(&self, now: Duration) -> String {
        match self.heard {
            Some(Heard {
                from, priority: 0, ..
            }) => format!("master {from} resigned (priority 0)"),
            Some(Heard {
                from,
                priority,
                discarded: true,
            }) => {
                format!("preempting lower priority {priority} from {from}")
            }
            _ => format!(
                "no advertisement for {:?} (master down interval)",
                now - self.heard_at
            ),
        }
    }

    fn become_master(&mut self, now: Duration, reason: String) -> Vec<Action> {
        self.master_adver_interval = self.params.advert_interval;
        self.deadline = Some(now + self.params.advert_interval);
        self.heard = None;
        vec![
            Action::SendAdvert {
                priority: self.priority,
            },
            Action::TakeOver,
            self.change(State::Master, reason),
        ]
    }

    fn enter_backup(&mut self, now: Duration, reason: String) -> Action {
        self.start_master_down_timer(now);
        self.change(State::Backup, reason)
    }

    fn change(&mut self, to: State, reason: String) -> Action {
        let from = std::mem::replace(&mut self.state, to);
        Action::Changed { from, to, reason }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, net::Ipv4Addr};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn address(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    fn ns(nanos: u64) -> Duration {
        Duration::from_nanos(nanos)
    }

    /// Priority `priority` at 198.18.0.2, VRRPv3, 1 s, preempting at once.
    fn params(priority: u8) -> Params {
        Params {
            vrid: 51,
            priority,
            version: Version::V3,
            advert_interval: SECOND,
            preempt: true,
            preempt_delay: Duration::ZERO,
            local_address: address(2),
        }
    }

    fn advert(from: u8, priority: u8) -> Input {
        Input::Advert {
            from: address(from),
            priority,
            interval: SECOND,
        }
    }

    fn changed(from: State, to: State, reason: &str) -> Action {
        Action::Changed {
            from,
            to,
            reason: reason.into(),
        }
    }

    fn take_over(priority: u8, from: State, reason: &str) -> Vec<Action> {
        vec![
            Action::SendAdvert { priority },
            Action::TakeOver,
            changed(from, State::Master, reason),
        ]
    }

    enum Event {
        In(Input),
        Tick,
    }
    use Event::{In, Tick};

    /// Plays (time, event, expected actions, expected state after) rows.
    fn play(instance: &mut Instance, rows: Vec<(Duration, Event, Vec<Action>, State)>) {
        for (row, (now, event, actions, state)) in rows.into_iter().enumerate() {
            let got = match event {
                In(input) => instance.handle(now, input),
                Tick => instance.tick(now),
            };
            assert_eq!(got, actions, "row {row} at {now:?}");
            assert_eq!(instance.state(), state, "row {row} at {now:?}");
        }
    }

    fn started(params: Params) -> Instance {
        let mut instance = Instance::new(params);
        instance.handle(Duration::ZERO, Input::Startup);
        instance
    }

    /// A backup at priority 100 that became master at 3.609375 s without hearing anyone.
    fn master_100() -> Instance {
        let mut instance = started(params(100));
        instance.tick(us(3_609_375));
        assert_eq!(instance.state(), State::Master);
        instance
    }

    #[test]
    fn owner_starts_as_master_and_advertises_every_interval() {
        let mut owner = Instance::new(params(255));
        assert_eq!(owner.state(), State::Initialize);
        assert_eq!(owner.next_deadline(), None);
        play(
            &mut owner,
            vec![
                (
                    ms(0),
                    In(Input::Startup),
                    take_over(255, State::Initialize, "address owner"),
                    State::Master,
                ),
                (ms(999), Tick, vec![], State::Master),
                (
                    ms(1000),
                    Tick,
                    vec![Action::SendAdvert { priority: 255 }],
                    State::Master,
                ),
                (ms(1500), In(Input::Startup), vec![], State::Master),
                (
                    ms(2000),
                    Tick,
                    vec![Action::SendAdvert { priority: 255 }],
                    State::Master,
                ),
            ],
        );
        assert_eq!(owner.next_deadline(), Some(ms(3000)));
        assert_eq!(owner.master(), None);
    }

    #[test]
    fn non_owner_starts_as_backup() {
        let mut backup = Instance::new(params(100));
        play(
            &mut backup,
            vec![(
                ms(500),
                In(Input::Startup),
                vec![changed(State::Initialize, State::Backup, "startup")],
                State::Backup,
            )],
        );
        assert_eq!(backup.next_deadline(), Some(ms(500) + us(3_609_375)));
        assert_eq!(backup.master(), None);
    }

    #[test]
    fn backup_takes_over_exactly_at_master_down_interval() {
        let mut backup = started(params(100));
        play(
            &mut backup,
            vec![
                (ms(500), In(advert(3, 150)), vec![], State::Backup),
                (us(4_109_374), Tick, vec![], State::Backup),
                (
                    us(4_109_375),
                    Tick,
                    take_over(
                        100,
                        State::Backup,
                        "no advertisement for 3.609375s (master down interval)",
                    ),
                    State::Master,
                ),
            ],
        );
        assert_eq!(backup.master(), None);
        assert_eq!(backup.next_deadline(), Some(us(5_109_375)));
    }

    #[test]
    fn backup_knows_the_master() {
        let mut backup = started(params(100));
        backup.handle(ms(500), advert(3, 150));
        assert_eq!(backup.master(), Some(address(3)));
        assert_eq!(backup.next_deadline(), Some(us(4_109_375)));
    }

    #[test]
    fn priority_zero_advert_hands_over_after_skew_time() {
        let mut backup = started(params(100));
        play(
            &mut backup,
            vec![
                (ms(500), In(advert(3, 150)), vec![], State::Backup),
                (ms(1000), In(advert(3, 0)), vec![], State::Backup),
                (us(1_609_374), Tick, vec![], State::Backup),
                (
                    us(1_609_375),
                    Tick,
                    take_over(
                        100,
                        State::Backup,
                        "master 198.18.0.3 resigned (priority 0)",
                    ),
                    State::Master,
                ),
            ],
        );
    }

    /// A backup at 150 hearing a master at 100 every second from 0.5 s
    /// until `until`: when and how it took over, if it did.
    fn preemption(params: Params, until: Duration) -> Option<(Duration, Vec<Action>)> {
        let mut backup = started(params);
        let mut advert_at = ms(500);
        while advert_at <= until {
            if let Some(deadline) = backup.next_deadline().filter(|&d| d <= advert_at) {
                return Some((deadline, backup.tick(deadline)));
            }
            backup.handle(advert_at, advert(3, 100));
            advert_at += SECOND;
        }
        None
    }

    #[test]
    fn backup_preempts_a_lower_master_when_its_timer_runs_out() {
        // 3 s + (256 - 150) / 256 s after Startup: the adverts from 100 are discarded.
        let reason = "preempting lower priority 100 from 198.18.0.3";
        assert_eq!(
            preemption(params(150), ms(10_000)),
            Some((ns(3_414_062_500), take_over(150, State::Backup, reason)))
        );
    }

    #[test]
    fn no_preemption_without_preempt() {
        let params = Params {
            preempt: false,
            ..params(150)
        };
        assert_eq!(preemption(params, ms(10_000)), None);
    }

    #[test]
    fn no_preemption_before_preempt_delay() {
        let params = Params {
            preempt_delay: ms(5000),
            ..params(150)
        };
        // Adverts until 4.5 s reset the timer; from 5.5 s they are discarded.
        let reason = "preempting lower priority 100 from 198.18.0.3";
        let at = ms(4500) + ns(3_414_062_500);
        assert_eq!(
            preemption(params, ms(10_000)),
            Some((at, take_over(150, State::Backup, reason)))
        );
    }

    #[test]
    fn preempt_delay_does_not_stop_a_takeover_from_a_silent_master() {
        let mut backup = started(Params {
            preempt_delay: ms(60_000),
            ..params(150)
        });
        let reason = "no advertisement for 3.4140625s (master down interval)";
        play(
            &mut backup,
            vec![(
                ns(3_414_062_500),
                Tick,
                take_over(150, State::Backup, reason),
                State::Master,
            )],
        );
    }

    #[test]
    fn backup_accepts_an_equal_priority() {
        let mut backup = started(params(100));
        play(
            &mut backup,
            vec![
                (ms(3000), In(advert(1, 100)), vec![], State::Backup),
                (ms(6000), In(advert(1, 100)), vec![], State::Backup),
            ],
        );
        assert_eq!(backup.next_deadline(), Some(ms(6000) + us(3_609_375)));
    }

    #[test]
    fn master_yields_to_a_higher_priority() {
        let mut master = master_100();
        play(
            &mut master,
            vec![
                (ms(4000), In(advert(3, 99)), vec![], State::Master),
                (
                    ms(5000),
                    In(advert(3, 150)),
                    vec![
                        Action::Release,
                        changed(
                            State::Master,
                            State::Backup,
                            "higher priority 150 from 198.18.0.3",
                        ),
                    ],
                    State::Backup,
                ),
            ],
        );
        assert_eq!(master.master(), Some(address(3)));
        assert_eq!(master.next_deadline(), Some(ms(5000) + us(3_609_375)));
    }

    #[test]
    fn equal_priority_masters_keep_the_higher_address() {
        let mut master = master_100();
        play(
            &mut master,
            vec![
                (ms(4000), In(advert(1, 100)), vec![], State::Master),
                (
                    ms(5000),
                    In(advert(3, 100)),
                    vec![
                        Action::Release,
                        changed(
                            State::Master,
                            State::Backup,
                            "equal priority 100 from higher address 198.18.0.3",
                        ),
                    ],
                    State::Backup,
                ),
            ],
        );
    }

    #[test]
    fn master_answers_a_priority_zero_advert_at_once() {
        let mut master = master_100();
        play(
            &mut master,
            vec![(
                ms(4000),
                In(advert(3, 0)),
                vec![Action::SendAdvert { priority: 100 }],
                State::Master,
            )],
        );
        assert_eq!(master.next_deadline(), Some(ms(5000)));
    }

    #[test]
    fn v3_backup_learns_the_master_interval() {
        let mut backup = started(params(100));
        backup.handle(
            ms(500),
            Input::Advert {
                from: address(3),
                priority: 150,
                interval: ms(100),
            },
        );
        assert_eq!(backup.master_adver_interval(), ms(100));
        // 300 ms + 156 / 256 * 100 ms
        assert_eq!(backup.master_down_interval(), ns(360_937_500));
        assert_eq!(backup.next_deadline(), Some(ms(500) + ns(360_937_500)));
        // A master uses its own interval again.
        backup.tick(ms(861));
        assert_eq!(backup.state(), State::Master);
        assert_eq!(backup.master_adver_interval(), SECOND);
        assert_eq!(backup.next_deadline(), Some(ms(1861)));
    }

    #[test]
    fn v2_backup_keeps_its_own_interval() {
        let mut backup = started(Params {
            version: Version::V2,
            ..params(100)
        });
        backup.handle(
            ms(500),
            Input::Advert {
                from: address(3),
                priority: 150,
                interval: ms(2000),
            },
        );
        assert_eq!(backup.master_adver_interval(), SECOND);
        assert_eq!(backup.next_deadline(), Some(ms(500) + us(3_609_375)));
    }

    #[test]
    fn master_learns_the_interval_when_it_yields() {
        let mut master = master_100();
        master.handle(
            ms(4000),
            Input::Advert {
                from: address(3),
                priority: 150,
                interval: ms(20),
            },
        );
        assert_eq!(master.master_adver_interval(), ms(20));
        assert_eq!(master.next_deadline(), Some(ms(4060) + ns(12_187_500)));
    }

    #[test]
    fn shutdown() {
        let mut master = master_100();
        play(
            &mut master,
            vec![
                (
                    ms(4000),
                    In(Input::Shutdown),
                    vec![
                        Action::SendAdvert { priority: 0 },
                        Action::Release,
                        changed(State::Master, State::Initialize, "shutdown"),
                    ],
                    State::Initialize,
                ),
                (ms(4500), In(Input::Shutdown), vec![], State::Initialize),
                (ms(5000), In(advert(3, 150)), vec![], State::Initialize),
                (ms(9000), Tick, vec![], State::Initialize),
            ],
        );
        assert_eq!(master.next_deadline(), None);

        let mut backup = started(params(100));
        backup.handle(ms(500), advert(3, 150));
        play(
            &mut backup,
            vec![(
                ms(1000),
                In(Input::Shutdown),
                vec![changed(State::Backup, State::Initialize, "shutdown")],
                State::Initialize,
            )],
        );
        assert_eq!(backup.next_deadline(), None);
        assert_eq!(backup.master(), None);
    }

    #[test]
    fn fault_in_and_out() {
        let down = "fault: tracked object down";
        let up = "fault cleared: tracked object up";
        let mut master = master_100();
        play(
            &mut master,
            vec![
                (
                    ms(4000),
                    In(Input::Fault(true)),
                    vec![
                        Action::SendAdvert { priority: 0 },
                        Action::Release,
                        changed(State::Master, State::Fault, down),
                    ],
                    State::Fault,
                ),
                (ms(4100), In(Input::Fault(true)), vec![], State::Fault),
                (ms(4200), In(advert(3, 150)), vec![], State::Fault),
                (ms(4300), In(Input::Startup), vec![], State::Fault),
                (
                    ms(4400),
                    In(Input::Force(State::Master)),
                    vec![],
                    State::Fault,
                ),
                (ms(9000), Tick, vec![], State::Fault),
                (
                    ms(10_000),
                    In(Input::Fault(false)),
                    vec![changed(State::Fault, State::Backup, up)],
                    State::Backup,
                ),
                (ms(10_100), In(Input::Fault(false)), vec![], State::Backup),
                (
                    ms(10_200),
                    In(Input::Fault(true)),
                    vec![changed(State::Backup, State::Fault, down)],
                    State::Fault,
                ),
            ],
        );

        let mut owner = started(params(255));
        play(
            &mut owner,
            vec![
                (
                    ms(100),
                    In(Input::Fault(true)),
                    vec![
                        Action::SendAdvert { priority: 0 },
                        Action::Release,
                        changed(State::Master, State::Fault, down),
                    ],
                    State::Fault,
                ),
                (
                    ms(200),
                    In(Input::Fault(false)),
                    take_over(255, State::Fault, "address owner"),
                    State::Master,
                ),
            ],
        );
    }

    #[test]
    fn fault_before_startup_holds_the_instance() {
        let mut instance = Instance::new(params(100));
        play(
            &mut instance,
            vec![
                (
                    ms(0),
                    In(Input::Fault(true)),
                    vec![changed(
                        State::Initialize,
                        State::Fault,
                        "fault: tracked object down",
                    )],
                    State::Fault,
                ),
                (ms(100), In(Input::Startup), vec![], State::Fault),
                (
                    ms(200),
                    In(Input::Fault(false)),
                    vec![changed(
                        State::Fault,
                        State::Backup,
                        "fault cleared: tracked object up",
                    )],
                    State::Backup,
                ),
            ],
        );
        assert_eq!(instance.next_deadline(), Some(ms(200) + us(3_609_375)));
    }

    #[test]
    fn leaving_fault_restarts_preempt_delay() {
        let mut backup = started(Params {
            preempt_delay: ms(5000),
            ..params(150)
        });
        backup.handle(ms(6000), Input::Fault(true));
        backup.handle(ms(7000), Input::Fault(false));
        // Within 5 s of leaving Fault, a lower master is followed.
        backup.handle(ms(8000), advert(3, 100));
        assert_eq!(backup.next_deadline(), Some(ms(8000) + ns(3_414_062_500)));
    }

    #[test]
    fn force() {
        let mut instance = Instance::new(params(100));
        play(
            &mut instance,
            vec![
                (
                    ms(0),
                    In(Input::Force(State::Master)),
                    vec![],
                    State::Initialize,
                ),
                (
                    ms(0),
                    In(Input::Startup),
                    vec![changed(State::Initialize, State::Backup, "startup")],
                    State::Backup,
                ),
                (ms(500), In(advert(3, 150)), vec![], State::Backup),
                (
                    ms(600),
                    In(Input::Force(State::Backup)),
                    vec![],
                    State::Backup,
                ),
                (
                    ms(700),
                    In(Input::Force(State::Master)),
                    take_over(100, State::Backup, "sync group"),
                    State::Master,
                ),
                (
                    ms(800),
                    In(Input::Force(State::Master)),
                    vec![],
                    State::Master,
                ),
                (
                    ms(900),
                    In(Input::Force(State::Backup)),
                    vec![
                        Action::SendAdvert { priority: 0 },
                        Action::Release,
                        changed(State::Master, State::Backup, "sync group"),
                    ],
                    State::Backup,
                ),
            ],
        );
        assert_eq!(instance.next_deadline(), Some(ms(900) + us(3_609_375)));
        assert_eq!(instance.master(), None);
    }

    #[test]
    fn backup_raised_above_the_master_takes_over_at_once() {
        let mut backup = started(params(100));
        play(
            &mut backup,
            vec![
                (ms(500), In(advert(3, 120)), vec![], State::Backup),
                (ms(600), In(Input::Priority(120)), vec![], State::Backup),
                (
                    ms(700),
                    In(Input::Priority(130)),
                    take_over(
                        130,
                        State::Backup,
                        "preempting lower priority 120 from 198.18.0.3",
                    ),
                    State::Master,
                ),
            ],
        );
        assert_eq!(backup.priority(), 130);
    }

    #[test]
    fn raised_priority_without_preempt_waits() {
        let mut backup = started(Params {
            preempt: false,
            ..params(100)
        });
        backup.handle(ms(500), advert(3, 120));
        assert_eq!(backup.handle(ms(700), Input::Priority(130)), vec![]);
        assert_eq!(backup.state(), State::Backup);
        // The skew follows the effective priority.
        assert_eq!(backup.skew_time(), ns(492_187_500));
    }

    #[test]
    fn master_advertises_its_effective_priority() {
        let mut master = master_100();
        play(
            &mut master,
            vec![
                (ms(4000), In(Input::Priority(80)), vec![], State::Master),
                (
                    us(4_609_375),
                    Tick,
                    vec![Action::SendAdvert { priority: 80 }],
                    State::Master,
                ),
                (
                    ms(5000),
                    In(advert(3, 90)),
                    vec![
                        Action::Release,
                        changed(
                            State::Master,
                            State::Backup,
                            "higher priority 90 from 198.18.0.3",
                        ),
                    ],
                    State::Backup,
                ),
            ],
        );
    }

    #[test]
    fn owner_priority_is_not_tracked() {
        let mut owner = started(params(255));
        assert_eq!(owner.handle(ms(100), Input::Priority(10)), vec![]);
        assert_eq!(owner.priority(), 255);
    }

    #[test]
    fn v3_timers() {
        // (interval, priority, Skew_Time)
        let table = [
            (SECOND, 255, ns(3_906_250)),
            (SECOND, 150, ns(414_062_500)),
            (SECOND, 100, ns(609_375_000)),
            (SECOND, 90, ns(648_437_500)),
            (SECOND, 1, ns(996_093_750)),
            (ms(100), 255, ns(390_625)),
            (ms(100), 150, ns(41_406_250)),
            (ms(100), 100, ns(60_937_500)),
            (ms(100), 90, ns(64_843_750)),
            (ms(100), 1, ns(99_609_375)),
            (ms(20), 255, ns(78_125)),
            (ms(20), 150, ns(8_281_250)),
            (ms(20), 100, ns(12_187_500)),
            (ms(20), 90, ns(12_968_750)),
            (ms(20), 1, ns(19_921_875)),
        ];
        for (interval, priority, skew) in table {
            let instance = Instance::new(Params {
                advert_interval: interval,
                ..params(priority)
            });
            assert_eq!(instance.master_adver_interval(), interval);
            assert_eq!(instance.skew_time(), skew, "{interval:?} at {priority}");
            assert_eq!(
                instance.master_down_interval(),
                interval * 3 + skew,
                "{interval:?} at {priority}"
            );
        }
    }

    #[test]
    fn v2_timers() {
        let v2 = |advert_interval, priority| {
            Instance::new(Params {
                version: Version::V2,
                advert_interval,
                ..params(priority)
            })
        };
        assert_eq!(v2(SECOND, 100).skew_time(), us(609_375));
        assert_eq!(v2(SECOND, 100).master_down_interval(), us(3_609_375));
        // The skew is in seconds whatever the interval.
        assert_eq!(v2(ms(3000), 100).master_down_interval(), us(9_609_375));
        assert_eq!(v2(SECOND, 255).master_down_interval(), ns(3_003_906_250));
    }

    /// Routers exchanging advertisements on an in-memory wire with a
    /// virtual clock; a router that is down neither ticks nor hears.
    struct Wire {
        routers: Vec<(Instance, bool)>,
        /// (time, router address, to, reason) for every state change.
        changes: Vec<(Duration, IpAddr, State, String)>,
    }

    impl Wire {
        fn address(&self, router: usize) -> IpAddr {
            self.routers[router].0.params.local_address
        }

        fn input(&mut self, now: Duration, router: usize, input: Input) {
            let actions = self.routers[router].0.handle(now, input);
            self.carry_out(now, router, actions);
        }

        fn carry_out(&mut self, now: Duration, router: usize, actions: Vec<Action>) {
            let mut queue: VecDeque<(usize, Action)> =
                actions.into_iter().map(|a| (router, a)).collect();
            while let Some((sender, action)) = queue.pop_front() {
                match action {
                    Action::SendAdvert { priority } => {
                        let from = self.address(sender);
                        let interval = self.routers[sender].0.params.advert_interval;
                        for (index, (instance, up)) in self.routers.iter_mut().enumerate() {
                            if index != sender && *up {
                                let heard = instance.handle(
                                    now,
                                    Input::Advert {
                                        from,
                                        priority,
                                        interval,
                                    },
                                );
                                queue.extend(heard.into_iter().map(|a| (index, a)));
                            }
                        }
                    }
                    Action::Changed { to, reason, .. } => {
                        let address = self.address(sender);
                        self.changes.push((now, address, to, reason));
                    }
                    Action::TakeOver | Action::Release => {}
                }
            }
        }

        fn run_until(&mut self, end: Duration) {
            loop {
                let due = self
                    .routers
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, up))| *up)
                    .filter_map(|(index, (instance, _))| {
                        instance.next_deadline().map(|deadline| (deadline, index))
                    });
                match due.min() {
                    Some((now, router)) if now <= end => {
                        let actions = self.routers[router].0.tick(now);
                        self.carry_out(now, router, actions);
                    }
                    _ => return,
                }
            }
        }
    }

    #[test]
    fn three_routers_fail_over_and_back() {
        let router = |priority, last| {
            Instance::new(Params {
                local_address: address(last),
                ..params(priority)
            })
        };
        let mut wire = Wire {
            routers: vec![
                (router(150, 1), true),
                (router(100, 2), true),
                (router(90, 3), true),
            ],
            changes: Vec::new(),
        };
        for index in 0..3 {
            wire.input(Duration::ZERO, index, Input::Startup);
        }
        wire.run_until(ms(10_000));
        // 150 goes silent without a shutdown after its advert at 9.4140625 s.
        wire.routers[0].1 = false;
        wire.run_until(ms(20_000));
        assert_eq!(wire.routers[1].0.state(), State::Master);
        assert_eq!(wire.routers[2].0.state(), State::Backup);
        assert_eq!(wire.routers[2].0.master(), Some(address(2)));
        // 150 restarts and preempts 100 when its Master_Down_Timer runs out.
        wire.routers[0] = (router(150, 1), true);
        wire.input(ms(20_000), 0, Input::Startup);
        wire.run_until(ms(30_000));

        let expected = [
            (ms(0), 1, State::Backup, "startup"),
            (ms(0), 2, State::Backup, "startup"),
            (ms(0), 3, State::Backup, "startup"),
            (
                ns(3_414_062_500),
                1,
                State::Master,
                "no advertisement for 3.4140625s (master down interval)",
            ),
            // 9.4140625 s + 3 s + (256 - 100) / 256 s; 90 would wait until 13.0625 s.
            (
                ns(13_023_437_500),
                2,
                State::Master,
                "no advertisement for 3.609375s (master down interval)",
            ),
            (ms(20_000), 1, State::Backup, "startup"),
            (
                ns(23_414_062_500),
                1,
                State::Master,
                "preempting lower priority 100 from 198.18.0.2",
            ),
            (
                ns(23_414_062_500),
                2,
                State::Backup,
                "higher priority 150 from 198.18.0.1",
            ),
        ]
        .map(|(at, last, to, reason)| (at, address(last), to, reason.to_string()));
        assert_eq!(wire.changes, expected);
        let states: Vec<_> = wire
            .routers
            .iter()
            .map(|(instance, _)| instance.state())
            .collect();
        assert_eq!(states, [State::Master, State::Backup, State::Backup]);
        assert_eq!(wire.routers[1].0.master(), Some(address(1)));
        assert_eq!(wire.routers[2].0.master(), Some(address(1)));
    }
}
