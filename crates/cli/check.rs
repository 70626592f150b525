//! `akstore check`: an offline check of a database file that exits non-zero on any violation.
//!
//! It prints a summary to stdout, then every violation it lists, one a line. The file must not
//! be open in a running server. See `akstore_store::check` for what is checked.

use std::path::PathBuf;

use akstore_store::check::{self, CheckReport};
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {
    /// Database file to check. It must exist and no server may have it open.
    #[arg(long, env = "AKSTORE_DATA")]
    pub(crate) data: PathBuf,
}

/// Runs the check; `Err` carries the message for a file that could not be checked or that
/// failed the check.
pub fn run(args: CheckArgs) -> Result<(), String> {
    let report = check::check_file(&args.data).map_err(|error| error.to_string())?;
    print_summary(&report);
    if report.passed() {
        Ok(())
    } else {
        Err(format!(
            "{} failed the check: {}",
            report.path.display(),
            failure_summary(&report)
        ))
    }
}

fn print_summary(report: &CheckReport) {
    let schema = report
        .schema_version
        .map_or_else(|| "missing".to_owned(), |version| version.to_string());
    println!("database:        {}", report.path.display());
    println!("file size:       {} bytes", report.file_bytes);
    println!("schema version:  {schema}");
    println!("revision:        {}", report.revision);
    println!("clusters:        {}", report.clusters);
    println!("agent pools:     {}", report.pools);
    println!("request records: {}", report.requests);
    println!(
        "redb integrity:  {}",
        if report.integrity_ok {
            "passed"
        } else {
            "FAILED (redb repaired what it could)"
        }
    );
    println!("violations:      {}", report.violation_count);
    for violation in &report.violations {
        println!("  {violation}");
    }
    let unlisted = report.violation_count - report.violations.len() as u64;
    if unlisted > 0 {
        println!("  ... and {unlisted} more");
    }
    println!("checked in {} ms", report.elapsed.as_millis());
}

fn failure_summary(report: &CheckReport) -> String {
    match (report.integrity_ok, report.violation_count) {
        (false, 0) => "redb's integrity check failed".into(),
        (false, count) => format!("redb's integrity check failed and {count} violations"),
        (true, count) => format!("{count} violations"),
    }
}
