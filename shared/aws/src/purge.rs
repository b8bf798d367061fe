//! Offboarding a tenant from the table: its cursors and snapshot partitions by key, its
//! task- and write-ledger, webhook-dedupe and link items by a scan of their key prefixes (operator only:
//! no function role may scan), then its webhook registration, pause and config.

use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
use domain::ports::{pause_key, PurgeCounts, StoreError, TenantPurge};
use kareo::Family;

use crate::dynamo::{s, store_error, Item};
use crate::DynamoStore;

fn key_of(item: &Item) -> Item {
    item.iter()
        .filter(|(k, _)| *k == "pk" || *k == "sk")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl DynamoStore {
    /// The keys of every item whose `pk` starts with one of `prefixes` (a scan, all pages).
    async fn scan_prefixes(&self, prefixes: &[&str]) -> Result<Vec<Vec<Item>>, StoreError> {
        let mut out = vec![Vec::new(); prefixes.len()];
        let filter = (0..prefixes.len())
            .map(|i| format!("begins_with(pk, :p{i})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(&filter)
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            for (i, p) in prefixes.iter().enumerate() {
                req = req.expression_attribute_values(format!(":p{i}"), s(*p));
            }
            let page = req.send().await.map_err(|e| store_error("Scan", e))?;
            for item in page.items.unwrap_or_default() {
                let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned();
                if let Some(i) = pk.and_then(|pk| prefixes.iter().position(|p| pk.starts_with(p))) {
                    out[i].push(key_of(&item));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Deletes these keys (batched, as every batch write of the store).
    async fn delete_keys(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        let requests = keys
            .into_iter()
            .map(|k| {
                DeleteRequest::builder()
                    .set_key(Some(k))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(|e| StoreError::Unavailable(format!("BatchWriteItem: {e}")))
            })
            .collect::<Result<_, _>>()?;
        self.write_batches(requests).await.map(|_| ())
    }

    /// The keys of the single items `(pk, sk)` that exist.
    async fn existing(&self, keys: &[(String, String)]) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        for (pk, sk) in keys {
            let key: Item = [("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))].into();
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .projection_expression("pk")
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| store_error("GetItem", e))?;
            if got.item.is_some() {
                out.push(key);
            }
        }
        Ok(out)
    }
}

impl TenantPurge for DynamoStore {
    async fn purge(&self, tenant: &str, dry_run: bool) -> Result<PurgeCounts, StoreError> {
        let cursors = self
            .existing(
                &Family::ALL
                    .iter()
                    .map(|f| (format!("cursor#{tenant}#{f}"), "cursor".to_string()))
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut snapshots = Vec::new();
        for f in Family::ALL {
            let items = self.partition(&format!("snap#{tenant}#{f}")).await?;
            snapshots.extend(items.iter().map(key_of));
        }
        let tasks = format!("ledger#task#{tenant}#");
        let writes = format!("ledger#write#{tenant}#");
        let dedupe = format!("ledger#webhook#{tenant}#");
        let links = format!("link#{tenant}#");
        let mut scanned = self
            .scan_prefixes(&[&tasks, &writes, &dedupe, &links])
            .await?;
        let (links, dedupe, writes, tasks) = (
            scanned.pop().unwrap_or_default(),
            scanned.pop().unwrap_or_default(),
            scanned.pop().unwrap_or_default(),
            scanned.pop().unwrap_or_default(),
        );
        let config = self
            .existing(&[
                ("hook".to_string(), tenant.to_string()),
                ("breaker".to_string(), pause_key(tenant)),
                ("tenant".to_string(), tenant.to_string()),
            ])
            .await?;
        let counts = PurgeCounts {
            cursors: cursors.len(),
            snapshots: snapshots.len(),
            tasks: tasks.len(),
            writes: writes.len(),
            dedupe: dedupe.len(),
            links: links.len(),
            config: config.len(),
        };
        if dry_run {
            return Ok(counts);
        }
        // The config last (the list above ends with it): a purge cut short runs again.
        for keys in [cursors, snapshots, tasks, writes, dedupe, links, config] {
            self.delete_keys(keys).await?;
        }
        tracing::info!(tenant, ?counts, "tenant purged");
        Ok(counts)
    }
}
