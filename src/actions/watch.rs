//! The actions directory, polled while `--watch` is on: a new or changed file becomes
//! its action's next version without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use super::{Actions, Inner, store};
use crate::schema::Schema;

/// How often the actions directory is looked at for changed files.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Polls the actions directory: a new or changed file is compiled and stored as the
/// next version (a file that does not compile is reported and the running version
/// kept). Deleting a file does not delete its action (uploaded actions have no file);
/// use `DELETE /1/action/config/{id}`. Ends when the server does.
pub(super) async fn watch(inner: Weak<Inner>, dir: PathBuf, schema: Schema) {
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    if let Ok(files) = store::read_dir(&dir, Some(&schema)) {
        seen.extend(files.into_iter().map(|f| (f.path, f.code)));
    }
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let actions = Actions { inner };
        if store_changed(&actions, &dir, &schema, &mut seen).await
            && let Err(e) = actions.changed().await
        {
            tracing::error!(error = %e, "reloading actions");
        }
    }
}

/// Compiles and stores each file that differs from what `seen` last held; whether any
/// was stored.
async fn store_changed(
    actions: &Actions,
    dir: &Path,
    schema: &Schema,
    seen: &mut HashMap<PathBuf, String>,
) -> bool {
    let files = match store::read_dir(dir, Some(schema)) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "actions directory");
            return false;
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
                actions.stored_from(&file);
                tracing::info!(file = %file.path.display(), "action reloaded");
                changed = true;
            }
            Err(e) => {
                tracing::error!(file = %file.path.display(), error = %e, "action not stored")
            }
        }
    }
    changed
}
