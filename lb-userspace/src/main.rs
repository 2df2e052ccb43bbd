use std::process::ExitCode;

use clap::Parser;
use xlb::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        // It warns of every netlink attribute newer than itself.
        .filter_module("netlink_packet_route", log::LevelFilter::Error)
        .format_target(false)
        .init();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
