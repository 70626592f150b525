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
        Command::Migrate(args) => migrate::run(args),
        Command::Export(args) => export::run(args),
        Command::Import(args) => import::run(args),
        Command::Check(args) => check::run(args),
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
