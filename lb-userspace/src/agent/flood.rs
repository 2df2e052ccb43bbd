//! The flood guard as operators see it: active while the data plane's
//! `flood_stateless` counter rises from one look to the next.

use std::time::SystemTime;

/// What the last look found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodState {
    /// Since when new flows go without state; `None` while they do not.
    pub active_since: Option<SystemTime>,
    /// New flows forwarded without state since the data plane was loaded.
    pub stateless_flows: u64,
}

/// Follows the counter; one look a second or so.
#[derive(Debug, Default)]
pub struct FloodWatch {
    seen: Option<u64>,
    state: FloodState,
}

/// A change of state worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodChange {
    Started,
    Ended,
}

impl FloodWatch {
    /// Takes the counter's total at `now`; the first look only sets the
    /// baseline (an adopted data plane's old floods are not news).
    pub fn observe(&mut self, total: u64, now: SystemTime) -> Option<FloodChange> {
        let rose = self.seen.is_some_and(|seen| total > seen);
        self.seen = Some(total);
        self.state.stateless_flows = total;
        match (rose, self.state.active_since) {
            (true, None) => {
                self.state.active_since = Some(now);
                Some(FloodChange::Started)
            }
            (false, Some(_)) => {
                self.state.active_since = None;
                Some(FloodChange::Ended)
            }
            _ => None,
        }
    }

    pub fn state(&self) -> FloodState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn active_while_the_counter_rises() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut watch = FloodWatch::default();
        assert_eq!(
            watch.observe(500, t(1)),
            None,
            "the first look is a baseline"
        );
        assert_eq!(watch.state().active_since, None);
        assert_eq!(watch.observe(500, t(2)), None);
        assert_eq!(watch.observe(900, t(3)), Some(FloodChange::Started));
        assert_eq!(watch.observe(1400, t(4)), None);
        assert_eq!(
            watch.state(),
            FloodState {
                active_since: Some(t(3)),
                stateless_flows: 1400
            }
        );
        assert_eq!(watch.observe(1400, t(5)), Some(FloodChange::Ended));
        assert_eq!(watch.state().active_since, None);
        assert_eq!(watch.observe(1400, t(6)), None);
    }
}
