//! The `console.log/warn/error` binding: lines recorded into the invocation's outcome,
//! never printed by the engine.

use std::rc::Rc;

use rquickjs::function::Rest;
use rquickjs::{Ctx, Function, Object, Value};

use super::{Invocation, LogLine, MAX_LOG_LINE, json, truncate};

/// Most lines kept per invocation; later ones are dropped, not refused.
const MAX_LOG_LINES: usize = 200;

pub(super) fn install<'js>(ctx: &Ctx<'js>, invocation: &Rc<Invocation>) -> rquickjs::Result<()> {
    let console = Object::new(ctx.clone())?;
    for level in ["log", "warn", "error"] {
        let inv = invocation.clone();
        let log = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
            inv.clock.check(&ctx)?;
            let mut text = args
                .0
                .into_iter()
                .map(|v| match v.as_string() {
                    Some(s) => s.to_string().unwrap_or_default(),
                    None => json::to_json(&ctx, v)
                        .map(|j| j.to_string())
                        .unwrap_or_default(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            truncate(&mut text, MAX_LOG_LINE);
            let mut logs = inv.logs.borrow_mut();
            if logs.len() < MAX_LOG_LINES {
                logs.push(LogLine {
                    level,
                    text,
                    at: chrono::Utc::now(),
                });
            }
            rquickjs::Result::Ok(())
        })?;
        console.set(level, log)?;
    }
    ctx.globals().set("console", console)
}
