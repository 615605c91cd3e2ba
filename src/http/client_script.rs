//! `/socket.io/socket.io.js` and its siblings: the Socket.IO browser client, as the
//! Backand docs' set-up step (`<script src="…/socket.io/socket.io.js">`) and every
//! socket.io server serve it. The files are socket.io-client's own builds, copied by
//! `clients/build` from the version `clients/package-lock.json` pins (checked in CI),
//! and compiled in. Served before the Socket.IO layer, which would take the path for
//! an engine.io request.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// The socket.io-client version of the files (their ETag, as socket.io servers use).
pub const VERSION: &str = include_str!("client/VERSION");
const ETAG: &str = concat!("\"", include_str!("client/VERSION"), "\"");

const FILES: [(&str, &[u8]); 6] = [
    ("socket.io.js", include_bytes!("client/socket.io.js")),
    (
        "socket.io.js.map",
        include_bytes!("client/socket.io.js.map"),
    ),
    (
        "socket.io.min.js",
        include_bytes!("client/socket.io.min.js"),
    ),
    (
        "socket.io.min.js.map",
        include_bytes!("client/socket.io.min.js.map"),
    ),
    (
        "socket.io.esm.min.js",
        include_bytes!("client/socket.io.esm.min.js"),
    ),
    (
        "socket.io.esm.min.js.map",
        include_bytes!("client/socket.io.esm.min.js.map"),
    ),
];

/// Middleware outside the Socket.IO layer: answers GET and HEAD of the client files,
/// passes everything else on.
pub async fn serve(request: Request, next: Next) -> Response {
    let file = request
        .uri()
        .path()
        .strip_prefix("/socket.io/")
        .and_then(|name| FILES.iter().find(|(file, _)| *file == name));
    let method = request.method();
    let Some((name, bytes)) = file.filter(|_| method == Method::GET || method == Method::HEAD)
    else {
        return next.run(request).await;
    };
    let matches = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| {
            given
                .split(',')
                .map(str::trim)
                .any(|tag| tag == ETAG || tag.strip_prefix("W/") == Some(ETAG) || tag == "*")
        });
    let content_type = if name.ends_with(".map") {
        "application/json; charset=utf-8"
    } else {
        "application/javascript; charset=utf-8"
    };
    let (status, body) = if matches {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if method == Method::HEAD {
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, Body::from(*bytes))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // Revalidated on every load (cheap: a 304), so a new livebase's client is picked up.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=0"),
    );
    headers.insert(header::ETAG, HeaderValue::from_static(ETAG));
    if status == StatusCode::OK {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    response
}
