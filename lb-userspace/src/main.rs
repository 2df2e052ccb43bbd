use std::process::ExitCode;

use clap::Parser;
use xlb::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    xlb::logs::init(cli.log_level);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
