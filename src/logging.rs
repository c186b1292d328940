//! Logs through `tracing`: to stderr and to a file in the data directory (`logs/dmdeleg.log`,
//! rotated daily, the last 14 kept). The level comes from `RUST_LOG` (default `info`).
//!
//! What is logged never carries a secret: log lines name devices, peers and delegations, states
//! and reasons, never credentials, nonces, keys, tokens or message bodies. A test runs a full
//! delegation and searches every line for them (tests/logs_no_secrets.rs).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The log file's directory under a data directory.
pub fn log_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("logs")
}

/// Starts logging to stderr and, with a data directory, to a daily rotating file there. Keep
/// the guard alive while the program runs (dropping it flushes the file). Logging that cannot
/// start (a second call, an unwritable directory) falls back to stderr alone.
/// `stderr`: also to stderr (the headless service); the demo and the console keep their
/// terminal for their own output and log to the file only.
pub fn init(data_dir: Option<&Path>, stderr: bool) -> Option<WorkerGuard> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let file = data_dir.and_then(|dir| {
        // The appender prunes old files before it creates the directory, and complains on
        // stderr when it is missing.
        std::fs::create_dir_all(log_dir(dir)).ok()?;
        let appender = Builder::new()
            .rotation(Rotation::DAILY)
            .filename_prefix("dmdeleg")
            .filename_suffix("log")
            .max_log_files(14)
            .build(log_dir(dir))
            .ok()?;
        Some(tracing_appender::non_blocking(appender))
    });
    match file {
        Some((writer, guard)) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false);
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(stderr)
                .with(layer)
                .try_init();
            Some(guard)
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(stderr)
                .try_init();
            None
        }
    }
}
