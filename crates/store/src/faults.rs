//! A storage backend that injects I/O faults, for tests of what the store does when its disk
//! fails. Test support: the server never uses it.
//!
//! [`FaultyBackend`] wraps redb's [`FileBackend`] and consults a shared [`FaultPlan`] on every
//! call. The plan can fail the N-th write or sync from now (once, as a transient fault does),
//! make every operation fail (the disk is gone), and simulate a power loss: every write since
//! the last successful sync is undone, and then a chosen subset of them is put back, so the
//! file holds what a disk may hold after losing power with those writes in its cache.
//!
//! Open the store on it with [`crate::Store::open_with_backend`], passing a closure that calls
//! [`FaultyBackend::open`] with the same plan, so a reopen after a failure uses the same plan.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The faults to inject into every [`FaultyBackend`] opened with it, and counts of what they
/// saw. Share it behind an `Arc`.
#[derive(Default)]
pub struct FaultPlan {
    writes: AtomicU64,
    syncs: AtomicU64,
    injected: AtomicU64,
    /// Value of `writes` at which the next write fails; 0 when none is due.
    fail_write_at: AtomicU64,
    /// Value of `syncs` at which the next sync fails; 0 when none is due.
    fail_sync_at: AtomicU64,
    unavailable: AtomicBool,
    /// Value of `syncs` at which power is lost instead of syncing; 0 when none is due.
    power_loss_at: AtomicU64,
    /// Decides, write by write, which unsynced writes a scheduled power loss keeps.
    power_loss_keep: Mutex<Option<KeepFn>>,
    unsynced: Mutex<UnsyncedLog>,
}

/// Decides whether a simulated power loss keeps the next unsynced write.
type KeepFn = Box<dyn FnMut() -> bool + Send>;

/// A [`StorageBackend`] on a file that fails where its [`FaultPlan`] schedules a fault.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    plan: Arc<FaultPlan>,
}

/// The writes since the last successful sync, with what they replaced, so a power loss can
/// undo them. Holds a second handle of the file they went to.
#[derive(Debug, Default)]
struct UnsyncedLog {
    file: Option<File>,
    /// File length at the last successful sync.
    synced_len: u64,
    changes: Vec<Change>,
}

#[derive(Debug)]
enum Change {
    Write {
        offset: u64,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    SetLen {
        old_len: u64,
        new_len: u64,
        /// Bytes a shrink cut off, to restore them.
        cut: Vec<u8>,
    },
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("writes", &self.writes)
            .field("syncs", &self.syncs)
            .field("injected", &self.injected)
            .field("unavailable", &self.unavailable)
            .finish_non_exhaustive()
    }
}

impl FaultPlan {
    /// Creates a plan that injects no fault until one is scheduled.
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    /// Lets `successes` more writes succeed, then fails the next one. The failing write stores
    /// the first half of its bytes, as a torn write would.
    pub fn fail_write_after(&self, successes: u64) {
        let at = self.writes.load(Ordering::SeqCst) + successes + 1;
        self.fail_write_at.store(at, Ordering::SeqCst);
    }

    /// Lets `successes` more syncs succeed, then fails the next one without syncing.
    pub fn fail_sync_after(&self, successes: u64) {
        let at = self.syncs.load(Ordering::SeqCst) + successes + 1;
        self.fail_sync_at.store(at, Ordering::SeqCst);
    }

    /// Lets `successes` more syncs succeed, then loses power at the next one instead of
    /// syncing, as [`FaultPlan::power_loss`] does with `keep`; the sync fails.
    pub fn power_loss_at_sync(&self, successes: u64, keep: impl FnMut() -> bool + Send + 'static) {
        *self
            .power_loss_keep
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(keep));
        let at = self.syncs.load(Ordering::SeqCst) + successes + 1;
        self.power_loss_at.store(at, Ordering::SeqCst);
    }

    /// Cancels the write and sync failures and the power loss that are due.
    pub fn clear(&self) {
        self.fail_write_at.store(0, Ordering::SeqCst);
        self.fail_sync_at.store(0, Ordering::SeqCst);
        self.power_loss_at.store(0, Ordering::SeqCst);
    }

    /// Whether every operation fails, after [`FaultPlan::set_unavailable`] or a power loss.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }

    /// Makes every operation fail (`true`), as when the disk is gone, or work again.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Simulates a power loss: from now on every operation fails, and the file goes back to
    /// its state at the last successful sync, plus those of the writes since then for which
    /// `keep` returns true, applied in their order. Call [`FaultPlan::set_unavailable`] with
    /// `false` before opening the file again.
    pub fn power_loss(&self, keep: &mut dyn FnMut() -> bool) -> io::Result<PowerLoss> {
        self.unavailable.store(true, Ordering::SeqCst);
        let mut log = self.log();
        Self::lose_unsynced(&mut log, keep)
    }

    /// Undoes the unsynced changes of `log` and puts back those that `keep` chooses.
    fn lose_unsynced(
        log: &mut UnsyncedLog,
        keep: &mut dyn FnMut() -> bool,
    ) -> io::Result<PowerLoss> {
        let changes = std::mem::take(&mut log.changes);
        let Some(file) = log.file.as_ref() else {
            return Ok(PowerLoss::default());
        };

        // Undo every change, newest first, to reach the synced state.
        for change in changes.iter().rev() {
            match change {
                Change::Write { offset, old, .. } => write_all_at(file, old, *offset)?,
                Change::SetLen { old_len, cut, .. } => {
                    file.set_len(*old_len)?;
                    if !cut.is_empty() {
                        let new_len = *old_len - cut.len() as u64;
                        write_all_at(file, cut, new_len)?;
                    }
                }
            }
        }
        // A write past the end grew the file without a resize to undo.
        file.set_len(log.synced_len)?;

        // Put back the chosen subset, oldest first.
        let mut summary = PowerLoss {
            unsynced: changes.len(),
            kept: 0,
        };
        for change in &changes {
            if !keep() {
                continue;
            }
            summary.kept += 1;
            match change {
                Change::Write { offset, new, .. } => write_all_at(file, new, *offset)?,
                Change::SetLen { new_len, .. } => file.set_len(*new_len)?,
            }
        }
        file.sync_all()?;
        Ok(summary)
    }

    /// Writes seen so far, failed ones included.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Syncs seen so far, failed ones included.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Faults injected so far, not counting operations failed while unavailable.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn log(&self) -> MutexGuard<'_, UnsyncedLog> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_available(&self) -> Result<(), BackendError> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(injected("the disk is unavailable"))
        } else {
            Ok(())
        }
    }

    /// Counts one operation and returns whether it is the one due to fail.
    fn due(&self, counter: &AtomicU64, fail_at: &AtomicU64) -> bool {
        let seen = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let due = fail_at
            .compare_exchange(seen, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if due {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        due
    }
}

/// Summary of a simulated power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Writes and resizes since the last successful sync.
    pub unsynced: usize,
    /// How many of them the file kept.
    pub kept: usize,
}

impl FaultyBackend {
    /// Opens (creating when missing) the file at `path` under `plan`.
    pub fn open(path: &Path, plan: Arc<FaultPlan>) -> io::Result<FaultyBackend> {
        plan.check_available().map_err(io::Error::other)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        {
            let mut log = plan.log();
            log.synced_len = file.metadata()?.len();
            log.file = Some(file.try_clone()?);
            log.changes.clear();
        }
        Ok(FaultyBackend {
            inner: FileBackend::new(file),
            plan,
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, BackendError> {
        self.plan.check_available()?;
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.plan.check_available()?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        let mut log = self.plan.log();
        self.plan.check_available()?;
        let old_len = self.inner.len()?;
        let mut cut = Vec::new();
        if len < old_len {
            cut = vec![0; (old_len - len) as usize];
            self.inner.read(len, &mut cut)?;
        }
        self.inner.set_len(len)?;
        log.changes.push(Change::SetLen {
            old_len,
            new_len: len,
            cut,
        });
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        let mut log = self.plan.log();
        self.plan.check_available()?;
        let seen = self.plan.syncs.load(Ordering::SeqCst) + 1;
        if self
            .plan
            .power_loss_at
            .compare_exchange(seen, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.plan.syncs.fetch_add(1, Ordering::SeqCst);
            self.plan.injected.fetch_add(1, Ordering::SeqCst);
            self.plan.unavailable.store(true, Ordering::SeqCst);
            let mut keep = self
                .plan
                .power_loss_keep
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| Box::new(|| false));
            FaultPlan::lose_unsynced(&mut log, &mut keep).map_err(BackendError::Io)?;
            return Err(injected("power lost during the sync"));
        }
        if self.plan.due(&self.plan.syncs, &self.plan.fail_sync_at) {
            return Err(injected("injected sync failure"));
        }
        self.inner.sync_data()?;
        log.synced_len = self.inner.len()?;
        log.changes.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let mut log = self.plan.log();
        self.plan.check_available()?;
        let len = self.inner.len()?;
        let mut old = vec![0; data.len()];
        let existing = len.saturating_sub(offset).min(data.len() as u64) as usize;
        if existing > 0 {
            self.inner.read(offset, &mut old[..existing])?;
        }
        old.truncate(existing);

        let due = self.plan.due(&self.plan.writes, &self.plan.fail_write_at);
        let written = if due { &data[..data.len() / 2] } else { data };
        self.inner.write(offset, written)?;
        log.changes.push(Change::Write {
            offset,
            old,
            new: written.to_vec(),
        });
        if due {
            return Err(injected("injected write failure"));
        }
        Ok(())
    }

    fn close(&self) -> Result<(), BackendError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

fn injected(message: &'static str) -> BackendError {
    BackendError::Io(io::Error::other(message))
}

#[cfg(unix)]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}
