//! Where the agent's log goes: to the journal as structured entries when
//! systemd connected stderr to it (syslog priorities by level, and each
//! record's key-values, such as `service` and `backend`, as fields like
//! `SERVICE=`), else to stderr as plain lines with the key-values after
//! the message.

use log::{LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

/// Modules whose records below this level are left out: netlink's warns
/// of every attribute newer than itself.
const QUIET: &[(&str, LevelFilter)] = &[("netlink_packet_route", LevelFilter::Error)];

/// Installs the logger for records up to `level`.
pub fn init(level: LevelFilter) {
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(journal) = JournalLog::new() {
            let journal = journal
                .with_syslog_identifier("xlb".into())
                .add_extra_field("XLB_VERSION", env!("CARGO_PKG_VERSION"));
            if log::set_boxed_logger(Box::new(Filtered { level, journal })).is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).format_target(false);
    for (module, quiet) in QUIET {
        builder.filter_module(module, *quiet);
    }
    builder.init();
}

/// The journal, for records `shown`.
struct Filtered {
    level: LevelFilter,
    journal: JournalLog,
}

/// Whether a record of `target` at `level` is logged when up to `max` is.
fn shown(max: LevelFilter, target: &str, level: log::Level) -> bool {
    let max = QUIET
        .iter()
        .find(|(module, _)| target.starts_with(module))
        .map_or(max, |(_, quiet)| max.min(*quiet));
    level <= max
}

impl Log for Filtered {
    fn enabled(&self, metadata: &Metadata) -> bool {
        shown(self.level, metadata.target(), metadata.level())
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.journal.log(record);
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use log::Level;

    use super::*;

    #[test]
    fn netlink_warnings_are_left_out_at_every_level() {
        assert!(shown(LevelFilter::Info, "xlb::health", Level::Warn));
        assert!(shown(LevelFilter::Info, "xlb::health", Level::Info));
        assert!(!shown(LevelFilter::Info, "xlb::health", Level::Debug));
        assert!(!shown(
            LevelFilter::Debug,
            "netlink_packet_route::link",
            Level::Warn
        ));
        assert!(shown(
            LevelFilter::Debug,
            "netlink_packet_route::link",
            Level::Error
        ));
        assert!(!shown(LevelFilter::Off, "xlb", Level::Error));
    }
}
