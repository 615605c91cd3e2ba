//! Each action's log: the last `LOG_LINES` lines of its console output and failures,
//! numbered by invocation, for `/1/action/config/{id}/logs` and `/1/action/logs`. Every
//! line also goes to tracing.
//!
//! Each line gets a `seq` from one counter for all actions, taken under the same lock
//! that stores the line: a reader that has seen `seq` n has seen every kept line below
//! it, so polling with `after` never misses one that is still kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::sandbox::Outcome;
use super::store::Action;
use super::{Actions, failure};

/// Lines kept per action.
pub const LOG_LINES: usize = 500;
/// Most lines one read of the logs of every action answers.
pub const ALL_LOGS_PAGE: usize = 1000;

#[derive(Default)]
pub(super) struct Logs {
    kept: Mutex<Kept>,
    /// Invocations of any action so far: numbers each one's lines.
    invocations: AtomicU64,
}

#[derive(Default)]
struct Kept {
    /// The last `LOG_LINES` lines of each action, by action id, oldest first.
    by_action: HashMap<i64, VecDeque<Line>>,
    /// The `seq` of the last line stored.
    last_seq: u64,
}

struct Line {
    seq: u64,
    action_id: i64,
    invocation: u64,
    at: DateTime<Utc>,
    level: &'static str,
    message: String,
}

impl Line {
    fn to_json(&self) -> Value {
        let at = self.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "seq": self.seq,
            "actionId": self.action_id,
            "invocation": self.invocation,
            "at": at,
            // The name this field had before `at`; kept for existing readers.
            "time": at,
            "level": self.level,
            "message": self.message,
        })
    }
}

/// Which lines a read wants.
#[derive(Debug, Clone, Copy)]
pub struct LogQuery {
    /// Only lines with a greater `seq`; then the oldest `last` of them, so a poller
    /// passing the last `seq` it saw catches up page by page.
    pub after: Option<u64>,
    /// Without `after`: the newest `last` lines.
    pub last: usize,
}

impl Logs {
    /// Keeps one invocation's console lines, then its failure if it failed.
    pub(super) fn record(&self, action: &Action, outcome: &Outcome) {
        let invocation = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut lines: Vec<(&'static str, String, DateTime<Utc>)> = outcome
            .logs
            .iter()
            .map(|l| (l.level, l.text.clone(), l.at))
            .collect();
        for (level, text, _) in &lines {
            tracing::info!(
                object = %action.object,
                trigger = %action.trigger.as_str(),
                action = %action.name,
                invocation,
                level,
                "{text}"
            );
        }
        if let Err(failure) = &outcome.result {
            let text = failure::describe(action, failure);
            log_failure(action, invocation, failure::level(failure), &text);
            lines.push(("failure", text, Utc::now()));
        }
        if lines.is_empty() {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let kept = &mut *kept;
        let log = kept.by_action.entry(action.id).or_default();
        for (level, message, at) in lines {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            kept.last_seq += 1;
            log.push_back(Line {
                seq: kept.last_seq,
                action_id: action.id,
                invocation,
                at,
                level,
                message,
            });
        }
    }

    /// A removed action's lines go with it.
    pub(super) fn forget(&self, id: i64) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.by_action.remove(&id);
        }
    }
}

/// The lines of one action's log that `query` wants, oldest first (at most `last`).
fn pick(log: &VecDeque<Line>, query: LogQuery) -> impl Iterator<Item = &Line> {
    let (from, to) = match query.after {
        Some(after) => {
            let from = log.partition_point(|l| l.seq <= after);
            (from, from.saturating_add(query.last).min(log.len()))
        }
        None => (log.len().saturating_sub(query.last), log.len()),
    };
    log.range(from..to)
}

/// A failure in the server log, at its level, in the words its action log keeps.
fn log_failure(action: &Action, invocation: u64, level: tracing::Level, text: &str) {
    let (object, trigger, name) = (&action.object, action.trigger.as_str(), &action.name);
    match level {
        tracing::Level::ERROR => {
            tracing::error!(object = %object, trigger = %trigger, action = %name, invocation, "{text}")
        }
        tracing::Level::WARN => {
            tracing::warn!(object = %object, trigger = %trigger, action = %name, invocation, "{text}")
        }
        _ => {
            tracing::info!(object = %object, trigger = %trigger, action = %name, invocation, "{text}")
        }
    }
}

impl Actions {
    /// Lines of an action's log, oldest first (at most `LOG_LINES`).
    pub fn logs(&self, id: i64, query: LogQuery) -> Vec<Value> {
        let Ok(kept) = self.inner.logs.kept.lock() else {
            return Vec::new();
        };
        kept.by_action
            .get(&id)
            .map(|log| pick(log, query).map(Line::to_json).collect())
            .unwrap_or_default()
    }

    /// Lines of every action's log, by `seq`, oldest first (at most `ALL_LOGS_PAGE`).
    pub fn all_logs(&self, query: LogQuery) -> Vec<Value> {
        let query = LogQuery {
            last: query.last.min(ALL_LOGS_PAGE),
            ..query
        };
        let Ok(kept) = self.inner.logs.kept.lock() else {
            return Vec::new();
        };
        // Each log is in `seq` order, so the lines wanted overall are among the ones
        // `pick` takes from each.
        let mut lines: Vec<&Line> = kept
            .by_action
            .values()
            .flat_map(|log| pick(log, query))
            .collect();
        lines.sort_unstable_by_key(|l| l.seq);
        let skip = match query.after {
            Some(_) => 0,
            None => lines.len().saturating_sub(query.last),
        };
        lines
            .into_iter()
            .skip(skip)
            .take(query.last)
            .map(Line::to_json)
            .collect()
    }
}

impl super::LogLine {
    /// `{level, message, at}`, as a test run reports it.
    pub fn to_json(&self) -> Value {
        json!({
            "level": self.level,
            "message": self.text,
            "at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }
}
