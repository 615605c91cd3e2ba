//! The write path and record reads.
//!
//! Every create, update and delete, from any source, is one `Write` through
//! `Records::write`: permission → prepare → validate → before hooks → validate again
//! (hooks may change the input) → one transaction (the row, then each hook's part) →
//! commit → deferred work → after hooks → one `RecordEvent`, numbered at commit, on the
//! bus. Users and actions plug in as `WriteHook`s; realtime subscribes to the bus.
//! `Records::write_all` runs the same steps for several writes sharing one transaction
//! (`POST /1/bulk`). Nothing else writes rows. `wire` is the JSON form of a row and of
//! a page.

mod log;
pub mod query;
mod validate;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::auth::{Access, Identity, access};
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

impl Verb {
    /// The permission a write of this kind needs.
    pub fn operation(self) -> Operation {
        match self {
            Verb::Created => Operation::Create,
            Verb::Updated => Operation::Update,
            Verb::Deleted => Operation::Delete,
        }
    }
}

/// One write asked of the write path: `id` names the row for update and delete;
/// `input` is ignored for a delete.
#[derive(Debug, Clone)]
pub struct Write {
    pub verb: Verb,
    pub object: String,
    pub id: Option<i64>,
    pub input: Value,
}

impl Write {
    pub fn create(object: &str, input: Value) -> Self {
        Write {
            verb: Verb::Created,
            object: object.to_string(),
            id: None,
            input,
        }
    }

    pub fn update(object: &str, id: i64, input: Value) -> Self {
        Write {
            verb: Verb::Updated,
            object: object.to_string(),
            id: Some(id),
            input,
        }
    }

    pub fn delete(object: &str, id: i64) -> Self {
        Write {
            verb: Verb::Deleted,
            object: object.to_string(),
            id: Some(id),
            input: Value::Null,
        }
    }
}

/// Which step of `Records::write_all` failed (`None`: the transaction as a whole, at
/// its start or commit), and why.
#[derive(Debug)]
pub struct StepError {
    pub step: Option<usize>,
    pub error: ApiError,
}

/// A write between its before hooks and its commit: what the transaction needs, and
/// what the steps after the commit need.
struct Staging {
    verb: Verb,
    object: Arc<ObjectSchema>,
    scope: Access,
    id: Option<i64>,
    input: Map<String, Value>,
    /// The row as staging read it, which hooks see as `previous`.
    previous: Option<Record>,
    staged: Staged,
    /// The columns to write, taken by `apply`.
    values: Vec<(String, SqlValue)>,
    /// The row as the transaction found it: the event's `previous`.
    locked: Option<Record>,
}

/// One committed change. Shared (`Arc`) by every subscriber; never mutated.
#[derive(Debug, Clone)]
pub struct RecordEvent {
    /// Its number in the event log (`store::events`), given in the writing transaction:
    /// increasing by one per committed change, in commit order, across every node.
    pub seq: u64,
    /// Empty for an entry that is no change but what a change's after actions emitted
    /// (`emits_only`): then only `seq`, `actor`, `emits`, `bytes` and `id` (the number
    /// of that change) mean anything.
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
    /// What the write's before actions emitted, logged with it (`{kind, event, target,
    /// data, action}` each): delivered with the event, never otherwise.
    pub emits: Arc<Vec<Value>>,
    /// After hooks that must run at least once were still owed when it was logged.
    pub after_pending: bool,
    /// The size of its logged body: what keeping it in memory costs, roughly.
    pub bytes: usize,
}

impl RecordEvent {
    /// An entry holding what the after actions of change `of` (0: none owed) emitted
    /// (`{kind, event, target, data, action}` each) on behalf of `actor`, numbered 0
    /// until the log numbers it.
    fn emits_only(of: u64, actor: &Identity, emits: Vec<Value>) -> Self {
        RecordEvent {
            seq: 0,
            object: String::new(),
            verb: Verb::Updated,
            id: of as i64,
            record: None,
            previous: None,
            input: Value::Object(Map::new()),
            actor: actor.clone(),
            emits: Arc::new(emits),
            after_pending: false,
            bytes: 0,
        }
    }

    /// Whether it is no change, only after actions' emits.
    pub fn is_emits_only(&self) -> bool {
        self.object.is_empty()
    }

    /// The creator of the row, for row-security routing.
    pub fn owner(&self) -> Option<i64> {
        self.record
            .as_ref()
            .or(self.previous.as_ref())
            .and_then(|r| r.owner)
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a hook knows about a write in progress.
pub struct Change<'a> {
    /// The write path itself, for hooks that read or write through it (actions' `db`).
    pub records: &'a Records,
    pub who: &'a Identity,
    pub object: &'a ObjectSchema,
    pub verb: Verb,
    /// The stored row, for update and delete.
    pub previous: Option<&'a Record>,
}

/// What hooks leave for the later steps of one write: work to run only if it commits
/// (an action's emits), and values of their own, by type (a new user's password hash).
#[derive(Default)]
pub struct Staged {
    deferred: Vec<BoxFuture<'static, ()>>,
    values: axum::http::Extensions,
    emits: Vec<Value>,
}

impl Staged {
    /// Logs an emit with the write's event: it leaves with the event, from the log, only
    /// if the write commits (and after a crash, when the log is read again).
    pub fn log_emit(&mut self, emit: Value) {
        self.emits.push(emit);
    }

    /// Runs right after the commit; dropped if the write is refused or fails.
    pub fn defer(&mut self, work: BoxFuture<'static, ()>) {
        self.deferred.push(work);
    }

    pub fn put<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(value);
    }

    pub fn take<T: Clone + Send + Sync + 'static>(&mut self) -> Option<T> {
        self.values.remove::<T>()
    }
}

/// A plug-in point of the write path (users and actions are two). Each step of a
/// write calls every hook, in order.
pub trait WriteHook: Send + Sync + 'static {
    /// Before the input is validated: takes out what travels with a write but is not a
    /// column (a new user's password).
    fn prepare(
        &self,
        _change: &Change<'_>,
        _input: &mut Map<String, Value>,
        _staged: &mut Staged,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// After validation, before the transaction. May change `input` (what it leaves is
    /// validated again and written) or return an error to refuse the write: nothing is
    /// written then.
    fn before<'a>(
        &'a self,
        _change: &'a Change<'a>,
        _input: &'a mut Map<String, Value>,
        _staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    /// Inside the transaction, once the row is written (or, for a delete, removed):
    /// what must commit with it or not at all. An error rolls the write back.
    fn in_transaction<'a>(
        &'a self,
        _change: &'a Change<'a>,
        _tx: &'a mut Tx,
        _row: &'a mut Record,
        _staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    /// Runs after commit; cannot undo the write. Failures are the hook's to log.
    /// Answers what it emitted (`{kind, event, target, data, action}` each), which the
    /// log keeps as an entry of its own once every after hook of the write ran: then it
    /// is delivered, in the log's order, and replayed like any other event.
    fn after<'a>(
        &'a self,
        _records: &'a Records,
        _event: &'a RecordEvent,
    ) -> BoxFuture<'a, Vec<Value>> {
        Box::pin(async { Vec::new() })
    }

    /// Whether this hook's `after` must run at least once for such a write, even if the
    /// process dies right after the commit: then the event is logged as owing it, the
    /// hook runs after the event is handed to delivery, and a later start (or another
    /// node) runs it for events a dead node left owed. Hooks that answer `false` run
    /// before the event is delivered, and not again after a crash.
    fn owes_after(&self, _object: &str, _verb: Verb) -> bool {
        false
    }
}

/// Bus capacity: a subscriber further behind than this many events is told it lagged.
const EVENT_BUS_CAPACITY: usize = 65_536;

/// Record service. Cloning is shallow.
#[derive(Clone)]
pub struct Records {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    schema: Arc<Schema>,
    hooks: Vec<Arc<dyn WriteHook>>,
    events: broadcast::Sender<Arc<RecordEvent>>,
    /// This process's name in the log: the node that owes an event's after hooks.
    node: Arc<str>,
    /// Other nodes follow the log: each commit that logs events tells them (`NOTIFY`).
    announce: bool,
    max_page_size: u32,
}

impl Records {
    /// `several`: other nodes follow the same log (a cluster), so commits announce it.
    pub fn new(
        store: Store,
        schema: Arc<Schema>,
        hooks: Vec<Arc<dyn WriteHook>>,
        max_page_size: u32,
        node: &str,
        several: bool,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        Records {
            inner: Arc::new(Inner {
                store,
                schema,
                hooks,
                events,
                node: node.into(),
                announce: several,
                max_page_size,
            }),
        }
    }

    /// Up to `limit` logged events after `after`, in order, as they were committed
    /// (events this version cannot read are skipped).
    pub async fn logged_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Arc<RecordEvent>>, ApiError> {
        let logged = self.inner.store.events_after(after, limit).await?;
        Ok(logged
            .into_iter()
            .filter_map(|e| {
                let seq = e.seq;
                let event = log::from_logged(e);
                if event.is_none() {
                    tracing::warn!(seq, "an event in the log this version cannot read");
                }
                event.map(Arc::new)
            })
            .collect())
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs the after hooks a node that is gone (not this one, none of `live`) owed,
    /// oldest first, and marks each done: after a crash, what was committed but not yet
    /// followed up runs now (at least once). Answers how many events it took over.
    pub async fn settle_owed_afters(&self, live: &[String]) -> Result<usize, ApiError> {
        let mut total = 0;
        loop {
            let claimed = self
                .inner
                .store
                .claim_pending_afters(&self.inner.node, live, 100)
                .await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            total += claimed.len();
            for logged in claimed {
                let seq = logged.seq;
                let Some(event) = log::from_logged(logged) else {
                    tracing::warn!(seq, "owed after hooks of an event this version cannot read");
                    self.afters_ran(Some(seq), &Identity::guest(), Vec::new())
                        .await?;
                    continue;
                };
                tracing::info!(seq, object = %event.object, "running after hooks a stopped node owed");
                let mut emitted = Vec::new();
                for hook in &self.inner.hooks {
                    if hook.owes_after(&event.object, event.verb) {
                        emitted.extend(hook.after(self, &event).await);
                    }
                }
                self.afters_ran(Some(seq), &event.actor, emitted).await?;
            }
        }
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.inner.schema
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
        let mut page = store.sql();
        statements::list(&mut page, object, query);
        let (total, rows) = store.fetch_records_counted(&page, object).await?;
        let total = match total {
            Some(total) => total,
            // An empty first page matches nothing; past the last page, count apart.
            None if query.page_number <= 1 => 0,
            None => {
                let mut count = store.sql();
                statements::count(&mut count, object, query);
                store
                    .fetch(&count, &[crate::schema::FieldType::Int])
                    .await?
                    .first()
                    .and_then(|r| r.first())
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            }
        };
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
        self.write(who, Write::create(object, input)).await
    }

    pub async fn update(
        &self,
        who: &Identity,
        object: &str,
        id: i64,
        input: Value,
    ) -> Result<Record, ApiError> {
        self.write(who, Write::update(object, id, input)).await
    }

    /// Answers the row as it was.
    pub async fn delete(&self, who: &Identity, object: &str, id: i64) -> Result<Record, ApiError> {
        self.write(who, Write::delete(object, id)).await
    }

    /// The one write path: permission → the row it changes → prepare → validate →
    /// before hooks → validate again → transaction (the row, then hooks) → commit →
    /// deferred work → after hooks → the event. Answers the row as written (as it was,
    /// for a delete).
    pub async fn write(&self, who: &Identity, write: Write) -> Result<Record, ApiError> {
        let mut step = self.stage(who, write).await?;
        let mut tx = self.inner.store.begin().await?;
        let row = self.apply(who, &mut tx, &mut step).await?;
        let mut event = self.event_of(who, &mut step, &row);
        let logged = log::to_new(&event);
        event.bytes = logged.body.len();
        event.seq = tx
            .log_events(&[logged], &self.inner.node, self.inner.announce)
            .await?;
        tx.commit().await?;
        self.finish(step, event).await;
        Ok(row)
    }

    /// Several writes as one: all commit or none does, and their events (numbered in
    /// order, with no other write's between them) leave only after the commit.
    ///
    /// Every step is first staged in order (permission, the row it changes, prepare,
    /// validate, before hooks, validate again) outside any transaction, because before
    /// actions may write through `db`, which opens a transaction of its own: on SQLite's
    /// single writer that would wait forever for the bulk one. So a step's before hooks
    /// see the rows as they were before the bulk, never an earlier step's change. Then
    /// one transaction writes every row with its hooks' part, and after the commit each
    /// step's deferred work, after hooks and event follow, in order. A refused or failed
    /// step rolls all back; nothing deferred runs and no event leaves.
    pub async fn write_all(
        &self,
        who: &Identity,
        writes: Vec<Write>,
    ) -> Result<Vec<Record>, StepError> {
        let at = |step: usize| {
            move |error: ApiError| StepError {
                step: Some(step),
                error,
            }
        };
        let mut steps = Vec::with_capacity(writes.len());
        for (i, write) in writes.into_iter().enumerate() {
            steps.push(self.stage(who, write).await.map_err(at(i))?);
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let whole = |error: ApiError| StepError { step: None, error };
        let mut tx = self
            .inner
            .store
            .begin()
            .await
            .map_err(|e| whole(e.into()))?;
        let mut rows = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter_mut().enumerate() {
            rows.push(self.apply(who, &mut tx, step).await.map_err(at(i))?);
        }
        // Numbered last, once every row is written: from here to the commit this
        // transaction holds the log's counter, and asks for no other lock.
        let mut events: Vec<RecordEvent> = steps
            .iter_mut()
            .zip(&rows)
            .map(|(step, row)| self.event_of(who, step, row))
            .collect();
        let logged: Vec<_> = events.iter().map(log::to_new).collect();
        let first = tx
            .log_events(&logged, &self.inner.node, self.inner.announce)
            .await
            .map_err(|e| whole(e.into()))?;
        for ((event, seq), logged) in events.iter_mut().zip(first..).zip(&logged) {
            event.seq = seq;
            event.bytes = logged.body.len();
        }
        tx.commit().await.map_err(|e| whole(e.into()))?;
        for (step, event) in steps.into_iter().zip(events) {
            self.finish(step, event).await;
        }
        Ok(rows)
    }

    /// Everything of a write that comes before its transaction: permission, the row it
    /// changes, prepare, validate, before hooks, validate again.
    async fn stage(&self, who: &Identity, write: Write) -> Result<Staging, ApiError> {
        let Write {
            verb,
            object,
            id,
            input,
        } = write;
        let object = self.object(&object)?.clone();
        let scope = Self::allowed(who, &object, verb.operation())?;
        let (mut input, id) = match (verb, id) {
            (Verb::Created, _) => (into_map(input)?, None),
            (Verb::Updated, Some(id)) => (into_map(input)?, Some(id)),
            (Verb::Deleted, Some(id)) => (Map::new(), Some(id)),
            (_, None) => return Err(ApiError::bad("an update or delete names its row")),
        };
        let previous = match id {
            Some(id) => Some(self.writable_row(who, &object, scope, id).await?),
            None => None,
        };
        let hooks = &self.inner.hooks;
        let change = Change {
            records: self,
            who,
            object: &object,
            verb,
            previous: previous.as_ref(),
        };
        let mut staged = Staged::default();
        for hook in hooks {
            hook.prepare(&change, &mut input, &mut staged)?;
        }
        self.validate(&change, id, &input)?;
        for hook in hooks {
            hook.before(&change, &mut input, &mut staged).await?;
        }
        let values = self.validate(&change, id, &input)?;
        Ok(Staging {
            verb,
            object,
            scope,
            id,
            input,
            previous,
            staged,
            values,
            locked: None,
        })
    }

    /// A staged write's part of the transaction: the row (re-read and re-checked for an
    /// update or delete), then each hook's part. Answers the row as written.
    async fn apply(
        &self,
        who: &Identity,
        tx: &mut Tx,
        step: &mut Staging,
    ) -> Result<Record, ApiError> {
        let object = &step.object;
        let values = std::mem::take(&mut step.values);
        let mut row = match step.id {
            None => insert(tx, object, who, values).await?,
            Some(id) => {
                let locked = lock_row(tx, object, id, step.scope).await?;
                let row = if step.verb == Verb::Deleted {
                    let mut sql = tx.sql();
                    statements::delete(&mut sql, object, id);
                    tx.execute(&sql).await?;
                    locked.clone()
                } else {
                    update(tx, object, id, values, &locked).await?
                };
                step.locked = Some(locked);
                row
            }
        };
        let change = Change {
            records: self,
            who,
            object,
            verb: step.verb,
            previous: step.previous.as_ref(),
        };
        for hook in &self.inner.hooks {
            hook.in_transaction(&change, tx, &mut row, &mut step.staged)
                .await?;
        }
        Ok(row)
    }

    /// A written step's event, numbered 0 until the log numbers it.
    fn event_of(&self, who: &Identity, step: &mut Staging, row: &Record) -> RecordEvent {
        let name = &step.object.name;
        RecordEvent {
            seq: 0,
            object: name.clone(),
            verb: step.verb,
            id: row.id,
            record: (step.verb != Verb::Deleted).then(|| row.clone()),
            previous: step.locked.take(),
            input: Value::Object(std::mem::take(&mut step.input)),
            actor: who.clone(),
            emits: Arc::new(std::mem::take(&mut step.staged.emits)),
            after_pending: self
                .inner
                .hooks
                .iter()
                .any(|h| h.owes_after(name, step.verb)),
            bytes: 0,
        }
    }

    /// After a write's commit: its deferred work, then the hooks and the event.
    async fn finish(&self, step: Staging, event: RecordEvent) {
        for work in step.staged.deferred {
            work.await;
        }
        self.committed(event).await;
    }

    /// The columns a create or update writes; nothing for a delete.
    fn validate(
        &self,
        change: &Change<'_>,
        id: Option<i64>,
        input: &Map<String, Value>,
    ) -> Result<Vec<(String, SqlValue)>, ApiError> {
        let schema = &self.inner.schema;
        match (change.verb, id) {
            (Verb::Created, _) => validate::for_create(schema, change.object, input, change.who),
            (Verb::Updated, Some(id)) => {
                validate::for_update(schema, change.object, id, input, change.who)
            }
            _ => Ok(Vec::new()),
        }
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

    /// After commit: the after hooks nothing owes (a changed identity's revocation)
    /// first, then the event for every subscriber, then the owed ones, marked done in
    /// the log once they ran.
    async fn committed(&self, event: RecordEvent) {
        metrics::counter!("livebase_record_writes_total", "object" => event.object.clone(), "verb" => log::verb_label(event.verb)).increment(1);
        let hooks = &self.inner.hooks;
        let event = Arc::new(event);
        let owed = |h: &Arc<dyn WriteHook>| h.owes_after(&event.object, event.verb);
        let mut emitted = Vec::new();
        for hook in hooks.iter().filter(|h| !owed(h)) {
            emitted.extend(hook.after(self, &event).await);
        }
        // An error only means nobody is subscribed right now.
        let _ = self.inner.events.send(event.clone());
        if event.after_pending {
            for hook in hooks.iter().filter(|h| owed(h)) {
                emitted.extend(hook.after(self, &event).await);
            }
        }
        let owed_seq = event.after_pending.then_some(event.seq);
        if let Err(e) = self.afters_ran(owed_seq, &event.actor, emitted).await {
            // Run again (and emitted again) by the next start, or another node, once this
            // one is gone.
            tracing::warn!(seq = event.seq, error = %e, "marking after hooks done");
        }
    }

    /// A change's after hooks ran: what they emitted is logged as an entry of its own
    /// and handed to delivery, and the change `owed` (if its hooks were owed) is marked
    /// done, in one statement. A crash before it runs them again, emits and all; after
    /// it, never again.
    async fn afters_ran(
        &self,
        owed: Option<u64>,
        actor: &Identity,
        emitted: Vec<Value>,
    ) -> Result<(), ApiError> {
        let store = &self.inner.store;
        if emitted.is_empty() {
            if let Some(seq) = owed {
                store.after_done(seq).await?;
            }
            return Ok(());
        }
        let mut event = RecordEvent::emits_only(owed.unwrap_or(0), actor, emitted);
        let logged = log::to_new(&event);
        event.bytes = logged.body.len();
        event.seq = store
            .log_emitted(&logged, &self.inner.node, self.inner.announce)
            .await?;
        let _ = self.inner.events.send(Arc::new(event));
        Ok(())
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

async fn insert(
    tx: &mut Tx,
    object: &ObjectSchema,
    who: &Identity,
    values: Vec<(String, SqlValue)>,
) -> Result<Record, ApiError> {
    check_references(tx, object, &values).await?;
    let mut sql = tx.sql();
    statements::insert(&mut sql, object, who.user_id, values);
    tx.fetch_records(&sql, object)
        .await
        .map_err(|e| write_error(e, object))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("insert returned no row")))
}

/// `previous` is answered when nothing changes.
async fn update(
    tx: &mut Tx,
    object: &ObjectSchema,
    id: i64,
    values: Vec<(String, SqlValue)>,
    previous: &Record,
) -> Result<Record, ApiError> {
    check_references(tx, object, &values).await?;
    let mut sql = tx.sql();
    if !statements::update(&mut sql, object, id, values) {
        return Ok(previous.clone());
    }
    tx.fetch_records(&sql, object)
        .await
        .map_err(|e| write_error(e, object))?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(object, id))
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
