//! Progress lines for long-running commands, logged at most once per interval so a large file
//! shows steady progress without flooding the log.

use std::time::{Duration, Instant};

/// Time between two progress lines.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Counts processed items and logs progress when the interval has passed.
pub struct Progress {
    action: &'static str,
    unit: &'static str,
    total: Option<u64>,
    started: Instant,
    last_report: Instant,
    interval: Duration,
}

impl Progress {
    /// Starts counting `unit`s (for example "records" or "bytes") towards `total`, if known.
    pub fn new(action: &'static str, unit: &'static str, total: Option<u64>) -> Progress {
        Progress::with_interval(action, unit, total, PROGRESS_INTERVAL)
    }

    fn with_interval(
        action: &'static str,
        unit: &'static str,
        total: Option<u64>,
        interval: Duration,
    ) -> Progress {
        let now = Instant::now();
        Progress {
            action,
            unit,
            total,
            started: now,
            last_report: now,
            interval,
        }
    }

    /// Notes that `done` units are processed so far; logs a line when one is due. Returns
    /// whether it logged.
    pub fn update(&mut self, done: u64) -> bool {
        if self.last_report.elapsed() < self.interval {
            return false;
        }
        self.last_report = Instant::now();
        let elapsed_s = self.started.elapsed().as_secs();
        match self.total {
            Some(total) if total > 0 => {
                let percent = done.saturating_mul(100) / total;
                tracing::info!(
                    done,
                    total,
                    elapsed_s,
                    "{} in progress: {done} of {total} {} ({percent}%)",
                    self.action,
                    self.unit
                );
            }
            _ => tracing::info!(
                done,
                elapsed_s,
                "{} in progress: {done} {}",
                self.action,
                self.unit
            ),
        }
        true
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_reports_only_after_the_interval() {
        let mut quiet = Progress::with_interval("export", "records", Some(10), Duration::MAX);
        assert!(!quiet.update(5));
        let mut eager = Progress::with_interval("export", "records", Some(10), Duration::ZERO);
        assert!(eager.update(5));
        assert!(eager.update(10));
    }
}
