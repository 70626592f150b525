//! Failpoints: named places in the write path where a test makes akstore fail on purpose.
//!
//! They exist only in builds with the `failpoints` cargo feature; in other builds [`check`]
//! is an empty inline function and [`configure_from_env`] configures nothing. A process sets
//! them at start from the `FAILPOINTS` environment variable, in the syntax of the `fail`
//! crate: `name=action;name=action`, where an action may carry a probability and a count,
//! for example `writer::after_commit=5%return(abort)` or `writer::before_commit=1*panic`.
//!
//! What each action does at a failpoint of this crate:
//! - `panic`: the thread panics; on the writer thread this fails the whole batch;
//! - `return` or `return(error)`: the step fails with a storage error;
//! - `return(abort)`: the process aborts at once (SIGABRT), leaving the file exactly as a
//!   SIGKILL at that instant would;
//! - `sleep(ms)`, `delay(ms)`, `pause`, `print`, `off`: as the `fail` crate defines them.

/// In the writer, after every request of a batch is applied and before the commit. A returned
/// error stands for a failed commit: every request of the batch gets the unknown-outcome
/// error, and nothing of the batch is on disk.
pub const BEFORE_COMMIT: &str = "writer::before_commit";

/// In the writer, after the commit is durable and before any request of the batch is
/// answered. A returned error answers the batch with the unknown-outcome error although the
/// batch is on disk, as when a response is lost.
pub const AFTER_COMMIT: &str = "writer::after_commit";

/// Inside a cluster write, after the cluster record is written and before its pools are
/// rewritten. A returned error aborts the batch: nothing of it reaches the disk.
pub const BETWEEN_CLUSTER_AND_POOLS: &str = "apply::between_cluster_and_pools";

/// Inside a schema migration, after its steps ran and before their transaction commits. A
/// returned error or an abort leaves the file at its old schema version.
pub const MIGRATION_BEFORE_COMMIT: &str = "migration::before_commit";

/// In the writer, before it reopens the database after a failed write. A returned error
/// fails the reopen, so the store stays unwritable and the writer retries with backoff.
pub const REOPEN: &str = "writer::reopen";

/// Every failpoint name, for listings and checks of a `FAILPOINTS` value.
pub const ALL: &[&str] = &[
    BEFORE_COMMIT,
    AFTER_COMMIT,
    BETWEEN_CLUSTER_AND_POOLS,
    MIGRATION_BEFORE_COMMIT,
    REOPEN,
];

/// The error a failpoint configured with `return` injects.
#[derive(Clone, Debug, thiserror::Error)]
#[error("injected failure at failpoint {name}")]
pub struct Injected {
    pub name: &'static str,
}

/// Whether this build has failpoints compiled in.
pub const fn enabled() -> bool {
    cfg!(feature = "failpoints")
}

/// Evaluates the failpoint `name`: returns `Err` when it is configured with `return`, panics
/// or aborts the process when it is configured to, and returns `Ok` otherwise.
#[cfg(feature = "failpoints")]
pub fn check(name: &'static str) -> Result<(), Injected> {
    fail::fail_point!(name, |argument: Option<String>| {
        if argument.as_deref() == Some("abort") {
            tracing::error!(failpoint = name, "failpoint aborts the process");
            std::process::abort();
        }
        tracing::warn!(failpoint = name, "failpoint injects a storage error");
        Err(Injected { name })
    });
    Ok(())
}

/// Evaluates the failpoint `name`; without the `failpoints` feature it never fails.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &'static str) -> Result<(), Injected> {
    Ok(())
}

/// Configures failpoints from the `FAILPOINTS` environment variable and returns the
/// `name=actions` pairs it set, or an error that names the malformed entry.
///
/// Without the `failpoints` feature a non-empty `FAILPOINTS` is an error, so a test that
/// relies on failpoints cannot run against a binary without them by mistake.
pub fn configure_from_env() -> Result<Vec<String>, String> {
    let value = match std::env::var("FAILPOINTS") {
        Ok(value) if !value.trim().is_empty() => value,
        Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(Vec::new()),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("FAILPOINTS is not valid UTF-8".into());
        }
    };
    if !enabled() {
        return Err(format!(
            "FAILPOINTS is set ({value:?}), but this binary was built without failpoints; \
             build it with `--features failpoints` or unset FAILPOINTS"
        ));
    }

    let mut configured = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, actions)) = entry.split_once('=') else {
            return Err(format!(
                "FAILPOINTS entry {entry:?} is invalid: write it as name=actions"
            ));
        };
        let name = name.trim();
        if !ALL.contains(&name) {
            return Err(format!(
                "FAILPOINTS names an unknown failpoint {name:?}; known failpoints: {}",
                ALL.join(", ")
            ));
        }
        configure(name, actions.trim())
            .map_err(|reason| format!("FAILPOINTS entry {entry:?} is invalid: {reason}"))?;
        configured.push(format!("{name}={}", actions.trim()));
    }
    Ok(configured)
}

/// Sets the actions of one failpoint, as one `FAILPOINTS` entry does.
#[cfg(feature = "failpoints")]
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions)
}

#[cfg(not(feature = "failpoints"))]
fn configure(_name: &str, _actions: &str) -> Result<(), String> {
    unreachable!("configure_from_env returns before this without the failpoints feature")
}

/// Turns one failpoint off.
#[cfg(feature = "failpoints")]
pub fn remove(name: &str) {
    fail::remove(name);
}
