//! Extractors that keep auth and body parsing out of handler bodies, and turn every
//! rejection into an `ApiError` (`{"Message": …}`) rather than axum's plain text.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use super::{AppState, request_log};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::realtime::sails::SocketCaller;

/// The authenticated caller. Requests without valid credentials never reach a handler.
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = match parts.extensions.get::<SocketCaller>() {
            Some(SocketCaller(who)) => who.clone(),
            None => state.auth.identify(&parts.headers).await?,
        };
        // Present only while the request log is on.
        if let Some(line) = parts.extensions.get::<request_log::Who>() {
            line.set(&who.username);
        }
        Ok(Caller(who))
    }
}

/// An authenticated caller with the Admin role or the master token (`Identity::is_admin`,
/// the one Admin decision); anyone else is refused 403.
pub struct AdminCaller(pub Identity);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Caller(who) = Caller::from_request_parts(parts, state).await?;
        if who.is_admin() {
            Ok(AdminCaller(who))
        } else {
            Err(ApiError::Forbidden(
                "this needs the Admin role or the master token".into(),
            ))
        }
    }
}

/// Query-string parameters as text; repeated keys keep the last value.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad(format!("malformed query string: {e}")))?;
        Ok(Params(pairs.into_iter().collect()))
    }
}

impl Params {
    pub fn flag(&self, name: &str) -> bool {
        self.0
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

/// `?parameters={json}` (an object when absent), with the Backand SDK's extra encoding
/// undone (see `unescape_sdk_parameters`).
pub fn parameters(params: &HashMap<String, String>) -> Result<Value, ApiError> {
    let Some(text) = params.get("parameters") else {
        return Ok(Value::Object(Default::default()));
    };
    let mut value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad(format!("`parameters` is not JSON: {e}")))?;
    unescape_sdk_parameters(&mut value);
    Ok(value)
}

/// The Backand SDK percent-encodes a string parameter that contains `+` before it
/// serialises the parameters (top-level values, and values of objects in a top-level
/// array), so `"a+b"` arrives as `"a%2Bb"`. Such a value is decoded back; any other
/// string is left exactly as sent. `encodeURIComponent` output always has `%2B` for the
/// `+` and only its own alphabet, which is what is recognised: a caller's own `"50%"`
/// or `"x%41"` is not SDK output and stays as written.
pub fn unescape_sdk_parameters(value: &mut Value) {
    fn fix(value: &mut Value) {
        if let Value::String(text) = value
            && let Some(decoded) = sdk_decoded(text)
        {
            *text = decoded;
        }
    }
    match value {
        Value::Object(map) => map.values_mut().for_each(fix),
        Value::Array(items) => {
            for item in items {
                if let Value::Object(map) = item {
                    map.values_mut().for_each(fix);
                }
            }
        }
        _ => {}
    }
}

fn sdk_decoded(text: &str) -> Option<String> {
    let component_alphabet = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()%".contains(c);
    if !text.contains("%2B") || !text.chars().all(component_alphabet) {
        return None;
    }
    // Every `%` must start an escape, or the text was not percent-encoded at all.
    let bytes = text.as_bytes();
    let escapes_only = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !escapes_only {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
}

/// A request body read within the size limit and parsed as JSON, or as a form when the
/// content type says so (`/token` is form-encoded by the Backand SDK). An empty body is
/// `null`. A JSON body labelled as a form is refused (415) with the header to send.
pub struct Body(pub Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is larger than the server accepts".into())
            } else {
                ApiError::bad(format!("could not read the request body: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Value::Null));
        }
        if is_form {
            // `curl -d '{"name":…}'` sends JSON labelled as a form: reading it as one
            // would report its whole text as an unknown field.
            if matches!(
                bytes.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{' | b'[')
            ) {
                return Err(ApiError::Status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the body is JSON but its Content-Type is application/x-www-form-urlencoded \
                     (curl -d sends that by default): send Content-Type: application/json"
                        .into(),
                ));
            }
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| ApiError::bad(format!("malformed form body: {e}")))?;
            let map: Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            return Ok(Body(Value::Object(map)));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))
    }
}

impl Body {
    /// A text field of an object body, or a 400 naming it.
    pub fn text(&self, key: &str) -> Result<&str, ApiError> {
        self.opt_text(key)?
            .ok_or_else(|| ApiError::bad(format!("`{key}` is required")))
    }

    pub fn opt_text(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad(format!("`{key}` must be a string"))),
        }
    }
}

/// A body read to its end, or a 413 as soon as it passes `limit` bytes (so no more than
/// that is ever held). For handlers whose limit is not `--max-body-bytes`.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the request body is larger than the limit of {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// A row id from the path: a positive integer.
pub fn parse_id(text: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad(format!(
            "row id must be a positive integer, got `{text}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_escaped_parameters_arrive_as_written_and_others_untouched() {
        // What `encodeURIComponent` makes of each, as the SDK sends values with a `+`.
        let cases = [
            ("a%2Bb", "a+b"),
            (
                "x%2B%20%25%20%26%20%40%20%23%20~%20%5E%20(%20)",
                "x+ % & @ # ~ ^ ( )",
            ),
            ("%E2%82%AC%2B1", "€+1"),
        ];
        for (sent, meant) in cases {
            let mut value = serde_json::json!({ "p": sent, "list": 1 });
            unescape_sdk_parameters(&mut value);
            assert_eq!(value["p"], meant, "{sent}");
            let mut value = serde_json::json!([{ "p": sent }]);
            unescape_sdk_parameters(&mut value);
            assert_eq!(value[0]["p"], meant, "{sent} in an array");
        }
        // No `+` in them: the SDK sent them as written, so they stay.
        for kept in ["50%", "x%41", "%2b", "a%2Bb c", "%2B%", "a+b", "%FF%2B"] {
            let mut value = serde_json::json!({ "p": kept });
            unescape_sdk_parameters(&mut value);
            assert_eq!(value["p"], kept);
        }
        // Deeper values are never SDK-escaped.
        let mut value = serde_json::json!({ "o": { "p": "a%2Bb" } });
        unescape_sdk_parameters(&mut value);
        assert_eq!(value["o"]["p"], "a%2Bb");
    }
}
