//! The realtime observer: a raw Socket.IO client (`sio.rs`) signed in as the first Admin
//! (who may read every `fault_rows` row), joined to `db-fault_rows` and to the markers'
//! `db-fault_marks`, recording every `db_*` event it receives. When its server is
//! killed its socket drops; it then connects again, to the restarted server or to a
//! surviving node, with `auth: {token, lastSeq}` (the highest `seq` it received) and
//! joins both channels again at once, so each join replays what it missed before its
//! ack, which must say `recovered: true`. `events.rs` checks what it received.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::events::{self, Change, EventLog, MARKS_CHANNEL, ROWS_CHANNEL, Seen};
use crate::model::{CycleReport, Sent};
use crate::sio;

/// The channels joined, in ack-id order.
const CHANNELS: [&str; 2] = [ROWS_CHANNEL, MARKS_CHANNEL];
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a (re)connection is tried: the server or node may still be starting.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// What the observer's connections received and have not handed to a check yet.
#[derive(Default)]
struct Inbox {
    seen: Vec<Seen>,
    /// The highest `seq` received, on any connection: the next connection's `lastSeq`.
    last_seq: Option<u64>,
    /// `recovered` events at connection: (connection, recovered).
    recovered: Vec<(usize, bool)>,
    /// `db_*` frames that could not be read.
    unreadable: Vec<String>,
    /// The current connection's join acks' `seq`, by channel (a resumed join's).
    acks: HashMap<&'static str, u64>,
}

impl Inbox {
    fn take_frame(&mut self, conn: usize, frame: &str) {
        if let Some(parsed) = events::parse_db_event(frame) {
            match parsed {
                Ok((seq, change, problem)) => {
                    let channel = match change {
                        Change::Mark { .. } => MARKS_CHANNEL,
                        _ => ROWS_CHANNEL,
                    };
                    let after_ack = self.acks.get(channel).copied();
                    self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
                    self.seen.push(Seen {
                        conn,
                        seq,
                        change,
                        after_ack,
                        problem,
                    });
                }
                Err(e) => self.unreadable.push(format!("connection {conn}: {e}")),
            }
        } else if let Some(recovered) = events::parse_recovered(frame) {
            self.recovered.push((conn, recovered));
        }
    }
}

/// The realtime figures of a cycle or a run.
#[derive(Debug, Default, Clone)]
pub struct Realtime {
    /// `db_*` events received on the rows channel.
    pub received: usize,
    /// Acknowledged (or in-doubt, applied) writes whose one event came.
    pub matched: usize,
    /// Connections made with `lastSeq`; of them, after the observer's server was killed.
    pub resumes: usize,
    pub after_kill: usize,
    /// Join acks of resumed connections saying `recovered: true` / anything else.
    pub join_recovered: usize,
    pub join_not_recovered: usize,
    /// `recovered` events at connection saying true / false.
    pub connect_recovered: usize,
    pub connect_not_recovered: usize,
    /// Events replayed before a join's ack.
    pub replayed: usize,
    pub violations: Vec<String>,
}

impl Realtime {
    pub fn add(&mut self, r: &Realtime) {
        self.received += r.received;
        self.matched += r.matched;
        self.resumes += r.resumes;
        self.after_kill += r.after_kill;
        self.join_recovered += r.join_recovered;
        self.join_not_recovered += r.join_not_recovered;
        self.connect_recovered += r.connect_recovered;
        self.connect_not_recovered += r.connect_not_recovered;
        self.replayed += r.replayed;
        self.violations.extend(r.violations.iter().cloned());
    }
}

pub struct Observer {
    pub index: usize,
    token: String,
    /// The node it goes back to once that node is up again (0 on a single server).
    pub home: usize,
    /// The node it is connected to.
    pub at: Option<usize>,
    /// The node it was last connected to.
    pub last: Option<usize>,
    conns: usize,
    inbox: Arc<Mutex<Inbox>>,
    task: Option<(JoinHandle<String>, oneshot::Sender<()>)>,
    log: EventLog,
    /// Resumed connections whose `recovered` event has not come yet.
    awaiting_recovered: Vec<usize>,
}

impl Observer {
    pub fn new(index: usize, home: usize, token: String) -> Observer {
        Observer {
            index,
            token,
            home,
            at: None,
            last: None,
            conns: 0,
            inbox: Arc::default(),
            task: None,
            log: EventLog::default(),
            awaiting_recovered: Vec::new(),
        }
    }

    /// Connects to `node` at `addr` (with `lastSeq` once it received anything) and joins
    /// both channels, recording what comes meanwhile; then listens in a task until the
    /// socket ends or `close`. Answers the resume's figures, with a join ack of a resumed
    /// connection that does not say `recovered: true` as a violation.
    pub async fn connect(
        &mut self,
        addr: SocketAddr,
        node: usize,
        after_kill: bool,
    ) -> Result<Realtime> {
        let mut rt = Realtime::default();
        let resumed_from = self.inbox.lock().unwrap().last_seq;
        let mut auth = json!({ "token": self.token });
        if let Some(last) = resumed_from {
            auth["lastSeq"] = json!(last);
        }
        let due = Instant::now() + CONNECT_WITHIN;
        let mut ws = loop {
            match sio::connect_auth(addr, Ipv4Addr::LOCALHOST.into(), &auth).await {
                Ok(ws) => break ws,
                Err(e) if Instant::now() < due => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(e.context(format!("observer {} connecting to {addr}", self.index)));
                }
            }
        };
        self.conns += 1;
        let conn = self.conns;
        self.inbox.lock().unwrap().acks.clear();
        let mut answers: Vec<Option<(Option<bool>, Option<u64>)>> = vec![None; CHANNELS.len()];
        let inbox = self.inbox.clone();
        // One join at a time: two answers written back to back can wait ~40 ms for the
        // client's delayed ACK (Nagle; the server leaves it on).
        let joining = async {
            for (id, channel) in CHANNELS.iter().enumerate() {
                sio::send(&mut ws, format!("42{id}{}", json!(["join", channel]))).await?;
                while answers[id].is_none() {
                    let frame = sio::next_text(&mut ws).await?;
                    if frame == "2" {
                        sio::send(&mut ws, "3".into()).await?;
                    } else if let Some((acked, data)) = events::parse_ack(&frame) {
                        if acked != id as u64 {
                            bail!("an ack for no request waiting: {frame}");
                        }
                        if data["ok"] != json!(true) {
                            bail!("join {channel}: {data}");
                        }
                        let seq = data["seq"].as_u64();
                        if let Some(seq) = seq {
                            inbox.lock().unwrap().acks.insert(channel, seq);
                        }
                        answers[id] = Some((data["recovered"].as_bool(), seq));
                    } else {
                        inbox.lock().unwrap().take_frame(conn, &frame);
                    }
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(JOIN_TIMEOUT, joining)
            .await
            .context("no join ack within 30 s")?
            .with_context(|| format!("observer {} joining on {addr}", self.index))?;
        // Per channel: the join ack's `recovered` and `seq` (absent on a fresh connection).
        let acks: Vec<_> = CHANNELS
            .iter()
            .zip(&answers)
            .map(|(channel, a)| {
                let (recovered, seq) = a.unwrap_or_default();
                (*channel, recovered, seq)
            })
            .collect();
        // Rows-channel events that came before that join's ack, up to its `seq`: replayed.
        let rows_ack = acks[0].2;
        let replayed = self
            .inbox
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.conn == conn && s.after_ack.is_none())
            .filter(|s| !matches!(s.change, Change::Mark { .. }))
            .filter(|s| rows_ack.is_some_and(|ack| s.seq <= ack))
            .count();
        if let Some(from) = resumed_from {
            rt.resumes += 1;
            rt.after_kill += usize::from(after_kill);
            rt.replayed += replayed;
            self.awaiting_recovered.push(conn);
            for (channel, recovered, seq) in &acks {
                if *recovered == Some(true) {
                    rt.join_recovered += 1;
                } else {
                    rt.join_not_recovered += 1;
                    rt.violations.push(format!(
                        "observer {} resumed from seq {from} on node {node} (connection {conn}): \
                         the join of {channel} was acked recovered {recovered:?}, seq {seq:?}",
                        self.index
                    ));
                }
            }
        }
        self.at = Some(node);
        self.last = Some(node);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let inbox = self.inbox.clone();
        let task = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = &mut stopped => return "closed by the observer".to_string(),
                    message = ws.next() => message,
                };
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let text = text.as_str();
                        if text == "2" {
                            if let Err(e) = sio::send(&mut ws, "3".into()).await {
                                return format!("pong failed: {e}");
                            }
                        } else if text.starts_with("42") {
                            inbox.lock().unwrap().take_frame(conn, text);
                        } else if text.starts_with("41") || text.starts_with('1') {
                            return format!("closed by the server ({text})");
                        }
                    }
                    Some(Ok(Message::Close(_))) => return "WebSocket close".to_string(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("error: {e}"),
                    None => return "end of stream".to_string(),
                }
            }
        });
        self.task = Some((task, stop));
        Ok(rt)
    }

    /// Waits for the socket to end, as it must when its server was killed or stopped.
    /// How it ended, or `None` if it was still open after `within` (it is cut then).
    pub async fn wait_dropped(&mut self, within: Duration) -> Option<String> {
        self.at = None;
        let (task, stop) = self.task.take()?;
        let abort = task.abort_handle();
        match tokio::time::timeout(within, task).await {
            Ok(Ok(how)) => Some(how),
            Ok(Err(e)) => Some(format!("listener failed: {e}")),
            Err(_) => {
                let _ = stop.send(());
                abort.abort();
                None
            }
        }
    }

    /// Ends the connection (what was received so far is kept).
    pub async fn close(&mut self) {
        self.at = None;
        if let Some((task, stop)) = self.task.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Waits until the `db_created` of marker `key` has come.
    pub async fn wait_mark(&self, key: &str, within: Duration) -> bool {
        let due = Instant::now() + within;
        loop {
            let found = self
                .inbox
                .lock()
                .unwrap()
                .seen
                .iter()
                .any(|s| matches!(&s.change, Change::Mark { key: k } if k == key));
            if found {
                return true;
            }
            if Instant::now() >= due {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checks everything received since the last check against the cycle's writes
    /// (`events.rs`), once the cycle's marker came; adds the figures to `rt`.
    pub fn check(&mut self, sent: &[Sent], report: &CycleReport, rt: &mut Realtime) {
        let (seen, recovered, unreadable) = {
            let mut inbox = self.inbox.lock().unwrap();
            (
                std::mem::take(&mut inbox.seen),
                std::mem::take(&mut inbox.recovered),
                std::mem::take(&mut inbox.unreadable),
            )
        };
        let name = format!("observer {}", self.index);
        for (conn, ok) in recovered {
            self.awaiting_recovered.retain(|c| *c != conn);
            if ok {
                rt.connect_recovered += 1;
            } else {
                rt.connect_not_recovered += 1;
                rt.violations.push(format!(
                    "{name}, connection {conn}: `recovered` at connection said false"
                ));
            }
        }
        // The current connection must have had it by now; one that ended first may not.
        if self.task.is_some() && self.awaiting_recovered.contains(&self.conns) {
            rt.violations.push(format!(
                "{name}, connection {}: resumed, and no `recovered` event came",
                self.conns
            ));
        }
        self.awaiting_recovered.clear();
        rt.violations
            .extend(unreadable.into_iter().map(|u| format!("{name}: {u}")));
        let r = self
            .log
            .check(sent, &report.applied_doubts, &report.create_seqs, &seen);
        rt.received += r.counts.received;
        rt.matched += r.counts.matched;
        rt.violations
            .extend(r.violations.into_iter().map(|v| format!("{name}: {v}")));
    }
}
