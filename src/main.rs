//! Start-up only: configuration, logger, bind, run, exit code.
//!
//! Exit codes: 0 clean drain (or a signal during start-up), 1 the shutdown deadline
//! passed, a shutdown step failed, or start-up failed; 2 bad configuration or usage.

use std::process::ExitCode;

use lastcall::config::{self, Command, Config};
use lastcall::server::{self, Server, Started};

fn main() -> ExitCode {
    // First of all: from here on a SIGTERM, SIGINT or SIGQUIT during start-up is a clean
    // exit, and a SIGHUP (a hand-over, once serving), SIGUSR1 or SIGUSR2 is no kill.
    let signals = match server::install_signal_handlers() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("lastcall: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let config = match Config::from_process() {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            print!("{}", config::version_text());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lastcall: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Err(e)) = config.database_url.as_deref().map(lastcall::db::check_url) {
        eprintln!("lastcall: {e}");
        return ExitCode::from(2);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let server = match Server::bind(&config, lastcall::routes::handle, signals) {
        Ok(Started::Ready(server)) => server,
        Ok(Started::Signalled(signal)) => {
            log::info!(
                "{} received during start-up: exiting without serving",
                signal.name()
            );
            return ExitCode::SUCCESS;
        }
        // Printed like the configuration errors above, not logged: it is the one line a
        // user who just ran the command needs, and the server never started.
        Err(e) => {
            eprintln!("lastcall: {e}");
            return ExitCode::from(1);
        }
    };
    match server.run() {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}
