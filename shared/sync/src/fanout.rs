//! Fan-out: how one scheduled invocation of a family's function spreads its tenants over
//! concurrent invocations of the same function (docs/ARCHITECTURE.md, *Fan-out*).
//!
//! A scheduled invocation first claims its period (`PeriodStore`, keyed by the mode and the
//! schedule's nominal time, which EventBridge Scheduler puts in the payload): a schedule
//! delivered twice, or two coordinators at once, poll no tenant twice in a period, while
//! Lambda's own retry of a failed invocation (the same request id) may go on. With more tenants than one
//! shard holds it becomes the coordinator: it splits the tenants into shards, dispatches every
//! shard but the first as an asynchronous invocation of itself (`ShardDispatch`), and polls
//! the first. A shard polls only its tenants and never fans out again (one level: no
//! recursion). Each shard has its own invocation's time budget; the leases keep two
//! invocations from polling one (tenant, family) at once; a shard that runs out of time or
//! dies leaves its cursors where the last hand-off put them, for the next period.

use std::collections::BTreeMap;

use domain::tenant::TenantConfig;
use serde::{Deserialize, Serialize};

/// One shard: the tenants one invocation polls (ids only: the payload holds no PHI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Its place among the period's shards (0: the coordinator's own).
    pub index: usize,
    /// How many shards the period has.
    pub of: usize,
    /// Tenant ids, sorted.
    pub tenants: Vec<String>,
    /// The period claim the coordinator holds (`poll#<scheduled time>`), for the logs.
    #[serde(default)]
    pub period: Option<String>,
}

/// How a family's tenants are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Tenants per shard before another shard is added (`KAREO_DOCK_SHARD_SIZE`, default 200).
    pub shard_size: usize,
    /// At most this many shards, the coordinator's included (`KAREO_DOCK_MAX_SHARDS`, default
    /// 10: the template's reserved concurrency); past it, shards grow instead.
    pub max_shards: usize,
}

impl Default for FanOut {
    fn default() -> Self {
        FanOut {
            shard_size: 200,
            max_shards: 10,
        }
    }
}

impl FanOut {
    /// From the environment the template sets; a variable that is absent or unreadable keeps
    /// its default.
    pub fn from_env() -> FanOut {
        let d = FanOut::default();
        let num = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
        };
        FanOut {
            shard_size: num("KAREO_DOCK_SHARD_SIZE").unwrap_or(d.shard_size),
            max_shards: num("KAREO_DOCK_MAX_SHARDS").unwrap_or(d.max_shards),
        }
    }
}

/// Splits `tenants` into at most `fan.max_shards` shards of about `fan.shard_size`. The tenants
/// of one Kareo account stay in one shard, so one process's limiter paces every call to that
/// account; accounts are placed largest first on the least loaded shard. Deterministic: the
/// same tenants give the same shards. No tenants: no shards.
pub fn plan(tenants: &[&TenantConfig], fan: FanOut) -> Vec<Shard> {
    if tenants.is_empty() {
        return Vec::new();
    }
    let size = fan.shard_size.max(1);
    let wanted = tenants.len().div_ceil(size).clamp(1, fan.max_shards.max(1));
    let mut accounts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in tenants {
        accounts
            .entry(t.kareo.secret.as_str())
            .or_default()
            .push(t.tenant.clone());
    }
    let mut groups: Vec<(&str, Vec<String>)> = accounts.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut shards: Vec<Vec<String>> = vec![Vec::new(); wanted];
    for (_, ids) in groups {
        let lightest = (0..wanted)
            .min_by_key(|i| (shards[*i].len(), *i))
            .unwrap_or(0);
        shards[lightest].extend(ids);
    }
    let mut shards: Vec<Vec<String>> = shards.into_iter().filter(|s| !s.is_empty()).collect();
    for s in &mut shards {
        s.sort();
    }
    let of = shards.len();
    shards
        .into_iter()
        .enumerate()
        .map(|(index, tenants)| Shard {
            index,
            of,
            tenants,
            period: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tenant(id: &str, account: &str) -> TenantConfig {
        let yaml = format!(
            "tenant: {id}\ntimezone: America/New_York\nstart: 2026-01-01T00:00:00Z\nkareo:\n  secret: {account}\n  practice: P\ndock:\n  secret: d\nfamilies:\n  patients: {{}}\n"
        );
        TenantConfig::from_yaml(&yaml, "test").expect("config")
    }

    #[test]
    fn one_account_stays_in_one_shard_and_shards_are_capped() {
        let mut ts: Vec<TenantConfig> = (0..10)
            .map(|i| tenant(&format!("t{i:02}"), &format!("acct{i}")))
            .collect();
        ts.extend((0..4).map(|i| tenant(&format!("s{i}"), "shared")));
        let refs: Vec<&TenantConfig> = ts.iter().collect();
        let fan = FanOut {
            shard_size: 4,
            max_shards: 3,
        };
        let shards = plan(&refs, fan);
        assert_eq!(shards.len(), 3);
        let with_shared: Vec<_> = shards
            .iter()
            .filter(|s| s.tenants.iter().any(|t| t.starts_with('s')))
            .collect();
        assert_eq!(with_shared.len(), 1, "one account's tenants in one shard");
        assert!(shards.iter().all(|s| s.of == 3));
        assert_eq!(plan(&refs, fan), shards, "deterministic");
        assert!(plan(&[], fan).is_empty());
    }

    proptest! {
        #[test]
        fn every_tenant_in_exactly_one_shard(n in 1usize..300, accounts in 1usize..60, size in 1usize..50, max in 1usize..20) {
            let ts: Vec<TenantConfig> = (0..n)
                .map(|i| tenant(&format!("t{i}"), &format!("a{}", i % accounts)))
                .collect();
            let refs: Vec<&TenantConfig> = ts.iter().collect();
            let shards = plan(&refs, FanOut { shard_size: size, max_shards: max });
            prop_assert!(shards.len() <= max);
            prop_assert!(shards.len() <= n.div_ceil(size));
            let mut all: Vec<String> = shards.iter().flat_map(|s| s.tenants.clone()).collect();
            all.sort();
            let mut want: Vec<String> = ts.iter().map(|t| t.tenant.clone()).collect();
            want.sort();
            prop_assert_eq!(all, want);
            for (i, s) in shards.iter().enumerate() {
                prop_assert_eq!(s.index, i);
                prop_assert!(!s.tenants.is_empty());
            }
        }
    }
}
