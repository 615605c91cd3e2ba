//! The `lb_credentials` table: password hashes, user tokens, token versions and reset
//! tokens, kept apart from the `users` rows so that no API that returns rows can ever
//! return a hash.

use serde_json::Value;

use crate::schema::FieldType;
use crate::schema::value::SqlValue;
use crate::store::{Store, Tx};

/// What authentication needs to know about a user.
#[derive(Debug, Clone)]
pub struct UserAuth {
    pub id: i64,
    pub email: String,
    /// `None` when the row holds null: answers show what is stored, never a made-up "".
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: String,
    pub token_version: i64,
    /// The session (`Claims::sid`) that last changed the password: its tokens stay
    /// valid although they carry the version before the change. Any later revocation
    /// clears it.
    pub kept_session: Option<String>,
}

impl UserAuth {
    pub fn full_name(&self) -> String {
        [&self.first_name, &self.last_name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub enum Lookup<'a> {
    Id(i64),
    Email(&'a str),
    UserToken(&'a str),
}

const TYPES: [FieldType; 9] = [
    FieldType::Int,
    FieldType::Text,
    FieldType::Text,
    FieldType::Text,
    FieldType::Text,
    FieldType::Int,
    FieldType::Text,
    FieldType::Text,
    FieldType::Text,
];

/// The user and their stored password hash (`None` if they have no password).
pub async fn find(
    store: &Store,
    by: Lookup<'_>,
) -> Result<Option<(UserAuth, Option<String>)>, sqlx::Error> {
    let mut sql = store.sql();
    sql.push(
        r#"SELECT u."id", u."email", u."firstName", u."lastName", u."role", c.token_version, c.password_hash, c.user_token, c.kept_session FROM "users" u JOIN lb_credentials c ON c.user_id = u."id" WHERE "#,
    );
    match by {
        Lookup::Id(id) => sql.push(r#"u."id" = "#).bind(SqlValue::Int(id)),
        Lookup::Email(e) => sql
            .push(r#"u."email" = "#)
            .bind(SqlValue::Text(e.trim().to_lowercase())),
        Lookup::UserToken(t) => sql
            .push("c.user_token = ")
            .bind(SqlValue::Text(t.to_string())),
    };
    let rows = store.fetch(&sql, &TYPES).await?;
    Ok(rows.into_iter().next().map(|r| {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        (
            UserAuth {
                id: r[0].as_i64().unwrap_or_default(),
                email: text(&r[1]),
                first_name: r[2].as_str().map(str::to_string),
                last_name: r[3].as_str().map(str::to_string),
                role: text(&r[4]),
                token_version: r[5].as_i64().unwrap_or_default(),
                kept_session: r[8].as_str().map(str::to_string),
            },
            r[6].as_str().map(str::to_string),
        )
    }))
}

pub async fn user_token(store: &Store, user_id: i64) -> Result<Option<String>, sqlx::Error> {
    let mut sql = store.sql();
    sql.push("SELECT user_token FROM lb_credentials WHERE user_id = ")
        .bind(SqlValue::Int(user_id));
    let rows = store.fetch(&sql, &[FieldType::Text]).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r[0].as_str().map(str::to_string)))
}

/// Written in the same transaction as the `users` row it belongs to.
pub async fn insert(
    tx: &mut Tx,
    user_id: i64,
    password_hash: Option<String>,
    user_token: String,
) -> Result<(), sqlx::Error> {
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO lb_credentials (user_id, password_hash, user_token, token_version) VALUES (",
    )
    .bind(SqlValue::Int(user_id))
    .push(", ")
    .bind(password_hash.map_or(SqlValue::Null, SqlValue::Text))
    .push(", ")
    .bind(SqlValue::Text(user_token))
    .push(", 0)");
    tx.execute(&sql).await.map(|_| ())
}

pub async fn delete(tx: &mut Tx, user_id: i64) -> Result<(), sqlx::Error> {
    let mut sql = tx.sql();
    sql.push("DELETE FROM lb_credentials WHERE user_id = ")
        .bind(SqlValue::Int(user_id));
    tx.execute(&sql).await.map(|_| ())
}

/// Sets a new password hash and, with it, invalidates every token issued so far except
/// those of the session `keep` (the one that made the change, if any).
pub async fn set_password(
    store: &Store,
    user_id: i64,
    hash: String,
    keep: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut sql = store.sql();
    sql.push("UPDATE lb_credentials SET password_hash = ")
        .bind(SqlValue::Text(hash))
        .push(", token_version = token_version + 1, reset_token_hash = NULL, reset_expires = NULL, kept_session = ");
    match keep {
        Some(session) => sql.bind(SqlValue::Text(session.to_string())),
        None => sql.push("NULL"),
    };
    sql.push(" WHERE user_id = ").bind(SqlValue::Int(user_id));
    store.execute(&sql).await.map(|_| ())
}

pub async fn bump_token_version(store: &Store, user_id: i64) -> Result<(), sqlx::Error> {
    let mut sql = store.sql();
    sql.push(
        "UPDATE lb_credentials SET token_version = token_version + 1, kept_session = NULL WHERE user_id = ",
    )
        .bind(SqlValue::Int(user_id));
    store.execute(&sql).await.map(|_| ())
}

pub async fn set_user_token(store: &Store, user_id: i64, token: &str) -> Result<(), sqlx::Error> {
    let mut sql = store.sql();
    sql.push("UPDATE lb_credentials SET user_token = ")
        .bind(SqlValue::Text(token.to_string()))
        .push(" WHERE user_id = ")
        .bind(SqlValue::Int(user_id));
    store.execute(&sql).await.map(|_| ())
}

pub async fn set_reset_token(
    store: &Store,
    user_id: i64,
    hash: String,
    expires: i64,
) -> Result<(), sqlx::Error> {
    let mut sql = store.sql();
    sql.push("UPDATE lb_credentials SET reset_token_hash = ")
        .bind(SqlValue::Text(hash))
        .push(", reset_expires = ")
        .bind(SqlValue::Int(expires))
        .push(" WHERE user_id = ")
        .bind(SqlValue::Int(user_id));
    store.execute(&sql).await.map(|_| ())
}

/// The stored reset-token hash and its expiry (unix seconds), if a reset is pending.
pub async fn reset_token(
    store: &Store,
    user_id: i64,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let mut sql = store.sql();
    sql.push("SELECT reset_token_hash, reset_expires FROM lb_credentials WHERE user_id = ")
        .bind(SqlValue::Int(user_id));
    let rows = store
        .fetch(&sql, &[FieldType::Text, FieldType::Int])
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| Some((r[0].as_str()?.to_string(), r[1].as_i64()?))))
}
