//! Snapshots of the global counters and rates between two snapshots.

use std::time::Duration;

use lb_common::stats::Counter;
use serde::Serialize;

/// Totals of every [`Counter`], summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters([u64; Counter::COUNT as usize]);

impl Default for Counters {
    fn default() -> Self {
        Counters([0; Counter::COUNT as usize])
    }
}

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter.index() as usize]
    }

    pub fn set(&mut self, counter: Counter, value: u64) {
        self.0[counter.index() as usize] = value;
    }

    /// Per-second rates from `earlier` to `self`, `elapsed` apart.
    pub fn rates_since(&self, earlier: &Counters, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        let mut rates = [0.0; Counter::COUNT as usize];
        for counter in Counter::ALL {
            let delta = self.get(counter).saturating_sub(earlier.get(counter));
            rates[counter.index() as usize] = delta as f64 / secs;
        }
        Rates(rates)
    }
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(Counter::ALL.iter().map(|c| (c.name(), self.get(*c))))
    }
}

/// Per-second rates of every [`Counter`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rates([f64; Counter::COUNT as usize]);

impl Rates {
    pub fn get(&self, counter: Counter) -> f64 {
        self.0[counter.index() as usize]
    }
}

impl Serialize for Rates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(Counter::ALL.iter().map(|c| (c.name(), self.get(*c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_per_second() {
        let mut before = Counters::default();
        let mut after = Counters::default();
        before.set(Counter::Udp, 100);
        after.set(Counter::Udp, 400);
        after.set(Counter::Tcp, 50);
        let rates = after.rates_since(&before, Duration::from_millis(500));
        assert_eq!(rates.get(Counter::Udp), 600.0);
        assert_eq!(rates.get(Counter::Tcp), 100.0);
        assert_eq!(rates.get(Counter::Ipv4), 0.0);
    }

    #[test]
    fn serializes_by_name() {
        let mut c = Counters::default();
        c.set(Counter::RxPackets, 7);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["rx_packets"], 7);
        assert_eq!(json["pass"], 0);
        assert_eq!(json.as_object().unwrap().len(), Counter::COUNT as usize);
    }
}
