//! Each action's log: the last `LOG_LINES` lines of its console output and failures,
//! numbered by invocation, for `/1/action/config/{id}/logs`. Every line also goes to
//! tracing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::sandbox::Outcome;
use super::store::Action;
use super::{Actions, failure};

/// Lines kept per action.
pub const LOG_LINES: usize = 500;

#[derive(Default)]
pub(super) struct Logs {
    /// The last `LOG_LINES` lines of each action, by action id.
    kept: Mutex<HashMap<i64, VecDeque<Value>>>,
    /// Invocations of any action so far: numbers each one's lines.
    invocations: AtomicU64,
}

impl Logs {
    /// Keeps one invocation's console lines, then its failure if it failed.
    pub(super) fn record(&self, action: &Action, outcome: &Outcome) {
        let invocation = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut lines: Vec<(&str, String)> = outcome
            .logs
            .iter()
            .map(|l| (l.level, l.text.clone()))
            .collect();
        for (level, text) in &lines {
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
            lines.push(("failure", text));
        }
        if !lines.is_empty()
            && let Ok(mut kept) = self.kept.lock()
        {
            let kept = kept.entry(action.id).or_default();
            for (level, text) in lines {
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(json!({
                    "invocation": invocation, "time": time, "level": level, "message": text,
                }));
            }
        }
    }

    /// A removed action's lines go with it.
    pub(super) fn forget(&self, id: i64) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(&id);
        }
    }
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
    /// The last lines of an action's log, oldest first (at most `LOG_LINES`).
    pub fn logs(&self, id: i64, last: usize) -> Vec<Value> {
        let Ok(kept) = self.inner.logs.kept.lock() else {
            return Vec::new();
        };
        kept.get(&id)
            .map(|l| {
                l.iter()
                    .skip(l.len().saturating_sub(last))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
