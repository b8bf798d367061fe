//! Period claims in the same table: `pk = "period#<family>"`, `sk = <run>` (e.g.
//! `poll#2026-12-04T21:05:00Z`), `owner` (the claiming invocation's request id) and
//! `expires_at` (DynamoDB TTL). One conditional `PutItem` per scheduled invocation: the first
//! claim wins, and the same owner (Lambda's retry of one invocation) may claim again.

use chrono::{DateTime, Utc};
use domain::ports::{PeriodStore, StoreError};
use kareo::Family;

use crate::dynamo::{epoch, s, store_error, TTL_ATTRIBUTE};
use crate::DynamoStore;

impl PeriodStore for DynamoStore {
    async fn claim_period(
        &self,
        family: Family,
        run: &str,
        owner: &str,
        expires: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("period#{family}")))
            .item("sk", s(run))
            .item("owner", s(owner))
            .item(TTL_ATTRIBUTE, epoch(expires))
            .condition_expression("attribute_not_exists(pk) OR #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) => match store_error("PutItem", e) {
                StoreError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }
}
