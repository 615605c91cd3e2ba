//! Committed changes become socket events: `db_created` / `db_updated` / `db_deleted` on
//! `db-<object>` channels, Sails `{verb, id, data, previous}` events named after the
//! object, and LoopBack `/<object>/POST`-style names for objects that opt in. Each goes
//! to the rooms `rooms::readers_of_row` names, so only sockets whose user may read the
//! row receive it.
//!
//! Driven by the write path's event bus, so every source of writes (REST, virtual
//! requests, actions) is covered by one subscriber.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::rooms::{self, Audience, Feed};
use super::watch::Cause;
use super::{Realtime, emit_to};
use crate::records::wire;
use crate::records::{RecordEvent, Verb};
use crate::schema::ObjectSchema;

/// Delivers every committed change until the write path goes away.
pub async fn run(mut events: broadcast::Receiver<Arc<RecordEvent>>, realtime: Realtime) {
    loop {
        match events.recv().await {
            Ok(event) => deliver(&realtime, &event).await,
            Err(RecvError::Lagged(missed)) => {
                // Lost events may include role changes and deletions that should have
                // ended sockets, and every client missed changes: start everyone afresh.
                metrics::counter!("livebase_socket_events_lagged_total").increment(missed);
                tracing::error!(
                    missed,
                    "realtime fell behind the write path and lost events; disconnecting all sockets"
                );
                realtime.disconnect_all().await;
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn deliver(realtime: &Realtime, event: &RecordEvent) {
    let Some(object) = realtime.schema().object(&event.object).cloned() else {
        return;
    };
    let shared = &realtime.shared;
    let owner = event.owner();
    let row = event.record.as_ref().map(wire::row);
    let previous = event.previous.as_ref().map(wire::row);
    let id = event.id;

    let channel = rooms::db_channel(&object.name);
    let (name, data) = match event.verb {
        Verb::Created => ("db_created", row.clone().unwrap_or(Value::Null)),
        Verb::Updated => ("db_updated", row.clone().unwrap_or(Value::Null)),
        Verb::Deleted => ("db_deleted", json!(id)),
    };
    let readers = Audience::Readers {
        feed: Feed::DbChannel,
        object: &object,
        owner,
        id,
    };
    let cause = Cause::Change(event);
    emit_to(
        realtime.io(),
        shared,
        readers,
        cause,
        name,
        &json!({ "channel": channel, "data": data }),
    )
    .await;

    sails(
        realtime,
        &object,
        event,
        owner,
        row.as_ref(),
        previous.as_ref(),
    )
    .await;

    if object.publishes_loopback() {
        let (name, data) = match event.verb {
            Verb::Created => (format!("/{}/POST", object.name), row.clone()),
            Verb::Updated => (format!("/{}/{id}/PUT", object.name), row.clone()),
            Verb::Deleted => (
                format!("/{}/{id}/DELETE", object.name),
                Some(json!({ "id": id })),
            ),
        };
        let readers = Audience::Readers {
            feed: Feed::LoopBack,
            object: &object,
            owner,
            id,
        };
        emit_to(realtime.io(), shared, readers, cause, &name, &data).await;
    }
}

async fn sails(
    realtime: &Realtime,
    object: &ObjectSchema,
    event: &RecordEvent,
    owner: Option<i64>,
    row: Option<&Value>,
    previous: Option<&Value>,
) {
    let shared = &realtime.shared;
    let row_room = rooms::row(&object.name, event.id);
    // Watchers of the object who may read the row, and subscribers of this row.
    let targets = Audience::Readers {
        feed: Feed::SailsWatch,
        object,
        owner,
        id: event.id,
    };
    let mut payload = json!({ "id": event.id });
    match event.verb {
        Verb::Created => {
            payload["verb"] = json!("created");
            payload["data"] = row.cloned().unwrap_or(Value::Null);
        }
        Verb::Updated => {
            payload["verb"] = json!("updated");
            payload["data"] = row.cloned().unwrap_or(Value::Null);
            payload["previous"] = previous.cloned().unwrap_or(Value::Null);
        }
        Verb::Deleted => {
            payload["verb"] = json!("destroyed");
            payload["previous"] = previous.cloned().unwrap_or(Value::Null);
        }
    }
    emit_to(
        realtime.io(),
        shared,
        targets,
        Cause::Change(event),
        &object.name,
        &payload,
    )
    .await;
    if event.verb == Verb::Deleted
        && let Some(root) = realtime.root()
        && let Err(e) = root.to(row_room.clone()).leave(row_room).await
    {
        tracing::debug!(error = %e, "dropping a deleted row's subscribers");
    }
}
