//! The threads QuickJS runs on: never the async threads. One `Vm` per thread, taken
//! from a shared queue; a `Vm` that hit a limit is replaced before the next job.
//!
//! Two lanes: the main one, a thread per core, and a penalty lane of one thread at
//! the lowest CPU priority (`SCHED_IDLE` on Linux) for actions that recently hit a
//! limit. The pool picks the lane itself: an action version `penalise`d runs on the
//! penalty lane for `PENALTY`. An action stuck in infinite loops or memory bombs then
//! queues behind itself instead of occupying every thread for its full time limit,
//! and burns only CPU nobody else wants. The penalty lane holds a bounded queue; a
//! call that would wait too long is refused, saying why.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::sandbox::{Call, CompileError, Failure, LimitKind, Limits, Outcome, Vm};

/// Native stack of a pool thread: well above the JS stack limit, so QuickJS reports a
/// stack overflow as an error long before the thread itself would overflow.
const THREAD_STACK: usize = 32 * 1024 * 1024;

enum Job {
    Compile {
        name: String,
        code: String,
        reply: oneshot::Sender<Result<Vec<u8>, CompileError>>,
    },
    Invoke {
        bytecode: Arc<Vec<u8>>,
        call: Box<Call>,
        reply: oneshot::Sender<Outcome>,
        /// For the penalty lane: when it was queued, and how long it may wait.
        deadline: Option<(Instant, Duration)>,
    },
}

/// Which threads a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Main,
    /// For actions that recently hit a limit: one low-priority thread.
    Penalty,
}

/// How long an action that hit a limit stays on the penalty lane (renewed by each
/// further limit it hits; a new version starts clean).
pub const PENALTY: Duration = Duration::from_secs(30);
/// Calls the penalty lane holds (running and waiting) before it refuses more.
const PENALTY_QUEUE: usize = 16;
/// How many time limits a penalty-lane call may wait before it is refused unrun.
const PENALTY_WAIT_LIMITS: u32 = 4;

/// An action version, `(id, version)`: what a penalty applies to.
pub type Key = (i64, i64);

/// Handle to the pool. Cloning is shallow; the threads end when every handle is gone.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    penalty: mpsc::Sender<Job>,
    penalty_held: Arc<AtomicUsize>,
    /// Action versions that hit a limit, and until when their calls take the penalty
    /// lane: one misbehaving action cannot take every thread.
    penalised: Arc<Mutex<HashMap<Key, Instant>>>,
    limits: Limits,
}

/// How deep actions may nest through `db` writes (an action whose write runs an action
/// whose write runs an action…).
pub const MAX_DEPTH: usize = 3;

thread_local! {
    /// How many actions are running on this thread, one inside another's `db` write
    /// (0 off the pool). Nested ones run here, inline: queueing them could deadlock a
    /// pool whose every thread waits on a nested action.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// A runtime per nesting level, so an inner action never re-enters the outer one's.
    static NESTED: RefCell<Vec<Option<Vm>>> = const { RefCell::new(Vec::new()) };
}

impl Pool {
    pub fn new(threads: usize, limits: Limits) -> std::io::Result<Pool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("livebase-js-{n}"))
                .stack_size(THREAD_STACK)
                .spawn(move || work(queue, limits))?;
        }
        let (penalty, penalty_queue) = mpsc::channel::<Job>();
        let penalty_queue = Arc::new(Mutex::new(penalty_queue));
        std::thread::Builder::new()
            .name("livebase-js-penalty".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                lowest_cpu_priority();
                work(penalty_queue, limits)
            })?;
        Ok(Pool {
            jobs,
            penalty,
            penalty_held: Arc::new(AtomicUsize::new(0)),
            penalised: Arc::new(Mutex::new(HashMap::new())),
            limits,
        })
    }

    /// Runs a call of action version `key`: inline if nested in an action running on
    /// this thread, else queued on the lane the action's recent limits pick.
    pub async fn invoke(&self, key: Key, bytecode: Arc<Vec<u8>>, call: Call) -> Outcome {
        if let Some(nested) = self.inline(&bytecode, &call) {
            return nested;
        }
        self.invoke_in(self.lane(key), bytecode, call).await
    }

    /// An action version that hit a limit runs on the penalty lane for `PENALTY` from now.
    pub fn penalise(&self, key: Key, name: &str) {
        let Ok(mut penalised) = self.penalised.lock() else {
            return;
        };
        let until = Instant::now() + PENALTY;
        if penalised.insert(key, until).is_none() {
            tracing::warn!(action = %name, "action hit a limit: its calls run one at a time, at low priority, for {} s", PENALTY.as_secs());
        }
        // Versions replaced or long quiet: forget them.
        let now = Instant::now();
        penalised.retain(|_, until| *until > now);
    }

    /// The lane an action's next call runs on: the penalty lane while it is penalised.
    fn lane(&self, key: Key) -> Lane {
        let Ok(mut penalised) = self.penalised.lock() else {
            return Lane::Main;
        };
        match penalised.get(&key) {
            Some(until) if *until > Instant::now() => Lane::Penalty,
            Some(_) => {
                penalised.remove(&key);
                Lane::Main
            }
            None => Lane::Main,
        }
    }

    /// Runs an action nested in one running on this thread, or `None` off the pool.
    fn inline(&self, bytecode: &[u8], call: &Call) -> Option<Outcome> {
        let depth = DEPTH.get();
        if depth == 0 {
            return None;
        }
        if depth >= MAX_DEPTH {
            return Some(Outcome::unrun(
                call.user_input.clone(),
                Failure::Limit(
                    LimitKind::Depth,
                    format!("actions may nest at most {MAX_DEPTH} deep through db writes"),
                ),
            ));
        }
        let kept = NESTED.with(|n| n.borrow_mut().get_mut(depth - 1).and_then(Option::take));
        let mut vm = match kept.filter(|v| !v.spent) {
            Some(vm) => vm,
            None => Vm::new(self.limits).ok()?,
        };
        DEPTH.set(depth + 1);
        let outcome = vm.invoke(bytecode, call);
        DEPTH.set(depth);
        NESTED.with(|n| {
            let mut n = n.borrow_mut();
            while n.len() < depth {
                n.push(None);
            }
            n[depth - 1] = Some(vm);
        });
        Some(outcome)
    }

    pub async fn compile(&self, name: &str, code: &str) -> Result<Vec<u8>, CompileError> {
        if DEPTH.get() > 0 {
            // On a pool thread, inside an action: compile here rather than queue.
            let mut vm = Vm::new(self.limits).map_err(|message| CompileError {
                message,
                line: None,
                column: None,
            })?;
            return vm.compile(name, code);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Compile {
            name: name.to_string(),
            code: code.to_string(),
            reply,
        };
        let gone = || CompileError {
            message: "the action runtime is not running".into(),
            line: None,
            column: None,
        };
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn invoke_in(&self, lane: Lane, bytecode: Arc<Vec<u8>>, call: Call) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let user_input = call.user_input.clone();
        let failed =
            |message: &str| Outcome::unrun(user_input.clone(), Failure::Internal(message.into()));
        let (queue, deadline, _held) = match lane {
            Lane::Main => (&self.jobs, None, None),
            Lane::Penalty => {
                let held = Held::take(&self.penalty_held);
                if held.count > PENALTY_QUEUE {
                    return Outcome::unrun(
                        user_input,
                        Failure::Limit(
                            LimitKind::Queue,
                            format!(
                                "not run: this action recently hit its limits, so it runs one \
                             call at a time, and {PENALTY_QUEUE} calls to such actions are \
                             already waiting"
                            ),
                        ),
                    );
                }
                let wait = self.limits.time * PENALTY_WAIT_LIMITS;
                (&self.penalty, Some((Instant::now(), wait)), Some(held))
            }
        };
        let job = Job::Invoke {
            bytecode,
            call: Box::new(call),
            reply,
            deadline,
        };
        if queue.send(job).is_err() {
            return failed("the action runtime is not running");
        }
        answer
            .await
            .unwrap_or_else(|_| failed("the action runtime stopped during the call"))
    }
}

/// One call counted against the penalty lane's queue until dropped.
struct Held<'a> {
    counter: &'a AtomicUsize,
    /// The count including this call.
    count: usize,
}

impl<'a> Held<'a> {
    fn take(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::AcqRel) + 1;
        Held { counter, count }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The calling thread gets only CPU time no normal thread wants.
fn lowest_cpu_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: changes the policy of the calling thread only (pid 0); the struct is
        // valid for the call. Unprivileged threads may always lower themselves.
        let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if failed {
            tracing::warn!(
                "could not lower the penalty lane's CPU priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn work(queue: Arc<Mutex<mpsc::Receiver<Job>>>, limits: Limits) {
    let mut vm: Option<Vm> = None;
    loop {
        let job = {
            let Ok(queue) = queue.lock() else { return };
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let current = match vm.take().filter(|v| !v.spent) {
            Some(v) => v,
            None => match Vm::new(limits) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "could not start a JavaScript runtime");
                    continue;
                }
            },
        };
        let mut current = current;
        // A panic (a bug in livebase or its engine binding) must cost one answer, not
        // the thread: the Vm it happened in is dropped and the thread goes on.
        let survived = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
            Job::Compile { name, code, reply } => {
                let _ = reply.send(current.compile(&name, &code));
            }
            Job::Invoke {
                reply,
                call,
                deadline: Some((queued, wait)),
                ..
            } if queued.elapsed() > wait => {
                let _ = reply.send(Outcome::unrun(
                    call.user_input,
                    Failure::Limit(
                        LimitKind::Queue,
                        format!(
                            "not run: this action recently hit its limits, so it runs one call \
                         at a time, and this call waited over {} s",
                            wait.as_secs_f64()
                        ),
                    ),
                ));
            }
            Job::Invoke {
                bytecode,
                call,
                reply,
                ..
            } => {
                DEPTH.set(1);
                let outcome = current.invoke(&bytecode, &call);
                DEPTH.set(0);
                let _ = reply.send(outcome);
            }
        }));
        DEPTH.set(0);
        match survived {
            Ok(()) => vm = Some(current),
            Err(_) => tracing::error!("a JavaScript runtime panicked; it was replaced"),
        }
    }
}
