//! The `db` binding: `db.get/list/create/update/remove(object, …)` from an action, as
//! the action's caller (the same permission checks as REST; the same filter language).
//! Writes go through the write path, so they fire triggers and events; nested actions
//! run inline on the same pool thread, up to `pool::MAX_DEPTH` deep. `db.query(name,
//! params)` runs a named query, as the caller, with the same role check as REST.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::Identity;
use crate::error::ApiError;
use crate::queries::Queries;
use crate::records::{Records, wire};

/// One `db` call from JavaScript.
#[derive(Debug)]
pub enum DbCall {
    Get(String, i64),
    List(String, Value),
    Create(String, Value),
    Update(String, i64, Value),
    Remove(String, i64),
    Query(String, Value),
}

/// What the sandbox calls; runs on a pool thread and blocks it (never an async thread).
#[derive(Clone)]
pub struct Db {
    records: Records,
    queries: Queries,
    runtime: tokio::runtime::Handle,
    who: Identity,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    pub fn new(
        records: Records,
        queries: Queries,
        runtime: tokio::runtime::Handle,
        who: Identity,
    ) -> Self {
        Db {
            records,
            queries,
            runtime,
            who,
        }
    }

    /// Runs `call`; the error is what the action's `catch` sees: `(status, message)`.
    pub fn run(&self, call: DbCall) -> Result<Value, (u16, String)> {
        let records = &self.records;
        let queries = &self.queries;
        let who = &self.who;
        // Not `Handle::block_on`: a nested action's `db` call happens inside an outer
        // one's, on the same thread, and tokio refuses to block_on within block_on.
        let _runtime = self.runtime.enter();
        let answer = park_on(async move {
            match call {
                DbCall::Get(object, id) => {
                    records.get(who, &object, id).await.map(|r| wire::row(&r))
                }
                DbCall::List(object, query) => {
                    let params = list_params(&query)?;
                    let (total, rows) = records.list(who, &object, &params).await?;
                    Ok(wire::page(total, rows.iter().map(wire::row).collect()))
                }
                DbCall::Create(object, data) => records
                    .create(who, &object, data)
                    .await
                    .map(|r| wire::row(&r)),
                DbCall::Update(object, id, data) => records
                    .update(who, &object, id, data)
                    .await
                    .map(|r| wire::row(&r)),
                DbCall::Remove(object, id) => records
                    .delete(who, &object, id)
                    .await
                    .map(|_| json!({ "id": id })),
                DbCall::Query(name, params) => queries.run(who, &name, &params).await,
            }
        });
        answer.map_err(|e| {
            if let ApiError::Internal(inner) = &e {
                tracing::error!(error = %inner, "db call from an action");
                return (500, "internal error".to_string());
            }
            (e.status().as_u16(), e.to_string())
        })
    }
}

/// Drives `future` on this (pool) thread, parking between polls; the runtime entered
/// by the caller drives its I/O and timers.
fn park_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => return value,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// `{filter, sort, pageSize, pageNumber, search}` as the REST query parameters.
fn list_params(query: &Value) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let mut params = std::collections::HashMap::new();
    let Some(map) = query.as_object() else {
        if query.is_null() {
            return Ok(params);
        }
        return Err(ApiError::bad(
            "db.list(object, query): query is {filter, sort, pageSize, pageNumber, search}",
        ));
    };
    for (key, value) in map {
        if !["filter", "sort", "pageSize", "pageNumber", "search"].contains(&key.as_str()) {
            return Err(ApiError::bad(format!("db.list: unknown query key `{key}`")));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        params.insert(key.clone(), text);
    }
    Ok(params)
}
