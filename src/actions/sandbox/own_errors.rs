//! Telling a refusal from a bug. An action refuses by throwing: an `Error` it made, a
//! string, an object, or any error carrying a `status`. A bug is an error the engine
//! raised itself (a ReferenceError for a misspelt name, a TypeError for `null.x`, a
//! SyntaxError from `JSON.parse`, …): the action's author needs it reported as a failure
//! of the action (500) with where it happened, not handed to the client as a refusal.
//!
//! QuickJS gives an error the engine raised the same class and shape as one the action
//! made with `new TypeError(…)`, so the action's own errors are marked when they are made:
//! before the action's module runs, a small module of ours replaces the error
//! constructors in the action's (fresh) context with proxies that mark what they
//! construct. The engine builds its errors from the intrinsic prototypes, not through
//! these globals, so its errors stay unmarked. `instanceof`, `e.constructor === TypeError`,
//! subclassing and static members behave as before; the mark is a non-enumerable own
//! property, and the proxy's frames are cut from the start of the marked error's stack.
//!
//! This module decides only refusal or bug; the status and words of each are
//! `actions::failure`'s. It must not let anything the action can reach outlive the
//! invocation: the proxies live in the invocation's own context.

use rquickjs::module::{Declared, WriteOptions};
use rquickjs::{Context, Ctx, Exception, Module, Object, Runtime, Value, qjs};

use super::{Clock, settle};

/// The name our module's frames carry in a stack.
const MODULE: &str = "livebase-own-errors";
/// The mark on an error the action made; set by `SOURCE`.
const MARK: &str = "livebase.ownError";

const SOURCE: &str = r#"
const MARK = 'livebase.ownError';
const MODULE_FRAME = '(livebase-own-errors:';
const mark = (error) => {
  if (error === null || typeof error !== 'object') return error;
  Object.defineProperty(error, MARK, { value: true });
  const stack = error.stack;
  if (typeof stack === 'string') {
    const lines = stack.split('\n');
    const ours = lines.findIndex((line) => line.includes(MODULE_FRAME));
    if (ours >= 0 && ours < 3) {
      const rest = lines.slice(ours + 1).join('\n');
      Object.defineProperty(error, 'stack', { value: rest, writable: true, configurable: true });
    }
  }
  return error;
};
const handler = {
  construct: (make, args, target) => mark(Reflect.construct(make, args, target)),
  apply: (make, self, args) => mark(Reflect.apply(make, self, args)),
};
for (const name of ['Error', 'EvalError', 'RangeError', 'ReferenceError', 'SyntaxError',
                    'TypeError', 'URIError', 'InternalError', 'AggregateError']) {
  const make = globalThis[name];
  if (typeof make !== 'function') continue;
  const proxy = new Proxy(make, handler);
  make.prototype.constructor = proxy;
  globalThis[name] = proxy;
}
"#;

/// The classes of the errors the engine raises for a fault in the code.
const BUG_CLASSES: [&str; 7] = [
    "EvalError",
    "RangeError",
    "ReferenceError",
    "SyntaxError",
    "TypeError",
    "URIError",
    "InternalError",
];

/// The engine's own `RangeError` and `InternalError` prototypes, taken from the fresh
/// context before the action runs. The engine raises its limits (stack, memory) with
/// these; telling them by identity rather than by `name` means an action renaming
/// `RangeError.prototype` cannot pass a stack overflow off as its own refusal.
pub(super) struct Intrinsics<'js> {
    range: Object<'js>,
    internal: Object<'js>,
}

impl<'js> Intrinsics<'js> {
    pub(super) fn of(ctx: &Ctx<'js>) -> rquickjs::Result<Intrinsics<'js>> {
        let prototype = |class: &str| -> rquickjs::Result<Object<'js>> {
            ctx.globals().get::<_, Object>(class)?.get("prototype")
        };
        Ok(Intrinsics {
            range: prototype("RangeError")?,
            internal: prototype("InternalError")?,
        })
    }

    /// `RangeError` or `InternalError` when `e` was made from the engine's own
    /// prototype of that class.
    pub(super) fn class_of(&self, e: &Exception<'js>) -> Option<&'static str> {
        let prototype = e.as_object().get_prototype()?;
        if prototype == self.range {
            Some("RangeError")
        } else if prototype == self.internal {
            Some("InternalError")
        } else {
            None
        }
    }
}

/// Our module as bytecode, compiled once per runtime.
pub(super) fn compile(runtime: &Runtime) -> Result<Vec<u8>, String> {
    let context = Context::full(runtime).map_err(|e| e.to_string())?;
    context.with(|ctx| {
        Module::declare(ctx, MODULE, SOURCE)
            .and_then(|m| m.write(WriteOptions::default()))
            .map_err(|e| format!("the error-marking module does not compile: {e}"))
    })
}

/// Runs our module in the invocation's context, before the action's module.
pub(super) fn install(ctx: &Ctx<'_>, bytecode: &[u8], clock: &Clock) -> rquickjs::Result<()> {
    // Safety: the bytes come from `compile` in this same QuickJS build.
    let module: Module<'_, Declared> = unsafe { Module::load(ctx.clone(), bytecode)? };
    let (_, done) = module.eval()?;
    settle(ctx, &done, clock)?;
    Ok(())
}

/// `error` (just thrown by a binding) marked as a refusal: livebase declining what the
/// action asked of it (an id that is no id, an emit past the cap, a value JSON cannot
/// carry) answers 4xx with its words, as the action's own refusals do.
pub(super) fn refused(ctx: &Ctx<'_>, error: rquickjs::Error) -> rquickjs::Error {
    if !matches!(error, rquickjs::Error::Exception) {
        return error;
    }
    let thrown = ctx.catch();
    if let Some(object) = thrown.as_object() {
        let _ = object.prop(MARK, true);
    }
    ctx.throw(thrown)
}

/// The TypeError the engine threw while livebase converted a value for the action
/// (`JSON.stringify` meeting a cycle, a BigInt, …): a refusal saying `what`, as
/// `refused`. Anything else passes unchanged: what the action threw itself on the way
/// (from a `toJSON` of its own), and the engine's limits (memory, stack) for the caller
/// to recognise as limits.
pub(super) fn refused_as(ctx: &Ctx<'_>, error: rquickjs::Error, what: &str) -> rquickjs::Error {
    if !matches!(error, rquickjs::Error::Exception) {
        return error;
    }
    let thrown = ctx.catch();
    let raised = thrown
        .clone()
        .into_exception()
        .and_then(|e| bug(&e).map(|text| (e, text)))
        .filter(|(_, text)| text.starts_with("TypeError: "));
    match raised {
        Some((e, _)) => {
            let message = format!("{what}: {}", e.message().unwrap_or_default());
            refused(ctx, rquickjs::Exception::throw_type(ctx, &message))
        }
        None => ctx.throw(thrown),
    }
}

/// `Name: message` of an error the engine raised for a fault in the action, or `None`
/// for one the action made (or that carries a `status`: the caller checks that first).
pub(super) fn bug(e: &Exception<'_>) -> Option<String> {
    if is_marked(e) {
        return None;
    }
    let name: String = e
        .as_object()
        .get::<_, Option<String>>("name")
        .ok()
        .flatten()?;
    if !BUG_CLASSES.contains(&name.as_str()) {
        return None;
    }
    Some(format!("{name}: {}", e.message().unwrap_or_default()))
}

/// Whether the action made `e` itself (or livebase refused something on its behalf).
/// Only the error's own mark counts: one the action put on `Error.prototype` would
/// otherwise be read through every engine error, its limits included.
pub(super) fn is_marked(e: &Exception<'_>) -> bool {
    own_data(e.as_object(), MARK).and_then(|v| v.as_bool()) == Some(true)
}

/// The value of `object`'s own data property `key`: `None` when it has none, when the
/// property is inherited (the action may set anything on the shared prototypes) or an
/// accessor (a getter would run the action's code and could answer anything).
pub(super) fn own_data<'js>(object: &Object<'js>, key: &str) -> Option<Value<'js>> {
    let ctx = object.ctx();
    let raw = ctx.as_raw().as_ptr();
    // Safety: `raw` is the live context of `object`; the atom is freed below, and each
    // value the descriptor holds is either handed to a `Value` (which frees it) or freed.
    unsafe {
        let atom = qjs::JS_NewAtomLen(raw, key.as_ptr().cast(), key.len() as _);
        if atom == qjs::JS_ATOM_NULL {
            let _ = ctx.catch();
            return None;
        }
        let mut desc = std::mem::MaybeUninit::<qjs::JSPropertyDescriptor>::uninit();
        let found = qjs::JS_GetOwnProperty(raw, desc.as_mut_ptr(), object.as_raw(), atom);
        qjs::JS_FreeAtom(raw, atom);
        if found < 0 {
            let _ = ctx.catch();
        }
        if found <= 0 {
            return None;
        }
        let desc = desc.assume_init();
        qjs::JS_FreeValue(raw, desc.getter);
        qjs::JS_FreeValue(raw, desc.setter);
        if desc.flags & qjs::JS_PROP_GETSET as i32 != 0 {
            qjs::JS_FreeValue(raw, desc.value);
            return None;
        }
        Some(Value::from_raw(ctx.clone(), desc.value))
    }
}

/// Line and column (1-based) of the innermost frame of the action's own code in
/// `stack`: frames of native functions, of `eval`'d text and `JSON.parse` input
/// (`<input>`) and of our module are passed over.
pub(super) fn position(stack: &str) -> Option<(u32, u32)> {
    stack.lines().find_map(|line| {
        let frame = line.trim().strip_prefix("at ")?;
        let place = match frame.strip_suffix(')') {
            Some(call) => &call[call.rfind('(')? + 1..],
            None => frame,
        };
        let mut parts = place.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        (!file.starts_with('<') && file != MODULE).then_some((line, column))
    })
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn the_position_is_the_innermost_frame_of_the_actions_own_code() {
        let cases = [
            ("    at backandCallback (validate:3:5)\n", Some((3, 5))),
            (
                "    at <input>:1:2\n    at parse (native)\n    at backandCallback (check:2:8)\n",
                Some((2, 8)),
            ),
            (
                "    at <eval> (<input>:1:1)\n    at backandCallback (a:2:3)\n",
                Some((2, 3)),
            ),
            (
                "    at <anonymous> (a:2:16)\n    at map (native)\n    at backandCallback (a:2:11)\n",
                Some((2, 16)),
            ),
            ("    at a:7:1\n", Some((7, 1))),
            (
                "    at construct (livebase-own-errors:20:5)\n    at f (a:4:9)\n",
                Some((4, 9)),
            ),
            ("    at Array (native)\n", None),
            ("", None),
            ("not a stack", None),
        ];
        for (stack, expected) in cases {
            assert_eq!(position(stack), expected, "{stack:?}");
        }
    }
}
