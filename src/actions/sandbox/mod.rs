//! One QuickJS runtime with its limits, and what it can do: compile an action (checking
//! it defines `backandCallback`) and run one invocation in a fresh context.
//!
//! The sandbox exposes nothing of the host: no files, network, environment, process or
//! timers; only `console`, `socket` and `db`, one file each beside this one. `console`
//! and `socket` record into the invocation's outcome (emits are delivered later, by the
//! caller, and only if the invocation succeeded). A fresh context per invocation means
//! no invocation sees another's globals. A `Vm` that hit a limit is dropped and
//! replaced by the pool, so nothing leaks onward. `own_errors` tells what the action
//! threw on purpose (a refusal) from an error the engine raised in its code (a bug).

mod console;
mod db;
mod json;
mod own_errors;
mod socket;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::module::{Declared, WriteOptions};
use rquickjs::{CaughtError, Context, Ctx, Exception, Function, Module, Object, Runtime, Value};
use serde_json::Value as Json;

/// Per-invocation limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub time: Duration,
    pub memory: usize,
    pub stack: usize,
}

/// Longest console line kept, and longest thrown message reported.
const MAX_LOG_LINE: usize = 4096;
/// Most bytes one invocation may hand out of the engine — its result, changed
/// `userInput` and emitted data together (log lines have their own caps) — and never
/// more than its memory limit: a huge result is refused rather than copied into a
/// response.
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
    /// When the action wrote it.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The action threw: its message and the `status` it carried, if any.
    Thrown {
        message: String,
        status: Option<u16>,
    },
    /// The engine raised an error in the action's code (a ReferenceError, a TypeError,
    /// …: see `own_errors`): `Name: message`, and where in the action's file, 1-based.
    Bug {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// A limit ended it (which one, and the message saying so); the runtime is replaced.
    Limit(LimitKind, String),
    /// livebase could not run it (bad bytecode, …).
    Internal(String),
}

/// Which limit ended an invocation: the `limit` label of
/// `livebase_action_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The wall-time limit.
    Time,
    /// The runtime's memory limit.
    Memory,
    /// The JavaScript stack limit.
    Stack,
    /// What one invocation may hand out of the engine (result, emits, `userInput`).
    Output,
    /// Actions nested too deep through `db` writes.
    Depth,
    /// Not run: the penalty lane was full, or the call waited there too long.
    Queue,
    /// The action returned a promise nothing can settle.
    Promise,
}

impl LimitKind {
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Time => "time",
            LimitKind::Memory => "memory",
            LimitKind::Stack => "stack",
            LimitKind::Output => "output",
            LimitKind::Depth => "depth",
            LimitKind::Queue => "queue",
            LimitKind::Promise => "promise",
        }
    }
}

/// The arguments of `backandCallback`, as JSON, and the caller's `db`.
#[derive(Debug, Clone)]
pub struct Call {
    pub user_input: Json,
    pub db_row: Json,
    pub parameters: Json,
    pub user_profile: Json,
    pub db: Option<crate::actions::db::Db>,
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

/// What `backandCallback` handed back, as JSON: its result and its `userInput`.
type Returned = (Json, Json);

/// The standard library an action sees: everything QuickJS offers except `WeakRef` and
/// `FinalizationRegistry` (they would let code run after the action returned, in the
/// next caller's invocation) and `DOMException` (nothing here throws it). Building the
/// context is nearly all of a no-op invocation's cost (`cargo bench --bench pool`).
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
    /// `own_errors`' module, run in each invocation's context before the action.
    own_errors: Vec<u8>,
}

impl Vm {
    pub fn new(limits: Limits) -> Result<Vm, String> {
        let runtime = Runtime::new().map_err(|e| e.to_string())?;
        let own_errors = own_errors::compile(&runtime)?;
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
            own_errors,
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

    /// Runs one invocation of compiled `bytecode` in a fresh context: start it, run the
    /// action, run what it left queued, let the context go, then collect the outcome.
    pub fn invoke(&mut self, bytecode: &[u8], call: &Call) -> Outcome {
        let context = match fresh_context(&self.runtime) {
            Ok(c) => c,
            Err(e) => {
                self.spent = true;
                let failure = Failure::Limit(
                    LimitKind::Memory,
                    format!(
                        "could not start the action (memory limit of {} MiB?): {e}",
                        self.limits.memory / (1024 * 1024)
                    ),
                );
                return Outcome::unrun(call.user_input.clone(), failure);
            }
        };
        self.arm();
        let output_limit = self.limits.memory.min(MAX_OUTPUT);
        let invocation = Rc::new(Invocation::new(self.clock(), output_limit));
        let result = context.with(|ctx| self.run(&ctx, bytecode, call, &invocation));
        self.run_leftover_jobs(&invocation.clock);
        let result = self.verdict(result);
        self.release(context);
        invocation.outcome(call, result)
    }

    /// The action's run inside its context, an error mapped to why it failed.
    fn run<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        bytecode: &[u8],
        call: &Call,
        invocation: &Rc<Invocation>,
    ) -> Result<Returned, Failure> {
        let intrinsics = own_errors::Intrinsics::of(ctx).map_err(|e| self.failure(ctx, e, None))?;
        let own_errors = &self.own_errors;
        let run = || -> rquickjs::Result<Returned> {
            own_errors::install(ctx, own_errors, &invocation.clock)?;
            install_bindings(ctx, call, invocation)?;
            evaluate(ctx, bytecode, call, invocation)
        };
        match run() {
            Ok(v) => Ok(v),
            // Ran out of what it may hand out (and did not recover): a limit, like the
            // memory limit, whatever the error it let propagate says.
            Err(_) if invocation.exhausted.borrow().is_some() => Err(invocation.over_budget()),
            Err(e) => Err(self.failure(ctx, e, Some(&intrinsics))),
        }
    }

    /// Jobs the action left queued (a `.then` after returning) run now, on its
    /// deadline: QuickJS queues them per runtime, and the next invocation must not run
    /// them or pay for them.
    fn run_leftover_jobs(&mut self, clock: &Clock) {
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
    }

    /// The run's result, overruled by a limit the runtime hit meanwhile.
    fn verdict(&mut self, result: Result<Returned, Failure>) -> Result<Returned, Failure> {
        let mut result = result;
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
        result
    }

    /// Disarms the clock and frees the invocation's context, marking the Vm spent if
    /// anything of the invocation outlives it.
    fn release(&mut self, context: Context) {
        self.disarm();
        drop(context);
        self.runtime.run_gc();
        // Anything the collection queued (a finalizer) belongs to this invocation's
        // context and caller; it must not run in the next one.
        if self.runtime.is_job_pending() {
            self.spent = true;
        }
        // What this invocation allocated should be gone with its context. An action
        // that catches its own out-of-memory error and returns normally leaves the
        // runtime nearly full, and the next action on this thread would run out of
        // memory at once: whatever keeps it, a runtime still holding over half its
        // limit is replaced, so the next invocation never pays for this one.
        let held = self.runtime.memory_usage().malloc_size.max(0) as usize;
        if held > self.limits.memory / 2 {
            self.spent = true;
        }
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
        Failure::Limit(
            LimitKind::Time,
            format!("time limit of {} ms exceeded", self.limits.time.as_millis()),
        )
    }

    fn memory_limit(&self, detail: &str) -> Failure {
        Failure::Limit(
            LimitKind::Memory,
            format!(
                "memory limit of {} MiB exceeded{detail}",
                self.limits.memory / (1024 * 1024)
            ),
        )
    }

    fn disarm(&self) {
        self.deadline.store(u64::MAX, Ordering::Relaxed);
    }

    /// Classifies an error: a limit (and the Vm is spent) or what the action threw.
    fn failure<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        error: rquickjs::Error,
        intrinsics: Option<&own_errors::Intrinsics<'js>>,
    ) -> Failure {
        if self.interrupted.load(Ordering::Relaxed) {
            self.spent = true;
            return self.time_limit();
        }
        if matches!(error, rquickjs::Error::WouldBlock) {
            self.spent = true;
            return Failure::Limit(
                LimitKind::Promise,
                "the action returned a promise that never settles".into(),
            );
        }
        let caught = CaughtError::from_error(ctx, error);
        let (message, status) = match &caught {
            CaughtError::Exception(e) => {
                if let Some(limit) = intrinsics.and_then(|i| self.engine_limit(e, i)) {
                    self.spent = true;
                    return limit;
                }
                let status = status_of(e.as_object());
                if let Some(mut message) = own_errors::bug(e).filter(|_| status.is_none()) {
                    truncate(&mut message, MAX_LOG_LINE);
                    let at = own_errors::position(&e.stack().unwrap_or_default());
                    return Failure::Bug {
                        message,
                        line: at.map(|(l, _)| l),
                        column: at.map(|(_, c)| c),
                    };
                }
                (e.message().unwrap_or_default(), status)
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
            CaughtError::Value(v) => thrown_value(ctx, v),
            CaughtError::Error(e) => return Failure::Internal(e.to_string()),
        };
        let mut message = message;
        truncate(&mut message, MAX_LOG_LINE);
        Failure::Thrown { message, status }
    }

    /// The limit an exception means, if the engine threw it for running out of memory
    /// or stack. Limits are recognised by what the engine throws (an error of its own
    /// prototype, with its own message and no own `status` or mark), never by words a
    /// user's message happens to contain, nor by an error the action made itself with
    /// the same words, nor by a `name` or mark the action put on a prototype.
    fn engine_limit<'js>(
        &self,
        e: &Exception<'js>,
        intrinsics: &own_errors::Intrinsics<'js>,
    ) -> Option<Failure> {
        let is_engine_error = |class: &str, text: &str| {
            status_of(e.as_object()).is_none()
                && !own_errors::is_marked(e)
                && e.message().as_deref() == Some(text)
                && intrinsics.class_of(e) == Some(class)
        };
        if is_engine_error("InternalError", "out of memory") {
            return Some(self.memory_limit(""));
        }
        if is_engine_error("InternalError", "string too long") {
            return Some(Failure::Limit(
                LimitKind::Memory,
                "string length limit exceeded (the longest string QuickJS builds)".into(),
            ));
        }
        if is_engine_error("RangeError", "Maximum call stack size exceeded")
            || is_engine_error("InternalError", "stack overflow")
        {
            return Some(Failure::Limit(
                LimitKind::Stack,
                "stack limit exceeded (recursion too deep)".into(),
            ));
        }
        None
    }
}

/// The message and status of a thrown non-Error: an object's `message` and `status`,
/// a string as it is, anything else as JSON.
fn thrown_value<'js>(ctx: &Ctx<'js>, v: &Value<'js>) -> (String, Option<u16>) {
    let as_json = || {
        json::to_json(ctx, v.clone())
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

/// The globals an action may use besides the standard library; `db` only when the
/// caller has one.
fn install_bindings(
    ctx: &Ctx<'_>,
    call: &Call,
    invocation: &Rc<Invocation>,
) -> rquickjs::Result<()> {
    console::install(ctx, invocation)?;
    socket::install(ctx, invocation)?;
    if let Some(db) = &call.db {
        db::install(ctx, db, invocation)?;
    }
    Ok(())
}

/// Loads and evaluates the module, then calls `backandCallback` with the call's
/// arguments, waiting for a returned promise, and hands its result and `userInput` out
/// of the engine.
fn evaluate<'js>(
    ctx: &Ctx<'js>,
    bytecode: &[u8],
    call: &Call,
    invocation: &Invocation,
) -> rquickjs::Result<Returned> {
    let clock = &invocation.clock;
    // Safety: the bytes come from `Vm::compile` of this same QuickJS build.
    let module: Module<'_, Declared> = unsafe { Module::load(ctx.clone(), bytecode)? };
    let (module, done) = module.eval()?;
    settle(ctx, &done, clock)?;
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
        Some(promise) => settle(ctx, promise, clock)?,
        None => returned,
    };
    Ok((
        json::to_json_spent(ctx, returned, invocation, "the action's result")?,
        json::to_json_spent(ctx, user_input, invocation, "the action's userInput")?,
    ))
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

/// Everything one invocation holds outside the engine, shared by its bindings: what it
/// logged and emitted, what it may still hand out, and its deadline.
struct Invocation {
    logs: RefCell<Vec<LogLine>>,
    emits: RefCell<Vec<Emit>>,
    /// Bytes the invocation may still hold outside QuickJS's own memory limit (emitted
    /// data waiting for delivery; log lines are capped by count and length instead).
    budget: Cell<usize>,
    /// What the budget started at.
    limit: usize,
    /// Set when the budget refused something: what it refused.
    exhausted: RefCell<Option<String>>,
    clock: Clock,
}

impl Invocation {
    fn new(clock: Clock, limit: usize) -> Invocation {
        Invocation {
            logs: RefCell::default(),
            emits: RefCell::default(),
            budget: Cell::new(limit),
            limit,
            exhausted: RefCell::default(),
            clock,
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

    /// The failure of an invocation that ran out of budget and let the error propagate.
    fn over_budget(&self) -> Failure {
        let what = self.exhausted.borrow().clone().unwrap_or_default();
        Failure::Limit(
            LimitKind::Output,
            format!(
                "{what}: over the {} MiB an invocation may hand out of the engine \
             (its result, emits and log lines together; the memory limit \
             applies inside it)",
                self.limit / (1024 * 1024)
            ),
        )
    }

    /// The outcome: logs always, emits and the changed `userInput` only on success.
    fn outcome(&self, call: &Call, result: Result<Returned, Failure>) -> Outcome {
        let logs = std::mem::take(&mut *self.logs.borrow_mut());
        let emits = std::mem::take(&mut *self.emits.borrow_mut());
        match result {
            Ok((value, user_input)) => Outcome {
                result: Ok(value),
                user_input,
                logs,
                emits,
            },
            Err(failure) => Outcome {
                result: Err(failure),
                user_input: call.user_input.clone(),
                logs,
                emits: Vec::new(),
            },
        }
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
        CaughtError::Exception(e) => {
            let message = e.message().unwrap_or_default();
            // `SyntaxError: …`, as a browser console shows it.
            let kind: Option<String> = e.as_object().get("name").ok().flatten();
            let message = match kind {
                Some(kind) if !kind.is_empty() => format!("{kind}: {message}"),
                _ => message,
            };
            (message, e.stack().unwrap_or_default())
        }
        other => (other.to_string(), String::new()),
    };
    if message.contains("backandCallback") {
        return CompileError {
            message: "the action must define `function backandCallback(userInput, dbRow, parameters, userProfile)`".into(),
            line: None,
            column: None,
        };
    }
    let (line, column) = position_in(&stack)
        .map(|(l, c)| (Some(l), Some(c)))
        .unwrap_or((None, None));
    CompileError {
        message,
        line,
        column,
    }
}

/// The line and column of a syntax error: QuickJS puts `at <file>:<line>:<column>` in
/// its stack.
fn position_in(stack: &str) -> Option<(u32, u32)> {
    stack.lines().find_map(|l| {
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
}

/// The `status` an error or a thrown object carries: its own data property only, as
/// for the mark (`own_errors::own_data`), so `Error.prototype.status = 400` cannot turn
/// the engine's limits and bugs into refusals.
fn status_of(object: &Object<'_>) -> Option<u16> {
    let status = own_errors::own_data(object, "status").and_then(|v| v.as_number());
    status
        .filter(|s| s.fract() == 0.0 && (400.0..=599.0).contains(s))
        .map(|s| s as u16)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
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
