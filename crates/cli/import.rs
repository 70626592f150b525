//! `akstore import`: loads an export (see `export_format`) into a new or empty database.
//!
//! Every record keeps its eTag, revision and timestamps, and the global revision is set to the
//! export's. All records go into one write transaction that commits only after the last line
//! has been read and checked, so a malformed line, a record that breaks the store's rules, or
//! a truncated file leaves the database as it was. The error names the line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use akstore_store::{ImportError, Importer, Snapshot, Store};
use clap::Args;

use crate::export_format::{FORMAT_NAME, FORMAT_VERSION, Header, Line};
use crate::progress::Progress;

/// Longest line accepted, in bytes: far above any record the API can build (a request body
/// is at most 4 MiB), while a corrupt file without newlines cannot exhaust memory.
const MAX_LINE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Args)]
pub struct ImportArgs {
    /// Database file to load into. It is created when missing; an existing one must never
    /// have been written to.
    #[arg(long, env = "AKSTORE_DATA", default_value = "akstore.redb")]
    pub(crate) data: PathBuf,

    /// Export file to read; without it, or with `-`, the export is read from stdin.
    #[arg(long = "in", env = "AKSTORE_IMPORT_IN", value_name = "FILE")]
    input: Option<PathBuf>,
}

/// Rejects a target that contains records before it is opened for writing, because redb's
/// writable open itself changes the file's bytes. The import transaction checks again, so a
/// write that lands between the two checks is still caught.
fn reject_non_empty_target(data: &Path) -> Result<(), String> {
    let has_content = std::fs::metadata(data).is_ok_and(|metadata| metadata.len() > 0);
    if !has_content {
        return Ok(());
    }
    let snapshot = Snapshot::open(data).map_err(|error| error.to_string())?;
    let counts = snapshot.counts();
    if counts.clusters + counts.pools + snapshot.opaque_entry_count() > 0 {
        return Err(format!(
            "import into {} failed: {}",
            data.display(),
            ImportError::<String>::NotEmpty(counts)
        ));
    }
    Ok(())
}

/// Runs the import to completion.
pub fn run(args: ImportArgs) -> Result<(), String> {
    let (reader, total_bytes, source) = open_input(args.input.as_deref())?;
    let mut lines = Lines::new(reader);
    let header = read_header(&mut lines)?;

    let existed = args.data.exists();
    reject_non_empty_target(&args.data)?;
    let store = Store::open(&args.data).map_err(|error| error.to_string())?;
    tracing::info!(
        source,
        data = %args.data.display(),
        clusters = header.clusters,
        pools = header.pools,
        revision = header.revision,
        "import started"
    );
    let mut progress = match total_bytes {
        Some(total) => Progress::new("import", "bytes", Some(total)),
        None => Progress::new(
            "import",
            "records",
            Some(header.clusters + header.pools + header.entries),
        ),
    };
    let result = store.import(header.revision, |importer| {
        load_records(
            importer,
            &mut lines,
            &header,
            &mut progress,
            total_bytes.is_some(),
        )
    });
    store.close();
    drop(store);

    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            // A file this command created holds nothing now; removing it lets the next
            // attempt start from the same state as this one.
            if !existed && !matches!(error, ImportError::CommitFailed(_)) {
                let _ = std::fs::remove_file(&args.data);
            }
            return Err(match error {
                ImportError::Rejected(message) => message,
                other => format!("import into {} failed: {other}", args.data.display()),
            });
        }
    };
    let counts = summary.counts;
    tracing::info!(
        entries = summary.opaque_entries,
        clusters = counts.clusters,
        pools = counts.pools,
        revision = counts.revision,
        elapsed_ms = progress.elapsed().as_millis() as u64,
        "imported {} clusters and {} pools at revision {} into {}",
        counts.clusters,
        counts.pools,
        counts.revision,
        args.data.display()
    );
    Ok(())
}

type Input = (Box<dyn BufRead>, Option<u64>, String);

/// The reader, its size in bytes when it is a file, and a name for logs.
fn open_input(path: Option<&Path>) -> Result<Input, String> {
    match path {
        Some(path) if path.as_os_str() != "-" => {
            let file = File::open(path)
                .map_err(|error| format!("failed to open {}: {error}", path.display()))?;
            let size = file.metadata().ok().map(|metadata| metadata.len());
            Ok((
                Box::new(BufReader::new(file)),
                size,
                path.display().to_string(),
            ))
        }
        _ => Ok((
            Box::new(BufReader::new(std::io::stdin())),
            None,
            "stdin".into(),
        )),
    }
}

fn read_header(lines: &mut Lines) -> Result<Header, String> {
    let Some((number, text)) = lines.next()? else {
        return Err("the input is empty; expected an akstore export".into());
    };
    let header = match serde_json::from_str::<Line>(&text) {
        Ok(Line::Header(header)) => header,
        Ok(_) => {
            return Err(format!(
                "line {number}: the first line must be the export header"
            ));
        }
        Err(error) => return Err(format!("line {number}: invalid header: {error}")),
    };
    if header.format != FORMAT_NAME || header.format_version != FORMAT_VERSION {
        return Err(format!(
            "line {number}: the input is format '{}' version {}, but this akstore reads only \
             '{FORMAT_NAME}' version {FORMAT_VERSION}",
            header.format, header.format_version
        ));
    }
    Ok(header)
}

/// Reads every line after the header into the importer, then checks the counts the header
/// announced, which detects a truncated file.
fn load_records(
    importer: &mut Importer<'_>,
    lines: &mut Lines,
    header: &Header,
    progress: &mut Progress,
    count_bytes: bool,
) -> Result<(), String> {
    while let Some((number, text)) = lines.next()? {
        let at_line = |message: String| format!("line {number}: {message}");
        match serde_json::from_str::<Line>(&text) {
            Ok(Line::Cluster(record)) => {
                let (key, cluster) = record.into_stored().map_err(at_line)?;
                importer
                    .insert_cluster(&key, &cluster)
                    .map_err(|error| at_line(error.to_string()))?;
            }
            Ok(Line::Pool(record)) => {
                let (key, pool) = record.into_stored().map_err(at_line)?;
                importer
                    .insert_pool(&key, &pool)
                    .map_err(|error| at_line(error.to_string()))?;
            }
            Ok(Line::Entry(record)) => {
                let entry = record.into_stored().map_err(at_line)?;
                importer
                    .insert_opaque(&entry)
                    .map_err(|error| at_line(error.to_string()))?;
            }
            Ok(Line::Header(_)) => return Err(at_line("a second header".into())),
            Err(error) => {
                // serde_json ends its message with "at line 1 column N", the position within
                // this one input line; name only the column beside the input's line number.
                let message = error.to_string();
                let position = format!(" at line {} column {}", error.line(), error.column());
                let reason = message.strip_suffix(&position).unwrap_or(&message);
                return Err(format!(
                    "line {number}, column {}: invalid record: {reason}",
                    error.column()
                ));
            }
        }
        let summary = importer.summary();
        progress.update(if count_bytes {
            lines.bytes
        } else {
            summary.counts.clusters + summary.counts.pools + summary.opaque_entries
        });
    }

    let summary = importer.summary();
    let loaded = (
        summary.counts.clusters,
        summary.counts.pools,
        summary.opaque_entries,
    );
    if loaded != (header.clusters, header.pools, header.entries) {
        return Err(format!(
            "the header announces {} clusters, {} pools and {} entries, but the input has \
             {}, {} and {}; the file may be truncated",
            header.clusters, header.pools, header.entries, loaded.0, loaded.1, loaded.2
        ));
    }
    Ok(())
}

/// Numbered, length-bounded lines of the input; blank lines are skipped.
struct Lines {
    reader: Box<dyn BufRead>,
    number: u64,
    /// Bytes consumed so far.
    bytes: u64,
}

impl Lines {
    fn new(reader: Box<dyn BufRead>) -> Lines {
        Lines {
            reader,
            number: 0,
            bytes: 0,
        }
    }

    /// The next non-blank line and its 1-based number, without the line ending.
    fn next(&mut self) -> Result<Option<(u64, String)>, String> {
        loop {
            let mut buffer = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut buffer)
                .map_err(|error| format!("failed to read line {}: {error}", self.number + 1))?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            self.bytes += read as u64;
            if buffer.len() as u64 > MAX_LINE_BYTES {
                return Err(format!(
                    "line {}: longer than the limit of {MAX_LINE_BYTES} bytes",
                    self.number
                ));
            }
            let text = String::from_utf8(buffer)
                .map_err(|_| format!("line {}: not valid UTF-8", self.number))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                return Ok(Some((self.number, text.to_owned())));
            }
        }
    }
}
