//! A bug in an action (an error the engine raised in its code: a ReferenceError, a
//! TypeError, …) is a 500 naming the action and the line and column, kept in the
//! action's log in the same words plus the file it came from (a path on the server,
//! which the answer never holds); a deliberate throw stays the refusal it was, and a
//! before action's bug writes nothing.

use serde_json::{Value, json};

use crate::common::{Spawn, TestApp, backends, master};

/// The id of the action named `name`.
async fn action_id(app: &TestApp, name: &str) -> i64 {
    let (status, list) = app.get("/1/action/config", &master()).await;
    assert_eq!(status, 200, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action `{name}`: {list}"))["id"]
        .as_i64()
        .unwrap()
}

/// The messages of the action's log lines of level `failure`.
async fn failures(app: &TestApp, name: &str) -> Vec<String> {
    let id = action_id(app, name).await;
    let (status, logs) = app
        .get(&format!("/1/action/config/{id}/logs"), &master())
        .await;
    assert_eq!(status, 200, "{logs}");
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["level"] == "failure")
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

fn file(app: &TestApp, path: &str) -> String {
    app.data_dir
        .path()
        .join("actions")
        .join(path)
        .display()
        .to_string()
}

/// (name, code, error, (line, column)): bugs, each with the place the engine raised it.
const BUGS: [(&str, &str, &str, (u32, u32)); 7] = [
    (
        "typo",
        "function backandCallback(userInput) {\n  const a = 1;\n    return missing + a;\n}\n",
        "ReferenceError: missing is not defined",
        (3, 12),
    ),
    (
        "null_read",
        "function backandCallback(userInput, dbRow) {\n  return dbRow.name;\n}\n",
        "TypeError: cannot read property 'name' of null",
        (2, 10),
    ),
    (
        "bad_json",
        "function backandCallback() {\n  return JSON.parse('{');\n}\n",
        "SyntaxError: Expected property name or '}' in JSON at position 1 (line 1 column 2)",
        (2, 15),
    ),
    (
        "later",
        "async function backandCallback() {\n  await null;\n  return notHere();\n}\n",
        "ReferenceError: notHere is not defined",
        (3, 10),
    ),
    (
        "top_level",
        "const x = nothing.here;\nfunction backandCallback() { return x; }\n",
        "ReferenceError: nothing is not defined",
        (1, 11),
    ),
    (
        "bad_argument",
        "function backandCallback() {\n  socket.emitAll(1, 2);\n}\n",
        "TypeError: Error converting from js 'int' into type 'string'",
        (2, 10),
    ),
    (
        "in_helper",
        "function helper(row) {\n  return row.a.b;\n}\nfunction backandCallback() {\n  return helper({});\n}\n",
        "TypeError: cannot read property 'b' of undefined",
        (2, 10),
    ),
];

/// (name, code, status, message): what an action throws on purpose.
const REFUSALS: [(&str, &str, u16, &str); 8] = [
    ("plain", "throw new Error('no');", 400, "no"),
    (
        "typed",
        "throw new TypeError('wrong type');",
        400,
        "wrong type",
    ),
    ("called", "throw TypeError('called');", 400, "called"),
    ("text", "throw 'just text';", 400, "just text"),
    (
        "object",
        "throw { status: 409, message: 'taken' };",
        409,
        "taken",
    ),
    (
        "engine_with_status",
        "try { null.x; } catch (e) { e.status = 422; throw e; }",
        422,
        "cannot read property 'x' of null",
    ),
    (
        "says_limit",
        "throw new RangeError('Maximum call stack size exceeded');",
        400,
        "Maximum call stack size exceeded",
    ),
    (
        "subclass",
        "throw new (class Invalid extends RangeError {})('too big');",
        400,
        "too big",
    ),
];

#[tokio::test]
async fn a_bug_is_a_500_with_its_place_and_a_throw_stays_a_refusal() {
    for backend in backends() {
        let be = backend.name();
        let mut spawn = Spawn::new(&backend).schema(
            "items.json",
            json!({ "name": "items", "fields": { "name": { "type": "string" } },
                    "permissions": { "read": ["User"], "create": ["User"] } }),
        );
        let top_level_refusal = "class Invalid extends RangeError {}\nconst early = new Invalid('at load');\nfunction backandCallback() { throw early; }\n";
        spawn = spawn.action("items/onDemand/top_level_refusal.js", top_level_refusal);
        for (name, code, _, _) in BUGS {
            spawn = spawn.action(&format!("items/onDemand/{name}.js"), code);
        }
        for (name, body, _, _) in REFUSALS {
            let code = format!("function backandCallback() {{ {body} }}\n");
            spawn = spawn.action(&format!("items/onDemand/{name}.js"), &code);
        }
        let app = spawn.start().await;
        let user = app.user("u@bugs.test", "User").await;

        for (name, _, error, (line, column)) in BUGS {
            let (status, body) = app
                .get(
                    &format!("/1/objects/action/items?name={name}"),
                    &user.cred(),
                )
                .await;
            let path = file(&app, &format!("items/onDemand/{name}.js"));
            let answered = format!(
                "action items/onDemand/{name} failed: {error} (line {line}, column {column})"
            );
            assert_eq!(
                (status, &body),
                (500, &json!({ "Message": answered })),
                "{be}: {name}"
            );
            assert!(
                !body.to_string().contains(&path) && !body.to_string().contains(".js"),
                "{be}: {name}: the answer names no file of the server: {body}"
            );
            assert_eq!(
                failures(&app, name).await,
                vec![format!(
                    "action items/onDemand/{name} failed: {error} ({path}, line {line}, column {column})"
                )],
                "{be}: {name}: the action's log adds the file"
            );
        }
        for (name, _, status, message) in REFUSALS {
            let (got, body) = app
                .get(
                    &format!("/1/objects/action/items?name={name}"),
                    &user.cred(),
                )
                .await;
            assert_eq!(
                (got, body),
                (status, json!({ "Message": message })),
                "{be}: {name}"
            );
            let logged = failures(&app, name).await;
            assert_eq!(logged.len(), 1, "{be}: {name}: {logged:?}");
            assert!(logged[0].starts_with("threw"), "{be}: {name}: {logged:?}");
            assert!(logged[0].ends_with(message), "{be}: {name}: {logged:?}");
        }
        let (status, body) = app
            .get(
                "/1/objects/action/items?name=top_level_refusal",
                &user.cred(),
            )
            .await;
        assert_eq!(
            (status, body),
            (400, json!({ "Message": "at load" })),
            "{be}: an error made by the module's own top-level code"
        );
    }
}

/// The action's own errors look as they always did to its code: the mark livebase
/// puts on them is invisible, the constructors are the globals, and a stack starts in
/// the action's code.
#[tokio::test]
async fn marking_the_actions_own_errors_changes_nothing_it_can_see() {
    let backend = &backends()[0];
    let code = "function backandCallback() {\n  let engine;\n  try { null.x; } catch (e) { engine = e; }\n  const own = new TypeError('mine');\n  return {\n    engineIsTypeError: engine instanceof TypeError,\n    engineConstructor: engine.constructor === TypeError,\n    ownIsTypeError: own instanceof TypeError,\n    ownConstructor: own.constructor === TypeError,\n    ownIsError: own instanceof Error,\n    keys: Object.keys(own),\n    json: JSON.stringify(own),\n    names: Object.getOwnPropertyNames(new Error('x')).filter((n) => n.startsWith('livebase')).length,\n    name: TypeError.name,\n    stack: own.stack,\n  };\n}\n";
    let app = Spawn::new(backend)
        .action("general/onDemand/look.js", code)
        .start()
        .await;
    let (status, body) = app.get("/1/function/general/look", &master()).await;
    assert_eq!(status, 200, "{body}");
    let stack = body["stack"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        body,
        json!({
            "engineIsTypeError": true, "engineConstructor": true, "ownIsTypeError": true,
            "ownConstructor": true, "ownIsError": true, "keys": [], "json": "{}",
            "names": 1, "name": "TypeError", "stack": stack,
        })
    );
    assert!(
        stack.starts_with("    at backandCallback (look:4:19)"),
        "the stack starts where the action made the error: {stack:?}"
    );
}

#[tokio::test]
async fn uploaded_or_replaced_code_is_named_without_a_file() {
    let backend = &backends()[0];
    let bug = "function backandCallback() {\n  return gone;\n}\n";
    let app = Spawn::new(backend)
        .action("general/onDemand/from_file.js", bug)
        .start()
        .await;
    let (status, body) = app.get("/1/function/general/from_file", &master()).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["Message"],
        "action general/onDemand/from_file failed: ReferenceError: gone is not defined (line 2, column 10)"
    );
    assert_eq!(
        failures(&app, "from_file").await,
        vec![format!(
            "action general/onDemand/from_file failed: ReferenceError: gone is not defined ({}, line 2, column 10)",
            file(&app, "general/onDemand/from_file.js")
        )],
        "the action's log names the file"
    );
    // Replaced over the API, its code is no longer the file's.
    let id = action_id(&app, "from_file").await;
    let replaced = "function backandCallback() {\n\n  return stillGone;\n}\n";
    let (status, body) = app
        .put(
            &format!("/1/action/config/{id}"),
            &master(),
            json!({ "code": replaced }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/1/function/general/from_file", &master()).await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({ "Message": "action general/onDemand/from_file failed: ReferenceError: stillGone is not defined (line 3, column 10)" })
        )
    );
    let upload = json!({ "name": "uploaded", "object": "general", "trigger": "onDemand",
                         "code": "function backandCallback() {\n  return [].nope();\n}\n" });
    let (status, body) = app.post("/1/action/config", &master(), upload).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/1/function/general/uploaded", &master()).await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({ "Message": "action general/onDemand/uploaded failed: TypeError: not a function (line 2, column 13)" })
        )
    );
}

const VALIDATE: &str = "function backandCallback(userInput, dbRow) {\n  if (userInput.name === 'bug') {\n    return userInput.nme.length;\n  }\n  if (userInput.name === 'refuse') throw new Error('refused here');\n}\n";

#[tokio::test]
async fn a_bug_in_a_before_action_writes_nothing_and_an_after_actions_bug_is_logged() {
    for backend in backends() {
        let be = backend.name();
        let app = Spawn::new(&backend)
            .schema(
                "items.json",
                json!({ "name": "items", "fields": { "name": { "type": "string" } } }),
            )
            .schema(
                "notes.json",
                json!({ "name": "notes", "fields": { "text": { "type": "string" } } }),
            )
            .action("items/beforeCreate/validate.js", VALIDATE)
            .action("items/beforeUpdate/recheck.js", VALIDATE)
            .action(
                "notes/afterCreate/announce.js",
                "function backandCallback(userInput, dbRow) {\n  socket.emitAll('note', dbRow.text.toUpperCase().missing());\n}\n",
            )
            .start()
            .await;
        let (status, created) = app
            .post("/1/objects/items", &master(), json!({ "name": "ok" }))
            .await;
        assert_eq!(status, 200, "{be}: {created}");
        let id = crate::common::id_of(&created);
        let validate = file(&app, "items/beforeCreate/validate.js");
        let (status, body) = app
            .post("/1/objects/items", &master(), json!({ "name": "bug" }))
            .await;
        assert_eq!(
            (status, body),
            (
                500,
                json!({ "Message": "action items/beforeCreate/validate failed: TypeError: cannot read property 'length' of undefined (line 3, column 12)" })
            ),
            "{be}"
        );
        assert_eq!(
            failures(&app, "validate").await,
            vec![format!(
                "action items/beforeCreate/validate failed: TypeError: cannot read property 'length' of undefined ({validate}, line 3, column 12)"
            )],
            "{be}"
        );
        let (status, body) = app
            .post("/1/objects/items", &master(), json!({ "name": "refuse" }))
            .await;
        assert_eq!(
            (status, body),
            (400, json!({ "Message": "refused here" })),
            "{be}"
        );
        let (status, body) = app
            .put(
                &format!("/1/objects/items/{id}"),
                &master(),
                json!({ "name": "bug" }),
            )
            .await;
        assert_eq!(status, 500, "{be}: {body}");
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .starts_with("action items/beforeUpdate/recheck failed: TypeError:"),
            "{be}: {body}"
        );
        let names: Vec<Value> = app
            .all_rows("items")
            .await
            .iter()
            .map(|r| r["name"].clone())
            .collect();
        assert_eq!(
            names,
            vec![json!("ok")],
            "{be}: nothing written by the refused writes"
        );

        // An after action cannot undo its write; its bug goes to its log.
        let (status, body) = app
            .post("/1/objects/notes", &master(), json!({ "text": "hi" }))
            .await;
        assert_eq!(status, 200, "{be}: {body}");
        assert_eq!(app.all_rows("notes").await.len(), 1, "{be}");
        let announce = file(&app, "notes/afterCreate/announce.js");
        let mut logged = Vec::new();
        for _ in 0..50 {
            logged = failures(&app, "announce").await;
            if !logged.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            logged,
            vec![format!(
                "action notes/afterCreate/announce failed: TypeError: not a function ({announce}, line 2, column 51)"
            )],
            "{be}"
        );
    }
}
