//! Trigger actions as a `WriteHook` of the write path: before actions may change or
//! refuse a write; after actions run once it has committed and cannot undo it.

use serde_json::{Map, Value, json};

use super::sandbox::Call;
use super::store::Trigger;
use super::{Actions, failure};
use crate::error::ApiError;
use crate::records::{BoxFuture, Change, RecordEvent, Records, Staged, Verb, WriteHook};

impl WriteHook for Actions {
    /// Before actions, in name order: each may change `userInput` (what it leaves is
    /// written) or throw to refuse. Their emits are logged with the write's event and
    /// leave with it, only if it commits.
    fn before<'a>(
        &'a self,
        write: &'a Change<'a>,
        input: &'a mut Map<String, Value>,
        staged: &'a mut Staged,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let trigger = Trigger::before(write.verb);
            let actions = self.find(&write.object.name, trigger);
            for action in actions {
                let call = Call {
                    user_input: Value::Object(input.clone()),
                    db_row: row_value(write.previous),
                    parameters: json!({}),
                    user_profile: self.profile(write.who),
                    db: self.db(write.records, write.who),
                };
                let outcome = self.run(&action, call).await?;
                match outcome.result {
                    Ok(_) => {
                        match outcome.user_input {
                            Value::Object(changed) => *input = changed,
                            _ => {
                                return Err(ApiError::BadRequest(format!(
                                    "action `{}` left userInput not an object",
                                    action.name
                                )));
                            }
                        }
                        for emit in &outcome.emits {
                            staged.log_emit(emit.logged(&action.name));
                        }
                    }
                    Err(failure) => return Err(failure::refusal(&action, failure)),
                }
            }
            Ok(())
        })
    }

    /// After actions are owed: they run at least once, after a crash too.
    fn owes_after(&self, object: &str, verb: Verb) -> bool {
        !self.find(object, Trigger::after(verb)).is_empty()
    }

    /// After actions, in name order, after the commit: they cannot undo it; a failure
    /// is logged and its emits dropped. `parameters.seq` is the event's number in the
    /// log: an action run again after a crash can tell it has seen it. What the ones
    /// that succeeded emitted is answered, for the log (`WriteHook::after`).
    fn after<'a>(
        &'a self,
        records: &'a Records,
        event: &'a RecordEvent,
    ) -> BoxFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut emitted = Vec::new();
            let trigger = Trigger::after(event.verb);
            for action in self.find(&event.object, trigger) {
                let db_row = match event.verb {
                    Verb::Created => row_value(event.record.as_ref()),
                    _ => row_value(event.previous.as_ref()),
                };
                let user_input = event.input.clone();
                let call = Call {
                    user_input,
                    db_row,
                    parameters: json!({ "seq": event.seq }),
                    user_profile: self.profile(&event.actor),
                    db: self.db(records, &event.actor),
                };
                match self.run(&action, call).await {
                    Ok(outcome) if outcome.result.is_ok() => {
                        emitted.extend(outcome.emits.iter().map(|e| e.logged(&action.name)))
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(action = %action.name, error = %e, "after action"),
                }
            }
            emitted
        })
    }
}

/// `dbRow`: the row as the wire shows it, or `null` when there is none.
fn row_value(record: Option<&crate::store::Record>) -> Value {
    record.map(crate::records::wire::row).unwrap_or(Value::Null)
}
