//! Files of Backand's `files` action: bytes stored under the data directory, one row of
//! `lb_files` per file, and the permission each operation needs (asked of
//! `Records::check`, the one decision): storing needs create on the object, reading
//! needs read, removing needs delete; under owner security a user reads and removes
//! only the files they stored.
//!
//! On disk a file is `<data dir>/files/<object>/<stored name>`, where the stored name is
//! generated (`names`); the caller's filename never becomes a path. A file is written
//! to a temporary name and renamed into place, then its row is inserted: a failure at
//! any step leaves neither a half-written file nor a row without a file. This module
//! speaks no HTTP and never decodes a request; `http::files` does.

pub mod names;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::auth::{Access, Identity};
use crate::error::ApiError;
use crate::records::Records;
use crate::schema::value::{SqlValue, format_datetime};
use crate::schema::{FieldType, Operation};
use crate::store::Store;

/// File service. Cloning is shallow.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

struct Inner {
    /// Asked for every permission, so files follow the object's rules exactly.
    records: Records,
    store: Store,
    /// `<data dir>/files`.
    root: PathBuf,
    /// Largest file stored, in bytes.
    max_bytes: usize,
}

/// One stored file, as `lb_files` has it.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub object: String,
    pub stored_name: String,
    pub filename: String,
    pub owner: Option<i64>,
    pub size: i64,
}

impl Files {
    pub fn new(records: Records, store: Store, root: PathBuf, max_bytes: usize) -> Files {
        Files {
            inner: Arc::new(Inner {
                records,
                store,
                root,
                max_bytes,
            }),
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes
    }

    /// Refuses an upload of `size` decoded bytes before anything is decoded or written.
    pub fn check_size(&self, size: usize) -> Result<(), ApiError> {
        if size > self.inner.max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "the file ({size} bytes) is larger than the limit of {} bytes",
                self.inner.max_bytes
            )));
        }
        Ok(())
    }

    /// Stores `data` as `filename` of `object` for `who`; answers its stored name.
    pub async fn store(
        &self,
        who: &Identity,
        object: &str,
        filename: &str,
        data: &[u8],
    ) -> Result<StoredFile, ApiError> {
        self.inner.records.check(who, object, Operation::Create)?;
        names::check_filename(filename)?;
        self.check_size(data.len())?;
        let stored_name = names::new_stored_name(filename);
        let dir = self.inner.root.join(object);
        let path = dir.join(&stored_name);
        write_new(&dir, &path, data).await?;
        let file = StoredFile {
            object: object.to_string(),
            stored_name,
            filename: filename.to_string(),
            owner: who.user_id,
            size: data.len() as i64,
        };
        if let Err(e) = self.insert(&file).await {
            remove_quietly(&path).await;
            return Err(e.into());
        }
        Ok(file)
    }

    async fn insert(&self, file: &StoredFile) -> Result<u64, sqlx::Error> {
        let store = &self.inner.store;
        let mut sql = store.sql();
        sql.push(
            "INSERT INTO lb_files (stored_name, object, filename, owner, size, content_type, \
             created) VALUES (",
        )
        .bind(SqlValue::Text(file.stored_name.clone()))
        .push(", ")
        .bind(SqlValue::Text(file.object.clone()))
        .push(", ")
        .bind(SqlValue::Text(file.filename.clone()))
        .push(", ")
        .bind(file.owner.map_or(SqlValue::Null, SqlValue::Int))
        .push(", ")
        .bind(SqlValue::Int(file.size))
        .push(", ")
        .bind(SqlValue::Text(
            names::content_type(&file.stored_name).to_string(),
        ))
        .push(", ")
        .bind(SqlValue::Text(format_datetime(&chrono::Utc::now())))
        .push(")");
        store.execute(&sql).await
    }

    /// The file `stored_name` of `object`, opened, if `who` may read it (streamed by
    /// the caller, so serving never holds a whole file). Names not of the generated
    /// form, files of other users under owner security and files whose bytes are gone
    /// are all the same 404.
    pub async fn open(
        &self,
        who: &Identity,
        object: &str,
        stored_name: &str,
    ) -> Result<(StoredFile, tokio::fs::File), ApiError> {
        let missing = || ApiError::NotFound(format!("no file `{stored_name}` on `{object}`"));
        if !names::is_stored_name(stored_name) {
            return Err(missing());
        }
        let scope = self.inner.records.check(who, object, Operation::Read)?;
        let mut sql = self.inner.store.sql();
        select(&mut sql)
            .push(" WHERE object = ")
            .bind(SqlValue::Text(object.to_string()))
            .push(" AND stored_name = ")
            .bind(SqlValue::Text(stored_name.to_string()));
        let file = self
            .fetch(&sql)
            .await?
            .into_iter()
            .find(|f| scope.permits_row(f.owner))
            .ok_or_else(missing)?;
        match tokio::fs::File::open(self.inner.root.join(object).join(stored_name)).await {
            Ok(opened) => Ok((file, opened)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(object, stored_name, "a stored file's bytes are missing");
                Err(missing())
            }
            Err(e) => Err(ApiError::Internal(e.into())),
        }
    }

    /// Removes the files named `filename` on `object` that `who` may delete (every
    /// such file with delete on all rows; only their own under owner security).
    /// Answers how many; none is a 404.
    pub async fn remove(
        &self,
        who: &Identity,
        object: &str,
        filename: &str,
    ) -> Result<usize, ApiError> {
        let scope = self.inner.records.check(who, object, Operation::Delete)?;
        names::check_filename(filename)?;
        let mut sql = self.inner.store.sql();
        select(&mut sql)
            .push(" WHERE object = ")
            .bind(SqlValue::Text(object.to_string()))
            .push(" AND filename = ")
            .bind(SqlValue::Text(filename.to_string()));
        if let Access::Own(me) = scope {
            sql.push(" AND owner = ").bind(SqlValue::Int(me));
        }
        let found = self.fetch(&sql).await?;
        if found.is_empty() {
            return Err(ApiError::NotFound(format!(
                "no file named `{filename}` on `{object}`"
            )));
        }
        // Rows first: once a row is gone the file is unreachable, so a failure to
        // unlink afterwards leaves only unreferenced bytes, never a dangling row.
        let mut tx = self.inner.store.begin().await?;
        for file in &found {
            let mut sql = tx.sql();
            sql.push("DELETE FROM lb_files WHERE stored_name = ")
                .bind(SqlValue::Text(file.stored_name.clone()));
            tx.execute(&sql).await?;
        }
        tx.commit().await?;
        for file in &found {
            remove_quietly(&self.inner.root.join(object).join(&file.stored_name)).await;
        }
        Ok(found.len())
    }

    async fn fetch(&self, sql: &crate::store::Sql) -> Result<Vec<StoredFile>, sqlx::Error> {
        let types = [
            FieldType::Text,
            FieldType::Text,
            FieldType::Text,
            FieldType::Int,
            FieldType::Int,
        ];
        let rows = self.inner.store.fetch(sql, &types).await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredFile {
                stored_name: r[0].as_str().unwrap_or_default().to_string(),
                object: r[1].as_str().unwrap_or_default().to_string(),
                filename: r[2].as_str().unwrap_or_default().to_string(),
                owner: r[3].as_i64(),
                size: r[4].as_i64().unwrap_or(0),
            })
            .collect())
    }
}

fn select(sql: &mut crate::store::Sql) -> &mut crate::store::Sql {
    sql.push("SELECT stored_name, object, filename, owner, size FROM lb_files")
}

/// Writes `data` to a temporary name in `dir` and renames it to `path`, so `path`
/// either does not exist or holds every byte.
async fn write_new(dir: &Path, path: &Path, data: &[u8]) -> Result<(), ApiError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("creating {}: {e}", dir.display())))?;
    let temp = dir.join(format!(".{:032x}.part", rand::random::<u128>()));
    let written = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        file.write_all(data).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&temp, path).await
    }
    .await;
    if let Err(e) = written {
        remove_quietly(&temp).await;
        return Err(ApiError::Internal(anyhow::anyhow!(
            "writing {}: {e}",
            path.display()
        )));
    }
    Ok(())
}

async fn remove_quietly(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove a file"),
    }
}
