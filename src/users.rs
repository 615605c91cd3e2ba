//! Everything a `users` row means to authentication: its password (taken out of the
//! input, hashed, kept in `lb_credentials` and never in a column), its credentials row
//! (made and removed in the row's own transaction), the auth cache (dropped whenever
//! the row changes) and revocation. A sign-out, a password change or reset, a role or
//! email change and a deletion each revoke the user's identity: one `Revoked` event,
//! which realtime listens to (it ends the user's sockets) before the write is answered.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::credentials::{self, Lookup};
use crate::auth::tokens::now_secs;
use crate::auth::{Auth, Identity, passwords, secrets};
use crate::error::ApiError;
use crate::records::{BoxFuture, Change, RecordEvent, Records, Staged, Verb, WriteHook};
use crate::store::bus::Note;
use crate::store::statements;
use crate::store::{Record, Store, Tx};

/// A user whose earlier credentials, or whose identity as sockets hold it (role,
/// username), no longer hold.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub user_id: i64,
    /// The username the user's sockets authenticated as (the old one, after a change).
    pub username: String,
    /// The sign-in that made the change (a password change): it stays signed in, its
    /// sockets too; every other session of the user ends.
    pub kept_session: Option<Arc<str>>,
}

/// Who must act on a revocation (realtime: the user's sockets end).
pub trait OnRevoked: Send + Sync + 'static {
    fn revoked<'a>(&'a self, revoked: &'a Revoked) -> BoxFuture<'a, ()>;
}

/// How long a password reset token is valid.
const RESET_TTL_SECS: i64 = 3600;

/// Users service. Cloning is shallow.
#[derive(Clone)]
pub struct Users {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Auth,
    store: Store,
    listeners: Vec<Arc<dyn OnRevoked>>,
}

/// A new user's password, between `prepare` and `before`.
#[derive(Clone)]
struct NewPassword(String);

/// Its hash, between `before` and the transaction.
#[derive(Clone)]
struct PasswordHash(String);

impl Users {
    pub fn new(auth: Auth, store: Store, listeners: Vec<Arc<dyn OnRevoked>>) -> Self {
        Users {
            inner: Arc::new(Inner {
                auth,
                store,
                listeners,
            }),
        }
    }

    /// The user's cached auth facts are dropped, then every listener is told.
    async fn revoke(&self, user_id: i64, username: &str, kept_session: Option<Arc<str>>) {
        self.inner.auth.forget(user_id).await;
        let revoked = Revoked {
            user_id,
            username: username.to_string(),
            kept_session,
        };
        for listener in &self.inner.listeners {
            listener.revoked(&revoked).await;
        }
        self.inner
            .store
            .announce(&Note::Revoked {
                user_id,
                username: revoked.username,
                kept_session: revoked.kept_session.map(|s| s.to_string()),
            })
            .await;
    }

    /// The user's cached auth facts are dropped here and on every other node.
    async fn forget(&self, user_id: i64) {
        self.inner.auth.forget(user_id).await;
        self.inner.store.announce(&Note::Forget { user_id }).await;
    }

    /// Every token issued to the user so far stops working, and so do their sockets.
    pub async fn sign_out(&self, who: &Identity) -> Result<(), ApiError> {
        let id = who
            .user_id
            .ok_or_else(|| ApiError::bad("anonymous callers have nothing to sign out"))?;
        credentials::bump_token_version(&self.inner.store, id).await?;
        self.revoke(id, &who.username, None).await;
        Ok(())
    }

    /// It checks the current password; earlier tokens and their sockets stop working,
    /// except those of the session that made the change: the Backand SDK goes on with
    /// the token it holds (a second change, a refresh), and its socket stays.
    pub async fn change_password(
        &self,
        who: &Identity,
        old: &str,
        new: &str,
    ) -> Result<(), ApiError> {
        let id = who
            .user_id
            .ok_or_else(|| ApiError::Forbidden("anonymous callers have no password".into()))?;
        passwords::check_strength(new).map_err(ApiError::BadRequest)?;
        let found = credentials::find(&self.inner.store, Lookup::Id(id)).await?;
        let Some((_, Some(hash))) = found else {
            return Err(ApiError::bad("this user has no password set"));
        };
        if !passwords::verify(old.to_string(), hash).await {
            return Err(ApiError::bad("the old password is wrong"));
        }
        let hash = passwords::hash(new.to_string()).await?;
        let keep = who.session.clone();
        credentials::set_password(&self.inner.store, id, hash, keep.as_deref()).await?;
        self.revoke(id, &who.username, keep).await;
        Ok(())
    }

    /// With no mail server, the reset token goes to the server log for the operator.
    /// The answer never says whether the account exists.
    pub async fn request_reset(&self, username: &str) -> Result<(), ApiError> {
        let found = credentials::find(&self.inner.store, Lookup::Email(username)).await?;
        let secret = secrets::new_token();
        // Hash either way, so the answer's timing does not tell which accounts exist.
        let hash = passwords::hash(secret.clone()).await?;
        let Some((user, _)) = found else {
            tracing::info!(username, "password reset requested for an unknown user");
            return Ok(());
        };
        let expires = now_secs() as i64 + RESET_TTL_SECS;
        credentials::set_reset_token(&self.inner.store, user.id, hash, expires).await?;
        let token = format!("{}.{secret}", user.id);
        tracing::warn!(
            user = %user.email,
            reset_token = %token,
            "password reset requested; give this reset token to the user (valid 1 hour)"
        );
        Ok(())
    }

    /// Sets the password a reset token was issued for; as after a password change, the
    /// user's earlier tokens and sockets stop working.
    pub async fn reset_password(&self, token: &str, new: &str) -> Result<(), ApiError> {
        let refused = || ApiError::bad("invalid or expired reset token");
        passwords::check_strength(new).map_err(ApiError::BadRequest)?;
        let (id, secret) = token.trim().split_once('.').ok_or_else(refused)?;
        let id: i64 = id.parse().map_err(|_| refused())?;
        let Some((hash, expires)) = credentials::reset_token(&self.inner.store, id).await? else {
            return Err(refused());
        };
        if expires < now_secs() as i64 || !passwords::verify(secret.to_string(), hash).await {
            return Err(refused());
        }
        let new_hash = passwords::hash(new.to_string()).await?;
        credentials::set_password(&self.inner.store, id, new_hash, None).await?;
        match self.inner.auth.user(id).await? {
            Some(user) => self.revoke(id, &user.email, None).await,
            None => self.forget(id).await,
        }
        Ok(())
    }
}

/// A socket's rooms were chosen for its user's role and username: a change of either,
/// or a deletion, revokes the identity the sockets hold.
fn identity_changed(event: &RecordEvent) -> Option<String> {
    let before = event.previous.as_ref()?;
    let field = |r: &Record, f: &str| r.fields.get(f).cloned();
    let changed = match &event.record {
        None => true,
        Some(after) => {
            field(before, "role") != field(after, "role")
                || field(before, "email") != field(after, "email")
        }
    };
    match before.fields.get("email") {
        Some(Value::String(username)) if changed => Some(username.clone()),
        _ => None,
    }
}

impl WriteHook for Users {
    /// A new user's password travels in the body but is never a column.
    fn prepare(
        &self,
        change: &Change<'_>,
        input: &mut Map<String, Value>,
        staged: &mut Staged,
    ) -> Result<(), ApiError> {
        if !change.object.is_users() || change.verb != Verb::Created {
            return Ok(());
        }
        match input.remove("password") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(p)) => {
                passwords::check_strength(&p).map_err(ApiError::BadRequest)?;
                staged.put(NewPassword(p));
                Ok(())
            }
            Some(_) => Err(ApiError::bad("field `password` expects a string")),
        }
    }

    /// Hashed once the input validated, outside the transaction (it is slow on purpose).
    fn before<'a>(
        &'a self,
        _change: &'a Change<'a>,
        _input: &'a mut Map<String, Value>,
        staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if let Some(NewPassword(password)) = staged.take::<NewPassword>() {
                staged.put(PasswordHash(passwords::hash(password).await?));
            }
            Ok(())
        })
    }

    fn in_transaction<'a>(
        &'a self,
        change: &'a Change<'a>,
        tx: &'a mut Tx,
        row: &'a mut Record,
        staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !change.object.is_users() {
                return Ok(());
            }
            match change.verb {
                Verb::Created => {
                    // A user owns their own row, so `owner` row security on users means
                    // "self".
                    let mut sql = tx.sql();
                    statements::set_owner(&mut sql, change.object, row.id, row.id);
                    tx.execute(&sql).await?;
                    row.owner = Some(row.id);
                    let hash = staged.take::<PasswordHash>().map(|PasswordHash(h)| h);
                    credentials::insert(tx, row.id, hash, secrets::new_token()).await?;
                }
                Verb::Deleted => credentials::delete(tx, row.id).await?,
                Verb::Updated => {}
            }
            Ok(())
        })
    }

    /// Before the write is answered: the cached auth facts go whatever changed, and a
    /// changed identity is revoked, so no client sees the answer and still receives
    /// events as the old identity.
    fn after<'a>(
        &'a self,
        _records: &'a Records,
        event: &'a RecordEvent,
    ) -> BoxFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if event.object == "users" {
                match identity_changed(event) {
                    Some(username) => self.revoke(event.id, &username, None).await,
                    None => self.forget(event.id).await,
                }
            }
            Vec::new()
        })
    }
}

/// `livebase admin reset-password EMAIL`: sets the password straight in the database the
/// flags name and bumps the user's token version, so every token issued so far stops
/// working: on PostgreSQL running nodes are told at once (`store::bus`) and end the
/// user's sockets; on SQLite a running server notices within its 5 s credentials
/// cache. Answers the
/// password set.
pub async fn reset_password_offline(
    config: &crate::config::Config,
    email: &str,
    password: Option<String>,
) -> anyhow::Result<String> {
    let store = Store::connect(&config.effective_database_url(), 1).await?;
    let found = credentials::find(&store, Lookup::Email(email))
        .await
        .map_err(|e| anyhow::anyhow!("reading the users (is this livebase's database?): {e}"))?;
    let Some((user, _)) = found else {
        anyhow::bail!("no user with the email `{email}` in this database");
    };
    let password = password.unwrap_or_else(secrets::new_token);
    passwords::check_strength(&password).map_err(|e| anyhow::anyhow!("--password: {e}"))?;
    let hash = passwords::hash(password.clone()).await?;
    credentials::set_password(&store, user.id, hash, None).await?;
    // Running nodes end the user's sockets and forget the cached facts now (PostgreSQL).
    store
        .announce(&Note::Revoked {
            user_id: user.id,
            username: user.email.clone(),
            kept_session: None,
        })
        .await;
    store.close().await;
    Ok(password)
}
