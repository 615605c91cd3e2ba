//! The cluster bus: what one node changed that every other node must act on now, not
//! after a cache expires — a revoked identity (its sockets end, its cached auth facts go),
//! a changed user (cached facts go), changed actions (reloaded).
//!
//! It rides on PostgreSQL, not Redis: revocation must work while Redis is away, the
//! offline `livebase admin reset-password` reaches running nodes through the same
//! database, and a listener that lost its connection reads what it missed. Each note is
//! a row of `lb_cluster_events` (sequence, origin, body) written under one advisory lock,
//! so sequence order is commit order, then announced with `NOTIFY`; every node reads the
//! rows after the last one it saw, on each notification and after each reconnect, and
//! skips its own. Rows older than ten minutes are pruned. On SQLite (one node) the bus is
//! silent.
//!
//! A note is written just after the change it announces commits; a node killed between
//! the two leaves the other nodes to notice by their 5 s auth cache (REST), while the
//! user's sockets on them stay until they reconnect (RELIABILITY.md).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{Pools, Store};

/// The `NOTIFY` channel.
const CHANNEL: &str = "livebase_bus";
/// Serialises bus writes (and the table's creation): sequence order is commit order.
const BUS_LOCK_KEY: i64 = 0x6c62_5f62_7573; // "lb_bus"
/// How long notes are kept for a listener that reconnects.
const KEEP: &str = "10 minutes";
/// How often a listener prunes old notes.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What a node tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Note {
    /// The user's identity no longer holds: end their sockets (but the kept session's)
    /// and forget their cached auth facts.
    Revoked {
        user_id: i64,
        username: String,
        kept_session: Option<String>,
    },
    /// The user's row changed: forget their cached auth facts.
    Forget { user_id: i64 },
    /// Actions were uploaded, replaced, rolled back, deleted or changed on disk.
    Actions,
}

/// What a node does with the notes of the others.
pub type Handler = Arc<
    dyn Fn(Note) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

impl Store {
    /// Tells the other nodes (no-op on SQLite). A note that cannot be written is logged
    /// and counted: this node has already acted, the others fall back on their caches.
    pub async fn announce(&self, note: &Note) {
        let Pools::Postgres(pool) = &*self.pools else {
            return;
        };
        if let Err(e) = write(pool, &self.origin, note).await {
            metrics::counter!("livebase_cluster_bus_failures_total").increment(1);
            tracing::error!(error = %e, ?note, "telling the other nodes failed");
        }
    }

    /// Reads the other nodes' notes until the store closes, calling `handler` for each
    /// in order (PostgreSQL only; returns at once on SQLite).
    pub fn listen(&self, handler: Handler) {
        let Pools::Postgres(pool) = &*self.pools else {
            return;
        };
        let (pool, url, origin) = (pool.clone(), self.url.clone(), self.origin.clone());
        // Ends with the store (its pool closed at shutdown).
        let closed = pool.close_event();
        tokio::spawn(async move {
            tokio::select! {
                () = closed => {}
                () = listen(pool.clone(), url, origin, handler) => {}
                () = prune(pool.clone()) => {}
            }
        });
    }
}

/// Creates the bus table (PostgreSQL), under the bus lock so nodes starting together
/// do not race on it.
pub(super) async fn prepare(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BUS_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS lb_cluster_events (seq BIGSERIAL PRIMARY KEY, \
         at TIMESTAMPTZ NOT NULL DEFAULT now(), origin TEXT NOT NULL, body TEXT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn write(pool: &PgPool, origin: &str, note: &Note) -> Result<(), sqlx::Error> {
    let body = serde_json::to_string(note).expect("a note serialises");
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BUS_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO lb_cluster_events (origin, body) VALUES ($1, $2) RETURNING seq",
    )
    .bind(origin)
    .bind(&body)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(seq.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("livebase_cluster_bus_notes_total", "way" => "sent").increment(1);
    Ok(())
}

/// The newest note now: a node acts on what happens after it starts (it loaded
/// everything else itself).
async fn newest(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM lb_cluster_events")
        .fetch_one(pool)
        .await
}

async fn listen(pool: PgPool, url: Arc<str>, origin: Arc<str>, handler: Handler) {
    let mut last = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Err(e) = follow(&pool, &url, &origin, &handler, &mut last).await;
        if pool.is_closed() {
            return;
        }
        // The database is gone (dropped, or its URL no longer valid): nothing to follow.
        if let Some(db) = e.as_database_error()
            && matches!(db.code().as_deref(), Some("3D000" | "28P01" | "28000"))
        {
            tracing::error!(error = %e, "cluster bus: stopped listening");
            return;
        }
        tracing::warn!(error = %e, "cluster bus: listening again shortly");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Listens, catching up from `last` on each notification and each reconnect.
async fn follow(
    pool: &PgPool,
    url: &str,
    origin: &str,
    handler: &Handler,
    last: &mut Option<i64>,
) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    if last.is_none() {
        *last = Some(newest(pool).await?);
    }
    loop {
        // Anything committed while not listening (first start, reconnect) is read too.
        catch_up(pool, origin, handler, last).await?;
        // `Ok(None)`: the connection was lost and is back; the loop catches up.
        listener.try_recv().await?;
    }
}

/// Deletes notes older than `KEEP` every `PRUNE_EVERY`, until the store closes.
async fn prune(pool: PgPool) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let statement =
            format!("DELETE FROM lb_cluster_events WHERE at < now() - interval '{KEEP}'");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "cluster bus: pruning old notes");
        }
    }
}

async fn catch_up(
    pool: &PgPool,
    origin: &str,
    handler: &Handler,
    last: &mut Option<i64>,
) -> Result<(), sqlx::Error> {
    let after = last.unwrap_or(0);
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT seq, origin, body FROM lb_cluster_events WHERE seq > $1 ORDER BY seq",
    )
    .bind(after)
    .fetch_all(pool)
    .await?;
    for (seq, from, body) in rows {
        *last = Some(seq);
        if from == origin {
            continue;
        }
        match serde_json::from_str::<Note>(&body) {
            Ok(note) => {
                metrics::counter!("livebase_cluster_bus_notes_total", "way" => "received")
                    .increment(1);
                handler(note).await;
            }
            // A newer node's note this one does not know: skipped, said once each.
            Err(e) => tracing::warn!(seq, error = %e, "cluster bus: a note this node cannot read"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_keep_their_wire_form() {
        let note = Note::Revoked {
            user_id: 7,
            username: "a@b.c".into(),
            kept_session: None,
        };
        let text = serde_json::to_string(&note).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"revoked","userId":7,"username":"a@b.c","keptSession":null}"#
        );
        assert_eq!(serde_json::from_str::<Note>(&text).unwrap(), note);
        assert_eq!(
            serde_json::to_string(&Note::Actions).unwrap(),
            r#"{"kind":"actions"}"#
        );
    }
}
