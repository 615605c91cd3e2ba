//! This process as one of several nodes on one PostgreSQL database: a random id, and a
//! row in `lb_nodes` refreshed every second, so a starting node can tell whether others
//! are running (`others_live`). Rows not refreshed for a minute (a node that was killed)
//! are deleted by whichever node beats next. SQLite is one node's file: the id alone,
//! no row and no task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Dialect, Sql, Store, Tx};
use crate::schema::FieldType;
use crate::schema::value::SqlValue;

/// How often a node refreshes its row.
const BEAT: Duration = Duration::from_secs(1);
/// A node whose row was refreshed this recently is running.
const LIVE: Duration = Duration::from_secs(5);
/// A row older than this is a node that ended without saying so.
const FORGOTTEN: Duration = Duration::from_secs(60);

/// This process among the nodes sharing the database.
pub struct Node {
    /// Random per start: a restarted node is a new node.
    pub id: String,
    /// Where it serves, as other nodes and operators see it in `lb_nodes`: the configured
    /// address until the listener is bound.
    listen: Mutex<String>,
}

impl Node {
    pub fn new(listen: &str) -> Arc<Node> {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        Arc::new(Node {
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            listen: Mutex::new(listen.to_string()),
        })
    }

    /// The address the listener was bound to (a configured port 0 becomes a real one).
    pub fn listening(&self, addr: &str) {
        *self.listen.lock().unwrap() = addr.to_string();
    }

    /// Writes (or refreshes) this node's row in `tx`: done in the transaction that
    /// settles the shared secrets under the start lock, so the next start sees this
    /// node live before it compares its flags.
    pub async fn join(&self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        if tx.dialect() != Dialect::Postgres {
            return Ok(());
        }
        let mut sql = tx.sql();
        self.push_upsert(&mut sql);
        tx.execute(&sql).await.map(|_| ())
    }

    fn push_upsert(&self, sql: &mut Sql) {
        let listen = self.listen.lock().unwrap().clone();
        sql.push("INSERT INTO lb_nodes (node_id, started, seen, listen) VALUES (")
            .bind(SqlValue::Text(self.id.clone()))
            .push(", now(), now(), ")
            .bind(SqlValue::Text(listen))
            .push(") ON CONFLICT (node_id) DO UPDATE SET seen = now(), listen = EXCLUDED.listen");
    }

    /// Keeps the row fresh until `Heartbeat::stop` (which removes it) or until the
    /// heartbeat is dropped (the row then ages out). Nothing on SQLite.
    pub fn beat(self: &Arc<Self>, store: &Store) -> Heartbeat {
        if store.dialect() != Dialect::Postgres {
            return Heartbeat(None);
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(self.clone(), store.clone(), stopped));
        Heartbeat(Some((stop, task)))
    }

    async fn refresh(&self, store: &Store) -> Result<(), sqlx::Error> {
        let mut tx = store.begin().await?;
        let mut sql = tx.sql();
        self.push_upsert(&mut sql);
        tx.execute(&sql).await?;
        let mut sql = tx.sql();
        sql.push("DELETE FROM lb_nodes WHERE seen < now() - ")
            .push(&interval(FORGOTTEN));
        tx.execute(&sql).await?;
        tx.commit().await
    }

    async fn leave(&self, store: &Store) -> Result<(), sqlx::Error> {
        let mut sql = store.sql();
        sql.push("DELETE FROM lb_nodes WHERE node_id = ")
            .bind(SqlValue::Text(self.id.clone()));
        store.execute(&sql).await.map(|_| ())
    }
}

/// Whether a node other than `me` refreshed its row within the last five seconds.
pub async fn others_live(tx: &mut Tx, me: &Node) -> Result<bool, sqlx::Error> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(false);
    }
    let mut sql = tx.sql();
    sql.push("SELECT COUNT(*) FROM lb_nodes WHERE seen > now() - ")
        .push(&interval(LIVE))
        .push(" AND node_id <> ")
        .bind(SqlValue::Text(me.id.clone()));
    let rows = tx.fetch(&sql, &[FieldType::Int]).await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0) > 0)
}

/// The ids of the nodes that refreshed their row within the last five seconds (none on
/// SQLite, one node's file).
pub async fn live_ids(store: &Store) -> Result<Vec<String>, sqlx::Error> {
    if store.dialect() != Dialect::Postgres {
        return Ok(Vec::new());
    }
    let mut sql = store.sql();
    sql.push("SELECT node_id FROM lb_nodes WHERE seen > now() - ")
        .push(&interval(LIVE));
    let rows = store.fetch(&sql, &[FieldType::Text]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next()?.as_str().map(str::to_string))
        .collect())
}

/// `(node id, address, manifest)` of each live node but `me` that recorded one.
pub async fn others_manifests(
    tx: &mut Tx,
    me: &Node,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("SELECT node_id, COALESCE(listen, ''), manifest FROM lb_nodes WHERE seen > now() - ")
        .push(&interval(LIVE))
        .push(" AND manifest IS NOT NULL AND node_id <> ")
        .bind(SqlValue::Text(me.id.clone()))
        .push(" ORDER BY started");
    let rows = tx
        .fetch(
            &sql,
            &[FieldType::String, FieldType::String, FieldType::Text],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r[0].as_str()?.to_string(),
                r[1].as_str()?.to_string(),
                r[2].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The nodes sharing the database, oldest first, as `GET /1/admin/nodes` shows them:
/// id, address, when it started and last beat, whether it is live, whether it is `me`.
/// SQLite: `me` alone.
pub async fn list(store: &Store, me: &Node) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let here = |live: bool| {
        serde_json::json!({
            "node": me.id, "listen": *me.listen.lock().unwrap(), "live": live, "self": true,
        })
    };
    if store.dialect() != Dialect::Postgres {
        return Ok(vec![here(true)]);
    }
    let mut sql = store.sql();
    sql.push(
        "SELECT node_id, COALESCE(listen, ''), CAST(EXTRACT(EPOCH FROM started) AS BIGINT), \
         CAST(EXTRACT(EPOCH FROM seen) AS BIGINT), seen > now() - ",
    )
    .push(&interval(LIVE))
    .push(" FROM lb_nodes ORDER BY started, node_id");
    let rows = store
        .fetch(
            &sql,
            &[
                FieldType::String,
                FieldType::String,
                FieldType::Int,
                FieldType::Int,
                FieldType::Bool,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "node": r[0], "listen": r[1], "startedAt": r[2], "seenAt": r[3],
                "live": r[4], "self": r[0].as_str() == Some(me.id.as_str()),
            })
        })
        .collect())
}

fn interval(d: Duration) -> String {
    format!("interval '{} seconds'", d.as_secs())
}

/// The task refreshing this node's row. Dropped, it stops without removing the row.
pub struct Heartbeat(Option<(oneshot::Sender<()>, JoinHandle<()>)>);

impl Heartbeat {
    /// Ends the task, which removes this node's row as its last step (so no refresh
    /// can put it back afterwards).
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.0.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some((_, task)) = self.0.take() {
            task.abort();
        }
    }
}

async fn run(node: Arc<Node>, store: Store, mut stopped: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        // Said once per outage, not every second.
        match node.refresh(&store).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(node = %node.id, "lb_nodes heartbeat works again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    node = %node.id,
                    "cannot refresh this node's row in lb_nodes (other nodes will see it as stopped): {e}"
                );
            }
            Err(_) => {}
        }
    }
    if let Err(e) = node.leave(&store).await {
        tracing::warn!(node = %node.id, "cannot remove this node's row from lb_nodes: {e}");
    }
}
