//! Webhook registrations and Dock ↔ Kareo links in the same table.
//! - a registration: `pk = "hook"`, `sk = <tenant>`: `token_sha256`, `armed_until`,
//!   `webhook_id`, `at` (one query reads them all, as `tenants()` does for configs);
//! - a link: `pk = "link#<tenant>#<kind>#<id>"`, `sk = "link"`: ids only, with the table's
//!   TTL attribute, so a link is forgotten after [`LINK_TTL_DAYS`] unless recorded again.

use std::collections::HashMap;

use domain::ports::{HookRegistration, HookStore, Link, LinkKey, LinkStore, StoreError};
use kareo::Family;

use crate::dynamo::{
    corrupt, epoch, get_epoch, get_str, get_time, s, store_error, t, Item, TTL_ATTRIBUTE,
};
use crate::DynamoStore;

fn hook_from(item: &Item) -> Result<(String, HookRegistration), StoreError> {
    let tenant = get_str(item, "sk")?
        .ok_or_else(|| corrupt(item, "sk"))?
        .to_string();
    let token_sha256 = get_str(item, "token_sha256")?
        .filter(|h| h.len() == 64)
        .ok_or_else(|| corrupt(item, "token_sha256"))?
        .to_string();
    Ok((
        tenant,
        HookRegistration {
            token_sha256,
            armed_until: get_time(item, "armed_until")?,
            webhook_id: get_str(item, "webhook_id")?.map(str::to_string),
            at: get_time(item, "at")?.ok_or_else(|| corrupt(item, "at"))?,
        },
    ))
}

fn link_key(tenant: &str, key: &LinkKey) -> Item {
    HashMap::from([
        (
            "pk".to_string(),
            s(format!("link#{tenant}#{}", key.as_key())),
        ),
        ("sk".to_string(), s("link")),
    ])
}

impl HookStore for DynamoStore {
    async fn hooks(&self) -> Result<Vec<(String, HookRegistration)>, StoreError> {
        self.partition("hook")
            .await?
            .iter()
            .map(hook_from)
            .collect()
    }

    async fn hook(&self, tenant: &str) -> Result<Option<HookRegistration>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s("hook"))
            .key("sk", s(tenant))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        out.item
            .as_ref()
            .map(|i| hook_from(i).map(|(_, h)| h))
            .transpose()
    }

    async fn put_hook(&self, tenant: &str, hook: &HookRegistration) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("hook"))
            .item("sk", s(tenant))
            .item("token_sha256", s(&hook.token_sha256))
            .item("at", t(hook.at));
        if let Some(a) = hook.armed_until {
            req = req.item("armed_until", t(a));
        }
        if let Some(id) = &hook.webhook_id {
            req = req.item("webhook_id", s(id));
        }
        req.send().await.map_err(|e| store_error("PutItem", e))?;
        tracing::info!(
            tenant,
            armed = hook.armed_until.is_some(),
            "webhook registration stored"
        );
        Ok(())
    }
}

impl LinkStore for DynamoStore {
    async fn link(&self, tenant: &str, key: &LinkKey) -> Result<Option<Link>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(link_key(tenant, key)))
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let text = |attr: &str| get_str(&item, attr).map(|v| v.map(str::to_string));
        let family = match get_str(&item, "family")? {
            None => None,
            Some(f) => Some(Family::from_name(f).ok_or_else(|| corrupt(&item, "family"))?),
        };
        let link = Link {
            family,
            record: text("record")?,
            kareo_patient: text("kareo_patient")?,
            dock_patient: text("dock_patient")?,
            at: get_time(&item, "at")?.ok_or_else(|| corrupt(&item, "at"))?,
            expires: get_epoch(&item, TTL_ATTRIBUTE)?,
        };
        // TTL deletion lags (up to days): an expired link is treated as gone.
        Ok(Some(link).filter(|l| l.expires.is_none_or(|e| e > chrono::Utc::now())))
    }

    async fn put_link(&self, tenant: &str, key: &LinkKey, link: &Link) -> Result<(), StoreError> {
        let mut item = link_key(tenant, key);
        item.insert("at".into(), t(link.at));
        if let Some(f) = link.family {
            item.insert("family".into(), s(f.name()));
        }
        for (attr, v) in [
            ("record", &link.record),
            ("kareo_patient", &link.kareo_patient),
            ("dock_patient", &link.dock_patient),
        ] {
            if let Some(v) = v {
                item.insert(attr.into(), s(v));
            }
        }
        if let Some(e) = link.expires {
            item.insert(TTL_ATTRIBUTE.into(), epoch(e));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }
}
