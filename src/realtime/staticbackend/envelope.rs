//! StaticBackend's envelope, as its server (`model.Command`) writes it and its client
//! (`@staticbackend/js`) reads it: `{sid, type, data, channel, token}`, every field
//! present, empty strings for what a message does not carry. Its server's `data` is a
//! string, so database events carry the row as JSON text (clients `JSON.parse` it);
//! `chan_out` carries what the sender published, as it was published.
//!
//! Which Socket.IO event or ack becomes which envelope is decided here, and only the
//! types StaticBackend clients know leave: other events of the socket (LoopBack names,
//! Sails events, action emits) are not StaticBackend messages. Two additions of
//! livebase's own: database events also carry `seq`, their number in the event log
//! (the SSE transport sends it as the event's `id:`, which EventSource sends back as
//! `Last-Event-ID` when it reconnects), and a connection that resumed that way gets a
//! `recovered` message `{recovered, seq, replayed}` once it authenticated.

use serde::Deserialize;
use serde_json::{Value, json};

/// An envelope from a client. Unknown fields (`auth`, `base`) are ignored, as its
/// server ignores them.
#[derive(Debug, Deserialize)]
pub struct Inbound {
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl Inbound {
    /// `data` as text (the client sends channel names and tokens there), else `None`.
    pub fn text(&self) -> Option<&str> {
        self.data.as_str().filter(|s| !s.is_empty())
    }

    /// The channel a `join`/`leave` names: in `data`, as the client sends it, or in
    /// `channel`.
    pub fn channel_named(&self) -> Option<String> {
        self.text()
            .or(self.channel.as_deref())
            .filter(|c| !c.is_empty())
            .map(str::to_string)
    }
}

/// One envelope to a client, as JSON text.
pub fn out(kind: &str, data: Value, channel: &str, sid: &str) -> String {
    json!({ "sid": sid, "type": kind, "data": data, "channel": channel, "token": "" }).to_string()
}

pub fn init(sid: &str) -> String {
    out("init", json!(sid), "", "")
}

pub fn error(message: &str, channel: &str) -> String {
    out("error", json!(message), channel, "")
}

/// The answer to a successful `auth`: the token the client goes on sending.
pub fn token(token: &str) -> String {
    out("token", json!(token), "", "")
}

/// The `seq` an outgoing envelope carries (database events), for the SSE `id:`.
pub fn seq_of(text: &str) -> Option<u64> {
    // Only database events carry one; the others are not parsed.
    if !text.contains("\"seq\":") {
        return None;
    }
    serde_json::from_str::<Value>(text)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// A command the bridge sent with an ack, waiting for it.
#[derive(Debug, Clone)]
pub enum Pending {
    Echo,
    Join(String),
    Leave(String),
    ChanIn(String),
    Presence(String),
}

/// The `{error}` text of a failed command's ack, if it failed.
fn ack_error(ack: &Value) -> Option<&str> {
    match ack {
        Value::Object(map) if map.len() == 1 => map.get("error")?.as_str(),
        _ => None,
    }
}

/// A command's ack as the envelope StaticBackend answers that command with.
pub fn from_ack(pending: &Pending, ack: &Value) -> String {
    let channel = match pending {
        Pending::Echo => "",
        Pending::Join(c) | Pending::Leave(c) | Pending::ChanIn(c) | Pending::Presence(c) => {
            c.as_str()
        }
    };
    if !matches!(pending, Pending::Echo)
        && let Some(message) = ack_error(ack)
    {
        return error(message, channel);
    }
    match pending {
        // StaticBackend's echo answers its text prefixed, so clients can tell it apart.
        Pending::Echo => match ack {
            Value::String(text) => out("echo", json!(format!("echo: {text}")), "", ""),
            other => out("echo", other.clone(), "", ""),
        },
        Pending::Join(c) => out("joined", json!(c), c, ""),
        // StaticBackend's `data` is text: the list as JSON text, as database rows travel.
        Pending::Presence(c) => out("presence", json!(ack.to_string()), c, ""),
        Pending::Leave(c) | Pending::ChanIn(c) => out("ok", json!(c), c, ""),
    }
}

/// A Socket.IO event of the bridged socket as a StaticBackend message, if it is one.
pub fn from_event(name: &str, arg: &Value) -> Option<String> {
    let text = |field: &str| arg.get(field).and_then(Value::as_str).unwrap_or("");
    match name {
        "chan_out" => Some(out(
            "chan_out",
            arg.get("data").cloned().unwrap_or(Value::Null),
            text("channel"),
            // The sender's public id, never its sid.
            text("sid"),
        )),
        "db_created" | "db_updated" | "db_deleted" => {
            let data = arg.get("data").cloned().unwrap_or(Value::Null);
            let mut envelope = json!({ "sid": "", "type": name, "data": data.to_string(),
                                       "channel": text("channel"), "token": "" });
            // Its number in the event log: the SSE `id:`, and for clients that resume.
            if let Some(seq) = arg.get("seq").and_then(Value::as_u64) {
                envelope["seq"] = json!(seq);
            }
            Some(envelope.to_string())
        }
        "recovered" => Some(out("recovered", arg.clone(), "", "")),
        // A member joined or left: `{channel, event, member}` as JSON text.
        "presence" => Some(out("presence", json!(arg.to_string()), text("channel"), "")),
        "error" => Some(error(text("message"), "")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn every_envelope_has_the_five_fields_and_db_rows_travel_as_json_text() {
        let row = json!({ "id": 3, "title": "a \"quoted\" title" });
        let got = parse(
            &from_event("db_created", &json!({ "channel": "db-posts", "data": row })).unwrap(),
        );
        assert_eq!(
            got,
            json!({ "sid": "", "type": "db_created", "channel": "db-posts", "token": "",
                    "data": row.to_string() })
        );
        assert_eq!(parse(got["data"].as_str().unwrap()), row);
        let deleted =
            parse(&from_event("db_deleted", &json!({ "channel": "db-posts", "data": 3 })).unwrap());
        assert_eq!(deleted["data"], json!("3"));
    }

    #[test]
    fn database_events_carry_their_seq_and_only_they_are_parsed_for_it() {
        let text = from_event(
            "db_updated",
            &json!({ "channel": "db-posts", "data": { "id": 1 }, "seq": 42 }),
        )
        .unwrap();
        assert_eq!(parse(&text)["seq"], json!(42));
        assert_eq!(seq_of(&text), Some(42));
        // A published message that holds a `seq` of its own is not numbered.
        let chan = from_event(
            "chan_out",
            &json!({ "channel": "c", "data": { "seq": 7 }, "sid": "pub" }),
        )
        .unwrap();
        assert_eq!(seq_of(&chan), None);
        assert_eq!(seq_of(&init("x")), None);
    }

    #[test]
    fn only_staticbackend_types_leave() {
        for name in [
            "authenticated",
            "/posts/POST",
            "posts",
            "__barrier",
            "joined",
        ] {
            assert_eq!(from_event(name, &json!({})), None, "{name}");
        }
        let chan = parse(
            &from_event(
                "chan_out",
                &json!({ "channel": "c", "data": { "m": 1 }, "sid": "pub" }),
            )
            .unwrap(),
        );
        assert_eq!(
            chan,
            json!({ "sid": "pub", "type": "chan_out", "data": { "m": 1 }, "channel": "c", "token": "" })
        );
    }

    #[test]
    fn acks_become_the_answers_staticbackend_gives() {
        let joined = parse(&from_ack(
            &Pending::Join("c".into()),
            &json!({ "ok": true, "channel": "c", "sid": "x" }),
        ));
        assert_eq!(
            (&joined["type"], &joined["data"]),
            (&json!("joined"), &json!("c"))
        );
        let refused = parse(&from_ack(
            &Pending::ChanIn("db-posts".into()),
            &json!({ "error": "cannot publish" }),
        ));
        assert_eq!(refused["type"], json!("error"));
        assert_eq!(refused["data"], json!("cannot publish"));
        let echo = parse(&from_ack(&Pending::Echo, &json!("hi")));
        assert_eq!(echo["data"], json!("echo: hi"));
        // An echoed object that happens to hold `error` is still an echo.
        let echo = parse(&from_ack(&Pending::Echo, &json!({ "error": "x" })));
        assert_eq!(echo["type"], json!("echo"));
    }
}
