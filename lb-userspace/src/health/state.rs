//! Rise/fall bookkeeping for one backend: which state the probes have
//! established, and how far the current streak has gone toward the other.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use crate::model::OperState;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub ok: bool,
    /// For the operator: "connected in 0.4 ms", "HTTP 503", "timeout after 1s".
    pub detail: String,
    /// When the probe started.
    pub at: SystemTime,
    pub took: Duration,
}

/// The current streak toward the state the backend is not in: failures
/// while up, successes while down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub toward: OperState,
    pub count: u32,
    pub needed: u32,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.toward {
            OperState::Up => "successes",
            OperState::Down => "failures",
        };
        write!(f, "{} of {} {what}", self.count, self.needed)
    }
}

/// Upper bounds, in seconds, of the buckets probe durations are counted in
/// (`xlb_health_check_duration_seconds`); the last bucket is unbounded.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How long a check's probes took: a count per bucket of
/// [`DURATION_BUCKETS`] (not cumulative) and one above them, and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeDurations {
    pub counts: [u64; DURATION_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl ProbeDurations {
    fn record(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
    }

    /// Probes counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Clone, Debug)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    state: OperState,
    successes: u32,
    failures: u32,
    checks: u64,
    failures_total: u64,
    transitions: u64,
    durations: ProbeDurations,
}

impl Tracker {
    /// `rise` and `fall` below 1 count as 1.
    pub fn new(rise: u32, fall: u32, initial: OperState) -> Tracker {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            state: initial,
            successes: 0,
            failures: 0,
            checks: 0,
            failures_total: 0,
            transitions: 0,
            durations: ProbeDurations::default(),
        }
    }

    /// Counts `outcome`; returns the new state when this outcome flipped it.
    pub fn record(&mut self, outcome: &ProbeOutcome) -> Option<OperState> {
        self.checks += 1;
        self.durations.record(outcome.took);
        if outcome.ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.failures_total += 1;
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let flipped = match self.state {
            OperState::Down if self.successes >= self.rise => OperState::Up,
            OperState::Up if self.failures >= self.fall => OperState::Down,
            _ => return None,
        };
        self.state = flipped;
        self.transitions += 1;
        Some(flipped)
    }

    pub fn state(&self) -> OperState {
        self.state
    }

    pub fn progress(&self) -> Progress {
        match self.state {
            OperState::Up => Progress {
                toward: OperState::Down,
                count: self.failures,
                needed: self.fall,
            },
            OperState::Down => Progress {
                toward: OperState::Up,
                count: self.successes,
                needed: self.rise,
            },
        }
    }

    pub fn rise(&self) -> u32 {
        self.rise
    }

    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// Probes recorded.
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Failed probes recorded.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    /// State changes so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// How long the recorded probes took.
    pub fn durations(&self) -> &ProbeDurations {
        &self.durations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OperState::{Down, Up};

    fn outcome(ok: bool) -> ProbeOutcome {
        ProbeOutcome {
            ok,
            detail: String::new(),
            at: SystemTime::UNIX_EPOCH,
            took: Duration::ZERO,
        }
    }

    /// Feeds `results` ('+' success, '-' failure) and returns the state after
    /// each, and the outcomes (by index) that flipped it.
    fn run(
        rise: u32,
        fall: u32,
        initial: OperState,
        results: &str,
    ) -> (Vec<OperState>, Vec<usize>) {
        let mut tracker = Tracker::new(rise, fall, initial);
        let mut states = Vec::new();
        let mut flips = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let flipped = tracker.record(&outcome(c == '+'));
            if let Some(state) = flipped {
                assert_eq!(state, tracker.state());
                flips.push(i);
            }
            states.push(tracker.state());
        }
        assert_eq!(tracker.transitions(), flips.len() as u64);
        (states, flips)
    }

    /// rise, fall, initial state, results, the state after each, the flips.
    type Case = (
        u32,
        u32,
        OperState,
        &'static str,
        &'static [OperState],
        &'static [usize],
    );

    #[test]
    fn sequences() {
        let cases: &[Case] = &[
            // rise 2 fall 3, starting up
            (2, 3, Up, "+++", &[Up, Up, Up], &[]),
            (2, 3, Up, "--", &[Up, Up], &[]),
            (2, 3, Up, "---", &[Up, Up, Down], &[2]),
            (2, 3, Up, "--+--", &[Up, Up, Up, Up, Up], &[]),
            (
                2,
                3,
                Up,
                "---+-++",
                &[Up, Up, Down, Down, Down, Down, Up],
                &[2, 6],
            ),
            (2, 3, Up, "-----", &[Up, Up, Down, Down, Down], &[2]),
            // rise 1 fall 1: every result decides
            (1, 1, Up, "-+-+", &[Down, Up, Down, Up], &[0, 1, 2, 3]),
            (1, 1, Up, "++--", &[Up, Up, Down, Down], &[2]),
            // initial down
            (2, 3, Down, "+", &[Down], &[]),
            (2, 3, Down, "++", &[Down, Up], &[1]),
            (2, 3, Down, "-+-++", &[Down, Down, Down, Down, Up], &[4]),
            // alternating results never flip with rise 2 fall 2
            (2, 2, Up, "-+-+-+-+", &[Up; 8], &[]),
            (2, 2, Down, "+-+-+-+-", &[Down; 8], &[]),
            // 0 counts as 1
            (0, 0, Down, "+-", &[Up, Down], &[0, 1]),
        ];
        for &(rise, fall, initial, results, states, flips) in cases {
            let got = run(rise, fall, initial, results);
            assert_eq!(
                got,
                (states.to_vec(), flips.to_vec()),
                "rise {rise} fall {fall} from {initial:?}: {results}"
            );
        }
    }

    #[test]
    fn progress_and_counts() {
        let mut tracker = Tracker::new(2, 3, Up);
        assert_eq!(tracker.progress().to_string(), "0 of 3 failures");
        tracker.record(&outcome(false));
        assert_eq!(tracker.progress().to_string(), "1 of 3 failures");
        tracker.record(&outcome(false));
        tracker.record(&outcome(false));
        assert_eq!(tracker.state(), Down);
        assert_eq!(tracker.progress().to_string(), "0 of 2 successes");
        tracker.record(&outcome(true));
        assert_eq!(
            tracker.progress(),
            Progress {
                toward: Up,
                count: 1,
                needed: 2
            }
        );
        assert_eq!(tracker.checks(), 4);
        assert_eq!(tracker.failures_total(), 3);
        assert_eq!(tracker.transitions(), 1);
    }

    #[test]
    fn probe_durations_fall_in_their_buckets() {
        let mut tracker = Tracker::new(1, 1, Up);
        for took_ms in [0, 1, 3, 3000] {
            tracker.record(&ProbeOutcome {
                took: Duration::from_millis(took_ms),
                ..outcome(true)
            });
        }
        let durations = tracker.durations();
        // 0 ms and 1 ms are within the first two bounds, 3 ms within 5 ms,
        // 3 s above every bound.
        assert_eq!(durations.counts[0], 1);
        assert_eq!(durations.counts[1], 1);
        assert_eq!(durations.counts[3], 1);
        assert_eq!(durations.counts[DURATION_BUCKETS.len()], 1);
        assert_eq!(durations.count(), 4);
        assert!((durations.sum_seconds - 3.004).abs() < 1e-9);
    }
}
