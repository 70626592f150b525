//! The `akstore` binary: command-line parsing, logging set-up and the subcommands.
//!
//! Each subcommand lives in its own module; this file only dispatches.

mod migrate;
mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A durable fake of the AKS managed-cluster and agent-pool resource API.
///
/// Records live in one redb file; every write is an ETag-guarded compare-and-swap that is on
/// disk before the response is sent.
#[derive(Parser)]
#[command(name = "akstore", version = version_text(), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ARM API over HTTP until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Migrate a database file to this binary's schema version without serving it.
    Migrate(migrate::MigrateArgs),
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
    init_logging();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("akstore: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs on stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
