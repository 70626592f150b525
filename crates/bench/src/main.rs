//! `akstore-bench`: measures akstore side by side with etcd, and the store without HTTP.
//!
//! `compare` starts both servers on loopback ports with temporary data, drives each with the
//! same closed-loop workloads over keep-alive HTTP/1.1 connections, and prints Markdown tables
//! plus a JSON file. `store` runs only the storage-level benchmark. Every server it starts
//! listens on 127.0.0.1 and every request goes there.

mod akstore;
mod compare;
mod dataset;
mod etcd;
mod http;
mod process;
mod report;
mod runner;
mod storage;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "akstore-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every workload against akstore and etcd, print the tables and write JSON.
    Compare(compare::CompareArgs),
    /// Measure raw redb commits and the store's group commit, without HTTP.
    Store(StoreArgs),
}

#[derive(Args)]
struct StoreArgs {
    /// Measured seconds per figure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,

    /// Clusters (of 3 pools each) the conditional updates cycle through.
    #[arg(long, default_value_t = 1_000)]
    clusters: usize,

    /// Writer threads of the first store run; a second run uses one.
    #[arg(long, default_value_t = 64)]
    threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let result = match cli.command {
        Command::Compare(args) => run_compare(args, command_line),
        Command::Store(args) => run_store(args, command_line),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("akstore-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_compare(args: compare::CompareArgs, command_line: String) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("failed to start the async runtime: {error}"))?;
    let json_path = args.json.clone();
    let report = runtime.block_on(compare::run(args, command_line))?;
    println!("{}", report.to_markdown());
    write_json(&json_path, &report)
}

fn run_store(args: StoreArgs, command_line: String) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("akstore-bench-store-")
        .tempdir()
        .map_err(|error| format!("creating a temporary directory failed: {error}"))?;
    let storage = storage::run(
        dir.path(),
        Duration::from_secs(args.seconds),
        args.clusters,
        &[args.threads, 1],
    )?;
    let report = report::Report {
        command: command_line,
        storage: Some(storage),
        ..report::Report::default()
    };
    println!("{}", report.to_markdown());
    Ok(())
}

fn write_json(path: &PathBuf, report: &report::Report) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("creating {} failed: {error}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(report)
        .map_err(|error| format!("encoding the report failed: {error}"))?;
    std::fs::write(path, text + "\n")
        .map_err(|error| format!("writing {} failed: {error}", path.display()))?;
    eprintln!("akstore-bench: wrote {}", path.display());
    Ok(())
}
