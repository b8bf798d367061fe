//! Kareo accounts' shared call budgets in the same table (`kareo::budget`): `pk =
//! "budget#<account>"` (the account's digest, never its key) and
//!
//! - `sk = "op#<operation>"`: `next_ms` N, the earliest start of the operation's next free
//!   slot (Unix ms), and `expires_at` an hour or two later. A reservation is one conditional
//!   `UpdateItem` when the operation is free — `SET next_ms = now + interval` on condition
//!   `next_ms <= now` (or none): the slot is now — and a second when a slot is ahead:
//!   `SET next_ms = next_ms + interval` on condition `next_ms > now`, returning the new value:
//!   the slot is the one before it. The second is an atomic add, so any number of concurrent
//!   callers each get their own slot without retrying one another's bids.
//! - `sk = "live"`: `intervals` S (JSON of the live intervals), `read_at_ms` N, and a claim to
//!   read them, `claim_owner` S / `claim_until` N (one conditional `UpdateItem`: no claim, an
//!   expired one, or the same owner); `expires_at` two days after the read.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use kareo::budget::{AccountId, BudgetError, BudgetFuture, LiveIntervals, SharedBudget};

use crate::dynamo::{n, s, store_error, Item, TTL_ATTRIBUTE};
use crate::DynamoStore;

/// Rounds of (take the free slot, else the one after the slot ahead) before giving up: a round
/// is lost only when the slot ahead passes between its two writes.
const ATTEMPTS: u32 = 4;

fn pk(account: &AccountId) -> AttributeValue {
    s(format!("budget#{}", account.as_str()))
}

fn number(item: &Item, attr: &str) -> Option<u64> {
    item.get(attr)?.as_n().ok()?.parse().ok()
}

fn unavailable(e: domain::ports::StoreError) -> BudgetError {
    BudgetError::Unavailable(e.to_string())
}

impl DynamoStore {
    async fn reserve_slot(
        &self,
        account: &AccountId,
        op: &str,
        interval_ms: u64,
        now_ms: u64,
    ) -> Result<u64, BudgetError> {
        for _ in 0..ATTEMPTS {
            // Free now (no slot ahead): take it.
            let free = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk(account))
                .key("sk", s(format!("op#{op}")))
                .update_expression("SET next_ms = :next, #expires = :expires")
                .condition_expression("attribute_not_exists(next_ms) OR next_ms <= :now")
                .expression_attribute_names("#expires", TTL_ATTRIBUTE)
                .expression_attribute_values(":next", n(now_ms + interval_ms))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":expires", n(now_ms / 1000 + 3600))
                .send()
                .await;
            match free {
                Ok(_) => return Ok(now_ms),
                Err(e) => match store_error("UpdateItem", e) {
                    domain::ports::StoreError::Conflict(_) => {}
                    other => return Err(unavailable(other)),
                },
            }
            // A slot is ahead: take the one after it (an atomic add: concurrent callers each
            // get their own, whatever their number).
            let after = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", pk(account))
                .key("sk", s(format!("op#{op}")))
                .update_expression("SET next_ms = next_ms + :interval, #expires = :expires")
                .condition_expression("next_ms > :now")
                .expression_attribute_names("#expires", TTL_ATTRIBUTE)
                .expression_attribute_values(":interval", n(interval_ms))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":expires", n(now_ms / 1000 + 2 * 3600))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await;
            match after {
                Ok(out) => {
                    let next = out
                        .attributes
                        .as_ref()
                        .and_then(|a| number(a, "next_ms"))
                        .ok_or_else(|| BudgetError::Unavailable("UpdateItem: no next_ms".into()))?;
                    return Ok(next.saturating_sub(interval_ms));
                }
                Err(e) => match store_error("UpdateItem", e) {
                    // The slot ahead passed meanwhile: free now again.
                    domain::ports::StoreError::Conflict(_) => {}
                    other => return Err(unavailable(other)),
                },
            }
        }
        Err(BudgetError::Contended(ATTEMPTS))
    }

    async fn live_intervals(
        &self,
        account: &AccountId,
    ) -> Result<Option<LiveIntervals>, BudgetError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(account))
            .key("sk", s("live"))
            .send()
            .await
            .map_err(|e| unavailable(store_error("GetItem", e)))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let (Some(read_at_ms), Some(text)) = (
            number(&item, "read_at_ms"),
            item.get("intervals").and_then(|v| v.as_s().ok()),
        ) else {
            return Ok(None); // a claim only
        };
        let intervals = serde_json::from_str(text)
            .map_err(|_| BudgetError::Unavailable("GetItem: live intervals unreadable".into()))?;
        Ok(Some(LiveIntervals {
            read_at_ms,
            intervals,
        }))
    }

    async fn claim(
        &self,
        account: &AccountId,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, BudgetError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(account))
            .key("sk", s("live"))
            .update_expression("SET claim_owner = :owner, claim_until = :until")
            .condition_expression(
                "attribute_not_exists(claim_until) OR claim_until <= :now OR claim_owner = :owner",
            )
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) => match store_error("UpdateItem", e) {
                domain::ports::StoreError::Conflict(_) => Ok(false),
                other => Err(unavailable(other)),
            },
        }
    }

    async fn put_live(&self, account: &AccountId, live: &LiveIntervals) -> Result<(), BudgetError> {
        let text = serde_json::to_string(&live.intervals)
            .map_err(|_| BudgetError::Unavailable("PutItem: live intervals".into()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk(account))
            .item("sk", s("live"))
            .item("intervals", s(text))
            .item("read_at_ms", n(live.read_at_ms))
            .item(TTL_ATTRIBUTE, n(live.read_at_ms / 1000 + 2 * 86_400))
            .send()
            .await
            .map_err(|e| unavailable(store_error("PutItem", e)))?;
        Ok(())
    }
}

impl SharedBudget for DynamoStore {
    fn reserve<'a>(
        &'a self,
        account: &'a AccountId,
        op: &'a str,
        interval_ms: u64,
        now_ms: u64,
    ) -> BudgetFuture<'a, u64> {
        Box::pin(self.reserve_slot(account, op, interval_ms, now_ms))
    }

    fn live<'a>(&'a self, account: &'a AccountId) -> BudgetFuture<'a, Option<LiveIntervals>> {
        Box::pin(self.live_intervals(account))
    }

    fn claim_read<'a>(
        &'a self,
        account: &'a AccountId,
        owner: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BudgetFuture<'a, bool> {
        Box::pin(self.claim(account, owner, now_ms, until_ms))
    }

    fn store_live<'a>(
        &'a self,
        account: &'a AccountId,
        live: &'a LiveIntervals,
    ) -> BudgetFuture<'a, ()> {
        Box::pin(self.put_live(account, live))
    }
}
