//! Concurrent writers: each owns the keys `w<index>-…`, sends one request at a time on
//! its own keep-alive connection, and records what became of every request it sent.
//! A writer stops at the stop flag or at its first request without an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use crate::livebase::Api;
use crate::model::{self, Op, Outcome, Refusal, Row, Sent};

pub struct Writer {
    pub index: usize,
    pub cycle: usize,
    /// This writer's live rows, for updates, deletes and duplicate keys.
    pub live: Vec<(String, Row)>,
    pub rng: Rng,
}

/// A request that got no answer: when it was sent and how its connection ended.
pub struct Unanswered {
    pub key: String,
    pub sent_at: Instant,
    pub error: String,
}

impl Writer {
    pub async fn run(mut self, api: Api, stop: Arc<AtomicBool>) -> (Vec<Sent>, Option<Unanswered>) {
        let mut sent = Vec::new();
        let mut unanswered = None;
        let mut conn = None;
        let mut next = 0u64;
        while !stop.load(Ordering::SeqCst) {
            next += 1;
            let (key, op, request) = self.next_request(&api, next);
            if conn.is_none() {
                match api.connect().await {
                    Ok(c) => conn = Some(c),
                    // Nothing sent: the server is gone (the kill), or was never there.
                    Err(_) => break,
                }
            }
            let Some(c) = conn.as_mut() else { break };
            let sent_at = Instant::now();
            let outcome = match c.send(&request).await {
                Ok(response) if (200..300).contains(&response.status) => {
                    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                    let id = body["__metadata"]["id"]
                        .as_str()
                        .and_then(|s| s.parse().ok());
                    Outcome::Acked { id }
                }
                Ok(response) => Outcome::Refused {
                    status: response.status,
                },
                Err(e) => {
                    unanswered = Some(Unanswered {
                        key: key.clone(),
                        sent_at,
                        error: e.root_cause().to_string(),
                    });
                    Outcome::InDoubt
                }
            };
            self.learn(&key, &op, &outcome);
            let in_doubt = outcome == Outcome::InDoubt;
            sent.push(Sent { key, op, outcome });
            if in_doubt {
                break;
            }
        }
        (sent, unanswered)
    }

    /// Picks the next write: mostly creates, then updates and deletes of live rows,
    /// and some writes the server must refuse.
    fn next_request(&mut self, api: &Api, n: u64) -> (String, Op, Vec<u8>) {
        let fresh = format!("w{}-c{}-{n}", self.index, self.cycle);
        let roll = self.rng.below(100);
        let pick = if self.live.is_empty() {
            None
        } else {
            Some(self.rng.below(self.live.len() as u64) as usize)
        };
        match (roll, pick) {
            (0..=49, _) | (_, None) => {
                let ver = 1 + self.rng.below(9) as i64;
                let body = Value::Object(model::sent_fields(&fresh, ver)).to_string();
                let request = api.request("POST", "/1/objects/fault_rows", Some(&body));
                (fresh, Op::Create { ver }, request)
            }
            (50..=74, Some(i)) => {
                let (key, row) = self.live[i].clone();
                let to = row.ver + 1;
                let body = Value::Object(model::update_fields(&key, to)).to_string();
                let path = format!("/1/objects/fault_rows/{}", row.id);
                let request = api.request("PUT", &path, Some(&body));
                let op = Op::Update {
                    id: row.id,
                    from: row.ver,
                    to,
                };
                (key, op, request)
            }
            (75..=86, Some(i)) => {
                let (key, row) = self.live[i].clone();
                let path = format!("/1/objects/fault_rows/{}", row.id);
                let request = api.request("DELETE", &path, None);
                let op = Op::Delete {
                    id: row.id,
                    ver: row.ver,
                };
                (key, op, request)
            }
            (87..=92, Some(i)) => {
                let (key, row) = self.live[i].clone();
                let ver = row.ver + 1000;
                let body = Value::Object(model::sent_fields(&key, ver)).to_string();
                let request = api.request("POST", "/1/objects/fault_rows", Some(&body));
                (key, Op::Duplicate { ver }, request)
            }
            (_, Some(_)) => {
                let why = [Refusal::Action, Refusal::UnknownField, Refusal::WrongType]
                    [self.rng.below(3) as usize];
                let mut fields = model::sent_fields(&fresh, 1);
                match why {
                    Refusal::Action => {
                        fields.insert("label".into(), json!(format!("refuse:{fresh}")))
                    }
                    Refusal::UnknownField => fields.insert("colour".into(), json!("red")),
                    Refusal::WrongType => fields.insert("ver".into(), json!("seven")),
                };
                let body = Value::Object(fields).to_string();
                let request = api.request("POST", "/1/objects/fault_rows", Some(&body));
                (fresh, Op::Refused(why), request)
            }
        }
    }

    /// Keeps `live` in step with acknowledged writes.
    fn learn(&mut self, key: &str, op: &Op, outcome: &Outcome) {
        let Outcome::Acked { id } = outcome else {
            return;
        };
        match op {
            Op::Create { ver } => {
                if let Some(id) = id {
                    self.live
                        .push((key.to_string(), Row { id: *id, ver: *ver }));
                }
            }
            Op::Update { to, .. } => {
                if let Some(entry) = self.live.iter_mut().find(|(k, _)| k == key) {
                    entry.1.ver = *to;
                }
            }
            Op::Delete { .. } => self.live.retain(|(k, _)| k != key),
            Op::Duplicate { .. } | Op::Refused(_) => {}
        }
    }
}

/// xorshift64*: reproducible from `--seed`, no dependency.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
