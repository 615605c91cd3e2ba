//! `schema/*.json`: a set of schema files through `schema::load_files` (what
//! `load_dir` does once it has read the directory). A schema the loader accepts must be
//! one the server can start with: it is applied to a fresh in-memory SQLite database
//! with `store::migrate::apply_schema`, which may only refuse with a `SchemaError`
//! naming the file (never a raw database error), and every object's statements build.
//!
//! Input: files separated by a 0xFF byte (never part of UTF-8 text); each file is one
//! selector byte (which file name) and its text. Sorted by name like a directory read.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use livebase::schema::{SchemaError, is_valid_identifier, load_files};
use livebase::store::sql::column_type;
use livebase::store::statements::{self, ListQuery};
use livebase::schema::value::SqlValue;
use livebase::store::{Dialect, Sql, Store, migrate};
use livebase_fuzz::schema_path;

/// File names the selector picks from: the example's, roles, a reserved name, case
/// variants (a case-sensitive disk holds both) and a plain new object.
const NAMES: [&str; 12] = [
    "items.json",
    "lists.json",
    "notes.json",
    "users.json",
    "_roles.json",
    "general.json",
    "things.json",
    "Items.json",
    "LB_schema.json",
    "Users.json",
    "a.json",
    "lb_credentials.json",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut files = BTreeMap::new();
    for chunk in data.split(|&b| b == 0xFF) {
        let Some((&selector, text)) = chunk.split_first() else {
            continue;
        };
        // A file that is not UTF-8 fails at `read_to_string`, before the loader.
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        files.insert(
            schema_path(NAMES[usize::from(selector) % NAMES.len()]),
            text.to_string(),
        );
    }
    let Ok(schema) = load_files(&schema_path(""), files) else {
        return;
    };

    assert!(schema.object("users").is_some(), "users is always there");
    for object in schema.objects.values() {
        assert!(is_valid_identifier(&object.name), "{}", object.name);
        for field in &object.fields {
            assert!(is_valid_identifier(&field.name), "{}", field.name);
            if let Some(target) = field.ty.referenced_object() {
                assert!(schema.object(target).is_some(), "dangling ref {target}");
            }
            if let Some(default) = &field.default {
                field.check_value(default).expect("defaults were checked");
            }
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                column_type(dialect, &field.ty);
            }
        }
        for op in ["read", "create", "update", "delete"] {
            let roles = match op {
                "read" => &object.permissions.read,
                "create" => &object.permissions.create,
                "update" => &object.permissions.update,
                _ => &object.permissions.delete,
            };
            assert!(roles.iter().all(|r| schema.has_role(r)), "{op}: {roles:?}");
        }
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let query = ListQuery {
                page_size: 1,
                page_number: 1,
                search: Some("x".into()),
                ..ListQuery::default()
            };
            statements::list(&mut Sql::new(dialect), object, &query);
            let values = object
                .fields
                .iter()
                .map(|f| (f.name.clone(), SqlValue::Null))
                .collect();
            statements::insert(&mut Sql::new(dialect), object, Some(1), values);
        }
    }

    // The server starts with what the loader accepted, or refuses naming the file.
    let applied = runtime().block_on(async {
        let store = Store::connect("sqlite::memory:", 1)
            .await
            .expect("in-memory SQLite");
        let applied = migrate::apply_schema(&store, &schema, false).await;
        if applied.is_ok() {
            // Every object is then served from a table of its own shape.
            for object in schema.objects.values() {
                let mut sql = store.sql();
                let query = ListQuery {
                    page_size: 1,
                    page_number: 1,
                    ..ListQuery::default()
                };
                statements::list(&mut sql, object, &query);
                if let Err(e) = store.fetch_records(&sql, object).await {
                    panic!("object `{}` cannot be listed: {e}", object.name);
                }
            }
        }
        store.close().await;
        applied
    });
    if let Err(e) = applied {
        assert!(
            e.downcast_ref::<SchemaError>().is_some(),
            "the loader accepted a schema the database refuses: {e:#}"
        );
    }
});
