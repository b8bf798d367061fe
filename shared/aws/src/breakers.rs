//! Kareo accounts' breakers in the same table: `pk = "breaker"`, `sk = <account>` (the
//! Kareo secret's name): `fingerprint` (a digest of the credentials that failed, never a
//! value), `opened_at`, `by`, `reason`. One query reads them all (`status`).

use domain::ports::{Breaker, BreakerStore, StoreError};

use crate::dynamo::{corrupt, get_str, get_time, s, store_error, t, Item};
use crate::DynamoStore;

fn breaker_from(item: &Item) -> Result<(String, Breaker), StoreError> {
    let text = |attr: &str| -> Result<String, StoreError> {
        Ok(get_str(item, attr)?
            .ok_or_else(|| corrupt(item, attr))?
            .to_string())
    };
    Ok((
        text("sk")?,
        Breaker {
            fingerprint: text("fingerprint")?,
            opened_at: get_time(item, "opened_at")?.ok_or_else(|| corrupt(item, "opened_at"))?,
            by: text("by")?,
            reason: text("reason")?,
        },
    ))
}

impl BreakerStore for DynamoStore {
    async fn breakers(&self) -> Result<Vec<(String, Breaker)>, StoreError> {
        self.partition("breaker")
            .await?
            .iter()
            .map(breaker_from)
            .collect()
    }

    async fn breaker(&self, account: &str) -> Result<Option<Breaker>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s("breaker"))
            .key("sk", s(account))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        out.item
            .as_ref()
            .map(|i| breaker_from(i).map(|(_, b)| b))
            .transpose()
    }

    async fn open_breaker(&self, account: &str, b: &Breaker) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("breaker"))
            .item("sk", s(account))
            .item("fingerprint", s(&b.fingerprint))
            .item("opened_at", t(b.opened_at))
            .item("by", s(&b.by))
            .item("reason", s(&b.reason))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }

    async fn close_breaker(&self, account: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s("breaker"))
            .key("sk", s(account))
            .send()
            .await
            .map_err(|e| store_error("DeleteItem", e))?;
        Ok(())
    }
}
