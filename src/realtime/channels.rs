//! StaticBackend channels over Socket.IO events: `echo`, `join` → `joined`, `leave`,
//! `chan_in` → `chan_out` to members, and `db-<object>` channels whose members are
//! placed by the permission function (see `rooms`). Publishing into a `db-` channel is
//! refused: its events come only from committed changes.
//!
//! Every command answers through `reply::Reply`: the ack when the client asked for one,
//! otherwise an event (`joined`, `ok`, `error`).

use std::sync::Arc;

use super::cluster::SocketIo;
use super::cluster::SocketRef;
use serde_json::{Value, json};
use socketioxide::extract::{State, TryData};

use super::reply::Reply;
use super::rooms::{self, Audience, Feed};
use super::session::{self, NOT_AUTHENTICATED};
use super::watch::Cause;
use super::{Shared, emit_to};
use crate::auth::{Identity, access};
use crate::schema::{Operation, Schema};

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 100;

const REAUTHENTICATED: &str = "the socket re-authenticated meanwhile; join again";

pub fn register(s: &SocketRef) {
    s.on("echo", echo);
    s.on("join", join);
    s.on("leave", leave);
    s.on("chan_in", chan_in);
    s.on("presence", presence);
}

async fn echo(s: SocketRef, TryData(data): TryData<Value>, reply: Reply) {
    if !session::settled(&s).await {
        return;
    }
    if session::identity(&s).is_none() {
        return reply.error("echo", NOT_AUTHENTICATED);
    }
    let data = data.unwrap_or(Value::Null);
    reply.ok(&data, Some(("echo", &data)));
}

/// A channel name from a `join` or `leave` payload, `"name"` or `{channel: "name"}`
/// (`None` when the payload did not parse), checked. Public for the fuzz targets.
pub fn channel_name(data: Option<&Value>) -> Result<String, String> {
    let name = match data {
        Some(Value::String(name)) => name,
        Some(Value::Object(map)) => match map.get("channel") {
            Some(Value::String(name)) => name,
            _ => return Err("expected a channel name or {channel: name}".into()),
        },
        _ => return Err("expected a channel name or {channel: name}".into()),
    };
    validate_name(name)?;
    Ok(name.clone())
}

pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
        return Err(format!(
            "channel names are 1 to {MAX_CHANNEL_LEN} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(format!(
            "channel name `{}` has `{}`: use letters, digits and - _ . : @",
            name.escape_default(),
            bad.escape_default()
        ));
    }
    Ok(())
}

/// The room a `join` of `name` puts this socket in: a plain channel, or for `db-<object>`
/// the room the permission function picks (refused when the user may not read).
pub fn room_for(schema: &Schema, who: &Identity, name: &str) -> Result<String, String> {
    let Some(object_name) = rooms::db_channel_object(name) else {
        return Ok(rooms::channel(name));
    };
    let object = schema
        .object(object_name)
        .ok_or_else(|| format!("no object named `{object_name}` for channel `{name}`"))?;
    rooms::reader(
        Feed::DbChannel,
        object,
        access(who, object, Operation::Read),
    )
    .ok_or_else(|| {
        format!(
            "role `{}` may not read `{}`, so it may not join `{name}`",
            who.role, object.name
        )
    })
}

async fn join(
    s: SocketRef,
    io: SocketIo,
    State(shared): State<Arc<Shared>>,
    TryData(data): TryData<Value>,
    reply: Reply,
) {
    if !session::settled(&s).await {
        return;
    }
    let Some(who) = session::identity(&s) else {
        return reply.error("join", NOT_AUTHENTICATED);
    };
    let name = match channel_name(data.as_ref().ok()) {
        Ok(name) => name,
        Err(e) => return reply.error("join", &e),
    };
    match room_for(&shared.schema, &who, &name) {
        Ok(room) => {
            let max = shared.limits.max_channels;
            let joined = s.rooms();
            let already = joined.iter().any(|r| *r == room);
            if !already
                && joined
                    .iter()
                    .filter(|r| rooms::is_joined_channel(r))
                    .count()
                    >= max
            {
                return reply.error(
                    "join",
                    &format!("a socket may be in at most {max} channels; leave one first"),
                );
            }
            // Entering a `presence-` channel is announced, so it is rate limited per
            // member.
            let announced = !already && super::presence::applies(&name);
            if announced && let Err(e) = super::presence::may_enter(&shared, &s, &who).await {
                return reply.error("join", &e);
            }
            // Within its resume window, a reconnected socket first gets what it missed.
            let resumed = match super::resume::pending(&s) {
                Some(resume) => {
                    match super::resume::join(&shared, &s, &who, vec![room], resume.after, None)
                        .await
                    {
                        Some(outcome) => Some(outcome),
                        None => return reply.error("join", REAUTHENTICATED),
                    }
                }
                None if !session::join_as(&s, &who, vec![room]) => {
                    return reply.error("join", REAUTHENTICATED);
                }
                None => None,
            };
            if announced {
                super::presence::entered(&shared, &io, &s, &who, &name).await;
            }
            // The member's own public id, so it can tell its messages in `chan_out`.
            let mut answer =
                json!({ "ok": true, "channel": name, "sid": &*session::public_id(&s) });
            if let Some(outcome) = resumed {
                answer["recovered"] = json!(outcome.recovered);
                answer["seq"] = json!(outcome.seq);
            }
            reply.ok(&answer, Some(("joined", &json!(name))));
        }
        Err(e) => reply.error("join", &e),
    }
}

async fn leave(
    s: SocketRef,
    io: SocketIo,
    State(shared): State<Arc<Shared>>,
    TryData(data): TryData<Value>,
    reply: Reply,
) {
    if !session::settled(&s).await {
        return;
    }
    let Some(who) = session::identity(&s) else {
        return reply.error("leave", NOT_AUTHENTICATED);
    };
    let name = match channel_name(data.as_ref().ok()) {
        Ok(name) => name,
        Err(e) => return reply.error("leave", &e),
    };
    // Leaving a db channel leaves whichever reader room the socket was given.
    if let Ok(room) = room_for(&shared.schema, &who, &name) {
        if s.rooms().iter().any(|r| *r == room) {
            super::resume::leaving(&s, [room.clone()]);
        }
        s.leave(room);
        if super::presence::applies(&name) {
            super::presence::left(&shared, &io, &s, Some(&name)).await;
        }
    }
    let done = json!({ "ok": true, "channel": name });
    reply.ok(
        &done,
        Some(("ok", &json!({ "event": "leave", "channel": name }))),
    );
}

async fn chan_in(
    s: SocketRef,
    io: SocketIo,
    State(shared): State<Arc<Shared>>,
    TryData(data): TryData<Value>,
    reply: Reply,
) {
    if !session::settled(&s).await {
        return;
    }
    let Some(who) = session::identity(&s) else {
        return reply.error("chan_in", NOT_AUTHENTICATED);
    };
    let (name, data) = match publication(data.ok()) {
        Ok(publication) => publication,
        Err(e) => return reply.error("chan_in", &e),
    };
    let out = json!({
        "channel": name,
        "data": data,
        "sid": &*session::public_id(&s),
    });
    emit_to(
        super::root_of(&io, &shared),
        &shared,
        Audience::Channel(&name),
        Cause::Publish { who: &who },
        "chan_out",
        &out,
    )
    .await;
    reply.ok(&json!({ "ok": true }), None);
}

/// `presence(channel)`: who is in a `presence-` channel the socket is in (`presence`).
async fn presence(
    s: SocketRef,
    State(shared): State<Arc<Shared>>,
    TryData(data): TryData<Value>,
    reply: Reply,
) {
    if !session::settled(&s).await {
        return;
    }
    if session::identity(&s).is_none() {
        return reply.error("presence", NOT_AUTHENTICATED);
    }
    let name = match channel_name(data.as_ref().ok()) {
        Ok(name) if !super::presence::applies(&name) => {
            return reply.error(
                "presence",
                &format!(
                    "only channels named `{}…` have presence",
                    super::presence::PREFIX
                ),
            );
        }
        Ok(name) => name,
        Err(e) => return reply.error("presence", &e),
    };
    match super::presence::members(&shared, &s, &name).await {
        Ok(list) => reply.ok(&list, Some(("presence", &list))),
        Err(e) => reply.error("presence", &e),
    }
}

/// The channel and data of a `chan_in` payload `{channel, data}` (`None` when the
/// payload did not parse); refused for a bad name or a `db-` channel. Public for the
/// fuzz targets.
pub fn publication(data: Option<Value>) -> Result<(String, Value), String> {
    let Some(Value::Object(mut message)) = data else {
        return Err("chan_in expects {channel, data}".into());
    };
    let name = match message.remove("channel") {
        Some(Value::String(name)) => name,
        _ => return Err("chan_in expects {channel, data}".into()),
    };
    validate_name(&name)?;
    if rooms::db_channel_object(&name).is_some() {
        return Err(format!(
            "cannot publish into database channel `{name}`: its events come only from committed changes"
        ));
    }
    Ok((name, message.remove("data").unwrap_or(Value::Null)))
}
