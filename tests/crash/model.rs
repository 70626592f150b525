//! The harness's model of what each client wrote, and the shapes a write may leave behind.
//!
//! Every write carries a marker unique in the run: a cluster PUT or PATCH sets the cluster's
//! tag `w` to it, a cluster PUT sets the `w` tag of each pool it lists, and a pool PUT sets
//! that pool's. So a state read back from the server names the write that produced each
//! record, and a write whose outcome is unknown is recognized as applied or not.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// A cluster as the model knows it: its eTag, its marker and its pools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterState {
    pub etag: String,
    pub marker: String,
    pub pools: BTreeMap<String, PoolState>,
}

/// A pool as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolState {
    pub etag: String,
    pub marker: String,
}

/// One write a client sends.
#[derive(Clone, Debug)]
pub struct Op {
    pub cluster: String,
    pub kind: OpKind,
    /// Sent with an `If-Match` that matches nothing, so the server must answer 412.
    pub stale: bool,
    pub marker: String,
    /// The `x-ms-client-request-id`; a retry of this write sends it again.
    pub request_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Creates the cluster (`If-None-Match: *`) or replaces it (`If-Match`), listing `pools`.
    PutCluster {
        pools: Vec<String>,
    },
    /// Sets the cluster's tags (`If-Match`).
    PatchCluster,
    DeleteCluster,
    /// Creates or replaces one pool.
    PutPool {
        pool: String,
    },
    DeletePool {
        pool: String,
    },
}

/// What a record must look like after a write: the eTag it had, or any other value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Etag {
    Same(String),
    /// Changed: any value other than the one it had (or any value for a new record).
    Fresh(Option<String>),
}

/// The expected shape of a cluster after a write, or `None` for an absent cluster.
pub type Shape = Option<ClusterShape>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterShape {
    pub etag: Etag,
    pub marker: String,
    pub pools: BTreeMap<String, PoolShape>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub etag: Etag,
    pub marker: String,
}

/// The shape the model's current state has: every eTag unchanged.
pub fn exact(state: &Option<ClusterState>) -> Shape {
    state.as_ref().map(|cluster| ClusterShape {
        etag: Etag::Same(cluster.etag.clone()),
        marker: cluster.marker.clone(),
        pools: cluster
            .pools
            .iter()
            .map(|(name, pool)| {
                let shape = PoolShape {
                    etag: Etag::Same(pool.etag.clone()),
                    marker: pool.marker.clone(),
                };
                (name.clone(), shape)
            })
            .collect(),
    })
}

/// The shape `op` leaves when the server applies it to `state`. A stale write applies nothing.
pub fn predict(state: &Option<ClusterState>, op: &Op) -> Shape {
    if op.stale {
        return exact(state);
    }
    let rotated = |state: &ClusterState, marker: &str| ClusterShape {
        etag: Etag::Fresh(Some(state.etag.clone())),
        marker: marker.to_owned(),
        pools: state
            .pools
            .iter()
            .map(|(name, pool)| {
                let shape = PoolShape {
                    etag: Etag::Fresh(Some(pool.etag.clone())),
                    marker: pool.marker.clone(),
                };
                (name.clone(), shape)
            })
            .collect(),
    };
    match (&op.kind, state) {
        (OpKind::PutCluster { pools }, current) => {
            let mut shape = match current {
                Some(state) => rotated(state, &op.marker),
                None => ClusterShape {
                    etag: Etag::Fresh(None),
                    marker: op.marker.clone(),
                    pools: BTreeMap::new(),
                },
            };
            for name in pools {
                let previous = current
                    .as_ref()
                    .and_then(|state| state.pools.get(name))
                    .map(|pool| pool.etag.clone());
                let pool = PoolShape {
                    etag: Etag::Fresh(previous),
                    marker: op.marker.clone(),
                };
                shape.pools.insert(name.clone(), pool);
            }
            Some(shape)
        }
        (OpKind::PatchCluster, Some(state)) => Some(rotated(state, &op.marker)),
        (OpKind::DeleteCluster, Some(_)) => None,
        (OpKind::PutPool { pool }, Some(state)) => {
            let mut shape = exact(&Some(state.clone())).expect("the cluster exists");
            let previous = state.pools.get(pool).map(|p| p.etag.clone());
            shape.pools.insert(
                pool.clone(),
                PoolShape {
                    etag: Etag::Fresh(previous),
                    marker: op.marker.clone(),
                },
            );
            Some(shape)
        }
        (OpKind::DeletePool { pool }, Some(state)) => {
            let mut shape = exact(&Some(state.clone())).expect("the cluster exists");
            shape.pools.remove(pool);
            Some(shape)
        }
        (kind, None) => panic!("the harness chose {kind:?} on an absent cluster"),
    }
}

/// Checks `observed` against `shape`; the error says the first difference.
pub fn conforms(shape: &Shape, observed: &Option<ClusterState>) -> Result<(), String> {
    let (shape, observed) = match (shape, observed) {
        (None, None) => return Ok(()),
        (None, Some(observed)) => {
            return Err(format!("expected no cluster, found {observed:?}"));
        }
        (Some(_), None) => return Err("expected the cluster, found none".into()),
        (Some(shape), Some(observed)) => (shape, observed),
    };
    check_etag("cluster", &shape.etag, &observed.etag)?;
    if shape.marker != observed.marker {
        return Err(format!(
            "cluster marker is {}, expected {}",
            observed.marker, shape.marker
        ));
    }
    let expected_names: Vec<_> = shape.pools.keys().collect();
    let observed_names: Vec<_> = observed.pools.keys().collect();
    if expected_names != observed_names {
        return Err(format!(
            "pools are {observed_names:?}, expected {expected_names:?}"
        ));
    }
    for (name, pool) in &shape.pools {
        let found = &observed.pools[name];
        check_etag(&format!("pool {name}"), &pool.etag, &found.etag)?;
        if pool.marker != found.marker {
            return Err(format!(
                "pool {name} marker is {}, expected {} (half-applied cluster write?)",
                found.marker, pool.marker
            ));
        }
    }
    Ok(())
}

fn check_etag(what: &str, expected: &Etag, found: &str) -> Result<(), String> {
    match expected {
        Etag::Same(etag) if etag != found => Err(format!(
            "{what} eTag is {found}, expected it unchanged at {etag}"
        )),
        Etag::Fresh(Some(previous)) if previous == found => {
            Err(format!("{what} eTag {found} did not change"))
        }
        _ => Ok(()),
    }
}

/// Reads a cluster resource (a GET or write response) into the model's terms.
pub fn cluster_from_json(resource: &Value) -> Result<ClusterState, String> {
    let etag = string_at(resource, "/eTag")?;
    let marker = string_at(resource, "/tags/w")?;
    let profiles = resource
        .pointer("/properties/agentPoolProfiles")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no agentPoolProfiles in {resource}"))?;
    let mut pools = BTreeMap::new();
    for profile in profiles {
        let name = string_at(profile, "/name")?;
        let pool = PoolState {
            etag: string_at(profile, "/eTag")?,
            marker: string_at(profile, "/tags/w")?,
        };
        pools.insert(name, pool);
    }
    Ok(ClusterState {
        etag,
        marker,
        pools,
    })
}

/// Reads a pool resource into the model's terms.
pub fn pool_from_json(resource: &Value) -> Result<PoolState, String> {
    Ok(PoolState {
        etag: string_at(resource, "/properties/eTag")?,
        marker: string_at(resource, "/properties/tags/w")?,
    })
}

fn string_at(value: &Value, pointer: &str) -> Result<String, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no string at {pointer} in {value}"))
}

/// Every eTag seen in the run and the record state it belonged to, to find a repeated value.
#[derive(Default)]
pub struct EtagRegistry {
    seen: HashMap<String, String>,
}

impl EtagRegistry {
    /// Records the eTags of `state` for `cluster`; an error names an eTag that is not a UUID
    /// v4 or that was seen before on another record or state.
    pub fn observe(&mut self, cluster: &str, state: &ClusterState) -> Result<(), String> {
        let cluster_identity = format!("cluster {cluster} marker {}", state.marker);
        self.observe_one(&state.etag, cluster_identity)?;
        for (name, pool) in &state.pools {
            // A cluster write rotates a pool without changing its marker, so the cluster's
            // marker is part of the pool's state.
            let identity = format!(
                "pool {cluster}/{name} marker {} under cluster marker {}",
                pool.marker, state.marker
            );
            self.observe_one(&pool.etag, identity)?;
        }
        Ok(())
    }

    fn observe_one(&mut self, etag: &str, identity: String) -> Result<(), String> {
        let parsed = uuid::Uuid::parse_str(etag).map_err(|e| format!("eTag {etag}: {e}"))?;
        if parsed.get_version_num() != 4 {
            return Err(format!("eTag {etag} is not a UUID v4"));
        }
        match self.seen.get(etag) {
            Some(first) if *first != identity => Err(format!(
                "eTag {etag} of {identity} repeats the eTag of {first}"
            )),
            Some(_) => Ok(()),
            None => {
                self.seen.insert(etag.to_owned(), identity);
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }
}
