//! Who is in which channel, for channel presence (`realtime::presence`): one row per
//! socket in a channel, with the member it counts as (`u:<userId>`, or `s:<publicId>` for
//! an anonymous socket) and the node that holds it. Kept in the database the nodes share,
//! so every node answers the same list and a dead node's rows can be taken away by the
//! others.
//!
//! A member is present while at least one of its rows is: `enter` and `leave` answer
//! whether this row was its first or its last in the channel, under a per-channel lock
//! (PostgreSQL advisory lock; SQLite's single writer), so two sockets of one user
//! joining at once on two nodes announce it exactly once.

use super::{Dialect, Store, Tx};
use crate::schema::FieldType;
use crate::schema::value::SqlValue;

/// Serialises presence changes of one channel (PostgreSQL), mixed with its name's hash.
const PRESENCE_LOCK_KEY: i64 = 0x6c62_7072_6573; // "lbpres"

pub(super) fn create_statements() -> Vec<String> {
    vec![
        "CREATE TABLE IF NOT EXISTS lb_presence (channel TEXT NOT NULL, socket TEXT NOT NULL, \
         member TEXT NOT NULL, node TEXT NOT NULL, PRIMARY KEY (channel, socket))"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS lb_presence_by_socket ON lb_presence (socket)".to_string(),
        "CREATE INDEX IF NOT EXISTS lb_presence_by_node ON lb_presence (node)".to_string(),
    ]
}

/// A member's presence changed in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub channel: String,
    pub member: String,
}

async fn lock_channel(tx: &mut Tx, channel: &str) -> Result<(), sqlx::Error> {
    if tx.dialect() == Dialect::Postgres {
        let mut sql = tx.sql();
        sql.push("SELECT pg_advisory_xact_lock(hashtextextended(")
            .bind(SqlValue::Text(channel.to_string()))
            .push(", ")
            .push(&PRESENCE_LOCK_KEY.to_string())
            .push("))");
        tx.execute(&sql).await?;
    }
    Ok(())
}

async fn rows_of(tx: &mut Tx, channel: &str, member: &str) -> Result<i64, sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("SELECT COUNT(*) FROM lb_presence WHERE channel = ")
        .bind(SqlValue::Text(channel.to_string()))
        .push(" AND member = ")
        .bind(SqlValue::Text(member.to_string()));
    Ok(tx
        .fetch(&sql, &[FieldType::Int])
        .await?
        .first()
        .and_then(|r| r[0].as_i64())
        .unwrap_or(0))
}

impl Store {
    /// Records `socket` (counting as `member`, held by `node`) in `channel`; `true` if
    /// the member was not present before.
    pub async fn presence_enter(
        &self,
        channel: &str,
        socket: &str,
        member: &str,
        node: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        lock_channel(&mut tx, channel).await?;
        let before = rows_of(&mut tx, channel, member).await?;
        let mut sql = tx.sql();
        sql.push("INSERT INTO lb_presence (channel, socket, member, node) VALUES (")
            .bind(SqlValue::Text(channel.to_string()))
            .push(", ")
            .bind(SqlValue::Text(socket.to_string()))
            .push(", ")
            .bind(SqlValue::Text(member.to_string()))
            .push(", ")
            .bind(SqlValue::Text(node.to_string()))
            .push(") ON CONFLICT DO NOTHING");
        let inserted = tx.execute(&sql).await?;
        tx.commit().await?;
        Ok(inserted == 1 && before == 0)
    }

    /// Takes `socket` out of `channel` (of every channel when `None`); answers the
    /// members that are no longer present in a channel because of it.
    pub async fn presence_leave(
        &self,
        socket: &str,
        channel: Option<&str>,
    ) -> Result<Vec<Change>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push("SELECT channel, member FROM lb_presence WHERE socket = ")
            .bind(SqlValue::Text(socket.to_string()));
        if let Some(channel) = channel {
            sql.push(" AND channel = ")
                .bind(SqlValue::Text(channel.to_string()));
        }
        let rows = self
            .fetch(&sql, &[FieldType::Text, FieldType::Text])
            .await?;
        let mut gone = Vec::new();
        for row in rows {
            let (Some(channel), Some(member)) = (row[0].as_str(), row[1].as_str()) else {
                continue;
            };
            let mut tx = self.begin().await?;
            lock_channel(&mut tx, channel).await?;
            let mut sql = tx.sql();
            sql.push("DELETE FROM lb_presence WHERE channel = ")
                .bind(SqlValue::Text(channel.to_string()))
                .push(" AND socket = ")
                .bind(SqlValue::Text(socket.to_string()));
            let deleted = tx.execute(&sql).await?;
            let left = rows_of(&mut tx, channel, member).await?;
            tx.commit().await?;
            if deleted == 1 && left == 0 {
                gone.push(Change {
                    channel: channel.to_string(),
                    member: member.to_string(),
                });
            }
        }
        Ok(gone)
    }

    /// The members present in `channel`, at most `limit`, in a stable order.
    pub async fn presence_members(
        &self,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push("SELECT DISTINCT member FROM lb_presence WHERE channel = ")
            .bind(SqlValue::Text(channel.to_string()))
            .push(" ORDER BY member LIMIT ")
            .push(&limit.to_string());
        let rows = self.fetch(&sql, &[FieldType::Text]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next()?.as_str().map(str::to_string))
            .collect())
    }

    /// Removes the rows of every node but `live` (a node that is gone: its sockets are
    /// gone with it); answers the members no longer present because of it.
    pub async fn presence_sweep(&self, live: &[String]) -> Result<Vec<Change>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push("SELECT DISTINCT node FROM lb_presence");
        let nodes = self.fetch(&sql, &[FieldType::Text]).await?;
        let mut gone = Vec::new();
        for node in nodes {
            let Some(node) = node[0].as_str() else {
                continue;
            };
            if live.iter().any(|l| l == node) {
                continue;
            }
            let mut sql = self.sql();
            sql.push("SELECT socket FROM lb_presence WHERE node = ")
                .bind(SqlValue::Text(node.to_string()));
            for socket in self.fetch(&sql, &[FieldType::Text]).await? {
                if let Some(socket) = socket[0].as_str() {
                    gone.extend(self.presence_leave(socket, None).await?);
                }
            }
        }
        Ok(gone)
    }
}
