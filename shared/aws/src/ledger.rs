//! The exactly-once ledger in the same table: one item per key, `pk = "ledger#{key}"`,
//! `sk = "ledger"`. Same answers as the embedded store's ledger.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use domain::ports::{ledger_expiry, Claim, Ledger, LedgerEntry, LedgerState, StoreError};

use crate::dynamo::{
    corrupt, epoch, get_epoch, get_str, get_time, n, s, store_error, t, Item, TTL_ATTRIBUTE,
};
use crate::DynamoStore;

/// Claims retried when the item changes between a lost condition and the read of it.
const CLAIM_ATTEMPTS: u32 = 4;

fn ledger_key(key: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("ledger#{key}"))),
        ("sk".to_string(), s("ledger")),
    ])
}

fn state_name(state: LedgerState) -> &'static str {
    match state {
        LedgerState::Pending => "pending",
        LedgerState::Done => "done",
        LedgerState::NeedsReview => "needs_review",
        LedgerState::Failed => "failed",
    }
}

fn entry_from(item: &Item) -> Result<LedgerEntry, StoreError> {
    let state = match get_str(item, "state")? {
        Some("pending") => LedgerState::Pending,
        Some("done") => LedgerState::Done,
        Some("needs_review") => LedgerState::NeedsReview,
        Some("failed") => LedgerState::Failed,
        _ => return Err(corrupt(item, "state")),
    };
    let attempts = match item.get("attempts") {
        None => 0,
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt(item, "attempts"))?,
        Some(_) => return Err(corrupt(item, "attempts")),
    };
    let text = |attr: &str| get_str(item, attr).map(|v| v.map(str::to_string));
    Ok(LedgerEntry {
        state,
        owner: text("owner")?,
        until: get_time(item, "until")?,
        remote_id: text("remote_id")?,
        result: text("result")?,
        reason: text("reason")?,
        attempts,
        at: get_time(item, "at")?.ok_or_else(|| corrupt(item, "at"))?,
        sending: match item.get("sending") {
            None => false,
            Some(AttributeValue::Bool(b)) => *b,
            Some(_) => return Err(corrupt(item, "sending")),
        },
        expires: get_epoch(item, TTL_ATTRIBUTE)?,
    })
}

impl DynamoStore {
    async fn ledger_item(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(ledger_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }
}

impl Ledger for DynamoStore {
    /// One conditional `UpdateItem`: takes the item when it is absent, failed, or pending
    /// with an expired lease (`until <= now`); on a lost condition the item as it stands
    /// (returned with the failure) says `Done`, `NeedsReview` or `Held`.
    async fn claim(
        &self,
        key: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(ledger_key(key)))
                .update_expression(
                    "SET #state = :pending, #owner = :owner, #until = :until, #at = :now, \
                     #expires = :expires REMOVE #remote_id, #result, #reason, #sending \
                     ADD #attempts :one",
                )
                .condition_expression(
                    "attribute_not_exists(pk) OR #state = :failed OR (#state = :pending AND \
                     (attribute_not_exists(#until) OR #until <= :now))",
                )
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#until", "until")
                .expression_attribute_names("#at", "at")
                .expression_attribute_names("#remote_id", "remote_id")
                .expression_attribute_names("#result", "result")
                .expression_attribute_names("#reason", "reason")
                .expression_attribute_names("#attempts", "attempts")
                .expression_attribute_names("#sending", "sending")
                .expression_attribute_names("#expires", TTL_ATTRIBUTE)
                .expression_attribute_values(":pending", s("pending"))
                .expression_attribute_values(":failed", s("failed"))
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":until", t(until))
                .expression_attribute_values(":now", t(now))
                .expression_attribute_values(":expires", epoch(ledger_expiry(now)))
                .expression_attribute_values(":one", n(1))
                .return_values(ReturnValue::AllOld)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let current = match out {
                Ok(out) => {
                    let prev = out.attributes.filter(|a| !a.is_empty());
                    let prev = prev.as_ref().map(entry_from).transpose()?;
                    return Ok(match prev {
                        Some(p) if p.state == LedgerState::Pending => Claim::Expired(p),
                        _ => Claim::New,
                    });
                }
                Err(e) => match e.as_service_error() {
                    Some(se) if se.is_conditional_check_failed_exception() => {
                        let returned = match se {
                            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item.clone(),
                            _ => None,
                        };
                        match returned.filter(|i| !i.is_empty()) {
                            Some(item) => Some(item),
                            None => self.ledger_item(key).await?,
                        }
                    }
                    _ => return Err(store_error("UpdateItem", e)),
                },
            };
            let Some(item) = current else {
                continue; // gone since: claim again
            };
            let entry = entry_from(&item)?;
            match entry.state {
                LedgerState::Done => return Ok(Claim::Done(entry)),
                LedgerState::NeedsReview => return Ok(Claim::NeedsReview(entry)),
                LedgerState::Pending if entry.until.is_some_and(|u| u > now) => {
                    return Ok(Claim::Held)
                }
                // Failed or expired since the condition was evaluated: claim again.
                _ => continue,
            }
        }
        Err(StoreError::Conflict(format!(
            "ledger item {key} kept changing while it was claimed"
        )))
    }

    /// One conditional `UpdateItem` (`state = pending AND owner = :owner`): the entry as
    /// given, attempts kept, owner and lease removed.
    async fn settle(&self, key: &str, owner: &str, entry: LedgerEntry) -> Result<(), StoreError> {
        let mut set = vec!["#state = :state", "#at = :at"];
        let mut remove = vec!["#owner", "#until", "#sending"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(ledger_key(key)))
            .condition_expression("#state = :pending AND #owner = :owner")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#sending", "sending")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":state", s(state_name(entry.state)))
            .expression_attribute_values(":at", t(entry.at));
        for (attr, name, value, placeholder) in [
            ("remote_id", "#remote_id", entry.remote_id, ":remote_id"),
            ("result", "#result", entry.result, ":result"),
            ("reason", "#reason", entry.reason, ":reason"),
        ] {
            req = req.expression_attribute_names(name, attr);
            match value {
                Some(v) => {
                    set.push(match attr {
                        "remote_id" => "#remote_id = :remote_id",
                        "result" => "#result = :result",
                        _ => "#reason = :reason",
                    });
                    req = req.expression_attribute_values(placeholder, s(v));
                }
                None => remove.push(name),
            }
        }
        req = req.expression_attribute_names("#expires", TTL_ATTRIBUTE);
        // Every item expires: an entry without its own expiry keeps the ledger's retention.
        set.push("#expires = :expires");
        req = req.expression_attribute_values(
            ":expires",
            epoch(entry.expires.unwrap_or_else(|| ledger_expiry(entry.at))),
        );
        let update = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        match req.update_expression(update).send().await {
            Ok(_) => {
                tracing::debug!(key, state = state_name(entry.state), "ledger item settled");
                Ok(())
            }
            Err(e) => match store_error("UpdateItem", e) {
                StoreError::Conflict(_) => Err(StoreError::Conflict(format!(
                    "ledger item {key} is no longer claimed by this run"
                ))),
                other => Err(other),
            },
        }
    }

    /// Gives a held claim back: a first attempt's item is deleted (the next claim is `New`
    /// with one attempt); a later one's becomes `failed` (attempts kept). Both conditional on
    /// `state = pending AND owner = :owner`; not holding it is not an error.
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(ledger_key(key)))
            .condition_expression(
                "#state = :pending AND #owner = :owner AND (attribute_not_exists(#attempts) OR #attempts <= :one)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match deleted.map_err(|e| store_error("DeleteItem", e)) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let failed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(ledger_key(key)))
            .update_expression("SET #state = :failed REMOVE #owner, #until")
            .condition_expression("#state = :pending AND #owner = :owner")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":failed", s("failed"))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match failed.map_err(|e| store_error("UpdateItem", e)) {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One conditional `UpdateItem` (`state = pending AND owner = :owner`): `sending = true`.
    async fn mark_sending(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(ledger_key(key)))
            .update_expression("SET #sending = :yes")
            .condition_expression("#state = :pending AND #owner = :owner")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#sending", "sending")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        match out.map_err(|e| store_error("UpdateItem", e)) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                "ledger item {key} is no longer claimed by this run"
            ))),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        self.ledger_item(key)
            .await?
            .as_ref()
            .map(entry_from)
            .transpose()
    }
}
