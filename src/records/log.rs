//! A change's event as the event log keeps it (`store::events`), and back.
//!
//! The body holds what delivery and after hooks need and the log's columns do not: the
//! row after and before the change, the input after before hooks, who wrote it (without
//! their session, which only revocation uses), and what the write's before actions
//! emitted (delivered with it, from the log).
//!
//! What a change's after actions emit is logged as an entry of its own, once they ran
//! (`emitted`): no object and no row, only the emits, who caused them, and (as its
//! `row_id`) the number of the change, whose after hooks it marks done.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{RecordEvent, Verb};
use crate::auth::Identity;
use crate::store::Record;
use crate::store::events::{EMITTED, LoggedEvent, NewEvent};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    record: Option<Row>,
    previous: Option<Row>,
    input: Value,
    actor: Actor,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    emits: Vec<Value>,
}

#[derive(Serialize, Deserialize)]
struct Row {
    owner: Option<i64>,
    fields: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Actor {
    user_id: Option<i64>,
    username: String,
    role: String,
    #[serde(default)]
    master: bool,
}

fn row(record: &Option<Record>) -> Option<Row> {
    record.as_ref().map(|r| Row {
        owner: r.owner,
        fields: r.fields.clone(),
    })
}

fn record(id: i64, row: Option<Row>) -> Option<Record> {
    row.map(|r| Record {
        id,
        owner: r.owner,
        fields: r.fields,
    })
}

pub(super) fn verb_label(verb: Verb) -> &'static str {
    match verb {
        Verb::Created => "created",
        Verb::Updated => "updated",
        Verb::Deleted => "deleted",
    }
}

fn verb_of(label: &str) -> Option<Verb> {
    Some(match label {
        "created" => Verb::Created,
        "updated" => Verb::Updated,
        "deleted" => Verb::Deleted,
        // Never a change: its empty object says so (`RecordEvent::emits_only`).
        EMITTED => Verb::Updated,
        _ => return None,
    })
}

/// The log's form of `event` (its `seq` is given by the log).
pub(super) fn to_new(event: &RecordEvent) -> NewEvent {
    let body = Body {
        record: row(&event.record),
        previous: row(&event.previous),
        input: event.input.clone(),
        actor: Actor {
            user_id: event.actor.user_id,
            username: event.actor.username.clone(),
            role: event.actor.role.clone(),
            master: event.actor.master,
        },
        emits: event.emits.as_ref().clone(),
    };
    NewEvent {
        object: event.object.clone(),
        verb: match event.is_emits_only() {
            true => EMITTED,
            false => verb_label(event.verb),
        },
        row_id: event.id,
        owner: event.owner(),
        body: serde_json::to_string(&body).expect("an event body serialises"),
        after_pending: event.after_pending,
    }
}

/// The event a log row holds; `None` for a row this version cannot read.
pub(super) fn from_logged(logged: LoggedEvent) -> Option<RecordEvent> {
    let verb = verb_of(&logged.verb)?;
    if (logged.verb == EMITTED) != logged.object.is_empty() {
        return None;
    }
    let bytes = logged.body.len();
    let body: Body = serde_json::from_str(&logged.body).ok()?;
    let Actor {
        user_id,
        username,
        role,
        master,
    } = body.actor;
    Some(RecordEvent {
        seq: logged.seq,
        object: logged.object,
        verb,
        id: logged.row_id,
        record: record(logged.row_id, body.record),
        previous: record(logged.row_id, body.previous),
        input: body.input,
        actor: Identity {
            user_id,
            username,
            role,
            master,
            session: None,
        },
        emits: Arc::new(body.emits),
        after_pending: logged.after_pending,
        bytes,
    })
}
