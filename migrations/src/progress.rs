//! Progress of a schema step over many records, logged at intervals so that a long migration of
//! a large file shows that it is moving and how far it has come.

use std::time::{Duration, Instant};

/// Time between two progress lines of one step. Short steps finish before the first line and log
/// only their start and end.
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Counts what a step has done and logs it at most once per interval.
pub struct Progress {
    from: u64,
    interval: Duration,
    task: &'static str,
    total: u64,
    done: u64,
    records: u64,
    last_logged: Instant,
    lines_logged: u64,
}

impl Progress {
    pub(crate) fn new(from: u64, interval: Duration) -> Progress {
        Progress {
            from,
            interval,
            task: "",
            total: 0,
            done: 0,
            records: 0,
            last_logged: Instant::now(),
            lines_logged: 0,
        }
    }

    /// Starts a pass over `total` records, described by `task` (for example "re-encoding
    /// clusters"). `total` may be 0 when the count is not known in advance.
    pub fn start(&mut self, task: &'static str, total: u64) {
        self.task = task;
        self.total = total;
        self.done = 0;
        self.last_logged = Instant::now();
        tracing::info!(
            step_from = self.from,
            task,
            total,
            "schema step pass started"
        );
    }

    /// Counts `count` more records done in the current pass, and logs the progress when the
    /// interval has passed since the last line.
    pub fn advance(&mut self, count: u64) {
        self.done += count;
        self.records += count;
        if self.last_logged.elapsed() < self.interval {
            return;
        }
        self.last_logged = Instant::now();
        self.lines_logged += 1;
        match self.done.saturating_mul(100).checked_div(self.total) {
            Some(percent) => tracing::info!(
                step_from = self.from,
                task = self.task,
                done = self.done,
                total = self.total,
                "schema step progress: {percent}%"
            ),
            None => tracing::info!(
                step_from = self.from,
                task = self.task,
                done = self.done,
                "schema step progress"
            ),
        }
    }

    /// Records counted over every pass of the step.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Progress lines logged so far.
    #[cfg(test)]
    pub(crate) fn lines_logged(&self) -> u64 {
        self.lines_logged
    }
}
