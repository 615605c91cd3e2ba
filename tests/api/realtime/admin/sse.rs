//! `GET /1/admin/events` read as the dashboard reads it: streamed, with credentials in
//! a header, parsed into SSE messages.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{Cred, TestApp, with_cred};
use crate::sio::PATIENCE;

pub(super) enum Item {
    Message(Option<u64>, Value),
    Comment,
    Closed,
}

/// `GET /1/admin/events` read with `fetch()`-like streaming.
pub(super) struct EventStream {
    rx: mpsc::UnboundedReceiver<Item>,
    task: tokio::task::AbortHandle,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a stream; `Err` is the refusal's status and body.
pub(super) async fn open_stream(
    app: &TestApp,
    cred: &Cred,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<EventStream, (u16, Value)> {
    let mut request = with_cred(
        app.client.get(app.url(&format!("/1/admin/events{query}"))),
        cred,
    );
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await.unwrap();
        return Err((status, serde_json::from_str(&text).unwrap_or(json!(text))));
    }
    let kind = response.headers()["content-type"].to_str().unwrap();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            for item in take_blocks(&mut text) {
                let _ = tx.send(item);
            }
        }
        let _ = tx.send(Item::Closed);
    });
    Ok(EventStream {
        rx,
        task: task.abort_handle(),
    })
}

/// The complete SSE blocks at the front of `text`, taken out of it.
pub(super) fn take_blocks(text: &mut String) -> Vec<Item> {
    let mut items = Vec::new();
    while let Some(end) = text.find("\n\n") {
        let block: String = text.drain(..end + 2).collect();
        let (mut id, mut data) = (None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("JSON data"));
            } else if line.starts_with(':') {
                items.push(Item::Comment);
            }
        }
        if let Some(data) = data {
            items.push(Item::Message(id, data));
        }
    }
    items
}

impl EventStream {
    /// The next message within `wait`: `(id, data)`; `None` on timeout or close.
    pub(super) async fn next(&mut self, wait: Duration) -> Option<(Option<u64>, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await.ok()?? {
                Item::Message(id, data) => return Some((id, data)),
                Item::Comment => continue,
                Item::Closed => return None,
            }
        }
    }

    /// The first message `wanted` accepts (others are skipped).
    pub(super) async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (id, data) = self
                .next(PATIENCE)
                .await
                .unwrap_or_else(|| panic!("the stream never showed {what}"));
            if wanted(&data) {
                assert_eq!(
                    id,
                    data["id"].as_u64(),
                    "the SSE id is the event id: {data}"
                );
                return data;
            }
        }
    }

    /// Every message until none arrives for `quiet`.
    pub(super) async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut all = Vec::new();
        while let Some((_, data)) = self.next(quiet).await {
            all.push(data);
        }
        all
    }
}

pub(super) fn named(event: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m: &Value| m["event"] == json!(event)
}

/// Messages until the stream closes (`None` if it stays open past `PATIENCE`).
pub(super) async fn until_closed(stream: &mut EventStream) -> Option<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.rx.recv()).await {
            Err(_) => return None,
            Ok(None | Some(Item::Closed)) => return Some(seen),
            Ok(Some(Item::Message(_, data))) => seen.push(data),
            Ok(Some(Item::Comment)) => {}
        }
    }
}

pub(super) async fn until_closed_forever(stream: &mut EventStream) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        match stream.rx.recv().await {
            None | Some(Item::Closed) => return seen,
            Some(Item::Message(_, data)) => seen.push(data),
            Some(Item::Comment) => {}
        }
    }
}
