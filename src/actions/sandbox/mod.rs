//! One QuickJS runtime with its limits, and what it can do: compile an action (checking
//! it defines `backandCallback`) and run one invocation in a fresh context.
//!
//! The sandbox exposes nothing of the host: no files, network, environment, process or
//! timers; only `console` and `socket`, which record into the invocation's outcome
//! (emits are delivered later, by the caller, and only if the invocation succeeded).
//! A fresh context per invocation means no invocation sees another's globals. A `Vm`
//! that hit a limit is dropped and replaced by the pool, so nothing leaks onward.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::function::Rest;
use rquickjs::module::{Declared, WriteOptions};
use rquickjs::{CaughtError, Context, Ctx, Function, Module, Object, Runtime, Value};
use serde_json::Value as Json;

/// Per-invocation limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub time: Duration,
    pub memory: usize,
    pub stack: usize,
}

/// Longest console line kept, and most lines kept per invocation.
const MAX_LOG_LINE: usize = 4096;
const MAX_LOG_LINES: usize = 200;
/// Most emits one invocation may hold.
const MAX_EMITS: usize = 1000;
/// Most bytes one invocation may hand out of the engine — its result, changed
/// `userInput`, emitted data and log lines together — and never more than its memory
/// limit: a huge result is refused rather than copied into a response.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// A syntax error or a missing `backandCallback`, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// What an invocation asks the sandbox to emit once it has succeeded.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit {
    Users {
        event: String,
        data: Json,
        users: Vec<String>,
    },
    Role {
        event: String,
        data: Json,
        role: String,
    },
    All {
        event: String,
        data: Json,
    },
    Room {
        room: String,
        event: String,
        data: Json,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: &'static str,
    pub text: String,
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The action threw: its message and the `status` it carried, if any.
    Thrown {
        message: String,
        status: Option<u16>,
    },
    /// A limit ended it; the runtime is replaced.
    Limit(String),
    /// livebase could not run it (bad bytecode, …).
    Internal(String),
}

/// The arguments of `backandCallback`, as JSON, and the caller's `db`.
#[derive(Debug, Clone)]
pub struct Call {
    pub user_input: Json,
    pub db_row: Json,
    pub parameters: Json,
    pub user_profile: Json,
    pub db: Option<super::db::Db>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Json, Failure>,
    /// `userInput` as the action left it (before actions write this).
    pub user_input: Json,
    pub logs: Vec<LogLine>,
    pub emits: Vec<Emit>,
}

impl Outcome {
    /// An invocation that did not run (or not to the end): `userInput` untouched.
    pub fn unrun(user_input: Json, failure: Failure) -> Outcome {
        Outcome {
            result: Err(failure),
            user_input,
            logs: Vec::new(),
            emits: Vec::new(),
        }
    }
}

/// The standard library an action sees: everything QuickJS offers except `WeakRef` and
/// `FinalizationRegistry` (they would let code run after the action returned, in the
/// next caller's invocation) and `DOMException` (nothing here throws it). Building the
/// context is nearly all of a no-op invocation's cost (`cargo bench --bench pool`):
/// measured here, 32 µs for the base objects alone, 77 µs for `Context::full`, 71 µs
/// for this set.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::Performance,
);

fn fresh_context(runtime: &Runtime) -> rquickjs::Result<Context> {
    Context::custom::<Intrinsics>(runtime)
}

/// A QuickJS runtime with limits. Lives on one pool thread.
pub struct Vm {
    runtime: Runtime,
    limits: Limits,
    /// Milliseconds after `epoch` when the running invocation must stop.
    deadline: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
    epoch: Instant,
    /// Set when a limit was hit: the pool replaces this Vm.
    pub spent: bool,
    /// The last invocation threw `null`: the action's own doing, or out of memory.
    threw_null: bool,
}

impl Vm {
    pub fn new(limits: Limits) -> Result<Vm, String> {
        let runtime = Runtime::new().map_err(|e| e.to_string())?;
        runtime.set_memory_limit(limits.memory);
        runtime.set_max_stack_size(limits.stack);
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let interrupted = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (d, i) = (deadline.clone(), interrupted.clone());
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let now = epoch.elapsed().as_millis() as u64;
            let over = now >= d.load(Ordering::Relaxed);
            if over {
                i.store(true, Ordering::Relaxed);
            }
            over
        })));
        Ok(Vm {
            runtime,
            limits,
            deadline,
            interrupted,
            epoch,
            spent: false,
            threw_null: false,
        })
    }

    /// Compiles `code` to bytecode, refusing a syntax error or a file that does not
    /// define `backandCallback`.
    pub fn compile(&mut self, name: &str, code: &str) -> Result<Vec<u8>, CompileError> {
        let context = fresh_context(&self.runtime).map_err(|e| internal_compile(e.to_string()))?;
        self.arm();
        let result = context.with(|ctx| {
            // The user's code alone first, so a syntax error (an unclosed brace) is
            // reported where the user wrote it, not in the export livebase appends.
            if let Err(e) = Module::declare(ctx.clone(), name, code.to_string()) {
                return Err(compile_error(&ctx, e));
            }
            let source = module_source(code);
            let declared = Module::declare(ctx.clone(), name, source);
            let module = match declared {
                Ok(m) => m,
                Err(e) => return Err(compile_error(&ctx, e)),
            };
            module
                .write(WriteOptions::default())
                .map_err(|e| internal_compile(e.to_string()))
        });
        self.disarm();
        result
    }

    /// Runs one invocation of compiled `bytecode` in a fresh context.
    pub fn invoke(&mut self, bytecode: &[u8], call: &Call) -> Outcome {
        let mut outcome =
            Outcome::unrun(call.user_input.clone(), Failure::Internal("not run".into()));
        let context = match fresh_context(&self.runtime) {
            Ok(c) => c,
            Err(e) => {
                self.spent = true;
                outcome.result = Err(Failure::Limit(format!(
                    "could not start the action (memory limit of {} MiB?): {e}",
                    self.limits.memory / (1024 * 1024)
                )));
                return outcome;
            }
        };
        self.arm();
        let clock = self.clock();
        let output_limit = self.limits.memory.min(MAX_OUTPUT);
        let recorded = Recorded {
            budget: std::rc::Rc::new(std::cell::Cell::new(output_limit)),
            limit: output_limit,
            clock: Some(clock.clone()),
            ..Recorded::default()
        };
        let result = context.with(|ctx| {
            let run = || -> rquickjs::Result<(Json, Json)> {
                install_bindings(&ctx, &recorded)?;
                if let Some(db) = &call.db {
                    install_db(&ctx, db, &clock)?;
                }
                // Safety: the bytes come from `Vm::compile` of this same QuickJS build.
                let module: Module<'_, Declared> = unsafe { Module::load(ctx.clone(), bytecode)? };
                let (module, done) = module.eval()?;
                settle(&ctx, &done, &clock)?;
                let callback: Function = module.get("backandCallback")?;
                let args = [
                    &call.user_input,
                    &call.db_row,
                    &call.parameters,
                    &call.user_profile,
                ]
                .map(|v| ctx.json_parse(v.to_string()));
                let [a, b, c, d] = args;
                let user_input = a?;
                let returned: Value = callback.call((user_input.clone(), b?, c?, d?))?;
                let returned = match returned.as_promise() {
                    Some(promise) => settle(&ctx, promise, &clock)?,
                    None => returned,
                };
                Ok((
                    to_json_spent(&ctx, returned, &recorded, "the action's result")?,
                    to_json_spent(&ctx, user_input, &recorded, "the action's userInput")?,
                ))
            };
            match run() {
                Ok(v) => Ok(v),
                // Ran out of what it may hand out (and did not recover): a limit, like
                // the memory limit, whatever the error it let propagate says.
                Err(_) if recorded.exhausted.borrow().is_some() => {
                    let what = recorded.exhausted.borrow().clone().unwrap_or_default();
                    Err(Failure::Limit(format!(
                        "{what}: over the {} MiB an invocation may hand out of the engine \
                         (its result, emits and log lines together; the memory limit \
                         applies inside it)",
                        output_limit / (1024 * 1024)
                    )))
                }
                Err(e) => Err(self.failure(&ctx, e)),
            }
        });
        // Jobs the action left queued (a `.then` after returning) run now, on its
        // deadline: QuickJS queues them per runtime, and the next invocation must not
        // run them or pay for them.
        let mut result = result;
        while self.runtime.is_job_pending() && !self.interrupted.load(Ordering::Relaxed) {
            if clock.expired() {
                self.interrupted.store(true, Ordering::Relaxed);
                break;
            }
            match self.runtime.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => break,
                // A leftover job that failed may have hit a limit: start afresh.
                Err(_) => self.spent = true,
            }
        }
        if self.interrupted.load(Ordering::Relaxed) {
            self.spent = true;
            result = Err(self.time_limit());
        }
        if self.runtime.is_job_pending() {
            self.spent = true;
        }
        if std::mem::take(&mut self.threw_null) {
            // By the time we see it, what filled the memory is freed, so the usage no
            // longer tells; replace the runtime either way and say both possibilities.
            self.spent = true;
            result = Err(self.memory_limit(
                " (QuickJS threw null: out of memory, unless the action threw null itself)",
            ));
        }
        self.disarm();
        drop(context);
        self.runtime.run_gc();
        // Anything the collection queued (a finalizer) belongs to this invocation's
        // context and caller; it must not run in the next one.
        if self.runtime.is_job_pending() {
            self.spent = true;
        }
        // What this invocation allocated should be gone with its context. An action
        // that caught its own out-of-memory error and returned normally left the
        // runtime nearly full (the next action on this thread then ran out of memory at
        // once): whatever keeps it, a runtime still holding over half its limit is
        // replaced, so the next invocation never pays for this one.
        let held = self.runtime.memory_usage().malloc_size.max(0) as usize;
        if held > self.limits.memory / 2 {
            self.spent = true;
        }
        let Recorded { logs, emits, .. } = recorded;
        outcome.logs = logs.take();
        outcome.emits = emits.take();
        match result {
            Ok((value, user_input)) => {
                outcome.result = Ok(value);
                outcome.user_input = user_input;
            }
            Err(failure) => {
                outcome.result = Err(failure);
                outcome.emits.clear();
            }
        }
        outcome
    }

    fn clock(&self) -> Clock {
        Clock {
            deadline: self.deadline.clone(),
            interrupted: self.interrupted.clone(),
            epoch: self.epoch,
        }
    }

    fn arm(&self) {
        self.interrupted.store(false, Ordering::Relaxed);
        let until = self.epoch.elapsed() + self.limits.time;
        self.deadline
            .store(until.as_millis() as u64, Ordering::Relaxed);
    }

    fn time_limit(&self) -> Failure {
        Failure::Limit(format!(
            "time limit of {} ms exceeded",
            self.limits.time.as_millis()
        ))
    }

    fn memory_limit(&self, detail: &str) -> Failure {
        Failure::Limit(format!(
            "memory limit of {} MiB exceeded{detail}",
            self.limits.memory / (1024 * 1024)
        ))
    }

    fn disarm(&self) {
        self.deadline.store(u64::MAX, Ordering::Relaxed);
    }

    /// Classifies an error: a limit (and the Vm is spent) or what the action threw.
    fn failure(&mut self, ctx: &Ctx<'_>, error: rquickjs::Error) -> Failure {
        if self.interrupted.load(Ordering::Relaxed) {
            self.spent = true;
            return self.time_limit();
        }
        if matches!(error, rquickjs::Error::WouldBlock) {
            self.spent = true;
            return Failure::Limit("the action returned a promise that never settles".into());
        }
        let caught = CaughtError::from_error(ctx, error);
        // Limits are recognised by what the engine throws (its own error, with its own
        // message and no `status`), never by words a user's message happens to contain.
        let engine_error = |e: &rquickjs::Exception<'_>, name: &str, text: &str| {
            status_of(e.as_object()).is_none()
                && e.message().as_deref() == Some(text)
                && e.as_object()
                    .get::<_, Option<String>>("name")
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(name)
        };
        let (message, status) = match &caught {
            CaughtError::Exception(e) => {
                if engine_error(e, "InternalError", "out of memory") {
                    self.spent = true;
                    return self.memory_limit("");
                }
                if engine_error(e, "RangeError", "Maximum call stack size exceeded")
                    || engine_error(e, "InternalError", "stack overflow")
                {
                    self.spent = true;
                    return Failure::Limit("stack limit exceeded (recursion too deep)".into());
                }
                (e.message().unwrap_or_default(), status_of(e.as_object()))
            }
            // Out of memory, QuickJS may throw `null` (it cannot allocate an error);
            // the runtime's usage, checked once the context is let go, tells which.
            CaughtError::Value(v) if v.is_null() => {
                self.threw_null = true;
                (String::from("null"), None)
            }
            CaughtError::Error(rquickjs::Error::Allocation) => {
                self.spent = true;
                return self.memory_limit("");
            }
            CaughtError::Value(v) => {
                let as_json = || {
                    to_json(ctx, v.clone())
                        .map(|j| j.to_string())
                        .unwrap_or_default()
                };
                match v.as_object() {
                    Some(o) => (
                        o.get::<_, Option<String>>("message")
                            .ok()
                            .flatten()
                            .unwrap_or_else(as_json),
                        status_of(o),
                    ),
                    None => (
                        v.as_string()
                            .and_then(|s| s.to_string().ok())
                            .unwrap_or_else(as_json),
                        None,
                    ),
                }
            }
            CaughtError::Error(e) => return Failure::Internal(e.to_string()),
        };
        let mut message = message;
        truncate(&mut message, MAX_LOG_LINE);
        Failure::Thrown { message, status }
    }
}

/// The running invocation's deadline, for code outside QuickJS's interrupt checks
/// (promise settling, host bindings).
#[derive(Clone)]
struct Clock {
    deadline: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
    epoch: Instant,
}

impl Clock {
    fn expired(&self) -> bool {
        self.epoch.elapsed().as_millis() as u64 >= self.deadline.load(Ordering::Relaxed)
    }

    /// Throws (and records the interruption) once the deadline has passed: a loop of
    /// host calls runs few JS steps and might never reach the interrupt check.
    fn check(&self, ctx: &Ctx<'_>) -> rquickjs::Result<()> {
        if self.expired() {
            self.interrupted.store(true, Ordering::Relaxed);
            return Err(rquickjs::Exception::throw_internal(ctx, "interrupted"));
        }
        Ok(())
    }
}

/// Runs queued jobs until `promise` settles, the deadline passes, or nothing is left
/// to run (it never settles). Not `Promise::finish`: that loop swallows the interrupt
/// of each job, so jobs that keep queueing more would run forever.
fn settle<'js>(
    ctx: &Ctx<'js>,
    promise: &rquickjs::Promise<'js>,
    clock: &Clock,
) -> rquickjs::Result<Value<'js>> {
    use rquickjs::promise::PromiseState;
    loop {
        match promise.state() {
            PromiseState::Resolved | PromiseState::Rejected => {
                return promise
                    .result::<Value>()
                    .unwrap_or(Err(rquickjs::Error::WouldBlock));
            }
            PromiseState::Pending => {
                clock.check(ctx)?;
                if !ctx.execute_pending_job() {
                    return Err(rquickjs::Error::WouldBlock);
                }
            }
        }
    }
}

/// `export` lets the module hand `backandCallback` over; a file without the function
/// then fails to compile, which is the check we want. Appended, so line numbers hold.
fn module_source(code: &str) -> String {
    format!("{code}\n;export {{ backandCallback }};\n")
}

fn internal_compile(message: String) -> CompileError {
    CompileError {
        message,
        line: None,
        column: None,
    }
}

fn compile_error(ctx: &Ctx<'_>, error: rquickjs::Error) -> CompileError {
    let caught = CaughtError::from_error(ctx, error);
    let (message, stack) = match &caught {
        CaughtError::Exception(e) => (
            e.message().unwrap_or_default(),
            e.stack().unwrap_or_default(),
        ),
        other => (other.to_string(), String::new()),
    };
    if message.contains("backandCallback") {
        return CompileError {
            message: "the action must define `function backandCallback(userInput, dbRow, parameters, userProfile)`".into(),
            line: None,
            column: None,
        };
    }
    // QuickJS puts `at <file>:<line>:<column>` in the stack of a syntax error.
    let (line, column) = stack
        .lines()
        .find_map(|l| {
            let tail = l.trim().rsplit(':').take(2).collect::<Vec<_>>();
            match tail.as_slice() {
                [c, l] => Some((
                    l.trim_matches(|ch: char| !ch.is_ascii_digit())
                        .parse()
                        .ok()?,
                    c.trim_matches(|ch: char| !ch.is_ascii_digit())
                        .parse()
                        .ok()?,
                )),
                _ => None,
            }
        })
        .map(|(l, c)| (Some(l), Some(c)))
        .unwrap_or((None, None));
    CompileError {
        message,
        line,
        column,
    }
}

fn status_of(object: &Object<'_>) -> Option<u16> {
    let status: Option<f64> = object.get("status").ok().flatten();
    status
        .filter(|s| s.fract() == 0.0 && (400.0..=599.0).contains(s))
        .map(|s| s as u16)
}

/// `to_json`, first taking the JSON text's size from the invocation's budget.
fn to_json_spent<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    recorded: &Recorded,
    what: &str,
) -> rquickjs::Result<Json> {
    json_of(ctx, value, Some((recorded, what)))
}

fn to_json<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Json> {
    json_of(ctx, value, None)
}

/// A JS value as JSON (`undefined` and functions as null), its text size optionally
/// charged to a budget. Never silently `null`: nesting past 128 levels or a lone
/// surrogate is an error.
fn json_of<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    budget: Option<(&Recorded, &str)>,
) -> rquickjs::Result<Json> {
    if value.is_undefined() || value.is_function() {
        return Ok(Json::Null);
    }
    let Some(text) = ctx.json_stringify(value)? else {
        return Ok(Json::Null);
    };
    let text = text.to_string()?;
    if let Some((recorded, what)) = budget {
        recorded.spend(ctx, text.len(), what)?;
    }
    serde_json::from_str(&text).map_err(|e| {
        rquickjs::Exception::throw_type(ctx, &format!("the value cannot be sent as JSON: {e}"))
    })
}

#[derive(Default)]
struct Recorded {
    logs: std::rc::Rc<std::cell::RefCell<Vec<LogLine>>>,
    emits: std::rc::Rc<std::cell::RefCell<Vec<Emit>>>,
    /// Bytes the invocation may still hold outside QuickJS's own memory limit (emitted
    /// data waiting for delivery, log lines).
    budget: std::rc::Rc<std::cell::Cell<usize>>,
    /// What the budget started at.
    limit: usize,
    /// Set when the budget refused something.
    exhausted: std::rc::Rc<std::cell::RefCell<Option<String>>>,
    clock: Option<Clock>,
}

impl Recorded {
    fn check(&self, ctx: &Ctx<'_>) -> rquickjs::Result<()> {
        match &self.clock {
            Some(clock) => clock.check(ctx),
            None => Ok(()),
        }
    }

    /// Takes `bytes` from the budget, or throws.
    fn spend(&self, ctx: &Ctx<'_>, bytes: usize, what: &str) -> rquickjs::Result<()> {
        let left = self.budget.get();
        if bytes > left {
            self.exhausted
                .borrow_mut()
                .get_or_insert_with(|| what.to_string());
            return Err(rquickjs::Exception::throw_range(
                ctx,
                &format!(
                    "{what}: this invocation has used up the memory it may hand out of the \
                     engine ({} MiB for its result, emits and log lines together)",
                    self.limit / (1024 * 1024)
                ),
            ));
        }
        self.budget.set(left - bytes);
        Ok(())
    }
}

trait Take<T> {
    fn take(self) -> Vec<T>;
}

impl<T> Take<T> for std::rc::Rc<std::cell::RefCell<Vec<T>>> {
    fn take(self) -> Vec<T> {
        std::mem::take(&mut *self.borrow_mut())
    }
}

/// `console.log/warn/error` and `socket.emitUsers/emitRole/emitAll/broadcast`.
fn install_bindings<'js>(ctx: &Ctx<'js>, recorded: &Recorded) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    let console = Object::new(ctx.clone())?;
    let recorder = std::rc::Rc::new(Recorded {
        logs: recorded.logs.clone(),
        emits: recorded.emits.clone(),
        budget: recorded.budget.clone(),
        limit: recorded.limit,
        exhausted: recorded.exhausted.clone(),
        clock: recorded.clock.clone(),
    });
    for level in ["log", "warn", "error"] {
        let logs = recorded.logs.clone();
        let r = recorder.clone();
        let log = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
            r.check(&ctx)?;
            let mut text = args
                .0
                .into_iter()
                .map(|v| match v.as_string() {
                    Some(s) => s.to_string().unwrap_or_default(),
                    None => to_json(&ctx, v).map(|j| j.to_string()).unwrap_or_default(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            truncate(&mut text, MAX_LOG_LINE);
            let mut logs = logs.borrow_mut();
            if logs.len() < MAX_LOG_LINES {
                logs.push(LogLine { level, text });
            }
            rquickjs::Result::Ok(())
        })?;
        console.set(level, log)?;
    }
    globals.set("console", console)?;

    let socket = Object::new(ctx.clone())?;
    let emits = recorded.emits.clone();
    let r = recorder.clone();
    // Checks the clock, takes the size of the data and of the names (event, room, role,
    // users: `names` bytes) from the budget, records the emit. The names were copied
    // out of the engine to call us; counted here, they cannot be kept beyond it.
    let push =
        move |ctx: &Ctx<'js>, names: usize, data: Value<'js>, emit: &dyn Fn(Json) -> Emit| {
            r.check(ctx)?;
            if emits.borrow().len() >= MAX_EMITS {
                return Err(rquickjs::Exception::throw_range(
                    ctx,
                    &format!("an action may emit at most {MAX_EMITS} events"),
                ));
            }
            r.spend(ctx, names, "socket emit")?;
            let data = to_json_spent(ctx, data, &r, "socket emit")?;
            emits.borrow_mut().push(emit(data));
            rquickjs::Result::Ok(())
        };
    let p = push.clone();
    socket.set(
        "emitUsers",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, event: String, data: Value<'js>, users: Vec<String>| {
                let names = event.len() + users.iter().map(String::len).sum::<usize>();
                p(&ctx, names, data, &|data| Emit::Users {
                    event: event.clone(),
                    data,
                    users: users.clone(),
                })
            },
        )?,
    )?;
    let p = push.clone();
    socket.set(
        "emitRole",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, event: String, data: Value<'js>, role: String| {
                p(&ctx, event.len() + role.len(), data, &|data| Emit::Role {
                    event: event.clone(),
                    data,
                    role: role.clone(),
                })
            },
        )?,
    )?;
    let p = push.clone();
    socket.set(
        "emitAll",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, event: String, data: Value<'js>| {
                p(&ctx, event.len(), data, &|data| Emit::All {
                    event: event.clone(),
                    data,
                })
            },
        )?,
    )?;
    let p = push;
    socket.set(
        "broadcast",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, room: String, event: String, data: Value<'js>| {
                p(&ctx, room.len() + event.len(), data, &|data| Emit::Room {
                    room: room.clone(),
                    event: event.clone(),
                    data,
                })
            },
        )?,
    )?;
    globals.set("socket", socket)?;
    Ok(())
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// `db.get/list/create/update/remove`: synchronous for the action; a refusal throws an
/// Error carrying the REST status (`e.status`) and message. The deadline is checked
/// around each call: a loop of calls runs too few JS steps to be interrupted.
fn install_db<'js>(ctx: &Ctx<'js>, db: &super::db::Db, clock: &Clock) -> rquickjs::Result<()> {
    use super::db::DbCall;
    let object = Object::new(ctx.clone())?;
    fn answer<'js>(
        ctx: &Ctx<'js>,
        db: &super::db::Db,
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
            _ => Err(rquickjs::Exception::throw_type(
                ctx,
                "a row id is a positive integer",
            )),
        }
    }
    let (d, c) = (db.clone(), clock.clone());
    object.set(
        "get",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: String, id: Value<'js>| {
                let id = id_of(&ctx, &id)?;
                answer(&ctx, &d, &c, DbCall::Get(name, id))
            },
        )?,
    )?;
    let (d, c) = (db.clone(), clock.clone());
    object.set(
        "list",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: String, query: rquickjs::function::Opt<Value<'js>>| {
                let query = match query.0 {
                    Some(q) => to_json(&ctx, q)?,
                    None => Json::Null,
                };
                answer(&ctx, &d, &c, DbCall::List(name, query))
            },
        )?,
    )?;
    let (d, c) = (db.clone(), clock.clone());
    object.set(
        "create",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: String, data: Value<'js>| {
                let data = to_json(&ctx, data)?;
                answer(&ctx, &d, &c, DbCall::Create(name, data))
            },
        )?,
    )?;
    let (d, c) = (db.clone(), clock.clone());
    object.set(
        "update",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: String, id: Value<'js>, data: Value<'js>| {
                let id = id_of(&ctx, &id)?;
                let data = to_json(&ctx, data)?;
                answer(&ctx, &d, &c, DbCall::Update(name, id, data))
            },
        )?,
    )?;
    let (d, c) = (db.clone(), clock.clone());
    object.set(
        "remove",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, name: String, id: Value<'js>| {
                let id = id_of(&ctx, &id)?;
                answer(&ctx, &d, &c, DbCall::Remove(name, id))
            },
        )?,
    )?;
    ctx.globals().set("db", object)?;
    Ok(())
}
