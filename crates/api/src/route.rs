//! ARM path parsing: fixed segments match case-insensitively, names are validated, and each
//! route has a template for logs.
//!
//! axum's router matches paths case-sensitively, while ARM treats provider namespaces, type
//! segments and names case-insensitively, so ARM paths are parsed here instead.

use akstore_store::{ClusterKey, ClusterScope, PoolKey};
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// Longest resource group name ARM accepts.
const MAX_RESOURCE_GROUP_CHARS: usize = 90;
/// Longest cluster name ARM accepts.
const MAX_CLUSTER_NAME_CHARS: usize = 63;
/// Longest agent pool name ARM accepts (Linux pools; Windows pools allow 6).
const MAX_POOL_NAME_CHARS: usize = 12;

const PROVIDER: &str = "Microsoft.ContainerService";
const CLUSTERS: &str = "managedClusters";
const POOLS: &str = "agentPools";
const LOCATIONS: &str = "locations";
const OPERATIONS: &str = "operations";
const OPERATION_RESULTS: &str = "operationresults";

/// A parsed ARM path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    ClusterList(ClusterScope),
    Cluster(ClusterKey),
    PoolList(ClusterKey),
    Pool(PoolKey),
    /// The status of a long-running operation, the URL of `Azure-AsyncOperation`.
    OperationStatus(OperationAddress),
    /// The result of a long-running operation, the URL of `Location`.
    OperationResult(OperationAddress),
}

/// Address in a long-running operation's URLs. The operation id is not validated here, so an
/// unknown or malformed id gets a not-found error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationAddress {
    pub subscription: String,
    pub location: String,
    pub id: String,
}

impl Route {
    /// The methods the route serves, as an `Allow` header value. HEAD is served as a GET
    /// without the body.
    pub fn allowed_methods(&self) -> &'static str {
        match self {
            Route::ClusterList(_) | Route::PoolList(_) => "GET, HEAD",
            Route::Cluster(_) | Route::Pool(_) => "GET, HEAD, PUT, PATCH, DELETE",
            Route::OperationStatus(_) | Route::OperationResult(_) => "GET, HEAD",
        }
    }

    /// Path template, for logs and errors.
    pub fn template(&self) -> &'static str {
        match self {
            Route::ClusterList(ClusterScope::Subscription(_)) => {
                "/subscriptions/{subscriptionId}/providers/Microsoft.ContainerService/managedClusters"
            }
            Route::ClusterList(ClusterScope::ResourceGroup { .. }) => {
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters"
            }
            Route::Cluster(_) => {
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters/{resourceName}"
            }
            Route::PoolList(_) => {
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters/{resourceName}/agentPools"
            }
            Route::Pool(_) => {
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters/{resourceName}/agentPools/{agentPoolName}"
            }
            Route::OperationStatus(_) => {
                "/subscriptions/{subscriptionId}/providers/Microsoft.ContainerService/locations/{location}/operations/{operationId}"
            }
            Route::OperationResult(_) => {
                "/subscriptions/{subscriptionId}/providers/Microsoft.ContainerService/locations/{location}/operationresults/{operationId}"
            }
        }
    }
}

/// Parses an ARM path; names are percent-decoded and validated.
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let unknown = || ApiError::UnknownRoute(path.to_owned());
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<String> = trimmed
        .strip_prefix('/')
        .ok_or_else(unknown)?
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    let fixed = |index: usize, expected: &str| {
        segments
            .get(index)
            .is_some_and(|segment| segment.eq_ignore_ascii_case(expected))
    };
    if !fixed(0, "subscriptions") || segments.len() < 2 {
        return Err(unknown());
    }
    let subscription = validate_subscription(&segments[1])?;

    // /subscriptions/{sub}/providers/Microsoft.ContainerService/managedClusters
    if segments.len() == 5 && fixed(2, "providers") && fixed(3, PROVIDER) && fixed(4, CLUSTERS) {
        return Ok(Route::ClusterList(ClusterScope::Subscription(subscription)));
    }

    // /subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{location}/
    // operations/{id} or .../operationresults/{id}
    if segments.len() == 8
        && fixed(2, "providers")
        && fixed(3, PROVIDER)
        && fixed(4, LOCATIONS)
        && !segments[5].is_empty()
        && !segments[7].is_empty()
    {
        let address = OperationAddress {
            subscription,
            location: segments[5].clone(),
            id: segments[7].clone(),
        };
        if fixed(6, OPERATIONS) {
            return Ok(Route::OperationStatus(address));
        }
        if fixed(6, OPERATION_RESULTS) {
            return Ok(Route::OperationResult(address));
        }
        return Err(unknown());
    }

    if !(segments.len() >= 7
        && fixed(2, "resourceGroups")
        && fixed(4, "providers")
        && fixed(5, PROVIDER)
        && fixed(6, CLUSTERS))
    {
        return Err(unknown());
    }
    let resource_group = validate_resource_group(&segments[3])?;
    if segments.len() == 7 {
        return Ok(Route::ClusterList(ClusterScope::ResourceGroup {
            subscription,
            resource_group,
        }));
    }

    let cluster = ClusterKey {
        subscription,
        resource_group,
        name: validate_cluster_name(&segments[7])?,
    };
    match segments.len() {
        8 => Ok(Route::Cluster(cluster)),
        9 if fixed(8, POOLS) => Ok(Route::PoolList(cluster)),
        10 if fixed(8, POOLS) => Ok(Route::Pool(PoolKey {
            cluster,
            name: validate_pool_path_name(&segments[9])?,
        })),
        _ => Err(unknown()),
    }
}

/// A GUID in its 8-4-4-4-12 hexadecimal form.
fn validate_subscription(value: &str) -> Result<String, ApiError> {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths_match = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|group| group.chars().all(|c| c.is_ascii_hexdigit()));
    if lengths_match {
        Ok(value.to_owned())
    } else {
        Err(ApiError::InvalidSubscriptionId(value.to_owned()))
    }
}

fn validate_resource_group(value: &str) -> Result<String, ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.()".contains(c);
    let valid = !value.is_empty()
        && value.chars().count() <= MAX_RESOURCE_GROUP_CHARS
        && value.chars().all(allowed)
        && !value.ends_with('.');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::InvalidResourceGroupName(value.to_owned()))
    }
}

/// `^[a-zA-Z0-9]$|^[a-zA-Z0-9][-_a-zA-Z0-9]{0,61}[a-zA-Z0-9]$`
fn validate_cluster_name(value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_CLUSTER_NAME_CHARS
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::InvalidResourceName {
            kind: "managed cluster",
            name: value.to_owned(),
        })
    }
}

/// `^[a-z][a-z0-9]{0,11}$`, the rule for a new pool and for names in request bodies.
pub fn validate_pool_name(value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_POOL_NAME_CHARS
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::InvalidResourceName {
            kind: "agent pool",
            name: value.to_owned(),
        })
    }
}

/// A pool name in a path: the pool name rule with letters in either case, because names are
/// matched case-insensitively and `NP1` addresses the pool `np1`. Only the lower-case form
/// may create a pool; the PUT handler enforces that.
fn validate_pool_path_name(value: &str) -> Result<String, ApiError> {
    validate_pool_name(&value.to_ascii_lowercase()).map(|_| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn fixed_segments_match_in_any_case() {
        let path = format!(
            "/SUBSCRIPTIONS/{SUB}/resourcegroups/My.RG/PROVIDERS/microsoft.containerservice/MANAGEDCLUSTERS/Prod-1/AGENTPOOLS/np1"
        );
        let Route::Pool(key) = parse(&path).unwrap() else {
            panic!("not a pool route");
        };
        assert_eq!(key.cluster.resource_group, "My.RG");
        assert_eq!(key.cluster.name, "Prod-1");
        assert_eq!(key.name, "np1");
    }

    #[test]
    fn cluster_name_rules() {
        for valid in ["a", "A1", "a-b_c", &"x".repeat(63)] {
            assert!(validate_cluster_name(valid).is_ok(), "{valid}");
        }
        for invalid in ["", "-a", "a-", "a.b", &"x".repeat(64), "ä"] {
            assert!(validate_cluster_name(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn pool_name_rules() {
        for valid in ["a", "np1", "abcdefghijkl"] {
            assert!(validate_pool_name(valid).is_ok(), "{valid}");
        }
        for invalid in ["", "1a", "Np1", "np-1", "abcdefghijklm"] {
            assert!(validate_pool_name(invalid).is_err(), "{invalid}");
        }
        assert_eq!(validate_pool_path_name("Np1").unwrap(), "Np1");
        for invalid in ["", "1A", "NP-1", "ABCDEFGHIJKLM", "ä"] {
            assert!(validate_pool_path_name(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn resource_group_rules() {
        for valid in ["a", "rg-1_(x).y", &"r".repeat(90)] {
            assert!(validate_resource_group(valid).is_ok(), "{valid}");
        }
        for invalid in ["", "rg.", "rg/x", "rg x", &"r".repeat(91)] {
            assert!(validate_resource_group(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn subscription_must_be_guid() {
        assert!(validate_subscription(SUB).is_ok());
        for invalid in [
            "sub",
            "0000000000000000000000000000000000000",
            "{00000000-0000-0000-0000-000000000001}",
        ] {
            assert!(validate_subscription(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn operation_paths_parse_in_any_case() {
        let status = format!(
            "/subscriptions/{SUB}/providers/microsoft.containerservice/LOCATIONS/westeurope/Operations/abc"
        );
        let Route::OperationStatus(address) = parse(&status).unwrap() else {
            panic!("not an operation status route");
        };
        assert_eq!(address.location, "westeurope");
        assert_eq!(address.id, "abc");

        let result = format!(
            "/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/eastus/operationResults/abc"
        );
        assert!(matches!(parse(&result), Ok(Route::OperationResult(_))));
    }

    #[test]
    fn unknown_paths_are_rejected() {
        for path in [
            "/",
            "/subscriptions",
            &format!("/subscriptions/{SUB}/resourceGroups/rg"),
            &format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
            ),
            &format!(
                "/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/eastus/jobs/abc"
            ),
            &format!(
                "/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations//operations/abc"
            ),
        ] {
            assert!(
                matches!(parse(path), Err(ApiError::UnknownRoute(_))),
                "{path}"
            );
        }
    }
}
