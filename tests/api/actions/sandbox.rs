//! The sandbox against hostile code: every limit hit or trick ends that invocation with
//! a clear error (status and a message naming the limit or the problem), and a normal
//! action called right after on the same server succeeds: the runtime that hit the limit
//! was replaced and nothing leaked into the next invocation.
//!
//! SQLite only: these are about the sandbox, not storage. One server per test, several
//! actions per server; short limits set through the configuration keep the tests fast.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Backend, Spawn, backends, master, test_config};

/// The normal action every hostile case is followed by.
const OK: &str = "function backandCallback() { return { ok: true }; }";

/// Longest any single call may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

fn sqlite() -> Backend {
    backends()[0].clone()
}

/// `GET /1/function/general/{name}` as master; a hang fails the test with its name.
async fn call(app: &crate::common::TestApp, name: &str) -> (u16, Value) {
    tokio::time::timeout(
        HANG,
        app.get(&format!("/1/function/general/{name}"), &master()),
    )
    .await
    .unwrap_or_else(|_| panic!("`{name}` did not answer within {HANG:?}: the server hangs"))
}

fn message(body: &Value) -> String {
    body["Message"].as_str().unwrap_or_default().to_string()
}

/// Calls `name` and checks the answer is `status` with a message containing every one
/// of `needles` (case-insensitive): the message, or what differs.
async fn failure_of(
    app: &crate::common::TestApp,
    name: &str,
    status: u16,
    needles: &[&str],
) -> Result<String, String> {
    let (got, body) = call(app, name).await;
    let text = message(&body);
    if got != status {
        return Err(format!("`{name}`: expected {status}, got {got} {body}"));
    }
    for needle in needles {
        if !text.to_lowercase().contains(&needle.to_lowercase()) {
            return Err(format!(
                "`{name}`: message {text:?} should mention {needle:?}"
            ));
        }
    }
    Ok(text)
}

/// The normal action answers right after `after`.
async fn serving_after(app: &crate::common::TestApp, after: &str) -> Result<(), String> {
    let (status, body) = call(app, "ok").await;
    if status == 200 && body == json!({ "ok": true }) {
        Ok(())
    } else {
        Err(format!(
            "normal action right after `{after}`: {status} {body}"
        ))
    }
}

/// Expects `name` to fail with `status` and `needles`, then a normal call to succeed.
/// Problems are collected so one run reports every case.
async fn expect_failure(
    app: &crate::common::TestApp,
    problems: &mut Vec<String>,
    name: &str,
    status: u16,
    needles: &[&str],
) {
    match failure_of(app, name, status, needles).await {
        Ok(text) => eprintln!("{name}: {status} {text:?}"),
        Err(problem) => problems.push(problem),
    }
    if let Err(problem) = serving_after(app, name).await {
        problems.push(problem);
    }
}

/// The normal action answers right after `after` (or the test fails now).
async fn still_serving(app: &crate::common::TestApp, after: &str) {
    if let Err(problem) = serving_after(app, after).await {
        panic!("{problem}");
    }
}

fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn on_demand(name: &str) -> String {
    format!("general/onDemand/{name}.js")
}

// 1. Infinite loops ------------------------------------------------------------------

#[tokio::test]
async fn infinite_loops_stop_at_the_time_limit() {
    let backend = sqlite();
    let loops = [
        ("spin_for", "function backandCallback() { for (;;) {} }"),
        (
            "spin_while",
            "function backandCallback() { while (true) {} }",
        ),
        (
            "spin_swallow",
            // Tries to swallow the interrupt and keep going.
            "function backandCallback() { while (true) { try { for (;;) {} } catch (e) {} } }",
        ),
        (
            "spin_catch_return",
            "function backandCallback() {
               try { for (;;) {} } catch (e) { return 'swallowed'; } finally { return 'finally'; }
             }",
        ),
        (
            "spin_async",
            "async function backandCallback() { await null; for (;;) {} }",
        ),
        (
            "spin_microtasks",
            // Never-ending chain of jobs: each one is tiny, the chain is not.
            "function backandCallback() {
               const tick = () => Promise.resolve().then(tick);
               tick();
               return new Promise(() => {});
             }",
        ),
        (
            "spin_top_level",
            "for (;;) {}\nfunction backandCallback() { return 1; }",
        ),
        (
            "spin_to_json",
            // The loop runs while livebase turns the result into JSON.
            "function backandCallback() { return { toJSON() { for (;;) {} } }; }",
        ),
        (
            "redos",
            // Catastrophic backtracking: the loop is inside the regex engine.
            "function backandCallback() { return /^(a+)+$/.test('a'.repeat(40) + 'b'); }",
        ),
    ];
    let mut spawn = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .config(|c| c.action_time_limit_ms = 300);
    for (name, code) in loops {
        spawn = spawn.action(&on_demand(name), code);
    }
    let app = spawn.start().await;
    let mut problems = Vec::new();
    for (name, _) in loops {
        let started = Instant::now();
        expect_failure(
            &app,
            &mut problems,
            name,
            422,
            &["time limit", "300 ms", name],
        )
        .await;
        eprintln!("{name}: answered after {:?}", started.elapsed());
    }
    report(problems);
}

// 2. Memory bombs --------------------------------------------------------------------

#[tokio::test]
async fn memory_bombs_stop_at_the_memory_limit() {
    let backend = sqlite();
    let bombs = [
        (
            "grow_strings",
            "function backandCallback() {
               const a = [];
               for (let i = 0; ; i++) a.push('x'.repeat(100000) + i);
             }",
        ),
        (
            "huge_array",
            "function backandCallback() { return new Array(1e9).fill(0).length; }",
        ),
        (
            "string_doubling_flat",
            // Doubling, and reading the string each time so it is really built.
            "function backandCallback() {
               let s = 'x';
               for (;;) { s += s; s.indexOf('y'); }
             }",
        ),
        (
            "nesting_flood",
            // Millions of tiny allocations: no room left even for the error object.
            "function backandCallback() { let a = []; for (;;) a = [a]; }",
        ),
        (
            "object_flood",
            "function backandCallback() {
               const o = {};
               for (let i = 0; ; i++) o['k' + i] = { i };
             }",
        ),
        (
            "huge_result",
            // Does not even fit the runtime.
            "function backandCallback() { return 'x'.repeat(50e6); }",
        ),
        (
            "result_too_big_to_serialize",
            // Fits the runtime (10 MB of 16 MiB), but its JSON does not.
            "function backandCallback() { return 'x'.repeat(10e6); }",
        ),
    ];
    let mut spawn = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("string_doubling"),
            "function backandCallback() { let s = 'x'; for (;;) s += s; }",
        )
        .action(
            &on_demand("hoard_and_swallow"),
            // Catches the out-of-memory error and keeps what it hoarded in a global.
            "function backandCallback() {
               globalThis.keep = [];
               try { for (;;) keep.push('x'.repeat(100000)); } catch (e) {}
               return keep.length;
             }",
        )
        .config(|c| {
            c.action_memory_limit_mib = 16;
            // Generous, so the memory limit is what stops the bombs.
            c.action_time_limit_ms = 10_000;
        });
    for (name, code) in bombs {
        spawn = spawn.action(&on_demand(name), code);
    }
    let app = spawn.start().await;
    let mut problems = Vec::new();
    for (name, _) in bombs {
        expect_failure(
            &app,
            &mut problems,
            name,
            422,
            &["memory limit", "16 MiB", name],
        )
        .await;
    }
    // Plain doubling makes a rope QuickJS never builds: it stops at the longest string
    // QuickJS builds (the engine's "string too long", a limit like memory) or at the
    // memory limit.
    let (status, body) = call(&app, "string_doubling").await;
    let text = message(&body);
    eprintln!("string_doubling: {status} {text:?}");
    if !(status == 422 && (text.contains("string length limit") || text.contains("memory limit"))) {
        problems.push(format!("`string_doubling`: {status} {body}"));
    }
    if let Err(problem) = serving_after(&app, "string_doubling").await {
        problems.push(problem);
    }
    // Swallowing the out-of-memory error is the action's business (it may answer, or
    // be stopped); either way what it hoarded is gone for the next call.
    for _ in 0..4 {
        let (status, body) = call(&app, "hoard_and_swallow").await;
        eprintln!("hoard_and_swallow: {status} {body}");
        let fine = match status {
            200 => body.is_u64(),
            422 => message(&body).contains("memory limit"),
            _ => false,
        };
        if !fine {
            problems.push(format!("`hoard_and_swallow`: {status} {body}"));
        }
        // Twice: the pool's threads take turns, and the first call may land on the thread
        // that did not hoard; one of the two reaches the hoarder's runtime.
        for _ in 0..2 {
            if let Err(problem) = serving_after(&app, "hoard_and_swallow").await {
                problems.push(problem);
            }
        }
    }
    report(problems);
}

// 3. Deep recursion ------------------------------------------------------------------

#[tokio::test]
async fn deep_recursion_stops_at_the_stack_limit() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("recurse"),
            "function f() { return f() + 1; }
             function backandCallback() { return f(); }",
        )
        .action(
            &on_demand("recurse_to_string"),
            "function backandCallback() {
               const o = {};
               o.toString = () => 'x' + o;
               return '' + o;
             }",
        )
        .action(
            &on_demand("nested_result"),
            // A result nested far deeper than the stack allows to serialize.
            "function backandCallback() {
               let a = [];
               for (let i = 0; i < 1e5; i++) a = [a];
               return a;
             }",
        )
        .action(
            &on_demand("recurse_caught"),
            // Catching the stack overflow is allowed: the action goes on.
            "function f() { return f() + 1; }
             function backandCallback() {
               try { return f(); } catch (e) { return e.name; }
             }",
        )
        .config(|c| c.action_time_limit_ms = 5_000)
        .start()
        .await;
    let mut problems = Vec::new();
    for name in ["recurse", "recurse_to_string", "nested_result"] {
        expect_failure(&app, &mut problems, name, 422, &["stack limit", name]).await;
    }
    let (status, body) = call(&app, "recurse_caught").await;
    if (status, &body) != (200, &json!("RangeError")) {
        problems.push(format!("`recurse_caught`: {status} {body}"));
    }
    if let Err(problem) = serving_after(&app, "recurse_caught").await {
        problems.push(problem);
    }
    report(problems);
}

// 4. Prototype pollution -------------------------------------------------------------

/// What the realm looks like; identical in a clean realm whichever action asks.
const REALM: &str = "
function realm() {
  return {
    polluted: typeof ({}).polluted,
    push: typeof [].push,
    stringify: JSON.stringify({ a: [1] }),
    call: typeof Function.prototype.call,
    then: typeof Promise.prototype.then,
    log: typeof console.log,
    emit: typeof socket.emitAll,
    frozen: Object.isFrozen(Object.prototype),
    arrayJSON: typeof Array.prototype.toJSON,
  };
}";

#[tokio::test]
async fn prototype_pollution_never_reaches_the_next_call() {
    let backend = sqlite();
    let pollute = format!(
        "{REALM}
function backandCallback() {{
  const before = realm();
  Object.prototype.polluted = 1;
  Array.prototype.push = null;
  Array.prototype.toJSON = function () {{ return 'hacked'; }};
  JSON.stringify = () => '\"hacked\"';
  Function.prototype.call = null;
  Promise.prototype.then = function () {{ throw new Error('hijacked'); }};
  console.log = null;
  socket.emitAll = null;
  Object.freeze(Object.prototype);
  return before;
}}"
    );
    let check = format!("{REALM}\nfunction backandCallback() {{ return realm(); }}");
    let check_async =
        format!("{REALM}\nasync function backandCallback() {{ await null; return realm(); }}");
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(&on_demand("pollute"), &pollute)
        .action(&on_demand("check"), &check)
        .action(&on_demand("check_async"), &check_async)
        .start()
        .await;
    let clean = json!({
        "polluted": "undefined",
        "push": "function",
        "stringify": "{\"a\":[1]}",
        "call": "function",
        "then": "function",
        "log": "function",
        "emit": "function",
        "frozen": false,
        "arrayJSON": "undefined",
    });
    // Several rounds, so both pool threads (and their runtimes) are polluted and checked.
    for round in 0..4 {
        for name in ["pollute", "check", "pollute", "check_async"] {
            let (status, body) = call(&app, name).await;
            assert_eq!(status, 200, "round {round}, `{name}`: {body}");
            assert_eq!(body, clean, "round {round}, `{name}` saw a polluted realm");
        }
    }
    still_serving(&app, "pollute").await;
}

// 5. Isolation -----------------------------------------------------------------------

#[tokio::test]
async fn invocations_never_see_each_others_globals() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("counter"),
            "var seen = (typeof seen === 'number' ? seen : 0) + 1;
             function backandCallback() {
               globalThis.counter = (globalThis.counter || 0) + 1;
               return { counter: globalThis.counter, seen };
             }",
        )
        .action(
            &on_demand("peek"),
            "function backandCallback() {
               return { counter: typeof globalThis.counter, seen: typeof globalThis.seen };
             }",
        )
        .start()
        .await;
    for i in 0..6 {
        let (status, body) = call(&app, "counter").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({ "counter": 1, "seen": 1 }), "call {i}");
        let (status, body) = call(&app, "peek").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({ "counter": "undefined", "seen": "undefined" }),
            "call {i}"
        );
    }
}

/// A job an invocation leaves queued (a `.then` it never waited for) dies with it: it
/// must not run later, inside another invocation, on that one's time.
#[tokio::test]
async fn jobs_left_queued_do_not_run_in_the_next_invocation() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("leave_a_job"),
            "function backandCallback() {
               Promise.resolve().then(() => { for (;;) {} });
               return 'returned';
             }",
        )
        .action(
            &on_demand("innocent_async"),
            // A little work after the await, well inside any time limit.
            "async function backandCallback() {
               await null;
               let sum = 0;
               for (let i = 0; i < 100000; i++) sum += i;
               return 'innocent';
             }",
        )
        .config(|c| c.action_time_limit_ms = 300)
        .start()
        .await;
    // Alternating calls reach both pool threads.
    for round in 0..3 {
        let (status, body) = call(&app, "leave_a_job").await;
        eprintln!("round {round}: leave_a_job {status} {body}");
        // Returning before the job ran, or being stopped for it, are both fine …
        assert!(
            status == 200 && body == json!("returned")
                || status == 422 && message(&body).contains("time limit"),
            "round {round}, leave_a_job: {status} {body}"
        );
        // … but the next action, which loops nowhere, must not pay for it.
        for _ in 0..2 {
            let started = Instant::now();
            let (status, body) = call(&app, "innocent_async").await;
            eprintln!(
                "round {round}: innocent_async {status} {body} after {:?}",
                started.elapsed()
            );
            assert_eq!(
                (status, body.clone()),
                (200, json!("innocent")),
                "round {round}: an innocent async action ran the job another left queued: {body}"
            );
        }
    }
    still_serving(&app, "leave_a_job").await;
}

// 6. eval / Function tricks, host access ---------------------------------------------

/// Every global a fresh action realm may have: ECMAScript's, QuickJS's harmless extras,
/// and livebase's bindings. Anything else is a leak of the host.
const ALLOWED_GLOBALS: &[&str] = &[
    "AggregateError",
    "btoa",
    "atob",
    "InternalError",
    "Array",
    "ArrayBuffer",
    "Atomics",
    "BigInt",
    "BigInt64Array",
    "BigUint64Array",
    "Boolean",
    "DataView",
    "Date",
    "DOMException",
    "Error",
    "EvalError",
    "FinalizationRegistry",
    "Float16Array",
    "Float32Array",
    "Float64Array",
    "Function",
    "Infinity",
    "Int16Array",
    "Int32Array",
    "Int8Array",
    "Iterator",
    "JSON",
    "Map",
    "Math",
    "NaN",
    "Number",
    "Object",
    "Promise",
    "Proxy",
    "RangeError",
    "ReferenceError",
    "Reflect",
    "RegExp",
    "Set",
    "SharedArrayBuffer",
    "String",
    "SuppressedError",
    "DisposableStack",
    "AsyncDisposableStack",
    "Symbol",
    "SyntaxError",
    "TypeError",
    "URIError",
    "Uint16Array",
    "Uint32Array",
    "Uint8Array",
    "Uint8ClampedArray",
    "WeakMap",
    "WeakRef",
    "WeakSet",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "eval",
    "globalThis",
    "isFinite",
    "isNaN",
    "parseFloat",
    "parseInt",
    "undefined",
    "unescape",
    "queueMicrotask",
    "structuredClone",
    "performance",
    "navigator",
    "console",
    "socket",
    "db",
];

#[tokio::test]
async fn eval_and_function_tricks_reach_no_host() {
    let backend = sqlite();
    let probe = r#"
async function backandCallback() {
  const viaFunction = new Function("return this")();
  const sloppyThis = (function () { return this; })();
  const indirect = (0, eval)("this");
  const host = {};
  for (const name of ["require", "process", "std", "os", "fetch", "setTimeout",
      "setInterval", "XMLHttpRequest", "WebSocket", "Deno", "Bun", "module", "exports",
      "__dirname", "scriptArgs", "print", "Worker", "bjson", "gc", "loadScript"]) {
    host[name] = eval("typeof " + name);
    host["fn:" + name] = new Function("return typeof " + name)();
  }
  const imports = {};
  for (const spec of ["fs", "std", "os", "node:fs", "/etc/passwd", "./ok.js", "ok"]) {
    try { const m = await import(spec); imports[spec] = "loaded: " + Object.keys(m); }
    catch (e) { imports[spec] = "rejected: " + e.message; }
  }
  return {
    eval: eval("1+1"),
    functionThisIsGlobal: viaFunction === globalThis,
    indirectEvalIsGlobal: indirect === globalThis,
    sloppyThis: typeof sloppyThis,
    host,
    imports,
    importMeta: Object.keys(import.meta),
    importMetaText: JSON.stringify(import.meta),
    globals: Object.getOwnPropertyNames(globalThis).sort(),
  };
}"#;
    let bindings = r#"
function backandCallback() {
  const out = {};
  const attempt = (key, f) => {
    try { out[key] = "ok: " + String(f()); } catch (e) { out[key] = "threw: " + e.name; }
  };
  attempt("emitSymbol", () => socket.emitAll(Symbol("x"), {}));
  attempt("emitUsersNotArray", () => socket.emitUsers("e", {}, "bob"));
  attempt("emitBigInt", () => socket.emitAll("e", 10n));
  attempt("emitCyclic", () => { const o = {}; o.o = o; return socket.emitAll("e", o); });
  attempt("logTrap", () => console.log(new Proxy({}, { get() { throw new Error("trap"); } })));
  attempt("logUnbound", () => console.log.call(null, "x"));
  attempt("logConstruct", () => new console.log("x"));
  attempt("logSource", () => console.log.toString());
  attempt("emitNoArgs", () => socket.broadcast());
  return out;
}"#;
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(&on_demand("probe"), probe)
        .action(&on_demand("bindings"), bindings)
        .config(|c| c.action_time_limit_ms = 2_000)
        .start()
        .await;
    let (status, body) = call(&app, "probe").await;
    assert_eq!(status, 200, "{body}");
    eprintln!("probe: {body:#}");
    assert_eq!(body["eval"], json!(2));
    // `this` of a sloppy function and of `Function` is the sandbox's own global: fine, as
    // long as that global holds nothing of the host.
    for (name, kind) in body["host"].as_object().unwrap() {
        assert_eq!(
            kind, "undefined",
            "`{name}` is reachable from an action: {body}"
        );
    }
    for (spec, outcome) in body["imports"].as_object().unwrap() {
        assert!(
            outcome.as_str().unwrap().starts_with("rejected"),
            "import({spec:?}) must reject: {outcome}"
        );
    }
    let meta = body["importMetaText"].as_str().unwrap_or("{}");
    assert!(
        !meta.contains('/') && !meta.contains('\\'),
        "import.meta shows a host path: {meta}"
    );
    let unexpected: Vec<&str> = body["globals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|g| !ALLOWED_GLOBALS.contains(g))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected globals in the sandbox: {unexpected:?}"
    );
    still_serving(&app, "probe").await;

    let (status, body) = call(&app, "bindings").await;
    assert_eq!(
        status, 200,
        "abusing the bindings must be the action's own error: {body}"
    );
    eprintln!("bindings: {body:#}");
    let source = body["logSource"].as_str().unwrap_or_default();
    assert!(
        !source.contains("rquickjs") && !source.contains("livebase") && !source.contains(".rs"),
        "a binding's source shows host internals: {source}"
    );
    still_serving(&app, "bindings").await;
}

// 7. Refusing to start ---------------------------------------------------------------

/// Builds a server whose actions directory holds `general/onDemand/{file}` = `code`
/// and returns the error it refuses to start with.
async fn start_error(file: &str, code: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let schema_dir = dir.path().join("schema");
    std::fs::create_dir_all(&schema_dir).unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let config = test_config(dir.path(), &schema_dir, &url);
    let path = config.actions_dir.join("general/onDemand").join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, code).unwrap();
    let built = tokio::time::timeout(HANG, livebase::server::build(config, vec![]))
        .await
        .expect("building the server hangs");
    match built {
        Ok(_) => panic!("the server started with the broken action {file}:\n{code}"),
        Err(e) => format!("{e:#}"),
    }
}

/// `(line L, column C)` in an error text.
fn line_and_column(text: &str) -> Option<(u32, u32)> {
    let start = text.find("(line ")?;
    let rest = &text[start + "(line ".len()..];
    let (line, rest) = rest.split_once(", column ")?;
    let column = rest.split(')').next()?;
    Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
}

#[tokio::test]
async fn broken_actions_stop_the_server_from_starting() {
    // A syntax error on line 3: the message names the file, the line and the column.
    let code = "function backandCallback() {\n  let x = 1;\n  return x +* 2;\n}\n";
    let error = start_error("broken.js", code).await;
    eprintln!("syntax error: {error}");
    assert!(error.contains("broken.js"), "names the file: {error}");
    let (line, column) =
        line_and_column(&error).unwrap_or_else(|| panic!("no line and column in: {error}"));
    assert_eq!(line, 3, "{error}");
    assert_eq!(column, 13, "the column of `*`: {error}");

    // No `backandCallback`: the message names the file and the missing function.
    let error = start_error(
        "nameless.js",
        "function callback(userInput) {\n  return userInput;\n}\n",
    )
    .await;
    eprintln!("missing backandCallback: {error}");
    assert!(error.contains("nameless.js"), "names the file: {error}");
    assert!(
        error.contains("backandCallback"),
        "names the function: {error}"
    );

    // A static import of a host module: there is none to load, and the file says so.
    let error = start_error(
        "imports.js",
        "import * as os from 'os';\nfunction backandCallback() { return typeof os.exec; }\n",
    )
    .await;
    eprintln!("static import: {error}");
    assert!(error.contains("imports.js"), "names the file: {error}");
    assert!(error.contains("'os'"), "names the module: {error}");

    // A brace never closed: the error is about the user's code, at a line of the file
    // (or just past its end), not about code livebase appended.
    let code = "function backandCallback() {\n  return 1;\n";
    let error = start_error("unclosed.js", code).await;
    eprintln!("unclosed brace: {error}");
    assert!(error.contains("unclosed.js"), "names the file: {error}");
    assert!(
        !error.contains("export"),
        "the message talks about code the user never wrote: {error}"
    );
    if let Some((line, _)) = line_and_column(&error) {
        assert!(
            line <= 3,
            "line {line} is past the end of a 2-line file: {error}"
        );
    }
}

// 8. Thrown values -------------------------------------------------------------------

#[tokio::test]
async fn thrown_values_become_client_errors_with_their_message() {
    let backend = sqlite();
    let throws = [
        ("throw_text", "throw 'plain text';", 400, "plain text"),
        (
            "throw_status",
            "throw { status: 403, message: 'no' };",
            403,
            "no",
        ),
        (
            "throw_type_error",
            "throw new TypeError('bad');",
            400,
            "bad",
        ),
        (
            "throw_error_with_status",
            "const e = new Error('gone'); e.status = 410; throw e;",
            410,
            "gone",
        ),
        (
            "throw_status_200",
            "throw { status: 200, message: 'not a success' };",
            400,
            "not a success",
        ),
        (
            "throw_status_999",
            "throw { status: 999, message: 'off the scale' };",
            400,
            "off the scale",
        ),
        (
            "throw_status_text",
            "throw { status: '403', message: 'status as text' };",
            400,
            "status as text",
        ),
        (
            "throw_status_fraction",
            "throw { status: 403.5, message: 'fraction' };",
            400,
            "fraction",
        ),
        ("throw_number", "throw 42;", 400, "42"),
        // QuickJS throws `null` itself when out of memory, so livebase cannot tell the
        // two apart and answers as for the memory limit, saying so.
        ("throw_null", "throw null;", 422, "threw null"),
        ("throw_undefined", "throw undefined;", 400, ""),
        (
            "throw_async",
            "await null; throw { status: 409, message: 'later' };",
            409,
            "later",
        ),
        (
            "emit_flood",
            "for (let i = 0; i < 5000; i++) socket.emitAll('e', i);",
            400,
            "at most 1000",
        ),
        (
            "throw_cyclic_result",
            "const o = {}; o.o = o; return o;",
            400,
            "circular",
        ),
    ];
    let mut spawn = Spawn::new(&backend).action(&on_demand("ok"), OK);
    let codes: Vec<(String, String)> = throws
        .iter()
        .map(|(name, body, _, _)| {
            (
                on_demand(name),
                format!("async function backandCallback() {{ {body} }}"),
            )
        })
        .collect();
    for (path, code) in &codes {
        spawn = spawn.action(path, code);
    }
    let app = spawn.start().await;
    let mut problems = Vec::new();
    for (name, _, status, needle) in throws {
        expect_failure(&app, &mut problems, name, status, &[needle]).await;
    }
    report(problems);
}

/// What an action throws stays what it threw, even when its message happens to mention
/// a limit: classifying by the message text turns it into a 422 "limit" and loses its
/// status (and replaces a runtime for nothing).
#[tokio::test]
async fn a_thrown_message_that_mentions_a_limit_is_still_the_actions_own_error() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("rethrow"),
            "function deep(n) { return deep(n + 1) + 1; }
             function backandCallback() {
               try { deep(0); }
               catch (e) { throw { status: 413, message: 'input too deep: ' + e.message }; }
             }",
        )
        .action(
            &on_demand("says_oom"),
            "function backandCallback() { throw new Error('cache out of memory, try later'); }",
        )
        .start()
        .await;
    let mut problems = Vec::new();
    expect_failure(&app, &mut problems, "rethrow", 413, &["input too deep"]).await;
    expect_failure(
        &app,
        &mut problems,
        "says_oom",
        400,
        &["cache out of memory"],
    )
    .await;
    report(problems);
}

/// A mark or a `status` put on the shared prototypes is no error's own: the engine's
/// limits stay limits (422, the runtime replaced) and its bugs stay bugs (500).
#[tokio::test]
async fn marks_and_statuses_on_the_prototypes_turn_no_limit_or_bug_into_a_refusal() {
    let backend = sqlite();
    let tricks = [
        ("status", "Error.prototype.status = 400;"),
        ("range_name", "RangeError.prototype.name = 'Fine';"),
        ("internal_name", "InternalError.prototype.name = 'Fine';"),
        ("range_status", "RangeError.prototype.status = 400;"),
        ("reference_status", "ReferenceError.prototype.status = 400;"),
        ("internal_status", "InternalError.prototype.status = 400;"),
        ("object_status", "Object.prototype.status = 400;"),
        (
            "getter_status",
            "Object.defineProperty(Error.prototype, 'status', { get() { return 400; } });",
        ),
        ("mark", "Error.prototype['livebase.ownError'] = true;"),
        (
            "defined_mark",
            "Object.defineProperty(Object.prototype, 'livebase.ownError', { value: true });",
        ),
        (
            "getter_mark",
            "Object.defineProperty(Error.prototype, 'livebase.ownError', { get() { return true; } });",
        ),
        (
            "both",
            "Error.prototype.status = 400; Error.prototype['livebase.ownError'] = true;",
        ),
    ];
    let mut spawn = Spawn::new(&backend).action(&on_demand("ok"), OK);
    for (name, trick) in tricks {
        spawn = spawn
            .action(
                &on_demand(&format!("{name}_overflow")),
                &format!(
                    "function f() {{ return f() + 1; }}\nfunction backandCallback() {{ {trick} return f(); }}\n"
                ),
            )
            .action(
                &on_demand(&format!("{name}_bug")),
                &format!("function backandCallback() {{ {trick}\n  return missing; }}\n"),
            );
    }
    let app = spawn
        .action(
            &on_demand("status_memory"),
            "function backandCallback() {
               Error.prototype.status = 400;
               InternalError.prototype.status = 400;
               Error.prototype['livebase.ownError'] = true;
               const a = [];
               for (let i = 0; ; i++) a.push('x'.repeat(100000) + i);
             }",
        )
        .config(|c| c.action_time_limit_ms = 5_000)
        .start()
        .await;
    let mut problems = Vec::new();
    for (name, _) in tricks {
        expect_failure(
            &app,
            &mut problems,
            &format!("{name}_overflow"),
            422,
            &["stack limit"],
        )
        .await;
        expect_failure(
            &app,
            &mut problems,
            &format!("{name}_bug"),
            500,
            &["ReferenceError: missing is not defined (line 2, column"],
        )
        .await;
    }
    expect_failure(&app, &mut problems, "status_memory", 422, &["memory limit"]).await;
    report(problems);
}

// 9. Concurrency ---------------------------------------------------------------------

#[tokio::test]
async fn a_normal_call_completes_while_loops_hold_the_pool() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("spin"),
            "function backandCallback() { for (;;) {} }",
        )
        .config(|c| c.action_time_limit_ms = 1_000)
        .start()
        .await;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let started = Instant::now();
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let request = crate::common::with_cred(
                app.client.get(app.url("/1/function/general/spin")),
                &master(),
            );
            tokio::spawn(async move {
                let resp = request.send().await.unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (status, body, started.elapsed())
            })
        })
        .collect();
    // Let both loops reach the pool first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let (status, body) = call(&app, "ok").await;
    let waited = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "ok": true }));
    for spin in loops {
        let (status, body, after) = tokio::time::timeout(HANG, spin)
            .await
            .expect("a looping call never answered")
            .unwrap();
        assert_eq!(status, 422, "{body}");
        assert!(message(&body).contains("time limit"), "{body}");
        eprintln!("spin: 422 after {after:?}");
    }
    eprintln!("{cores} cores: the normal call answered after {waited:?} while two 1 s loops ran");
    // Completion only, not speed: it may have to wait for a loop's time limit when every
    // pool thread is busy, but never longer than a generous bound.
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    still_serving(&app, "spin").await;
}

// 10. Return values ------------------------------------------------------------------

#[tokio::test]
async fn return_values_become_json() {
    let backend = sqlite();
    let returns = [
        ("undefined", "function backandCallback() {}", json!(null)),
        (
            "function",
            "function backandCallback() { return function () {}; }",
            json!(null),
        ),
        (
            "resolved",
            "async function backandCallback() { await null; return { done: [1, 'two'] }; }",
            json!({ "done": [1, "two"] }),
        ),
        (
            "promise",
            "function backandCallback() { return Promise.resolve(7).then(x => x * 6); }",
            json!(42),
        ),
        (
            "nan",
            "function backandCallback() { return [NaN, Infinity, undefined]; }",
            json!([null, null, null]),
        ),
        (
            "date",
            "function backandCallback() { return new Date(0); }",
            json!("1970-01-01T00:00:00.000Z"),
        ),
        (
            "symbol",
            "function backandCallback() { return { a: Symbol('s'), b: 1 }; }",
            json!({ "b": 1 }),
        ),
        (
            "top_level_await",
            "const v = await Promise.resolve('tla');\nfunction backandCallback() { return v; }",
            json!("tla"),
        ),
    ];
    let mut spawn = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("rejected"),
            "async function backandCallback() { await null; throw new Error('rejected here'); }",
        )
        .action(
            &on_demand("rejected_promise"),
            "function backandCallback() { return Promise.reject({ status: 404, message: 'not there' }); }",
        );
    for (name, code, _) in &returns {
        spawn = spawn.action(&on_demand(name), code);
    }
    let app = spawn.start().await;
    for (name, _, expected) in &returns {
        let (status, body) = call(&app, name).await;
        assert_eq!(status, 200, "`{name}`: {body}");
        assert_eq!(&body, expected, "`{name}`");
    }
    let mut problems = Vec::new();
    expect_failure(&app, &mut problems, "rejected", 400, &["rejected here"]).await;
    expect_failure(&app, &mut problems, "rejected_promise", 404, &["not there"]).await;
    report(problems);
}

/// A promise nothing will ever settle is the action's own fault: a clear client error
/// naming the problem, not an opaque 500.
#[tokio::test]
async fn a_promise_that_never_settles_is_a_clear_error() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("never"),
            "function backandCallback() { return new Promise(() => {}); }",
        )
        .action(
            &on_demand("never_top_level"),
            "await new Promise(() => {});\nfunction backandCallback() { return 1; }",
        )
        .start()
        .await;
    let mut problems = Vec::new();
    for name in ["never", "never_top_level"] {
        let (status, body) = call(&app, name).await;
        eprintln!("{name}: {status} {body}");
        let text = message(&body).to_lowercase();
        if !(400..500).contains(&status) {
            problems.push(format!("`{name}`: expected a 4xx, got {status} {body}"));
        } else if !(text.contains("promise") || text.contains("settle")) {
            problems.push(format!(
                "`{name}`: the message should say the promise never settled: {body}"
            ));
        }
        if let Err(problem) = serving_after(&app, name).await {
            problems.push(problem);
        }
    }
    report(problems);
}

/// What an action returns arrives intact, or as a clear error; never silently as `null`.
#[tokio::test]
async fn results_are_never_silently_replaced_by_null() {
    let backend = sqlite();
    let app = Spawn::new(&backend)
        .action(&on_demand("ok"), OK)
        .action(
            &on_demand("nested_200"),
            // Legal JSON, 200 levels deep.
            "function backandCallback() {
               let a = 1;
               for (let i = 0; i < 200; i++) a = [a];
               return a;
             }",
        )
        .action(
            &on_demand("lone_surrogate"),
            "function backandCallback() { return { name: 'kept', odd: '\\uD800' }; }",
        )
        .start()
        .await;
    let mut problems = Vec::new();
    for name in ["nested_200", "lone_surrogate"] {
        let resp = tokio::time::timeout(
            HANG,
            crate::common::with_cred(
                app.client
                    .get(app.url(&format!("/1/function/general/{name}"))),
                &master(),
            )
            .send(),
        )
        .await
        .expect("hang")
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        eprintln!("{name}: {status} {}", &text[..text.len().min(200)]);
        let fine = match status {
            200 if name == "nested_200" => {
                text.replace(char::is_whitespace, "")
                    == format!("{}1{}", "[".repeat(200), "]".repeat(200))
            }
            200 => text.contains("kept"),
            // A clear refusal is fine too: a message, not an empty one.
            400..=499 => serde_json::from_str::<Value>(&text).is_ok_and(|b| message(&b).len() > 10),
            _ => false,
        };
        if !fine {
            problems.push(format!(
                "`{name}`: {status} {}",
                &text[..text.len().min(200)]
            ));
        }
        if let Err(problem) = serving_after(&app, name).await {
            problems.push(problem);
        }
    }
    report(problems);
}
