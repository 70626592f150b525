//! `akstore export`: writes every record of a database as JSON Lines, to stdout or a file.
//!
//! The database is opened read-only and read inside one read transaction, so the file is
//! never changed and the export is one consistent state. A running server holds the file's
//! lock: stop it first. The line layout is described in `export_format`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use akstore_store::{CURRENT_SCHEMA_VERSION, Snapshot};
use clap::Args;

use crate::export_format::{
    ClusterRecord, EntryRecord, FORMAT_NAME, FORMAT_VERSION, Header, Line, PoolRecord,
};
use crate::progress::Progress;

#[derive(Args)]
pub struct ExportArgs {
    /// Database file to read. It is opened read-only and never changed.
    #[arg(long, env = "AKSTORE_DATA", default_value = "akstore.redb")]
    pub(crate) data: PathBuf,

    /// File to write instead of stdout. The export goes to `<FILE>.partial` first and is
    /// renamed to FILE once complete and synced, so FILE never holds a partial export.
    #[arg(long, env = "AKSTORE_EXPORT_OUT", value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs the export to completion.
pub fn run(args: ExportArgs) -> Result<(), String> {
    let snapshot = Snapshot::open(&args.data).map_err(|error| error.to_string())?;
    let counts = snapshot.counts();
    tracing::info!(
        data = %args.data.display(),
        clusters = counts.clusters,
        pools = counts.pools,
        revision = counts.revision,
        "export started"
    );

    let progress = match &args.out {
        Some(path) => write_file(path, |out| write_records(&snapshot, out))?,
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let progress = write_records(&snapshot, &mut out)?;
            out.flush().map_err(write_failed)?;
            progress
        }
    };

    let destination = args
        .out
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |path| path.display().to_string());
    tracing::info!(
        clusters = counts.clusters,
        pools = counts.pools,
        revision = counts.revision,
        elapsed_ms = progress.elapsed().as_millis() as u64,
        "exported {} clusters and {} pools at revision {} to {destination}",
        counts.clusters,
        counts.pools,
        counts.revision
    );
    Ok(())
}

/// Writes the header and every record; returns the progress counter for the summary.
fn write_records(snapshot: &Snapshot, out: &mut impl Write) -> Result<Progress, String> {
    let counts = snapshot.counts();
    let header = Header {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        schema_version: CURRENT_SCHEMA_VERSION,
        akstore_version: env!("CARGO_PKG_VERSION").into(),
        exported_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        revision: counts.revision,
        clusters: counts.clusters,
        pools: counts.pools,
        entries: snapshot.opaque_entry_count(),
    };
    write_line(out, &Line::Header(header))?;

    let total = counts.clusters + counts.pools + snapshot.opaque_entry_count();
    let mut progress = Progress::new("export", "records", Some(total));
    let mut done = 0;
    for entry in snapshot.clusters().map_err(|error| error.to_string())? {
        let (key, cluster) = entry.map_err(|error| error.to_string())?;
        write_line(
            out,
            &Line::Cluster(ClusterRecord::from_stored(key, cluster)?),
        )?;
        done += 1;
        progress.update(done);
    }
    for entry in snapshot.pools().map_err(|error| error.to_string())? {
        let (key, pool) = entry.map_err(|error| error.to_string())?;
        write_line(out, &Line::Pool(PoolRecord::from_stored(key, pool)?))?;
        done += 1;
        progress.update(done);
    }
    for entry in snapshot
        .opaque_entries()
        .map_err(|error| error.to_string())?
    {
        let entry = entry.map_err(|error| error.to_string())?;
        write_line(out, &Line::Entry(EntryRecord::from_stored(entry)))?;
        done += 1;
        progress.update(done);
    }
    Ok(progress)
}

fn write_line(out: &mut impl Write, line: &Line) -> Result<(), String> {
    serde_json::to_writer(&mut *out, line).map_err(|error| write_failed(error.into()))?;
    out.write_all(b"\n").map_err(write_failed)
}

/// Writes through `write` into `<path>.partial`, syncs it, and renames it to `path`. On
/// failure the partial file is removed and `path` is left as it was.
fn write_file<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, String>,
) -> Result<T, String> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);

    let result = (|| {
        let file = File::create(&partial)
            .map_err(|error| format!("failed to create {}: {error}", partial.display()))?;
        let mut out = BufWriter::new(file);
        let value = write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|error| write_failed(error.into_error()))?;
        file.sync_all().map_err(write_failed)?;
        std::fs::rename(&partial, path).map_err(|error| {
            format!(
                "failed to rename {} to {}: {error}",
                partial.display(),
                path.display()
            )
        })?;
        sync_parent_directory(path);
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Makes the rename durable. A failure only means a crash right now could lose the rename,
/// so it is logged rather than failing a complete export.
fn sync_parent_directory(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Err(error) = File::open(parent).and_then(|directory| directory.sync_all()) {
        tracing::warn!(%error, directory = %parent.display(), "failed to sync the directory");
    }
}

fn write_failed(error: std::io::Error) -> String {
    format!("failed to write the export: {error}")
}
