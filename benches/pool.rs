//! Micro-benchmarks of the QuickJS action call path.
//!
//! Measured:
//! - `vm/invoke_noop`: one `Vm::invoke` of a compiled no-op action on the bench thread:
//!   a fresh context, the bindings, loading the bytecode, the call, the result as JSON.
//! - `vm/invoke_args_small` / `vm/invoke_args_large`: the same with arguments to
//!   convert: a 3-field `userInput`/`dbRow`, and a ~100-field (~10 KB) `dbRow` that the
//!   action returns, so JSON → JS and JS → JSON are both paid.
//! - `vm/invoke_emit`: an action calling `socket.emitAll` once (the binding's cost).
//! - `pool/invoke_noop`: the no-op through `Pool::invoke` from a current-thread tokio
//!   runtime: the lane choice, the queue hop to the pool thread and the oneshot back
//!   included.
//! - `vm/compile_small`: compiling the no-op source (what a bytecode-cache miss costs).
//!
//! Each bench checks the outcome once before measuring, so a broken path cannot
//! produce a fast, meaningless number.
//!
//! Run: `cargo bench --bench pool` (about a minute; measurement is kept short).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use livebase::actions::pool::{Key, Pool};
use livebase::actions::sandbox::{Call, Emit, Limits, Outcome, Vm};
use serde_json::{Map, Value, json};

const NOOP: &str =
    "function backandCallback(userInput, dbRow, parameters, userProfile) { return null; }";
const ECHO_ROW: &str =
    "function backandCallback(userInput, dbRow, parameters, userProfile) { return dbRow; }";
const EMIT: &str = "function backandCallback(userInput, dbRow, parameters, userProfile) { \
                    socket.emitAll('x', {a: 1}); return null; }";

/// The action version the pool bench calls: never penalised, so always the main lane.
const KEY: Key = (1, 1);

/// The server's defaults (`--action-time-limit-ms 1000`, 64 MiB, 1024 KiB).
fn limits() -> Limits {
    Limits {
        time: Duration::from_millis(1000),
        memory: 64 * 1024 * 1024,
        stack: 1024 * 1024,
    }
}

fn call(user_input: Value, db_row: Value) -> Call {
    Call {
        user_input,
        db_row,
        parameters: json!({}),
        user_profile: json!({ "id": 1, "role": "User" }),
        db: None,
    }
}

fn small() -> Value {
    json!({ "id": 7, "name": "Ada", "active": true })
}

/// ~100 fields, ~10 KB of JSON: strings, integers, floats, booleans, a few nested.
fn large_row() -> Value {
    let mut row = Map::new();
    for i in 0..100 {
        let key = format!("field_{i:03}");
        let value = match i % 5 {
            0 => json!(i * 1000 + 7),
            1 => json!(i as f64 + 0.25),
            2 => json!(i % 2 == 0),
            3 => json!({ "x": i, "label": format!("nested value {i}") }),
            _ => json!(format!(
                "{i:03}-{}",
                "lorem ipsum dolor sit amet ".repeat(14)
            )),
        };
        row.insert(key, value);
    }
    Value::Object(row)
}

fn compiled(vm: &mut Vm, name: &str, code: &str) -> Vec<u8> {
    vm.compile(name, code)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e:?}"))
}

fn assert_null(outcome: &Outcome) {
    assert!(
        matches!(outcome.result, Ok(Value::Null)),
        "expected Ok(null), got {:?}",
        outcome.result
    );
}

fn vm_benches(c: &mut Criterion) {
    let mut vm = Vm::new(limits()).expect("a QuickJS runtime");
    let noop = compiled(&mut vm, "noop.js", NOOP);
    let echo = compiled(&mut vm, "echo.js", ECHO_ROW);
    let emit = compiled(&mut vm, "emit.js", EMIT);

    // 1. The bare per-invocation cost.
    let empty = call(Value::Null, Value::Null);
    let outcome = vm.invoke(&noop, &empty);
    assert_null(&outcome);
    assert!(outcome.emits.is_empty() && outcome.logs.is_empty());
    c.bench_function("vm/invoke_noop", |b| {
        b.iter(|| black_box(vm.invoke(black_box(&noop), black_box(&empty))))
    });

    // 2. Argument conversion, small and large.
    let small_call = call(small(), small());
    let outcome = vm.invoke(&noop, &small_call);
    assert_null(&outcome);
    assert_eq!(
        outcome.user_input,
        small(),
        "userInput must come back intact"
    );
    c.bench_function("vm/invoke_args_small", |b| {
        b.iter(|| black_box(vm.invoke(black_box(&noop), black_box(&small_call))))
    });

    let row = large_row();
    let size = row.to_string().len();
    assert!(
        (9_000..=12_000).contains(&size),
        "the large row should be ~10 KB of JSON, is {size} B"
    );
    let large_call = call(small(), row.clone());
    let outcome = vm.invoke(&echo, &large_call);
    match &outcome.result {
        Ok(back) => assert_eq!(back, &row, "the large row must round-trip equal"),
        Err(e) => panic!("echo failed: {e:?}"),
    }
    c.bench_function("vm/invoke_args_large", |b| {
        b.iter(|| black_box(vm.invoke(black_box(&echo), black_box(&large_call))))
    });

    // 3. One host binding call.
    let outcome = vm.invoke(&emit, &empty);
    assert_null(&outcome);
    assert_eq!(
        outcome.emits,
        vec![Emit::All {
            event: "x".into(),
            data: json!({ "a": 1 }),
        }]
    );
    c.bench_function("vm/invoke_emit", |b| {
        b.iter(|| black_box(vm.invoke(black_box(&emit), black_box(&empty))))
    });

    // 5. A cache miss: compiling the no-op source.
    assert!(!noop.is_empty());
    c.bench_function("vm/compile_small", |b| {
        b.iter(|| black_box(vm.compile(black_box("noop.js"), black_box(NOOP)).unwrap()))
    });

    assert!(!vm.spent, "no bench may have hit a limit");
}

fn pool_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pool = Pool::new(1, limits()).expect("the pool's thread");
    let noop = Arc::new(
        rt.block_on(pool.compile("noop.js", NOOP))
            .expect("the no-op compiles on the pool"),
    );
    let empty = call(Value::Null, Value::Null);

    // 4. The same no-op through the queue and the oneshot.
    let outcome = rt.block_on(pool.invoke(KEY, noop.clone(), empty.clone()));
    assert_null(&outcome);
    c.bench_function("pool/invoke_noop", |b| {
        b.iter(|| black_box(rt.block_on(pool.invoke(KEY, noop.clone(), empty.clone()))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = vm_benches, pool_benches
}
criterion_main!(benches);
