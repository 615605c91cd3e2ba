//! The `db.get/list/create/update/remove/query` binding over `actions::db::Db`: synchronous
//! for the action; a refusal throws an Error carrying the REST status (`e.status`) and
//! message.

use std::rc::Rc;

use rquickjs::function::{Flat, FromParams, Opt};
use rquickjs::{Ctx, Function, Object, Value};
use serde_json::Value as Json;

use super::{Clock, Invocation, json, own_errors};
use crate::actions::db::{Db, DbCall};

/// Turns one function's arguments into the call it makes (or throws).
type ToCall<'js, A> = fn(&Ctx<'js>, A) -> rquickjs::Result<DbCall>;

pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    db: &Db,
    invocation: &Rc<Invocation>,
) -> rquickjs::Result<()> {
    let object = Object::new(ctx.clone())?;
    let get: ToCall<'js, (String, Value<'js>)> =
        |ctx, (name, id)| Ok(DbCall::Get(name, id_of(ctx, &id)?));
    let list: ToCall<'js, (String, Opt<Value<'js>>)> = |ctx, (name, query)| {
        let query = match query.0 {
            Some(q) => json::to_json(ctx, q)?,
            None => Json::Null,
        };
        Ok(DbCall::List(name, query))
    };
    let create: ToCall<'js, (String, Value<'js>)> =
        |ctx, (name, data)| Ok(DbCall::Create(name, json::to_json(ctx, data)?));
    let update: ToCall<'js, (String, Value<'js>, Value<'js>)> = |ctx, (name, id, data)| {
        let id = id_of(ctx, &id)?;
        let data = json::to_json(ctx, data)?;
        Ok(DbCall::Update(name, id, data))
    };
    let remove: ToCall<'js, (String, Value<'js>)> =
        |ctx, (name, id)| Ok(DbCall::Remove(name, id_of(ctx, &id)?));
    add(ctx, &object, db, invocation, "get", get)?;
    add(ctx, &object, db, invocation, "list", list)?;
    add(ctx, &object, db, invocation, "create", create)?;
    add(ctx, &object, db, invocation, "update", update)?;
    add(ctx, &object, db, invocation, "remove", remove)?;
    let query: ToCall<'js, (String, Opt<Value<'js>>)> = |ctx, (name, params)| {
        let params = match params.0 {
            Some(p) => json::to_json(ctx, p)?,
            None => Json::Null,
        };
        Ok(DbCall::Query(name, params))
    };
    add(ctx, &object, db, invocation, "query", query)?;
    ctx.globals().set("db", object)
}

/// Sets `object[name]`: arguments converted as `A`, then `to_call`, then `answer`.
fn add<'js, A>(
    ctx: &Ctx<'js>,
    object: &Object<'js>,
    db: &Db,
    invocation: &Rc<Invocation>,
    name: &str,
    to_call: ToCall<'js, A>,
) -> rquickjs::Result<()>
where
    A: FromParams<'js> + 'js,
{
    let (db, inv) = (db.clone(), invocation.clone());
    let function = Function::new(ctx.clone(), move |ctx: Ctx<'js>, Flat(args): Flat<A>| {
        let call = to_call(&ctx, args)?;
        answer(&ctx, &db, &inv.clock, call)
    })?;
    object.set(name, function)
}

/// Runs `call`, the deadline checked around it: a loop of calls runs too few JS steps
/// to be interrupted.
fn answer<'js>(
    ctx: &Ctx<'js>,
    db: &Db,
    clock: &Clock,
    call: DbCall,
) -> rquickjs::Result<Value<'js>> {
    clock.check(ctx)?;
    let answer = db.run(call);
    clock.check(ctx)?;
    match answer {
        Ok(json) => ctx.json_parse(json.to_string()),
        Err((status, message)) => {
            let error = rquickjs::Exception::from_message(ctx.clone(), &message)?;
            error.as_object().set("status", status)?;
            Err(error.throw())
        }
    }
}

fn id_of(ctx: &Ctx<'_>, value: &Value<'_>) -> rquickjs::Result<i64> {
    let number = value
        .as_number()
        .or_else(|| value.as_string()?.to_string().ok()?.parse::<f64>().ok());
    match number {
        Some(n) if n.fract() == 0.0 && (1.0..9.0e15).contains(&n) => Ok(n as i64),
        _ => {
            let error = rquickjs::Exception::throw_type(ctx, "a row id is a positive integer");
            Err(own_errors::refused(ctx, error))
        }
    }
}
