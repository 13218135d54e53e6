//! DynamoDB adapter: the state store's second backend talks to one table through [`DynamoTable`],
//! in keywarden's own types ([`Value`], [`Item`], [`Write`]), so the features that own the
//! records never name an SDK type.
//!
//! Single-table design: every item has a string partition key `pk` and a string sort key `sk`;
//! `expires` (epoch seconds) is the table's TTL attribute. Reads are strongly consistent.
//!
//! The store's traits are synchronous (like SQLite). The SDK client lives on a runtime of its
//! own (one worker thread, [`Bridge`]); a call sends its future there and waits for the answer
//! on a channel, inside `block_in_place` on a multi-thread runtime (the worker hands its other
//! tasks over while it waits), in place elsewhere (current-thread test runtimes, the CLI).
//! Every request is counted through the [`CallObserver`] (`keywarden_aws_requests_total`,
//! `service="dynamodb"`) and in [`DynamoTable::requests`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, PutRequest, ScalarAttributeType, TimeToLiveSpecification,
    TransactWriteItem, Update, WriteRequest,
};

use super::{AwsError, AwsErrorKind, CallObserver, CallOutcome};
use crate::config::AwsConfig;

const SERVICE: &str = "dynamodb";

/// The most actions a caller puts in one transaction: DynamoDB takes 100, one is kept for the
/// lease check of `[ha]` fencing.
pub const MAX_TRANSACTION: usize = 99;

/// The lease item of `[ha]`.
pub const LEASE_PK: &str = "lease";
/// The lease item's sort key.
pub const LEASE_SK: &str = "leader";

/// `[ha]` fencing: the lease epoch every write is conditional on (0: no fencing), and whether a
/// write was refused because another replica took the lease.
#[derive(Debug, Default)]
struct Fence {
    epoch: std::sync::atomic::AtomicI64,
    lost: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

/// An attribute value, in the few shapes the store uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    S(String),
    /// An integer number.
    N(i64),
    /// A boolean.
    Bool(bool),
    /// NULL.
    Null,
    /// A list.
    L(Vec<Value>),
    /// A map.
    M(BTreeMap<String, Value>),
}

/// One item: attribute name to value.
pub type Item = BTreeMap<String, Value>;

/// The string attribute `name` of `item`.
pub fn s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(Value::S(v)) => Some(v),
        _ => None,
    }
}

/// The number attribute `name` of `item`.
pub fn n(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(Value::N(v)) => Some(*v),
        _ => None,
    }
}

/// A string or NULL: `None` for NULL or absent.
pub fn opt_s(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |v| Value::S(v.to_string()))
}

/// A condition or update expression. Attribute names are written `#name` in the text and map
/// to `name` (so reserved words such as `state` need no care); values are `:name` placeholders.
#[derive(Debug, Clone, Default)]
pub struct Expr {
    /// The expression text.
    pub text: String,
    /// The `:placeholder` values.
    pub values: Vec<(String, Value)>,
}

impl Expr {
    /// An expression with no values.
    pub fn new(text: impl Into<String>) -> Expr {
        Expr {
            text: text.into(),
            values: Vec::new(),
        }
    }

    /// Adds the value of placeholder `name` (without the colon).
    pub fn value(mut self, name: &str, v: Value) -> Expr {
        self.values.push((format!(":{name}"), v));
        self
    }
}

/// The `#name` placeholders of `text` and the names they stand for.
fn names_of(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            if end > start {
                let name = &text[start..end];
                out.insert(format!("#{name}"), name.to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// One write, alone or as an action of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// PutItem (the item carries `pk` and `sk`).
    Put {
        /// The whole item.
        item: Item,
        /// Written only if this holds.
        cond: Option<Expr>,
    },
    /// UpdateItem.
    Update {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// The update expression (`SET ...`, `REMOVE ...`).
        update: Expr,
        /// Written only if this holds.
        cond: Option<Expr>,
    },
    /// DeleteItem.
    Delete {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// Deleted only if this holds.
        cond: Option<Expr>,
    },
    /// A condition on another item (transactions only).
    Check {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// Must hold for the transaction to apply.
        cond: Expr,
    },
}

impl Write {
    /// A put guarded by "no item with this key yet".
    pub fn put_new(item: Item) -> Write {
        Write::Put {
            item,
            cond: Some(Expr::new("attribute_not_exists(#pk)")),
        }
    }
}

/// The key of `(pk, sk)`.
pub fn key(pk: &str, sk: &str) -> Item {
    Item::from([
        ("pk".to_string(), Value::S(pk.to_string())),
        ("sk".to_string(), Value::S(sk.to_string())),
    ])
}

fn to_sdk(v: &Value) -> AttributeValue {
    match v {
        Value::S(s) => AttributeValue::S(s.clone()),
        Value::N(n) => AttributeValue::N(n.to_string()),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Null => AttributeValue::Null(true),
        Value::L(l) => AttributeValue::L(l.iter().map(to_sdk).collect()),
        Value::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()),
    }
}

fn from_sdk(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => Value::S(s.clone()),
        // A number that is not an i64 was not written by keywarden: kept as text, so the
        // feature that reads it reports the attribute as corrupt.
        AttributeValue::N(n) => n.parse().map_or_else(|_| Value::S(n.clone()), Value::N),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::L(l) => Value::L(l.iter().map(from_sdk).collect()),
        AttributeValue::M(m) => Value::M(m.iter().map(|(k, v)| (k.clone(), from_sdk(v))).collect()),
        _ => Value::Null,
    }
}

fn item_to_sdk(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()
}

fn item_from_sdk(item: &HashMap<String, AttributeValue>) -> Item {
    item.iter().map(|(k, v)| (k.clone(), from_sdk(v))).collect()
}

/// The names and values of the expressions of one request (`None` when empty, as the API
/// refuses empty maps).
type Placeholders = (
    Option<HashMap<String, String>>,
    Option<HashMap<String, AttributeValue>>,
);

fn placeholders(exprs: &[Option<&Expr>]) -> Placeholders {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    for e in exprs.iter().flatten() {
        names.extend(names_of(&e.text));
        for (k, v) in &e.values {
            values.insert(k.clone(), to_sdk(v));
        }
    }
    (
        (!names.is_empty()).then_some(names),
        (!values.is_empty()).then_some(values),
    )
}

/// The runtime the SDK client runs on, shut down (without waiting) with its last handle.
struct Bridge {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = rt {
            // Dropping a runtime inside another one panics; this one is let go instead.
            rt.shutdown_background();
        }
    }
}

impl Bridge {
    fn new() -> std::io::Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keywarden-dynamodb")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Bridge {
            runtime: Mutex::new(Some(runtime)),
            handle,
        })
    }

    /// Runs `fut` on the bridge's runtime and waits for it (see the module doc).
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, AwsError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = move || rx.recv();
        let on_workers = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let got = if on_workers {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        got.map_err(|_| AwsError {
            service: SERVICE,
            operation: "call",
            kind: AwsErrorKind::Other,
            message: "the DynamoDB client's runtime has stopped".to_string(),
        })
    }
}

/// Requests sent, as the cost figures count them.
#[derive(Debug, Default)]
struct Requests {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// How many read and write requests a [`DynamoTable`] sent (every clone counts together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// GetItem, Query, BatchGetItem.
    pub reads: u64,
    /// PutItem, UpdateItem, DeleteItem, TransactWriteItems, BatchWriteItem.
    pub writes: u64,
}

/// One DynamoDB table on the SDK client; cheap to clone.
#[derive(Clone)]
pub struct DynamoTable {
    client: Client,
    table: Arc<str>,
    bridge: Arc<Bridge>,
    observer: Arc<dyn CallObserver>,
    requests: Arc<Requests>,
    fence: Arc<Fence>,
}

impl std::fmt::Debug for DynamoTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoTable")
            .field("table", &self.table)
            .finish()
    }
}

fn classify<E, R>(operation: &'static str, e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut err = super::secretsmanager::classify(operation, e);
    err.service = SERVICE;
    err
}

fn io_error(e: std::io::Error) -> AwsError {
    AwsError {
        service: SERVICE,
        operation: "start",
        kind: AwsErrorKind::Other,
        message: format!("cannot start the DynamoDB client's runtime: {e}"),
    }
}

/// Whether the service error of `e` has code `code`.
fn has_code<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>, code: &str) -> bool
where
    E: ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code()) == Some(code)
}

impl DynamoTable {
    /// A client of `table`, configured like the other AWS clients (`[aws] region`,
    /// `endpoint_url`, the standard environment).
    pub fn connect(
        aws: &AwsConfig,
        table: &str,
        observer: Arc<dyn CallObserver>,
    ) -> Result<DynamoTable, AwsError> {
        let bridge = Arc::new(Bridge::new().map_err(io_error)?);
        let aws = aws.clone();
        let sdk = bridge.run(async move { super::client::load(&aws).await })?;
        Ok(DynamoTable {
            client: Client::new(&sdk),
            table: Arc::from(table),
            bridge,
            observer,
            requests: Arc::new(Requests::default()),
            fence: Arc::new(Fence::default()),
        })
    }

    /// A client of `table` built from an SDK configuration the caller loaded (tests pass
    /// the emulator's endpoint and dummy credentials).
    pub fn with_sdk(
        sdk: &aws_config::SdkConfig,
        table: &str,
        observer: Arc<dyn CallObserver>,
    ) -> Result<DynamoTable, AwsError> {
        Ok(DynamoTable {
            client: Client::new(sdk),
            table: Arc::from(table),
            bridge: Arc::new(Bridge::new().map_err(io_error)?),
            observer,
            requests: Arc::new(Requests::default()),
            fence: Arc::new(Fence::default()),
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// Requests sent so far by this table and its clones.
    pub fn requests(&self) -> RequestCounts {
        RequestCounts {
            reads: self.requests.reads.load(Ordering::Relaxed),
            writes: self.requests.writes.load(Ordering::Relaxed),
        }
    }

    fn count<T>(&self, operation: &'static str, write: bool, result: &Result<T, AwsError>) {
        let counter = if write {
            &self.requests.writes
        } else {
            &self.requests.reads
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.observer
            .aws_call(SERVICE, operation, CallOutcome::of(result));
        super::report_access(
            self.observer.as_ref(),
            SERVICE,
            operation,
            &self.table,
            result,
        );
    }

    /// GetItem, strongly consistent.
    pub fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, AwsError> {
        const OP: &str = "GetItem";
        let req = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(item_to_sdk(&key(pk, sk))))
            .consistent_read(true);
        let result = self
            .bridge
            .run(async move { req.send().await.map_err(|e| classify(OP, &e)) })
            .and_then(|r| r);
        self.count(OP, false, &result);
        Ok(result?.item().map(item_from_sdk))
    }

    /// Every item of partition `pk` (whose sort key starts with `prefix`, when given), in sort
    /// key order, strongly consistent; `filter` is applied by DynamoDB after the read.
    pub fn query(
        &self,
        pk: &str,
        prefix: Option<&str>,
        filter: Option<&Expr>,
    ) -> Result<Vec<Item>, AwsError> {
        const OP: &str = "Query";
        let mut cond = Expr::new("#pk = :pk").value("pk", Value::S(pk.to_string()));
        if let Some(p) = prefix {
            cond = Expr {
                text: "#pk = :pk AND begins_with(#sk, :prefix)".to_string(),
                values: cond.values,
            }
            .value("prefix", Value::S(p.to_string()));
        }
        let (names, values) = placeholders(&[Some(&cond), filter]);
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let req = self
                .client
                .query()
                .table_name(&*self.table)
                .key_condition_expression(&cond.text)
                .set_filter_expression(filter.map(|f| f.text.clone()))
                .set_expression_attribute_names(names.clone())
                .set_expression_attribute_values(values.clone())
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let result = self
                .bridge
                .run(async move { req.send().await.map_err(|e| classify(OP, &e)) })
                .and_then(|r| r);
            self.count(OP, false, &result);
            let page = result?;
            out.extend(page.items().iter().map(item_from_sdk));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// BatchGetItem of `keys` (100 per request, unprocessed keys retried), strongly
    /// consistent; items that do not exist are absent from the answer, which is unordered.
    pub fn batch_get(&self, keys: &[(String, String)]) -> Result<Vec<Item>, AwsError> {
        const OP: &str = "BatchGetItem";
        let mut out = Vec::new();
        for chunk in keys.chunks(100) {
            let mut todo: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|(pk, sk)| item_to_sdk(&key(pk, sk)))
                .collect();
            let mut rounds = 0;
            while !todo.is_empty() {
                rounds += 1;
                if rounds > 10 {
                    return Err(AwsError {
                        service: SERVICE,
                        operation: OP,
                        kind: AwsErrorKind::Throttled,
                        message: "keys stayed unprocessed after 10 rounds".to_string(),
                    });
                }
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut todo)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| AwsError {
                        service: SERVICE,
                        operation: OP,
                        kind: AwsErrorKind::Other,
                        message: e.to_string(),
                    })?;
                let req = self
                    .client
                    .batch_get_item()
                    .request_items(self.table.to_string(), ka);
                let result = self
                    .bridge
                    .run(async move { req.send().await.map_err(|e| classify(OP, &e)) })
                    .and_then(|r| r);
                self.count(OP, false, &result);
                let page = result?;
                if let Some(items) = page.responses().and_then(|r| r.get(&*self.table)) {
                    out.extend(items.iter().map(item_from_sdk));
                }
                if let Some(left) = page.unprocessed_keys().and_then(|u| u.get(&*self.table)) {
                    todo = left.keys().to_vec();
                }
            }
        }
        Ok(out)
    }

    /// Makes every later write (through [`Self::write`] and [`Self::transact`], on this table
    /// and its clones) conditional on the lease item's `epoch` being `epoch` (`[ha]`).
    pub fn fence(&self, epoch: i64) {
        self.fence.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Whether a fenced write was refused: another replica holds the lease.
    pub fn fence_lost(&self) -> bool {
        self.fence.lost.load(Ordering::SeqCst)
    }

    /// Waits until a fenced write is refused.
    pub async fn wait_fence_lost(&self) {
        loop {
            let notified = self.fence.notify.notified();
            if self.fence_lost() {
                return;
            }
            notified.await;
        }
    }

    fn lose_fence(&self, operation: &'static str) -> AwsError {
        self.fence.lost.store(true, Ordering::SeqCst);
        self.fence.notify.notify_waiters();
        AwsError {
            service: SERVICE,
            operation,
            kind: AwsErrorKind::Other,
            message: format!(
                "refused: this replica no longer holds the lease (epoch {})",
                self.fence.epoch.load(Ordering::SeqCst)
            ),
        }
    }

    /// One write; `Ok(false)` when its condition did not hold (nothing written). Fenced
    /// (`[ha]`): sent as a transaction with the lease check.
    pub fn write(&self, w: Write) -> Result<bool, AwsError> {
        if self.fence.epoch.load(Ordering::SeqCst) != 0 {
            return Ok(self.transact(vec![w])?.is_ok());
        }
        self.write_unfenced(w)
    }

    /// Sends one conditional write and counts it: `Ok(false)` when its condition did not hold.
    fn conditional<O, E, R>(
        &self,
        op: &'static str,
        send: impl Future<Output = Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>> + Send + 'static,
    ) -> Result<bool, AwsError>
    where
        O: Send + 'static,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + 'static,
    {
        let result = self
            .bridge
            .run(async move {
                match send.await {
                    Ok(_) => Ok(true),
                    Err(e) if has_code(&e, "ConditionalCheckFailedException") => Ok(false),
                    Err(e) => Err(classify(op, &e)),
                }
            })
            .and_then(|r| r);
        self.count(op, true, &result);
        result
    }

    /// One write without the lease check (the lease's own writes).
    pub fn write_unfenced(&self, w: Write) -> Result<bool, AwsError> {
        let table = self.table.to_string();
        match w {
            Write::Put { item, cond } => {
                const OP: &str = "PutItem";
                let (names, values) = placeholders(&[cond.as_ref()]);
                let req = self
                    .client
                    .put_item()
                    .table_name(table)
                    .set_item(Some(item_to_sdk(&item)))
                    .set_condition_expression(cond.map(|c| c.text))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values);
                self.conditional(OP, req.send())
            }
            Write::Update {
                pk,
                sk,
                update,
                cond,
            } => {
                const OP: &str = "UpdateItem";
                let (names, values) = placeholders(&[Some(&update), cond.as_ref()]);
                let req = self
                    .client
                    .update_item()
                    .table_name(table)
                    .set_key(Some(item_to_sdk(&key(&pk, &sk))))
                    .update_expression(update.text)
                    .set_condition_expression(cond.map(|c| c.text))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values);
                self.conditional(OP, req.send())
            }
            Write::Delete { pk, sk, cond } => {
                const OP: &str = "DeleteItem";
                let (names, values) = placeholders(&[cond.as_ref()]);
                let req = self
                    .client
                    .delete_item()
                    .table_name(table)
                    .set_key(Some(item_to_sdk(&key(&pk, &sk))))
                    .set_condition_expression(cond.map(|c| c.text))
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values);
                self.conditional(OP, req.send())
            }
            Write::Check { .. } => Err(AwsError {
                service: SERVICE,
                operation: "ConditionCheck",
                kind: AwsErrorKind::Other,
                message: "a condition check is only valid inside a transaction".to_string(),
            }),
        }
    }

    fn action(&self, w: Write) -> Result<TransactWriteItem, AwsError> {
        let table = self.table.to_string();
        let build = |e: aws_sdk_dynamodb::error::BuildError| AwsError {
            service: SERVICE,
            operation: "TransactWriteItems",
            kind: AwsErrorKind::Other,
            message: e.to_string(),
        };
        Ok(match w {
            Write::Put { item, cond } => {
                let (names, values) = placeholders(&[cond.as_ref()]);
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(table)
                            .set_item(Some(item_to_sdk(&item)))
                            .set_condition_expression(cond.map(|c| c.text))
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(build)?,
                    )
                    .build()
            }
            Write::Update {
                pk,
                sk,
                update,
                cond,
            } => {
                let (names, values) = placeholders(&[Some(&update), cond.as_ref()]);
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(table)
                            .set_key(Some(item_to_sdk(&key(&pk, &sk))))
                            .update_expression(update.text)
                            .set_condition_expression(cond.map(|c| c.text))
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(build)?,
                    )
                    .build()
            }
            Write::Delete { pk, sk, cond } => {
                let (names, values) = placeholders(&[cond.as_ref()]);
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(table)
                            .set_key(Some(item_to_sdk(&key(&pk, &sk))))
                            .set_condition_expression(cond.map(|c| c.text))
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(build)?,
                    )
                    .build()
            }
            Write::Check { pk, sk, cond } => {
                let (names, values) = placeholders(&[Some(&cond)]);
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(table)
                            .set_key(Some(item_to_sdk(&key(&pk, &sk))))
                            .condition_expression(cond.text)
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(build)?,
                    )
                    .build()
            }
        })
    }

    /// TransactWriteItems: every write or none. `Ok(Err(failed))` when a condition did not
    /// hold: `failed[i]` says whether action `i`'s did not. At most [`MAX_TRANSACTION`] actions.
    pub fn transact(&self, mut writes: Vec<Write>) -> Result<Result<(), Vec<bool>>, AwsError> {
        const OP: &str = "TransactWriteItems";
        if writes.is_empty() {
            return Ok(Ok(()));
        }
        let epoch = self.fence.epoch.load(Ordering::SeqCst);
        if epoch != 0 {
            if self.fence_lost() {
                return Err(self.lose_fence(OP));
            }
            writes.push(Write::Check {
                pk: LEASE_PK.into(),
                sk: LEASE_SK.into(),
                cond: Expr::new("#epoch = :fence_epoch").value("fence_epoch", Value::N(epoch)),
            });
            let n = writes.len();
            return match self.transact_unfenced(writes)? {
                Ok(()) => Ok(Ok(())),
                Err(failed) if failed.get(n - 1) == Some(&true) => Err(self.lose_fence(OP)),
                Err(mut failed) => {
                    failed.truncate(n - 1);
                    Ok(Err(failed))
                }
            };
        }
        self.transact_unfenced(writes)
    }

    /// TransactWriteItems without the lease check.
    fn transact_unfenced(&self, writes: Vec<Write>) -> Result<Result<(), Vec<bool>>, AwsError> {
        const OP: &str = "TransactWriteItems";
        let actions = writes
            .into_iter()
            .map(|w| self.action(w))
            .collect::<Result<Vec<_>, _>>()?;
        let req = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions));
        let result = self
            .bridge
            .run(async move {
                match req.send().await {
                    Ok(_) => Ok(Ok(())),
                    Err(e) => {
                        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                            e.as_service_error()
                        {
                            let reasons = c.cancellation_reasons();
                            let failed: Vec<bool> = reasons
                                .iter()
                                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                                .collect();
                            if failed.iter().any(|f| *f) {
                                return Ok(Err(failed));
                            }
                        }
                        Err(classify(OP, &e))
                    }
                }
            })
            .and_then(|r| r);
        self.count(OP, true, &result);
        result
    }

    /// BatchWriteItem of plain puts, 25 per request, unprocessed items retried (no conditions:
    /// for copies such as `migrate-store`).
    pub fn batch_put(&self, items: Vec<Item>) -> Result<(), AwsError> {
        const OP: &str = "BatchWriteItem";
        for chunk in items.chunks(25) {
            let mut todo: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for item in chunk {
                let put = PutRequest::builder()
                    .set_item(Some(item_to_sdk(item)))
                    .build()
                    .map_err(|e| AwsError {
                        service: SERVICE,
                        operation: OP,
                        kind: AwsErrorKind::Other,
                        message: e.to_string(),
                    })?;
                todo.push(WriteRequest::builder().put_request(put).build());
            }
            let mut rounds = 0;
            while !todo.is_empty() {
                rounds += 1;
                if rounds > 10 {
                    return Err(AwsError {
                        service: SERVICE,
                        operation: OP,
                        kind: AwsErrorKind::Throttled,
                        message: "items stayed unprocessed after 10 rounds".to_string(),
                    });
                }
                let req = self
                    .client
                    .batch_write_item()
                    .request_items(self.table.to_string(), std::mem::take(&mut todo));
                let result = self
                    .bridge
                    .run(async move { req.send().await.map_err(|e| classify(OP, &e)) })
                    .and_then(|r| r);
                self.count(OP, true, &result);
                if let Some(left) = result?
                    .unprocessed_items()
                    .and_then(|u| u.get(&*self.table))
                {
                    todo = left.clone();
                }
            }
        }
        Ok(())
    }

    /// Creates the table (pk/sk strings, on-demand billing, TTL on `expires`) and waits until
    /// it is active. `Ok(false)`: it already existed (nothing changed).
    pub fn create_table(&self) -> Result<bool, AwsError> {
        let client = self.client.clone();
        let table = self.table.to_string();
        let result = self.bridge.run(async move {
            let attr = |name: &str| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
            };
            let schema = |name: &str, kind: KeyType| {
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
            };
            let build_err = |e: aws_sdk_dynamodb::error::BuildError| AwsError {
                service: SERVICE,
                operation: "CreateTable",
                kind: AwsErrorKind::Other,
                message: e.to_string(),
            };
            let created = match client
                .create_table()
                .table_name(&table)
                .attribute_definitions(attr("pk").map_err(build_err)?)
                .attribute_definitions(attr("sk").map_err(build_err)?)
                .key_schema(schema("pk", KeyType::Hash).map_err(build_err)?)
                .key_schema(schema("sk", KeyType::Range).map_err(build_err)?)
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
            {
                Ok(_) => true,
                Err(e) if has_code(&e, "ResourceInUseException") => false,
                Err(e) => return Err(classify("CreateTable", &e)),
            };
            // Wait until ACTIVE (about 20 s on AWS for a new table; at once on moto).
            for _ in 0..120 {
                let out = client
                    .describe_table()
                    .table_name(&table)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeTable", &e))?;
                let active = out
                    .table()
                    .and_then(|t| t.table_status())
                    .is_some_and(|s| s.as_str() == "ACTIVE");
                if active {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            if created {
                let ttl = TimeToLiveSpecification::builder()
                    .attribute_name("expires")
                    .enabled(true)
                    .build()
                    .map_err(|e| AwsError {
                        service: SERVICE,
                        operation: "UpdateTimeToLive",
                        kind: AwsErrorKind::Other,
                        message: e.to_string(),
                    })?;
                client
                    .update_time_to_live()
                    .table_name(&table)
                    .time_to_live_specification(ttl)
                    .send()
                    .await
                    .map_err(|e| classify("UpdateTimeToLive", &e))?;
            }
            Ok(created)
        });
        let result = result.and_then(|r| r);
        self.observer
            .aws_call(SERVICE, "CreateTable", CallOutcome::of(&result));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_taken_from_the_expression() {
        let names = names_of("#state = :s AND attribute_not_exists(#pk) OR #a_b1 <> :x");
        assert_eq!(names.len(), 3);
        assert_eq!(names["#state"], "state");
        assert_eq!(names["#a_b1"], "a_b1");
    }

    #[test]
    fn values_round_trip_through_the_sdk_shape() {
        let v = Value::M(BTreeMap::from([
            ("a".to_string(), Value::L(vec![Value::N(-3), Value::Null])),
            ("b".to_string(), Value::Bool(true)),
            ("c".to_string(), Value::S("x".into())),
        ]));
        assert_eq!(from_sdk(&to_sdk(&v)), v);
    }
}
