//! The `socket.emitUsers/emitRole/emitAll/broadcast` bindings: each records an `Emit`
//! into the invocation's outcome, delivered by the caller only if the invocation
//! succeeds.

use std::rc::Rc;

use rquickjs::function::{Flat, FromParams};
use rquickjs::{Ctx, Function, Object, Value};
use serde_json::Value as Json;

use super::{Emit, Invocation, json, own_errors};

/// Most emits one invocation may hold.
const MAX_EMITS: usize = 1000;

/// Splits one function's arguments into its emit (`data` still null) and the data.
type Split<'js, A> = fn(A) -> (Emit, Value<'js>);

pub(super) fn install<'js>(ctx: &Ctx<'js>, invocation: &Rc<Invocation>) -> rquickjs::Result<()> {
    let socket = Object::new(ctx.clone())?;
    let users: Split<'js, (String, Value<'js>, Vec<String>)> = |(event, data, users)| {
        let emit = Emit::Users {
            event,
            data: Json::Null,
            users,
        };
        (emit, data)
    };
    let role: Split<'js, (String, Value<'js>, String)> = |(event, data, role)| {
        let emit = Emit::Role {
            event,
            data: Json::Null,
            role,
        };
        (emit, data)
    };
    let all: Split<'js, (String, Value<'js>)> = |(event, data)| {
        let emit = Emit::All {
            event,
            data: Json::Null,
        };
        (emit, data)
    };
    let room: Split<'js, (String, String, Value<'js>)> = |(room, event, data)| {
        let emit = Emit::Room {
            room,
            event,
            data: Json::Null,
        };
        (emit, data)
    };
    add(ctx, &socket, invocation, "emitUsers", users)?;
    add(ctx, &socket, invocation, "emitRole", role)?;
    add(ctx, &socket, invocation, "emitAll", all)?;
    add(ctx, &socket, invocation, "broadcast", room)?;
    ctx.globals().set("socket", socket)
}

/// Sets `socket[name]`: its arguments converted as `A` (a wrong type throws before
/// anything is recorded), split, then recorded.
fn add<'js, A>(
    ctx: &Ctx<'js>,
    socket: &Object<'js>,
    invocation: &Rc<Invocation>,
    name: &str,
    split: Split<'js, A>,
) -> rquickjs::Result<()>
where
    A: FromParams<'js> + 'js,
{
    let inv = invocation.clone();
    let function = Function::new(ctx.clone(), move |ctx: Ctx<'js>, Flat(args): Flat<A>| {
        let (emit, data) = split(args);
        record(&ctx, &inv, emit, data)
    })?;
    socket.set(name, function)
}

/// Checks the clock, takes the size of the data and of the names (event, room, role,
/// users) from the budget, records the emit. The names were copied out of the engine
/// to call us; counted here, they cannot be kept beyond it.
fn record<'js>(
    ctx: &Ctx<'js>,
    inv: &Invocation,
    mut emit: Emit,
    data: Value<'js>,
) -> rquickjs::Result<()> {
    inv.clock.check(ctx)?;
    if inv.emits.borrow().len() >= MAX_EMITS {
        let error = rquickjs::Exception::throw_range(
            ctx,
            &format!("an action may emit at most {MAX_EMITS} events"),
        );
        return Err(own_errors::refused(ctx, error));
    }
    inv.spend(ctx, names_len(&emit), "socket emit")?;
    let json = json::to_json_spent(ctx, data, inv, "socket emit")?;
    match &mut emit {
        Emit::Users { data, .. }
        | Emit::Role { data, .. }
        | Emit::All { data, .. }
        | Emit::Room { data, .. } => *data = json,
    }
    inv.emits.borrow_mut().push(emit);
    Ok(())
}

/// Bytes of the names an emit carries besides its data.
fn names_len(emit: &Emit) -> usize {
    match emit {
        Emit::Users { event, users, .. } => {
            event.len() + users.iter().map(String::len).sum::<usize>()
        }
        Emit::Role { event, role, .. } => event.len() + role.len(),
        Emit::All { event, .. } => event.len(),
        Emit::Room { room, event, .. } => room.len() + event.len(),
    }
}
