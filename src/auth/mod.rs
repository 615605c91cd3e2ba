//! Who is calling: credentials in, an `Identity` out; token grants.
//!
//! Owns the signing secret, the app tokens and a short-lived cache of user auth facts
//! (`users` says when an entry is stale). Does not decide what an identity may do: that
//! is `permissions::access`, alone.

pub mod credentials;
pub mod passwords;
pub mod permissions;
pub mod secrets;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::store::Store;
use credentials::{Lookup, UserAuth};
pub use permissions::{Access, access};
use secrets::{Secrets, constant_time_eq};
use tokens::{Claims, Signer, TokenError, TokenKind, now_secs};

/// The caller of a request or the owner of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None` for anonymous callers.
    pub user_id: Option<i64>,
    /// The user's email, or `Guest`.
    pub username: String,
    pub role: String,
    /// Authenticated with the master token: passes every permission check.
    pub master: bool,
    /// The sign-in (`Claims::sid`) an access token belongs to; `None` for other
    /// credentials. A password change keeps this session and ends the others.
    pub session: Option<Arc<str>>,
}

impl Identity {
    pub fn guest() -> Self {
        Identity {
            user_id: None,
            username: "Guest".into(),
            role: "Public".into(),
            master: false,
            session: None,
        }
    }

    /// livebase itself (bootstrap, signup): passes every check, owns nothing.
    pub fn system() -> Self {
        Identity {
            user_id: None,
            username: "system".into(),
            role: "Admin".into(),
            master: true,
            session: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.master || self.role == "Admin"
    }

    /// The one profile shape, `{username, role, userId}`: what a socket is told when it
    /// authenticates; REST's profile and actions' `userProfile` add to it.
    pub fn profile(&self) -> Map<String, Value> {
        let mut profile = Map::new();
        profile.insert("username".into(), self.username.clone().into());
        profile.insert("role".into(), self.role.clone().into());
        let user_id = self.user_id.map(|id| Value::String(id.to_string()));
        profile.insert("userId".into(), user_id.unwrap_or(Value::Null));
        profile
    }

    pub fn of_user(user: &UserAuth, master: bool) -> Self {
        Identity {
            user_id: Some(user.id),
            username: user.email.clone(),
            role: user.role.clone(),
            master,
            session: None,
        }
    }
}

/// The `/token` answer, in the Backand shape.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    #[serde(rename = "appName")]
    pub app_name: String,
    pub username: String,
    pub role: String,
    #[serde(rename = "userId")]
    pub user_id: String,
    #[serde(rename = "firstName")]
    pub first_name: Option<String>,
    #[serde(rename = "lastName")]
    pub last_name: Option<String>,
    #[serde(rename = "fullName")]
    pub full_name: String,
}

/// Authentication service. Cloning is shallow.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    secrets: Secrets,
    signer: Signer,
    store: Store,
    /// Role and token version per user id, so a bearer request costs no query. Entries
    /// are dropped when a `users` row changes (see `users`) and live 5 s at most,
    /// which bounds how stale another node's sign-out can look.
    users: moka::future::Cache<i64, Option<Arc<UserAuth>>>,
    access_ttl: u64,
    refresh_ttl: u64,
}

impl Auth {
    pub fn new(secrets: Secrets, store: Store, access_ttl: u64, refresh_ttl: u64) -> Self {
        let users = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(5))
            .build();
        Auth {
            inner: Arc::new(Inner {
                signer: Signer::new(&secrets.jwt_secret),
                secrets,
                store,
                users,
                access_ttl,
                refresh_ttl,
            }),
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    /// The identity behind a request's headers: `Authorization: Bearer …`,
    /// `Authorization: Basic base64(master:userToken)` or `AnonymousToken: …`.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        self.identify_expiring(headers).await.map(|(who, _)| who)
    }

    /// As `identify`, with the first unix second at which the credentials are refused: `Some` for an access token, `None` for credentials that do not expire
    /// (the master and anonymous tokens). Sockets are closed at that moment.
    pub async fn identify_expiring(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Identity, Option<u64>), ApiError> {
        if let Some(value) = headers.get("authorization") {
            let value = value
                .to_str()
                .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?
                .trim();
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            return match scheme.to_ascii_lowercase().as_str() {
                "bearer" => self
                    .identify_bearer_expiring(rest.trim())
                    .await
                    .map(|(who, until)| (who, Some(until))),
                "basic" => self
                    .identify_basic(rest.trim())
                    .await
                    .map(|who| (who, None)),
                _ => Err(ApiError::Unauthorized(
                    "unsupported Authorization scheme: use Bearer or Basic".into(),
                )),
            };
        }
        if let Some(value) = headers.get("anonymoustoken") {
            return self
                .identify_anonymous(value.to_str().unwrap_or(""))
                .map(|who| (who, None));
        }
        Err(ApiError::Unauthorized(
            "missing credentials: send Authorization or AnonymousToken".into(),
        ))
    }

    /// An access token (with or without `Bearer `), as sockets will present it.
    pub async fn identify_bearer(&self, token: &str) -> Result<Identity, ApiError> {
        self.identify_bearer_expiring(token)
            .await
            .map(|(who, _)| who)
    }

    /// As `identify_bearer`, with the first unix second at which the token is refused.
    pub async fn identify_bearer_expiring(&self, token: &str) -> Result<(Identity, u64), ApiError> {
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        let claims = self
            .inner
            .signer
            .verify(token, TokenKind::Access)
            .map_err(|_| ApiError::invalid_token())?;
        let user = self.current_user(&claims).await?;
        let mut who = Identity::of_user(&user, false);
        who.session = claims.sid.as_deref().map(Arc::from);
        Ok((
            who,
            // jsonwebtoken refuses once `exp + leeway < now`, in whole seconds.
            claims.exp + tokens::LEEWAY_SECS + 1,
        ))
    }

    pub fn identify_anonymous(&self, token: &str) -> Result<Identity, ApiError> {
        if constant_time_eq(token.trim(), &self.inner.secrets.anonymous_token) {
            Ok(Identity::guest())
        } else {
            Err(ApiError::Unauthorized("invalid anonymous token".into()))
        }
    }

    async fn identify_basic(&self, encoded: &str) -> Result<Identity, ApiError> {
        let refused = || ApiError::Unauthorized("invalid Basic credentials".into());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| refused())?;
        let text = String::from_utf8(decoded).map_err(|_| refused())?;
        let (master, user_token) = text.split_once(':').ok_or_else(refused)?;
        if !constant_time_eq(master, &self.inner.secrets.master_token) {
            return Err(refused());
        }
        let (user, _) = credentials::find(&self.inner.store, Lookup::UserToken(user_token))
            .await?
            .ok_or_else(refused)?;
        Ok(Identity::of_user(&user, true))
    }

    /// The user a token names, if the token is still theirs (not signed out since).
    async fn current_user(&self, claims: &Claims) -> Result<Arc<UserAuth>, ApiError> {
        let store = self.inner.store.clone();
        let id = claims.user_id().ok_or_else(ApiError::invalid_token)?;
        let user = self
            .inner
            .users
            .try_get_with(id, async move {
                credentials::find(&store, Lookup::Id(id))
                    .await
                    .map(|found| found.map(|(u, _)| Arc::new(u)))
            })
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("user lookup: {e}")))?;
        let current = |u: &UserAuth| {
            u.token_version == claims.tv || (claims.sid.is_some() && u.kept_session == claims.sid)
        };
        match user {
            Some(u) if current(&u) && claims.app == self.inner.secrets.app_name => Ok(u),
            _ => {
                self.inner.users.invalidate(&id).await;
                Err(ApiError::invalid_token())
            }
        }
    }

    /// Tokens for `user` in the sign-in `session` (a new one when `None`).
    fn issue(&self, user: &UserAuth, session: Option<String>) -> TokenResponse {
        let now = now_secs();
        let sid = session.unwrap_or_else(secrets::new_token);
        let claims = |kind, ttl| Claims {
            sub: user.id.to_string(),
            tv: user.token_version,
            kind,
            app: self.inner.secrets.app_name.clone(),
            iat: now,
            exp: now + ttl,
            sid: Some(sid.clone()),
        };
        TokenResponse {
            access_token: self
                .inner
                .signer
                .sign(&claims(TokenKind::Access, self.inner.access_ttl)),
            token_type: "bearer",
            expires_in: self.inner.access_ttl,
            refresh_token: self
                .inner
                .signer
                .sign(&claims(TokenKind::Refresh, self.inner.refresh_ttl)),
            app_name: self.inner.secrets.app_name.clone(),
            username: user.email.clone(),
            role: user.role.clone(),
            user_id: user.id.to_string(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            full_name: user.full_name(),
        }
    }

    /// `grant_type=password`: email and password.
    pub async fn password_grant(
        &self,
        username: &str,
        password: &str,
    ) -> Result<TokenResponse, ApiError> {
        let refused = || ApiError::BadRequest("invalid username or password".into());
        let found = credentials::find(&self.inner.store, Lookup::Email(username)).await?;
        let Some((user, Some(hash))) = found else {
            // Spend the same time as a real check so timing does not reveal accounts.
            let _ = passwords::verify(password.to_string(), DUMMY_HASH.into()).await;
            return Err(refused());
        };
        if !passwords::verify(password.to_string(), hash).await {
            return Err(refused());
        }
        Ok(self.issue(&user, None))
    }

    /// Refresh grant: a refresh token issued since the user last signed out.
    pub async fn refresh_grant(&self, refresh_token: &str) -> Result<TokenResponse, ApiError> {
        let claims = self
            .inner
            .signer
            .verify(refresh_token.trim(), TokenKind::Refresh)
            .map_err(|e| match e {
                TokenError::Expired => ApiError::Unauthorized("refresh token expired".into()),
                TokenError::Invalid => ApiError::Unauthorized("invalid refresh token".into()),
            })?;
        let user = self.current_user(&claims).await?;
        Ok(self.issue(&user, claims.sid))
    }

    /// Tokens for a user just created (signup).
    pub async fn tokens_for_user(&self, user_id: i64) -> Result<TokenResponse, ApiError> {
        let (user, _) = credentials::find(&self.inner.store, Lookup::Id(user_id))
            .await?
            .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
        Ok(self.issue(&user, None))
    }

    pub async fn user(&self, user_id: i64) -> Result<Option<UserAuth>, ApiError> {
        Ok(credentials::find(&self.inner.store, Lookup::Id(user_id))
            .await?
            .map(|(u, _)| u))
    }

    /// Drops the cached auth facts of a user (`users` owns when: the row changed, the
    /// credentials were revoked).
    pub async fn forget(&self, user_id: i64) {
        self.inner.users.invalidate(&user_id).await;
    }
}

/// A valid argon2 hash of a random string, verified against when the user does not
/// exist so that a failed login costs the same either way.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$pQb3HjMDzTo6WC4HkIDnfkn8Ybf7z5Zn8bKy2z0G1Dk";
