//! Backand's `files` action over HTTP, as `@backand/vanilla-sdk` calls it:
//! `POST /1/objects/action/{object}?name=files` with `{filename, filedata}` (base64)
//! answers `{"url": …}`; `DELETE` on the same URL with `{filename}` removes it; and
//! `GET /1/files/{object}/{stored name}` serves it back with the caller's credentials.
//!
//! Built into every object under the name `files`; an app's own on-demand action of
//! that name on an object takes it over there (see `is_builtin`). Uploaded bytes are
//! served so that they can never run script on the API's origin: only image, PDF and
//! plain-text types inline, everything else as a download, always `nosniff` and
//! `Content-Security-Policy: sandbox`.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::AppState;
use super::extract::{Caller, read_limited};
use crate::auth::Identity;
use crate::config::Config;
use crate::error::ApiError;
use crate::files::names;
use crate::realtime::sails::SocketCaller;

/// The action name Backand gave its Files action, and the SDK's examples use.
pub const ACTION_NAME: &str = "files";

/// Room in an upload body beyond the base64 itself: the JSON around it and a filename
/// of 255 bytes, each escaped as `\uXXXX` at worst.
const UPLOAD_OVERHEAD: usize = 4096;

pub fn router() -> Router<AppState> {
    Router::new().route("/1/files/{object}/{name}", get(serve_file))
}

/// Whether `?name=` on `object`'s on-demand route means the built-in action here.
pub fn is_builtin(state: &AppState, object: &str, name: Option<&str>) -> bool {
    name == Some(ACTION_NAME) && !state.actions.has_on_demand(object, ACTION_NAME)
}

/// Largest upload body: a file of `--max-file-bytes` in base64, or `--max-body-bytes`
/// when that is larger.
pub fn upload_body_limit(config: &Config) -> usize {
    let base64 = config.max_file_bytes.div_ceil(3).saturating_mul(4);
    config
        .max_body_bytes
        .max(base64.saturating_add(UPLOAD_OVERHEAD))
}

/// Whether a request is an upload to the `files` action by its URL alone (the body
/// limit is chosen before routing; the handler checks the limit again exactly).
pub fn is_upload_url(method: &Method, uri: &Uri) -> bool {
    *method == Method::POST
        && uri.path().starts_with("/1/objects/action/")
        && uri.path()["/1/objects/action/".len()..]
            .bytes()
            .all(|b| b != b'/')
        && uri.query().is_some_and(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .is_ok_and(|pairs| pairs.iter().any(|(k, v)| k == "name" && v == ACTION_NAME))
        })
}

/// The built-in action: `POST` stores, `DELETE` removes; other methods are refused.
pub async fn run_action(
    state: &AppState,
    who: &Identity,
    object: &str,
    method: &Method,
    headers: &HeaderMap,
    query_filename: Option<&str>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if *method == Method::POST {
        let limit = upload_body_limit(&state.config);
        let body = read_limited(body, limit).await?;
        let [filename, filedata] = fields(&body, ["filename", "filedata"])?;
        let data = decode(&state.files, &filedata)?;
        let file = state.files.store(who, object, &filename, &data).await?;
        let path = format!("/1/files/{object}/{}", file.stored_name);
        return Ok(Json(
            json!({ "url": public_url(&state.config, headers, &path) }),
        ));
    }
    if *method == Method::DELETE {
        let body = read_limited(body, state.config.max_body_bytes).await?;
        // A Socket.IO `delete` (Sails' convention) carries its data as query
        // parameters, and some HTTP clients cannot send a DELETE body: `?filename=`
        // stands in for the body when there is none.
        let filename = match query_filename {
            Some(name) if body.iter().all(u8::is_ascii_whitespace) => name.to_string(),
            _ => {
                let [filename] = fields(&body, ["filename"])?;
                filename
            }
        };
        let removed = state.files.remove(who, object, &filename).await?;
        return Ok(Json(json!({ "removed": removed })));
    }
    Err(ApiError::Status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("the `files` action takes POST (upload) or DELETE (remove), not {method}"),
    ))
}

/// The body's text fields, exactly these `names`, or a 400 naming what is wrong.
fn fields<const N: usize>(body: &[u8], names: [&str; N]) -> Result<[String; N], ApiError> {
    let expected = names.map(|n| format!("`{n}`")).join(", ");
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad(format!(
            "the files action body must be a JSON object with {expected}"
        )));
    };
    if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown field `{unknown}` in the files action body (it takes {expected})"
        )));
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = match map.remove(name) {
            Some(Value::String(text)) => text,
            None | Some(Value::Null) => {
                return Err(ApiError::bad(format!("`{name}` is required")));
            }
            Some(_) => return Err(ApiError::bad(format!("`{name}` must be a string"))),
        };
    }
    Ok(out)
}

/// The file in `filedata`: base64, padded or not, with a `data:…;base64,` prefix
/// tolerated (the SDK strips it, other callers may not). Too large is a 413 found
/// from the length alone, before anything is decoded.
fn decode(files: &crate::files::Files, filedata: &str) -> Result<Vec<u8>, ApiError> {
    let text = match filedata.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(',')
            .filter(|(meta, _)| meta.ends_with(";base64"))
            .map(|(_, data)| data)
            .ok_or_else(|| ApiError::bad("`filedata` is a data: URL that is not base64"))?,
        None => filedata,
    };
    let unpadded = text.trim_end_matches('=').len();
    files.check_size(unpadded / 4 * 3 + (unpadded % 4).saturating_sub(1))?;
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine
        .decode(text)
        .map_err(|e| ApiError::bad(format!("`filedata` is not base64: {e}")))
}

/// Absolute when the request named its host (what an `<img src>` on another origin
/// needs), the path otherwise (a Socket.IO request has no host).
fn public_url(config: &Config, headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(host) => {
            let scheme = if config.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}{path}")
        }
        None => path.to_string(),
    }
}

/// Who asks for a file: their credentials, checked as on every route, or, with none at
/// all, a guest (role `Public`) — what an `<img src>` sends. That gives nothing the
/// anonymous token would not, and that token ships inside every client of the app.
struct Reader(Identity);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bare = parts.extensions.get::<SocketCaller>().is_none()
            && !parts.headers.contains_key(header::AUTHORIZATION)
            && !parts.headers.contains_key("anonymoustoken");
        if bare {
            return Ok(Reader(Identity::guest()));
        }
        let Caller(who) = Caller::from_request_parts(parts, state).await?;
        Ok(Reader(who))
    }
}

async fn serve_file(
    State(state): State<AppState>,
    Reader(who): Reader,
    Path((object, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (file, opened) = state.files.open(&who, &object, &name).await?;
    let inline = names::inline_type(&file.stored_name);
    let disposition = format!(
        "{}; {}",
        if inline.is_some() {
            "inline"
        } else {
            "attachment"
        },
        disposition_filename(&file.filename)
    );
    let length = opened
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .len();
    let mut response = Body::from_stream(chunks(opened)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let fixed = [
        (
            header::CONTENT_TYPE,
            inline.unwrap_or("application/octet-stream"),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, "sandbox"),
        // Readable only with the caller's credentials: no shared cache may keep it.
        (header::CACHE_CONTROL, "private, no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Bytes read from disk.
const CHUNK: usize = 64 * 1024;

/// The file as a stream of chunks, ending after the first read error (which aborts
/// the response; its headers are already sent).
fn chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// `filename="…"` in plain ASCII (anything else `_`) and `filename*=` with the exact
/// name, as RFC 6266 advises.
fn disposition_filename(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(filename, percent_encoding::NON_ALPHANUMERIC);
    format!("filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}
