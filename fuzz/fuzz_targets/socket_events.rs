//! Socket.IO event payloads, after socketioxide has parsed them into JSON: Sails
//! virtual requests (`get` / `post` / `put` / `patch` / `delete` with `{method, url,
//! data, headers}`) through `realtime::sails::virtual_request` into the HTTP request the
//! router would run, and StaticBackend channel commands (`join`, `leave`, `chan_in`)
//! through `channel_name`, `room_for` and `publication`, for identities of every role.
//!
//! Checked: a virtual request carries the socket's identity and never a client-set
//! identity or framing header; its method is its event's; GET/DELETE have no body and
//! their `data` comes back out of the query string exactly; Sails aliases resolve to
//! `/1/objects/…`. A channel is joined only under a valid name, a `db-` channel only
//! when the permission function lets the identity read the object, and nothing is
//! published into a `db-` channel.
//!
//! Input: one selector byte (event and identity), then the payload as JSON text (text
//! that is not JSON stands for a payload socketioxide could not deserialize).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use livebase::auth::{Access, Identity, access};
use livebase::realtime::sails::SocketCaller;
use livebase::realtime::channels::{channel_name, publication, room_for, validate_name};
use livebase::realtime::sails::virtual_request;
use livebase::schema::Operation;
use livebase_fuzz::example_schema;
use serde_json::Value;

const EVENTS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "join", "leave", "chan_in",
];

/// Headers a virtual request must never carry from the client.
const FORBIDDEN: [&str; 5] = [
    "authorization",
    "anonymoustoken",
    "host",
    "content-length",
    "transfer-encoding",
];

fn identity(selector: u8) -> Identity {
    let user = |role: &str| Identity {
        user_id: Some(7),
        username: "fuzz@example.com".into(),
        role: role.into(),
        master: false,
        session: None,
    };
    match selector % 5 {
        0 => user("Admin"),
        1 => user("User"),
        2 => user("ReadOnly"),
        3 => Identity::guest(),
        _ => Identity {
            master: true,
            ..user("User")
        },
    }
}

fn sails(event: &str, data: Option<Value>, who: &Identity) {
    let schema = example_schema();
    let request = match virtual_request(event, data.clone(), schema, who) {
        Ok(request) => request,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    let Some(SocketCaller(caller)) = request.extensions().get::<SocketCaller>() else {
        panic!("a virtual request without the socket's identity");
    };
    assert_eq!(caller, who);
    for name in FORBIDDEN {
        assert!(
            !request.headers().contains_key(name),
            "client-set `{name}` reached the router"
        );
    }
    if let Some(content_type) = request.headers().get("content-type") {
        assert_eq!(content_type, "application/json");
    }
    let path = request.uri().path();
    assert!(path.starts_with('/'), "{path}");
    let method = request.method().clone();
    let expected = match event {
        "get" => Method::GET,
        "post" => Method::POST,
        "put" => Method::PUT,
        "patch" => Method::PATCH,
        _ => Method::DELETE,
    };
    let patched_row = event == "patch"
        && path
            .strip_prefix("/1/objects/")
            .map(|rest| rest.split('/').collect::<Vec<_>>())
            .is_some_and(|parts| parts.len() == 2 && !parts[0].is_empty() && parts[0] != "action");
    if patched_row {
        assert_eq!(
            method,
            Method::PUT,
            "a Sails PATCH of a row is a Backand PUT"
        );
    } else {
        assert_eq!(method, expected);
    }
    let Some(Value::Object(ctx)) = &data else {
        panic!("accepted a payload that is not an object");
    };
    let url = ctx
        .get("url")
        .and_then(Value::as_str)
        .expect("url required");
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let url_path = url.split_once('?').map_or(url, |(p, _)| p);
    let first = url_path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    // The router sees the path the handler subscribes by: the url's, aliases resolved.
    let aliased = url_path.trim_start_matches('/').split('/').count() <= 2
        && schema.object(first).is_some()
        && !["1", "api", "token", "healthz", "metrics"].contains(&first);
    let want_path = if aliased {
        format!("/1/objects{url_path}")
    } else {
        url_path.to_string()
    };
    assert_eq!(path, want_path, "url {url}");
    if method == Method::GET || method == Method::DELETE {
        let body = request.body();
        assert_eq!(http_body_len(body), 0, "a {method} request with a body");
        // `data` of a read is query parameters; with no query in the url, they are
        // exactly what the `Params` extractor reads back.
        if let (Some(Value::Object(params)), false) = (ctx.get("data"), url.contains('?')) {
            let query = request.uri().query().unwrap_or("");
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(query).expect("the query we built parses");
            let want: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect();
            assert_eq!(pairs, want, "query parameters changed on the way");
        }
    }
}

fn http_body_len(body: &axum::body::Body) -> u64 {
    use axum::body::HttpBody;
    body.size_hint().exact().expect("a buffered body")
}

fn channels(event: &str, data: Option<Value>, who: &Identity) {
    let schema = example_schema();
    match event {
        "chan_in" => {
            if let Ok((name, _)) = publication(data) {
                assert!(validate_name(&name).is_ok());
                assert!(!name.starts_with("db-"), "published into {name}");
            }
        }
        _ => {
            let Ok(name) = channel_name(data.as_ref()) else {
                return;
            };
            assert!(validate_name(&name).is_ok(), "{name}");
            assert!(!name.is_empty() && name.len() <= 100);
            let room = room_for(schema, who, &name);
            match name.strip_prefix("db-") {
                None => assert_eq!(room, Ok(format!("chan:{name}"))),
                Some(object) => match schema.object(object) {
                    None => assert!(room.is_err()),
                    Some(o) => {
                        let readable = access(who, o, Operation::Read);
                        assert_eq!(room.is_ok(), readable != Access::Denied, "{name}");
                        if let Ok(room) = room {
                            assert!(room.starts_with(&format!("db:{object}")), "{room}");
                        }
                    }
                },
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(selector) % EVENTS.len()];
    let who = identity(selector / 8);
    let payload: Option<Value> = serde_json::from_slice(payload).ok();
    if EVENTS[..5].contains(&event) {
        sails(event, payload, &who);
    } else {
        channels(event, payload, &who);
    }
});
