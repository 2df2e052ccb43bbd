//! Numbers, sizes and durations for people: `1.2M`, `3.4 GB`, `1.2s ago`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SI prefixes: counts and bytes are decimal, like link speeds.
const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];

/// `value` with at most three significant digits and its SI prefix; whole
/// numbers below 1000 are written exactly.
fn si(value: f64) -> (String, &'static str) {
    let mut scaled = value;
    let mut power = 0;
    // 999.5 would round to 1000: the next prefix writes it as 1.0.
    while scaled >= 999.5 && power < PREFIXES.len() - 1 {
        scaled /= 1000.0;
        power += 1;
    }
    let text = if power == 0 && scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled < 99.95 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.0}")
    };
    (text, PREFIXES[power])
}

/// A count: `999`, `1.2k`, `34.5M`.
pub fn count(n: u64) -> String {
    let (number, prefix) = si(n as f64);
    format!("{number}{prefix}")
}

/// A size in bytes: `512 B`, `1.2 kB`, `3.4 GB`.
pub fn bytes(n: u64) -> String {
    let (number, prefix) = si(n as f64);
    format!("{number} {prefix}B")
}

/// Events per second: `0.5/s`, `1.2k/s`.
pub fn count_rate(per_second: f64) -> String {
    let (number, prefix) = si(per_second.max(0.0));
    format!("{number}{prefix}/s")
}

/// Bytes per second: `1.2 MB/s`.
pub fn bytes_rate(per_second: f64) -> String {
    let (number, prefix) = si(per_second.max(0.0));
    format!("{number} {prefix}B/s")
}

/// A duration in at most two units: `350ms`, `1.2s`, `45s`, `3m5s`,
/// `2h5m`, `3d4h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..10 => format!("{:.1}s", (ms / 100) as f64 / 10.0),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86400, s / 3600 % 24),
    }
}

/// This host's clock in milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long ago `then` was, both in milliseconds since the Unix epoch.
pub fn age(then_unix_ms: u64, now_unix_ms: u64) -> String {
    match now_unix_ms.checked_sub(then_unix_ms) {
        Some(ms) => format!("{} ago", duration(Duration::from_millis(ms))),
        // The agent's clock is ahead of this host's.
        None => "just now".into(),
    }
}

/// A fraction (0 to 1) as a percentage with one decimal: `33.3`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keep_three_significant_digits() {
        let cases = [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1000, "1.0k"),
            (1234, "1.2k"),
            (12_345, "12.3k"),
            (99_949, "99.9k"),
            (99_950, "100k"),
            (123_456, "123k"),
            (999_499, "999k"),
            (999_500, "1.0M"),
            (1_200_000, "1.2M"),
            (3_400_000_000, "3.4G"),
            (u64::MAX, "18.4E"),
        ];
        for (n, text) in cases {
            assert_eq!(count(n), text, "{n}");
        }
    }

    #[test]
    fn bytes_use_decimal_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1500), "1.5 kB");
        assert_eq!(bytes(3_400_000_000), "3.4 GB");
    }

    #[test]
    fn rates_keep_fractions() {
        assert_eq!(count_rate(0.0), "0/s");
        assert_eq!(count_rate(0.5), "0.5/s");
        assert_eq!(count_rate(250.0), "250/s");
        assert_eq!(count_rate(999.96), "1.0k/s");
        assert_eq!(count_rate(-3.0), "0/s");
        assert_eq!(bytes_rate(1_250_000.0), "1.2 MB/s");
    }

    #[test]
    fn durations_use_two_units_at_most() {
        let cases = [
            (0, "0ms"),
            (350, "350ms"),
            (1_250, "1.2s"),
            (9_999, "9.9s"),
            (45_000, "45s"),
            (185_000, "3m5s"),
            (7_500_000, "2h5m"),
            (273_600_000, "3d4h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(Duration::from_millis(ms)), text, "{ms}ms");
        }
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(age(10_000, 11_200), "1.2s ago");
        assert_eq!(age(11_200, 10_000), "just now");
    }

    #[test]
    fn shares_are_percentages() {
        assert_eq!(percent(1.0 / 3.0), "33.3");
        assert_eq!(percent(0.0), "0.0");
        assert_eq!(percent(1.0), "100.0");
    }
}
