//! The catalog: every action in memory, re-read from `lb_actions` after each change,
//! with its bytecode compiled once per version; and uploading, replacing and removing
//! actions, each compiled first so the catalog only ever holds code that compiles.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::store::{self, Action, Trigger};
use super::versions::{self, Source};
use super::{Actions, sandbox};
use crate::error::ApiError;
use crate::schema::Schema;
use crate::store::bus::Note;

pub(super) struct Registry {
    /// Every action, sorted by (object, trigger, name): triggers run in name order.
    actions: RwLock<Vec<Arc<Action>>>,
    /// Bytecode per (action id, version): compiled once, reused by every invocation.
    bytecode: moka::future::Cache<(i64, i64), Arc<Vec<u8>>>,
    /// Serialises `reload`.
    reloading: tokio::sync::Mutex<()>,
    /// The files of the actions directory stored so far, by (object, trigger, name),
    /// with a hash of their code: an action whose code is still its file's names that
    /// file when it fails. One entry per file the directory ever held.
    files: RwLock<HashMap<FileKey, (PathBuf, u64)>>,
}

type FileKey = (String, &'static str, String);

impl Registry {
    pub(super) fn new() -> Registry {
        Registry {
            actions: RwLock::new(Vec::new()),
            bytecode: moka::future::Cache::builder().max_capacity(10_000).build(),
            reloading: tokio::sync::Mutex::new(()),
            files: RwLock::new(HashMap::new()),
        }
    }
}

/// What `/1/action/config` uploads.
pub struct Upload {
    pub name: String,
    pub object: String,
    pub trigger: Trigger,
    pub code: String,
    /// `Upload`, or `Push` for `livebase actions push`.
    pub source: Source,
}

impl Actions {
    /// Stores the files of the actions directory (refusing to start on one that does
    /// not compile), then reads the catalog.
    pub(super) async fn load(&self, dir: &Path, schema: &Schema) -> anyhow::Result<()> {
        store::create_table(&self.inner.store).await?;
        versions::create_table(&self.inner.store).await?;
        for file in store::read_dir(dir, Some(schema))? {
            self.compile(&file.name, &file.code)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", file.path.display(), e.describe()))?;
            store::upsert(&self.inner.store, &file).await?;
            self.stored_from(&file);
        }
        self.changed().await
    }

    /// Remembers that `file`'s code is now its action's.
    pub(super) fn stored_from(&self, file: &store::ActionFile) {
        let key = (
            file.object.clone(),
            file.trigger.as_str(),
            file.name.clone(),
        );
        if let Ok(mut files) = self.inner.registry.files.write() {
            files.insert(key, (file.path.clone(), code_hash(&file.code)));
        }
    }

    /// Re-reads the registry from the database. Serialised, so two changes at once
    /// cannot leave the older list in place.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let registry = &self.inner.registry;
        let _one_at_a_time = registry.reloading.lock().await;
        let mut all = store::list(&self.inner.store).await?;
        if let Ok(files) = registry.files.read() {
            for action in &mut all {
                let key = (
                    action.object.clone(),
                    action.trigger.as_str(),
                    action.name.clone(),
                );
                action.file = files
                    .get(&key)
                    .filter(|(_, hash)| *hash == code_hash(&action.code))
                    .map(|(path, _)| path.clone());
            }
        }
        if let Ok(mut actions) = registry.actions.write() {
            *actions = all.into_iter().map(Arc::new).collect();
        }
        Ok(())
    }

    /// Reloads after a change made here, and tells the other nodes to reload too
    /// (`store::bus`), so every node answers with the same version.
    pub(super) async fn changed(&self) -> anyhow::Result<()> {
        self.reload().await?;
        self.inner.store.announce(&Note::Actions).await;
        Ok(())
    }

    /// Another node changed the actions: reload, and drop the logs of those gone.
    pub async fn changed_elsewhere(&self) {
        let before: Vec<i64> = self.all().iter().map(|a| a.id).collect();
        if let Err(e) = self.reload().await {
            tracing::error!(error = %e, "reloading actions another node changed");
            return;
        }
        for id in before {
            if self.by_id(id).is_none() {
                self.inner.logs.forget(id);
            }
        }
    }

    pub async fn compile(&self, name: &str, code: &str) -> Result<Vec<u8>, sandbox::CompileError> {
        self.inner.pool.compile(name, code).await
    }

    /// The actions of `object` for `trigger`, in the order they run.
    pub(super) fn find(&self, object: &str, trigger: Trigger) -> Vec<Arc<Action>> {
        self.inner
            .registry
            .actions
            .read()
            .map(|r| {
                r.iter()
                    .filter(|a| a.object == object && a.trigger == trigger)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `object` has an on-demand action `name` (an app's own `files` action
    /// takes that name from the built-in one).
    pub fn has_on_demand(&self, object: &str, name: &str) -> bool {
        self.on_demand(object, name).is_some()
    }

    pub(super) fn on_demand(&self, object: &str, name: &str) -> Option<Arc<Action>> {
        self.find(object, Trigger::OnDemand)
            .into_iter()
            .find(|a| a.name == name)
    }

    /// The action's bytecode, compiled on its version's first call.
    pub(super) async fn bytecode(&self, action: &Action) -> Result<Arc<Vec<u8>>, ApiError> {
        let key = (action.id, action.version);
        let cache = &self.inner.registry.bytecode;
        if let Some(code) = cache.get(&key).await {
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
        cache.insert(key, code.clone()).await;
        Ok(code)
    }

    /// Every action, as stored.
    pub fn all(&self) -> Vec<Arc<Action>> {
        self.inner
            .registry
            .actions
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn by_id(&self, id: i64) -> Option<Arc<Action>> {
        self.all().into_iter().find(|a| a.id == id)
    }

    /// `by_id`, or the 404 every action route answers.
    pub fn get(&self, id: i64) -> Result<Arc<Action>, ApiError> {
        self.by_id(id).ok_or_else(|| not_found(id))
    }

    /// Compiles, then stores a new action. Requests running meanwhile keep the
    /// registry snapshot they started with.
    pub async fn upload(&self, upload: Upload) -> Result<Arc<Action>, ApiError> {
        self.compile(&upload.name, &upload.code)
            .await
            .map_err(compile_or_refuse)?;
        let id = store::insert(
            &self.inner.store,
            &upload.object,
            upload.trigger,
            &upload.name,
            &upload.code,
            upload.source,
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
        self.changed().await.map_err(ApiError::Internal)?;
        self.by_id(id)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("uploaded action vanished")))
    }

    /// Compiles, then stores new code for an action as its next version; when
    /// `expected` is given, only if the action is still at that version (two operators
    /// saving over each other: the second is refused, 409, and nothing changes).
    pub async fn replace(
        &self,
        id: i64,
        code: &str,
        source: Source,
        expected: Option<i64>,
    ) -> Result<Arc<Action>, ApiError> {
        let current = self.get(id)?;
        self.compile(&current.name, code)
            .await
            .map_err(compile_or_refuse)?;
        match store::replace_code(&self.inner.store, id, code, source, expected).await? {
            store::Replaced::Saved(_) => {}
            store::Replaced::Missing => return Err(not_found(id)),
            store::Replaced::Stale(now) => {
                return Err(ApiError::Conflict(format!(
                    "action {}/{}/{} is at version {now} now, not {}: reload it before saving",
                    current.object,
                    current.trigger.as_str(),
                    current.name,
                    expected.unwrap_or_default()
                )));
            }
        }
        self.changed().await.map_err(ApiError::Internal)?;
        self.by_id(id)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("replaced action vanished")))
    }

    /// Saves the code of a kept earlier `version` as the action's next version, through
    /// `replace` (compiled again: the engine may have changed since).
    pub async fn roll_back(&self, id: i64, version: i64) -> Result<Arc<Action>, ApiError> {
        self.get(id)?;
        let kept = versions::get(&self.inner.store, id, version)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("action {id} has no kept version {version}"))
            })?;
        self.replace(id, &kept.code, Source::Rollback, None).await
    }

    /// `(how many versions are kept, one page of them newest first)`.
    pub async fn versions(
        &self,
        id: i64,
        page_size: i64,
        page: i64,
    ) -> Result<(i64, Vec<versions::Version>), ApiError> {
        self.get(id)?;
        Ok(versions::list(&self.inner.store, id, page_size, page).await?)
    }

    /// Deletes an action and its log.
    pub async fn remove(&self, id: i64) -> Result<(), ApiError> {
        if !store::delete(&self.inner.store, id).await? {
            return Err(not_found(id));
        }
        self.inner.logs.forget(id);
        self.changed().await.map_err(ApiError::Internal)?;
        Ok(())
    }
}

fn code_hash(code: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    code.hash(&mut hasher);
    hasher.finish()
}

fn compile_or_refuse(error: sandbox::CompileError) -> ApiError {
    ApiError::Located {
        message: format!("the action does not compile: {}", error.describe()),
        line: error.line,
        column: error.column,
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("no action with id {id}"))
}
