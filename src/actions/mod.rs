//! Actions: user JavaScript (`function backandCallback(userInput, dbRow, parameters,
//! userProfile)`) run on CRUD triggers and on demand, in QuickJS on its own threads.
//!
//! This file is the service handle, `Actions`: starting it, running one action (pool,
//! log, penalty) and on-demand calls. The rest, one concern per file:
//! - `store`    — actions as rows of `lb_actions` (with a version) and the files of
//!   `actions/<object>/<trigger>/<name>.js` loaded into them at start.
//! - `registry` — the catalog in memory, its bytecode, and uploading, replacing, rolling
//!   back and removing actions.
//! - `versions` — every saved version of each action (`lb_action_versions`), bounded.
//! - `watch`    — the actions directory, polled for changed files.
//! - `triggers` — before and after actions, as a `WriteHook` of the write path.
//! - `emit`     — what an action emits, sent only once it has succeeded.
//! - `logs`     — the last lines of each action.
//! - `failure`  — an action's failure as the client and the log see it.
//! - `sandbox`  — one runtime with its limits; compile and invoke.
//! - `pool`     — the threads the runtimes live on, and which of them a call takes.
//! - `db`       — the `db` binding: the write path, acting as the caller.
//! - `push`     — `livebase actions push`: uploads a folder to a running server.
//! - `history`  — `livebase actions versions` and `rollback`, against a running server.
//! - `remote`   — the running server as those commands reach it.
//!
//! Loading actions is separate from running them. This module never writes user data
//! itself: triggers are a `WriteHook` of the write path, and emits go through
//! `Realtime`, held until the write commits (or the on-demand action returns).

pub mod db;
mod emit;
mod failure;
pub mod history;
mod logs;
pub mod pool;
pub mod push;
mod registry;
pub mod remote;
pub mod sandbox;
pub mod store;
mod triggers;
pub mod versions;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::auth::Identity;
use crate::config::Config;
use crate::error::ApiError;
use crate::queries::Queries;
use crate::realtime::Realtime;
use crate::records::Records;
use crate::schema::Schema;
use crate::store::Store;
pub use logs::{ALL_LOGS_PAGE, LOG_LINES, LogQuery};
pub use registry::Upload;
use sandbox::{Call, Failure, Limits, Outcome};
pub use sandbox::{Emit, LogLine};
pub use store::{Action, Trigger};
pub use versions::Source;

/// Action service. Cloning is shallow.
#[derive(Clone)]
pub struct Actions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    pool: pool::Pool,
    realtime: Realtime,
    /// For the `db.query` binding.
    queries: Queries,
    app_name: String,
    registry: registry::Registry,
    logs: logs::Logs,
    runtime: tokio::runtime::Handle,
}

/// What an on-demand run did: its answer, what it logged, and what it emitted (sent,
/// and only when it succeeded).
pub struct Report {
    pub result: Result<Value, ApiError>,
    pub logs: Vec<LogLine>,
    pub emits: Vec<Emit>,
}

impl Report {
    /// A run refused or failed before the action could log or emit anything.
    pub fn failed(error: ApiError) -> Report {
        Report {
            result: Err(error),
            logs: Vec::new(),
            emits: Vec::new(),
        }
    }
}

/// An on-demand call: which action, and what it is given.
pub struct OnDemand<'a> {
    /// The object, or `general` for functions.
    pub object: &'a str,
    pub name: &'a str,
    pub db_row: Value,
    pub parameters: Value,
    pub user_input: Value,
}

impl Actions {
    /// Starts the runtime pool and loads the actions directory into the database.
    pub async fn start(
        config: &Config,
        store: Store,
        schema: &Schema,
        realtime: Realtime,
        queries: Queries,
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
                queries,
                app_name,
                registry: registry::Registry::new(),
                logs: logs::Logs::default(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        actions.load(&config.actions_dir, schema).await?;
        if config.watch {
            let weak = Arc::downgrade(&actions.inner);
            let (dir, schema) = (config.actions_dir.clone(), schema.clone());
            tokio::spawn(async move { watch::watch(weak, dir, schema).await });
        }
        Ok(actions)
    }

    /// Runs the on-demand action `name` of `object` and delivers its emits if it
    /// returns without throwing.
    pub async fn call(
        &self,
        records: &Records,
        who: &Identity,
        on_demand: OnDemand<'_>,
    ) -> Result<Value, ApiError> {
        self.call_reported(records, who, on_demand).await?.result
    }

    /// `call`, telling what the run did besides its result: for a person testing an
    /// action. `Err` only when there is no such action.
    pub async fn call_reported(
        &self,
        records: &Records,
        who: &Identity,
        on_demand: OnDemand<'_>,
    ) -> Result<Report, ApiError> {
        let OnDemand {
            object,
            name,
            db_row,
            parameters,
            user_input,
        } = on_demand;
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
        let outcome = match self.run(&action, call).await {
            Ok(outcome) => outcome,
            Err(e) => return Ok(Report::failed(e)),
        };
        Ok(match outcome.result {
            Ok(value) => {
                self.deliver(&outcome.emits, who, &action.name).await;
                Report {
                    result: Ok(value),
                    logs: outcome.logs,
                    emits: outcome.emits,
                }
            }
            Err(failure) => Report {
                result: Err(failure::refusal(&action, failure)),
                logs: outcome.logs,
                emits: Vec::new(),
            },
        })
    }

    /// Runs one action on the pool, keeps its lines, and sends it to the penalty lane
    /// if it hit a limit.
    async fn run(&self, action: &Action, call: Call) -> Result<Outcome, ApiError> {
        let code = match self.bytecode(action).await {
            Ok(code) => code,
            Err(e) => {
                failure::count(&Err(Failure::Internal(String::new())));
                return Err(e);
            }
        };
        let key = (action.id, action.version);
        let outcome = self.inner.pool.invoke(key, code, call).await;
        failure::count(&outcome.result);
        if let Err(Failure::Limit(..)) = &outcome.result {
            self.inner.pool.penalise(key, &action.name);
        }
        self.inner.logs.record(action, &outcome);
        Ok(outcome)
    }

    /// The `db` binding acts as the caller. Writes livebase makes itself (public signup,
    /// the first Admin) pass every check, but an action they trigger must not inherit
    /// that: its `db` acts as an anonymous caller.
    fn db(&self, records: &Records, who: &Identity) -> Option<db::Db> {
        Some(db::Db::new(
            records.clone(),
            self.inner.queries.clone(),
            self.inner.runtime.clone(),
            acting_as(who),
        ))
    }

    /// `userProfile`: the caller, or for livebase's own writes the anonymous caller, as
    /// for `db` (an action checking `role === 'Admin'` must not grant anything to
    /// whoever holds the sign-up token).
    fn profile(&self, who: &Identity) -> Value {
        let mut profile = acting_as(who).profile();
        profile.insert("app".into(), self.inner.app_name.clone().into());
        Value::Object(profile)
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
