//! Schema versions of akstore's database file.
//!
//! The store writes [`CURRENT_SCHEMA_VERSION`] into its metadata table when it creates a file and
//! refuses files that carry a different version. Ordered steps from one version to the next
//! belong here; version 1 is the first release, so no step exists yet.

/// Schema version that this build reads and writes.
pub const CURRENT_SCHEMA_VERSION: u64 = 1;
