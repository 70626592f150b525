//! The `akstore` binary: command-line parsing, logging set-up and the subcommands.
//!
//! Each subcommand lives in its own module; this file only dispatches.

mod check;
mod export;
mod export_format;
mod import;
mod migrate;
mod progress;
mod serve;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// A durable fake of the AKS managed-cluster and agent-pool resource API.
///
/// Records live in one redb file; every write is an ETag-guarded compare-and-swap that is on
/// disk before the response is sent.
#[derive(Parser)]
#[command(name = "akstore", version = version_text(), about, long_about = None)]
struct Cli {
    /// Log line format on stderr: `text` for people, `json` for one JSON object per line.
    /// `RUST_LOG` filters what is logged (default `info`), for example `RUST_LOG=debug` or
    /// `RUST_LOG=info,akstore_store=debug`.
    #[arg(long, global = true, env = "AKSTORE_LOG_FORMAT", value_enum,
          default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ARM API over HTTP until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Migrate a database file to this binary's schema version without serving it.
    Migrate(migrate::MigrateArgs),
    /// Write every record of a database as JSON Lines, without changing the file.
    Export(export::ExportArgs),
    /// Load a JSON Lines export into a new, empty database in one transaction.
    Import(import::ImportArgs),
    /// Check a database file offline: redb's integrity check, every record and invariant.
    Check(check::CheckArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs an offline command on the database file `data`, turning a panic into an error.
///
/// redb 5 may panic, instead of returning an error, when it reads a page that was altered
/// behind its back. A damaged file then gets a message that names the damage and exit code 1, not a
/// library panic and exit code 101.
fn run_offline(data: &Path, command: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(command));
    drop(std::panic::take_hook());
    outcome.unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(damaged_file_message(data, detail))
    })
}

/// Builds the message for a database file that redb could not read without panicking.
fn damaged_file_message(data: &Path, detail: &str) -> String {
    format!(
        "reading {} failed inside redb ({detail}), so the file is probably damaged; run \
         `akstore check --data {}` to see what is readable, and restore the file from a backup \
         or an `akstore export`",
        data.display(),
        data.display()
    )
}

/// `--version` text: the binary's version and the schema version it reads and writes.
fn version_text() -> &'static str {
    let text = format!(
        "{} (schema version {})",
        env!("CARGO_PKG_VERSION"),
        akstore_store::CURRENT_SCHEMA_VERSION
    );
    // Built once per process for clap, which keeps it for the process's lifetime anyway.
    Box::leak(text.into_boxed_str())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    init_logging(log_format);
    match akstore_store::failpoints::configure_from_env() {
        Ok(set) if set.is_empty() => {}
        Ok(set) => tracing::warn!(failpoints = ?set, "failpoints configured from FAILPOINTS"),
        Err(message) => {
            eprintln!("akstore: {message}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Migrate(args) => {
            let data = args.data.clone();
            run_offline(&data, || migrate::run(args))
        }
        Command::Export(args) => {
            let data = args.data.clone();
            run_offline(&data, || export::run(args))
        }
        Command::Import(args) => {
            let data = args.data.clone();
            run_offline(&data, || import::run(args))
        }
        Command::Check(args) => {
            let data = args.data.clone();
            run_offline(&data, || check::run(args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Reported once: as a plain line for people, or as a log record in a JSON stream,
            // which a plain line would break.
            match log_format {
                LogFormat::Text => eprintln!("akstore: {error}"),
                LogFormat::Json => tracing::error!("{error}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr in `format`, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
