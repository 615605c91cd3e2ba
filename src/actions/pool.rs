//! The threads QuickJS runs on: never the async threads. One `Vm` per thread, taken
//! from a shared queue; a `Vm` that hit a limit is replaced before the next job.

use std::cell::{Cell, RefCell};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::db::MAX_DEPTH;
use super::sandbox::{Call, CompileError, Failure, Limits, Outcome, Vm};

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
        call: Call,
        reply: oneshot::Sender<Outcome>,
    },
}

/// Handle to the pool. Cloning is shallow; the threads end when every handle is gone.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    limits: Limits,
}

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
        Ok(Pool { jobs, limits })
    }

    /// Runs an action nested in one running on this thread, or `None` off the pool.
    pub fn inline(&self, bytecode: &[u8], call: &Call) -> Option<Outcome> {
        let depth = DEPTH.get();
        if depth == 0 {
            return None;
        }
        if depth >= MAX_DEPTH {
            return Some(Outcome::unrun(
                call.user_input.clone(),
                Failure::Limit(format!(
                    "actions may nest at most {MAX_DEPTH} deep through db writes"
                )),
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

    pub async fn invoke(&self, bytecode: Arc<Vec<u8>>, call: Call) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let user_input = call.user_input.clone();
        let failed =
            |message: &str| Outcome::unrun(user_input.clone(), Failure::Internal(message.into()));
        if self
            .jobs
            .send(Job::Invoke {
                bytecode,
                call,
                reply,
            })
            .is_err()
        {
            return failed("the action runtime is not running");
        }
        answer
            .await
            .unwrap_or_else(|_| failed("the action runtime stopped during the call"))
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
                bytecode,
                call,
                reply,
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
