//! The write path and record reads.
//!
//! Every create, update and delete, from any source, goes through `Records`:
//! permission → validate → before hooks → validate again (hooks may change the input) →
//! one transaction → commit → after hooks → one `RecordEvent` on the bus. Actions attach
//! as `WriteHook`s; realtime and caches subscribe to the bus. Nothing else writes rows.

pub mod query;
mod validate;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::auth::{Access, Identity, access, credentials, passwords, secrets};
use crate::error::ApiError;
use crate::schema::value::SqlValue;
use crate::schema::{ObjectSchema, Operation, Schema};
use crate::store::statements::{self, ListQuery};
use crate::store::{Record, Store, Tx, unique_violation_field};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Created,
    Updated,
    Deleted,
}

/// One committed change. Shared (`Arc`) by every subscriber; never mutated.
#[derive(Debug, Clone)]
pub struct RecordEvent {
    pub object: String,
    pub verb: Verb,
    pub id: i64,
    /// The row after the change (`None` for a delete).
    pub record: Option<Record>,
    /// The row before the change (`None` for a create).
    pub previous: Option<Record>,
    /// What the client asked to write, after before hooks changed it (`{}` for a
    /// delete): after actions see it as `userInput`.
    pub input: Value,
    pub actor: Identity,
}

impl RecordEvent {
    /// The creator of the row, for row-security routing.
    pub fn owner(&self) -> Option<i64> {
        self.record
            .as_ref()
            .or(self.previous.as_ref())
            .and_then(|r| r.owner)
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a before hook knows about the write it may change or refuse.
pub struct BeforeWrite<'a> {
    pub who: &'a Identity,
    pub object: &'a ObjectSchema,
    pub verb: Verb,
    /// The stored row, for update and delete.
    pub previous: Option<&'a Record>,
    /// Work to do only if the write commits (an action's emits): run right after the
    /// commit, dropped if the write is refused or fails.
    pub deferred: &'a mut Vec<BoxFuture<'static, ()>>,
}

async fn run_deferred(deferred: Vec<BoxFuture<'static, ()>>) {
    for work in deferred {
        work.await;
    }
}

/// A plug-in point of the write path (actions are one).
pub trait WriteHook: Send + Sync + 'static {
    /// Runs before the transaction. May change `input` (what it leaves is validated and
    /// written) or return an error to refuse the write: nothing is written then.
    fn before<'a>(
        &'a self,
        _write: BeforeWrite<'a>,
        _input: &'a mut Map<String, Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    /// Runs after commit; cannot undo the write. Failures are the hook's to log.
    fn after<'a>(&'a self, _event: &'a RecordEvent) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Bus capacity: a subscriber further behind than this many events is told it lagged.
const EVENT_BUS_CAPACITY: usize = 65_536;

/// Record service. Cloning is shallow.
#[derive(Clone)]
pub struct Records {
    inner: Arc<Inner>,
}

/// See `Records::downgrade`.
#[derive(Clone)]
pub struct WeakRecords(std::sync::Weak<Inner>);

impl WeakRecords {
    pub fn upgrade(&self) -> Option<Records> {
        self.0.upgrade().map(|inner| Records { inner })
    }
}

struct Inner {
    store: Store,
    schema: Arc<Schema>,
    hooks: Vec<Arc<dyn WriteHook>>,
    events: broadcast::Sender<Arc<RecordEvent>>,
    max_page_size: u32,
}

impl Records {
    pub fn new(
        store: Store,
        schema: Arc<Schema>,
        hooks: Vec<Arc<dyn WriteHook>>,
        max_page_size: u32,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        Records {
            inner: Arc::new(Inner {
                store,
                schema,
                hooks,
                events,
                max_page_size,
            }),
        }
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.inner.schema
    }

    /// A handle that does not keep the write path alive, for hooks that call back into
    /// it (actions' `db` binding): a strong one would be a cycle through the hook list.
    pub fn downgrade(&self) -> WeakRecords {
        WeakRecords(Arc::downgrade(&self.inner))
    }

    /// Every committed change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordEvent>> {
        self.inner.events.subscribe()
    }

    fn object(&self, name: &str) -> Result<&Arc<ObjectSchema>, ApiError> {
        self.inner
            .schema
            .object(name)
            .ok_or_else(|| ApiError::NotFound(format!("no object named `{name}`")))
    }

    /// What `who` may do with `op` on `object` (404 for no such object, 403 if denied):
    /// for callers outside the write path that must refuse as it does.
    pub fn check(&self, who: &Identity, object: &str, op: Operation) -> Result<Access, ApiError> {
        Self::allowed(who, self.object(object)?, op)
    }

    fn allowed(who: &Identity, object: &ObjectSchema, op: Operation) -> Result<Access, ApiError> {
        match access(who, object, op) {
            Access::Denied => Err(ApiError::Forbidden(format!(
                "role `{}` may not {} `{}`",
                who.role,
                op.verb(),
                object.name
            ))),
            granted => Ok(granted),
        }
    }

    pub async fn get(&self, who: &Identity, object: &str, id: i64) -> Result<Record, ApiError> {
        let object = self.object(object)?;
        let scope = Self::allowed(who, object, Operation::Read)?;
        let record = self.fetch_by_id(object, id).await?;
        match record {
            Some(r) if scope.permits_row(r.owner) => Ok(r),
            _ => Err(not_found(object, id)),
        }
    }

    /// `(totalRows, page)` of the rows `who` may read.
    pub async fn list(
        &self,
        who: &Identity,
        object: &str,
        params: &HashMap<String, String>,
    ) -> Result<(i64, Vec<Record>), ApiError> {
        let object = self.object(object)?;
        let scope = Self::allowed(who, object, Operation::Read)?;
        let mut query = query::parse(object, params, self.inner.max_page_size)?;
        self.list_query(object, scope, &mut query).await
    }

    async fn list_query(
        &self,
        object: &ObjectSchema,
        scope: Access,
        query: &mut ListQuery,
    ) -> Result<(i64, Vec<Record>), ApiError> {
        if let Access::Own(me) = scope {
            query.owner = Some(me);
        }
        let store = &self.inner.store;
        let mut count = store.sql();
        statements::count(&mut count, object, query);
        let mut page = store.sql();
        statements::list(&mut page, object, query);
        let (total, rows) = tokio::try_join!(
            store.fetch(&count, &[crate::schema::FieldType::Int]),
            store.fetch_records(&page, object)
        )?;
        let total = total
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok((total, rows))
    }

    async fn fetch_by_id(
        &self,
        object: &ObjectSchema,
        id: i64,
    ) -> Result<Option<Record>, ApiError> {
        let mut sql = self.inner.store.sql();
        statements::select_by_id(&mut sql, object, id, false);
        Ok(self
            .inner
            .store
            .fetch_records(&sql, object)
            .await?
            .into_iter()
            .next())
    }

    pub async fn create(
        &self,
        who: &Identity,
        object: &str,
        input: Value,
    ) -> Result<Record, ApiError> {
        let object = self.object(object)?.clone();
        Self::allowed(who, &object, Operation::Create)?;
        let mut input = into_map(input)?;
        let password = take_password(&object, &mut input)?;
        let schema = &self.inner.schema;
        validate::for_create(schema, &object, &input, who)?;
        let mut deferred = Vec::new();
        for hook in &self.inner.hooks {
            let write = BeforeWrite {
                who,
                object: &object,
                verb: Verb::Created,
                previous: None,
                deferred: &mut deferred,
            };
            hook.before(write, &mut input).await?;
        }
        let values = validate::for_create(schema, &object, &input, who)?;
        let password_hash = match password {
            Some(p) => Some(passwords::hash(p).await?),
            None => None,
        };

        let mut tx = self.inner.store.begin().await?;
        check_references(&mut tx, &object, &values).await?;
        let mut sql = tx.sql();
        statements::insert(&mut sql, &object, who.user_id, values);
        let mut record = tx
            .fetch_records(&sql, &object)
            .await
            .map_err(|e| write_error(e, &object))?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("insert returned no row")))?;
        if object.is_users() {
            // A user owns their own row, so `owner` row security on users means "self".
            let mut sql = tx.sql();
            statements::set_owner(&mut sql, &object, record.id, record.id);
            tx.execute(&sql).await?;
            record.owner = Some(record.id);
            credentials::insert(&mut tx, record.id, password_hash, secrets::new_token()).await?;
        }
        tx.commit().await?;
        run_deferred(deferred).await;
        self.committed(RecordEvent {
            object: object.name.clone(),
            verb: Verb::Created,
            id: record.id,
            record: Some(record.clone()),
            previous: None,
            input: Value::Object(input),
            actor: who.clone(),
        })
        .await;
        Ok(record)
    }

    pub async fn update(
        &self,
        who: &Identity,
        object: &str,
        id: i64,
        input: Value,
    ) -> Result<Record, ApiError> {
        let object = self.object(object)?.clone();
        let scope = Self::allowed(who, &object, Operation::Update)?;
        let mut input = into_map(input)?;
        let previous = self.writable_row(who, &object, scope, id).await?;
        let schema = &self.inner.schema;
        validate::for_update(schema, &object, id, &input, who)?;
        let mut deferred = Vec::new();
        for hook in &self.inner.hooks {
            let write = BeforeWrite {
                who,
                object: &object,
                verb: Verb::Updated,
                previous: Some(&previous),
                deferred: &mut deferred,
            };
            hook.before(write, &mut input).await?;
        }
        let values = validate::for_update(schema, &object, id, &input, who)?;

        let mut tx = self.inner.store.begin().await?;
        let previous = lock_row(&mut tx, &object, id, scope).await?;
        check_references(&mut tx, &object, &values).await?;
        let mut sql = tx.sql();
        let record = if statements::update(&mut sql, &object, id, values) {
            tx.fetch_records(&sql, &object)
                .await
                .map_err(|e| write_error(e, &object))?
                .into_iter()
                .next()
                .ok_or_else(|| not_found(&object, id))?
        } else {
            previous.clone()
        };
        tx.commit().await?;
        run_deferred(deferred).await;
        self.committed(RecordEvent {
            object: object.name.clone(),
            verb: Verb::Updated,
            id,
            record: Some(record.clone()),
            previous: Some(previous),
            input: Value::Object(input),
            actor: who.clone(),
        })
        .await;
        Ok(record)
    }

    pub async fn delete(&self, who: &Identity, object: &str, id: i64) -> Result<Record, ApiError> {
        let object = self.object(object)?.clone();
        let scope = Self::allowed(who, &object, Operation::Delete)?;
        let previous = self.writable_row(who, &object, scope, id).await?;
        let mut input = Map::new();
        let mut deferred = Vec::new();
        for hook in &self.inner.hooks {
            let write = BeforeWrite {
                who,
                object: &object,
                verb: Verb::Deleted,
                previous: Some(&previous),
                deferred: &mut deferred,
            };
            hook.before(write, &mut input).await?;
        }

        let mut tx = self.inner.store.begin().await?;
        let previous = lock_row(&mut tx, &object, id, scope).await?;
        let mut sql = tx.sql();
        statements::delete(&mut sql, &object, id);
        tx.execute(&sql).await?;
        if object.is_users() {
            credentials::delete(&mut tx, id).await?;
        }
        tx.commit().await?;
        run_deferred(deferred).await;
        self.committed(RecordEvent {
            object: object.name.clone(),
            verb: Verb::Deleted,
            id,
            record: None,
            previous: Some(previous.clone()),
            input: Value::Object(input),
            actor: who.clone(),
        })
        .await;
        Ok(previous)
    }

    /// The row an update or delete would change: 404 if `who` cannot even read it
    /// (owner security hides other users' rows), 403 if they can read but not write it.
    async fn writable_row(
        &self,
        who: &Identity,
        object: &ObjectSchema,
        scope: Access,
        id: i64,
    ) -> Result<Record, ApiError> {
        let row = self
            .fetch_by_id(object, id)
            .await?
            .ok_or_else(|| not_found(object, id))?;
        if scope.permits_row(row.owner) {
            return Ok(row);
        }
        if access(who, object, Operation::Read).permits_row(row.owner) {
            Err(ApiError::Forbidden(format!(
                "only the user who created this `{}` row may change it",
                object.name
            )))
        } else {
            Err(not_found(object, id))
        }
    }

    /// After commit: after hooks in order, then the event for every subscriber.
    async fn committed(&self, event: RecordEvent) {
        metrics::counter!("livebase_record_writes_total", "object" => event.object.clone(), "verb" => verb_label(event.verb)).increment(1);
        for hook in &self.inner.hooks {
            hook.after(&event).await;
        }
        // An error only means nobody is subscribed right now.
        let _ = self.inner.events.send(Arc::new(event));
    }
}

fn verb_label(verb: Verb) -> &'static str {
    match verb {
        Verb::Created => "created",
        Verb::Updated => "updated",
        Verb::Deleted => "deleted",
    }
}

fn not_found(object: &ObjectSchema, id: i64) -> ApiError {
    ApiError::NotFound(format!("no `{}` row with id {id}", object.name))
}

fn into_map(input: Value) -> Result<Map<String, Value>, ApiError> {
    match input {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::bad("the body must be a JSON object")),
    }
}

/// A new user's password travels in the body but is never a column.
fn take_password(
    object: &ObjectSchema,
    input: &mut Map<String, Value>,
) -> Result<Option<String>, ApiError> {
    if !object.is_users() {
        return Ok(None);
    }
    match input.remove("password") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) => {
            passwords::check_strength(&p).map_err(ApiError::BadRequest)?;
            Ok(Some(p))
        }
        Some(_) => Err(ApiError::bad("field `password` expects a string")),
    }
}

/// Re-reads the row inside the transaction (locked on PostgreSQL; SQLite's single writer
/// already excludes other writes) and re-checks row ownership against it.
async fn lock_row(
    tx: &mut Tx,
    object: &ObjectSchema,
    id: i64,
    scope: Access,
) -> Result<Record, ApiError> {
    let mut sql = tx.sql();
    statements::select_by_id(&mut sql, object, id, true);
    match tx.fetch_records(&sql, object).await?.into_iter().next() {
        Some(row) if scope.permits_row(row.owner) => Ok(row),
        _ => Err(not_found(object, id)),
    }
}

async fn check_references(
    tx: &mut Tx,
    object: &ObjectSchema,
    values: &[(String, SqlValue)],
) -> Result<(), ApiError> {
    for (name, value) in values {
        let (Some(field), SqlValue::Int(id)) = (object.field(name), value) else {
            continue;
        };
        let Some(target) = field.ty.referenced_object() else {
            continue;
        };
        let mut sql = tx.sql();
        statements::exists(&mut sql, target, *id);
        if tx
            .fetch(&sql, &[crate::schema::FieldType::Int])
            .await?
            .is_empty()
        {
            return Err(ApiError::bad(format!(
                "field `{name}`: there is no `{target}` row with id {id}"
            )));
        }
    }
    Ok(())
}

fn write_error(e: sqlx::Error, object: &ObjectSchema) -> ApiError {
    match unique_violation_field(&e, object) {
        Some(field) => ApiError::Conflict(format!(
            "field `{field}` must be unique: another `{}` row already has this value",
            object.name
        )),
        None => e.into(),
    }
}
