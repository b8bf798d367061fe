//! Cursors, snapshots and tenant configs in one DynamoDB table (layout and conditional writes:
//! see the crate docs).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    PutRequest, ReturnValue, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::ports::{
    Cursor, CursorError, CursorStore, Lease, Snapshot, SnapshotStore, StoreError, TenantStore,
};
use domain::tenant::TenantConfig;
use kareo::Family;

use crate::error::describe;

/// The table's TTL attribute (epoch seconds), enabled by [`DynamoStore::create_table`].
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// `BatchGetItem` takes at most this many keys.
const BATCH_GET_MAX: usize = 100;
/// `BatchWriteItem` takes at most this many requests.
const BATCH_WRITE_MAX: usize = 25;
/// Attempts at a batch whose unprocessed part keeps coming back.
const BATCH_ATTEMPTS: u32 = 8;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Cursors, snapshots and tenant configs in one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    /// The DynamoDB client.
    pub client: Client,
    /// The table's name.
    pub table: String,
}

impl DynamoStore {
    /// A store over `table`.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// Creates the table (on demand, keys `pk`/`sk`), waits until it is active, and enables
    /// TTL on [`TTL_ATTRIBUTE`]. A table that already exists is left as it is.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("CreateTable: {e}")))
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("CreateTable: {e}")))
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                tracing::debug!(table = %self.table, "table exists");
                return Ok(());
            }
            Err(e) => return Err(store_error("CreateTable", e)),
        }
        let started = Instant::now();
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| store_error("DescribeTable", e))?;
            let status = out.table().and_then(|t| t.table_status());
            if status == Some(&TableStatus::Active) {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(StoreError::Unavailable(format!(
                    "table {} did not become active",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(|e| StoreError::Unavailable(format!("UpdateTimeToLive: {e}")))?,
            )
            .send()
            .await
            .map_err(|e| store_error("UpdateTimeToLive", e))?;
        tracing::info!(table = %self.table, ms = started.elapsed().as_millis() as u64, "table created");
        Ok(())
    }

    /// Deletes the table. A table that does not exist is not an error.
    pub async fn delete_table(&self) -> Result<(), StoreError> {
        match self
            .client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error("DeleteTable", e)),
        }
    }

    /// Sends `requests` in `BatchWriteItem`s of at most 25, retrying what DynamoDB leaves
    /// unprocessed (waits from [`backoff`]; then `Throttled`). Returns the calls made.
    pub(crate) async fn write_batches(
        &self,
        requests: Vec<WriteRequest>,
    ) -> Result<u32, StoreError> {
        let mut calls = 0u32;
        for chunk in requests.chunks(BATCH_WRITE_MAX) {
            let mut pending = chunk.to_vec();
            let mut waits = backoff();
            let mut first = true;
            while !pending.is_empty() {
                if !std::mem::take(&mut first) {
                    let Some(wait) = waits.next() else {
                        return Err(StoreError::Throttled);
                    };
                    tokio::time::sleep(wait).await;
                }
                calls += 1;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .map_err(|e| store_error("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(calls)
    }

    /// Every item of one partition (`pk = :pk`, consistent, all pages).
    pub(crate) async fn partition(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Query", e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    fn cursor_key(tenant: &str, family: Family) -> Item {
        HashMap::from([
            ("pk".to_string(), s(format!("cursor#{tenant}#{family}"))),
            ("sk".to_string(), s("cursor")),
        ])
    }

    /// The lease, by one conditional UpdateItem: no live lease, and when `seen` is given the
    /// cursor as read (`Some(None)`: absent). Creates the cursor if absent.
    async fn take_lease(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<Option<&Cursor>>,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::cursor_key(tenant, family)))
            .update_expression(
                "SET #lease_owner = :owner, #lease_until = :until, #tenant = :tenant, \
                 #family = :family ADD #version :one",
            )
            .expression_attribute_names("#lease_owner", "lease_owner")
            .expression_attribute_names("#lease_until", "lease_until")
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_names("#family", "family")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", t(until))
            .expression_attribute_values(":tenant", s(tenant))
            .expression_attribute_values(":family", s(family.name()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        let free = "(attribute_not_exists(#lease_owner) OR attribute_not_exists(#lease_until) \
                    OR #lease_until <= :now)";
        req = match seen {
            None => req
                .condition_expression(format!("attribute_not_exists(pk) OR {free}"))
                .expression_attribute_values(":now", t(now)),
            Some(None) => req.condition_expression("attribute_not_exists(pk)"),
            Some(Some(c)) => req
                .condition_expression(format!("#version = :seen AND {free}"))
                .expression_attribute_values(":seen", n(c.version))
                .expression_attribute_values(":now", t(now)),
        };
        match req.send().await {
            Ok(out) => Ok(Lease {
                tenant: tenant.to_string(),
                family,
                owner: owner.to_string(),
                cursor: cursor_from(&out.attributes.unwrap_or_default())?,
            }),
            Err(e) => match store_error("UpdateItem", e) {
                StoreError::Conflict(_) => Err(StoreError::Conflict(format!(
                    "cursor {tenant}/{family} is leased by another run, or moved since it was read"
                ))),
                other => Err(other),
            },
        }
    }

    /// One BatchGetItem of at most [`BATCH_GET_MAX`] `keys`, read consistently, with its
    /// unprocessed keys asked again (backing off) until none are left; `what` names the
    /// items in the log line when they stay unprocessed.
    async fn batch_get(&self, what: &str, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("BatchGetItem: {e}")))?,
        );
        let mut items = Vec::new();
        let mut waits = backoff();
        let mut first = true;
        while let Some(request) = pending.take() {
            if !std::mem::take(&mut first) {
                let Some(wait) = waits.next() else {
                    tracing::warn!(what, "batch reads still unprocessed");
                    return Err(StoreError::Throttled);
                };
                tokio::time::sleep(wait).await;
            }
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| store_error("BatchGetItem", e))?;
            if let Some(got) = out.responses.and_then(|mut r| r.remove(&self.table)) {
                items.extend(got);
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys().is_empty());
        }
        Ok(items)
    }

    /// A conditional write on a held lease: `version = :held AND lease_owner = :owner`.
    async fn leased_update(
        &self,
        op: &'static str,
        lease: &Lease,
        update: String,
        names: Vec<(&str, &str)>,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Cursor, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::cursor_key(&lease.tenant, lease.family)))
            .update_expression(update)
            .condition_expression("#version = :held AND #lease_owner = :owner")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#lease_owner", "lease_owner")
            .expression_attribute_values(":held", n(lease.cursor.version))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        for (k, v) in names {
            req = req.expression_attribute_names(k, v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(out) => cursor_from(&out.attributes.unwrap_or_default()),
            Err(e) => match store_error(op, e) {
                StoreError::Conflict(_) => Err(StoreError::Conflict(format!(
                    "cursor {}/{} moved or its lease was taken",
                    lease.tenant, lease.family
                ))),
                other => Err(other),
            },
        }
    }
}

/// Maps an SDK error: a failed condition is `Conflict`, throttling is `Throttled`, anything
/// else `Unavailable` naming the operation and the code.
pub(crate) fn store_error<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    op: &str,
    e: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError {
    let d = describe(&e);
    match d.code.as_deref() {
        Some("ConditionalCheckFailedException") => {
            StoreError::Conflict(format!("{op}: condition failed"))
        }
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => {
            tracing::warn!(op, "dynamodb throttled");
            StoreError::Throttled
        }
        _ => {
            let label = d.label();
            tracing::warn!(op, error = %label, "dynamodb call failed");
            StoreError::Unavailable(format!("{op}: {label}"))
        }
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An instant as stored: RFC 3339, UTC, nine fraction digits (fixed width: string order is
/// time order).
pub(crate) fn t(v: DateTime<Utc>) -> AttributeValue {
    s(v.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// An instant as the table's TTL attribute holds it: epoch seconds, a number.
pub(crate) fn epoch(v: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(v.timestamp().to_string())
}

/// Reads an epoch-seconds number attribute.
pub(crate) fn get_epoch(item: &Item, attr: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    match item.get(attr) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map(Some)
            .ok_or_else(|| corrupt(item, attr)),
        Some(_) => Err(corrupt(item, attr)),
    }
}

pub(crate) fn corrupt(item: &Item, attr: &str) -> StoreError {
    let pk = item.get("pk").and_then(|v| v.as_s().ok());
    let sk = item.get("sk").and_then(|v| v.as_s().ok());
    StoreError::Corrupt(format!(
        "item {}/{}: attribute {attr}",
        pk.map_or("?", String::as_str),
        sk.map_or("?", String::as_str)
    ))
}

pub(crate) fn get_str<'a>(item: &'a Item, attr: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(attr) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(corrupt(item, attr)),
    }
}

pub(crate) fn get_time(item: &Item, attr: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_str(item, attr)?
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| corrupt(item, attr))
        })
        .transpose()
}

fn cursor_from(item: &Item) -> Result<Cursor, StoreError> {
    let version = match item.get("version") {
        None => 0,
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt(item, "version"))?,
        Some(_) => return Err(corrupt(item, "version")),
    };
    let last_error = match item.get("last_error") {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::M(m)) => {
            let field = |k: &str| match m.get(k) {
                Some(AttributeValue::S(v)) => Ok(v.clone()),
                _ => Err(corrupt(item, "last_error")),
            };
            let at = DateTime::parse_from_rfc3339(&field("at")?)
                .map_err(|_| corrupt(item, "last_error"))?
                .with_timezone(&Utc);
            Some(CursorError {
                class: field("class")?
                    .parse()
                    .map_err(|_| corrupt(item, "last_error"))?,
                message: field("message")?,
                at,
            })
        }
        Some(_) => return Err(corrupt(item, "last_error")),
    };
    Ok(Cursor {
        position: get_time(item, "position")?,
        high_water: get_time(item, "high_water")?,
        last_success_start: get_time(item, "last_success_start")?,
        version,
        lease_owner: get_str(item, "lease_owner")?.map(str::to_string),
        lease_until: get_time(item, "lease_until")?,
        last_error,
    })
}

fn snapshot_item(pk: &str, id: String, snap: Snapshot) -> Item {
    let mut item = HashMap::from([
        ("pk".to_string(), s(pk)),
        ("sk".to_string(), s(id)),
        ("version".to_string(), t(snap.version)),
        (
            "fields".to_string(),
            AttributeValue::M(snap.fields.into_iter().map(|(k, v)| (k, s(v))).collect()),
        ),
        ("deleted".to_string(), AttributeValue::Bool(snap.deleted)),
    ]);
    if let Some(starts) = snap.starts {
        item.insert("starts".to_string(), t(starts));
    }
    if let Some(e) = snap.expires {
        item.insert(TTL_ATTRIBUTE.to_string(), epoch(e));
    }
    item
}

fn snapshot_from(item: &Item) -> Result<(String, Snapshot), StoreError> {
    let id = get_str(item, "sk")?
        .ok_or_else(|| corrupt(item, "sk"))?
        .to_string();
    let fields = match item.get("fields") {
        None => BTreeMap::new(),
        Some(AttributeValue::M(m)) => m
            .iter()
            .map(|(k, v)| match v {
                AttributeValue::S(v) => Ok((k.clone(), v.clone())),
                _ => Err(corrupt(item, "fields")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(corrupt(item, "fields")),
    };
    let deleted = match item.get("deleted") {
        None => false,
        Some(AttributeValue::Bool(b)) => *b,
        Some(_) => return Err(corrupt(item, "deleted")),
    };
    Ok((
        id,
        Snapshot {
            version: get_time(item, "version")?.ok_or_else(|| corrupt(item, "version"))?,
            fields,
            starts: get_time(item, "starts")?,
            deleted,
            expires: get_epoch(item, TTL_ATTRIBUTE)?,
        },
    ))
}

/// The waits before retrying the unprocessed part of a batch: 100 ms doubling, at most 3.2 s,
/// `BATCH_ATTEMPTS - 1` of them (then the call fails as throttled).
fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(3200))
        .with_max_times(BATCH_ATTEMPTS as usize - 1)
        .build()
}

impl CursorStore for DynamoStore {
    async fn load(&self, tenant: &str, family: Family) -> Result<Option<Cursor>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::cursor_key(tenant, family)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        out.item.as_ref().map(cursor_from).transpose()
    }

    async fn acquire(
        &self,
        tenant: &str,
        family: Family,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.take_lease(tenant, family, None, owner, now, until)
            .await
    }

    async fn load_many(
        &self,
        tenants: &[&str],
        family: Family,
    ) -> Result<HashMap<String, Cursor>, StoreError> {
        let mut unique: Vec<&str> = tenants.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut found = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let keys: Vec<Item> = chunk.iter().map(|t| Self::cursor_key(t, family)).collect();
            let suffix = format!("#{family}");
            for item in self.batch_get("cursor reads", keys).await? {
                let tenant = get_str(&item, "pk")?
                    .and_then(|pk| pk.strip_prefix("cursor#")?.strip_suffix(suffix.as_str()))
                    .ok_or_else(|| corrupt(&item, "pk"))?
                    .to_string();
                found.insert(tenant, cursor_from(&item)?);
            }
        }
        tracing::debug!(family = %family, asked = tenants.len(), found = found.len(), "cursors read");
        Ok(found)
    }

    async fn acquire_seen(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.take_lease(tenant, family, Some(seen), owner, now, until)
            .await
    }

    async fn advance(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        position: DateTime<Utc>,
        run_start: DateTime<Utc>,
    ) -> Result<Cursor, StoreError> {
        // Conditional on the version read, so the item is `seen`: the maximum is computed
        // from it.
        let position = seen
            .and_then(|c| c.position)
            .map_or(position, |p| p.max(position));
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::cursor_key(tenant, family)))
            .update_expression(
                "SET #position = :position, #last_success_start = :start, #tenant = :tenant, \
                 #family = :family REMOVE #last_error, #lease_owner, #lease_until \
                 ADD #version :one",
            )
            .expression_attribute_names("#position", "position")
            .expression_attribute_names("#last_success_start", "last_success_start")
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_names("#family", "family")
            .expression_attribute_names("#last_error", "last_error")
            .expression_attribute_names("#lease_owner", "lease_owner")
            .expression_attribute_names("#lease_until", "lease_until")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":position", t(position))
            .expression_attribute_values(":start", t(run_start))
            .expression_attribute_values(":tenant", s(tenant))
            .expression_attribute_values(":family", s(family.name()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        req = match seen {
            None => req.condition_expression("attribute_not_exists(pk)"),
            Some(c) => req
                .condition_expression("#version = :seen")
                .expression_attribute_values(":seen", n(c.version)),
        };
        match req.send().await {
            Ok(out) => cursor_from(&out.attributes.unwrap_or_default()),
            Err(e) => match store_error("UpdateItem", e) {
                StoreError::Conflict(_) => Err(StoreError::Conflict(format!(
                    "cursor {tenant}/{family} moved since it was read"
                ))),
                other => Err(other),
            },
        }
    }

    async fn checkpoint(
        &self,
        lease: &mut Lease,
        position: DateTime<Utc>,
        high_water: Option<DateTime<Utc>>,
        run_start: DateTime<Utc>,
        release: bool,
    ) -> Result<(), StoreError> {
        // The write is conditional on the lease's version, so the item is `lease.cursor`:
        // the maxima are computed from it.
        let position = lease.cursor.position.map_or(position, |p| p.max(position));
        let high_water = match (lease.cursor.high_water, high_water) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut set = vec!["#position = :position", "#last_success_start = :start"];
        let mut names = vec![
            ("#position", "position"),
            ("#last_success_start", "last_success_start"),
            ("#last_error", "last_error"),
        ];
        let mut values = vec![(":position", t(position)), (":start", t(run_start))];
        if let Some(hw) = high_water {
            set.push("#high_water = :high_water");
            names.push(("#high_water", "high_water"));
            values.push((":high_water", t(hw)));
        }
        let mut remove = vec!["#last_error"];
        if release {
            remove.extend(["#lease_owner", "#lease_until"]);
            names.push(("#lease_until", "lease_until"));
        }
        let update = format!(
            "SET {} REMOVE {} ADD #version :one",
            set.join(", "),
            remove.join(", ")
        );
        let cursor = self
            .leased_update("UpdateItem", lease, update, names, values)
            .await?;
        tracing::debug!(
            tenant = %lease.tenant,
            family = %lease.family,
            version = cursor.version,
            release,
            "cursor checkpointed"
        );
        lease.cursor = cursor;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.leased_update(
            "UpdateItem",
            lease,
            "REMOVE #lease_owner, #lease_until ADD #version :one".to_string(),
            vec![("#lease_until", "lease_until")],
            vec![],
        )
        .await?;
        tracing::debug!(tenant = %lease.tenant, family = %lease.family, "lease released");
        Ok(())
    }

    async fn fail(&self, lease: &Lease, error: CursorError) -> Result<(), StoreError> {
        let err = AttributeValue::M(HashMap::from([
            ("class".to_string(), s(error.class.name())),
            ("message".to_string(), s(error.message)),
            ("at".to_string(), t(error.at)),
        ]));
        self.leased_update(
            "UpdateItem",
            lease,
            "SET #last_error = :error REMOVE #lease_owner, #lease_until ADD #version :one"
                .to_string(),
            vec![
                ("#last_error", "last_error"),
                ("#lease_until", "lease_until"),
            ],
            vec![(":error", err)],
        )
        .await?;
        tracing::debug!(tenant = %lease.tenant, family = %lease.family, "failure recorded");
        Ok(())
    }

    async fn reset(
        &self,
        tenant: &str,
        family: Family,
        position: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::cursor_key(tenant, family)))
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_names("#family", "family")
            .expression_attribute_names("#position", "position")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":tenant", s(tenant))
            .expression_attribute_values(":family", s(family.name()))
            .expression_attribute_values(":one", n(1));
        req = match position {
            Some(p) => req
                .update_expression(
                    "SET #tenant = :tenant, #family = :family, #position = :position \
                     ADD #version :one",
                )
                .expression_attribute_values(":position", t(p)),
            None => req.update_expression(
                "SET #tenant = :tenant, #family = :family REMOVE #position ADD #version :one",
            ),
        };
        req.send().await.map_err(|e| store_error("UpdateItem", e))?;
        tracing::info!(tenant, family = %family, "cursor reset");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<(String, Family, Cursor)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :prefix)")
                .expression_attribute_values(":prefix", s("cursor#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Scan", e))?;
            for item in page.items() {
                let pk = get_str(item, "pk")?.unwrap_or_default();
                // `cursor#{tenant}#{family}`: tenant ids have no '#', family names neither.
                let Some((tenant, family)) = pk
                    .strip_prefix("cursor#")
                    .and_then(|rest| rest.rsplit_once('#'))
                else {
                    return Err(corrupt(item, "pk"));
                };
                let Some(family) = Family::from_name(family) else {
                    // A family this version does not know: not ours to list.
                    tracing::warn!(tenant, "cursor of an unknown family skipped");
                    continue;
                };
                out.push((tenant.to_string(), family, cursor_from(item)?));
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| (&a.0, a.1.name()).cmp(&(&b.0, b.1.name())));
        Ok(out)
    }
}

impl SnapshotStore for DynamoStore {
    async fn get(
        &self,
        tenant: &str,
        family: Family,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError> {
        let pk = format!("snap#{tenant}#{family}");
        // BatchGetItem refuses a request that names one key twice.
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        let mut found = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| {
                    HashMap::from([
                        ("pk".to_string(), s(&pk)),
                        ("sk".to_string(), s(id.as_str())),
                    ])
                })
                .collect();
            // TTL deletion lags (up to days): an expired snapshot reads as absent.
            let now = Utc::now();
            for item in self.batch_get("snapshot reads", keys).await? {
                let (id, snap) = snapshot_from(&item)?;
                if !snap.expired(now) {
                    found.insert(id, snap);
                }
            }
        }
        tracing::debug!(tenant, family = %family, asked = ids.len(), found = found.len(), "snapshots read");
        Ok(found)
    }

    async fn put(
        &self,
        tenant: &str,
        family: Family,
        items: Vec<(String, Snapshot)>,
    ) -> Result<(), StoreError> {
        let pk = format!("snap#{tenant}#{family}");
        let count = items.len();
        // BatchWriteItem refuses a request that names one key twice: the last one wins, as
        // in a map.
        let unique: BTreeMap<String, Snapshot> = items.into_iter().collect();
        let requests: Vec<WriteRequest> = unique
            .into_iter()
            .map(|(id, snap)| {
                PutRequest::builder()
                    .set_item(Some(snapshot_item(&pk, id, snap)))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|e| StoreError::Unavailable(format!("BatchWriteItem: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let calls = self.write_batches(requests).await.inspect_err(|_| {
            tracing::warn!(tenant, family = %family, "snapshot writes still unprocessed");
        })?;
        tracing::debug!(tenant, family = %family, count, calls, "snapshots written");
        Ok(())
    }

    async fn upcoming(
        &self,
        tenant: &str,
        family: Family,
        after: DateTime<Utc>,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let pk = format!("snap#{tenant}#{family}");
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .filter_expression("#starts >= :after AND #deleted = :no")
                .expression_attribute_names("#starts", "starts")
                .expression_attribute_names("#deleted", "deleted")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":after", t(after))
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Query", e))?;
            let now = Utc::now();
            for item in page.items() {
                let (id, snap) = snapshot_from(item)?;
                if !snap.expired(now) {
                    out.push((id, snap));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        tracing::debug!(tenant, family = %family, count = out.len(), "upcoming snapshots read");
        Ok(out)
    }
}

impl TenantStore for DynamoStore {
    async fn tenants(&self) -> Result<Vec<TenantConfig>, StoreError> {
        let mut out = Vec::new();
        for item in self.partition("tenant").await? {
            let id = get_str(&item, "sk")?.unwrap_or_default();
            let yaml = get_str(&item, "yaml")?.ok_or_else(|| corrupt(&item, "yaml"))?;
            out.push(
                TenantConfig::from_yaml(yaml, &format!("stored tenant {id}"))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    async fn put(&self, config: &TenantConfig) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("tenant"))
            .item("sk", s(&config.tenant))
            .item("yaml", s(config.to_yaml()))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        tracing::info!(tenant = %config.tenant, "tenant stored");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprocessed_batches_wait_doubling_then_give_up() {
        let waits: Vec<u64> = backoff().map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 3200]);
        assert_eq!(waits.len() as u32, BATCH_ATTEMPTS - 1);
    }
}
