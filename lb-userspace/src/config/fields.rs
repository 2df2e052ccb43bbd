//! Field parsers: one value of the file, checked under its field's name.

use std::{net::IpAddr, ops::RangeInclusive, str::FromStr, time::Duration};

use lb_common::maps::MAX_TUNNEL_SPREAD_BITS;

use super::{format_duration, ConfigError};

const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `0x` and 1-8 hex digits, as `xlb keygen` prints.
pub(super) fn hash_seed(text: &str) -> Result<u32, ConfigError> {
    text.strip_prefix("0x")
        .filter(|hex| (1..=8).contains(&hex.len()))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            ConfigError::new(
                "agent.hash_seed",
                format!("{text:?} is not 0x and 1-8 hex digits (make one with `xlb keygen`)"),
            )
        })
}

/// What Linux takes as a network interface name.
pub(super) fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// "200" or "200-399", codes 100-599.
pub(super) fn status_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u16 = low.parse().ok()?;
    let high: u16 = high.parse().ok()?;
    let codes = 100..=599;
    (codes.contains(&low) && codes.contains(&high) && low <= high).then_some(low..=high)
}

/// Labels of 1-63 letters, digits, '-' or '_', 253 characters at most,
/// with or without the root's final dot.
pub(super) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `value` (or `default` when unset) as a `T` within `range`.
pub(super) fn integer<T: TryFrom<i64>>(
    field: &str,
    value: Option<i64>,
    default: T,
    range: RangeInclusive<i64>,
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    range
        .contains(&value)
        .then(|| T::try_from(value).ok())
        .flatten()
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("{value} is out of range {}-{}", range.start(), range.end()),
            )
        })
}

pub(super) fn ip(field: &str, value: &str) -> Result<IpAddr, ConfigError> {
    parsed(field, value, "an IP address")
}

/// `value` parsed as a `T`, or "`value` is not `what`".
/// A tunnel source, `ADDRESS` or `ADDRESS/LENGTH`: with a length, the
/// outer source of client packets varies per flow over the prefix's host
/// bits (at most [`MAX_TUNNEL_SPREAD_BITS`] of them); returns the address,
/// if set, and those bits.
pub(super) fn tunnel_source<A: FromStr>(
    field: &str,
    text: Option<&str>,
    bits: u8,
    family: &str,
) -> Result<(Option<A>, u8), ConfigError> {
    let Some(text) = text else {
        return Ok((None, 0));
    };
    let what = format!("{family} address");
    let Some((addr, len)) = text.split_once('/') else {
        return Ok((Some(parsed(field, text, &what)?), 0));
    };
    let addr = parsed(field, addr, &what)?;
    let shortest = bits - MAX_TUNNEL_SPREAD_BITS;
    match len.parse::<u8>() {
        Ok(len) if (shortest..=bits).contains(&len) => Ok((Some(addr), bits - len)),
        _ => Err(ConfigError::new(
            field,
            format!(
                "{text:?}: the prefix length must be {shortest} to {bits} (at most {} \
                 sources a flow's outer address is chosen from)",
                1u32 << MAX_TUNNEL_SPREAD_BITS
            ),
        )),
    }
}

pub(super) fn parsed<T: FromStr>(field: &str, value: &str, what: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(field, format!("{value:?} is not {what}")))
}

/// The value spelled `value` in `choices`; the first choice when unset.
pub(super) fn choice<T: Copy>(
    field: &str,
    value: Option<&str>,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(value) = value else {
        return Ok(choices[0].1);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| not_one_of(field, value, choices.iter().map(|(name, _)| *name)))
}

pub(super) fn not_one_of<'a>(
    field: &str,
    value: &str,
    names: impl Iterator<Item = &'a str>,
) -> ConfigError {
    let names: Vec<&str> = names.collect();
    ConfigError::new(
        field,
        format!("{value:?} is not one of: {}", names.join(", ")),
    )
}

pub(super) fn duration(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    humantime::parse_duration(value).map_err(|_| {
        ConfigError::new(
            field,
            format!("{value:?} is not a duration (like \"2s\", \"500ms\" or \"1m30s\")"),
        )
    })
}

pub(super) fn duration_in(
    field: &str,
    value: Option<&str>,
    default: Duration,
    range: RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let duration = duration(field, value, default)?;
    if !range.contains(&duration) {
        return Err(ConfigError::new(
            field,
            format!(
                "{} is out of range {}-{}",
                format_duration(duration),
                format_duration(*range.start()),
                format_duration(*range.end())
            ),
        ));
    }
    Ok(duration)
}

/// A whole number of seconds from 1 s to a day.
pub(super) fn seconds(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let seconds = duration_in(field, value, default, Duration::from_secs(1)..=ONE_DAY)?;
    if seconds.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            field,
            format!(
                "{} is not a whole number of seconds",
                format_duration(seconds)
            ),
        ));
    }
    Ok(seconds)
}
