//! Sign-in, sign-up and account flows, as the Backand SDK calls them.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::AppState;
use super::extract::{Body, Caller};
use crate::auth::Identity;
use crate::auth::secrets::constant_time_eq;
use crate::config::Config;
use crate::error::ApiError;

pub fn router(config: &Config) -> Router<AppState> {
    // Where credentials are tried or accounts made: rate-limited per client address.
    let credentials = Router::new()
        .route("/token", post(issue_token))
        .route("/1/user/signup", post(sign_up))
        .route("/1/user/requestResetPassword", post(request_reset_password))
        .route("/1/user/resetPassword", post(reset_password))
        // It checks the current password: a stolen token must not make it an oracle.
        .route("/1/user/changePassword", post(change_password));
    let credentials = super::limits::limit_credentials(credentials, config);
    Router::new()
        .merge(credentials)
        .route("/api/account/profile", get(get_profile))
        .route("/1/user/signout", get(sign_out).post(sign_out))
}

/// OAuth-style failures also carry `error`/`error_description`, which token clients read.
fn grant_error(e: ApiError) -> Response {
    let status = e.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        return e.into_response();
    }
    let message = e.to_string();
    let body =
        json!({ "Message": message, "error": "invalid_grant", "error_description": message });
    (status, Json(body)).into_response()
}

async fn issue_token(State(state): State<AppState>, body: Result<Body, ApiError>) -> Response {
    let result = async {
        let body = body?;
        if let Some(app) = body.opt_text("appName")?
            && !app.is_empty()
            && app != state.auth.secrets().app_name
        {
            return Err(ApiError::bad(format!("unknown appName `{app}`")));
        }
        let refresh = match body.opt_text("refreshToken")? {
            Some(t) => Some(t),
            None => body.opt_text("refresh_token")?,
        };
        let grant = body.opt_text("grant_type")?.unwrap_or("password");
        match (grant, refresh) {
            (_, Some(token)) => state.auth.refresh_grant(token).await,
            ("refresh_token", None) => Err(ApiError::bad("`refresh_token` is required")),
            ("password", None) => {
                let username = body.text("username")?;
                let password = body.text("password")?;
                state.auth.password_grant(username, password).await
            }
            (other, None) => Err(ApiError::bad(format!(
                "unsupported grant_type `{other}` (use password or refresh_token)"
            ))),
        }
    }
    .await;
    match result {
        Ok(tokens) => Json(tokens).into_response(),
        Err(e) => grant_error(e),
    }
}

async fn get_profile(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    let (mut profile, first, last, full) = match who.user_id {
        None => {
            let full = who.username.clone();
            (who.profile(), None, None, full)
        }
        Some(id) => {
            let user = state
                .auth
                .user(id)
                .await?
                .ok_or_else(|| ApiError::NotFound("the user no longer exists".into()))?;
            let full = user.full_name();
            let profile = Identity::of_user(&user, false).profile();
            (profile, user.first_name, user.last_name, full)
        }
    };
    profile.insert("firstName".into(), first.into());
    profile.insert("lastName".into(), last.into());
    profile.insert("fullName".into(), full.into());
    profile.insert(
        "appName".into(),
        state.auth.secrets().app_name.clone().into(),
    );
    Ok(Json(Value::Object(profile)))
}

async fn sign_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let token = headers
        .get("signuptoken")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing SignUpToken header".into()))?;
    if !constant_time_eq(token.trim(), &state.auth.secrets().signup_token) {
        return Err(ApiError::Unauthorized("invalid SignUpToken".into()));
    }
    let Value::Object(mut input) = body else {
        return Err(ApiError::bad("the body must be a JSON object"));
    };
    let confirm = input.remove("confirmPassword");
    if let Some(confirm) = confirm
        && input.get("password") != Some(&confirm)
    {
        return Err(ApiError::bad("password and confirmPassword differ"));
    }
    if !matches!(input.get("password"), Some(Value::String(_))) {
        return Err(ApiError::bad("`password` is required"));
    }
    if input.contains_key("role") {
        return Err(ApiError::Forbidden(
            "signing up cannot choose a role".into(),
        ));
    }
    let parameters = input.remove("parameters");
    let mut row: Map<String, Value> = input;
    signup_parameters(&state, parameters, &mut row)?;
    row.insert("role".into(), Value::String("User".into()));
    let record = state
        .records
        .create(&Identity::system(), "users", Value::Object(row))
        .await?;
    let tokens = state.auth.tokens_for_user(record.id).await?;
    let mut answer = serde_json::to_value(tokens).map_err(anyhow::Error::from)?;
    if let Value::Object(map) = &mut answer {
        map.insert("currentStatus".into(), json!(1));
        map.insert("message".into(), json!("The user is ready to sign in"));
        map.insert("token".into(), map["access_token"].clone());
    }
    Ok(Json(answer))
}

/// The SDK's `signup(…, parameters)`: each parameter fills the `users` field of that
/// name (a field the schema adds, such as `nickname`). A name that is no such field, or
/// a field the sign-up sets itself, is refused by name, so nothing is silently dropped.
fn signup_parameters(
    state: &AppState,
    parameters: Option<Value>,
    row: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let parameters = match parameters {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::bad("`parameters` must be an object")),
    };
    let users = state
        .records
        .schema()
        .object("users")
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no users object")))?;
    for (name, value) in parameters {
        if ["role", "password", "confirmPassword"].contains(&name.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "signup parameter `{name}` cannot be set by signing up"
            )));
        }
        if users.field(&name).is_none() {
            return Err(ApiError::bad(format!(
                "signup parameter `{name}` is not a field of users"
            )));
        }
        if row.contains_key(&name) {
            return Err(ApiError::bad(format!(
                "signup parameter `{name}` is already given in the body"
            )));
        }
        row.insert(name, value);
    }
    Ok(())
}

async fn change_password(
    State(state): State<AppState>,
    Caller(who): Caller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let old = body.text("oldPassword")?;
    let new = body.text("newPassword")?;
    state.users.change_password(&who, old, new).await?;
    Ok(Json(json!({})))
}

async fn sign_out(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    state.users.sign_out(&who).await?;
    Ok(Json(json!({})))
}

/// Answered with `200` and no body, as Backand did: the SDK hands the body on as the
/// result, and its callers compare it with the empty string.
async fn request_reset_password(
    State(state): State<AppState>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let username = body.text("username")?;
    state.users.request_reset(username).await?;
    Ok(StatusCode::OK)
}

async fn reset_password(State(state): State<AppState>, body: Body) -> Result<StatusCode, ApiError> {
    let token = body.text("resetToken")?;
    let new = body.text("newPassword")?;
    state.users.reset_password(token, new).await?;
    Ok(StatusCode::OK)
}
