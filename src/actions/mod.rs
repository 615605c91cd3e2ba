//! Actions: user JavaScript (`function backandCallback(userInput, dbRow, parameters,
//! userProfile)`) run on CRUD triggers and on demand, in QuickJS on its own threads.
//!
//! - `store`   — actions as rows of `lb_actions` (with a version) and the files of
//!   `actions/<object>/<trigger>/<name>.js` loaded into them at start.
//! - `sandbox` — one runtime with its limits; compile and invoke.
//! - `pool`    — the threads the runtimes live on.
//!
//! Loading actions is separate from running them. This module never writes user data
//! itself: triggers are a `WriteHook` of the write path, and emits go through
//! `Realtime`, held until the write commits (or the on-demand action returns).

pub mod db;
pub mod pool;
pub mod push;
pub mod sandbox;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::auth::Identity;
use crate::config::Config;
use crate::error::ApiError;
use crate::realtime::Realtime;
use crate::records::{BoxFuture, Change, RecordEvent, Records, Staged, Verb, WriteHook};
use crate::schema::Schema;
use crate::store::Store;
use sandbox::{Call, Emit, Failure, Limits, Outcome};
pub use store::{ActionRecord, Trigger};

/// Action service. Cloning is shallow.
#[derive(Clone)]
pub struct Actions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    pool: pool::Pool,
    realtime: Realtime,
    app_name: String,
    /// Every action, sorted by (object, trigger, name): triggers run in name order.
    registry: RwLock<Vec<Arc<ActionRecord>>>,
    /// Bytecode per (action id, version): compiled once, reused by every invocation.
    bytecode: moka::future::Cache<(i64, i64), Arc<Vec<u8>>>,
    /// The last `LOG_LINES` lines of each action (console output and failures).
    logs: Mutex<HashMap<i64, VecDeque<Value>>>,
    invocations: AtomicU64,
    runtime: tokio::runtime::Handle,
    reloading: tokio::sync::Mutex<()>,
    /// Actions (id, version) that hit a limit, and until when their calls run on the
    /// pool's penalty lane (see `pool`): one misbehaving action cannot take every thread.
    penalised: Mutex<HashMap<(i64, i64), std::time::Instant>>,
}

/// Lines kept per action.
pub const LOG_LINES: usize = 500;

/// How long an action that hit a limit stays on the pool's penalty lane (renewed by
/// each further limit it hits; a new version starts clean).
pub const PENALTY: Duration = Duration::from_secs(30);

impl Actions {
    /// Starts the runtime pool and loads the actions directory into the database.
    pub async fn start(
        config: &Config,
        store: Store,
        schema: &Schema,
        realtime: Realtime,
        app_name: String,
    ) -> anyhow::Result<Actions> {
        let limits = Limits {
            time: Duration::from_millis(config.action_time_limit_ms),
            memory: config.action_memory_limit_mib * 1024 * 1024,
            stack: config.action_stack_limit_kib * 1024,
        };
        // At least two, even on one core: an action's first runaway call (before the
        // penalty lane takes it) must not stop every other action for its time limit.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let pool = pool::Pool::new(threads, limits)?;
        let actions = Actions {
            inner: Arc::new(Inner {
                store,
                pool,
                realtime,
                app_name,
                registry: RwLock::new(Vec::new()),
                bytecode: moka::future::Cache::builder().max_capacity(10_000).build(),
                logs: Mutex::new(HashMap::new()),
                invocations: AtomicU64::new(0),
                runtime: tokio::runtime::Handle::current(),
                reloading: tokio::sync::Mutex::new(()),
                penalised: Mutex::new(HashMap::new()),
            }),
        };
        store::create_table(&actions.inner.store).await?;
        for file in store::read_dir(&config.actions_dir, Some(schema))? {
            actions
                .compile(&file.name, &file.code)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", file.path.display(), e.describe()))?;
            store::upsert(&actions.inner.store, &file).await?;
        }
        actions.reload().await?;
        if config.watch {
            let weak = Arc::downgrade(&actions.inner);
            let (dir, schema) = (config.actions_dir.clone(), schema.clone());
            tokio::spawn(async move { watch(weak, dir, schema).await });
        }
        Ok(actions)
    }

    /// The `db` binding acts as the caller. Writes livebase makes itself (public signup,
    /// the first Admin) pass every check, but an action they trigger must not inherit
    /// that: its `db` acts as an anonymous caller.
    fn db(&self, records: &Records, who: &Identity) -> Option<db::Db> {
        Some(db::Db::new(
            records.clone(),
            self.inner.runtime.clone(),
            acting_as(who),
        ))
    }

    /// Re-reads the registry from the database. Serialised, so two changes at once
    /// cannot leave the older list in place.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let all = store::list(&self.inner.store).await?;
        if let Ok(mut registry) = self.inner.registry.write() {
            *registry = all.into_iter().map(Arc::new).collect();
        }
        Ok(())
    }

    pub async fn compile(&self, name: &str, code: &str) -> Result<Vec<u8>, sandbox::CompileError> {
        self.inner.pool.compile(name, code).await
    }

    fn find(&self, object: &str, trigger: Trigger) -> Vec<Arc<ActionRecord>> {
        self.inner
            .registry
            .read()
            .map(|r| {
                r.iter()
                    .filter(|a| a.object == object && a.trigger == trigger)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn on_demand(&self, object: &str, name: &str) -> Option<Arc<ActionRecord>> {
        self.find(object, Trigger::OnDemand)
            .into_iter()
            .find(|a| a.name == name)
    }

    async fn bytecode(&self, action: &ActionRecord) -> Result<Arc<Vec<u8>>, ApiError> {
        let key = (action.id, action.version);
        if let Some(code) = self.inner.bytecode.get(&key).await {
            return Ok(code);
        }
        let code = self
            .compile(&action.name, &action.code)
            .await
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "action `{}`: {}",
                    action.name,
                    e.describe()
                ))
            })?;
        let code = Arc::new(code);
        self.inner.bytecode.insert(key, code.clone()).await;
        Ok(code)
    }

    /// `userProfile`: the caller, or for livebase's own writes the anonymous caller, as
    /// for `db` (an action checking `role === 'Admin'` must not grant anything to
    /// whoever holds the sign-up token).
    fn profile(&self, who: &Identity) -> Value {
        let mut profile = acting_as(who).profile();
        profile.insert("app".into(), self.inner.app_name.clone().into());
        Value::Object(profile)
    }

    async fn run(&self, action: &ActionRecord, call: Call) -> Result<Outcome, ApiError> {
        let code = self.bytecode(action).await?;
        let key = (action.id, action.version);
        let outcome = match self.inner.pool.inline(&code, &call) {
            Some(nested) => nested,
            None => {
                let lane = self.lane(key);
                self.inner.pool.invoke_in(lane, code, call).await
            }
        };
        if let Err(Failure::Limit(_)) = &outcome.result {
            self.penalise(key, &action.name);
        }
        let invocation = self.inner.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut lines: Vec<(&str, String)> = outcome
            .logs
            .iter()
            .map(|l| (l.level, l.text.clone()))
            .collect();
        for (level, text) in &lines {
            tracing::info!(action = %action.name, object = %action.object, invocation, level, "{text}");
        }
        if let Err(failure) = &outcome.result {
            tracing::warn!(action = %action.name, object = %action.object, invocation, ?failure, "action failed");
            lines.push(("failure", describe(failure)));
        }
        if !lines.is_empty()
            && let Ok(mut logs) = self.inner.logs.lock()
        {
            let kept = logs.entry(action.id).or_default();
            for (level, text) in lines {
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(json!({
                    "invocation": invocation, "time": time, "level": level, "message": text,
                }));
            }
        }
        Ok(outcome)
    }

    /// The lane an action's next call runs on: the penalty lane while it is penalised.
    fn lane(&self, key: (i64, i64)) -> pool::Lane {
        let Ok(mut penalised) = self.inner.penalised.lock() else {
            return pool::Lane::Main;
        };
        match penalised.get(&key) {
            Some(until) if *until > std::time::Instant::now() => pool::Lane::Penalty,
            Some(_) => {
                penalised.remove(&key);
                pool::Lane::Main
            }
            None => pool::Lane::Main,
        }
    }

    /// An action that hit a limit runs on the penalty lane for `PENALTY` from now.
    fn penalise(&self, key: (i64, i64), name: &str) {
        let Ok(mut penalised) = self.inner.penalised.lock() else {
            return;
        };
        let until = std::time::Instant::now() + PENALTY;
        if penalised.insert(key, until).is_none() {
            tracing::warn!(action = %name, "action hit a limit: its calls run one at a time, at low priority, for {} s", PENALTY.as_secs());
        }
        // Versions replaced or long quiet: forget them.
        let now = std::time::Instant::now();
        penalised.retain(|_, until| *until > now);
    }

    /// Runs the on-demand action `name` of `object` (`general` for functions) and
    /// delivers its emits if it returns without throwing.
    pub async fn call(
        &self,
        records: &Records,
        who: &Identity,
        object: &str,
        name: &str,
        db_row: Value,
        parameters: Value,
        user_input: Value,
    ) -> Result<Value, ApiError> {
        let action = self.on_demand(object, name).ok_or_else(|| {
            ApiError::NotFound(format!("no on-demand action `{name}` on `{object}`"))
        })?;
        let call = Call {
            user_input,
            db_row,
            parameters,
            user_profile: self.profile(who),
            db: self.db(records, who),
        };
        let outcome = self.run(&action, call).await?;
        match outcome.result {
            Ok(value) => {
                deliver(&self.inner.realtime, outcome.emits).await;
                Ok(value)
            }
            Err(failure) => Err(refusal(&action, failure)),
        }
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Thrown { message, status } => match status {
            Some(s) => format!("threw ({s}): {message}"),
            None => format!("threw: {message}"),
        },
        Failure::Limit(m) => format!("stopped: {m}"),
        Failure::Internal(m) => format!("could not run: {m}"),
    }
}

/// How often the actions directory is looked at for changed files.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Polls the actions directory: a new or changed file is compiled and stored as the
/// next version (a file that does not compile is reported and the running version
/// kept). Deleting a file does not delete its action (uploaded actions have no file);
/// use `DELETE /1/action/config/{id}`. Ends when the server does.
async fn watch(inner: std::sync::Weak<Inner>, dir: std::path::PathBuf, schema: Schema) {
    let mut seen: HashMap<std::path::PathBuf, String> = HashMap::new();
    if let Ok(files) = store::read_dir(&dir, Some(&schema)) {
        seen.extend(files.into_iter().map(|f| (f.path, f.code)));
    }
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let actions = Actions { inner };
        let files = match store::read_dir(&dir, Some(&schema)) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e, "actions directory");
                continue;
            }
        };
        let mut changed = false;
        for file in files {
            if seen.get(&file.path) == Some(&file.code) {
                continue;
            }
            seen.insert(file.path.clone(), file.code.clone());
            if let Err(e) = actions.compile(&file.name, &file.code).await {
                tracing::error!(file = %file.path.display(), "action not reloaded: {}", e.describe());
                continue;
            }
            match store::upsert(&actions.inner.store, &file).await {
                Ok(()) => {
                    tracing::info!(file = %file.path.display(), "action reloaded");
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(file = %file.path.display(), error = %e, "action not stored")
                }
            }
        }
        if changed && let Err(e) = actions.reload().await {
            tracing::error!(error = %e, "reloading actions");
        }
    }
}

/// An action's failure as the client sees it.
fn refusal(action: &ActionRecord, failure: Failure) -> ApiError {
    match failure {
        Failure::Thrown { message, status } => match status {
            Some(code) => ApiError::Status(
                axum::http::StatusCode::from_u16(code)
                    .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                message,
            ),
            None => ApiError::BadRequest(message),
        },
        Failure::Limit(message) => ApiError::Status(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            format!("action `{}` stopped: {message}", action.name),
        ),
        Failure::Internal(message) => {
            ApiError::Internal(anyhow::anyhow!("action `{}`: {message}", action.name))
        }
    }
}

/// Sends what an action emitted, now that it may leave.
pub async fn deliver(realtime: &Realtime, emits: Vec<Emit>) {
    for emit in emits {
        match emit {
            Emit::Users { event, data, users } => realtime.emit_users(&event, &data, &users).await,
            Emit::Role { event, data, role } => realtime.emit_role(&event, &data, &role).await,
            Emit::All { event, data } => realtime.emit_all(&event, &data).await,
            Emit::Room { room, event, data } => realtime.broadcast(&room, &event, &data).await,
        }
    }
}

fn row_value(record: Option<&crate::store::Record>) -> Value {
    record.map(crate::records::wire::row).unwrap_or(Value::Null)
}

impl WriteHook for Actions {
    /// Before actions, in name order: each may change `userInput` (what it leaves is
    /// written) or throw to refuse. Their emits wait for the commit.
    fn before<'a>(
        &'a self,
        write: &'a Change<'a>,
        input: &'a mut Map<String, Value>,
        staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let trigger = Trigger::before(write.verb);
            let actions = self.find(&write.object.name, trigger);
            for action in actions {
                let call = Call {
                    user_input: Value::Object(input.clone()),
                    db_row: row_value(write.previous),
                    parameters: json!({}),
                    user_profile: self.profile(write.who),
                    db: self.db(write.records, write.who),
                };
                let outcome = self.run(&action, call).await?;
                match outcome.result {
                    Ok(_) => {
                        match outcome.user_input {
                            Value::Object(changed) => *input = changed,
                            _ => {
                                return Err(ApiError::BadRequest(format!(
                                    "action `{}` left userInput not an object",
                                    action.name
                                )));
                            }
                        }
                        if !outcome.emits.is_empty() {
                            let realtime = self.inner.realtime.clone();
                            staged.defer(Box::pin(async move {
                                deliver(&realtime, outcome.emits).await;
                            }));
                        }
                    }
                    Err(failure) => return Err(refusal(&action, failure)),
                }
            }
            Ok(())
        })
    }

    /// After actions, in name order, after the commit: they cannot undo it; a failure
    /// is logged and its emits dropped.
    fn after<'a>(&'a self, records: &'a Records, event: &'a RecordEvent) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let trigger = Trigger::after(event.verb);
            for action in self.find(&event.object, trigger) {
                let db_row = match event.verb {
                    Verb::Created => row_value(event.record.as_ref()),
                    _ => row_value(event.previous.as_ref()),
                };
                let user_input = event.input.clone();
                let call = Call {
                    user_input,
                    db_row,
                    parameters: json!({}),
                    user_profile: self.profile(&event.actor),
                    db: self.db(records, &event.actor),
                };
                match self.run(&action, call).await {
                    Ok(outcome) if outcome.result.is_ok() => {
                        deliver(&self.inner.realtime, outcome.emits).await;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(action = %action.name, error = %e, "after action"),
                }
            }
        })
    }
}

impl sandbox::CompileError {
    /// `message (line L, column C)`.
    pub fn describe(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{} (line {l}, column {c})", self.message),
            _ => self.message.clone(),
        }
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("no action with id {id}"))
}

/// An action as `/1/action/config` shows it.
pub fn action_json(action: &ActionRecord) -> Value {
    json!({
        "id": action.id,
        "name": action.name,
        "object": action.object,
        "trigger": action.trigger.as_str(),
        "code": action.code,
        "version": action.version,
        "actionType": if action.object == store::GENERAL { "Function" } else { "Action" },
    })
}

/// What `/1/action/config` uploads.
pub struct Upload {
    pub name: String,
    pub object: String,
    pub trigger: Trigger,
    pub code: String,
}

impl Actions {
    /// Every action, as stored.
    pub fn all(&self) -> Vec<Arc<ActionRecord>> {
        self.inner
            .registry
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn by_id(&self, id: i64) -> Option<Arc<ActionRecord>> {
        self.all().into_iter().find(|a| a.id == id)
    }

    /// `by_id`, or the 404 every action route answers.
    pub fn get(&self, id: i64) -> Result<Arc<ActionRecord>, ApiError> {
        self.by_id(id).ok_or_else(|| not_found(id))
    }

    fn compile_or_refuse(error: sandbox::CompileError) -> ApiError {
        ApiError::BadRequest(format!("the action does not compile: {}", error.describe()))
    }

    /// Compiles, then stores a new action. Requests running meanwhile keep the
    /// registry snapshot they started with.
    pub async fn upload(&self, upload: Upload) -> Result<Arc<ActionRecord>, ApiError> {
        self.compile(&upload.name, &upload.code)
            .await
            .map_err(Self::compile_or_refuse)?;
        let id = store::insert(
            &self.inner.store,
            &upload.object,
            upload.trigger,
            &upload.name,
            &upload.code,
        )
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "`{}` already has a {} action named `{}`",
                upload.object,
                upload.trigger.as_str(),
                upload.name
            ))
        })?;
        self.reload().await.map_err(ApiError::Internal)?;
        self.by_id(id)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("uploaded action vanished")))
    }

    /// Compiles, then stores new code for an action as its next version.
    pub async fn replace(&self, id: i64, code: &str) -> Result<Arc<ActionRecord>, ApiError> {
        let current = self.get(id)?;
        self.compile(&current.name, code)
            .await
            .map_err(Self::compile_or_refuse)?;
        if !store::replace_code(&self.inner.store, id, code).await? {
            return Err(not_found(id));
        }
        self.reload().await.map_err(ApiError::Internal)?;
        self.by_id(id)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("replaced action vanished")))
    }

    /// The last lines of an action's log, oldest first (at most `LOG_LINES`).
    pub fn logs(&self, id: i64, last: usize) -> Vec<Value> {
        let Ok(logs) = self.inner.logs.lock() else {
            return Vec::new();
        };
        logs.get(&id)
            .map(|l| {
                l.iter()
                    .skip(l.len().saturating_sub(last))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn remove(&self, id: i64) -> Result<(), ApiError> {
        if !store::delete(&self.inner.store, id).await? {
            return Err(not_found(id));
        }
        if let Ok(mut logs) = self.inner.logs.lock() {
            logs.remove(&id);
        }
        self.reload().await.map_err(ApiError::Internal)?;
        Ok(())
    }
}

/// Who an action acts as for `who`'s write: livebase's own identity passes every check,
/// so actions it triggers act as an anonymous caller instead.
fn acting_as(who: &Identity) -> Identity {
    if *who == Identity::system() {
        Identity::guest()
    } else {
        who.clone()
    }
}
