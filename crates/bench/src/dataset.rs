//! The records the workloads write: names, ARM paths, etcd keys and JSON bodies.
//!
//! A [`Fleet`] is a numbered set of clusters that all have the same number of pools. Both
//! servers hold the same fleet. akstore stores it as ARM resources. etcd stores one key per
//! cluster, holding its document with the pools as a client would store it, plus one key per
//! pool. So a cluster write in etcd puts every pool key, as akstore rewrites every pool
//! record.

use bytes::Bytes;

/// ARM API version the generator sends.
pub const API_VERSION: &str = "2026-08-01";

/// A numbered set of clusters with the same pool count.
#[derive(Clone, Copy, Debug)]
pub struct Fleet {
    subscription: &'static str,
    /// Clusters are spread over this many resource groups.
    groups: usize,
    group_prefix: &'static str,
    name_prefix: &'static str,
    pub pools: usize,
}

/// The fleet of the conditional-update, read, list and memory workloads: clusters of 3 pools
/// in 100 resource groups of one subscription.
pub const MAIN: Fleet = Fleet {
    subscription: "00000000-0000-0000-0000-00000000a001",
    groups: 100,
    group_prefix: "rg",
    name_prefix: "c",
    pools: 3,
};

/// Returns a fleet of clusters with `pools` pools each, in its own subscription so that lists of
/// [`MAIN`] do not see it.
pub fn wide(pools: usize) -> Fleet {
    let (group_prefix, name_prefix) = match pools {
        0 => ("pools0-", "w0-"),
        10 => ("pools10-", "w10-"),
        100 => ("pools100-", "w100-"),
        _ => ("poolsn-", "wn-"),
    };
    Fleet {
        subscription: "00000000-0000-0000-0000-00000000b002",
        groups: 1,
        group_prefix,
        name_prefix,
        pools,
    }
}

impl Fleet {
    pub fn subscription(&self) -> &'static str {
        self.subscription
    }

    pub fn group(&self, index: usize) -> String {
        format!("{}{:02}", self.group_prefix, index % self.groups)
    }

    pub fn name(&self, index: usize) -> String {
        format!("{}{index:06}", self.name_prefix)
    }

    /// ARM path of cluster `index`, with the api-version query.
    pub fn cluster_path(&self, index: usize) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}?api-version={API_VERSION}",
            self.subscription,
            self.group(index),
            self.name(index)
        )
    }

    /// ARM path of the subscription's cluster list, with the api-version query.
    pub fn list_path(&self) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.ContainerService/managedClusters?api-version={API_VERSION}",
            self.subscription
        )
    }

    /// etcd key of cluster `index`.
    pub fn etcd_cluster_key(&self, index: usize) -> String {
        format!(
            "{}{}/{}",
            self.etcd_cluster_prefix(),
            self.group(index),
            self.name(index)
        )
    }

    /// etcd key prefix of every cluster of the fleet's subscription.
    pub fn etcd_cluster_prefix(&self) -> String {
        format!("clusters/{}/", self.subscription)
    }

    /// etcd key of pool `pool` of cluster `index`.
    pub fn etcd_pool_key(&self, index: usize, pool: usize) -> String {
        format!(
            "pools/{}/{}/{}/{}",
            self.subscription,
            self.group(index),
            self.name(index),
            pool_name(pool)
        )
    }

    /// Builds a cluster PUT body naming all of the fleet's pools. `generation` changes the content
    /// from one write to the next, as a real update does.
    pub fn cluster_body(&self, index: usize, generation: u64) -> Bytes {
        let mut pools = String::new();
        for pool in 0..self.pools {
            if pool > 0 {
                pools.push(',');
            }
            pools.push_str(&pool_profile(pool, generation));
        }
        Bytes::from(format!(
            r#"{{"location":"westeurope","tags":{{"env":"bench","generation":"{generation}"}},"sku":{{"name":"Base","tier":"Free"}},"properties":{{"kubernetesVersion":"1.30.5","dnsPrefix":"{}","enableRBAC":true,"networkProfile":{{"networkPlugin":"azure","loadBalancerSku":"standard","serviceCidr":"10.0.0.0/16","dnsServiceIP":"10.0.0.10"}},"agentPoolProfiles":[{pools}]}}}}"#,
            self.name(index)
        ))
    }
}

/// Name of pool number `pool`.
pub fn pool_name(pool: usize) -> String {
    format!("pool{pool}")
}

/// Builds the JSON of one pool profile, as it appears in a cluster body and as etcd stores it.
pub fn pool_profile(pool: usize, generation: u64) -> String {
    let mode = if pool == 0 { "System" } else { "User" };
    format!(
        r#"{{"name":"{}","count":{},"vmSize":"Standard_D4s_v5","osType":"Linux","mode":"{mode}","maxPods":110,"orchestratorVersion":"1.30.5"}}"#,
        pool_name(pool),
        1 + generation % 5
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_body_is_json_with_every_pool() {
        let body = wide(10).cluster_body(7, 3);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let pools = value["properties"]["agentPoolProfiles"].as_array().unwrap();
        assert_eq!(pools.len(), 10);
        assert_eq!(pools[9]["name"], "pool9");
        assert_eq!(value["tags"]["generation"], "3");
    }

    #[test]
    fn fleets_do_not_share_keys() {
        assert_ne!(MAIN.etcd_cluster_prefix(), wide(0).etcd_cluster_prefix());
        assert_ne!(wide(0).name(1), wide(10).name(1));
        assert!(
            MAIN.etcd_cluster_key(5)
                .starts_with(&MAIN.etcd_cluster_prefix())
        );
    }
}
