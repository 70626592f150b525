//! JSON shapes: request bodies into store inputs, stored records into ARM resources.
//!
//! The store keeps the client's `properties` (and other top-level fields) as JSON text, minus
//! the read-only fields, which this module strips from requests and adds to responses:
//! `id`, `name`, `type`, `eTag`, `provisioningState` and `systemData`.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use akstore_store::{
    Cluster, ClusterInput, ClusterView, Pool, PoolInput, PoolView, ProvisioningState,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::route::validate_pool_name;

pub const CLUSTER_TYPE: &str = "Microsoft.ContainerService/managedClusters";
pub const POOL_TYPE: &str = "Microsoft.ContainerService/managedClusters/agentPools";

/// Top-level fields of a cluster that a client cannot set; ignored in request bodies.
const READ_ONLY_TOP_LEVEL: [&str; 5] = ["id", "name", "type", "eTag", "systemData"];
/// Fields inside a cluster's properties that a client cannot set; the cluster's eTag is a
/// top-level field, so a `properties.eTag` could only be mistaken for it.
const READ_ONLY_CLUSTER_PROPERTIES: [&str; 2] = ["eTag", "provisioningState"];
/// Fields inside a pool's properties that a client cannot set. `name` is the pool's
/// `agentPoolProfiles` entry name, which comes from the pool's key.
const READ_ONLY_POOL_PROPERTIES: [&str; 3] = ["eTag", "provisioningState", "name"];

/// Parses a request body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidContent(
            "the body is empty; send a JSON object".into(),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::InvalidContent(
            "the body must be a JSON object".into(),
        )),
        Err(error) => Err(ApiError::InvalidContent(format!(
            "the body is not valid JSON ({error})"
        ))),
    }
}

/// Turns a cluster PUT body into the store's input.
pub fn cluster_input(mut body: Map<String, Value>) -> Result<ClusterInput, ApiError> {
    for field in READ_ONLY_TOP_LEVEL {
        body.shift_remove(field);
    }
    let location = match body.shift_remove("location") {
        Some(Value::String(location)) if !location.trim().is_empty() => location,
        _ => return Err(ApiError::LocationRequired),
    };
    let tags = match body.shift_remove("tags") {
        None | Some(Value::Null) => None,
        Some(tags) => Some(validate_tags(tags)?.to_string()),
    };
    let mut properties = object_or_empty(body.shift_remove("properties"), "properties")?;
    for field in READ_ONLY_CLUSTER_PROPERTIES {
        properties.shift_remove(field);
    }
    let pools = match properties.shift_remove("agentPoolProfiles") {
        None | Some(Value::Null) => Vec::new(),
        Some(profiles) => pool_profiles(profiles)?
            .into_iter()
            .map(|(name, properties)| PoolInput {
                name,
                properties: Value::Object(properties).to_string(),
            })
            .collect(),
    };
    Ok(ClusterInput {
        location,
        tags,
        properties: Value::Object(properties).to_string(),
        extra: Value::Object(body).to_string(),
        pools,
    })
}

/// Checks a cluster PATCH body before the write, so the merge inside the transaction cannot
/// fail, and strips its read-only fields.
pub fn validate_cluster_patch(
    mut patch: Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    for field in READ_ONLY_TOP_LEVEL {
        patch.shift_remove(field);
    }
    match patch.get("location") {
        None => {}
        Some(Value::String(location)) if !location.trim().is_empty() => {}
        Some(_) => return Err(ApiError::LocationRequired),
    }
    if let Some(Value::Object(tags)) = patch.get("tags") {
        // A merge patch removes a tag whose value is null.
        let kept: Map<String, Value> = tags
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        validate_tags(Value::Object(kept))?;
    } else if let Some(tags) = patch.get("tags")
        && !tags.is_null()
    {
        validate_tags(tags.clone())?;
    }
    match patch.get_mut("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(properties)) => {
            for field in READ_ONLY_CLUSTER_PROPERTIES {
                properties.shift_remove(field);
            }
            if let Some(profiles) = properties.get("agentPoolProfiles")
                && !profiles.is_null()
            {
                pool_profiles(profiles.clone())?;
            }
        }
        Some(_) => {
            return Err(ApiError::InvalidContent(
                "properties must be a JSON object".into(),
            ));
        }
    }
    Ok(patch)
}

/// Applies a validated cluster PATCH to the current cluster.
///
/// Pools named in `properties.agentPoolProfiles` get their entry merged into their current
/// properties, or are created from it.
pub fn merge_cluster_patch(
    view: &ClusterView,
    mut patch: Map<String, Value>,
) -> Result<ClusterInput, String> {
    let profiles = match patch.get_mut("properties") {
        Some(Value::Object(properties)) => properties.shift_remove("agentPoolProfiles"),
        _ => None,
    };

    let mut document = writable_cluster(&view.cluster);
    merge(&mut document, &Value::Object(patch));
    let Value::Object(document) = document else {
        unreachable!("merging an object patch into an object yields an object");
    };
    let mut input = cluster_input(document).map_err(|e| e.parts().2)?;

    if let Some(profiles) = profiles.filter(|p| !p.is_null()) {
        let profiles = pool_profiles(profiles).map_err(|e| e.parts().2)?;
        for (name, profile) in profiles {
            let current = view
                .pools
                .iter()
                .find(|pool| pool.name.eq_ignore_ascii_case(&name));
            let mut properties = match current {
                Some(pool) => Value::Object(parse_stored(&pool.properties)),
                None => Value::Object(Map::new()),
            };
            merge(&mut properties, &Value::Object(profile));
            input.pools.push(PoolInput {
                name,
                properties: properties.to_string(),
            });
        }
    }
    Ok(input)
}

/// Turns a pool PUT body into the store's input.
pub fn pool_input(name: &str, mut body: Map<String, Value>) -> Result<PoolInput, ApiError> {
    let mut properties = object_or_empty(body.shift_remove("properties"), "properties")?;
    for field in READ_ONLY_POOL_PROPERTIES {
        properties.shift_remove(field);
    }
    Ok(PoolInput {
        name: name.to_owned(),
        properties: Value::Object(properties).to_string(),
    })
}

/// Checks a pool PATCH body and strips its read-only fields.
pub fn validate_pool_patch(mut patch: Map<String, Value>) -> Result<Value, ApiError> {
    match patch.shift_remove("properties") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Object(mut properties)) => {
            for field in READ_ONLY_POOL_PROPERTIES {
                properties.shift_remove(field);
            }
            Ok(Value::Object(properties))
        }
        Some(_) => Err(ApiError::InvalidContent(
            "properties must be a JSON object".into(),
        )),
    }
}

/// Applies a validated pool properties patch to the current pool.
pub fn merge_pool_patch(view: &PoolView, properties_patch: &Value) -> PoolInput {
    let mut properties = Value::Object(parse_stored(&view.pool.properties));
    merge(&mut properties, properties_patch);
    if !properties.is_object() {
        properties = Value::Object(Map::new());
    }
    PoolInput {
        name: view.pool.name.clone(),
        properties: properties.to_string(),
    }
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("target was made an object above");
    };
    for (key, value) in patch {
        if value.is_null() {
            target.shift_remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// ARM id of a cluster.
pub fn cluster_id(cluster: &Cluster) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
        cluster.subscription, cluster.resource_group, cluster.name
    )
}

/// The ARM resource of a cluster, with its pools as `agentPoolProfiles`.
pub fn cluster_resource(view: &ClusterView) -> Value {
    let cluster = &view.cluster;
    let mut resource = Map::new();
    resource.insert("id".into(), cluster_id(cluster).into());
    resource.insert("name".into(), cluster.name.clone().into());
    resource.insert("type".into(), CLUSTER_TYPE.into());
    resource.insert("location".into(), cluster.location.clone().into());
    if let Some(tags) = &cluster.tags {
        resource.insert("tags".into(), Value::Object(parse_stored(tags)));
    }
    resource.insert("eTag".into(), cluster.etag.to_string().into());
    for (key, value) in parse_stored(&cluster.extra) {
        resource.entry(key).or_insert(value);
    }

    let mut properties = parse_stored(&cluster.properties);
    properties.insert(
        "provisioningState".into(),
        state_name(view.cluster_state()).into(),
    );
    let profiles = view
        .pools
        .iter()
        .map(|pool| {
            let mut profile = Map::new();
            profile.insert("name".into(), pool.name.clone().into());
            // The name comes from the pool's key, never from a stored property.
            let properties = pool_properties(pool, view.pool_state(pool)).into_iter();
            profile.extend(properties.filter(|(key, _)| key != "name"));
            Value::Object(profile)
        })
        .collect();
    properties.insert("agentPoolProfiles".into(), Value::Array(profiles));
    resource.insert("properties".into(), Value::Object(properties));
    resource.insert(
        "systemData".into(),
        system_data(cluster.created_ms, cluster.changed_ms),
    );
    Value::Object(resource)
}

/// The ARM resource of an agent pool.
pub fn pool_resource(view: &PoolView) -> Value {
    let pool = &view.pool;
    let mut resource = Map::new();
    resource.insert(
        "id".into(),
        format!("{}/agentPools/{}", cluster_id(&view.cluster), pool.name).into(),
    );
    resource.insert("name".into(), pool.name.clone().into());
    resource.insert("type".into(), POOL_TYPE.into());
    resource.insert(
        "properties".into(),
        Value::Object(pool_properties(pool, view.pool_state())),
    );
    resource.insert(
        "systemData".into(),
        system_data(pool.created_ms, pool.changed_ms),
    );
    Value::Object(resource)
}

/// A pool's properties as clients read them: the stored ones plus `eTag` and
/// `provisioningState`.
fn pool_properties(pool: &Pool, state: ProvisioningState) -> Map<String, Value> {
    let mut properties = parse_stored(&pool.properties);
    properties.insert("eTag".into(), pool.etag.to_string().into());
    properties.insert("provisioningState".into(), state_name(state).into());
    properties
}

/// Returns the wire name of a `provisioningState`.
fn state_name(state: ProvisioningState) -> &'static str {
    match state {
        ProvisioningState::Succeeded => "Succeeded",
        ProvisioningState::Creating => "Creating",
        ProvisioningState::Updating => "Updating",
        ProvisioningState::Deleting => "Deleting",
    }
}

/// Formats a time in milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The writable part of a cluster, the document a PATCH merges into.
fn writable_cluster(cluster: &Cluster) -> Value {
    let mut document = parse_stored(&cluster.extra);
    document.insert("location".into(), cluster.location.clone().into());
    if let Some(tags) = &cluster.tags {
        document.insert("tags".into(), Value::Object(parse_stored(tags)));
    }
    document.insert(
        "properties".into(),
        Value::Object(parse_stored(&cluster.properties)),
    );
    Value::Object(document)
}

fn system_data(created_ms: u64, changed_ms: u64) -> Value {
    serde_json::json!({
        "createdAt": rfc3339_ms(created_ms),
        "lastModifiedAt": rfc3339_ms(changed_ms),
    })
}

/// Parses JSON object text that this crate stored. The store only holds text that
/// `Value::to_string` produced from an object, so a failure means a damaged record; it is
/// logged and read as an empty object rather than failing every read of the resource.
fn parse_stored(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => object,
        other => {
            tracing::error!(?other, "stored JSON is not an object; reading it as empty");
            Map::new()
        }
    }
}

fn object_or_empty(value: Option<Value>, field: &str) -> Result<Map<String, Value>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(ApiError::InvalidContent(format!(
            "{field} must be a JSON object"
        ))),
    }
}

fn validate_tags(tags: Value) -> Result<Value, ApiError> {
    match &tags {
        Value::Object(map) if map.values().all(Value::is_string) => Ok(tags),
        _ => Err(ApiError::InvalidContent(
            "tags must be a JSON object whose values are strings".into(),
        )),
    }
}

/// One `agentPoolProfiles` entry: the pool's name and its properties.
type NamedProfile = (String, Map<String, Value>);

/// Validates `agentPoolProfiles` and returns each entry's name and its properties without the
/// read-only fields.
fn pool_profiles(profiles: Value) -> Result<Vec<NamedProfile>, ApiError> {
    let Value::Array(profiles) = profiles else {
        return Err(ApiError::InvalidAgentPoolProfile(
            "agentPoolProfiles must be a JSON array".into(),
        ));
    };
    let mut seen = HashSet::new();
    let mut result = Vec::with_capacity(profiles.len());
    for (index, profile) in profiles.into_iter().enumerate() {
        let Value::Object(mut profile) = profile else {
            return Err(ApiError::InvalidAgentPoolProfile(format!(
                "entry {index} must be a JSON object"
            )));
        };
        let name = match profile.shift_remove("name") {
            Some(Value::String(name)) => validate_pool_name(&name).map_err(|_| {
                ApiError::InvalidAgentPoolProfile(format!(
                    "entry {index} has the name '{name}', but pool names must start with a \
                     lower-case letter and have 1 to 12 lower-case letters and digits"
                ))
            })?,
            _ => {
                return Err(ApiError::InvalidAgentPoolProfile(format!(
                    "entry {index} must have a string \"name\""
                )));
            }
        };
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ApiError::DuplicateAgentPoolName(name));
        }
        for field in READ_ONLY_POOL_PROPERTIES {
            profile.shift_remove(field);
        }
        result.push((name, profile));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_follows_rfc_7396() {
        // The example of RFC 7396, section 3.
        let mut target = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        merge(&mut target, &patch);
        assert_eq!(
            target,
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
    }

    #[test]
    fn cluster_input_strips_read_only_fields() {
        let body = json!({
            "id": "x", "name": "y", "type": "z", "eTag": "e", "location": "westeurope",
            "sku": {"name": "Base"},
            "properties": {
                "provisioningState": "Failed",
                "eTag": "e",
                "kubernetesVersion": "1.33",
                "agentPoolProfiles": [{"name": "np1", "count": 3, "eTag": "old"}]
            }
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let input = cluster_input(body).unwrap();
        assert_eq!(input.location, "westeurope");
        assert_eq!(input.properties, r#"{"kubernetesVersion":"1.33"}"#);
        assert_eq!(input.extra, r#"{"sku":{"name":"Base"}}"#);
        assert_eq!(input.pools.len(), 1);
        assert_eq!(input.pools[0].name, "np1");
        assert_eq!(input.pools[0].properties, r#"{"count":3}"#);
    }

    #[test]
    fn stripped_fields_keep_the_order_of_the_rest() {
        let body = json!({
            "id": "x", "location": "westeurope", "zeta": 1, "alpha": 2,
            "properties": {
                "agentPoolProfiles": [{"name": "np1", "count": 3, "vmSize": "B2s", "mode": "User"}],
                "zeta": 1, "provisioningState": "Failed", "alpha": 2
            }
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let input = cluster_input(body).unwrap();
        assert_eq!(input.extra, r#"{"zeta":1,"alpha":2}"#);
        assert_eq!(input.properties, r#"{"zeta":1,"alpha":2}"#);
        assert_eq!(
            input.pools[0].properties,
            r#"{"count":3,"vmSize":"B2s","mode":"User"}"#
        );

        let mut target = json!({"a": 1, "b": 2, "c": 3});
        merge(&mut target, &json!({"a": null}));
        assert_eq!(target.to_string(), r#"{"b":2,"c":3}"#);
    }

    #[test]
    fn pool_input_strips_read_only_fields() {
        let body = json!({
            "name": "other", "id": "x",
            "properties": {"name": "other", "count": 2, "eTag": "e", "provisioningState": "Failed"}
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let input = pool_input("np1", body).unwrap();
        assert_eq!(input.name, "np1");
        assert_eq!(input.properties, r#"{"count":2}"#);
    }

    #[test]
    fn duplicate_pool_names_are_rejected() {
        let profiles = json!([{"name": "np1"}, {"name": "np1"}]);
        assert!(matches!(
            pool_profiles(profiles),
            Err(ApiError::DuplicateAgentPoolName(_))
        ));
    }
}
