//! An application that embeds lastcall: state and routes of its own, the reference
//! routes for everything else, and a graceful shutdown it can start itself.
//!
//! Run it (the engine's settings come from the environment, as for the `lastcall`
//! binary; `GREETING` is this application's own):
//!
//! ```text
//! cargo run --example embed
//! GREETING=Bonjour PORT=8080 DRAIN_DELAY_MS=2000 cargo run --example embed
//! ```
//!
//! Then try:
//!
//! ```text
//! curl -i localhost:3000/hello                  # "Hello, visitor #1": the app's own state
//! curl -i localhost:3000/hello                  # "Hello, visitor #2"
//! curl -i localhost:3000/plaintext              # a reference route (lastcall::routes)
//! curl -i 'localhost:3000/work?ms=5000' &       # a slow request in flight, then...
//! curl -i -X POST localhost:3000/admin/shutdown # ...the app asks for its own shutdown
//! ```
//!
//! The server logs `shutdown requested by the application: starting graceful shutdown
//! (draining, max 10000ms)`, answers the request in flight (with `Connection: close`),
//! closes, and the process exits 0. Ctrl+C (SIGINT) or `kill` (SIGTERM) start the very
//! same sequence. With `DRAIN_DELAY_MS` set, `curl -i localhost:3000/health` answers 503
//! during the delay.

use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use lastcall::config::{Command, Config};
use lastcall::handler::{Answer, Ctx, Handler};
use lastcall::http::request::{Method, Request};
use lastcall::http::response::{Body, Response, Status, TEXT};
use lastcall::server::{self, Server, ShutdownHandle, Started};

/// The application: what it was configured with, what it counts, and how it stops.
struct App {
    greeting: String,
    visits: AtomicU64,
    /// Set once the server exists (it is bound with this very handler).
    shutdown: OnceLock<ShutdownHandle>,
}

impl Handler for App {
    /// The application's routes, and the reference routes for the rest.
    fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
        match (req.method, req.path) {
            (Method::Get | Method::Head, "/hello") => self.hello(),
            // An admin route on the public port is for a demo: guard it in real life.
            (Method::Post, "/admin/shutdown") => self.stop(),
            _ => lastcall::routes::handle(req, ctx),
        }
    }
}

impl App {
    fn hello(&self) -> Answer {
        let n = self.visits.fetch_add(1, Ordering::Relaxed) + 1;
        let body = format!("{}, visitor #{n}\n", self.greeting);
        Answer::Now(Response::new(
            Status::OK,
            TEXT,
            Body::Bytes(body.into_bytes()),
        ))
    }

    /// Starts the graceful shutdown and says so; the drain closes this connection too.
    fn stop(&self) -> Answer {
        if let Some(handle) = self.shutdown.get() {
            handle.shutdown();
        }
        let body = r#"{"status":"shutting_down"}"#;
        Answer::Now(Response::json_static(Status::OK, body))
    }
}

fn main() -> Result<ExitCode, Box<dyn Error>> {
    // First, as in the binary: a Ctrl+C during start-up must stop us cleanly, not kill us.
    let signals = server::install_signal_handlers()?;
    // The engine's settings from the environment, read as the binary reads them (PORT,
    // SHUTDOWN_TIMEOUT_MS, DRAIN_DELAY_MS, ...). No arguments, so no `--help` to answer.
    let Command::Run(config) = Config::parse(|name| std::env::var(name).ok(), &[])? else {
        unreachable!("only a command line asks for the help or the version");
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let app = Arc::new(App {
        greeting: std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_owned()),
        visits: AtomicU64::new(0),
        shutdown: OnceLock::new(),
    });
    // The server gets one `Arc` of the application; we keep the other.
    let Started::Ready(server) = Server::bind(&config, Arc::clone(&app), signals)? else {
        return Ok(ExitCode::SUCCESS); // a signal during start-up: never ready, exit 0
    };
    let _ = app.shutdown.set(server.shutdown_handle());

    let outcome = server.run()?;
    let visits = app.visits.load(Ordering::Relaxed);
    println!("embed: stopped ({outcome:?}) after {visits} visits");
    Ok(ExitCode::from(outcome.exit_code()))
}
