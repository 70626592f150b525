//! `akstore migrate`: bring a database file to the schema version of this binary without
//! serving it, or with `--dry-run` print the steps that would run and change nothing.
//!
//! The migration is the same one `akstore serve` runs on open: every pending step inside one
//! write transaction, so an interrupted run leaves the old version for the next run. Progress of
//! long steps goes to the log on stderr; the summary goes to stdout.

use std::path::PathBuf;

use akstore_store::{CURRENT_SCHEMA_VERSION, FileSchema, MigrationReport, OpenError};
use clap::Args;

#[derive(Args)]
pub struct MigrateArgs {
    /// Database file to migrate. It must exist: migrate never creates a database.
    #[arg(long, env = "AKSTORE_DATA")]
    pub(crate) data: PathBuf,

    /// Print the schema version of the file and the steps a migration would run, and change
    /// nothing. The file is only read.
    #[arg(long)]
    dry_run: bool,
}

/// Runs the command to completion.
pub fn run(args: MigrateArgs) -> Result<(), String> {
    if args.dry_run {
        return describe(&args);
    }
    let report = akstore_store::migrate_file(&args.data).map_err(|error| error.to_string())?;
    print!("{}", report_text(&args, &report));
    Ok(())
}

/// Prints what a migration of the file would do, reading it without writing.
fn describe(args: &MigrateArgs) -> Result<(), String> {
    let path = args.data.display();
    let found = match akstore_store::inspect_schema(&args.data).map_err(|e| e.to_string())? {
        FileSchema::New => {
            let missing = OpenError::Missing {
                path: args.data.clone(),
            };
            return Err(missing.to_string());
        }
        FileSchema::Version(version) => version,
    };

    let steps = FileSchema::Version(found).pending_steps();
    if steps.is_empty() {
        println!(
            "{path} has schema version {found}, the current one of this akstore; \
             nothing to migrate"
        );
        return Ok(());
    }
    println!(
        "{path} has schema version {found}; this akstore migrates it to version \
         {CURRENT_SCHEMA_VERSION} in one transaction with these steps:"
    );
    for step in steps {
        println!("  {} -> {}: {}", step.from, step.to(), step.summary);
    }
    println!("dry run: nothing was changed; run without --dry-run to migrate");
    Ok(())
}

/// The summary of a finished migration, one line per step.
fn report_text(args: &MigrateArgs, report: &MigrationReport) -> String {
    let path = args.data.display();
    if report.steps.is_empty() {
        return format!(
            "{path} already has schema version {}, the current one; nothing was changed\n",
            report.to
        );
    }
    let mut text = format!(
        "migrated {path} from schema version {} to {}:\n",
        report.from, report.to
    );
    for step in &report.steps {
        let elapsed_ms = step.elapsed.as_millis();
        let work = match step.records {
            0 => format!("{elapsed_ms} ms"),
            records => format!("{records} records, {elapsed_ms} ms"),
        };
        text.push_str(&format!(
            "  {} -> {}: {} ({work})\n",
            step.from, step.to, step.summary
        ));
    }
    text
}
